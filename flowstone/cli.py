"""The ``flowstone`` command line.

``flowstone db upgrade`` applies migrations, ``flowstone db url`` prints the DSN (for psql),
``flowstone db status`` lists applied migrations, ``flowstone db stop`` stops the embedded Postgres.
Errors are printed as one line naming what was wrong (exit status 1); usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from flowstone import _version, errors
from flowstone import settings as settings_mod
from flowstone.store import backend, embedded, migrations

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _db_url(args: argparse.Namespace) -> str:
    return backend.resolve_database(args.database_url).url


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    url = _db_url(args)
    report = migrations.upgrade(url, progress=_out)
    if report.nothing_to_do:
        _out("database is up to date: nothing to do")
    else:
        _out(f"done: {len(report.applied)} FlowStone migration(s) applied")
    return 0


def _cmd_db_url(args: argparse.Namespace) -> int:
    _out(_db_url(args))
    return 0


def _cmd_db_status(args: argparse.Namespace) -> int:
    applied = migrations.status(_db_url(args))
    known = migrations.discover()
    for component in ("procrastinate", "flowstone"):
        for line in applied[component]:
            _out(f"{component:<13} {line}")
    pending = len(known) - len(applied["flowstone"])
    _out(f"{pending} FlowStone migration(s) pending" if pending > 0 else "up to date")
    return 0


def _cmd_db_stop(args: argparse.Namespace) -> int:
    home = settings_mod.Settings.from_env().home
    stopped = embedded.stop_embedded(home)
    _out("embedded Postgres stopped" if stopped else f"no embedded Postgres runs in {home}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="flowstone", description="Asset-first data orchestration on Postgres."
    )
    parser.add_argument("--version", action="version", version=f"flowstone {_version.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    db = commands.add_parser("db", help="database: upgrade, url, status, stop")
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    for name, handler, help_text in (
        ("upgrade", _cmd_db_upgrade, "apply Procrastinate's schema and FlowStone's migrations"),
        ("url", _cmd_db_url, 'print the database URL (psql "$(flowstone db url)")'),
        ("status", _cmd_db_status, "list applied migrations"),
    ):
        sub = db_commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--database-url",
            default=None,
            help="Postgres URL (default: FLOWSTONE_DATABASE_URL, else the embedded Postgres)",
        )
        sub.set_defaults(handler=handler)
    stop = db_commands.add_parser("stop", help="stop the embedded Postgres of FLOWSTONE_HOME")
    stop.set_defaults(handler=_cmd_db_stop)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowstone`` console script."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except errors.FlowStoneError as exc:
        _err(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover - `python -m flowstone.cli`
    raise SystemExit(main())
