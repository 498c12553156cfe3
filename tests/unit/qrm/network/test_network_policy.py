"""The network policy's decisions: NIC choice, guarantees, hints, state."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agent.qrm.checkpoints import restore_or_new
from agent.qrm.network.inventory import NIC
from agent.qrm.network.policy import (
    BANDWIDTH_ANNOTATION,
    NETNS_NAME_ANNOTATION,
    NIC_NAME_ANNOTATION,
    PLUGIN_NAME,
    QOS_CLASS_ANNOTATION,
    RESOURCE,
    NetworkPolicy,
)
from agent.qrm.types import (
    AllocationRefused,
    ContainerType,
    InvalidRequest,
    PluginOptions,
    TopologyHint,
)
from katalyst.checkpoint import CheckpointStore
from katalyst.qos import PodUID
from tests.unit.qrm.network.machines import request

ETH0 = NIC(name="eth0", speed_mbit=10000, numa_node=0, pci_address="0000:3b:00.0")
ETH1 = NIC(name="eth1", speed_mbit=10000, numa_node=1, pci_address="0000:af:00.0")
TENANT = NIC(name="vf0", speed_mbit=10000, numa_node=0, netns="tenant")
RESTRICTED = {"topology_affinity_restricted": "true"}


def two_numa(reserved_ratio: float = 0.1) -> NetworkPolicy:
    """A 10 Gbit/s NIC on each of two NUMA nodes, 10 % kept: 9000 Mbit/s each."""
    return NetworkPolicy([ETH0, ETH1], reserved_ratio=reserved_ratio)


def hint(*nodes: int, preferred: bool = True) -> TopologyHint:
    return TopologyHint(nodes=frozenset(nodes), preferred=preferred)


def test_identity_and_options() -> None:
    policy = two_numa()
    assert policy.plugin_name == PLUGIN_NAME == "qrm_network_plugin"
    assert policy.resource_name == RESOURCE == "resource.katalyst.kubewharf.io/net_bandwidth"
    assert policy.options() == PluginOptions(
        pre_start_required=False, with_topology_alignment=True, need_reconcile=True
    )
    assert policy.nics == (ETH0, ETH1)
    assert policy.allocatable_mbit("eth0") == 9000


def test_a_request_that_fits_gets_a_nic_and_is_accounted() -> None:
    policy = two_numa()
    answer = policy.allocate(request("web", 300))[RESOURCE]
    assert answer.allocation_result == "eth0"  # equal free: the first by name
    assert answer.allocated_quantity == 300.0
    assert answer.is_scalar_resource and answer.is_node_resource
    assert answer.topology_assignments == {0: 300}
    assert answer.hints == (hint(0),)
    assert answer.annotations == {
        NIC_NAME_ANNOTATION: "eth0",
        BANDWIDTH_ANNOTATION: "300",
        QOS_CLASS_ANNOTATION: "shared",
    }
    assert policy.free_mbit("eth0") == 8700
    assert policy.free_mbit("eth1") == 9000
    assert policy.allocations() == {PodUID("web"): {"app": {RESOURCE: answer}}}


def test_fractional_quantities_are_kept_exactly() -> None:
    policy = two_numa()
    answer = policy.allocate(request("p", 0.3))[RESOURCE]
    assert answer.allocated_quantity == 0.3
    assert answer.annotations[BANDWIDTH_ANNOTATION] == "0.3"
    assert answer.topology_assignments == {0: 1}  # whole Mbit/s, rounded up
    assert policy.free_mbit("eth0") == 8999.7
    # 2.007 * 1000 is 2007.0000000000002 in binary floating point: still 2.007.
    other = policy.allocate(request("q", 2.007, nic="eth1"))[RESOURCE]
    assert other.annotations[BANDWIDTH_ANNOTATION] == "2.007"
    assert policy.free_mbit("eth1") == 8997.993


def test_no_bandwidth_request_is_zero_and_still_gets_a_nic() -> None:
    policy = two_numa()
    answer = policy.allocate(request("p", None))[RESOURCE]
    assert answer.allocation_result == "eth0"
    assert answer.allocated_quantity == 0.0


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_a_bad_quantity_is_an_invalid_request_naming_the_resource(value: float) -> None:
    policy = two_numa()
    with pytest.raises(InvalidRequest, match=r"resource 'resource\.katalyst\.kubewharf\.io/net"):
        policy.allocate(request("p", value))


def test_a_request_that_fits_nowhere_is_refused_and_nothing_changes() -> None:
    policy = two_numa()
    policy.allocate(request("a", 8800))
    policy.allocate(request("b", 8900))
    before, generation = policy.to_state(), policy.generation
    with pytest.raises(AllocationRefused) as refused:
        policy.allocate(request("web", 300))
    assert str(refused.value) == (
        "nic eth0 has 200 Mbit/s free of 9000, nic eth1 has 100 Mbit/s free of 9000, "
        f"pod default/web asks 300 Mbit/s of {RESOURCE}"
    )
    assert policy.to_state() == before
    assert policy.generation == generation
    assert policy.free_mbit("eth0") == 200


def test_an_absurd_ask_is_refused_not_crashed() -> None:
    policy = two_numa()
    with pytest.raises(AllocationRefused, match="asks 1e\\+300 Mbit/s"):
        policy.allocate(request("p", 1e300))


def test_pods_spread_over_the_nic_with_most_free_bandwidth() -> None:
    policy = two_numa()
    nics = [policy.allocate(request(f"p{i}", 1000))[RESOURCE].allocation_result for i in range(4)]
    assert nics == ["eth0", "eth1", "eth0", "eth1"]
    policy.allocate(request("big", 3000))  # equal free again: eth0, by name
    assert policy.free_mbit("eth0") == 4000
    assert policy.allocate(request("next", 10))[RESOURCE].allocation_result == "eth1"


def test_a_numa_bound_pod_prefers_a_nic_on_its_hint() -> None:
    policy = two_numa()
    policy.allocate(request("filler", 5000, hint={1}))  # not bound: the hint is ignored
    assert policy.free_mbit("eth0") == 4000
    bound = policy.allocate(request("db", 1000, level="dedicated_cores", bound=True, hint={0}))
    assert bound[RESOURCE].allocation_result == "eth0"  # local, though eth1 has more free
    assert bound[RESOURCE].annotations[QOS_CLASS_ANNOTATION] == "system"
    # Preferred, not required: when the local NIC cannot fit, another one is taken.
    far = policy.allocate(request("far", 3500, level="dedicated_cores", bound=True, hint={0}))
    assert far[RESOURCE].allocation_result == "eth1"


def test_restricted_affinity_requires_a_nic_on_the_hint() -> None:
    policy = two_numa()
    policy.allocate(request("filler", 8500, nic="eth1"))
    before = policy.to_state()
    with pytest.raises(AllocationRefused) as refused:
        policy.allocate(
            request("db", 1000, level="dedicated_cores", bound=True, hint={1}, network=RESTRICTED)
        )
    message = str(refused.value)
    assert "nic eth1 has 500 Mbit/s free of 9000" in message
    assert "pod default/db asks 1000 Mbit/s" in message
    assert "NUMA nodes 1" in message and "topology_affinity_restricted" in message
    assert "eth0" not in message  # not a candidate
    assert policy.to_state() == before
    ok = policy.allocate(
        request("db", 400, level="dedicated_cores", bound=True, hint={1}, network=RESTRICTED)
    )
    assert ok[RESOURCE].allocation_result == "eth1"


def test_restricted_affinity_without_a_nic_on_the_hint_names_where_the_nics_are() -> None:
    policy = NetworkPolicy([ETH0])
    with pytest.raises(AllocationRefused, match=r"requires a NIC on NUMA nodes 1.*eth0 is on NUMA"):
        policy.allocate(request("db", 10, bound=True, hint={1}, network=RESTRICTED))


def test_numa_plays_no_part_when_no_nic_knows_its_node() -> None:
    policy = NetworkPolicy([NIC(name="eth0", speed_mbit=1000, numa_node=None)])
    bound = request("db", 10, bound=True, hint={1}, network=RESTRICTED)
    assert policy.topology_hints(bound) == {}
    answer = policy.allocate(bound)[RESOURCE]
    assert answer.allocation_result == "eth0"
    assert answer.topology_assignments == {}
    assert answer.hints == ()


@pytest.mark.parametrize(
    ("namespace_type", "full", "expected"),
    [
        ("host_ns", None, "eth0"),
        ("anti_host_ns", None, "vf0"),
        ("host_ns_preferred", None, "eth0"),
        ("anti_host_ns_preferred", None, "vf0"),
        ("host_ns_preferred", "eth0", "vf0"),  # preferred full: the other is accepted
        ("anti_host_ns_preferred", "vf0", "eth0"),
    ],
)
def test_namespace_type_filters_and_ranks_the_nics(
    namespace_type: str, full: str | None, expected: str
) -> None:
    policy = NetworkPolicy([ETH0, TENANT])
    if full is not None:
        policy.allocate(request("filler", 9950, nic=full))
    answer = policy.allocate(request("p", 100, network={"namespace_type": namespace_type}))
    assert answer[RESOURCE].allocation_result == expected
    if expected == "vf0":
        assert answer[RESOURCE].annotations[NETNS_NAME_ANNOTATION] == "tenant"
    else:
        assert NETNS_NAME_ANNOTATION not in answer[RESOURCE].annotations


def test_a_strict_namespace_type_never_takes_the_other_kind() -> None:
    policy = NetworkPolicy([ETH0, TENANT])
    policy.allocate(request("filler", 9950, nic="eth0"))
    with pytest.raises(AllocationRefused, match="nic eth0 has 50 Mbit/s free of 10000, pod"):
        policy.allocate(request("p", 100, network={"namespace_type": "host_ns"}))
    only_host = NetworkPolicy([ETH0])
    with pytest.raises(AllocationRefused, match=r"anti_host_ns.*this node has eth0 in the host"):
        only_host.allocate(request("p", 100, network={"namespace_type": "anti_host_ns"}))
    assert only_host.topology_hints(
        request("p", 100, network={"namespace_type": "anti_host_ns"})
    ) == {RESOURCE: ()}


def test_the_nic_name_annotation_picks_the_nic() -> None:
    policy = two_numa()
    policy.allocate(request("filler", 5000))
    answer = policy.allocate(request("p", 100, nic="eth0"))  # eth1 has more free
    assert answer[RESOURCE].allocation_result == "eth0"


def test_an_unknown_nic_name_is_an_invalid_request_naming_everything() -> None:
    policy = two_numa()
    with pytest.raises(InvalidRequest) as invalid:
        policy.allocate(request("p", 100, nic="eth9"))
    assert str(invalid.value) == (
        f"annotation {NIC_NAME_ANNOTATION}: NIC 'eth9' does not exist on this node "
        "(NICs: eth0, eth1)"
    )
    with pytest.raises(InvalidRequest, match="eth9"):
        policy.topology_hints(request("p", 100, nic="eth9"))
    assert policy.allocations() == {}


def test_a_nic_name_against_the_namespace_type_is_an_invalid_request() -> None:
    policy = NetworkPolicy([ETH0, TENANT])
    with pytest.raises(InvalidRequest, match=r"names NIC vf0 in netns tenant, but.* host_ns"):
        policy.allocate(request("p", 100, nic="vf0", network={"namespace_type": "host_ns"}))


def test_reclaimed_pods_get_a_nic_but_consume_nothing() -> None:
    policy = two_numa()
    answer = policy.allocate(request("batch", 5000, level="reclaimed_cores"))[RESOURCE]
    assert answer.allocation_result == "eth0"
    assert answer.allocated_quantity == 0.0
    assert answer.annotations[BANDWIDTH_ANNOTATION] == "0"
    assert answer.annotations[QOS_CLASS_ANNOTATION] == "reclaimed"
    assert answer.topology_assignments == {0: 0}
    assert policy.free_mbit("eth0") == 9000
    # Even a full NIC takes a reclaimed pod.
    policy.allocate(request("a", 9000, nic="eth0"))
    policy.allocate(request("b", 9000, nic="eth1"))
    assert policy.allocate(request("more", 100_000, level="reclaimed_cores"))[RESOURCE]


def test_allocate_is_idempotent_and_a_changed_request_re_decides() -> None:
    policy = two_numa()
    first = policy.allocate(request("p", 300))
    generation = policy.generation
    assert policy.allocate(request("p", 300)) == first
    assert policy.generation == generation
    # A bigger ask is decided again, without the old one counted against it.
    policy.allocate(request("filler", 8000, nic="eth1"))
    bigger = policy.allocate(request("p", 9000))[RESOURCE]
    assert bigger.allocation_result == "eth0"
    assert policy.free_mbit("eth0") == 0
    # One that cannot fit is refused and the earlier decision stays.
    before = policy.to_state()
    with pytest.raises(AllocationRefused, match="asks 9500"):
        policy.allocate(request("p", 9500))
    assert policy.to_state() == before


def test_containers_of_a_pod_share_its_nic() -> None:
    policy = two_numa()
    policy.allocate(request("web", 1000, container="app"))
    assert policy.free_mbit("eth1") > policy.free_mbit("eth0")
    sidecar = policy.allocate(
        request("web", 200, container="proxy", container_type=ContainerType.SIDECAR)
    )
    assert sidecar[RESOURCE].allocation_result == "eth0"
    assert policy.free_mbit("eth0") == 7800
    # An init container runs before the others: the pod needs the larger of the two.
    policy.allocate(request("web", 1100, container="init", container_type=ContainerType.INIT))
    assert policy.free_mbit("eth0") == 7800
    policy.allocate(request("web", 2000, container="init2", container_type=ContainerType.INIT))
    assert policy.free_mbit("eth0") == 7000
    assert policy.pod_nic(PodUID("web")) == ETH0


def test_a_later_container_that_does_not_fit_its_pods_nic_is_refused() -> None:
    policy = two_numa()
    policy.allocate(request("web", 1000, container="app"))
    policy.allocate(request("other", 7900, nic="eth0"))
    before = policy.to_state()
    with pytest.raises(AllocationRefused) as refused:
        policy.allocate(request("web", 500, container="proxy"))
    message = str(refused.value)
    assert message.startswith("nic eth0 has 100 Mbit/s free of 9000, pod default/web asks 500")
    assert "chosen for container app" in message
    assert policy.to_state() == before


def test_a_later_container_must_agree_with_its_pod() -> None:
    policy = two_numa()
    policy.allocate(request("web", 100, container="app"))
    with pytest.raises(InvalidRequest, match="already on NIC eth0"):
        policy.allocate(request("web", 100, container="proxy", nic="eth1"))
    with pytest.raises(InvalidRequest, match="the QoS level is the pod's"):
        policy.allocate(request("web", 100, container="proxy", level="reclaimed_cores"))
    policy.allocate(request("db", 100, bound=True, hint={0}, network=RESTRICTED))
    with pytest.raises(AllocationRefused, match="its NIC eth0 is on NUMA node 0"):
        policy.allocate(
            request("db", 100, container="side", bound=True, hint={1}, network=RESTRICTED)
        )


def test_remove_pod_gives_the_bandwidth_back() -> None:
    policy = two_numa()
    policy.allocate(request("web", 1000))
    policy.allocate(request("web", 1000, container="proxy"))
    assert policy.free_mbit("eth0") == 7000
    policy.remove_pod(PodUID("web"))
    assert policy.free_mbit("eth0") == 9000
    assert policy.allocations() == {}
    generation = policy.generation
    policy.remove_pod(PodUID("never-seen"))
    assert policy.generation == generation


def test_class_rates_sum_the_guarantees_per_nic_and_class() -> None:
    policy = two_numa()
    policy.allocate(request("s1", 100, nic="eth0"))
    policy.allocate(request("s2", 250, nic="eth0"))
    policy.allocate(request("sys", 50, level="system_cores", nic="eth0"))
    policy.allocate(request("ded", 1000, level="dedicated_cores", nic="eth1"))
    policy.allocate(request("batch", 700, level="reclaimed_cores", nic="eth1"))
    assert policy.class_rates() == {
        "eth0": {"system": 50.0, "shared": 350.0, "reclaimed": 0.0},
        "eth1": {"system": 1000.0, "shared": 0.0, "reclaimed": 0.0},
    }


def test_topology_hints_per_numa_node() -> None:
    policy = two_numa()
    assert policy.topology_hints(request("p", 500)) == {RESOURCE: (hint(0), hint(1))}
    policy.allocate(request("a", 8800, nic="eth0"))
    # eth0 has room (200) but not enough: a hint, not preferred.
    assert policy.topology_hints(request("p", 500)) == {
        RESOURCE: (hint(0, preferred=False), hint(1))
    }
    policy.allocate(request("b", 9000, nic="eth1"))
    # eth1 is full: no hint for node 1.
    assert policy.topology_hints(request("p", 500)) == {RESOURCE: (hint(0, preferred=False),)}
    assert policy.topology_hints(request("p", 100)) == {RESOURCE: (hint(0),)}
    # Reclaimed pods need no room.
    assert policy.topology_hints(request("p", 500, level="reclaimed_cores")) == {
        RESOURCE: (hint(0), hint(1))
    }


def test_topology_hints_for_a_pod_that_has_its_nic() -> None:
    policy = two_numa()
    policy.allocate(request("web", 100, nic="eth1"))
    assert policy.topology_hints(request("web", 100, container="proxy")) == {RESOURCE: (hint(1),)}
    assert policy.topology_hints(request("web", 9000, container="proxy")) == {
        RESOURCE: (hint(1, preferred=False),)
    }


def test_a_fitting_nic_of_unknown_node_makes_every_node_acceptable() -> None:
    loose = NIC(name="eth9", speed_mbit=1000, numa_node=None)
    policy = NetworkPolicy([ETH0, loose])
    policy.allocate(request("full", 10000, nic="eth0"))
    assert policy.topology_hints(request("p", 100)) == {RESOURCE: (hint(0),)}
    # Restricted: the NIC of unknown node does not count, and eth0 is full.
    restricted = request("p", 100, bound=True, network=RESTRICTED)
    assert policy.topology_hints(restricted) == {RESOURCE: ()}


def test_topology_capacity_per_numa_node() -> None:
    loose = NIC(name="eth9", speed_mbit=1000, numa_node=None)
    policy = NetworkPolicy([ETH0, ETH1, loose], reserved_ratio=0.1)
    capacity = policy.topology_capacity()[RESOURCE]
    assert capacity.capacity == {0: 11000.0, 1: 10000.0}
    assert capacity.allocatable == {0: 9900.0, 1: 9000.0}
    assert capacity.is_scalar_resource
    assert NetworkPolicy([]).topology_capacity() == {}


def test_no_nics_refuses_with_a_reason() -> None:
    with pytest.raises(AllocationRefused, match="no NIC"):
        NetworkPolicy([]).allocate(request("p", 1))


@pytest.mark.parametrize("ratio", [-0.1, 1.0, math.nan, math.inf])
def test_bad_reserved_ratio_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"reserved_ratio .* must be a number in \[0, 1\)"):
        NetworkPolicy([ETH0], reserved_ratio=ratio)


def test_duplicate_nics_are_refused() -> None:
    with pytest.raises(ValueError, match="NIC eth0 is listed more than once"):
        NetworkPolicy([ETH0, ETH0])


def test_unknown_nic_lookups_raise_key_error() -> None:
    with pytest.raises(KeyError, match="eth9"):
        two_numa().free_mbit("eth9")


# ---- checkpoints ------------------------------------------------------------------


def _busy() -> NetworkPolicy:
    policy = NetworkPolicy([ETH0, ETH1, TENANT], reserved_ratio=0.1)
    policy.allocate(request("web", 300.5))
    policy.allocate(request("web", 100, container="init", container_type=ContainerType.INIT))
    policy.allocate(request("db", 4000, level="dedicated_cores", bound=True, hint={1}))
    policy.allocate(request("batch", 700, level="reclaimed_cores"))
    policy.allocate(request("tenant", 50, network={"namespace_type": "anti_host_ns"}))
    return policy


def test_state_round_trips_through_json() -> None:
    policy = _busy()
    state = json.loads(json.dumps(policy.to_state()))
    restored = NetworkPolicy.from_state(state, nics=[ETH0, ETH1, TENANT], reserved_ratio=0.1)
    assert restored.allocations() == policy.allocations()
    assert restored.class_rates() == policy.class_rates()
    assert restored.to_state() == policy.to_state()
    for nic in ("eth0", "eth1", "vf0"):
        assert restored.free_mbit(nic) == policy.free_mbit(nic)
    # It keeps deciding the same way.
    assert restored.allocate(request("web", 300.5)) == policy.allocate(request("web", 300.5))


def test_from_state_refuses_a_vanished_nic() -> None:
    state = _busy().to_state()
    with pytest.raises(ValueError, match="NIC 'eth1' does not exist here \\(NICs: eth0, vf0\\)"):
        NetworkPolicy.from_state(state, nics=[ETH0, TENANT], reserved_ratio=0.1)


def test_from_state_refuses_guarantees_a_nic_no_longer_offers() -> None:
    state = _busy().to_state()
    slower = NIC(name="eth1", speed_mbit=1000, numa_node=1)
    with pytest.raises(ValueError, match="NIC eth1: the restored pods are guaranteed 4000 Mbit/s"):
        NetworkPolicy.from_state(state, nics=[ETH0, slower, TENANT])


@pytest.mark.parametrize(
    "state",
    [
        {"version": 2, "pods": {}},
        {"version": 1},
        {"version": 1, "pods": []},
        {"version": 1, "pods": {"p": {}}},
        {"version": 1, "pods": {"p/../x": {"app": {}}}},
        {"version": 1, "pods": {"p": {"App!": {}}}},
        {"version": 1, "pods": {"p": {"app": {"nic": "eth0"}}}},
        {"version": 1, "pods": {"p": {"app": {"nic": "eth0", "level": "x", "request_kbit": 1}}}},
        {
            "version": 1,
            "pods": {"p": {"app": {"nic": "eth0", "level": "shared_cores", "request_kbit": -1}}},
        },
        {
            "version": 1,
            "pods": {
                "p": {
                    "a": {"nic": "eth0", "level": "shared_cores", "request_kbit": 1},
                    "b": {"nic": "eth1", "level": "shared_cores", "request_kbit": 1},
                }
            },
        },
    ],
)
def test_from_state_refuses_malformed_state(state: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        NetworkPolicy.from_state(state, nics=[ETH0, ETH1])


def test_a_state_that_does_not_fit_falls_back_to_a_fresh_policy(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(PLUGIN_NAME, _busy().to_state())
    policy, restored = restore_or_new(
        store,
        PLUGIN_NAME,
        restore=lambda s: NetworkPolicy.from_state(s, nics=[ETH0]),
        new=lambda: NetworkPolicy([ETH0]),
    )
    assert not restored
    assert policy.allocations() == {}
