"""Apply a container's allocation to its cgroup and processes.

``target_for`` is pure: from the CPU and memory plugins' answers it computes what
the container's cgroup should hold. ``Applier.apply`` does the writes, each
read-compare-write through the cgroup driver, and reports what changed. A cgroup
that vanished mid-update is pod churn (logged at debug, reported as gone), never
an error; a setting the host cannot offer is logged once per setting.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from agent.qrm.memory.policy import (
    LIMIT_ANNOTATION,
    OOM_SCORE_ADJ_ANNOTATION,
    PROTECTION_ANNOTATION,
)
from agent.qrm.types import AllocationInfo
from katalyst.cgroup import CgroupDriver, CgroupError, CgroupNotFound, CgroupUnsupported
from katalyst.cpuset import CPUSet
from katalyst.qos import QoSLevel

log = logging.getLogger(__name__)

#: cpu.shares of reclaimed containers until the sysadvisor sets quotas: the
#: kernel's minimum, so that they only use what the others leave.
RECLAIMED_SHARES = 2


@dataclass(frozen=True, slots=True)
class ContainerTarget:
    """What one container's cgroup and processes should hold; None leaves a setting alone."""

    cgroup: str
    cpus: CPUSet | None = None
    mems: CPUSet | None = None
    cpu_shares: int | None = None
    memory_limit: int | None = None
    memory_protection: int | None = None
    oom_score_adj: int | None = None


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What :meth:`Applier.apply` did."""

    changed: tuple[str, ...]
    """Names of the settings that were written."""
    gone: bool = False
    """The cgroup vanished (pod churn)."""


def _int_annotation(info: AllocationInfo | None, key: str) -> int | None:
    if info is None or key not in info.annotations:
        return None
    return int(info.annotations[key])


def target_for(
    *,
    cgroup: str,
    level: QoSLevel,
    cpu: AllocationInfo | None,
    memory: AllocationInfo | None,
) -> ContainerTarget:
    """The target of a container from its CPU and memory allocations."""
    cpus = (
        CPUSet.parse(cpu.allocation_result) if cpu is not None and cpu.allocation_result else None
    )
    mems = (
        CPUSet.parse(memory.allocation_result)
        if memory is not None and memory.allocation_result
        else None
    )
    return ContainerTarget(
        cgroup=cgroup,
        cpus=cpus,
        mems=mems,
        cpu_shares=RECLAIMED_SHARES if level is QoSLevel.RECLAIMED_CORES else None,
        memory_limit=_int_annotation(memory, LIMIT_ANNOTATION),
        memory_protection=_int_annotation(memory, PROTECTION_ANNOTATION),
        oom_score_adj=_int_annotation(memory, OOM_SCORE_ADJ_ANNOTATION),
    )


class Applier:
    """Writes targets through one cgroup driver and ``/proc``."""

    def __init__(self, driver: CgroupDriver, *, proc_root: str = "/proc") -> None:
        self._driver = driver
        self._proc = proc_root
        self._unsupported: set[str] = set()
        self.writes: Counter[tuple[str, str]] = Counter()
        """(setting, outcome) -> count of container writes: ``changed``, ``failed``
        (a setting that raised) or ``gone`` (the cgroup vanished: pod churn)."""

    def apply(self, target: ContainerTarget) -> ApplyResult:
        """Bring the container to ``target``; return what changed."""
        d = self._driver
        cg = target.cgroup
        changed: list[str] = []
        try:
            wants_cpuset = target.cpus is not None or target.mems is not None
            if wants_cpuset and d.set_cpuset(cg, cpus=target.cpus, mems=target.mems):
                changed.append("cpuset")
            if target.cpu_shares is not None and d.set_cpu_shares(cg, target.cpu_shares):
                changed.append("cpu_shares")
            if target.memory_limit is not None and d.set_memory_limit(cg, target.memory_limit):
                changed.append("memory_limit")
            if target.memory_protection is not None:
                name, setter = (
                    ("memory_low", d.set_memory_low)
                    if d.version == 2
                    else ("memory_soft_limit", d.set_memory_soft_limit)
                )
                protection = target.memory_protection
                if self._optional(name, lambda: setter(cg, protection)):
                    changed.append(name)
            if target.oom_score_adj is not None and self._set_oom_score_adj(
                cg, target.oom_score_adj
            ):
                changed.append("oom_score_adj")
        except CgroupNotFound:
            log.debug("cgroup %s vanished while it was being updated (pod churn)", cg)
            self._count(changed)
            self.writes["container", "gone"] += 1
            return ApplyResult(tuple(changed), gone=True)
        except (CgroupError, ValueError):
            self._count(changed)
            self.writes["container", "failed"] += 1
            raise
        self._count(changed)
        if changed:
            log.info("container cgroup %s: updated %s", cg, ", ".join(changed))
        return ApplyResult(tuple(changed))

    def _count(self, changed: list[str]) -> None:
        for name in changed:
            self.writes[name, "changed"] += 1

    def _optional(self, name: str, write: Callable[[], bool]) -> bool:
        try:
            return write()
        except CgroupUnsupported as exc:
            if name not in self._unsupported:
                self._unsupported.add(name)
                log.warning("%s is not supported on this host, skipped from now on: %s", name, exc)
            return False

    def _set_oom_score_adj(self, cgroup: str, adj: int) -> bool:
        changed = False
        for pid in self._driver.procs(cgroup):
            path = os.path.join(self._proc, str(pid), "oom_score_adj")
            try:
                with open(path, encoding="ascii") as f:
                    if int(f.read().strip()) == adj:
                        continue
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, str(adj).encode())
                finally:
                    os.close(fd)
                changed = True
            except (FileNotFoundError, ProcessLookupError):
                continue  # the process exited meanwhile
            except (OSError, ValueError) as exc:
                raise CgroupError(f"{path}: cannot set oom_score_adj {adj}: {exc}") from exc
        return changed
