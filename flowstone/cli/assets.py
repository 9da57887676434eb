"""``flowstone status|lineage|gc``: what is stored about assets, and removing old output versions."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from flowstone import errors
from flowstone import lineage as lineage_mod
from flowstone import runtime as runtime_mod
from flowstone.cli import checks, common, staleness, waiting
from flowstone.status import StepStatus
from flowstone.store.postgres import PostgresStore

ACTIVE = (StepStatus.PENDING, StepStatus.QUEUED, StepStatus.RUNNING, StepStatus.WAITING_APPROVAL)


def _partition_count(rt: runtime_mod.FlowStone, asset: str) -> int | None:
    """How many partitions the asset's definition has now (1 unpartitioned; ``None``: unknown)."""
    definition = rt.defs.get(asset).partitions
    if definition is None:
        return 1
    try:
        return len(definition.keys())
    except errors.FlowStoneError:  # e.g. a custom definition known only by its snapshot
        return None


def _summary(rt: runtime_mod.FlowStone, store: PostgresStore, status: str | None) -> None:
    found = store.reports.assets()
    common.out(
        f"{'ASSET':<24} {'SUCCEEDED':>9} {'FAILED':>7} {'ACTIVE':>7} {'MISSING':>8}  "
        f"{'LAST SUCCESS (UTC)':<19}  NEWEST"
    )
    for name in rt.defs:
        summary = found.get(name)
        by_status = summary.by_status if summary else {}
        if status is not None and not by_status.get(status):
            continue
        succeeded = summary.succeeded_partitions if summary else 0
        failed = sum(by_status.get(s, 0) for s in (StepStatus.FAILED, StepStatus.REJECTED))
        active = sum(by_status.get(s, 0) for s in ACTIVE)
        total = _partition_count(rt, name)
        missing = "?" if total is None else str(max(total - succeeded, 0))
        last = common.when(summary.last_success_at) if summary else "-"
        newest = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "never materialized"
        common.out(f"{name:<24} {succeeded:>9} {failed:>7} {active:>7} {missing:>8}  {last:<19}  {newest}")
    for line in checks.status_lines(store.checks.latest()):
        common.out(line)


def _partitions(
    store: PostgresStore, asset: str, status: StepStatus | None, limit: int, *, metadata: bool = False
) -> None:
    rows = store.reports.partitions(asset, status=status, limit=limit, metadata=metadata)
    common.out(f"{'ASSET':<24} {'PARTITION':<28} {'STATUS':<16} {'LAST SUCCESS (UTC)':<20} {'MS':>8}  RUN")
    if not rows and status is None:
        common.out(f"{asset:<24} {'-':<28} {'never':<16} {'-':<20} {'-':>8}  -")
    for m in rows:
        ms = f"{m.duration_ms:.0f}" if m.duration_ms is not None else "-"
        common.out(
            f"{asset:<24} {common.shown(m.partition_key):<28} {m.status:<16} "
            f"{common.when(m.last_success_at):<20} {ms:>8}  {m.run_id}"
        )
        if not metadata:
            continue
        good = (m.id, m.metadata) if m.status == StepStatus.SUCCEEDED else None
        if good is None and (latest := store.latest(asset, m.partition_key)) is not None:
            good = (latest.id, latest.metadata)
        if good is not None and good[1]:
            common.out(f"    metadata of #{good[0]}: {_metadata_line(good[1])}")
    if len(rows) == limit:
        common.out(f"... (first {limit} partitions; --limit shows more)")


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


def _cmd_status(args: argparse.Namespace) -> int:
    if args.asset and args.asset_flag and args.asset != args.asset_flag:
        raise errors.ConfigurationError("give the asset once (ASSET or --asset)")
    asset = args.asset or args.asset_flag
    with common.open_reader(args) as rt:
        if asset is not None:
            rt.defs.get(asset)  # unknown names: a clear error
        store = rt.store
        assert isinstance(store, PostgresStore)  # noqa: S101 - the CLI opens Postgres
        status = StepStatus(args.status) if args.status else None

        def draw() -> bool:
            if args.stale:
                staleness.draw(rt, asset, args.limit)
            elif asset is None:
                _summary(rt, store, status)
            else:
                _partitions(store, asset, status, args.limit, metadata=args.metadata)
            return False

        return waiting.watch(args.watch, draw)


def _tree(start: str, nodes: Sequence[lineage_mod.LineageNode], root_id: int) -> list[str]:
    """Every edge of the walk as a tree: a node is written out under its first parent and, under
    its other parents (the other side of a diamond), as a reference ``(see above)``."""
    children: dict[int, list[lineage_mod.LineageNode]] = {}
    for node in nodes:
        for parent in (node.via_materialization_id, *node.also_via_materialization_ids):
            children.setdefault(parent, []).append(node)
    for kids in children.values():
        kids.sort(key=lambda n: (n.asset, n.partition_key, n.materialization_id))
    lines = [start]
    printed: set[int] = set()

    def walk(parent: int, prefix: str) -> None:
        kids = children.get(parent, [])
        for i, node in enumerate(kids):
            last = i == len(kids) - 1
            seen = node.materialization_id in printed
            lines.append(
                f"{prefix}{'└── ' if last else '├── '}{node.asset} [{common.shown(node.partition_key)}] "
                f"#{node.materialization_id} {node.status}"
                + (" (see above)" if seen and children.get(node.materialization_id) else "")
            )
            if not seen:
                printed.add(node.materialization_id)
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
        head = f"{start.asset} [{common.shown(start.partition_key)}] #{start.id} {start.status}"
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
        "status",
        help="one line per asset (partitions succeeded, failed, active, missing); --asset: its partitions",
        description="Without an asset: one line per asset with how many partitions ever succeeded, "
        "whose newest step failed or is still active, how many have never succeeded (missing), the "
        "last success and the newest steps by status. With an asset: its partitions (decoded keys), "
        "the newest step of each and its last success.",
        epilog="example: flowstone status --asset daily_kpis --status failed",
    )
    common.add_common(status)
    status.add_argument("asset", nargs="?", default=None, help="an asset (same as --asset)")
    status.add_argument("--asset", dest="asset_flag", default=None, help="list this asset's partitions")
    status.add_argument(
        "--status", choices=[s.value for s in StepStatus], default=None, help="only partitions in this status"
    )
    status.add_argument("--limit", type=common.positive_int, default=10_000, help="partitions listed at most")
    status.add_argument(
        "--metadata",
        action="store_true",
        help="with an asset: also print each partition's last success metadata (a frame's rows, "
        "columns, size, content hash)",
    )
    status.add_argument("--stale", action="store_true", help="partitions that are stale (and why) or missing")
    common.add_watch(status)
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
