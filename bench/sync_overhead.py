"""Overhead of synchronous materialization: a chain of 100 trivial assets in one
``materialize(..., with_upstream=True)``, on the memory store and on the Postgres store, against
calling the 100 functions directly (the baseline, measured in the same run).

Targets: <= 1.5 ms per asset on Postgres (issue 14, set on a machine about 2.7x faster than the
2-core dev machine for this path), <= 0.3 ms per asset in memory. The durable-commit figure is the
database baseline of the same run.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import psycopg

import flowstone as fs

N = 100


def chain(n: int) -> list[fs.AssetDef]:
    """a0 -> a1 -> ... -> a{n-1}, each adding one to its input."""
    assets = [fs.asset(name="a0")(lambda: 0)]
    for i in range(1, n):
        namespace: dict[str, object] = {}
        exec(f"def a{i}(a{i - 1}: int) -> int:\n    return a{i - 1} + 1\n", namespace)  # noqa: S102 - generated bench code
        assets.append(fs.asset(namespace[f"a{i}"]))
    return assets


def direct(assets: list[fs.AssetDef]) -> int:
    value = assets[0]()
    for a in assets[1:]:
        value = a(value)
    return value


def main() -> None:
    assets = chain(N)
    defs = fs.Definitions(assets=assets)
    last = f"a{N - 1}"
    base_best, _ = _common.best_of(200, lambda: direct(assets))
    per_asset_direct = base_best / N * 1000
    _common.report("direct call (baseline), ms/asset", per_asset_direct, "ms")

    memory = fs.FlowStone(defs, store="memory")
    memory.materialize(last, with_upstream=True)  # warm-up
    best, median = _common.best_of(20, lambda: memory.materialize(last, with_upstream=True))
    _common.report(
        "memory store, ms/asset (best of 20)",
        best / N * 1000,
        "ms",
        baseline=per_asset_direct,
        target="<= 0.3 ms",
    )
    _common.report("memory store, ms/asset (median)", median / N * 1000, "ms", baseline=per_asset_direct)

    with _common.scratch_database() as url, tempfile.TemporaryDirectory() as home:
        commit_ms = durable_commit_ms(url)
        _common.report("one durable INSERT commit (DB baseline), ms", commit_ms, "ms")
        with fs.FlowStone(defs, database_url=url, home=home) as pg:
            pg.materialize(last, with_upstream=True)  # warm-up: connections, caches
            best, median = _common.best_of(5, lambda: pg.materialize(last, with_upstream=True))
        _common.report(
            "postgres store + Postgres IO (default), ms/asset (best of 5)",
            best / N * 1000,
            "ms",
            target="<= 1.5 ms",
        )
        _common.report("  ... in durable commits per asset", best / N * 1000 / commit_ms, "commits")
        _common.report("postgres store + Postgres IO (default), ms/asset (median)", median / N * 1000, "ms")
        fs_defs = fs.Definitions(
            assets=assets, io_managers={"default": fs.FilesystemIOManager(Path(home) / "out")}
        )
        with fs.FlowStone(fs_defs, database_url=url, home=home) as pg:
            pg.materialize(last, with_upstream=True)
            best, _ = _common.best_of(5, lambda: pg.materialize(last, with_upstream=True))
        _common.report("postgres store + filesystem IO (fsync), ms/asset (best of 5)", best / N * 1000, "ms")
        _common.report("  ... in durable commits per asset", best / N * 1000 / commit_ms, "commits")


def durable_commit_ms(url: str, n: int = 300) -> float:
    """The latency of one committed INSERT on this database: the floor of any durable write."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE bench_commit (x int)")
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_durable (x int)")
        best, _ = _common.best_of(
            3, lambda: [conn.execute("INSERT INTO bench_commit_durable VALUES (1)") for _ in range(n)]
        )
    return best / n * 1000


if __name__ == "__main__":
    main()
