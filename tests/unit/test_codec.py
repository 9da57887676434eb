"""The typed JSON value codec (invariant I4): exact round trips, clear refusals, no guessing."""

from __future__ import annotations

import contextlib
import enum
import json
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowstone import codec, errors

# ------------------------------------------------------------------------------------ strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.dates(),
    st.datetimes(),
    st.datetimes(timezones=st.timezones()),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))])),
    st.times(),
    st.times(timezones=st.timezones()),
    st.decimals(allow_nan=False),
    st.uuids(),
    st.binary(),
)

hashables = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(tuple), st.frozensets(inner, max_size=3)),
    max_leaves=6,
)

# Keys that look like the codec's own markers, to prove user dicts are escaped.
text_keys = st.one_of(st.text(max_size=5), st.sampled_from(["$fs", "v", "tz", "fold"]))


def _containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(text_keys, inner, max_size=4),
        st.dictionaries(hashables, inner, max_size=3),
        st.sets(hashables, max_size=3),
        st.frozensets(hashables, max_size=3),
    )


values = st.recursive(scalars, _containers, max_leaves=25)

codec_tags = ["date", "datetime", "time", "decimal", "uuid", "bytes", "tuple", "set", "frozenset"]
codec_tags += ["map", "dict", "model"]

json_trees = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["$fs", "v", "tz", "fold", "x"]), inner, max_size=3),
        st.fixed_dictionaries(
            {
                "$fs": st.sampled_from([*codec_tags, "nope"]),
                "v": inner,
            }
        ),
    ),
    max_leaves=10,
)


def same(a: object, b: object) -> bool:
    """Equal, and of the same types all the way down (dict order included)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict | list | tuple | set | frozenset):
        return _same_container(a, b)
    if isinstance(a, float):
        assert isinstance(b, float)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, datetime | time):
        assert isinstance(b, datetime | time)
        # fold only matters with a real time zone (a fixed offset or naive value ignores it)
        return (
            a == b
            and a.isoformat() == b.isoformat()
            and a.tzinfo == b.tzinfo
            and (not isinstance(a.tzinfo, ZoneInfo) or a.fold == b.fold)
        )
    return a == b


def _same_container(a: object, b: object) -> bool:
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(
            same(ka, kb) and same(a[ka], b[kb]) for ka, kb in zip(a, b, strict=True)
        )
    if isinstance(a, list | tuple):
        assert isinstance(b, list | tuple)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    assert isinstance(a, set | frozenset)
    assert isinstance(b, set | frozenset)
    return a == b and sorted(map(codec.dumps, a)) == sorted(map(codec.dumps, b))


# ------------------------------------------------------------------------------------ properties


@settings(max_examples=300)
@given(values)
def test_i4_codec_round_trips_exactly(value: object) -> None:
    text = codec.dumps(value)
    decoded = codec.loads(text)
    assert same(decoded, value)
    assert codec.dumps(decoded) == text  # canonical: re-encoding gives the same text
    assert same(codec.loads(text.encode("utf-8")), value)


@given(values)
def test_to_jsonable_gives_plain_json(value: object) -> None:
    tree = codec.to_jsonable(value)
    assert json.loads(json.dumps(tree, allow_nan=False)) == tree
    assert same(codec.from_jsonable(tree), value)


@given(json_trees)
def test_from_jsonable_of_arbitrary_json_decodes_or_refuses(tree: codec.JSON) -> None:
    with contextlib.suppress(errors.OutputDecodeError):
        codec.from_jsonable(tree)


@given(st.text(max_size=60))
def test_loads_of_arbitrary_text_decodes_or_refuses(text: str) -> None:
    with contextlib.suppress(errors.OutputDecodeError):
        codec.loads(text)


# ------------------------------------------------------------------------------- fixed vectors


def test_plain_json_encodes_as_itself() -> None:
    value = {"b": [1, "x", None, True, 1.5], "a": {"nested": []}}
    assert codec.to_jsonable(value) == value
    assert codec.dumps(value) == '{"b":[1,"x",null,true,1.5],"a":{"nested":[]}}'


def test_dumps_keeps_unicode_and_dict_order() -> None:
    assert codec.dumps({"z": "é€😀", "a": 1}) == '{"z":"é€😀","a":1}'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (date(2025, 1, 1), '{"$fs":"date","v":"2025-01-01"}'),
        (datetime(2025, 1, 1, 3), '{"$fs":"datetime","v":"2025-01-01T03:00:00"}'),  # noqa: DTZ001 - naive on purpose
        (datetime(2025, 1, 1, tzinfo=UTC), '{"$fs":"datetime","v":"2025-01-01T00:00:00+00:00"}'),
        (
            datetime(2025, 7, 1, 12, tzinfo=ZoneInfo("Europe/Berlin")),
            '{"$fs":"datetime","v":"2025-07-01T12:00:00+02:00","tz":"Europe/Berlin"}',
        ),
        (time(4, 5, 6, 7), '{"$fs":"time","v":"04:05:06.000007"}'),
        (Decimal("1.10"), '{"$fs":"decimal","v":"1.10"}'),
        (
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            '{"$fs":"uuid","v":"12345678-1234-5678-1234-567812345678"}',
        ),
        (b"\x00\xff", '{"$fs":"bytes","v":"AP8="}'),
        ((1, "a"), '{"$fs":"tuple","v":[1,"a"]}'),
        ({"b", "a"}, '{"$fs":"set","v":["a","b"]}'),
        (frozenset({2, 1}), '{"$fs":"frozenset","v":[1,2]}'),
        ({1: "a", "b": 2}, '{"$fs":"map","v":[[1,"a"],["b",2]]}'),
        ({"$fs": "date", "v": "x"}, '{"$fs":"dict","v":{"$fs":"date","v":"x"}}'),
    ],
)
def test_tagged_encodings(value: object, text: str) -> None:
    assert codec.dumps(value) == text
    assert same(codec.loads(text), value)


def test_a_user_dict_shaped_like_a_tag_stays_a_dict() -> None:
    value = {"$fs": "date", "v": "2025-01-01"}
    decoded = codec.loads(codec.dumps(value))
    assert decoded == value
    assert type(decoded) is dict


def test_time_zone_gap_and_fold_keep_the_wall_time() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    gap = datetime(2025, 3, 30, 2, 30, tzinfo=berlin)  # does not exist on the wall clock
    second = datetime(2025, 10, 26, 2, 30, tzinfo=berlin, fold=1)  # the repeated hour
    decoded = codec.loads(codec.dumps([gap, second]))
    assert isinstance(decoded, list)
    assert same(decoded, [gap, second])
    assert decoded[1].fold == 1
    assert decoded[1].utcoffset() == timedelta(hours=1)


def test_enum_and_subclasses_encode_as_their_value() -> None:
    class Color(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    assert codec.dumps([Color.RED, Level.HIGH, {Color.RED: 1}]) == '["red",3,{"red":1}]'
    assert codec.loads(codec.dumps(Color.RED), type_hint=Color) is Color.RED


class Event(pydantic.BaseModel, extra="forbid"):
    """A model with typed fields, an alias and a computed field."""

    name: str
    day: date
    amount: Decimal
    source: str = pydantic.Field(default="web", alias="src")

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str:
        return f"{self.name}@{self.day}"


def test_model_decodes_to_plain_json_without_a_type_hint() -> None:
    event = Event(name="a", day=date(2025, 1, 1), amount=Decimal("1.5"))
    text = codec.dumps(event)
    assert text == ('{"$fs":"model","v":{"name":"a","day":"2025-01-01","amount":"1.5","src":"web"}}')
    assert codec.loads(text) == {"name": "a", "day": "2025-01-01", "amount": "1.5", "src": "web"}


def test_model_comes_back_through_the_type_hint() -> None:
    events = [Event(name=str(i), day=date(2025, 1, i), amount=Decimal(i)) for i in range(1, 4)]
    decoded = codec.loads(codec.dumps({"rows": events}), type_hint=dict[str, list[Event]])
    assert decoded == {"rows": events}


def test_model_v_is_not_interpreted_as_tags() -> None:
    class Raw(pydantic.BaseModel):
        data: dict[str, str]

    raw = Raw(data={"$fs": "date", "v": "2025-01-01"})
    assert codec.loads(codec.dumps(raw)) == {"data": {"$fs": "date", "v": "2025-01-01"}}
    assert codec.loads(codec.dumps(raw), type_hint=Raw) == raw


def test_model_with_invalid_field_value_is_refused() -> None:
    event = Event(name="a", day=date(2025, 1, 1), amount=Decimal(1))
    event.name = object()  # type: ignore[assignment]  # no validate_assignment: slips through
    with pytest.raises(errors.OutputNotSerializableError, match=r"value\[0\]"):
        codec.dumps([event])


def test_type_hint_mismatch_is_an_output_decode_error() -> None:
    with pytest.raises(errors.OutputDecodeError, match="does not match the type") as info:
        codec.loads('[1, "x"]', type_hint=list[int])
    assert info.value.retryable is False
    assert info.value.context["type_hint"] == "list[int]"


def test_string_type_hint_is_refused_not_evaluated() -> None:
    with pytest.raises(errors.OutputDecodeError, match="unresolved string annotation"):
        codec.loads("[1]", type_hint="list[int]")


@pytest.mark.parametrize(
    ("value", "path", "what"),
    [
        ({"rows": [0, 1, 2, object()]}, 'value["rows"][3]', "builtins.object"),
        ([float("nan")], "value[0]", "not finite"),
        ({"x": (1, float("inf"))}, 'value["x"][1]', "not finite"),
        ({"s": "ok\ud800"}, 'value["s"]', "lone surrogate"),
        ({1: {2: bytearray(b"x")}}, "value[1][2]", "builtins.bytearray"),
        ({frozenset({1}): 1j}, "value[frozenset({1})]", "builtins.complex"),
    ],
)
def test_unsupported_values_name_type_and_path(value: object, path: str, what: str) -> None:
    with pytest.raises(errors.OutputNotSerializableError) as info:
        codec.dumps(value)
    assert path in info.value.message
    assert what in info.value.message
    assert info.value.context["path"] == path
    assert info.value.retryable is False


def test_circular_value_is_refused() -> None:
    loop: list[object] = [1]
    loop.append({"back": loop})
    with pytest.raises(errors.OutputNotSerializableError, match="circular"):
        codec.dumps(loop)


def test_shared_references_are_not_cycles() -> None:
    shared = [1, 2]
    assert codec.loads(codec.dumps([shared, shared])) == [[1, 2], [1, 2]]


def test_too_deep_or_too_big_is_refused() -> None:
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(errors.OutputNotSerializableError, match="nested too deeply"):
        codec.dumps(deep)
    with pytest.raises(errors.OutputDecodeError, match="nested too deeply"):
        codec.loads("[" * 100_000 + "]" * 100_000)
    with pytest.raises(errors.OutputNotSerializableError, match="cannot be written as JSON"):
        codec.dumps(10**5000)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[",
        "NaN",
        "[Infinity]",
        '{"$fs":"pickle","v":"gASV"}',
        '{"$fs":1,"v":1}',
        '{"$fs":"date"}',
        '{"$fs":"date","v":"2025-01-01","extra":1}',
        '{"$fs":"model","v":{},"class":"os.system"}',
        '{"$fs":"date","v":"20250101"}',
        '{"$fs":"date","v":"2025-02-30"}',
        '{"$fs":"datetime","v":"2025-01-01 00:00"}',
        '{"$fs":"datetime","v":"2025-01-01T00:00:00","tz":"../../etc/passwd"}',
        '{"$fs":"datetime","v":"2025-01-01T00:00:00","tz":"No/Such_Zone"}',
        '{"$fs":"datetime","v":"2025-01-01T00:00:00+05:00","tz":"UTC"}',
        '{"$fs":"datetime","v":"2025-01-01T00:00:00","fold":1}',
        '{"$fs":"datetime","v":"2025-01-01T00:00:00+00:00","tz":"UTC","fold":2}',
        '{"$fs":"time","v":25}',
        '{"$fs":"decimal","v":"1e2"}',
        '{"$fs":"decimal","v":"abc"}',
        '{"$fs":"uuid","v":"12345678123456781234567812345678"}',
        '{"$fs":"bytes","v":"not base64!"}',
        '{"$fs":"tuple","v":{}}',
        '{"$fs":"set","v":[[1]]}',
        '{"$fs":"map","v":[[1]]}',
        '{"$fs":"map","v":[[[1],2]]}',
        '{"$fs":"dict","v":[]}',
    ],
)
def test_malformed_input_is_an_output_decode_error(text: str) -> None:
    with pytest.raises(errors.OutputDecodeError):
        codec.loads(text)


def test_bytes_must_be_utf8() -> None:
    assert codec.loads('"é"'.encode()) == "é"
    with pytest.raises(errors.OutputDecodeError, match="not UTF-8"):
        codec.loads(b'"\xff"')


def test_from_jsonable_refuses_non_json_objects() -> None:
    with pytest.raises(errors.OutputDecodeError, match="not a JSON type"):
        codec.from_jsonable({"a": {1, 2}})  # type: ignore[dict-item]
    with pytest.raises(errors.OutputDecodeError, match="not allowed"):
        codec.from_jsonable([float("nan")])
