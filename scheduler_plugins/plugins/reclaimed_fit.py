"""``reclaimed-fit``: the node's reclaimed headroom (the CNR's allocatable, which
the agent recomputes as load changes) minus the reclaimed requests of the pods on
the node and of the pods assumed there must hold the pod's reclaimed requests."""

from __future__ import annotations

from typing import Literal

from scheduler_plugins.plugins import MAX_SCORE
from scheduler_plugins.plugins.model import NodeView, PodRequest

Strategy = Literal["least-allocated", "most-allocated"]


def filter(pod: PodRequest, node: NodeView) -> str | None:
    if not pod.wants_reclaimed:
        return None
    if node.reclaimed_millicpu is None or node.reclaimed_memory is None:
        return "node reports no reclaimed resources (no CustomNodeResource yet)"
    free_cpu = node.reclaimed_millicpu - node.requested_millicpu
    if pod.millicpu > free_cpu:
        return f"reclaimed_millicpu: node has {max(0, free_cpu)} free, pod needs {pod.millicpu}"
    free_mem = node.reclaimed_memory - node.requested_memory
    if pod.memory > free_mem:
        return f"reclaimed_memory: node has {max(0, free_mem)} bytes free, pod needs {pod.memory}"
    return None


def score(pod: PodRequest, node: NodeView, strategy: Strategy = "least-allocated") -> int | None:
    if not pod.wants_reclaimed:
        return None
    fractions: list[float] = []
    for want, used, total in (
        (pod.millicpu, node.requested_millicpu, node.reclaimed_millicpu),
        (pod.memory, node.requested_memory, node.reclaimed_memory),
    ):
        if total:
            fractions.append(min(1.0, max(0.0, (used + want) / total)))
    if not fractions:
        return 0
    used_share = sum(fractions) / len(fractions)
    share = used_share if strategy == "most-allocated" else 1.0 - used_share
    return round(share * MAX_SCORE)
