"""``flowstone logs RUN_ID [ASSET] [--partition P] [--follow]``: the step logs of a run, and the
logging set-up of ``flowstone worker`` (``--log-format text|json``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from flowstone import errors, events, partition_keys
from flowstone.cli import common
from flowstone.status import RUN_TERMINAL
from flowstone.store import records

__all__ = ["add_commands", "add_log_format_option", "configure_worker_logging", "format_line"]

FOLLOW_POLL_S = 0.5
LATE_WRITE_S = 2.0
"""How long a follower keeps looking below the highest line id it saw: batches from several
workers commit in any order, so a smaller id may become visible a moment after a larger one."""


def format_line(log: records.StepLog) -> str:
    """One stored line as ``flowstone logs`` prints it."""
    line = log.line
    at = line.at.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    where = (
        log.asset
        if log.partition_key == partition_keys.UNPARTITIONED
        else f"{log.asset}[{log.partition_key}]"
    )
    source = line.logger if line.stream == "log" else line.stream
    return f"{at} {line.level:<7} {where}#{line.attempt} {source}: {line.message}"


def _show(log: records.StepLog, as_json: bool) -> None:
    if not as_json:
        common.out(format_line(log))
        return
    line = log.line
    data: dict[str, Any] = {
        "id": log.id,
        "run_id": log.run_id,
        "asset": log.asset,
        "partition_key": log.partition_key,
        "attempt": line.attempt,
        "seq": line.seq,
        "at": line.at.isoformat(),
        "stream": line.stream,
        "level": line.level,
        "logger": line.logger,
        "message": line.message,
        "extra": line.extra,
    }
    common.out(json.dumps(data, default=str))


def _cmd_logs(args: argparse.Namespace) -> int:
    rt = common.open_reader(args)
    try:
        if rt.store.get_run(args.run_id) is None:
            raise errors.ConfigurationError(f"no run {args.run_id}")
        key = None
        if args.partition is not None:
            if args.asset is None:
                raise errors.ConfigurationError("--partition needs the ASSET argument")
            key = rt.partition_key(args.asset, common.partition(rt.defs, [args.asset], args.partition))
        reader = rt.store.logs
        if not args.follow:
            for log in reader.read(args.run_id, asset=args.asset, partition_key=key):
                _show(log, args.json)
            return 0
        seen: dict[int, float] = {}
        horizon = 0
        while True:
            run = rt.store.get_run(args.run_id)
            finished = run is None or run.status in RUN_TERMINAL
            now = time.monotonic()
            new = [
                log
                for log in reader.read(args.run_id, asset=args.asset, partition_key=key, after_id=horizon)
                if log.id not in seen
            ]
            for log in new:
                seen[log.id] = now
                _show(log, args.json)
            # Ids seen long enough ago are settled: stop asking for what lies below them.
            settled = [i for i, when in seen.items() if now - when >= LATE_WRITE_S]
            if settled:
                horizon = max(horizon, *settled)
                seen = {i: when for i, when in seen.items() if i > horizon}
            if finished and not new:
                return 0
            time.sleep(FOLLOW_POLL_S)
    finally:
        rt.close()


def add_commands(commands: Any) -> None:
    """Add ``logs``."""
    sub = commands.add_parser("logs", help="show the step logs of a run (what its steps logged and printed)")
    common.add_common(sub)
    sub.add_argument("run_id", metavar="RUN_ID")
    sub.add_argument("asset", metavar="ASSET", nargs="?", default=None, help="only this asset's steps")
    sub.add_argument("--partition", default=None, help="only this partition of ASSET")
    sub.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new lines until the run finishes"
    )
    sub.add_argument("--json", action="store_true", help="one JSON object per line")
    sub.set_defaults(handler=_cmd_logs)


def add_log_format_option(parser: argparse.ArgumentParser) -> None:
    """``--log-format text|json`` (of ``flowstone worker``)."""
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text lines, or one JSON object per record with its extra fields (lifecycle events)",
    )


def configure_worker_logging(level: str, log_format: str) -> None:
    """Log to stderr at ``level``, as text or as JSON (:class:`flowstone.events.JsonFormatter`)."""
    handler = logging.StreamHandler(sys.stderr)
    # The handler's own level too: records of loggers set lower than the root (FlowStone sets
    # `flowstone.asset` to INFO when unset) must not reach a worker started at a higher level.
    handler.setLevel(getattr(logging, level.upper()))
    if log_format == "json":
        handler.setFormatter(events.JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
