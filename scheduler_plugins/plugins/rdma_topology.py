"""``rdma-topology``: a distributed-training pod wants its GPUs and its RDMA NICs
close together: on one PCIe switch (GPUDirect RDMA peer-to-peer without crossing
the root complex) or at least on one NUMA node.

Under the ``hard`` policy (pod annotation) a node that cannot give all of them on
one NUMA node is filtered out; under ``soft`` it is only scored lower: 100 for one
PCIe switch, :data:`NUMA_SCORE` for one NUMA node, 0 otherwise. A node without
enough free NICs at all never fits.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final

from scheduler_plugins.plugins import MAX_SCORE, gpu_share
from scheduler_plugins.plugins.model import Gpu, Nic, NodeView, PodRequest

NUMA_SCORE: Final = 60


@dataclass(frozen=True)
class Placement:
    gpus: tuple[int, ...]
    nics: tuple[str, ...]
    level: str
    """``pcie_switch``, ``numa`` or ``none``."""


def applies(pod: PodRequest) -> bool:
    return pod.rdma > 0


def _free_nics(node: NodeView) -> list[Nic]:
    return [n for n in node.nics if not n.allocated]


def _fitting_gpus(pod: PodRequest, node: NodeView, strategy: gpu_share.Strategy) -> list[Gpu]:
    return gpu_share.order([g for g in node.gpus if g.free_mib >= pod.gpu_memory_mib], strategy)


def _group(
    pod: PodRequest,
    gpus: list[Gpu],
    nics: list[Nic],
    key_gpu: Callable[[Gpu], Hashable],
    key_nic: Callable[[Nic], Hashable],
) -> tuple[list[Gpu], list[Nic]] | None:
    keys = sorted({key_nic(n) for n in nics if key_nic(n) is not None}, key=str)
    for key in keys:
        g = [x for x in gpus if key_gpu(x) == key] if pod.wants_gpu else []
        n = [x for x in nics if key_nic(x) == key]
        if len(g) >= (pod.gpu_count if pod.wants_gpu else 0) and len(n) >= pod.rdma:
            return g, n
    return None


def place(
    pod: PodRequest, node: NodeView, strategy: gpu_share.Strategy = "binpack"
) -> Placement | None:
    """The best-aligned GPUs and NICs for the pod, or ``None`` when the node does not
    have enough of them at all."""
    gpus = _fitting_gpus(pod, node, strategy)
    nics = _free_nics(node)
    need_gpus = pod.gpu_count if pod.wants_gpu else 0
    if len(gpus) < need_gpus or len(nics) < pod.rdma:
        return None
    for level, key_gpu, key_nic in (
        ("pcie_switch", lambda g: g.pcie_switch, lambda n: n.pcie_switch),
        ("numa", lambda g: g.numa, lambda n: n.numa),
    ):
        found = _group(pod, gpus, nics, key_gpu, key_nic)
        if found is not None:
            g, n = found
            return Placement(
                gpus=tuple(sorted(x.index for x in g[:need_gpus])),
                nics=tuple(x.name for x in n[: pod.rdma]),
                level=level,
            )
    return Placement(
        gpus=tuple(sorted(x.index for x in gpus[:need_gpus])),
        nics=tuple(x.name for x in nics[: pod.rdma]),
        level="none",
    )


def _numa_summary(pod: PodRequest, node: NodeView) -> str:
    numas = sorted({g.numa for g in node.gpus} | {n.numa for n in node.nics}, key=str)
    parts = []
    for numa in numas:
        g = sum(1 for x in node.gpus if x.numa == numa and x.free_mib >= pod.gpu_memory_mib)
        n = sum(1 for x in node.nics if x.numa == numa and not x.allocated)
        parts.append(f"numa {numa}: {g} GPUs, {n} NICs")
    return "; ".join(parts) or "no GPUs or NICs reported"


def filter(pod: PodRequest, node: NodeView) -> str | None:
    if not applies(pod):
        return None
    free = len(_free_nics(node))
    if free < pod.rdma:
        return f"node has {free} free RDMA NICs, pod needs {pod.rdma}"
    placement = place(pod, node)
    if placement is None:
        return None  # not enough GPUs: gpu-share says why
    if pod.policy == "hard" and placement.level == "none":
        gpus = ""
        if pod.wants_gpu:
            gpus = f"{pod.gpu_count} GPUs with {pod.gpu_memory_mib} MiB free and "
        return (
            f"topology_policy hard: no NUMA node has {gpus}{pod.rdma} free RDMA NICs "
            f"({_numa_summary(pod, node)})"
        )
    return None


def score(pod: PodRequest, node: NodeView) -> int | None:
    if not applies(pod):
        return None
    placement = place(pod, node)
    if placement is None:
        return 0
    return {"pcie_switch": MAX_SCORE, "numa": NUMA_SCORE}.get(placement.level, 0)
