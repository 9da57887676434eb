"""Release engineering: the wheel and sdist build, and the wheel installs into a fresh venv where
`flowstone --version` and `flowstone db upgrade` work against a real database."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import venv
from pathlib import Path

import psycopg
import pytest

from flowstone import _version

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_wheel_installs_into_a_fresh_venv_and_upgrades_a_database(tmp_path: Path, empty_database_url: str):
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--sdist",
            "--no-isolation",
            "--outdir",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob(f"flowstone-{_version.__version__}-*.whl")
    (sdist,) = dist.glob(f"flowstone-{_version.__version__}.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert any(n.endswith("sql/migrations/0001_core.sql") for n in names)
    assert any(n.endswith("flowstone/py.typed") for n in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    flowstone = env_dir / "bin" / "flowstone"
    version = subprocess.run(
        [str(flowstone), "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert version.stdout.strip() == f"flowstone {_version.__version__}"
    upgrade = subprocess.run(
        [str(flowstone), "db", "upgrade", "--database-url", empty_database_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,  # not the source tree: the SQL files must come from the installed wheel
    )
    assert upgrade.returncode == 0, upgrade.stderr
    with psycopg.connect(empty_database_url) as conn:
        row = conn.execute("SELECT to_regclass('flowstone_materializations') IS NOT NULL").fetchone()
    assert row == (True,)
