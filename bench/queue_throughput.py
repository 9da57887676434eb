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
4. enqueue-to-start latency p50/p95 with a warm idle worker (target p50 <= 50 ms);
5. CPU per job, step or partition of every rate above (worker processes, server processes when the
   server runs on this machine, this driver), and FlowStone's own work alone: the jobs of a run
   executed one after the other in this process, with no queue and no worker (claim, step, success
   and the job's finish), as CPU per step or partition. On a machine whose cores are the bound, the
   CPU ratio is the ceiling of the rate ratio, and the cores divided by the work alone are the
   ceiling of a rate whatever the queue does.

Environment: FLOWSTONE_BENCH_DATABASE_URL (else an embedded Postgres), BENCH_N (default 2000),
BENCH_BACKFILL (default 100000), BENCH_PROCESS (partitions processed for the rate, default 20000),
BENCH_ROUNDS (default 3), BENCH_FLOOR (partitions of the work-alone measurement, default 5000),
BENCH_WORKER_ARGS (more arguments for every ``flowstone worker``, e.g.
``--fetch-loops 1`` to compare with one fetch loop per process).
"""

from __future__ import annotations

import dataclasses
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

from flowstone.queue import jobs as fs_jobs
from flowstone.queue import worker as fs_worker

N = int(os.environ.get("BENCH_N", "2000"))
BACKFILL = int(os.environ.get("BENCH_BACKFILL", "100000"))
WORKER_ARGS = os.environ.get("BENCH_WORKER_ARGS", "").split()
PROCESS = int(os.environ.get("BENCH_PROCESS", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
FLOOR = int(os.environ.get("BENCH_FLOOR", "5000"))
CORES = len(os.sched_getaffinity(0))
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


@dataclasses.dataclass(frozen=True)
class Cpu:
    """CPU seconds of one measurement: the worker processes, the server's processes (``None`` when
    the server is not on this machine) and this driver process (enqueueing, planning, polling)."""

    workers: float
    server: float | None
    driver: float

    def per_unit_us(self, units: int) -> tuple[float, float | None, float]:
        """Microseconds per job, step or partition."""
        scale = 1e6 / units
        server = self.server * scale if self.server is not None else None
        return self.workers * scale, server, self.driver * scale


class CpuWindow:
    """Counts CPU from its creation to :meth:`stop`: worker processes are read while they run (their
    start-up, imports included, is not counted), the server's processes by name on this machine."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], *, local: bool) -> None:
        self.procs = procs
        self.local = local
        self.start = self._read()

    def _read(self) -> tuple[float, float, float]:
        workers = sum(_common.cpu_seconds(p.pid) for p in self.procs)
        return workers, _common.cpu_seconds() if self.local else 0.0, time.process_time()

    def stop(self) -> Cpu:
        workers, server, driver = self._read()
        return Cpu(
            workers - self.start[0],
            server - self.start[1] if self.local else None,
            driver - self.start[2],
        )


class Bench:
    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.local = _common.server_is_local(url)
        self.last_cpu: Cpu | None = None
        self.cpu: dict[str, list[tuple[float, float | None, float]]] = {}
        # The waits poll on one connection: a connection per poll (every 20 ms) would fork a server
        # process each time, CPU that neither side's work needs and that the figures would count.
        self.poll = psycopg.connect(url, autocommit=True)
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
            ((done,),) = self.poll.execute(
                "SELECT count(*) FROM procrastinate_jobs "
                "WHERE task_name = %s AND status IN ('succeeded', 'failed')",
                (task,),
            ).fetchall()
            if done >= total:
                return time.perf_counter() - start
            time.sleep(0.02)
        raise TimeoutError(f"{task}: not done after {timeout}s")

    def wait_run(self, handle: Any, start: float, timeout: float = 900) -> float:
        """Seconds from ``start`` (a ``perf_counter`` reading) until the run is finished (polled every
        20 ms)."""
        while time.perf_counter() - start < timeout:
            ((status,),) = self.poll.execute(
                "SELECT status FROM flowstone_runs WHERE run_id = %s", (handle.run_id,)
            ).fetchall()
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
                window = CpuWindow(procs, local=self.local)
                start = time.perf_counter()
                self.mod.noop.batch_defer(*[{"i": i} for i in range(n)])
                # As FlowStone does after a large enqueue (JOB_STATISTICS_AFTER): with statistics
                # taken while few jobs waited, Procrastinate's fetch sorts every waiting job.
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute("ANALYZE procrastinate_jobs")
            elapsed = self.wait_jobs("bench:noop", before + n, start)
            self.last_cpu = window.stop()
        finally:
            self.stop(procs)
        return n / elapsed

    def flowstone_rate(self, n: int, processes: int, asset: str = "trivial") -> float:
        first, last = self.days(n)
        procs = self.workers(processes, raw=False)
        try:
            window = CpuWindow(procs, local=self.local)
            start = time.perf_counter()  # as for raw: the workers wait, then the steps are enqueued
            handle = self.mod.runtime.backfill(asset, start=first, end=last)
            elapsed = self.wait_run(handle, start)
            self.last_cpu = window.stop()
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
                window = CpuWindow(procs, local=self.local)
                start = time.perf_counter()
                self.mod.chain.defer(i=0)
            elapsed = self.wait_jobs("bench:chain", before + CHAIN, start)
            self.last_cpu = window.stop()
        finally:
            self.stop(procs)
        return elapsed / CHAIN * 1000

    def flowstone_chain_ms(self) -> float:
        procs = self.workers(1, raw=False, concurrency=1)
        try:
            window = CpuWindow(procs, local=self.local)
            start = time.perf_counter()
            handle = self.mod.runtime.submit("c99", with_upstream=True)
            elapsed = self.wait_run(handle, start)
            self.last_cpu = window.stop()
        finally:
            self.stop(procs)
        return elapsed / CHAIN * 1000

    def backfill_rate(self) -> float:
        first, last = self.days(PROCESS)
        procs = self.workers(2, raw=False)
        try:
            window = CpuWindow(procs, local=self.local)
            start = time.perf_counter()
            handle = self.mod.runtime.backfill("trivial", start=first, end=last, partitions_per_job=50)
            elapsed = self.wait_run(handle, start)
            self.last_cpu = window.stop()
        finally:
            self.stop(procs)
        return PROCESS / elapsed

    def work_alone(self, units: int, per_job: int) -> float:
        """FlowStone's own work, with no queue: a backfill of ``units`` partitions, ``per_job`` to a
        job, whose jobs this process runs one after the other as a worker's task would (claim, step,
        success, and the job's finish by its last success); no worker runs. One job of another run
        goes first, uncounted (connections, prepared statements). Returns the seconds; the CPU is
        in ``last_cpu`` (the driver's share is the work a worker's thread would do)."""
        runner = fs_worker.JobRunner(self.mod.runtime.services)
        self._run_jobs(runner, per_job, per_job)
        elapsed, self.last_cpu = self._run_jobs(runner, units, per_job)
        return elapsed

    def _run_jobs(self, runner: fs_worker.JobRunner, units: int, per_job: int) -> tuple[float, Cpu]:
        """Plan a backfill, then run its jobs here; the seconds and CPU of running them (the plan,
        like a queue's enqueue, is not counted)."""
        first, last = self.days(units)
        handle = self.mod.runtime.backfill("trivial", start=first, end=last, partitions_per_job=per_job)
        todo = self.sql(
            "SELECT id, args, queue_name FROM procrastinate_jobs WHERE task_name = %s "
            "AND status = 'todo' AND args ->> 'run_id' = %s ORDER BY id",
            (fs_jobs.TASK_NAME, handle.run_id),
        )
        window = CpuWindow([], local=self.local)
        start = time.perf_counter()
        for job_id, args, queue in todo:
            runner.run(args, job_id=job_id, queue=queue, finish=True)
        elapsed = time.perf_counter() - start
        cpu = window.stop()
        ((status,),) = self.sql("SELECT status FROM flowstone_runs WHERE run_id = %s", (handle.run_id,))
        if status != "succeeded":
            raise RuntimeError(f"the work-alone run ended {status}")
        return elapsed, cpu

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


def measured(
    name: str, fn: Callable[[], float], results: dict[str, list[float]], bench: Bench, units: int
) -> float:
    """Run one measurement; print it with its CPU per job, step or partition (``units`` of them)."""
    bench.last_cpu = None
    value = fn()
    results.setdefault(name, []).append(value)
    cpu = ""
    if bench.last_cpu is not None:
        workers, server, driver = per = bench.last_cpu.per_unit_us(units)
        bench.cpu.setdefault(name, []).append(per)
        shown = f"{server:.0f}" if server is not None else "n/a"
        cpu = f"   CPU us/unit: workers {workers:.0f}, server {shown}, driver {driver:.0f}"
    print(f"  {name:<52} {value:10.2f}{cpu}", flush=True)
    return value


def cpu_total(per: tuple[float, float | None, float]) -> float:
    """Microseconds of CPU per unit, every process counted (the server's when known)."""
    workers, server, driver = per
    return workers + (server or 0.0) + driver


def cpu_median(bench: Bench, name: str) -> float | None:
    """The median over the rounds of a figure's CPU per unit (``None`` when not measured)."""
    values = bench.cpu.get(name)
    return statistics.median(cpu_total(v) for v in values) if values else None


def summary(results: dict[str, list[float]], bench: Bench) -> None:
    """Every figure's min and median with its baseline, its CPU and, where it applies, the ceiling
    that CPU sets on this machine's cores."""
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
    if not bench.local:
        print("CPU: the server is not on this machine; its share is not counted")
    print(f"== CPU per job, step or partition (median over the rounds, us; {CORES} cores)")
    for name, base in (
        ("flowstone, 1 process, steps/s", "raw procrastinate, 1 process, jobs/s"),
        ("flowstone, 2 processes, steps/s", "raw procrastinate, 2 processes, jobs/s"),
        ("flowstone chain of 100, ms/step", "raw procrastinate chain of 100, ms/job"),
    ):
        mine, theirs = cpu_median(bench, name), cpu_median(bench, base)
        if mine is not None and theirs is not None:
            print(
                f"{name:<52} {mine:8.0f}  | {base}: {theirs:8.0f}  CPU ratio {theirs / mine:5.2f}x"
                "  (the rate ratio's ceiling when the cores are the bound)"
            )
    # A queued step does at least FlowStone's own work and a Procrastinate job's: the cores divided
    # by the sum bound its rate, whatever the queue does.
    for label, alone_name, raw_name, per_job, target in (
        (
            "a queued step, 1 process",
            "flowstone's own work alone, 1 partition per job",
            "raw procrastinate, 1 process, jobs/s",
            1,
            0.8,
        ),
        (
            "a queued step, 2 processes",
            "flowstone's own work alone, 1 partition per job",
            "raw procrastinate, 2 processes, jobs/s",
            1,
            0.8,
        ),
        (
            "a backfill partition (ppj=50), 2 processes",
            "flowstone's own work alone, 50 partitions per job",
            "raw procrastinate, 2 processes, jobs/s",
            50,
            None,
        ),
    ):
        alone, raw_job = cpu_median(bench, alone_name), cpu_median(bench, raw_name)
        if alone is None or raw_job is None:
            continue
        floor = alone + raw_job / per_job
        goal = (
            f"; {target}x of raw's median is {target * statistics.median(results[raw_name]):.0f}/s"
            if target is not None
            else "; the target is 15000/s"
        )
        print(
            f"{label:<52} {floor:8.0f}  own work {alone:.0f} + a raw job's {raw_job:.0f}/{per_job}"
            f" -> at most {CORES * 1e6 / floor:.0f}/s on {CORES} cores{goal}"
        )
    name = "flowstone backfill ppj=50, 2 processes, partitions/s"
    if (backfill := cpu_median(bench, name)) is not None:
        print(f"{name:<52} {backfill:8.0f}  (through the queue)")


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
            measured("raw procrastinate, 1 process, jobs/s", lambda: bench.raw_rate(N, 1), results, bench, N)
            measured("flowstone, 1 process, steps/s", lambda: bench.flowstone_rate(N, 1), results, bench, N)
            measured(
                "flowstone in a pool of 64, 1 process, steps/s",
                lambda: bench.flowstone_rate(N, 1, "pooled"),
                results,
                bench,
                N,
            )
            measured(
                "raw procrastinate, 2 processes, jobs/s", lambda: bench.raw_rate(N, 2), results, bench, N
            )
            measured("flowstone, 2 processes, steps/s", lambda: bench.flowstone_rate(N, 2), results, bench, N)
            measured("raw procrastinate chain of 100, ms/job", bench.raw_chain_ms, results, bench, CHAIN)
            measured("flowstone chain of 100, ms/step", bench.flowstone_chain_ms, results, bench, CHAIN)
            measured(
                "flowstone backfill ppj=50, 2 processes, partitions/s",
                bench.backfill_rate,
                results,
                bench,
                PROCESS,
            )
            measured(
                "flowstone's own work alone, 1 partition per job",
                lambda: N / 4 / bench.work_alone(N // 4, 1),
                results,
                bench,
                N // 4,
            )
            measured(
                "flowstone's own work alone, 50 partitions per job",
                lambda: FLOOR / bench.work_alone(FLOOR, 50),
                results,
                bench,
                FLOOR,
            )
            lat = bench.latencies_ms()
            results.setdefault("latency p50, ms", []).append(statistics.median(lat))
            results.setdefault("latency p95, ms", []).append(lat[int(len(lat) * 0.95) - 1])
        bench.mod.runtime.close()
        bench.poll.close()
    summary(results, bench)


if __name__ == "__main__":
    main()
