"""A run's beginning and end as the process that causes them reports them: :func:`create_run`
records a new run (in-process or queued) and :func:`run_ended` emits ``run.finished`` and closes
the run's span in the process whose transaction ended it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from flowstone import events, planning, resources, results, services, telemetry
from flowstone.status import RunKind, RunStatus
from flowstone.store import records

__all__ = ["create_run", "run_ended"]


def create_run(
    svc: services.Services,
    plan: planning.Plan,
    *,
    kind: RunKind,
    config: results.RunConfig,
    tags: Mapping[str, Any] | None,
    conn: Any = None,
) -> str:
    """Record a new run of ``plan``: the run, its steps ``pending`` with their edges, in one
    transaction. A submitted run (``kind`` submit) is ``queued`` and its ready steps' jobs are
    deferred in the same transaction (on the caller's ``conn`` when given, a savepoint);
    in-process runs leave them for the local executor. Returns the run id."""
    resources.ResourceScope(svc.defs.resources, config.resources)  # refuses unknown names now
    queued = kind == RunKind.SUBMIT
    run_id = str(uuid.uuid4())
    trace = telemetry.run_created(run_id, kind=str(kind), selection=list(plan.selection))
    run = records.NewRun(
        run_id=run_id,
        kind=kind,
        selection=plan.selection,
        requested_by=svc.actor,
        config=config.model_copy(update={"trace": trace}).model_dump(mode="json", exclude_defaults=True),
        tags=dict(tags or {}),
        status=RunStatus.QUEUED if queued else RunStatus.RUNNING,
    )
    steps = plan.planned({name: svc.defs.get(name).code_version for name in svc.defs})
    if queued:
        svc.postgres().create_run(
            run, steps, edges=plan.edges(), ready=plan.ready(), jobs=svc.job_queue(), conn=conn
        )
    else:
        svc.store.create_run(run, steps, edges=plan.edges())
    events.emit(
        "run.started", run_id=run.run_id, kind=str(kind), selection=list(plan.selection), steps=len(steps)
    )
    return run.run_id


def run_ended(run: records.Run) -> None:
    """``run.finished`` and the run's lifetime span, in the process whose transaction ended it."""
    ended = run.finished_at or run.created_at
    duration_ms = (ended - run.created_at).total_seconds() * 1000
    events.emit("run.finished", run_id=run.run_id, status=str(run.status), duration_ms=duration_ms)
    telemetry.run_finished(
        run.run_id,
        kind=str(run.kind),
        status=str(run.status),
        created_at=run.created_at,
        finished_at=run.finished_at,
        carrier=run.config.get("trace"),
    )
