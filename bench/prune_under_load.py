"""Pruning while the queue works: a queued backfill's throughput and an in-process step's latency
with and without a prune of old rows running beside them (issue: 10 M materializations).

Seeds BENCH_PRUNE_ROWS old finished materializations (set-based; default 200,000), then measures,
each BENCH_ROUNDS times (default 3): (a) a queued backfill of BENCH_N trivial partitions on one
worker (concurrency 8), and the p50/max of a probe materializing a trivial asset in-process every
50 ms, alone; (b) the same while ``runtime.prune`` deletes the old rows. Reports the throughput
ratio (target >= 0.8x), the probe's max latency, and the longest time any statement of the
database waited on a lock (polled every 2 ms; target: no claim blocked > 50 ms).

Environment: FLOWSTONE_BENCH_DATABASE_URL (else an embedded Postgres), BENCH_PRUNE_ROWS, BENCH_N
(default 2000), BENCH_ROUNDS.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

ROWS = int(os.environ.get("BENCH_PRUNE_ROWS", "200000"))
N = int(os.environ.get("BENCH_N", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))

MODULE = """
import flowstone as fs

@fs.asset(partitions=fs.DailyPartitions(start="1900-01-01"))
def trivial(context: fs.AssetContext) -> int:
    return 1

@fs.asset
def probe() -> int:
    return 1

@fs.asset(partitions=fs.DailyPartitions(start="1900-01-01"))
def old(context: fs.AssetContext) -> int:
    return 1

defs = fs.Definitions(assets=[trivial, probe, old])
runtime = fs.FlowStone(defs, retention=fs.Retention(runs_days=30, keep_last_per_partition=1, jobs_days=None))
app = runtime.procrastinate_app
"""

SEED = """
WITH runs AS (
    INSERT INTO flowstone_runs (run_id, kind, selection, requested_by, status, created_at, finished_at)
    SELECT md5('old' || %(seed)s::int || '-' || r)::uuid, 'backfill', ARRAY['old'], 'seed', 'succeeded',
           now() - interval '100 days', now() - interval '100 days'
    FROM generate_series(1, %(runs)s::int) AS r
    RETURNING run_id
)
INSERT INTO flowstone_materializations (run_id, asset, partition_key, status, attempt, started_at,
                                        finished_at, output_ref, output_deleted_at)
SELECT md5('old' || %(seed)s::int || '-' || (1 + n / 1000))::uuid, 'old',
       'd:' || (date '1900-01-01' + n %% 1000),
       'succeeded', 1, now() - interval '100 days', now() - interval '100 days' + interval '1 ms',
       '{"manager": "default", "uri": "x", "version": "1"}'::jsonb, now()
FROM generate_series(0, %(rows)s::int - 1) AS n
"""


class Probe(threading.Thread):
    """Materializes a trivial asset in-process every 50 ms and records each latency."""

    def __init__(self, runtime: Any) -> None:
        super().__init__(daemon=True)
        self.runtime = runtime
        self.stop = threading.Event()
        self.latencies: list[float] = []

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.runtime.materialize("probe")
            self.latencies.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.05)


class LockWatch(threading.Thread):
    """Polls pg_stat_activity every 2 ms for sessions waiting on a lock and keeps the longest wait
    seen per statement (from the first poll that saw it waiting to the last, plus one interval):
    how long a claim or success was blocked, whatever the CPU load does to latencies."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.longest_ms = 0.0
        self.longest_query = ""
        self.longest_claim_ms = 0.0  # the claim statement (it starts with its cfg CTE)

    def run(self) -> None:
        seen: dict[tuple[int, object], tuple[float, float, str]] = {}
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                now = time.perf_counter()
                rows = conn.execute(
                    "SELECT pid, query_start, left(query, 200) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).fetchall()
                for pid, started, query in rows:
                    first, _, _ = seen.get((pid, started), (now, now, query))
                    seen[(pid, started)] = (first, now, query)
                time.sleep(0.002)
        for first, last, query in seen.values():
            waited = (last - first) * 1000 + 2
            if waited > self.longest_ms:
                self.longest_ms, self.longest_query = waited, " ".join(query.split())
            if "WITH cfg AS" in query and "synchronous_commit" in query:
                self.longest_claim_ms = max(self.longest_claim_ms, waited)


def measure(
    rt: Any, work: Path, env: dict[str, str], start: dt.date, *, pruning: bool
) -> tuple[float, Probe, LockWatch]:
    """One backfill of N partitions on a worker, with a probe (and a prune when ``pruning``)."""
    from flowstone import prune  # noqa: PLC0415

    handle = rt.backfill("trivial", start=start, end=start + dt.timedelta(days=N - 1))
    command = [sys.executable, "-m", "flowstone.cli", "worker", "--defs", "prune_pipe:runtime"]
    worker = subprocess.Popen(
        [*command, "--concurrency", "8"],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = Probe(rt)
    watch = LockWatch(rt.require_database_url())
    watch.start()
    policy = rt.services.options.retention
    pruner = threading.Thread(target=prune.prune, args=(rt.services, policy)) if pruning else None
    t0 = time.perf_counter()
    probe.start()
    if pruner is not None:
        pruner.start()
    handle.wait(timeout=900, poll_interval_s=0.1)
    elapsed = time.perf_counter() - t0
    probe.stop.set()
    probe.join()
    if pruner is not None:
        pruner.join()
    watch.stop.set()
    watch.join()
    worker.terminate()
    worker.wait()
    return N / elapsed, probe, watch


def main() -> None:
    with _common.scratch_database() as url, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "prune_pipe.py").write_text(textwrap.dedent(MODULE))
        env = _common.worker_env(work, FLOWSTONE_DATABASE_URL=url)
        os.environ["FLOWSTONE_DATABASE_URL"] = url
        sys.path.insert(0, str(work))
        import prune_pipe  # noqa: PLC0415 - written above

        rt = prune_pipe.runtime
        day = dt.date(1900, 1, 1)
        rates: dict[str, list[float]] = {"alone": [], "while pruning": []}
        probes: dict[str, list[float]] = {"alone": [], "while pruning": []}
        waits: dict[str, list[float]] = {"alone": [], "while pruning": []}
        claims: dict[str, list[float]] = {"alone": [], "while pruning": []}
        for round_ in range(ROUNDS):
            for mode in ("alone", "while pruning"):
                with psycopg.connect(url, autocommit=True) as conn:
                    seed = 2 * round_ + (mode != "alone")
                    conn.execute(SEED, {"runs": (ROWS + 999) // 1000, "rows": ROWS, "seed": seed})
                    conn.execute("VACUUM ANALYZE")
                start = day + dt.timedelta(days=(2 * round_ + (mode != "alone")) * N)
                rate, probe, watch = measure(rt, work, env, start, pruning=mode != "alone")
                rates[mode].append(rate)
                waits[mode].append(watch.longest_ms)
                claims[mode].append(watch.longest_claim_ms)
                probes[mode].append(max(probe.latencies) if probe.latencies else float("nan"))
                p50 = statistics.median(probe.latencies) if probe.latencies else float("nan")
                print(
                    f"round {round_ + 1} {mode:<14} {rate:8.1f} steps/s, "
                    f"probe max {probes[mode][-1]:7.1f} ms p50 {p50:6.1f} ms, longest lock wait "
                    f"{watch.longest_ms:6.1f} ms {watch.longest_query[:60]!r}, of a claim "
                    f"{watch.longest_claim_ms:6.1f} ms",
                    flush=True,
                )
        rt.close()
    alone, pruning = statistics.median(rates["alone"]), statistics.median(rates["while pruning"])
    print(
        f"== backfill steps/s alone: min {min(rates['alone']):.1f} median {alone:.1f}; while pruning "
        f"{ROWS:,} rows: min {min(rates['while pruning']):.1f} median {pruning:.1f}; "
        f"ratio {pruning / alone:.2f}x (target >= 0.8x)"
    )
    print(
        f"== probe max latency alone: median {statistics.median(probes['alone']):.1f} ms; while pruning: "
        f"median {statistics.median(probes['while pruning']):.1f} ms (a probe: claim + success in-process)"
    )
    print(
        f"== longest lock wait of any statement alone: max {max(waits['alone']):.1f} ms; while pruning: "
        f"max {max(waits['while pruning']):.1f} ms; of a claim alone: max {max(claims['alone']):.1f} ms, "
        f"while pruning: max {max(claims['while pruning']):.1f} ms (target: no claim blocked > 50 ms)"
    )


if __name__ == "__main__":
    main()
