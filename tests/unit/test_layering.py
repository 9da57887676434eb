"""Lower layers never import higher ones (DESIGN.md §1; exceptions recorded in ADR 0010).

Each module of the package is given a layer; a module may import modules of its own layer or
lower ones. Imports under ``if TYPE_CHECKING:`` are for annotations only and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "flowstone"

LAYERS: list[set[str]] = [
    {"_version", "errors", "settings", "partition_keys", "codec", "identifiers"},
    {"partition_base", "time_partitions", "partition_mappings", "partitions"},
    {"resources", "io", "approval_types", "graph", "context"},
    {"definitions", "schedules"},
    {"store"},
    {"planning", "execution", "lineage"},
    {"results", "queue", "approvals", "automation"},
    {"runtime"},
    {"cli", "__init__"},
]


def _layer(module: str) -> int:
    top = module.split(".", maxsplit=1)[0]
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"module flowstone.{module} has no layer: add it to LAYERS")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flowstone"):
            base = node.module.removeprefix("flowstone").lstrip(".")
            if base:
                found.add(base)
            else:  # from flowstone import x, y
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("flowstone.") for a in node.names if a.name.startswith("flowstone.")
            )
    return found


def test_lower_layers_never_import_higher_ones():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = _layer(module)
        violations.extend(
            f"flowstone.{module} (layer {own}) imports flowstone.{imported}"
            for imported in sorted(_imports(path))
            if _layer(imported) > own
        )
    assert violations == []


def test_the_layering_check_sees_a_violation():
    store = next(p for p in (PACKAGE / "store").glob("base.py"))
    assert "errors" in _imports(store)  # a real import is seen
    assert _layer("store.base") > _layer("errors")
    assert _layer("cli.runs") > _layer("runtime")
