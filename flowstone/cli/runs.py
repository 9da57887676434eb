"""``flowstone materialize|submit|backfill|runs|worker``: run assets, in this process or queued."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any

from flowstone import errors
from flowstone.cli import common, logs
from flowstone.queue import client, jobs, process
from flowstone.status import RunStatus
from flowstone.store import records


def _cmd_materialize(args: argparse.Namespace) -> int:
    with common.open_runtime(args) as rt:
        selected = rt.defs.graph.select(args.selection)
        result = rt.materialize(
            args.selection,
            common.partition(rt.defs, selected, args.partition),
            with_upstream=args.with_upstream,
            raise_on_error=False,
        )
        for step in result.steps:
            common.out(f"{step.status:<10} {step.asset} [{step.partition_key}] #{step.id}")
        for error in result.errors.values():
            common.err(f"error: {error}")
        common.out(f"run {result.run_id}: {result.status}")
        return 0 if result.success else 1


def _wait_for(handle: client.RunHandle, *, quiet: bool, timeout: float | None) -> int:
    """Show a run's progress until it is terminal; exit status 0 only if it succeeded."""
    bar = None if quiet else common.ProgressBar(f"run {handle.run_id[:8]}")

    def show(run: records.Run, counts: Mapping[str, int]) -> None:
        del run
        total = sum(counts.values())
        if bar is not None and total:
            bar(client.finished_steps(counts), total)

    try:
        run = handle.wait(timeout, poll_interval_s=0.25, progress=show)
    except TimeoutError:
        common.err(f"run {handle.run_id} is still {handle.run().status} after {timeout}s (it goes on)")
        return 1
    counts = handle.status()
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    common.out(f"run {handle.run_id}: {run.status} ({summary or 'no steps'})")
    return 0 if run.status == RunStatus.SUCCEEDED else 1


def _cmd_submit(args: argparse.Namespace) -> int:
    with common.open_runtime(args) as rt:
        selected = rt.defs.graph.select(args.selection)
        partitions = (
            [common.partition(rt.defs, selected, p) for p in args.partition] if args.partition else None
        )
        handle = rt.submit(args.selection, partitions, with_upstream=args.with_upstream)
        common.out(f"submitted run {handle.run_id}: {handle.status()}")
        if not args.wait:
            return 0
        return _wait_for(handle, quiet=args.quiet, timeout=args.timeout)


def _cmd_backfill(args: argparse.Namespace) -> int:
    with common.open_runtime(args) as rt:
        definition = rt.defs.get(args.asset)
        if definition.partitions is None:
            raise errors.InvalidPartitionError(f"asset {args.asset!r} is not partitioned", asset=args.asset)

        def parse(text: str) -> object:
            assert definition.partitions is not None  # noqa: S101 - checked above
            return definition.partitions.parse(text, asset=args.asset)

        partitions = [parse(p) for p in args.partition] if args.partition else None
        start = parse(args.start) if args.start else None
        end = parse(args.end) if args.end else None
        if args.sync:
            result = rt.backfill_sync(
                args.asset,
                partitions,
                start=start,
                end=end,
                force=args.force,
                max_workers=args.max_workers,
                progress=None if args.quiet else common.ProgressBar(f"backfill {args.asset}"),
            )
            for key, error in result.errors.items():
                common.err(f"failed {key}: {error.message}")
            common.out(
                f"backfill {args.asset}: {result.succeeded} succeeded, {result.failed} failed, "
                f"{result.skipped} skipped (already succeeded)"
            )
            return 0 if result.failed == 0 else 1
        handle = rt.backfill(
            args.asset,
            partitions,
            start=start,
            end=end,
            force=args.force,
            partitions_per_job=args.partitions_per_job,
            progress=None if args.quiet else common.ProgressBar(f"enqueue {args.asset}"),
        )
        common.out(
            f"backfill {args.asset}: run {handle.run_id}, {sum(handle.status().values())} partition(s) queued"
        )
        if args.no_wait:
            return 0
        return _wait_for(handle, quiet=args.quiet, timeout=args.timeout)


def _cmd_runs(args: argparse.Namespace) -> int:
    with common.open_reader(args) as rt:
        common.out(f"{'RUN':<36}  {'KIND':<11} {'STATUS':<16} {'CREATED (UTC)':<19}  STEPS")
        for run in rt.store.list_runs(limit=args.limit):
            counts = rt.store.step_counts(run.run_id)
            steps = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            created = run.created_at.strftime("%Y-%m-%d %H:%M:%S")
            common.out(f"{run.run_id:<36}  {run.kind:<11} {run.status:<16} {created:<19}  {steps}")
        return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    logs.configure_worker_logging(args.log_level, args.log_format)
    runtime = common.open_runtime(args)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    if queues is not None and jobs.DEFAULT_QUEUE not in queues:
        common.err(
            f"warning: this worker does not take queue {jobs.DEFAULT_QUEUE!r}, where FlowStone's "
            "recovery, approval-timeout and schedule tasks run: make sure another worker does"
        )
    common.err(
        f"flowstone worker: queues={','.join(queues) if queues else 'all'} "
        f"concurrency={args.concurrency}{' one-shot' if args.one_shot else ''}"
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
    mat.set_defaults(handler=_cmd_materialize)

    back = commands.add_parser("backfill", help="materialize missing partitions of an asset")
    common.add_common(back)
    back.add_argument("asset")
    back.add_argument("--start", default=None, help="first partition (inclusive)")
    back.add_argument("--end", default=None, help="last partition (inclusive)")
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
    sub.add_argument("--with-upstream", action="store_true", help="also run upstream assets")
    sub.add_argument("--wait", action="store_true", help="show progress until the run is done")
    sub.add_argument("--timeout", type=float, default=None, help="stop waiting after N seconds")
    sub.add_argument("--quiet", action="store_true", help="no progress display")
    sub.set_defaults(handler=_cmd_submit)

    runs = commands.add_parser("runs", help="the newest runs with their step counts")
    common.add_common(runs)
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(handler=_cmd_runs)

    worker = commands.add_parser("worker", help="run a queue worker (Procrastinate) for the definitions")
    common.add_common(worker)
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once (threads)")
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
    logs.add_log_format_option(worker)
    worker.set_defaults(handler=_cmd_worker)
