"""Real worker processes for queue tests: a pipeline module written to a temp dir, imported here
for submitting, and run by `flowstone worker` (or `procrastinate worker`) subprocesses."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import psycopg

HEADER = """
import os
import time
from pathlib import Path

import flowstone as fs

MARKERS = Path(os.environ["FLOWSTONE_TEST_MARKERS"])
"""

FOOTER = """
DEFAULTS = dict(stalled_after_s=2, heartbeat_interval_s=0.5, recovery_interval_s=1)
runtime = fs.FlowStone(defs, **{{**DEFAULTS, **dict({options})}})
app = runtime.procrastinate_app
"""


class Pipeline:
    """One pipeline module and the workers running it."""

    def __init__(self, tmp_path: Path, database_url: str, body: str, *, options: str = "") -> None:
        self.dir = tmp_path
        self.name = f"pipe_{uuid.uuid4().hex[:10]}"
        self.markers = tmp_path / "markers"
        self.markers.mkdir(exist_ok=True)
        self.database_url = database_url
        footer = FOOTER.format(options=options)  # options override the defaults
        (tmp_path / f"{self.name}.py").write_text(HEADER + textwrap.dedent(body) + footer)
        self.env = dict(
            os.environ,
            FLOWSTONE_DATABASE_URL=database_url,
            FLOWSTONE_HOME=str(tmp_path / "home"),
            FLOWSTONE_TEST_MARKERS=str(self.markers),
            PYTHONPATH=str(tmp_path),
        )
        os.environ["FLOWSTONE_TEST_MARKERS"] = str(self.markers)
        os.environ["FLOWSTONE_HOME"] = str(tmp_path / "home")
        spec = importlib.util.spec_from_file_location(self.name, tmp_path / f"{self.name}.py")
        assert spec is not None
        assert spec.loader is not None
        self.module: ModuleType = importlib.util.module_from_spec(spec)
        os.environ["FLOWSTONE_DATABASE_URL"] = database_url
        try:
            spec.loader.exec_module(self.module)
        finally:
            del os.environ["FLOWSTONE_DATABASE_URL"]
        self.workers: list[subprocess.Popen[str]] = []
        self.logs_open: list[IO[str]] = []

    @property
    def runtime(self) -> Any:
        return self.module.runtime

    def start_worker(
        self, *, concurrency: int = 4, procrastinate_cli: bool = False, args: tuple[str, ...] = ()
    ) -> subprocess.Popen[str]:
        if procrastinate_cli:
            command = [
                sys.executable, "-m", "procrastinate", f"--app={self.name}.app", "worker",
                f"--concurrency={concurrency}",
            ]  # fmt: skip
        else:
            command = [
                sys.executable, "-m", "flowstone.cli", "worker", "--defs", f"{self.name}:runtime",
                "--concurrency", str(concurrency), *args,
            ]  # fmt: skip
        log = (self.dir / f"worker-{len(self.workers)}.log").open("w")
        self.logs_open.append(log)
        proc = subprocess.Popen(
            command, cwd=self.dir, env=self.env, stdout=subprocess.DEVNULL, stderr=log, text=True
        )
        self.workers.append(proc)
        return proc

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs_open:
            log.close()
        self.runtime.close()

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.dir.glob("worker-*.log")))

    def sql(self, query: str, params: object = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def touch(self, name: str) -> None:
        (self.markers / name).touch()


def eventually(check: Callable[[], bool], *, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
