"""The Postgres IO manager: outputs stored in Postgres, committed with their success record.

On Postgres, ``PostgresIOManager()`` is the default IO manager: each materialization's value is
one JSONB row in ``flowstone_outputs``, written in the same transaction that records the step
``succeeded`` (an output exists exactly when its record does). Values go through a typed codec:
dates, Decimals, UUIDs, tuples and pydantic models come back as the same types, and the JSONB
stays readable in SQL. Every materialization is a new immutable version.

``PostgresIOManager(table="shop.daily_sales", mode="rows")`` instead writes the list of dicts an
asset returns as rows of *your* table, replacing the rows of the materialization's partition
(``partition_column``, here a ``date`` column). Downstream assets, BI tools and plain SQL read the
same rows. FlowStone never creates user tables: this example creates its own (idempotently).

This example uses ``FLOWSTONE_DATABASE_URL``, else the embedded Postgres. Run it with
``python examples/postgres_io.py``; it can run any number of times.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, cast

import psycopg
import pydantic

import flowstone as fs

DAYS = (date(2025, 3, 1), date(2025, 3, 2))

# Your table: FlowStone fills `day` (the partition column) and replaces a day's rows on each write.
CREATE_TABLE = """
CREATE SCHEMA IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.daily_sales (
    day     date    NOT NULL,
    product text    NOT NULL,
    units   integer NOT NULL,
    revenue numeric(10, 2) NOT NULL
);
"""

PRICES = {"tea": Decimal("3.50"), "cake": Decimal("4.25"), "soup": Decimal("6.00")}
daily = fs.DailyPartitions(start="2025-01-01")


class PriceList(pydantic.BaseModel):
    valid_from: date
    currency: str
    prices: dict[str, Decimal]


@fs.asset
def price_list() -> PriceList:
    """Stored by the default manager: typed JSONB in flowstone_outputs, loaded back as PriceList."""
    return PriceList(valid_from=date(2025, 1, 1), currency="EUR", prices=PRICES)


@fs.asset(partitions=daily, io_manager="sales_table")
def daily_sales(context: fs.AssetContext, price_list: PriceList) -> list[dict[str, Any]]:
    """One row per product sold that day, written to shop.daily_sales."""
    day = cast("date", context.partition)  # daily partitions are datetime.date values
    rows = []
    for offset, (product, price) in enumerate(sorted(price_list.prices.items())):
        units = (day.day * 7 + offset * 3) % 11 + 1  # made-up, deterministic sales
        rows.append({"product": product, "units": units, "revenue": price * units})
    context.add_metadata(rows=len(rows))
    return rows


@fs.asset(partitions=daily)
def sales_summary(daily_sales: list[dict[str, Any]]) -> dict[str, object]:
    """Reads the rows back from shop.daily_sales (a list of dicts); stored as JSONB."""
    best = max(daily_sales, key=lambda row: row["revenue"])
    return {"revenue": sum(row["revenue"] for row in daily_sales), "best_seller": best["product"]}


defs = fs.Definitions(
    assets=[price_list, daily_sales, sales_summary],
    io_managers={
        # "default" is PostgresIOManager() already on Postgres; spelled out here for the reader.
        "default": fs.PostgresIOManager(),
        "sales_table": fs.PostgresIOManager(
            table="shop.daily_sales", mode="rows", partition_column="day", allowed_tables=["shop.daily_sales"]
        ),
    },
)


def main() -> dict[str, object]:
    """Create the user table, materialize two days, then read the results back in SQL and Python."""
    with fs.FlowStone(defs) as runtime:
        url = runtime.require_database_url()  # the database this runtime decided on
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(CREATE_TABLE)

        runtime.materialize("price_list")
        for day in DAYS:
            runtime.materialize(["daily_sales", "sales_summary"], day)
        # Again for the first day: its rows are replaced, not appended.
        runtime.materialize("daily_sales", DAYS[0])

        with psycopg.connect(url) as conn:
            print("SELECT * FROM shop.daily_sales ORDER BY day, product;")
            rows = conn.execute("SELECT * FROM shop.daily_sales ORDER BY day, product").fetchall()
            for day, product, units, revenue in rows:
                print(f"  {day}  {product:<5} {units:>3}  {revenue:>7}")
            # Values stay readable in SQL: a pydantic model is {"$fs": "model", "v": <its JSON>}.
            query = (
                "SELECT o.value->'v'->>'currency', o.value->'v'->'prices'->>'tea' FROM flowstone_outputs o "
                "JOIN flowstone_latest_materializations m ON m.id = o.materialization_id "
                "WHERE m.asset = 'price_list'"
            )
            print(f"{query};")
            currency, tea = conn.execute(query).fetchone() or (None, None)
            print(f"  {currency}  {tea}")

        prices = runtime.load("price_list")  # a PriceList again (the return annotation says so)
        print(f"runtime.load('price_list') -> {prices}")
        summaries = {day.isoformat(): runtime.load("sales_summary", day) for day in DAYS}
        for day_text, summary in summaries.items():
            print(f"sales_summary [{day_text}] -> {summary}")
        return {"rows": rows, "price_list": prices, "summaries": summaries}


if __name__ == "__main__":
    main()
