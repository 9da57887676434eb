"""DataFrame IO manager benchmarks (issue 18), each beside a baseline measured in the same run:

1. ParquetIOManager store / load (as Arrow) of a BENCH_FRAME_ROWS x 10 frame (default 1,000,000)
   vs pyarrow writing / reading the same table directly (target >= 0.8x direct);
2. DuckDBIOManager store / load of the same frame vs DuckDB creating the table from the Arrow table
   and selecting it back directly (target >= 0.8x direct);
3. PostgresIOManager rows mode: BENCH_PG_ROWS rows x 9 columns (default 1,000,000) materialized
   through a runtime (binary COPY encoded from the Arrow columns, in the success transaction) into
   an emptied table (a second materialization, replacing those rows, is shown beside it) vs
   bare COPYs of the same rows after a TRUNCATE: psycopg binary and text COPY fed ready-made row tuples
   (``write_row``), COPY of the table as CSV written by Arrow, and ADBC's Postgres driver
   (``adbc_ingest``, when adbc-driver-postgresql is installed; target <= 2x).

The speed figures are direct time / manager time: 1.0x is as fast as the library itself.
Environment: BENCH_FRAME_ROWS, BENCH_PG_ROWS, BENCH_ROUNDS (default 3), FLOWSTONE_BENCH_DATABASE_URL,
BENCH_FRAMES (a comma-separated subset of ``parquet,duckdb,postgres``).
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import duckdb
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

import flowstone as fs
from flowstone import partition_keys
from flowstone.io import InputContext, OutputContext, OutputRef

ROWS = int(os.environ.get("BENCH_FRAME_ROWS", "1000000"))
PG_ROWS = int(os.environ.get("BENCH_PG_ROWS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
ONLY = os.environ.get("BENCH_FRAMES", "parquet,duckdb,postgres").split(",")


def make_table(rows: int) -> pa.Table:
    rng = np.random.default_rng(42)
    columns: dict[str, pa.Array] = {}
    for i in range(4):
        columns[f"i{i}"] = pa.array(rng.integers(0, 1_000_000, rows))
    for i in range(4):
        columns[f"f{i}"] = pa.array(rng.random(rows))
    columns["s0"] = pa.array(rng.integers(0, 1000, rows).astype(str))
    columns["t0"] = pa.array(rng.integers(0, 10**15, rows).astype("datetime64[us]"))
    return pa.table(columns)


def out_ctx(mid: int) -> OutputContext:
    return OutputContext("frame", None, partition_keys.UNPARTITIONED, "bench", mid, "bench")


def paired(direct: Callable[[], object], managed: Callable[[], object]) -> tuple[list[float], list[float]]:
    """ROUNDS timings of each, interleaved so that load on this shared machine hits both alike."""
    direct_times, managed_times = [], []
    for _ in range(ROUNDS):
        direct_times.append(_common.best_of(1, direct)[0])
        managed_times.append(_common.best_of(1, managed)[0])
    return direct_times, managed_times


def storer(
    manager: fs.ParquetIOManager | fs.DuckDBIOManager, table: pa.Table
) -> tuple[Callable[[], None], list[OutputRef]]:
    """A function storing ``table`` as a new materialization each call, and the refs it stored."""
    counter = iter(range(1, 10**6))
    refs: list[OutputRef] = []

    def store() -> None:
        refs.append(manager.store(out_ctx(next(counter)), table))

    return store, refs


def speed(name: str, direct: list[float], managed: list[float], target: str) -> None:
    """Best times, and the min and median over the rounds of each round's direct/manager ratio."""
    ratios = [d / m for d, m in zip(direct, managed, strict=True)]
    print(
        f"{name:<40} manager {min(managed) * 1000:7.1f} ms  direct {min(direct) * 1000:7.1f} ms"
        f"  speed vs direct: min {min(ratios):4.2f}x median {statistics.median(ratios):4.2f}x"
        f"  (target {target})"
    )


def bench_parquet(table: pa.Table, tmp: Path) -> None:
    for hashing in (True, False):
        manager = fs.ParquetIOManager(tmp / f"lake-{hashing}", content_hash=hashing)
        store, refs = storer(manager, table)

        def direct_write() -> None:
            pq.write_table(table, tmp / f"direct-{uuid.uuid4().hex}.parquet")

        label = "with content hash" if hashing else "content_hash=False"
        speed(f"parquet write ({label})", *paired(direct_write, store), ">= 0.8x")
    ref = refs[0]
    path = manager.path_for("frame", partition_keys.UNPARTITIONED, ref.version)
    ictx = InputContext("frame", None, partition_keys.UNPARTITIONED, ref, pa.Table)
    speed(
        "parquet read (as Arrow)", *paired(lambda: pq.read_table(path), lambda: manager.load(ictx)), ">= 0.8x"
    )


def bench_duckdb(table: pa.Table, tmp: Path) -> None:
    con = duckdb.connect(str(tmp / "direct.duckdb"))

    def direct_write() -> None:
        con.register("frame_view", table)
        con.execute("CREATE OR REPLACE TABLE frame AS SELECT * FROM frame_view")

    for hashing in (True, False):
        duck = fs.DuckDBIOManager(tmp / f"managed-{hashing}.duckdb", content_hash=hashing)
        store, refs = storer(duck, table)

        label = "with content hash" if hashing else "content_hash=False"
        speed(f"duckdb write ({label})", *paired(direct_write, store), ">= 0.8x")
        if not hashing:
            ictx = InputContext("frame", None, partition_keys.UNPARTITIONED, refs[-1], pa.Table)
            direct_read = lambda: con.sql("SELECT * FROM frame").to_arrow_table()  # noqa: E731
            speed(
                "duckdb read (as Arrow)", *paired(direct_read, functools.partial(duck.load, ictx)), ">= 0.8x"
            )
        duck.close()
    con.close()


def bench_postgres_rows(tmp: Path) -> None:
    table = make_table(PG_ROWS).drop_columns(["t0"])
    ddl = ", ".join(
        f"{n} {'bigint' if n[0] == 'i' else 'float8' if n[0] == 'f' else 'text'}" for n in table.column_names
    )

    @fs.asset(io_manager="rows")
    def frame() -> pa.Table:
        return table

    with _common.scratch_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE frame_rows (partition_key text NOT NULL, {ddl})")
            conn.execute(f"CREATE TABLE bare_rows (partition_key text NOT NULL, {ddl})")
        defs = fs.Definitions(
            assets=[frame], io_managers={"rows": fs.PostgresIOManager(table="frame_rows", mode="rows")}
        )
        names = ", ".join(["partition_key", *table.column_names])
        # the bare COPYs get their rows ready-made: converting them is not counted against them
        rows = list(zip(*(c.to_pylist() for c in table.columns), strict=True))
        types = [
            "text",
            *("int8" if n[0] == "i" else "float8" if n[0] == "f" else "text" for n in table.column_names),
        ]
        key = "__unpartitioned__"

        def bare(fmt: str) -> Callable[[], None]:
            def run() -> None:
                with psycopg.connect(url) as conn, conn.transaction():
                    conn.execute("TRUNCATE bare_rows")
                    with conn.cursor().copy(f"COPY bare_rows ({names}) FROM STDIN {fmt}") as copy:
                        if fmt:
                            copy.set_types(types)
                        for row in rows:
                            copy.write_row((key, *row))

            return run

        def bare_csv() -> None:
            with psycopg.connect(url) as conn, conn.transaction():
                conn.execute("TRUNCATE bare_rows")
                sink = pa.BufferOutputStream()
                with_key = table.add_column(0, "partition_key", pa.array([key] * table.num_rows))
                pacsv.write_csv(with_key, sink, pacsv.WriteOptions(include_header=False))
                with conn.cursor().copy(f"COPY bare_rows ({names}) FROM STDIN (FORMAT csv)") as copy:
                    copy.write(sink.getvalue().to_pybytes())

        baselines: dict[str, Callable[[], None]] = {
            "psycopg binary COPY": bare("(FORMAT BINARY)"),
            "psycopg text COPY": bare(""),
            "Arrow CSV COPY": bare_csv,
        }
        if (ingest := adbc_baseline(url, table, key)) is not None:
            baselines["ADBC adbc_ingest"] = ingest
        with fs.FlowStone(defs, database_url=url, home=tmp) as rt:
            managed = lambda: rt.materialize("frame").unwrap()  # noqa: E731
            names_ = ["manager", "manager, replacing the rows", *baselines]
            times: dict[str, list[float]] = {name: [] for name in names_}
            for _ in range(ROUNDS):  # interleaved, so that load on this machine hits every path alike
                # Stored into an emptied table, as the bare COPYs store theirs (TRUNCATE first)...
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("TRUNCATE frame_rows")
                times["manager"].append(_common.best_of(1, managed)[0])
                # ...and again over the rows just stored: the same materialization deletes the
                # partition's 1,000,000 previous rows in its transaction (not a target figure).
                times["manager, replacing the rows"].append(_common.best_of(1, managed)[0])
                for name, fn in baselines.items():
                    times[name].append(_common.best_of(1, fn)[0])
        print(f"postgres rows mode, {PG_ROWS} rows x {table.num_columns} columns (target <= 2x a bare COPY)")
        report_rows(times)


def adbc_baseline(url: str, table: pa.Table, key: str) -> Callable[[], None] | None:
    """ADBC's ``adbc_ingest`` of the same rows after a TRUNCATE, when its driver is installed."""
    try:
        import adbc_driver_postgresql.dbapi as adbc  # noqa: PLC0415 - measured only when installed
    except ImportError:
        print("(adbc-driver-postgresql is not installed: no ADBC figure)")
        return None

    def bare_adbc() -> None:
        with_key = table.add_column(0, "partition_key", pa.array([key] * table.num_rows))
        with adbc.connect(url) as conn, conn.cursor() as cur:
            cur.execute("TRUNCATE bare_rows")
            cur.adbc_ingest("bare_rows", with_key, mode="append")
            conn.commit()

    return bare_adbc


def report_rows(times: dict[str, list[float]]) -> None:
    """Each path's best time, and the manager's time over it (min and median of the rounds)."""
    for name, measured in times.items():
        ratios = [m / b for m, b in zip(times["manager"], measured, strict=True)]
        print(
            f"  {name:<30} {min(measured) * 1000:8.1f} ms  manager time / this: "
            f"min {min(ratios):4.2f}x median {statistics.median(ratios):4.2f}x"
        )


def main() -> None:
    table = make_table(ROWS)
    print(f"frame: {ROWS} rows x {table.num_columns} columns, {table.nbytes / 1e6:.0f} MB in Arrow")
    with tempfile.TemporaryDirectory(prefix="flowstone-bench-frames-") as tmp:
        if "parquet" in ONLY:
            bench_parquet(table, Path(tmp))
        if "duckdb" in ONLY:
            bench_duckdb(table, Path(tmp))
        if "postgres" in ONLY:
            bench_postgres_rows(Path(tmp))


if __name__ == "__main__":
    main()
