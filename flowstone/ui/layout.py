"""The asset graph laid out left to right, with grandalf's Sugiyama layout (layers, crossing
reduction, coordinates): this module only turns its answer into boxes and edge paths for an SVG.

grandalf lays layers out top to bottom; we give it each box with width and height swapped and swap
the coordinates back, so layers become columns. Disconnected parts of the graph are laid out one by
one and stacked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Box", "Layout", "layout"]

NODE_W = 180
"""A node's width in SVG units (its name is cut to fit)."""
NODE_H = 34
GAP = 40
"""The margin around the drawing and between stacked components."""


@dataclass(frozen=True)
class Box:
    """One asset's rectangle (top-left corner)."""

    name: str
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Layout:
    """Boxes by asset, edges as SVG path data, and the drawing's size."""

    boxes: dict[str, Box]
    edges: list[tuple[str, str, str]]
    """(upstream, downstream, path data)."""
    width: float
    height: float


class _View:
    """What grandalf reads and writes on a vertex: its size (swapped: layers run along x) and xy."""

    def __init__(self) -> None:
        self.w = NODE_H
        self.h = NODE_W
        self.xy: tuple[float, float] = (0.0, 0.0)


def layout(names: Sequence[str], deps: Mapping[str, Sequence[str]]) -> Layout:
    """Lay out ``names`` with an edge from each dependency to its dependent (unknown names ignored)."""
    from grandalf.graphs import Edge, Graph, Vertex  # noqa: PLC0415 - the `ui` extra, loaded on use
    from grandalf.layouts import SugiyamaLayout  # noqa: PLC0415

    vertices = {name: Vertex(name) for name in names}
    for vertex in vertices.values():
        vertex.view = _View()
    edges = [
        Edge(vertices[up], vertices[down])
        for down in names
        for up in deps.get(down, ())
        if up in vertices and up != down
    ]
    graph = Graph(list(vertices.values()), edges)
    boxes: dict[str, Box] = {}
    top = float(GAP)
    width = 0.0
    for component in graph.C:
        sugiyama = SugiyamaLayout(component)
        sugiyama.xspace = 16  # between boxes of one column (grandalf's x is our y)
        sugiyama.yspace = 70  # between columns, room for the edges
        sugiyama.init_all()
        sugiyama.draw()
        placed = {v.data: v.view.xy for v in component.sV}
        # grandalf's y runs along layers: it becomes our x; its x becomes our y
        min_x = min(y for _, y in placed.values())
        min_y = min(x for x, _ in placed.values())
        max_y = max(x for x, _ in placed.values())
        for name, (gx, gy) in placed.items():
            x = GAP + (gy - min_x)
            y = top + (gx - min_y)
            boxes[name] = Box(name, x, y, NODE_W, NODE_H)
            width = max(width, x + NODE_W + GAP)
        top += (max_y - min_y) + NODE_H + GAP
    paths = []
    for edge in edges:
        a, b = boxes[edge.v[0].data], boxes[edge.v[1].data]
        x1, y1 = a.x + a.w, a.y + a.h / 2
        x2, y2 = b.x, b.y + b.h / 2
        mid = (x1 + x2) / 2
        path = f"M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        paths.append((edge.v[0].data, edge.v[1].data, path))
    return Layout(boxes=boxes, edges=paths, width=max(width, 2 * GAP), height=max(top, 2 * GAP))
