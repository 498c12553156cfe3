"""The CPU pools, computed from the reserve and the dedicated sets (pure).

Pools, as in Katalyst's CPU plugin:

* ``reserve``: the system-reserved CPUs (given at start-up, never anything else).
  ``system_cores`` pods run here unless their ``cpuset_pool`` names another pool.
* ``dedicated/<pod uid>``: one set of exclusive CPUs per ``dedicated_cores`` pod.
* ``share``: every online CPU that is neither reserved nor dedicated.
  ``shared_cores`` pods run here.
* ``reclaim``: where ``reclaimed_cores`` pods run. Until the sysadvisor sets a size
  it is the share pool itself ("reclaim on share": reclaimed pods are then kept
  apart from shared ones by cgroup weight and quota, not by cpuset). With a size
  ``n`` the ``n`` highest-numbered CPUs of the share pool leave it and form the
  reclaim pool; the share pool always keeps at least one CPU, so ``n`` is clamped
  to ``len(share) - 1``. A clamped size of 0 (``n == 0``, or a share pool of one
  CPU) means "reclaim on share" again, because a cpuset cannot be empty.

When no CPU is left for the share pool (every non-reserved CPU is dedicated),
shared and reclaimed containers fall back to the reserve pool: ``share`` and
``reclaim`` are then the reserve CPUs, and :attr:`Pools.share_fallback` is true.
The reserve is never empty (:class:`~agent.qrm.cpu.policy.CPUPolicy` refuses an
empty one), so every pool a container can be placed in is non-empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from katalyst.cpuset import CPUSet
from katalyst.qos import PodUID

POOL_RESERVE: Final = "reserve"
POOL_SHARE: Final = "share"
POOL_RECLAIM: Final = "reclaim"
POOL_DEDICATED: Final = "dedicated"
#: Pools a ``system_cores`` pod may name in its ``cpuset_pool`` enhancement.
NAMED_POOLS: Final = (POOL_RESERVE, POOL_SHARE, POOL_RECLAIM)


def _empty_dedicated() -> Mapping[PodUID, CPUSet]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Pools:
    """The node's CPU pools at one instant (effective cpusets, fall-backs applied)."""

    reserve: CPUSet
    """The system-reserved CPUs."""
    share: CPUSet
    """The shared pool (the reserve CPUs when :attr:`share_fallback`)."""
    reclaim: CPUSet
    """The reclaim pool (equal to :attr:`share` unless a reclaim size is in force)."""
    free: CPUSet
    """Online CPUs neither reserved nor dedicated: what dedicated pods may still take.
    The share and reclaim pools together are exactly these CPUs unless
    :attr:`share_fallback`."""
    dedicated: Mapping[PodUID, CPUSet] = field(default_factory=_empty_dedicated)
    """Pod UID -> its exclusive CPUs."""

    @property
    def share_fallback(self) -> bool:
        """Whether shared and reclaimed containers run on the reserve (nothing is free)."""
        return not self.free

    def named(self, pool: str) -> CPUSet:
        """The cpuset of ``reserve``, ``share`` or ``reclaim``; KeyError for other names."""
        if pool == POOL_RESERVE:
            return self.reserve
        if pool == POOL_SHARE:
            return self.share
        if pool == POOL_RECLAIM:
            return self.reclaim
        raise KeyError(pool)

    def as_mapping(self) -> Mapping[str, CPUSet]:
        """``reserve``, ``share``, ``reclaim`` and ``dedicated/<pod uid>`` -> cpuset."""
        out: dict[str, CPUSet] = {
            POOL_RESERVE: self.reserve,
            POOL_SHARE: self.share,
            POOL_RECLAIM: self.reclaim,
        }
        for uid, cpus in sorted(self.dedicated.items()):
            out[f"{POOL_DEDICATED}/{uid}"] = cpus
        return MappingProxyType(out)


def compute_pools(
    *,
    online: CPUSet,
    reserved: CPUSet,
    dedicated: Mapping[PodUID, CPUSet],
    reclaim_size: int | None,
) -> Pools:
    """The pools for these reserved and dedicated CPUs and this reclaim size.

    ``reclaim_size`` None: reclaim on share. Otherwise the highest-numbered
    ``min(reclaim_size, len(share) - 1)`` CPUs of the share pool form the reclaim
    pool (0 means reclaim on share). The caller guarantees that ``reserved`` and the
    dedicated sets are disjoint subsets of ``online``; this function does not check.
    """
    taken = reserved
    for cpus in dedicated.values():
        taken = taken.union(cpus)
    free = online.difference(taken)
    frozen_dedicated = MappingProxyType(dict(dedicated))
    if not free:
        return Pools(
            reserve=reserved,
            share=reserved,
            reclaim=reserved,
            free=free,
            dedicated=frozen_dedicated,
        )
    share = free
    reclaim = free
    if reclaim_size is not None:
        count = min(reclaim_size, len(free) - 1)
        if count > 0:
            reclaim = CPUSet.of(sorted(free)[-count:])
            share = free.difference(reclaim)
    return Pools(
        reserve=reserved, share=share, reclaim=reclaim, free=free, dedicated=frozen_dedicated
    )
