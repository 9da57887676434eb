"""The IO manager interface: how an asset's output is stored and loaded (invariants I4, I10).

The step runner calls :meth:`IOManager.store` with an :class:`OutputContext` after the asset function
returns, records the returned :class:`OutputRef` in ``flowstone_materializations.output_ref`` (as
JSON) inside the success transaction, and later calls :meth:`IOManager.load` with an
:class:`InputContext` carrying that ref. Because only a committed ``succeeded`` row makes a ref
visible (I10), a versioned manager may write its bytes before the commit: an uncommitted version is
never read and can be removed with :meth:`IOManager.delete`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pydantic

from flowstone import errors

if TYPE_CHECKING:
    from flowstone.identifiers import QualifiedName
    from flowstone.partition_keys import PartitionValue

__all__ = ["IOManager", "InputContext", "OutputContext", "OutputRef"]

_E = TypeVar("_E", bound=errors.FlowStoneError)


class OutputRef(pydantic.BaseModel, frozen=True, extra="forbid"):
    """Where one stored output lives; stored in ``flowstone_materializations.output_ref`` as JSON.

    ``OutputRef.model_validate_json(text)`` reads it back; unknown keys are refused.
    """

    manager: str
    """The IO manager key in :class:`~flowstone.definitions.Definitions` that wrote the output."""
    uri: str
    """Where the bytes are, e.g. ``file:///data/events/d_3a2025-01-01/42.json`` or
    ``memory://events/d%3A2025-01-01/42``; for people and tools, managers do not trust it blindly."""
    version: str
    """The immutable version id: ``str(materialization_id)`` for the built-in managers."""
    size_bytes: int | None = None
    """Size of the stored bytes, when the manager knows it."""


@dataclass(frozen=True)
class OutputContext:
    """What an IO manager knows when it stores the output of one materialization."""

    asset: str
    """The asset whose output is stored."""
    partition: PartitionValue | None
    """The typed partition value (``None`` for an unpartitioned asset)."""
    partition_key: str
    """The encoded partition key (:func:`flowstone.partition_keys.encode`)."""
    run_id: str
    """The run that produced the output."""
    materialization_id: int
    """The materialization row id: the version of the output (unique across assets)."""
    manager_key: str
    """This manager's key in the Definitions; goes into :attr:`OutputRef.manager`."""
    type_hint: object = None
    """The asset function's return annotation (``None`` if it has none)."""
    attempt: int = 1
    """The attempt of the materialization (a retry or a reclaimed step is a new attempt)."""
    metadata: dict[str, object] = field(default_factory=dict, compare=False)
    """Metadata the manager found while storing (a frame's row count, schema, size, content hash):
    the step runner records it in ``flowstone_materializations.metadata`` under the keys the asset
    set itself (the asset's own keys win)."""

    @property
    def version(self) -> str:
        """The immutable version this attempt writes: ``"<materialization id>"`` for the first
        attempt, ``"<id>-<attempt>"`` for later ones, so that an attempt whose version was written
        but never committed (a crash before the success) cannot block the next one."""
        return (
            str(self.materialization_id) if self.attempt <= 1 else f"{self.materialization_id}-{self.attempt}"
        )

    def attach(self, error: _E) -> _E:
        """Fill ``error``'s asset, partition and run id (where unset) from this context."""
        return _attach(error, self.asset, self.partition, self.partition_key, self.run_id)


@dataclass(frozen=True)
class InputContext:
    """What an IO manager knows when it loads a stored output for a downstream asset."""

    asset: str
    """The upstream asset whose output is loaded."""
    partition: PartitionValue | None
    """The upstream partition value (``None`` for an unpartitioned asset)."""
    partition_key: str
    """The encoded upstream partition key."""
    ref: OutputRef
    """The ref recorded by the materialization being read."""
    type_hint: object = None
    """The downstream parameter's annotation, applied when decoding (``None``: no validation)."""

    def attach(self, error: _E) -> _E:
        """Fill ``error``'s asset and partition (where unset) from this context."""
        return _attach(error, self.asset, self.partition, self.partition_key, None)


def _attach(error: _E, asset: str, partition: object, partition_key: str, run_id: str | None) -> _E:
    if error.asset is None:
        error.asset = asset
    if error.partition is None and partition is not None:
        error.partition = partition_key
    if error.run_id is None:
        error.run_id = run_id
    return error


class IOManager(abc.ABC):
    """Stores and loads asset outputs. Subclass it to keep outputs elsewhere.

    Implementations must be safe to call from several threads, never read stored data with a
    code-executing decoder (``pickle``; invariant I4), and raise
    :class:`~flowstone.errors.IOManagerError` subclasses carrying the asset and partition.
    """

    versioned: ClassVar[bool] = True
    """True: every materialization writes a new immutable version and :meth:`store` never overwrites
    another version (I10). A manager that overwrites in place sets False and documents the weaker
    guarantee: a failed run may leave a newer value behind the last succeeded row."""

    @abc.abstractmethod
    def store(self, ctx: OutputContext, value: object) -> OutputRef:
        """Store ``value`` as the output of ``ctx.materialization_id`` and return where it is.

        Storing the same version again with the same value must succeed (a redelivered job);
        different content for an existing version must raise :class:`~flowstone.errors.IOManagerError`.
        """

    @abc.abstractmethod
    def load(self, ctx: InputContext) -> object:
        """Load the output ``ctx.ref`` points to, decoded (and validated against ``ctx.type_hint``)."""

    @abc.abstractmethod
    def delete(self, ref: OutputRef) -> None:
        """Remove a stored version; deleting one that does not exist is not an error."""

    def stored_versions(self, asset: str, manager_key: str) -> Iterator[tuple[int, OutputRef]]:
        """Every version this manager holds of ``asset``, with the materialization id it names,
        so that gc can collect versions no committed row references (an attempt that stored its
        output, then never recorded its success). Managers that cannot list yield nothing."""
        return iter(())

    def loads_combined(self, type_hint: object) -> bool:
        """True if a parameter annotated ``type_hint`` that reads several partitions of an asset
        (``AllPartitions``, a time-window range) gets them from :meth:`load_combined` as one value
        (a frame with a partition column) instead of a ``{partition: value}`` dict."""
        return False

    def load_combined(self, ctxs: Sequence[InputContext], type_hint: object) -> object:
        """Load the outputs of ``ctxs`` as one value (only called when :meth:`loads_combined`)."""
        raise errors.IOManagerError(
            f"{type(self).__name__} cannot load several partitions as one value", retryable=False
        )


@dataclass(frozen=True)
class PreparedOutput:
    """An encoded output that the store writes inside the success transaction of its materialization.

    ``format`` ``"jsonb"`` (with ``value``, JSON text) or ``"bytes"`` (with ``data``): a row of
    ``flowstone_outputs``, written by the success statement itself. ``format`` ``"rows"`` (with
    ``rows_table``, ``partition_column``, ``rows_columns`` and ``rows``): rows of a user table that
    replace the rows of the materialization's partition, written by
    :func:`flowstone.store.outputs.write_rows` in the same transaction; nothing goes to
    ``flowstone_outputs``.
    """

    ref: OutputRef
    format: str
    value: str | None = None
    data: bytes | None = None
    rows_table: QualifiedName | None = None
    """The validated user table of a ``"rows"`` output (rendered only with ``psycopg.sql.Identifier``)."""
    partition_column: str | None = None
    """The validated column of ``rows_table`` that holds the partition (filled by FlowStone)."""
    rows_columns: tuple[str, ...] = ()
    """The validated columns every row sets, in insertion order (the partition column excluded)."""
    rows: tuple[tuple[object, ...], ...] = ()
    """The row values, in the order of ``rows_columns``."""
    frame: Any = None
    """Or, for a DataFrame, the ``pyarrow.Table`` whose ``rows_columns`` are written (binary COPY,
    column by column: see :mod:`flowstone.io.pg_copy`); ``rows`` is then empty."""


class TransactionalIOManager(IOManager):
    """An IO manager whose writes commit in the same transaction as the ``succeeded`` record, the
    lineage and the audit event (I10, I11): the strongest guarantee FlowStone offers.

    The step runner calls :meth:`prepare` (encode only, no I/O) instead of :meth:`store`.
    """

    @abc.abstractmethod
    def prepare(self, ctx: OutputContext, value: object) -> PreparedOutput:
        """Encode ``value`` for the success transaction; raise on values that cannot be stored."""

    def store(self, ctx: OutputContext, value: object) -> OutputRef:
        """Not used: outputs are written by the store inside the success transaction."""
        raise ctx.attach(
            errors.IOManagerError(
                f"{type(self).__name__} writes outputs only inside the success transaction; "
                "the step runner calls prepare()",
                retryable=False,
            )
        )
