"""A worker runs as many steps at once as its ``--concurrency`` says, whatever the machine's number
of CPUs: Procrastinate runs each sync task in the event loop's default executor, whose size is
``min(32, cpus + 4)``, so without a pool of its own a worker of concurrency 8 on 2 cores ran 6."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.queue_harness import Pipeline

CONCURRENCY = min(32, (os.cpu_count() or 1) + 4) + 2
"""Two more than the default executor's size on this machine."""

BODY = f"""
import json

WIDE = {CONCURRENCY}

@fs.asset(partitions=fs.StaticPartitions([f"p{{i:02d}}" for i in range(WIDE)]))
def wide(context: fs.AssetContext) -> str:
    started = time.time()
    (MARKERS / f"started-{{context.partition}}").touch()
    deadline = time.monotonic() + 8  # every step waits until all have started (or gives up)
    while len(list(MARKERS.glob("started-*"))) < WIDE and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(MARKERS / "wide.jsonl", "a") as out:
        out.write(json.dumps([started, time.time()]) + "\\n")
    return str(context.partition)

defs = fs.Definitions(assets=[wide])
"""


@pytest.fixture
def pipeline(tmp_path: Path, database_url: str) -> Iterator[Pipeline]:
    with Pipeline(tmp_path, database_url, BODY) as p:
        yield p


def test_a_worker_runs_as_many_steps_at_once_as_its_concurrency(pipeline: Pipeline) -> None:
    pipeline.start_worker(concurrency=CONCURRENCY)
    handle = pipeline.runtime.backfill("wide")
    assert handle.wait(timeout=120).status == "succeeded", pipeline.logs()[-3000:]
    lines = (pipeline.markers / "wide.jsonl").read_text().splitlines()
    intervals = [tuple(float(x) for x in line.strip("[]").split(",")) for line in lines]
    assert len(intervals) == CONCURRENCY
    # every step was running when the last one started
    last_start = max(start for start, _ in intervals)
    assert sum(end >= last_start for _, end in intervals) == CONCURRENCY
