"""The cost of step logs: queue throughput of N single-asset steps that log one line each
(``context.log.info``, default ``StepLogSettings``) against the same steps logging nothing, in the
same run, interleaved, ``BENCH_ROUNDS`` times (min and median). Target: the logging steps reach at
least 0.95x the throughput of the quiet ones (logging costs at most 5%).

Environment: FLOWSTONE_BENCH_DATABASE_URL (else an embedded Postgres), BENCH_N (default 2000),
BENCH_ROUNDS (default 3).
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

N = int(os.environ.get("BENCH_N", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONCURRENCY = 8

MODULE = """
import flowstone as fs

DAILY = fs.DailyPartitions(start="1800-01-01")

@fs.asset(partitions=DAILY)
def quiet(context: fs.AssetContext) -> int:
    return 1

@fs.asset(partitions=DAILY)
def logged(context: fs.AssetContext) -> int:
    context.log.info("processed partition %s", context.partition_key)
    return 1

runtime = fs.FlowStone(fs.Definitions(assets=[quiet, logged]))
"""


def main() -> None:
    results: dict[str, list[float]] = {}
    with _common.scratch_database() as url, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        module = f"benchlogs_{uuid.uuid4().hex[:8]}"
        (workdir / f"{module}.py").write_text(textwrap.dedent(MODULE))
        env = _common.worker_env(workdir, FLOWSTONE_DATABASE_URL=url, FLOWSTONE_HOME=str(workdir / "home"))
        os.environ.update({k: env[k] for k in ("FLOWSTONE_DATABASE_URL", "FLOWSTONE_HOME")})
        sys.path.insert(0, str(workdir))
        mod: Any = __import__(module)
        day = dt.date(1800, 1, 1)

        def rate(asset: str) -> float:
            nonlocal day
            start, end = day, day + dt.timedelta(days=N - 1)
            day = end + dt.timedelta(days=2)
            command = [sys.executable, "-m", "flowstone.cli", "worker", "--defs", f"{module}:runtime"]
            proc = subprocess.Popen(
                [*command, "--concurrency", str(CONCURRENCY)],
                cwd=workdir,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(2.0)  # let it start, register and LISTEN: measure steps, not start-up
            handle = mod.runtime.backfill(asset, start=start, end=end)
            t0 = time.perf_counter()
            try:
                while True:
                    with psycopg.connect(url) as conn:
                        row = conn.execute(
                            "SELECT status FROM flowstone_runs WHERE run_id = %s", (handle.run_id,)
                        ).fetchone()
                    if row is not None and row[0] in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.02)
                elapsed = time.perf_counter() - t0
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            return N / elapsed

        for round_ in range(1, ROUNDS + 1):
            print(f"== round {round_} of {ROUNDS} (N={N}, concurrency={CONCURRENCY})")
            for asset in ("quiet", "logged"):
                value = rate(asset)
                results.setdefault(asset, []).append(value)
                print(f"  {asset:<8} steps/s {value:10.2f}", flush=True)
        with psycopg.connect(url) as conn:
            ((lines,),) = conn.execute("SELECT count(*) FROM flowstone_step_logs").fetchall()
        mod.runtime.close()
    quiet, logged = statistics.median(results["quiet"]), statistics.median(results["logged"])
    print(f"== summary over {ROUNDS} rounds (step log lines stored: {lines})")
    print(
        f"steps logging one line, steps/s  min {min(results['logged']):9.2f} median {logged:9.2f}"
        f"  | quiet steps: min {min(results['quiet']):9.2f} median {quiet:9.2f}"
        f"  ratio {logged / quiet:5.2f}x  (target >= 0.95x)"
    )


if __name__ == "__main__":
    main()
