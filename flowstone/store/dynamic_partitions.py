"""``flowstone_dynamic_partitions`` (``sql/queries/dynamic_partitions.sql``): the keys of dynamic
partitions definitions; composed into the Postgres store as ``store.partitions``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from flowstone.store import pg
from flowstone.store.pg import Conn, Q

__all__ = ["PostgresDynamicPartitions"]


class PostgresDynamicPartitions:
    """Adding, removing and listing dynamic partition keys (encoded keys) on a Database."""

    def __init__(self, db: pg.Database) -> None:
        self.db = db

    def add(
        self,
        definition: str,
        keys: Sequence[str],
        *,
        actor: str | None = None,
        now: datetime | None = None,
        conn: Conn | None = None,
    ) -> int:
        """Add encoded keys (existing ones are kept); the number added. With ``conn``: in the
        caller's transaction (a savepoint)."""
        params = {"definition": definition, "keys": list(keys), "actor": actor, "now": now}
        with self.db.transaction("add dynamic partitions", conn) as tx:
            return tx.execute(Q("dynamic_partitions_add"), params).rowcount

    def remove(self, definition: str, keys: Sequence[str]) -> int:
        """Remove encoded keys; the number removed (their materializations stay)."""
        with self.db.transaction("remove dynamic partitions") as tx:
            cursor = tx.execute(
                Q("dynamic_partitions_remove"), {"definition": definition, "keys": list(keys)}
            )
            return cursor.rowcount

    def list(self, definition: str) -> list[str]:
        """The encoded keys in the order they were added."""
        rows = self.db.all("list dynamic partitions", "dynamic_partitions_list", {"definition": definition})
        return [r["partition_key"] for r in rows]

    def contains(self, definition: str, key: str) -> bool:
        """Whether ``definition`` has the encoded ``key``."""
        row = self.db.one(
            "read dynamic partitions", "dynamic_partitions_contains", {"definition": definition, "key": key}
        )
        return bool(row and row["found"])
