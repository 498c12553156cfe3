"""The kube-scheduler configuration in deploy/ names what the extender serves."""

from __future__ import annotations

from pathlib import Path

import yaml

from katalyst.qos import (
    RESOURCE_GPU_MEMORY,
    RESOURCE_RDMA,
    RESOURCE_RECLAIMED_MEMORY,
    RESOURCE_RECLAIMED_MILLICPU,
)

CONFIG = Path(__file__).parents[3] / "deploy" / "scheduler" / "scheduler-config.yaml"


def test_the_extender_entry_matches_the_service() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["kind"] == "KubeSchedulerConfiguration"
    (extender,) = config["extenders"]
    assert (extender["filterVerb"], extender["prioritizeVerb"], extender["bindVerb"]) == (
        "filter",
        "prioritize",
        "bind",
    )
    assert extender["nodeCacheCapable"] is True
    assert extender["ignorable"] is False
    assert {r["name"] for r in extender["managedResources"]} == {
        RESOURCE_RECLAIMED_MILLICPU,
        RESOURCE_RECLAIMED_MEMORY,
        RESOURCE_GPU_MEMORY,
        RESOURCE_RDMA,
    }
