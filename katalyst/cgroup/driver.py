"""One cgroup driver interface, with v1 and v2 implementations chosen at start-up.

Callers name cgroups by a relative path (``kubepods/pod-1/app``) below the driver's
base in every hierarchy; the driver knows which file of which hierarchy carries a
setting on this host. Every setter is read-compare-write (as Katalyst's
``InstrumentedWriteFileIfChange``): it reads the current value, writes only when
the desired one differs, and returns whether it changed anything, so that callers
log and count only changes. Values outside what the kernel accepts are refused
before any write with :class:`CgroupInvalidValue`, the same on v1 and v2.
"""

from __future__ import annotations

import abc
import logging
import posixpath
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from katalyst.cgroup.errors import (
    CgroupBusy,
    CgroupError,
    CgroupInvalidValue,
    CgroupNotFound,
    CgroupUnsupported,
)
from katalyst.cgroup.fs import CgroupFS
from katalyst.cgroup.layout import (
    CgroupLayout,
    CgroupMode,
    Hierarchy,
    detect_layout,
    parse_proc_cgroup,
)
from katalyst.cpuset import CPUSet

log = logging.getLogger(__name__)

#: The controllers this project manages, in the order they are written on attach.
MANAGED_CONTROLLERS: tuple[str, ...] = ("cpuset", "cpu", "cpuacct", "memory", "blkio", "io", "pids")
PAGE_SIZE = 4096
#: v1 reads "no memory limit" as PAGE_COUNTER_MAX pages; anything this large is unlimited.
_V1_UNLIMITED_FLOOR = 1 << 62
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@=+-]{0,254}$")
_DEVICE = re.compile(r"^\d+:\d+$")

PressureResource = Literal["cpu", "memory", "io"]
#: Called after every write that changed a file: (path, new value).
ChangeHook = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class CpuStat:
    """CFS bandwidth counters of a cgroup."""

    nr_periods: int
    """Enforcement periods that have elapsed with runnable tasks."""
    nr_throttled: int
    """Periods in which the group was throttled."""
    throttled_ns: int
    """Total time the group was throttled, in nanoseconds."""


@dataclass(frozen=True, slots=True)
class PressureLine:
    """One line (``some`` or ``full``) of a PSI file."""

    avg10: float
    """Percentage of wall time stalled, 10 s average."""
    avg60: float
    avg300: float
    total_us: int
    """Total stall time in microseconds."""


@dataclass(frozen=True, slots=True)
class Pressure:
    """A PSI reading and where it came from."""

    some: PressureLine
    full: PressureLine | None
    """Absent for CPU on kernels before 5.13 (and meaningless system-wide)."""
    scope: Literal["cgroup", "node"]
    """``cgroup`` when the kernel offered it for this cgroup; ``node`` for /proc/pressure."""


@dataclass(frozen=True, slots=True)
class IOLimit:
    """Block IO throttle for one device; ``None`` is unlimited."""

    read_bps: int | None = None
    write_bps: int | None = None
    read_iops: int | None = None
    write_iops: int | None = None


@dataclass(frozen=True, slots=True)
class IOStat:
    """Bytes and operations completed on one device."""

    read_bytes: int
    write_bytes: int
    read_ios: int
    write_ios: int


def shares_to_weight(shares: int) -> int:
    """Map v1 ``cpu.shares`` [2, 262144] onto v2 ``cpu.weight`` [1, 10000].

    The same linear map runc and the kubelet use, so that a pod's weight does not
    depend on the host's cgroup version.
    """
    return 1 + ((shares - 2) * 9999) // 262142


def weight_to_shares(weight: int) -> int:
    """Inverse of :func:`shares_to_weight` (up to rounding)."""
    return 2 + ((weight - 1) * 262142) // 9999


def validate_cgroup_path(cgroup: str) -> str:
    """Check a relative cgroup path and return it normalised.

    Every component must be a plain name: no ``..``, no absolute paths, no empty
    components, nothing outside ``[A-Za-z0-9_.:@=+-]``. This is what keeps a pod
    UID or container name from ever escaping the driver's base directory.
    """
    if cgroup in ("", "/"):
        return ""
    if cgroup.startswith("/"):
        raise CgroupInvalidValue(
            f"cgroup path {cgroup!r} must be relative to the driver's base", path=cgroup
        )
    parts = cgroup.split("/")
    for part in parts:
        if part in (".", "..") or not _NAME.match(part):
            raise CgroupInvalidValue(
                f"cgroup path {cgroup!r}: component {part!r} is not a plain name "
                "(letters, digits, '_', '.', ':', '@', '=', '+', '-'; no '.' or '..')",
                path=cgroup,
            )
    return "/".join(parts)


def _parse_flat(text: str) -> dict[str, int]:
    """``key value`` lines (cpu.stat, memory.stat) into a dict; malformed lines are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _parse_pressure_line(line: str) -> PressureLine:
    fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    return PressureLine(
        avg10=float(fields.get("avg10", "0")),
        avg60=float(fields.get("avg60", "0")),
        avg300=float(fields.get("avg300", "0")),
        total_us=int(fields.get("total", "0")),
    )


def parse_pressure(text: str, *, scope: Literal["cgroup", "node"]) -> Pressure:
    """Parse a PSI file (``some avg10=0.00 avg60=0.00 avg300=0.00 total=0``)."""
    some: PressureLine | None = None
    full: PressureLine | None = None
    for line in text.splitlines():
        if line.startswith("some "):
            some = _parse_pressure_line(line)
        elif line.startswith("full "):
            full = _parse_pressure_line(line)
    if some is None:
        raise CgroupError(f"PSI file has no 'some' line: {text[:80]!r}")
    return Pressure(some=some, full=full, scope=scope)


def _same_cpuset(want: CPUSet) -> Callable[[str], bool]:
    return lambda text: CPUSet.parse(text) == want


def _last_field_is(want: str) -> Callable[[str], bool]:
    return lambda text: text.split()[-1:] == [want]


def _check_range(what: str, value: int, lo: int, hi: int, path: str) -> None:
    if not lo <= value <= hi:
        raise CgroupInvalidValue(f"{what} {value} is outside [{lo}, {hi}]", path=path)


class CgroupDriver(abc.ABC):
    """Create, configure, read and remove cgroups on one host, whatever its layout.

    A driver has a *base* directory in every hierarchy it manages; all cgroup
    paths are relative to it. :func:`open_driver` builds the right implementation
    for the host.
    """

    version: int

    def __init__(
        self,
        fs: CgroupFS,
        layout: CgroupLayout,
        *,
        bases: Mapping[Hierarchy, str],
        on_change: ChangeHook | None = None,
    ) -> None:
        self.fs = fs
        self.layout = layout
        self._bases = dict(bases)
        self._on_change = on_change

    # ---- paths --------------------------------------------------------------------

    def hierarchies(self) -> list[Hierarchy]:
        """The hierarchies this driver creates cgroups in, in attach order."""
        return list(self._bases)

    def path(self, controller: str, cgroup: str, filename: str = "") -> str:
        """Absolute path of ``filename`` in ``cgroup`` of the hierarchy carrying ``controller``."""
        hier = self.layout.hierarchy_for(controller)
        return self.path_in(hier, cgroup, filename)

    def path_in(self, hier: Hierarchy, cgroup: str, filename: str = "") -> str:
        """Absolute path of ``filename`` in ``cgroup`` of one managed hierarchy."""
        base = self._bases.get(hier)
        if base is None:
            raise CgroupUnsupported(f"hierarchy {hier.mountpoint} is not managed by this driver")
        rel = validate_cgroup_path(cgroup)
        parts = [base] + ([rel] if rel else []) + ([filename] if filename else [])
        return posixpath.join(*parts)

    # ---- read-compare-write ----------------------------------------------------------

    def write_if_changed(
        self, path: str, desired: str, *, same: Callable[[str], bool] | None = None
    ) -> bool:
        """Write ``desired`` unless the file already holds it; return whether it wrote.

        ``same`` decides equality on the file's current text when the kernel's
        read-back form differs from what is written (page-rounded limits, ``max``).
        """
        current = self.fs.read_text(path)
        if same(current) if same is not None else current.strip() == desired.strip():
            return False
        self.fs.write_text(path, desired)
        log.debug("cgroup write %s = %r (was %r)", path, desired, current.strip())
        if self._on_change is not None:
            self._on_change(path, desired)
        return True

    def _read_int(self, path: str) -> int:
        text = self.fs.read_text(path).strip()
        try:
            return int(text)
        except ValueError:
            raise CgroupError(
                f"{path}: expected an integer, read {text[:40]!r}", path=path
            ) from None

    # ---- lifecycle ---------------------------------------------------------------------

    def exists(self, cgroup: str) -> bool:
        """Whether the cgroup exists in every managed hierarchy."""
        return all(self.fs.is_dir(self.path_in(h, cgroup)) for h in self._bases)

    def create(self, cgroup: str) -> bool:
        """Create ``cgroup`` (and missing parents) in every managed hierarchy.

        Returns whether anything was created. New v1 cpuset cgroups inherit their
        parent's cpus and mems (the kernel leaves them empty, and an empty cpuset
        refuses tasks with ENOSPC).
        """
        rel = validate_cgroup_path(cgroup)
        prefixes = [""]
        if rel:
            parts = rel.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        created = False
        for hier in self._bases:
            for prefix in ([""] if rel else []) + prefixes:
                path = self.path_in(hier, prefix)
                if self.fs.is_dir(path):
                    continue
                self._before_mkdir(hier, prefix)
                self.fs.mkdir(path)
                self._after_mkdir(hier, prefix)
                created = True
        if created:
            log.info("created cgroup %r", rel or "<base>")
        return created

    def _before_mkdir(self, hier: Hierarchy, cgroup: str) -> None:  # noqa: B027 - optional hook
        """Hook for v2: delegate controllers to the new cgroup's parent."""

    def _after_mkdir(self, hier: Hierarchy, cgroup: str) -> None:  # noqa: B027 - optional hook
        """Hook for v1: initialise cpuset.cpus/mems from the parent."""

    def remove(self, cgroup: str, *, attempts: int = 5, retry_delay_s: float = 0.05) -> bool:
        """Remove ``cgroup`` and every cgroup below it, in every managed hierarchy.

        Tasks still inside are first moved out (never killed): to the parent of
        ``cgroup``, or on v2, where a parent with controllers enabled for its
        children may not hold tasks (the no-internal-process rule), to the nearest
        ancestor that accepts them. Only then are the now-empty directories
        removed, deepest first; a task that forks during the move is caught by the
        retry. Returns whether anything was removed; a missing cgroup is no error.
        """
        rel = validate_cgroup_path(cgroup)
        removed = False
        for hier in self._bases:
            top = self.path_in(hier, rel)
            if not self.fs.is_dir(top):
                continue
            for path in reversed(self._subtree(top)):
                for attempt in range(attempts):
                    self._evacuate(path, posixpath.dirname(top), hier.mountpoint)
                    try:
                        self.fs.rmdir(path)
                        removed = True
                        break
                    except CgroupNotFound:
                        break
                    except CgroupBusy:
                        if attempt == attempts - 1:
                            raise
                        time.sleep(retry_delay_s)
        if removed:
            log.info("removed cgroup %r", rel or "<base>")
        return removed

    def _subtree(self, top: str) -> list[str]:
        out = [top]
        try:
            names = self.fs.listdir(top)
        except CgroupNotFound:
            return []
        for name in names:
            child = posixpath.join(top, name)
            if self.fs.is_dir(child):
                out.extend(self._subtree(child))
        return out

    def _evacuate(self, path: str, target: str, mountpoint: str) -> None:
        try:
            pids = self.fs.read_text(posixpath.join(path, "cgroup.procs")).split()
        except CgroupNotFound:
            return
        for pid in pids:
            dest = target
            while True:
                try:
                    self.fs.write_text(posixpath.join(dest, "cgroup.procs"), pid)
                    break
                except CgroupNotFound:
                    break  # the task exited meanwhile (ESRCH)
                except CgroupBusy:
                    if dest == mountpoint or len(dest) <= len(mountpoint):
                        raise
                    dest = posixpath.dirname(dest)

    def attach(self, cgroup: str, pid: int) -> None:
        """Move process ``pid`` (all its threads) into ``cgroup`` in every managed hierarchy."""
        if pid <= 0:
            raise CgroupInvalidValue(f"pid {pid} is not a process id", path=cgroup)
        for hier in self._bases:
            self.fs.write_text(self.path_in(hier, cgroup, "cgroup.procs"), str(pid))

    def procs(self, cgroup: str) -> list[int]:
        """Process ids in ``cgroup`` (read from the first managed hierarchy)."""
        first = next(iter(self._bases))
        text = self.fs.read_text(self.path_in(first, cgroup, "cgroup.procs"))
        return sorted(int(p) for p in text.split())

    def children(self, cgroup: str) -> list[str]:
        """Names of the child cgroups of ``cgroup`` (in the first managed hierarchy)."""
        first = next(iter(self._bases))
        top = self.path_in(first, cgroup)
        return [n for n in self.fs.listdir(top) if self.fs.is_dir(posixpath.join(top, n))]

    # ---- settings (version-specific) ---------------------------------------------------

    @abc.abstractmethod
    def set_cpu_quota(self, cgroup: str, *, quota_us: int | None, period_us: int = 100_000) -> bool:
        """CFS bandwidth: ``quota_us`` of CPU time per ``period_us``; None is unlimited."""

    @abc.abstractmethod
    def cpu_quota(self, cgroup: str) -> tuple[int | None, int]:
        """The current (quota_us or None, period_us)."""

    @abc.abstractmethod
    def set_cpu_shares(self, cgroup: str, shares: int) -> bool:
        """Relative CPU weight in v1 units [2, 262144]; v2 converts to ``cpu.weight``.

        The kernel refuses this while ``cpu.idle`` is 1 (EINVAL): clear idle first.
        """

    @abc.abstractmethod
    def cpu_shares(self, cgroup: str) -> int:
        """The current weight in v1 units."""

    def set_cpu_idle(self, cgroup: str, idle: bool) -> bool:
        """SCHED_IDLE for the whole group (``cpu.idle``): it runs only when nothing else wants."""
        path = self.path("cpu", cgroup, "cpu.idle")
        if not self.fs.exists(path):
            raise CgroupUnsupported("cpu.idle needs Linux 5.15 or newer", path=path)
        return self.write_if_changed(path, "1" if idle else "0")

    @abc.abstractmethod
    def set_cpu_burst(self, cgroup: str, burst_us: int) -> bool:
        """CFS burst: unused quota that may be carried over, in microseconds (<= quota)."""

    def set_cpuset(
        self, cgroup: str, *, cpus: CPUSet | None = None, mems: CPUSet | None = None
    ) -> bool:
        """Pin to CPUs and/or memory nodes; None leaves that part unchanged.

        mems is written first: a v1 cpuset with cpus but no mems still refuses tasks.
        """
        changed = False
        for name, value in (("cpuset.mems", mems), ("cpuset.cpus", cpus)):
            if value is None:
                continue
            if not value.ids:
                raise CgroupInvalidValue(f"{name} must not be empty", path=cgroup)
            path = self.path("cpuset", cgroup, name)
            changed = self.write_if_changed(path, str(value), same=_same_cpuset(value)) or changed
        return changed

    @abc.abstractmethod
    def cpuset(self, cgroup: str) -> tuple[CPUSet, CPUSet]:
        """The effective (cpus, mems)."""

    @abc.abstractmethod
    def set_memory_limit(self, cgroup: str, limit: int | None) -> bool:
        """Hard memory limit in bytes (OOM-kill above it); None is unlimited."""

    @abc.abstractmethod
    def memory_limit(self, cgroup: str) -> int | None:
        """The current hard limit, None when unlimited."""

    def set_memory_soft_limit(self, cgroup: str, limit: int | None) -> bool:
        """v1 ``memory.soft_limit_in_bytes`` (reclaim target under global pressure)."""
        raise CgroupUnsupported(
            f"memory soft limit is a cgroup v1 interface (this is v{self.version})"
        )

    def set_memory_high(self, cgroup: str, limit: int | None) -> bool:
        """v2 ``memory.high``: throttle and reclaim above it, never OOM-kill."""
        raise CgroupUnsupported(f"memory.high is a cgroup v2 interface (this is v{self.version})")

    def set_memory_low(self, cgroup: str, protection: int) -> bool:
        """v2 ``memory.low``: best-effort protection from reclaim."""
        raise CgroupUnsupported(f"memory.low is a cgroup v2 interface (this is v{self.version})")

    def set_memory_min(self, cgroup: str, protection: int) -> bool:
        """v2 ``memory.min``: hard protection from reclaim."""
        raise CgroupUnsupported(f"memory.min is a cgroup v2 interface (this is v{self.version})")

    @abc.abstractmethod
    def set_swap_limit(self, cgroup: str, swap: int | None) -> bool:
        """Swap the cgroup may use beyond its memory limit, in bytes; None is unlimited."""

    @abc.abstractmethod
    def set_io_limit(self, cgroup: str, device: str, limit: IOLimit) -> bool:
        """Throttle block IO on ``device`` (``major:minor``)."""

    @abc.abstractmethod
    def io_limit(self, cgroup: str, device: str) -> IOLimit:
        """The current throttle on ``device``."""

    @abc.abstractmethod
    def set_io_weight(self, cgroup: str, weight: int) -> bool:
        """Proportional IO weight [1, 10000] (v1 maps to blkio.weight's [10, 1000])."""

    def set_pids_max(self, cgroup: str, limit: int | None) -> bool:
        """Maximum number of tasks; None is unlimited."""
        if limit is not None:
            _check_range("pids limit", limit, 0, 2**31, cgroup)
        return self.write_if_changed(
            self.path("pids", cgroup, "pids.max"), "max" if limit is None else str(limit)
        )

    # ---- usage -----------------------------------------------------------------------------

    @abc.abstractmethod
    def cpu_usage_ns(self, cgroup: str) -> int:
        """Total CPU time consumed by the cgroup's tasks, nanoseconds."""

    @abc.abstractmethod
    def cpu_stat(self, cgroup: str) -> CpuStat:
        """CFS throttling counters."""

    @abc.abstractmethod
    def memory_usage(self, cgroup: str) -> int:
        """Current memory charged to the cgroup, bytes."""

    def memory_stat(self, cgroup: str) -> dict[str, int]:
        """``memory.stat`` as a dict (the keys differ between v1 and v2)."""
        return _parse_flat(self.fs.read_text(self.path("memory", cgroup, "memory.stat")))

    @abc.abstractmethod
    def io_stat(self, cgroup: str) -> dict[str, IOStat]:
        """Completed IO per device (``major:minor``)."""

    def pressure(self, cgroup: str, resource: PressureResource) -> Pressure:
        """PSI for the cgroup where the kernel offers it, else node-wide (``/proc/pressure``)."""
        path = self._pressure_path(cgroup, resource)
        if path is not None and self.fs.exists(path):
            return parse_pressure(self.fs.read_text(path), scope="cgroup")
        return self.node_pressure(resource)

    def node_pressure(self, resource: PressureResource) -> Pressure:
        """System-wide PSI from ``/proc/pressure/<resource>``."""
        path = f"/proc/pressure/{resource}"
        try:
            return parse_pressure(self.fs.read_text(path), scope="node")
        except CgroupNotFound:
            raise CgroupUnsupported(
                f"{path} is missing: the kernel has no PSI (CONFIG_PSI)"
            ) from None

    def _pressure_path(self, cgroup: str, resource: PressureResource) -> str | None:
        unified = self.layout.unified
        if unified is None or unified not in self._bases:
            return None
        return self.path_in(unified, cgroup, f"{resource}.pressure")


class CgroupV1Driver(CgroupDriver):
    """cgroup v1 (and hybrid: v1 controllers, plus a mirror in the unified mount for PSI)."""

    version = 1

    def _after_mkdir(self, hier: Hierarchy, cgroup: str) -> None:
        if hier.version != 1 or "cpuset" not in hier.controllers:
            return
        path = self.path_in(hier, cgroup)
        parent = posixpath.dirname(path)
        for name in ("cpuset.mems", "cpuset.cpus"):
            if not self.fs.read_text(posixpath.join(path, name)).strip():
                inherited = self.fs.read_text(posixpath.join(parent, name)).strip()
                self.fs.write_text(posixpath.join(path, name), inherited)

    def set_cpu_quota(self, cgroup: str, *, quota_us: int | None, period_us: int = 100_000) -> bool:
        _check_range("cpu period (us)", period_us, 1000, 1_000_000, cgroup)
        if quota_us is not None:
            _check_range("cpu quota (us)", quota_us, 1000, 2**44, cgroup)
        quota_path = self.path("cpu", cgroup, "cpu.cfs_quota_us")
        period_path = self.path("cpu", cgroup, "cpu.cfs_period_us")
        changed = self.write_if_changed(period_path, str(period_us))
        want = "-1" if quota_us is None else str(quota_us)
        return self.write_if_changed(quota_path, want) or changed

    def cpu_quota(self, cgroup: str) -> tuple[int | None, int]:
        quota = self._read_int(self.path("cpu", cgroup, "cpu.cfs_quota_us"))
        period = self._read_int(self.path("cpu", cgroup, "cpu.cfs_period_us"))
        return (None if quota < 0 else quota), period

    def set_cpu_shares(self, cgroup: str, shares: int) -> bool:
        _check_range("cpu shares", shares, 2, 262144, cgroup)
        return self.write_if_changed(self.path("cpu", cgroup, "cpu.shares"), str(shares))

    def cpu_shares(self, cgroup: str) -> int:
        return self._read_int(self.path("cpu", cgroup, "cpu.shares"))

    def set_cpu_burst(self, cgroup: str, burst_us: int) -> bool:
        path = self.path("cpu", cgroup, "cpu.cfs_burst_us")
        if not self.fs.exists(path):
            raise CgroupUnsupported("cpu.cfs_burst_us needs Linux 5.14 or newer", path=path)
        _check_range("cpu burst (us)", burst_us, 0, 2**44, cgroup)
        return self.write_if_changed(path, str(burst_us))

    def cpuset(self, cgroup: str) -> tuple[CPUSet, CPUSet]:
        cpus = self.fs.read_text(self.path("cpuset", cgroup, "cpuset.cpus"))
        mems = self.fs.read_text(self.path("cpuset", cgroup, "cpuset.mems"))
        return CPUSet.parse(cpus), CPUSet.parse(mems)

    def _limit_same(self, want: int | None) -> Callable[[str], bool]:
        def same(text: str) -> bool:
            current = int(text.strip())
            if want is None:
                return current >= _V1_UNLIMITED_FLOOR
            return current == want // PAGE_SIZE * PAGE_SIZE

        return same

    def _set_v1_limit(self, cgroup: str, name: str, limit: int | None) -> bool:
        if limit is not None:
            _check_range(name, limit, 0, 2**62, cgroup)
        path = self.path("memory", cgroup, name)
        return self.write_if_changed(
            path, "-1" if limit is None else str(limit), same=self._limit_same(limit)
        )

    def set_memory_limit(self, cgroup: str, limit: int | None) -> bool:
        memsw = self.path("memory", cgroup, "memory.memsw.limit_in_bytes")
        if limit is not None and self.fs.exists(memsw):
            # With swap accounting the kernel refuses memory > memory+swap (EINVAL):
            # raise memsw along with it so that lowering swap stays a separate choice.
            current_memsw = self._read_int(memsw)
            if current_memsw < _V1_UNLIMITED_FLOOR and current_memsw < limit:
                self.write_if_changed(memsw, str(limit))
        return self._set_v1_limit(cgroup, "memory.limit_in_bytes", limit)

    def memory_limit(self, cgroup: str) -> int | None:
        value = self._read_int(self.path("memory", cgroup, "memory.limit_in_bytes"))
        return None if value >= _V1_UNLIMITED_FLOOR else value

    def set_memory_soft_limit(self, cgroup: str, limit: int | None) -> bool:
        return self._set_v1_limit(cgroup, "memory.soft_limit_in_bytes", limit)

    def set_swap_limit(self, cgroup: str, swap: int | None) -> bool:
        path = self.path("memory", cgroup, "memory.memsw.limit_in_bytes")
        if not self.fs.exists(path):
            raise CgroupUnsupported(
                "swap limits need swap accounting (boot with swapaccount=1)", path=path
            )
        memory = self.memory_limit(cgroup)
        if swap is None or memory is None:
            return self._set_v1_limit(cgroup, "memory.memsw.limit_in_bytes", None)
        _check_range("swap limit", swap, 0, 2**62, cgroup)
        return self._set_v1_limit(cgroup, "memory.memsw.limit_in_bytes", memory + swap)

    _THROTTLE = (
        ("read_bps", "blkio.throttle.read_bps_device"),
        ("write_bps", "blkio.throttle.write_bps_device"),
        ("read_iops", "blkio.throttle.read_iops_device"),
        ("write_iops", "blkio.throttle.write_iops_device"),
    )

    def _device_table(self, path: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in self.fs.read_text(path).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                out[parts[0]] = int(parts[1])
        return out

    def set_io_limit(self, cgroup: str, device: str, limit: IOLimit) -> bool:
        if not _DEVICE.match(device):
            raise CgroupInvalidValue(f"device {device!r} is not major:minor", path=cgroup)
        changed = False
        for attr, name in self._THROTTLE:
            want: int | None = getattr(limit, attr)
            if want is not None:
                _check_range(attr, want, 1, 2**63 - 1, cgroup)
            path = self.path("blkio", cgroup, name)
            current = self._device_table(path).get(device)
            if current == want:
                continue
            # Writing 0 deletes the rule (v1's "no limit").
            self.fs.write_text(path, f"{device} {want or 0}")
            if self._on_change is not None:
                self._on_change(path, f"{device} {want or 0}")
            changed = True
        return changed

    def io_limit(self, cgroup: str, device: str) -> IOLimit:
        values = {
            attr: self._device_table(self.path("blkio", cgroup, name)).get(device)
            for attr, name in self._THROTTLE
        }
        return IOLimit(**values)

    def set_io_weight(self, cgroup: str, weight: int) -> bool:
        _check_range("io weight", weight, 1, 10000, cgroup)
        for name in ("blkio.weight", "blkio.bfq.weight"):
            path = self.path("blkio", cgroup, name)
            if self.fs.exists(path):
                v1 = max(10, min(1000, weight // 10))  # v1 range is [10, 1000]
                return self.write_if_changed(path, str(v1), same=_last_field_is(str(v1)))
        raise CgroupUnsupported(
            "blkio weight needs the BFQ (or CFQ) IO scheduler; this kernel offers none",
            path=self.path("blkio", cgroup),
        )

    def cpu_usage_ns(self, cgroup: str) -> int:
        return self._read_int(self.path("cpuacct", cgroup, "cpuacct.usage"))

    def cpu_stat(self, cgroup: str) -> CpuStat:
        stat = _parse_flat(self.fs.read_text(self.path("cpu", cgroup, "cpu.stat")))
        return CpuStat(
            nr_periods=stat.get("nr_periods", 0),
            nr_throttled=stat.get("nr_throttled", 0),
            throttled_ns=stat.get("throttled_time", 0),
        )

    def memory_usage(self, cgroup: str) -> int:
        return self._read_int(self.path("memory", cgroup, "memory.usage_in_bytes"))

    def io_stat(self, cgroup: str) -> dict[str, IOStat]:
        def table(name: str) -> dict[tuple[str, str], int]:
            out: dict[tuple[str, str], int] = {}
            for line in self.fs.read_text(self.path("blkio", cgroup, name)).splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[2].isdigit():
                    out[(parts[0], parts[1])] = int(parts[2])
            return out

        nbytes = table("blkio.throttle.io_service_bytes")
        nios = table("blkio.throttle.io_serviced")
        devices = {d for d, _ in nbytes} | {d for d, _ in nios}
        return {
            d: IOStat(
                read_bytes=nbytes.get((d, "Read"), 0),
                write_bytes=nbytes.get((d, "Write"), 0),
                read_ios=nios.get((d, "Read"), 0),
                write_ios=nios.get((d, "Write"), 0),
            )
            for d in sorted(devices)
        }


class CgroupV2Driver(CgroupDriver):
    """The unified hierarchy (cgroup v2)."""

    version = 2

    def _before_mkdir(self, hier: Hierarchy, cgroup: str) -> None:
        # A v2 cgroup gets a controller's files only if its parent enabled the
        # controller in cgroup.subtree_control (the kernel's delegation model).
        parent = posixpath.dirname(self.path_in(hier, cgroup))
        available = self.fs.read_text(posixpath.join(parent, "cgroup.controllers")).split()
        enabled = set(self.fs.read_text(posixpath.join(parent, "cgroup.subtree_control")).split())
        wanted = [c for c in MANAGED_CONTROLLERS if c in available and c not in enabled]
        if wanted:
            try:
                self.fs.write_text(
                    posixpath.join(parent, "cgroup.subtree_control"),
                    " ".join(f"+{c}" for c in wanted),
                )
            except CgroupBusy as exc:
                raise CgroupBusy(
                    f"cannot enable {', '.join(wanted)} below {parent}: it holds processes "
                    "(cgroup v2 no-internal-process rule); run the agent in a leaf cgroup",
                    path=parent,
                    err=exc.errno,
                ) from exc

    def set_cpu_quota(self, cgroup: str, *, quota_us: int | None, period_us: int = 100_000) -> bool:
        _check_range("cpu period (us)", period_us, 1000, 1_000_000, cgroup)
        if quota_us is not None:
            _check_range("cpu quota (us)", quota_us, 1000, 2**44, cgroup)
        want = f"{'max' if quota_us is None else quota_us} {period_us}"
        return self.write_if_changed(self.path("cpu", cgroup, "cpu.max"), want)

    def cpu_quota(self, cgroup: str) -> tuple[int | None, int]:
        text = self.fs.read_text(self.path("cpu", cgroup, "cpu.max")).split()
        quota = None if text[0] == "max" else int(text[0])
        return quota, int(text[1])

    def set_cpu_shares(self, cgroup: str, shares: int) -> bool:
        _check_range("cpu shares", shares, 2, 262144, cgroup)
        return self.write_if_changed(
            self.path("cpu", cgroup, "cpu.weight"), str(shares_to_weight(shares))
        )

    def cpu_shares(self, cgroup: str) -> int:
        return weight_to_shares(self._read_int(self.path("cpu", cgroup, "cpu.weight")))

    def set_cpu_burst(self, cgroup: str, burst_us: int) -> bool:
        path = self.path("cpu", cgroup, "cpu.max.burst")
        if not self.fs.exists(path):
            raise CgroupUnsupported("cpu.max.burst needs Linux 5.14 or newer", path=path)
        _check_range("cpu burst (us)", burst_us, 0, 2**44, cgroup)
        return self.write_if_changed(path, str(burst_us))

    def cpuset(self, cgroup: str) -> tuple[CPUSet, CPUSet]:
        cpus = self.fs.read_text(self.path("cpuset", cgroup, "cpuset.cpus.effective"))
        mems = self.fs.read_text(self.path("cpuset", cgroup, "cpuset.mems.effective"))
        return CPUSet.parse(cpus), CPUSet.parse(mems)

    def _set_v2_bytes(self, cgroup: str, name: str, value: int | None) -> bool:
        if value is not None:
            _check_range(name, value, 0, 2**62, cgroup)
        want = "max" if value is None else str(value)

        def same(text: str) -> bool:
            t = text.strip()
            if value is None:
                return t == "max"
            return t != "max" and int(t) == value // PAGE_SIZE * PAGE_SIZE

        return self.write_if_changed(self.path("memory", cgroup, name), want, same=same)

    def set_memory_limit(self, cgroup: str, limit: int | None) -> bool:
        return self._set_v2_bytes(cgroup, "memory.max", limit)

    def memory_limit(self, cgroup: str) -> int | None:
        text = self.fs.read_text(self.path("memory", cgroup, "memory.max")).strip()
        return None if text == "max" else int(text)

    def set_memory_high(self, cgroup: str, limit: int | None) -> bool:
        return self._set_v2_bytes(cgroup, "memory.high", limit)

    def set_memory_low(self, cgroup: str, protection: int) -> bool:
        return self._set_v2_bytes(cgroup, "memory.low", protection)

    def set_memory_min(self, cgroup: str, protection: int) -> bool:
        return self._set_v2_bytes(cgroup, "memory.min", protection)

    def set_swap_limit(self, cgroup: str, swap: int | None) -> bool:
        path = self.path("memory", cgroup, "memory.swap.max")
        if not self.fs.exists(path):
            raise CgroupUnsupported("memory.swap.max is missing (no swap accounting)", path=path)
        return self._set_v2_bytes(cgroup, "memory.swap.max", swap)

    _IO_KEYS = (
        ("read_bps", "rbps"),
        ("write_bps", "wbps"),
        ("read_iops", "riops"),
        ("write_iops", "wiops"),
    )

    def io_limit(self, cgroup: str, device: str) -> IOLimit:
        for line in self.fs.read_text(self.path("io", cgroup, "io.max")).splitlines():
            parts = line.split()
            if parts and parts[0] == device:
                kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
                values = {
                    attr: (None if kv.get(key, "max") == "max" else int(kv[key]))
                    for attr, key in self._IO_KEYS
                }
                return IOLimit(**values)
        return IOLimit()

    def set_io_limit(self, cgroup: str, device: str, limit: IOLimit) -> bool:
        if not _DEVICE.match(device):
            raise CgroupInvalidValue(f"device {device!r} is not major:minor", path=cgroup)
        for attr, _ in self._IO_KEYS:
            want: int | None = getattr(limit, attr)
            if want is not None:
                _check_range(attr, want, 1, 2**63 - 1, cgroup)
        if self.io_limit(cgroup, device) == limit:
            return False
        path = self.path("io", cgroup, "io.max")
        fields = " ".join(
            f"{key}={'max' if getattr(limit, attr) is None else getattr(limit, attr)}"
            for attr, key in self._IO_KEYS
        )
        self.fs.write_text(path, f"{device} {fields}")
        if self._on_change is not None:
            self._on_change(path, f"{device} {fields}")
        return True

    def set_io_weight(self, cgroup: str, weight: int) -> bool:
        _check_range("io weight", weight, 1, 10000, cgroup)
        path = self.path("io", cgroup, "io.weight")
        if not self.fs.exists(path):
            raise CgroupUnsupported("io.weight needs the BFQ IO scheduler or iocost", path=path)

        def same(text: str) -> bool:
            first = text.splitlines()[0].split() if text.strip() else []
            return first == ["default", str(weight)]

        return self.write_if_changed(path, f"default {weight}", same=same)

    def _cpu_stat(self, cgroup: str) -> dict[str, int]:
        hier = self.layout.unified
        assert hier is not None
        return _parse_flat(self.fs.read_text(self.path_in(hier, cgroup, "cpu.stat")))

    def cpu_usage_ns(self, cgroup: str) -> int:
        return self._cpu_stat(cgroup).get("usage_usec", 0) * 1000

    def cpu_stat(self, cgroup: str) -> CpuStat:
        stat = self._cpu_stat(cgroup)
        return CpuStat(
            nr_periods=stat.get("nr_periods", 0),
            nr_throttled=stat.get("nr_throttled", 0),
            throttled_ns=stat.get("throttled_usec", 0) * 1000,
        )

    def memory_usage(self, cgroup: str) -> int:
        return self._read_int(self.path("memory", cgroup, "memory.current"))

    def io_stat(self, cgroup: str) -> dict[str, IOStat]:
        out: dict[str, IOStat] = {}
        for line in self.fs.read_text(self.path("io", cgroup, "io.stat")).splitlines():
            parts = line.split()
            if not parts:
                continue
            kv = {k: int(v) for k, _, v in (p.partition("=") for p in parts[1:]) if v.isdigit()}
            out[parts[0]] = IOStat(
                read_bytes=kv.get("rbytes", 0),
                write_bytes=kv.get("wbytes", 0),
                read_ios=kv.get("rios", 0),
                write_ios=kv.get("wios", 0),
            )
        return out


def _managed_hierarchies(layout: CgroupLayout, *, mirror_unified: bool) -> list[Hierarchy]:
    if layout.mode is CgroupMode.V2:
        assert layout.unified is not None
        return [layout.unified]
    seen: list[Hierarchy] = []
    for ctrl in MANAGED_CONTROLLERS:
        if layout.has(ctrl):
            h = layout.hierarchy_for(ctrl)
            if h not in seen:
                seen.append(h)
    if mirror_unified and layout.unified is not None:
        seen.append(layout.unified)
    return seen


def open_driver(
    fs: CgroupFS,
    *,
    base: str = "",
    below_own_cgroup: bool = False,
    layout: CgroupLayout | None = None,
    mirror_unified: bool = True,
    on_change: ChangeHook | None = None,
) -> CgroupDriver:
    """Detect the layout and build the matching driver.

    ``base`` is the driver's base cgroup, relative to each hierarchy's root (or,
    with ``below_own_cgroup``, to this process's own cgroup in each hierarchy as
    ``/proc/self/cgroup`` lists it: what tests and the standalone node use so that
    they never touch cgroups they did not create). In hybrid mode the driver also
    creates its cgroups in the unified mount (``mirror_unified``), because the
    kernel offers per-cgroup PSI there even with no controllers enabled.
    """
    layout = layout or detect_layout(fs)
    rel = validate_cgroup_path(base)
    own = parse_proc_cgroup(fs.proc_self_cgroup()) if below_own_cgroup else {}
    bases: dict[Hierarchy, str] = {}
    for hier in _managed_hierarchies(layout, mirror_unified=mirror_unified):
        start = "/"
        if below_own_cgroup:
            key = "" if hier.version == 2 else sorted(hier.controllers)[0]
            start = own.get(key, "/")
            if hier.root != "/" and start.startswith(hier.root):
                start = start[len(hier.root) :] or "/"
        bases[hier] = posixpath.join(hier.mountpoint, start.lstrip("/"), rel).rstrip("/")
    cls: type[CgroupDriver] = CgroupV2Driver if layout.mode is CgroupMode.V2 else CgroupV1Driver
    return cls(fs, layout, bases=bases, on_change=on_change)


def describe_driver(driver: CgroupDriver) -> Iterable[str]:
    """Lines saying where the driver puts its cgroups (for logs and ``make demo``)."""
    for hier in driver.hierarchies():
        if hier.version == 2 and driver.version == 1:
            name = "unified (per-cgroup PSI)"
        else:
            name = ",".join(sorted(hier.controllers)) or "unified"
        yield f"{name}: {driver.path_in(hier, '')}"
