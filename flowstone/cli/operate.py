"""``flowstone runs|run|cancel|retry``: find runs, read one, stop one, run what failed again. They
need only the database (``--defs`` is optional: the published definitions are used)."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flowstone import errors
from flowstone import runtime as runtime_mod
from flowstone.cli import common, waiting
from flowstone.status import RUN_TERMINAL, RunStatus, StepStatus
from flowstone.store import records
from flowstone.store.postgres import PostgresStore

RUN_STATUSES = [s.value for s in RunStatus]


def _store(rt: runtime_mod.FlowStone) -> PostgresStore:
    if not isinstance(rt.store, PostgresStore):  # pragma: no cover - the CLI always opens Postgres
        raise errors.ConfigurationError("the operator commands need the Postgres store")
    return rt.store


def _since(text: str | None) -> datetime | None:
    """``--since``: an ISO date or timestamp (UTC unless it names a zone), or ``2h``/``3d``/``30m``."""
    if text is None:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            raise errors.ConfigurationError(
                f"--since takes a date (2025-01-01), a timestamp (2025-01-01T10:00) or an age (30m, 2h, 3d), "
                f"got {text!r}"
            ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no steps"


def _cmd_runs(args: argparse.Namespace) -> int:
    since = _since(args.since)
    with common.open_reader(args) as rt:
        store = _store(rt)
        if args.asset is not None:
            rt.defs.get(args.asset)  # an unknown name: a clear error

        def draw() -> bool:
            rows = store.reports.runs(limit=args.limit, status=args.status, asset=args.asset, since=since)
            common.out(f"{'RUN':<36}  {'KIND':<11} {'STATUS':<16} {'CREATED (UTC)':<19}  STEPS")
            for row in rows:
                run = row.run
                created = common.when(run.created_at)
                common.out(
                    f"{run.run_id:<36}  {run.kind:<11} {run.status:<16} {created:<19}  {_counts(row.counts)}"
                )
            if not rows:
                common.out("(no runs match)")
            return False

        return waiting.watch(args.watch, draw)


def _duration(step: records.Materialization) -> str:
    if step.duration_ms is not None:
        return f"{step.duration_ms / 1000:.2f}s"
    return "-"


def _next_steps(
    run: records.Run, steps: list[records.Materialization], approvals: list[records.Approval]
) -> list[str]:
    pending = [a for a in approvals if a.status == "pending"]
    hints = [
        f"approve or reject: flowstone approvals approve {a.id}  (or: reject {a.id} --reason ...)"
        for a in pending
    ]
    failed = [s for s in steps if s.status in (StepStatus.FAILED, StepStatus.REJECTED)]
    if run.status in RUN_TERMINAL and failed:
        hints.append(f"fix the cause, then run what failed again: flowstone retry {run.run_id}")
    if run.status not in RUN_TERMINAL and not pending:
        hints.append(
            f"still going: flowstone run {run.run_id} --watch  (stop it: flowstone cancel {run.run_id})"
        )
    return hints


def _show_run(rt: runtime_mod.FlowStone, run_id: str, limit: int) -> records.Run:
    store = _store(rt)
    handle = rt.run(run_id)
    run = handle.run()
    steps = handle.steps()
    approvals = store.reports.run_approvals(run_id)
    counts: dict[str, int] = {}
    for step in steps:
        counts[step.status] = counts.get(step.status, 0) + 1
    common.out(f"run {run.run_id}: {run.status}")
    common.out(f"  kind      {run.kind}  selection {', '.join(run.selection)}")
    common.out(
        f"  requested by {run.requested_by} at {common.when(run.created_at)}, "
        f"finished {common.when(run.finished_at)}"
    )
    if run.tags:
        common.out(f"  tags      {run.tags}")
    common.out(f"  steps     {_counts(counts)}")
    common.out("")
    common.out(f"{'ASSET':<24} {'PARTITION':<24} {'STATUS':<16} {'ATTEMPT':>7} {'DURATION':>9}  ERROR")
    shown = sorted(steps, key=lambda s: (s.ok, s.id))[:limit]
    in_pools = store.pools.waiting(run_id)
    for step in sorted(shown, key=lambda s: s.id):
        error = f"{step.error.get('type')}: {step.error.get('message')}" if step.error else ""
        status = f"waiting_pool ({in_pools[step.id][0]})" if step.id in in_pools else str(step.status)
        if step.memoized_from is not None:  # a success: the step reused that materialization
            error = f"memoized from #{step.memoized_from}"
        common.out(
            f"{step.asset:<24} {common.shown(step.partition_key):<24} {status:<16} {step.attempt:>7} "
            f"{_duration(step):>9}  {error}"
        )
    if len(steps) > limit:
        common.out(f"... {len(steps) - limit} more step(s) (succeeded last; --limit shows more)")
    waiting_for = [a for a in approvals if a.status == "pending"]
    if waiting_for:
        common.out("")
        common.out("waiting for approval:")
        for a in waiting_for:
            timeout = f", times out {common.when(a.timeout_at)} -> {a.on_timeout}" if a.timeout_at else ""
            common.out(f"  #{a.id} {a.asset} [{common.shown(a.partition_key)}]: {a.message}{timeout}")
    hints = _next_steps(run, steps, approvals)
    if hints:
        common.out("")
        common.out("next:")
        for hint in hints:
            common.out(f"  {hint}")
    return run


def _cmd_run(args: argparse.Namespace) -> int:
    with common.open_reader(args) as rt:
        last: list[records.Run] = []

        def draw() -> bool:
            last[:] = [_show_run(rt, args.run_id, args.limit)]
            return last[0].status in RUN_TERMINAL or last[0].status == RunStatus.WAITING_APPROVAL

        waiting.watch(args.watch, draw)
        status = last[0].status
        if status == RunStatus.SUCCEEDED:
            return common.EXIT_OK
        if status == RunStatus.WAITING_APPROVAL:
            return common.EXIT_WAITING
        return common.EXIT_FAILED if status in RUN_TERMINAL else common.EXIT_OK


def _cmd_cancel(args: argparse.Namespace) -> int:
    with common.open_reader(args) as rt:
        handle = rt.run(args.run_id)
        cancelled = handle.cancel()
        run = handle.run()
        common.out(
            f"run {args.run_id}: cancelled {cancelled} step(s) that had not started (pending approvals "
            f"withdrawn); running steps finish; the run is {run.status}"
        )
        return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    with common.open_reader(args) as rt:
        before = rt.run(args.run_id).status()
        handle = rt.retry(args.run_id, from_asset=args.from_asset)
        if handle.run_id == args.run_id and handle.status() == before:
            common.out(
                f"run {args.run_id}: nothing to retry (no failed, skipped, cancelled or rejected step)"
            )
            return 0
        what = (
            f"new run {handle.run_id} (retry of {args.run_id} from {args.from_asset})"
            if args.from_asset
            else f"run {handle.run_id}"
        )
        common.out(f"retrying {what}: {_counts(handle.status())}")
        if not args.wait:
            return 0
        return waiting.wait_for(
            handle, _store(rt), quiet=args.quiet, timeout=args.timeout, queues=waiting.queues_of(rt, handle)
        )


def add_commands(commands: Any) -> None:
    """Add ``runs``, ``run``, ``cancel`` and ``retry``."""
    runs = commands.add_parser(
        "runs",
        help="the newest runs with their step counts",
        description="The newest runs first, with their steps counted by status.",
        epilog="example: flowstone runs --status failed --since 2h --limit 5",
    )
    common.add_common(runs)
    runs.add_argument("--status", choices=RUN_STATUSES, default=None, help="only runs in this status")
    runs.add_argument("--asset", default=None, help="only runs with a step of this asset")
    runs.add_argument(
        "--since", default=None, help="only runs created since: 2025-01-01, 2025-01-01T10:00, 30m, 2h, 3d"
    )
    runs.add_argument(
        "--limit", type=common.positive_int, default=20, help="at most this many runs (default 20)"
    )
    common.add_watch(runs)
    runs.set_defaults(handler=_cmd_runs)

    run = commands.add_parser(
        "run",
        help="one run: its steps, errors, waiting approvals and what to do next",
        description="One run: every step with its status, attempt, duration and error; the approvals "
        "it waits for; and what to do next. Exit status: 0 succeeded or still going, 1 failed or "
        "cancelled, 3 waiting for approval.",
        epilog="example: flowstone run 4f1c...  --watch",
    )
    common.add_common(run)
    run.add_argument("run_id", metavar="RUN_ID")
    run.add_argument(
        "--limit", type=common.positive_int, default=100, help="steps shown (unsucceeded first; default 100)"
    )
    common.add_watch(run)
    run.set_defaults(handler=_cmd_run)

    cancel = commands.add_parser(
        "cancel",
        help="cancel a run's steps that have not started (and withdraw its approval requests)",
        description="Cancel the steps of a run that have not started, including those waiting for approval "
        "(their requests are withdrawn). Running steps finish.",
        epilog="example: flowstone cancel 4f1c...",
    )
    common.add_common(cancel)
    cancel.add_argument("run_id", metavar="RUN_ID")
    cancel.set_defaults(handler=_cmd_cancel)

    retry = commands.add_parser(
        "retry",
        help="run a run's failed, skipped and cancelled steps again (or everything from an asset down)",
        description="Run the failed, skipped, cancelled and rejected steps of an ended queued run "
        "again, in the same run as a new attempt; succeeded steps are kept. With --from ASSET: "
        "that asset's steps and everything downstream of them, as a new run tagged retry_of.",
        epilog="example: flowstone retry 4f1c... --wait      flowstone retry 4f1c... --from daily_kpis",
    )
    common.add_common(retry)
    retry.add_argument("run_id", metavar="RUN_ID")
    retry.add_argument(
        "--from",
        dest="from_asset",
        default=None,
        metavar="ASSET",
        help="re-run this asset and everything downstream (new run)",
    )
    retry.add_argument("--wait", action="store_true", help="show progress until the run ends")
    retry.add_argument(
        "--timeout", type=float, default=None, help="stop waiting after N seconds (exit status 4)"
    )
    retry.add_argument("--quiet", action="store_true", help="no progress display")
    retry.set_defaults(handler=_cmd_retry)
