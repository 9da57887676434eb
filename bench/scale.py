"""Query costs as the tables grow: p50/p95 of the user-facing queries and of a step's claim and
success at growing numbers of materializations (issue: 10 M materializations).

Materializations are generated set-based (SQL, no Python per row) over 50 assets x 20,000
partitions, with lineage from each asset to the previous one, plus one asset of 1,000 partitions
whose history grows with the tables (1,000 steps, then 1 % of every batch); after each level the tables are
vacuumed and analysed and every query is timed ``BENCH_SCALE_REPEATS`` times (default 50) with
fresh parameters.

Environment: FLOWSTONE_BENCH_DATABASE_URL (else an embedded Postgres), BENCH_SCALE_ROWS
(comma-separated levels, default "10000,1000000"; "10000,1000000,10000000" for the full issue).
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

import flowstone as fs
from flowstone.store import sqlfiles

LEVELS = [int(n) for n in os.environ.get("BENCH_SCALE_ROWS", "10000,1000000").split(",")]
REPEATS = int(os.environ.get("BENCH_SCALE_REPEATS", "50"))
ASSETS = 50
PARTITIONS = 20_000
PER_RUN = 1_000

GROW = """
WITH runs AS (
    INSERT INTO flowstone_runs (run_id, kind, selection, requested_by, status, created_at, finished_at)
    SELECT md5('run' || r)::uuid, 'backfill', ARRAY['a' || ((r - 1) %% 50)], 'scale', 'succeeded',
           now(), now()
    FROM generate_series(%(first_run)s::int, %(last_run)s::int) AS r
    RETURNING run_id
)
INSERT INTO flowstone_materializations (run_id, asset, partition_key, status, attempt, started_at,
                                        finished_at, output_ref)
SELECT md5('run' || (%(first_run)s::int + n / 1000))::uuid,
       'a' || ((%(first_run)s::int + n / 1000 - 1) %% 50),
       'd:' || (date '1970-01-01' + ((n %% 1000) + 1000 * ((%(first_run)s::int + n / 1000) / 50)) %% 20000),
       'succeeded', 1, now(), now() + interval '1 ms',
       jsonb_build_object('manager', 'default', 'uri', 'x', 'version', '1')
FROM generate_series(0, %(rows)s::int - 1) AS n
ON CONFLICT DO NOTHING
"""

# A fixed-shape asset: 1,000 partitions from the first level on, whose history grows with the
# tables (1 % of each batch): its status summary shows what history alone does to the summary's
# cost (the 50 assets' summaries also grow with their partitions, 1,000 to 20,000).
FIXED = """
WITH runs AS (
    INSERT INTO flowstone_runs (run_id, kind, selection, requested_by, status, created_at, finished_at)
    SELECT md5('fixed' || %(batch_no)s::int || '-' || k)::uuid, 'backfill', ARRAY['fixed'], 'scale',
           'succeeded', now(), now()
    FROM generate_series(0, (%(rows)s::int - 1) / 1000) AS k
    RETURNING run_id
)
INSERT INTO flowstone_materializations (run_id, asset, partition_key, status, attempt, started_at,
                                        finished_at, output_ref)
SELECT md5('fixed' || %(batch_no)s::int || '-' || (n / 1000))::uuid, 'fixed',
       'p' || lpad((n %% 1000)::text, 4, '0'), 'succeeded', 1, now(), now() + interval '1 ms',
       jsonb_build_object('manager', 'default', 'uri', 'x', 'version', '1')
FROM generate_series(0, %(rows)s::int - 1) AS n
"""

LINK = """
INSERT INTO flowstone_lineage (materialization_id, upstream_materialization_id, input_name)
SELECT d.id, u.id, 'up'
FROM flowstone_materializations AS d
JOIN LATERAL (SELECT l.id FROM flowstone_materializations AS l
              WHERE l.asset = 'a' || (substr(d.asset, 2)::int - 1) AND l.partition_key = d.partition_key
                AND l.status = 'succeeded'
              ORDER BY l.finished_at DESC, l.id DESC LIMIT 1) AS u ON true
WHERE d.id > %(after)s AND d.asset <> 'a0' AND d.asset <> 'fixed'
ON CONFLICT DO NOTHING
"""


@fs.asset
def probe() -> int:
    return 1


def _timed(conn: psycopg.Connection[object], name: str, params: dict[str, object]) -> float:
    prepare = None if name != "report_assets" else False  # as flowstone.store.reports runs it
    started = time.perf_counter()
    conn.execute(sqlfiles.query(name), params, prepare=prepare).fetchall()
    return (time.perf_counter() - started) * 1000


def _queries(
    conn: psycopg.Connection[object], ids: list[object], runs: list[object]
) -> dict[str, Callable[[], float]]:
    """The user-facing queries, each drawing fresh parameters at every call."""

    def latest() -> float:
        key = f"d:{1970 + random.randrange(50)}-01-01"
        return _timed(
            conn, "materialization_latest", {"asset": f"a{random.randrange(ASSETS)}", "partition_key": key}
        )

    def run_status() -> float:
        return _timed(conn, "run_step_counts", {"run_id": random.choice(runs)})

    def one_asset() -> float:
        params = {"asset": f"a{random.randrange(ASSETS)}", "status": None, "limit": 100, "metadata": False}
        return _timed(conn, "report_partitions", params)

    def lineage() -> float:
        return _timed(conn, "lineage_upstream", {"id": random.choice(ids), "max_depth": 5})

    def runs_list() -> float:
        return _timed(conn, "report_runs", {"limit": 20, "status": None, "asset": None, "since": None})

    def asset_summary() -> float:
        return _timed(conn, "report_assets", {"asset": f"a{random.randrange(ASSETS)}"})

    def fixed_asset() -> float:
        return _timed(conn, "report_assets", {"asset": "fixed"})

    def all_assets() -> float:
        return _timed(conn, "report_assets", {"asset": None})

    return {
        "latest(asset, partition)": latest,
        "a run's status (step counts)": run_status,
        "status of one asset (100 partitions)": one_asset,
        "5-deep lineage walk": lineage,
        "runs list (20)": runs_list,
        "status summary of one asset": asset_summary,
        "summary of the 1,000-partition asset": fixed_asset,
        "status summary of all 50 assets": all_assets,
    }


def _pcts(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


def main() -> None:
    with _common.scratch_database() as url, tempfile.TemporaryDirectory() as home:
        runtime = fs.FlowStone(fs.Definitions([probe]), database_url=url, home=home)
        rows = 0
        next_run = 1
        results: dict[str, dict[int, tuple[float, float]]] = {}
        with psycopg.connect(url, autocommit=True) as conn:
            for level in LEVELS:
                started = time.perf_counter()
                while rows < level:
                    batch = min(level - rows, 1_000_000)
                    runs = (batch + PER_RUN - 1) // PER_RUN
                    ((after,),) = conn.execute(
                        "SELECT coalesce(max(id), 0) FROM flowstone_materializations"
                    ).fetchall()
                    conn.execute(
                        GROW, {"first_run": next_run, "last_run": next_run + runs - 1, "rows": batch}
                    )
                    conn.execute(LINK, {"after": after})
                    fixed = batch // 100 + (1000 if next_run == 1 else 0)
                    conn.execute(FIXED, {"batch_no": next_run, "rows": fixed})
                    next_run += runs
                    ((rows,),) = conn.execute("SELECT count(*) FROM flowstone_materializations").fetchall()
                conn.execute("VACUUM ANALYZE")  # as autovacuum would: visibility map and statistics
                print(f"== {rows:,} materializations (generated in {time.perf_counter() - started:.1f} s)")
                sample = "SELECT id FROM flowstone_materializations TABLESAMPLE SYSTEM (1) LIMIT 500"
                ids = [r[0] for r in conn.execute(sample)] or [
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM flowstone_materializations ORDER BY random() LIMIT 500"
                    )
                ]
                runs_ = [
                    r[0]
                    for r in conn.execute("SELECT run_id FROM flowstone_runs ORDER BY random() LIMIT 200")
                ]
                queries = _queries(conn, ids, runs_)
                for name, call in queries.items():
                    results.setdefault(name, {})[rows] = _pcts([call() for _ in range(REPEATS)])
                step = []
                for _ in range(min(REPEATS, 20)):
                    t0 = time.perf_counter()
                    runtime.materialize("probe")
                    step.append((time.perf_counter() - t0) * 1000)
                results.setdefault("in-process step (claim + success)", {})[rows] = _pcts(step)
        runtime.close()
    levels = sorted({r for v in results.values() for r in v})
    print(f"== p50 / p95 in ms at {', '.join(f'{n:,}' for n in levels)} rows")
    for name, by_rows in results.items():
        cells = "  ".join(f"{p50:7.2f} / {p95:7.2f}" for _, (p50, p95) in sorted(by_rows.items()))
        first, last = min(by_rows), max(by_rows)
        growth = by_rows[last][1] / by_rows[first][1] if by_rows[first][1] else float("nan")
        target = "<= 200 ms" if "all 50" in name else "<= 2x, <= 20 ms"
        print(f"{name:<40} {cells}   p95 growth {growth:5.2f}x (target {target})")


if __name__ == "__main__":
    main()
