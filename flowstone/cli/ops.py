"""``flowstone approvals|schedules|sensors``: decide approval gates, drive schedules and sensors."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from flowstone import errors
from flowstone.cli import common
from flowstone.store import records


def _show_approval(a: records.Approval) -> None:
    decided = (
        f"{a.status} by {a.decided_by} at {a.decided_at:%Y-%m-%d %H:%M:%S}" if a.decided_at else a.status
    )
    timeout = f"{a.timeout_at:%Y-%m-%d %H:%M:%S} -> {a.on_timeout}" if a.timeout_at else "never"
    common.out(f"approval {a.id}: {decided}")
    common.out(f"  step      {a.asset} [{a.partition_key}] #{a.materialization_id} (run {a.run_id})")
    common.out(f"  message   {a.message}")
    common.out(f"  requested {a.requested_at:%Y-%m-%d %H:%M:%S}, timeout {timeout}")
    if a.approvers:
        common.out(f"  approvers {', '.join(a.approvers)}")
    if a.context_data:
        common.out(f"  context   {a.context_data}")
    if a.reason:
        common.out(f"  reason    {a.reason}")


def _cmd_approvals(args: argparse.Namespace) -> int:
    with common.open_reader(args) as rt:
        if args.action == "list":
            status = None if args.all else args.status
            rows = rt.approvals.list(status)
            common.out(
                f"{'ID':>6}  {'STATUS':<9} {'ASSET':<24} {'PARTITION':<24} {'TIMEOUT (UTC)':<20} MESSAGE"
            )
            for a in rows:
                timeout = f"{a.timeout_at:%Y-%m-%d %H:%M:%S}" if a.timeout_at else "-"
                common.out(
                    f"{a.id:>6}  {a.status:<9} {a.asset:<24} {a.partition_key:<24} {timeout:<20} {a.message}"
                )
            return 0
        if args.id is None:
            raise errors.ConfigurationError(f"approvals {args.action} needs an approval id")
        if args.action == "show":
            _show_approval(rt.approvals.get(args.id))
            return 0
        by = args.by or rt.actor
        decide = rt.approvals.approve if args.action == "approve" else rt.approvals.reject
        _show_approval(decide(args.id, by=by, reason=args.reason))
        return 0


def _parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise errors.ConfigurationError(
            f"--now must be an ISO timestamp with a timezone, got {text!r}"
        ) from None
    if value.tzinfo is None:
        raise errors.ConfigurationError(f"--now needs a timezone (e.g. {text}+00:00)")
    return value


def _cmd_schedules(args: argparse.Namespace) -> int:
    opener = common.open_reader if args.action in ("list", "pause", "resume") else common.open_runtime
    with opener(args) as rt:
        if args.action == "list":
            common.out(
                f"{'NAME':<24} {'CRON':<16} {'TZ':<16} {'STATE':<8} {'LAST TICK':<26} {'NEXT TICK':<26} TICKS"
            )
            for st in rt.schedules.list(now=_parse_now(args.now)):
                state = "off" if not st.enabled else "paused" if st.paused else "on"
                last = st.last_tick_at.isoformat() if st.last_tick_at else "-"
                nxt = st.next_tick_at.isoformat() if st.next_tick_at else "-"
                common.out(
                    f"{st.name:<24} {st.cron:<16} {st.timezone:<16} {state:<8} {last:<26} {nxt:<26} "
                    + str(st.ticks)
                )
            return 0
        if args.action in ("pause", "resume"):
            if not args.name:
                raise errors.ConfigurationError(f"schedules {args.action} needs a schedule name")
            change = rt.schedules.pause if args.action == "pause" else rt.schedules.resume
            st = change(args.name, by=rt.actor)
            common.out(f"schedule {st.name}: {'paused' if st.paused else 'on'}")
            return 0
        fired = rt.schedules.tick(now=_parse_now(args.now), only=args.name)
        for name, runs in fired.items():
            for run_id in runs:
                common.out(f"schedule {name}: submitted run {run_id}")
        if not fired:
            common.out("no tick was due")
        return 0


def _cmd_sensors(args: argparse.Namespace) -> int:
    with (common.open_reader if args.action == "list" else common.open_runtime)(args) as rt:
        if args.action == "list":
            common.out(
                f"{'NAME':<24} {'EVERY':>7} {'EVALS':>6} {'REQUESTS':>8}  {'LAST (UTC)':<20} "
                + "CURSOR / LAST ERROR"
            )
            for st in rt.sensors.list():
                last = f"{st.last_evaluated_at:%Y-%m-%d %H:%M:%S}" if st.last_evaluated_at else "-"
                tail = f"error: {st.last_error['message']}" if st.last_error else (st.cursor or "-")
                counts = f"{st.interval_s:>6.0f}s {st.evaluations:>6} {st.requests:>8}"
                common.out(f"{st.name:<24} {counts}  {last:<20} {tail}")
            return 0
        submitted = rt.sensors.tick(now=_parse_now(args.now), force=args.force)
        for name, runs in submitted.items():
            for run_id in runs:
                common.out(f"sensor {name}: submitted run {run_id}")
        if not submitted:
            common.out("no run was requested")
        return 0


def add_approval_commands(commands: Any) -> None:
    """Add ``approvals``."""
    app = commands.add_parser("approvals", help="list, show, approve or reject approval gates")
    common.add_common(app)
    app.add_argument("action", choices=["list", "show", "approve", "reject"])
    app.add_argument("id", nargs="?", type=int, default=None, help="approval id (show/approve/reject)")
    app.add_argument("--status", default="pending", help="list: approvals with this status (pending)")
    app.add_argument("--all", action="store_true", help="list: every approval")
    app.add_argument("--by", default=None, help="who decides (default: FLOWSTONE_ACTOR or the OS user)")
    app.add_argument("--reason", default=None, help="why (recorded with the decision)")
    app.set_defaults(handler=_cmd_approvals)


def add_automation_commands(commands: Any) -> None:
    """Add ``schedules`` and ``sensors``."""
    sch = commands.add_parser("schedules", help="list, pause, resume or tick the schedules")
    common.add_common(sch)
    sch.add_argument("action", choices=["list", "pause", "resume", "tick"])
    sch.add_argument(
        "name", nargs="?", default=None, help="schedule name (pause/resume; tick: only this one)"
    )
    sch.add_argument("--now", default=None, help="evaluate at this ISO time (default: now)")
    sch.set_defaults(handler=_cmd_schedules)

    sen = commands.add_parser("sensors", help="list the sensors or evaluate them once")
    common.add_common(sen)
    sen.add_argument("action", choices=["list", "tick"])
    sen.add_argument("--now", default=None, help="evaluate at this ISO time (default: now)")
    sen.add_argument("--force", action="store_true", help="tick: evaluate even sensors not yet due")
    sen.set_defaults(handler=_cmd_sensors)
