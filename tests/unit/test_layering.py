"""Lower layers never import higher ones, and no flowstone module imports itself back (DESIGN.md §1,
ADR 0010, ADR 0012).

Every import counts: at module level, inside functions, and under ``if TYPE_CHECKING:`` (a type-only
import is still an import, and a cycle through one is still a knot). Importing ``a.b.c`` also
imports the packages ``a`` and ``a.b`` (their ``__init__``), unless the importer lives inside them.
The root package ``flowstone`` re-exports the public names and is left out of the graph: importing
any submodule runs it first, which Python handles.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "flowstone"

LAYERS: list[set[str]] = [
    {
        "_version",
        "errors",
        "events",
        "telemetry",
        "settings",
        "partition_keys",
        "codec",
        "codec_decode",
        "identifiers",
        "status",
        "retry",
    },
    {"partition_base", "time_partitions", "partition_mappings", "partitions", "dynamic_partitions"},
    {"resources", "io", "approval_types", "graph", "context", "pools"},
    {"assets", "asset_checks", "definitions", "schedules", "testing", "snapshot", "retention_policy"},
    {"store"},
    {
        "planning",
        "results",
        "services",
        "lineage",
        "startup",
        "audit_log",
        "capture",
        "step_inputs",
        "step_outcomes",
        "data_api",
    },
    {"execution", "run_lifecycle", "local", "retention", "slots", "prune", "checking", "memoize"},
    {"queue", "approvals", "automation"},
    {"runtime"},
    {"cli", "ui"},
]


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name below ``flowstone`` (packages by their name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    top = module.split(".", maxsplit=1)[0]
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"module flowstone.{module} has no layer: add it to LAYERS")


def _resolve(dotted: str) -> list[str]:
    """The modules an import of ``flowstone.<dotted>`` loads: the module and its packages."""
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in MODULES]


def _imports(path: Path) -> set[str]:
    """The flowstone modules a file imports, anywhere in it (``TYPE_CHECKING`` blocks included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    named: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "flowstone":
            base = node.module.removeprefix("flowstone").lstrip(".")
            for alias in node.names:  # `from flowstone.x import y`: y may be a module or a name
                candidate = f"{base}.{alias.name}" if base else alias.name
                named.add(candidate if candidate in MODULES else base)
        elif isinstance(node, ast.Import):
            named.update(
                a.name.removeprefix("flowstone.") for a in node.names if a.name.startswith("flowstone.")
            )
    return {module for name in named if name for module in _resolve(name)}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        graph[module] = {m for m in _imports(path) if m != module and m not in own_packages}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_lower_layers_never_import_higher_ones():
    violations = [
        f"flowstone.{module} (layer {_layer(module)}) imports flowstone.{imported} (layer {_layer(imported)})"
        for module, imported_set in sorted(_graph().items())
        for imported in sorted(imported_set)
        if _layer(imported) > _layer(module)
    ]
    assert violations == []


def test_no_import_cycle_among_flowstone_modules():
    assert _cycles(_graph()) == []


def test_the_layering_check_sees_a_violation_and_a_cycle():
    assert "errors" in _imports(MODULES["store.base"])  # a real import is seen
    assert _layer("store.base") > _layer("errors")
    assert _layer("cli.runs") > _layer("runtime")
    # a type-only import counts, and a cycle through it is found
    tree = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(tree) == [["a", "b", "c"]]
    # importing a submodule loads its package: the worker is not loaded through the client
    assert "queue" in _imports(MODULES["automation"])
    assert "queue.worker" not in _graph()["queue"]


def test_modules_stay_small():
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > 500} == {}
