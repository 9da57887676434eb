"""Test doubles shared by the integration tests (never a stand-in for the database)."""

from __future__ import annotations

from typing import Any


class RecordingJobs:
    """A job queue that records what it would defer (no Procrastinate): every asset on one queue."""

    def __init__(self) -> None:
        self.deferred: list[tuple[str, str]] = []

    def defer_steps(
        self, conn: Any, run_id: str, items: Any, *, schedule_in_s: float | None = None
    ) -> list[int]:
        self.deferred += list(items)
        return [1000 + i for i in range(len(items))]

    def defer_timeout(self, conn: Any, run_id: str, asset: str, partition_key: str, at: Any) -> int:
        raise AssertionError("no approvals here")

    def cancel_job(self, conn: Any, job_id: int) -> bool:
        raise AssertionError("no cancels here")

    def queue_of(self, asset: str) -> str:
        return "flowstone"
