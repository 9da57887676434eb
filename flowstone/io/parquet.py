"""An IO manager that stores DataFrames as immutable Parquet files on any fsspec file system (I4, I10).

Layout: ``<base_path>/<asset>/<safe partition name>/<version>.parquet``, the names made exactly as
by :class:`~flowstone.io.filesystem.FilesystemIOManager` (:func:`~flowstone.io.filesystem.safe_name`
for the partition, ``<materialization id>[-<attempt>]`` for the version), so no asset name,
partition key or version can reach outside ``base_path``.

``base_path`` is a local directory or any fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``memory://...``); ``storage_options`` go to fsspec as usual (credentials, endpoint). Requires
``flowstone[parquet]`` (pyarrow and fsspec); nothing is imported until the manager is built.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from flowstone import errors
from flowstone.io import base, frames
from flowstone.io import filesystem as fs_io

__all__ = ["ParquetIOManager"]

_SUFFIX = ".parquet"
WRITE_BUFFER_BYTES = 1 << 20
"""pyarrow's pages (about 60 KB each) are gathered natively into pieces of this size before they
reach the Python file wrapper: 16x fewer calls into Python, larger pieces to hash."""
SYNC_EARLY_BYTES = 16 << 20
"""How many bytes a local Parquet write lets pile up before it starts syncing them in a thread."""
_ASSET_RE = fs_io.ASSET_RE
_VERSION_RE = fs_io.VERSION_RE
_SAFE_NAME_RE = fs_io.SAFE_NAME_RE


class ParquetIOManager(base.IOManager):
    """Stores pandas and polars DataFrames and pyarrow Tables as one immutable Parquet file per
    materialization attempt, on a local path or any fsspec URL.

    Every attempt writes its own version (``<id>.parquet``, ``<id>-<attempt>.parquet``) before the
    success commits; only a committed ``succeeded`` row makes it visible (I10), and a version whose
    attempt never committed is an orphan that ``flowstone gc`` removes. Storing a version again with
    the same bytes is accepted (a redelivered job); different bytes are refused. On a local disk a
    version is published atomically (temporary file, ``fsync``, hard link); on object stores one
    ``PUT`` is atomic by itself.

    Loads return what the downstream parameter asks for: ``pd.DataFrame``, ``pl.DataFrame`` or
    ``pa.Table`` (a polars or Arrow load never goes through pandas); without such an annotation,
    the kind the asset returned. A partitioned input read through a mapping to several partitions
    (``AllPartitions``, ``TimeWindowOffset`` ranges) and annotated as a frame is loaded as one frame
    with a ``partition_column`` holding each row's partition.

    Each stored frame records metadata: ``row_count``, ``columns`` (names and Arrow types),
    ``size_bytes`` and ``content_hash`` (SHA-256 of the Parquet bytes).
    """

    versioned: ClassVar[bool] = True

    def __init__(
        self,
        base_path: str | os.PathLike[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
        compression: str = "snappy",
        partition_column: str = "partition",
        content_hash: bool = True,
    ) -> None:
        """Write under ``base_path`` (a directory or fsspec URL; created on first store)."""
        core = frames.require("fsspec.core", "parquet")
        implementations = frames.require("fsspec.implementations.local", "parquet")
        frames.require("pyarrow.parquet", "parquet")
        text = os.fspath(base_path)
        if not isinstance(text, str) or not text:
            raise errors.ConfigurationError(f"ParquetIOManager base_path must be a path or URL, not {text!r}")
        if "::" in text:
            raise errors.ConfigurationError(
                f"ParquetIOManager base_path {text!r}: chained fsspec URLs are not supported"
            )
        if "://" not in text:
            text = str(Path(text).expanduser().absolute())
        self.fs, root = core.url_to_fs(text, **dict(storage_options or {}))
        self.root: str = str(root).rstrip("/") or "/"
        """The base path as the file system names it (no protocol)."""
        self.local = isinstance(self.fs, implementations.LocalFileSystem)
        """True when the files are on a local disk (atomic publication through hard links)."""
        self.base_uri: str = self.fs.unstrip_protocol(self.root).rstrip("/")
        """The base path as a URL: every stored ref's ``uri`` starts with it."""
        self.compression = compression
        self.partition_column = partition_column
        self.content_hash = content_hash
        """Record the SHA-256 of each file as ``content_hash`` (about 15 % of the write time)."""

    # -- layout ---------------------------------------------------------------------------------

    def relative_path(self, asset: str, partition_key: str, version: str | int) -> str:
        """``<asset>/<safe partition>/<version>.parquet``: validated, never escaping the base."""
        return fs_io.version_path(asset, partition_key, version, _SUFFIX)

    def path_for(self, asset: str, partition_key: str, version: str | int) -> str:
        """The file system path of one version (see :meth:`relative_path`)."""
        return f"{self.root.rstrip('/')}/{self.relative_path(asset, partition_key, version)}"

    def uri_for(self, asset: str, partition_key: str, version: str | int) -> str:
        """The URL of one version (``file:///...``, ``s3://...``, ``memory:///...``)."""
        return f"{self.base_uri}/{self.relative_path(asset, partition_key, version)}"

    # -- store ----------------------------------------------------------------------------------

    def store(self, ctx: base.OutputContext, value: object) -> base.OutputRef:
        """Encode ``value`` as Parquet and publish it as an immutable version (see the class)."""
        kind = frames.frame_kind(value)
        if kind is None:
            raise ctx.attach(
                errors.OutputNotSerializableError(
                    f"asset returned {type(value).__name__}, but ParquetIOManager stores pandas or "
                    "polars DataFrames and pyarrow Tables"
                )
            )
        pq = frames.require("pyarrow.parquet", "parquet")
        try:
            path = self.path_for(ctx.asset, ctx.partition_key, ctx.version)
            table = frames.arrow_table(value, kind)
        except errors.FlowStoneError as exc:
            raise ctx.attach(exc) from None
        sink = _HashingSink(hashing=self.content_hash)
        try:
            if self.local:  # stream into the temporary file: no copy of the file in memory

                def write(handle: BinaryIO) -> None:
                    try:
                        pa = frames.require("pyarrow", "parquet")
                        raw = pa.PythonFile(sink.wrap(handle, sync_early=True), mode="w")
                        with pa.BufferedOutputStream(raw, buffer_size=WRITE_BUFFER_BYTES) as stream:
                            pq.write_table(table, stream, **self._options)
                    finally:
                        sink.stop_syncing()

                fs_io.write_once_streamed(Path(path), write)
            else:
                pq.write_table(table, sink.wrap(buffer := _Buffer()), **self._options)
                self._write_remote(path, buffer.getvalue())
        except errors.FlowStoneError as exc:
            raise ctx.attach(exc) from None
        except OSError as exc:
            raise ctx.attach(
                errors.IOManagerError(f"could not write {path}: {exc}", context={"file": path})
            ) from exc
        except Exception as exc:  # pyarrow raises its own errors for types Parquet cannot hold
            raise ctx.attach(
                errors.OutputNotSerializableError(f"the {kind} frame cannot be written as Parquet: {exc}")
            ) from exc
        finally:
            sink.finish()  # the hashing thread ends with the write, also when the write failed
        digest = sink.hexdigest() if self.content_hash else None
        ctx.metadata.update(frames.describe(table, size_bytes=sink.size, digest=digest))
        return base.OutputRef(
            manager=ctx.manager_key,
            uri=self.uri_for(ctx.asset, ctx.partition_key, ctx.version),
            version=ctx.version,
            size_bytes=sink.size,
        )

    @property
    def _options(self) -> dict[str, Any]:
        return {"compression": self.compression}

    def _write_remote(self, path: str, data: bytes) -> None:
        if self._existing_matches(path, data):
            return
        # One PUT is atomic on object stores, and memory:// publishes on close: a reader never sees
        # half a file. Two writers of one version are the same attempt redelivered (same bytes).
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        self.fs.pipe_file(path, data)

    def _existing_matches(self, path: str, data: bytes) -> bool:
        try:
            size = self.fs.size(path)
        except FileNotFoundError:
            return False
        if size == len(data) and self.fs.cat_file(path) == data:
            return True
        raise errors.IOManagerError(
            f"version file {self.fs.unstrip_protocol(path)} already exists with different content; "
            "versions are immutable",
            retryable=False,
            context={"file": path},
        )

    # -- load -----------------------------------------------------------------------------------

    def read_table(self, ctx: base.InputContext) -> Any:
        """The stored version of ``ctx`` as a ``pyarrow.Table`` (the path derived, never the URI)."""
        pa = frames.require("pyarrow", "parquet")
        pq = frames.require("pyarrow.parquet", "parquet")
        try:
            path = self.path_for(ctx.asset, ctx.partition_key, ctx.ref.version)
        except errors.FlowStoneError as exc:
            raise ctx.attach(exc) from None
        try:
            if self.local:
                return pq.read_table(path)
            return pq.read_table(pa.BufferReader(self.fs.cat_file(path)))
        except FileNotFoundError:
            raise ctx.attach(
                errors.IOManagerError(
                    f"output file {self.fs.unstrip_protocol(path)} does not exist "
                    f"(was {self.base_uri} moved or cleaned?)",
                    retryable=False,
                    context={"file": path, "uri": ctx.ref.uri},
                )
            ) from None
        except OSError as exc:
            raise ctx.attach(
                errors.IOManagerError(f"could not read {path}: {exc}", context={"file": path})
            ) from exc
        except pa.ArrowInvalid as exc:
            raise ctx.attach(
                errors.OutputDecodeError(
                    f"output file {path} is not a readable Parquet file: {exc}", context={"file": path}
                )
            ) from exc

    def load(self, ctx: base.InputContext) -> object:
        """The stored frame, as the kind ``ctx.type_hint`` asks for (see the class docstring)."""
        table = self.read_table(ctx)
        try:
            return frames.from_arrow(table, ctx.type_hint)
        except errors.FlowStoneError as exc:
            raise ctx.attach(exc) from None

    def loads_combined(self, type_hint: object) -> bool:
        """True: several partitions read by a frame-annotated parameter load as one frame."""
        return frames.hint_kind(type_hint) is not None

    def load_combined(self, ctxs: Sequence[base.InputContext], type_hint: object) -> object:
        """The partitions of ``ctxs`` as one frame, in their order, with :attr:`partition_column`
        holding each row's partition value (its encoded key for multi-dimensional partitions)."""
        return frames.combine([(ctx, self.read_table(ctx)) for ctx in ctxs], self.partition_column, type_hint)

    # -- delete / gc ----------------------------------------------------------------------------

    def delete(self, ref: base.OutputRef) -> None:
        """Remove the version file ``ref`` points to; a missing file is not an error."""
        path = self._path_from_uri(ref)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise errors.IOManagerError(f"could not delete {path}: {exc}", context={"file": path}) from exc

    def stored_versions(self, asset: str, manager_key: str) -> Iterator[tuple[int, base.OutputRef]]:
        """Every version file of ``asset`` under the base path (for gc of orphans)."""
        if not _ASSET_RE.fullmatch(asset):
            return
        root = f"{self.root.rstrip('/')}/{asset}"
        try:
            found = sorted(self.fs.find(root))
        except FileNotFoundError:
            return
        for path in found:
            if not str(path).startswith(root + "/"):
                continue
            parts = str(path)[len(root) + 1 :].split("/")
            if len(parts) != 2 or not _SAFE_NAME_RE.fullmatch(parts[0]) or not parts[1].endswith(_SUFFIX):
                continue
            version = parts[1].removesuffix(_SUFFIX)
            if _VERSION_RE.fullmatch(version):
                uri = f"{self.base_uri}/{asset}/{parts[0]}/{parts[1]}"
                ref = base.OutputRef(manager=manager_key, uri=uri, version=version)
                yield int(version.split("-", 1)[0]), ref

    def _path_from_uri(self, ref: base.OutputRef) -> str:
        rest = ref.uri.removeprefix(self.base_uri + "/") if ref.uri.startswith(self.base_uri + "/") else ""
        parts = rest.split("/")
        if (
            len(parts) != 3
            or not _ASSET_RE.fullmatch(parts[0])
            or not _SAFE_NAME_RE.fullmatch(parts[1])
            or parts[2] != f"{ref.version}{_SUFFIX}"
            or not _VERSION_RE.fullmatch(ref.version)
        ):
            raise errors.IOManagerError(
                f"refusing to delete {ref.uri!r}: not a version file of this manager under {self.base_uri}",
                retryable=False,
                context={"uri": ref.uri},
            )
        return f"{self.root.rstrip('/')}/{rest}"


class _HashingSink:
    """Counts the bytes pyarrow writes on their way to the real file, and hashes them.

    The SHA-256 runs in a thread beside the Parquet encoder instead of after it (hashlib releases
    the GIL), so on two cores the hash costs the writer almost nothing. Each chunk pyarrow hands to
    ``write`` is an immutable ``bytes`` object: the thread hashes it in order, without a copy and
    without reading the file back, so the digest is exactly that of the bytes written to the file.
    """

    def __init__(self, *, hashing: bool) -> None:
        self.hashing = hashing
        self.size = 0
        self._digest = hashlib.sha256()
        self._chunks: queue.SimpleQueue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self._syncer: threading.Thread | None = None
        self._sync_fd: int | None = None
        self._sync_error: OSError | None = None
        self._unsynced = 0

    def wrap(self, handle: BinaryIO, *, sync_early: bool = False) -> _HashingFile:
        """A file object for pyarrow that writes to ``handle`` (a retry of the write starts over).

        ``sync_early``: every :data:`SYNC_EARLY_BYTES` written, start an ``fdatasync`` of what the
        file holds so far in a thread, so the disk writes overlap the encoding and the final
        ``fsync`` (which stays: it is what makes the version durable) finds little left to write.
        Call :meth:`stop_syncing` before the handle is closed.
        """
        self.finish()
        self._digest = hashlib.sha256()
        self.size = 0
        self._unsynced = 0
        self._sync_fd = handle.fileno() if sync_early else None
        if self.hashing:
            self._chunks = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=_hash_chunks,
                args=(self._chunks, self._digest),
                name="flowstone-parquet-hash",
                daemon=True,
            )
            self._thread.start()
        return _HashingFile(self, handle)

    def feed(self, chunk: bytes, handle: BinaryIO) -> None:
        """Hash ``chunk`` (immutable) after every chunk fed before it; start an early sync if due."""
        if self._chunks is not None:
            self._chunks.put(chunk)
        self._unsynced += len(chunk)
        due = self._sync_fd is not None and self._unsynced >= SYNC_EARLY_BYTES
        if due and (self._syncer is None or not self._syncer.is_alive()):
            handle.flush()
            self._syncer = threading.Thread(
                target=self._sync, args=(self._sync_fd,), name="flowstone-parquet-sync", daemon=True
            )
            self._syncer.start()
            self._unsynced = 0

    def _sync(self, fd: int) -> None:
        try:
            os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
        except OSError as exc:
            # Never swallowed: Linux reports a write-back error once per open file, so the final
            # fsync on this descriptor might not see it again. stop_syncing() raises it.
            self._sync_error = exc

    def stop_syncing(self) -> None:
        """Wait for an early sync under way (before the file is closed: it uses its descriptor) and
        raise the error it met, if any."""
        if self._syncer is not None:
            self._syncer.join()
        self._syncer = None
        self._sync_fd = None
        error, self._sync_error = self._sync_error, None
        if error is not None:
            raise error

    def finish(self) -> None:
        """Wait until every chunk fed so far is hashed (also on an error: no thread is left behind)."""
        if self._chunks is not None and self._thread is not None:
            self._chunks.put(None)
            self._thread.join()
        self._chunks = self._thread = None

    def hexdigest(self) -> str:
        """``sha256:<hex>`` of every byte written (waits for the hashing thread)."""
        self.finish()
        return "sha256:" + self._digest.hexdigest()


def _hash_chunks(chunks: queue.SimpleQueue[bytes | None], digest: Any) -> None:
    while (chunk := chunks.get()) is not None:
        digest.update(chunk)


class _HashingFile(io.RawIOBase):
    def __init__(self, sink: _HashingSink, handle: BinaryIO) -> None:
        super().__init__()
        self._sink = sink
        self._handle = handle

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        # pyarrow passes bytes (immutable: safe to hash later in the thread); anything mutable is
        # copied first, so the digest is always of the bytes that reached the file.
        chunk = data if isinstance(data, bytes) else bytes(memoryview(data).cast("B"))
        self._handle.write(chunk)
        self._sink.size += len(chunk)
        self._sink.feed(chunk, self._handle)
        return len(chunk)

    def close(self) -> None:
        # pyarrow closes the file it wrote; the owner of the handle closes (and fsyncs) it.
        super().close()


class _Buffer(io.BytesIO):
    def close(self) -> None:  # keep the bytes readable after pyarrow closes the stream
        return None
