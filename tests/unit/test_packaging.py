"""The wheel ships the SQL files, py.typed, the console script and the UI's templates and static files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from flowstone.store import sqlfiles

ROOT = Path(__file__).resolve().parents[2]


def _ui_assets() -> list[Path]:
    base = ROOT / "flowstone" / "ui"
    return [p for folder in ("templates", "static") for p in (base / folder).iterdir() if p.is_file()]


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
    ui_files = {f"flowstone/ui/{p.relative_to(ROOT / 'flowstone' / 'ui').as_posix()}" for p in _ui_assets()}
    assert ui_files
    assert ui_files <= names  # the UI's templates and static files: no build step, shipped as they are
    metadata = next(n for n in names if n.endswith("METADATA"))
    assert "Provides-Extra: ui" in zipfile.ZipFile(wheel).read(metadata).decode()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "flowstone = flowstone.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
