"""Runnable FlowStone examples, each a module with a ``main()``.

- ``quickstart``: four assets, materialized in memory.
- ``resources``: an ``fs.Resource`` with setup/teardown and a per-run override.
- ``partitions_and_backfill``: daily partitions, an in-process and a queued backfill.
- ``approvals``: an asset that waits for a person.
- ``postgres_io``: outputs in Postgres, as JSONB and as rows of your own table.
- ``schedules_and_sensors``: cron schedules and sensors, each firing once.
- ``demo``: everything together with a worker and the command line (``make demo``).

Run one with ``python examples/<name>.py`` from the project directory.
"""
