"""Queue benchmarks, each against a baseline measured in the same run (this machine is noisy):

1. throughput: N=3,000 trivial single-asset steps through one worker process (concurrency 8) vs
   Procrastinate processing N no-op jobs with the same worker settings (target >= 0.8x raw);
2. the same with 2 worker processes (scaling);
3. backfill of 100,000 daily partitions: plan + enqueue time (target <= 10 s), and the processing
   rate with partitions_per_job=50 (target >= 2,000 partitions/s);
4. enqueue-to-start latency p50/p95 with a warm idle worker (target p50 <= 50 ms).

Environment: FLOWSTONE_BENCH_DATABASE_URL (else an embedded Postgres), BENCH_N (default 3000),
BENCH_BACKFILL (default 100000), BENCH_PROCESS (partitions processed for the rate, default 20000).
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import psycopg

N = int(os.environ.get("BENCH_N", "3000"))
BACKFILL = int(os.environ.get("BENCH_BACKFILL", "100000"))
PROCESS = int(os.environ.get("BENCH_PROCESS", "20000"))
CONCURRENCY = 8

MODULE = """
import datetime
import flowstone as fs
import procrastinate

@fs.asset(partitions=fs.DailyPartitions(start="1800-01-01"))
def trivial(context: fs.AssetContext) -> int:
    return 1

defs = fs.Definitions(assets=[trivial])
runtime = fs.FlowStone(defs)
app = runtime.procrastinate_app

raw = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=runtime.database_url, max_size=10))

@raw.task(name="bench:noop", queue="raw")
def noop(i: int) -> None:
    return None
"""


class Bench:
    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.dir = workdir
        self.module = f"benchmod_{uuid.uuid4().hex[:8]}"
        (workdir / f"{self.module}.py").write_text(textwrap.dedent(MODULE))
        self.env = dict(
            os.environ,
            FLOWSTONE_DATABASE_URL=url,
            FLOWSTONE_HOME=str(workdir / "home"),
            PYTHONPATH=str(workdir),
        )
        os.environ.update({k: self.env[k] for k in ("FLOWSTONE_DATABASE_URL", "FLOWSTONE_HOME")})
        sys.path.insert(0, str(workdir))
        self.mod: Any = __import__(self.module)

    def sql(self, query: str, params: object = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def workers(self, count: int, *, raw: bool) -> list[subprocess.Popen[bytes]]:
        app = f"{self.module}.{'raw' if raw else 'app'}"
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "procrastinate",
                    f"--app={app}",
                    "worker",
                    f"--concurrency={CONCURRENCY}",
                ]
                + (["--queues=raw"] if raw else []),
                cwd=self.dir,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(count)
        ]
        time.sleep(2.0)  # let them start, register and LISTEN
        return procs

    @staticmethod
    def stop(procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)

    def wait_jobs(self, task: str, total: int, timeout: float = 600) -> float:
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            ((done,),) = self.sql(
                "SELECT count(*) FROM procrastinate_jobs "
                "WHERE task_name = %s AND status IN ('succeeded', 'failed')",
                (task,),
            )
            if done >= total:
                return time.perf_counter() - start
            time.sleep(0.05)
        raise TimeoutError(f"{task}: not done after {timeout}s")

    def wait_steps(self, run_id: str, total: int, timeout: float = 900) -> float:
        """Seconds until ``total`` steps of the run are finished, polled like wait_jobs (50 ms)."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            ((done,),) = self.sql(
                "SELECT count(*) FROM flowstone_materializations WHERE run_id = %s "
                "AND status IN ('succeeded', 'failed')",
                (run_id,),
            )
            if done >= total:
                return time.perf_counter() - start
            time.sleep(0.05)
        raise TimeoutError(f"run {run_id}: not done after {timeout}s")

    def raw_rate(self, n: int, processes: int) -> float:
        procs = self.workers(processes, raw=True)
        try:
            with self.mod.raw.open():
                before = self.sql("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'bench:noop'")[
                    0
                ][0]
                self.mod.noop.batch_defer(*[{"i": i} for i in range(n)])
            elapsed = self.wait_jobs("bench:noop", before + n)
        finally:
            self.stop(procs)
        return n / elapsed

    def flowstone_rate(self, n: int, processes: int, offset_days: int) -> float:
        start = dt.date(1800, 1, 1) + dt.timedelta(days=offset_days)
        procs = self.workers(processes, raw=False)
        try:
            handle = self.mod.runtime.backfill("trivial", start=start, end=start + dt.timedelta(days=n - 1))
            elapsed = self.wait_steps(handle.run_id, n)
            if handle.wait(timeout=60).status != "succeeded":
                raise RuntimeError(f"benchmark run failed: {handle.status()}")
        finally:
            self.stop(procs)
        return n / elapsed


def main() -> None:
    with _common.scratch_database() as url, tempfile.TemporaryDirectory() as tmp:
        bench = Bench(url, Path(tmp))
        print(f"== queue throughput, N={N}, concurrency={CONCURRENCY}")
        raw1 = bench.raw_rate(N, 1)
        _common.report("raw procrastinate, 1 worker process, jobs/s", raw1, "/s")
        fs1 = bench.flowstone_rate(N, 1, offset_days=0)
        _common.report(
            "flowstone steps, 1 worker process, steps/s", fs1, "/s", baseline=raw1, target=">= 0.8x raw"
        )
        raw2 = bench.raw_rate(N, 2)
        _common.report("raw procrastinate, 2 worker processes, jobs/s", raw2, "/s", baseline=raw1)
        fs2 = bench.flowstone_rate(N, 2, offset_days=N)
        _common.report("flowstone steps, 2 worker processes, steps/s", fs2, "/s", baseline=fs1)
        _common.report("flowstone 2 processes vs raw 2 processes", fs2 / raw2, "x")

        print(f"== backfill of {BACKFILL} daily partitions")
        first = dt.date(1800, 1, 1) + dt.timedelta(days=2 * N + 10)
        t0 = time.perf_counter()
        handle = bench.mod.runtime.backfill(
            "trivial", start=first, end=first + dt.timedelta(days=BACKFILL - 1), partitions_per_job=50
        )
        enqueue_s = time.perf_counter() - t0
        _common.report("plan + enqueue 100k partitions (ppj=50), s", enqueue_s, "s", target="<= 10 s")
        handle.cancel()
        second = first + dt.timedelta(days=BACKFILL + 10)
        handle = bench.mod.runtime.backfill(
            "trivial", start=second, end=second + dt.timedelta(days=PROCESS - 1), partitions_per_job=50
        )
        procs = bench.workers(2, raw=False)
        try:
            rate = PROCESS / bench.wait_steps(handle.run_id, PROCESS)
            if handle.wait(timeout=60).status != "succeeded":
                raise RuntimeError(f"benchmark backfill failed: {handle.status()}")
        finally:
            bench.stop(procs)
        _common.report(
            f"processing {PROCESS} partitions, ppj=50, 2 processes, /s",
            rate,
            "/s",
            baseline=raw2,
            target=">= 2000/s",
        )

        print("== enqueue-to-start latency, warm idle worker")
        procs = bench.workers(1, raw=False)
        try:
            latencies = []
            day = second + dt.timedelta(days=PROCESS + 10)
            for i in range(40):
                handle = bench.mod.runtime.submit("trivial", [day + dt.timedelta(days=i)])
                handle.wait(timeout=30, poll_interval_s=0.02)
                ((ms,),) = bench.sql(
                    "SELECT extract(epoch FROM started_at - queued_at) * 1000 "
                    "FROM flowstone_materializations WHERE run_id = %s",
                    (handle.run_id,),
                )
                latencies.append(float(ms))
                time.sleep(0.2)
        finally:
            bench.stop(procs)
        latencies.sort()
        _common.report("latency p50, ms", statistics.median(latencies), "ms", target="<= 50 ms")
        _common.report("latency p95, ms", latencies[int(len(latencies) * 0.95) - 1], "ms")
        bench.mod.runtime.close()


if __name__ == "__main__":
    main()
