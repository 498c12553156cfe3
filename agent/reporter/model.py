"""What the reporter reads and what it writes: plain frozen values, no I/O.

A :class:`ReclaimSample` is one sysadvisor period's lend (cores and bytes) with the
weights that say where on the machine it lies (per NUMA node). :class:`Reclaimed`
is what goes on the wire: whole milli-cores and bytes, in total and per NUMA zone.
A :class:`Report` is a :class:`Reclaimed` with the targets it is due to.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from katalyst.cpuset import CPUSet
from katalyst.topology import CPUTopology

__all__ = [
    "Reason",
    "ReclaimSample",
    "Reclaimed",
    "Report",
    "Target",
    "ZoneAmount",
    "cpu_weights",
    "numa_sockets",
    "split",
    "to_millicpu",
]


class Target(enum.StrEnum):
    """Where a report is written."""

    NODE = "node"
    """The Node's ``status.capacity``/``status.allocatable`` (extended resources)."""
    CNR = "cnr"
    """The node's CustomNodeResource ``status``."""


Reason = Literal["initial", "change", "resync"]
"""Why a target is due: never written yet, a significant change, or the resync period."""

_MAX_BYTES = (1 << 63) - 1


def _weights(where: str, weights: Mapping[int, float]) -> None:
    for numa, weight in weights.items():
        if isinstance(numa, bool) or not isinstance(numa, int) or numa < 0:
            raise ValueError(f"{where}: NUMA node ids must be integers >= 0, got {numa!r}")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{where}[{numa}]: must be finite and >= 0, got {weight!r}")


@dataclass(frozen=True, slots=True)
class ReclaimSample:
    """One period's lend to reclaimed pods, as the sysadvisor's plan has it."""

    cpus: float
    """CPU lent to reclaimed pods (cores): the plan's ``reclaim_cpus``."""
    memory_bytes: int
    """Memory lent to reclaimed pods (bytes): the plan's ``reclaim_memory_limit``."""
    cpu_weights: Mapping[int, float] = field(default_factory=dict)
    """NUMA node -> how much of the lent CPU lies there (any unit, e.g. the reclaim
    pool's CPUs on that node); the CPU is split in proportion. Empty or all zero:
    evenly over the node's NUMA nodes."""
    memory_weights: Mapping[int, float] = field(default_factory=dict)
    """NUMA node -> the same for memory (e.g. the memory allocatable on that node)."""
    devices: tuple[Mapping[str, Any], ...] = ()
    """The node's GPU and RDMA zones with their allocations (:mod:`agent.reporter.devices`),
    written to the CNR as they are."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.cpus) or self.cpus < 0:
            raise ValueError(f"ReclaimSample.cpus: must be finite and >= 0, got {self.cpus!r}")
        if isinstance(self.memory_bytes, bool) or not 0 <= self.memory_bytes <= _MAX_BYTES:
            raise ValueError(
                f"ReclaimSample.memory_bytes: must be an integer in [0, 2**63), "
                f"got {self.memory_bytes!r}"
            )
        _weights("ReclaimSample.cpu_weights", self.cpu_weights)
        _weights("ReclaimSample.memory_weights", self.memory_weights)


@dataclass(frozen=True, slots=True, order=True)
class ZoneAmount:
    """The lend on one NUMA node."""

    numa: int
    """The NUMA node id (the CNR zone ``{"type": "Numa", "name": "<numa>"}``)."""
    socket: int
    """The socket it belongs to (its parent zone ``{"type": "Socket"}``)."""
    millicpu: int
    """Milli-cores lent on this node."""
    memory_bytes: int
    """Bytes lent on this node."""


@dataclass(frozen=True, slots=True)
class Reclaimed:
    """The reclaimed resources as written: totals and per-NUMA amounts that sum to them."""

    millicpu: int
    """``resource.katalyst.kubewharf.io/reclaimed_millicpu`` (milli-cores)."""
    memory_bytes: int
    """``resource.katalyst.kubewharf.io/reclaimed_memory`` (bytes)."""
    zones: tuple[ZoneAmount, ...] = ()
    """One per NUMA node, ordered by NUMA id; empty when the topology is not known."""
    devices: tuple[Mapping[str, Any], ...] = ()
    """The device zones (GPU, NIC) as the latest sample has them."""


@dataclass(frozen=True, slots=True)
class Report:
    """What to write now, and where."""

    values: Reclaimed
    """The amounts."""
    targets: Mapping[Target, Reason]
    """The targets due, each with the reason it is due."""


def to_millicpu(cores: float) -> int:
    """Cores as whole milli-cores, rounded down (reporting less than is lent is safe;
    more is not). ``round`` first: 1.5 * 1000 may be 1499.9999999999998."""
    return math.floor(round(cores * 1000, 6))


def split(total: int, weights: Mapping[int, float], zones: tuple[int, ...]) -> dict[int, int]:
    """``total`` over ``zones`` in proportion to ``weights``, in whole units that add up
    to ``total`` exactly (largest remainder; ties go to the lower zone id).

    Weights of ids outside ``zones`` are ignored; a zone without a weight gets 0;
    when no zone has weight, ``total`` is split evenly."""
    if not zones:
        return {}
    # Exact arithmetic (a float is an exact fraction): the amounts add up to `total`.
    raw = [Fraction(max(0.0, weights.get(z, 0.0))) for z in zones]
    whole = sum(raw, Fraction(0))
    if whole <= 0:
        raw = [Fraction(1)] * len(zones)
        whole = Fraction(len(zones))
    shares = [total * w / whole for w in raw]
    amounts = [math.floor(s) for s in shares]
    left = total - sum(amounts)
    # Largest fractional part first; equal parts in zone order (a stable sort).
    order = sorted(range(len(zones)), key=lambda i: amounts[i] - shares[i])
    for i in order[:left]:
        amounts[i] += 1
    return dict(zip(zones, amounts, strict=True))


def numa_sockets(topology: CPUTopology) -> dict[int, int]:
    """NUMA node -> the socket of its lowest-numbered CPU (katalyst-core's
    ``GenerateNumaSocketZone`` takes the socket of the node's first core)."""
    out: dict[int, int] = {}
    for info in sorted(topology.cpus, key=lambda c: c.cpu):
        out.setdefault(info.numa, info.socket)
    return dict(sorted(out.items()))


def cpu_weights(reclaim_pool: CPUSet, numa_cpus: Mapping[int, CPUSet]) -> dict[int, float]:
    """NUMA node -> CPUs of the reclaim pool on it (the CPU plugin's ``pools()["reclaim"]``
    against the topology's ``numa_nodes()``)."""
    return {numa: float(len(reclaim_pool.intersection(cpus))) for numa, cpus in numa_cpus.items()}
