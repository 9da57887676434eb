"""The operating pages' data: runs, one run (steps, a Gantt timeline, errors), approvals, schedules
and sensors. Plain JSON-ready dictionaries, as in :mod:`flowstone.ui.views`."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from flowstone import runtime as runtime_mod
from flowstone.status import RUN_TERMINAL, ApprovalStatus, RunKind, RunStatus
from flowstone.store import records
from flowstone.ui.views import pg, shown, step_json, when

__all__ = ["approvals_page", "automation_page", "run_page", "runs_page"]

GANTT_W = 800
"""The width of the timeline's bar area in SVG units."""
GANTT_ROW = 18
GANTT_MAX = 300
"""Steps drawn in the timeline."""
STEPS_MAX = 500
"""Steps listed by default (those not succeeded first, like ``flowstone run``); ``?limit=`` for more."""


def run_json(run: records.Run, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """One run's row, with its steps counted by status when known."""
    return {
        "run_id": run.run_id,
        "kind": str(run.kind),
        "selection": list(run.selection),
        "status": str(run.status),
        "requested_by": run.requested_by,
        "created_at": when(run.created_at),
        "finished_at": when(run.finished_at),
        "tags": run.tags,
        "counts": counts or {},
    }


def runs_page(rt: runtime_mod.FlowStone, *, status: str | None = None, limit: int = 100) -> dict[str, Any]:
    """The newest runs (``status``: only those)."""
    rows = pg(rt).reports.runs(limit=limit, status=status or None)
    return {
        "runs": [run_json(r.run, r.counts) for r in rows],
        "status": status or "",
        "statuses": [s.value for s in RunStatus],
    }


def _gantt(steps: list[records.Materialization], now: datetime) -> dict[str, Any]:
    """Bars from each step's start to its end (to now while it runs), on one time axis."""
    timed = [s for s in steps if s.started_at is not None][:GANTT_MAX]
    if not timed:
        return {"bars": [], "width": GANTT_W, "height": 0, "span_s": 0.0}
    starts = [s.started_at for s in timed if s.started_at is not None]
    ends = [s.finished_at or now for s in timed]
    t0, t1 = min(starts), max(*ends, *starts)
    span = max((t1 - t0).total_seconds(), 0.001)
    bars = []
    for row, step in enumerate(timed):
        assert step.started_at is not None  # noqa: S101 - filtered above
        begin = (step.started_at - t0).total_seconds()
        length = ((step.finished_at or now) - step.started_at).total_seconds()
        bars.append(
            {
                "label": f"{step.asset} [{shown(step.partition_key)}]",
                "status": str(step.status),
                "x": round(begin / span * GANTT_W, 1),
                "w": round(max(length / span * GANTT_W, 2.0), 1),
                "y": row * GANTT_ROW,
                "start_s": round(begin, 3),
                "duration_s": round(length, 3),
            }
        )
    return {"bars": bars, "width": GANTT_W, "height": len(bars) * GANTT_ROW, "span_s": round(span, 3)}


def approval_json(a: records.Approval) -> dict[str, Any]:
    """One approval request (pending or decided)."""
    return {
        "id": a.id,
        "run_id": a.run_id,
        "materialization_id": a.materialization_id,
        "asset": a.asset,
        "partition": shown(a.partition_key),
        "status": str(a.status),
        "message": a.message,
        "context_data": a.context_data,
        "approvers": list(a.approvers) if a.approvers is not None else None,
        "on_timeout": a.on_timeout,
        "requested_at": when(a.requested_at),
        "timeout_at": when(a.timeout_at),
        "decided_by": a.decided_by,
        "decided_at": when(a.decided_at),
        "reason": a.reason,
    }


LOG_LINES_MAX = 2000
"""Step log lines a run page shows (``flowstone logs RUN_ID`` prints them all)."""


def run_page(
    rt: runtime_mod.FlowStone, run_id: str, *, limit: int = STEPS_MAX, now: datetime | None = None
) -> dict[str, Any]:
    """One run: its row, steps (at most ``limit``: the unsucceeded first, then in id order),
    timeline, errors and approvals; which actions apply."""
    handle = rt.run(run_id)
    run = handle.run()
    counts = handle.status()
    shown_steps = sorted(pg(rt).reports.run_steps(run_id, limit=limit), key=lambda s: s.id)
    queued = run.kind != RunKind.MATERIALIZE and run.tags.get("backfill") != "sync"
    return {
        "run": run_json(run, counts),
        "steps": [step_json(s) for s in shown_steps],
        "steps_total": sum(counts.values()),
        "errors": [
            {
                "asset": s.asset,
                "partition": shown(s.partition_key),
                "type": s.error.get("type"),
                "message": s.error.get("message"),
                "traceback": (s.error.get("context") or {}).get("traceback"),
            }
            for s in shown_steps
            if s.error
        ],
        "gantt": _gantt(shown_steps, now or datetime.now(UTC)),
        "approvals": [approval_json(a) for a in pg(rt).reports.run_approvals(run_id)],
        "logs": [
            {
                "asset": log.asset,
                "partition": shown(log.partition_key),
                "attempt": log.line.attempt,
                "at": when(log.line.at),
                "stream": log.line.stream,
                "level": log.line.level,
                "message": log.line.message,
            }
            for log in pg(rt).logs.read(run_id, max_lines=LOG_LINES_MAX)
        ],
        "can_cancel": run.status not in RUN_TERMINAL,
        "can_retry": queued and run.status in RUN_TERMINAL,
    }


def approvals_page(rt: runtime_mod.FlowStone, *, limit: int = 100) -> dict[str, Any]:
    """The pending requests, oldest first, and the latest decided ones."""
    pending = rt.approvals.list(ApprovalStatus.PENDING, limit=limit)
    decided = pg(rt).reports.decided_approvals(limit=limit)
    return {"pending": [approval_json(a) for a in pending], "decided": [approval_json(a) for a in decided]}


def automation_page(rt: runtime_mod.FlowStone) -> dict[str, Any]:
    """Schedules (state, last and next tick) and sensors (cursor, last evaluation)."""
    schedules = [
        {**asdict(s), "last_tick_at": when(s.last_tick_at), "next_tick_at": when(s.next_tick_at)}
        for s in rt.schedules.list()
    ]
    sensors = [{**asdict(s), "last_evaluated_at": when(s.last_evaluated_at)} for s in rt.sensors.list()]
    return {"schedules": schedules, "sensors": sensors}
