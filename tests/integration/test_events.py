"""Lifecycle events: stable names through `logging` (logger flowstone.events) with structured extra."""

from __future__ import annotations

import json
import logging

import pytest

import flowstone as fs
from flowstone import events, partition_keys


@fs.asset
def source() -> int:
    return 1


@fs.asset
def sink(source: int) -> int:
    return source + 1


@fs.asset
def broken(source: int) -> int:
    raise RuntimeError("no")


def test_a_run_emits_its_lifecycle_events_with_their_fields(
    database_url: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG, logger="flowstone.events")
    with fs.FlowStone(fs.Definitions(assets=[source, sink, broken]), database_url=database_url) as rt:
        result = rt.materialize(["sink", "broken"], with_upstream=True, raise_on_error=False)
    got = [r for r in caplog.records if r.name == "flowstone.events"]
    names = [r.__dict__["event"] for r in got]
    assert set(names) <= set(events.CATALOGUE)
    assert names[0] == "run.started"
    assert names.count("step.started") == 3
    assert names.count("step.succeeded") == 2
    assert names.count("io.loaded") == 2  # sink and broken read source
    assert names.count("io.stored") == 2
    (failed,) = [r for r in got if r.__dict__["event"] == "step.failed"]
    assert failed.levelno == logging.INFO
    fields = failed.__dict__
    assert (fields["run_id"], fields["asset"], fields["attempt"]) == (result.run_id, "broken", 1)
    assert fields["partition"] == partition_keys.UNPARTITIONED
    assert fields["error_type"] == "ExecutionError"
    assert fields["duration_ms"] is not None
    (done,) = [r for r in got if r.__dict__["event"] == "step.succeeded" and r.__dict__["asset"] == "sink"]
    assert done.__dict__["duration_ms"] >= 0
    started = names.index("step.started")
    assert started < names.index("io.stored") < names.index("step.succeeded")
    (ended,) = [r for r in got if r.__dict__["event"] == "run.finished"]  # once, last
    assert names[-1] == "run.finished"
    assert (ended.__dict__["run_id"], ended.__dict__["status"]) == (result.run_id, "failed")
    assert ended.__dict__["duration_ms"] >= 0


@pytest.mark.parametrize("store", ["memory", "postgres"])
def test_a_run_that_succeeds_emits_run_finished_once(
    store: str, database_url: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="flowstone.events")
    kwargs: dict[str, object] = {"store": "memory"} if store == "memory" else {"database_url": database_url}
    with fs.FlowStone(fs.Definitions(assets=[source, sink]), **kwargs) as rt:  # type: ignore[arg-type]
        result = rt.materialize("sink", with_upstream=True)
    finished = [r for r in caplog.records if r.__dict__.get("event") == "run.finished"]
    assert [(r.__dict__["run_id"], r.__dict__["status"]) for r in finished] == [(result.run_id, "succeeded")]


def test_events_are_not_step_log_lines(database_url: str, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="flowstone.events")
    with fs.FlowStone(fs.Definitions(assets=[source, sink]), database_url=database_url) as rt:
        result = rt.materialize("sink", with_upstream=True)
        assert rt.logs(result.run_id) == []


def test_json_formatter_writes_one_object_with_the_extra_fields():
    record = logging.LogRecord("flowstone.events", logging.INFO, __file__, 1, "%s", ("step.started",), None)
    record.__dict__.update(event="step.started", run_id="r", attempt=2)
    data = json.loads(events.JsonFormatter().format(record))
    assert data["event"] == "step.started"
    assert (data["run_id"], data["attempt"], data["level"], data["message"]) == (
        "r",
        2,
        "INFO",
        "step.started",
    )


@fs.asset
def gated(context: fs.AssetContext, source: int) -> int:
    context.require_approval("ship it?", timeout=None)
    return source


def test_approval_events(database_url: str, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="flowstone.events")
    with fs.FlowStone(fs.Definitions(assets=[source, gated]), database_url=database_url) as rt:
        run = rt.materialize("gated", with_upstream=True, raise_on_error=False)
        (pending,) = rt.approvals.list()
        rt.approvals.approve(pending.id, by="alice")
    got = {r.__dict__["event"]: r.__dict__ for r in caplog.records if r.name == "flowstone.events"}
    requested = got["approval.requested"]
    assert (requested["run_id"], requested["asset"], requested["request"]) == (
        run.run_id,
        "gated",
        "ship it?",
    )
    decided = got["approval.decided"]
    assert (decided["approval_id"], decided["status"], decided["by"]) == (pending.id, "approved", "alice")


def test_a_cancel_that_ends_a_run_emits_run_finished(database_url: str, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="flowstone.events")
    with fs.FlowStone(fs.Definitions(assets=[source, sink]), database_url=database_url) as rt:
        handle = rt.submit("sink", with_upstream=True)  # no worker: nothing starts
        handle.cancel()
        handle.cancel()  # already ended: nothing more
    finished = [r for r in caplog.records if r.__dict__.get("event") == "run.finished"]
    assert [(r.__dict__["run_id"], r.__dict__["status"]) for r in finished] == [(handle.run_id, "cancelled")]
