"""Fault injection at each crash point of a step (I10, I11, I12, I17).

Whatever fails, metadata never says ``succeeded`` without a readable output, and a reader through
``latest()``/``load()`` never sees an output whose record did not commit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

import flowstone as fs
from flowstone import partition_keys
from flowstone.io import base as io_base

U = partition_keys.UNPARTITIONED


class ExplodingIO(fs.IOManager):
    """Fails every store, like a full disk."""

    def store(self, ctx: io_base.OutputContext, value: object) -> io_base.OutputRef:
        raise OSError("disk full")

    def load(self, ctx: io_base.InputContext) -> object:  # pragma: no cover - never stored
        raise AssertionError("nothing was stored")

    def delete(self, ref: io_base.OutputRef) -> None:  # pragma: no cover
        return None


@fs.asset
def source() -> dict[str, int]:
    return {"a": 1}


@fs.asset(io_manager="exploding")
def sink(source: dict[str, int]) -> int:
    return source["a"]


@fs.asset
def not_json(source: dict[str, int]) -> object:
    return object()


def make_defs(io: str, home: Path) -> fs.Definitions:
    managers: dict[str, fs.IOManager] = {"exploding": ExplodingIO()}
    if io == "filesystem":
        managers["default"] = fs.FilesystemIOManager(home / "storage")
    return fs.Definitions(assets=[source, sink, not_json], io_managers=managers)


@pytest.fixture(params=["postgres", "filesystem"])
def io(request: pytest.FixtureRequest) -> str:
    """The default IO manager: the Postgres one (output written in the success statement) or the
    filesystem one (a version file written before the success)."""
    return str(request.param)


@pytest.fixture
def runtime(database_url: str, tmp_path: Path, io: str):
    with fs.FlowStone(make_defs(io, tmp_path), database_url=database_url, home=tmp_path) as rt:
        yield rt


def _stored_files(home: Path) -> list[Path]:
    return sorted((home / "storage").rglob("*.json"))


def _stored_outputs(io: str, home: Path, database_url: str) -> int:
    """How many outputs exist in storage, committed or not."""
    if io == "filesystem":
        return len(_stored_files(home))
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM flowstone_outputs").fetchone()
    assert row is not None
    return int(row[0])


def test_i10_io_failure_records_failed_and_exposes_nothing(runtime: fs.FlowStone):
    runtime.materialize("source")
    result = runtime.materialize("sink", raise_on_error=False)
    row = result.step("sink")
    assert row.status == "failed"
    assert row.error is not None
    assert "disk full" in row.error["message"]
    assert row.output_ref is None
    assert runtime.latest("sink") is None
    with pytest.raises(fs.DependencyNotReadyError):
        runtime.load("sink")


def test_i17_non_json_output_is_refused_with_a_clear_error(runtime: fs.FlowStone):
    runtime.materialize("source")
    with pytest.raises(fs.OutputNotSerializableError, match="object") as info:
        runtime.materialize("not_json")
    assert info.value.asset == "not_json"
    assert runtime.latest("not_json") is None
    assert runtime.latest("source") is not None  # nothing committed before was touched


# Since 0.3 the pool refuses a connection the server dropped before lending it, so dropping the
# connections is no longer enough to make the success write fail: the server also refuses that
# write, once, the way a server shutting down does (SQLSTATE 57P01).
REFUSE_ONE_SUCCESS = """
CREATE SEQUENCE test_refusals;  -- nextval is not rolled back with the refused transaction
CREATE FUNCTION test_refuse_success() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('test_refusals') = 1 THEN
        RAISE EXCEPTION 'terminating connection due to administrator command' USING ERRCODE = '57P01';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_refuse_success BEFORE UPDATE ON flowstone_materializations
    FOR EACH ROW WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION test_refuse_success();
"""


def test_i11_connection_dropped_between_store_and_record(
    runtime: fs.FlowStone, database_url: str, tmp_path: Path, io: str
):
    def drop_every_connection(step: fs.Materialization, ref: fs.OutputRef) -> None:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            admin.execute(REFUSE_ONE_SUCCESS)

    result = runtime.materialize("source", raise_on_error=False, _after_store=drop_every_connection)
    row = result.step("source")
    assert row.status == "failed"
    assert row.error is not None
    assert row.error["type"] == "StoreError"
    assert row.error["retryable"] is True
    # Filesystem: the version file was written, but no committed row references it, so readers
    # never see it. Postgres: the output was part of the success statement, so nothing exists.
    assert _stored_outputs(io, tmp_path, database_url) == (1 if io == "filesystem" else 0)
    assert runtime.latest("source") is None
    with pytest.raises(fs.DependencyNotReadyError):
        runtime.load("source")
    # The next run works normally. (The refusal is disarmed first: when every attempt of the run
    # above met a terminated pooled connection, its success never reached the trigger, which would
    # then have refused this run's instead: a flake seen under load.)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("DROP TRIGGER test_refuse_success ON flowstone_materializations")
    assert runtime.materialize("source").success
    assert runtime.load("source") == {"a": 1}


def test_a_dropped_pooled_connection_is_replaced_before_the_success_write(
    runtime: fs.FlowStone, database_url: str, tmp_path: Path, io: str
):
    def drop_every_connection(step: fs.Materialization, ref: fs.OutputRef) -> None:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        time.sleep(0.2)  # the server's goodbye reaches the pooled connections' sockets

    result = runtime.materialize("source", _after_store=drop_every_connection)
    assert result.step("source").status == "succeeded"
    assert runtime.load("source") == {"a": 1}
    assert _stored_outputs(io, tmp_path, database_url) == 1


@pytest.mark.slow
def test_i11_process_killed_between_store_and_record(database_url: str, tmp_path: Path, io: str):
    script = tmp_path / "crash.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os
            import flowstone as fs

            @fs.asset
            def source() -> dict[str, int]:
                return {{"a": 1}}

            managers = {{"default": fs.FilesystemIOManager({str(tmp_path / "storage")!r})}}
            defs = fs.Definitions(assets=[source], io_managers=managers if {io!r} == "filesystem" else {{}})
            rt = fs.FlowStone(defs, database_url={database_url!r}, home={str(tmp_path)!r})
            rt.materialize("source", _after_store=lambda step, ref: os._exit(137))
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 137, proc.stderr
    assert _stored_outputs(io, tmp_path, database_url) == (1 if io == "filesystem" else 0)
    defs = fs.Definitions(assets=[source], io_managers=make_defs(io, tmp_path).io_managers)
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        (run,) = rt.store.list_runs()
        (step,) = rt.store.run_steps(run.run_id)
        assert step.status == "running"  # the crash left the claim; no success was recorded
        assert rt.latest("source") is None
        assert rt.materialize("source").success
        assert rt.load("source") == {"a": 1}


def test_i12_failure_is_recorded_once(runtime: fs.FlowStone, database_url: str):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE TABLE test_writes (id bigint, old_status text, new_status text);
            CREATE FUNCTION test_log_write() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO test_writes VALUES (NEW.id, OLD.status, NEW.status);
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_log_write AFTER UPDATE ON flowstone_materializations
                FOR EACH ROW EXECUTE FUNCTION test_log_write();
            """
        )
    runtime.materialize("source")
    result = runtime.materialize("sink", raise_on_error=False)
    sink_id = result.step("sink").id
    with psycopg.connect(database_url) as conn:
        writes = conn.execute(
            "SELECT old_status, new_status FROM test_writes WHERE id = %s", (sink_id,)
        ).fetchall()
    assert writes == [("pending", "running"), ("running", "failed")]
    events = [e.event for e in runtime.store.audit_events(run_id=result.run_id)]
    assert events.count("materialization.failed") == 1


def test_i10_every_succeeded_row_has_a_readable_output(runtime: fs.FlowStone, database_url: str):
    """The schema refuses a succeeded row without an output reference; every one loads."""
    runtime.materialize("source")
    runtime.materialize(["sink", "not_json"], raise_on_error=False)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT asset, partition_key FROM flowstone_materializations WHERE status = 'succeeded'"
        ).fetchall()
    assert rows == [("source", U)]
    assert runtime.load("source") == {"a": 1}
