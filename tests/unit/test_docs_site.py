"""The documentation site: the generated CLI reference lists every command, the API reference covers
``flowstone.__all__``, and ``mkdocs build --strict`` succeeds (what ``make docs`` and CI run)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import flowstone
from flowstone import cli

ROOT = Path(__file__).resolve().parents[2]


def _hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", ROOT / "docs" / "hooks" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path (``("db", "upgrade")``) the parser accepts, found by parsing ``--help``
    of each level rather than by the hook's own walk."""
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if action.choices and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found += _command_paths(sub, (*prefix, name))
    return found


def test_cli_reference_lists_every_subcommand():
    page = _hook("cli_reference").render()
    headings = set(re.findall(r"^#{2,4} (flowstone(?: [\w-]+)*)$", page, flags=re.MULTILINE))
    paths = _command_paths(cli.build_parser())
    assert len(paths) >= 25  # db, db upgrade, ..., ui: the walk found the real tree
    expected = {" ".join(("flowstone", *path)) for path in paths}
    assert expected - headings == set(), "commands missing from the CLI reference"
    assert {"flowstone db upgrade", "flowstone worker", "flowstone approvals", "flowstone ui"} <= headings
    assert "{list,show,approve,reject}" in page  # actions given as a positional choice are in the help
    # each section is that command's own --help, options included
    upgrade = page.split("### flowstone db upgrade", 1)[1].split("\n#", 1)[0]
    assert "usage: flowstone db upgrade" in upgrade
    assert "--database-url" in upgrade


def test_cli_reference_is_wrapped_at_a_fixed_width_whatever_the_terminal(monkeypatch: pytest.MonkeyPatch):
    hook = _hook("cli_reference")
    monkeypatch.setenv("COLUMNS", "40")
    narrow = hook.render()
    monkeypatch.setenv("COLUMNS", "200")
    assert hook.render() == narrow
    assert os.environ["COLUMNS"] == "200"  # restored


def test_api_reference_documents_every_public_name():
    pages = "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "reference" / "api").glob("*.md")
    )
    documented = set(re.findall(r"^::: flowstone\.(\w+)$", pages, flags=re.MULTILINE))
    assert set(flowstone.__all__) - {"__version__"} - documented == set()


def test_docstring_roles_become_plain_code():
    strip = _hook("docstring_roles").strip_roles
    html = "see :class:<code>~flowstone.errors.DefinitionError</code> and :meth:<code>Definitions.get</code>"
    assert strip(html) == "see <code>DefinitionError</code> and <code>Definitions.get</code>"
    assert strip("a :class:<code>X</code> b") == "a <code>X</code> b"
    assert strip("<code>:not-a-role:</code>") == "<code>:not-a-role:</code>"


@pytest.mark.slow
def test_mkdocs_build_strict_succeeds(tmp_path: Path):
    """`make docs`: warnings (a broken link or anchor, an unknown reference, a page not in the
    nav, a docstring mkdocstrings cannot parse) fail the build."""
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING" not in done.stderr
    cli_page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "flowstone db upgrade" in cli_page
    api_page = (site / "reference" / "api" / "runtime" / "index.html").read_text(encoding="utf-8")
    assert 'id="flowstone.FlowStone.materialize"' in api_page
    assert (site / "tutorial" / "index.html").exists()
