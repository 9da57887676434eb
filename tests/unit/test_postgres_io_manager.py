"""PostgresIOManager configuration (I5 at construction) and rows-mode encoding (no database)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pydantic
import pytest

from flowstone import errors
from flowstone.identifiers import QualifiedName
from flowstone.io.base import InputContext, OutputContext, OutputRef
from flowstone.io.postgres import PostgresIOManager

from .test_identifiers import HOSTILE_TABLES


def _ctx(asset: str = "events", materialization_id: int = 7) -> OutputContext:
    return OutputContext(
        asset=asset,
        partition=date(2025, 1, 1),
        partition_key="d:2025-01-01",
        run_id="r",
        materialization_id=materialization_id,
        manager_key="warehouse",
    )


@pytest.mark.parametrize(("value", "why"), HOSTILE_TABLES, ids=[repr(v) for v, _ in HOSTILE_TABLES])
@pytest.mark.parametrize("mode", ["value", "rows"])
def test_i5_hostile_table_names_are_refused_at_construction(value, why, mode):
    with pytest.raises(errors.InvalidIdentifierError) as info:
        PostgresIOManager(table=value, mode=mode)
    assert info.value.message.startswith(
        f"PostgresIOManager table {value!r} is not an allowed SQL identifier"
    )
    assert why in info.value.message
    assert info.value.context["setting"] == "PostgresIOManager table"


@pytest.mark.parametrize("value", [v for v, _ in HOSTILE_TABLES], ids=[repr(v) for v, _ in HOSTILE_TABLES])
def test_i5_hostile_schema_and_partition_column_are_refused(value):
    if value == "pg_authid":  # a fine schema and column name (only tables may not start with pg_)
        return
    if value is not None:  # schema=None means "no schema"
        with pytest.raises(errors.InvalidIdentifierError) as info:
            PostgresIOManager(schema=value, table="daily_events", mode="rows")
        assert info.value.context["setting"] == "PostgresIOManager schema"
    with pytest.raises(errors.InvalidIdentifierError) as info:
        PostgresIOManager(table="analytics.daily_events", mode="rows", partition_column=value)
    assert info.value.context["setting"] == "PostgresIOManager partition_column"
    assert f"partition_column {value!r} is not an allowed SQL identifier" in info.value.message


def test_default_table_keeps_todays_behaviour():
    manager = PostgresIOManager()
    assert (manager.table, manager.mode, manager.format) == (
        QualifiedName(None, "flowstone_outputs"),
        "value",
        "jsonb",
    )
    assert PostgresIOManager(format="bytes").format == "bytes"


def test_schema_and_table_forms_are_equivalent():
    a = PostgresIOManager(table="analytics.daily_events", mode="rows")
    b = PostgresIOManager(schema="analytics", table="daily_events", mode="rows")
    assert a.table == b.table == QualifiedName("analytics", "daily_events")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"table": "analytics.daily_events"}, "is a user table, which holds rows: use mode='rows'"),
        ({"schema": "public", "table": "flowstone_outputs"}, "is a user table"),
        ({"partition_column": "day"}, "partition_column applies to mode='rows' only"),
        ({"table": "events", "mode": "rows", "format": "bytes"}, "format applies to mode='value' only"),
        ({"schema": "a", "table": "b.c", "mode": "rows"}, "give the schema once"),
        ({"mode": "table"}, "mode must be 'value' or 'rows'"),
        ({"format": "pickle"}, "format must be 'jsonb' or 'bytes'"),
        ({"table": "events", "mode": "rows", "allowed_tables": "events"}, "a list of table names"),
    ],
)
def test_inconsistent_settings_are_configuration_errors(kwargs, message):
    with pytest.raises(errors.ConfigurationError, match=message):
        PostgresIOManager(**kwargs)


@pytest.mark.parametrize("table", ["flowstone_outputs", "flowstone_runs", "public.procrastinate_jobs"])
def test_rows_mode_never_targets_flowstone_or_procrastinate_tables(table):
    with pytest.raises(errors.InvalidIdentifierError, match="belong to FlowStone and Procrastinate"):
        PostgresIOManager(table=table, mode="rows")


def test_allowed_tables_are_enforced_for_both_forms():
    allowed = ["analytics.daily_events"]
    assert PostgresIOManager(table="analytics.daily_events", mode="rows", allowed_tables=allowed)
    assert PostgresIOManager(schema="analytics", table="daily_events", mode="rows", allowed_tables=allowed)
    with pytest.raises(errors.InvalidIdentifierError, match="not in the allowed tables"):
        PostgresIOManager(table="analytics.other", mode="rows", allowed_tables=allowed)
    with pytest.raises(errors.InvalidIdentifierError) as info:
        PostgresIOManager(schema="pg_catalog", table="pg_authid", mode="rows", allowed_tables=allowed)
    assert info.value.context["setting"] == "PostgresIOManager schema"
    with pytest.raises(errors.InvalidIdentifierError, match="not in the allowed tables"):
        PostgresIOManager(allowed_tables=allowed)  # the default table is not in this list


class Event(pydantic.BaseModel):
    event_id: int
    amount: Decimal
    day: date


def test_rows_are_prepared_as_validated_columns_and_values():
    manager = PostgresIOManager(table="analytics.daily_events", mode="rows")
    prepared = manager.prepare(_ctx(), [{"event_id": 1, "select": "x"}, {"select": "y", "event_id": 2}])
    assert prepared.format == "rows"
    assert prepared.rows_table == QualifiedName("analytics", "daily_events")
    assert prepared.partition_column == "partition_key"
    assert prepared.rows_columns == ("event_id", "select")
    assert prepared.rows == ((1, "x"), (2, "y"))
    assert prepared.value is None
    assert prepared.data is None
    assert prepared.ref == OutputRef(
        manager="warehouse", uri="postgres:analytics.daily_events/7", version="7"
    )


def test_pydantic_rows_keep_python_values():
    manager = PostgresIOManager(table="events", mode="rows")
    prepared = manager.prepare(_ctx(), [Event(event_id=1, amount=Decimal("1.50"), day=date(2025, 1, 1))])
    assert prepared.rows_columns == ("event_id", "amount", "day")
    assert prepared.rows == ((1, Decimal("1.50"), date(2025, 1, 1)),)
    assert manager.prepare(_ctx(), []).rows == ()


@pytest.mark.parametrize("column", ["x; drop table y", 'a"', "Amount", "a.b", "", 3, "\u0430"])
def test_i5_hostile_row_keys_are_refused(column):
    manager = PostgresIOManager(table="events", mode="rows")
    with pytest.raises(errors.InvalidIdentifierError) as info:
        manager.prepare(_ctx(), [{column: 1}])
    assert info.value.context["setting"] == "column of a row for table events"
    assert repr(column) in info.value.message
    assert info.value.asset == "events"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": 1}, "asset returned dict, but PostgresIOManager\\(mode='rows'\\) stores a list"),
        ("abc", "asset returned str"),
        ([{"a": 1}, 3], "row 1 is int"),
        ([{"a": 1}, {"b": 1}], "row 1 sets the columns \\['b'\\], but row 0 sets \\['a'\\]"),
        ([{"a": 1}, {"a": 1, "b": 2}], "every row must set the same columns"),
        ([{"partition_key": "x"}], "must not set the partition column 'partition_key'"),
    ],
)
def test_bad_rows_are_refused_before_any_io(value, message):
    manager = PostgresIOManager(table="events", mode="rows")
    with pytest.raises(errors.OutputNotSerializableError, match=message) as info:
        manager.prepare(_ctx(), value)
    assert info.value.asset == "events"
    assert info.value.partition == "d:2025-01-01"


def test_one_rows_table_serves_one_asset():
    manager = PostgresIOManager(table="events", mode="rows")
    manager.prepare(_ctx("events"), [])
    with pytest.raises(errors.ConfigurationError, match="used by assets 'events', 'other'"):
        manager.prepare(_ctx("other"), [])
    with pytest.raises(errors.ConfigurationError, match="one rows-mode table serves one asset"):
        PostgresIOManager(table="t", mode="rows").validate_assets(["a", "b"])
    PostgresIOManager(table="t", mode="rows").validate_assets(["a", "a"])
    PostgresIOManager().validate_assets(["a", "b"])  # value mode keys rows by materialization


def test_rows_mode_needs_a_store_that_reads_rows():
    manager = PostgresIOManager(table="events", mode="rows")

    class ValueOnlyStore:
        def read_output(self, materialization_id):
            return None

        def delete_output(self, materialization_id):
            return None

    manager.bind(ValueOnlyStore())
    ctx = InputContext(
        asset="events",
        partition=None,
        partition_key="__unpartitioned__",
        ref=OutputRef(manager="warehouse", uri="postgres:events/3", version="3"),
    )
    with pytest.raises(errors.ConfigurationError, match="cannot read rows-mode outputs"):
        manager.load(ctx)
    manager.delete(ctx.ref)  # rows mode: nothing to delete, the store is not called
