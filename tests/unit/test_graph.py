"""AssetGraph: deterministic topological order, cycles, walks, selections and rendering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowstone import errors
from flowstone.graph import AssetGraph, did_you_mean, shown

# numbers -> sum -> report, numbers -> stats -> report, and an unrelated "config".
PIPELINE = {
    "numbers": set(),
    "sum": {"numbers"},
    "stats": {"numbers"},
    "report": {"sum", "stats"},
    "config": set(),
}


@st.composite
def dags(draw: st.DrawFn) -> dict[str, set[str]]:
    """A random DAG: edges only go from an earlier to a later node of a random permutation."""
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True), unique=True, max_size=12))
    names = draw(st.permutations(names))
    deps: dict[str, set[str]] = {}
    for i, name in enumerate(names):
        earlier = names[:i]
        deps[name] = set(draw(st.lists(st.sampled_from(earlier), unique=True))) if earlier else set()
    return deps


def _reversed_insertion(deps: dict[str, set[str]]) -> dict[str, set[str]]:
    return {name: set(deps[name]) for name in reversed(list(deps))}


@given(dags())
def test_topological_order_respects_every_edge_and_is_deterministic(deps):
    graph = AssetGraph(deps)
    order = graph.topological_order()
    assert sorted(order) == sorted(deps)
    position = {name: i for i, name in enumerate(order)}
    for name, ups in deps.items():
        for up in ups:
            assert position[up] < position[name], (up, name)
    # The same graph built in another insertion order gives the same list.
    assert AssetGraph(_reversed_insertion(deps)).topological_order() == order
    assert graph.topological_order() == order


@given(dags())
def test_topological_ties_are_broken_by_name(deps):
    order = AssetGraph(deps).topological_order()
    done: set[str] = set()
    for name in order:
        ready = [n for n in deps if n not in done and deps[n] <= done]
        assert name == min(ready)
        done.add(name)


@given(dags(), st.data())
def test_a_subset_keeps_the_order_of_the_whole_graph(deps, data):
    graph = AssetGraph(deps)
    subset = data.draw(st.sets(st.sampled_from(sorted(deps)))) if deps else set()
    full = graph.topological_order()
    assert graph.topological_order(subset) == [n for n in full if n in subset]


@given(dags())
def test_a_dag_has_no_cycle_and_selection_closes_upstream(deps):
    graph = AssetGraph(deps)
    assert graph.find_cycle() is None
    assert graph.find_cycles() == []
    for name in deps:
        selected = graph.select(f"+{name}")
        assert set(selected) == graph.upstream(name) | {name}
        assert selected[-1] == name


def test_subset_order_follows_dependencies_through_assets_outside_it():
    # z -> m -> a: by name "a" < "z", but "a" transitively reads "z".
    graph = AssetGraph({"z": set(), "m": {"z"}, "a": {"m"}})
    assert graph.topological_order(["a", "z"]) == ["z", "a"]


def test_topological_order_ties_and_unknown_names():
    graph = AssetGraph(PIPELINE)
    assert graph.topological_order() == ["config", "numbers", "stats", "sum", "report"]
    with pytest.raises(errors.UnknownAssetError, match="unknown asset 'sums'; did you mean 'sum'"):
        graph.topological_order(["sums"])


def test_graph_refuses_edges_to_names_it_does_not_contain():
    with pytest.raises(errors.DefinitionError) as info:
        AssetGraph({"sum": {"numbers"}})
    assert info.value.problems == [
        "the graph names an asset it does not contain: 'numbers' (upstream of 'sum')"
    ]


def test_find_cycle_reports_the_cycle_in_data_flow_order():
    # b reads a, c reads b, a reads c: a -> b -> c -> a.
    graph = AssetGraph({"a": {"c"}, "b": {"a"}, "c": {"b"}, "d": {"c"}})
    assert graph.find_cycle() == ["a", "b", "c", "a"]
    with pytest.raises(errors.DefinitionError) as info:
        graph.topological_order()
    assert info.value.problems == ["cycle: a -> b -> c -> a"]


def test_find_cycles_lists_one_cycle_per_tangle_and_self_loops():
    graph = AssetGraph(
        {
            "x": {"x"},
            "b": {"a"},
            "a": {"b"},
            "p": {"r"},
            "q": {"p"},
            "r": {"q"},
            "free": set(),
        }
    )
    assert graph.find_cycles() == [["a", "b", "a"], ["p", "q", "r", "p"], ["x", "x"]]
    assert graph.find_cycle() == ["a", "b", "a"]


def test_find_cycle_returns_a_shortest_cycle_through_the_smallest_name():
    # a -> b -> c -> d -> a and a shortcut c -> a.
    graph = AssetGraph({"a": {"d", "c"}, "b": {"a"}, "c": {"b"}, "d": {"c"}})
    assert graph.find_cycle() == ["a", "b", "c", "a"]


def test_long_chains_do_not_hit_the_recursion_limit():
    names = [f"n{i:05d}" for i in range(5000)]
    deps = {name: ({names[i - 1]} if i else set()) for i, name in enumerate(names)}
    deps[names[0]] = {names[-1]}
    graph = AssetGraph(deps)
    cycle = graph.find_cycle()
    assert cycle is not None
    assert len(cycle) == 5001
    chain = AssetGraph({name: deps[name] for name in names[1:1500]} | {names[0]: set()})
    assert chain.topological_order() == names[:1500]
    assert chain.ascii_tree().count("\n") == 1499
    ring = AssetGraph({name: deps[name] for name in names[1:1500]} | {names[0]: {names[1499]}})
    assert ring.ascii_tree().count("\n") == 1500  # the last line repeats the first node


def test_upstream_and_downstream_with_depth():
    graph = AssetGraph(PIPELINE)
    assert graph.upstream("report") == {"sum", "stats", "numbers"}
    assert graph.upstream("report", depth=1) == {"sum", "stats"}
    assert graph.upstream("report", depth=0) == set()
    assert graph.upstream("numbers") == set()
    assert graph.downstream("numbers") == {"sum", "stats", "report"}
    assert graph.downstream("numbers", depth=1) == {"sum", "stats"}
    assert graph.downstream("config") == set()


def test_walks_refuse_unknown_names_and_negative_depth():
    graph = AssetGraph(PIPELINE)
    with pytest.raises(errors.UnknownAssetError) as info:
        graph.upstream("reprot")
    assert info.value.message == "unknown asset 'reprot'; did you mean 'report'?"
    assert info.value.retryable is False
    assert info.value.asset == "reprot"
    with pytest.raises(ValueError, match="depth must be >= 0 or None, not -1"):
        graph.downstream("numbers", depth=-1)


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ("*", ["config", "numbers", "stats", "sum", "report"]),
        ("sum", ["sum"]),
        ("+sum", ["numbers", "sum"]),
        ("numbers+", ["numbers", "stats", "sum", "report"]),
        ("numbers+1", ["numbers", "stats", "sum"]),
        ("+sum+", ["numbers", "sum", "report"]),
        ("1+report", ["stats", "sum", "report"]),
        ("0+report+0", ["report"]),
        ("report, config", ["config", "report"]),
        ("report config\tsum", ["config", "sum", "report"]),
        (["report", "+sum"], ["numbers", "sum", "report"]),
        (("sum", "sum,sum"), ["sum"]),
        ("*, sum", ["config", "numbers", "stats", "sum", "report"]),
        ("", []),
        ([], []),
        (" , ", []),
    ],
)
def test_select(selection, expected):
    assert AssetGraph(PIPELINE).select(selection) == expected


def test_select_unknown_names_suggest_the_closest_asset():
    graph = AssetGraph(PIPELINE)
    with pytest.raises(errors.UnknownAssetError) as info:
        graph.select("+numbrs, sum, repotr+, zzz")
    assert info.value.message == (
        "unknown asset 'numbrs'; did you mean 'numbers'?; "
        "unknown asset 'repotr'; did you mean 'report'?; "
        "unknown asset 'zzz'"
    )
    assert info.value.asset == "numbrs"
    assert info.value.retryable is False


@pytest.mark.parametrize("item", ["a+b", "++sum", "+", "sum++", "x+y+z", "1234567890+sum"])
def test_select_malformed_items_say_what_is_accepted(item):
    with pytest.raises(errors.UnknownAssetError) as info:
        AssetGraph(PIPELINE).select(item)
    assert info.value.message == (
        f"{item!r} is not a valid selection: use 'name', '+name' (with its upstream), "
        "'name+' (with its downstream), '+name+' (both) or '*' (all)"
    )


def test_select_hostile_input_is_looked_up_and_shortened():
    graph = AssetGraph(PIPELINE)
    huge = "x" * 1_000_000
    with pytest.raises(errors.UnknownAssetError) as info:
        graph.select(huge)
    assert len(info.value.message) < 200
    assert "(1000000 characters)" in info.value.message
    assert info.value.asset is None
    with pytest.raises(errors.UnknownAssetError, match="asset names are strings, not int"):
        graph.select([1])


def test_did_you_mean_and_shown():
    assert did_you_mean("numbrs", ["numbers", "sum"]) == "; did you mean 'numbers'?"
    assert did_you_mean("qqq", ["numbers", "sum"]) == ""
    assert did_you_mean("n" * 300, ["n" * 300]) == ""
    assert shown("a'b") == '"a\'b"'
    assert shown("y" * 100) == f"{'y' * 80!r}... (100 characters)"


def test_ascii_tree():
    graph = AssetGraph(PIPELINE)
    assert graph.ascii_tree() == ("config\nnumbers\n├── stats\n│   └── report\n└── sum\n    └── report")
    assert graph.ascii_tree(["sum"]) == "sum\n└── report"


def test_ascii_tree_marks_repeated_subtrees_and_prints_cycles():
    diamond = AssetGraph({"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}, "e": {"d"}})
    assert diamond.ascii_tree() == ("a\n├── b\n│   └── d\n│       └── e\n└── c\n    └── d (see above)")
    cyclic = AssetGraph({"a": {"b"}, "b": {"a"}, "src": set()})
    assert cyclic.ascii_tree() == "src\na\n└── b\n    └── a (see above)"
    assert AssetGraph({}).ascii_tree() == ""
    with pytest.raises(errors.UnknownAssetError):
        diamond.ascii_tree(["zz"])


def test_mermaid_uses_ids_so_keywords_and_quotes_are_safe():
    graph = AssetGraph({"numbers": set(), "end": {"numbers"}})
    assert graph.mermaid() == ('flowchart TD\n    a0["numbers"]\n    a1["end"]\n    a0 --> a1')
    odd = AssetGraph({'q"<&': set()})
    assert odd.mermaid() == 'flowchart TD\n    a0["q#quot;#lt;#amp;"]'
    cyclic = AssetGraph({"b": {"a"}, "a": {"b"}})
    assert cyclic.mermaid() == ('flowchart TD\n    a0["a"]\n    a1["b"]\n    a1 --> a0\n    a0 --> a1')


def test_basic_queries():
    graph = AssetGraph(PIPELINE)
    assert "sum" in graph
    assert 3 not in graph
    assert len(graph) == 5
    assert graph.names == frozenset(PIPELINE)
    assert repr(graph) == "AssetGraph(5 assets)"
