"""The pure parts: pools, the choice of exclusive CPUs, NUMA hints."""

from __future__ import annotations

import pytest

from agent.qrm.cpu import compute_pools, take_cpus
from agent.qrm.hints import numa_hints
from agent.qrm.types import TopologyHint
from katalyst.cpuset import CPUSet
from katalyst.qos import PodUID
from katalyst.topology import CPUTopology

ONLINE = CPUSet.parse("0-15")
RESERVED = CPUSet.parse("0-1")


def test_share_and_reclaim_are_what_is_left() -> None:
    pools = compute_pools(
        online=ONLINE,
        reserved=RESERVED,
        dedicated={PodUID("a"): CPUSet.parse("2-3"), PodUID("b"): CPUSet.parse("8-11")},
        reclaim_size=None,
    )
    assert pools.share == pools.reclaim == pools.free == CPUSet.parse("4-7,12-15")
    assert not pools.share_fallback
    assert dict(pools.as_mapping()) == {
        "reserve": RESERVED,
        "share": CPUSet.parse("4-7,12-15"),
        "reclaim": CPUSet.parse("4-7,12-15"),
        "dedicated/a": CPUSet.parse("2-3"),
        "dedicated/b": CPUSet.parse("8-11"),
    }


@pytest.mark.parametrize(
    ("size", "share", "reclaim"),
    [
        (None, "2-15", "2-15"),
        (0, "2-15", "2-15"),
        (1, "2-14", "15"),
        (4, "2-11", "12-15"),
        (13, "2", "3-15"),
        (14, "2", "3-15"),
        (1000, "2", "3-15"),
    ],
)
def test_reclaim_size_takes_the_highest_share_cpus(
    size: int | None, share: str, reclaim: str
) -> None:
    pools = compute_pools(online=ONLINE, reserved=RESERVED, dedicated={}, reclaim_size=size)
    assert pools.share == CPUSet.parse(share)
    assert pools.reclaim == CPUSet.parse(reclaim)


def test_a_one_cpu_share_pool_is_reclaim_on_share() -> None:
    pools = compute_pools(
        online=ONLINE,
        reserved=RESERVED,
        dedicated={PodUID("a"): CPUSet.parse("2-14")},
        reclaim_size=4,
    )
    assert pools.share == pools.reclaim == CPUSet.parse("15")


def test_nothing_free_falls_back_to_the_reserve() -> None:
    pools = compute_pools(
        online=ONLINE,
        reserved=RESERVED,
        dedicated={PodUID("a"): CPUSet.parse("2-15")},
        reclaim_size=3,
    )
    assert pools.share_fallback
    assert pools.share == pools.reclaim == RESERVED
    assert pools.named("share") == RESERVED
    with pytest.raises(KeyError):
        pools.named("dedicated")


# ---- take_cpus ---------------------------------------------------------------------------


def test_take_nothing_or_too_much(numa2: CPUTopology) -> None:
    assert take_cpus(numa2, free=ONLINE, count=0) == CPUSet.of(())
    assert take_cpus(numa2, free=CPUSet.parse("2-5"), count=5) is None
    with pytest.raises(ValueError, match="-1"):
        take_cpus(numa2, free=ONLINE, count=-1)


def test_take_whole_cores_from_the_best_fitting_node(numa2: CPUTopology) -> None:
    free = CPUSet.parse("2-7,8-15")
    assert take_cpus(numa2, free=free, count=6) == CPUSet.parse("2-7")
    assert take_cpus(numa2, free=free, count=7) == CPUSet.parse("8-14")
    assert take_cpus(numa2, free=free, count=8) == CPUSet.parse("8-15")


def test_take_single_cpus_from_broken_cores_first(numa2: CPUTopology) -> None:
    # Node 0: 3 and 5 are half-free cores, 6-7 whole.
    free = CPUSet.parse("3,5-7")
    assert take_cpus(numa2, free=free, count=1) == CPUSet.parse("3")
    assert take_cpus(numa2, free=free, count=2) == CPUSet.parse("6-7")
    assert take_cpus(numa2, free=free, count=3) == CPUSet.parse("3,6-7")


def test_take_spills_from_the_fullest_node(numa2: CPUTopology) -> None:
    free = CPUSet.parse("4-7,8-15")
    assert take_cpus(numa2, free=free, count=9) == CPUSet.parse("4,8-15")
    assert take_cpus(numa2, free=free, count=10) == CPUSet.parse("4-5,8-15")
    assert take_cpus(numa2, free=free, count=12) == CPUSet.parse("4-15")


# ---- numa_hints ------------------------------------------------------------------------------


def _hints(*runs: tuple[set[int], bool]) -> tuple[TopologyHint, ...]:
    return tuple(TopologyHint(nodes=frozenset(nodes), preferred=p) for nodes, p in runs)


def test_hints_are_minimal_adjacent_runs() -> None:
    nodes = [0, 1, 2, 3]
    available = {0: 4, 1: 1, 2: 4, 3: 4}
    assert numa_hints(node_ids=nodes, available=available, count=4) == _hints(
        ({0}, True), ({2}, True), ({3}, True)
    )
    # 5 CPUs: {0,1} and {1,2} are the shortest; {2,3} too.
    assert numa_hints(node_ids=nodes, available=available, count=5) == _hints(
        ({0, 1}, True), ({1, 2}, True), ({2, 3}, True)
    )
    # 9 CPUs: three nodes at least.
    assert numa_hints(node_ids=nodes, available=available, count=9) == _hints(
        ({0, 1, 2}, True), ({1, 2, 3}, True)
    )
    assert numa_hints(node_ids=nodes, available=available, count=14) == ()


def test_longer_runs_are_offered_but_not_preferred() -> None:
    nodes = [0, 1, 2]
    available = {0: 6, 1: 1, 2: 1}
    assert numa_hints(node_ids=nodes, available=available, count=2) == _hints(
        ({0}, True), ({1, 2}, False)
    )


def test_hints_never_cross_an_unavailable_node() -> None:
    nodes = [0, 1, 2]
    available = {0: 4, 2: 4}
    assert numa_hints(node_ids=nodes, available=available, count=6) == ()
    assert numa_hints(node_ids=nodes, available=available, count=4) == _hints(
        ({0}, True), ({2}, True)
    )
