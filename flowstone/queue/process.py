"""``flowstone worker``: a Procrastinate worker that rides out database outages, with FlowStone's
maintenance on a timer of its own.

Procrastinate's worker stops when one of its side tasks (heartbeat, listener, periodic deferrer)
fails, which a database outage of a second does; it then returns normally, so a supervisor that
restarts on failure would leave it stopped. Here the worker is supervised in the process: when it
stops without being asked to, the process waits for the database with backoff and jitter (logging
once per outage) and starts a new worker; it gives up after ``outage_timeout_s`` and exits with
status 3. A signal (SIGINT, SIGTERM) stops it gracefully with status 0.

Maintenance (recovery of stalled jobs, settling steps whose job ended without them, abandoned
in-process runs, run finishing, approval timeouts, schedules and sensors) runs in a thread of its
own every ``recovery_interval_s`` / ``automation_interval_s``: it never waits behind user jobs.
Every duty claims its rows with SKIP LOCKED (I18), so any number of workers can run it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import procrastinate
import psycopg
from procrastinate import worker as procrastinate_worker

from flowstone import errors, prune, services
from flowstone.queue import worker

__all__ = ["EXIT_GAVE_UP", "Maintenance", "run"]

logger = logging.getLogger("flowstone.worker")

EXIT_GAVE_UP = 3
"""Exit status of a worker that gave up waiting for the database."""


class Maintenance:
    """FlowStone's periodic duties in a thread: each runs every interval; an error is logged once
    per outage and the duty runs again at its next turn."""

    def __init__(self, svc: services.Services, *, automation: bool = True) -> None:
        self.svc = svc
        self._stop = threading.Event()
        options = svc.options
        self.duties: list[tuple[str, float, Callable[[], object]]] = [
            ("recovery", float(options.recovery_interval_s), lambda: worker.maintain(svc)),
        ]
        if options.retention is not None:
            policy = options.retention
            self.duties.append(("retention", options.retention_interval_s, lambda: prune.prune(svc, policy)))
        if automation:
            self.duties.append(
                ("automation", float(options.automation_interval_s), lambda: worker.automation_tick(svc))
            )
        self._thread = threading.Thread(target=self._run, name="flowstone-maintenance", daemon=True)
        self._failing: set[str] = set()

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (it finishes the duty it is in)."""
        self._stop.set()
        # A duty may wait on the pool for a connection during an outage; the thread is a daemon,
        # so the process does not wait for it longer than this.
        self._thread.join(timeout=5)

    def _run(self) -> None:
        due = {name: time.monotonic() for name, _, _ in self.duties}
        while not self._stop.is_set():
            for name, interval, duty in self.duties:
                if time.monotonic() < due[name]:
                    continue
                due[name] = time.monotonic() + interval
                try:
                    duty()
                except errors.StoreError as exc:
                    if name not in self._failing:
                        logger.warning("maintenance (%s) failed, will try again: %s", name, exc.message)
                    self._failing.add(name)
                    continue
                except Exception:  # a bug must not stop maintenance for good: log it
                    logger.exception("maintenance (%s) failed", name)
                    continue
                if name in self._failing:
                    logger.warning("maintenance (%s) works again", name)
                    self._failing.discard(name)
            self._stop.wait(min(due.values()) - time.monotonic() if due else 1.0)


def database_reachable(url: str) -> bool:
    """Whether a new connection to the database answers."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def run(
    svc: services.Services,
    app: procrastinate.App,
    url: str,
    *,
    queues: Sequence[str] | None,
    concurrency: int,
    wait: bool = True,
    name: str | None = None,
    maintenance: bool = True,
) -> int:
    """Run a worker until a signal stops it (0), the queues are empty with ``wait=False`` (0), or
    the database stays away longer than ``outage_timeout_s`` (:data:`EXIT_GAVE_UP`)."""
    duties = Maintenance(svc) if maintenance and wait else None
    if duties is not None:
        duties.start()
    try:
        return asyncio.run(
            _supervise(svc, app, url, queues=queues, concurrency=concurrency, wait=wait, name=name)
        )
    finally:
        if duties is not None:
            duties.stop()


async def _supervise(
    svc: services.Services,
    app: procrastinate.App,
    url: str,
    *,
    queues: Sequence[str] | None,
    concurrency: int,
    wait: bool,
    name: str | None,
) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    current: list[procrastinate_worker.Worker] = []

    def on_signal() -> None:
        stopping.set()
        for running in current:
            running.stop()  # type: ignore[no-untyped-call]

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    options: dict[str, Any] = {
        **app.worker_defaults,
        "queues": queues,
        "concurrency": concurrency,
        "wait": wait,
        "name": name,
        "install_signal_handlers": False,
    }
    watch = asyncio.create_task(_watch_lost_jobs(svc, current, stopping))
    try:
        while True:
            error: BaseException | None = None
            try:
                async with app.open_async():
                    app.perform_import_paths()  # type: ignore[no-untyped-call]
                    current[:] = [procrastinate_worker.Worker(app=app, **options)]
                    await current[0].run()  # type: ignore[no-untyped-call]
            except Exception as exc:  # noqa: BLE001 - a database outage, told apart below
                error = exc
            if stopping.is_set() or (not wait and error is None):
                return 0
            logger.warning(
                "the worker stopped (%s); waiting for the database",
                f"{type(error).__name__}: {error}" if error else "a side task failed",
            )
            if not await _wait_for_database(url, svc.options.outage_timeout_s, stopping):
                if stopping.is_set():
                    return 0
                logger.error(
                    "the database did not come back within %.0f s: giving up (exit status %d)",
                    svc.options.outage_timeout_s,
                    EXIT_GAVE_UP,
                )
                return EXIT_GAVE_UP
            logger.warning("the database is back: starting the worker again")
    finally:
        watch.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)


async def _watch_lost_jobs(
    svc: services.Services, current: list[procrastinate_worker.Worker], stopping: asyncio.Event
) -> None:
    """Every recovery interval, compare the jobs Postgres says this worker is doing with those it
    runs, and hand back those missing twice in a row (:func:`flowstone.queue.worker.
    hand_back_lost_jobs`). The running set is read here, in the worker's event loop; the database
    in a thread."""
    interval = max(1.0, float(svc.options.recovery_interval_s))
    suspects: set[int] = set()
    owner: int | None = None
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
        running_worker = current[0] if current else None
        if stopping.is_set() or running_worker is None or running_worker.worker_id is None:
            continue
        if running_worker.worker_id != owner:  # a new worker after an outage: start afresh
            owner, suspects = running_worker.worker_id, set()
        contexts = list(running_worker._running_jobs.values())  # Procrastinate has no public accessor
        running = {c.job.id for c in contexts if c.job.id is not None}
        try:
            suspects = await asyncio.to_thread(worker.hand_back_lost_jobs, svc, owner, running, suspects)
        except Exception as exc:  # noqa: BLE001 - an outage: the supervisor deals with it; look again later
            logger.debug("could not compare this worker's jobs with the database: %s", exc)
            suspects = set()


async def _wait_for_database(url: str, timeout_s: float, stopping: asyncio.Event) -> bool:
    """Poll the database with exponential backoff and jitter until it answers (``True``), the
    timeout passes or a signal arrives (``False``)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.5
    while time.monotonic() < deadline and not stopping.is_set():
        # Even when the database answers at once, pause a little: a worker that stops in a loop
        # for another reason must not spin.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=delay * (1 + random.random() / 2))  # noqa: S311
        if stopping.is_set():
            return False
        if await asyncio.to_thread(database_reachable, url):
            return True
        delay = min(delay * 2, 10.0)
    return False
