"""The queue benchmark's CPU accounting and the ceilings its summary prints
(``bench/queue_throughput.py``): what the team reads issue 14's gap from."""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def qt() -> Iterator[Any]:
    """``bench/queue_throughput.py`` as a module (the benchmarks are scripts, not a package)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(
            "queue_throughput_under_test", BENCH / "queue_throughput.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("queue_throughput_under_test", None)
        sys.path.remove(str(BENCH))


def test_cpu_per_unit_is_in_microseconds_and_keeps_an_unknown_server_unknown(qt: Any) -> None:
    assert qt.Cpu(2.0, 1.0, 0.5).per_unit_us(1000) == (2000.0, 1000.0, 500.0)
    assert qt.Cpu(2.0, None, 0.5).per_unit_us(1000) == (2000.0, None, 500.0)


def test_a_cpu_window_counts_a_worker_process_while_it_runs(qt: Any) -> None:
    burn = (
        "import time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3:\n"
        "    pass\n"
        "print('burnt', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE)
    try:
        window = qt.CpuWindow([proc], local=False)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"burnt"
        cpu = window.stop()
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert 0.25 <= cpu.workers < 5
    assert cpu.server is None  # not on this machine: not counted


def _results(qt: Any) -> dict[str, list[float]]:
    names = [
        "raw procrastinate, 1 process, jobs/s",
        "flowstone, 1 process, steps/s",
        "flowstone in a pool of 64, 1 process, steps/s",
        "raw procrastinate, 2 processes, jobs/s",
        "flowstone, 2 processes, steps/s",
        "raw procrastinate chain of 100, ms/job",
        "flowstone chain of 100, ms/step",
        "flowstone backfill ppj=50, 2 processes, partitions/s",
        "latency p50, ms",
        "latency p95, ms",
    ]
    results = {name: [100.0, 200.0, 300.0] for name in names}
    results["raw procrastinate, 1 process, jobs/s"] = [500.0, 600.0, 700.0]
    return results


def test_the_summary_prints_each_ceiling_from_the_cpu_of_the_same_run(
    qt: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(qt, "CORES", 2)
    cpu = {
        "raw procrastinate, 1 process, jobs/s": [(900.0, 1000.0, 100.0)] * 3,  # 2,000 us a job
        "raw procrastinate, 2 processes, jobs/s": [(1200.0, 1200.0, 100.0)] * 3,  # 2,500
        "flowstone, 1 process, steps/s": [(2000.0, 2900.0, 100.0)] * 3,  # 5,000 a step
        "flowstone's own work alone, 1 partition per job": [(0.0, 1800.0, 1200.0)] * 3,  # 3,000
        "flowstone's own work alone, 50 partitions per job": [(0.0, 120.0, 80.0)] * 3,  # 200
    }
    bench = types.SimpleNamespace(local=True, cpu=cpu)
    qt.summary(_results(qt), bench)
    out = capsys.readouterr().out
    assert "CPU ratio  0.40x" in out  # raw 2,000 us against FlowStone's 5,000
    # own work 3,000 + a raw job's 2,000 = 5,000 us: 2 cores make at most 400 steps/s, and 0.8x of
    # raw's median (600) would be 480
    assert "at most 400/s on 2 cores; 0.8x of raw's median is 480/s" in out
    # a partition: 200 + 2,500 / 50 = 250 us: at most 8,000 partitions/s
    assert "at most 8000/s on 2 cores; the target is 15000/s" in out
    assert statistics.median([500.0, 600.0, 700.0]) == 600.0


def test_the_summary_says_so_when_the_servers_cpu_is_not_counted(
    qt: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    qt.summary(_results(qt), types.SimpleNamespace(local=False, cpu={}))
    assert "the server is not on this machine" in capsys.readouterr().out
