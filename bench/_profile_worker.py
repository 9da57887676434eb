"""Where a queued step's time goes: commits, WAL flushes and statements per step from Postgres'
statistics, and (with py-spy installed) where the worker process spends its time.

Not part of ``make bench`` (a helper: its name starts with ``_``). Run it by hand:

    .venv/bin/python bench/_profile_worker.py [steps] [partitions_per_job] [chain]

It prints per-step figures for a run of trivial steps through one worker process (concurrency 8)
and, when ``py-spy`` is on the PATH, the functions with the most samples in the worker.
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

@fs.asset(partitions=fs.DailyPartitions(start="1800-01-01"))
def trivial(context: fs.AssetContext) -> int:
    return 1

CHAIN = [fs.asset(name="c0")(lambda: 0)]
for i in range(1, 100):
    namespace = {}
    exec(f"def c{i}(c{i - 1}: int) -> int:\\n    return c{i - 1} + 1\\n", namespace)
    CHAIN.append(fs.asset(namespace[f"c{i}"]))

defs = fs.Definitions(assets=[trivial, *CHAIN])
runtime = fs.FlowStone(defs)
app = runtime.procrastinate_app
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


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system) of process ``pid``, or of every ``postgres`` process when None."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in [Path(f"/proc/{pid}")] if pid is not None else Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if pid is None and comm != "postgres":
            continue
        fields = text[text.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


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


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    per_job = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    chain = len(sys.argv) > 3 and sys.argv[3] == "chain"
    with _common.scratch_database() as url, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        name = f"profmod_{uuid.uuid4().hex[:8]}"
        (work / f"{name}.py").write_text(textwrap.dedent(MODULE))
        env = _common.worker_env(work, FLOWSTONE_DATABASE_URL=url, FLOWSTONE_HOME=str(work / "home"))
        os.environ.update({k: env[k] for k in ("FLOWSTONE_DATABASE_URL", "FLOWSTONE_HOME")})
        sys.path.insert(0, str(work))
        mod: Any = __import__(name)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flowstone.cli",
                "worker",
                "--defs",
                f"{name}:runtime",
                "--concurrency",
                "8",
                *os.environ.get("BENCH_WORKER_ARGS", "").split(),
            ],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(2)
        before = stats(url)
        cpu_before = (cpu_seconds(worker.pid), cpu_seconds())
        start = time.perf_counter()
        if chain:
            handles = [mod.runtime.submit("c99", with_upstream=True) for _ in range(max(1, steps // 100))]
            total = 100 * len(handles)
        else:
            first = dt.date(1800, 1, 1)
            handles = [
                mod.runtime.backfill(
                    "trivial",
                    start=first,
                    end=first + dt.timedelta(days=steps - 1),
                    partitions_per_job=per_job,
                )
            ]
            total = steps
        spy = None
        if shutil.which("py-spy"):
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "-p",
                    str(worker.pid),
                    "-o",
                    str(work / "raw.txt"),
                    "-f",
                    "raw",
                    "-r",
                    "200",
                    "-d",
                    "15",
                    "--nonblocking",
                    "--gil",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        for handle in handles:
            handle.wait(timeout=900)
        elapsed = time.perf_counter() - start
        cpu_after = (cpu_seconds(worker.pid), cpu_seconds())
        after = stats(url)
        if spy is not None:
            spy.wait(timeout=60)
        worker.terminate()
        worker.wait(timeout=30)
        print(
            f"{total} steps in {elapsed:.2f} s = {total / elapsed:.1f} steps/s (ppj={per_job}, chain={chain})"
        )
        for key in before:
            print(f"  {key} per step: {(after[key] - before[key]) / total:.2f}")
        worker_us = 1e6 * (cpu_after[0] - cpu_before[0]) / total
        server_us = 1e6 * (cpu_after[1] - cpu_before[1]) / total
        print(f"  CPU per step: worker {worker_us:.0f} us, postgres {server_us:.0f} us")
        report_profile(work / "raw.txt")
        mod.runtime.close()


if __name__ == "__main__":
    main()
