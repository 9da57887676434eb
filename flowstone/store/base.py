"""The store interface: every read and write of FlowStone's metadata goes through one of these methods.

Two implementations share one contract test suite (``tests/integration/test_store_contract.py``):
:class:`flowstone.store.postgres.PostgresStore` (named queries, the source of truth) and
:class:`flowstone.store.memory.MemoryStore` (same semantics, for tests and notebooks).

Times: every writer takes ``now`` (default: the database's clock) so tests control time without
mocking (STYLE.md §7).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flowstone import errors
from flowstone.store import records
from flowstone.store.outputs import GcCandidate

if TYPE_CHECKING:
    from flowstone.approval_types import ApprovalDecision, ApprovalRequest
    from flowstone.io.base import PreparedOutput

__all__ = ["StepKey", "Store", "Success", "skip_error"]

StepKey = tuple[str, str]
"""(asset, encoded partition key)."""


@dataclass(frozen=True, slots=True)
class Success:
    """What recording one step's success needs (see :meth:`Store.succeed_step`)."""

    step: records.Materialization
    output_ref: Mapping[str, Any]
    metadata: Mapping[str, Any]
    lineage: Sequence[tuple[int, str]]
    output: PreparedOutput | None = None


class Store(ABC):
    """Metadata store: runs, materializations, lineage, audit."""

    kind: str = "abstract"

    # -- runs ---------------------------------------------------------------------------------

    @abstractmethod
    def create_run(
        self,
        run: records.NewRun,
        steps: Sequence[records.PlannedStep],
        *,
        edges: Sequence[tuple[StepKey, StepKey]] = (),
        now: datetime | None = None,
    ) -> records.Run:
        """In one transaction: insert the run, plan its steps (``pending``) and their edges
        ((upstream asset, key), (asset, key)), audit ``run.requested``."""

    @abstractmethod
    def get_run(self, run_id: str) -> records.Run | None:
        """The run, or ``None``."""

    @abstractmethod
    def list_runs(self, *, limit: int = 20) -> list[records.Run]:
        """The newest runs first."""

    @abstractmethod
    def finish_run(self, run_id: str, *, actor: str, now: datetime | None = None) -> records.Run | None:
        """Recompute the run's status from its steps; audit ``run.finished`` when it became terminal.

        Returns the run when its status changed, else ``None``.
        """

    # -- steps --------------------------------------------------------------------------------

    @abstractmethod
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
        """Claim a step: ``pending``/``queued`` (or absent) → ``running``, attempt + 1 (an upsert).

        ``reclaim`` also takes over a ``running`` row (a redelivered job whose worker died).
        Returns ``None`` when the step's status does not allow starting (read it with
        :meth:`get_step`).
        """

    def start_step_with_inputs(
        self,
        run_id: str,
        asset: str,
        partition_key: str,
        *,
        wanted: Sequence[StepKey],
        code_version: str | None = None,
        reclaim: bool = False,
        now: datetime | None = None,
    ) -> tuple[records.Materialization | None, dict[StepKey, tuple[records.Materialization, bool]]]:
        """:meth:`start_step` and :meth:`find_inputs` together (a store may send them at once)."""
        step = self.start_step(
            run_id, asset, partition_key, code_version=code_version, reclaim=reclaim, now=now
        )
        return step, (self.find_inputs(run_id, wanted) if step is not None else {})

    @abstractmethod
    def get_step(self, run_id: str, asset: str, partition_key: str) -> records.Materialization | None:
        """The step row of (run, asset, partition), or ``None``."""

    @abstractmethod
    def get_materialization(self, materialization_id: int) -> records.Materialization | None:
        """The row with this id, or ``None``."""

    @abstractmethod
    def find_inputs(
        self, run_id: str, wanted: Sequence[StepKey]
    ) -> dict[StepKey, tuple[records.Materialization, bool]]:
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
        output: PreparedOutput | None = None,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """In one transaction: ``running`` → ``succeeded`` for this attempt, lineage edges
        (upstream id, input name), audit event, and the output of a transactional IO manager (I11).
        ``None`` if the attempt lost the step."""

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
    def skip_steps(
        self,
        run_id: str,
        steps: Sequence[StepKey],
        *,
        error: Mapping[str, Any],
        now: datetime | None = None,
    ) -> list[records.Materialization]:
        """Mark not-yet-started steps ``skipped``; returns the rows that changed."""

    @abstractmethod
    def run_steps(self, run_id: str) -> list[records.Materialization]:
        """Every step of the run, in id order."""

    @abstractmethod
    def step_edges(self, run_id: str) -> list[tuple[StepKey, StepKey]]:
        """The step-level edges of a run: ((upstream asset, key), (asset, key))."""

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

    def gc_candidates(self, keep_last: int) -> list[GcCandidate]:
        """Succeeded materializations beyond the latest ``keep_last`` per (asset, partition),
        ranked ``finished_at DESC, id DESC`` (never the one ``latest()`` returns), leaving out
        runs with unfinished steps."""
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise errors.ConfigurationError(f"keep_last must be an integer of at least 1, not {keep_last!r}")
        active_runs = {
            r.run_id for r in self.list_runs(limit=1_000_000) if r.status not in records.RUN_TERMINAL
        }
        found: list[GcCandidate] = []
        for latest in self.latest_all():
            succeeded = [
                m
                for m in self.history(latest.asset, latest.partition_key, limit=1_000_000)
                if m.status == "succeeded" and m.output_ref is not None
            ]
            # Ranked among all succeeded rows (deleted ones included), as the SQL does.
            succeeded.sort(key=lambda m: (m.finished_at, m.id), reverse=True)
            found.extend(
                GcCandidate(m.id, m.asset, m.partition_key, dict(m.output_ref or {}))
                for m in reversed(succeeded[keep_last:])
                if m.run_id not in active_runs and m.output_deleted_at is None
            )
        return found

    def delete_postgres_outputs(self, ids: Sequence[int]) -> list[int]:
        """Delete stored ``flowstone_outputs`` rows (Postgres only; nothing to do elsewhere)."""
        del ids
        return []

    @abstractmethod
    def mark_outputs_deleted(self, ids: Sequence[int], *, now: datetime | None = None) -> None:
        """Record that gc deleted the output versions of these materializations."""

    # -- approvals (Postgres; the memory store has none) ------------------------------------------

    def approval_decision(self, materialization_id: int) -> ApprovalDecision | None:
        """The decision on a materialization's approval (``None``: none yet, or pending)."""
        del materialization_id
        return None

    def request_approval(
        self,
        step: records.Materialization,
        request: ApprovalRequest,
        *,
        actor: str,
        defer_timeout: Any,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """Record that a step waits for approval (Postgres stores only)."""
        raise errors.ConfigurationError(
            f"asset {step.asset!r} asks for approval, which needs the Postgres store (approvals are "
            "rows people and timeouts decide on): create FlowStone without store='memory'",
            asset=step.asset,
            retryable=False,
        )

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections."""


def skip_error(failed: records.Materialization) -> dict[str, Any]:
    """The error stored on steps skipped because ``failed`` did not succeed."""
    return errors.DependencyFailedError(
        f"upstream step {failed.asset} [{failed.partition_key}] did not succeed ({failed.status})",
        run_id=failed.run_id,
        context={"upstream_asset": failed.asset, "upstream_partition_key": failed.partition_key},
    ).to_dict()
