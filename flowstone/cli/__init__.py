"""The ``flowstone`` command line.

``flowstone db upgrade|url|status|stop`` manage the database; ``materialize``, ``submit``,
``backfill`` and ``worker`` run the assets of ``--defs module:attribute`` (or ``FLOWSTONE_DEFS``);
the commands that read or decide (``runs``, ``run``, ``cancel``, ``retry``, ``status``, ``graph``,
``lineage``, ``approvals``, ``schedules list``, ``ui``) need only the database. Errors are printed as one
line naming what was wrong; the exit statuses are in ``common.EXIT_CODES``.

The commands live in submodules by theme: ``db`` (the database), ``runs`` (materialize, submit,
backfill, worker), ``operate`` (runs, run, cancel, retry), ``assets`` (status, lineage, gc),
``graph``, ``ops`` (approvals, schedules, sensors); ``waiting`` (progress, --watch) and ``common``
hold what they share.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from flowstone import _version, errors
from flowstone.cli import (
    assets,
    audit,
    checks,
    common,
    db,
    graph,
    logs,
    operate,
    ops,
    partitions,
    pools,
    runs,
    ui,
)
from flowstone.cli.common import Handler, ProgressBar, load_target
from flowstone.cli.common import rt_partitions as rt_partitions  # importable from here, as before

__all__ = ["ProgressBar", "build_parser", "load_target", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="flowstone",
        description="Asset-first data orchestration on Postgres.",
        epilog=common.EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flowstone {_version.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # the order of these calls is the order of the commands in `flowstone --help`
    db.add_commands(commands)
    runs.add_commands(commands)
    operate.add_commands(commands)
    assets.add_query_commands(commands)
    graph.add_command(commands)
    logs.add_commands(commands)
    ops.add_approval_commands(commands)
    ops.add_automation_commands(commands)
    pools.add_command(commands)
    checks.add_command(commands)
    partitions.add_command(commands)
    audit.add_command(commands)
    assets.add_gc_command(commands)
    ui.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowstone`` console script."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except errors.FlowStoneError as exc:
        # The Python API names keyword arguments; on the command line they are flags.
        exc.message = exc.message.replace("pass partition=", "pass --partition")
        common.err(f"error: {exc.describe()}")
        return common.EXIT_FAILED
    except KeyboardInterrupt:
        common.err("interrupted")
        return 130
