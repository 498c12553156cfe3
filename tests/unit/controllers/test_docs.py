"""``docs/configuration.md`` tells the truth: its example objects are valid, and the
table of what each node gets is what resolution gives."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from katalyst.dynconfig import (
    KCC,
    Node,
    TargetConfig,
    parse_kcc,
    parse_target,
    resolve,
    service_targets,
    validate_target,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
NODES = {
    "node-a": {"node-pool": "batch", "topology.kubernetes.io/zone": "z1"},
    "node-b": {"node-pool": "batch", "topology.kubernetes.io/zone": "z2"},
    "node-c": {"node-pool": "online"},
    "node-d": {},
}


def examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    objects = [yaml.safe_load(block) for block in blocks]
    return [o for o in objects if isinstance(o, dict) and "kind" in o]


def objects() -> tuple[KCC, dict[str, TargetConfig]]:
    kcc: KCC | None = None
    targets: dict[str, TargetConfig] = {}
    for obj in examples():
        obj["metadata"].setdefault("creationTimestamp", "2026-05-04T14:03:11Z")
        if obj["kind"] == "KatalystCustomConfig":
            kcc = parse_kcc(obj)
        else:
            # A later example of the same name is an edit of it.
            targets[obj["metadata"]["name"]] = parse_target(obj)
    assert kcc is not None
    return kcc, targets


def test_every_example_object_is_valid() -> None:
    kcc, targets = objects()
    assert set(targets) == {"cluster", "batch-pool", "batch-z1", "incident-4711"}
    for target in targets.values():
        assert validate_target(kcc, target) == ()


def test_the_table_of_what_each_node_gets() -> None:
    kcc, targets = objects()
    res = resolve(
        kcc,
        targets.values(),
        [Node(name, labels) for name, labels in NODES.items()],
        now=1777903391.0 + 60,  # a minute after the examples' creation
    )
    lists = {name: [ref.name for ref, _ in res.nodes[name].entries] for name in NODES}
    assert lists == {
        "node-a": ["cluster", "batch-z1"],
        "node-b": ["cluster", "batch-pool", "incident-4711"],
        "node-c": ["cluster"],
        "node-d": ["cluster"],
    }

    def target(node: str) -> object:
        config: Any = res.nodes[node].config
        return config["sysadvisor"]["indicators"]["cpu_usage_ratio"]["target"]

    assert [target(n) for n in NODES] == [0.6, 0.75, 0.6, 0.6]
    assert res.nodes["node-b"].config["reclaim"] == {"enabled": False}
    assert res.nodes["node-a"].config["eviction"] == {
        "rate_limit": {"per_minute": 6},
        "memory_pressure": {"watermark_ratio": 0.1},
    }
    checkout = service_targets(res.nodes["node-b"].service_overrides, "shop", {"app": "checkout"})
    assert checkout == {"cpu_usage_ratio": 0.45}
    assert service_targets(res.nodes["node-a"].service_overrides, "shop", {"app": "checkout"}) == {}
