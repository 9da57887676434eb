"""The step pipeline: the single place that runs steps and records their outcome, in-process or queued.
Order of work for one unit of work (the consistency model, docs/design/consistency.md):

1. resolve the asset by name in the Definitions (I3; unknown → ``UnknownAssetError``, nothing written);
2. claim its steps (``materialization_claim``: ``pending``/``queued`` → ``running``, attempt + 1)
   and look up the exact upstream materializations they read, in one round trip;
3. load the inputs, set up its resources, call the function (unless memoize.py reuses a row);
4. store the output (a new immutable version, I10) or prepare it for the success; run the checks;
5. in one transaction: ``succeeded`` + lineage + audit + output + check results + fan-in + the
   run's status (I11, I14).

Any exception in steps 3 to 5 becomes one ``failed`` record (I12), written here only; the steps
that depend on it are ``skipped`` in the same transaction; queued runs retry per the retry policy.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flowstone import (
    approval_types,
    capture,
    checking,
    codec,
    definitions,
    errors,
    events,
    memoize,
    partition_keys,
    resources,
    run_lifecycle,
    services,
    slots,
    step_inputs,
    telemetry,
)
from flowstone import context as context_mod
from flowstone.io import base as io_base
from flowstone.status import RunKind
from flowstone.step_outcomes import Executed, Ran, StepOutcome
from flowstone.store import base as store_base
from flowstone.store import records

__all__ = ["AfterStoreHook", "Executed", "Ran", "StepOutcome", "StepRunner"]

logger = logging.getLogger("flowstone.execution")

T = TypeVar("T")

STORE_FAULT_ATTEMPTS = 3
"""Attempts a queued step gets beyond its retry policy when recording its outcome hit a database
fault (a dropped connection, a restart): the fault is not the asset's."""

AfterStoreHook = Callable[[records.Materialization, io_base.OutputRef], None]
"""Called after the output is stored and before the success is recorded; tests use it to inject
faults at that exact point (a dropped connection, a killed process)."""


def _with_location(error: errors.FlowStoneError, step: records.Materialization) -> errors.FlowStoneError:
    if error.asset is None:
        error.asset = step.asset
    if error.partition is None:
        error.partition = step.partition_key
    if error.run_id is None:
        error.run_id = step.run_id
    return error


class StepRunner:
    """Runs claimed steps against the services' store and IO managers.

    ``queued``: the success defers the jobs of the steps it makes ready, and a retryable failure
    is retried while the asset's retry policy allows. In-process (not ``queued``) the released
    steps stay ``queued`` for the local executor and failures are final.
    """

    def __init__(
        self, svc: services.Services, *, queued: bool, after_store: AfterStoreHook | None = None
    ) -> None:
        self.svc = svc
        self.defs = svc.defs
        self.store = svc.store
        self.queued = queued
        self.after_store = after_store

    # -- claiming -----------------------------------------------------------------------------

    def claim(
        self, run_id: str, asset: definitions.AssetDef, batch_key: str, *, job_id: int | None = None
    ) -> store_base.Claim:
        """Claim the steps of one unit of work with the inputs of the step ``batch_key`` (one
        round trip); the inputs of other steps of a batch are looked up once, together. A queued
        job passes its ``job_id``: it also takes over its own steps left ``running`` by a worker that
        died (a redelivered job)."""
        claim = self.store.claim(
            run_id,
            asset.name,
            batch_key,
            wanted=self.claim_of(asset, batch_key).wanted,
            code_version=asset.code_version,
            reclaim=job_id is not None,
            job_id=job_id,
        )
        return self.claimed(run_id, asset, batch_key, claim)

    def claim_of(self, asset: definitions.AssetDef, batch_key: str) -> store_base.ClaimAhead:
        """What claiming one unit of work asks for (its inputs), as a success can send it ahead
        (``run_claimed(claim_ahead=)``)."""
        reads = step_inputs.wanted(self.defs, asset, partition_keys.decode(batch_key))
        wanted = [(inp.asset, key) for inp in asset.inputs for _, key in reads[inp.name]]
        return store_base.ClaimAhead(asset.name, batch_key, wanted, asset.code_version)

    def claimed(
        self, run_id: str, asset: definitions.AssetDef, batch_key: str, claim: store_base.Claim
    ) -> store_base.Claim:
        """What a claim of the unit ``batch_key`` still needs: the inputs of the other steps of a
        batch, and (pooled assets) a slot of each pool per step."""
        others = [s for s in claim.steps if s.partition_key != batch_key]
        if others and asset.inputs:
            more = [
                (inp.asset, key)
                for step in others
                for inp in asset.inputs
                for _, key in step_inputs.wanted(self.defs, asset, partition_keys.decode(step.partition_key))[
                    inp.name
                ]
            ]
            inputs = {**claim.inputs, **self.store.find_inputs(run_id, list(dict.fromkeys(more)))}
            claim = store_base.Claim(claim.steps, inputs, claim.run_kind, claim.run_config)
        if asset.pools and claim.steps:  # one slot of each pool per step, or wait (slots.py)
            claim = slots.take(self.svc, asset, claim, queued=self.queued)
        return claim

    def unstartable(self, run_id: str, asset: str, partition_key: str) -> StepOutcome:
        """The outcome of a step that could not be claimed: its row, and why."""
        current = self.store.get_step(run_id, asset, partition_key)
        if current is not None and current.ok:
            return StepOutcome(record=current)
        status = current.status if current else "missing"
        return StepOutcome(
            record=current,
            error=errors.InvalidTransitionError(
                f"step cannot start: it is {status}", asset=asset, partition=partition_key, run_id=run_id
            ),
        )

    # -- running ------------------------------------------------------------------------------

    def run_claimed(
        self,
        asset: definitions.AssetDef,
        claim: store_base.Claim,
        *,
        scope: resources.ResourceScope,
        keep: store_base.Keep | None = None,
        continued: bool = False,
        claim_ahead: store_base.ClaimAhead | None = None,
        finish_job: int | None = None,
    ) -> Ran:
        """Execute claimed steps; record failures one by one and successes together (``keep``: the
        success keeps one step it makes ready for this job; ``continued``: the steps were kept so,
        and a retry of one gets a job of its own; ADR 0013; ``claim_ahead``: the success's round
        trip also claims that unit of work, ``Ran.ahead``; ``finish_job``: when every step
        succeeds, the success also finishes that job unless it keeps a step, ADR 0016)."""
        spans = telemetry.StepSpans((claim.run_config or {}).get("trace"))
        try:
            ran = self._run(
                asset,
                claim,
                spans,
                scope=scope,
                keep=keep,
                continued=continued,
                claim_ahead=claim_ahead,
                finish_job=finish_job,
            )
        except BaseException as exc:
            spans.finish_rest(exc)
            raise
        for outcome in ran.outcomes:
            if (row := outcome.record) is not None:
                status = "retrying" if outcome.retry_in_s is not None else str(row.status)
                spans.finish(row.id, status=status, duration_ms=row.duration_ms, error=outcome.error)
        spans.finish_rest()
        return ran

    def _run(
        self,
        asset: definitions.AssetDef,
        claim: store_base.Claim,
        spans: telemetry.StepSpans,
        *,
        scope: resources.ResourceScope,
        keep: store_base.Keep | None,
        continued: bool,
        claim_ahead: store_base.ClaimAhead | None,
        finish_job: int | None = None,
    ) -> Ran:
        outcomes: list[StepOutcome] = []
        done: list[tuple[records.Materialization, Executed]] = []
        for step in claim.steps:
            events.emit("step.started", **_where(step))
            spans.start(step.id, **_where(step), queued_at=step.queued_at, started_at=step.started_at)
            try:
                with spans.active(step.id):
                    executed = self._captured(step, asset, scope, claim.inputs)
            except approval_types.ApprovalPending as pending:
                outcomes.append(self._wait_for_approval(step, pending.request))
                continue
            except Exception as exc:  # noqa: BLE001 - every failure of a step is recorded, then reported
                outcomes.append(self._record_failure(step, exc, continued=continued))
                continue
            done.append((step, executed))
        if not done:
            return Ran(outcomes, [])
        release = claim.run_kind != RunKind.BACKFILL
        completed, finished = self._complete(
            done,
            release=release,
            keep=keep if release else None,
            continued=continued,
            claim_ahead=claim_ahead if release else None,
            # only a job none of whose steps failed or waits to retry ends with its success
            finish_job=finish_job if all(o.error is None for o in outcomes) else None,
        )
        if finished is None:
            return Ran(outcomes + completed, [])
        return Ran(
            outcomes + completed,
            finished.released,
            finished.continued,
            finished.ahead,
            job_finished=finished.job_finished,
        )

    def _complete(
        self,
        done: Sequence[tuple[records.Materialization, Executed]],
        *,
        release: bool,
        keep: store_base.Keep | None,
        continued: bool,
        claim_ahead: store_base.ClaimAhead | None = None,
        finish_job: int | None = None,
    ) -> tuple[list[StepOutcome], store_base.Completed | None]:
        """Record successes together; a backfill has no step edges, so nothing to release."""
        joined = self.store.logs.joins_success
        items = [
            store_base.Success(
                step=step,
                output_ref=executed.ref.model_dump(mode="json") if executed.ref is not None else {},
                metadata=executed.metadata,
                lineage=executed.lineage,
                output=executed.output,
                logs=executed.logs if joined else (),
                checks=executed.checks,
                memoized_from=executed.memoized_from,
            )
            for step, executed in done
        ]
        if not joined:
            self._write_logs([line for _, executed in done for line in executed.logs])
        try:
            completed = self.store.complete_steps(
                items,
                actor=self.svc.actor,
                jobs=self.svc.jobs if self.queued else None,
                release=release,
                keep=keep if self.queued else None,
                claim_ahead=claim_ahead,
                finish_job=finish_job if self.queued else None,
            )
        except Exception as exc:  # noqa: BLE001 - the success transaction failed: each step failed
            if joined:  # the lines went down with the transaction: write them on their own
                self._write_logs([line for _, executed in done for line in executed.logs])
            return [self._record_failure(step, exc, continued=continued) for step, _ in done], None
        outcomes = []
        for (step, executed), row in zip(done, completed.rows, strict=True):
            if row is None:
                # Another attempt took the step over (e.g. a redelivered job): its outcome stands.
                # A version this attempt wrote with a non-transactional manager (its own file,
                # "<id>-<attempt>") is referenced by no committed row: readers never see it.
                lost = errors.InvalidTransitionError(
                    f"attempt {step.attempt} lost the step to another attempt",
                    asset=step.asset,
                    partition=step.partition_key,
                    run_id=step.run_id,
                )
                outcomes.append(StepOutcome(record=self._current(step), error=lost))
            else:
                if row.memoized_from is not None:
                    events.emit("step.memoized", **_where(row), memoized_from=row.memoized_from)
                else:
                    events.emit("step.succeeded", **_where(row), duration_ms=row.duration_ms)
                outcomes.append(StepOutcome(record=row, value=executed.value))
        if completed.run is not None:
            run_lifecycle.run_ended(completed.run)
        return outcomes, completed

    def _current(self, step: records.Materialization) -> records.Materialization | None:
        return self.store.get_step(step.run_id, step.asset, step.partition_key)

    def _wait_for_approval(
        self, step: records.Materialization, request: approval_types.ApprovalRequest
    ) -> StepOutcome:
        try:
            row = self._durably(
                "record the approval request",
                lambda: self.store.request_approval(step, request, actor=self.svc.actor, jobs=self.svc.jobs),
            )
        except errors.FlowStoneError as exc:  # e.g. approvals on the memory store: a clear failure
            return self._record_failure(step, exc)
        events.emit("approval.requested", **_where(step), request=request.message)
        return StepOutcome(record=row or self._current(step))

    def _record_failure(
        self, step: records.Materialization, exc: Exception, *, continued: bool = False
    ) -> StepOutcome:
        if isinstance(exc, errors.FlowStoneError):
            error = _with_location(exc, step)
        else:
            error = errors.ExecutionError.from_exception(
                exc, asset=step.asset, partition=step.partition_key, run_id=step.run_id
            )
        policy = self.defs.get(step.asset).retry
        # The database failing under FlowStone's own writes is not the asset's failure: a queued
        # step gets a few more attempts than its policy for that.
        allowed = policy.max_attempts + (STORE_FAULT_ATTEMPTS if isinstance(error, errors.StoreError) else 0)
        if self.queued and error.retryable and step.attempt < allowed:
            delay = policy.delay_s(step.attempt)
            row = self._durably(
                "record a retry",
                lambda: self.store.retry_later(
                    step,
                    error=error.to_dict(),
                    retry_in_s=delay,
                    actor=self.svc.actor,
                    jobs=self.svc.jobs if continued else None,
                ),
            )
            if row is not None:
                events.emit("step.retrying", **_where(step), retry_in_s=delay, **_why(error))
                return StepOutcome(record=row, error=error, retry_in_s=delay)
            return StepOutcome(record=self._current(step), error=error)
        failed = self._durably(
            "record a failure",
            lambda: self.store.fail_terminal(step, error=error.to_dict(), actor=self.svc.actor),
        )
        if failed is not None:
            events.emit("step.failed", **_where(failed), duration_ms=failed.duration_ms, **_why(error))
            run = self.store.get_run(step.run_id)  # only after a failure: did this one end the run?
            if run is not None and run.finished_at is not None and run.finished_at == failed.finished_at:
                run_lifecycle.run_ended(run)
        return StepOutcome(record=failed if failed is not None else self._current(step), error=error)

    def _durably(self, what: str, write: Callable[[], T]) -> T:
        """Run a store write, again on a fresh connection while the database is unavailable
        (backoff with jitter), for at most ``record_retry_s``; then the error escapes and the
        recovery sweep settles the step."""
        deadline = time.monotonic() + self.svc.options.record_retry_s
        delay = 0.05
        while True:
            try:
                return write()
            except errors.StoreError as exc:
                if not exc.retryable or time.monotonic() + delay > deadline:
                    raise
                logger.warning("could not %s (%s); trying again in %.2f s", what, exc.message, delay)
                time.sleep(delay * (1 + random.random() / 2))  # noqa: S311 - jitter, not security
                delay = min(delay * 2, 2.0)

    def _captured(
        self,
        step: records.Materialization,
        asset: definitions.AssetDef,
        scope: resources.ResourceScope,
        found: store_base.Found,
    ) -> Executed:
        """Steps 3 to 5 with the step's logging and output captured (:mod:`flowstone.capture`);
        what a failing attempt captured is written before its failure is recorded."""
        with capture.capturing(step.id, step.attempt, self.svc.step_logs, self.store.logs) as captured:
            try:
                executed = self._execute(step, asset, scope, found)
                if self.after_store is not None and executed.ref is not None:
                    self.after_store(step, executed.ref)
            except BaseException:
                self._write_logs(captured.close())
                raise
        return dataclasses.replace(executed, logs=captured.close())

    def _write_logs(self, lines: list[records.StepLogLine]) -> None:
        # Logging never decides a step's outcome (I12): a write that fails loses the lines.
        try:
            self.store.logs.write(lines)
        except errors.StoreError as exc:
            logger.warning("could not write %d step log line(s): %s", len(lines), exc.message)

    def _execute(
        self,
        step: records.Materialization,
        asset: definitions.AssetDef,
        scope: resources.ResourceScope,
        found: store_base.Found,
    ) -> Executed:
        """Steps 3 and 4: inputs, resources, the function, the output (stored or prepared), the checks."""
        partition = partition_keys.decode(step.partition_key)
        kwargs, lineage = step_inputs.load_inputs(
            self.defs, self.svc.io_managers, step, asset, partition=partition, found=found
        )
        ctx = context_mod.AssetContext(
            asset=asset.name,
            partition=partition,
            partition_key=step.partition_key,
            run_id=step.run_id,
            resources=scope.get(asset.resources, asset=asset.name) if asset.resources else {},
            log=context_mod.asset_logger(asset.name),
            partition_definition=asset.partitions,
            attempt=step.attempt,
            approval_lookup=functools.partial(self.store.approval_decision, step.id),
        )
        if asset.approval is not None:  # the declarative gate asks before the function runs
            gate = asset.approval
            ctx.require_approval(
                gate.message, timeout=gate.timeout, on_timeout=gate.on_timeout, approvers=gate.approvers
            )
        if asset.context_param is not None:
            kwargs[asset.context_param] = ctx
        if (reused := memoize.reusable(self.svc, asset, step.partition_key, lineage)) is not None:
            # Memoized: nothing runs or is stored; in-process runs return the reused value.
            value = None if self.queued else memoize.load(self.svc, asset, reused, ctx)
            return Executed(value, None, {}, [], None, memoized_from=reused.id)
        value = asset.fn(**kwargs)
        manager = step_inputs.manager(self.svc.io_managers, asset.io_manager, asset.name)
        started = time.perf_counter()
        out_ctx = io_base.OutputContext(
            asset=asset.name,
            partition=partition,
            partition_key=step.partition_key,
            run_id=step.run_id,
            materialization_id=step.id,
            manager_key=asset.io_manager,
            type_hint=asset.return_type,
            attempt=step.attempt,
        )
        output: io_base.PreparedOutput | None = None
        with telemetry.io_span("flowstone.io.store", asset=asset.name, io_manager=asset.io_manager):
            if isinstance(manager, io_base.TransactionalIOManager):
                output = manager.prepare(out_ctx, value)  # written by the success statement itself
                ref = output.ref
            else:
                ref = manager.store(out_ctx, value)  # a new immutable version, before the success
        events.emit(
            "io.stored",
            **_where(step),
            io_manager=asset.io_manager,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        # Metadata is stored as JSON: typed values (Decimal, date, ...) go through the codec.
        metadata = codec.to_jsonable({**out_ctx.metadata, **ctx.metadata})
        assert isinstance(metadata, dict)  # noqa: S101 - a dict encodes to a dict
        if not {"data_version", "content_hash"} & metadata.keys() and (digest := codec.content_hash(value)):
            metadata["content_hash"] = digest  # a data version for staleness, whatever the IO manager
        checks = checking.run(self.defs.checks_of(asset.name), value, ctx)  # same attempt (checking.py)
        return Executed(value, ref, metadata, lineage, output, checks=checks)


def _where(step: records.Materialization) -> dict[str, Any]:
    """The location fields of a step's lifecycle event."""
    return {
        "run_id": step.run_id,
        "asset": step.asset,
        "partition": step.partition_key,
        "attempt": step.attempt,
    }


def _why(error: errors.FlowStoneError) -> dict[str, Any]:
    return {"error_type": type(error).__name__, "error": error.message}
