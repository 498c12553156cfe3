"""The incremental resolver: the nodes each change touches, and equality with a full
resolution after any sequence of changes (a property test)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from katalyst.dynconfig import (
    History,
    InvalidTarget,
    Node,
    NodeResolution,
    Resolution,
    Resolver,
    TargetConfig,
    load_target,
    resolve,
)
from tests.unit.dynconfig.support import (
    T0,
    cluster,
    kcc,
    named,
    node,
    pool,
    ref,
    target,
    target_object,
)

NOW = T0 + 60.0


def fleet(count: int = 10) -> list[Node]:
    """``n0``...: pools a (even) and b (odd), zones x (first half) and y."""
    return [
        node(f"n{i}", node_pool="ab"[i % 2], zone="x" if i < count // 2 else "y")
        for i in range(count)
    ]


def loaded(*targets: TargetConfig) -> Resolver:
    resolver = Resolver(kcc(), now=NOW)
    resolver.load(targets, fleet())
    resolver.resolve_all()
    return resolver


def layer_names(resolver: Resolver, name: str) -> list[str]:
    result = resolver.node(name)
    assert result is not None
    return [layer.ref.name for layer in result.layers]


def test_a_pool_change_touches_the_nodes_matched_before_and_after() -> None:
    resolver = loaded(pool("p", "node-pool=a", {"io": {"period_s": 2}}))
    edited = pool("p", "node-pool=a", {"io": {"period_s": 3}}, generation=2)
    assert resolver.set_target(edited) == {"n0", "n2", "n4", "n6", "n8"}
    moved = pool("p", "node-pool=b", {"io": {"period_s": 3}}, generation=3)
    assert resolver.set_target(moved) == {f"n{i}" for i in range(10)}
    assert layer_names(resolver, "n0") == [] and layer_names(resolver, "n1") == ["p"]


def test_a_change_of_metadata_only_touches_no_node() -> None:
    resolver = loaded(pool("p", "node-pool=a"))
    assert resolver.set_target(pool("p", "node-pool=a", generation=5)) == set()


def test_a_named_change_touches_the_nodes_named_before_and_after() -> None:
    resolver = loaded(named("i", ["n1", "n2"]))
    assert resolver.set_target(named("i", ["n2", "n3", "ghost"], generation=2)) == {
        "n1",
        "n2",
        "n3",
    }


def test_a_cluster_change_touches_every_node_it_changes() -> None:
    resolver = loaded(cluster(config={"io": {"period_s": 2}}), named("i", ["n1"]))
    changed = resolver.set_target(cluster(config={"io": {"period_s": 3}}, generation=2))
    assert changed == {f"n{i}" for i in range(10)}


def test_a_relabelled_node_is_recomputed() -> None:
    resolver = loaded(pool("p", "node-pool=a"))
    assert resolver.set_node(node("n1", node_pool="a", zone="x")) == {"n1"}
    assert layer_names(resolver, "n1") == ["p"]
    assert resolver.set_node(node("n1", node_pool="a", zone="y")) == set()
    assert resolver.set_node(node("new", node_pool="b")) == {"new"}
    assert resolver.remove_node("n1") == {"n1"}
    assert resolver.node("n1") is None
    assert resolver.remove_node("n1") == set()


def test_a_node_that_creates_an_overlap_touches_both_pools() -> None:
    resolver = loaded(pool("a", "node-pool=a", priority=1), pool("z", "zone=z", priority=1))
    changed = resolver.set_node(node("n10", node_pool="a", zone="z"))
    # both pools were good and drop out: every node of either is recomputed
    assert changed == {"n0", "n2", "n4", "n6", "n8", "n10"}
    condition = resolver.condition(ref("a"))
    assert condition is not None and condition.reason == "Conflict"


def test_time_expires_named_configs() -> None:
    resolver = loaded(named("i", ["n1", "n2"], duration="10m"))
    assert resolver.next_expiry() == T0 + 600
    assert resolver.set_time(T0 + 599) == set()
    assert resolver.set_time(T0 + 600) == {"n1", "n2"}
    assert resolver.resolution().expired == (ref("i"),)
    assert resolver.next_expiry() is None


def test_removing_a_target_touches_its_nodes() -> None:
    resolver = loaded(pool("p", "node-pool=b"), cluster())
    assert resolver.remove_target(ref("p")) == {"n1", "n3", "n5", "n7", "n9"}
    assert resolver.remove_target(ref("p")) == set()


def test_resolve_all_from_scratch_changes_nothing() -> None:
    resolver = loaded(pool("p", "node-pool=b"), cluster(), named("i", ["n0"]))
    before = resolver.resolution()
    assert resolver.resolve_all() == set()
    assert _same(resolver.resolution(), before)


def test_the_previous_history_carries_into_a_resolver() -> None:
    good = pool("p", "node-pool=a", {"io": {"period_s": 2}})
    first = resolve(kcc(), [good], fleet(), now=NOW)
    bad = pool("p", "node-pool=a", {"io": {"period_s": 0}}, generation=2)
    resolver = Resolver(kcc(), now=NOW, previous=first)
    resolver.load([], fleet())
    # the bad version is rejected; the last good one, from `first`, applies
    assert resolver.set_target(bad) == {"n0", "n2", "n4", "n6", "n8"}
    assert layer_names(resolver, "n0") == ["p"]
    result = resolver.node("n0")
    assert result is not None and result.entries == ((good.ref, good.hash),)
    assert isinstance(resolver.history, History)


# ---- incremental == full, after any sequence of changes ----------------------------------

NAMES = ["c0", "c1", "c2", "c3", "c4"]
NODE_NAMES = ["n0", "n1", "n2", "n3", "n4", "n5"]
SELECTORS = [
    "node-pool=a",
    "node-pool=b",
    "node-pool in (a,b)",
    "zone=x",
    "node-pool=a,zone=y",
    "gpu",
    "!gpu",
    "node-pool notin (a)",
]
CONFIGS: list[dict[str, Any]] = [
    {},
    # each valid alone, not merged (a floor above a ceiling): MergeInvalid
    {"io": {"min_read_bps": 200 * 1024 * 1024}},
    {"io": {"min_read_bps": 200 * 1024 * 1024}},
    {"io": {"max_read_bps": 100 * 1024 * 1024}},
    {"io": {"max_read_bps": 100 * 1024 * 1024}},
    {"sysadvisor": {"period_s": 2}},
    {"sysadvisor": {"period_s": None}},
    {"sysadvisor": {"period_s": -1}},  # invalid
    {"reclaim": {"enabled": False}},
]
OVERRIDE = {
    "namespace": "default",
    "selector": {"matchLabels": {"app": "web"}},
    "indicators": {"cpu_usage_ratio": {"target": 0.5}},
}

_labels = st.fixed_dictionaries(
    {},
    optional={
        "node-pool": st.sampled_from(["a", "b"]),
        "zone": st.sampled_from(["x", "y"]),
        "gpu": st.just("true"),
    },
)


@st.composite
def _specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"config": draw(st.sampled_from(CONFIGS))}
    level = draw(st.sampled_from(["cluster", "pool", "pool", "named", "named"]))
    if level == "pool":
        spec["nodeLabelSelector"] = draw(st.sampled_from(SELECTORS))
        spec["priority"] = draw(st.integers(0, 2))
    elif level == "named":
        spec["ephemeralSelector"] = {
            "nodeNames": draw(st.lists(st.sampled_from([*NODE_NAMES, "ghost"]), min_size=1)),
            "lastDuration": draw(st.sampled_from(["1m", "10m", "1h"])),
        }
    if draw(st.integers(0, 5)) == 0:
        spec["paused"] = True
    if draw(st.integers(0, 3)) == 0:
        spec["serviceOverrides"] = [OVERRIDE]
    return spec


@st.composite
def _targets(draw: st.DrawFn) -> TargetConfig | InvalidTarget:
    name = draw(st.sampled_from(NAMES))
    if draw(st.integers(0, 12)) == 0:
        return load_target(target_object(name, {"priority": "high"}))
    created = draw(st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01T00:05:00Z", None]))
    uid = draw(st.sampled_from([f"uid-{name}", f"uid-{name}-2"]))
    return target(
        name, draw(_specs()), uid=uid, generation=draw(st.integers(1, 3)), created=created
    )


_ops = st.one_of(
    st.tuples(st.just("set_target"), _targets()),
    st.tuples(st.just("set_target"), _targets()),
    st.tuples(st.just("set_target"), _targets()),
    st.tuples(st.just("remove_target"), st.sampled_from(NAMES)),
    st.tuples(st.just("set_node"), st.sampled_from(NODE_NAMES), _labels),
    st.tuples(st.just("remove_node"), st.sampled_from(NODE_NAMES)),
    st.tuples(st.just("set_time"), st.sampled_from([30.0, 300.0, 1200.0])),
)


def _same(a: Resolution, b: Resolution) -> bool:
    return (
        a.nodes == b.nodes
        and a.conditions == b.conditions
        and a.expired == b.expired
        and a.in_effect == b.in_effect
        and a.deadlines == b.deadlines
        and a.history == b.history
    )


def _changed(before: dict[str, NodeResolution], after: dict[str, NodeResolution]) -> set[str]:
    out = set()
    for name in before.keys() | after.keys():
        old, new = before.get(name), after.get(name)
        if old is None or new is None or old.key != new.key:
            out.add(name)
    return out


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.sampled_from(NODE_NAMES), _labels), min_size=2, max_size=6),
    st.lists(_targets(), min_size=2, max_size=5),
    st.lists(_ops, min_size=1, max_size=25),
)
def test_incremental_resolution_equals_a_full_one(
    initial: list[tuple[str, dict[str, str]]],
    initial_targets: list[TargetConfig | InvalidTarget],
    ops: list[tuple[Any, ...]],
) -> None:
    the_kcc = kcc()
    now = T0
    nodes = {name: Node(name, labels) for name, labels in initial}
    targets = {t.ref: t for t in initial_targets}
    resolver = Resolver(the_kcc, now=now)
    resolver.load(targets.values(), nodes.values())
    resolver.resolve_all()
    full = resolve(the_kcc, targets.values(), nodes.values(), now=now)
    assert _same(resolver.resolution(), full)
    for op in ops:
        kind = op[0]
        if kind == "set_target":
            targets[op[1].ref] = op[1]
            changed = resolver.set_target(op[1])
        elif kind == "remove_target":
            targets.pop(ref(op[1]), None)
            changed = resolver.remove_target(ref(op[1]))
        elif kind == "set_node":
            nodes[op[1]] = Node(op[1], op[2])
            changed = resolver.set_node(nodes[op[1]])
        elif kind == "remove_node":
            nodes.pop(op[1], None)
            changed = resolver.remove_node(op[1])
        else:
            now += op[1]
            changed = resolver.set_time(now)
        expected = resolve(the_kcc, targets.values(), nodes.values(), now=now, previous=full)
        got = resolver.resolution()
        assert _same(got, expected), (op, got, expected)
        assert changed == _changed(dict(full.nodes), dict(expected.nodes)), op
        full = expected
    # and a full pass of the resolver itself agrees
    assert resolver.resolve_all() == set()
    assert _same(resolver.resolution(), full)
