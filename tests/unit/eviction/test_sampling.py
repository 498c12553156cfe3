"""An eviction sample from a metrics snapshot: pods' memory is their working set."""

from __future__ import annotations

from types import MappingProxyType

from agent.eviction.sampling import build_sample
from agent.metaserver.metrics import (
    ContainerMetrics,
    ContainerRef,
    ContainerSample,
    Counters,
    MetricsSnapshot,
    NodeMetrics,
    Rates,
)
from katalyst.qos import PodView

GiB = 1024**3


def _view(uid: str, level: str) -> PodView:
    return PodView.from_dict(
        {
            "metadata": {
                "name": uid,
                "namespace": "default",
                "uid": uid,
                "annotations": {"katalyst.kubewharf.io/qos_level": level},
            },
            "spec": {"containers": [{"name": "c"}]},
        }
    )


def _sample(uid: str, *, usage: int, working_set: int | None) -> ContainerSample:
    ref = ContainerRef(
        namespace="default", pod=uid, container="c", qos_level="", cgroup="x", pod_uid=uid
    )
    counters = Counters(
        at=1.0,
        cpu_usage_ns=0,
        nr_periods=0,
        nr_throttled=0,
        throttled_ns=0,
        run_delay_ns=0,
        memory_usage=usage,
        cpu_pressure=None,
        memory_working_set=working_set,
    )
    rates = Rates(cpu_cores=0.5, throttled_ratio=0.0, run_delay_us_per_s=0.0)
    return ContainerSample(ref, ContainerMetrics(counters, rates))


def _snapshot(*samples: ContainerSample, total: int | None = 16 * GiB) -> MetricsSnapshot:
    node = NodeMetrics(
        cpus=2,
        cpu_usage_cores=1.0,
        memory_total_bytes=total,
        memory_available_bytes=8 * GiB,
        cpu_pressure=None,
        memory_pressure=None,
        io_pressure=None,
    )
    return MetricsSnapshot(
        seq=1, at=5.0, containers=MappingProxyType({s.ref.key: s for s in samples}), node=node
    )


def test_memory_is_the_working_set_and_cpu_the_rate() -> None:
    snap = _snapshot(
        _sample("a", usage=3 * GiB, working_set=GiB), _sample("b", usage=GiB, working_set=None)
    )
    views = [_view("a", "reclaimed_cores"), _view("b", "shared_cores")]
    sample = build_sample(snap, views, reclaim_cpus=1.5, reclaim_memory_bytes=2 * GiB)
    assert sample is not None
    by_uid = {str(p.uid): p for p in sample.pods}
    assert by_uid["a"].memory_usage_bytes == GiB  # page cache left out
    assert by_uid["b"].memory_usage_bytes == GiB  # no memory.stat: usage as it is
    assert by_uid["a"].cpu_usage_cores == 0.5
    assert sample.node.reclaimed_allocatable_millicpu == 1500
    assert by_uid["b"].cpu_supply_ratio is None  # only reclaimed pods are suppressed


def test_without_memtotal_there_is_no_sample() -> None:
    assert (
        build_sample(_snapshot(total=None), [], reclaim_cpus=None, reclaim_memory_bytes=None)
        is None
    )
