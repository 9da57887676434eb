"""``flowstone checks [ASSET]``: the asset checks of the definitions and their latest results (or
every result of one run with ``--run``); the line on checks under ``flowstone status``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from flowstone.cli import common
from flowstone.store import records


def _result_text(r: records.CheckResult) -> str:
    if r.passed:
        return "passed"
    return "ERROR" if r.error is not None else ("failed" if r.severity == "error" else "warning")


def _cmd_checks(args: argparse.Namespace) -> int:
    with common.open_reader(args) as rt:
        assets = [args.asset] if args.asset else list(rt.defs)
        if args.asset:
            rt.defs.get(args.asset)  # unknown names: a clear error
        if args.run:
            rows = rt.check_results(args.asset, run_id=args.run, limit=args.limit)
        else:
            rows = rt.check_results(args.asset, latest=True, limit=args.limit)
        common.out(
            f"{'ASSET':<24} {'CHECK':<24} {'PARTITION':<20} {'RESULT':<8} {'SEVERITY':<8} {'BLOCKING':<8} "
            f"{'AT (UTC)':<19}  DESCRIPTION"
        )
        seen = {(r.asset, r.check_name) for r in rows}
        for r in rows:
            common.out(
                f"{r.asset:<24} {r.check_name:<24} {common.shown(r.partition_key):<20} {_result_text(r):<8} "
                f"{r.severity:<8} {'yes' if r.blocking else 'no':<8} {common.when(r.at):<19}  "
                f"{(r.description or '').splitlines()[0] if r.description else ''}"
            )
        if not args.run:  # declared checks that never ran
            for name in assets:
                for check in rt.defs.checks_of(name):
                    if (name, check.name) not in seen:
                        common.out(
                            f"{name:<24} {check.name:<24} {'-':<20} {'never':<8} {check.severity:<8} "
                            f"{'yes' if check.blocking else 'no':<8} {'-':<19}  {check.description or ''}"
                        )
        failing = [r for r in rows if not r.passed and r.severity == "error"]
        return common.EXIT_FAILED if args.fail_on_error and failing else common.EXIT_OK


def status_lines(latest: Sequence[records.CheckResult]) -> list[str]:
    """One line for ``flowstone status``: the latest results of every check, counted, with the
    failing blocking ones named."""
    if not latest:
        return []
    passed = sum(r.passed for r in latest)
    failed = [r for r in latest if not r.passed and r.severity == "error"]
    warnings = sum(1 for r in latest if not r.passed and r.severity == "warning")
    named = sorted({f"{r.asset}:{r.check_name}" for r in failed if r.blocking})
    blocking = f" (blocking: {', '.join(named[:5])}{' ...' if len(named) > 5 else ''})" if named else ""
    return [
        f"checks (latest per partition): {passed} passed, {len(failed)} failed{blocking}, "
        f"{warnings} warnings; see flowstone checks"
    ]


def add_command(commands: Any) -> None:
    """Add ``checks``."""
    checks = commands.add_parser(
        "checks",
        help="asset checks and their latest results",
        description="The checks of each asset (or of ASSET) with the latest result per partition, "
        "and the checks that never ran; --run lists every result of one run. A failing blocking check "
        "of severity error kept the steps downstream of its asset from running.",
        epilog="example: flowstone checks orders --fail-on-error",
    )
    common.add_common(checks)
    checks.add_argument("asset", nargs="?", default=None, help="only this asset's checks")
    checks.add_argument("--run", default=None, help="the results of this run (a run id)")
    checks.add_argument("--limit", type=common.positive_int, default=1000, help="results listed at most")
    checks.add_argument(
        "--fail-on-error", action="store_true", help="exit 1 when a listed result failed at severity error"
    )
    checks.set_defaults(handler=_cmd_checks)
