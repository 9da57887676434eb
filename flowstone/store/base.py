"""The store contract: every read and write of FlowStone's metadata goes through one of these methods.

Two implementations share one contract test suite (``tests/integration/test_store_contract.py``):
:class:`flowstone.store.postgres.PostgresStore` (named queries, the source of truth) and
:class:`flowstone.store.memory.MemoryStore` (the same state machine in a process, for tests and
notebooks). The contract holds only what both implement; what only Postgres has (the job queue's
cancel and recovery, approval decisions, schedule state, stored outputs) is the Postgres store's.

The step state machine (docs/design/consistency.md) is the same for in-process and queued runs:
``create_run`` plans steps ``pending`` and moves the ready ones to ``queued``; :meth:`Store.claim`
moves the steps of one unit of work to ``running``; :meth:`Store.complete_steps` records successes
and releases their downstream steps (fan-in, I14); :meth:`Store.fail_terminal` records a failure and
skips what depends on it; every one of them finishes the run when its last step ends.

Times: every writer takes ``now`` (default: the database's clock): tests control time (STYLE.md §7).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from flowstone import approval_types, errors
from flowstone.io import base as io_base
from flowstone.status import RunKind
from flowstone.store import data_types, records

__all__ = [
    "BatchItem",
    "Claim",
    "ClaimAhead",
    "Completed",
    "JobQueue",
    "Keep",
    "StepKey",
    "StepLogs",
    "Store",
    "Success",
    "skip_error",
]

StepKey = tuple[str, str]
"""(asset, encoded partition key)."""

BatchItem = tuple[str, str]
"""(asset, batch_key): one unit of work (a queue job), named by the key its steps share."""

Found = dict[StepKey, tuple[records.Materialization, bool]]
"""Per wanted (asset, key): the row an input reads and whether it belongs to this run."""


class JobQueue(Protocol):
    """What the store's transactions need from the job queue: deferring and cancelling jobs on the
    caller's connection, inside the caller's transaction (I1, I11). The queue package implements it
    (:class:`flowstone.queue.client.Enqueuer`)."""

    def defer_steps(
        self, conn: Any, run_id: str, items: Sequence[BatchItem], *, schedule_in_s: float | None = None
    ) -> list[int]:
        """One job per item; returns the job ids in the order of ``items``."""

    def defer_timeout(self, conn: Any, run_id: str, asset: str, partition_key: str, at: datetime) -> int:
        """The approval-timeout job of a step, scheduled at ``at``; returns its id."""

    def cancel_job(self, conn: Any, job_id: int) -> bool:
        """Cancel a ``todo`` job; whether it was cancelled."""

    def queue_of(self, asset: str) -> str:
        """The queue an asset's jobs go to."""


@dataclass(frozen=True, slots=True)
class Keep:
    """Continuation (ADR 0013): the running job ``job_id`` on ``queue`` keeps one step its success
    makes ready on that queue, and runs it next instead of deferring a job for it."""

    job_id: int
    queue: str
    ahead: Callable[[BatchItem], ClaimAhead] | None = None
    """What claiming a kept unit asks for; given, the success claims it too (``Completed.ahead``)."""


@dataclass(frozen=True, slots=True)
class ClaimAhead:
    """What claiming one unit of work asks for (as :meth:`Store.claim`: only what is ready); sent
    with a success, it is claimed in the success's round trip, after its commit (a claim ahead)."""

    asset: str
    batch_key: str
    wanted: Sequence[StepKey] = ()
    code_version: str | None = None


@dataclass(frozen=True, slots=True)
class Success:
    """What recording one step's success needs (see :meth:`Store.complete_steps`)."""

    step: records.Materialization
    output_ref: Mapping[str, Any]
    metadata: Mapping[str, Any]
    lineage: Sequence[tuple[int, str]]
    output: io_base.PreparedOutput | None = None
    logs: Sequence[records.StepLogLine] = ()
    """The step's last captured lines, written with the success (``StepLogs.joins_success``)."""
    checks: Sequence[records.CheckOutcome] = ()
    """The asset checks' outcomes, recorded with the success; a blocking failure skips downstream."""
    memoized_from: int | None = None
    """Memoization reused this materialization: the step ends ``skipped`` pointing at it, with no
    output and no lineage of its own, and releases the steps downstream like a success."""

    @property
    def blocked_by(self) -> records.CheckOutcome | None:
        """The first failed blocking check (severity error), if any."""
        return next((c for c in self.checks if c.blocks), None)


@dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`Store.claim` took: the steps now ``running`` (attempt + 1), the inputs looked up
    with them, and the run's kind and config (``None`` when nothing was claimed)."""

    steps: list[records.Materialization]
    inputs: Found = field(default_factory=dict)
    run_kind: RunKind | None = None
    run_config: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Completed:
    """What :meth:`Store.complete_steps` recorded: per item the succeeded row (``None`` when that
    attempt lost its step), and the units of work its successes made ready."""

    rows: list[records.Materialization | None]
    released: list[BatchItem] = field(default_factory=list)
    continued: BatchItem | None = None
    """The unit of work kept for the running job (``keep=``): claim and run it next."""
    run: records.Run | None = None
    """The run, when this transaction ended it (its last steps succeeded)."""
    ahead: Claim | None = None
    """The claim of ``claim_ahead``; ``None`` when none was asked for or it failed (claim anew)."""
    job_finished: bool = False  # the transaction also finished the running job (ADR 0016)


class StepLogs(Protocol):
    """Where captured step logs go (``store.logs``): the Postgres store writes them to
    ``flowstone_step_logs`` in batches, the memory store keeps them in the process."""

    joins_success: bool
    """Whether :meth:`Store.complete_steps` writes the ``logs`` of its successes in its own
    transaction (else the step pipeline writes them just before)."""

    def write(self, lines: Sequence[records.StepLogLine]) -> None:
        """Store ``lines`` now."""

    def track(self, source: LogSource) -> None:
        """Flush ``source`` at least every second while it is tracked (``untrack``)."""

    def untrack(self, source: LogSource) -> None:
        """Stop flushing ``source``; returns once a flush of it in progress has been written."""

    def read(
        self,
        run_id: str,
        *,
        asset: str | None = None,
        partition_key: str | None = None,
        after_id: int | None = None,
        max_lines: int = 100_000,
    ) -> list[records.StepLog]:
        """The stored lines of a run (one asset, one partition), in step, attempt and line order."""


class LogSource(Protocol):
    """Something holding captured lines not yet written (a step's capture)."""

    def take(self) -> list[records.StepLogLine]:
        """The lines captured since the last call (they are now the caller's to write)."""


class Store(ABC):
    """Metadata store: runs, steps and their state machine, lineage, audit."""

    kind: str = "abstract"
    checks: data_types.CheckResults
    """Asset check results (written with each success, see :class:`Success`)."""
    partitions: data_types.DynamicPartitionKeys
    """The keys of dynamic partitions definitions."""

    # -- runs ---------------------------------------------------------------------------------

    @abstractmethod
    def create_run(
        self,
        run: records.NewRun,
        steps: Sequence[records.PlannedStep],
        *,
        edges: Sequence[tuple[StepKey, StepKey]] = (),
        ready: Sequence[StepKey] = (),
        jobs: JobQueue | None = None,
        now: datetime | None = None,
    ) -> records.Run:
        """In one transaction: insert the run, plan its steps (``pending``, each its own batch) and
        their edges ((upstream asset, key), (asset, key)), audit ``run.requested``, and move the
        ``ready`` steps to ``queued`` (deferring their jobs with ``jobs``)."""

    @abstractmethod
    def get_run(self, run_id: str) -> records.Run | None:
        """The run, or ``None``."""

    @abstractmethod
    def list_runs(self, *, limit: int = 20) -> list[records.Run]:
        """The newest runs first."""

    @abstractmethod
    def finish_run(self, run_id: str, *, actor: str, now: datetime | None = None) -> records.Run | None:
        """Recompute the run's status from its steps; audit ``run.finished`` when it became terminal.

        Returns the run when its status changed, else ``None``. The one place a run finishes: the
        step transactions below call the same code.
        """

    @abstractmethod
    def run_steps(self, run_id: str) -> list[records.Materialization]:
        """Every step of the run, in id order."""

    @abstractmethod
    def step_edges(self, run_id: str) -> list[tuple[StepKey, StepKey]]:
        """The step-level edges of a run: ((upstream asset, key), (asset, key))."""

    @abstractmethod
    def step_counts(self, run_id: str) -> dict[str, int]:
        """Number of steps of a run by status."""

    # -- the step state machine ---------------------------------------------------------------

    @abstractmethod
    def claim(
        self,
        run_id: str,
        asset: str,
        batch_key: str,
        *,
        wanted: Sequence[StepKey] = (),
        code_version: str | None = None,
        reclaim: bool = False,
        job_id: int | None = None,
        now: datetime | None = None,
    ) -> Claim:
        """Claim the steps of one unit of work (those of ``asset`` whose batch key is ``batch_key``,
        and the step ``batch_key`` itself, created when absent): ``pending``/``queued`` (or
        ``running`` with ``reclaim``: only the steps of job ``job_id`` when given) → ``running``,
        attempt + 1. The inputs ``wanted`` are looked up in the same round trip (see
        :meth:`find_inputs`)."""

    def start_step(
        self,
        run_id: str,
        asset: str,
        partition_key: str,
        *,
        code_version: str | None = None,
        reclaim: bool = False,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """Claim one step (:meth:`claim` of its own batch); ``None`` when its status does not allow
        starting (read it with :meth:`get_step`)."""
        claim = self.claim(run_id, asset, partition_key, code_version=code_version, reclaim=reclaim, now=now)
        return next((s for s in claim.steps if s.partition_key == partition_key), None)

    @abstractmethod
    def get_step(self, run_id: str, asset: str, partition_key: str) -> records.Materialization | None:
        """The step row of (run, asset, partition), or ``None``."""

    @abstractmethod
    def get_materialization(self, materialization_id: int) -> records.Materialization | None:
        """The row with this id, or ``None``."""

    @abstractmethod
    def get_materializations(self, ids: Sequence[int]) -> dict[int, records.Materialization]:
        """The rows with these ids that exist, by id."""

    @abstractmethod
    def find_inputs(self, run_id: str, wanted: Sequence[StepKey]) -> Found:
        """For each wanted (asset, key): this run's row if it has one (any status, flag ``True``),
        else the latest succeeded row (flag ``False``). Missing keys have no entry."""

    @abstractmethod
    def succeed_step(
        self,
        step: records.Materialization,
        *,
        output_ref: Mapping[str, Any],
        metadata: Mapping[str, Any],
        lineage: Sequence[tuple[int, str]],
        actor: str,
        output: io_base.PreparedOutput | None = None,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """The success statement alone: ``running`` → ``succeeded`` for this attempt, its lineage
        edges, audit event and the output of a transactional IO manager, in one transaction (I11).
        ``None`` if the attempt lost the step. Runs use :meth:`complete_steps`, which adds the
        fan-in and the run's status to the same transaction."""

    @abstractmethod
    def complete_steps(
        self,
        items: Sequence[Success],
        *,
        actor: str,
        jobs: JobQueue | None = None,
        release: bool = True,
        keep: Keep | None = None,
        claim_ahead: ClaimAhead | None = None,
        now: datetime | None = None,
        finish_job: int | None = None,
    ) -> Completed:
        """One transaction (I11, I14) for successes of one run: each success (see
        :meth:`succeed_step`), the fan-in of their downstream steps (``release``; a step whose
        last upstream succeeded becomes ``queued``, its job deferred with ``jobs`` when given, or
        kept for the running job with ``keep``) and the run's status; asynchronous commit unless
        the run ends (ADR 0013). ``claim_ahead``: that unit's claim follows the commit
        (``Completed.ahead``). ``finish_job``: the running job, which this success ends unless it
        keeps a step, is finished in it, committed durably (``Completed.job_finished``, ADR 0016)."""

    @abstractmethod
    def fail_step(
        self,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        skip: Sequence[StepKey],
        actor: str,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """In one transaction: ``running`` → ``failed`` with the error, audit event, and the given
        not-yet-started steps of the run → ``skipped``. ``None`` if the attempt lost the step."""

    @abstractmethod
    def fail_terminal(
        self,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        actor: str,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """One transaction: ``failed`` + audit, every not-yet-started step reachable from it through
        the run's step edges ``skipped``, the run's status (I12). ``None`` if the attempt lost it."""

    @abstractmethod
    def retry_later(
        self,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        retry_in_s: float,
        actor: str,
        jobs: JobQueue | None = None,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """``running`` → ``queued`` keeping attempt and the error, audited. Its job runs again;
        with ``jobs``, a new job is deferred for it instead, ``retry_in_s`` from now (a step run
        by continuation, ADR 0013, whose job is not its own)."""

    @abstractmethod
    def skip_steps(
        self,
        run_id: str,
        steps: Sequence[StepKey],
        *,
        error: Mapping[str, Any],
        now: datetime | None = None,
    ) -> list[records.Materialization]:
        """Mark not-yet-started steps ``skipped``; returns the rows that changed."""

    # -- approvals ------------------------------------------------------------------------------

    @abstractmethod
    def request_approval(
        self,
        step: records.Materialization,
        request: approval_types.ApprovalRequest,
        *,
        actor: str,
        jobs: JobQueue | None,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """One transaction: the step waits for approval (I13), its request is recorded once, the
        timeout job is deferred, the run's status. A store without approvals refuses clearly."""

    @abstractmethod
    def approval_decision(self, materialization_id: int) -> approval_types.ApprovalDecision | None:
        """The decision on a materialization's approval (``None``: none yet, or pending); raises
        :class:`~flowstone.errors.ApprovalRejectedError` for a rejected or expired one."""

    # -- queries ------------------------------------------------------------------------------

    @abstractmethod
    def latest(self, asset: str, partition_key: str) -> records.Materialization | None:
        """The latest succeeded row: ``finished_at DESC, id DESC`` (I8)."""

    @abstractmethod
    def latest_all(self, asset: str | None = None) -> list[records.Materialization]:
        """The latest succeeded row of every (asset, partition), ordered by asset, key."""

    @abstractmethod
    def newest_all(self, asset: str) -> list[records.Materialization]:
        """The newest row (any status) of every partition of ``asset``, ordered by key."""

    @abstractmethod
    def history(self, asset: str, partition_key: str, *, limit: int = 20) -> list[records.Materialization]:
        """Rows of (asset, partition), newest id first."""

    @abstractmethod
    def succeeded_keys(self, asset: str, partition_keys: Sequence[str]) -> set[str]:
        """Which of these keys have a succeeded materialization."""

    @abstractmethod
    def covered_keys(self, asset: str, partition_keys: Sequence[str]) -> set[str]:
        """Which of these keys succeeded or are in flight (pending, queued, running, waiting)."""

    @abstractmethod
    def lineage_upstream(self, materialization_id: int, *, max_depth: int) -> list[records.LineageRow]:
        """Materializations read (transitively) by this one."""

    @abstractmethod
    def lineage_downstream(self, materialization_id: int, *, max_depth: int) -> list[records.LineageRow]:
        """Materializations that read (transitively) this one."""

    # -- audit --------------------------------------------------------------------------------

    @abstractmethod
    def audit(
        self,
        event: str,
        *,
        actor: str,
        run_id: str | None = None,
        materialization_id: int | None = None,
        asset: str | None = None,
        partition_key: str | None = None,
        details: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> int:
        """Append an audit event; returns its id."""

    @abstractmethod
    def audit_events(self, *, run_id: str | None = None, limit: int = 1000) -> list[records.AuditEvent]:
        """Events in id order."""

    # -- retention ------------------------------------------------------------------------------

    @abstractmethod
    def gc_candidates(self, keep_last: int) -> list[records.GcCandidate]:
        """Succeeded materializations beyond the latest ``keep_last`` per (asset, partition),
        ranked ``finished_at DESC, id DESC`` (never the one ``latest()`` returns), leaving out
        runs with unfinished steps."""

    @abstractmethod
    def mark_outputs_deleted(self, ids: Sequence[int], *, now: datetime | None = None) -> None:
        """Record that gc deleted the output versions of these materializations."""

    @abstractmethod
    def hold_run(self, run_id: str) -> AbstractContextManager[None]:
        """Own an in-process run while this process runs its steps (Postgres: a session-level
        advisory lock the recovery sweep checks; the memory store lives and dies with its process)."""

    logs: StepLogs
    """The step logs (``flowstone_step_logs``)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections."""


def skip_error(failed: records.Materialization) -> dict[str, Any]:
    """The error stored on steps skipped because ``failed`` did not succeed."""
    return errors.DependencyFailedError(
        f"upstream step {failed.asset} [{failed.partition_key}] did not succeed ({failed.status})",
        run_id=failed.run_id,
        context={"upstream_asset": failed.asset, "upstream_partition_key": failed.partition_key},
    ).to_dict()


def check_keep_last(keep_last: int) -> None:
    """``keep_last`` is an integer of at least 1: the latest output is always kept."""
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise errors.ConfigurationError(
            "keep_last must be an integer of at least 1 (the latest output is always kept), "
            f"not {keep_last!r}"
        )
