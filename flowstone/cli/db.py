"""``flowstone db upgrade|url|status|stop``: manage the database."""

from __future__ import annotations

import argparse
from typing import Any

from flowstone import settings as settings_mod
from flowstone.cli import common
from flowstone.store import backend, embedded, migrations


def _db_url(args: argparse.Namespace) -> str:
    return backend.resolve_database(args.database_url).url


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    url = _db_url(args)
    report = migrations.upgrade(url, progress=common.out)
    if report.nothing_to_do:
        common.out("database is up to date: nothing to do")
    else:
        common.out(f"done: {len(report.applied)} FlowStone migration(s) applied")
    return 0


def _cmd_db_url(args: argparse.Namespace) -> int:
    common.out(_db_url(args))
    return 0


def _cmd_db_status(args: argparse.Namespace) -> int:
    applied = migrations.status(_db_url(args))
    known = migrations.discover()
    for component in ("procrastinate", "flowstone"):
        for line in applied[component]:
            common.out(f"{component:<13} {line}")
    pending = len(known) - len(applied["flowstone"])
    common.out(f"{pending} FlowStone migration(s) pending" if pending > 0 else "up to date")
    return 0


def _cmd_db_stop(args: argparse.Namespace) -> int:
    home = settings_mod.Settings.from_env().home
    stopped = embedded.stop_embedded(home)
    common.out("embedded Postgres stopped" if stopped else f"no embedded Postgres runs in {home}")
    return 0


def add_commands(commands: Any) -> None:
    """Add ``db`` and its subcommands to the parser's subcommands."""
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
