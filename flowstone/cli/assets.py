"""``flowstone status|lineage|gc``: what is stored about assets, and removing old output versions."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from flowstone import lineage as lineage_mod
from flowstone.cli import common
from flowstone.status import StepStatus


def _cmd_status(args: argparse.Namespace) -> int:
    with common.open_reader(args) as rt:
        names = [args.asset] if args.asset else list(rt.defs)
        for name in names:
            rt.defs.get(name)  # unknown names: a clear error
        common.out(
            f"{'ASSET':<24} {'PARTITION':<28} {'STATUS':<16} {'LAST SUCCESS (UTC)':<20} {'MS':>8}  RUN"
        )
        for name in names:
            newest = rt.store.newest_all(name)
            if not newest:
                common.out(f"{name:<24} {'-':<28} {'never':<16} {'-':<20} {'-':>8}  -")
            for m in newest:
                good = m if m.status == StepStatus.SUCCEEDED else rt.store.latest(m.asset, m.partition_key)
                finished = (
                    good.finished_at.strftime("%Y-%m-%d %H:%M:%S") if good and good.finished_at else "-"
                )
                ms = f"{m.duration_ms:.0f}" if m.duration_ms is not None else "-"
                common.out(
                    f"{name:<24} {m.partition_key:<28} {m.status:<16} {finished:<20} {ms:>8}  {m.run_id}"
                )
                if args.metadata and good is not None and good.metadata:
                    common.out(f"    metadata of #{good.id}: {_metadata_line(good.metadata)}")
        return 0


def _metadata_line(metadata: dict[str, Any]) -> str:
    """One line for people: a frame's schema as ``name: type`` pairs, other values as they are."""
    parts = []
    first = ("row_count", "columns", "size_bytes", "content_hash")  # JSONB does not keep key order
    ordered = [k for k in first if k in metadata] + sorted(k for k in metadata if k not in first)
    for key in ordered:
        value = metadata[key]
        if key == "columns" and isinstance(value, list):
            cols = ", ".join(f"{c.get('name')}: {c.get('type')}" for c in value if isinstance(c, dict))
            parts.append(f"columns=[{cols}]")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _tree(start: str, nodes: Sequence[lineage_mod.LineageNode], root_id: int) -> list[str]:
    children: dict[int, list[lineage_mod.LineageNode]] = {}
    for node in nodes:
        children.setdefault(node.via_materialization_id, []).append(node)
    lines = [start]

    def walk(parent: int, prefix: str) -> None:
        kids = children.get(parent, [])
        for i, node in enumerate(kids):
            last = i == len(kids) - 1
            lines.append(
                f"{prefix}{'└── ' if last else '├── '}{node.asset} [{node.partition_key}] "
                f"#{node.materialization_id} {node.status}"
            )
            walk(node.materialization_id, prefix + ("    " if last else "│   "))

    walk(root_id, "")
    return lines


def _cmd_lineage(args: argparse.Namespace) -> int:
    with common.open_reader(args) as rt:
        partition = common.partition(rt.defs, [args.asset], args.partition)
        start = rt.latest(args.asset, partition)
        if start is None:
            common.out(f"{args.asset} has no succeeded materialization")
            return 1
        walk = rt.lineage.downstream if args.downstream else rt.lineage.upstream
        nodes = walk(args.asset, partition, depth=args.depth)
        head = f"{start.asset} [{start.partition_key}] #{start.id} {start.status}"
        for line in _tree(head, nodes, start.id):
            common.out(line)
        return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    with common.open_runtime(args) as rt:
        report = rt.gc(args.keep_last, dry_run=args.dry_run)
        verb = "would delete" if args.dry_run else "deleted"
        counts = ", ".join(f"{n} from {key}" for key, n in sorted(report.deleted.items())) or "nothing"
        common.out(f"gc (keep last {args.keep_last}): {report.planned} old version(s); {verb} {counts}")
        for reason in report.skipped:
            common.err(f"kept {reason}")
        return 0


def add_query_commands(commands: Any) -> None:
    """Add ``status`` and ``lineage``."""
    status = commands.add_parser(
        "status", help="newest materialization per asset and partition, with its last success"
    )
    common.add_common(status)
    status.add_argument("asset", nargs="?", default=None)
    status.add_argument(
        "--metadata",
        action="store_true",
        help="also print the metadata of each last success (a frame's rows, columns, size, content hash)",
    )
    status.set_defaults(handler=_cmd_status)

    lin = commands.add_parser("lineage", help="what a materialization read (or who read it), as a tree")
    common.add_common(lin)
    lin.add_argument("asset")
    lin.add_argument("--partition", default=None)
    lin.add_argument("--downstream", action="store_true", help="who read it, instead of what it read")
    lin.add_argument("--depth", type=int, default=None, help="levels to walk (default: all, max 100)")
    lin.set_defaults(handler=_cmd_lineage)


def add_gc_command(commands: Any) -> None:
    """Add ``gc`` (last in ``--help``, as it always was)."""
    gc = commands.add_parser("gc", help="delete old output versions (keep the latest N per partition)")
    common.add_common(gc)
    gc.add_argument("--keep-last", type=int, default=1, help="succeeded versions to keep (>= 1)")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    gc.set_defaults(handler=_cmd_gc)
