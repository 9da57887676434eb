"""`flowstone db ...` as a user runs it: embedded Postgres in FLOWSTONE_HOME, then psql."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from flowstone import _version


def _flowstone(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowstone.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_version_flag():
    result = _flowstone("--version", env=dict(os.environ))
    assert result.returncode == 0
    assert result.stdout.strip() == f"flowstone {_version.__version__}"


def test_db_url_and_upgrade_against_an_explicit_database(empty_database_url):
    env = dict(os.environ, FLOWSTONE_DATABASE_URL=empty_database_url)
    assert _flowstone("db", "url", env=env).stdout.strip() == empty_database_url
    first = _flowstone("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert "applying 0001_core.sql" in first.stdout
    second = _flowstone("db", "upgrade", env=env)
    assert second.returncode == 0
    assert "nothing to do" in second.stdout
    status = _flowstone("db", "status", env=env)
    assert "up to date" in status.stdout


def test_bad_database_url_is_one_clear_line():
    env = dict(os.environ, FLOWSTONE_DATABASE_URL="postgresql://x:pw@127.0.0.1:1/none?connect_timeout=2")
    result = _flowstone("db", "upgrade", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: StoreError: cannot connect to the database")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_embedded_default_persists_and_works_with_psql(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FLOWSTONE_DATABASE_URL"}
    env["FLOWSTONE_HOME"] = str(tmp_path / "home")
    try:
        upgrade = _flowstone("db", "upgrade", env=env)
        assert upgrade.returncode == 0, upgrade.stderr
        url = _flowstone("db", "url", env=env).stdout.strip()
        assert str(tmp_path / "home" / "pgdata") in url
        listing = subprocess.run(
            [
                "psql",
                url,
                "-Atc",
                "SELECT tablename FROM pg_tables "
                "WHERE tablename LIKE 'flowstone_%' OR tablename = 'procrastinate_jobs'",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert {"flowstone_runs", "flowstone_materializations", "procrastinate_jobs"} <= set(
            listing.stdout.split()
        )
        assert "nothing to do" in _flowstone("db", "upgrade", env=env).stdout
    finally:
        stop = _flowstone("db", "stop", env=env)
        assert stop.returncode == 0, stop.stderr
