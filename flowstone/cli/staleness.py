"""``flowstone status --stale``: per asset and partition, what is stale and why, or missing."""

from __future__ import annotations

from flowstone import runtime as runtime_mod
from flowstone.cli import common


def draw(rt: runtime_mod.FlowStone, asset: str | None, limit: int) -> None:
    """Print the partitions that are not fresh (all of them with their cause), then a count."""
    rows = rt.staleness(asset, include_fresh=True)
    fresh = sum(1 for r in rows if r.status == "fresh")
    shown = [r for r in rows if r.status != "fresh"]
    common.out(f"{'ASSET':<24} {'PARTITION':<28} {'STATUS':<8} WHY")
    for r in shown[:limit]:
        if r.status == "missing":
            why = "no succeeded materialization"
        else:
            causes = []
            if "code_version" in r.causes:
                causes.append(f"code version {r.code_version!r} -> {r.current_code_version!r}")
            if "upstream" in r.causes:
                causes.append(f"newer data upstream: {', '.join(r.stale_upstreams)}")
            why = "; ".join(causes)
        common.out(f"{r.asset:<24} {common.shown(r.partition_key):<28} {r.status:<8} {why}")
    if len(shown) > limit:
        common.out(f"... (first {limit}; --limit shows more)")
    stale = sum(1 for r in shown if r.status == "stale")
    common.out(f"{fresh} fresh, {stale} stale, {len(shown) - stale} missing")
