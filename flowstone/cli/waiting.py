"""Waiting for a queued run from the command line: a progress bar (rich) with done, failed and
waiting counts and an ETA, a warning when no worker is running, the first errors of a failed run,
and the exit status of the outcome; and ``--watch``, which redraws a command's output."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from flowstone import errors
from flowstone import runtime as runtime_mod
from flowstone.cli import common
from flowstone.queue import client
from flowstone.queue import jobs as queue_jobs
from flowstone.status import STEP_TERMINAL, StepStatus
from flowstone.store import records
from flowstone.store.postgres import PostgresStore

__all__ = ["first_errors", "queues_of", "wait_for", "watch"]

WORKER_SEEN_S = 60.0
"""A worker whose last heartbeat is older than this is not counted as running."""
FAILED = frozenset({StepStatus.FAILED, StepStatus.REJECTED, StepStatus.CANCELLED})


class RunBar:
    """The progress of one run on stderr: a live bar on a terminal, else a line when a tenth more
    of the steps finished."""

    def __init__(self, label: str) -> None:
        self.console = Console(stderr=True)
        self.label = label
        self.started = time.monotonic()
        self._decile = -1
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> RunBar:
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None, detail="")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, counts: Mapping[str, int]) -> None:
        """Show ``counts`` (steps by status)."""
        total = sum(counts.values())
        done = client.finished_steps(counts)
        failed = sum(n for s, n in counts.items() if s in FAILED)
        waiting = counts.get(StepStatus.WAITING_APPROVAL, 0)
        detail = f"{failed} failed, {waiting} waiting for approval"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total or None, detail=detail)
            return
        decile = int(10 * done / total) if total else 10
        if decile != self._decile:
            self._decile = decile
            elapsed = time.monotonic() - self.started
            eta = f", about {(total - done) * elapsed / done:.0f} s left" if 0 < done < total else ""
            common.err(f"{self.label}: {done}/{total} done, {detail}{eta}")


def queues_of(rt: runtime_mod.FlowStone, handle: client.RunHandle) -> list[str]:
    """The queues a run's unfinished steps wait in."""
    jobs = rt.services.job_queue()
    return sorted({jobs.queue_of(s.asset) for s in handle.steps() if s.status not in STEP_TERMINAL}) or [
        queue_jobs.DEFAULT_QUEUE
    ]


def first_errors(steps: list[records.Materialization], limit: int = 5) -> list[str]:
    """``asset [partition] Type: message`` of the first failed steps (in step order)."""
    lines = []
    for step in steps:
        if step.status in FAILED and step.error:
            kind = step.error.get("type", "error")
            lines.append(
                f"{step.asset} [{common.shown(step.partition_key)}] {kind}: {step.error.get('message')}"
            )
    if len(lines) > limit:
        return [
            *lines[:limit],
            f"... and {len(lines) - limit} more (flowstone run <run id> shows every step)",
        ]
    return lines


def _warn_without_workers(store: PostgresStore, queues: list[str]) -> bool:
    if store.reports.live_workers(WORKER_SEEN_S) > 0:
        return False
    common.err(
        f"warning: no worker is running (none sent a heartbeat in the last {WORKER_SEEN_S:.0f} s); "
        f"this run needs one taking queue(s) {', '.join(queues)}: start it with "
        "`flowstone worker --defs module:attribute`"
    )
    return True


def wait_for(
    handle: client.RunHandle, store: PostgresStore, *, quiet: bool, timeout: float | None, queues: list[str]
) -> int:
    """Show a run's progress until it ends, waits for an approval, or ``timeout`` passes; print
    the outcome with the first errors; the exit status of that outcome."""
    warned = _warn_without_workers(store, queues)
    checked = time.monotonic()

    with RunBar(f"run {handle.run_id[:8]}") as bar:

        def show(run: records.Run, counts: Mapping[str, int]) -> None:
            nonlocal warned, checked
            del run
            if not quiet:
                bar.update(counts)
            if not warned and time.monotonic() - checked > 5:
                checked = time.monotonic()
                warned = _warn_without_workers(store, queues)

        try:
            run = handle.wait(timeout, poll_interval_s=0.25, progress=show)
        except TimeoutError:
            common.err(
                f"run {handle.run_id} is still {handle.run().status} after {timeout:g} s (it goes on; "
                f"`flowstone run {handle.run_id}` shows it)"
            )
            return common.EXIT_TIMEOUT
    counts = handle.status()
    common.out(f"run {handle.run_id}: {run.status} {dict(sorted(counts.items()))}")
    for line in first_errors(handle.steps()):
        common.err(f"failed: {line}")
    if run.status == "succeeded":
        return common.EXIT_OK
    if run.status == "waiting_approval":
        common.err("waiting for approval: `flowstone approvals list` shows the requests")
        return common.EXIT_WAITING
    if run.status == "failed":
        common.err(f"to re-run what failed once it is fixed: flowstone retry {handle.run_id}")
    return common.EXIT_FAILED


def watch(interval: float | None, draw: Callable[[], bool]) -> int:
    """Call ``draw`` once, or (``--watch``) every ``interval`` seconds until it returns ``True``
    (e.g. the run ended) or the user presses Ctrl-C; a terminal is cleared between drawings."""
    if interval is None:
        draw()
        return common.EXIT_OK
    if interval <= 0:
        raise errors.ConfigurationError(f"--watch needs a positive number of seconds, got {interval:g}")
    console = Console()
    while True:
        if console.is_terminal:
            console.clear()
        else:
            common.out(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}")
        if draw():
            return common.EXIT_OK
        time.sleep(interval)
