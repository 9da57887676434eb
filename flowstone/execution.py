"""The step runner: the single place that runs one (asset, partition, run) and records its outcome.

Order of work for one step (the consistency model, docs/design/consistency.md):

1. resolve the asset by name in the Definitions (I3; unknown → ``UnknownAssetError``, nothing written);
2. claim the step (``start_step``: ``pending``/``queued`` → ``running``, attempt + 1);
3. find the exact upstream materializations it reads (this run's, else the latest succeeded) and load
   their outputs through their IO managers;
4. set up the resources it declares, build the context, call the function;
5. store the output through the asset's IO manager (a new immutable version keyed by the
   materialization id, I10);
6. in one transaction: ``succeeded`` + lineage edges + audit event (I11).

Any exception in steps 3 to 6 becomes one ``failed`` record with a structured error, written here and nowhere
else (I12); steps of the run that depend on it are marked ``skipped`` in the same transaction.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from flowstone import approval_types, codec, definitions, errors, partition_keys, planning, resources
from flowstone import context as context_mod
from flowstone.io import base as io_base
from flowstone.store import base as store_base
from flowstone.store import records

__all__ = ["Completion", "StepOutcome", "StepRunner", "SyncCompletion"]

logger = logging.getLogger("flowstone.execution")

# Called after the output is stored and before the success is recorded; tests use it to inject
# faults at that exact point (a dropped connection, a killed process).
AfterStoreHook = Callable[[records.Materialization, io_base.OutputRef], None]
SkipList = Sequence[store_base.StepKey] | Callable[[], Sequence[store_base.StepKey]]
Found = dict[store_base.StepKey, tuple[records.Materialization, bool]]


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What happened to one step: its row as recorded, the value (in-process runs), the error, and
    (queued runs) the delay before a retry when the failure will be retried."""

    record: records.Materialization | None
    value: object = None
    error: errors.FlowStoneError | None = None
    retry_in_s: float | None = None

    @property
    def waiting(self) -> bool:
        """Whether the step waits for approval."""
        return self.record is not None and self.record.status == "waiting_approval"

    @property
    def succeeded(self) -> bool:
        """Whether the step's row is ``succeeded``."""
        return self.record is not None and self.record.status == "succeeded"


@dataclass(frozen=True, slots=True)
class Executed:
    """A step whose function ran and whose output is stored (or prepared for the success)."""

    value: object
    ref: io_base.OutputRef
    metadata: dict[str, Any]
    lineage: list[tuple[int, str]]
    output: io_base.PreparedOutput | None


class Completion(Protocol):
    """How a step's outcome is written: in-process (:class:`SyncCompletion`) or for the queue
    (fan-in, retries: :class:`flowstone.queue.QueueCompletion`)."""

    def succeed_many(
        self, items: Sequence[store_base.Success], *, actor: str
    ) -> list[records.Materialization | None]:
        """Record successes (with the outputs of a transactional IO manager); per item the
        succeeded row, or ``None`` when that attempt lost its step."""
        ...

    def fail(
        self,
        step: records.Materialization,
        error: errors.FlowStoneError,
        *,
        skip: Sequence[store_base.StepKey],
        actor: str,
    ) -> tuple[records.Materialization | None, float | None]:
        """Record the failure once; returns the row and, when it will be retried, the delay (s)."""
        ...

    def wait_for_approval(
        self, step: records.Materialization, request: approval_types.ApprovalRequest, *, actor: str
    ) -> records.Materialization | None:
        """Record that the step waits for approval (I13): a state, not a failure."""
        ...


class SyncCompletion:
    """In-process runs: one transaction per success, as the store writes it; no retries."""

    def __init__(self, store: store_base.Store, *, defer_timeout: Any = None) -> None:
        self.store = store
        self.defer_timeout = defer_timeout

    def succeed_many(
        self, items: Sequence[store_base.Success], *, actor: str
    ) -> list[records.Materialization | None]:
        """See :meth:`Completion.succeed_many`."""
        return [
            self.store.succeed_step(
                item.step,
                output_ref=item.output_ref,
                metadata=item.metadata,
                lineage=item.lineage,
                actor=actor,
                output=item.output,
            )
            for item in items
        ]

    def fail(
        self,
        step: records.Materialization,
        error: errors.FlowStoneError,
        *,
        skip: Sequence[store_base.StepKey],
        actor: str,
    ) -> tuple[records.Materialization | None, float | None]:
        """See :meth:`Completion.fail`."""
        return self.store.fail_step(step, error=error.to_dict(), skip=skip, actor=actor), None

    def wait_for_approval(
        self, step: records.Materialization, request: approval_types.ApprovalRequest, *, actor: str
    ) -> records.Materialization | None:
        """See :meth:`Completion.wait_for_approval`."""
        return self.store.request_approval(step, request, actor=actor, defer_timeout=self.defer_timeout)


def _with_location(
    error: errors.FlowStoneError, asset: str, partition_key: str, run_id: str
) -> errors.FlowStoneError:
    if error.asset is None:
        error.asset = asset
    if error.partition is None:
        error.partition = partition_key
    if error.run_id is None:
        error.run_id = run_id
    return error


class StepRunner:
    """Runs steps of one Definitions against one store with a set of IO managers."""

    def __init__(
        self,
        defs: definitions.Definitions,
        store: store_base.Store,
        io_managers: Mapping[str, io_base.IOManager],
        *,
        actor: str,
        after_store: AfterStoreHook | None = None,
        completion: Completion | None = None,
    ) -> None:
        self.defs = defs
        self.store = store
        self.io_managers = io_managers
        self.actor = actor
        self.after_store = after_store
        self.completion = completion if completion is not None else SyncCompletion(store)

    def run_step(
        self,
        run_id: str,
        asset_name: str,
        partition: partition_keys.PartitionValue | None,
        *,
        scope: resources.ResourceScope,
        skip_on_failure: SkipList = (),
        reclaim: bool = False,
    ) -> StepOutcome:
        """Run one step and record its outcome exactly once.

        ``skip_on_failure`` lists (or computes, when called: only on failure) the steps of the run
        to mark ``skipped`` in the failure's transaction.
        """
        asset = self.defs.get(asset_name)  # I3: a dict lookup; unknown names raise, nothing written
        partition_key = partition_keys.encode(partition)
        wanted = self._wanted(asset, partition)
        # The claim and the lookup of the inputs go to the database together (one round trip).
        step, found = self.store.start_step_with_inputs(
            run_id,
            asset.name,
            partition_key,
            code_version=asset.code_version,
            reclaim=reclaim,
            wanted=[(inp.asset, key) for inp in asset.inputs for _, key in wanted[inp.name]],
        )
        if step is None:
            return self._unstartable(run_id, asset.name, partition_key)
        return self._run_claimed(asset, [(step, partition)], scope, skip_on_failure, found=found)[0]

    def run_claimed(
        self,
        asset: definitions.AssetDef,
        steps: Sequence[records.Materialization],
        *,
        scope: resources.ResourceScope,
    ) -> list[StepOutcome]:
        """Run steps already claimed (``running``) by the caller, e.g. a queue job's batch."""
        work = [(step, partition_keys.decode(step.partition_key)) for step in steps]
        return self._run_claimed(asset, work, scope, ())

    def _unstartable(self, run_id: str, asset: str, partition_key: str) -> StepOutcome:
        current = self.store.get_step(run_id, asset, partition_key)
        if current is not None and current.status == "succeeded":
            return StepOutcome(record=current)
        status = current.status if current else "missing"
        return StepOutcome(
            record=current,
            error=errors.InvalidTransitionError(
                f"step cannot start: it is {status}", asset=asset, partition=partition_key, run_id=run_id
            ),
        )

    def _run_claimed(
        self,
        asset: definitions.AssetDef,
        work: Sequence[tuple[records.Materialization, partition_keys.PartitionValue | None]],
        scope: resources.ResourceScope,
        skip_on_failure: SkipList,
        *,
        found: Found | None = None,
    ) -> list[StepOutcome]:
        """Execute claimed steps; record failures one by one and successes together. ``found``:
        the inputs of a single step, already looked up with its claim."""
        outcomes: list[StepOutcome] = []
        done: list[tuple[records.Materialization, Executed]] = []
        for step, partition in work:
            try:
                executed = self._execute(step, asset, partition, scope, found=found)
                if self.after_store is not None:
                    self.after_store(step, executed.ref)
            except approval_types.ApprovalPending as pending:
                outcomes.append(self._wait_for_approval(step, pending.request, skip_on_failure))
                continue
            except Exception as exc:  # noqa: BLE001 - every failure of a step is recorded, then reported
                outcomes.append(self._record_failure(step, exc, skip_on_failure))
                continue
            done.append((step, executed))
        if not done:
            return outcomes
        items = [
            store_base.Success(
                step=step,
                output_ref=executed.ref.model_dump(mode="json"),
                metadata=executed.metadata,
                lineage=executed.lineage,
                output=executed.output,
            )
            for step, executed in done
        ]
        try:
            rows = self.completion.succeed_many(items, actor=self.actor)
        except Exception as exc:  # noqa: BLE001 - the success transaction failed: each step failed
            return outcomes + [self._record_failure(step, exc, skip_on_failure) for step, _ in done]
        for (step, executed), row in zip(done, rows, strict=True):
            if row is None:
                # Another attempt took the step over (e.g. a redelivered job): its outcome stands.
                # A version this attempt wrote with a non-transactional manager (its own file,
                # "<id>-<attempt>") is referenced by no committed row: readers never see it.
                outcomes.append(
                    StepOutcome(
                        record=self.store.get_step(step.run_id, step.asset, step.partition_key),
                        error=errors.InvalidTransitionError(
                            f"attempt {step.attempt} lost the step to another attempt",
                            asset=step.asset,
                            partition=step.partition_key,
                            run_id=step.run_id,
                        ),
                    )
                )
            else:
                outcomes.append(StepOutcome(record=row, value=executed.value))
        return outcomes

    def _wait_for_approval(
        self,
        step: records.Materialization,
        request: approval_types.ApprovalRequest,
        skip_on_failure: SkipList,
    ) -> StepOutcome:
        try:
            row = self.completion.wait_for_approval(step, request, actor=self.actor)
        except errors.FlowStoneError as exc:  # e.g. approvals on the memory store: a clear failure
            return self._record_failure(step, exc, skip_on_failure)
        return StepOutcome(record=row or self.store.get_step(step.run_id, step.asset, step.partition_key))

    def _record_failure(
        self,
        step: records.Materialization,
        exc: Exception,
        skip_on_failure: SkipList,
    ) -> StepOutcome:
        if isinstance(exc, errors.FlowStoneError):
            error = _with_location(exc, step.asset, step.partition_key, step.run_id)
        else:
            error = errors.ExecutionError.from_exception(
                exc, asset=step.asset, partition=step.partition_key, run_id=step.run_id
            )
        logger.info("step %s [%s] failed: %s", step.asset, step.partition_key, error)
        skip: Sequence[store_base.StepKey] = (
            skip_on_failure() if callable(skip_on_failure) else skip_on_failure
        )
        failed, retry_in_s = self.completion.fail(step, error, skip=skip, actor=self.actor)
        record = (
            failed if failed is not None else self.store.get_step(step.run_id, step.asset, step.partition_key)
        )
        return StepOutcome(record=record, error=error, retry_in_s=retry_in_s)

    def _execute(
        self,
        step: records.Materialization,
        asset: definitions.AssetDef,
        partition: partition_keys.PartitionValue | None,
        scope: resources.ResourceScope,
        *,
        found: Found | None = None,
    ) -> Executed:
        """Steps 3 to 5: inputs, resources, the function, the output (stored or prepared)."""
        kwargs, lineage = self._load_inputs(step, asset, partition, found=found)
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
        value = asset.fn(**kwargs)
        manager = self._manager(asset.io_manager, asset.name)
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
        if isinstance(manager, io_base.TransactionalIOManager):
            output = manager.prepare(out_ctx, value)  # written by the success statement itself
            ref = output.ref
        else:
            ref = manager.store(out_ctx, value)  # a new immutable version, before the success
        # Metadata is stored as JSON: typed values (Decimal, date, ...) go through the codec.
        metadata = codec.to_jsonable(dict(ctx.metadata))
        assert isinstance(metadata, dict)  # noqa: S101 - a dict encodes to a dict
        return Executed(value=value, ref=ref, metadata=metadata, lineage=lineage, output=output)

    def _manager(self, key: str, asset: str) -> io_base.IOManager:
        try:
            return self.io_managers[key]
        except KeyError:
            raise errors.IOManagerError(
                f"IO manager {key!r} is not configured", asset=asset, retryable=False
            ) from None

    def _wanted(
        self, asset: definitions.AssetDef, partition: partition_keys.PartitionValue | None
    ) -> dict[str, list[tuple[partition_keys.PartitionValue | None, str]]]:
        """Per input: the upstream partitions it reads, with their keys."""
        wanted: dict[str, list[tuple[partition_keys.PartitionValue | None, str]]] = {}
        for inp in asset.inputs:
            values = planning.step_partitions(asset, self.defs.get(inp.asset), partition)
            wanted[inp.name] = [(v, partition_keys.encode(v)) for v in values]
        return wanted

    def _load_inputs(
        self,
        step: records.Materialization,
        asset: definitions.AssetDef,
        partition: partition_keys.PartitionValue | None,
        *,
        found: Found | None = None,
    ) -> tuple[dict[str, object], list[tuple[int, str]]]:
        wanted = self._wanted(asset, partition)
        if found is None:
            keys = [(inp.asset, key) for inp in asset.inputs for _, key in wanted[inp.name]]
            found = self.store.find_inputs(step.run_id, keys)
        kwargs: dict[str, object] = {}
        lineage: list[tuple[int, str]] = []
        for inp in asset.inputs:
            loaded: dict[object, object] = {}
            for value, key in wanted[inp.name]:
                row = self._input_row(found.get((inp.asset, key)), inp.asset, key)
                upstream = self.defs.get(inp.asset)
                manager = self._manager(upstream.io_manager, upstream.name)
                ref = io_base.OutputRef.model_validate(row.output_ref)
                loaded[value] = manager.load(
                    io_base.InputContext(
                        asset=inp.asset,
                        partition=value,
                        partition_key=key,
                        ref=ref,
                        type_hint=None if inp.mapping.is_multi() else inp.type_hint,
                    )
                )
                lineage.append((row.id, inp.name))
            if inp.mapping.is_multi():
                kwargs[inp.name] = loaded
            elif len(loaded) == 1:
                kwargs[inp.name] = next(iter(loaded.values()))
            else:
                raise errors.DependencyNotReadyError(
                    f"input {inp.name!r} has no upstream partition of {inp.asset!r} to read for "
                    f"partition {step.partition_key}",
                    retryable=False,
                )
        return kwargs, lineage

    @staticmethod
    def _input_row(
        found: tuple[records.Materialization, bool] | None,
        upstream: str,
        key: str,
    ) -> records.Materialization:
        if found is None:
            raise errors.DependencyNotReadyError(
                f"upstream {upstream!r} [{key}] has no succeeded materialization to read; "
                f"materialize it first (or use with_upstream=True)",
                retryable=False,
            )
        row, in_run = found
        if row.output_deleted_at is not None:
            raise errors.DependencyNotReadyError(
                f"upstream {upstream!r} [{key}] #{row.id}: its output was deleted by gc at "
                f"{row.output_deleted_at:%Y-%m-%d %H:%M:%S}; materialize it again",
                retryable=False,
            )
        if row.status != "succeeded" or row.output_ref is None:
            where = "in this run" if in_run else "latest"
            raise errors.DependencyNotReadyError(
                f"upstream {upstream!r} [{key}] is {row.status} {where}; it must succeed first",
                retryable=False,
            )
        return row
