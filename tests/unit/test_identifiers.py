"""I5: one validator for configured SQL identifiers (sqlglot + regex + 63 bytes + allow-list)."""

from __future__ import annotations

import re

import pytest
from psycopg import sql

from flowstone import errors, identifiers
from flowstone.identifiers import QualifiedName, parse_column, parse_schema, parse_table, validate_queue_name

# (hostile value, a piece of the reason the message must give)
HOSTILE_TABLES: list[tuple[object, str]] = [
    ("x; drop table y", "found ';'"),
    ('"a"', "found '\"'"),
    ('"a"."b"', "found '\"'"),
    ("a.b.c", "has 3 dot-separated parts"),
    ("a--", "found '-'"),
    ("a/**/b", "found '/'"),
    ("a/*", "found '/'"),
    ("pg_catalog.pg_authid", "'pg_catalog' is a system schema"),
    ("pg_authid", "reserved for the system catalogs"),
    ("information_schema.tables", "'information_schema' is a system schema"),
    ("\u0430", "CYRILLIC SMALL LETTER A"),  # looks like a Latin 'a'
    ("ev\u0435nts", "CYRILLIC SMALL LETTER IE"),  # a Cyrillic 'ie' in the middle
    ("\uff41", "FULLWIDTH LATIN SMALL LETTER A"),
    ("caf\u00e9", "LATIN SMALL LETTER E WITH ACUTE"),
    ("a" * 64, "is 64 bytes"),
    ("s." + "b" * 64, "is 64 bytes"),
    ("", "it is empty"),
    (" ", "found ' '"),
    (" a", "found ' '"),
    ("a ", "found ' '"),
    ("a b", "found ' '"),
    ("$1", "found '$'"),
    ("%(x)s", "found '%'"),
    ("a\\b", "found '\\\\'"),
    ("A", "Postgres folds unquoted names to lowercase"),
    ("Events", "Postgres folds unquoted names to lowercase"),
    ("1a", "starts with the digit '1'"),
    ("a.", "empty part"),
    (".a", "empty part"),
    ("a..b", "empty part"),
    ("a.b.", "empty part"),
    ("a'b", 'found "\'"'),
    ("a)", "found ')'"),
    ("a(", "found '('"),
    ("a,b", "found ','"),
    ("*", "found '*'"),
    ("a*", "found '*'"),
    ("a\tb", "found '\\t'"),
    ("a\n", "found '\\n'"),
    ("a\r\nb", "found '\\r'"),
    ("a\x00", "found '\\x00'"),
    ("a::text", "found ':'"),
    ("a-b", "found '-'"),
    ("a=1", "found '='"),
    ("`a`", "found '`'"),
    ("[a]", "found '['"),
    ("x union select 1", "found ' '"),
    (3, "must be a string, not int"),
    (None, "must be a string, not NoneType"),
    (b"events", "must be a string, not bytes"),
]

GOOD_TABLES = [
    ("events", QualifiedName(None, "events")),
    ("analytics.daily_events", QualifiedName("analytics", "daily_events")),
    ("_private", QualifiedName(None, "_private")),
    ("a" * 63, QualifiedName(None, "a" * 63)),
    ("s" * 63 + "." + "t" * 63, QualifiedName("s" * 63, "t" * 63)),
    ("t1_2", QualifiedName(None, "t1_2")),
    # Reserved words are allowed: psycopg.sql.Identifier always quotes them ("select"), and a quoted
    # keyword is just a name; every part is lowercase, so it is also the unquoted spelling's name.
    ("select", QualifiedName(None, "select")),
    ("public.order", QualifiedName("public", "order")),
    ("user", QualifiedName(None, "user")),
    ("current_user", QualifiedName(None, "current_user")),
]


@pytest.mark.parametrize(("value", "why"), HOSTILE_TABLES, ids=[repr(v) for v, _ in HOSTILE_TABLES])
def test_i5_hostile_tables_are_refused_naming_setting_and_value(value, why):
    with pytest.raises(errors.InvalidIdentifierError) as info:
        parse_table(value, setting="warehouse table")
    error = info.value
    assert error.message.startswith(f"warehouse table {value!r} is not an allowed SQL identifier: ")
    assert why in error.message
    assert error.context == {
        "setting": "warehouse table",
        "value": repr(value),
        "reason": error.context["reason"],
    }
    assert not error.retryable


def test_the_hostile_table_is_big_enough():
    assert len(HOSTILE_TABLES) >= 25


@pytest.mark.parametrize(("value", "why"), HOSTILE_TABLES, ids=[repr(v) for v, _ in HOSTILE_TABLES])
def test_i5_hostile_columns_and_queues_are_refused(value, why):
    if value == "pg_authid":  # a fine column name: the pg_ rule is about tables
        assert parse_column(value, setting="c") == "pg_authid"
        return
    for check in (parse_column, validate_queue_name, parse_schema):
        with pytest.raises(errors.InvalidIdentifierError) as info:
            check(value, setting="the setting")
        assert info.value.message.startswith(f"the setting {value!r} is not an allowed SQL identifier: ")


@pytest.mark.parametrize(("value", "expected"), GOOD_TABLES)
def test_good_tables_are_accepted(value, expected):
    assert parse_table(value, setting="t") == expected


def test_rendering_is_only_through_psycopg_identifier():
    table = parse_table("analytics.select", setting="t")
    assert isinstance(table.sql(), sql.Identifier)
    assert table.sql().as_string(None) == '"analytics"."select"'
    assert parse_table("events", setting="t").sql().as_string(None) == '"events"'
    assert str(table) == "analytics.select"


def test_columns_are_one_bare_name():
    assert parse_column("amount", setting="c") == "amount"
    assert parse_column("order", setting="c") == "order"
    with pytest.raises(errors.InvalidIdentifierError, match="one name without a dot, but it has 2"):
        parse_column("t.amount", setting="c")


def test_schemas_are_one_name_and_never_a_system_schema():
    assert parse_schema("analytics", setting="s") == "analytics"
    for system in ("pg_catalog", "pg_toast", "pg_temp_3", "information_schema"):
        with pytest.raises(errors.InvalidIdentifierError, match="is a system schema"):
            parse_schema(system, setting="s")


def test_queue_names_fit_procrastinate_limit():
    assert validate_queue_name("q" * 40, setting="queue") == "q" * 40
    with pytest.raises(errors.InvalidIdentifierError) as info:
        validate_queue_name("q" * 41, setting="queue")
    assert info.value.message == (
        f"queue {'q' * 41!r} is not an allowed SQL identifier: it is 41 bytes; a queue name is at most "
        "40 bytes (Procrastinate builds a NOTIFY channel name from it)"
    )


def test_allow_list_is_enforced_exactly():
    allowed = ["analytics.daily_events", "staging"]
    assert parse_table("analytics.daily_events", setting="t", allowed=allowed) == QualifiedName(
        "analytics", "daily_events"
    )
    assert parse_table("staging", setting="t", allowed=allowed) == QualifiedName(None, "staging")
    # An unqualified entry matches only the unqualified name, and vice versa.
    for refused in ("daily_events", "public.staging", "analytics.other"):
        with pytest.raises(errors.InvalidIdentifierError) as info:
            parse_table(refused, setting="t", allowed=allowed)
        assert info.value.message == (
            f"t {refused!r} is not an allowed SQL identifier: it is not in the allowed tables "
            "('analytics.daily_events', 'staging')"
        )
    with pytest.raises(errors.InvalidIdentifierError, match="not in the allowed tables \\(nothing\\)"):
        parse_table("events", setting="t", allowed=[])


def test_system_tables_are_refused_even_when_allow_listed():
    with pytest.raises(errors.InvalidIdentifierError, match="'pg_catalog' is a system schema"):
        parse_table("pg_catalog.pg_authid", setting="t", allowed=["pg_catalog.pg_authid"])


def test_a_bad_allow_list_entry_is_refused_naming_the_allow_list():
    with pytest.raises(errors.InvalidIdentifierError) as info:
        parse_table("events", setting="t", allowed=["events", "x; drop table y"])
    assert info.value.context["setting"] == "t allow-list"
    assert "'x; drop table y'" in info.value.message


# Defence in depth: with the regex loosened by mistake, sqlglot still refuses what is not plain
# names separated by dots.
SQLGLOT_CATCHES = [
    "x; drop table y",
    '"a"',
    "a--",
    "a/**/b",
    "$1",
    "a b",
    "a'b",
    "a)",
    "a,b",
    "*",
    "a\tb",
    "a::text",
    "a=1",
    "%(x)s",
    "x union select 1",
    "a+b",
    "a||b",
    "@a",
    "a#b",
]


@pytest.mark.parametrize("value", SQLGLOT_CATCHES)
def test_sqlglot_refuses_what_a_loosened_regex_would_let_through(monkeypatch, value):
    monkeypatch.setattr(identifiers, "_PART", re.compile(r"[^.]+"))
    with pytest.raises(errors.InvalidIdentifierError, match="sqlglot"):
        parse_table(value, setting="t")
    with pytest.raises(errors.InvalidIdentifierError, match="sqlglot"):
        parse_column(value, setting="c")
