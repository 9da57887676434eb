"""``flowstone ui``: a web UI over the database (the ``flowstone[ui]`` extra).

It reads the definitions from the snapshot in Postgres (``FlowStone.from_database()``) and never
imports the project's code. :mod:`.app` is the Starlette app, :mod:`.views` and :mod:`.views_ops`
what each page shows (the same data as the ``/api/...`` JSON), :mod:`.layout` the asset graph's
layout (grandalf), :mod:`.security` who is asking and the CSRF check, :mod:`.server` the entry
point. Nothing here is imported by ``import flowstone``.
"""
