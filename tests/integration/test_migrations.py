"""Migrations: applied once, in order, under a lock; edited files refused; the schema enforces rules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from flowstone import cli, errors
from flowstone.store import migrations, sqlfiles
from tests import pg

CORE_TABLES = {
    "flowstone_runs",
    "flowstone_materializations",
    "flowstone_lineage",
    "flowstone_approvals",
    "flowstone_audit_log",
    "flowstone_schema_migrations",
}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_upgrade_installs_procrastinate_and_core_tables_then_is_a_no_op(empty_database_url):
    said: list[str] = []
    report = migrations.upgrade(empty_database_url, progress=said.append)
    assert report.applied == [m.filename for m in migrations.discover()]
    assert report.procrastinate is not None
    assert "procrastinate schema" in said[0]
    tables = _tables(empty_database_url)
    assert tables >= CORE_TABLES | {"procrastinate_jobs", "procrastinate_events"}

    again = migrations.upgrade(empty_database_url)
    assert again.nothing_to_do
    recorded = migrations.status(empty_database_url)
    assert len(recorded["flowstone"]) == len(migrations.discover())
    assert len(recorded["procrastinate"]) == 1


def test_views_exist(database_url):
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema = 'public'"
        ).fetchall()
    assert {"flowstone_latest_materializations", "flowstone_run_status"} <= {r[0] for r in rows}


@pytest.mark.slow
def test_two_concurrent_upgrade_processes_apply_each_migration_once(empty_database_url):
    command = [sys.executable, "-m", "flowstone.cli", "db", "upgrade", "--database-url", empty_database_url]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    joined = "".join(out for out, _ in outputs)
    for migration in migrations.discover():
        assert joined.count(f"applying {migration.filename}") == 1
    assert sum("nothing to do" in out for out, _ in outputs) == 1
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute(
            "SELECT component, version, count(*) FROM flowstone_schema_migrations GROUP BY 1, 2"
        ).fetchall()
    assert all(n == 1 for _, _, n in rows)


def _copy_migrations(tmp_path: Path) -> list[Path]:
    target = tmp_path / "migrations"
    target.mkdir()
    for path in sqlfiles.migration_files():
        shutil.copy(path, target / path.name)
    return sorted(target.glob("*.sql"))


def test_edited_applied_migration_fails_naming_the_file(empty_database_url, tmp_path, monkeypatch, capsys):
    files = _copy_migrations(tmp_path)
    migrations.upgrade(empty_database_url, migrations=migrations.discover(files))
    files[0].write_text(files[0].read_text() + "\n-- a harmless looking edit\n")

    with pytest.raises(errors.MigrationError, match=r"0001_core\.sql was changed after it was applied"):
        migrations.upgrade(empty_database_url, migrations=migrations.discover(files))

    monkeypatch.setattr(sqlfiles, "migration_files", lambda: files)
    assert cli.main(["db", "upgrade", "--database-url", empty_database_url]) == 1
    assert "0001_core.sql was changed after it was applied" in capsys.readouterr().err


def test_database_newer_than_code_is_refused(empty_database_url, tmp_path):
    files = _copy_migrations(tmp_path)
    extra = tmp_path / "migrations" / f"{len(files) + 1:04d}_later.sql"
    extra.write_text("CREATE TABLE flowstone_later_thing (id int);\n")
    migrations.upgrade(empty_database_url, migrations=migrations.discover([*files, extra]))
    with pytest.raises(errors.MigrationError, match="upgrade FlowStone"):
        migrations.upgrade(empty_database_url, migrations=migrations.discover(files))


def test_failing_migration_rolls_back_and_is_not_recorded(empty_database_url, tmp_path):
    files = _copy_migrations(tmp_path)
    bad = tmp_path / "migrations" / f"{len(files) + 1:04d}_broken.sql"
    bad.write_text("CREATE TABLE flowstone_half_done (id int);\nSELECT 1/0;\n")
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrations.upgrade(empty_database_url, migrations=migrations.discover([*files, bad]))
    assert "flowstone_half_done" not in _tables(empty_database_url)
    assert not any("broken" in line for line in migrations.status(empty_database_url)["flowstone"])


def test_unreachable_database_is_a_clear_error():
    with pytest.raises(errors.StoreError, match="cannot connect to the database"):
        migrations.upgrade("postgresql://nobody:secret@127.0.0.1:1/none?connect_timeout=2")


def test_audit_log_rejects_update_delete_and_truncate(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO flowstone_audit_log (event, actor) VALUES ('run.requested', 'alice')")
        for statement in (
            "UPDATE flowstone_audit_log SET actor = 'mallory'",
            "DELETE FROM flowstone_audit_log",
            "TRUNCATE flowstone_audit_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
    assert pg.count(database_url, "SELECT count(*) FROM flowstone_audit_log WHERE actor = 'alice'") == 1


def _insert_run(conn: psycopg.Connection) -> uuid.UUID:
    run_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO flowstone_runs (run_id, selection, requested_by) VALUES (%s, %s, 'test')",
        (run_id, ["a"]),
    )
    return run_id


def test_i7_schema_rejects_duplicate_materialization_identity(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        run_id = _insert_run(conn)
        insert = (
            "INSERT INTO flowstone_materializations (run_id, asset, partition_key) "
            "VALUES (%s, 'a', '__unpartitioned__')"
        )
        conn.execute(insert, (run_id,))
        with pytest.raises(psycopg.errors.UniqueViolation, match="flowstone_materializations_identity_key"):
            conn.execute(insert, (run_id,))


def test_schema_forbids_null_partition_keys_and_half_lineage(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        run_id = _insert_run(conn)
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute(
                "INSERT INTO flowstone_materializations (run_id, asset, partition_key) "
                "VALUES (%s, 'a', NULL)",
                (run_id,),
            )
        row = conn.execute(
            "INSERT INTO flowstone_materializations (run_id, asset, partition_key) "
            "VALUES (%s, 'a', 'i:1') RETURNING id",
            (run_id,),
        ).fetchone()
        assert row is not None
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute(
                "INSERT INTO flowstone_lineage (materialization_id, upstream_materialization_id, input_name) "
                "VALUES (%s, NULL, 'x')",
                (row[0],),
            )
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO flowstone_lineage (materialization_id, upstream_materialization_id, input_name) "
                "VALUES (%s, %s, 'x')",
                (row[0], row[0] + 1000),
            )


def test_succeeded_rows_must_name_their_output(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        run_id = _insert_run(conn)
        with pytest.raises(psycopg.errors.CheckViolation, match="succeeded_has_output"):
            conn.execute(
                "INSERT INTO flowstone_materializations (run_id, asset, partition_key, status, finished_at) "
                "VALUES (%s, 'a', 'i:1', 'succeeded', now())",
                (run_id,),
            )


def test_latest_view_orders_by_finished_at_then_id(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        ids = []
        for _ in range(3):
            run_id = _insert_run(conn)
            row = conn.execute(
                "INSERT INTO flowstone_materializations "
                "(run_id, asset, partition_key, status, started_at, finished_at, output_ref) "
                "VALUES (%s, 'a', 'd:2025-01-01', 'succeeded', '2025-01-02T00:00:00Z', "
                "'2025-01-02T00:00:01Z', '{}') RETURNING id",
                (run_id,),
            ).fetchone()
            assert row is not None
            ids.append(row[0])
        latest = conn.execute(
            "SELECT id, duration_ms FROM flowstone_latest_materializations WHERE asset = 'a'"
        ).fetchall()
    assert latest == [(max(ids), 1000.0)]


def test_the_audit_log_becomes_monthly_partitions_keeping_its_events(empty_database_url):
    known = migrations.discover()
    before = [m for m in known if m.name != "audit_partitions" and m.version < 11]
    migrations.upgrade(empty_database_url, migrations=before)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO flowstone_audit_log (event, actor, at) VALUES "
            "('run.requested', 'old', '2024-03-15T10:00:00Z'), ('run.requested', 'new', now())"
        )
        ids = conn.execute("SELECT id, actor FROM flowstone_audit_log ORDER BY id").fetchall()
    migrations.upgrade(empty_database_url)  # 0011 and what follows
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        assert conn.execute("SELECT id, actor FROM flowstone_audit_log ORDER BY id").fetchall() == ids
        parts = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'flowstone_audit_log'::regclass"
            )
        }
        assert {"flowstone_audit_log_2024_03", "flowstone_audit_log_default"} <= parts
        conn.execute("INSERT INTO flowstone_audit_log (event, actor) VALUES ('run.requested', 'later')")
        new_id = conn.execute("SELECT max(id) FROM flowstone_audit_log").fetchone()
        assert new_id is not None
        assert new_id[0] > max(i for i, _ in ids)  # the identity continues after the copied ids
        for statement in (
            "UPDATE flowstone_audit_log_2024_03 SET actor = 'mallory'",
            "DELETE FROM flowstone_audit_log_2024_03",
            "TRUNCATE flowstone_audit_log_2024_03",
            "TRUNCATE flowstone_audit_log_default",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)


def test_audit_drop_before_drops_whole_old_months_and_records_it(database_url, tmp_path):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT flowstone_audit_partition('2024-03-15T00:00:00Z')")
        conn.execute(
            "INSERT INTO flowstone_audit_log (event, actor, at) "
            "SELECT 'run.requested', 'old', '2024-03-01T00:00:00Z'::timestamptz + n * interval '1 hour' "
            "FROM generate_series(0, 9) AS n"
        )
        conn.execute("INSERT INTO flowstone_audit_log (event, actor) VALUES ('run.requested', 'recent')")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowstone.cli", "audit", *args, "--database-url", database_url],
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        )  # fmt: skip

    dry = cli("drop-before", "2025-01", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == "would drop 1 month(s) of the audit log: 2024-03 (10 events)"
    assert pg.count(database_url, "SELECT count(*) FROM flowstone_audit_log WHERE actor = 'old'") == 10
    done = cli("drop-before", "2025-01")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "dropped 1 month(s) of the audit log: 2024-03 (10 events)"
    assert pg.count(database_url, "SELECT count(*) FROM flowstone_audit_log WHERE actor = 'old'") == 0
    assert pg.count(database_url, "SELECT count(*) FROM flowstone_audit_log WHERE actor = 'recent'") == 1
    assert (
        pg.count(database_url, "SELECT count(*) FROM flowstone_audit_log WHERE event = 'audit.dropped'") == 1
    )
    bad = cli("drop-before", "January")
    assert bad.returncode == 1
    assert "drop-before takes a month like 2025-01" in bad.stderr


def test_hot_tables_have_their_own_autovacuum_settings(database_url):
    with psycopg.connect(database_url) as conn:
        options = dict(
            conn.execute(
                "SELECT relname, reloptions FROM pg_class WHERE relname IN "
                "('flowstone_materializations', 'procrastinate_jobs', 'flowstone_step_logs')"
            ).fetchall()
        )
    assert "autovacuum_vacuum_scale_factor=0.02" in options["flowstone_materializations"]
    assert "autovacuum_vacuum_scale_factor=0.02" in options["procrastinate_jobs"]
    assert "autovacuum_analyze_scale_factor=0.02" in options["flowstone_step_logs"]
