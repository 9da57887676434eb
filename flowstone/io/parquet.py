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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from flowstone import errors
from flowstone.io import base, frames
from flowstone.io import filesystem as fs_io

__all__ = ["ParquetIOManager"]

_SUFFIX = ".parquet"
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
                fs_io.write_once_streamed(
                    Path(path), lambda handle: pq.write_table(table, sink.wrap(handle), **self._options)
                )
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
    """Counts and hashes the bytes pyarrow writes, on their way to the real file."""

    def __init__(self, *, hashing: bool) -> None:
        self._digest = hashlib.sha256()
        self.hashing = hashing
        self.size = 0

    def wrap(self, handle: BinaryIO) -> _HashingFile:
        self._digest = hashlib.sha256()  # a retry of the write starts over
        self.size = 0
        return _HashingFile(self, handle)

    def hexdigest(self) -> str:
        return "sha256:" + self._digest.hexdigest()


class _HashingFile(io.RawIOBase):
    def __init__(self, sink: _HashingSink, handle: BinaryIO) -> None:
        super().__init__()
        self._sink = sink
        self._handle = handle

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self._sink.hashing:
            self._sink._digest.update(view)
        self._sink.size += view.nbytes
        self._handle.write(view)
        return view.nbytes

    def close(self) -> None:
        # pyarrow closes the file it wrote; the owner of the handle closes (and fsyncs) it.
        super().close()


class _Buffer(io.BytesIO):
    def close(self) -> None:  # keep the bytes readable after pyarrow closes the stream
        return None
