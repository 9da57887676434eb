"""Driver errors are classified by SQLSTATE, like Procrastinate's connector: only faults that may go
away (a lost connection, a restart, a serialization failure, exhausted resources) are retryable."""

from __future__ import annotations

import psycopg
import psycopg_pool
import pytest
from psycopg import errors as pg_errors

from flowstone.store import pg


@pytest.mark.parametrize(
    ("exc", "retryable", "says"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True, "database unavailable"),
        (pg_errors.AdminShutdown("terminating connection"), True, "database unavailable"),
        (pg_errors.CannotConnectNow("the database system is starting up"), True, "database unavailable"),
        (pg_errors.TooManyConnections("too many clients"), True, "database unavailable"),
        (pg_errors.SerializationFailure("could not serialize"), True, "concurrent update"),
        (pg_errors.DeadlockDetected("deadlock"), True, "concurrent update"),
        (pg_errors.LockNotAvailable("could not obtain lock"), True, "database unavailable"),
        (psycopg_pool.PoolTimeout("couldn't get a connection after 30 sec"), True, "database unavailable"),
        (
            pg_errors.ProgramLimitExceeded("index row size exceeds maximum"),
            False,
            "a database limit was exceeded",
        ),
        (pg_errors.UniqueViolation("duplicate key"), False, "the database refused it"),
        (pg_errors.InvalidTextRepresentation("invalid input syntax"), False, "invalid input syntax"),
        (pg_errors.UndefinedTable("relation does not exist"), False, "relation does not exist"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_driver_errors_are_classified_by_sqlstate(exc: Exception, retryable: bool, says: str):
    error = pg.store_error("do it", exc)  # type: ignore[arg-type]
    assert error.retryable is retryable
    assert error.message.startswith("do it: ")
    assert says in error.message


def test_translate_errors_raises_the_classified_error():
    with (
        pytest.raises(Exception, match="a database limit was exceeded") as info,
        pg.translate_errors("write"),
    ):
        raise pg_errors.ProgramLimitExceeded("too long")
    assert info.value.retryable is False  # type: ignore[attr-defined]
    assert info.value.context == {"sqlstate": "54000"}  # type: ignore[attr-defined]


def test_a_procrastinate_connector_error_is_classified_by_its_cause():
    from procrastinate import exceptions  # noqa: PLC0415

    wrapped = exceptions.ConnectorException("Database error.")
    wrapped.__cause__ = pg_errors.AdminShutdown("terminating connection")
    with pytest.raises(Exception, match="database unavailable") as info, pg.translate_errors("defer"):
        raise wrapped
    assert info.value.retryable is True  # type: ignore[attr-defined]
