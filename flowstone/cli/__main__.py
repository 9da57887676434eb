"""``python -m flowstone.cli ...``: the ``flowstone`` command without the console script."""

from flowstone.cli import main

if __name__ == "__main__":  # pragma: no cover - `python -m flowstone.cli`
    raise SystemExit(main())
