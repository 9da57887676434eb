"""MkDocs hook: the command-line reference page, generated from ``flowstone.cli.build_parser()``.

The page (``reference/cli.md``) exists only in the build: it is rendered from the argument parser
every time the site is built, so it cannot drift from the code. ``tests/unit/test_cli_reference.py``
checks that it lists every subcommand.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from flowstone import cli

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files

PAGE = "reference/cli.md"
WIDTH = 100  # columns of the help text, whatever the terminal that builds the site

INTRO = """\
# Command line

Generated from `flowstone --help` and each command's `--help` when the site is built.

Every command that runs your assets takes `--defs module:attribute` (a `FlowStone` runtime or a
`Definitions`; default `FLOWSTONE_DEFS`); the commands that read or decide need only the database
(`--database-url`, default `FLOWSTONE_DATABASE_URL`, else the embedded Postgres in
`$FLOWSTONE_HOME`). Errors are one line on stderr naming what was wrong.
"""


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[argparse.ArgumentParser, str]]:
    """Every subcommand below ``parser``, depth first in the order of ``--help``, with its help line."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield sub, helps.get(name, "")
                yield from subcommands(sub)


@contextlib.contextmanager
def _columns(width: int) -> Iterator[None]:
    """argparse wraps help at ``$COLUMNS``: fix it for the duration."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def render() -> str:
    """The page's Markdown."""
    parser = cli.build_parser()
    with _columns(WIDTH):
        lines = [INTRO, "| Command | What it does |", "|---|---|"]
        commands = list(subcommands(parser))
        for sub, help_line in commands:
            anchor = sub.prog.replace(" ", "-")
            lines.append(f"| [`{sub.prog}`](#{anchor}) | {help_line.replace('|', '/')} |")
        lines += ["", "## flowstone", "", "```text", parser.format_help().rstrip(), "```", ""]
        for sub, _ in commands:
            depth = min(sub.prog.count(" ") + 1, 4)  # flowstone db -> ##, flowstone db upgrade -> ###
            lines += [f"{'#' * depth} {sub.prog}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated page to the site's files."""
    from mkdocs.structure.files import File  # noqa: PLC0415 - mkdocs is only there when building

    files.append(File.generated(config, PAGE, content=render()))
    return files
