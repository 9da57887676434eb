"""``flowstone pools``: pool limits, who holds the slots and who waits; change a limit at run time."""

from __future__ import annotations

import argparse
from typing import Any

from flowstone import errors
from flowstone.cli import common
from flowstone.store.postgres import PostgresStore


def _cmd_pools(args: argparse.Namespace) -> int:
    with common.open_reader(args) as rt:
        store = rt.store
        assert isinstance(store, PostgresStore)  # noqa: S101 - the CLI opens Postgres
        if args.action in ("set", "unset"):
            if args.name is None or (args.action == "set" and args.limit is None):
                raise errors.ConfigurationError(
                    "usage: flowstone pools set NAME LIMIT, or flowstone pools unset NAME"
                )
            if args.limit is not None and args.limit < 0:
                raise errors.ConfigurationError(f"a pool limit is a whole number >= 0, got {args.limit}")
            state = store.pools.set_limit(
                args.name, args.limit if args.action == "set" else None, by=rt.actor
            )
            if state is None:
                known = ", ".join(p.pool for p in store.pools.list()) or "none"
                raise errors.ConfigurationError(f"there is no pool {args.name!r} (pools: {known})")
            source = (
                "set by " + (state.set_by or "?") if state.limit_override is not None else "from the code"
            )
            common.out(f"pool {state.pool}: limit {state.limit} per key ({source})")
            return 0
        common.out(f"{'POOL':<24} {'LIMIT':>6}  {'SOURCE':<20} {'KEY':<24} {'HELD':>5} {'WAITING':>8}")
        for state in store.pools.list():
            source = f"set by {state.set_by}" if state.limit_override is not None else "code"
            keys = state.by_key or {"": {"held": 0, "waiting": 0}}
            for key, counts in sorted(keys.items()):
                common.out(
                    f"{state.pool:<24} {state.limit:>6}  {source:<20} {key or '-':<24} "
                    f"{counts['held']:>5} {counts['waiting']:>8}"
                )
        return 0


def add_command(commands: Any) -> None:
    """Add ``pools``."""
    pools = commands.add_parser(
        "pools",
        help="concurrency pools: limits, slots held and steps waiting; change a limit",
        description="Pools limit how many steps run at once across every worker (Postgres counts "
        "the slots). `list` shows each pool's limit per key, the slots held and the steps waiting; "
        "`set NAME LIMIT` overrides the code's limit at run time (waiting steps start at once when "
        "it grows); `unset NAME` returns to the code's limit.",
        epilog="example: flowstone pools set warehouse 8",
    )
    common.add_common(pools)
    pools.add_argument("action", nargs="?", choices=["list", "set", "unset"], default="list")
    pools.add_argument("name", nargs="?", default=None, help="the pool (set, unset)")
    pools.add_argument("limit", nargs="?", type=int, default=None, help="the new limit per key (set)")
    pools.set_defaults(handler=_cmd_pools)
