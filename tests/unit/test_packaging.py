"""The wheel ships the SQL files, py.typed and the console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from flowstone.store import sqlfiles

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_contains_sql_files_and_py_typed(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    (wheel,) = tmp_path.glob("flowstone-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"flowstone/sql/{path.relative_to(sqlfiles.sql_dir()).as_posix()}"
        for path in sqlfiles.sql_dir().rglob("*.sql")
    }
    assert expected
    assert expected <= names
    assert "flowstone/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "flowstone = flowstone.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
