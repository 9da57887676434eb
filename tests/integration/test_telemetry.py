"""OpenTelemetry: one trace per run across processes (run span -> step spans -> IO spans), the metric
instruments' counts, and nothing imported (nothing changed) without OpenTelemetry. The SDK's
in-memory exporter and reader run in the processes that submit and execute; each writes what it
recorded to a JSON file the test reads (this process installs no SDK)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.queue_harness import Pipeline

# Installs the SDK with in-memory exporters and dumps them to OTEL_DUMP/<pid>.json every 0.1 s.
SDK = """
import json as _json
import os as _os
import threading as _threading
import time as _time

from opentelemetry import metrics as _metrics, trace as _trace
from opentelemetry.sdk.metrics import MeterProvider as _MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader as _Reader
from opentelemetry.sdk.trace import TracerProvider as _TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor as _Simple
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter as _Spans

SPANS = _Spans()
_provider = _TracerProvider()
_provider.add_span_processor(_Simple(SPANS))
_trace.set_tracer_provider(_provider)
READER = _Reader()
_metrics.set_meter_provider(_MeterProvider(metric_readers=[READER]))


_DUMP_LOCK = _threading.Lock()


def dump_otel():
    # One dump at a time: the dumper thread and the final dump shared the temporary file (one's
    # replace found it already moved), and a later snapshot must never be overwritten by an older.
    with _DUMP_LOCK:
        _dump_otel()


def _dump_otel():
    spans = [
        {
            "name": s.name,
            "trace_id": s.context.trace_id,
            "span_id": s.context.span_id,
            "parent": s.parent.span_id if s.parent else None,
            "attributes": dict(s.attributes),
            "status": s.status.status_code.name,
        }
        for s in SPANS.get_finished_spans()
    ]
    data = READER.get_metrics_data()
    out = {"spans": spans, "metrics": _json.loads(data.to_json()) if data else {}}
    path = _os.path.join(_os.environ["OTEL_DUMP"], f"{_os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        _json.dump(out, f, default=str)
    _os.replace(path + ".tmp", path)


def _dumper():
    while True:
        _time.sleep(0.1)
        try:
            dump_otel()
        except Exception:  # the directory went away with the test
            return


_threading.Thread(target=_dumper, daemon=True).start()
"""

DIAMOND = """
@fs.asset
def source() -> int:
    return 1


@fs.asset
def left(source: int) -> int:
    return source + 1


@fs.asset
def right(source: int) -> int:
    return source + 2


@fs.asset
def join(left: int, right: int) -> int:
    return left + right


defs = fs.Definitions(assets=[source, left, right, join])
"""

BODY = "\nif os.environ.get('OTEL_DUMP'):\n" + textwrap.indent(SDK, "    ") + "\n" + DIAMOND


def _dumps(directory: Path) -> list[dict[str, Any]]:
    found = []
    for path in directory.glob("*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return found


def _spans(directory: Path) -> list[dict[str, Any]]:
    return [span for dump in _dumps(directory) for span in dump["spans"]]


def _points(dump: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [
        point
        for resource in dump["metrics"].get("resource_metrics", [])
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
        if metric["name"] == name
        for point in metric["data"]["data_points"]
    ]


@pytest.fixture
def pipeline(tmp_path: Path, database_url: str) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path, database_url, BODY)
    p.env["OTEL_DUMP"] = str(tmp_path / "otel")
    (tmp_path / "otel").mkdir()
    try:
        yield p
    finally:
        p.stop()


def test_a_submitted_diamond_is_one_trace_from_run_to_steps_to_io(pipeline: Pipeline, tmp_path: Path):
    worker = pipeline.start_worker(concurrency=2)
    submit = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import {pipeline.name} as m\n"
            "handle = m.runtime.submit('join', with_upstream=True)\n"
            "m.dump_otel()\n"
            "print(handle.run_id)\n",
        ],
        cwd=tmp_path,
        env=pipeline.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    run_id = submit.stdout.strip()
    assert pipeline.runtime.run(run_id).wait(timeout=60).status == "succeeded", pipeline.logs()
    deadline = time.monotonic() + 10
    while len([s for s in _spans(tmp_path / "otel") if s["name"].startswith("flowstone.step")]) < 4 or not [
        s for s in _spans(tmp_path / "otel") if s["name"] == "flowstone.run.lifetime"
    ]:
        assert time.monotonic() < deadline, _spans(tmp_path / "otel")
        time.sleep(0.1)

    spans = _spans(tmp_path / "otel")
    (run_span,) = [s for s in spans if s["name"] == "flowstone.run"]
    assert run_span["attributes"]["flowstone.run_id"] == run_id
    steps = {s["attributes"]["flowstone.asset"]: s for s in spans if s["name"].startswith("flowstone.step")}
    assert set(steps) == {"source", "left", "right", "join"}
    assert {s["trace_id"] for s in spans} == {run_span["trace_id"]}  # one trace, two processes
    for step in steps.values():
        assert step["parent"] == run_span["span_id"]
        assert step["attributes"]["flowstone.status"] == "succeeded"
        assert step["attributes"]["flowstone.attempt"] == 1
        assert step["status"] == "UNSET"
    loads = [s for s in spans if s["name"] == "flowstone.io.load"]
    assert sorted(steps_by_id(steps)[s["parent"]] for s in loads) == ["join", "join", "left", "right"]
    stores = [s for s in spans if s["name"] == "flowstone.io.store"]
    assert sorted(steps_by_id(steps)[s["parent"]] for s in stores) == ["join", "left", "right", "source"]
    # the trace context is stored with the run
    ((config,),) = pipeline.sql("SELECT config FROM flowstone_runs WHERE run_id = %s", (run_id,))
    assert f"{run_span['span_id']:016x}" in config["trace"]["traceparent"]

    (worker_dump,) = [
        json.loads(p.read_text()) for p in (tmp_path / "otel").glob("*.json") if p.stem == str(worker.pid)
    ]
    counted = _points(worker_dump, "flowstone.steps")
    assert sum(p["value"] for p in counted) == 4
    assert {p["attributes"]["flowstone.status"] for p in counted} == {"succeeded"}
    assert sum(p["count"] for p in _points(worker_dump, "flowstone.step.duration")) == 4
    assert sum(p["count"] for p in _points(worker_dump, "flowstone.step.queue_wait")) == 4
    # the run's whole life: a span from its creation to its end, ended by the worker that ended it
    (lifetime,) = [s for s in spans if s["name"] == "flowstone.run.lifetime"]
    assert lifetime["parent"] == run_span["span_id"]
    assert lifetime["attributes"]["flowstone.status"] == "succeeded"
    # runs in progress: +1 where the run was created (the submitting process), -1 where it ended
    everywhere = [
        p for dump in _dumps(tmp_path / "otel") for p in _points(dump, "flowstone.runs.in_progress")
    ]
    assert sorted(p["value"] for p in everywhere) == [-1, 1]
    assert "run.finished" in pipeline.logs()  # the lifecycle event, once


def steps_by_id(steps: dict[str, dict[str, Any]]) -> dict[int, str]:
    return {s["span_id"]: asset for asset, s in steps.items()}


FAILING = (
    SDK
    + """
import flowstone as fs

@fs.asset
def ok() -> int:
    return 1

@fs.asset
def bad(ok: int) -> int:
    raise ValueError("bad input")

with fs.FlowStone(fs.Definitions(assets=[ok, bad]), store="memory") as rt:
    rt.materialize("bad", with_upstream=True, raise_on_error=False)
dump_otel()
"""
)


def test_a_failed_step_records_its_error_and_counts_by_status(tmp_path: Path):
    env = dict(os.environ, OTEL_DUMP=str(tmp_path))
    subprocess.run([sys.executable, "-c", FAILING], env=env, check=True, timeout=60, cwd=tmp_path)
    (dump,) = _dumps(tmp_path)
    steps = {
        s["attributes"]["flowstone.asset"]: s for s in dump["spans"] if s["name"].startswith("flowstone.step")
    }
    assert (steps["bad"]["status"], steps["bad"]["attributes"]["flowstone.status"]) == ("ERROR", "failed")
    assert steps["ok"]["status"] == "UNSET"
    by_status = {p["attributes"]["flowstone.status"]: p["value"] for p in _points(dump, "flowstone.steps")}
    assert by_status == {"succeeded": 1, "failed": 1}


WITHOUT = """
import sys

sys.modules["opentelemetry"] = None  # as if it were not installed: importing it raises ImportError
import flowstone as fs

@fs.asset
def one() -> int:
    return 1

with fs.FlowStone(fs.Definitions(assets=[one]), store="memory") as rt:
    assert rt.materialize("one").value("one") == 1
assert not [m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m] is not None]
print("ok")
"""


def test_without_opentelemetry_nothing_changes_and_nothing_is_imported(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT], check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.stdout.strip() == "ok", done.stderr
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, flowstone; print(any(m.startswith('opentelemetry') for m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert imported.stdout.strip() == "False"  # `import flowstone` never imports it


def test_the_console_example_of_docs_observability_md_runs():
    text = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    example = (
        text.split("### Example: spans on the console", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    )
    done = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, timeout=60, check=True
    )
    names = [json.loads(chunk)["name"] for chunk in done.stdout.replace("}\n{", "}\x00{").split("\x00")]
    assert names[0] == "flowstone.run"
    assert {
        "flowstone.step numbers",
        "flowstone.step total",
        "flowstone.io.load",
        "flowstone.io.store",
    } <= set(names)
