"""Errors are structured exceptions (I16): fields, ``Result.unwrap``, JSON form, wrapping."""

from __future__ import annotations

import json
import math
import traceback
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

import flowstone as fs
from flowstone import errors


def _instance(cls: type[errors.FlowStoneError]) -> errors.FlowStoneError:
    if cls is errors.DefinitionError:
        return cls(["asset 'x': something is wrong"])
    return cls("something is wrong")


EXCEPTION_CLASSES = [
    getattr(errors, name)
    for name in errors.__all__
    if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name), BaseException)
]


def test_i16_errors_are_structured_exceptions():
    error = fs.InvalidPartitionError(
        "2024-12-31 is before the first partition",
        asset="events",
        partition="d:2024-12-31",
        run_id="0b0e7a43-0000-4000-8000-000000000000",
        context={"start": "2025-01-01"},
    )
    assert isinstance(error, fs.FlowStoneError)
    assert isinstance(error, Exception)
    assert (error.type, error.message, error.asset, error.partition) == (
        "InvalidPartitionError",
        "2024-12-31 is before the first partition",
        "events",
        "d:2024-12-31",
    )
    assert error.run_id == "0b0e7a43-0000-4000-8000-000000000000"
    assert error.retryable is False
    assert error.context == {"start": "2025-01-01"}
    text = str(error)
    assert text.startswith("2024-12-31 is before the first partition")  # the type is not repeated
    assert error.describe().startswith("InvalidPartitionError: 2024-12-31 is before the first partition")
    assert "asset=events" in text
    assert "partition=d:2024-12-31" in text
    assert "run_id=0b0e7a43-0000-4000-8000-000000000000" in text

    result: fs.Result[int] = fs.Result.err(error)
    assert not result.ok
    with pytest.raises(fs.InvalidPartitionError) as raised:
        result.unwrap()
    assert raised.value is error  # the same object, not a copy or a wrapper
    assert str(raised.value) == text


def test_result_success_unwraps_to_its_value():
    assert fs.Result.success(3).unwrap() == 3
    assert fs.Result.success(3).ok
    assert fs.Result.success(None).unwrap() is None  # None is a valid value of a success


def test_result_with_ok_false_and_no_error_still_raises_a_flowstone_error():
    with pytest.raises(fs.FlowStoneError, match="no error"):
        fs.Result(ok=False).unwrap()


def test_str_leaves_out_unknown_location_fields():
    assert str(fs.StoreError("connection lost")) == "connection lost"
    assert fs.UnknownAssetError("no such asset", asset="x").describe() == (
        "UnknownAssetError: no such asset (asset=x)"
    )


def test_a_traceback_names_the_error_type_once():
    error = fs.DefinitionError(["'sum' depends on 'numbrs'"])
    trace = "".join(traceback.format_exception(error))
    last = trace.rstrip().splitlines()[-2]
    assert last == "flowstone.errors.DefinitionError: 1 problem in the definitions:"
    assert "DefinitionError: DefinitionError" not in trace


def test_result_map_and_flat_map():
    doubled: fs.Result[int] = fs.Result.success(3).map(lambda v: v * 2)
    assert doubled.unwrap() == 6
    failure: fs.Result[int] = fs.Result.err(fs.StoreError("down"))
    mapped = failure.map(lambda v: v * 2)
    assert not mapped.ok
    assert mapped.error is failure.error  # the same error travels on

    def half(v: int) -> fs.Result[int]:
        if v % 2:
            return fs.Result.err(fs.ConfigurationError(f"{v} is odd"))
        return fs.Result.success(v // 2)

    assert fs.Result.success(8).flat_map(half).flat_map(half).unwrap() == 2
    odd = fs.Result.success(6).flat_map(half).flat_map(half)
    assert not odd.ok
    assert str(odd.error) == "3 is odd"
    assert failure.flat_map(half).error is failure.error


def test_retryable_defaults_per_class_and_can_be_overridden():
    assert fs.UnknownAssetError("x").retryable is False
    assert fs.StoreError("x").retryable is True
    assert fs.InvalidTransitionError("x").retryable is False  # a StoreError that retrying cannot fix
    assert fs.ExecutionError("x").retryable is True
    assert fs.OutputNotSerializableError("x").retryable is False
    assert fs.StoreError("x", retryable=False).retryable is False
    assert fs.UnknownAssetError("x", retryable=True).retryable is True


def test_to_dict_is_json_serialisable_with_odd_context_values():
    class Odd:
        def __repr__(self) -> str:
            return "<Odd>"

    error = fs.ResourceError(
        "cannot connect",
        asset="events",
        partition="d:2025-01-01",
        context={
            "when": datetime(2025, 1, 1, 12, 0, tzinfo=UTC),
            "day": date(2025, 1, 1),
            "amount": Decimal("1.50"),
            "id": uuid.UUID(int=1),
            "raw": b"\x00\xff",
            "tags": {"b", "a"},
            "pair": (1, "two"),
            "nested": {"deeper": [Odd(), {3: None}]},
            4: "an int key",
            ("t", 1): "a tuple key",
            "fine": [1, 2.5, True, None, "x"],
        },
    )
    as_dict = error.to_dict()
    text = json.dumps(as_dict)  # must not raise
    assert json.loads(text) == as_dict
    assert set(as_dict) == {"type", "message", "asset", "partition", "run_id", "retryable", "context"}
    assert as_dict["type"] == "ResourceError"
    assert as_dict["message"] == "cannot connect"
    assert (as_dict["asset"], as_dict["partition"], as_dict["run_id"]) == ("events", "d:2025-01-01", None)
    assert as_dict["retryable"] is False
    context = as_dict["context"]
    assert context["fine"] == [1, 2.5, True, None, "x"]
    assert context["day"] == repr(date(2025, 1, 1))
    assert context["amount"] == repr(Decimal("1.50"))
    assert context["raw"] == repr(b"\x00\xff")
    assert sorted(context["tags"]) == ["a", "b"]
    assert context["pair"] == [1, "two"]
    assert context["nested"] == {"deeper": ["<Odd>", {"3": None}]}
    assert context["4"] == "an int key"
    assert context["('t', 1)"] == "a tuple key"
    # the error's own context is left untouched
    assert error.context["day"] == date(2025, 1, 1)


def test_to_dict_is_strict_json_even_with_non_finite_floats():
    error = fs.ResourceError(
        "bad ratio",
        context={
            "ratio": float("nan"),
            "limit": float("inf"),
            "floor": float("-inf"),
            "fine": 2.5,
            "nested": [{"x": float("nan")}, (float("inf"),)],
        },
    )
    as_dict = json.loads(json.dumps(error.to_dict(), allow_nan=False))  # must not raise
    assert as_dict["context"] == {
        "ratio": "nan",
        "limit": "inf",
        "floor": "-inf",
        "fine": 2.5,
        "nested": [{"x": "nan"}, ["inf"]],
    }
    assert error.context["fine"] == 2.5
    assert math.isnan(error.context["ratio"])  # the error's own context is left untouched


def test_to_dict_replaces_nul_characters_with_visible_text():
    class Nul:
        def __repr__(self) -> str:
            return "<Nul \x00>"

    error = fs.ExecutionError(
        "bad byte \x00 here",
        asset="a\x00",
        partition="s:b\x00",
        run_id="r\x00",
        context={"text": "x\x00y", "key\x00": ["\x00", Nul()], "plain": "no nul"},
    )
    as_dict = error.to_dict()
    text = json.dumps(as_dict, allow_nan=False)
    assert "\\u0000" not in text  # json.dumps writes a NUL as \\u0000: there is none
    assert as_dict["message"] == "bad byte \\x00 here"
    assert (as_dict["asset"], as_dict["partition"], as_dict["run_id"]) == ("a\\x00", "s:b\\x00", "r\\x00")
    assert as_dict["context"] == {
        "text": "x\\x00y",
        "key\\x00": ["\\x00", "<Nul \\x00>"],
        "plain": "no nul",
    }
    assert error.message == "bad byte \x00 here"  # the exception itself keeps the original text


def test_execution_error_from_exception_keeps_type_message_traceback_and_cause():
    class UpstreamDownError(ConnectionError):
        pass

    def fetch() -> None:
        raise UpstreamDownError("api.example.com refused the connection")

    try:
        fetch()
    except UpstreamDownError as exc:
        original = exc
        error = fs.ExecutionError.from_exception(exc, asset="events", partition="d:2025-01-01", run_id="r1")

    assert isinstance(error, fs.ExecutionError)
    assert isinstance(error, fs.FlowStoneError)
    assert error.__cause__ is original
    assert error.message == "UpstreamDownError: api.example.com refused the connection"
    assert (error.asset, error.partition, error.run_id) == ("events", "d:2025-01-01", "r1")
    assert error.retryable is True
    qualname = f"{UpstreamDownError.__module__}.{UpstreamDownError.__qualname__}"
    assert error.context["exception_type"] == qualname
    assert qualname.endswith("<locals>.UpstreamDownError")
    trace = error.context["traceback"]
    assert trace.startswith("Traceback (most recent call last):")
    assert "in fetch" in trace
    assert 'raise UpstreamDownError("api.example.com refused the connection")' in trace
    assert trace.rstrip().endswith("UpstreamDownError: api.example.com refused the connection")
    stored = json.loads(json.dumps(error.to_dict()))
    assert stored["context"]["traceback"] == trace
    assert stored["type"] == "ExecutionError"
    with pytest.raises(fs.ExecutionError) as raised:
        fs.Result.err(error).unwrap()
    assert raised.value.__cause__ is original


def test_every_exported_exception_is_a_flowstone_error_with_a_bool_retryable():
    assert len(EXCEPTION_CLASSES) >= 20
    assert errors.Result not in EXCEPTION_CLASSES
    for cls in EXCEPTION_CLASSES:
        assert issubclass(cls, errors.FlowStoneError), cls
        assert isinstance(cls.default_retryable, bool), cls
        instance = _instance(cls)
        assert isinstance(instance.retryable, bool), cls
        assert instance.retryable is cls.default_retryable, cls
        assert instance.type == cls.__name__
        assert instance.describe().startswith(f"{cls.__name__}: ")
        json.dumps(instance.to_dict())
        assert getattr(fs, cls.__name__) is cls, f"{cls.__name__} is not re-exported by flowstone"


def test_definition_error_lists_every_problem():
    error = fs.DefinitionError(["asset 'a': bad", "asset 'b': worse"], asset="a")
    assert error.problems == ["asset 'a': bad", "asset 'b': worse"]
    assert error.message == "2 problems in the definitions:\n  - asset 'a': bad\n  - asset 'b': worse"
    assert error.asset == "a"
    assert fs.DefinitionError(["only one"]).message.startswith("1 problem in the definitions:")
