"""The ``flowstone`` command line.

``flowstone db upgrade|url|status|stop`` manage the database; ``materialize``, ``backfill``,
``status`` and ``lineage`` work on the assets of ``--defs module:attribute`` (or ``FLOWSTONE_DEFS``).
Errors are printed as one line naming what was wrong (exit status 1); usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from flowstone import _version, errors
from flowstone import definitions as definitions_mod
from flowstone import lineage as lineage_mod
from flowstone import queue as queue_mod
from flowstone import runtime as runtime_mod
from flowstone import settings as settings_mod
from flowstone.store import backend, embedded, migrations, records

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _db_url(args: argparse.Namespace) -> str:
    return backend.resolve_database(args.database_url).url


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    url = _db_url(args)
    report = migrations.upgrade(url, progress=_out)
    if report.nothing_to_do:
        _out("database is up to date: nothing to do")
    else:
        _out(f"done: {len(report.applied)} FlowStone migration(s) applied")
    return 0


def _cmd_db_url(args: argparse.Namespace) -> int:
    _out(_db_url(args))
    return 0


def _cmd_db_status(args: argparse.Namespace) -> int:
    applied = migrations.status(_db_url(args))
    known = migrations.discover()
    for component in ("procrastinate", "flowstone"):
        for line in applied[component]:
            _out(f"{component:<13} {line}")
    pending = len(known) - len(applied["flowstone"])
    _out(f"{pending} FlowStone migration(s) pending" if pending > 0 else "up to date")
    return 0


def _cmd_db_stop(args: argparse.Namespace) -> int:
    home = settings_mod.Settings.from_env().home
    stopped = embedded.stop_embedded(home)
    _out("embedded Postgres stopped" if stopped else f"no embedded Postgres runs in {home}")
    return 0


def load_target(spec: str | None) -> definitions_mod.Definitions | runtime_mod.FlowStone:
    """Import ``module:attribute`` (named by the user on the command line): a ``Definitions`` or a
    configured ``FlowStone`` runtime."""
    spec = spec or os.environ.get("FLOWSTONE_DEFS", "").strip() or None
    if not spec:
        raise errors.ConfigurationError(
            "no definitions given: pass --defs mypackage.pipeline:defs or set FLOWSTONE_DEFS"
        )
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise errors.ConfigurationError(f"--defs must look like module:attribute, got {spec!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # like `python -m`: the project directory is importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise errors.ConfigurationError(f"cannot import {module_name!r} (from --defs): {exc}") from exc
    value = getattr(module, attribute, None)
    if not isinstance(value, definitions_mod.Definitions | runtime_mod.FlowStone):
        raise errors.ConfigurationError(
            f"{spec} is {type(value).__name__}, not flowstone.Definitions or flowstone.FlowStone"
            if value is not None
            else f"module {module_name!r} has no attribute {attribute!r}"
        )
    return value


def _runtime(args: argparse.Namespace) -> runtime_mod.FlowStone:
    """The runtime of ``--defs``: the module's own FlowStone object (with its options) when it names
    one and no ``--database-url`` overrides it, else a new one for its Definitions."""
    target = load_target(args.defs)
    if isinstance(target, runtime_mod.FlowStone):
        if args.database_url is None:
            return target
        target = target.defs
    return runtime_mod.FlowStone(target, database_url=args.database_url)


def _partition(defs: definitions_mod.Definitions, assets: Sequence[str], text: str | None) -> object:
    """Parse ``--partition`` text with the partition definition of the selected assets."""
    if text is None:
        return None
    found = {defs.get(a).partitions for a in assets if defs.get(a).partitions is not None}
    if len(found) == 1:
        definition = found.pop()
        assert definition is not None  # noqa: S101 - filtered above
        partitioned = [a for a in assets if rt_partitions(defs, a) is definition]
        return definition.parse(text, asset=partitioned[0] if len(partitioned) == 1 else None)
    return text


def rt_partitions(defs: definitions_mod.Definitions, asset: str) -> object:
    """The partition definition of ``asset`` (``None`` if unpartitioned)."""
    return defs.get(asset).partitions


class ProgressBar:
    """A one-line progress display on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, label: str, *, width: int = 30) -> None:
        self.label = label
        self.width = width
        self.started = time.monotonic()
        self._last_decile = -1
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        """Show ``done`` of ``total``."""
        fraction = done / total if total else 1.0
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        filled = int(fraction * self.width)
        line = (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} "
            f"{fraction:6.1%} {rate:7.1f}/s"
        )
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if done >= total else ""))
            sys.stderr.flush()
        elif int(fraction * 10) != self._last_decile:
            self._last_decile = int(fraction * 10)
            _err(line)


def _cmd_materialize(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
        selected = rt.defs.graph.select(args.selection)
        result = rt.materialize(
            args.selection,
            _partition(rt.defs, selected, args.partition),
            with_upstream=args.with_upstream,
            raise_on_error=False,
        )
        for step in result.steps:
            _out(f"{step.status:<10} {step.asset} [{step.partition_key}] #{step.id}")
        for error in result.errors.values():
            _err(f"error: {error}")
        _out(f"run {result.run_id}: {result.status}")
        return 0 if result.success else 1


def _wait_for(handle: queue_mod.RunHandle, *, quiet: bool, timeout: float | None) -> int:
    """Show a run's progress until it is terminal; exit status 0 only if it succeeded."""
    bar = None if quiet else ProgressBar(f"run {handle.run_id[:8]}")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = handle.run()
        counts = handle.status()
        total = sum(counts.values())
        finished = sum(n for status, n in counts.items() if status in records.TERMINAL)
        if bar is not None and total:
            bar(finished, total)
        if run.status in records.RUN_TERMINAL or run.status == "waiting_approval":
            summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
            _out(f"run {handle.run_id}: {run.status} ({summary or 'no steps'})")
            return 0 if run.status == "succeeded" else 1
        if deadline is not None and time.monotonic() > deadline:
            _err(f"run {handle.run_id} is still {run.status} after {timeout}s (it goes on)")
            return 1
        time.sleep(0.25)


def _cmd_submit(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
        selected = rt.defs.graph.select(args.selection)
        partitions = [_partition(rt.defs, selected, p) for p in args.partition] if args.partition else None
        handle = rt.submit(args.selection, partitions, with_upstream=args.with_upstream)
        _out(f"submitted run {handle.run_id}: {handle.status()}")
        if not args.wait:
            return 0
        return _wait_for(handle, quiet=args.quiet, timeout=args.timeout)


def _cmd_backfill(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
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
                progress=None if args.quiet else ProgressBar(f"backfill {args.asset}"),
            )
            for key, error in result.errors.items():
                _err(f"failed {key}: {error.message}")
            _out(
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
            progress=None if args.quiet else ProgressBar(f"enqueue {args.asset}"),
        )
        _out(
            f"backfill {args.asset}: run {handle.run_id}, {sum(handle.status().values())} partition(s) queued"
        )
        if args.no_wait:
            return 0
        return _wait_for(handle, quiet=args.quiet, timeout=args.timeout)


def _cmd_runs(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
        _out(f"{'RUN':<36}  {'KIND':<11} {'STATUS':<16} {'CREATED (UTC)':<19}  STEPS")
        for run in rt.store.list_runs(limit=args.limit):
            counts = rt.queue_store().step_counts(run.run_id) if rt.database_url else {}
            steps = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            created = run.created_at.strftime("%Y-%m-%d %H:%M:%S")
            _out(f"{run.run_id:<36}  {run.kind:<11} {run.status:<16} {created:<19}  {steps}")
        return 0


def _cmd_status(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
        names = [args.asset] if args.asset else list(rt.defs)
        for name in names:
            rt.defs.get(name)  # unknown names: a clear error
        _out(f"{'ASSET':<24} {'PARTITION':<28} {'STATUS':<16} {'LAST SUCCESS (UTC)':<20} {'MS':>8}  RUN")
        for name in names:
            newest = rt.store.newest_all(name)
            if not newest:
                _out(f"{name:<24} {'-':<28} {'never':<16} {'-':<20} {'-':>8}  -")
            for m in newest:
                good = m if m.status == "succeeded" else rt.store.latest(m.asset, m.partition_key)
                finished = (
                    good.finished_at.strftime("%Y-%m-%d %H:%M:%S") if good and good.finished_at else "-"
                )
                ms = f"{m.duration_ms:.0f}" if m.duration_ms is not None else "-"
                _out(f"{name:<24} {m.partition_key:<28} {m.status:<16} {finished:<20} {ms:>8}  {m.run_id}")
        return 0


def _tree(start: str, nodes: Sequence[lineage_mod.LineageNode], root_id: int) -> list[str]:
    children: dict[int, list[lineage_mod.LineageNode]] = {}
    for node in nodes:
        children.setdefault(node.via_materialization_id, []).append(node)
    lines = [start]

    def walk(parent: int, prefix: str) -> None:
        kids = children.get(parent, [])
        for i, node in enumerate(kids):
            last = i == len(kids) - 1
            lines.append(
                f"{prefix}{'└── ' if last else '├── '}{node.asset} [{node.partition_key}] "
                f"#{node.materialization_id} {node.status}"
            )
            walk(node.materialization_id, prefix + ("    " if last else "│   "))

    walk(root_id, "")
    return lines


def _cmd_lineage(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
        partition = _partition(rt.defs, [args.asset], args.partition)
        start = rt.latest(args.asset, partition)
        if start is None:
            _out(f"{args.asset} has no succeeded materialization")
            return 1
        walk = rt.lineage.downstream if args.downstream else rt.lineage.upstream
        nodes = walk(args.asset, partition, depth=args.depth)
        head = f"{start.asset} [{start.partition_key}] #{start.id} {start.status}"
        for line in _tree(head, nodes, start.id):
            _out(line)
        return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    runtime = _runtime(args)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    if queues is not None and queue_mod.DEFAULT_QUEUE not in queues:
        _err(
            f"warning: this worker does not take queue {queue_mod.DEFAULT_QUEUE!r}, where FlowStone's "
            "recovery, approval-timeout and schedule tasks run: make sure another worker does"
        )
    _err(
        f"flowstone worker: queues={','.join(queues) if queues else 'all'} "
        f"concurrency={args.concurrency}{' one-shot' if args.one_shot else ''}"
    )
    try:
        runtime.procrastinate_app.run_worker(
            queues=queues,
            concurrency=args.concurrency,
            wait=not args.one_shot,
            name=args.name,
        )
    finally:
        runtime.close()
    return 0


def _show_approval(a: records.Approval) -> None:
    decided = (
        f"{a.status} by {a.decided_by} at {a.decided_at:%Y-%m-%d %H:%M:%S}" if a.decided_at else a.status
    )
    timeout = f"{a.timeout_at:%Y-%m-%d %H:%M:%S} -> {a.on_timeout}" if a.timeout_at else "never"
    _out(f"approval {a.id}: {decided}")
    _out(f"  step      {a.asset} [{a.partition_key}] #{a.materialization_id} (run {a.run_id})")
    _out(f"  message   {a.message}")
    _out(f"  requested {a.requested_at:%Y-%m-%d %H:%M:%S}, timeout {timeout}")
    if a.approvers:
        _out(f"  approvers {', '.join(a.approvers)}")
    if a.context_data:
        _out(f"  context   {a.context_data}")
    if a.reason:
        _out(f"  reason    {a.reason}")


def _cmd_approvals(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
        if args.action == "list":
            status = None if args.all else args.status
            rows = rt.approvals.list(status)
            _out(f"{'ID':>6}  {'STATUS':<9} {'ASSET':<24} {'PARTITION':<24} {'TIMEOUT (UTC)':<20} MESSAGE")
            for a in rows:
                timeout = f"{a.timeout_at:%Y-%m-%d %H:%M:%S}" if a.timeout_at else "-"
                _out(
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
    with _runtime(args) as rt:
        if args.action == "list":
            _out(
                f"{'NAME':<24} {'CRON':<16} {'TZ':<16} {'STATE':<8} {'LAST TICK':<26} {'NEXT TICK':<26} TICKS"
            )
            for st in rt.schedules.list(now=_parse_now(args.now)):
                state = "off" if not st.enabled else "paused" if st.paused else "on"
                last = st.last_tick_at.isoformat() if st.last_tick_at else "-"
                nxt = st.next_tick_at.isoformat() if st.next_tick_at else "-"
                _out(
                    f"{st.name:<24} {st.cron:<16} {st.timezone:<16} {state:<8} {last:<26} {nxt:<26} "
                    + str(st.ticks)
                )
            return 0
        if args.action in ("pause", "resume"):
            if not args.name:
                raise errors.ConfigurationError(f"schedules {args.action} needs a schedule name")
            change = rt.schedules.pause if args.action == "pause" else rt.schedules.resume
            st = change(args.name, by=rt.actor)
            _out(f"schedule {st.name}: {'paused' if st.paused else 'on'}")
            return 0
        fired = rt.schedules.tick(now=_parse_now(args.now), only=args.name)
        for name, runs in fired.items():
            for run_id in runs:
                _out(f"schedule {name}: submitted run {run_id}")
        if not fired:
            _out("no tick was due")
        return 0


def _cmd_sensors(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
        if args.action == "list":
            _out(
                f"{'NAME':<24} {'EVERY':>7} {'EVALS':>6} {'REQUESTS':>8}  {'LAST (UTC)':<20} "
                + "CURSOR / LAST ERROR"
            )
            for st in rt.sensors.list():
                last = f"{st.last_evaluated_at:%Y-%m-%d %H:%M:%S}" if st.last_evaluated_at else "-"
                tail = f"error: {st.last_error['message']}" if st.last_error else (st.cursor or "-")
                counts = f"{st.interval_s:>6.0f}s {st.evaluations:>6} {st.requests:>8}"
                _out(f"{st.name:<24} {counts}  {last:<20} {tail}")
            return 0
        submitted = rt.sensors.tick(now=_parse_now(args.now), force=args.force)
        for name, runs in submitted.items():
            for run_id in runs:
                _out(f"sensor {name}: submitted run {run_id}")
        if not submitted:
            _out("no run was requested")
        return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
        report = rt.gc(args.keep_last, dry_run=args.dry_run)
        verb = "would delete" if args.dry_run else "deleted"
        counts = ", ".join(f"{n} from {key}" for key, n in sorted(report.deleted.items())) or "nothing"
        _out(f"gc (keep last {args.keep_last}): {report.planned} old version(s); {verb} {counts}")
        for reason in report.skipped:
            _err(f"kept {reason}")
        return 0


def _add_common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--defs", default=None, help="module:attribute of the Definitions (or FLOWSTONE_DEFS)")
    sub.add_argument("--database-url", default=None, help="Postgres URL (default: FLOWSTONE_DATABASE_URL)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="flowstone", description="Asset-first data orchestration on Postgres."
    )
    parser.add_argument("--version", action="version", version=f"flowstone {_version.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    db = commands.add_parser("db", help="database: upgrade, url, status, stop")
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    for name, handler, help_text in (
        ("upgrade", _cmd_db_upgrade, "apply Procrastinate's schema and FlowStone's migrations"),
        ("url", _cmd_db_url, 'print the database URL (psql "$(flowstone db url)")'),
        ("status", _cmd_db_status, "list applied migrations"),
    ):
        sub = db_commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--database-url",
            default=None,
            help="Postgres URL (default: FLOWSTONE_DATABASE_URL, else the embedded Postgres)",
        )
        sub.set_defaults(handler=handler)
    stop = db_commands.add_parser("stop", help="stop the embedded Postgres of FLOWSTONE_HOME")
    stop.set_defaults(handler=_cmd_db_stop)
    _add_run_commands(commands)
    _add_query_commands(commands)
    _add_approval_commands(commands)
    _add_automation_commands(commands)
    gc = commands.add_parser("gc", help="delete old output versions (keep the latest N per partition)")
    _add_common(gc)
    gc.add_argument("--keep-last", type=int, default=1, help="succeeded versions to keep (>= 1)")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    gc.set_defaults(handler=_cmd_gc)
    return parser


def _add_run_commands(commands: Any) -> None:
    mat = commands.add_parser("materialize", help="materialize assets now, in this process")
    _add_common(mat)
    mat.add_argument("selection", nargs="+", help='assets or selections ("+report", "numbers+", "*")')
    mat.add_argument("--partition", default=None, help="partition, e.g. 2025-01-01")
    mat.add_argument("--with-upstream", action="store_true", help="also materialize upstream assets")
    mat.set_defaults(handler=_cmd_materialize)

    back = commands.add_parser("backfill", help="materialize missing partitions of an asset")
    _add_common(back)
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
    _add_common(sub)
    sub.add_argument("selection", nargs="+", help='assets or selections ("+report", "numbers+", "*")')
    sub.add_argument("--partition", action="append", default=[], help="a partition (repeatable)")
    sub.add_argument("--with-upstream", action="store_true", help="also run upstream assets")
    sub.add_argument("--wait", action="store_true", help="show progress until the run is done")
    sub.add_argument("--timeout", type=float, default=None, help="stop waiting after N seconds")
    sub.add_argument("--quiet", action="store_true", help="no progress display")
    sub.set_defaults(handler=_cmd_submit)

    runs = commands.add_parser("runs", help="the newest runs with their step counts")
    _add_common(runs)
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(handler=_cmd_runs)

    worker = commands.add_parser("worker", help="run a queue worker (Procrastinate) for the definitions")
    _add_common(worker)
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once (threads)")
    worker.add_argument("--queues", default=None, help="comma-separated queues (default: all)")
    worker.add_argument("--name", default="flowstone-worker", help="worker name (in logs)")
    worker.add_argument("--one-shot", action="store_true", help="exit when no job is left")
    worker.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log level"
    )
    worker.set_defaults(handler=_cmd_worker)


def _add_approval_commands(commands: Any) -> None:
    app = commands.add_parser("approvals", help="list, show, approve or reject approval gates")
    _add_common(app)
    app.add_argument("action", choices=["list", "show", "approve", "reject"])
    app.add_argument("id", nargs="?", type=int, default=None, help="approval id (show/approve/reject)")
    app.add_argument("--status", default="pending", help="list: approvals with this status (pending)")
    app.add_argument("--all", action="store_true", help="list: every approval")
    app.add_argument("--by", default=None, help="who decides (default: FLOWSTONE_ACTOR or the OS user)")
    app.add_argument("--reason", default=None, help="why (recorded with the decision)")
    app.set_defaults(handler=_cmd_approvals)


def _add_automation_commands(commands: Any) -> None:
    sch = commands.add_parser("schedules", help="list, pause, resume or tick the schedules")
    _add_common(sch)
    sch.add_argument("action", choices=["list", "pause", "resume", "tick"])
    sch.add_argument(
        "name", nargs="?", default=None, help="schedule name (pause/resume; tick: only this one)"
    )
    sch.add_argument("--now", default=None, help="evaluate at this ISO time (default: now)")
    sch.set_defaults(handler=_cmd_schedules)

    sen = commands.add_parser("sensors", help="list the sensors or evaluate them once")
    _add_common(sen)
    sen.add_argument("action", choices=["list", "tick"])
    sen.add_argument("--now", default=None, help="evaluate at this ISO time (default: now)")
    sen.add_argument("--force", action="store_true", help="tick: evaluate even sensors not yet due")
    sen.set_defaults(handler=_cmd_sensors)


def _add_query_commands(commands: Any) -> None:
    status = commands.add_parser(
        "status", help="newest materialization per asset and partition, with its last success"
    )
    _add_common(status)
    status.add_argument("asset", nargs="?", default=None)
    status.set_defaults(handler=_cmd_status)

    lin = commands.add_parser("lineage", help="what a materialization read (or who read it), as a tree")
    _add_common(lin)
    lin.add_argument("asset")
    lin.add_argument("--partition", default=None)
    lin.add_argument("--downstream", action="store_true", help="who read it, instead of what it read")
    lin.add_argument("--depth", type=int, default=None, help="levels to walk (default: all, max 100)")
    lin.set_defaults(handler=_cmd_lineage)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowstone`` console script."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except errors.FlowStoneError as exc:
        _err(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover - `python -m flowstone.cli`
    raise SystemExit(main())
