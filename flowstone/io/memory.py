"""An IO manager that keeps outputs in process memory, as codec JSON text (for tests and demos)."""

from __future__ import annotations

import threading
import urllib.parse

from flowstone import codec, errors
from flowstone.io import base

__all__ = ["MemoryIOManager"]

_SCHEME = "memory://"


class MemoryIOManager(base.IOManager):
    """Keeps every version as the codec's JSON text in a dict, guarded by a lock.

    Storing text rather than the live object means a value mutated after the asset returns cannot
    change the stored output, each load returns a fresh object, and a value the codec cannot encode
    fails exactly as it would with :class:`~flowstone.io.filesystem.FilesystemIOManager`. Versions
    are immutable: storing a version again with identical text is accepted (a redelivered job),
    different text raises :class:`~flowstone.errors.IOManagerError`. Nothing survives the process.
    """

    versioned = True

    def __init__(self) -> None:
        """Create an empty manager."""
        self._lock = threading.Lock()
        self._texts: dict[str, str] = {}

    @staticmethod
    def uri_for(asset: str, partition_key: str, version: str) -> str:
        """The ``memory://asset/<percent-encoded partition key>/version`` URI of one version."""
        return f"{_SCHEME}{asset}/{urllib.parse.quote(partition_key, safe='')}/{version}"

    def store(self, ctx: base.OutputContext, value: object) -> base.OutputRef:
        """Encode ``value`` with the codec and keep the text as version ``ctx.materialization_id``."""
        try:
            text = codec.dumps(value)
        except errors.FlowStoneError as exc:
            ctx.attach(exc)
            raise
        version = ctx.version
        uri = self.uri_for(ctx.asset, ctx.partition_key, version)
        with self._lock:
            existing = self._texts.setdefault(uri, text)
        if existing != text:
            raise ctx.attach(
                errors.IOManagerError(
                    f"version {version} of this output already exists with different content; "
                    "versions are immutable",
                    retryable=False,
                    context={"uri": uri},
                )
            )
        return base.OutputRef(
            manager=ctx.manager_key, uri=uri, version=version, size_bytes=len(text.encode("utf-8"))
        )

    def load(self, ctx: base.InputContext) -> object:
        """Decode the stored text of ``ctx.ref``, validated against ``ctx.type_hint`` if given."""
        with self._lock:
            text = self._texts.get(ctx.ref.uri)
        if text is None:
            raise ctx.attach(
                errors.IOManagerError(
                    f"no stored output at {ctx.ref.uri!r} (memory outputs do not survive the "
                    "process that wrote them)",
                    retryable=False,
                    context={"uri": ctx.ref.uri},
                )
            )
        try:
            return codec.loads(text, type_hint=ctx.type_hint)
        except errors.FlowStoneError as exc:
            ctx.attach(exc)
            raise

    def delete(self, ref: base.OutputRef) -> None:
        """Forget the version ``ref`` points to (no error if it is already gone)."""
        with self._lock:
            self._texts.pop(ref.uri, None)

    def __len__(self) -> int:
        """How many versions are stored."""
        with self._lock:
            return len(self._texts)
