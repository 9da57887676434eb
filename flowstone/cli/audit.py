"""``flowstone audit drop-before YYYY-MM``: the one way old audit events go (whole months)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from flowstone import errors, startup
from flowstone import settings as settings_mod
from flowstone.cli import common
from flowstone.store import backend
from flowstone.store.postgres import PostgresStore


def _month(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise errors.ConfigurationError(f"drop-before takes a month like 2025-01, got {text!r}") from None


def _cmd_audit(args: argparse.Namespace) -> int:
    cutoff = _month(args.month)
    # Only the database: no definitions are needed to drop old months.
    target = startup.migrated(backend.resolve_database(args.database_url))
    store = PostgresStore(target.url, max_connections=1)
    try:
        actor = settings_mod.Settings.from_env().resolved_actor()
        months = store.pruning.audit_drop_before(cutoff, actor=actor, dry_run=args.dry_run)
        verb = "would drop" if args.dry_run else "dropped"
        if not months:
            common.out(f"no whole month of the audit log ends before {args.month}: nothing to drop")
            return 0
        listed = ", ".join(f"{m.replace('_', '-')} ({n} events)" for m, n in sorted(months.items()))
        common.out(f"{verb} {len(months)} month(s) of the audit log: {listed}")
        return 0
    finally:
        store.close()


def add_command(commands: Any) -> None:
    """Add ``audit``."""
    audit = commands.add_parser(
        "audit",
        help="drop whole months of the audit log before a month (the log is otherwise append-only)",
        description="The audit log rejects UPDATE, DELETE and TRUNCATE; old events go only by "
        "dropping whole monthly partitions. `drop-before 2025-01` drops every month up to December "
        "2024 and records `audit.dropped` with the months and their row counts.",
        epilog="example: flowstone audit drop-before 2025-01 --dry-run",
    )
    audit.add_argument("--database-url", default=None, help="Postgres URL (default: FLOWSTONE_DATABASE_URL)")
    audit.add_argument("action", choices=["drop-before"])
    audit.add_argument("month", help="the first month kept, e.g. 2025-01")
    audit.add_argument("--dry-run", action="store_true", help="only list the months and their events")
    audit.set_defaults(handler=_cmd_audit)
