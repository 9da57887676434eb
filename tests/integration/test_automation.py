"""Schedules and sensors: cron ticks that fire once, survive restarts, never double-fire; sensors
with durable cursors and idempotent keys. Time is passed in; nothing sleeps for real minutes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import flowstone as fs
from flowstone import cli
from tests.integration.queue_harness import Pipeline, eventually

BERLIN = ZoneInfo("Europe/Berlin")
SEEN: list[str] = []


@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01"))
def daily(context: fs.AssetContext) -> str:
    return str(context.partition)


@fs.asset
def snapshot() -> int:
    return 1


nightly = fs.Schedule(
    "nightly", "daily", cron="0 2 * * *", timezone="Europe/Berlin", partition=fs.PartitionFromTick(-1)
)
hourly = fs.Schedule("hourly", "snapshot", cron="0 * * * *")


@fs.sensor("daily", interval_s=60)
def files(context: fs.SensorContext) -> list[fs.RunRequest]:
    SEEN.append(context.cursor or "")
    new = int(context.cursor or "0") + 1
    context.set_cursor(str(new))
    return [fs.RunRequest(partition=date(2025, 2, new), key=f"file-{new}")]


@fs.sensor("snapshot", interval_s=60)
def broken_sensor(context: fs.SensorContext) -> list[fs.RunRequest]:
    raise RuntimeError("upstream API down")


fill = fs.AutomationCondition.on_missing("daily", max_per_evaluation=3, name="fill_daily")

DEFS = fs.Definitions(
    assets=[daily, snapshot], schedules=[nightly, hourly], sensors=[files, broken_sensor, fill]
)


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[fs.FlowStone]:
    SEEN.clear()
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path, actor="ops") as rt:
        yield rt


def _runs(rt: fs.FlowStone) -> list[fs.Run]:
    return rt.store.list_runs(limit=1000)


def test_cron_ticks_are_local_wall_time_across_dst():
    s = fs.Schedule("s", "x", cron="30 2 * * *", timezone="Europe/Berlin")
    ticks = s.ticks_between(datetime(2025, 3, 28, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
    assert [t.isoformat() for t in ticks] == [
        "2025-03-28T02:30:00+01:00",
        "2025-03-29T02:30:00+01:00",
        "2025-03-30T03:30:00+02:00",  # 02:30 does not exist that day: the same wall time after the gap
        "2025-03-31T02:30:00+02:00",
    ]
    autumn = s.ticks_between(datetime(2025, 10, 25, tzinfo=UTC), datetime(2025, 10, 27, tzinfo=UTC))
    # 02:30 happens twice on 2025-10-26: the tick fires once, at the first one (CEST)
    assert [t.isoformat() for t in autumn] == ["2025-10-25T02:30:00+02:00", "2025-10-26T02:30:00+02:00"]
    assert s.next_tick(datetime(2025, 3, 30, 0, 0, tzinfo=BERLIN)).utcoffset() == timedelta(hours=2)


def test_bad_schedules_and_sensors_are_refused():
    with pytest.raises(fs.DefinitionError, match="not a valid cron"):
        fs.Schedule("x", "daily", cron="61 * * * *")
    with pytest.raises(fs.DefinitionError, match="unknown timezone"):
        fs.Schedule("x", "daily", timezone="Mars/Olympus")
    defs = fs.Definitions(assets=[daily], schedules=[fs.Schedule("a", "nope")], sensors=[])
    with pytest.raises(fs.DefinitionError, match="nope"):
        fs.FlowStone(defs, store="memory")


def test_a_tick_fires_once_with_the_partition_from_the_tick(runtime: fs.FlowStone):
    tick = datetime(2025, 6, 2, 2, 0, tzinfo=BERLIN)
    fired = runtime.schedules.tick(now=tick + timedelta(seconds=5), only="nightly")
    (run_id,) = fired["nightly"]
    run = runtime.store.get_run(run_id)
    assert run is not None
    assert run.tags == {"schedule": "nightly", "tick": tick.isoformat()}
    (step,) = runtime.store.run_steps(run_id)
    assert (step.asset, step.partition_key) == ("daily", "d:2025-06-01")
    # the same tick again, from this or another evaluator: nothing more
    assert runtime.schedules.tick(now=tick + timedelta(seconds=30), only="nightly") == {}
    assert len([r for r in _runs(runtime) if r.tags.get("schedule") == "nightly"]) == 1
    status = {s.name: s for s in runtime.schedules.list(now=tick)}["nightly"]
    assert status.ticks == 1
    assert status.next_tick_at == datetime(2025, 6, 3, 2, 0, tzinfo=BERLIN)


def test_paused_schedules_do_not_fire_and_the_state_survives_a_restart(
    runtime: fs.FlowStone, database_url: str, tmp_path: Path
):
    runtime.schedules.pause("hourly")
    runtime.close()
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path) as restarted:
        assert {s.name: s.paused for s in restarted.schedules.list()}["hourly"] is True
        now = datetime.now(UTC).replace(minute=0, second=5, microsecond=0)
        assert restarted.schedules.tick(now=now, only="hourly") == {}
        restarted.schedules.resume("hourly")
        assert restarted.schedules.tick(now=now + timedelta(hours=1), only="hourly") != {}


def test_late_ticks_beyond_max_lateness_are_skipped_not_fired(runtime: fs.FlowStone):
    base = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)
    runtime.schedules.tick(now=base + timedelta(seconds=1), only="hourly")
    # the evaluator was down for five hours: only the ticks within max_lateness (10 min) fire
    fired = runtime.schedules.tick(now=base + timedelta(hours=5, minutes=5), only="hourly")
    assert len(fired["hourly"]) == 1


def test_sensor_cursor_is_durable_and_keys_never_submit_twice(runtime: fs.FlowStone):
    t0 = datetime(2025, 6, 2, tzinfo=UTC)
    first = runtime.sensors.tick(now=t0)
    assert len(first["files"]) == 1
    assert runtime.sensors.tick(now=t0 + timedelta(seconds=10)).get("files") is None  # not due
    second = runtime.sensors.tick(now=t0 + timedelta(seconds=61))
    assert len(second["files"]) == 1
    assert SEEN == ["", "1"]
    status = {s.name: s for s in runtime.sensors.list()}
    assert (status["files"].cursor, status["files"].requests) == ("2", 2)
    # a replay with the same cursor (e.g. after a crash before the cursor was saved) submits nothing
    with runtime.store.transaction("rewind") as conn:
        conn.execute("UPDATE flowstone_sensor_state SET cursor = '1' WHERE name = 'files'")
    replay = runtime.sensors.tick(now=t0 + timedelta(seconds=200))
    assert replay.get("files") is None
    assert len([r for r in _runs(runtime) if r.tags.get("sensor") == "files"]) == 2


def test_a_failing_sensor_records_its_error_and_the_others_still_run(runtime: fs.FlowStone):
    submitted = runtime.sensors.tick(now=datetime(2025, 6, 2, tzinfo=UTC))
    assert "files" in submitted
    status = {s.name: s for s in runtime.sensors.list()}
    error = status["broken_sensor"].last_error
    assert error is not None
    assert "upstream API down" in error["message"]
    assert status["broken_sensor"].evaluations == 1
    assert status["files"].last_error is None


def test_on_missing_submits_missing_partitions_newest_first_bounded(runtime: fs.FlowStone):
    runtime.backfill("daily", ["2025-01-05"])  # queued: in flight, so not missing
    now = datetime(2025, 1, 7, 12, tzinfo=UTC)  # partitions up to 2025-01-06 are complete
    first = runtime.sensors.tick(now=now)["fill_daily"]
    keys = [step.partition_key for r in first for step in runtime.store.run_steps(r)]
    assert keys == ["d:2025-01-06", "d:2025-01-04", "d:2025-01-03"]
    second = runtime.sensors.tick(now=now + timedelta(minutes=2))["fill_daily"]
    keys = [step.partition_key for r in second for step in runtime.store.run_steps(r)]
    assert keys == ["d:2025-01-02", "d:2025-01-01"]
    assert "fill_daily" not in runtime.sensors.tick(now=now + timedelta(minutes=4))


SCHEDULED = """
@fs.asset
def snapshot() -> int:
    return 1

every_5s = fs.Schedule("every_5s", "snapshot", cron="* * * * * */5")  # sixth field: seconds
defs = fs.Definitions(assets=[snapshot], schedules=[every_5s])
"""


@pytest.mark.slow
def test_two_workers_fire_each_tick_exactly_once(tmp_path: Path, database_url: str):
    pipeline = Pipeline(tmp_path, database_url, SCHEDULED)
    try:
        pipeline.start_worker(concurrency=2)
        pipeline.start_worker(concurrency=2)
        eventually(
            lambda: pipeline.sql("SELECT count(*) FROM flowstone_schedule_ticks")[0][0] >= 4,
            timeout=120,
            what="four ticks",
        )
        rows = pipeline.sql(
            "SELECT tags->>'tick', count(*) FROM flowstone_runs WHERE tags ? 'schedule' GROUP BY 1"
        )
        assert rows
        assert all(n == 1 for _, n in rows)
        ticks = pipeline.sql("SELECT count(*), count(DISTINCT tick_at) FROM flowstone_schedule_ticks")
        assert ticks[0][0] == ticks[0][1]
    finally:
        pipeline.stop()


def test_cli_schedules_sensors_and_gc(
    runtime: fs.FlowStone, database_url: str, capsys: pytest.CaptureFixture[str]
):
    runtime.close()
    common = ["--defs", "tests.integration.test_automation:DEFS", "--database-url", database_url]

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main([*args, *common])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, _ = run("schedules", "list")
    assert code == 0
    assert "nightly" in out
    assert "Europe/Berlin" in out
    assert run("schedules", "pause", "hourly")[1].strip() == "schedule hourly: paused"
    assert "paused" in run("schedules", "list")[1]
    code, out, _ = run("schedules", "tick", "nightly", "--now", "2025-06-02T02:00:05+02:00")
    assert code == 0
    assert out.startswith("schedule nightly: submitted run ")
    assert (
        run("schedules", "tick", "hourly", "--now", "2025-06-02T10:00:05+00:00")[1].strip()
        == "no tick was due"
    )
    code, _, err = run("schedules", "tick", "--now", "2025-06-02T10:00:05")
    assert code == 1
    assert "--now needs a timezone" in err
    code, out, _ = run("sensors", "tick", "--force", "--now", "2025-06-02T00:00:00+00:00")
    assert "sensor files: submitted run" in out
    code, out, _ = run("sensors", "list")
    assert "upstream API down" in out
    code, out, _ = run("gc", "--keep-last", "1", "--dry-run")
    assert code == 0
    assert out.startswith("gc (keep last 1): 0 old version(s)")


def test_a_schedule_whose_partition_callable_raises_does_not_stop_the_others(
    database_url: str, tmp_path: Path
):
    def boom(tick: datetime) -> object:
        raise ValueError("bad partition function")

    bad = fs.Schedule("bad", "snapshot", cron="0 * * * *", partition=boom)
    good = fs.Schedule("good", "snapshot", cron="0 * * * *")
    defs = fs.Definitions(assets=[daily, snapshot], schedules=[bad, good])
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        fired = rt.schedules.tick(now=datetime(2025, 6, 2, 10, 0, 5, tzinfo=UTC))
    assert list(fired) == ["good"]
