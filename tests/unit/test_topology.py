"""CPU topology from a sysfs tree written by the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from katalyst.cpuset import CPUSet
from katalyst.topology import TopologyError, read_cpu_topology


def _machine(
    root: Path, *, sockets: int, dies: int, cores: int, smt: int, numa_per_socket: int
) -> None:
    """Write sysfs for a machine; core_id restarts on every die, as on real multi-die parts."""
    cpu_dir = root / "devices/system/cpu"
    cpu_dir.mkdir(parents=True)
    per_core = smt
    per_socket = dies * cores * smt
    total = sockets * per_socket
    (cpu_dir / "online").write_text(f"0-{total - 1}\n")
    numa: dict[int, list[int]] = {}
    for cpu in range(total):
        socket, rest = divmod(cpu, per_socket)
        die, rest = divmod(rest, cores * smt)
        core_id, _thread = divmod(rest, smt)
        first = cpu - cpu % per_core
        topo = cpu_dir / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "core_id").write_text(f"{core_id}\n")
        (topo / "physical_package_id").write_text(f"{socket}\n")
        (topo / "thread_siblings_list").write_text(
            f"{first}-{first + smt - 1}\n" if smt > 1 else f"{cpu}\n"
        )
        node = socket * numa_per_socket + (die * numa_per_socket) // dies
        numa.setdefault(node, []).append(cpu)
    for node, cpus in numa.items():
        d = root / f"devices/system/node/node{node}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(str(CPUSet.of(cpus)) + "\n")


def test_two_sockets_two_numa_nodes_with_smt(tmp_path: Path) -> None:
    _machine(tmp_path, sockets=2, dies=1, cores=4, smt=2, numa_per_socket=1)
    topo = read_cpu_topology(tmp_path)
    assert topo.online == CPUSet.parse("0-15")
    assert dict(topo.numa_nodes()) == {0: CPUSet.parse("0-7"), 1: CPUSet.parse("8-15")}
    assert len(topo.sockets()) == 2
    assert len(topo.cores()) == 8
    assert topo.cores()[2] == CPUSet.parse("2-3")


def test_core_ids_that_repeat_on_each_die_are_still_distinct_cores(tmp_path: Path) -> None:
    _machine(tmp_path, sockets=1, dies=2, cores=2, smt=1, numa_per_socket=2)
    topo = read_cpu_topology(tmp_path)
    assert len(topo.cores()) == 4, "core_id 0 on die 0 and die 1 are two cores"
    assert len(topo.numa_nodes()) == 2


def test_a_machine_without_numa_or_topology_files_is_one_node(tmp_path: Path) -> None:
    cpu_dir = tmp_path / "devices/system/cpu"
    cpu_dir.mkdir(parents=True)
    (cpu_dir / "online").write_text("0-2\n")
    topo = read_cpu_topology(tmp_path)
    assert dict(topo.numa_nodes()) == {0: CPUSet.parse("0-2")}
    assert len(topo.cores()) == 3


@pytest.mark.parametrize("bad", ["", "zero", "3-1"])
def test_bad_sysfs_is_a_topology_error_naming_the_file(tmp_path: Path, bad: str) -> None:
    cpu_dir = tmp_path / "devices/system/cpu"
    cpu_dir.mkdir(parents=True)
    (cpu_dir / "online").write_text("0\n")
    (cpu_dir / "cpu0/topology").mkdir(parents=True)
    (cpu_dir / "cpu0/topology/physical_package_id").write_text(bad or "x\n")
    with pytest.raises(TopologyError, match="physical_package_id"):
        read_cpu_topology(tmp_path)


def test_this_machine(tmp_path: Path) -> None:
    topo = read_cpu_topology("/sys")
    assert len(topo.online) >= 1
    assert sum(len(c) for c in topo.numa_nodes().values()) == len(topo.online)
