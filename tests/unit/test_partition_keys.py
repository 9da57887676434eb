"""Invariant I6: partition keys round-trip exactly, canonically and injectively."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from enum import Enum, IntEnum, StrEnum
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from flowstone import errors
from flowstone.partition_keys import MAX_KEY_BYTES, MAX_TUPLE_DEPTH, UNPARTITIONED, decode, encode

BERLIN = ZoneInfo("Europe/Berlin")
FIXED_ZONES: list[tzinfo] = [
    UTC,
    BERLIN,
    ZoneInfo("America/New_York"),
    ZoneInfo("Asia/Kolkata"),  # +05:30
    ZoneInfo("Australia/Lord_Howe"),  # 30-minute DST shift
    ZoneInfo("Pacific/Chatham"),  # +12:45 / +13:45
    ZoneInfo("Pacific/Kiritimati"),  # +14:00
    timezone(timedelta(hours=-3, minutes=-30)),
    timezone(timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)),  # extreme offset
]
# Two days away from datetime.min/max, so that every offset converts to UTC without overflow.


def naive(*fields: int, fold: int = 0) -> datetime:
    """A naive datetime: one of the value kinds under test."""
    return datetime(*fields, fold=fold)  # noqa: DTZ001 - naive on purpose


SAFE_MIN, SAFE_MAX = naive(1, 1, 3), naive(9999, 12, 29)

SPECIAL_TEXTS = [
    "",
    "|",
    ":",
    "a|b",
    "a:b",
    "s:x",
    "i:1",
    "T:[]",
    'T:["s:a"]',
    UNPARTITIONED,
    '"',
    "'",
    "\\",
    "\n",
    "\t",
    " ",
    "é",
    "日本",
    "🎉",
    "\u2028",
    "\ufeff",
]
texts = st.one_of(
    st.sampled_from(SPECIAL_TEXTS),
    # Full Unicode except what Postgres text cannot hold (tested separately below).
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00")),
)
ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.sampled_from([0, -1, 1, 2**63 - 1, -(2**63), 2**64, -(10**100), 10**4000]),
)
dates = st.dates()
naive_datetimes = st.datetimes(allow_imaginary=True)
aware_datetimes = st.datetimes(
    min_value=SAFE_MIN,
    max_value=SAFE_MAX,
    timezones=st.one_of(st.sampled_from(FIXED_ZONES), st.timezones()),
    allow_imaginary=True,
)
leaves = st.one_of(texts, ints, dates, naive_datetimes, aware_datetimes)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=8)

# Small domains, so that equal (and nearly equal) pairs are frequent in the injectivity test.
_instants = st.sampled_from(
    [datetime(2025, 10, 26, h, m, tzinfo=UTC) for h in range(3) for m in (0, 30)]
    + [datetime(2025, 3, 30, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)]
)
small_leaves = st.one_of(
    st.sampled_from(["", "a", "1", "a|b", "s:a", "i:1", "d:2025-01-01", "2025-01-01"]),
    st.integers(-2, 2),
    st.sampled_from([date(2025, 1, 1), date(2025, 1, 2)]),
    st.sampled_from([naive(2025, 1, 1), naive(2025, 1, 1, 1), naive(2025, 1, 1, fold=1)]),
    st.builds(lambda instant, zone: instant.astimezone(zone), _instants, st.sampled_from(FIXED_ZONES)),
)
small_values = st.recursive(small_leaves, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=4)


def same(a: Any, b: Any) -> bool:
    """Equal with the same types, recursively; aware datetimes compare by instant.

    Plain ``==`` is not enough for aware datetimes whose offset depends on ``fold`` (the repeated
    or skipped hour of a DST change): PEP 495 makes them unequal to every datetime in another zone,
    even to themselves converted to UTC.
    """
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is datetime and (a.utcoffset() is None) != (b.utcoffset() is None):
        return False
    if type(a) is datetime and a.utcoffset() is not None:
        return a.astimezone(UTC) == b.astimezone(UTC)
    return bool(a == b)


def fold_dependent(value: Any) -> bool:
    """Whether ``value`` contains an aware datetime whose UTC offset depends on ``fold``."""
    if type(value) is tuple:
        return any(fold_dependent(item) for item in value)
    if type(value) is datetime and value.tzinfo is not None:
        return value.utcoffset() != value.replace(fold=1 - value.fold).utcoffset()
    return False


def test_i6_partition_keys_round_trip_exactly() -> None:
    """I6, exhaustively by property: see the hypothesis tests below; this one pins the vectors."""
    vectors: list[tuple[Any, str]] = [
        (None, "__unpartitioned__"),
        ("a|b", "s:a|b"),
        ("", "s:"),
        ("x:y", "s:x:y"),
        (0, "i:0"),
        (-5, "i:-5"),
        (10**30, "i:1000000000000000000000000000000"),
        (date(2025, 1, 1), "d:2025-01-01"),
        (date(1, 1, 1), "d:0001-01-01"),
        (datetime(2025, 1, 1, tzinfo=UTC), "t:2025-01-01T00:00:00+00:00"),
        (datetime(2025, 1, 1, 1, tzinfo=BERLIN), "t:2025-01-01T00:00:00+00:00"),
        (datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=UTC), "t:2025-01-01T00:00:00.000001+00:00"),
        (naive(2025, 1, 1), "n:2025-01-01T00:00:00"),
        (naive(2025, 1, 1, 12, 30, 15, 250000), "n:2025-01-01T12:30:15.250000"),
        ((), "T:[]"),
        (("a|b", "c"), 'T:["s:a|b","s:c"]'),
        (("a", 1), 'T:["s:a","i:1"]'),
        ((1, ("x", date(2025, 1, 1)), ()), 'T:["i:1","T:[\\"s:x\\",\\"d:2025-01-01\\"]","T:[]"]'),
        (("日本", 'q"'), 'T:["s:日本","s:q\\""]'),
        (((),), 'T:["T:[]"]'),
    ]
    for value, key in vectors:
        assert encode(value) == key
        decoded = decode(key)
        assert same(decoded, value)
        assert decoded == value


def test_pipe_in_a_string_is_never_read_as_a_tuple() -> None:
    """The original FlowStone bug: tuples were joined with "|", so "a|b" came back as a tuple."""
    assert decode(encode("a|b")) == "a|b"
    assert type(decode(encode("a|b"))) is str
    assert decode(encode(("a|b", "c"))) == ("a|b", "c")
    assert encode("a|b") != encode(("a", "b"))
    assert decode(encode(("a", ("b|c", ("d",))))) == ("a", ("b|c", ("d",)))


def test_unpartitioned_sentinel_is_distinct_from_every_string() -> None:
    assert encode(None) == UNPARTITIONED
    assert decode(UNPARTITIONED) is None
    assert encode(UNPARTITIONED) == "s:" + UNPARTITIONED
    assert decode(encode(UNPARTITIONED)) == UNPARTITIONED


def test_same_instant_in_different_zones_encodes_the_same() -> None:
    instant = datetime(2025, 6, 1, 12, tzinfo=UTC)
    keys = {encode(instant.astimezone(zone)) for zone in FIXED_ZONES}
    assert keys == {"t:2025-06-01T12:00:00+00:00"}


def test_repeated_autumn_hour_gives_two_keys() -> None:
    # 02:30 happens twice in Berlin on 2025-10-26; fold tells them apart, and so must the key.
    first = datetime(2025, 10, 26, 2, 30, tzinfo=BERLIN)
    second = datetime(2025, 10, 26, 2, 30, tzinfo=BERLIN, fold=1)
    assert encode(first) == "t:2025-10-26T00:30:00+00:00"
    assert encode(second) == "t:2025-10-26T01:30:00+00:00"


def test_decoded_aware_datetime_is_in_utc() -> None:
    decoded = decode(encode(datetime(2025, 1, 1, 9, tzinfo=ZoneInfo("Asia/Tokyo"))))
    assert isinstance(decoded, datetime)
    assert decoded.tzinfo is UTC
    assert decoded == datetime(2025, 1, 1, tzinfo=UTC)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
@example(datetime(2025, 10, 26, 2, 30, tzinfo=BERLIN, fold=1))
@example(datetime(2025, 3, 30, 2, 30, tzinfo=BERLIN))  # does not exist: clocks skip 02:00-03:00
@example(("a|b", ("c|d", ""), -(10**40), date(2025, 1, 1)))
def test_round_trip_property(value: Any) -> None:
    """decode(encode(v)) == v with the same types, recursively, and the key is stable (for every
    value whose key fits the index limit; longer ones are refused, see fits())."""
    assume(fits(value))
    key = encode(value)
    decoded = decode(key)
    assert same(decoded, value)
    if not fold_dependent(value):
        assert decoded == value
    assert encode(decoded) == key


@settings(max_examples=300, deadline=None)
@given(small_values, small_values)
def test_injectivity_property(a: Any, b: Any) -> None:
    """encode(a) == encode(b) exactly when a and b are equal with the same types."""
    assert (encode(a) == encode(b)) == same(a, b)
    if not fold_dependent(a) and not fold_dependent(b):
        assert same(a, b) == (a == b and types_match(a, b))


def types_match(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(types_match(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is datetime:
        return (a.utcoffset() is None) == (b.utcoffset() is None)
    return True


@settings(max_examples=150, deadline=None)
@given(values, values)
def test_injectivity_on_arbitrary_values(a: Any, b: Any) -> None:
    assume(fits(a) and fits(b))
    assert (encode(a) == encode(b)) == same(a, b)


def fits(value: Any) -> bool:
    """Whether the key of ``value`` fits MAX_KEY_BYTES (longer keys are refused by design: they do
    not fit a database index entry); any other refusal is a failure of the test."""
    try:
        encode(value)
    except errors.InvalidPartitionError as exc:
        if "a partition key is at most" in exc.message:
            return False
        raise
    return True


def test_keys_beyond_the_index_limit_are_refused_in_both_directions() -> None:
    fitting = "x" * (MAX_KEY_BYTES - 2)
    assert decode(encode(fitting)) == fitting
    for value in ("x" * (MAX_KEY_BYTES - 1), "é" * MAX_KEY_BYTES, ("x" * MAX_KEY_BYTES,)):
        with pytest.raises(
            errors.InvalidPartitionError, match="bytes long; a partition key is at most 2000 bytes"
        ):
            encode(value)
    with pytest.raises(errors.InvalidPartitionError) as info:
        decode("s:" + "x" * (MAX_KEY_BYTES - 1))
    assert info.value.message.startswith("invalid partition key ")
    assert ": it is 2001 bytes long; a partition key is at most 2000 bytes" in info.value.message


def _mutations(key: str) -> st.SearchStrategy[str]:
    """Keys close to a valid one: a character inserted, deleted or replaced."""
    position = st.integers(0, len(key))
    char = st.sampled_from(list(' "\\[],:0+-Tsidtn|x\n'))
    return st.one_of(
        st.builds(lambda i, c: key[:i] + c + key[i:], position, char),
        st.builds(lambda i: key[:i] + key[i + 1 :], position),
        st.builds(lambda i, c: key[:i] + c + key[i + 1 :], position, char),
    )


near_keys = values.filter(fits).map(encode).flatmap(_mutations)
tagged_texts = st.builds(
    lambda tag, body: tag + body,
    st.sampled_from(["s:", "i:", "d:", "t:", "n:", "T:", "T:[", "x:", "", "S:", "i", "__"]),
    st.one_of(st.text(max_size=30), st.from_regex(r"-?[0-9+_ ]{0,6}", fullmatch=True)),
)


@settings(max_examples=250, deadline=None)
@given(st.one_of(st.text(), near_keys, tagged_texts))
def test_decode_never_guesses(text: str) -> None:
    """Any text either decodes to v with encode(v) == text, or raises InvalidPartitionError."""
    outcome = _decode_or_error(text)
    if isinstance(outcome, errors.InvalidPartitionError):
        assert outcome.message.startswith("invalid partition key")
    else:
        assert encode(outcome) == text


def _decode_or_error(text: str) -> Any:
    try:
        return decode(text)
    except errors.InvalidPartitionError as exc:
        return exc


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "unknown tag"),
        ("s", "unknown tag"),
        ("x:1", "unknown tag"),
        ("S:a", "unknown tag"),
        ("__UNPARTITIONED__", "unknown tag"),
        (" __unpartitioned__", "unknown tag"),
        ("i:", "canonical decimal"),
        ("i:01", "canonical decimal"),
        ("i:+1", "canonical decimal"),
        ("i: 1", "canonical decimal"),
        ("i:1 ", "canonical decimal"),
        ("i:1_000", "canonical decimal"),
        ("i:\u0661", "canonical decimal"),  # ARABIC-INDIC DIGIT ONE: int() would accept it
        ("i:1.0", "canonical decimal"),
        ("i:-0", "canonical form"),
        pytest.param("i:" + "9" * 5000, "too many digits", id="i:9999...(5000 digits)"),
        ("d:2025-1-1", "date like"),
        ("d:2025-02-30", "date like"),
        ("d:20250101", "canonical form"),
        ("d:2025-W01-1", "canonical form"),
        ("d:2025-01-01T00:00:00", "date like"),
        ("t:2025-01-01T00:00:00", "'t:' is for aware"),
        ("t:2025-01-01T01:00:00+01:00", "canonical form"),
        ("t:2025-01-01T00:00:00Z", "canonical form"),
        ("t:2025-01-01 00:00:00+00:00", "canonical form"),
        ("t:2025-01-01T00:00:00.000000+00:00", "canonical form"),
        ("t:2025-01-01T00:00+00:00", "canonical form"),
        ("t:nope", "ISO datetime"),
        ("t:0001-01-01T00:00:00+05:00", "out of range"),
        ("n:2025-01-01T00:00:00+00:00", "'n:' is for naive"),
        ("n:2025-01-01", "canonical form"),
        ("n:2025-01-01T00:00", "canonical form"),
        ("n:2025-01-01 00:00:00", "canonical form"),
        ("T:", "JSON array"),
        ("T:[", "JSON array"),
        ("T:{}", "not dict"),
        ("T:null", "not NoneType"),
        ("T:NaN", "not float"),
        ("T:[1]", "not a string"),
        ("T:[null]", "not a string"),
        ('T:["__unpartitioned__"]', "not a value"),
        ('T:["s:a"] ', "canonical form"),
        ('T: ["s:a"]', "canonical form"),
        ('T:["s:a", "s:b"]', "canonical form"),
        ('T:["s:\\u0061"]', "canonical form"),
        ('T:["\\u0073:a"]', "canonical form"),
        ('T:["i:01"]', "tuple element 0"),
        ('T:["s:a","T:[\\"i:+1\\"]"]', "tuple element 1"),
        ('T:["s:\\u0000"]', "NUL"),
        ('T:["s:\\ud800"]', "surrogate"),
        ("s:a\x00b", "NUL"),
        ("s:\ud800", "surrogate"),
        pytest.param("T:" + "[" * 100_000, "JSON array", id="T:[[[[...(100000)"),
    ],
)
def test_decode_refuses_non_canonical_keys(key: str, reason: str) -> None:
    with pytest.raises(errors.InvalidPartitionError, match="invalid partition key") as info:
        decode(key)
    assert reason in info.value.message
    assert info.value.retryable is False


def test_decode_refuses_too_deep_tuples_without_crashing() -> None:
    key = "T:[]"
    for _ in range(MAX_TUPLE_DEPTH + 5):
        key = "T:" + json.dumps([key], separators=(",", ":"))
    with pytest.raises(errors.InvalidPartitionError, match="levels deep"):
        decode(key)


def test_decode_refuses_non_str() -> None:
    with pytest.raises(errors.InvalidPartitionError, match="must be a str"):
        decode(b"s:a")  # type: ignore[arg-type]


class Color(Enum):
    RED = "red"


class Region(StrEnum):
    EU = "eu"


class Level(IntEnum):
    LOW = 1


class Pair(NamedTuple):
    a: int
    b: int


class MyDate(date):
    pass


def _nested(levels: int) -> tuple[Any, ...]:
    """``((((),),),)`` with ``levels`` tuple levels."""
    value: tuple[Any, ...] = ()
    for _ in range(levels - 1):
        value = (value,)
    return value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "bool"),
        (False, "bool"),
        ((1, True), r"value\[1\] is a bool"),
        (1.0, "float"),
        (float("nan"), "float"),
        ((None,), "None means 'unpartitioned'"),
        ([1, 2], "is a list"),
        (b"a", "is a bytes"),
        (object(), "is a object"),
        (Color.RED, "is a Color"),
        (Region.EU, "subclass of str"),
        (Level.LOW, "subclass of int"),
        (Pair(1, 2), "subclass of tuple"),
        (MyDate(2025, 1, 1), "subclass of date"),
        ("a\x00b", "NUL"),
        (("ok", "\ud800"), r"value\[1\] contains a lone surrogate"),
        pytest.param(10**5000, "too large", id="10**5000"),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), "out of the datetime range"),
        (datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))), "out of the datetime range"),
        (_nested(MAX_TUPLE_DEPTH + 1), "levels deep"),
    ],
)
def test_encode_refuses_non_values(value: Any, reason: str) -> None:
    with pytest.raises(errors.InvalidPartitionError, match=reason) as info:
        encode(value)
    assert info.value.message.startswith("cannot encode partition value")


def test_deepest_allowed_tuple_round_trips() -> None:
    value = _nested(MAX_TUPLE_DEPTH)
    assert decode(encode(value)) == value


class _NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


def test_encode_refuses_tzinfo_without_offset() -> None:
    with pytest.raises(errors.InvalidPartitionError, match="neither naive nor aware"):
        encode(datetime(2025, 1, 1, tzinfo=_NoOffset()))
