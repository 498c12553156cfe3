"""Checkpoint state: an exact round trip, and refusal of state that does not fit."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from agent.qrm.cpu import CPUPolicy
from agent.qrm.types import ContainerType
from katalyst.cpuset import CPUSet
from katalyst.qos import PodUID
from katalyst.topology import CPUTopology
from tests.unit.qrm.cpu.machines import request

RESERVED = CPUSet.parse("0-1")


def _busy_policy(topology: CPUTopology) -> CPUPolicy:
    policy = CPUPolicy(topology=topology, reserved=RESERVED)
    policy.allocate(request("s1"))
    policy.allocate(request("r1", level="reclaimed_cores", cpu=None))
    policy.allocate(request("y1", level="system_cores", cpuset_pool="reclaim"))
    policy.allocate(
        request(
            "d1",
            level="dedicated_cores",
            cpu=1,
            container="init",
            container_type=ContainerType.INIT,
        )
    )
    policy.allocate(request("d1", level="dedicated_cores", cpu=3))
    policy.allocate(request("d2", level="dedicated_cores", cpu=2, hint={0}, numa_binding=True))
    policy.allocate(request("d3", level="dedicated_cores", cpu=2, hint={1}, numa_exclusive=True))
    policy.set_reclaim_size(1)
    return policy


def test_round_trip_answers_identically(numa2: CPUTopology) -> None:
    policy = _busy_policy(numa2)
    saved = json.loads(json.dumps(policy.to_state()))
    restored = CPUPolicy.from_state(saved, topology=numa2, reserved=RESERVED)
    assert restored.allocations() == policy.allocations()
    assert restored.pools() == policy.pools()
    assert restored.generation == policy.generation
    assert restored.reclaim_size == 1
    assert restored.to_state() == policy.to_state()
    # And it goes on deciding from there: the restored sets are not handed out again.
    hints = restored.topology_hints(
        request("d4", level="dedicated_cores", cpu=1, numa_binding=True)
    )
    assert hints == policy.topology_hints(
        request("d4", level="dedicated_cores", cpu=1, numa_binding=True)
    )
    taken = RESERVED
    for name, cpus in policy.pools().items():
        if name.startswith("dedicated/"):
            taken = taken.union(cpus)
    answer = restored.allocate(request("d4", level="dedicated_cores", cpu=1))
    assert not CPUSet.parse(answer["cpu"].allocation_result).intersection(taken)


def test_an_empty_policy_round_trips(numa2: CPUTopology) -> None:
    policy = CPUPolicy(topology=numa2, reserved=RESERVED)
    restored = CPUPolicy.from_state(policy.to_state(), topology=numa2, reserved=RESERVED)
    assert restored.allocations() == {}
    assert restored.to_state() == policy.to_state()


def _pod(state: dict[str, Any], uid: str) -> dict[str, Any]:
    pod: dict[str, Any] = state["pods"][uid]
    return pod


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(state: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target: Any = state
        for key in parents:
            target = target[key]
        target[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(state: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target: Any = state
        for key in parents:
            target = target[key]
        del target[last]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (_set("version", 2), "version 2, expected 1"),
        (_set("pods", []), "cpu state.pods: must be a JSON object"),
        (_delete("generation"), "'generation' is missing"),
        (_set("reclaim_size", -3), "reclaim_size: -3"),
        (_set("pods/d1/dedicated/cpus", "2-4,40-41"), "CPUs 40-41 are not online"),
        (_set("pods/d1/dedicated/cpus", "1-4"), "CPUs 1 are reserved"),
        (_set("pods/d1/dedicated/cpus", "2-3,6"), "CPU 6 is dedicated to both"),
        (_set("pods/d1/dedicated/cpus", "2-3"), "holds 2 CPUs but its containers need 3"),
        (_set("pods/d1/dedicated/cpus", "zero"), "is not N or N-M"),
        (_set("pods/d1/dedicated", None), "needs a dedicated set"),
        (
            _set("pods/s1/dedicated", {"cpus": "6", "numa_nodes": None, "numa_exclusive": False}),
            "needs a dedicated set",
        ),
        (_set("pods/d2/dedicated/numa_nodes", "1"), "outside its NUMA nodes 1"),
        (_set("pods/d2/dedicated/numa_nodes", "5"), "names NUMA nodes this node lacks"),
        (_set("pods/d3/dedicated/cpus", "8-14"), "a NUMA-exclusive set must be every"),
        (_set("pods/s1/containers/app/pool", "reserve"), "'reserve' is not a pool of a shared"),
        (_set("pods/s1/containers/app/level", "gold"), "'gold' is not a QoS level"),
        (_set("pods/s1/containers/app/type", 9), "9 is not a container type"),
        (_set("pods/s1/containers/app/milli_cpu", True), "True is not an integer"),
        (_set("pods/s1/containers/app/hint", {"nodes": "0"}), "is not a list"),
        (_set("pods/s1/containers", {}), "has no containers"),
        (_set("pods/s1/containers/Bad_Name", {}), "'Bad_Name' is not a container name"),
        (_set("pods/bad uid", {}), "not a pod UID"),
    ],
)
def test_a_state_that_does_not_fit_is_refused_naming_the_problem(
    numa2: CPUTopology, mutate: Callable[[dict[str, Any]], None], problem: str
) -> None:
    state = copy.deepcopy(json.loads(json.dumps(_busy_policy(numa2).to_state())))
    mutate(state)
    with pytest.raises(ValueError, match=re.escape(problem)):
        CPUPolicy.from_state(state, topology=numa2, reserved=RESERVED)


def test_a_state_from_a_bigger_machine_is_refused(numa2: CPUTopology, flat2: CPUTopology) -> None:
    state = _busy_policy(numa2).to_state()
    with pytest.raises(ValueError, match="not online on this node"):
        CPUPolicy.from_state(state, topology=flat2, reserved=CPUSet.parse("0"))


def test_a_state_whose_dedicated_cpus_are_now_reserved_is_refused(numa2: CPUTopology) -> None:
    state = _busy_policy(numa2).to_state()
    with pytest.raises(ValueError, match="reserved on this node"):
        CPUPolicy.from_state(state, topology=numa2, reserved=CPUSet.parse("0-3"))


def test_pod_ids_survive_as_pod_uids(numa2: CPUTopology) -> None:
    restored = CPUPolicy.from_state(
        _busy_policy(numa2).to_state(), topology=numa2, reserved=RESERVED
    )
    restored.remove_pod(PodUID("d1"))
    assert "dedicated/d1" not in restored.pools()
