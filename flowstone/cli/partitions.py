"""``flowstone partitions add|remove|list``: the keys of dynamic partitions definitions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flowstone import errors
from flowstone.cli import common


def _keys(args: argparse.Namespace) -> list[str]:
    keys = list(args.keys)
    if args.file is not None:  # one key a line; '-' reads stdin
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        keys += [line for line in text.splitlines() if line.strip()]
    return keys


def _cmd_partitions(args: argparse.Namespace) -> int:
    with common.open_reader(args) as rt:
        if args.action == "list":
            if args.name is None:
                for name in rt.partitions.names():
                    common.out(f"{name:<32} {len(rt.partitions.list(name)):>9} keys")
                return common.EXIT_OK
            for key in rt.partitions.list(args.name):
                common.out(key)
            return common.EXIT_OK
        keys = _keys(args)
        if args.name is None or not keys:
            raise errors.ConfigurationError(
                f"usage: flowstone partitions {args.action} NAME KEY [KEY ...] (or --file FILE)"
            )
        if args.action == "add":
            count = rt.partitions.add(args.name, keys)
            common.out(f"added {count} key{'s' if count != 1 else ''} to {args.name} ({len(keys)} given)")
        else:
            count = rt.partitions.remove(args.name, keys)
            common.out(f"removed {count} key{'s' if count != 1 else ''} from {args.name}")
        return common.EXIT_OK


def add_command(commands: Any) -> None:
    """Add ``partitions``."""
    sub = commands.add_parser(
        "partitions",
        help="dynamic partitions: add, remove and list keys",
        description="The keys of DynamicPartitions definitions live in the database. `add NAME KEY...` "
        "adds keys (existing ones are kept), `remove NAME KEY...` removes them (their materializations "
        "stay), `list [NAME]` lists the keys of NAME, or every definition with its number of keys.",
        epilog="example: flowstone partitions add tenants acme globex",
    )
    common.add_common(sub)
    sub.add_argument("action", choices=["add", "remove", "list"])
    sub.add_argument("name", nargs="?", default=None, help="the DynamicPartitions name")
    sub.add_argument("keys", nargs="*", default=[], help="keys (add, remove)")
    sub.add_argument("--file", default=None, help="also read keys from FILE, one a line ('-': stdin)")
    sub.set_defaults(handler=_cmd_partitions)
