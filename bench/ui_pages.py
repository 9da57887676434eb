"""Web UI page times with a big history: 100,000+ materializations (BENCH_UI_RUNS backfill runs of
a 3,653-partition daily asset, 2015..2024, plus a small graph) and BENCH_UI_SMALL small runs.
Every page and its JSON is requested BENCH_UI_REPEATS times (default 20) from uvicorn on loopback;
p50 and p95 are reported per page (target p95 <= 150 ms). The baseline is the cheapest request
the server answers (a static file), measured the same way in the same run.

Environment: FLOWSTONE_BENCH_DATABASE_URL (else an embedded Postgres), BENCH_UI_RUNS (default 30),
BENCH_UI_SMALL (default 500), BENCH_UI_REPEATS (default 20).
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import httpx
import psycopg
import uvicorn

import flowstone as fs
from flowstone.ui import app as app_mod

RUNS = int(os.environ.get("BENCH_UI_RUNS", "30"))
SMALL = int(os.environ.get("BENCH_UI_SMALL", "500"))
REPEATS = int(os.environ.get("BENCH_UI_REPEATS", "20"))

SEED = """
INSERT INTO flowstone_runs (run_id, kind, selection, requested_by, status, created_at, finished_at)
SELECT gen_random_uuid(), 'backfill', ARRAY['daily'], 'bench', 'succeeded',
       now() - make_interval(hours => r), now() - make_interval(hours => r) + interval '5 minutes'
FROM generate_series(1, %(runs)s) AS r;
INSERT INTO flowstone_materializations
    (run_id, asset, partition_key, status, attempt, created_at, queued_at, started_at, finished_at,
     output_ref, code_version, metadata)
SELECT r.run_id, 'daily', 'd:' || to_char(d, 'YYYY-MM-DD'),
       CASE WHEN extract(day FROM d) = 13 THEN 'failed' ELSE 'succeeded' END, 1,
       r.created_at, r.created_at, r.created_at, r.finished_at,
       CASE WHEN extract(day FROM d) = 13 THEN NULL ELSE '{"manager": "default"}'::jsonb END,
       '1', jsonb_build_object('rows', 100)
FROM flowstone_runs AS r
CROSS JOIN generate_series(date '2015-01-01', date '2024-12-31', interval '1 day') AS d
WHERE r.kind = 'backfill';
INSERT INTO flowstone_runs (run_id, kind, selection, requested_by, status, created_at, finished_at)
SELECT gen_random_uuid(), 'submit', ARRAY['report'], 'bench', 'succeeded',
       now() - make_interval(mins => r), now() - make_interval(mins => r) + interval '2 seconds'
FROM generate_series(1, %(small)s) AS r;
INSERT INTO flowstone_materializations
    (run_id, asset, partition_key, status, attempt, created_at, queued_at, started_at, finished_at,
     output_ref)
SELECT r.run_id, a, '__unpartitioned__', 'succeeded', 1, r.created_at, r.created_at, r.created_at,
       r.finished_at, '{"manager": "default"}'::jsonb
FROM flowstone_runs AS r CROSS JOIN unnest(ARRAY['source', 'clean', 'report']) AS a
WHERE r.kind = 'submit';
"""

BIG = fs.DailyPartitions(start="2015-01-01", end="2024-12-31")


@fs.asset(partitions=BIG, code_version="1")
def daily() -> int:
    return 1


@fs.asset
def source() -> int:
    return 1


@fs.asset
def clean(source: int) -> int:
    return source


@fs.asset
def report(clean: int) -> int:
    return clean


def _serve(app: object) -> tuple[uvicorn.Server, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


def _times(client: httpx.Client, path: str) -> tuple[float, float]:
    client.get(path).raise_for_status()  # warm: templates compiled, plans cached
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        client.get(path).raise_for_status()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def main() -> None:
    defs = fs.Definitions(assets=[daily, source, clean, report])
    with _common.scratch_database() as url, tempfile.TemporaryDirectory() as home:
        fs.FlowStone(defs, database_url=url, home=home).close()  # publishes the snapshot
        with psycopg.connect(url, autocommit=True) as conn:
            with psycopg.ClientCursor(conn) as cur:  # client-side binding: several statements
                cur.execute(SEED, {"runs": RUNS, "small": SMALL})  # type: ignore[arg-type]
            conn.execute("VACUUM ANALYZE flowstone_materializations")  # what autovacuum does soon after
            total = conn.execute("SELECT count(*) FROM flowstone_materializations").fetchone()
        print(f"materializations: {total[0] if total else 0}")
        rt = fs.FlowStone.from_database(database_url=url, home=home)
        server, base = _serve(app_mod.create_app(rt))
        try:
            with httpx.Client(base_url=base, timeout=60) as client:
                small_run = client.get("/api/runs", params={"status": "succeeded"}).json()["runs"][0][
                    "run_id"
                ]
                big_run = rt.store.reports.runs(limit=1, asset="daily")[0].run.run_id  # type: ignore[attr-defined]
                p50, _ = _times(client, "/static/ui.css")
                _common.report("static file (baseline), p50 ms", p50, "ms")
                pages = [
                    "/assets",
                    "/assets/daily",
                    "/assets/daily?partition=2020-02-29",
                    "/assets/report",
                    "/runs",
                    f"/runs/{small_run}",
                    f"/runs/{big_run}",
                    "/approvals",
                    "/automation",
                ]
                for page in pages:
                    for path in (page, "/api" + page):
                        p50, p95 = _times(client, path)
                        _common.report(f"{path[:40]} p50 ms", p50, "ms", baseline=None)
                        _common.report(f"{path[:40]} p95 ms", p95, "ms", target="<= 150")
        finally:
            server.should_exit = True
            rt.close()


if __name__ == "__main__":
    main()
