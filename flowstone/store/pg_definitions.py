"""The definitions snapshot as the Postgres store offers it: publishing a runtime's definitions and
reading the last published ones. Composed into :class:`flowstone.store.postgres.PostgresStore` as
``store.snapshots``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowstone import snapshot
from flowstone.store import definitions, pg

__all__ = ["PostgresSnapshots", "Published"]


@dataclass(frozen=True)
class Published:
    """The last published definitions: asset specs in topological order, schedules and sensors."""

    assets: list[dict[str, Any]]
    automation: dict[str, Any]
    hash: str
    published_by: str | None
    updated_at: datetime


class PostgresSnapshots:
    """``flowstone_definitions`` and ``flowstone_definitions_state`` on a Database."""

    def __init__(self, db: pg.Database) -> None:
        self.db = db

    def publish(self, snap: snapshot.Snapshot, *, published_by: str, now: datetime | None = None) -> bool:
        """Make ``snap`` the published definitions unless it already is (one read when nothing
        changed); whether it wrote. Assets absent from it stay, marked not present."""
        with self.db.session("read published definitions") as conn:
            state = definitions.definitions_state_get(conn)
        if state is not None and state["hash"] == snap.hash:
            return False
        rows = [
            {
                "asset": spec["name"],
                "group_name": spec["group"],
                "description": spec["description"],
                "deps": [link["asset"] for link in [*spec["inputs"], *spec["deps"]]],
                "partitions": spec["partitions"],
                "queue": spec["queue"],
                "code_version": spec["code_version"],
                "io_manager": spec["io_manager"],
                "owners": spec["owners"],
                "tags": spec["tags"],
                "spec": spec,
                "position": position,
            }
            for position, spec in enumerate(snap.assets)
        ]
        with self.db.transaction("publish definitions") as conn:
            definitions.definitions_lock(conn)
            state = definitions.definitions_state_get(conn)
            if state is not None and state["hash"] == snap.hash:
                return False  # another process published the same set meanwhile
            if rows:
                definitions.definitions_upsert(conn, rows, snap.hash, now)
            definitions.definitions_retire(conn, [r["asset"] for r in rows], now)
            definitions.definitions_state_set(
                conn,
                definitions_hash=snap.hash,
                fmt=snapshot.FORMAT,
                assets=len(rows),
                automation=snap.automation,
                published_by=published_by,
                now=now,
            )
        return True

    def read(self) -> Published | None:
        """The last published definitions, or ``None`` when none were."""
        with self.db.session("read published definitions") as conn:
            state = definitions.definitions_state_get(conn)
            if state is None:
                return None
            assets = definitions.definitions_list(conn)
        return Published(
            assets=assets,
            automation=dict(state["automation"]),
            hash=state["hash"],
            published_by=state["published_by"],
            updated_at=state["updated_at"],
        )
