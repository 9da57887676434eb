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
    run_key = pg.run_uuid(run_id)
    with conn.cursor() as cur:
        cur.executemany(
            Q("step_edges_insert"),
            [
                {
                    "run_id": run_key,
                    "upstream_asset": up[0],
                    "upstream_partition_key": up[1],
                    "asset": down[0],
                    "partition_key": down[1],
                }
                for up, down in edges
            ],
        )


def step_edges_of_run(conn: Conn, run_id: str) -> list[tuple[base.StepKey, base.StepKey]]:
    """The step-level edges of a run."""
    rows = conn.execute(Q("step_edges_of_run"), {"run_id": pg.run_uuid(run_id)}).fetchall()
    return [
        ((r["upstream_asset"], r["upstream_partition_key"]), (r["asset"], r["partition_key"])) for r in rows
    ]
