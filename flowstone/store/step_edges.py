"""``flowstone_step_edges`` (``sql/queries/step_edges.sql``): the DAG of one run at step level."""

from __future__ import annotations

from collections.abc import Sequence

from flowstone.store import base, pg
from flowstone.store.pg import Conn, Q

__all__ = ["step_edges_insert", "step_edges_of_run"]


def step_edges_insert(conn: Conn, run_id: str, edges: Sequence[tuple[base.StepKey, base.StepKey]]) -> None:
    """Record the step-level edges ((upstream asset, key), (asset, key)) of a run."""
    if not edges:
        return
    conn.execute(
        Q("step_edges_insert"),
        {
            "run_id": pg.run_uuid(run_id),
            "upstream_assets": [up[0] for up, _ in edges],
            "upstream_keys": [up[1] for up, _ in edges],
            "assets": [down[0] for _, down in edges],
            "keys": [down[1] for _, down in edges],
        },
    )


def step_edges_of_run(conn: Conn, run_id: str) -> list[tuple[base.StepKey, base.StepKey]]:
    """The step-level edges of a run."""
    rows = conn.execute(Q("step_edges_of_run"), {"run_id": pg.run_uuid(run_id)}).fetchall()
    return [
        ((r["upstream_asset"], r["upstream_partition_key"]), (r["asset"], r["partition_key"])) for r in rows
    ]
