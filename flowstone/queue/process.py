"""``flowstone worker``: a Procrastinate worker that rides out database outages, with FlowStone's
maintenance on a timer of its own.

Procrastinate's worker stops when one of its side tasks (heartbeat, listener, periodic deferrer)
fails, which a database outage of a second does; it then returns normally, so a supervisor that
restarts on failure would leave it stopped. Here the worker is supervised in the process: when it
stops without being asked to, the process waits for the database with backoff and jitter (logging
once per outage) and starts a new worker; it gives up after ``outage_timeout_s`` and exits with
status 3. A signal (SIGINT, SIGTERM) stops it gracefully with status 0.

One process may run several fetch loops (``fetch_loops``): Procrastinate's worker fetches one job
at a time, so a process whose steps keep the event loop and the server busy waits on that loop,
not on its threads (``docs/design/performance.md``). Each loop is a Procrastinate ``Worker`` of
its own (its own worker id, registration, heartbeat and share of the concurrency) in the one event
loop; when one stops without being asked to, the others are stopped and the process handles the
outage as above.

Maintenance (recovery of stalled jobs, settling steps whose job ended without them, abandoned
in-process runs, run finishing, approval timeouts, schedules and sensors) runs in a thread of its
own every ``recovery_interval_s`` / ``automation_interval_s``: it never waits behind user jobs.
Every duty claims its rows with SKIP LOCKED (I18), so any number of workers can run it at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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

__all__ = ["EXIT_GAVE_UP", "Maintenance", "default_fetch_loops", "run"]

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

    def halt(self) -> None:
        """Start no duty any more (the one running finishes)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop the thread (it finishes the duty it is in)."""
        self.halt()
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


def default_fetch_loops(concurrency: int) -> int:
    """Fetch loops for a worker of ``concurrency`` when none is asked for: 2 from a concurrency of
    4 (a second loop gave 10 to 25 % more steps per process, measured; more gave no more)."""
    return 2 if concurrency >= 4 else 1


def split_concurrency(concurrency: int, loops: int) -> list[int]:
    """Each fetch loop's share of ``concurrency`` (every loop gets at least one)."""
    if loops < 1 or loops > concurrency:
        raise errors.ConfigurationError(
            f"fetch loops must be between 1 and the concurrency ({concurrency}), got {loops}"
        )
    return [concurrency // loops + (1 if i < concurrency % loops else 0) for i in range(loops)]


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
    fetch_loops: int | None = None,
) -> int:
    """Run a worker until a signal stops it (0), the queues are empty with ``wait=False`` (0), or
    the database stays away longer than ``outage_timeout_s`` (:data:`EXIT_GAVE_UP`). Its
    ``concurrency`` is shared by ``fetch_loops`` fetch loops (default: :func:`default_fetch_loops`)."""
    shares = split_concurrency(
        concurrency, default_fetch_loops(concurrency) if fetch_loops is None else fetch_loops
    )
    duties = Maintenance(svc) if maintenance and wait else None
    if duties is not None:
        duties.start()

    def give_up() -> None:
        # Threads that wait on the pool for a connection (a maintenance duty, the lost-job watcher's
        # check) would hold the exit for the pool's timeout: closing it fails them at once.
        if duties is not None:
            duties.halt()
        svc.postgres("the worker").db.close()

    try:
        return asyncio.run(
            _supervise(svc, app, url, queues=queues, shares=shares, wait=wait, name=name, give_up=give_up)
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
    shares: Sequence[int],
    wait: bool,
    name: str | None,
    give_up: Callable[[], None],
) -> int:
    loop = asyncio.get_running_loop()
    # Procrastinate runs each sync task in the loop's default executor, of min(32, cpus + 4)
    # threads: 6 on 2 cores, fewer than a concurrency of 8. One thread per job slot, and two for
    # the worker's own calls (asyncio.to_thread).
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=sum(shares) + 2, thread_name_prefix="flowstone-job")
    )
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
        "wait": wait,
        "install_signal_handlers": False,
    }
    names = [name] if len(shares) == 1 else [f"{name or 'worker'}-{i + 1}" for i in range(len(shares))]
    watch = asyncio.create_task(_watch_lost_jobs(svc, current, stopping))
    try:
        while True:
            error: BaseException | None = None
            try:
                async with app.open_async():
                    app.perform_import_paths()  # type: ignore[no-untyped-call]
                    current[:] = [
                        procrastinate_worker.Worker(app=app, concurrency=share, name=loop_name, **options)
                        for share, loop_name in zip(shares, names, strict=True)
                    ]
                    await _run_loops(current, wait=wait)
            except Exception as exc:  # noqa: BLE001 - a database outage, told apart below
                error = exc
            if stopping.is_set():
                return 0
            if not wait and error is None:
                # The fetch loops end when a fetch finds nothing, which happens while a running
                # step has yet to defer its successors: drain again while jobs wait.
                if await asyncio.to_thread(worker.jobs_waiting, svc, queues):
                    await asyncio.sleep(0.05)
                    continue
                return 0
            logger.warning(
                "the worker stopped (%s); waiting for the database",
                f"{type(error).__name__}: {error}" if error else "a side task failed",
            )
            if not await _wait_for_database(url, svc.options.outage_timeout_s, stopping):
                give_up()  # a signal or the timeout, the database still away: exit now
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


async def _run_loops(workers: Sequence[procrastinate_worker.Worker], *, wait: bool) -> None:
    """Run the workers' fetch loops together until they end. Waiting for jobs, any loop that ends
    (a side task failed) or fails stops the others; draining (``wait=False``), the loops end one
    by one as the queues empty, and only a failure stops the others. The first error is raised
    once every loop has ended."""
    tasks = [asyncio.create_task(w.run()) for w in workers]  # type: ignore[no-untyped-call]
    try:
        pending: set[asyncio.Task[None]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if pending and (wait or any(not t.cancelled() and t.exception() is not None for t in done)):
                for running in workers:
                    running.stop()  # type: ignore[no-untyped-call]
                await asyncio.wait(pending)
                break
    finally:
        for task in tasks:
            task.cancel()  # none is left running but after a cancellation of this coroutine
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


async def _watch_lost_jobs(
    svc: services.Services, current: list[procrastinate_worker.Worker], stopping: asyncio.Event
) -> None:
    """Every recovery interval, compare the jobs Postgres says each of this process's workers (one
    per fetch loop) is doing with those it runs, and hand back those missing twice in a row
    (:func:`flowstone.queue.worker.hand_back_lost_jobs`). The running sets are read here, in the
    event loop; the database in a thread."""
    interval = max(1.0, float(svc.options.recovery_interval_s))
    suspects: dict[int, set[int]] = {}  # per worker id (a new worker after an outage: afresh)
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
        if stopping.is_set():
            continue
        watched = {w.worker_id: w for w in current if w.worker_id is not None}
        suspects = {k: v for k, v in suspects.items() if k in watched}
        for owner, running_worker in watched.items():
            contexts = list(running_worker._running_jobs.values())  # Procrastinate has no public accessor
            running = {c.job.id for c in contexts if c.job.id is not None}
            try:
                suspects[owner] = await asyncio.to_thread(
                    worker.hand_back_lost_jobs, svc, owner, running, suspects.get(owner, set())
                )
            except Exception as exc:  # noqa: BLE001 - an outage: the supervisor deals with it; look again later
                logger.debug("could not compare this worker's jobs with the database: %s", exc)
                suspects[owner] = set()


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
