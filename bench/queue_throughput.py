"""Queue benchmarks, each beside a baseline measured in the same run (this machine is noisy), every
figure measured ``BENCH_ROUNDS`` times (default 3) and reported as min and median:

1. throughput: N trivial single-asset steps through one worker process (concurrency 8) vs raw
   Procrastinate processing N no-op jobs with the same worker settings (target >= 0.8x raw), and
   the same with 2 worker processes, and the same trivial steps in a pool whose limit (64) is above
   the worker's concurrency vs without a pool (target >= 0.9x);
2. a queued chain of 100 assets, per step, vs a chain of 100 raw Procrastinate jobs each deferring
   the next, one worker process with concurrency 1 (target <= 1.0x raw per job: continuation);
3. backfill: plan + enqueue of BENCH_BACKFILL daily partitions (target <= 10 s) and the processing
   rate with partitions_per_job=50 on 2 processes (target >= 15,000 partitions/s);
4. enqueue-to-start latency p50/p95 with a warm idle worker (target p50 <= 50 ms).

Environment: FLOWSTONE_BENCH_DATABASE_URL (else an embedded Postgres), BENCH_N (default 2000),
BENCH_BACKFILL (default 100000), BENCH_PROCESS (partitions processed for the rate, default 20000),
BENCH_ROUNDS (default 3), BENCH_WORKER_ARGS (more arguments for every ``flowstone worker``, e.g.
``--fetch-loops 1`` to compare with one fetch loop per process).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import psycopg

N = int(os.environ.get("BENCH_N", "2000"))
BACKFILL = int(os.environ.get("BENCH_BACKFILL", "100000"))
WORKER_ARGS = os.environ.get("BENCH_WORKER_ARGS", "").split()
PROCESS = int(os.environ.get("BENCH_PROCESS", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONCURRENCY = 8
CHAIN = 100

MODULE = """
import flowstone as fs
import procrastinate

@fs.asset(partitions=fs.DailyPartitions(start="1800-01-01"))
def trivial(context: fs.AssetContext) -> int:
    return 1

@fs.asset(partitions=fs.DailyPartitions(start="1800-01-01"), pool="wide")
def pooled(context: fs.AssetContext) -> int:
    return 1

CHAIN = [fs.asset(name="c0")(lambda: 0)]
for i in range(1, 100):
    namespace = {}
    exec(f"def c{i}(c{i - 1}: int) -> int:\\n    return c{i - 1} + 1\\n", namespace)
    CHAIN.append(fs.asset(namespace[f"c{i}"]))

defs = fs.Definitions(assets=[trivial, pooled, *CHAIN], pools=[fs.Pool("wide", limit=64)])
runtime = fs.FlowStone(defs)
app = runtime.procrastinate_app

raw = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=runtime.database_url, max_size=10))

@raw.task(name="bench:noop", queue="raw")
def noop(i: int) -> None:
    return None

@raw.task(name="bench:chain", queue="raw")
async def chain(i: int) -> None:
    if i < 99:
        await chain.defer_async(i=i + 1)
"""


class Bench:
    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.dir = workdir
        self.module = f"benchmod_{uuid.uuid4().hex[:8]}"
        (workdir / f"{self.module}.py").write_text(textwrap.dedent(MODULE))
        self.env = _common.worker_env(
            workdir, FLOWSTONE_DATABASE_URL=url, FLOWSTONE_HOME=str(workdir / "home")
        )
        os.environ.update({k: self.env[k] for k in ("FLOWSTONE_DATABASE_URL", "FLOWSTONE_HOME")})
        sys.path.insert(0, str(workdir))
        self.mod: Any = __import__(self.module)
        self.day = dt.date(1800, 1, 1)

    def sql(self, query: str, params: object = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def days(self, n: int) -> tuple[dt.date, dt.date]:
        """``n`` fresh daily partitions (never materialized before in this run)."""
        first = self.day
        self.day += dt.timedelta(days=n + 1)
        return first, first + dt.timedelta(days=n - 1)

    def workers(
        self, count: int, *, raw: bool, concurrency: int = CONCURRENCY
    ) -> list[subprocess.Popen[bytes]]:
        if raw:
            command = [
                sys.executable,
                "-m",
                "procrastinate",
                f"--app={self.module}.raw",
                "worker",
                "--queues=raw",
            ]
        else:
            command = [sys.executable, "-m", "flowstone.cli", "worker", "--defs", f"{self.module}:runtime"]
        ((newest,),) = self.sql("SELECT coalesce(max(id), 0) FROM procrastinate_workers")
        procs = [
            subprocess.Popen(
                [*command, f"--concurrency={concurrency}"]
                if raw
                else [*command, "--concurrency", str(concurrency), *WORKER_ARGS],
                cwd=self.dir,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(count)
        ]
        # Let them start, register and LISTEN: every figure is timed from the enqueue, with the
        # workers waiting (a loaded machine may take longer than the 2 s to start them).
        time.sleep(2.0)
        deadline = time.perf_counter() + 60
        query = "SELECT count(*) FROM procrastinate_workers WHERE id > %s"
        while self.sql(query, (newest,))[0][0] < count:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{count} worker processes did not register in 60 s")
            time.sleep(0.05)
        return procs

    @staticmethod
    def stop(procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)

    def wait_jobs(self, task: str, total: int, start: float, timeout: float = 600) -> float:
        """Seconds from ``start`` (a ``perf_counter`` reading) until ``total`` jobs of ``task`` ended."""
        while time.perf_counter() - start < timeout:
            ((done,),) = self.sql(
                "SELECT count(*) FROM procrastinate_jobs "
                "WHERE task_name = %s AND status IN ('succeeded', 'failed')",
                (task,),
            )
            if done >= total:
                return time.perf_counter() - start
            time.sleep(0.02)
        raise TimeoutError(f"{task}: not done after {timeout}s")

    def wait_run(self, handle: Any, start: float, timeout: float = 900) -> float:
        """Seconds from ``start`` (a ``perf_counter`` reading) until the run is finished (polled every
        20 ms)."""
        while time.perf_counter() - start < timeout:
            ((status,),) = self.sql("SELECT status FROM flowstone_runs WHERE run_id = %s", (handle.run_id,))
            if status in ("succeeded", "failed", "cancelled"):
                if status != "succeeded":
                    raise RuntimeError(f"benchmark run {status}: {handle.status()}")
                return time.perf_counter() - start
            time.sleep(0.02)
        raise TimeoutError(f"run {handle.run_id}: not done after {timeout}s")

    def raw_rate(self, n: int, processes: int) -> float:
        procs = self.workers(processes, raw=True)
        try:
            with self.mod.raw.open():
                ((before,),) = self.sql(
                    "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'bench:noop'"
                )
                start = time.perf_counter()
                self.mod.noop.batch_defer(*[{"i": i} for i in range(n)])
                # As FlowStone does after a large enqueue (JOB_STATISTICS_AFTER): with statistics
                # taken while few jobs waited, Procrastinate's fetch sorts every waiting job.
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute("ANALYZE procrastinate_jobs")
            elapsed = self.wait_jobs("bench:noop", before + n, start)
        finally:
            self.stop(procs)
        return n / elapsed

    def flowstone_rate(self, n: int, processes: int, asset: str = "trivial") -> float:
        first, last = self.days(n)
        procs = self.workers(processes, raw=False)
        try:
            start = time.perf_counter()  # as for raw: the workers wait, then the steps are enqueued
            handle = self.mod.runtime.backfill(asset, start=first, end=last)
            elapsed = self.wait_run(handle, start)
        finally:
            self.stop(procs)
        return n / elapsed

    def raw_chain_ms(self) -> float:
        # Concurrency 1 for both chains: with more, Procrastinate's worker loses the notification
        # of a job deferred while its fetch loop runs (it clears the event after an empty fetch)
        # and waits for its 5 s poll, which would measure the poll, not the queue.
        procs = self.workers(1, raw=True, concurrency=1)
        try:
            with self.mod.raw.open():
                ((before,),) = self.sql(
                    "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'bench:chain'"
                )
                start = time.perf_counter()
                self.mod.chain.defer(i=0)
            elapsed = self.wait_jobs("bench:chain", before + CHAIN, start)
        finally:
            self.stop(procs)
        return elapsed / CHAIN * 1000

    def flowstone_chain_ms(self) -> float:
        procs = self.workers(1, raw=False, concurrency=1)
        try:
            start = time.perf_counter()
            handle = self.mod.runtime.submit("c99", with_upstream=True)
            elapsed = self.wait_run(handle, start)
        finally:
            self.stop(procs)
        return elapsed / CHAIN * 1000

    def backfill_rate(self) -> float:
        first, last = self.days(PROCESS)
        procs = self.workers(2, raw=False)
        try:
            start = time.perf_counter()
            handle = self.mod.runtime.backfill("trivial", start=first, end=last, partitions_per_job=50)
            elapsed = self.wait_run(handle, start)
        finally:
            self.stop(procs)
        return PROCESS / elapsed

    def latencies_ms(self) -> list[float]:
        procs = self.workers(1, raw=False)
        try:
            latencies = []
            for _ in range(40):
                start, _ = self.days(1)
                handle = self.mod.runtime.submit("trivial", [start])
                handle.wait(timeout=30, poll_interval_s=0.02)
                ((ms,),) = self.sql(
                    "SELECT extract(epoch FROM started_at - queued_at) * 1000 "
                    "FROM flowstone_materializations WHERE run_id = %s",
                    (handle.run_id,),
                )
                latencies.append(float(ms))
                time.sleep(0.2)
        finally:
            self.stop(procs)
        return sorted(latencies)


def measured(name: str, fn: Callable[[], float], results: dict[str, list[float]]) -> float:
    value = fn()
    results.setdefault(name, []).append(value)
    print(f"  {name:<52} {value:10.2f}", flush=True)
    return value


def main() -> None:
    results: dict[str, list[float]] = {}
    with _common.scratch_database() as url, tempfile.TemporaryDirectory() as tmp:
        bench = Bench(url, Path(tmp))
        print(f"== backfill plan + enqueue of {BACKFILL} daily partitions (ppj=50)")
        start, end = bench.days(BACKFILL)
        t0 = time.perf_counter()
        handle = bench.mod.runtime.backfill("trivial", start=start, end=end, partitions_per_job=50)
        enqueue_s = time.perf_counter() - t0
        handle.cancel()
        _common.report(f"plan + enqueue {BACKFILL} partitions (ppj=50), s", enqueue_s, "s", target="<= 10 s")
        for round_ in range(1, ROUNDS + 1):
            print(f"== round {round_} of {ROUNDS} (N={N}, concurrency={CONCURRENCY})")
            measured("raw procrastinate, 1 process, jobs/s", lambda: bench.raw_rate(N, 1), results)
            measured("flowstone, 1 process, steps/s", lambda: bench.flowstone_rate(N, 1), results)
            measured(
                "flowstone in a pool of 64, 1 process, steps/s",
                lambda: bench.flowstone_rate(N, 1, "pooled"),
                results,
            )
            measured("raw procrastinate, 2 processes, jobs/s", lambda: bench.raw_rate(N, 2), results)
            measured("flowstone, 2 processes, steps/s", lambda: bench.flowstone_rate(N, 2), results)
            measured("raw procrastinate chain of 100, ms/job", bench.raw_chain_ms, results)
            measured("flowstone chain of 100, ms/step", bench.flowstone_chain_ms, results)
            measured("flowstone backfill ppj=50, 2 processes, partitions/s", bench.backfill_rate, results)
            lat = bench.latencies_ms()
            results.setdefault("latency p50, ms", []).append(statistics.median(lat))
            results.setdefault("latency p95, ms", []).append(lat[int(len(lat) * 0.95) - 1])
        bench.mod.runtime.close()
    print(f"== summary over {ROUNDS} rounds: min / median (ratios of medians against the baseline)")
    rows = [
        ("flowstone, 1 process, steps/s", "raw procrastinate, 1 process, jobs/s", ">= 0.8x"),
        ("flowstone, 2 processes, steps/s", "raw procrastinate, 2 processes, jobs/s", ">= 0.8x"),
        ("flowstone in a pool of 64, 1 process, steps/s", "flowstone, 1 process, steps/s", ">= 0.9x"),
        ("flowstone chain of 100, ms/step", "raw procrastinate chain of 100, ms/job", "<= 1.0x"),
        (
            "flowstone backfill ppj=50, 2 processes, partitions/s",
            "raw procrastinate, 2 processes, jobs/s",
            ">= 15000/s",
        ),
        ("latency p50, ms", None, "<= 50 ms"),
        ("latency p95, ms", None, ""),
    ]
    for name, base, target in rows:
        values = results[name]
        line = f"{name:<52} min {min(values):10.2f}  median {statistics.median(values):10.2f}"
        if base is not None:
            baseline = results[base]
            line += (
                f"  | {base}: min {min(baseline):8.2f} median {statistics.median(baseline):8.2f}"
                f"  ratio {statistics.median(values) / statistics.median(baseline):6.2f}x"
            )
        print(line + (f"  (target {target})" if target else ""))


if __name__ == "__main__":
    main()
