"""In-process execution: a local executor over the same state machine as the queue.

The executor claims the steps of a run created in-process here, in plan order, through the same
claim, input lookup, success (with its fan-in), failure (with its skips) and run-finishing
statements the workers use (:mod:`flowstone.execution`): the steps with no upstream step first
(straight from ``pending``, as nothing else would claim them), then the steps a success releases
(``queued`` by the fan-in, without a job). A step
that fails skips what depends on it in the failure's transaction; a step that waits for approval
leaves its dependents ``pending`` until it is approved and the run resumed.
"""

from __future__ import annotations

import concurrent.futures
import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence

from flowstone import definitions, errors, execution, resources, services
from flowstone.results import RunConfig, RunResult
from flowstone.status import StepStatus
from flowstone.store import base as store_base

__all__ = ["LocalExecutor"]

Progress = Callable[[int, int], None]


class LocalExecutor:
    """Runs the steps of in-process runs in this process."""

    def __init__(
        self, svc: services.Services, *, after_store: execution.AfterStoreHook | None = None
    ) -> None:
        self.svc = svc
        self.runner = execution.StepRunner(svc, queued=False, after_store=after_store)

    def _run_one(self, run_id: str, key: store_base.StepKey, scope: resources.ResourceScope) -> execution.Ran:
        asset: definitions.AssetDef = self.svc.defs.get(key[0])  # I3: a dict lookup
        claim = self.runner.claim(run_id, asset, key[1])
        if not claim.steps:
            return execution.Ran([self.runner.unstartable(run_id, asset.name, key[1])], [])
        return self.runner.run_claimed(asset, claim, scope=scope)

    def run(
        self,
        run_id: str,
        ready: Iterable[store_base.StepKey] | Callable[[], Iterable[store_base.StepKey]],
        *,
        order: Mapping[store_base.StepKey, int],
        config: RunConfig,
        result: RunResult,
    ) -> RunResult:
        """Run the ``ready`` steps (or those ``ready()`` returns once this process owns the run)
        and every step their successes release, lowest ``order`` first (the plan's order, so a run
        executes exactly as planned); record what happened in ``result``. The process owns the run
        meanwhile (``store.hold_run``): if it dies, the recovery sweep fails the run's active steps
        (``RunAbandonedError``) and ``runtime.resume`` runs them again."""
        with (
            self.svc.store.hold_run(run_id),
            resources.ResourceScope(self.svc.defs.resources, config.resources) as scope,
        ):
            keys = ready() if callable(ready) else ready
            fallback = len(order)
            heap = [(order.get(k, fallback), k) for k in dict.fromkeys(keys)]
            heapq.heapify(heap)
            while heap:
                _, key = heapq.heappop(heap)
                ran = self._run_one(run_id, key, scope)
                for outcome in ran.outcomes:
                    _record(result, key, outcome)
                for released in ran.released:
                    heapq.heappush(heap, (order.get(released, fallback), released))
        return self._finish(run_id, result)

    def run_parallel(
        self,
        run_id: str,
        keys: Sequence[store_base.StepKey],
        *,
        config: RunConfig,
        max_workers: int,
        progress: Progress | None = None,
    ) -> dict[store_base.StepKey, execution.StepOutcome]:
        """Run independent steps (no edges between them) in ``max_workers`` threads."""
        outcomes: dict[store_base.StepKey, execution.StepOutcome] = {}
        with (
            self.svc.store.hold_run(run_id),
            resources.ResourceScope(self.svc.defs.resources, config.resources) as scope,
            concurrent.futures.ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool,
        ):
            runs = pool.map(lambda key: self._run_one(run_id, key, scope), keys)
            for finished, (key, ran) in enumerate(zip(keys, runs, strict=True), start=1):
                outcomes[key] = ran.outcomes[0]
                if progress is not None:
                    progress(finished, len(keys))
        self.svc.store.finish_run(run_id, actor=self.svc.actor)
        return outcomes

    def _finish(self, run_id: str, result: RunResult) -> RunResult:
        # Every step transaction finishes the run when its last step ends; this covers a run
        # whose steps could not all be claimed (e.g. cancelled from elsewhere meanwhile).
        finished = self.svc.store.finish_run(run_id, actor=self.svc.actor)
        run = finished or self.svc.store.get_run(run_id)
        if run is None:
            raise errors.FlowStoneError(f"run {run_id} vanished", run_id=run_id)
        result.status = run.status
        result.steps = self.svc.store.run_steps(run_id)
        return result


def _record(result: RunResult, key: store_base.StepKey, outcome: execution.StepOutcome) -> None:
    row = outcome.record
    step_key = (row.asset, row.partition_key) if row is not None else key
    if outcome.succeeded:
        result.values[step_key] = outcome.value
    elif row is not None and row.status == StepStatus.WAITING_APPROVAL:
        result.waiting.append(step_key)
    elif outcome.error is not None:
        result.errors[step_key] = outcome.error
