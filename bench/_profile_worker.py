"""Where a queued step's time goes: commits, WAL flushes and statements per step from Postgres'
statistics, and (with py-spy installed) where the worker process spends its time.

Not part of ``make bench`` (a helper: its name starts with ``_``). Run it by hand:

    .venv/bin/python bench/_profile_worker.py [steps] [partitions_per_job] [chain|fanout|raw]

It prints per-step figures for a run of trivial steps through one worker process (concurrency 8):
WAL and commits, CPU seconds of the worker and of every ``postgres`` process, the statements with
the most server time (when the server preloads ``pg_stat_statements``; point
FLOWSTONE_BENCH_DATABASE_URL at it) and, when ``py-spy`` is on the PATH, the functions that held
the worker's GIL most. ``raw`` measures the same for raw Procrastinate no-op jobs (the baseline).
BENCH_WORKER_ARGS adds arguments to ``flowstone worker``; BENCH_SETUP_SQL runs on the new database
before the worker starts (an experiment: e.g. a trigger disabled); BENCH_PROFILE_KEEP names a file to keep
py-spy's raw samples in; BENCH_SPY_ARGS replaces py-spy's ``--gil`` (e.g. ``--threads``: every
thread's samples, each stack under its thread; py-spy then counts a thread pool's idle workers as
busy, so read the job threads' stacks).
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import shutil
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

MODULE = """
import flowstone as fs
import procrastinate

@fs.asset(partitions=fs.DailyPartitions(start="1800-01-01"))
def trivial(context: fs.AssetContext) -> int:
    return 1

CHAIN = [fs.asset(name="c0")(lambda: 0)]
for i in range(1, 100):
    namespace = {}
    exec(f"def c{i}(c{i - 1}: int) -> int:\\n    return c{i - 1} + 1\\n", namespace)
    CHAIN.append(fs.asset(namespace[f"c{i}"]))

@fs.asset(partitions=fs.DailyPartitions(start="1800-01-01"))
def after(trivial: int) -> int:
    return trivial + 1

defs = fs.Definitions(assets=[trivial, after, *CHAIN])
runtime = fs.FlowStone(defs)
app = runtime.procrastinate_app

raw = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=runtime.database_url, max_size=10))

@raw.task(name="bench:noop", queue="raw")
def noop(i: int) -> None:
    return None
"""


def stats(url: str) -> dict[str, float]:
    with psycopg.connect(url) as conn:
        (commits,) = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()  # type: ignore[misc]
        (records,) = conn.execute("SELECT wal_records FROM pg_stat_wal").fetchone()  # type: ignore[misc]
        if conn.info.server_version >= 180000:  # WAL fsyncs moved to pg_stat_io in PostgreSQL 18
            query = "SELECT coalesce(sum(fsyncs), 0) FROM pg_stat_io WHERE object = 'wal'"
        else:
            query = "SELECT wal_sync FROM pg_stat_wal"
        (syncs,) = conn.execute(query).fetchone()  # type: ignore[misc]
    return {"commits": float(commits), "wal_syncs": float(syncs), "wal_records": float(records)}


def statements_reset(url: str) -> bool:
    """Reset pg_stat_statements when the server preloads it (creating the extension if needed)."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
    except psycopg.Error:
        return False
    return True


def statements_report(url: str, total: int) -> None:
    """The statements with the most server time, per step."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT calls, total_exec_time, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) "
            "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT 15"
        ).fetchall()
    print("  pg_stat_statements, most server time (us per step, calls per step, us per call):")
    for calls, ms, _rows, query in rows:
        print(f"    {1000 * ms / total:8.1f} {calls / total:6.2f} {1000 * ms / max(calls, 1):8.1f}  {query}")


def report_profile(raw: Path) -> None:
    """The worker's functions by self and inclusive time from py-spy's raw output, if any."""
    if raw.exists() and os.environ.get("BENCH_PROFILE_KEEP"):
        shutil.copy(raw, os.environ["BENCH_PROFILE_KEEP"])
    if raw.exists():
        own: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        total_samples = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            total_samples += int(count)
            own[frames[-1]] += int(count)
            for frame in set(frames):
                inclusive[frame] += int(count)
        print(f"  py-spy: {total_samples} samples; most self time:")
        for frame, count in own.most_common(25):
            print(f"    {100 * count / total_samples:5.1f}%  {frame}")
        print("  most inclusive time (FlowStone and Procrastinate functions):")
        shown = [(f, c) for f, c in inclusive.most_common() if "flowstone/" in f or "procrastinate/" in f]
        for frame, count in shown[:40]:
            print(f"    {100 * count / total_samples:5.1f}%  {frame}")


def start_worker(work: Path, name: str, env: dict[str, str], mode: str) -> subprocess.Popen[bytes]:
    if mode == "raw":
        command = ["-m", "procrastinate", f"--app={name}.raw", "worker", "--queues=raw", "--concurrency=8"]
    else:
        command = ["-m", "flowstone.cli", "worker", "--defs", f"{name}:runtime", "--concurrency", "8"]
        command += os.environ.get("BENCH_WORKER_ARGS", "").split()
    worker = subprocess.Popen(
        [sys.executable, *command], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(2)
    return worker


def start_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    if not shutil.which("py-spy"):
        return None
    command = ["py-spy", "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-r", "200", "-d", "15"]
    return subprocess.Popen(
        [*command, "--nonblocking", *os.environ.get("BENCH_SPY_ARGS", "--gil").split()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_load(mod: Any, url: str, steps: int, per_job: int, mode: str) -> tuple[int, Any]:
    """Start the load; the number of steps (jobs) and a function waiting for all of them."""
    if mode == "raw":
        with mod.raw.open():
            mod.noop.batch_defer(*[{"i": i} for i in range(steps)])

        def wait_raw() -> None:
            query = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            while True:
                with psycopg.connect(url) as conn:
                    if conn.execute(query).fetchone() == (steps,):
                        return
                time.sleep(0.01)

        return steps, wait_raw
    if mode == "chain":
        handles = [mod.runtime.submit("c99", with_upstream=True) for _ in range(max(1, steps // 100))]
        total = 100 * len(handles)
    elif mode == "fanout":  # one run: trivial[d] -> after[d]; each success releases a step and defers it
        first = dt.date(1800, 1, 1)
        days = [first + dt.timedelta(days=i) for i in range(steps // 2)]
        handles = [mod.runtime.submit(["trivial", "after"], days)]
        total = 2 * len(days)
    else:
        first = dt.date(1800, 1, 1)
        end = first + dt.timedelta(days=steps - 1)
        handles = [mod.runtime.backfill("trivial", start=first, end=end, partitions_per_job=per_job)]
        total = steps

    def wait() -> None:
        # Polled every 20 ms: RunHandle.wait backs off to 1 s, which would round the elapsed time.
        query = "SELECT count(*) FROM flowstone_runs WHERE run_id = ANY(%s) AND finished_at IS NOT NULL"
        ids = [uuid.UUID(h.run_id) for h in handles]
        deadline = time.perf_counter() + 900
        while time.perf_counter() < deadline:
            with psycopg.connect(url) as conn:
                if conn.execute(query, (ids,)).fetchone() == (len(ids),):
                    return
            time.sleep(0.02)
        raise TimeoutError("the runs did not finish in 900 s")

    return total, wait


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    per_job = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    mode = sys.argv[3] if len(sys.argv) > 3 else "backfill"
    with _common.scratch_database() as url, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        name = f"profmod_{uuid.uuid4().hex[:8]}"
        (work / f"{name}.py").write_text(textwrap.dedent(MODULE))
        env = _common.worker_env(work, FLOWSTONE_DATABASE_URL=url, FLOWSTONE_HOME=str(work / "home"))
        os.environ.update({k: env[k] for k in ("FLOWSTONE_DATABASE_URL", "FLOWSTONE_HOME")})
        sys.path.insert(0, str(work))
        mod: Any = __import__(name)
        if setup := os.environ.get("BENCH_SETUP_SQL"):  # an experiment's change to the schema
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(setup)  # type: ignore[call-overload]
        worker = start_worker(work, name, env, mode)
        statements = statements_reset(url)
        before = stats(url)
        cpu_before = (_common.cpu_seconds(worker.pid), _common.cpu_seconds())
        start = time.perf_counter()
        total, wait = run_load(mod, url, steps, per_job, mode)
        spy = start_spy(worker.pid, work / "raw.txt")
        wait()
        elapsed = time.perf_counter() - start
        cpu_after = (_common.cpu_seconds(worker.pid), _common.cpu_seconds())
        after = stats(url)
        if spy is not None:
            spy.wait(timeout=60)
        worker.terminate()
        worker.wait(timeout=30)
        print(f"{total} steps in {elapsed:.2f} s = {total / elapsed:.1f} steps/s (ppj={per_job}, {mode})")
        for key in before:
            print(f"  {key} per step: {(after[key] - before[key]) / total:.2f}")
        worker_us = 1e6 * (cpu_after[0] - cpu_before[0]) / total
        server_us = 1e6 * (cpu_after[1] - cpu_before[1]) / total
        print(f"  CPU per step: worker {worker_us:.0f} us, postgres {server_us:.0f} us")
        if statements:
            statements_report(url, total)
        report_profile(work / "raw.txt")
        mod.runtime.close()


if __name__ == "__main__":
    main()
