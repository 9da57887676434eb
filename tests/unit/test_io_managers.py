"""The built-in IO managers (invariants I4, I10): exact round trips, immutable versions, safe paths."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import threading
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowstone import errors, partition_keys
from flowstone.io import (
    FilesystemIOManager,
    InputContext,
    IOManager,
    MemoryIOManager,
    OutputContext,
    OutputRef,
)
from flowstone.io import filesystem as fs_io
from flowstone.partition_keys import PartitionValue

DAY = date(2025, 1, 1)


def octx(
    *,
    asset: str = "events",
    partition: PartitionValue | None = DAY,
    key: str | None = None,
    mid: int = 1,
    type_hint: object = None,
) -> OutputContext:
    return OutputContext(
        asset=asset,
        partition=partition,
        partition_key=partition_keys.encode(partition) if key is None else key,
        run_id="run-1",
        materialization_id=mid,
        manager_key="main",
        type_hint=type_hint,
    )


def ictx(ctx: OutputContext, ref: OutputRef, type_hint: object = None) -> InputContext:
    return InputContext(
        asset=ctx.asset,
        partition=ctx.partition,
        partition_key=ctx.partition_key,
        ref=ref,
        type_hint=type_hint,
    )


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(params=["memory", "filesystem"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IOManager]:
    if request.param == "memory":
        yield MemoryIOManager()
    else:
        yield FilesystemIOManager(tmp_path / "outputs")


class Event(pydantic.BaseModel):
    """A small model for type-hinted loads."""

    name: str
    day: date


# ------------------------------------------------------------------------------- both managers


def test_i10_round_trip_and_ref(manager: IOManager) -> None:
    value = {"rows": [(1, "a"), (2, "b")], "day": DAY, "total": Decimal("3.50"), "raw": b"\x00"}
    ctx = octx()
    ref = manager.store(ctx, value)
    assert ref.manager == "main"
    assert ref.version == "1"
    assert ref.size_bytes is not None
    assert ref.size_bytes > 0
    assert OutputRef.model_validate_json(ref.model_dump_json()) == ref
    assert manager.load(ictx(ctx, ref)) == value
    assert manager.versioned is True


def test_type_hint_is_applied_on_load(manager: IOManager) -> None:
    ctx = octx()
    ref = manager.store(ctx, [Event(name="a", day=DAY)])
    assert manager.load(ictx(ctx, ref)) == [{"name": "a", "day": "2025-01-01"}]
    assert manager.load(ictx(ctx, ref, list[Event])) == [Event(name="a", day=DAY)]
    with pytest.raises(errors.OutputDecodeError) as info:
        manager.load(ictx(ctx, ref, list[int]))
    assert info.value.asset == "events"
    assert info.value.partition == "d:2025-01-01"


def test_i10_versions_are_immutable(manager: IOManager) -> None:
    value = {"n": [1, 2, 3]}
    ctx = octx(mid=7)
    ref = manager.store(ctx, value)
    value["n"].append(4)  # mutating after the store changes nothing stored
    assert manager.load(ictx(ctx, ref)) == {"n": [1, 2, 3]}
    loaded = manager.load(ictx(ctx, ref))
    assert isinstance(loaded, dict)
    loaded["n"].clear()  # each load is a fresh object
    assert manager.load(ictx(ctx, ref)) == {"n": [1, 2, 3]}
    # a redelivered job storing the same version with the same content is fine ...
    assert manager.store(ctx, {"n": [1, 2, 3]}) == ref
    # ... different content for an existing version is refused, and the version is untouched
    with pytest.raises(errors.IOManagerError, match="already exists with different content") as info:
        manager.store(ctx, {"n": [9]})
    assert info.value.retryable is False
    assert info.value.asset == "events"
    assert manager.load(ictx(ctx, ref)) == {"n": [1, 2, 3]}
    # a new materialization is a new version beside the old one
    ref2 = manager.store(octx(mid=8), {"n": [9]})
    assert ref2.version == "8"
    assert ref2.uri != ref.uri
    assert manager.load(ictx(ctx, ref)) == {"n": [1, 2, 3]}


def test_unserializable_output_names_asset_partition_and_path(manager: IOManager) -> None:
    with pytest.raises(errors.OutputNotSerializableError) as info:
        manager.store(octx(), {"rows": [1, 2, 3, object()]})
    error = info.value
    assert error.asset == "events"
    assert error.partition == "d:2025-01-01"
    assert error.run_id == "run-1"
    assert 'value["rows"][3]' in error.message
    assert error.retryable is False


def test_unpartitioned_errors_have_no_partition(manager: IOManager) -> None:
    ctx = octx(partition=None)
    assert ctx.partition_key == partition_keys.UNPARTITIONED
    with pytest.raises(errors.OutputNotSerializableError) as info:
        manager.store(ctx, {1j})
    assert info.value.partition is None
    ref = manager.store(ctx, 1)
    assert manager.load(ictx(ctx, ref)) == 1


def test_delete_is_idempotent(manager: IOManager) -> None:
    ctx = octx()
    ref = manager.store(ctx, "x")
    manager.delete(ref)
    manager.delete(ref)
    with pytest.raises(errors.IOManagerError) as info:
        manager.load(ictx(ctx, ref))
    assert info.value.retryable is False
    assert info.value.asset == "events"


@pytest.mark.parametrize(
    "key",
    [
        "s:../../etc",
        "../../etc/passwd",
        "/etc/passwd",
        "s:a/b\\c",
        ".",
        "..",
        "",
        "s:CON",
        "s:日本語 ✓ 😀",
        'T:["s:a|b","i:1"]',
        "s:" + "x" * 10_000,
    ],
)
def test_hostile_and_odd_partition_keys_round_trip(manager: IOManager, key: str) -> None:
    ctx = octx(key=key, partition="whatever")
    ref = manager.store(ctx, {"key": key})
    assert manager.load(ictx(ctx, ref)) == {"key": key}


# ---------------------------------------------------------------------------------- memory


def test_memory_manager_uri_and_missing_version() -> None:
    manager = MemoryIOManager()
    ctx = octx(key="s:a/b")
    ref = manager.store(ctx, 1)
    assert ref.uri == "memory://events/s%3Aa%2Fb/1"
    assert len(manager) == 1
    missing = ref.model_copy(update={"uri": "memory://events/s%3Aa%2Fb/2", "version": "2"})
    with pytest.raises(errors.IOManagerError, match="no stored output"):
        manager.load(ictx(ctx, missing))


def test_memory_manager_is_thread_safe() -> None:
    manager = MemoryIOManager()
    refs: dict[int, OutputRef] = {}

    def worker(start: int) -> None:
        for mid in range(start, start + 50):
            refs[mid] = manager.store(octx(mid=mid), {"mid": mid})

    threads = [threading.Thread(target=worker, args=(i * 50,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(manager) == 400
    assert all(manager.load(ictx(octx(mid=m), r)) == {"mid": m} for m, r in refs.items())


# ------------------------------------------------------------------------------ filesystem


def test_filesystem_layout(tmp_path: Path) -> None:
    manager = FilesystemIOManager(tmp_path)
    ref = manager.store(octx(mid=42), [1])
    path = tmp_path / "events" / "d_3a2025-01-01" / "42.json"
    assert files_under(tmp_path) == [path]
    assert path.read_text(encoding="utf-8") == "[1]"
    assert ref.uri == path.as_uri()
    assert ref.size_bytes == 3
    unpartitioned = manager.store(octx(partition=None, mid=43), None)
    assert unpartitioned.uri.endswith("/events/_unpartitioned/43.json")


def test_relative_base_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manager = FilesystemIOManager("out")
    assert manager.base_dir == tmp_path / "out"


def test_codec_failure_leaves_no_file(tmp_path: Path) -> None:
    manager = FilesystemIOManager(tmp_path)
    with pytest.raises(errors.OutputNotSerializableError):
        manager.store(octx(), [float("nan")])
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("broken", ["fsync", "link"])
def test_write_failure_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    manager = FilesystemIOManager(tmp_path)

    def fail(*_args: object) -> None:
        raise OSError(errno.EIO, "disk on fire")

    monkeypatch.setattr(os, broken, fail)
    with pytest.raises(errors.IOManagerError, match="disk on fire") as info:
        manager.store(octx(), {"big": "x" * 100_000})
    assert info.value.retryable is True
    assert info.value.asset == "events"
    assert files_under(tmp_path) == []


def test_file_systems_without_hard_links_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = FilesystemIOManager(tmp_path)

    def no_links(*_args: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    ctx = octx()
    ref = manager.store(ctx, [1, 2])
    assert manager.store(ctx, [1, 2]) == ref
    with pytest.raises(errors.IOManagerError, match="different content"):
        manager.store(ctx, [3])
    assert manager.load(ictx(ctx, ref)) == [1, 2]
    assert [p.name for p in files_under(tmp_path)] == ["1.json"]


def test_concurrent_writers_of_one_version(tmp_path: Path) -> None:
    manager = FilesystemIOManager(tmp_path)
    gate = threading.Barrier(8)
    refs: list[OutputRef] = []

    def worker() -> None:
        gate.wait()
        refs.append(manager.store(octx(), {"same": True}))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(refs) == 8
    assert len(set(refs)) == 1
    assert [p.name for p in files_under(tmp_path)] == ["1.json"]


def test_hostile_partition_keys_stay_in_one_safe_directory(tmp_path: Path) -> None:
    manager = FilesystemIOManager(tmp_path)
    keys = ["s:../../etc", "../..", "/abs", "s:A", "s:a", ".", "..", "s:" + "é" * 5000]
    dirs = set()
    for mid, key in enumerate(keys, start=1):
        ref = manager.store(octx(key=key, mid=mid), mid)
        path = manager.path_for("events", key, mid)
        assert ref.uri == path.as_uri()
        assert path.parent.parent == tmp_path / "events"
        assert re.fullmatch(r"[a-z0-9_-]+", path.parent.name)
        assert len(path.parent.name) <= fs_io.MAX_NAME_CHARS
        dirs.add(path.parent.name)
    assert len(dirs) == len(keys)  # "s:A" and "s:a" differ even on case-insensitive disks
    assert all(p.is_relative_to(tmp_path / "events") for p in files_under(tmp_path))


def test_long_keys_get_distinct_hashed_names() -> None:
    a = fs_io.safe_name("s:" + "x" * 5000 + "a")
    b = fs_io.safe_name("s:" + "x" * 5000 + "b")
    assert a != b
    assert "_h" in a
    assert len(a) <= fs_io.MAX_NAME_CHARS


@given(st.text(), st.text())
def test_safe_name_is_safe_and_injective(a: str, b: str) -> None:
    name = fs_io.safe_name(a)
    assert re.fullmatch(r"[a-z0-9_-]+", name)
    assert name not in {".", ".."}
    assert len(name) <= fs_io.MAX_NAME_CHARS
    assert (name == fs_io.safe_name(b)) == (a == b)


@pytest.mark.parametrize("asset", ["../x", "a/b", "", "x" * 200, ".."])
def test_hostile_asset_names_are_refused(tmp_path: Path, asset: str) -> None:
    manager = FilesystemIOManager(tmp_path)
    with pytest.raises(errors.IOManagerError, match="cannot be used as a directory") as info:
        manager.store(octx(asset=asset), 1)
    assert info.value.retryable is False
    assert files_under(tmp_path) == []


def test_load_derives_the_path_and_ignores_a_tampered_uri(tmp_path: Path) -> None:
    manager = FilesystemIOManager(tmp_path / "outputs")
    secret = tmp_path / "secret.json"
    secret.write_text('"secret"', encoding="utf-8")
    ctx = octx()
    ref = manager.store(ctx, "mine")
    tampered = ref.model_copy(update={"uri": secret.as_uri()})
    assert manager.load(ictx(ctx, tampered)) == "mine"
    with pytest.raises(errors.IOManagerError, match="not a materialization id"):
        manager.load(ictx(ctx, ref.model_copy(update={"version": "../../secret"})))


def test_delete_refuses_paths_outside_the_layout(tmp_path: Path) -> None:
    manager = FilesystemIOManager(tmp_path / "outputs")
    victim = tmp_path / "victim.json"
    victim.write_text("{}", encoding="utf-8")
    ref = manager.store(octx(), 1)
    for uri in [
        victim.as_uri(),
        "file:///etc/passwd",
        ref.uri.replace("/1.json", "/../../../victim.json"),
        "https://example.com/events/x/1.json",
        ref.uri + "?x=1",
    ]:
        with pytest.raises(errors.IOManagerError, match="refusing to delete"):
            manager.delete(ref.model_copy(update={"uri": uri}))
    with pytest.raises(errors.IOManagerError, match="refusing to delete"):
        manager.delete(ref.model_copy(update={"version": "2"}))
    assert victim.exists()
    manager.delete(ref)
    assert files_under(tmp_path / "outputs") == []


def test_corrupt_or_foreign_version_file(tmp_path: Path) -> None:
    manager = FilesystemIOManager(tmp_path)
    ctx = octx()
    ref = manager.store(ctx, {"ok": True})
    path = manager.path_for(ctx.asset, ctx.partition_key, 1)
    path.write_bytes(b'{"$fs":"pickle","v":"gASV"}')
    with pytest.raises(errors.OutputDecodeError, match="unknown tag") as info:
        manager.load(ictx(ctx, ref))
    assert info.value.asset == "events"
    assert info.value.partition == "d:2025-01-01"
    assert info.value.context["file"] == str(path)
    # the version now holds other bytes, so storing the original again is a conflict
    with pytest.raises(errors.IOManagerError, match="different content"):
        manager.store(ctx, {"ok": True})


def test_output_ref_is_strict() -> None:
    ref = OutputRef(manager="m", uri="memory://a/b/1", version="1")
    with pytest.raises(pydantic.ValidationError):
        OutputRef.model_validate({"manager": "m", "uri": "u", "version": "1", "extra": 1})
    with pytest.raises(pydantic.ValidationError):
        ref.version = "2"  # type: ignore[misc]


def test_a_later_attempt_writes_its_own_version_next_to_an_uncommitted_one(manager: IOManager):
    """Attempt 1 stored its output but crashed before the success; attempt 2 of the same
    materialization computes something else (a timestamp): it must not collide with the leftover."""
    first = dataclasses.replace(octx(mid=7), attempt=1)
    second = dataclasses.replace(octx(mid=7), attempt=2)
    manager.store(first, {"computed": "at 10:00"})
    ref = manager.store(second, {"computed": "at 10:05"})
    assert ref.version == "7-2"
    assert manager.load(ictx(second, ref)) == {"computed": "at 10:05"}
    # the same attempt delivered twice with the same bytes is still fine (idempotent)
    assert manager.store(second, {"computed": "at 10:05"}) == ref
