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

    def _run_one(
        self,
        run_id: str,
        key: store_base.StepKey,
        scope: resources.ResourceScope,
        *,
        claimed: store_base.Claim | None = None,
        ahead: store_base.StepKey | None = None,
    ) -> execution.Ran:
        """Claim (unless ``claimed`` already) and run one step; with ``ahead``, the success's round
        trip also claims that step (``Ran.ahead``)."""
        asset: definitions.AssetDef = self.svc.defs.get(key[0])  # I3: a dict lookup
        if claimed is None:
            claim = self.runner.claim(run_id, asset, key[1])
        else:
            claim = self.runner.claimed(run_id, asset, key[1], claimed)
        if not claim.steps:
            return execution.Ran([self.runner.unstartable(run_id, asset.name, key[1])], [])
        claim_ahead = None
        if ahead is not None:
            claim_ahead = self.runner.claim_of(self.svc.defs.get(ahead[0]), ahead[1])
        return self.runner.run_claimed(asset, claim, scope=scope, claim_ahead=claim_ahead)

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
        (``RunAbandonedError``) and ``runtime.resume`` runs them again.

        Chains skip a round trip: when the step next in the plan's order comes right after the
        one running (nothing waiting comes before it), the success of the one running also claims
        it, in its round trip. The claim takes it only if that success made it ready; then it runs
        next, as it would have anyway."""
        with (
            self.svc.store.hold_run(run_id),
            resources.ResourceScope(self.svc.defs.resources, config.resources) as scope,
        ):
            keys = ready() if callable(ready) else ready
            fallback = len(order)
            at = {rank: key for key, rank in order.items()}
            heap = [(order.get(k, fallback), k) for k in dict.fromkeys(keys)]
            heapq.heapify(heap)
            taken: set[store_base.StepKey] = set()  # run from a claim made ahead, still in the heap
            then: tuple[store_base.StepKey, store_base.Claim] | None = None
            while heap or then is not None:
                if then is not None:
                    (key, claimed), then = then, None
                else:
                    _, key = heapq.heappop(heap)
                    if key in taken:
                        taken.discard(key)
                        continue
                    claimed = None
                while heap and heap[0][1] in taken:
                    taken.discard(heapq.heappop(heap)[1])
                ahead = _next_in_order(key, order, at, heap, fallback)
                ran = self._run_one(run_id, key, scope, claimed=claimed, ahead=ahead)
                for outcome in ran.outcomes:
                    _record(result, key, outcome)
                if ahead is not None and ran.ahead is not None and ran.ahead.steps:
                    then = (ahead, ran.ahead)  # runs next; released below, or already waiting
                    taken.add(ahead)
                for released in ran.released:
                    if released in taken:
                        taken.discard(released)
                    else:
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


def _next_in_order(
    key: store_base.StepKey,
    order: Mapping[store_base.StepKey, int],
    at: Mapping[int, store_base.StepKey],
    heap: Sequence[tuple[int, store_base.StepKey]],
    fallback: int,
) -> store_base.StepKey | None:
    """The step the plan runs right after ``key`` if ``key``'s success makes it ready: the next in
    the plan's order, unless a step already waiting comes before it."""
    rank = order.get(key, fallback)
    following = at.get(rank + 1) if rank < fallback else None
    if following is None or (heap and heap[0][0] < rank + 1):
        return None
    return following


def _record(result: RunResult, key: store_base.StepKey, outcome: execution.StepOutcome) -> None:
    row = outcome.record
    step_key = (row.asset, row.partition_key) if row is not None else key
    if outcome.succeeded:
        result.values[step_key] = outcome.value
    elif row is not None and row.status == StepStatus.WAITING_APPROVAL:
        result.waiting.append(step_key)
    elif outcome.error is not None:
        result.errors[step_key] = outcome.error
