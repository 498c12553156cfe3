"""``gpu-share``: a pod asks for ``gpu_memory`` MiB on each of ``gpu_count`` GPUs;
a node fits when that many GPUs each have the memory free. ``binpack`` fills the
fullest GPUs first (keeps whole GPUs free for big pods), ``spread`` the emptiest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from scheduler_plugins.plugins import MAX_SCORE
from scheduler_plugins.plugins.model import Gpu, NodeView, PodRequest

Strategy = Literal["binpack", "spread"]


def _fitting(pod: PodRequest, gpus: Iterable[Gpu]) -> list[Gpu]:
    return [g for g in gpus if g.free_mib >= pod.gpu_memory_mib]


def filter(pod: PodRequest, node: NodeView) -> str | None:
    if not pod.wants_gpu:
        return None
    if not node.gpus:
        return "node reports no GPUs"
    if len(_fitting(pod, node.gpus)) >= pod.gpu_count:
        return None
    free = ", ".join(f"gpu {g.index} has {g.free_mib} MiB free" for g in node.gpus)
    if pod.gpu_count == 1:
        return f"{free}, pod needs {pod.gpu_memory_mib}"
    return f"{free}, pod needs {pod.gpu_count} GPUs with {pod.gpu_memory_mib} each"


def order(gpus: Iterable[Gpu], strategy: Strategy) -> list[Gpu]:
    """GPUs in the order ``strategy`` takes them (ties by index, for stable choices)."""
    if strategy == "spread":
        return sorted(gpus, key=lambda g: (-g.free_mib, g.index))
    return sorted(gpus, key=lambda g: (g.free_mib, g.index))


def choose(pod: PodRequest, node: NodeView, strategy: Strategy = "binpack") -> tuple[int, ...]:
    """The indices of the GPUs to give the pod (sorted); ``()`` when it wants none or
    the node cannot hold it."""
    if not pod.wants_gpu:
        return ()
    picked = order(_fitting(pod, node.gpus), strategy)[: pod.gpu_count]
    if len(picked) < pod.gpu_count:
        return ()
    return tuple(sorted(g.index for g in picked))


def score(pod: PodRequest, node: NodeView, strategy: Strategy = "binpack") -> int | None:
    if not pod.wants_gpu:
        return None
    chosen = set(choose(pod, node, strategy))
    gpus = [g for g in node.gpus if g.index in chosen]
    if not gpus:
        return 0
    used = sum(
        min(1.0, (g.allocated_mib + pod.gpu_memory_mib) / g.memory_mib) if g.memory_mib else 1.0
        for g in gpus
    ) / len(gpus)
    share = used if strategy == "binpack" else 1.0 - used
    return round(share * MAX_SCORE)
