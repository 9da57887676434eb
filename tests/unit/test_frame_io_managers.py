"""DataFrame IO managers (issue 18): Parquet on local disks and fsspec URLs, DuckDB tables.

Round trips for pandas, polars and Arrow frames with awkward dtypes, loads by parameter
annotation, immutable per-attempt versions, hostile names, and versions gc can collect.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from flowstone import errors, partition_keys
from flowstone.io import (
    DuckDBIOManager,
    InputContext,
    IOManager,
    OutputContext,
    OutputRef,
    ParquetIOManager,
    frames,
)
from flowstone.partition_keys import PartitionValue

DAY = date(2025, 1, 1)


def octx(
    *, asset: str = "events", partition: PartitionValue | None = DAY, key: str | None = None, mid: int = 1
) -> OutputContext:
    return OutputContext(
        asset=asset,
        partition=partition,
        partition_key=partition_keys.encode(partition) if key is None else key,
        run_id="run-1",
        materialization_id=mid,
        manager_key="main",
    )


def ictx(ctx: OutputContext, ref: OutputRef, type_hint: object = None) -> InputContext:
    return InputContext(
        asset=ctx.asset,
        partition=ctx.partition,
        partition_key=ctx.partition_key,
        ref=ref,
        type_hint=type_hint,
    )


def arrow_frame() -> pa.Table:
    """Timestamps with time zones, decimals, nulls, dictionary (categorical) and nested lists."""
    return pa.table(
        {
            "id": pa.array([1, 2, None], pa.int64()),
            "at": pa.array(
                [datetime(2025, 1, 1, 12, tzinfo=UTC), None, datetime(2025, 3, 1, tzinfo=UTC)],
                pa.timestamp("us", tz="Europe/Paris"),
            ),
            "price": pa.array([Decimal("1.50"), None, Decimal("-3.25")], pa.decimal128(10, 2)),
            "species": pa.array(["Adelie", "Gentoo", "Adelie"]).dictionary_encode(),
            "tags": pa.array([["a", "b"], [], None], pa.list_(pa.string())),
            "name": pa.array(["x", None, "日本語"]),
        }
    )


def pandas_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": pd.array([1, 2, None], dtype="Int64"),
            "at": pd.to_datetime(["2025-01-01 12:00", None, "2025-03-01 00:00"]).tz_localize("Europe/Paris"),
            "price": [Decimal("1.50"), None, Decimal("-3.25")],
            "species": pd.Categorical(["Adelie", "Gentoo", "Adelie"]),
            "value": [1.5, float("nan"), 3.0],
            "tags": [["a", "b"], [], None],
        }
    )


def polars_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [1, 2, None],
            "at": [datetime(2025, 1, 1, 12, tzinfo=UTC), None, datetime(2025, 3, 1, tzinfo=UTC)],
            "price": [Decimal("1.50"), None, Decimal("-3.25")],
            "species": pl.Series(["Adelie", "Gentoo", "Adelie"], dtype=pl.Categorical),
            "tags": [["a", "b"], [], None],
        },
        schema_overrides={"at": pl.Datetime("us", "Europe/Paris"), "price": pl.Decimal(10, 2)},
    )


def assert_same(kind: str, got: object, want: object) -> None:
    if kind == "pandas":
        assert isinstance(got, pd.DataFrame)
        assert isinstance(want, pd.DataFrame)
        pd.testing.assert_frame_equal(got, want)
    elif kind == "polars":
        assert isinstance(got, pl.DataFrame)
        assert isinstance(want, pl.DataFrame)
        assert got.schema == want.schema
        assert got.equals(want)
    else:
        assert isinstance(got, pa.Table)
        assert isinstance(want, pa.Table)
        assert got.schema.remove_metadata() == want.schema.remove_metadata()
        assert got.to_pylist() == want.to_pylist()


MAKERS = {"pandas": pandas_frame, "polars": polars_frame, "arrow": arrow_frame}
HINTS: dict[str, object] = {"pandas": pd.DataFrame, "polars": pl.DataFrame, "arrow": pa.Table}


@pytest.fixture(scope="module")
def s3_options() -> Iterator[dict[str, object]]:
    """A local S3-compatible server (moto's server mode) with one bucket, for s3:// through fsspec."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)
        client.create_bucket(Bucket="flowstone-tests")
        yield {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    finally:
        server.stop()


@pytest.fixture(params=["local", "file-url", "memory", "s3", "duckdb"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IOManager]:
    if request.param == "s3":
        options = request.getfixturevalue("s3_options")
        yield ParquetIOManager(f"s3://flowstone-tests/{uuid.uuid4().hex}", storage_options=options)
    elif request.param == "local":
        yield ParquetIOManager(tmp_path / "out")
    elif request.param == "file-url":
        yield ParquetIOManager((tmp_path / "out").as_uri())
    elif request.param == "memory":
        yield ParquetIOManager(f"memory://flowstone-tests/{uuid.uuid4().hex}")
    else:
        duck = DuckDBIOManager(tmp_path / "warehouse.duckdb", schema="analytics")
        yield duck
        duck.close()


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
def test_round_trip_each_frame_type_with_awkward_dtypes(manager: IOManager, kind: str) -> None:
    value = MAKERS[kind]()
    ctx = octx()
    ref = manager.store(ctx, value)
    assert ref.manager == "main"
    assert ref.version == "1"
    # without an annotation a frame comes back as the kind the asset returned
    assert_same(kind, manager.load(ictx(ctx, ref)), value)
    assert_same(kind, manager.load(ictx(ctx, ref, HINTS[kind])), value)
    # metadata: rows, schema, size, content hash
    assert ctx.metadata["row_count"] == 3
    columns = ctx.metadata["columns"]
    assert isinstance(columns, list)
    assert [c["name"] for c in columns][:2] == ["id", "at"]
    assert str(ctx.metadata["content_hash"]).startswith("sha256:")
    assert isinstance(ctx.metadata["size_bytes"], int)


def test_loads_follow_the_parameter_annotation(manager: IOManager) -> None:
    ctx = octx()
    ref = manager.store(ctx, polars_frame())
    as_arrow = manager.load(ictx(ctx, ref, pa.Table))
    assert isinstance(as_arrow, pa.Table)
    assert as_arrow.schema.field("at").type == pa.timestamp("us", tz="Europe/Paris")
    as_pandas = manager.load(ictx(ctx, ref, pd.DataFrame))
    assert isinstance(as_pandas, pd.DataFrame)
    assert str(as_pandas["at"].dtype) == "datetime64[us, Europe/Paris]"
    assert as_pandas["species"].dtype == "category"
    rows = manager.load(ictx(ctx, ref, list[dict[str, object]]))
    assert isinstance(rows, list)
    assert rows[0]["price"] == Decimal("1.50")
    with pytest.raises(errors.OutputDecodeError, match="does not match the type") as info:
        manager.load(ictx(ctx, ref, list[int]))
    assert info.value.asset == "events"


def test_polars_and_arrow_loads_do_not_import_pandas(tmp_path: Path) -> None:
    # pandas cannot even be imported here: polars and Arrow loads must not need it
    code = f"""
import importlib.machinery, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pandas":
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise ModuleNotFoundError("pandas is blocked in this test")
sys.meta_path.insert(0, Block())
import polars as pl, pyarrow as pa
from flowstone import partition_keys
from flowstone.io import ParquetIOManager, OutputContext, InputContext
m = ParquetIOManager({str(tmp_path)!r})
ctx = OutputContext("a", None, partition_keys.UNPARTITIONED, "r", 1, "m")
ref = m.store(ctx, pl.DataFrame({{"x": [1, 2]}}))
got = m.load(InputContext("a", None, partition_keys.UNPARTITIONED, ref, pl.DataFrame))
assert got["x"].to_list() == [1, 2]
assert isinstance(m.load(InputContext("a", None, partition_keys.UNPARTITIONED, ref, pa.Table)), pa.Table)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_import_flowstone_imports_no_optional_extra() -> None:
    code = (
        "import sys, flowstone\n"
        "bad = [m for m in ('pyarrow', 'pandas', 'polars', 'duckdb', 'fsspec') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_non_frames_are_refused(manager: IOManager) -> None:
    with pytest.raises(errors.OutputNotSerializableError, match="stores pandas or polars") as info:
        manager.store(octx(), [{"a": 1}])
    assert info.value.asset == "events"
    assert info.value.retryable is False


def test_unpartitioned_round_trip(manager: IOManager) -> None:
    ctx = octx(partition=None)
    ref = manager.store(ctx, arrow_frame())
    assert_same("arrow", manager.load(ictx(ctx, ref)), arrow_frame())


def test_empty_frame_round_trips(manager: IOManager) -> None:
    ctx = octx()
    empty = pl.DataFrame({"a": pl.Series([], dtype=pl.Int32), "b": pl.Series([], dtype=pl.String)})
    ref = manager.store(ctx, empty)
    got = manager.load(ictx(ctx, ref, pl.DataFrame))
    assert isinstance(got, pl.DataFrame)
    assert got.schema == empty.schema
    assert got.height == 0


@pytest.mark.parametrize(
    "key", ["s:../../etc", "../../etc/passwd", "/etc/passwd", "s:s3://bucket/x", "s:a/b\\c", "..", ""]
)
def test_hostile_partition_keys_stay_inside_the_base(manager: IOManager, key: str) -> None:
    ctx = octx(key=key, partition="whatever")
    ref = manager.store(ctx, pa.table({"k": [key]}))
    got = manager.load(ictx(ctx, ref, pa.Table))
    assert isinstance(got, pa.Table)
    assert got.column("k").to_pylist() == [key]
    if isinstance(manager, ParquetIOManager):
        assert ref.uri.startswith(manager.base_uri + "/events/")
        relative = manager.relative_path("events", key, 1)
        assert ".." not in relative.split("/")
        assert relative.count("/") == 2
        assert "://" not in relative


@pytest.mark.parametrize("asset", ["../x", "a/b", "", "x" * 200, "..", "s3://x", "/abs"])
def test_hostile_asset_names_are_refused(tmp_path: Path, asset: str) -> None:
    manager = ParquetIOManager(tmp_path / "out")
    with pytest.raises(errors.IOManagerError, match="cannot be used as a directory") as info:
        manager.store(octx(asset=asset), arrow_frame())
    assert info.value.retryable is False
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("asset", ["Events", "a; drop table x", '"quoted"', "flowstone_versions"])
def test_duckdb_refuses_hostile_table_names(tmp_path: Path, asset: str) -> None:
    manager = DuckDBIOManager(tmp_path / "w.duckdb")
    with pytest.raises(errors.InvalidIdentifierError):
        manager.store(octx(asset=asset), arrow_frame())
    manager.close()
    with pytest.raises(errors.InvalidIdentifierError):
        DuckDBIOManager(tmp_path / "w.duckdb", schema="F8nny-sch@ma")
    with pytest.raises(errors.InvalidIdentifierError):
        DuckDBIOManager(tmp_path / "w.duckdb", tables={"events": "x; drop table y"})


@pytest.mark.parametrize("where", ["memory", "s3", "local"])
def test_parquet_versions_are_immutable_and_per_attempt(
    request: pytest.FixtureRequest, tmp_path: Path, where: str
) -> None:
    if where == "s3":
        url = f"s3://flowstone-tests/{uuid.uuid4().hex}"
        manager = ParquetIOManager(url, storage_options=request.getfixturevalue("s3_options"))
    else:
        url = f"memory://flowstone-tests/{uuid.uuid4().hex}" if where == "memory" else str(tmp_path)
        manager = ParquetIOManager(url)
    ctx = octx(mid=7)
    ref = manager.store(ctx, pa.table({"n": [1, 2, 3]}))
    assert manager.store(ctx, pa.table({"n": [1, 2, 3]})) == ref  # a redelivered job
    with pytest.raises(errors.IOManagerError, match="already exists with different content"):
        manager.store(ctx, pa.table({"n": [9]}))
    second = dataclasses.replace(octx(mid=7), attempt=2)
    ref2 = manager.store(second, pa.table({"n": [9]}))
    assert ref2.version == "7-2"
    assert ref2.uri.endswith("/events/d_3a2025-01-01/7-2.parquet")
    got = manager.load(ictx(ctx, ref, pa.Table))
    assert isinstance(got, pa.Table)
    assert got.column("n").to_pylist() == [1, 2, 3]
    found = sorted(v.version for _, v in manager.stored_versions("events", "main"))
    assert found == ["7", "7-2"]
    assert [mid for mid, _ in manager.stored_versions("events", "main")] == [7, 7]
    # gc deletes through the refs stored_versions lists
    for _, stored in list(manager.stored_versions("events", "main")):
        manager.delete(stored)
    assert list(manager.stored_versions("events", "main")) == []


def test_parquet_local_layout_and_tampered_refs(tmp_path: Path) -> None:
    manager = ParquetIOManager(tmp_path / "out")
    ctx = octx(mid=42)
    ref = manager.store(ctx, arrow_frame())
    path = tmp_path / "out" / "events" / "d_3a2025-01-01" / "42.parquet"
    assert path.is_file()
    assert ref.uri == path.as_uri()
    assert ref.size_bytes == path.stat().st_size
    assert [p.name for p in path.parent.iterdir()] == ["42.parquet"]  # no temporary file left
    secret = tmp_path / "secret.parquet"
    secret.write_bytes(path.read_bytes())
    # a load derives its path; a tampered URI cannot point it elsewhere
    got = manager.load(ictx(ctx, ref.model_copy(update={"uri": secret.as_uri()}), pa.Table))
    assert isinstance(got, pa.Table)
    with pytest.raises(errors.IOManagerError, match="not a materialization id"):
        manager.load(ictx(ctx, ref.model_copy(update={"version": "../../secret"})))
    for uri in [
        secret.as_uri(),
        "s3://bucket/events/x/42.parquet",
        ref.uri + "?x",
        ref.uri.replace("42", "../42"),
    ]:
        with pytest.raises(errors.IOManagerError, match="refusing to delete"):
            manager.delete(ref.model_copy(update={"uri": uri}))
    assert secret.exists()
    manager.delete(ref)
    manager.delete(ref)  # idempotent
    assert not path.exists()
    with pytest.raises(errors.IOManagerError, match="does not exist") as info:
        manager.load(ictx(ctx, ref))
    assert info.value.retryable is False


def test_parquet_corrupt_file_is_a_decode_error(tmp_path: Path) -> None:
    manager = ParquetIOManager(tmp_path)
    ctx = octx()
    ref = manager.store(ctx, arrow_frame())
    Path(manager.path_for("events", ctx.partition_key, 1)).write_bytes(b"not parquet")
    with pytest.raises(errors.OutputDecodeError, match="not a readable Parquet file") as info:
        manager.load(ictx(ctx, ref))
    assert info.value.partition == "d:2025-01-01"


def test_several_partitions_load_as_one_frame(manager: IOManager) -> None:
    contexts = []
    for mid, day in enumerate([date(2025, 1, 1), date(2025, 1, 2)], start=1):
        ctx = octx(partition=day, mid=mid)
        ref = manager.store(ctx, pl.DataFrame({"n": [mid, mid * 10]}))
        contexts.append(ictx(ctx, ref, pl.DataFrame))
    assert manager.loads_combined(pl.DataFrame)
    assert not manager.loads_combined(dict[date, object])
    got = manager.load_combined(contexts, pl.DataFrame)
    assert isinstance(got, pl.DataFrame)
    assert got["n"].to_list() == [1, 10, 2, 20]
    assert got["partition"].to_list() == [date(2025, 1, 1)] * 2 + [date(2025, 1, 2)] * 2


def test_duckdb_replaces_only_its_partition_and_refuses_overwritten_versions(tmp_path: Path) -> None:
    import duckdb  # noqa: PLC0415

    path = tmp_path / "w.duckdb"
    manager = DuckDBIOManager(path, schema="analytics")
    first = octx(partition=date(2025, 1, 1), mid=1)
    ref1 = manager.store(first, pl.DataFrame({"n": [1, 2]}))
    manager.store(octx(partition=date(2025, 1, 2), mid=2), pl.DataFrame({"n": [3]}))
    newer = octx(partition=date(2025, 1, 1), mid=3)
    ref3 = manager.store(newer, pl.DataFrame({"n": [4]}))
    assert ref3.uri == f"duckdb://{path}#analytics.events"
    with pytest.raises(errors.IOManagerError, match="holds version 3 of this partition, not 1"):
        manager.load(ictx(first, ref1))
    got = manager.load(ictx(newer, ref3))
    assert isinstance(got, pl.DataFrame)
    assert got.to_dict(as_series=False) == {"n": [4]}
    manager.close()
    with duckdb.connect(str(path)) as con:
        rows = con.sql("SELECT partition_key, n FROM analytics.events ORDER BY n").fetchall()
    assert rows == [("d:2025-01-02", 3), ("d:2025-01-01", 4)]


def test_duckdb_failed_write_leaves_the_partition_as_it_was(tmp_path: Path) -> None:
    manager = DuckDBIOManager(tmp_path / "w.duckdb")
    ctx = octx(mid=1)
    ref = manager.store(ctx, pl.DataFrame({"n": [1]}))
    with pytest.raises(errors.IOManagerError, match="DuckDB refused"):
        manager.store(octx(mid=2), pl.DataFrame({"other": ["x"]}))  # a column the table lacks
    got = manager.load(ictx(ctx, ref, pa.Table))
    assert isinstance(got, pa.Table)
    assert got.to_pydict() == {"n": [1]}
    manager.close()


def test_duckdb_write_error_is_told_when_the_hash_fails_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hash runs beside the write: when both fail, the write's error is the one raised."""

    def broken_hash(table: object) -> str:
        raise RuntimeError("hash failed")

    monkeypatch.setattr(frames, "arrow_hash", broken_hash)
    manager = DuckDBIOManager(tmp_path / "w.duckdb")
    with pytest.raises(RuntimeError, match="hash failed"):  # alone, the hash's error is raised
        manager.store(octx(mid=1), pl.DataFrame({"n": [1]}))
    with pytest.raises(errors.IOManagerError, match="DuckDB refused"):
        manager.store(octx(mid=2), pl.DataFrame({"n": [1], "other": ["x"]}))
    manager.close()


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "duckdb", None)
    with pytest.raises(errors.ConfigurationError, match=r"flowstone\[duckdb\]"):
        DuckDBIOManager(":memory:")


def test_frame_kind_needs_no_import() -> None:
    assert frames.frame_kind([1]) is None
    assert frames.frame_kind(pl.DataFrame()) == "polars"
    assert frames.hint_kind(list[int]) is None
    assert frames.hint_kind(pd.DataFrame) == "pandas"


def test_parquet_write_failure_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq  # noqa: PLC0415

    def half_then_fail(_table: object, where: object, **_options: object) -> None:
        where.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise pa.ArrowInvalid("disk full halfway")

    monkeypatch.setattr(pq, "write_table", half_then_fail)
    manager = ParquetIOManager(tmp_path / "out")
    with pytest.raises(errors.OutputNotSerializableError, match="halfway") as info:
        manager.store(octx(), arrow_frame())
    assert info.value.asset == "events"
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
