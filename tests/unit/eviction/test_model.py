"""Samples built from the QoS model's pod views."""

from __future__ import annotations

import json

import pytest

from agent.eviction import PodSample, never_evicted, reclaim_pool_supply_ratio
from katalyst.qos import PodView, QoSLevel
from tests.unit.eviction.samples import pod


def _view(name: str, level: str, *, millicpu: int = 0, **extra: object) -> PodView:
    annotations = {"katalyst.kubewharf.io/qos_level": level}
    annotations.update({k: str(v) for k, v in extra.items()})
    requests = {"resource.katalyst.kubewharf.io/reclaimed_millicpu": str(millicpu)}
    return PodView.from_dict(
        {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": f"uid-{name}",
                "annotations": annotations,
            },
            "spec": {
                "priority": -5,
                "containers": [{"name": "c", "resources": {"requests": requests}}],
            },
        }
    )


def test_from_view_takes_identity_level_priority_requests_and_tolerance() -> None:
    view = _view(
        "batch",
        "reclaimed_cores",
        millicpu=1500,
        **{
            "katalyst.kubewharf.io/cpu_enhancement": json.dumps(
                {"suppression_tolerance_rate": "1.5"}
            )
        },
    )
    sample = PodSample.from_view(
        view, cpu_usage_cores=0.7, memory_usage_bytes=123, cpu_supply_ratio=0.5
    )
    assert sample == PodSample(
        uid=view.uid,
        namespace="ns",
        name="batch",
        level=QoSLevel.RECLAIMED_CORES,
        priority=-5,
        is_critical=False,
        reclaimed_millicpu=1500,
        reclaimed_memory_bytes=0,
        cpu_usage_cores=0.7,
        memory_usage_bytes=123,
        suppression_tolerance_rate=1.5,
        cpu_supply_ratio=0.5,
    )
    assert sample.key == "ns/batch"


def test_pool_supply_ratio_is_pool_cpus_over_reclaimed_requests() -> None:
    views = [
        _view("a", "reclaimed_cores", millicpu=3000),
        _view("b", "reclaimed_cores", millicpu=1000),
        _view("web", "shared_cores"),
    ]
    assert reclaim_pool_supply_ratio(2.0, views) == pytest.approx(0.5)
    assert reclaim_pool_supply_ratio(-1.0, views) == 0.0
    assert reclaim_pool_supply_ratio(2.0, views[2:]) is None


def test_never_evicted_names_the_rule() -> None:
    assert never_evicted(pod("s", QoSLevel.SYSTEM_CORES)) == "system_cores"
    assert never_evicted(pod("c", is_critical=True)) == "critical pod"
    assert never_evicted(pod("b")) is None
    assert pod("b", priority=None).rank_priority == 0
