"""Quickstart: four assets, materialized in this process, with nothing to set up.

An asset is a plain function decorated with ``@fs.asset``. Its parameters name the assets it reads:
``clean_orders(raw_orders)`` depends on ``raw_orders`` and receives its value. ``fs.Definitions``
checks the graph once (unknown names, cycles); ``fs.FlowStone`` runs it.

``store="memory"`` keeps every record in this process, so this example needs no database. Drop it
and the same code records runs, materializations and lineage in Postgres (the embedded one by
default, or ``FLOWSTONE_DATABASE_URL``).

Run it with ``python examples/quickstart.py``.
"""

from __future__ import annotations

from typing import Any

import flowstone as fs

Order = dict[str, Any]


@fs.asset
def raw_orders() -> list[Order]:
    """Orders as they arrive from the shop (hard-coded here)."""
    return [
        {"id": 1, "customer": "ada", "amount": 30},
        {"id": 2, "customer": "bob", "amount": -5},  # a refund slipped in: cleaned out below
        {"id": 3, "customer": "ada", "amount": 12},
        {"id": 4, "customer": "cyd", "amount": 50},
    ]


@fs.asset
def clean_orders(raw_orders: list[Order]) -> list[Order]:
    """Only the sales (positive amounts)."""
    return [order for order in raw_orders if order["amount"] > 0]


@fs.asset
def revenue_by_customer(clean_orders: list[Order]) -> dict[str, int]:
    """Revenue per customer."""
    totals: dict[str, int] = {}
    for order in clean_orders:
        totals[order["customer"]] = totals.get(order["customer"], 0) + order["amount"]
    return totals


@fs.asset
def top_customer(revenue_by_customer: dict[str, int]) -> str:
    """The customer who spent most."""
    return max(revenue_by_customer, key=revenue_by_customer.__getitem__)


defs = fs.Definitions(assets=[raw_orders, clean_orders, revenue_by_customer, top_customer])


def main() -> dict[str, object]:
    """Materialize ``top_customer`` with everything upstream of it; print and return the values."""
    runtime = fs.FlowStone(defs, store="memory")
    # One run, four steps in dependency order; raises the first error if a step fails.
    result = runtime.materialize("top_customer", with_upstream=True)
    print(f"run {result.run_id}: {result.status}")
    values: dict[str, object] = {}
    for name in defs:  # iterating Definitions yields asset names in dependency order
        values[name] = result.value(name)
        print(f"  {name:<20} {values[name]}")
    # Later reads go through the store: the latest succeeded materialization of an asset.
    print(f"runtime.load('top_customer') -> {runtime.load('top_customer')!r}")
    return values


if __name__ == "__main__":
    main()
