"""An IO manager that writes one immutable JSON file per materialization (invariants I4, I10).

Layout: ``<base_dir>/<asset>/<safe partition name>/<materialization_id>.json``, the file holding the
codec's JSON text (:mod:`flowstone.codec`) in UTF-8.

The partition directory name is made from the encoded partition key by :func:`safe_name`: the bytes
``a-z``, ``0-9`` and ``-`` are kept and every other UTF-8 byte becomes ``_xx`` (two lower-case hex
digits), so ``d:2025-01-01`` becomes ``d_3a2025-01-01``. The mapping is injective, the result is
never ``.``/``..`` and contains no separator, and it only uses lower-case letters, so two keys never
share a directory even on case-insensitive file systems. Names longer than
:data:`MAX_NAME_CHARS` keep a readable prefix followed by ``_h`` and the SHA-256 of the key (``_h``
never occurs in a short name, ``h`` is not a hex digit). The unpartitioned sentinel gets the
readable name ``_unpartitioned``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from flowstone import codec, errors, partition_keys
from flowstone.io import base

__all__ = ["MAX_NAME_CHARS", "FilesystemIOManager", "safe_name", "write_once", "write_once_streamed"]

MAX_NAME_CHARS = 160
"""Longest partition directory name; file systems allow 255 bytes per name."""

_PREFIX_CHARS = 80  # readable part kept in front of the hash of a long key
_ESCAPE_RE = re.compile(r"[^a-z0-9-]+")
_ASSET_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_VERSION_RE = re.compile(r"[0-9]{1,20}(?:-[0-9]{1,9})?")  # "<materialization id>[-<attempt>]"
_SAFE_NAME_RE = re.compile(
    r"_|_unpartitioned|(?:[a-z0-9-]|_[0-9a-f]{2})+|(?:[a-z0-9-]|_[0-9a-f]{2})*_h[0-9a-f]{64}"
)
# Shared with the Parquet manager, which lays out its files the same way.
ASSET_RE = _ASSET_RE
VERSION_RE = _VERSION_RE
SAFE_NAME_RE = _SAFE_NAME_RE
# Where hard links are refused, fall back to os.replace (see _publish).
_NO_LINK_ERRNOS = frozenset(
    {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EACCES}
)


def _escape(match: re.Match[str]) -> str:
    return "".join(f"_{byte:02x}" for byte in match.group().encode("utf-8", "surrogatepass"))


def safe_name(partition_key: str) -> str:
    """The file-system-safe directory name of an encoded partition key (see the module docstring)."""
    if partition_key == partition_keys.UNPARTITIONED:
        return "_unpartitioned"
    if not partition_key:
        return "_"
    name = _ESCAPE_RE.sub(_escape, partition_key)
    if len(name) <= MAX_NAME_CHARS:
        return name
    digest = hashlib.sha256(partition_key.encode("utf-8", "surrogatepass")).hexdigest()
    prefix = name[:_PREFIX_CHARS]
    cut = prefix.find("_", len(prefix) - 2)  # do not keep half of an "_xx" escape
    if cut != -1:
        prefix = prefix[:cut]
    return f"{prefix}_h{digest}"


class FilesystemIOManager(base.IOManager):
    """Stores each output as ``<base_dir>/<asset>/<safe partition>/<materialization_id>.json``.

    A version is written to a temporary file in the same directory, flushed with ``fsync`` and then
    published atomically under its final name without ever replacing an existing version: a reader
    sees the whole file or nothing, and a crash or an encoding error leaves no partial version
    behind. Storing a version again with identical bytes is accepted (a redelivered job); different
    bytes raise :class:`~flowstone.errors.IOManagerError`. ``load`` derives the path from the
    asset, partition key and version, never from the stored URI, so a tampered ref cannot point it
    at another file; ``delete`` refuses URIs outside ``base_dir`` or off the layout.
    """

    versioned = True

    def __init__(self, base_dir: str | os.PathLike[str]) -> None:
        """Write under ``base_dir`` (created on first store; made absolute now)."""
        self.base_dir = Path(base_dir).expanduser().absolute()
        """The absolute root directory of every stored output."""

    def path_for(self, asset: str, partition_key: str, version: str | int) -> Path:
        """The file that holds ``version`` of ``asset``'s output for ``partition_key``."""
        return self.base_dir / version_path(asset, partition_key, version, ".json")

    def store(self, ctx: base.OutputContext, value: object) -> base.OutputRef:
        """Encode ``value`` and publish it as an immutable version file (see the class docstring)."""
        try:
            # Encode before touching the disk: an unserializable value creates no file at all.
            data = codec.dumps(value).encode("utf-8")
            target = self.path_for(ctx.asset, ctx.partition_key, ctx.version)
        except errors.FlowStoneError as exc:
            ctx.attach(exc)
            raise
        try:
            write_once(target, data)
        except errors.FlowStoneError as exc:
            ctx.attach(exc)
            raise
        except OSError as exc:
            raise ctx.attach(
                errors.IOManagerError(f"could not write {target}: {exc}", context={"file": str(target)})
            ) from exc
        return base.OutputRef(
            manager=ctx.manager_key,
            uri=target.as_uri(),
            version=ctx.version,
            size_bytes=len(data),
        )

    def load(self, ctx: base.InputContext) -> object:
        """Read and decode the version ``ctx.ref`` names, validated against ``ctx.type_hint``."""
        try:
            path = self.path_for(ctx.asset, ctx.partition_key, ctx.ref.version)
        except errors.FlowStoneError as exc:
            ctx.attach(exc)
            raise
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ctx.attach(
                errors.IOManagerError(
                    f"output file {path} does not exist (was {self.base_dir} moved or cleaned?)",
                    retryable=False,
                    context={"file": str(path), "uri": ctx.ref.uri},
                )
            ) from None
        except OSError as exc:
            raise ctx.attach(
                errors.IOManagerError(f"could not read {path}: {exc}", context={"file": str(path)})
            ) from exc
        try:
            return codec.loads(data, type_hint=ctx.type_hint)
        except errors.FlowStoneError as exc:
            exc.context.setdefault("file", str(path))
            ctx.attach(exc)
            raise

    def delete(self, ref: base.OutputRef) -> None:
        """Remove the version file ``ref`` points to; a missing file is not an error."""
        path = self._path_from_uri(ref)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise errors.IOManagerError(
                f"could not delete {path}: {exc}", context={"file": str(path)}
            ) from exc

    def stored_versions(self, asset: str, manager_key: str) -> Iterator[tuple[int, base.OutputRef]]:
        """Every version file of ``asset`` under ``base_dir`` (see :meth:`IOManager.stored_versions`)."""
        root = self.base_dir / asset
        if not _ASSET_RE.fullmatch(asset) or not root.is_dir():
            return
        for directory in sorted(root.iterdir()):
            if not directory.is_dir() or not _SAFE_NAME_RE.fullmatch(directory.name):
                continue
            for path in sorted(directory.glob("*.json")):
                version = path.name.removesuffix(".json")
                if _VERSION_RE.fullmatch(version):
                    ref = base.OutputRef(manager=manager_key, uri=path.as_uri(), version=version)
                    yield int(version.split("-", 1)[0]), ref

    def _path_from_uri(self, ref: base.OutputRef) -> Path:
        parts = urllib.parse.urlsplit(ref.uri)
        path = Path(urllib.request.url2pathname(parts.path))
        if (
            parts.scheme != "file"
            or parts.netloc not in ("", "localhost")
            or parts.query
            or parts.fragment
            or path.parent.parent.parent != self.base_dir
            or not _ASSET_RE.fullmatch(path.parent.parent.name)
            or not _SAFE_NAME_RE.fullmatch(path.parent.name)
            or path.name != f"{ref.version}.json"
            or not _VERSION_RE.fullmatch(ref.version)
        ):
            raise errors.IOManagerError(
                f"refusing to delete {ref.uri!r}: not a version file of this manager under {self.base_dir}",
                retryable=False,
                context={"uri": ref.uri},
            )
        return path


def write_once(target: Path, data: bytes | memoryview) -> None:
    """Publish ``data`` at ``target`` unless it exists; an existing file must hold the same bytes."""
    _make_dir(target.parent)
    if _existing_matches(target, data):
        return
    write_once_streamed(target, lambda handle: handle.write(data), data)


def write_once_streamed(
    target: Path, write: Callable[[BinaryIO], object], data: bytes | memoryview | None = None
) -> None:
    """Like :func:`write_once`, with the bytes written by ``write`` straight into the temporary file
    (a large output is never held in memory); on a conflict the file's bytes are compared."""
    directory = target.parent
    _make_dir(directory)
    temp = directory / f".{target.stem}.{secrets.token_hex(8)}.tmp"
    # O_EXCL: never follow or reuse a file someone else put there; 0o666 lets the umask decide.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(temp, target, data)
        _fsync_dir(directory)
    finally:
        temp.unlink(missing_ok=True)


def _make_dir(directory: Path) -> None:
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        # Make the new directory entries durable too, or a crash could lose a committed version.
        _fsync_dir(directory.parent)
        _fsync_dir(directory.parent.parent)


def _publish(temp: Path, target: Path, data: bytes | memoryview | None) -> None:
    try:
        # A hard link creates the final name atomically and fails if it exists, so a concurrent
        # writer of the same version can never be overwritten (os.replace would overwrite it).
        os.link(temp, target)
    except FileExistsError:
        # raises if the other writer stored different bytes
        _existing_matches(target, temp.read_bytes() if data is None else data)
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
        # This file system has no hard links: check, then replace (atomic, with a small race
        # window against a concurrent writer of the same version; their bytes are equal when the
        # job is merely redelivered).
        if not _existing_matches(target, temp.read_bytes() if data is None else data):
            temp.replace(target)


def _existing_matches(target: Path, data: bytes | memoryview) -> bool:
    """False if ``target`` does not exist, True if it holds ``data``, else IOManagerError."""
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        return False
    if size == len(data) and target.read_bytes() == data:
        return True
    raise errors.IOManagerError(
        f"version file {target} already exists with different content; versions are immutable",
        retryable=False,
        context={"file": str(target)},
    )


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory; NTFS journals the metadata
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def version_path(asset: str, partition_key: str, version: str | int, suffix: str) -> str:
    """``<asset>/<safe partition>/<version><suffix>``, validated: the asset is a plain name and the
    version a materialization id (digits, then ``-attempt``), so the path never escapes its base."""
    if not isinstance(asset, str) or not _ASSET_RE.fullmatch(asset):
        raise errors.IOManagerError(
            f"asset name {asset!r} cannot be used as a directory name", retryable=False
        )
    text = str(version) if isinstance(version, str | int) else ""
    if isinstance(version, bool) or not _VERSION_RE.fullmatch(text):
        raise errors.IOManagerError(
            f"version {version!r} is not a materialization id (digits, then -attempt)", retryable=False
        )
    return f"{asset}/{safe_name(partition_key)}/{text}{suffix}"
