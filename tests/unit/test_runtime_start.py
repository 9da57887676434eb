"""A runtime starting during a database blip retries its start-up reads and writes; other errors
are not retried."""

from __future__ import annotations

import pytest

from flowstone import errors, startup


def test_start_up_rides_out_a_transient_database_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(startup.time, "sleep", lambda _s: None)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise errors.StoreError("terminating connection due to administrator command", retryable=True)
        return "ok"

    assert startup.through_blips("check the migrations", flaky, patience_s=3) == "ok"
    assert len(calls) == 3


def test_start_up_does_not_retry_a_permanent_error_nor_forever(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(startup.time, "sleep", lambda _s: None)
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise errors.StoreError("relation does not exist", retryable=False)

    with pytest.raises(errors.StoreError, match="does not exist"):
        startup.through_blips("check the migrations", broken, patience_s=3)
    assert len(calls) == 1

    def down() -> None:
        calls.append(1)
        raise errors.StoreError("connection refused", retryable=True)

    calls.clear()
    with pytest.raises(errors.StoreError, match="refused"):
        startup.through_blips("check the migrations", down, patience_s=0.65)
    assert len(calls) == 4  # after 0.1, 0.2 and 0.4 s: the next wait (0.8 s) passes the deadline
