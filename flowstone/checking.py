"""Running an asset's checks in its step attempt (see :mod:`flowstone.asset_checks`).

The step runner calls :func:`run` after the asset's function returned and its output is stored;
the outcomes go into the success transaction (``flowstone_check_results``), which skips the steps
downstream instead of releasing them when a blocking check (severity error) failed. A check that
raises is a failed check with its error recorded: the step itself still succeeds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flowstone import asset_checks, codec, errors
from flowstone import context as context_mod
from flowstone.store import records

__all__ = ["run"]

logger = logging.getLogger("flowstone.execution")


def run(
    checks: Sequence[asset_checks.AssetCheckDef], value: object, ctx: context_mod.AssetContext
) -> tuple[records.CheckOutcome, ...]:
    """The outcome of each check of the asset, in order."""
    return tuple(_one(check, value, ctx) for check in checks)


def _one(
    check: asset_checks.AssetCheckDef, value: object, ctx: context_mod.AssetContext
) -> records.CheckOutcome:
    kwargs: dict[str, object] = {}
    if check.value_param is not None:
        kwargs[check.value_param] = value
    if check.context_param is not None:
        kwargs[check.context_param] = ctx
    try:
        result, metadata = _result(check.fn(**kwargs))
    except Exception as exc:  # noqa: BLE001 - a check that raises is a failed check, not a failed step
        error = errors.ExecutionError.from_exception(
            exc, asset=ctx.asset, partition=ctx.partition_key, run_id=ctx.run_id
        )
        logger.info("check %s of %s [%s] raised: %s", check.name, ctx.asset, ctx.partition_key, error)
        return records.CheckOutcome(
            check_name=check.name,
            passed=False,
            severity=check.severity,
            blocking=check.blocking,
            description=f"the check raised {type(exc).__name__}: {exc}",
            error=error.to_dict(),
        )
    logger.debug("check %s of %s [%s]: passed=%s", check.name, ctx.asset, ctx.partition_key, result.passed)
    return records.CheckOutcome(
        check_name=check.name,
        passed=result.passed,
        severity=check.severity,
        blocking=check.blocking,
        description=result.description if result.description is not None else check.description,
        metadata=metadata,
    )


def _result(result: object) -> tuple[asset_checks.CheckResult, dict[str, Any]]:
    """The check's return value as a CheckResult, with its metadata as JSON."""
    if isinstance(result, bool):
        result = asset_checks.CheckResult(passed=result)
    if not isinstance(result, asset_checks.CheckResult):
        raise TypeError(f"a check returns a CheckResult or a bool, not {type(result).__name__}")
    metadata = codec.to_jsonable(dict(result.metadata))
    assert isinstance(metadata, dict)  # noqa: S101 - a dict encodes to a dict
    return result, metadata
