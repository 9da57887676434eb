"""``make demo`` (examples/demo.py) runs end to end, twice in a row on the same database.

The demo normally runs on the embedded Postgres; here ``FLOWSTONE_DATABASE_URL`` points it at this
test's database so that the suite does not start a second embedded server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import pg

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]


def _run_demo(database_url: str, home: Path) -> tuple[str, float]:
    env = dict(os.environ, FLOWSTONE_DATABASE_URL=database_url, FLOWSTONE_HOME=str(home))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "examples/demo.py"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    elapsed = time.monotonic() - started
    log = home / "demo-worker.log"
    assert done.returncode == 0, (done.stdout, done.stderr, log.read_text() if log.exists() else "")
    return done.stdout + done.stderr, elapsed


def test_demo_runs_end_to_end_twice(database_url: str, tmp_path: Path):
    for attempt in (1, 2):
        out, elapsed = _run_demo(database_url, tmp_path)
        assert elapsed < 60, f"run {attempt} took {elapsed:.1f}s"
        assert "$ flowstone db upgrade" in out
        assert "database is up to date: nothing to do" in out
        assert re.search(r"backfill 7 days \[#{30}\] 35/35 100\.0%", out)  # the progress display
        assert re.search(r"run \S+: succeeded \{'succeeded': 35\}", out)
        assert re.search(r"run \S+: waiting_approval \{'succeeded': 5, 'waiting_approval': 1\}", out)
        assert re.search(r"approval \d+: approved by demo at ", out)
        assert re.search(r"run \S+: succeeded \{'succeeded': 6\}", out)
        assert "published_kpis [2025-01-08] = {'day': datetime.date(2025, 1, 8)" in out
        assert re.search(r"published_kpis +1 +0 +0 +\d+ ", out)  # the status summary, one line per asset
        assert re.search(r"raw_orders +\d+ +0 +0 +\d+ ", out)
        assert re.search(  # partition keys decoded
            r"published_kpis \[2025-01-08\] #\d+ succeeded\n +└── daily_kpis \[2025-01-08\]", out
        )
        assert "worker stopped (exit status 0)" in out
        assert "demo succeeded in" in out
        log = (tmp_path / "demo-worker.log").read_text()
        assert " ERROR " not in log
        assert "Stopped worker" in log  # stopped by SIGTERM, gracefully
    # Reusable: every run finished, no job left to do but the approval timeouts (harmless no-ops).
    assert pg.count(database_url, "SELECT count(*) FROM flowstone_runs WHERE status <> 'succeeded'") == 0
    assert pg.count(database_url, "SELECT count(*) FROM flowstone_approvals WHERE status = 'approved'") == 2
    assert (
        pg.count(
            database_url,
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing') "
            "AND task_name = 'flowstone:run_step'",
        )
        == 0
    )
