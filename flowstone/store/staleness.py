"""Staleness in SQL (``sql/queries/staleness.sql``): for the latest succeeded materialization of each
partition, its code version and the upstream assets whose newest data version differs from the one
it read (through ``flowstone_lineage``), without loading any output."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from flowstone.store import pg

__all__ = ["LatestGroup", "staleness_latest"]


@dataclass(frozen=True, slots=True)
class LatestGroup:
    """Latest succeeded materializations of partitions of one asset that share a code version and
    the same stale upstreams (usually none): the keys with their materialization ids."""

    asset: str
    code_version: str | None
    stale_upstreams: tuple[str, ...]
    """Upstream assets whose latest materialization has a data version other than the one read."""
    partition_keys: list[str]
    ids: list[int]


def staleness_latest(db: pg.Database, report: Sequence[str], upstream: Sequence[str]) -> list[LatestGroup]:
    """The latest materializations of the partitions of ``report`` that have one, grouped (keys in
    order); ``upstream``: the assets they read (their latest data versions are compared)."""
    params = {"report": list(report), "assets": sorted({*report, *upstream})}
    groups = []
    for r in db.all("compute staleness", "staleness_latest", params):
        keys, ids = r["partition_keys"], r["ids"]
        if any(
            a > b for a, b in zip(keys, itertools.islice(keys, 1, None), strict=False)
        ):  # usually in order
            pairs = sorted(zip(keys, ids, strict=True))
            keys, ids = [key for key, _ in pairs], [id_ for _, id_ in pairs]
        groups.append(
            LatestGroup(
                asset=r["asset"],
                code_version=r["code_version"],
                stale_upstreams=tuple(r["stale_upstreams"]),
                partition_keys=keys,
                ids=ids,
            )
        )
    return groups
