"""The ``FlowStone`` runtime users hold: it decides the store once (I9) and runs things.

``materialize`` runs in the calling process and returns a :class:`RunResult` (I15);
``backfill_sync`` materializes many partitions of one asset in-process, optionally in threads.
"""

from __future__ import annotations

import concurrent.futures
import functools
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import procrastinate

from flowstone import approvals as approvals_mod
from flowstone import automation, definitions, errors, execution, partition_keys, planning, queue, resources
from flowstone import lineage as lineage_mod
from flowstone import settings as settings_mod
from flowstone.io import base as io_base
from flowstone.io.memory import MemoryIOManager
from flowstone.io.postgres import PostgresIOManager
from flowstone.results import BackfillResult, GcReport, RunConfig, RunResult
from flowstone.store import backend, migrations, records
from flowstone.store import base as store_base
from flowstone.store.approval_ops import PostgresFlowStore
from flowstone.store.memory import MemoryStore
from flowstone.store.postgres import PostgresStore

# the result types live in `results` (below `queue`) and stay importable from here
__all__ = ["BackfillResult", "FlowStone", "GcReport", "RunConfig", "RunResult"]

Progress = Callable[[int, int], None]


class FlowStone:
    """The runtime: Definitions plus the one store decision (I9).

    ``store="memory"`` keeps metadata in this process; otherwise ``database_url``, else
    ``FLOWSTONE_DATABASE_URL``, else the embedded Postgres in ``$FLOWSTONE_HOME``. The embedded
    database is migrated automatically; an external one must be upgraded with
    ``flowstone db upgrade`` (a clear error says so).
    """

    def __init__(
        self,
        defs: definitions.Definitions,
        *,
        database_url: str | None = None,
        store: Literal["memory"] | store_base.Store | None = None,
        home: str | Path | None = None,
        actor: str | None = None,
        max_connections: int = 12,
        recovery_interval_s: int = 10,
        stalled_after_s: float = 30.0,
        heartbeat_interval_s: float = 10.0,
        worker_pool_size: int = 10,
        automation_interval_s: int = 10,
    ) -> None:
        self.defs = defs
        env = settings_mod.Settings.from_env()
        self.settings = env.model_copy(update={"home": Path(home)}) if home is not None else env
        self.actor = actor or self.settings.resolved_actor()
        self.database_url: str | None = None
        self.store, default_io = self._decide_store(database_url, store, max_connections)
        self.io_managers: dict[str, io_base.IOManager] = {"default": default_io, **defs.io_managers}
        for key, manager in self.io_managers.items():
            if isinstance(manager, PostgresIOManager):
                if not isinstance(self.store, PostgresStore):
                    raise errors.ConfigurationError(
                        f"IO manager {key!r} is a PostgresIOManager, which needs the Postgres store "
                        "(not store='memory')"
                    )
                manager.bind(self.store)
                manager.validate_assets([a.name for a in defs.assets.values() if a.io_manager == key])
        self.lineage = lineage_mod.Lineage(defs, self.store)
        self.approvals = approvals_mod.Approvals(self)
        automation.validate(self)
        self.schedules = automation.Schedules(self)
        self.sensors = automation.Sensors(self)
        self._queue_options = {
            "recovery_interval_s": recovery_interval_s,
            "stalled_after_s": stalled_after_s,
            "heartbeat_interval_s": heartbeat_interval_s,
            "worker_pool_size": worker_pool_size,
            "automation_interval_s": automation_interval_s,
        }
        self._enqueuer: queue.Enqueuer | None = None
        self._blueprint: procrastinate.Blueprint | None = None
        self._app: procrastinate.App | None = None

    def _decide_store(
        self,
        database_url: str | None,
        store: Literal["memory"] | store_base.Store | None,
        max_connections: int,
    ) -> tuple[store_base.Store, io_base.IOManager]:
        if store == "memory":
            return MemoryStore(), MemoryIOManager()
        if isinstance(store, store_base.Store):
            default: io_base.IOManager = (
                MemoryIOManager() if isinstance(store, MemoryStore) else PostgresIOManager()
            )
            return store, default
        if store is not None:
            raise errors.ConfigurationError(f"store must be 'memory' or a Store, not {store!r}")
        target = backend.resolve_database(database_url, settings=self.settings)
        self.database_url = target.url
        todo = migrations.pending(target.url)
        if todo:
            if target.source == "embedded":
                migrations.upgrade(target.url)
            else:
                raise errors.ConfigurationError(
                    f"the database has {len(todo)} FlowStone migration(s) to apply "
                    f"({', '.join(todo)}): run `flowstone db upgrade`"
                )
        return PostgresFlowStore(target.url, max_connections=max_connections), PostgresIOManager()

    # -- the queue ----------------------------------------------------------------------------

    def require_database_url(self) -> str:
        """The Postgres URL; the queue needs Postgres (not the memory store)."""
        if self.database_url is None:
            raise errors.ConfigurationError(
                "the durable queue needs Postgres: create FlowStone without store='memory'"
            )
        return self.database_url

    def queue_store(self) -> PostgresFlowStore:
        """The store, as the queue uses it (Postgres only)."""
        if not isinstance(self.store, PostgresFlowStore):
            raise errors.ConfigurationError(
                "the durable queue needs the Postgres store: create FlowStone without store='memory'"
            )
        return self.store

    def enqueuer(self) -> queue.Enqueuer:
        """Defers FlowStone jobs inside FlowStone's transactions."""
        if self._enqueuer is None:
            self._enqueuer = queue.Enqueuer(self.defs, self.require_database_url())
        return self._enqueuer

    @property
    def blueprint(self) -> procrastinate.Blueprint:
        """FlowStone's Procrastinate tasks; add them to your own App with
        ``app.add_tasks_from(runtime.blueprint, namespace="flowstone")``."""
        if self._blueprint is None:
            self._blueprint = queue.build_blueprint(
                self,
                recovery_interval_s=int(self._queue_options["recovery_interval_s"]),
                stalled_after_s=float(self._queue_options["stalled_after_s"]),
                automation_interval_s=int(self._queue_options["automation_interval_s"]),
            )
        return self._blueprint

    @property
    def procrastinate_app(self) -> procrastinate.App:
        """A ready ``procrastinate.App`` with FlowStone's tasks: expose it as ``app`` in your module
        and run ``procrastinate --app=mypkg.pipeline.app worker``."""
        if self._app is None:
            self._app = queue.build_app(
                self,
                pool_size=int(self._queue_options["worker_pool_size"]),
                worker_defaults={
                    "update_heartbeat_interval": self._queue_options["heartbeat_interval_s"],
                    "stalled_worker_timeout": self._queue_options["stalled_after_s"],
                },
            )
        return self._app

    def submit(
        self,
        selection: str | Iterable[str],
        partitions: Sequence[object] | None = None,
        *,
        with_upstream: bool = False,
        run_config: Mapping[str, Any] | RunConfig | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> queue.RunHandle:
        """Enqueue a run of ``selection`` (for each of ``partitions``) and return at once (I15).

        The run, its steps and the jobs of its ready steps are written in one transaction; workers
        run the steps, each enqueueing its downstream steps when they become ready.
        """
        config = self._config(run_config)
        names = selection if isinstance(selection, str) else list(selection)
        return queue.submit(self, names, partitions, with_upstream=with_upstream, config=config, tags=tags)

    def backfill(
        self,
        asset: str,
        partitions: Sequence[object] | None = None,
        *,
        start: object = None,
        end: object = None,
        force: bool = False,
        partitions_per_job: int = 1,
        run_config: Mapping[str, Any] | RunConfig | None = None,
        progress: Progress | None = None,
    ) -> queue.RunHandle:
        """Enqueue the missing partitions of ``asset`` (all, a list, or ``start``..``end``
        inclusive) and return at once; partitions whose latest is succeeded are skipped unless
        ``force``. ``partitions_per_job`` partitions share one job (each recorded on its own)."""
        definition = self.defs.get(asset)
        if definition.partitions is None:
            raise errors.InvalidPartitionError(f"asset {asset!r} is not partitioned", asset=asset)
        values = self._backfill_values(definition, partitions, start, end)
        return queue.backfill(
            self,
            asset,
            values,
            force=force,
            partitions_per_job=partitions_per_job,
            config=self._config(run_config),
            progress=progress,
        )

    def run(self, run_id: str) -> queue.RunHandle:
        """A handle on an existing run (e.g. from another process)."""
        handle = queue.RunHandle(self, run_id)
        handle.run()  # raises if it does not exist
        return handle

    def run_config(self, run_config: Mapping[str, Any] | RunConfig | None) -> RunConfig:
        """Validate a run config (a mapping, a RunConfig or ``None``)."""
        return self._config(run_config)

    @staticmethod
    def _config(run_config: Mapping[str, Any] | RunConfig | None) -> RunConfig:
        if isinstance(run_config, RunConfig):
            return run_config
        return RunConfig.model_validate(run_config or {})

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release database connections."""
        self.store.close()

    def __enter__(self) -> FlowStone:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- running ------------------------------------------------------------------------------

    def _runner(self, after_store: execution.AfterStoreHook | None = None) -> execution.StepRunner:
        defer_timeout = self.enqueuer().defer_timeout if self.database_url is not None else None
        return execution.StepRunner(
            self.defs,
            self.store,
            self.io_managers,
            actor=self.actor,
            after_store=after_store,
            completion=execution.SyncCompletion(self.store, defer_timeout=defer_timeout),
        )

    def _run_plan(
        self,
        run_id: str,
        plan: planning.Plan,
        config: RunConfig,
        result: RunResult,
        *,
        runnable: set[tuple[str, str]] | None = None,
        blocked: set[tuple[str, str]] | None = None,
        after_store: execution.AfterStoreHook | None = None,
    ) -> RunResult:
        """Run the plan's steps in order in this process; a step that does not succeed blocks
        its descendants (failure: recorded ``skipped``; waiting for approval: left pending)."""
        runner = self._runner(after_store)
        blocked = set(blocked or ())
        with resources.ResourceScope(self.defs.resources, config.resources) as scope:
            for step in plan.steps:
                if step.key in blocked or (runnable is not None and step.key not in runnable):
                    continue
                outcome = runner.run_step(
                    run_id,
                    step.asset,
                    step.partition,
                    scope=scope,
                    skip_on_failure=functools.partial(plan.descendants, step.key),
                )
                if outcome.succeeded:
                    result.values[step.key] = outcome.value
                    continue
                blocked.update(plan.descendants(step.key))
                if outcome.waiting:
                    result.waiting.append(step.key)
                elif outcome.error is not None:
                    result.errors[step.key] = outcome.error
        finished = self.store.finish_run(run_id, actor=self.actor)
        run = finished or self.store.get_run(run_id)
        result.status = run.status if run else "running"
        result.steps = self.store.run_steps(run_id)
        return result

    def materialize(
        self,
        selection: str | Iterable[str],
        partition: object = None,
        *,
        with_upstream: bool = False,
        run_config: Mapping[str, Any] | RunConfig | None = None,
        tags: Mapping[str, str] | None = None,
        raise_on_error: bool = True,
        _after_store: execution.AfterStoreHook | None = None,
    ) -> RunResult:
        """Materialize ``selection`` now, in this process, under one new run id (I15).

        Steps run in topological order; the downstream of a failed step is ``skipped``. With
        ``raise_on_error`` the first error is raised after the run is recorded.
        """
        config = (
            run_config if isinstance(run_config, RunConfig) else RunConfig.model_validate(run_config or {})
        )
        plan = planning.build_plan(self.defs, selection, partition, with_upstream=with_upstream)
        resources.ResourceScope(self.defs.resources, config.resources)  # refuses unknown names now
        run_id = str(uuid.uuid4())
        self.store.create_run(
            records.NewRun(
                run_id=run_id,
                kind="materialize",
                selection=plan.selection,
                requested_by=self.actor,
                config=config.model_dump(mode="json", exclude_defaults=True),
                tags=dict(tags or {}),
            ),
            plan.planned({name: self.defs.get(name).code_version for name in self.defs}),
            edges=[(up, down) for down, ups in plan.upstream.items() for up in sorted(ups)],
        )
        result = RunResult(run_id=run_id, status="running", steps=[], key_of=self.partition_key)
        self._run_plan(run_id, plan, config, result, after_store=_after_store)
        if raise_on_error:
            result.unwrap()
        return result

    def resume(self, run_id: str, *, raise_on_error: bool = True) -> RunResult:
        """Continue an in-process run in this process: run its steps that are ready (approved
        steps, and what was waiting behind them), in order. Queued runs continue on workers."""
        run = self.store.get_run(run_id)
        if run is None:
            raise errors.FlowStoneError(f"run {run_id} does not exist", run_id=run_id)
        if run.kind != "materialize":
            raise errors.ConfigurationError(
                f"run {run_id} is a queued run ({run.kind}): workers continue it", run_id=run_id
            )
        rows = self.store.run_steps(run_id)
        order = {name: i for i, name in enumerate(self.defs.graph.topological_order())}
        rows.sort(key=lambda r: (order.get(r.asset, len(order)), r.partition_key))
        plan = planning.Plan(
            selection=run.selection,
            steps=[planning.Step(r.asset, r.partition, r.partition_key) for r in rows],
        )
        for up, down in self.store.step_edges(run_id):
            plan.upstream.setdefault(down, set()).add(up)
            plan.downstream.setdefault(up, set()).add(down)
        status = {(r.asset, r.partition_key): r.status for r in rows}
        runnable = {k for k, st in status.items() if st in ("pending", "queued")}
        blocked = {
            d
            for k, st in status.items()
            if st not in ("succeeded", "pending", "queued")
            for d in plan.descendants(k)
        }
        config = RunConfig.model_validate(run.config)
        result = RunResult(run_id=run_id, status=run.status, steps=[], key_of=self.partition_key)
        self._run_plan(run_id, plan, config, result, runnable=runnable, blocked=blocked)
        if raise_on_error:
            result.unwrap()
        return result

    def backfill_sync(
        self,
        asset: str,
        partitions: Sequence[object] | None = None,
        *,
        start: object = None,
        end: object = None,
        force: bool = False,
        max_workers: int = 1,
        run_config: Mapping[str, Any] | RunConfig | None = None,
        progress: Progress | None = None,
    ) -> BackfillResult:
        """Materialize the missing partitions of ``asset`` in this process (threads when
        ``max_workers > 1``). Partitions whose latest is succeeded are skipped unless ``force``."""
        definition = self.defs.get(asset)
        if definition.partitions is None:
            raise errors.InvalidPartitionError(f"asset {asset!r} is not partitioned", asset=asset)
        values = self._backfill_values(definition, partitions, start, end)
        keys = [partition_keys.encode(v) for v in values]
        done = set() if force else self.store.succeeded_keys(asset, keys)
        todo = [v for v, k in zip(values, keys, strict=True) if k not in done]
        if not todo:
            return BackfillResult(run_id=None, succeeded=0, failed=0, skipped=len(values))
        config = (
            run_config if isinstance(run_config, RunConfig) else RunConfig.model_validate(run_config or {})
        )
        run_id = str(uuid.uuid4())
        self.store.create_run(
            records.NewRun(
                run_id=run_id,
                kind="backfill",
                selection=(asset,),
                requested_by=self.actor,
                config=config.model_dump(mode="json", exclude_defaults=True),
                tags={"backfill": "sync"},
            ),
            [records.PlannedStep(asset, partition_keys.encode(v), 0, definition.code_version) for v in todo],
        )
        runner = self._runner()
        counts = {"succeeded": 0, "failed": 0}
        failures: dict[str, errors.FlowStoneError] = {}
        with resources.ResourceScope(self.defs.resources, config.resources) as scope:

            def one(value: partition_keys.PartitionValue | None) -> execution.StepOutcome:
                return runner.run_step(run_id, asset, value, scope=scope)

            workers = max(1, max_workers)
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                for finished, outcome in enumerate(pool.map(one, todo), start=1):
                    if outcome.succeeded:
                        counts["succeeded"] += 1
                    else:
                        counts["failed"] += 1
                        if outcome.error is not None and outcome.record is not None:
                            failures[outcome.record.partition_key] = outcome.error
                    if progress is not None:
                        progress(finished, len(todo))
        self.store.finish_run(run_id, actor=self.actor)
        return BackfillResult(
            run_id=run_id,
            succeeded=counts["succeeded"],
            failed=counts["failed"],
            skipped=len(values) - len(todo),
            errors=failures,
        )

    @staticmethod
    def _backfill_values(
        definition: definitions.AssetDef,
        partitions: Sequence[object] | None,
        start: object,
        end: object,
    ) -> list[partition_keys.PartitionValue]:
        assert definition.partitions is not None  # noqa: S101 - checked by the caller
        if partitions is not None:
            return [definition.partitions.validate(p, asset=definition.name) for p in partitions]
        if start is not None or end is not None:
            if start is None or end is None:
                raise errors.InvalidPartitionError(
                    "a backfill range needs both start and end (inclusive)", asset=definition.name
                )
            return definition.partitions.key_range(start, end, asset=definition.name)
        return definition.partitions.keys()

    # -- retention ----------------------------------------------------------------------------

    def gc(self, keep_last: int = 1, *, dry_run: bool = False) -> GcReport:
        """Delete output versions no longer referenced by the latest ``keep_last`` succeeded
        materializations of each asset and partition (Postgres and filesystem IO managers). The
        version ``latest()`` returns is never touched; runs still in flight are left alone."""
        candidates = self.store.gc_candidates(keep_last)
        deleted: dict[str, int] = {}
        skipped: list[str] = []
        postgres_ids: list[int] = []
        collected: list[int] = []
        for candidate in candidates:
            key = str(candidate.output_ref.get("manager", ""))
            manager = self.io_managers.get(key)  # a dict lookup of a stored name (I3)
            if manager is None:
                skipped.append(f"#{candidate.materialization_id}: IO manager {key!r} is not configured")
                continue
            if dry_run:
                deleted[key] = deleted.get(key, 0) + 1
            elif isinstance(manager, PostgresIOManager) and manager.mode == "rows":
                # A rows table holds only the latest output of a partition: older versions were
                # replaced when the newer one committed. Record them as collected.
                collected.append(candidate.materialization_id)
                deleted[key] = deleted.get(key, 0) + 1
            elif isinstance(manager, PostgresIOManager):
                postgres_ids.append(candidate.materialization_id)
            else:
                manager.delete(io_base.OutputRef.model_validate(candidate.output_ref))
                collected.append(candidate.materialization_id)
                deleted[key] = deleted.get(key, 0) + 1
        if postgres_ids:
            removed = set(self.store.delete_postgres_outputs(postgres_ids))
            collected.extend(sorted(removed))
            for candidate in candidates:
                if candidate.materialization_id in removed:
                    key = str(candidate.output_ref["manager"])
                    deleted[key] = deleted.get(key, 0) + 1
        self.store.mark_outputs_deleted(collected)  # one statement for the whole pass
        return GcReport(planned=len(candidates), deleted=deleted, skipped=skipped)

    # -- reading ------------------------------------------------------------------------------

    def partition_key(self, asset: str, partition: object = None) -> str:
        """The encoded key of ``partition`` for ``asset`` (validated against its definition)."""
        definition = self.defs.get(asset)
        if definition.partitions is None:
            if partition is not None:
                raise errors.InvalidPartitionError(
                    f"asset {asset!r} is not partitioned; do not pass a partition", asset=asset
                )
            return partition_keys.UNPARTITIONED
        if partition is None:
            raise errors.InvalidPartitionError(
                f"asset {asset!r} is partitioned by {definition.partitions.describe()}: pass partition=",
                asset=asset,
            )
        return partition_keys.encode(definition.partitions.validate(partition, asset=asset))

    def latest(self, asset: str, partition: object = None) -> records.Materialization | None:
        """The latest succeeded materialization of (asset, partition), or ``None`` (I8)."""
        return self.store.latest(asset, self.partition_key(asset, partition))

    def history(self, asset: str, partition: object = None, limit: int = 20) -> list[records.Materialization]:
        """Materializations of (asset, partition), newest first."""
        return self.store.history(asset, self.partition_key(asset, partition), limit=limit)

    def load(self, asset: str, partition: object = None) -> object:
        """The value of the latest succeeded materialization (read through its IO manager)."""
        key = self.partition_key(asset, partition)
        row = self.store.latest(asset, key)
        if row is not None and row.output_deleted_at is not None:  # pragma: no cover - gc keeps the latest
            raise errors.DependencyNotReadyError(
                f"{asset} [{key}]: its output was deleted by gc at {row.output_deleted_at}",
                asset=asset,
                partition=key,
            )
        if row is None or row.output_ref is None:
            raise errors.DependencyNotReadyError(
                f"{asset} [{key}] has no succeeded materialization", asset=asset, partition=key
            )
        definition = self.defs.get(asset)
        ref = io_base.OutputRef.model_validate(row.output_ref)
        manager = self.io_managers.get(ref.manager)
        if manager is None:
            raise errors.IOManagerError(
                f"output of {asset} [{key}] was written by IO manager {ref.manager!r}, which is not "
                "configured",
                asset=asset,
                partition=key,
                retryable=False,
            )
        return manager.load(
            io_base.InputContext(
                asset=asset,
                partition=row.partition,
                partition_key=key,
                ref=ref,
                type_hint=definition.return_type,
            )
        )
