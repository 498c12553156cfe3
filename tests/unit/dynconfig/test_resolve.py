"""Resolution: every precedence rule, every rejection, the last good version,
pause, expiry, merge, and what a node's CNC lists."""

from __future__ import annotations

from collections.abc import Sequence

from katalyst.dynconfig import (
    ADMIN_QOS_GVR,
    EMPTY,
    Condition,
    InvalidTarget,
    Layer,
    Node,
    Resolution,
    Resolver,
    TargetConfig,
    cnc_config_list,
    resolve,
    service_targets,
)
from tests.unit.dynconfig.support import T0, cluster, kcc, named, node, pool, ref, target

NOW = T0 + 60.0
NODES = [
    node("n1", node_pool="a", zone="x"),
    node("n2", node_pool="a", zone="y"),
    node("n3", node_pool="b", zone="x", gpu="true"),
    node("n4"),
]


def run(
    targets: Sequence[TargetConfig | InvalidTarget],
    nodes: Sequence[Node] = NODES,
    *,
    now: float = NOW,
    previous: Resolution | None = None,
) -> Resolution:
    return resolve(kcc(), targets, nodes, now=now, previous=previous)


def names(res: Resolution, node_name: str) -> list[str]:
    return [layer.ref.name for layer in res.nodes[node_name].layers]


def cond(res: Resolution, name: str) -> Condition:
    return res.conditions[ref(name)]


# ---- precedence ------------------------------------------------------------------------


def test_no_config_leaves_every_node_empty() -> None:
    res = run([])
    assert set(res.nodes) == {"n1", "n2", "n3", "n4"}
    assert all(r is EMPTY for r in res.nodes.values())
    assert res.conditions == {} and res.expired == () and res.next_expiry is None


def test_the_cluster_wide_config_applies_to_every_node() -> None:
    res = run([cluster(config={"reclaim": {"enabled": False}})])
    for n in ("n1", "n2", "n3", "n4"):
        assert names(res, n) == ["cluster"]
        assert res.nodes[n].config == {"reclaim": {"enabled": False}}
    assert cond(res, "cluster") == Condition(True, "Valid")


def test_layers_are_cluster_then_pool_then_named_merged_field_by_field() -> None:
    res = run(
        [
            cluster(config={"sysadvisor": {"period_s": 2, "limits": {"max_log_step": 2}}}),
            pool("pool-a", "node-pool=a", {"sysadvisor": {"period_s": 3}}),
            named("incident", ["n1"], {"sysadvisor": {"limits": {"max_log_step": None}}}),
        ]
    )
    assert names(res, "n1") == ["cluster", "pool-a", "incident"]
    assert res.nodes["n1"].config == {"sysadvisor": {"period_s": 3, "limits": {}}}
    assert names(res, "n2") == ["cluster", "pool-a"]
    assert res.nodes["n2"].config == {"sysadvisor": {"period_s": 3, "limits": {"max_log_step": 2}}}
    assert names(res, "n3") == ["cluster"]
    assert [lv.level for lv in res.nodes["n1"].layers] == ["cluster", "pool", "named"]


def test_the_highest_priority_matching_pool_wins() -> None:
    res = run(
        [
            pool("by-pool", "node-pool=a", {"io": {"period_s": 2}}),
            pool("by-zone", "zone=x", {"io": {"period_s": 3}}, priority=1),
            pool("gpu", "gpu", {"io": {"period_s": 4}}, priority=2),
        ]
    )
    assert names(res, "n1") == ["by-zone"]  # matches priorities 0 and 1
    assert names(res, "n2") == ["by-pool"]
    assert names(res, "n3") == ["gpu"]  # matches priorities 1 and 2
    assert names(res, "n4") == []


def test_named_beats_pool_and_cluster_and_applies_without_them() -> None:
    res = run([named("incident", ["n4", "gone"], {"reclaim": {"enabled": False}})])
    assert names(res, "n4") == ["incident"]
    assert "gone" not in res.nodes


def test_the_cnc_lists_each_applied_layer_with_its_hash_lowest_first() -> None:
    c, p, n = cluster(), pool("pool-a", "node-pool=a"), named("incident", ["n1"])
    res = run([n, p, c])
    assert res.nodes["n1"].entries == ((c.ref, c.hash), (p.ref, p.hash), (n.ref, n.hash))
    listed = cnc_config_list(ADMIN_QOS_GVR, res.nodes["n1"].entries)
    assert [e["configName"] for e in listed] == ["cluster", "pool-a", "incident"]
    assert listed[0]["hash"] == c.hash


def test_service_overrides_rank_above_every_level_named_first() -> None:
    def override(app: str, usage: float) -> dict[str, object]:
        return {
            "namespace": "shop",
            "selector": {"matchLabels": {"app": app}},
            "indicators": {"cpu_usage_ratio": {"target": usage}},
        }

    c = target(
        "cluster",
        {
            "serviceOverrides": [
                override("web", 0.3),
                {
                    "namespace": "shop",
                    "selector": {},
                    "indicators": {"cpu_sched_wait": {"target": 200}},
                },
            ]
        },
    )
    n = target(
        "incident",
        {
            "ephemeralSelector": {"nodeNames": ["n1"], "lastDuration": "1h"},
            "serviceOverrides": [override("web", 0.5), override("web", 0.9)],
        },
    )
    res = run([c, n])
    on_n1 = res.nodes["n1"].service_overrides
    assert len(on_n1) == 4
    assert service_targets(on_n1, "shop", {"app": "web"}) == {
        "cpu_usage_ratio": 0.5,  # the named layer's first matching override
        "cpu_sched_wait": 200.0,  # the cluster's, for every pod of the namespace
    }
    assert service_targets(on_n1, "other", {"app": "web"}) == {}
    on_n2 = res.nodes["n2"].service_overrides
    assert service_targets(on_n2, "shop", {"app": "web"}) == {
        "cpu_usage_ratio": 0.3,
        "cpu_sched_wait": 200.0,
    }


# ---- conflicts -------------------------------------------------------------------------


def test_two_cluster_wide_configs_are_both_rejected_and_neither_applies() -> None:
    res = run([cluster("a"), cluster("b")])
    assert all(r is EMPTY for r in res.nodes.values())
    assert cond(res, "a") == Condition(
        False,
        "Conflict",
        "spec: another cluster-wide config applies as well (AdminQoSConfiguration/"
        "katalyst-system/b); at most one config may have neither nodeLabelSelector nor "
        "nodeNames; no version of it applies",
    )
    assert cond(res, "b").reason == "Conflict"
    assert res.in_effect == {}


def test_a_second_cluster_wide_config_does_not_unseat_the_first() -> None:
    first = run([cluster("a")])
    res = run([cluster("a"), cluster("b")], previous=first)
    assert names(res, "n1") == ["a"]
    assert cond(res, "a").reason == "Conflict"
    assert cond(res, "a").message.endswith("; this version stays in effect (it applied before)")
    assert cond(res, "b").message.endswith("; no version of it applies")


def test_same_priority_selectors_that_match_a_node_in_common_are_both_rejected() -> None:
    res = run(
        [
            pool("by-pool", "node-pool=a", priority=1),
            pool("by-zone", "zone=x", priority=1),
            pool("other", "node-pool=b"),
        ]
    )
    assert cond(res, "by-pool") == Condition(
        False,
        "Conflict",
        "spec.nodeLabelSelector: overlaps AdminQoSConfiguration/katalyst-system/by-zone at "
        "priority 1 (both match node n1); selectors at one priority must not match a node in "
        "common; no version of it applies",
    )
    assert cond(res, "by-zone").reason == "Conflict"
    assert cond(res, "other") == Condition(True, "Valid")
    assert names(res, "n1") == [] and names(res, "n2") == [] and names(res, "n3") == ["other"]


def test_overlap_is_judged_on_the_current_nodes() -> None:
    a, b = pool("a", "node-pool=a", priority=1), pool("x", "zone=z", priority=1)
    res = run([a, b])  # no node has node-pool=a and zone=z
    assert cond(res, "a").valid and cond(res, "x").valid
    # a node matching both arrives: both configs were good; neither can fall back
    # further, so both drop out
    res = run([a, b], [*NODES, node("n5", node_pool="a", zone="z")], previous=res)
    assert cond(res, "a").reason == cond(res, "x").reason == "Conflict"
    assert "both match node n5" in cond(res, "a").message
    assert names(res, "n1") == [] and names(res, "n5") == []


def test_selectors_at_different_priorities_may_overlap() -> None:
    res = run([pool("a", "node-pool=a"), pool("x", "zone=x", priority=1)])
    assert cond(res, "a").valid and cond(res, "x").valid


def test_an_edit_that_creates_an_overlap_keeps_the_previous_version() -> None:
    a1 = pool("a", "node-pool=a", {"io": {"period_s": 2}}, priority=1)
    b = pool("b", "node-pool=b", priority=1)
    first = run([a1, b])
    a2 = pool("a", "zone=x", {"io": {"period_s": 3}}, priority=1, generation=2)
    res = run([a2, b], previous=first)
    assert cond(res, "a").reason == "Conflict"
    assert cond(res, "a").message.endswith("; generation 1, its last good version, stays in effect")
    assert cond(res, "b").reason == "Conflict"
    assert names(res, "n1") == ["a"] and res.nodes["n1"].config == {"io": {"period_s": 2}}
    assert names(res, "n3") == ["b"]
    assert res.in_effect[ref("a")] is a1
    assert res.history.last_good[ref("a")] is a1


def test_two_named_configs_naming_one_node_are_both_rejected() -> None:
    res = run([named("i1", ["n1", "n2"]), named("i2", ["n2", "ghost"]), named("i3", ["n3"])])
    assert cond(res, "i1") == Condition(
        False,
        "Conflict",
        "spec.ephemeralSelector.nodeNames: node n2 is also named by "
        "AdminQoSConfiguration/katalyst-system/i2; a node may be named by one config only; "
        "no version of it applies",
    )
    assert cond(res, "i2").reason == "Conflict"
    assert names(res, "n1") == [] and names(res, "n3") == ["i3"]


def test_naming_a_node_already_named_leaves_the_first_config_in_place() -> None:
    first = run([named("i1", ["n1"])])
    res = run([named("i1", ["n1"]), named("i2", ["n1"])], previous=first)
    assert names(res, "n1") == ["i1"]
    assert cond(res, "i2").reason == "Conflict"


# ---- rejected configs and their last good version ----------------------------------------


def test_a_config_with_disallowed_keys_is_rejected_and_applies_nowhere() -> None:
    res = run([pool("p", "zone=x")])
    assert cond(res, "p") == Condition(
        False,
        "Invalid",
        "spec.nodeLabelSelector: key 'zone' is not allowed at priority 0 by KatalystCustomConfig "
        "katalyst-system/admin-qos (allowed: node-pool); no version of it applies",
    )
    assert names(res, "n1") == []


def test_a_rejected_edit_keeps_the_last_good_version() -> None:
    good = pool("p", "node-pool=a", {"sysadvisor": {"period_s": 2}})
    first = run([good])
    bad = pool("p", "node-pool=a", {"sysadvisor": {"period_s": -1}}, generation=2)
    res = run([bad], previous=first)
    assert res.nodes["n1"].entries == ((good.ref, good.hash),)
    assert res.nodes["n1"].config == {"sysadvisor": {"period_s": 2}}
    assert cond(res, "p") == Condition(
        False,
        "Invalid",
        "spec.config.sysadvisor.period_s: must be in [0.01, 3600]; generation 1, its last good "
        "version, stays in effect",
    )
    # and again on the pass after: the last good version is remembered
    again = run([bad], previous=res)
    assert again.nodes["n1"].entries == ((good.ref, good.hash),)
    # fixed: the new version applies
    fixed = pool("p", "node-pool=a", {"sysadvisor": {"period_s": 3}}, generation=3)
    res = run([fixed], previous=again)
    assert res.nodes["n1"].entries == ((fixed.ref, fixed.hash),)
    assert cond(res, "p").valid


def test_a_config_that_does_not_parse_keeps_the_last_good_version() -> None:
    good = cluster(config={"reclaim": {"enabled": False}})
    first = run([good])
    res = run(
        [InvalidTarget(good.ref, good.uid, 2, "spec.priority: must be an integer")], previous=first
    )
    assert names(res, "n1") == ["cluster"]
    assert cond(res, "cluster").message == (
        "spec.priority: must be an integer; generation 1, its last good version, stays in effect"
    )


def test_a_deleted_config_is_forgotten() -> None:
    first = run([cluster()])
    res = run([], previous=first)
    assert names(res, "n1") == []
    assert res.history.last_good == {} and res.history.known == frozenset()
    # recreated with an error: nothing to fall back to
    res = run([pool("cluster", "zone=x")], previous=res)
    assert names(res, "n1") == []


def test_a_layer_that_does_not_merge_over_the_ones_below_is_left_out_there() -> None:
    c = cluster(config={"io": {"min_read_bps": 200 * 1024 * 1024}})
    p = pool("pool-a", "node-pool=a", {"io": {"max_read_bps": 100 * 1024 * 1024}})
    res = run([c, p])  # each is valid alone; together the floor is above the ceiling
    result = res.nodes["n1"]
    assert names(res, "n1") == ["cluster"]
    ((skipped, why),) = result.skipped
    assert skipped.ref == p.ref
    assert why.startswith("spec.config.io.min_read_bps: must be <= spec.config.io.max_read_bps")
    assert why.endswith("(merged over AdminQoSConfiguration/katalyst-system/cluster)")
    assert cond(res, "pool-a").reason == "MergeInvalid"
    assert cond(res, "pool-a").message.endswith(
        "on node n1 (2 node(s) in all); left out on those nodes"
    )
    assert cond(res, "cluster").valid
    # a layer above the skipped one still merges over what was applied
    n = named("incident", ["n1"], {"reclaim": {"enabled": False}})
    res = run([c, p, n])
    assert names(res, "n1") == ["cluster", "incident"]


def test_a_kcc_that_stops_allowing_a_key_leaves_the_last_good_version_in_effect() -> None:
    p = pool("p", "zone=x", priority=1)
    resolver = Resolver(kcc(), now=NOW)
    resolver.load([p], NODES)
    resolver.resolve_all()
    assert resolver.condition(p.ref) == Condition(True, "Valid")
    changed = resolver.set_kcc(kcc({0: ["node-pool"], 1: ["node-pool"]}))
    assert changed == set()
    condition = resolver.condition(p.ref)
    assert condition is not None and condition.reason == "Invalid"
    node_result = resolver.node("n1")
    assert node_result is not None and [lv.ref.name for lv in node_result.layers] == ["p"]


# ---- paused ----------------------------------------------------------------------------


def test_a_paused_config_is_absent_not_an_error() -> None:
    first = run([pool("p", "node-pool=a")])
    paused = target("p", {"nodeLabelSelector": "node-pool=a", "paused": True}, generation=2)
    res = run([paused], previous=first)
    assert names(res, "n1") == []
    assert cond(res, "p") == Condition(True, "Paused", "paused: applies to no node")
    assert res.history.last_good[ref("p")] is paused


# ---- expiry ----------------------------------------------------------------------------


def test_a_named_config_expires_last_duration_after_its_creation() -> None:
    n = named("incident", ["n1"], duration="1h")
    res = run([n], now=T0 + 3599)
    assert names(res, "n1") == ["incident"]
    assert res.deadlines == {n.ref: T0 + 3600}
    assert res.next_expiry == T0 + 3600
    res = run([n], now=T0 + 3600, previous=res)
    assert names(res, "n1") == []
    assert res.expired == (n.ref,)
    assert cond(res, "incident") == Condition(True, "Expired", "expired at 2024-01-01T01:00:00Z")
    assert res.deadlines == {}


def test_changing_the_node_names_restarts_the_clock() -> None:
    first = run([named("incident", ["n1"], duration="1h")], now=T0 + 3000)
    more = named("incident", ["n1", "n2"], duration="1h", generation=2)
    res = run([more], now=T0 + 3500, previous=first)
    assert res.deadlines[more.ref] == T0 + 3500 + 3600
    later = run([more], now=T0 + 4000, previous=res)
    assert names(later, "n2") == ["incident"] and later.expired == ()
    # other edits do not restart it
    edited = named("incident", ["n1", "n2"], {"reclaim": {"enabled": False}}, generation=3)
    assert run([edited], now=T0 + 4000, previous=later).deadlines[more.ref] == T0 + 7100


def test_without_a_creation_time_the_clock_starts_when_the_config_is_first_seen() -> None:
    n = named("incident", ["n1"], duration="10m", created=None)
    res = run([n], now=T0 + 100)
    assert res.deadlines[n.ref] == T0 + 700
    res = run([n], now=T0 + 650, previous=res)
    assert names(res, "n1") == ["incident"]
    res = run([n], now=T0 + 700, previous=res)
    assert res.expired == (n.ref,)


def test_a_controller_without_history_counts_from_the_creation_time() -> None:
    n = named("incident", ["n1", "n2"], duration="1h")
    assert run([n], now=T0 + 7200).expired == (n.ref,)


def test_an_expired_named_config_does_not_conflict() -> None:
    old = named("old", ["n1"], duration="1m")
    new = named("new", ["n1"], duration="1h", created="2024-01-01T00:30:00Z")
    res = run([old, new], now=T0 + 1900)
    assert res.expired == (old.ref,)
    assert names(res, "n1") == ["new"]
    assert cond(res, "new").valid


# ---- the values ------------------------------------------------------------------------


def test_nodes_with_the_same_layers_share_their_result() -> None:
    res = run([cluster(), pool("pool-a", "node-pool=a")])
    assert res.nodes["n1"] is res.nodes["n2"]
    assert res.nodes["n3"] is res.nodes["n4"]


def test_layers_compare_by_version_not_metadata() -> None:
    a = cluster(generation=1)
    b = cluster(generation=2)
    assert a.hash == b.hash and a != b
    assert Layer.of(a) == Layer.of(b)
