"""Without a tracer provider, no span is started (the API's spans would record nothing and cost a
context switch each); the step metrics still count. With one, the spans are there."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from flowstone import telemetry

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")


class _Tracer:
    def __init__(self) -> None:
        self.started: list[str] = []

    def start_span(self, name: str, **_: Any) -> Any:
        self.started.append(name)
        return trace.INVALID_SPAN

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, **_: Any) -> Iterator[None]:
        self.started.append(name)
        yield


class _Counter:
    def __init__(self) -> None:
        self.added: list[tuple[int, dict[str, str]]] = []

    def add(self, n: int, labels: dict[str, str]) -> None:
        self.added.append((n, labels))

    def record(self, value: float, labels: dict[str, str]) -> None:
        self.added.append((0, labels))


def _one_step(monkeypatch: pytest.MonkeyPatch, provider: object) -> tuple[_Tracer, _Counter]:
    loaded = telemetry._otel()
    assert loaded is not None
    tracer, steps = _Tracer(), _Counter()
    monkeypatch.setattr(
        telemetry,
        "_loaded",
        dataclasses.replace(loaded, tracer=tracer, steps=steps, step_duration=_Counter()),
    )
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    spans = telemetry.StepSpans({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    spans.start(1, run_id="r", asset="a", partition="p", attempt=1, queued_at=None, started_at=None)
    with spans.active(1), telemetry.io_span("flowstone.io.store", asset="a"):
        pass
    spans.finish(1, status="succeeded", duration_ms=2.0, error=None)
    return tracer, steps


def test_no_span_is_started_without_a_tracer_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer, steps = _one_step(monkeypatch, trace.ProxyTracerProvider())
    assert tracer.started == []
    assert steps.added == [(1, {"flowstone.asset": "a", "flowstone.status": "succeeded"})]


def test_spans_are_started_with_a_tracer_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer, steps = _one_step(monkeypatch, sdk_trace.TracerProvider())
    assert tracer.started == ["flowstone.step a", "flowstone.io.store"]
    assert steps.added == [(1, {"flowstone.asset": "a", "flowstone.status": "succeeded"})]
