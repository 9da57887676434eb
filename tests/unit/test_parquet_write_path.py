"""The write paths of ParquetIOManager and DuckDBIOManager (issue 18, speed): the SHA-256 runs in a
thread beside the encoder (DuckDB's insert) and the Parquet file's bytes start syncing while it is
written, with the same digest and the same durability as hashing and syncing afterwards."""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flowstone import errors, partition_keys
from flowstone.io import OutputContext, ParquetIOManager
from flowstone.io import parquet as parquet_io


def octx(mid: int) -> OutputContext:
    day = date(2025, 1, 1)
    return OutputContext("events", day, partition_keys.encode(day), "run-1", mid, "main")


def wide_table(rows: int = 200_000) -> pa.Table:
    rng = np.random.default_rng(7)
    columns = {"i": rng.integers(0, 10**9, rows), "f": rng.random(rows), "s": rng.integers(0, 99, rows)}
    return pa.table(columns)


def hashing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("flowstone-parquet-")]


def test_the_threaded_hash_is_the_sha256_of_the_published_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parquet_io, "SYNC_EARLY_BYTES", 64 << 10)  # many early syncs during the write
    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        synced.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    manager = ParquetIOManager(tmp_path / "lake")
    ctx = octx(1)
    ref = manager.store(ctx, wide_table())
    path = Path(manager.path_for("events", ctx.partition_key, ref.version))
    data = path.read_bytes()
    assert ctx.metadata["content_hash"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert ctx.metadata["size_bytes"] == ref.size_bytes == len(data) > 10 * (64 << 10)
    assert synced, "the file was not synced while it was written"
    assert hashing_threads() == []  # every thread ended with the write


def test_equal_frames_hash_equal_and_remote_writes_hash_the_same_bytes(tmp_path: Path) -> None:
    table = wide_table(50_000)
    local = ParquetIOManager(tmp_path / "lake")
    remote = ParquetIOManager(f"memory://flowstone-hash-test-{os.getpid()}/lake")
    digests = []
    for mid, manager in enumerate([local, local, remote], start=1):
        ctx = octx(mid)
        manager.store(ctx, table)
        digests.append(ctx.metadata["content_hash"])
    assert len(set(digests)) == 1
    other = octx(9)
    local.store(other, table.slice(1))
    assert other.metadata["content_hash"] != digests[0]


def test_a_failed_write_leaves_no_hashing_or_syncing_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq  # noqa: PLC0415

    monkeypatch.setattr(parquet_io, "SYNC_EARLY_BYTES", 4)

    def part_then_fail(_table: object, where: object, **_options: object) -> None:
        for _ in range(50):
            where.write(b"PAR1 part of a file")  # type: ignore[attr-defined]
        raise pa.ArrowInvalid("disk full halfway")

    monkeypatch.setattr(pq, "write_table", part_then_fail)
    with pytest.raises(errors.OutputNotSerializableError, match="halfway"):
        ParquetIOManager(tmp_path / "lake").store(octx(1), wide_table(10))
    assert hashing_threads() == []
    assert [p for p in (tmp_path / "lake").rglob("*") if p.is_file()] == []


def test_mutable_chunks_are_hashed_as_written(tmp_path: Path) -> None:
    """A writer that reuses its buffer after write() returns cannot change what was hashed."""
    sink = parquet_io._HashingSink(hashing=True)
    target = tmp_path / "f"
    with target.open("wb") as handle:
        wrapped = sink.wrap(handle)
        buffer = bytearray(b"a" * 5000)
        wrapped.write(buffer)
        buffer[:] = b"b" * 5000  # reused at once, as a C writer may
        wrapped.write(memoryview(buffer))
    assert sink.hexdigest() == "sha256:" + hashlib.sha256(target.read_bytes()).hexdigest()


def test_an_error_of_an_early_sync_fails_the_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux reports a write-back error once per open file: the final fsync may not see it again,
    so an early sync's error must fail the write itself, with no version published."""
    monkeypatch.setattr(parquet_io, "SYNC_EARLY_BYTES", 64 << 10)

    def failing_fdatasync(_fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    with pytest.raises(errors.IOManagerError, match="Input/output error"):
        ParquetIOManager(tmp_path / "lake").store(octx(1), wide_table())
    assert [p for p in (tmp_path / "lake").rglob("*") if p.is_file()] == []
    assert hashing_threads() == []


def test_duckdb_hashes_beside_its_write_with_the_digest_of_the_arrow_stream(tmp_path: Path) -> None:
    """DuckDBIOManager hashes in a thread while DuckDB writes; the digest is arrow_hash's, and no
    hashing thread outlives the store."""
    from flowstone.io import DuckDBIOManager, frames  # noqa: PLC0415

    table = wide_table(50_000)
    manager = DuckDBIOManager(tmp_path / "lake.duckdb")
    ctx = octx(1)
    manager.store(ctx, table)
    manager.close()
    assert ctx.metadata["content_hash"] == frames.arrow_hash(frames.arrow_table(table, "arrow"))
    assert [t for t in threading.enumerate() if t.name == "flowstone-frame-hash"] == []


def test_a_failed_duckdb_write_waits_for_its_hash_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowstone.io import DuckDBIOManager  # noqa: PLC0415

    manager = DuckDBIOManager(tmp_path / "lake.duckdb")

    def fail(*_args: object) -> None:
        raise errors.IOManagerError("disk full halfway", retryable=False)

    monkeypatch.setattr(manager, "_write", fail)
    with pytest.raises(errors.IOManagerError, match="halfway"):
        manager.store(octx(1), wide_table(10))
    manager.close()
    assert [t for t in threading.enumerate() if t.name == "flowstone-frame-hash"] == []


def test_the_hash_beside_reraises_what_the_hash_raised() -> None:
    from flowstone.io import frames  # noqa: PLC0415

    wait = frames.arrow_hash_beside(object())  # not a table: arrow_hash fails in its thread
    with pytest.raises(AttributeError):
        wait()
