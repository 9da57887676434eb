"""Every code block in README.md and docs/ is executed here, or marked illustrative.

A fenced block preceded by the line ``<!-- illustrative -->`` is skipped. Otherwise:
``python`` blocks run (each file's blocks in order, in one namespace) against a test database;
``sql`` blocks run against a database where a small pipeline has run; ``mermaid`` blocks are
diagrams. Any other language must be marked illustrative.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

import flowstone as fs
from tests import pg

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
MARK = "<!-- illustrative -->"


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    code: str
    illustrative: bool


def blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match:
            lang = match.group(1)
            start = i
            body = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            yield Block(path, start + 1, lang, "\n".join(body), previous == MARK)
        i += 1


ALL = [b for path in FILES if path.exists() for b in blocks(path)]


def _id(block: Block) -> str:
    return f"{block.path.relative_to(ROOT)}:{block.line}"


def test_other_blocks_are_marked_illustrative():
    unmarked = [
        f"{_id(b)} (```{b.lang or 'no language'})"
        for b in ALL
        if not b.illustrative and b.lang not in ("python", "sql", "mermaid")
    ]
    assert unmarked == [], f"mark these blocks {MARK}"
    assert any(b.lang == "python" and not b.illustrative for b in ALL), "no executed python block found"


@pytest.mark.parametrize(
    "path",
    [p for p in FILES if any(b.path == p and b.lang == "python" and not b.illustrative for b in ALL)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_python_blocks_run(path: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FLOWSTONE_DATABASE_URL", database_url)
    monkeypatch.setenv("FLOWSTONE_HOME", str(tmp_path))
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for block in (b for b in ALL if b.path == path and b.lang == "python" and not b.illustrative):
        try:
            exec(compile(block.code, _id(block), "exec"), namespace)  # noqa: S102 - the docs' own code
        except Exception as exc:  # noqa: BLE001 - report which block failed
            pytest.fail(f"{_id(block)} raised {type(exc).__name__}: {exc}")
    runtime = namespace.get("runtime")
    if isinstance(runtime, fs.FlowStone):
        runtime.close()


@fs.asset
def numbers() -> list[int]:
    return [1, 2, 3]


@fs.asset
def total(numbers: list[int]) -> int:
    return sum(numbers)


@fs.asset
def gated(context: fs.AssetContext, total: int) -> int:
    context.require_approval("ok?")
    return total


SQL_BLOCKS = [b for b in ALL if b.lang == "sql" and not b.illustrative]


@pytest.fixture(scope="module")
def populated(pg_server, template_db) -> Iterator[str]:
    with pg.fresh_database(pg_server, template=template_db) as url:
        with fs.FlowStone(fs.Definitions(assets=[numbers, total, gated]), database_url=url) as rt:
            rt.materialize("total", with_upstream=True)
            rt.materialize("gated", with_upstream=True, raise_on_error=False)
            rt.submit("total", with_upstream=True)
        yield url


@pytest.mark.parametrize("block", SQL_BLOCKS, ids=_id)
def test_sql_blocks_run(block: Block, populated: str):
    with psycopg.connect(populated) as conn:
        for statement in (s.strip() for s in block.code.split(";")):
            if statement and not all(line.strip().startswith("--") for line in statement.splitlines()):
                try:
                    conn.execute(statement)  # type: ignore[arg-type]
                except psycopg.Error as exc:
                    pytest.fail(f"{_id(block)}: {exc}")
                finally:
                    conn.rollback()
