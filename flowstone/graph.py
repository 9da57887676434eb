"""The asset graph: names and edges, nothing else.

:class:`AssetGraph` knows which asset reads which. It orders assets topologically (deterministically:
ties are broken by name), finds cycles, walks upstream and downstream, parses selections such as
``"+sum"`` and renders the graph as text or Mermaid. It never imports, calls or inspects an asset
function, so it is safe to build from names that came from outside (invariant I3).

Edges point the way data flows: ``a -> b`` means ``b`` reads (depends on) ``a``.
"""

from __future__ import annotations

import difflib
import heapq
import re
from collections import deque
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet

from flowstone import errors

__all__ = ["ASSET_NAME_PATTERN", "AssetGraph", "did_you_mean", "shown"]

ASSET_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
"""Asset names: an ASCII identifier of at most 128 characters (use ``fullmatch``)."""

# One selection token: optional "[depth]+" prefix (upstream), the name, optional "+[depth]" suffix
# (downstream). "+sum" = sum and every ancestor, "2+sum" = sum and two layers of ancestors.
_TOKEN = re.compile(r"^(?:(?P<up>\d{0,9})\+)?(?P<name>[^+\s,]+)(?:\+(?P<down>\d{0,9}))?$")
_SEPARATORS = re.compile(r"[,\s]+")
# Suggestions are only computed for names of a plausible length: difflib is quadratic and a hostile
# caller may send megabytes.
_MAX_SUGGESTABLE_LEN = 200
_MAX_SHOWN_LEN = 80


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'numbers'?"`` for the closest candidate, or ``""`` when none is close."""
    if len(name) > _MAX_SUGGESTABLE_LEN:
        return ""
    matches = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


def shown(name: str) -> str:
    """``repr(name)``, shortened so a hostile multi-megabyte name cannot flood a message or log."""
    if len(name) <= _MAX_SHOWN_LEN:
        return repr(name)
    return f"{name[:_MAX_SHOWN_LEN]!r}... ({len(name)} characters)"


class AssetGraph:
    """An immutable directed graph of asset names.

    ``deps`` maps every asset to the set of assets it reads (its direct upstream). Every upstream
    name must itself be a key: :class:`~flowstone.definitions.Definitions` reports unknown names
    before it builds the graph. The graph may contain cycles (so that they can be reported with
    :meth:`find_cycles`); the methods that need an order raise on a cyclic graph.
    """

    def __init__(self, deps: Mapping[str, AbstractSet[str]]) -> None:
        unknown = sorted(
            f"{up!r} (upstream of {name!r})" for name, ups in deps.items() for up in ups if up not in deps
        )
        if unknown:
            raise errors.DefinitionError(
                [f"the graph names an asset it does not contain: {u}" for u in unknown]
            )
        self._upstream: dict[str, frozenset[str]] = {n: frozenset(u) for n, u in deps.items()}
        downstream: dict[str, set[str]] = {name: set() for name in deps}
        for name, ups in self._upstream.items():
            for up in ups:
                downstream[up].add(name)
        self._downstream: dict[str, frozenset[str]] = {n: frozenset(d) for n, d in downstream.items()}
        self._order: list[str] | None = None
        self._index: dict[str, int] = {}

    # -- basic queries ---------------------------------------------------------------------------

    @property
    def names(self) -> frozenset[str]:
        """Every asset name in the graph."""
        return frozenset(self._upstream)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._upstream

    def __len__(self) -> int:
        return len(self._upstream)

    def __repr__(self) -> str:
        return f"AssetGraph({len(self)} assets)"

    def _check_known(self, names: Iterable[str]) -> None:
        unknown = [n for n in names if n not in self]
        if unknown:
            messages = [f"unknown asset {shown(n)}{did_you_mean(n, self._upstream)}" for n in unknown]
            raise errors.UnknownAssetError(
                "; ".join(messages),
                asset=_plausible_name(unknown[0]),
                retryable=False,
            )

    # -- order and cycles ------------------------------------------------------------------------

    def topological_order(self, names: Iterable[str] | None = None) -> list[str]:
        """Every asset (or only ``names``) ordered so that each comes after everything it reads.

        The order is Kahn's algorithm with a heap, so ties are broken by name and the result is the
        same on every call and every machine. A subset keeps the order of the whole graph, so it
        also respects dependencies that pass through assets outside the subset. Unknown names raise
        :class:`~flowstone.errors.UnknownAssetError`; a cyclic graph raises
        :class:`~flowstone.errors.DefinitionError` listing the cycles.
        """
        order = self._full_order()
        if names is None:
            return list(order)
        wanted = set(_as_names(names))
        self._check_known(sorted(wanted))
        return sorted(wanted, key=self._index.__getitem__)

    def _full_order(self) -> list[str]:
        if self._order is None:
            remaining = {name: len(ups) for name, ups in self._upstream.items()}
            ready = [name for name, count in remaining.items() if count == 0]
            heapq.heapify(ready)
            order: list[str] = []
            while ready:
                name = heapq.heappop(ready)
                order.append(name)
                for down in self._downstream[name]:
                    remaining[down] -= 1
                    if remaining[down] == 0:
                        heapq.heappush(ready, down)
            if len(order) != len(self._upstream):
                raise errors.DefinitionError([f"cycle: {' -> '.join(cycle)}" for cycle in self.find_cycles()])
            self._order = order
            self._index = {name: i for i, name in enumerate(order)}
        return self._order

    def find_cycle(self) -> list[str] | None:
        """One cycle, e.g. ``["a", "b", "c", "a"]`` (``a -> b``: ``b`` reads ``a``), or ``None``."""
        cycles = self.find_cycles()
        return cycles[0] if cycles else None

    def find_cycles(self) -> list[list[str]]:
        """One cycle per strongly connected component that has one, sorted.

        Each cycle starts and ends at the smallest name of its component and is a shortest cycle
        through it, so the result is deterministic. Listing every elementary cycle could be
        exponential; one per component is enough to show the user every tangle to undo.
        """
        cycles = []
        for component in self._strongly_connected_components():
            start = min(component)
            if len(component) > 1 or start in self._upstream[start]:
                cycles.append(self._shortest_cycle_through(start, component))
        return sorted(cycles)

    def _strongly_connected_components(self) -> list[set[str]]:
        """Kosaraju's algorithm, iterative so long chains cannot hit the recursion limit."""
        finished: list[str] = []
        seen: set[str] = set()
        for root in sorted(self._upstream):
            if root in seen:
                continue
            seen.add(root)
            stack = [(root, iter(sorted(self._downstream[root])))]
            while stack:
                node, children = stack[-1]
                child = next((c for c in children if c not in seen), None)
                if child is None:
                    stack.pop()
                    finished.append(node)
                else:
                    seen.add(child)
                    stack.append((child, iter(sorted(self._downstream[child]))))
        components: list[set[str]] = []
        assigned: set[str] = set()
        for root in reversed(finished):
            if root in assigned:
                continue
            component = {root}
            assigned.add(root)
            todo = [root]
            while todo:
                for up in self._upstream[todo.pop()]:
                    if up not in assigned:
                        assigned.add(up)
                        component.add(up)
                        todo.append(up)
            components.append(component)
        return components

    def _shortest_cycle_through(self, start: str, component: set[str]) -> list[str]:
        parent: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for child in sorted(self._downstream[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if child not in parent:
                    parent[child] = node
                    queue.append(child)
        raise AssertionError("unreachable: a strongly connected component always has a cycle")

    # -- walking ---------------------------------------------------------------------------------

    def upstream(self, name: str, *, depth: int | None = None) -> set[str]:
        """Everything ``name`` reads, directly (``depth=1``) or transitively (``depth=None``).

        ``name`` itself is not included (unless it lies on a cycle through itself).
        """
        return self._walk(name, self._upstream, depth)

    def downstream(self, name: str, *, depth: int | None = None) -> set[str]:
        """Everything that reads ``name``, directly (``depth=1``) or transitively (``None``)."""
        return self._walk(name, self._downstream, depth)

    def _walk(self, name: str, edges: Mapping[str, frozenset[str]], depth: int | None) -> set[str]:
        self._check_known([name])
        if depth is not None and depth < 0:
            raise ValueError(f"depth must be >= 0 or None, not {depth}")
        found: set[str] = set()
        frontier = {name}
        level = 0
        while frontier and (depth is None or level < depth):
            frontier = {n for node in frontier for n in edges[node]} - found
            found |= frontier
            level += 1
        return found

    # -- selection -------------------------------------------------------------------------------

    def select(self, selection: str | Iterable[str]) -> list[str]:
        """The assets a selection names, in topological order.

        A selection is a string or a list of strings; each string holds tokens separated by
        commas or whitespace:

        - ``*``: every asset;
        - ``sum``: that asset;
        - ``+sum``: it and everything upstream of it; ``2+sum``: it and two layers upstream;
        - ``numbers+``: it and everything downstream; ``numbers+1``: one layer downstream;
        - ``+x+``: both directions.

        An empty selection selects nothing (``[]``): callers that need at least one asset say so.
        Unknown names and malformed tokens raise :class:`~flowstone.errors.UnknownAssetError`,
        with a suggestion when a known name is close.
        """
        chosen: set[str] = set()
        problems: list[str] = []
        first_unknown: str | None = None
        for item in _tokens(selection):
            if item == "*":
                chosen.update(self._upstream)
                continue
            match = _TOKEN.fullmatch(item)
            if match is None:
                problems.append(
                    f"{shown(item)} is not a valid selection: use 'name', '+name' (with its "
                    "upstream), 'name+' (with its downstream), '+name+' (both) or '*' (all)"
                )
                continue
            name = match["name"]
            if name not in self:
                problems.append(f"unknown asset {shown(name)}{did_you_mean(name, self._upstream)}")
                first_unknown = first_unknown or name
                continue
            chosen.add(name)
            if match["up"] is not None:
                chosen |= self.upstream(name, depth=_depth(match["up"]))
            if match["down"] is not None:
                chosen |= self.downstream(name, depth=_depth(match["down"]))
        if problems:
            raise errors.UnknownAssetError(
                "; ".join(problems),
                asset=_plausible_name(first_unknown),
                retryable=False,
            )
        return self.topological_order(chosen)

    # -- rendering -------------------------------------------------------------------------------

    def ascii_tree(self, roots: Iterable[str] | None = None) -> str:
        """The graph as an indented tree, following data downstream from ``roots``.

        ``roots`` defaults to the assets that read nothing (plus, on a cyclic graph, whatever those
        do not reach). An asset reached a second time is printed again with ``(see above)`` instead
        of repeating its subtree. Children are listed by name.
        """
        if roots is None:
            starts = sorted(n for n, ups in self._upstream.items() if not ups)
            explicit = False
        else:
            starts = list(_as_names(roots))
            self._check_known(starts)
            explicit = True
        lines: list[str] = []
        printed: set[str] = set()
        for root in starts:
            self._render_tree(root, lines, printed)
        while not explicit and len(printed) < len(self._upstream):
            # Nodes only reachable through a cycle have no source; print them as roots too.
            self._render_tree(min(set(self._upstream) - printed), lines, printed)
        return "\n".join(lines)

    def _render_tree(self, root: str, lines: list[str], printed: set[str]) -> None:
        # Iterative depth-first walk: (name, prefix for its own line, prefix for its children).
        stack: list[tuple[str, str, str]] = [(root, "", "")]
        while stack:
            name, own_prefix, child_prefix = stack.pop()
            children = sorted(self._downstream[name])
            if name in printed and children:
                lines.append(f"{own_prefix}{name} (see above)")
                continue
            lines.append(f"{own_prefix}{name}")
            printed.add(name)
            for position, child in reversed(list(enumerate(children))):
                last = position == len(children) - 1
                stack.append(
                    (
                        child,
                        child_prefix + ("└── " if last else "├── "),
                        child_prefix + ("    " if last else "│   "),
                    )
                )

    def mermaid(self) -> str:
        """A Mermaid ``flowchart`` of the graph (nodes in topological order when acyclic).

        Nodes get generated ids (``a0``, ``a1``...) and the name as a quoted label, because a
        Mermaid keyword such as ``end`` is a valid asset name.
        """
        try:
            nodes = self._full_order()
        except errors.DefinitionError:
            nodes = sorted(self._upstream)
        ids = {name: f"a{i}" for i, name in enumerate(nodes)}
        lines = ["flowchart TD"]
        lines += [f'    {ids[name]}["{_mermaid_label(name)}"]' for name in nodes]
        lines += [
            f"    {ids[up]} --> {ids[name]}"
            for name in nodes
            for up in sorted(self._upstream[name], key=ids.__getitem__)
        ]
        return "\n".join(lines)

    def dot(self) -> str:
        """A Graphviz ``digraph`` of the graph, left to right, names quoted."""
        try:
            nodes = self._full_order()
        except errors.DefinitionError:
            nodes = sorted(self._upstream)
        lines = ["digraph flowstone {", "    rankdir=LR;"]
        lines += [f"    {_dot_id(name)};" for name in nodes]
        lines += [
            f"    {_dot_id(up)} -> {_dot_id(name)};" for name in nodes for up in sorted(self._upstream[name])
        ]
        return "\n".join([*lines, "}"])

    def subgraph(self, names: Iterable[str]) -> AssetGraph:
        """The graph of ``names`` only, with the edges between them."""
        keep = set(_as_names(names))
        self._check_known(keep)
        return AssetGraph({n: self._upstream[n] & keep for n in keep})


def _dot_id(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _as_names(names: Iterable[str]) -> list[str]:
    items = [names] if isinstance(names, str) else list(names)
    for item in items:
        if not isinstance(item, str):
            raise errors.UnknownAssetError(
                f"asset names are strings, not {type(item).__name__}", retryable=False
            )
    return items


def _tokens(selection: str | Iterable[str]) -> list[str]:
    return [t for part in _as_names(selection) for t in _SEPARATORS.split(part) if t]


def _plausible_name(name: str | None) -> str | None:
    """The name for an error's ``asset`` field, unless it cannot be any asset's name."""
    return name if name is not None and ASSET_NAME_PATTERN.fullmatch(name) else None


def _depth(digits: str) -> int | None:
    return int(digits) if digits else None


def _mermaid_label(name: str) -> str:
    return name.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")
