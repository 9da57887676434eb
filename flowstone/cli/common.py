"""What every ``flowstone`` command shares: output, ``--defs`` loading, ``--partition`` parsing, the
progress display and the common options."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from flowstone import definitions as definitions_mod
from flowstone import errors, partition_keys
from flowstone import runtime as runtime_mod

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
"""The command did what was asked (a waited-for run succeeded)."""
EXIT_FAILED = 1
"""An error, or a waited-for run that failed or was cancelled."""
EXIT_USAGE = 2
"""The command line was wrong (argparse's own status)."""
EXIT_WAITING = 3
"""A waited-for run is waiting for an approval."""
EXIT_TIMEOUT = 4
"""``--timeout`` passed while the run was still going (it goes on)."""

EXIT_CODES = f"""exit status:
  {EXIT_OK}  succeeded
  {EXIT_FAILED}  failed (an error, or a run that failed or was cancelled)
  {EXIT_USAGE}  usage error
  {EXIT_WAITING}  the run is waiting for an approval
  {EXIT_TIMEOUT}  timed out waiting (the run is still going)"""


shown = partition_keys.display
"""A partition key as a person reads it (``2025-01-01``; ``-`` when unpartitioned)."""


def when(moment: datetime | None) -> str:
    """A timestamp in UTC to the second (``2025-01-01 10:00:00``), ``-`` when absent."""
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (``--limit -1`` is a usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def out(text: str) -> None:
    """Print a line on stdout (flushed: the output of subprocesses is read line by line)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str) -> None:
    """Print a line on stderr."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def load_target(spec: str | None) -> definitions_mod.Definitions | runtime_mod.FlowStone:
    """Import ``module:attribute`` (named by the user on the command line): a ``Definitions`` or a
    configured ``FlowStone`` runtime."""
    spec = spec or os.environ.get("FLOWSTONE_DEFS", "").strip() or None
    if not spec:
        raise errors.ConfigurationError(
            "no definitions given: pass --defs mypackage.pipeline:defs or set FLOWSTONE_DEFS"
        )
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise errors.ConfigurationError(f"--defs must look like module:attribute, got {spec!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # like `python -m`: the project directory is importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise errors.ConfigurationError(f"cannot import {module_name!r} (from --defs): {exc}") from exc
    value = getattr(module, attribute, None)
    if not isinstance(value, definitions_mod.Definitions | runtime_mod.FlowStone):
        raise errors.ConfigurationError(
            f"{spec} is {type(value).__name__}, not flowstone.Definitions or flowstone.FlowStone"
            if value is not None
            else f"module {module_name!r} has no attribute {attribute!r}"
        )
    return value


def open_runtime(args: argparse.Namespace) -> runtime_mod.FlowStone:
    """The runtime of ``--defs``: the module's own FlowStone object (with its options) when it names
    one and no ``--database-url`` overrides it, else a new one for its Definitions."""
    target = load_target(args.defs)
    if isinstance(target, runtime_mod.FlowStone):
        if args.database_url is None:
            return _told(target)
        target = target.defs
    return _told(runtime_mod.FlowStone(target, database_url=args.database_url))


def _told(rt: runtime_mod.FlowStone) -> runtime_mod.FlowStone:
    """Say so (on stderr) when opening the runtime created a new embedded database."""
    if rt.database_created is not None:
        err(
            f"created a new embedded database in {rt.database_created} (FLOWSTONE_HOME; set "
            "FLOWSTONE_DATABASE_URL or --database-url to use your own Postgres)"
        )
    return rt


def open_reader(args: argparse.Namespace) -> runtime_mod.FlowStone:
    """The runtime of a command that reads or decides but runs no asset: that of ``--defs`` (or
    ``FLOWSTONE_DEFS``) when given, else one for the definitions published in the database, which
    needs no import of the project's code."""
    if args.defs or os.environ.get("FLOWSTONE_DEFS", "").strip():
        return open_runtime(args)
    return _told(runtime_mod.FlowStone.from_database(database_url=args.database_url))


def partition(defs: definitions_mod.Definitions, assets: Sequence[str], text: str | None) -> object:
    """Parse ``--partition`` text with the partition definition of the selected assets; a
    partition for assets none of which is partitioned is refused."""
    if text is None:
        return None
    if all(defs.get(a).partitions is None for a in assets):
        names = ", ".join(repr(a) for a in assets)
        raise errors.InvalidPartitionError(
            f"{'asset' if len(assets) == 1 else 'assets'} {names} "
            f"{'is' if len(assets) == 1 else 'are'} not partitioned: leave out --partition"
        )
    found = {defs.get(a).partitions for a in assets if defs.get(a).partitions is not None}
    if len(found) == 1:
        definition = found.pop()
        assert definition is not None  # noqa: S101 - filtered above
        partitioned = [a for a in assets if rt_partitions(defs, a) is definition]
        return definition.parse(text, asset=partitioned[0] if len(partitioned) == 1 else None)
    return text


def rt_partitions(defs: definitions_mod.Definitions, asset: str) -> object:
    """The partition definition of ``asset`` (``None`` if unpartitioned)."""
    return defs.get(asset).partitions


class ProgressBar:
    """A one-line progress display on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, label: str, *, width: int = 30) -> None:
        self.label = label
        self.width = width
        self.started = time.monotonic()
        self._last_decile = -1
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        """Show ``done`` of ``total``."""
        fraction = done / total if total else 1.0
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        filled = int(fraction * self.width)
        line = (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} "
            f"{fraction:6.1%} {rate:7.1f}/s"
        )
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if done >= total else ""))
            sys.stderr.flush()
        elif int(fraction * 10) != self._last_decile:
            self._last_decile = int(fraction * 10)
            err(line)


def add_watch(sub: argparse.ArgumentParser) -> None:
    """``--watch [SECONDS]``: draw the output again every SECONDS (default 2) until Ctrl-C."""
    sub.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="draw again every SECONDS (default 2) until Ctrl-C",
    )


def add_common(sub: argparse.ArgumentParser) -> None:
    """The options of every command that works on definitions: ``--defs`` and ``--database-url``."""
    sub.add_argument(
        "--defs",
        default=None,
        help="module:attribute of the Definitions (or FLOWSTONE_DEFS); commands that only read or "
        "decide use the definitions published in the database when it is not given",
    )
    sub.add_argument("--database-url", default=None, help="Postgres URL (default: FLOWSTONE_DATABASE_URL)")
