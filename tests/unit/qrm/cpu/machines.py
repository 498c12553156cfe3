"""Machines for the CPU policy tests, written as sysfs trees, and request builders."""

from __future__ import annotations

import json
from pathlib import Path

from agent.qrm.types import ContainerRequest, ContainerType, TopologyHint
from katalyst.cpuset import CPUSet
from katalyst.qos import (
    CPU_ENHANCEMENT_ANNOTATION,
    MEMORY_ENHANCEMENT_ANNOTATION,
    QOS_LEVEL_ANNOTATION,
    PodUID,
    parse_enhancements,
    parse_qos_level,
)
from katalyst.topology import CPUTopology, read_cpu_topology


def write_numa_machine(root: Path, *, nodes: int, cores_per_node: int, threads: int) -> Path:
    """Write sysfs for ``nodes`` NUMA nodes (one socket each) of ``cores_per_node``
    cores with ``threads`` SMT siblings; siblings have adjacent ids (0-1, 2-3...)."""
    cpu_dir = root / "devices/system/cpu"
    cpu_dir.mkdir(parents=True)
    per_node = cores_per_node * threads
    total = nodes * per_node
    (cpu_dir / "online").write_text(f"0-{total - 1}\n")
    for cpu in range(total):
        first = cpu - cpu % threads
        topo = cpu_dir / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "core_cpus_list").write_text(f"{CPUSet.of(range(first, first + threads))}\n")
        (topo / "physical_package_id").write_text(f"{cpu // per_node}\n")
    for node in range(nodes):
        node_dir = root / f"devices/system/node/node{node}"
        node_dir.mkdir(parents=True)
        cpus = CPUSet.of(range(node * per_node, (node + 1) * per_node))
        (node_dir / "cpulist").write_text(f"{cpus}\n")
    return root


def write_flat_machine(root: Path, *, cpus: int) -> Path:
    """Write sysfs for a machine with no NUMA or topology files (one node, no SMT)."""
    cpu_dir = root / "devices/system/cpu"
    cpu_dir.mkdir(parents=True)
    (cpu_dir / "online").write_text(f"0-{cpus - 1}\n")
    return root


def two_numa(root: Path) -> CPUTopology:
    """Two NUMA nodes x 4 cores x 2 threads: node 0 is CPUs 0-7, node 1 is 8-15."""
    return read_cpu_topology(write_numa_machine(root, nodes=2, cores_per_node=4, threads=2))


def flat_two_cpus(root: Path) -> CPUTopology:
    """Two CPUs, no NUMA information."""
    return read_cpu_topology(write_flat_machine(root, cpus=2))


def request(
    uid: str,
    *,
    level: str = "shared_cores",
    cpu: float | None = 1.0,
    container: str = "app",
    container_type: ContainerType = ContainerType.MAIN,
    numa_binding: bool = False,
    numa_exclusive: bool = False,
    cpuset_pool: str | None = None,
    hint: set[int] | None = None,
    namespace: str = "default",
) -> ContainerRequest:
    """A ``cpu`` request as the plugin server builds it from the kubelet's."""
    annotations = {QOS_LEVEL_ANNOTATION: level}
    if numa_binding or numa_exclusive:
        memory = {"numa_binding": "true"}
        if numa_exclusive:
            memory["numa_exclusive"] = "true"
        annotations[MEMORY_ENHANCEMENT_ANNOTATION] = json.dumps(memory)
    if cpuset_pool is not None:
        annotations[CPU_ENHANCEMENT_ANNOTATION] = json.dumps({"cpuset_pool": cpuset_pool})
    parsed = parse_qos_level(annotations)
    return ContainerRequest(
        pod_uid=PodUID(uid),
        pod_namespace=namespace,
        pod_name=f"pod-{uid}",
        container_name=container,
        container_type=container_type,
        container_index=0,
        resource_name="cpu",
        requests={} if cpu is None else {"cpu": cpu},
        level=parsed,
        enhancements=parse_enhancements(annotations, parsed),
        annotations=annotations,
        hint=None if hint is None else TopologyHint(nodes=frozenset(hint), preferred=True),
    )
