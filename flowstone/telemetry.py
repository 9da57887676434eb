"""OpenTelemetry traces and metrics, when ``opentelemetry-api`` is installed (``flowstone[otel]``).

Nothing here imports OpenTelemetry until the first run or step asks for it, and when it is not
installed every function returns at once and nothing changes. FlowStone only uses the API: spans
and metrics go wherever the process's SDK sends them (none configured: the API's no-op). While no
tracer provider is set, no span is started at all (the metrics still count).

Traces. Creating a run starts the span ``flowstone.run`` (a child of the caller's current span)
and stores its W3C trace context with the run (``flowstone_runs.config -> 'trace'``), so that the
span ``flowstone.step`` of every step attempt, on any worker on any machine, is its child in the
same trace. The run span covers creating the run (``flowstone.run.lifetime``, below, its whole
life); the steps' spans cover their attempts (attributes ``flowstone.run_id``, ``flowstone.asset``,
``flowstone.partition``, ``flowstone.attempt``, ``flowstone.status``; a failure's error recorded).
``flowstone.io.load`` and ``flowstone.io.store``
are children of the step span.

Metrics (meter ``flowstone``): ``flowstone.step.duration`` (histogram, s, by asset and status),
``flowstone.steps`` (counter, by asset and status), ``flowstone.step.queue_wait`` (histogram, s,
from queued to started, by asset), ``flowstone.runs.in_progress`` (up-down counter by kind: +1 where
a run is created, -1 where the transaction of its last step ends it). That end also records the span
``flowstone.run.lifetime``: from the run's creation to its end, a child of its ``flowstone.run``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["StepSpans", "io_span", "run_created", "run_finished"]

_lock = threading.Lock()
_loaded: _Otel | bool | None = None


@dataclass(frozen=True, slots=True)
class _Otel:
    trace: Any
    propagate: Any
    status: Any
    tracer: Any
    step_duration: Any
    steps: Any
    queue_wait: Any
    runs_in_progress: Any


def _otel() -> _Otel | None:
    """The OpenTelemetry API and FlowStone's instruments, imported at first use; ``None`` when
    ``opentelemetry-api`` is not installed."""
    global _loaded  # noqa: PLW0603 - one lazy import per process
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = _load() or False
    return _loaded if isinstance(_loaded, _Otel) else None


def _tracing(otel: _Otel) -> bool:
    """Whether a span would go anywhere: a tracer provider other than the API's placeholder is set.
    Without one, the API's spans record nothing but still cost a context switch each (a few percent
    of a backfill worker's CPU per partition); asked per unit of work, so a provider set later
    counts from then on."""
    return not isinstance(
        otel.trace.get_tracer_provider(), (otel.trace.ProxyTracerProvider, otel.trace.NoOpTracerProvider)
    )


def _load() -> _Otel | None:
    try:
        # Imported here, never at module level: the core works (and imports nothing) without it.
        from opentelemetry import metrics, propagate, trace  # noqa: PLC0415
        from opentelemetry.trace import status  # noqa: PLC0415
    except ImportError:
        return None
    meter = metrics.get_meter("flowstone")
    return _Otel(
        trace=trace,
        propagate=propagate,
        status=status,
        tracer=trace.get_tracer("flowstone"),
        step_duration=meter.create_histogram(
            "flowstone.step.duration", unit="s", description="duration of step attempts"
        ),
        steps=meter.create_counter("flowstone.steps", description="step attempts by outcome status"),
        queue_wait=meter.create_histogram(
            "flowstone.step.queue_wait", unit="s", description="from queued to started"
        ),
        runs_in_progress=meter.create_up_down_counter(
            "flowstone.runs.in_progress", description="runs created and not ended (all processes together)"
        ),
    )


def run_created(run_id: str, *, kind: str, selection: list[str]) -> dict[str, str]:
    """Start and end the run's span; the trace context to store with the run (empty without
    OpenTelemetry)."""
    otel = _otel()
    if otel is None:
        return {}
    attributes = {"flowstone.run_id": run_id, "flowstone.kind": kind, "flowstone.selection": selection}
    span = otel.tracer.start_span("flowstone.run", attributes=attributes)
    carrier: dict[str, str] = {}
    otel.propagate.inject(carrier, context=otel.trace.set_span_in_context(span))
    span.end()
    otel.runs_in_progress.add(1, {"flowstone.kind": kind})
    return carrier


def run_finished(
    run_id: str,
    *,
    kind: str,
    status: str,
    created_at: datetime,
    finished_at: datetime | None,
    carrier: Mapping[str, Any] | None,
) -> None:
    """The run's whole life as the span ``flowstone.run.lifetime`` (from its creation to its end,
    a child of its ``flowstone.run`` span, in whichever process ended it), and one run fewer in
    progress (nothing without OpenTelemetry)."""
    otel = _otel()
    if otel is None:
        return
    parent = otel.propagate.extract(dict(carrier or {}))
    attributes = {"flowstone.run_id": run_id, "flowstone.kind": kind, "flowstone.status": status}
    span = otel.tracer.start_span(
        "flowstone.run.lifetime", context=parent, attributes=attributes, start_time=_ns(created_at)
    )
    if status != "succeeded":
        span.set_status(otel.status.Status(otel.status.StatusCode.ERROR, f"run {status}"))
    span.end(end_time=_ns(finished_at) if finished_at is not None else None)
    otel.runs_in_progress.add(-1, {"flowstone.kind": kind})


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


@contextlib.contextmanager
def io_span(name: str, **attributes: Any) -> Iterator[None]:
    """A child span of the current step for one IO load or store (nothing without OpenTelemetry)."""
    otel = _otel()
    if otel is None or not _tracing(otel):
        yield
        return
    shown = {f"flowstone.{k}": v for k, v in attributes.items() if v is not None}
    with otel.tracer.start_as_current_span(name, attributes=shown):
        yield


class StepSpans:
    """The spans of the steps one unit of work runs, each ended with its outcome."""

    def __init__(self, carrier: Mapping[str, Any] | None) -> None:
        self._otel = _otel()
        self._tracing = self._otel is not None and _tracing(self._otel)
        self._parent = None
        if self._otel is not None and self._tracing and carrier:
            self._parent = self._otel.propagate.extract(dict(carrier))
        # per step: its span (None when no tracer provider is set: the metrics still count it)
        self._spans: dict[int, tuple[Any, str]] = {}

    def start(
        self,
        step_id: int,
        *,
        run_id: str,
        asset: str,
        partition: str,
        attempt: int,
        queued_at: datetime | None,
        started_at: datetime | None,
    ) -> None:
        """Start the span of a claimed step (and record its queue wait)."""
        otel = self._otel
        if otel is None:
            return
        span = None
        if self._tracing:
            attributes = {
                "flowstone.run_id": run_id,
                "flowstone.asset": asset,
                "flowstone.partition": partition,
                "flowstone.attempt": attempt,
            }
            span = otel.tracer.start_span(
                f"flowstone.step {asset}", context=self._parent, attributes=attributes
            )
        self._spans[step_id] = (span, asset)
        if queued_at is not None and started_at is not None:
            otel.queue_wait.record(
                max(0.0, (started_at - queued_at).total_seconds()), {"flowstone.asset": asset}
            )

    @contextlib.contextmanager
    def active(self, step_id: int) -> Iterator[None]:
        """Make the step's span the current one (its IO spans become its children)."""
        found = self._spans.get(step_id)
        if self._otel is None or found is None or found[0] is None:
            yield
            return
        with self._otel.trace.use_span(found[0], end_on_exit=False, record_exception=False):
            yield

    def finish(
        self, step_id: int, *, status: str, duration_ms: float | None, error: BaseException | None
    ) -> None:
        """End the step's span with its outcome and count it."""
        otel = self._otel
        found = self._spans.pop(step_id, None)
        if otel is None or found is None:
            return
        span, asset = found
        if span is not None:
            span.set_attribute("flowstone.status", status)
            if error is not None:
                span.record_exception(error)
                span.set_status(otel.status.Status(otel.status.StatusCode.ERROR, str(error)))
            span.end()
        labels = {"flowstone.asset": asset, "flowstone.status": status}
        otel.steps.add(1, labels)
        if duration_ms is not None:
            otel.step_duration.record(duration_ms / 1000, labels)

    def finish_rest(self, error: BaseException | None = None) -> None:
        """End the spans of steps whose outcome is unknown (the recording itself failed)."""
        for step_id in list(self._spans):
            self.finish(step_id, status="unknown", duration_ms=None, error=error)
