"""Upgrade path: a database made by FlowStone 0.2.0, with runs in every state it can leave behind,
upgrades with `flowstone db upgrade` and then works with this version: every read path, deciding
its open approval, finishing its queued runs on a new worker.

The 0.2.0 code is ``data/flowstone-0.2.0.tar.gz``: ``git archive d7e53ea flowstone sql`` of the
0.2.0 release commit (its migrations 0001-0005 are byte-identical to this tree's, which the test
checks). A subprocess runs it against an empty database, as a 0.2.0 deployment would have; its
workers are stopped (there are none) before the upgrade, as docs/operations.md asks."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from flowstone.cli import main as cli_main
from flowstone.store import migrations
from tests.integration.queue_harness import FOOTER, HEADER, Pipeline, eventually

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
OLD = Path(__file__).parent / "data" / "flowstone-0.2.0.tar.gz"

BODY = """
days = fs.DailyPartitions(start="2025-01-01", end="2025-01-31")


@fs.asset(partitions=days)
def raw() -> int:
    return 1


@fs.asset(partitions=days)
def clean(raw: int) -> int:
    return raw + 1


@fs.asset
def flaky() -> int:
    raise ValueError("boom")


@fs.asset(approval=fs.ApprovalGate(message="ship it?"))
def gated() -> int:
    return 3


@fs.asset
def later() -> int:
    return 4


defs = fs.Definitions(assets=[raw, clean, flaky, gated, later])
"""

# Run by the 0.2.0 code: runs that succeeded, failed, wait for an approval, were rejected, were
# cancelled, and are queued with no worker to take them (a run and a backfill).
SEED = """
import importlib.util
import json
import os
import sys

import flowstone as fs

assert fs.__version__ == "0.2.0", fs.__version__
from flowstone.store import migrations

migrations.upgrade(sys.argv[1])
spec = importlib.util.spec_from_file_location("pipe", sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
rt = module.runtime
ids = {}
ids["succeeded"] = rt.materialize("clean", "2025-01-01", with_upstream=True).run_id
rt.backfill_sync("raw", start="2025-01-02", end="2025-01-04")
ids["failed"] = rt.materialize("flaky", raise_on_error=False).run_id
rejected = rt.materialize("gated", raise_on_error=False).run_id
(ask,) = [a for a in rt.approvals.list() if a.run_id == rejected]
rt.approvals.reject(ask.id, by="qa", reason="not yet")
ids["rejected"] = rejected
ids["waiting"] = rt.materialize("gated", raise_on_error=False).run_id
cancelled = rt.submit("clean", ["2025-01-05"], with_upstream=True)
cancelled.cancel()
ids["cancelled"] = cancelled.run_id
ids["queued"] = rt.submit("later").run_id
ids["backfill"] = rt.backfill("raw", start="2025-01-06", end="2025-01-08").run_id
rt.close()
print(json.dumps({k: str(v) for k, v in ids.items()}))
"""


def _old_tree(tmp_path: Path) -> Path:
    target = tmp_path / "flowstone-0.2.0"
    with tarfile.open(OLD) as tar:
        tar.extractall(target, filter="data")
    return target


def _seed(pipe_dir: Path, database_url: str) -> dict[str, str]:
    """Write the database with the 0.2.0 code, in a subprocess that cannot import this tree."""
    old = _old_tree(pipe_dir)
    module = pipe_dir / "pipe_0_2_0.py"
    module.write_text(HEADER + BODY + FOOTER.format(options=""))
    script = pipe_dir / "seed_0_2_0.py"
    script.write_text(SEED)
    env = dict(
        os.environ,
        PYTHONPATH=str(old),
        FLOWSTONE_DATABASE_URL=database_url,
        FLOWSTONE_HOME=str(pipe_dir / "home"),  # where Pipeline(pipe_dir, ...) keeps outputs
        FLOWSTONE_TEST_MARKERS=str(pipe_dir),
    )
    done = subprocess.run(
        [sys.executable, str(script), database_url, str(module)],
        cwd=pipe_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _statuses(database_url: str) -> dict[str, str]:
    with psycopg.connect(database_url) as conn:
        return {str(r[0]): r[1] for r in conn.execute("SELECT run_id, status FROM flowstone_runs")}


def test_released_migrations_are_those_of_0_2_0(tmp_path: Path) -> None:
    old = _old_tree(tmp_path)
    shipped = sorted((old / "sql" / "migrations").glob("*.sql"))
    assert [p.name for p in shipped][-1] == "0005_output_retention.sql"
    for path in shipped:
        now = ROOT / "sql" / "migrations" / path.name
        assert hashlib.sha256(now.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()


def test_a_0_2_0_database_upgrades_and_works(
    tmp_path: Path,
    empty_database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = empty_database_url
    monkeypatch.syspath_prepend(str(tmp_path))  # the CLI imports the pipeline module by name
    ids = _seed(tmp_path, url)
    before = _statuses(url)
    assert Counter(before.values()) == Counter(
        {"succeeded": 2, "failed": 2, "waiting_approval": 1, "cancelled": 1, "queued": 2}
    ), before

    assert migrations.pending(url), "0.2.0's database has migrations to apply"
    assert cli_main(["db", "upgrade", "--database-url", url]) == 0
    assert migrations.pending(url) == []
    assert _statuses(url) == before  # the upgrade changed no run

    pipe = Pipeline(tmp_path, url, BODY)
    try:
        rt = pipe.runtime
        # Read paths: outputs and lineage written by 0.2.0, the reports, the inbox, the audit log.
        assert rt.load("clean", "2025-01-01") == 2
        assert [m.asset for m in rt.lineage.upstream("clean", "2025-01-01")] == ["raw"]
        assert rt.latest("raw", "2025-01-03") is not None
        summary = rt.store.reports.assets()
        assert summary["raw"].succeeded_partitions == 4
        assert summary["flaky"].by_status == {"failed": 1}
        runs = {str(r.run.run_id): r.run.status for r in rt.store.reports.runs(limit=50)}
        assert runs == before
        assert rt.staleness("clean")  # computed from 0.2.0's lineage
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM flowstone_audit_log").fetchone()
        assert row is not None
        assert row[0] > 0
        capsys.readouterr()
        assert cli_main(["status", "--defs", f"{pipe.name}:runtime"]) == 0
        assert "raw" in capsys.readouterr().out

        # Writes: decide the open approval and resume; a new worker finishes the queued runs.
        (ask,) = rt.approvals.list()
        assert str(ask.run_id) == ids["waiting"]
        rt.approvals.approve(ask.id, by="qa")
        assert rt.resume(ids["waiting"]).success
        pipe.start_worker()
        eventually(
            lambda: (
                _statuses(url)[ids["queued"]] == "succeeded"
                and _statuses(url)[ids["backfill"]] == "succeeded"
            ),
            timeout=60,
            what="the queued 0.2.0 runs finished on a 0.3 worker",
        )
        assert rt.load("later") == 4
        assert rt.load("raw", "2025-01-08") == 1
        assert _statuses(url)[ids["rejected"]] == "failed"
    finally:
        pipe.stop()
