"""Node CPU topology from sysfs: CPUs, physical cores (SMT siblings), sockets, NUMA nodes.

The sysfs root is injectable so that tests describe any machine (two NUMA nodes,
SMT) with a directory tree; on a host it is ``/sys``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from katalyst.cpuset import CPUSet


class TopologyError(Exception):
    """sysfs does not describe the CPUs in a way we can use."""


@dataclass(frozen=True, slots=True)
class CPUInfo:
    """One logical CPU."""

    cpu: int
    core: int
    """Physical core id, unique per socket."""
    socket: int
    numa: int


@dataclass(frozen=True, slots=True)
class CPUTopology:
    """The online CPUs and how they group."""

    cpus: tuple[CPUInfo, ...]

    @property
    def online(self) -> CPUSet:
        """Every online CPU."""
        return CPUSet.of(c.cpu for c in self.cpus)

    def numa_nodes(self) -> Mapping[int, CPUSet]:
        """NUMA node id -> its CPUs."""
        out: dict[int, set[int]] = {}
        for c in self.cpus:
            out.setdefault(c.numa, set()).add(c.cpu)
        return {n: CPUSet.of(ids) for n, ids in sorted(out.items())}

    def sockets(self) -> Mapping[int, CPUSet]:
        """Socket id -> its CPUs."""
        out: dict[int, set[int]] = {}
        for c in self.cpus:
            out.setdefault(c.socket, set()).add(c.cpu)
        return {s: CPUSet.of(ids) for s, ids in sorted(out.items())}

    def cores(self) -> Mapping[tuple[int, int], CPUSet]:
        """(socket, core) -> the SMT sibling CPUs of that physical core."""
        out: dict[tuple[int, int], set[int]] = {}
        for c in self.cpus:
            out.setdefault((c.socket, c.core), set()).add(c.cpu)
        return {k: CPUSet.of(ids) for k, ids in sorted(out.items())}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise TopologyError(f"cannot read {path}: {exc.strerror}") from exc


def read_cpu_topology(sysfs: str | os.PathLike[str] = "/sys") -> CPUTopology:
    """Read the online CPUs' topology below ``sysfs``.

    Machines (and containers, and some VMs) without NUMA information in sysfs are
    one NUMA node, 0; a CPU without topology files is its own core on socket 0.
    """
    root = Path(sysfs)
    cpu_dir = root / "devices/system/cpu"
    try:
        online = CPUSet.parse(_read(cpu_dir / "online"))
    except ValueError as exc:
        raise TopologyError(f"{cpu_dir / 'online'}: {exc}") from exc
    numa_of: dict[int, int] = {}
    node_dir = root / "devices/system/node"
    if node_dir.is_dir():
        for entry in sorted(node_dir.iterdir()):
            name = entry.name
            if name.startswith("node") and name[4:].isdigit():
                try:
                    members = CPUSet.parse(_read(entry / "cpulist"))
                except ValueError as exc:
                    raise TopologyError(f"{entry / 'cpulist'}: {exc}") from exc
                for cpu in members:
                    numa_of[cpu] = int(name[4:])
    infos: list[CPUInfo] = []
    for cpu in online:
        topo = cpu_dir / f"cpu{cpu}" / "topology"
        core = int(_read(topo / "core_id")) if (topo / "core_id").exists() else cpu
        socket = (
            int(_read(topo / "physical_package_id"))
            if (topo / "physical_package_id").exists()
            else 0
        )
        infos.append(CPUInfo(cpu=cpu, core=core, socket=max(socket, 0), numa=numa_of.get(cpu, 0)))
    return CPUTopology(tuple(infos))
