"""Properties over random sequences of pods coming and going on three NICs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.qrm.network.inventory import NIC
from agent.qrm.network.policy import RESOURCE, NetworkPolicy
from agent.qrm.types import AllocationRefused, ContainerType, InvalidRequest
from katalyst.qos import PodUID, QoSLevel
from tests.unit.qrm.network.machines import request

NICS = (
    NIC(name="eth0", speed_mbit=1000, numa_node=0),
    NIC(name="eth1", speed_mbit=2000, numa_node=1),
    NIC(name="vf0", speed_mbit=500, numa_node=None, netns="tenant"),
)
RESERVED = 0.2
ALLOCATABLE = {"eth0": 800.0, "eth1": 1600.0, "vf0": 400.0}
CONTAINERS = {
    "app": ContainerType.MAIN,
    "proxy": ContainerType.SIDECAR,
    "setup": ContainerType.INIT,
}

_allocate = st.fixed_dictionaries(
    {
        "pod": st.integers(min_value=0, max_value=5),
        "container": st.sampled_from(sorted(CONTAINERS)),
        "mbit": st.one_of(
            st.integers(min_value=0, max_value=1800).map(float),
            st.floats(min_value=0, max_value=900, allow_nan=False),
        ),
        "level": st.sampled_from([str(level) for level in QoSLevel]),
        "namespace_type": st.sampled_from(
            [None, "host_ns", "anti_host_ns", "host_ns_preferred", "anti_host_ns_preferred"]
        ),
        "nic": st.sampled_from([None, None, None, "eth0", "eth1", "vf0"]),
        "bound": st.booleans(),
        "restricted": st.booleans(),
        "hint": st.sampled_from([None, {0}, {1}, {0, 1}]),
    }
)
_op = st.one_of(
    st.tuples(st.just("allocate"), _allocate),
    st.tuples(st.just("remove"), st.integers(min_value=0, max_value=5)),
)


def _expected_used(policy: NetworkPolicy) -> dict[str, float]:
    """Guaranteed Mbit/s per NIC, recomputed from the plans: per pod, the larger of
    its largest init container and the sum of the others; reclaimed pods count 0."""
    used = dict.fromkeys(ALLOCATABLE, 0.0)
    for containers in policy.plans().values():
        plans = list(containers.values())
        assert len({p.nic for p in plans}) == 1, "a pod's containers share one NIC"
        inits = [p.request_mbit for p in plans if p.init]
        others = sum(p.request_mbit for p in plans if not p.init)
        need = max([others, *inits])
        if plans[0].level is QoSLevel.RECLAIMED_CORES:
            need = 0.0
        used[plans[0].nic] += need
    return used


def _check(policy: NetworkPolicy) -> None:
    used = _expected_used(policy)
    rates = policy.class_rates()
    for name, allocatable in ALLOCATABLE.items():
        assert policy.allocatable_mbit(name) == allocatable
        free = policy.free_mbit(name)
        assert free >= 0
        assert abs(free - (allocatable - used[name])) < 1e-6, name
        assert used[name] <= allocatable + 1e-6, f"{name} is over-committed"
        assert rates[name]["reclaimed"] == 0.0
        assert abs(rates[name]["system"] + rates[name]["shared"] - used[name]) < 1e-6


@given(ops=st.lists(_op, max_size=30))
def test_guarantees_never_exceed_what_a_nic_offers(ops: list[tuple[str, object]]) -> None:
    policy = NetworkPolicy(NICS, reserved_ratio=RESERVED)
    for kind, arg in ops:
        if kind == "remove":
            assert isinstance(arg, int)
            policy.remove_pod(PodUID(f"pod-{arg}"))
            assert PodUID(f"pod-{arg}") not in policy.plans()
        else:
            assert isinstance(arg, dict)
            network = {}
            if arg["namespace_type"] is not None:
                network["namespace_type"] = arg["namespace_type"]
            if arg["restricted"]:
                network["topology_affinity_restricted"] = "true"
            req = request(
                f"pod-{arg['pod']}",
                arg["mbit"],
                level=arg["level"],
                container=arg["container"],
                container_type=CONTAINERS[arg["container"]],
                network=network,
                bound=arg["bound"],
                hint=arg["hint"],
                nic=arg["nic"],
            )
            before = policy.to_state()
            try:
                answer = policy.allocate(req)[RESOURCE]
            except (AllocationRefused, InvalidRequest):
                assert policy.to_state() == before, "a refusal changed the state"
            else:
                assert policy.allocate(req)[RESOURCE] == answer, "not idempotent"
                assert policy.pod_nic(req.pod_uid) is not None
                assert answer.allocation_result == policy.pod_nic(req.pod_uid).name  # type: ignore[union-attr]
        _check(policy)
    for uid in list(policy.plans()):
        policy.remove_pod(uid)
    assert {n: policy.free_mbit(n) for n in ALLOCATABLE} == ALLOCATABLE


@given(
    asks=st.lists(st.integers(min_value=1, max_value=900), min_size=1, max_size=8),
    victim=st.integers(min_value=0, max_value=7),
)
def test_removing_a_pod_restores_exactly_what_it_took(asks: list[int], victim: int) -> None:
    policy = NetworkPolicy(NICS, reserved_ratio=RESERVED)
    admitted: list[PodUID] = []
    for i, ask in enumerate(asks):
        try:
            policy.allocate(request(f"p{i}", ask))
        except AllocationRefused:
            continue
        admitted.append(PodUID(f"p{i}"))
    assert admitted, "the first pod always fits (eth1 offers 1600 Mbit/s)"
    uid = admitted[victim % len(admitted)]
    nic = policy.pod_nic(uid)
    assert nic is not None
    taken = policy.plans()[uid]["app"].guaranteed_mbit
    free = policy.free_mbit(nic.name)
    policy.remove_pod(uid)
    assert policy.free_mbit(nic.name) == free + taken
