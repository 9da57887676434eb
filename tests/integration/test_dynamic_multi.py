"""Dynamic partitions as a dimension of MultiPartitions: materialize, validation, backfills (in
process and on a worker), status, staleness and sensors work as with a dynamic definition of its
own, on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

import flowstone as fs
from flowstone import cli, errors, partition_keys
from tests.integration.queue_harness import Pipeline

TENANTS = fs.DynamicPartitions("tenants")
DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-01-02")
BY_DAY_AND_TENANT = fs.MultiPartitions({"day": DAYS, "tenant": TENANTS})
D1, D2 = date(2025, 1, 1), date(2025, 1, 2)


@fs.asset(partitions=BY_DAY_AND_TENANT)
def orders(context: fs.AssetContext) -> str:
    day, tenant = context.partition  # type: ignore[misc]
    return f"{tenant}@{day}"


@fs.asset(partitions=BY_DAY_AND_TENANT)
def revenue(orders: str) -> int:
    return len(orders)


ARRIVALS: list[tuple[date, str]] = []


@fs.sensor("orders", interval_s=1)
def arrivals(context: fs.SensorContext) -> list[fs.RunRequest]:
    batch, ARRIVALS[:] = list(ARRIVALS), []
    return [fs.RunRequest(partition=(d, t), add_partitions={"tenants": [t]}) for d, t in batch]


DEFS = fs.Definitions(assets=[orders, revenue], sensors=[arrivals])


def _key(day: date, tenant: str) -> str:
    return partition_keys.encode((day, tenant))


@pytest.fixture(params=["memory", "postgres"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[fs.FlowStone]:
    if request.param == "memory":
        rt = fs.FlowStone(DEFS, store="memory")
    else:
        rt = fs.FlowStone(DEFS, database_url=request.getfixturevalue("database_url"), home=tmp_path)
    with rt:
        yield rt


def test_a_dynamic_dimension_reads_the_current_keys(runtime: fs.FlowStone):
    assert runtime.partitions.names() == ["tenants"]  # only a dimension, still managed
    runtime.partitions.add("tenants", ["acme", "globex"])
    assert BY_DAY_AND_TENANT.keys() == [(D1, "acme"), (D1, "globex"), (D2, "acme"), (D2, "globex")]
    done = runtime.materialize("revenue", partition=(D1, "acme"), with_upstream=True)
    assert done.value("revenue", (D1, "acme")) == len("acme@2025-01-01")
    assert runtime.materialize("orders", partition='["2025-01-02", "globex"]').success  # CLI text form
    with pytest.raises(errors.InvalidPartitionError, match="'umbrella' has not been added"):
        runtime.materialize("orders", partition=(D1, "umbrella"))
    backfill = runtime.backfill_sync("orders")
    assert (backfill.succeeded, backfill.skipped, backfill.failed) == (2, 2, 0)
    # staleness: every current key, fresh or missing
    states = {r.partition_key: r.status for r in runtime.staleness("revenue")}
    assert states == {
        _key(D1, "acme"): "fresh",
        _key(D1, "globex"): "missing",
        _key(D2, "acme"): "missing",
        _key(D2, "globex"): "missing",
    }
    # a new key joins backfills and ranges; a removed key leaves them but keeps its history
    runtime.partitions.add("tenants", ["initech"])
    ranged = runtime.backfill_sync("orders", start=(D1, "globex"), end=(D2, "initech"))
    assert (ranged.succeeded, ranged.skipped, ranged.failed) == (2, 2, 0)  # initech on both days
    ranged = runtime.backfill_sync("revenue", start=(D1, "globex"), end=(D2, "initech"))
    assert (ranged.succeeded, ranged.failed) == (4, 0)
    runtime.partitions.remove("tenants", ["acme"])
    states = {r.partition_key: r.status for r in runtime.staleness("revenue")}
    assert set(states) == {_key(d, t) for d in (D1, D2) for t in ("globex", "initech")} | {_key(D1, "acme")}
    assert states[_key(D1, "acme")] == "fresh"  # history of a removed key
    assert runtime.latest("revenue", (D1, "acme")) is not None
    with pytest.raises(errors.InvalidPartitionError, match="has not been added"):
        runtime.materialize("orders", partition=(D2, "acme"))


def test_a_sensor_adds_a_key_of_a_dynamic_dimension_with_its_run(database_url: str, tmp_path: Path):
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path) as rt:
        ARRIVALS[:] = [(D2, "hooli")]
        (run_id,) = rt.sensors.tick(now=datetime(2026, 1, 1, tzinfo=UTC))["arrivals"]
        assert rt.partitions.list("tenants") == ["hooli"]
        assert [s.partition_key for s in rt.store.run_steps(run_id)] == [_key(D2, "hooli")]


WORKER_BODY = """
TENANTS = fs.DynamicPartitions("tenants")
DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-01-03")

@fs.asset(partitions=fs.MultiPartitions({"tenant": TENANTS, "day": DAYS}))
def per_tenant_day(context: fs.AssetContext) -> str:
    return str(context.partition)

defs = fs.Definitions(assets=[per_tenant_day])
"""


def test_a_worker_backfills_a_dynamic_dimension_and_status_counts_it(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
):
    pipeline = Pipeline(tmp_path, database_url, WORKER_BODY)
    try:
        rt = pipeline.runtime
        rt.partitions.add("tenants", ["a", "b"])
        pipeline.start_worker(concurrency=2)
        handle = rt.backfill("per_tenant_day", partitions_per_job=2)
        assert handle.wait(timeout=60).status == "succeeded", pipeline.logs()[-3000:]
        rows = pipeline.sql(
            "SELECT count(*) FROM flowstone_materializations "
            "WHERE asset = 'per_tenant_day' AND status = 'succeeded'"
        )
        assert rows == [(6,)]
        rt.partitions.add("tenants", ["c"])  # three more partitions, missing
        capsys.readouterr()
        assert cli.main(["status", "--database-url", database_url]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("per_tenant_day "))
        assert line.split()[1] == "6"  # SUCCEEDED
        assert line.split()[4] == "3"  # MISSING: c on three days
    finally:
        pipeline.stop()
