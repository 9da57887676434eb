"""Step logs on a real worker process: order, retries kept apart, concurrent steps never mixed, the
periodic flush surviving a SIGKILL, and `flowstone worker --log-format json` lifecycle events."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.queue_harness import Pipeline, eventually

BODY = """
import logging
import sys


@fs.asset
def talker(context: fs.AssetContext) -> int:
    context.log.info("line 1")
    print("line 2")
    logging.getLogger("user.module").warning("line 3")
    print("line 4", file=sys.stderr)
    context.log.info("line 5")
    return 5


@fs.asset(retry=fs.RetryPolicy(max_attempts=2, backoff_s=0.1, jitter=False))
def retried(context: fs.AssetContext) -> int:
    print(f"attempt {context.attempt} starts")
    if context.attempt == 1:
        raise ConnectionError("transient")
    context.log.info("attempt %d succeeds", context.attempt)
    return context.attempt


def _chatty(context, name):
    (MARKERS / f"{name}-started").touch()
    while not all((MARKERS / f"{n}-started").exists() for n in ("a", "b")):
        time.sleep(0.01)  # both steps run at once before either logs
    for i in range(200):
        context.log.info("%s %d", name, i)
        if i % 20 == 0:
            time.sleep(0.005)
    return 200


@fs.asset
def chatty_a(context: fs.AssetContext) -> int:
    return _chatty(context, "a")


@fs.asset
def chatty_b(context: fs.AssetContext) -> int:
    return _chatty(context, "b")


@fs.asset
def waiter(context: fs.AssetContext) -> int:
    context.log.info("before the wait")
    while not (MARKERS / "waiter-release").exists():
        time.sleep(0.05)
    return 1


defs = fs.Definitions(assets=[talker, retried, chatty_a, chatty_b, waiter])
"""


@pytest.fixture
def pipeline(tmp_path: Path, database_url: str) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path, database_url, BODY)
    try:
        yield p
    finally:
        p.touch("waiter-release")
        p.stop()


def test_worker_stores_each_steps_lines_in_order_per_attempt(pipeline: Pipeline):
    pipeline.start_worker(concurrency=4, args=("--log-format", "json", "--log-level", "debug"))
    rt = pipeline.runtime
    handle = rt.submit(["talker", "retried", "chatty_a", "chatty_b"])
    assert handle.wait(timeout=60).status == "succeeded", pipeline.logs()

    talker = rt.logs(handle.run_id, "talker")
    assert [(g.line.stream, g.line.message) for g in talker] == [
        ("log", "line 1"),
        ("stdout", "line 2"),
        ("log", "line 3"),
        ("stderr", "line 4"),
        ("log", "line 5"),
    ]

    retried = rt.logs(handle.run_id, "retried")
    assert [(g.line.attempt, g.line.seq, g.line.message) for g in retried] == [
        (1, 1, "attempt 1 starts"),
        (2, 1, "attempt 2 starts"),
        (2, 2, "attempt 2 succeeds"),
    ]

    for name in ("a", "b"):
        logs = rt.logs(handle.run_id, f"chatty_{name}")
        assert [g.line.message for g in logs] == [f"{name} {i}" for i in range(200)]

    # --log-format json: one object per record; lifecycle events carry their fields.
    records = [json.loads(line) for line in pipeline.logs().splitlines() if line.startswith("{")]
    events = [r for r in records if "event" in r]
    succeeded = {r["asset"] for r in events if r["event"] == "step.succeeded"}
    assert succeeded == {"talker", "retried", "chatty_a", "chatty_b"}
    (retrying,) = [r for r in events if r["event"] == "step.retrying"]
    assert (retrying["asset"], retrying["attempt"], retrying["run_id"]) == ("retried", 1, handle.run_id)
    assert retrying["error_type"] == "ExecutionError"
    started = [r for r in events if r["event"] == "step.started" and r["asset"] == "retried"]
    assert [r["attempt"] for r in started] == [1, 2]


def test_lines_flushed_before_a_sigkill_survive_it(pipeline: Pipeline):
    victim = pipeline.start_worker(concurrency=1)
    handle = pipeline.runtime.submit("waiter")

    def flushed() -> bool:
        return pipeline.sql("SELECT message FROM flowstone_step_logs") == [("before the wait",)]

    eventually(flushed, timeout=30, what="the line to be flushed while the step runs")
    assert pipeline.sql("SELECT status FROM flowstone_materializations") == [("running",)]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    logs = pipeline.runtime.logs(handle.run_id)
    assert [(g.line.attempt, g.line.message) for g in logs] == [(1, "before the wait")]
