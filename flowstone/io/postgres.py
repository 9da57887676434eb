"""The Postgres IO manager: outputs stored in ``flowstone_outputs``, written in the same statement
as the ``succeeded`` record of their materialization (I10, I11): an output is visible exactly when
its metadata committed, and a failure anywhere leaves neither. Values are JSONB produced by the typed
codec, or raw bytes with ``format="bytes"``; nothing is ever decoded with a code-executing decoder
(I4). The default IO manager of the Postgres store.
"""

from __future__ import annotations

import json
from typing import ClassVar, Literal, Protocol

from flowstone import codec, errors
from flowstone.io import base

__all__ = ["OutputStore", "PostgresIOManager"]

DEFAULT_TABLE = "flowstone_outputs"


class OutputStore(Protocol):
    """What the manager needs from the store to read and delete stored outputs."""

    def read_output(self, materialization_id: int) -> tuple[str, object, bytes | None] | None:
        """(format, JSON value, bytes) of a stored output, or ``None``."""
        ...

    def delete_output(self, materialization_id: int) -> None:
        """Remove a stored output (idempotent)."""
        ...


class PostgresIOManager(base.TransactionalIOManager):
    """Outputs in Postgres, committed with their metadata.

    ``format="jsonb"`` (default) stores any value the typed codec encodes (dates, Decimals, UUIDs,
    bytes, tuples, pydantic models, ...); ``format="bytes"`` stores the ``bytes`` an asset returns,
    as is. Today outputs live in FlowStone's own table ``flowstone_outputs``; per-asset user tables
    are planned (docs/implemented-vs-planned.md).
    """

    versioned: ClassVar[bool] = True

    def __init__(self, *, format: Literal["jsonb", "bytes"] = "jsonb") -> None:
        if format not in ("jsonb", "bytes"):
            raise errors.ConfigurationError(
                f"PostgresIOManager format must be 'jsonb' or 'bytes', not {format!r}"
            )
        self.format = format
        self._store: OutputStore | None = None

    def bind(self, store: OutputStore) -> None:
        """Connect the manager to the Postgres store that reads and deletes outputs."""
        self._store = store

    def _bound(self) -> OutputStore:
        if self._store is None:
            raise errors.ConfigurationError(
                "PostgresIOManager is not bound to a Postgres store: use it with a FlowStone runtime on "
                "Postgres (not store='memory')"
            )
        return self._store

    def prepare(self, ctx: base.OutputContext, value: object) -> base.PreparedOutput:
        """Encode ``value`` (no I/O): JSON text for jsonb, the bytes themselves for bytes."""
        ref = base.OutputRef(
            manager=ctx.manager_key,
            uri=f"postgres:{DEFAULT_TABLE}/{ctx.materialization_id}",
            version=str(ctx.materialization_id),
        )
        if self.format == "bytes":
            if not isinstance(value, bytes | bytearray | memoryview):
                raise ctx.attach(
                    errors.OutputNotSerializableError(
                        f"asset returned {type(value).__name__}, but its Postgres IO manager stores bytes "
                        "(format='bytes')"
                    )
                )
            data = bytes(value)
            return base.PreparedOutput(
                ref=ref.model_copy(update={"size_bytes": len(data)}), format="bytes", data=data
            )
        try:
            text = codec.dumps(value)
        except errors.FlowStoneError as exc:
            raise ctx.attach(exc) from None
        if "\\u0000" in text:
            raise ctx.attach(
                errors.OutputNotSerializableError(
                    "the output contains a NUL character, which JSONB cannot store"
                )
            )
        return base.PreparedOutput(
            ref=ref.model_copy(update={"size_bytes": len(text.encode())}), format="jsonb", value=text
        )

    def load(self, ctx: base.InputContext) -> object:
        """Read the stored output of ``ctx.ref`` and decode it (validated against ``ctx.type_hint``)."""
        try:
            materialization_id = int(ctx.ref.version)
        except ValueError:
            raise ctx.attach(
                errors.OutputDecodeError(f"version {ctx.ref.version!r} is not a materialization id")
            ) from None
        row = self._bound().read_output(materialization_id)
        if row is None:
            raise ctx.attach(
                errors.IOManagerError(
                    f"no stored output for materialization {materialization_id}",
                    retryable=False,
                    context={"materialization_id": materialization_id},
                )
            )
        stored_format, value, data = row
        if stored_format == "bytes":
            return data
        try:
            return codec.from_jsonable(value, type_hint=ctx.type_hint)  # type: ignore[arg-type]
        except errors.FlowStoneError as exc:
            exc.context.setdefault("materialization_id", materialization_id)
            raise ctx.attach(exc) from None
        except (TypeError, ValueError, json.JSONDecodeError) as exc:
            raise ctx.attach(
                errors.OutputDecodeError(
                    f"stored output of materialization {materialization_id} does not decode: {exc}",
                    context={"materialization_id": materialization_id},
                )
            ) from exc

    def delete(self, ref: base.OutputRef) -> None:
        """Remove the stored output of ``ref`` (idempotent)."""
        self._bound().delete_output(int(ref.version))
