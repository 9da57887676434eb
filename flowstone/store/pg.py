"""What every Postgres table module shares: the connection and row types, the pooled
:class:`Database`, error translation at the edge (STYLE.md §3), row mapping and :class:`Pending`
results of pipelined statements.

The one definition of ``Conn``, ``Row`` and ``Q`` lives here; the table modules
(:mod:`~flowstone.store.runs`, :mod:`~flowstone.store.materializations`, ...) import them.
"""

from __future__ import annotations

import select
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg
import psycopg_pool
from procrastinate import exceptions as procrastinate_exceptions
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.rows import dict_row

from flowstone import errors
from flowstone.status import ApprovalStatus, RunKind, RunStatus, StepStatus
from flowstone.store import records, sqlfiles

__all__ = [
    "After",
    "Conn",
    "Database",
    "Pending",
    "Q",
    "Row",
    "approval_from_row",
    "materialization_from_row",
    "one_trip",
    "run_from_row",
    "run_uuid",
    "translate_errors",
]

Row = dict[str, Any]
Conn = psycopg.Connection[Row]
Q = sqlfiles.query
T = TypeVar("T")


# SQLSTATE classes after which the same statement may succeed later: connection exception,
# transaction rollback (serialization, deadlock), insufficient resources, operator intervention
# (shutdown, restart), system error; and 55P03 (lock not available). Everything else, e.g. class 54
# (program limit exceeded: a key too long for an index), 22 (data) or 23 (integrity), never will.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_TRANSIENT_STATES = frozenset({"55P03"})


def store_error(action: str, exc: psycopg.Error | psycopg_pool.PoolTimeout) -> errors.StoreError:
    """The FlowStone error of a driver error, classified by SQLSTATE like Procrastinate's connector."""
    if not isinstance(exc, psycopg.Error):  # the pool timed out: no connection could be had
        return errors.StoreError(f"{action}: database unavailable ({str(exc).strip()})", retryable=True)
    state = exc.sqlstate or ""
    text = str(exc).strip()
    if isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
        return errors.StoreError(f"{action}: concurrent update, try again ({text})", retryable=True)
    if isinstance(exc, pg_errors.IntegrityError):
        return errors.StoreError(
            f"{action}: the database refused it ({text})",
            retryable=False,
            context={"constraint": getattr(exc.diag, "constraint_name", None), "sqlstate": state},
        )
    if (not state and isinstance(exc, psycopg.OperationalError)) or (
        state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
    ):
        return errors.StoreError(
            f"{action}: database unavailable ({text})", retryable=True, context={"sqlstate": state or None}
        )
    if state[:2] == "54":
        return errors.StoreError(
            f"{action}: a database limit was exceeded ({text})", retryable=False, context={"sqlstate": state}
        )
    return errors.StoreError(f"{action}: {text}", retryable=False, context={"sqlstate": state or None})


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Map driver errors to FlowStone errors at the edge (STYLE.md §3)."""
    try:
        yield
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        raise store_error(action, exc) from exc
    except procrastinate_exceptions.ConnectorException as exc:
        # Procrastinate deferring on our connection wraps the driver's error: classify that one.
        cause = exc.__cause__
        if isinstance(cause, psycopg.Error | psycopg_pool.PoolTimeout):
            raise store_error(action, cause) from exc
        raise errors.StoreError(f"{action}: {exc}", retryable=False) from exc


def check_alive(conn: psycopg.Connection[Any]) -> None:
    """The pool's check before it lends a connection: refuse one the server dropped (a restart, an
    administrator's ``pg_terminate_backend``) without a round trip. An idle pooled connection has
    nothing to read unless the server said goodbye: its message, then end-of-file. Reading what is
    there never blocks; end-of-file raises."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    for _ in range(4):
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
        if not readable:
            break
        conn.pgconn.consume_input()  # raises OperationalError at end-of-file
    if conn.pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection is bad")


class Database:
    """A small pool of autocommit connections to one Postgres database, opened on first use."""

    def __init__(self, url: str, *, max_connections: int = 8) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._max = max(1, max_connections)
        self._pool: psycopg_pool.ConnectionPool[Conn] | None = None

    def _get_pool(self) -> psycopg_pool.ConnectionPool[Conn]:
        with self._lock:
            if self._pool is None:
                pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self._max,
                    kwargs={"autocommit": True, "row_factory": dict_row},
                    connection_class=psycopg.Connection[Row],
                    check=check_alive,
                    open=False,
                    name="flowstone-store",
                )
                with translate_errors("connect"):
                    pool.open(wait=True, timeout=30)
                self._pool = pool
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        """A pooled autocommit connection (use ``conn.transaction()`` for several statements)."""
        with self._get_pool().connection() as conn:
            yield conn

    @contextmanager
    def transaction(self, action: str, conn: Conn | None = None) -> Iterator[Conn]:
        """A transaction on a pooled connection, or a savepoint inside the caller's ``conn``;
        driver errors become :class:`~flowstone.errors.StoreError` naming ``action``."""
        if conn is not None:
            with translate_errors(action), conn.transaction():
                yield conn
            return
        with translate_errors(action), self.connection() as own, own.transaction():
            yield own

    @contextmanager
    def session(self, action: str) -> Iterator[Conn]:
        """A pooled autocommit connection whose driver errors name ``action``."""
        with translate_errors(action), self.connection() as conn:
            yield conn

    def one(self, action: str, name: str, params: Mapping[str, Any]) -> Row | None:
        """The first row of one named query, run on its own."""
        with self.session(action) as conn:
            return conn.execute(Q(name), params).fetchone()

    def all(self, action: str, name: str, params: Mapping[str, Any]) -> list[Row]:
        """Every row of one named query, run on its own."""
        with self.session(action) as conn:
            return conn.execute(Q(name), params).fetchall()

    def close(self) -> None:
        """Close the pool; it reopens if used again."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


@dataclass(slots=True)
class After:
    """Statements that ``one_trip`` sends after its COMMIT, in the same round trip, each on its own
    (autocommit). ``failed`` holds their error when the transaction committed and they did not
    succeed: the block's work stands, and the caller does theirs another way."""

    send: Callable[[], object]
    failed: BaseException | None = None


@contextmanager
def one_trip(conn: Conn, after: After | None = None) -> Iterator[None]:
    """A transaction on the autocommit ``conn`` whose BEGIN, statements and COMMIT go in one
    pipeline, synced once when the block ends (``conn.transaction()`` in a pipeline syncs after
    BEGIN, after the body and after COMMIT: three more round trips). Statements may still be
    fetched inside the block (:meth:`Pending.get`), which syncs there. ``after`` sends more
    statements behind the COMMIT (see :class:`After`).

    On any error the transaction is rolled back and the connection closed, so the pool replaces
    it: after an aborted pipeline, psycopg's cache of prepared statements may name statements the
    server never prepared, and only its own ``transaction()`` knows to clear it."""
    committed: psycopg.Cursor[Row] | None = None
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            yield
            committed = conn.execute("COMMIT")
            if after is not None:
                after.send()
    except BaseException as exc:
        conn.close()
        # The pipeline processes every result before it raises the first error: a COMMIT that
        # went through says so in its cursor, and then only what came after it failed.
        if (
            after is None
            or committed is None
            or committed.statusmessage != "COMMIT"
            or not isinstance(exc, psycopg.Error)
        ):
            raise
        after.failed = exc


@dataclass(slots=True)
class Pending(Generic[T]):
    """The result of a statement sent in a pipeline, converted when fetched. Fetching syncs the
    pipeline, so a caller sends every statement first and fetches afterwards (one round trip).
    The result is kept: a cursor's rows can be read once, so a second ``get`` returns the first
    one's result instead of an empty one."""

    cursor: psycopg.Cursor[Row]
    convert: Callable[[psycopg.Cursor[Row]], T]
    _result: list[T] = field(default_factory=list, init=False, repr=False)

    def get(self) -> T:
        """Fetch and convert (once)."""
        if not self._result:
            self._result.append(self.convert(self.cursor))
        return self._result[0]


def run_uuid(run_id: str) -> uuid.UUID:
    """A run id as a UUID; anything else is refused before it reaches SQL."""
    try:
        return uuid.UUID(run_id)
    except ValueError:
        raise errors.StoreError(f"{run_id!r} is not a run id (a UUID)", retryable=False) from None


def materialization_from_row(row: Row) -> records.Materialization:
    """The record of a ``flowstone_materializations`` row."""
    return records.Materialization(
        id=row["id"],
        run_id=str(row["run_id"]),
        asset=row["asset"],
        partition_key=row["partition_key"],
        status=StepStatus(row["status"]),
        attempt=row["attempt"],
        pending_upstream=row["pending_upstream"],
        created_at=row["created_at"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_ms=row["duration_ms"],
        error=row["error"],
        metadata=row["metadata"],
        output_ref=row["output_ref"],
        code_version=row["code_version"],
        job_id=row["job_id"],
        output_deleted_at=row.get("output_deleted_at"),
        memoized_from=row.get("memoized_from"),
    )


def run_from_row(row: Row) -> records.Run:
    """The record of a ``flowstone_runs`` row."""
    return records.Run(
        run_id=str(row["run_id"]),
        kind=RunKind(row["kind"]),
        selection=tuple(row["selection"]),
        config=row["config"],
        tags=row["tags"],
        requested_by=row["requested_by"],
        status=RunStatus(row["status"]),
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


def approval_from_row(row: Row) -> records.Approval:
    """The record of a ``flowstone_approvals`` row."""
    return records.Approval(
        id=row["id"],
        materialization_id=row["materialization_id"],
        run_id=str(row["run_id"]),
        asset=row["asset"],
        partition_key=row["partition_key"],
        status=ApprovalStatus(row["status"]),
        message=row["message"],
        context_data=row["context_data"],
        approvers=tuple(row["approvers"]) if row["approvers"] is not None else None,
        on_timeout=row["on_timeout"],
        requested_at=row["requested_at"],
        timeout_at=row["timeout_at"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        reason=row["reason"],
        timeout_job_id=row.get("timeout_job_id"),
    )


def one_or_none(convert: Callable[[Row], T]) -> Callable[[psycopg.Cursor[Row]], T | None]:
    """A :class:`Pending` converter: the first row converted, or ``None``."""

    def fetch(cursor: psycopg.Cursor[Row]) -> T | None:
        row = cursor.fetchone()
        return convert(row) if row is not None else None

    return fetch
