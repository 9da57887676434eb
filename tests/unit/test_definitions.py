"""@asset, AssetDef, RetryPolicy and Definitions: declaration rules and validation messages."""

from __future__ import annotations

import builtins
import importlib
import sys
from datetime import date
from types import MappingProxyType
from typing import Annotated

import pydantic
import pytest

from flowstone import errors
from flowstone.context import AssetContext
from flowstone.definitions import AssetDef, AssetInput, Definitions, RetryPolicy, asset
from flowstone.io import MemoryIOManager
from flowstone.partitions import (
    AllPartitions,
    DailyPartitions,
    IdentityMapping,
    StaticPartitions,
    TimeWindowOffset,
)
from flowstone.testing import build_asset_context

DAILY = DailyPartitions(start="2025-01-01")


@asset
def numbers() -> list[int]:
    """The first numbers."""
    return [1, 2, 3]


@asset
def total(numbers: list[int]) -> int:
    return sum(numbers)


def _problems(excinfo: pytest.ExceptionInfo[errors.DefinitionError]) -> list[str]:
    return excinfo.value.problems


# -- the decorator ---------------------------------------------------------------------------------


def test_bare_decorator_reads_inputs_from_parameter_names():
    assert isinstance(total, AssetDef)
    assert total.name == "total"
    assert total.inputs == (AssetInput("numbers", "numbers", IdentityMapping(), list[int]),)
    assert total.upstream_names == ("numbers",)
    assert total.deps == ()
    assert total.return_type is int
    assert total.context_param is None
    assert total.description is None
    assert numbers.description == "The first numbers."
    assert total.io_manager == "default"
    assert total.resources == frozenset()
    assert total.retry == RetryPolicy()
    assert total.partitions is None
    assert repr(total) == "<AssetDef 'total'>"


def test_calling_an_asset_calls_the_function():
    assert numbers() == [1, 2, 3]
    assert total([4, 5]) == 9
    assert total(numbers=[1]) == 1


def test_decorator_with_options_and_function_call_forms():
    def source() -> str:
        return "x"

    called = asset(source, name="renamed", description="given", code_version="7")
    assert called.name == "renamed"
    assert called.description == "given"
    assert called.code_version == "7"

    @asset()
    def empty_parens() -> None:
        pass

    assert empty_parens.name == "empty_parens"

    @asset(
        name="events",
        deps=["numbers", total, "numbers"],
        partitions=DAILY,
        io_manager="warehouse",
        resources={"api", "db"},
        retry=RetryPolicy(max_attempts=3),
        queue="etl_2",
        metadata={"owner": "data"},
        tags={"team": "core"},
    )
    def _events(context: AssetContext, total: int) -> list[dict[str, int]]:
        return [{"total": total, "rows": len(context.resources)}]

    assert _events.name == "events"
    assert _events.deps == ("numbers",)  # "total" is already an input; duplicates are dropped
    assert _events.upstream_names == ("total", "numbers")
    assert _events.context_param == "context"
    assert [i.name for i in _events.inputs] == ["total"]
    assert _events.partitions == DAILY
    assert _events.io_manager == "warehouse"
    assert _events.resources == frozenset({"api", "db"})
    assert _events.retry.max_attempts == 3
    assert _events.queue == "etl_2"
    assert _events.metadata == {"owner": "data"}
    assert _events.tags == {"team": "core"}
    assert isinstance(_events.metadata, MappingProxyType)


def test_single_strings_are_one_name_not_characters():
    @asset(deps="numbers", resources="api")
    def one() -> None:
        pass

    assert one.deps == ("numbers",)
    assert one.resources == frozenset({"api"})


def test_context_is_detected_by_name_or_annotation():
    class MyContext(AssetContext):
        pass

    def by_name(context, numbers):
        return numbers

    def by_annotation(ctx: AssetContext, numbers: list[int]) -> None:
        pass

    def by_annotated(ctx: Annotated[AssetContext, "meta"], numbers: list[int]) -> None:
        pass

    def by_subclass(sub_ctx, numbers):
        pass

    # A local class cannot be resolved from a string annotation: set the object itself.
    by_subclass.__annotations__ = {"sub_ctx": MyContext}

    for fn, param in [
        (by_name, "context"),
        (by_annotation, "ctx"),
        (by_annotated, "ctx"),
        (by_subclass, "sub_ctx"),
    ]:
        defined = asset(fn)
        assert defined.context_param == param
        assert [i.asset for i in defined.inputs] == ["numbers"]
    assert asset(by_annotated).inputs[0].type_hint == list[int]
    assert asset(by_name).inputs[0].type_hint is None


def test_an_asset_with_context_can_be_unit_tested_directly():
    @asset(resources={"factor"})
    def scaled(context: AssetContext, numbers: list[int]) -> list[int]:
        factor = context.resources["factor"]
        assert isinstance(factor, int)
        context.add_metadata(rows=len(numbers))
        return [n * factor for n in numbers]

    ctx = build_asset_context("scaled", resources={"factor": 10})
    assert scaled(ctx, [1, 2]) == [10, 20]
    assert ctx.metadata == {"rows": 2}


def test_parameter_rules_report_every_problem_at_once():
    def bad(a: int, /, context: AssetContext, *args: int, ctx: AssetContext, **kwargs: int) -> None:
        pass

    with pytest.raises(errors.DefinitionError) as info:
        asset(bad)
    assert _problems(info) == [
        "asset 'bad': parameter 'a' is positional-only; assets are called with keyword "
        "arguments, remove the '/'",
        "asset 'bad' takes *args; every parameter must be named after the asset it reads (or be the context)",
        "asset 'bad' takes **kwargs; every parameter must be named after the asset it reads "
        "(or be the context)",
        "asset 'bad' has 2 context parameters ('context', 'ctx'); keep one",
    ]
    assert info.value.asset == "bad"


def test_invalid_asset_names():
    with pytest.raises(errors.DefinitionError) as info:
        asset(lambda: 1)
    assert _problems(info) == [
        "asset name '<lambda>' is not valid: use letters, digits and '_', starting with a "
        "letter or '_', at most 128 characters; pass name=..."
    ]
    for name in ["1abc", "a-b", "", "x" * 129, "a\n", "ünï"]:
        with pytest.raises(errors.DefinitionError) as info:
            asset(numbers.fn, name=name)
        assert _problems(info) == [
            f"asset name {name!r} is not valid: use letters, digits and '_', starting with a "
            "letter or '_', at most 128 characters"
        ]
    assert asset(numbers.fn, name="x" * 128).name == "x" * 128


def test_only_plain_functions_are_assets():
    async def fetch() -> int:
        return 1

    with pytest.raises(errors.DefinitionError) as info:
        asset(fetch)
    assert _problems(info) == ["asset 'fetch' is an async function; assets are plain functions"]
    with pytest.raises(errors.DefinitionError) as info:
        asset(numbers)
    assert _problems(info) == ["'numbers' is already an asset; apply @asset once"]
    with pytest.raises(errors.DefinitionError) as info:
        asset(len)
    assert _problems(info) == [
        "@asset decorates a function, not builtin_function_or_method (<built-in function len>)"
    ]


def test_unresolvable_annotations_are_a_clear_definition_error():
    def reads(numbers: Missing) -> None:  # noqa: F821
        pass

    with pytest.raises(errors.DefinitionError) as info:
        asset(reads)
    assert _problems(info) == [
        "asset 'reads': cannot resolve the annotations of "
        "test_unresolvable_annotations_are_a_clear_definition_error.<locals>.reads "
        "(NameError: name 'Missing' is not defined); FlowStone uses them at run time, so "
        "import the types at module level (not only under TYPE_CHECKING) or drop the annotation"
    ]


@pytest.mark.parametrize(
    "queue", ["Bad", "bad-queue", "1q", "", "a" * 41, "q;drop", "é", "q\n", "queue name"]
)
def test_queue_names_are_allow_listed(queue):
    with pytest.raises(errors.InvalidIdentifierError) as info:
        asset(numbers.fn, name="n", queue=queue)
    assert info.value.message == (
        f"queue name {queue!r} of asset 'n' is not allowed: use lowercase letters, digits and "
        "'_', starting with a letter or '_', at most 40 bytes (Procrastinate builds a NOTIFY "
        "channel name from it)"
    )
    assert info.value.asset == "n"


def test_queue_name_limits_that_pass():
    assert asset(numbers.fn, name="n", queue="a" * 40).queue == "a" * 40
    assert asset(numbers.fn, name="n", queue="_q_1").queue == "_q_1"


def test_option_types_are_checked_together():
    with pytest.raises(errors.DefinitionError) as info:
        asset(
            total.fn,
            deps=[3],
            partitions=["a"],
            partition_mapping={"numbrs": AllPartitions(), "numbers": "all"},
            io_manager="",
            resources=[1],
            retry=3,
            code_version=1,
            tags={"team": 1},
            metadata=[1],
        )
    assert _problems(info) == [
        "asset 'total': deps holds int 3; give asset names or assets",
        "asset 'total': partition_mapping names 'numbrs', which is not one of its inputs or deps "
        "(it reads 'numbers'); did you mean 'numbers'?",
        "asset 'total': partition_mapping['numbers'] is str, not a PartitionMapping such as "
        "AllPartitions() or TimeWindowOffset(-1)",
        "asset 'total': partitions is list, not a PartitionsDefinition such as "
        "DailyPartitions(start=...) or StaticPartitions([...])",
        "asset 'total': io_manager must be a non-empty key, not ''",
        "asset 'total': resources are names (strings), not 1",
        "asset 'total': retry is int, not a RetryPolicy(max_attempts=...)",
        "asset 'total': code_version must be a string, not int",
        "asset 'total': metadata must be a mapping, not list",
        "asset 'total': tags map strings to strings; 'team' do not",
    ]


def test_partition_mapping_applies_to_inputs_and_deps():
    @asset(
        partitions=DAILY,
        deps=["clock"],
        partition_mapping={"numbers": AllPartitions(), "clock": TimeWindowOffset(-1)},
    )
    def mapped(numbers: dict[date, list[int]]) -> None:
        pass

    assert mapped.inputs[0].mapping == AllPartitions()
    assert mapped.mapping_for("numbers") == AllPartitions()
    assert mapped.mapping_for("clock") == TimeWindowOffset(-1)
    assert total.mapping_for("numbers") == IdentityMapping()


# -- RetryPolicy -----------------------------------------------------------------------------------


def test_retry_policy_delays_grow_exponentially_and_are_capped():
    policy = RetryPolicy(max_attempts=5, backoff_s=2, max_backoff_s=10, jitter=False)
    assert [policy.delay_s(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]
    assert policy.delay_s(10**9) == 10  # no OverflowError
    assert RetryPolicy(backoff_s=0, jitter=False).delay_s(3) == 0


def test_retry_policy_jitter_draws_from_the_upper_half():
    policy = RetryPolicy(backoff_s=4)
    assert policy.delay_s(1, rand=lambda: 0.0) == 2.0
    assert policy.delay_s(1, rand=lambda: 0.5) == 3.0
    assert 0 < policy.delay_s(2) <= 8
    with pytest.raises(ValueError, match="attempt counts from 1, not 0"):
        policy.delay_s(0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": True},
        {"max_attempts": "3"},
        {"backoff_s": -1},
        {"max_backoff_s": float("inf")},
        {"jitter": "yes"},
        {"retries": 3},
    ],
)
def test_retry_policy_refuses_bad_settings(kwargs):
    with pytest.raises(pydantic.ValidationError):
        RetryPolicy(**kwargs)


def test_retry_policy_is_frozen_and_comparable():
    policy = RetryPolicy(max_attempts=2)
    assert policy == RetryPolicy(max_attempts=2)
    assert hash(policy) == hash(RetryPolicy(max_attempts=2))
    with pytest.raises(pydantic.ValidationError):
        policy.max_attempts = 3


# -- Definitions -----------------------------------------------------------------------------------


def test_definitions_orders_and_looks_up_assets():
    @asset(deps=["total"])
    def alert() -> None:
        pass

    defs = Definitions(assets=[alert, total, numbers])
    assert list(defs) == ["numbers", "total", "alert"]
    assert list(defs.assets) == ["numbers", "total", "alert"]
    assert defs.get("total") is total
    assert "total" in defs
    assert "nope" not in defs
    assert 1 not in defs
    assert len(defs) == 3
    assert defs.graph.select("+alert") == ["numbers", "total", "alert"]
    assert defs.resources == {}
    assert defs.io_managers == {}
    assert defs.schedules == ()
    assert defs.sensors == ()
    assert repr(defs) == "<Definitions: 3 assets>"
    with pytest.raises(TypeError):
        defs.assets["x"] = numbers


def test_the_same_asset_object_twice_is_not_a_duplicate():
    assert list(Definitions([numbers, numbers, total])) == ["numbers", "total"]


def test_unknown_dependency_message_suggests_the_closest_name():
    @asset(name="sum")
    def sum_(numbrs: list[int]) -> int:
        return sum(numbrs)

    with pytest.raises(errors.DefinitionError) as info:
        Definitions([numbers, sum_])
    assert _problems(info) == ["'sum' depends on 'numbrs', which is not an asset; did you mean 'numbers'?"]
    assert info.value.describe() == (
        "DefinitionError: 1 problem in the definitions:\n"
        "  - 'sum' depends on 'numbrs', which is not an asset; did you mean 'numbers'?"
    )


def test_cycle_message():
    @asset
    def a(c: int) -> int:
        return c

    @asset
    def b(a: int) -> int:
        return a

    @asset
    def c(b: int) -> int:
        return b

    with pytest.raises(errors.DefinitionError) as info:
        Definitions([c, b, a])
    assert _problems(info) == ["cycle: a -> b -> c -> a"]


def test_every_problem_is_listed_at_once():
    @asset(name="numbers")
    def numbers_again() -> list[int]:
        return []

    @asset(resources={"api", "db"}, io_manager="warehous", partitions=DAILY)
    def events(numbrs: list[int], loop: int) -> int:
        return 0

    @asset
    def loop(loop: int) -> int:
        return loop

    @asset
    def daily_total(total: int) -> int:
        return total

    @asset(partitions=StaticPartitions(["a", "b"]))
    def static(events: int) -> int:
        return events

    def forgotten() -> None:
        pass

    with pytest.raises(errors.DefinitionError) as info:
        Definitions(
            [numbers, total, numbers_again, events, loop, forgotten, static],
            resources={"apis": object()},
            io_managers={"warehouse": MemoryIOManager(), "bad": object()},
        )
    assert _problems(info) == [
        f"assets[5] is function {forgotten!r}, not an asset; decorate it with @flowstone.asset",
        "asset name 'numbers' is defined 2 times (by tests.unit.test_definitions.numbers, "
        "tests.unit.test_definitions.test_every_problem_is_listed_at_once.<locals>.numbers_again)",
        "io manager 'bad' is object, not an IOManager (such as FilesystemIOManager(base_dir=...))",
        "'events' depends on 'numbrs', which is not an asset; did you mean 'numbers'?",
        "asset 'events' needs resource 'api', which is not configured; did you mean 'apis'?",
        "asset 'events' needs resource 'db', which is not configured",
        "asset 'events' uses io manager 'warehous', which is not configured; did you mean 'warehouse'?",
        "cycle: loop -> loop",
        # The sentence after the colon is the mapping's own (tested in test_partitions.py).
        f"'static' reads 'events': {IdentityMapping().check(static.partitions, DAILY)}",
    ]
    assert str(info.value).startswith("9 problems in the definitions:\n  - ")


def test_partition_compatibility_is_checked_through_the_mapping():
    @asset(partitions=DAILY)
    def daily() -> int:
        return 1

    @asset
    def rollup(daily: int) -> int:
        return daily

    with pytest.raises(errors.DefinitionError) as info:
        Definitions([daily, rollup])
    assert _problems(info) == [f"'rollup' reads 'daily': {IdentityMapping().check(None, DAILY)}"]
    assert "use AllPartitions()" in _problems(info)[0]

    @asset(partition_mapping={"daily": AllPartitions()})
    def rollup_all(daily: dict[date, int]) -> int:
        return sum(daily.values())

    @asset(partitions=DAILY, partition_mapping={"daily": TimeWindowOffset(-1)})
    def previous(daily: int) -> int:
        return daily

    @asset(partitions=DAILY)
    def per_day(numbers: list[int]) -> int:  # unpartitioned upstream: every partition reads it
        return len(numbers)

    defs = Definitions([daily, rollup_all, previous, numbers, per_day])
    assert set(defs) == {"daily", "rollup_all", "previous", "numbers", "per_day"}


def test_default_io_manager_needs_no_configuration():
    defs = Definitions([numbers], io_managers={"default": MemoryIOManager()})
    assert isinstance(defs.io_managers["default"], MemoryIOManager)
    assert list(Definitions([numbers])) == ["numbers"]


def test_assets_must_be_a_list_of_assets():
    with pytest.raises(errors.DefinitionError) as info:
        Definitions(numbers)
    assert _problems(info) == [
        "assets must be a list of assets, not AssetDef; write Definitions(assets=[...])"
    ]
    with pytest.raises(errors.DefinitionError) as info:
        Definitions([numbers, 3])
    assert _problems(info) == ["assets[1] is int 3, not an asset"]


def test_get_unknown_asset_suggests_and_is_not_retryable():
    defs = Definitions([numbers, total])
    with pytest.raises(errors.UnknownAssetError) as info:
        defs.get("totl")
    assert info.value.message == "unknown asset 'totl'; did you mean 'total'?"
    assert info.value.asset == "totl"
    assert info.value.retryable is False
    with pytest.raises(errors.UnknownAssetError) as info:
        defs.get(None)
    assert info.value.message == "asset names are strings, not NoneType"


def test_i3_names_are_looked_up_never_imported(monkeypatch: pytest.MonkeyPatch):
    defs = Definitions([numbers, total])
    hostile = [
        "os.system",
        "os:system",
        "flowstone.cli:main",
        "subprocess.run",
        "__import__('os').system('true')",
        "builtins.eval",
        "total; DROP TABLE flowstone_runs",
        "../../etc/passwd",
        "numbers\x00",
        "total ",
        "x" * 1_000_000,
    ]
    sys.modules.pop("this", None)  # importing "this" would print; it must stay unimported
    hostile.append("this")
    before = set(sys.modules)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"import attempted: {args!r}")

    monkeypatch.setattr(importlib, "import_module", refuse)
    real_import = builtins.__import__
    builtins.__import__ = refuse  # plain assignment: monkeypatch itself imports lazily
    outcomes: list[object] = []
    try:
        for name in hostile:  # no pytest machinery while imports are refused
            try:
                outcomes.append(defs.get(name))
            except Exception as exc:  # noqa: BLE001 - the outcome is checked below
                outcomes.append(exc)
            outcomes.append(name in defs)
    finally:
        builtins.__import__ = real_import
    assert set(sys.modules) == before
    raised = outcomes[0::2]
    assert outcomes[1::2] == [False] * len(hostile)
    assert [type(e) for e in raised] == [errors.UnknownAssetError] * len(hostile)
    raised = [e for e in raised if isinstance(e, errors.UnknownAssetError)]
    assert all(e.retryable is False for e in raised)
    assert raised[0].message == "unknown asset 'os.system'"
    assert raised[0].asset is None  # not a valid asset name, so not recorded as one
    assert len(raised[-2].message) < 200  # a megabyte of name does not flood the message
    with pytest.raises(errors.UnknownAssetError):
        defs.graph.select("os.system")


def test_a_parameter_with_a_default_is_a_plain_argument_not_an_upstream():
    @asset
    def numbers() -> list[int]:
        return [1, 2]

    @asset
    def scaled(numbers: list[int], factor: int = 3) -> list[int]:
        return [n * factor for n in numbers]

    defs = Definitions([numbers, scaled])  # no asset named `factor` is needed
    assert [i.name for i in defs.get("scaled").inputs] == ["numbers"]
    assert defs.get("scaled").upstream_names == ("numbers",)
    assert scaled([1, 2]) == [3, 6]
