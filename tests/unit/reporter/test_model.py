"""The reporter's values: splitting over NUMA zones, the topology helpers, samples."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.reporter import ReclaimSample, cpu_weights, numa_sockets, split, to_millicpu
from katalyst.cpuset import CPUSet
from katalyst.topology import CPUInfo, CPUTopology


def test_split_is_proportional_and_exact() -> None:
    assert split(3000, {0: 2.0, 1: 1.0}, (0, 1)) == {0: 2000, 1: 1000}
    assert split(1000, {0: 1.0, 1: 1.0, 2: 1.0}, (0, 1, 2)) == {0: 334, 1: 333, 2: 333}
    assert split(2, {0: 1.0, 1: 1.0, 2: 1.0}, (0, 1, 2)) == {0: 1, 1: 1, 2: 0}


def test_split_without_weights_is_even_and_ignores_unknown_zones() -> None:
    assert split(10, {}, (0, 1)) == {0: 5, 1: 5}
    assert split(10, {0: 0.0, 1: 0.0}, (0, 1)) == {0: 5, 1: 5}
    assert split(10, {7: 3.0}, (0, 1)) == {0: 5, 1: 5}
    assert split(10, {0: 1.0, 7: 3.0}, (0, 1)) == {0: 10, 1: 0}
    assert split(10, {0: 1.0}, ()) == {}


@given(
    total=st.integers(min_value=0, max_value=2**62),
    weights=st.lists(
        st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=8
    ),
)
def test_split_adds_up_and_each_zone_gets_its_share_rounded(
    total: int, weights: list[float]
) -> None:
    zones = tuple(range(len(weights)))
    amounts = split(total, dict(enumerate(weights)), zones)
    assert sum(amounts.values()) == total
    whole = sum(Fraction(w) for w in weights)
    for zone, weight in enumerate(weights):
        share = total * Fraction(weight) / whole if whole > 0 else Fraction(total, len(weights))
        # Largest remainder: every zone gets its exact share rounded down or up.
        assert math.floor(share) <= amounts[zone] <= math.ceil(share)


def test_to_millicpu_rounds_down() -> None:
    assert to_millicpu(1.5) == 1500
    assert to_millicpu(0.1) == 100
    assert to_millicpu(1.9999) == 1999
    assert to_millicpu(0.0) == 0


def _cpu(cpu: int, numa: int, socket: int) -> CPUInfo:
    return CPUInfo(cpu=cpu, core=cpu, socket=socket, numa=numa)


def test_numa_sockets_takes_the_socket_of_the_lowest_cpu() -> None:
    topology = CPUTopology(
        cpus=(_cpu(3, 1, 1), _cpu(0, 0, 0), _cpu(1, 0, 0), _cpu(2, 1, 1), _cpu(4, 2, 1))
    )
    assert numa_sockets(topology) == {0: 0, 1: 1, 2: 1}


def test_cpu_weights_count_the_reclaim_pool_per_numa_node() -> None:
    numa = {0: CPUSet.parse("0-3"), 1: CPUSet.parse("4-7")}
    assert cpu_weights(CPUSet.parse("2-5"), numa) == {0: 2.0, 1: 2.0}
    assert cpu_weights(CPUSet.parse("6-7"), numa) == {0: 0.0, 1: 2.0}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cpus": -1.0, "memory_bytes": 0}, "ReclaimSample.cpus: must be finite and >= 0"),
        ({"cpus": math.nan, "memory_bytes": 0}, "ReclaimSample.cpus"),
        ({"cpus": 1.0, "memory_bytes": -1}, "ReclaimSample.memory_bytes"),
        ({"cpus": 1.0, "memory_bytes": 2**63}, "ReclaimSample.memory_bytes"),
        (
            {"cpus": 1.0, "memory_bytes": 0, "cpu_weights": {0: -1.0}},
            "ReclaimSample.cpu_weights[0]: must be finite and >= 0",
        ),
        (
            {"cpus": 1.0, "memory_bytes": 0, "memory_weights": {-1: 1.0}},
            "ReclaimSample.memory_weights: NUMA node ids must be integers >= 0",
        ),
    ],
)
def test_a_bad_sample_is_refused_with_the_field_named(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ReclaimSample(**fields)  # type: ignore[arg-type]
