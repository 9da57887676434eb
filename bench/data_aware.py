"""Data-aware assets (docs/data-aware.md): staleness of 10,000 partitions over a 3-asset chain, and
100,000 dynamic partition keys added in one call, each against a baseline of the same run.

Targets (issue 19): staleness <= 200 ms; 100,000 keys <= 2 s. Baselines: reading the latest rows of
the three assets (``flowstone_latest_materializations``, what any status report reads), and a bare
COPY of 100,000 rows into a temporary table.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import psycopg

import flowstone as fs

N = 10_000
DAYS = fs.DailyPartitions(start="2000-01-01", end="2027-05-19")

SEED = [
    """INSERT INTO flowstone_runs (run_id, selection, requested_by, status, finished_at)
       VALUES (%(run)s, ARRAY['p3'], 'bench', 'succeeded', now())""",
    """INSERT INTO flowstone_materializations (run_id, asset, partition_key, status, attempt,
                                               started_at, finished_at, output_ref)
       SELECT %(run)s, a.asset, 'd:' || to_char(date '2000-01-01' + g, 'YYYY-MM-DD'), 'succeeded', 1,
              now(), now(), '{}'::jsonb
       FROM generate_series(0, %(n)s - 1) AS g, unnest(ARRAY['p1', 'p2', 'p3']) AS a (asset)""",
    """INSERT INTO flowstone_lineage (materialization_id, upstream_materialization_id, input_name)
       SELECT d.id, u.id, u.asset
       FROM flowstone_materializations AS d
       JOIN flowstone_materializations AS u
         ON u.partition_key = d.partition_key AND (d.asset, u.asset) IN (('p2', 'p1'), ('p3', 'p2'))""",
    "ANALYZE",
]


@fs.asset(partitions=DAYS)
def p1() -> int:
    return 1


@fs.asset(partitions=DAYS)
def p2(p1: int) -> int:
    return p1


@fs.asset(partitions=DAYS)
def p3(p2: int) -> int:
    return p2


@fs.asset(partitions=fs.DynamicPartitions("tenants"))
def per_tenant() -> int:
    return 1


def main() -> None:
    keys = [f"tenant-{i:06d}" for i in range(100_000)]
    with _common.scratch_database() as url, tempfile.TemporaryDirectory() as home:
        with psycopg.connect(url, autocommit=True) as conn:
            run = uuid.uuid4()
            for statement in SEED:
                conn.execute(statement, {"run": run, "n": N})
            base, _ = _common.best_of(
                5,
                lambda: conn.execute(
                    "SELECT * FROM flowstone_latest_materializations WHERE asset = ANY(%s)",
                    (["p1", "p2", "p3"],),
                ).fetchall(),
            )
        _common.report("latest rows of 3 x 10,000 partitions (baseline), s", base, "s")
        defs = fs.Definitions(assets=[p1, p2, p3, per_tenant])
        with fs.FlowStone(defs, database_url=url, home=home) as rt:
            best, median = _common.best_of(5, rt.staleness)
            _common.report(
                "runtime.staleness(), 3 x 10,000 partitions, s", best, "s", baseline=base, target="<= 0.2 s"
            )
            _common.report("  median of 5, s", median, "s")
            with psycopg.connect(url) as conn:
                conn.execute("CREATE TEMPORARY TABLE keys_copy (definition text, partition_key text)")
                copy_s, _ = _common.best_of(1, lambda: _copy(conn, [f"s:{k}" for k in keys]))
            _common.report("COPY of 100,000 rows (baseline), s", copy_s, "s")
            add_s, _ = _common.best_of(1, lambda: rt.partitions.add("tenants", keys))
            _common.report(
                "runtime.partitions.add(100,000 keys), s", add_s, "s", baseline=copy_s, target="<= 2 s"
            )


def _copy(conn: psycopg.Connection[object], keys: list[str]) -> None:
    with conn.cursor().copy("COPY keys_copy (definition, partition_key) FROM STDIN") as copy:
        for key in keys:
            copy.write_row(("tenants", key))


if __name__ == "__main__":
    main()
