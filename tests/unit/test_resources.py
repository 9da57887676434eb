"""Resources: configuration merging (invariant I2) and the per-step setup/teardown scope."""

from __future__ import annotations

import logging
import threading
import time

import pydantic
import pytest

from flowstone import errors
from flowstone.resources import Resource, ResourceScope, merge_config


class Database(Resource):
    """A resource with defaults, a secret and an alias."""

    host: str = "localhost"
    port: int = 5432
    password: pydantic.SecretStr = pydantic.SecretStr("")
    schema_name: str = pydantic.Field(default="public", alias="schema")


class Recorder(Resource):
    """Records setup/teardown calls in the caller's list (SkipValidation keeps it, not a copy)."""

    name: str
    fail_setup: bool = False
    fail_teardown: bool = False
    calls: pydantic.SkipValidation[list[str]] = pydantic.Field(default_factory=list, exclude=True)

    def setup(self) -> object:
        self.calls.append(f"setup {self.name}")
        if self.fail_setup:
            raise ConnectionError(f"{self.name} is down")
        return f"client:{self.name}"

    def teardown(self, value: object) -> None:
        self.calls.append(f"teardown {value}")
        if self.fail_teardown:
            raise RuntimeError("teardown broke")


def _config(value: object) -> tuple[dict[str, object], set[str]]:
    assert isinstance(value, Database)
    return value.model_dump(), set(value.model_fields_set)


@pytest.mark.parametrize(
    "overrides",
    [None, {}, {"db": {}}, {"db": None}, {"db": {"port": None}}, {"db": {"port": None, "host": None}}],
)
def test_i2_absent_never_overrides_a_default(overrides: dict[str, object] | None) -> None:
    configured = Database(host="db.internal")
    with ResourceScope({"db": configured}, overrides) as scope:  # type: ignore[arg-type]
        value = scope.get({"db"})["db"]
    assert _config(value) == _config(configured)
    assert _config(value) == (
        {"host": "db.internal", "port": 5432, "password": pydantic.SecretStr(""), "schema_name": "public"},
        {"host"},
    )


def test_override_replaces_only_what_it_names() -> None:
    configured = Database(host="db.internal", password=pydantic.SecretStr("s3cret"))
    merged = merge_config(configured, {"port": 6543, "host": None}, name="db")
    assert merged.host == "db.internal"
    assert merged.port == 6543
    assert merged.password.get_secret_value() == "s3cret"
    assert merged.schema_name == "public"
    assert merged.model_fields_set == {"host", "password", "port"}  # defaults stay defaults
    assert configured.port == 5432  # the configured resource is not changed


def test_override_of_an_aliased_field() -> None:
    merged = merge_config(Database(schema="raw"), {"schema_name": "staging"}, name="db")
    assert merged.schema_name == "staging"
    assert merge_config(Database(schema="raw"), {"port": 1}).schema_name == "raw"


def test_unknown_setting_names_resource_and_key() -> None:
    with pytest.raises(errors.ResourceError, match=r"resource 'db' has no setting 'prot'") as info:
        merge_config(Database(), {"prot": 1}, name="db")
    assert info.value.retryable is False
    assert info.value.context["unknown"] == ["prot"]


def test_invalid_value_is_a_resource_error() -> None:
    with pytest.raises(errors.ResourceError, match="invalid override of resource 'db'"):
        merge_config(Database(), {"port": "not a port"}, name="db")


def test_override_must_be_a_mapping() -> None:
    with pytest.raises(errors.ResourceError, match="must be a mapping"):
        merge_config(Database(), ["port", 1], name="db")  # type: ignore[arg-type]


def test_plain_objects_pass_through_and_cannot_be_overridden() -> None:
    client = object()
    assert merge_config(client, None) is client
    assert merge_config(client, {}) is client
    assert merge_config(client, {"x": None}) is client
    with pytest.raises(errors.ResourceError, match="plain object, which has no settings"):
        merge_config(client, {"x": 1}, name="api")
    with ResourceScope({"api": client}) as scope:
        assert scope.get({"api"}) == {"api": client}


def test_resource_default_setup_returns_itself_and_forbids_extra() -> None:
    db = Database()
    with ResourceScope({"db": db}) as scope:
        assert scope.get({"db"})["db"] is db
    with pytest.raises(pydantic.ValidationError):
        Database(nope=1)  # type: ignore[call-arg]


def test_scope_sets_up_lazily_once_and_tears_down_in_reverse() -> None:
    calls: list[str] = []
    scope = ResourceScope(
        {"a": Recorder(name="a", calls=calls), "b": Recorder(name="b", calls=calls), "c": 3}
    )
    assert calls == []
    assert scope.get({"b"}, asset="x") == {"b": "client:b"}
    assert scope.get({"a", "b", "c"}, asset="y") == {"a": "client:a", "b": "client:b", "c": 3}
    assert calls == ["setup b", "setup a"]
    scope.close()
    assert calls == ["setup b", "setup a", "teardown client:a", "teardown client:b"]
    scope.close()  # idempotent
    assert len(calls) == 4
    with pytest.raises(errors.ResourceError, match="closed"):
        scope.get({"a"})


def test_overrides_apply_in_the_scope() -> None:
    calls: list[str] = []
    with ResourceScope({"r": Recorder(name="r", calls=calls)}, {"r": {"name": "other"}}) as scope:
        assert scope.get({"r"}) == {"r": "client:other"}
    assert calls == ["setup other", "teardown client:other"]


def test_setup_failure_names_resource_and_asset_and_is_retryable() -> None:
    calls: list[str] = []
    scope = ResourceScope(
        {"ok": Recorder(name="ok", calls=calls), "bad": Recorder(name="bad", fail_setup=True)}
    )
    with pytest.raises(errors.ResourceError) as info:
        scope.get({"ok", "bad"}, asset="events")
    error = info.value
    assert "resource 'bad'" in error.message
    assert "ConnectionError: bad is down" in error.message
    assert error.asset == "events"
    assert error.retryable is True
    assert isinstance(error.__cause__, ConnectionError)
    # an asset that does not need the broken resource is unaffected
    assert scope.get({"ok"}, asset="numbers") == {"ok": "client:ok"}
    scope.close()
    assert calls == ["setup ok", "teardown client:ok"]


def test_setup_failure_keeps_a_flowstone_errors_retryable() -> None:
    class Strict(Resource):
        def setup(self) -> object:
            raise errors.ConfigurationError("missing token")

    with (
        ResourceScope({"s": Strict()}) as scope,
        pytest.raises(errors.ResourceError, match="missing token") as info,
    ):
        scope.get({"s"})
    assert info.value.retryable is False


def test_failed_setup_is_tried_again() -> None:
    attempts: list[int] = []

    class Flaky(Resource):
        def setup(self) -> object:
            attempts.append(1)
            if len(attempts) == 1:
                raise TimeoutError("slow")
            return "up"

    with ResourceScope({"f": Flaky()}) as scope:
        with pytest.raises(errors.ResourceError):
            scope.get({"f"})
        assert scope.get({"f"}) == {"f": "up"}
    assert len(attempts) == 2


def test_unknown_resource_names() -> None:
    with ResourceScope({"db": Database()}) as scope:
        with pytest.raises(errors.ResourceError, match="'api' is not configured") as info:
            scope.get({"api"}, asset="events")
        assert info.value.asset == "events"
        assert info.value.retryable is False
    with pytest.raises(errors.ResourceError, match="overrides 'dbb', which is not a configured"):
        ResourceScope({"db": Database()}, {"dbb": {"port": 1}})


def test_bad_override_is_refused_when_the_scope_is_built() -> None:
    # Checked up front (nothing is set up): a run with a misspelt setting is refused when it is
    # submitted, instead of failing later on a worker.
    with pytest.raises(errors.ResourceError, match="no setting 'prot'"):
        ResourceScope({"db": Database()}, {"db": {"prot": 1}})


def test_teardown_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    scope = ResourceScope(
        {
            "a": Recorder(name="a", calls=calls),
            "b": Recorder(name="b", calls=calls, fail_teardown=True),
        }
    )
    scope.get({"a", "b"})
    with caplog.at_level(logging.ERROR, logger="flowstone.resources"):
        scope.close()
    assert calls[-2:] == ["teardown client:b", "teardown client:a"]
    assert "tearing down resource 'b' failed" in caplog.text


def test_concurrent_gets_set_up_once() -> None:
    counter: list[int] = []
    gate = threading.Barrier(8)

    class Slow(Resource):
        def setup(self) -> object:
            counter.append(1)
            time.sleep(0.01)  # widen the window a missing lock would let a second setup in
            return object()

    results: list[object] = []
    with ResourceScope({"s": Slow()}) as scope:

        def worker() -> None:
            gate.wait()
            results.append(scope.get({"s"})["s"])

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(counter) == 1
    assert len(results) == 8
    assert all(r is results[0] for r in results)
