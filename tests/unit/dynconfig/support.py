"""Objects as the API server returns them, for the dynamic-configuration tests."""

from __future__ import annotations

from typing import Any

from katalyst.dynconfig import KCC, ConfigRef, Node, TargetConfig, parse_kcc, parse_target

NS = "katalyst-system"
CREATED = "2024-01-01T00:00:00Z"
T0 = 1704067200.0
"""``CREATED`` in seconds since the epoch."""
KIND = "AdminQoSConfiguration"


def kcc_object(allowed: dict[int, list[str]] | None = None) -> dict[str, Any]:
    if allowed is None:
        allowed = {0: ["node-pool"], 1: ["node-pool", "zone"], 2: ["gpu"]}
    return {
        "apiVersion": "config.katalyst.kubewharf.io/v1alpha1",
        "kind": "KatalystCustomConfig",
        "metadata": {"name": "admin-qos", "namespace": NS, "uid": "kcc-uid", "generation": 1},
        "spec": {
            "targetType": {
                "group": "config.katalyst.kubewharf.io",
                "version": "v1alpha1",
                "resource": "adminqosconfigurations",
            },
            "nodeLabelSelectorAllowedKeyList": [
                {"priority": p, "keyList": keys} for p, keys in sorted(allowed.items())
            ],
        },
    }


def kcc(allowed: dict[int, list[str]] | None = None) -> KCC:
    return parse_kcc(kcc_object(allowed))


def target_object(
    name: str,
    spec: dict[str, Any] | None = None,
    *,
    uid: str | None = None,
    generation: int = 1,
    created: str | None = CREATED,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": uid or f"uid-{name}",
        "generation": generation,
        "resourceVersion": str(100 + generation),
    }
    if created is not None:
        meta["creationTimestamp"] = created
    return {
        "apiVersion": "config.katalyst.kubewharf.io/v1alpha1",
        "kind": KIND,
        "metadata": meta,
        "spec": spec if spec is not None else {},
    }


def target(name: str, spec: dict[str, Any] | None = None, **kw: Any) -> TargetConfig:
    return parse_target(target_object(name, spec, **kw))


def cluster(name: str = "cluster", config: dict[str, Any] | None = None, **kw: Any) -> TargetConfig:
    return target(name, {"config": config or {}}, **kw)


def pool(
    name: str,
    selector: str,
    config: dict[str, Any] | None = None,
    *,
    priority: int = 0,
    **kw: Any,
) -> TargetConfig:
    spec: dict[str, Any] = {"nodeLabelSelector": selector, "config": config or {}}
    if priority:
        spec["priority"] = priority
    return target(name, spec, **kw)


def named(
    name: str,
    nodes: list[str],
    config: dict[str, Any] | None = None,
    *,
    duration: str = "1h",
    **kw: Any,
) -> TargetConfig:
    return target(
        name,
        {
            "ephemeralSelector": {"nodeNames": nodes, "lastDuration": duration},
            "config": config or {},
        },
        **kw,
    )


def ref(name: str) -> ConfigRef:
    return ConfigRef(KIND, NS, name)


def node(name: str, **labels: str) -> Node:
    return Node(name, {k.replace("_", "-"): v for k, v in labels.items()})


def node_object(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}}}
