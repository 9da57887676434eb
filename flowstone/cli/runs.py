"""``flowstone materialize|submit|backfill|runs|worker``: run assets, in this process or queued."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from flowstone import errors, partition_keys, planning, services, startup
from flowstone import runtime as runtime_mod
from flowstone.cli import common, logs, waiting
from flowstone.queue import client, jobs, process
from flowstone.store.postgres import PostgresStore


def _cmd_materialize(args: argparse.Namespace) -> int:
    with common.open_runtime(args) as rt:
        selected = rt.defs.graph.select(args.selection)
        result = rt.materialize(
            args.selection,
            common.partition(rt.defs, selected, args.partition),
            with_upstream=args.with_upstream,
            raise_on_error=False,
            only_stale=args.stale,
        )
        for step in result.steps:
            common.out(f"{step.status:<10} {step.asset} [{common.shown(step.partition_key)}] #{step.id}")
        for error in result.errors.values():
            common.err(f"error: {error.describe()}")
        common.out(f"run {result.run_id}: {result.status}")
        return 0 if result.success else 1


def _wait(rt: runtime_mod.FlowStone, handle: client.RunHandle, args: argparse.Namespace) -> int:
    store = rt.store
    assert isinstance(store, PostgresStore)  # noqa: S101 - queued runs need Postgres
    return waiting.wait_for(
        handle, store, quiet=args.quiet, timeout=args.timeout, queues=waiting.queues_of(rt, handle)
    )


def _cmd_submit(args: argparse.Namespace) -> int:
    with common.open_runtime(args) as rt:
        selected = rt.defs.graph.select(args.selection)
        partitions = (
            [common.partition(rt.defs, selected, p) for p in args.partition] if args.partition else None
        )
        handle = rt.submit(
            args.selection,
            partitions,
            with_upstream=args.with_upstream,
            priority=args.priority,
            only_stale=args.stale,
        )
        common.out(f"submitted run {handle.run_id}: {handle.status()}")
        if not args.wait:
            return 0
        return _wait(rt, handle, args)


def _backfill_values(rt: runtime_mod.FlowStone, args: argparse.Namespace, asset: str) -> list[Any]:
    """The partitions a backfill covers, parsed from the command line (``--all`` for every one)."""
    definition = rt.defs.get(asset).partitions
    assert definition is not None  # noqa: S101 - the caller picked a partitioned asset

    def parse(text: str) -> object:
        assert definition is not None  # noqa: S101 - see above
        return definition.parse(text, asset=asset)

    if args.partition:
        return rt.backfill_partitions(asset, [parse(p) for p in args.partition], None, None)
    if args.start is None and args.end is None:
        every = rt.backfill_partitions(asset, None, None, None)
        if not args.all:
            raise errors.ConfigurationError(
                f"no range given: that would backfill every partition of {asset!r} ({len(every)} "
                "partitions); pass --start and --end (or --partition), or --all to mean it"
            )
        return every
    if args.start is None or args.end is None:
        raise errors.ConfigurationError("a backfill range needs both --start and --end (inclusive)")
    return rt.backfill_partitions(asset, None, parse(args.start), parse(args.end))


def _cmd_backfill(args: argparse.Namespace) -> int:
    with common.open_runtime(args) as rt:
        selected = rt.defs.graph.select(args.selection)
        partitioned = [a for a in selected if rt.defs.get(a).partitions is not None]
        if not partitioned:
            names = ", ".join(repr(a) for a in selected)
            raise errors.InvalidPartitionError(
                f"asset {names} is not partitioned"
                if len(selected) == 1
                else f"assets {names} are not partitioned",
                asset=selected[0] if len(selected) == 1 else None,
            )
        if len({id(rt.defs.get(a).partitions) for a in partitioned}) > 1:
            raise errors.ConfigurationError(
                f"assets {', '.join(partitioned)} have different partitions: backfill them one by one "
                "(or select one and use --with-upstream)"
            )
        values = _backfill_values(rt, args, partitioned[0])
        one = len(selected) == 1 and not args.with_upstream
        if args.dry_run:
            return _dry_run(rt, args, selected, values)
        if args.sync:
            if not one:
                raise errors.ConfigurationError(
                    "--sync backfills one asset: select one, without --with-upstream"
                )
            return _backfill_sync(rt, args, selected[0], values)
        if one:
            handle = rt.backfill(
                selected[0],
                values,
                force=args.force,
                partitions_per_job=args.partitions_per_job,
                progress=None if args.quiet else common.ProgressBar(f"enqueue {selected[0]}"),
            )
            label = selected[0]
        else:
            if not args.force:
                values = _not_done(rt, partitioned, values)
            handle = rt.submit(
                selected, values, with_upstream=args.with_upstream, tags={"backfill": "pipeline"}
            )
            label = ", ".join(selected)
        common.out(f"backfill {label}: run {handle.run_id}, {sum(handle.status().values())} step(s) planned")
        if args.no_wait:
            return 0
        return _wait(rt, handle, args)


def _not_done(rt: runtime_mod.FlowStone, assets: list[str], values: list[Any]) -> list[Any]:
    """The partitions some of ``assets`` has not succeeded for."""
    keys = {partition_keys.encode(v): v for v in values}
    done = set(keys)
    for asset in assets:
        done &= rt.store.succeeded_keys(asset, list(keys))
    return [v for k, v in keys.items() if k not in done]


def _dry_run(
    rt: runtime_mod.FlowStone, args: argparse.Namespace, selected: list[str], values: list[Any]
) -> int:
    plan = planning.build_plan(rt.defs, selected, partitions=values, with_upstream=args.with_upstream)
    by_asset: dict[str, list[str]] = {}
    for step in plan.steps:
        by_asset.setdefault(step.asset, []).append(step.partition_key)
    common.out(f"plan: {len(plan.steps)} step(s) in one run, in dependency order (nothing was enqueued)")
    for asset, keys in by_asset.items():
        span = (
            common.shown(keys[0])
            if len(keys) == 1
            else f"{common.shown(keys[0])} .. {common.shown(keys[-1])}"
        )
        common.out(f"  {asset:<24} {len(keys):>7} partition(s)  {span}")
    return 0


def _backfill_sync(rt: runtime_mod.FlowStone, args: argparse.Namespace, asset: str, values: list[Any]) -> int:
    result = rt.backfill_sync(
        asset,
        values,
        force=args.force,
        max_workers=args.max_workers,
        progress=None if args.quiet else common.ProgressBar(f"backfill {asset}"),
    )
    for key, error in result.errors.items():
        common.err(f"failed {common.shown(key)}: {error.message}")
    common.out(
        f"backfill {asset}: {result.succeeded} succeeded, {result.failed} failed, "
        f"{result.skipped} skipped (already succeeded)"
    )
    return 0 if result.failed == 0 else 1


OUTAGE_TIMEOUT_S = services.QueueOptions().outage_timeout_s

LIFECYCLE = frozenset({"start_worker", "stopping_worker", "stop_worker"})
"""The ``action`` of Procrastinate's log records a worker shows at its default level."""


class _WorkerLog(logging.Filter):
    """The worker's log at the default level: no line per idle tick or periodic task, a failed
    step once (FlowStone's line, not Procrastinate's again) and tracebacks only with --verbose."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        if record.name.startswith("procrastinate") and not self.verbose:
            if isinstance(failure, jobs.StepFailed | jobs.RetryStep):
                return False  # FlowStone logged the step's failure (or retry) already
            # Procrastinate logs every job and periodic tick at INFO; keep its worker lifecycle.
            if record.levelno < logging.WARNING and getattr(record, "action", None) not in LIFECYCLE:
                return False
        if record.exc_info and not self.verbose:
            record.msg = (
                f"{record.getMessage()} ({type(failure).__name__}: {failure}; --verbose shows the traceback)"
            )
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _worker_logging(level_name: str, verbose: bool, log_format: str) -> None:
    """Log to stderr at ``level_name``, as text or JSON, through the default-level filter."""
    logs.configure_worker_logging(level_name, log_format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerLog(verbose or level_name == "debug"))


def _cmd_worker(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise errors.ConfigurationError(f"--concurrency must be at least 1, got {args.concurrency}")
    loops = process.default_fetch_loops(args.concurrency) if args.fetch_loops is None else args.fetch_loops
    if not 1 <= loops <= args.concurrency:
        raise errors.ConfigurationError(
            f"--fetch-loops must be between 1 and --concurrency ({args.concurrency}), got {loops}"
        )
    _worker_logging(args.log_level, args.verbose, args.log_format)
    # Started during an outage (a supervisor restarting it): wait for the database at start-up
    # as long as for an outage later.
    startup.patience(args.outage_timeout if args.outage_timeout is not None else OUTAGE_TIMEOUT_S)
    runtime = common.open_runtime(args)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    if queues is not None and jobs.DEFAULT_QUEUE not in queues:
        common.err(
            f"warning: this worker does not take queue {jobs.DEFAULT_QUEUE!r}, where FlowStone's "
            "recovery, approval-timeout and schedule tasks run: make sure another worker does"
        )
    common.err(
        f"flowstone worker: queues={','.join(queues) if queues else 'all'} "
        f"concurrency={args.concurrency} fetch-loops={loops}{' one-shot' if args.one_shot else ''}"
    )
    svc = runtime.services
    if args.outage_timeout is not None:
        svc = dataclasses.replace(
            svc, options=dataclasses.replace(svc.options, outage_timeout_s=args.outage_timeout)
        )
    try:
        return process.run(
            svc,
            runtime.procrastinate_app,
            runtime.require_database_url(),
            queues=queues,
            concurrency=args.concurrency,
            wait=not args.one_shot,
            name=args.name,
            fetch_loops=loops,
        )
    finally:
        runtime.close()


def add_commands(commands: Any) -> None:
    """Add ``materialize``, ``backfill``, ``submit``, ``runs`` and ``worker``."""
    mat = commands.add_parser("materialize", help="materialize assets now, in this process")
    common.add_common(mat)
    mat.add_argument("selection", nargs="+", help='assets or selections ("+report", "numbers+", "*")')
    mat.add_argument("--partition", default=None, help="partition, e.g. 2025-01-01")
    mat.add_argument("--with-upstream", action="store_true", help="also materialize upstream assets")
    mat.add_argument("--stale", action="store_true", help="only what is stale or missing (and downstream)")
    mat.set_defaults(handler=_cmd_materialize)

    back = commands.add_parser(
        "backfill",
        help="materialize missing partitions of assets (one run for several, in dependency order)",
        description="Materialize the partitions of the selected assets that have not succeeded (all of "
        "them with --force): one asset in bulk jobs, several as one run in dependency order.",
        epilog="example: flowstone backfill raw_orders daily_kpis --start 2025-01-01 --end 2025-01-31 --wait",
    )
    common.add_common(back)
    back.add_argument("selection", nargs="+", help='assets or selections ("daily_kpis", "+daily_kpis")')
    back.add_argument("--start", default=None, help="first partition (inclusive)")
    back.add_argument("--end", default=None, help="last partition (inclusive)")
    back.add_argument("--all", action="store_true", help="every partition (needed when no range is given)")
    back.add_argument("--with-upstream", action="store_true", help="also backfill the upstream assets")
    back.add_argument("--dry-run", action="store_true", help="print the plan; enqueue nothing")
    back.add_argument("--wait", action="store_true", help="show progress until the run ends (the default)")
    back.add_argument("--partition", action="append", default=[], help="a partition (repeatable)")
    back.add_argument("--force", action="store_true", help="also redo partitions that succeeded")
    back.add_argument("--partitions-per-job", type=int, default=1, help="partitions one job runs (queued)")
    back.add_argument("--no-wait", action="store_true", help="enqueue and exit (queued)")
    back.add_argument("--timeout", type=float, default=None, help="stop waiting after N seconds")
    back.add_argument("--sync", action="store_true", help="run in this process instead of the queue")
    back.add_argument("--max-workers", type=int, default=1, help="threads for --sync (default 1)")
    back.add_argument("--quiet", action="store_true", help="no progress display")
    back.set_defaults(handler=_cmd_backfill)

    sub = commands.add_parser("submit", help="enqueue a run for workers to execute")
    common.add_common(sub)
    sub.add_argument("selection", nargs="+", help='assets or selections ("+report", "numbers+", "*")')
    sub.add_argument("--partition", action="append", default=[], help="a partition (repeatable)")
    sub.add_argument("--stale", action="store_true", help="only what is stale or missing (and downstream)")
    sub.add_argument("--with-upstream", action="store_true", help="also run upstream assets")
    sub.add_argument("--wait", action="store_true", help="show progress until the run is done")
    sub.add_argument(
        "--priority", type=int, default=None, help="-999..999, added to each asset's: higher runs first"
    )
    sub.add_argument("--timeout", type=float, default=None, help="stop waiting after N seconds")
    sub.add_argument("--quiet", action="store_true", help="no progress display")
    sub.set_defaults(handler=_cmd_submit)

    worker = commands.add_parser("worker", help="run a queue worker (Procrastinate) for the definitions")
    common.add_common(worker)
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once (threads)")
    worker.add_argument(
        "--fetch-loops",
        type=int,
        default=None,
        help="Procrastinate fetch loops sharing the concurrency (default: 2 from a concurrency of 4, else 1)",
    )
    worker.add_argument("--queues", default=None, help="comma-separated queues (default: all)")
    worker.add_argument("--name", default="flowstone-worker", help="worker name (in logs)")
    worker.add_argument("--one-shot", action="store_true", help="exit when no job is left")
    worker.add_argument(
        "--outage-timeout",
        type=float,
        default=None,
        help="seconds to wait for the database during an outage before exiting with status 3 (default 600)",
    )
    worker.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log level"
    )
    worker.add_argument(
        "--verbose", action="store_true", help="also Procrastinate's per-job lines and full tracebacks"
    )
    logs.add_log_format_option(worker)
    worker.set_defaults(handler=_cmd_worker)
