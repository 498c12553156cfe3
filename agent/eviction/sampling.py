"""One eviction :class:`Sample` from a metrics snapshot, the node's pods and the
sysadvisor's lend (the I/O side gathers the parts; this is pure)."""

from __future__ import annotations

from collections.abc import Iterable

from agent.eviction.model import NodeSample, PodSample, Sample, reclaim_pool_supply_ratio
from agent.metaserver.metrics import MetricsSnapshot
from katalyst.qos import PodView, QoSLevel


def build_sample(
    snapshot: MetricsSnapshot,
    views: Iterable[PodView],
    *,
    reclaim_cpus: float | None,
    reclaim_memory_bytes: int | None,
) -> Sample | None:
    """The sample of one period; None when the node's memory readings are missing.

    ``reclaim_cpus`` is the CPU lent to reclaimed pods (the sysadvisor's quota;
    None before its first plan): it is both the reported reclaimed allocatable and
    the supply behind every reclaimed pod's suppression ratio.
    """
    node = snapshot.node
    if node.memory_total_bytes is None or node.memory_available_bytes is None:
        return None
    pods = list(views)
    supply = reclaim_pool_supply_ratio(reclaim_cpus, pods) if reclaim_cpus is not None else None
    cpu: dict[str, float] = {}
    memory: dict[str, int] = {}
    for sample in snapshot.containers.values():
        uid = sample.ref.pod_uid
        rates = sample.metrics.rates
        cpu[uid] = cpu.get(uid, 0.0) + (rates.cpu_cores if rates is not None else 0.0)
        # The working set (usage less inactive page cache), as MemTotal - MemAvailable
        # counts it: the "pressure comes from pods" rule and the deficit compare them.
        memory[uid] = memory.get(uid, 0) + sample.metrics.counters.memory_in_use
    pressure = node.memory_pressure
    return Sample(
        at=snapshot.at,
        node=NodeSample(
            memory_total_bytes=node.memory_total_bytes,
            memory_available_bytes=node.memory_available_bytes,
            memory_psi_some_avg10=pressure.some.avg10 if pressure is not None else None,
            memory_psi_full_avg10=(
                pressure.full.avg10 if pressure is not None and pressure.full is not None else None
            ),
            reclaimed_allocatable_millicpu=(
                round(reclaim_cpus * 1000) if reclaim_cpus is not None else None
            ),
            reclaimed_allocatable_memory_bytes=reclaim_memory_bytes,
        ),
        pods=tuple(
            PodSample.from_view(
                view,
                cpu_usage_cores=cpu.get(view.uid, 0.0),
                memory_usage_bytes=memory.get(view.uid, 0),
                cpu_supply_ratio=supply if view.level is QoSLevel.RECLAIMED_CORES else None,
            )
            for view in pods
        ),
    )
