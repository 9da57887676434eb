"""``flowstone db upgrade|url|status|stop``: manage the database."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from flowstone import settings as settings_mod
from flowstone.cli import common
from flowstone.retention_policy import Retention
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


def _cmd_db_prune(args: argparse.Namespace) -> int:
    with common.open_reader(args) as rt:
        base = rt.services.options.retention or Retention()
        policy = dataclasses.replace(
            base,
            **{
                name: value
                for name, value in (
                    ("runs_days", args.runs_days),
                    ("keep_last_per_partition", args.keep_last),
                    ("jobs_days", args.jobs_days),
                )
                if value is not None
            },
        )
        report = rt.prune(policy, dry_run=args.dry_run)
        verb = "would delete (first pass)" if report.dry_run else "deleted"
        counts = ", ".join(f"{n} from {table}" for table, n in report.deleted.items())
        extra = "" if report.dry_run else f"; {report.outputs} old output version(s) deleted first"
        common.out(
            f"prune (runs older than {policy.runs_days:g} days, keep the last "
            f"{policy.keep_last_per_partition} per partition, jobs older than {policy.jobs_days} days): "
            f"{verb} {counts}{extra}"
        )
        return 0


def add_commands(commands: Any) -> None:
    """Add ``db`` and its subcommands to the parser's subcommands."""
    db = commands.add_parser("db", help="database: upgrade, url, status, prune, stop")
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
    prune = db_commands.add_parser(
        "prune",
        help="delete old finished runs, their steps and outputs, and old queue jobs (retention)",
        description="Apply the retention policy: the runtime's (--defs module:runtime with "
        "retention=fs.Retention(...)), else the defaults (runs 90 days, keep the last 3 versions per "
        "partition, jobs 7 days), each overridable here. Deletes in short batches that skip locked "
        "rows, so running workers are not blocked; audited as retention.pruned.",
        epilog="example: flowstone db prune --runs-days 30 --dry-run",
    )
    common.add_common(prune)
    prune.add_argument("--runs-days", type=float, default=None, help="finished runs older than this go")
    prune.add_argument(
        "--keep-last", type=common.positive_int, default=None, help="versions kept per partition"
    )
    prune.add_argument(
        "--jobs-days", type=float, default=None, help="ended Procrastinate jobs older than this go"
    )
    prune.add_argument("--dry-run", action="store_true", help="only count what the first pass would delete")
    prune.set_defaults(handler=_cmd_db_prune)
    stop = db_commands.add_parser("stop", help="stop the embedded Postgres of FLOWSTONE_HOME")
    stop.set_defaults(handler=_cmd_db_stop)
