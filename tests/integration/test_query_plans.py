"""Query plans at scale: the queries on the hot and user-facing paths are served by an index, never
by a sequential scan of flowstone_materializations (issue: 10 M materializations, point 3).

100,000 materializations (100 runs x 50 assets x 20 partitions, each step reading the previous
asset's step of its run) are written set-based and analysed; each query's plan (EXPLAIN, with the
parameters a caller passes) is walked for Seq Scan nodes on the big tables."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from flowstone.store import sqlfiles
from tests import pg

BIG = {
    "flowstone_materializations",
    "flowstone_lineage",
    "flowstone_step_edges",
    "flowstone_partition_status",
}


@pytest.fixture(scope="module")
def seeded(pg_server: pg.Server, template_db: str) -> Iterator[str]:
    with pg.fresh_database(pg_server, template=template_db) as url:
        _seed(url)
        yield url


SEED = [
    """INSERT INTO flowstone_runs (run_id, kind, selection, requested_by, status, created_at,
                                   finished_at)
       SELECT md5('run' || r)::uuid, 'submit', ARRAY['a49'], 'seed', 'succeeded',
              now() - (100 - r) * interval '1 hour',
              now() - (100 - r) * interval '1 hour' + interval '1 minute'
       FROM generate_series(1, 100) AS r""",
    """INSERT INTO flowstone_materializations (run_id, asset, partition_key, status, attempt,
                                              started_at, finished_at, output_ref)
       SELECT md5('run' || r)::uuid, 'a' || a, 'd:' || (date '2025-01-01' + p), 'succeeded', 1,
              now() - (100 - r) * interval '1 hour',
              now() - (100 - r) * interval '1 hour' + interval '1 second',
              jsonb_build_object('manager', 'default', 'uri', 'x', 'version', '1')
       FROM generate_series(1, 100) AS r, generate_series(0, 49) AS a, generate_series(0, 19) AS p""",
    """INSERT INTO flowstone_lineage (materialization_id, upstream_materialization_id, input_name)
       SELECT d.id, u.id, u.asset
       FROM flowstone_materializations AS d
       JOIN flowstone_materializations AS u
         ON u.run_id = d.run_id AND u.partition_key = d.partition_key
        AND u.asset = 'a' || (substr(d.asset, 2)::int - 1)
       WHERE d.asset <> 'a0'""",
]


def _seed(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in SEED:
            conn.execute(statement)
        conn.execute("ANALYZE")


def _seq_scans(plan: Any) -> list[str]:
    found = []
    if isinstance(plan, dict):
        if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in BIG:
            found.append(str(plan["Relation Name"]))
        for value in plan.values():
            found += _seq_scans(value)
    elif isinstance(plan, list):
        for value in plan:
            found += _seq_scans(value)
    return found


def _plan(url: str, name: str, params: dict[str, Any]) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute("EXPLAIN (FORMAT JSON) " + sqlfiles.query(name), params).fetchone()
        conn.rollback()  # EXPLAIN of a data-modifying statement plans it only; nothing to keep
    assert row is not None
    return row[0] if not isinstance(row[0], str) else json.loads(row[0])


def _one(url: str, query: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("materialization_latest", {"asset": "a7", "partition_key": "d:2025-01-05"}),
        ("run_step_counts", {"run_id": "RUN"}),
        ("materialization_run_steps", {"run_id": "RUN"}),
        ("lineage_upstream", {"id": "MID", "max_depth": 5}),
        ("lineage_downstream", {"id": "MID0", "max_depth": 5}),
        ("report_partitions", {"asset": "a7", "status": None, "limit": 10_000, "metadata": False}),
        ("materialization_history", {"asset": "a7", "partition_key": "d:2025-01-05", "limit": 20}),
        ("report_runs", {"limit": 20, "status": None, "asset": None, "since": None}),
        ("report_assets", {"asset": None}),
        ("report_assets", {"asset": "a7"}),
    ],
)
def test_hot_queries_use_an_index_at_100k_materializations(seeded: str, name: str, params: dict[str, Any]):
    run_id = _one(seeded, "SELECT run_id FROM flowstone_runs ORDER BY created_at DESC LIMIT 1")
    mid = _one(seeded, "SELECT max(id) FROM flowstone_materializations WHERE asset = 'a49'")
    mid0 = _one(seeded, "SELECT min(id) FROM flowstone_materializations WHERE asset = 'a0'")
    values = {"RUN": run_id, "MID": mid, "MID0": mid0}
    bound = {k: values.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
    plan = _plan(seeded, name, bound)
    assert _seq_scans(plan) == [], json.dumps(plan, indent=1)[:4000]


def test_the_claim_plan_uses_the_identity_key(seeded: str):
    run_id = _one(seeded, "SELECT run_id FROM flowstone_runs ORDER BY created_at DESC LIMIT 1")
    params = {
        "run_id": run_id,
        "asset": "a7",
        "batch_key": "d:2025-01-05",
        "code_version": None,
        "reclaim": False,
        "job_id": None,
        "now": None,
    }
    plan = _plan(seeded, "materialization_claim", params)
    assert _seq_scans(plan) == [], json.dumps(plan, indent=1)[:4000]


def test_seeded_scale(seeded: str):
    assert _one(seeded, "SELECT count(*) FROM flowstone_materializations") == 100_000
