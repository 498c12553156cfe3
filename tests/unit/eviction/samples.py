"""Builders of eviction samples for the unit tests."""

from __future__ import annotations

from typing import Any

from agent.eviction import NodeSample, PodSample, Sample
from katalyst.qos import PodUID, QoSLevel

MIB = 1024**2
GIB = 1024**3


def pod(name: str, level: QoSLevel = QoSLevel.RECLAIMED_CORES, **changes: Any) -> PodSample:
    """A pod named ``name`` (uid ``uid-<name>``, namespace ``ns``), priority 0."""
    fields: dict[str, Any] = {
        "uid": PodUID(f"uid-{name}"),
        "namespace": "ns",
        "name": name,
        "level": level,
        "priority": 0,
        "is_critical": False,
    }
    fields.update(changes)
    return PodSample(**fields)


def node(**changes: Any) -> NodeSample:
    """A 16 GiB node with 8 GiB available and no PSI reading."""
    fields: dict[str, Any] = {"memory_total_bytes": 16 * GIB, "memory_available_bytes": 8 * GIB}
    fields.update(changes)
    return NodeSample(**fields)


def sample(at: float, node_sample: NodeSample, *pods: PodSample) -> Sample:
    return Sample(at=at, node=node_sample, pods=tuple(pods))
