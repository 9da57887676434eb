"""``flowstone graph``: the asset graph (or a selection of it) as a tree, Mermaid or Graphviz dot."""

from __future__ import annotations

import argparse
from typing import Any

from flowstone.cli import common


def _cmd_graph(args: argparse.Namespace) -> int:
    with common.open_reader(args) as rt:
        graph = rt.defs.graph
        if args.selection:
            graph = graph.subgraph(graph.select(args.selection))
        if args.format == "mermaid":
            common.out(graph.mermaid())
        elif args.format == "dot":
            common.out(graph.dot())
        else:
            common.out(graph.ascii_tree())
        return 0


def add_command(commands: Any) -> None:
    """Add ``graph``."""
    graph = commands.add_parser(
        "graph",
        help="the asset graph as a tree, Mermaid or Graphviz dot",
        description="The asset graph, following data downstream (an asset reached twice is shown as "
        "'(see above)'). Without a selection: every asset.",
        epilog="example: flowstone graph +daily_kpis --format mermaid",
    )
    common.add_common(graph)
    graph.add_argument("selection", nargs="*", help='assets or selections ("+report", "numbers+", "*")')
    graph.add_argument(
        "--format", choices=["tree", "mermaid", "dot"], default="tree", help="output format (default tree)"
    )
    graph.set_defaults(handler=_cmd_graph)
