"""The status enums and the SQL CHECK lists can never drift: each closed set in Python equals the
values the migrated schema accepts (read from the catalog, so later migrations count too)."""

from __future__ import annotations

import re
import typing

import psycopg
import pytest

from flowstone import approval_types, status

CASES = [
    ("flowstone_runs", "status", {s.value for s in status.RunStatus}),
    ("flowstone_runs", "kind", {k.value for k in status.RunKind}),
    ("flowstone_materializations", "status", {s.value for s in status.StepStatus}),
    ("flowstone_approvals", "status", {s.value for s in status.ApprovalStatus}),
    ("flowstone_approvals", "on_timeout", set(typing.get_args(approval_types.OnTimeout))),
]


def _check_values(url: str, table: str, column: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'c'",
            (table,),
        ).fetchall()
    lists = [
        set(re.findall(r"'([^']*)'::text", definition))
        for (definition,) in rows
        if re.fullmatch(rf"CHECK \(\({column} = ANY \(ARRAY\[[^\]]*\]\)\)\)", definition)
    ]
    assert len(lists) == 1, (table, column, rows)
    return lists[0]


@pytest.mark.parametrize(("table", "column", "python"), CASES, ids=[f"{t}.{c}" for t, c, _ in CASES])
def test_each_enum_equals_its_sql_check_list(database_url: str, table: str, column: str, python: set[str]):
    assert _check_values(database_url, table, column) == python


def test_the_run_status_rule_matches_every_combination_of_step_statuses():
    """``run_status_of`` (memory store) orders the cases as ``run_finish`` (SQL) does."""
    steps = status.StepStatus
    assert status.run_status_of({steps.SUCCEEDED, steps.RUNNING}) == status.RunStatus.RUNNING
    assert status.run_status_of({steps.PENDING, steps.WAITING_APPROVAL}) == status.RunStatus.WAITING_APPROVAL
    assert status.run_status_of({steps.PENDING, steps.FAILED}) == status.RunStatus.RUNNING
    assert status.run_status_of({steps.CANCELLED, steps.FAILED}) == status.RunStatus.CANCELLED
    assert status.run_status_of({steps.SKIPPED, steps.SUCCEEDED}) == status.RunStatus.FAILED
    assert status.run_status_of({steps.SUCCEEDED}) == status.RunStatus.SUCCEEDED
    assert status.run_status_of(set()) == status.RunStatus.SUCCEEDED
