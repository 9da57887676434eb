"""DataFrames as assets: Parquet files, a DuckDB warehouse and Postgres, on the Palmer penguins data.

The pipeline reads the raw CSV that the ``palmerpenguins`` package ships (344 penguins observed
near Palmer Station, Antarctica, 2007-2009), cleans it with polars, aggregates it per nesting year
and species in DuckDB, and writes a small report:

    raw_penguins (polars, Parquet)
      └─ cleaned (polars, Parquet)
           └─ nests [2007 | 2008 | 2009] (polars, DuckDB table analytics.nests, one year per partition)
                └─ species_summary (pandas, DuckDB: reads every year as ONE frame with a partition column)
                     └─ report (a dict, Postgres)

- ``fs.ParquetIOManager(path_or_url)`` writes one immutable Parquet file per materialization attempt
  (a local directory here; ``s3://``, ``gs://``, ``memory://`` work the same through fsspec).
- ``fs.DuckDBIOManager(file, schema=...)`` keeps one table per asset; a partition's rows are replaced
  in one DuckDB transaction. Query it with ``duckdb <file> "SELECT * FROM analytics.nests"``.
- Each parameter's annotation picks what a load returns: ``pl.DataFrame``, ``pd.DataFrame`` or
  ``pa.Table``. Every stored frame records its row count, columns, size and content hash as
  materialization metadata (``flowstone status``, ``flowstone_materializations.metadata``).

Needs ``flowstone[parquet,duckdb]``, polars, pandas and palmerpenguins. Uses
``FLOWSTONE_DATABASE_URL``, else the embedded Postgres; the files go to ``$FLOWSTONE_HOME/dataframes``
(default ``./.flowstone/dataframes``). Run ``python examples/dataframes.py``; it can run again.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

import flowstone as fs

YEARS = fs.StaticPartitions(["2007", "2008", "2009"])


@fs.asset
def raw_penguins() -> pl.DataFrame:
    """The raw observations, exactly as the CSV that palmerpenguins ships has them."""
    source = importlib.resources.files("palmerpenguins") / "data" / "penguins-raw.csv"
    with importlib.resources.as_file(source) as path:
        return pl.read_csv(path, null_values=["NA"], infer_schema_length=None)


@fs.asset
def cleaned(raw_penguins: pl.DataFrame) -> pl.DataFrame:
    """Short names, typed columns, and only birds whose body mass was measured."""
    return (
        raw_penguins.select(
            pl.col("Species").str.split(" ").list.first().alias("species"),
            pl.col("Island").alias("island"),
            pl.col("Date Egg").str.to_date("%Y-%m-%d").alias("egg_date"),
            pl.col("Flipper Length (mm)").cast(pl.Float64).alias("flipper_mm"),
            pl.col("Body Mass (g)").cast(pl.Float64).alias("body_mass_g"),
            pl.col("Sex").str.to_lowercase().alias("sex"),
        )
        .filter(pl.col("body_mass_g").is_not_null())
        .with_columns(pl.col("species").cast(pl.Categorical))
    )


@fs.asset(partitions=YEARS, io_manager="warehouse")
def nests(context: fs.AssetContext, cleaned: pl.DataFrame) -> pl.DataFrame:
    """Per species and egg-laying day of one year: how many nests were observed."""
    year = int(str(context.partition))
    return (
        cleaned.filter(pl.col("egg_date").dt.year() == year)
        .group_by("species", "egg_date")
        .agg(pl.len().cast(pl.Int64).alias("nests"), pl.col("body_mass_g").mean().alias("mean_mass_g"))
        .sort("egg_date", "species")
    )


@fs.asset(partition_mapping={"nests": fs.AllPartitions()}, io_manager="warehouse")
def species_summary(nests: pd.DataFrame) -> pd.DataFrame:
    """Every year's nests as one pandas frame (``partition`` says the year), summed per species."""
    summary = (
        nests.groupby(["species", "partition"], observed=True)["nests"].sum().unstack("partition").fillna(0)
    )
    summary.columns = [f"nests_{year}" for year in summary.columns]
    return summary.astype("int64").reset_index().sort_values("species", ignore_index=True)


@fs.asset(io_manager="values")
def report(species_summary: pd.DataFrame) -> dict[str, Any]:
    """A plain dict for people: nests per species over the three years."""
    totals = species_summary.set_index("species").sum(axis=1).astype(int)
    return {str(species): int(n) for species, n in totals.items()}


def definitions(home: Path) -> fs.Definitions:
    """The definitions, with the files under ``home``."""
    return fs.Definitions(
        assets=[raw_penguins, cleaned, nests, species_summary, report],
        io_managers={
            "default": fs.ParquetIOManager(home / "lake"),
            "warehouse": fs.DuckDBIOManager(home / "warehouse.duckdb", schema="analytics"),
            "values": fs.PostgresIOManager(),
        },
    )


def main() -> dict[str, Any]:
    """Materialize everything, print the report and the recorded frame metadata."""
    home = Path(os.environ.get("FLOWSTONE_HOME", ".flowstone")) / "dataframes"
    defs = definitions(home)
    try:
        with fs.FlowStone(defs) as runtime:
            runtime.materialize(["raw_penguins", "cleaned"]).unwrap()
            for year in YEARS.keys():  # noqa: SIM118 - partitions, not a dict
                runtime.materialize("nests", year).unwrap()
            runtime.materialize(["species_summary", "report"]).unwrap()
            for asset in ("raw_penguins", "cleaned", "species_summary"):
                row = runtime.latest(asset)
                assert row is not None  # noqa: S101 - just materialized
                meta = row.metadata
                columns = ", ".join(f"{c['name']}: {c['type']}" for c in meta["columns"])
                print(f"{asset}: {meta['row_count']} rows [{columns}] {meta['content_hash'][:19]}...")
            result: dict[str, Any] = runtime.load("report")  # type: ignore[assignment]
            print(f"runtime.load('report') -> {result}")
            summary = runtime.load("species_summary")
            print(summary)
            return {"report": result, "summary": summary}
    finally:
        warehouse = defs.io_managers["warehouse"]
        if isinstance(warehouse, fs.DuckDBIOManager):
            warehouse.close()


if __name__ == "__main__":
    main()
