"""What an asset function sees of its run: :class:`AssetContext`.

An asset receives the context when it has a parameter named ``context`` or annotated
``AssetContext``. The step runner builds one per attempt;
:func:`flowstone.testing.build_asset_context` builds one for unit tests of asset functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

from flowstone import approval_types, codec, errors, partition_keys, partitions

__all__ = ["AssetContext", "asset_logger"]


def asset_logger(asset: str) -> logging.Logger:
    """The logger of an asset: ``flowstone.asset.<name>``, a child of the ``flowstone`` logger."""
    return logging.getLogger(f"flowstone.asset.{asset}")


@dataclass
class AssetContext:
    """The run-time facts of one materialization attempt, handed to the asset function.

    ``partition`` is the typed partition value (``None`` when the asset is unpartitioned) and
    ``partition_key`` its canonical encoding as stored in SQL (:mod:`flowstone.partition_keys`);
    the two must agree. ``resources`` holds only the resources the asset declared, set up for this
    attempt, and is read-only. ``attempt`` counts from 1. ``metadata`` collects output metadata the
    asset adds with :meth:`add_metadata`; the step runner records it with the materialization.
    """

    asset: str
    partition: partition_keys.PartitionValue | None
    partition_key: str
    run_id: str
    resources: Mapping[str, object]
    log: logging.Logger
    partition_definition: partitions.PartitionsDefinition | None
    attempt: int = 1
    metadata: dict[str, object] = field(default_factory=dict)
    approval_lookup: Callable[[], approval_types.ApprovalDecision | None] | None = field(
        default=None, repr=False, compare=False
    )
    """Set by the step runner: the decision on this materialization's approval, if any."""

    def __post_init__(self) -> None:
        expected = partition_keys.encode(self.partition)
        if self.partition_key != expected:
            # A mismatch would record lineage under one key and compute another partition.
            raise errors.InvalidPartitionError(
                f"partition_key {self.partition_key!r} does not encode partition "
                f"{self.partition!r} (expected {expected!r})",
                asset=self.asset,
                partition=self.partition_key,
                run_id=self.run_id,
            )
        self.resources = MappingProxyType(dict(self.resources))

    def require_approval(
        self,
        message: str,
        *,
        timeout: timedelta | None = timedelta(hours=1),
        on_timeout: approval_types.OnTimeout = "reject",
        context_data: Mapping[str, object] | None = None,
        approvers: Sequence[str] | None = None,
    ) -> approval_types.ApprovalDecision:
        """Ask a human to approve this materialization before going on (I13).

        Without a decision yet, the step stops here: FlowStone records one approval request (once,
        however often the step asks), the materialization waits in ``waiting_approval``, and its
        job ends without failing. After an approval the step runs again from the start and this
        call returns the decision (who, why, when); after a rejection the step ends ``rejected``.
        ``timeout`` (``None``: never) applies ``on_timeout`` (``"reject"``, ``"approve"`` or
        ``"fail"``) as the actor ``system``. ``approvers`` restricts who may decide.
        """
        request = approval_types.ApprovalRequest(
            message=message,
            timeout=timeout,
            on_timeout=on_timeout,
            context_data=dict(context_data or {}),
            approvers=tuple(approvers) if approvers is not None else None,
        )
        if self.approval_lookup is None:
            raise errors.ConfigurationError(
                "require_approval needs a FlowStone run on Postgres (this context was built by hand)",
                asset=self.asset,
            )
        decision = self.approval_lookup()
        if decision is None:
            raise approval_types.ApprovalPending(request)
        return decision

    @property
    def partition_time_window(self) -> partitions.TimeWindow:
        """The time span of this partition (start inclusive, end exclusive, aware datetimes).

        Raises :class:`~flowstone.errors.InvalidPartitionError` when the asset is not partitioned
        by time (daily, hourly, weekly or monthly partitions).
        """
        definition = self.partition_definition
        if self.partition is None or definition is None:
            raise errors.InvalidPartitionError(
                f"asset {self.asset!r} is not partitioned, so it has no partition time window",
                asset=self.asset,
                partition=self.partition_key,
                run_id=self.run_id,
            )
        if not isinstance(definition, partitions.TimePartitions):
            raise errors.InvalidPartitionError(
                f"asset {self.asset!r} is partitioned by {definition.describe()}, not by time, so "
                "it has no partition time window; use context.partition instead",
                asset=self.asset,
                partition=self.partition_key,
                run_id=self.run_id,
            )
        return definition.time_window(self.partition)

    def add_metadata(self, values: Mapping[str, object] | None = None, /, **more: object) -> None:
        """Attach output metadata to this materialization, e.g. ``add_metadata(rows=120)``.

        Keys that are not Python identifiers can be passed as a mapping:
        ``add_metadata({"row count": 120})``. Values must be encodable by the typed JSON codec
        (:mod:`flowstone.codec`); anything else raises
        :class:`~flowstone.errors.OutputNotSerializableError` now, at the line that added it,
        rather than when the runner records the materialization; a refused call adds nothing. A key
        added again is replaced.
        """
        merged: dict[str, object] = {**(values or {}), **more}
        for key, value in merged.items():
            if not isinstance(key, str):
                raise errors.OutputNotSerializableError(
                    f"metadata keys are strings, not {type(key).__name__} ({key!r})",
                    asset=self.asset,
                    partition=self.partition_key,
                    run_id=self.run_id,
                )
            try:
                codec.to_jsonable(value)
            except errors.FlowStoneError as exc:
                raise errors.OutputNotSerializableError(
                    f"metadata {key!r} cannot be stored as JSON: {exc.message}",
                    asset=self.asset,
                    partition=self.partition_key,
                    run_id=self.run_id,
                ) from exc
        self.metadata.update(merged)  # only once every value passed: a refused call adds nothing
