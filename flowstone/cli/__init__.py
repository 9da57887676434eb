"""The ``flowstone`` command line.

``flowstone db upgrade|url|status|stop`` manage the database; ``materialize``, ``backfill``,
``status`` and ``lineage`` work on the assets of ``--defs module:attribute`` (or ``FLOWSTONE_DEFS``).
Errors are printed as one line naming what was wrong (exit status 1); usage errors exit with 2.

The commands live in submodules by theme: ``db`` (the database), ``runs`` (materialize, submit,
backfill, runs, worker), ``assets`` (status, lineage, gc) and ``ops`` (approvals, schedules,
sensors); ``common`` holds what they share.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from flowstone import _version, errors
from flowstone.cli import assets, common, db, logs, ops, runs
from flowstone.cli.common import Handler, ProgressBar, load_target
from flowstone.cli.common import rt_partitions as rt_partitions  # importable from here, as before

__all__ = ["ProgressBar", "build_parser", "load_target", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="flowstone", description="Asset-first data orchestration on Postgres."
    )
    parser.add_argument("--version", action="version", version=f"flowstone {_version.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # the order of these calls is the order of the commands in `flowstone --help`
    db.add_commands(commands)
    runs.add_commands(commands)
    assets.add_query_commands(commands)
    logs.add_commands(commands)
    ops.add_approval_commands(commands)
    ops.add_automation_commands(commands)
    assets.add_gc_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowstone`` console script."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except errors.FlowStoneError as exc:
        common.err(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        common.err("interrupted")
        return 130
