"""The definitions snapshot in Postgres: every runtime publishes its definitions (once per change),
and a runtime can be built from them without the project's code."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

import flowstone as fs
from flowstone import cli, errors, snapshot
from flowstone.store.postgres import PostgresStore


@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01"), group="raw", owners=["team:data"])
def raw(context: fs.AssetContext) -> int:
    return context.partition.toordinal()


@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01"), description="Twice raw.")
def doubled(raw: int) -> int:
    return raw * 2


@fs.asset
def other() -> int:
    return 1


DEFS = fs.Definitions([raw, doubled, other], schedules=[fs.Schedule("nightly", "doubled", cron="0 3 * * *")])


def _rows(url: str) -> dict[str, tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT asset, group_name, deps, owners, present, position, updated_at, partitions->>'kind' "
            "FROM flowstone_definitions"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_a_runtime_publishes_its_definitions_once_per_change(database_url: str, tmp_path: Path):
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path):
        pass
    first = _rows(database_url)
    assert set(first) == {"raw", "doubled", "other"}
    assert first["raw"][:4] == ("raw", [], ["team:data"], True)
    assert first["doubled"][1] == ["raw"]
    assert first["doubled"][6] == "daily"
    assert first["raw"][4] < first["doubled"][4]  # topological order
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path):
        pass
    assert _rows(database_url) == first  # unchanged definitions: nothing written
    with fs.FlowStone(fs.Definitions([raw, doubled]), database_url=database_url, home=tmp_path):
        pass
    after = _rows(database_url)
    assert after["other"][3] is False  # absent now, kept for the history that names it
    assert after["raw"][3] is True
    with psycopg.connect(database_url) as conn:
        ((count, published_by),) = conn.execute(
            "SELECT assets, published_by FROM flowstone_definitions_state"
        ).fetchall()
    assert count == 2
    assert "@" in published_by


def test_concurrent_publishers_of_one_set_write_it_once(database_url: str, tmp_path: Path):
    store = PostgresStore(database_url)
    snap = snapshot.build(DEFS)
    wrote: list[bool] = []
    barrier = threading.Barrier(6)

    def publish() -> None:
        barrier.wait()
        wrote.append(store.snapshots.publish(snap, published_by="test"))

    threads = [threading.Thread(target=publish) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert sorted(wrote) == [False] * 5 + [True]


def test_a_runtime_from_the_database_reads_without_the_code(database_url: str, tmp_path: Path):
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path) as rt:
        rt.materialize("doubled", fs.DailyPartitions(start="2025-01-01").keys()[0], with_upstream=True)
    with fs.FlowStone.from_database(database_url=database_url, home=tmp_path) as reader:
        assert list(reader.defs) == list(DEFS)
        assert reader.defs.get("doubled").description == "Twice raw."
        latest = reader.latest("doubled", "2025-01-01")
        assert latest is not None
        assert latest.status == fs.StepStatus.SUCCEEDED
        assert reader.load("doubled", "2025-01-01") == 2 * 739252  # the default IO manager is known
        assert {n.asset for n in reader.lineage.upstream("doubled", "2025-01-01")} == {"raw"}
        assert [s.name for s in reader.defs.schedules] == ["nightly"]  # type: ignore[attr-defined]
        with pytest.raises(errors.ConfigurationError, match="pass --defs"):
            reader.materialize("other")
    # reading published nothing (the reader's definitions are the published ones)
    with psycopg.connect(database_url) as conn:
        ((count,),) = conn.execute("SELECT assets FROM flowstone_definitions_state").fetchall()
    assert count == 3


def test_a_runtime_from_a_database_without_definitions_says_what_to_do(database_url: str, tmp_path: Path):
    with pytest.raises(errors.ConfigurationError, match="no published definitions yet: pass --defs"):
        fs.FlowStone.from_database(database_url=database_url, home=tmp_path)


def test_reading_commands_need_only_the_database(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.delenv("FLOWSTONE_DEFS", raising=False)
    monkeypatch.setenv("FLOWSTONE_HOME", str(tmp_path))
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path) as rt:
        rt.materialize("doubled", "2025-01-02", with_upstream=True)
    capsys.readouterr()
    url = ["--database-url", database_url]
    assert cli.main(["status", *url]) == 0
    assert "doubled" in capsys.readouterr().out
    assert cli.main(["runs", *url]) == 0
    assert "succeeded" in capsys.readouterr().out
    assert cli.main(["lineage", "doubled", "--partition", "2025-01-02", *url]) == 0
    assert "raw [2025-01-02]" in capsys.readouterr().out  # keys shown decoded
    assert cli.main(["approvals", "list", *url]) == 0
    assert cli.main(["schedules", "list", *url]) == 0
    assert "nightly" in capsys.readouterr().out
    # running needs the code
    assert cli.main(["materialize", "other", *url]) == 1
    assert "pass --defs" in capsys.readouterr().err
