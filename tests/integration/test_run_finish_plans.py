"""``flowstone_run_finish`` reads a run's steps with a cost that does not depend on the other runs
(migration 0021). Every step's end calls it, so a plan that scans the steps of every run (a
generic plan of its probes, chosen from statistics that one big run dominates) made each success
of a small run pay for a big backfill's backlog, and each run's last step for the whole table.

A database with one big backfill in flight (20,000 queued steps), one big cancelled run (30,000
steps) and a small run; the session forces generic plans, as a worker's session gets after five
calls. The function's shared buffers, read under EXPLAIN (ANALYZE, BUFFERS), count what it
touched: a few index pages, whatever else the table holds."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests import pg

SMALL = str(uuid.UUID(int=3))
BUDGET = 60  # shared buffers: the run's row, a few index descents, the audit row when it finishes

SEED = [
    """INSERT INTO flowstone_runs (run_id, kind, selection, requested_by, status, finished_at)
       VALUES ('00000000-0000-0000-0000-000000000001', 'backfill', ARRAY['big'], 'seed', 'running', NULL),
              ('00000000-0000-0000-0000-000000000002', 'backfill', ARRAY['old'], 'seed', 'cancelled', now()),
              ('00000000-0000-0000-0000-000000000003', 'submit', ARRAY['s'], 'seed', 'running', NULL)""",
    """INSERT INTO flowstone_materializations (run_id, asset, partition_key, status, batch_key, job_id)
       SELECT '00000000-0000-0000-0000-000000000001', 'big', 'd:' || p, 'queued', 'd:' || p, p
       FROM generate_series(1, 20000) AS p""",
    """INSERT INTO flowstone_materializations (run_id, asset, partition_key, status)
       SELECT '00000000-0000-0000-0000-000000000002', 'old', 'd:' || p, 'cancelled'
       FROM generate_series(1, 30000) AS p""",
    """INSERT INTO flowstone_materializations (run_id, asset, partition_key, status, attempt, started_at,
                                              finished_at, output_ref)
       VALUES ('00000000-0000-0000-0000-000000000003', 's1', '__all__', 'succeeded', 1, now(), now(),
               '{}'),
              ('00000000-0000-0000-0000-000000000003', 's2', '__all__', 'running', 1, now(), NULL,
               NULL)""",
]


@pytest.fixture
def seeded(pg_server: pg.Server, template_db: str) -> Iterator[str]:
    with pg.fresh_database(pg_server, template=template_db) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in SEED:
                conn.execute(statement)
            conn.execute("ANALYZE")
        yield url


FINISH = "SELECT status FROM flowstone_run_finish(%s, 'tester', NULL, false)"


def _touched(conn: psycopg.Connection[Any]) -> int:
    """The shared buffers flowstone_run_finish touches for the small run, under EXPLAIN (ANALYZE,
    BUFFERS): the call runs, and what it changes stays."""
    (plan,) = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + FINISH, (SMALL,)).fetchone()  # type: ignore[misc]
    top = (plan if not isinstance(plan, str) else json.loads(plan))[0]["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
def test_run_finish_touches_a_few_pages_whatever_the_other_runs_hold(seeded: str, mode: str) -> None:
    with psycopg.connect(seeded, autocommit=True) as conn:
        conn.execute(f"SET plan_cache_mode = {mode}")
        # A step of the small run still runs: the run goes on.
        assert conn.execute(FINISH, (SMALL,)).fetchall() == []
        touched = _touched(conn)
        assert touched <= BUDGET, f"{touched} buffers while the run goes on"
        # Its last step ends: the run finishes (the probes now find no active step at all).
        conn.execute(
            "UPDATE flowstone_materializations SET status = 'succeeded', finished_at = now(), "
            "output_ref = '{}' WHERE run_id = %s AND status = 'running'",
            (SMALL,),
        )
        with conn.transaction():
            assert conn.execute(FINISH, (SMALL,)).fetchall() == [("succeeded",)]
            raise psycopg.Rollback  # the same call again, measured
        touched = _touched(conn)
        assert touched <= BUDGET, f"{touched} buffers for the run's last step"
        (status,) = conn.execute("SELECT status FROM flowstone_runs WHERE run_id = %s", (SMALL,)).fetchone()  # type: ignore[misc]
        assert status == "succeeded"
