"""The resolution benchmark's pure parts: the fleet it builds (valid, conflict-free,
every level applying somewhere), the changes it measures, its numbers, goals,
report and arguments. Nothing here times anything."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.config_resolution import (
    CHANGES,
    NOW_S,
    Change,
    Levels,
    Options,
    Result,
    change_variants,
    format_report,
    goals,
    kcc_object,
    node_labels,
    node_object,
    parse_args,
    plan_levels,
    pools_for,
    ratio,
    relabelled,
    report_json,
    target_objects,
)
from katalyst.dynconfig import (
    Resolution,
    Resolver,
    parse_kcc,
    parse_node,
    parse_target,
    resolve,
)

NODES = 300
CONFIGS = 40


def test_the_default_fleet_has_200_configs_over_every_level() -> None:
    levels = plan_levels(200, 5000)
    assert levels == Levels(cluster=1, pool0=5, pool1=48, pool2=50, pool3=2, named=94)
    assert levels.total == 200
    assert pools_for(5000) == 50 and pools_for(10) == 3


def test_a_small_fleet_still_has_every_level() -> None:
    levels = plan_levels(12, 10)
    assert min(levels.cluster, levels.pool0, levels.pool1, levels.pool2, levels.pool3) >= 1
    assert levels.named >= 1
    assert len(target_objects(12, 10)) == levels.total


def test_nodes_carry_pool_zone_and_gpu_labels() -> None:
    assert node_labels(0, 300) == {
        "kubernetes.io/hostname": "node-00000",
        "node-pool": "pool-0",
        "zone": "zone-0",
        "gpu": "true",
    }
    assert node_labels(8, 300)["zone"] == "zone-1"
    assert "gpu" not in node_labels(7, 300)
    assert parse_node(node_object(4, 300)).labels["node-pool"] == "pool-1"  # 3 pools


def _resolved() -> Resolution:
    kcc = parse_kcc(kcc_object())
    nodes = [parse_node(node_object(i, NODES)) for i in range(NODES)]
    targets = [parse_target(o) for o in target_objects(CONFIGS, NODES)]
    return resolve(kcc, targets, nodes, now=NOW_S)


def test_the_fleet_is_valid_conflict_free_and_every_level_applies() -> None:
    res = _resolved()
    assert {c.reason for c in res.conditions.values()} == {"Valid"}
    layers = [result.layers for result in res.nodes.values()]
    assert {lv.target.priority for ls in layers for lv in ls if lv.level == "pool"} == {0, 1, 2, 3}
    assert all(ls[0].level == "cluster" for ls in layers)
    assert any([lv.level for lv in ls] == ["cluster", "pool", "named"] for ls in layers)
    assert any(o.service_overrides for o in res.nodes.values())


def test_each_change_is_a_change_of_one_config_and_back() -> None:
    targets = target_objects(CONFIGS, NODES)
    variants = change_variants(targets)
    assert set(variants) == {"pool", "named", "cluster"}
    for a, b in variants.values():
        ta, tb = parse_target(a), parse_target(b)
        assert ta.ref == tb.ref and ta.hash != tb.hash
    kcc = parse_kcc(kcc_object())
    resolver = Resolver(kcc, now=NOW_S)
    resolver.load(
        [parse_target(o) for o in targets],
        [parse_node(node_object(i, NODES)) for i in range(NODES)],
    )
    resolver.resolve_all()
    for name, (a, b) in variants.items():
        first = resolver.set_target(parse_target(a))
        second = resolver.set_target(parse_target(b))
        assert first and first == second, name
    moved, back = relabelled(1, NODES)
    assert moved.labels["node-pool"] != back.labels["node-pool"]
    assert resolver.set_node(moved) == {moved.name}
    assert resolver.set_node(back) == {moved.name}


def _result(full_s: float, pool_s: float | None) -> Result:
    changes = {} if pool_s is None else {"pool": Change(pool_s, 71)}
    changes["cluster"] = Change(0.03, 5000)
    return Result(
        nodes=5000,
        configs=200,
        levels=plan_levels(200, 5000),
        read_s=0.1,
        full_s=full_s,
        changes=changes,
        invalid=0,
    )


def test_goals_are_reported_never_asserted() -> None:
    assert goals(_result(0.5, 0.01)) == {"full pass < 1 s": "PASS", "one change < 50 ms": "PASS"}
    assert goals(_result(1.0, 0.05)) == {"full pass < 1 s": "MISS", "one change < 50 ms": "MISS"}
    assert goals(_result(0.5, None))["one change < 50 ms"] == "n/a"


def test_ratios() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert math.isnan(ratio(1.0, 0.0))


def test_the_report_gives_times_ratios_and_goals() -> None:
    text = format_report(_result(0.25, 0.01))
    assert "5000 nodes, 200 configs" in text
    assert "full resolution" in text and "2.50" in text  # 0.25 s / 0.1 s
    assert "one change: pool" in text and "71" in text
    assert "full pass < 1 s: PASS" in text
    doc = report_json(_result(0.25, 0.01))
    assert doc["full_over_read"] == pytest.approx(2.5)
    assert doc["changes"]["pool"]["changed_nodes"] == 71
    assert doc["goals"]["one change < 50 ms"] == "PASS"
    json.dumps(doc, allow_nan=False)
    zero = Result(10, 12, plan_levels(12, 10), 0.0, 0.1, {}, 0)
    assert report_json(zero)["full_over_read"] is None


def test_changes_are_listed_in_their_order() -> None:
    assert CHANGES[0] == "pool"


def test_arguments_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args([]) == Options(nodes=5000, configs=200, repeat=5, json=None)
    out = tmp_path / "r.json"
    assert (
        parse_args(["--nodes", "10", "--configs", "12", "--repeat", "1", "--json", str(out)]).json
        == out
    )
    for argv, message in (
        (["--nodes", "9"], "--nodes: must be between 10 and 200000"),
        (["--configs", "11"], "--configs: must be between 12"),
        (["--repeat", "0"], "--repeat: must be between 1 and 100"),
        (["--json", str(tmp_path / "no" / "r.json")], "--json: the folder of"),
    ):
        with pytest.raises(SystemExit) as info:
            parse_args(argv)
        assert info.value.code == 2
        assert message in capsys.readouterr().err
