"""Node CPU topology from sysfs: CPUs, physical cores (SMT siblings), sockets, NUMA nodes.

The sysfs root is injectable so that tests describe any machine (two NUMA nodes,
SMT, several dies per package) with a directory tree; on a host it is ``/sys``.
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
    """Physical core: the lowest CPU id among its SMT siblings (unique node-wide;
    sysfs's ``core_id`` is only unique within a die)."""
    socket: int
    """``physical_package_id``."""
    numa: int
    """The NUMA node whose ``cpulist`` holds the CPU (0 without NUMA information)."""


@dataclass(frozen=True, slots=True)
class CPUTopology:
    """The online CPUs and how they group."""

    cpus: tuple[CPUInfo, ...]

    @property
    def online(self) -> CPUSet:
        """Every online CPU."""
        return CPUSet.of(c.cpu for c in self.cpus)

    def _group(self, key: str) -> Mapping[int, CPUSet]:
        out: dict[int, set[int]] = {}
        for c in self.cpus:
            out.setdefault(getattr(c, key), set()).add(c.cpu)
        return {k: CPUSet.of(ids) for k, ids in sorted(out.items())}

    def numa_nodes(self) -> Mapping[int, CPUSet]:
        """NUMA node id -> its CPUs."""
        return self._group("numa")

    def sockets(self) -> Mapping[int, CPUSet]:
        """Socket id -> its CPUs."""
        return self._group("socket")

    def cores(self) -> Mapping[int, CPUSet]:
        """Physical core (lowest sibling id) -> its SMT sibling CPUs."""
        return self._group("core")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"cannot read {path}: {exc}") from exc


def _cpulist(path: Path) -> CPUSet:
    try:
        return CPUSet.parse(_read(path))
    except ValueError as exc:
        raise TopologyError(f"{path}: {exc}") from exc


def _int(path: Path, default: int) -> int:
    if not path.exists():
        return default
    text = _read(path)
    try:
        return int(text)
    except ValueError:
        raise TopologyError(f"{path}: {text[:40]!r} is not an integer") from None


def read_cpu_topology(sysfs: str | os.PathLike[str] = "/sys") -> CPUTopology:
    """Read the online CPUs' topology below ``sysfs``.

    Machines (and containers, and some VMs) without NUMA information in sysfs are
    one NUMA node, 0; a CPU without topology files is its own core on socket 0.
    """
    root = Path(sysfs)
    cpu_dir = root / "devices/system/cpu"
    online = _cpulist(cpu_dir / "online")
    numa_of: dict[int, int] = {}
    node_dir = root / "devices/system/node"
    if node_dir.is_dir():
        for entry in sorted(node_dir.iterdir()):
            name = entry.name
            if name.startswith("node") and name[4:].isascii() and name[4:].isdigit():
                for cpu in _cpulist(entry / "cpulist"):
                    numa_of[cpu] = int(name[4:])
    infos: list[CPUInfo] = []
    for cpu in online:
        topo = cpu_dir / f"cpu{cpu}" / "topology"
        # core_cpus_list (Linux 5.7+) or its older name thread_siblings_list.
        siblings = CPUSet.of([cpu])
        for name in ("core_cpus_list", "thread_siblings_list"):
            if (topo / name).exists():
                siblings = _cpulist(topo / name)
                break
        infos.append(
            CPUInfo(
                cpu=cpu,
                core=min(siblings.union(CPUSet.of([cpu]))),
                socket=max(_int(topo / "physical_package_id", 0), 0),
                numa=numa_of.get(cpu, 0),
            )
        )
    return CPUTopology(tuple(infos))


def read_numa_memory(sysfs: str | os.PathLike[str] = "/sys") -> dict[int, int]:
    """NUMA node -> its memory in bytes (``MemTotal`` of ``nodeN/meminfo``).

    Without NUMA information in sysfs the mapping is empty; callers then treat
    the machine as one node 0 holding all memory (``psutil.virtual_memory``).
    """
    out: dict[int, int] = {}
    node_dir = Path(sysfs) / "devices/system/node"
    if not node_dir.is_dir():
        return out
    for entry in sorted(node_dir.iterdir()):
        name = entry.name
        if not (name.startswith("node") and name[4:].isascii() and name[4:].isdigit()):
            continue
        meminfo = entry / "meminfo"
        if not meminfo.exists():
            continue
        for line in _read(meminfo).splitlines():
            # "Node 0 MemTotal:        4417748 kB"
            parts = line.split()
            if len(parts) >= 5 and parts[2] == "MemTotal:":
                try:
                    out[int(name[4:])] = int(parts[3]) * 1024
                except ValueError:
                    raise TopologyError(f"{meminfo}: bad MemTotal line {line!r}") from None
                break
    return out
