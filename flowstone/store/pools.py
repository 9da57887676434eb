"""Concurrency pools in Postgres (``sql/queries/pools.sql`` and the functions of migration
``0008_pools``), Postgres only; composed into the Postgres store as ``store.pools``.

A claimed step of an asset with pools takes one slot of each (per key) in one round trip after its
claim, or goes back to ``queued`` without a job and waits; a trigger releases the slots in the
transaction that moves the step out of ``running`` and defers the next waiter's job there."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from flowstone.store import pg
from flowstone.store.pg import Q

__all__ = ["PoolState", "PostgresPools"]


@dataclass(frozen=True, slots=True)
class PoolState:
    """A pool: its limit (the code's, or an operator's) and, per key, slots held and steps waiting."""

    pool: str
    limit: int
    code_limit: int
    limit_override: int | None
    period_s: float | None
    """A rate limit's window (``None``: a concurrency pool); its ``held`` counts starts in it."""
    set_by: str | None
    updated_at: datetime
    by_key: Mapping[str, Mapping[str, int]]


class PostgresPools:
    """Pool limits, slots and waiters on a Database."""

    def __init__(self, db: pg.Database) -> None:
        self.db = db

    def publish(self, limits: Mapping[str, tuple[int, float | None]]) -> None:
        """Record the limits (and rate-limit periods) the code gives its pools (an operator's
        override stays)."""
        if not limits:
            return
        names = sorted(limits)
        params = {
            "pools": names,
            "limits": [limits[n][0] for n in names],
            "periods": [limits[n][1] for n in names],
        }
        with self.db.transaction("publish pool limits") as conn:
            conn.execute(Q("pool_publish"), params)

    def acquire(
        self,
        materialization_id: int,
        slots: Sequence[tuple[str, str]],
        *,
        queue: str,
        priority: int,
        wait: bool,
    ) -> str | None:
        """Take a slot of each ``(pool, key)`` for a claimed step (committed asynchronously, like
        the claim); or return the full pool, and with ``wait`` make the step wait for it (back to
        ``queued`` without a job, woken by the release of a slot). ``None``: it holds them."""
        pairs = sorted(set(slots))
        params = {
            "id": materialization_id,
            "pools": [p for p, _ in pairs],
            "keys": [k for _, k in pairs],
            "queue": queue,
            "priority": priority,
            "wait": wait,
        }
        # One statement on an autocommit connection: its own transaction, one round trip (no
        # BEGIN/COMMIT of their own), committed asynchronously (set_config(..., true) in it).
        with self.db.session("take pool slots") as conn:
            row = conn.execute(Q("pool_acquire"), params).fetchone()
        return None if row is None else row["waits_for"]

    def set_limit(self, pool: str, limit: int | None, *, by: str) -> PoolState | None:
        """Set (``None``: clear) an operator's limit, and give newly free slots to waiters at once."""
        with self.db.transaction("set a pool limit") as conn:
            row = conn.execute(Q("pool_set_limit"), {"pool": pool, "limit": limit, "by": by}).fetchone()
            if row is None:
                return None
            conn.execute(Q("pool_wake_all"))
        return next((p for p in self.list() if p.pool == pool), None)

    def wake_all(self) -> int:
        """Wake waiters of every pool with free slots; how many were woken."""
        with self.db.transaction("wake pool waiters") as conn:
            row = conn.execute(Q("pool_wake_all")).fetchone()
        return int(row["woken"]) if row else 0

    def list(self) -> list[PoolState]:
        """Every pool with its limit, holders and waiters per key."""
        with self.db.session("list pools") as conn:
            rows = conn.execute(Q("pool_list")).fetchall()
        return [
            PoolState(
                pool=r["pool"],
                limit=r["pool_limit"],
                code_limit=r["code_limit"],
                limit_override=r["limit_override"],
                period_s=r["period_s"],
                set_by=r["set_by"],
                updated_at=r["updated_at"],
                by_key={
                    k: {"held": int(v["held"]), "waiting": int(v["waiting"])} for k, v in r["by_key"].items()
                },
            )
            for r in rows
        ]

    def waiting(self, run_id: str) -> dict[int, tuple[str, str]]:
        """The steps of a run waiting for a slot: materialization id → (pool, key)."""
        with self.db.session("list pool waiters") as conn:
            rows = conn.execute(Q("pool_waiting_steps"), {"run_id": pg.run_uuid(run_id)}).fetchall()
        return {r["materialization_id"]: (r["pool"], r["pool_key"]) for r in rows}
