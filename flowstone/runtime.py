"""The ``FlowStone`` runtime users hold: it decides the store once (I9), builds the services value
the lower layers receive, and runs things.

``materialize`` runs in the calling process and returns a :class:`RunResult` (I15);
``backfill_sync`` materializes many partitions of one asset in-process, optionally in threads;
``submit`` and ``backfill`` enqueue for workers and return a :class:`RunHandle`.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import procrastinate

from flowstone import approvals as approvals_mod
from flowstone import (
    audit_log,
    automation,
    capture,
    data_api,
    definitions,
    errors,
    execution,
    local,
    partition_keys,
    planning,
    retention,
    run_lifecycle,
    services,
    snapshot,
    startup,
    step_inputs,
    telemetry,
)
from flowstone import lineage as lineage_mod
from flowstone import prune as prune_mod
from flowstone import settings as settings_mod
from flowstone.io import base as io_base
from flowstone.io.memory import MemoryIOManager
from flowstone.io.postgres import PostgresIOManager
from flowstone.queue import client, worker
from flowstone.results import BackfillResult, GcReport, RunConfig, RunResult
from flowstone.retention_policy import Retention
from flowstone.status import RunKind, RunStatus, StepStatus
from flowstone.store import backend, records
from flowstone.store import base as store_base
from flowstone.store.memory import MemoryStore
from flowstone.store.postgres import PostgresStore

# the result types live in `results` (below `queue`) and stay importable from here
__all__ = ["BackfillResult", "FlowStone", "GcReport", "RunConfig", "RunResult"]

Progress = Callable[[int, int], None]

logger = logging.getLogger("flowstone")


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
        continuation_steps: int = 100,
        continuation_s: float = 10.0,
        publish_definitions: bool = True,
        retention: Retention | None = None,
        step_logs: capture.StepLogSettings | None = None,
    ) -> None:
        self.defs = defs
        env = settings_mod.Settings.from_env()
        self.settings = env.model_copy(update={"home": Path(home)}) if home is not None else env
        self.actor = actor or self.settings.resolved_actor()
        self.database_url: str | None = None
        self.database_created: Path | None = None
        """Where this runtime had to create a new embedded database (``None``: it did not)."""
        self.store, default_io = self._decide_store(database_url, store, max_connections)
        if isinstance(self.store, PostgresStore) and self.database_url is None:
            self.database_url = self.store.url
        self.io_managers: dict[str, io_base.IOManager] = {"default": default_io, **defs.io_managers}
        for key, manager in self.io_managers.items():
            if isinstance(manager, PostgresIOManager):
                if not isinstance(self.store, PostgresStore):
                    raise errors.ConfigurationError(
                        f"IO manager {key!r} is a PostgresIOManager, which needs the Postgres store "
                        "(not store='memory')"
                    )
                manager.bind(self.store.outputs)
                manager.validate_assets([a.name for a in defs.assets.values() if a.io_manager == key])
        automation.validate(defs)
        self.services = services.Services(
            defs=defs,
            store=self.store,
            io_managers=self.io_managers,
            actor=self.actor,
            jobs=client.Enqueuer(defs, self.database_url) if self.database_url is not None else None,
            options=services.QueueOptions(
                recovery_interval_s=recovery_interval_s,
                stalled_after_s=stalled_after_s,
                heartbeat_interval_s=heartbeat_interval_s,
                worker_pool_size=worker_pool_size,
                automation_interval_s=automation_interval_s,
                continuation_steps=continuation_steps,
                continuation_s=continuation_s,
                retention=retention,
            ),
            step_logs=step_logs or capture.StepLogSettings(),
        )
        self.lineage = lineage_mod.Lineage(defs, self.store)
        self.audit = audit_log.AuditLog(self.store, self.actor)
        self.check_results = data_api.CheckResults(self.store)
        self.partitions = data_api.Partitions(defs, self.store, self.actor)
        self.staleness = data_api.Staleness(defs, self.store)
        self.approvals = approvals_mod.Approvals(self.services)
        self.schedules = automation.Schedules(self.services)
        self.sensors = automation.Sensors(self.services)
        self._blueprint: procrastinate.Blueprint | None = None
        self._app: procrastinate.App | None = None
        if publish_definitions and isinstance(self.store, PostgresStore):
            snap = snapshot.build(defs)
            by = f"{self.actor}@{socket.gethostname()}:{os.getpid()}"
            store = self.store
            startup.through_blips(
                "publish the definitions", lambda: store.snapshots.publish(snap, published_by=by)
            )
            limits = {p.name: (p.limit, getattr(p, "period_s", None)) for p in defs.pools.values()}
            startup.through_blips("publish the pool limits", lambda: store.pools.publish(limits))
            startup.through_blips("create the audit log's months", store.pruning.audit_partitions)

    @classmethod
    def from_database(
        cls, *, database_url: str | None = None, home: str | Path | None = None, actor: str | None = None
    ) -> FlowStone:
        """A runtime for the definitions last published in the database (by any runtime that
        opened it), without importing the project's code: for reading, cancelling and deciding
        approvals. Running an asset from it raises a ``ConfigurationError`` asking for the code."""
        settings = settings_mod.Settings.from_env()
        if home is not None:
            settings = settings.model_copy(update={"home": Path(home)})
        target = startup.migrated(backend.resolve_database(database_url, settings=settings))
        published = startup.published(target.url)
        defs = snapshot.definitions_from(published.assets, published.automation)
        runtime = cls(defs, database_url=target.url, home=home, actor=actor, publish_definitions=False)
        runtime.database_created = target.created
        return runtime

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
        target = startup.migrated(backend.resolve_database(database_url, settings=self.settings))
        self.database_url = target.url
        self.database_created = target.created
        return PostgresStore(target.url, max_connections=max_connections), PostgresIOManager()

    # -- the queue ----------------------------------------------------------------------------

    def require_database_url(self) -> str:
        """The Postgres URL; the queue needs Postgres (not the memory store)."""
        if self.database_url is None:
            raise errors.ConfigurationError(
                "the durable queue needs Postgres: create FlowStone without store='memory'"
            )
        return self.database_url

    @property
    def blueprint(self) -> procrastinate.Blueprint:
        """FlowStone's Procrastinate tasks; add them to your own App with
        ``app.add_tasks_from(runtime.blueprint, namespace="flowstone")``."""
        if self._blueprint is None:
            self._blueprint = worker.build_blueprint(self.services)
        return self._blueprint

    @property
    def procrastinate_app(self) -> procrastinate.App:
        """A ready ``procrastinate.App`` with FlowStone's tasks: expose it as ``app`` in your module
        and run ``procrastinate --app=mypkg.pipeline.app worker``."""
        if self._app is None:
            self._app = worker.build_app(self.services, self.require_database_url(), self.blueprint)
        return self._app

    def submit(
        self,
        selection: str | Iterable[str],
        partitions: Sequence[object] | None = None,
        *,
        with_upstream: bool = False,
        run_config: Mapping[str, Any] | RunConfig | None = None,
        tags: Mapping[str, str] | None = None,
        priority: int | None = None,
        only_stale: bool = False,
    ) -> client.RunHandle:
        """Enqueue a run of ``selection`` (for each of ``partitions``) and return at once (I15).

        The run, its steps and the jobs of its ready steps are written in one transaction; workers
        run the steps, each enqueueing its downstream steps when they become ready. ``priority``
        (-999..999, added to each asset's) puts the run's jobs ahead of lower ones, e.g. a backfill;
        ``only_stale`` leaves out fresh steps (as in :meth:`materialize`)."""
        names = selection if isinstance(selection, str) else list(selection)
        return client.submit(
            self.services,
            names,
            partitions,
            with_upstream=with_upstream,
            config=RunConfig.coerce(run_config).with_priority(priority),
            tags=tags,
            only_stale=only_stale,
        )

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
        priority: int | None = None,
    ) -> client.RunHandle:
        """Enqueue the missing partitions of ``asset`` (all, a list, or ``start``..``end``
        inclusive) and return at once; partitions whose latest is succeeded are skipped unless
        ``force``. ``partitions_per_job`` partitions share one job (each recorded on its own)."""
        values = self.backfill_partitions(asset, partitions, start, end)
        return client.backfill(
            self.services,
            asset,
            values,
            force=force,
            partitions_per_job=partitions_per_job,
            config=RunConfig.coerce(run_config).with_priority(priority),
            progress=progress,
        )

    def retry(self, run_id: str, *, from_asset: str | None = None) -> client.RunHandle:
        """Run a queued run's failed, skipped, cancelled and rejected steps again in the same run
        (a new attempt; succeeded steps are kept), or with ``from_asset`` that asset's steps and
        everything downstream of them as a new run tagged ``retry_of``."""
        return client.retry(self.services, run_id, from_asset=from_asset)

    def run(self, run_id: str) -> client.RunHandle:
        """A handle on an existing run (e.g. from another process)."""
        handle = client.RunHandle(self.services, run_id)
        handle.run()  # raises if it does not exist
        return handle

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release database connections."""
        self.store.close()

    def __enter__(self) -> FlowStone:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- running in this process ------------------------------------------------------------------

    def materialize(
        self,
        selection: str | Iterable[str],
        partition: object = None,
        *,
        with_upstream: bool = False,
        run_config: Mapping[str, Any] | RunConfig | None = None,
        tags: Mapping[str, str] | None = None,
        raise_on_error: bool = True,
        only_stale: bool = False,
        _after_store: execution.AfterStoreHook | None = None,
    ) -> RunResult:
        """Materialize ``selection`` now, in this process, under one new run id (I15).

        Steps run in topological order; the downstream of a failed step is ``skipped``. With
        ``raise_on_error`` the first error is raised after the run is recorded. ``only_stale``:
        leave out the fresh steps (``runtime.staleness``) with nothing upstream of them run."""
        config = RunConfig.coerce(run_config)
        plan = planning.build_plan(self.defs, selection, partition, with_upstream=with_upstream)
        plan = data_api.stale_plan(self.defs, self.store, plan) if only_stale else plan
        run_id = run_lifecycle.create_run(
            self.services, plan, kind=RunKind.MATERIALIZE, config=config, tags=tags
        )
        result = RunResult(run_id=run_id, status=RunStatus.RUNNING, steps=[], key_of=self.partition_key)
        order = {step.key: i for i, step in enumerate(plan.steps)}
        executor = local.LocalExecutor(self.services, after_store=_after_store)
        executor.run(run_id, plan.ready(), order=order, config=config, result=result)
        if raise_on_error:
            result.unwrap()
        return result

    def resume(self, run_id: str, *, raise_on_error: bool = True) -> RunResult:
        """Continue an in-process run in this process: run its steps that are ready (approved
        steps, and what was waiting behind them), in order, and the steps of a run whose process
        died (``RunAbandonedError``) again. Queued runs continue on workers."""
        run = self.store.get_run(run_id)
        if run is None:
            raise errors.FlowStoneError(f"run {run_id} does not exist", run_id=run_id)
        if run.kind != RunKind.MATERIALIZE and run.tags.get("backfill") != "sync":
            raise errors.ConfigurationError(
                f"run {run_id} is a queued run ({run.kind}): workers continue it", run_id=run_id
            )
        position = {name: i for i, name in enumerate(self.defs.graph.topological_order())}
        order: dict[tuple[str, str], int] = {}

        def ready() -> list[tuple[str, str]]:
            # Once this process owns the run: steps a dead process left behind run again.
            if isinstance(self.store, PostgresStore):
                self.store.reopen_run(
                    run_id,
                    statuses=[StepStatus.FAILED],
                    error_type=errors.RunAbandonedError.__name__,
                    jobs=None,
                    actor=self.actor,
                )
            rows = self.store.run_steps(run_id)
            rows.sort(key=lambda r: (position.get(r.asset, len(position)), r.partition_key))
            order.update({(r.asset, r.partition_key): i for i, r in enumerate(rows)})
            return [
                (r.asset, r.partition_key)
                for r in rows
                if r.status == StepStatus.QUEUED
                or (r.status == StepStatus.PENDING and r.pending_upstream == 0)
            ]

        result = RunResult(run_id=run_id, status=run.status, steps=[], key_of=self.partition_key)
        executor = local.LocalExecutor(self.services)
        executor.run(run_id, ready, order=order, config=RunConfig.model_validate(run.config), result=result)
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
        values = self.backfill_partitions(asset, partitions, start, end)
        keys = list(dict.fromkeys(partition_keys.encode(v) for v in values))
        done = set() if force else self.store.succeeded_keys(asset, keys)
        todo = [(asset, k) for k in keys if k not in done]
        if not todo:
            return BackfillResult(run_id=None, succeeded=0, failed=0, skipped=len(values))
        config = RunConfig.coerce(run_config)
        run_id = str(uuid.uuid4())
        config = config.model_copy(
            update={"trace": telemetry.run_created(run_id, kind="backfill", selection=[asset])}
        )
        self.store.create_run(
            records.NewRun(
                run_id=run_id,
                kind=RunKind.BACKFILL,
                selection=(asset,),
                requested_by=self.actor,
                config=config.model_dump(mode="json", exclude_defaults=True),
                tags={"backfill": "sync"},
            ),
            [records.PlannedStep(asset, key, 0, definition.code_version) for _, key in todo],
        )
        outcomes = local.LocalExecutor(self.services).run_parallel(
            run_id, todo, config=config, max_workers=max_workers, progress=progress
        )
        failures = {
            key: o.error for (_, key), o in outcomes.items() if not o.succeeded and o.error is not None
        }
        succeeded = sum(o.succeeded for o in outcomes.values())
        waiting = sum(o.waiting for o in outcomes.values())
        return BackfillResult(
            run_id=run_id,
            succeeded=succeeded,
            failed=len(todo) - succeeded - waiting,
            skipped=len(values) - len(todo),
            errors=failures,
            waiting=waiting,
        )

    def backfill_partitions(
        self, asset: str, partitions: Sequence[object] | None, start: object, end: object
    ) -> list[partition_keys.PartitionValue]:
        """The partitions a backfill of ``asset`` covers: ``partitions``, the ``start``..``end``
        range (inclusive), or every partition of its definition."""
        definition = self.defs.get(asset)
        if definition.partitions is None:
            raise errors.InvalidPartitionError(f"asset {asset!r} is not partitioned", asset=asset)
        if partitions is not None:
            return [definition.partitions.validate(p, asset=asset) for p in partitions]
        if start is not None or end is not None:
            if start is None or end is None:
                raise errors.InvalidPartitionError(
                    "a backfill range needs both start and end (inclusive)", asset=asset
                )
            return definition.partitions.key_range(start, end, asset=asset)
        return definition.partitions.keys()

    # -- retention ----------------------------------------------------------------------------

    def prune(self, policy: Retention | None = None, *, dry_run: bool = False) -> prune_mod.PruneReport:
        """Apply ``policy`` (default: the runtime's ``retention=``): see :mod:`flowstone.prune`."""
        chosen = policy or self.services.options.retention
        if chosen is None:
            raise errors.ConfigurationError(
                "no retention policy: pass FlowStone(retention=fs.Retention(...))"
            )
        return prune_mod.prune(self.services, chosen, dry_run=dry_run)

    def gc(self, keep_last: int = 1, *, dry_run: bool = False) -> GcReport:
        """Delete output versions no longer referenced by the latest ``keep_last`` succeeded
        materializations of each asset and partition (Postgres and filesystem IO managers). The
        version ``latest()`` returns is never touched; runs still in flight are left alone."""
        return retention.gc(self.services, keep_last, dry_run=dry_run)

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

    def logs(self, run_id: str, asset: str | None = None, partition: object = None) -> list[records.StepLog]:
        """The stored step logs of a run (of one asset, one partition), in step, attempt, line order."""
        if partition is not None and asset is None:
            raise errors.ConfigurationError("logs: a partition needs its asset (asset=...)")
        key = self.partition_key(asset, partition) if asset is not None and partition is not None else None
        return self.store.logs.read(run_id, asset=asset, partition_key=key)

    def latest(self, asset: str, partition: object = None) -> records.Materialization | None:
        """The latest succeeded materialization of (asset, partition), or ``None`` (I8)."""
        return self.store.latest(asset, self.partition_key(asset, partition))

    def history(self, asset: str, partition: object = None, limit: int = 20) -> list[records.Materialization]:
        """Materializations of (asset, partition), newest first."""
        return self.store.history(asset, self.partition_key(asset, partition), limit=limit)

    def load(self, asset: str, partition: object = None) -> object:
        """The value of the latest succeeded materialization (read through its IO manager)."""
        key = self.partition_key(asset, partition)
        return step_inputs.load_latest(
            self.defs.get(asset), self.store.latest(asset, key), key, self.io_managers
        )
