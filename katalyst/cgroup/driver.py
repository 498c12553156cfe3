"""The cgroup driver interface and what its v1 and v2 implementations share.

Callers name cgroups by a relative path (``kubepods/pod-1/app``) below the driver's
base in every hierarchy; the driver knows which file of which hierarchy carries a
setting on this host. Every setter is read-compare-write (as Katalyst's
``InstrumentedWriteFileIfChange``): it reads the current value, writes only when
the desired one differs, and returns whether it changed anything, so that callers
log and count only changes. Values outside what the kernel accepts are refused
before any write with :class:`CgroupInvalidValue`, the same on v1 and v2.

The implementations are :class:`katalyst.cgroup.v1.CgroupV1Driver` and
:class:`katalyst.cgroup.v2.CgroupV2Driver`; :func:`katalyst.cgroup.open_driver`
picks one for the host.
"""

from __future__ import annotations

import abc
import logging
import posixpath
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from katalyst.cgroup.errors import (
    CgroupBusy,
    CgroupError,
    CgroupInvalidValue,
    CgroupNotFound,
    CgroupUnsupported,
)
from katalyst.cgroup.fs import CgroupFS
from katalyst.cgroup.layout import CgroupLayout, Hierarchy
from katalyst.cpuset import CPUSet

log = logging.getLogger(__name__)

#: The controllers this project manages, in the order they are written on attach.
MANAGED_CONTROLLERS: tuple[str, ...] = ("cpuset", "cpu", "cpuacct", "memory", "blkio", "io", "pids")
#: Kernel bounds, checked before writing so that v1 and v2 refuse the same values.
CFS_PERIOD_MIN_US, CFS_PERIOD_MAX_US = 1000, 1_000_000
CFS_QUOTA_MIN_US = 1000
#: max_cfs_runtime: the kernel refuses a quota or burst of 2**44 us or more.
CFS_QUOTA_MAX_US = 2**44 - 1
SHARES_MIN, SHARES_MAX = 2, 262144
#: PID_MAX_LIMIT on 64-bit kernels; pids.max refuses more.
PIDS_MAX = 4 * 1024 * 1024
#: blk-throttle keeps iops limits in 32 bits: v1 silently truncates larger values.
IOPS_MAX = 2**32 - 1
BYTES_MAX = 2**62
#: The name of the leaf a v2 driver moves tasks into when it removes their cgroup.
EVACUATION_LEAF = "_evacuated"

# re.ASCII and fullmatch: "$" would accept a trailing newline, and \d non-ASCII digits.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@=+-]{0,254}", re.ASCII)
# Names the kernel uses for interface files: a cgroup may not be called that
# (mkdir answers EEXIST in one hierarchy and succeeds in the others).
_INTERFACE_FILE = re.compile(
    r"(cgroup|cpu|cpuacct|cpuset|memory|blkio|io|pids|hugetlb|rdma|misc|devices|freezer"
    r"|net_cls|net_prio|perf_event)\..*|tasks|notify_on_release|release_agent",
    re.ASCII,
)
_DEVICE = re.compile(r"[0-9]+:[0-9]+", re.ASCII)

PressureResource = Literal["cpu", "memory", "io"]
#: Called after every write that changed a file: (path, new value).
ChangeHook = Callable[[str, str], None]
_T = TypeVar("_T")


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
    """Percentage of wall time stalled, 60 s average."""
    avg300: float
    """Percentage of wall time stalled, 300 s average."""
    total_us: int
    """Total stall time in microseconds."""


@dataclass(frozen=True, slots=True)
class Pressure:
    """A PSI reading and where it came from."""

    some: PressureLine
    full: PressureLine | None
    """Absent for CPU on kernels before 5.13."""
    scope: Literal["cgroup", "node"]
    """``cgroup`` when the kernel offered it for this cgroup; ``node`` for /proc/pressure."""


@dataclass(frozen=True, slots=True)
class IOLimit:
    """Block IO throttle for one device; ``None`` is unlimited.

    Bytes per second up to 2**62, operations per second up to 2**32-1.
    """

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
    """Check a relative cgroup path and return it.

    Every component must be a plain ASCII name: no ``..``, no absolute paths, no
    empty components, no whitespace or newlines, nothing outside
    ``[A-Za-z0-9_.:@=+-]``. This is what keeps a pod UID or container name from
    ever escaping the driver's base directory.
    """
    if cgroup in ("", "/"):
        return ""
    if cgroup.startswith("/"):
        raise CgroupInvalidValue(
            f"cgroup path {cgroup!r} must be relative to the driver's base", path=cgroup
        )
    parts = cgroup.split("/")
    for part in parts:
        if part in (".", "..") or _NAME.fullmatch(part) is None:
            raise CgroupInvalidValue(
                f"cgroup path {cgroup!r}: component {part!r} is not a plain name "
                "(ASCII letters, digits, '_', '.', ':', '@', '=', '+', '-'; not '.' or '..')",
                path=cgroup,
            )
        if _INTERFACE_FILE.fullmatch(part):
            raise CgroupInvalidValue(
                f"cgroup path {cgroup!r}: component {part!r} is the name of a kernel "
                "interface file",
                path=cgroup,
            )
    return cgroup


def validate_device(device: str) -> str:
    """A block device as the kernel names it in cgroup files: ``major:minor``."""
    if _DEVICE.fullmatch(device) is None:
        raise CgroupInvalidValue(f"device {device!r} is not major:minor (e.g. 8:0)", path=device)
    return device


def parse_file(path: str, text: str, parse: Callable[[str], _T]) -> _T:
    """Apply ``parse`` to a cgroup file's text; odd content becomes a :class:`CgroupError`
    naming the file, never a stray ``ValueError``/``IndexError``."""
    try:
        return parse(text)
    except (ValueError, IndexError, KeyError) as exc:
        raise CgroupError(f"{path}: unexpected content {text[:60]!r} ({exc})", path=path) from exc


def parse_flat(text: str) -> dict[str, int]:
    """``key value`` lines (cpu.stat, memory.stat) into a dict; other lines are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"-?[0-9]+", parts[1], re.ASCII):
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
    """Parse a PSI file (``some avg10=0.00 avg60=0.00 avg300=0.00 total=0``).

    Raises ``ValueError`` for content that is not PSI (see :func:`parse_file`).
    """
    some: PressureLine | None = None
    full: PressureLine | None = None
    for line in text.splitlines():
        if line.startswith("some "):
            some = _parse_pressure_line(line)
        elif line.startswith("full "):
            full = _parse_pressure_line(line)
    if some is None:
        raise ValueError("no 'some' line")
    return Pressure(some=some, full=full, scope=scope)


def same_cpuset(want: CPUSet) -> Callable[[str], bool]:
    """Equality in the kernel's list syntax ("0-1" is "0,1")."""
    return lambda text: CPUSet.parse(text) == want


def default_weight_is(value: str) -> Callable[[str], bool]:
    """Equality for weight files: the first line's last field ("500", "default 100")."""

    def same(text: str) -> bool:
        lines = text.splitlines()
        return bool(lines) and lines[0].split()[-1:] == [value]

    return same


def check_range(what: str, value: int, lo: int, hi: int, cgroup: str) -> None:
    """Refuse ``value`` outside [lo, hi] before anything is written."""
    if not lo <= value <= hi:
        raise CgroupInvalidValue(f"{what} {value} is outside [{lo}, {hi}]", path=cgroup)


def check_quota(quota_us: int | None, period_us: int, cgroup: str) -> None:
    """The kernel's CFS bandwidth bounds, for v1 and v2 alike."""
    check_range("cpu period (us)", period_us, CFS_PERIOD_MIN_US, CFS_PERIOD_MAX_US, cgroup)
    if quota_us is not None:
        check_range("cpu quota (us)", quota_us, CFS_QUOTA_MIN_US, CFS_QUOTA_MAX_US, cgroup)


def check_io_limit(limit: IOLimit, cgroup: str) -> None:
    """Bounds of a throttle: positive, bytes up to 2**62, iops within 32 bits."""
    for attr, hi in (
        ("read_bps", BYTES_MAX),
        ("write_bps", BYTES_MAX),
        ("read_iops", IOPS_MAX),
        ("write_iops", IOPS_MAX),
    ):
        value: int | None = getattr(limit, attr)
        if value is not None:
            check_range(attr, value, 1, hi, cgroup)


class CgroupDriver(abc.ABC):
    """Create, configure, read and remove cgroups on one host, whatever its layout.

    A driver has a *base* directory in every hierarchy it manages; all cgroup
    paths are relative to it.
    """

    version: int

    def __init__(
        self,
        fs: CgroupFS,
        layout: CgroupLayout,
        *,
        bases: Mapping[Hierarchy, str],
        on_change: ChangeHook | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.fs = fs
        self.layout = layout
        self._bases = dict(bases)
        self._on_change = on_change
        self._sleep = sleep
        self.page_size = fs.page_size
        """The kernel's page size: memory limits read back rounded down to it."""

    # ---- paths --------------------------------------------------------------------

    def hierarchies(self) -> list[Hierarchy]:
        """The hierarchies this driver creates cgroups in, in attach order."""
        return list(self._bases)

    def path(self, controller: str, cgroup: str, filename: str = "") -> str:
        """Absolute path of ``filename`` in ``cgroup`` of the hierarchy carrying ``controller``."""
        return self.path_in(self.layout.hierarchy_for(controller), cgroup, filename)

    def path_in(self, hier: Hierarchy, cgroup: str, filename: str = "") -> str:
        """Absolute path of ``filename`` in ``cgroup`` of one managed hierarchy."""
        base = self._bases.get(hier)
        if base is None:
            raise CgroupUnsupported(f"hierarchy {hier.mountpoint} is not managed by this driver")
        rel = validate_cgroup_path(cgroup)
        parts = [base] + ([rel] if rel else []) + ([filename] if filename else [])
        return posixpath.join(*parts)

    def ensure_exists(self, controller: str, cgroup: str) -> None:
        """:class:`CgroupNotFound` unless ``cgroup`` exists in ``controller``'s hierarchy."""
        path = self.path(controller, cgroup)
        if not self.fs.is_dir(path):
            raise CgroupNotFound(f"cgroup {cgroup!r} does not exist", path=path)

    def require_file(self, controller: str, cgroup: str, filename: str, *, missing: str) -> str:
        """The path of an interface file that not every kernel offers.

        A missing file in an existing cgroup is :class:`CgroupUnsupported` with the
        reason ``missing``; a missing cgroup is :class:`CgroupNotFound` (pod churn,
        not a missing feature).
        """
        path = self.path(controller, cgroup, filename)
        if self.fs.exists(path):
            return path
        self.ensure_exists(controller, cgroup)
        raise CgroupUnsupported(f"{filename}: {missing}", path=path)

    # ---- read-compare-write ----------------------------------------------------------

    def write_if_changed(
        self, path: str, desired: str, *, same: Callable[[str], bool] | None = None
    ) -> bool:
        """Write ``desired`` unless the file already holds it; return whether it wrote.

        ``same`` decides equality on the file's current text when the kernel's
        read-back form differs from what is written (page-rounded limits, ``max``).
        """
        current = self.fs.read_text(path)
        if same is not None:
            unchanged = parse_file(path, current, same)
        else:
            unchanged = current.strip() == desired.strip()
        if unchanged:
            return False
        self.write(path, desired)
        return True

    def write(self, path: str, value: str) -> None:
        """Write unconditionally (the caller has compared), and tell the change hook."""
        self.fs.write_text(path, value)
        log.debug("cgroup write %s = %r", path, value)
        if self._on_change is not None:
            self._on_change(path, value)

    def read_int(self, path: str) -> int:
        """A file holding one integer."""
        return parse_file(path, self.fs.read_text(path), lambda t: int(t.strip()))

    # ---- lifecycle ---------------------------------------------------------------------

    def exists(self, cgroup: str) -> bool:
        """Whether the cgroup exists in every managed hierarchy."""
        return all(self.fs.is_dir(self.path_in(h, cgroup)) for h in self._bases)

    def create(self, cgroup: str) -> bool:
        """Create ``cgroup`` (and missing parents, and the base) in every managed hierarchy.

        Returns whether anything was created. A name the kernel already uses for
        an interface file (``cpu.shares``) is :class:`CgroupInvalidValue`.
        """
        rel = validate_cgroup_path(cgroup)
        prefixes = [""]
        if rel:
            parts = rel.split("/")
            prefixes += ["/".join(parts[: i + 1]) for i in range(len(parts))]
        created = False
        for hier in self._bases:
            for prefix in prefixes:
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

        Tasks still inside are moved out first, never killed: to the parent of
        ``cgroup``; on v2, where a parent that delegates controllers may not hold
        tasks (the no-internal-process rule), to the leaf ``_evacuated`` directly
        below the base. Tasks never leave the base (except when the base itself is
        removed, to the base's parent). Then the empty directories are removed,
        deepest first; a task that forks meanwhile is caught by the retry. Returns
        whether anything was removed; a missing cgroup is not an error.
        """
        rel = validate_cgroup_path(cgroup)
        removed = False
        for hier in self._bases:
            top = self.path_in(hier, rel)
            if not self.fs.is_dir(top):
                continue
            for path in reversed(self._subtree(top)):
                for attempt in range(attempts):
                    self._evacuate(hier, path, target=posixpath.dirname(top), whole_base=not rel)
                    try:
                        self.fs.rmdir(path)
                        removed = True
                        break
                    except CgroupNotFound:
                        break
                    except CgroupBusy:
                        if attempt == attempts - 1:
                            raise
                        self._sleep(retry_delay_s)
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

    def _evacuate(self, hier: Hierarchy, path: str, *, target: str, whole_base: bool) -> None:
        try:
            pids = self.fs.read_text(posixpath.join(path, "cgroup.procs")).split()
        except CgroupNotFound:
            return
        for pid in pids:
            try:
                self.fs.write_text(posixpath.join(target, "cgroup.procs"), pid)
                continue
            except CgroupNotFound:
                continue  # the task exited meanwhile (ESRCH)
            except CgroupBusy:
                leaf = self.path_in(hier, EVACUATION_LEAF)
                if whole_base or hier.version != 2 or path == leaf or path.startswith(leaf + "/"):
                    raise
            self.create(EVACUATION_LEAF)
            try:
                self.fs.write_text(self.path_in(hier, EVACUATION_LEAF, "cgroup.procs"), pid)
            except CgroupNotFound:
                continue

    def attach(self, cgroup: str, pid: int) -> None:
        """Move process ``pid`` (all its threads) into ``cgroup`` in every managed hierarchy."""
        if pid <= 0:
            raise CgroupInvalidValue(f"pid {pid} is not a process id", path=cgroup)
        for hier in self._bases:
            self.fs.write_text(self.path_in(hier, cgroup, "cgroup.procs"), str(pid))

    def procs(self, cgroup: str) -> list[int]:
        """Process ids in ``cgroup`` (read from the first managed hierarchy)."""
        path = self.path_in(next(iter(self._bases)), cgroup, "cgroup.procs")
        return parse_file(
            path, self.fs.read_text(path), lambda t: sorted(int(p) for p in t.split())
        )

    def children(self, cgroup: str) -> list[str]:
        """Names of the child cgroups of ``cgroup`` (in the first managed hierarchy)."""
        top = self.path_in(next(iter(self._bases)), cgroup)
        return [n for n in self.fs.listdir(top) if self.fs.is_dir(posixpath.join(top, n))]

    # ---- CPU -----------------------------------------------------------------------------

    @abc.abstractmethod
    def set_cpu_quota(self, cgroup: str, *, quota_us: int | None, period_us: int = 100_000) -> bool:
        """CFS bandwidth: ``quota_us`` of CPU time per ``period_us``; None is unlimited.

        A burst larger than the new quota is lowered to it first (the kernel
        refuses a quota below the burst).
        """

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
        """SCHED_IDLE for the whole group (``cpu.idle``): it runs only when nothing else wants.

        The kernel sets the group's weight to the idle weight (shares 3) while idle
        and back to the default (1024 / weight 100) when idle is cleared: callers
        that want another weight set it again after clearing idle.
        """
        path = self.require_file("cpu", cgroup, "cpu.idle", missing="needs Linux 5.15 or newer")
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
            changed = self._write_cpuset(path, value) or changed
        return changed

    def _write_cpuset(self, path: str, value: CPUSet) -> bool:
        return self.write_if_changed(path, str(value), same=same_cpuset(value))

    @abc.abstractmethod
    def cpuset(self, cgroup: str) -> tuple[CPUSet, CPUSet]:
        """The effective (cpus, mems)."""

    # ---- memory ----------------------------------------------------------------------------

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
    def swap_limit(self, cgroup: str) -> int | None:
        """The swap allowance beyond the memory limit; None when unlimited."""

    @abc.abstractmethod
    def memory_usage(self, cgroup: str) -> int:
        """Current memory charged to the cgroup, bytes."""

    def memory_stat(self, cgroup: str) -> dict[str, int]:
        """``memory.stat`` as a dict (the keys differ between v1 and v2)."""
        return parse_flat(self.fs.read_text(self.path("memory", cgroup, "memory.stat")))

    # ---- IO and pids -------------------------------------------------------------------

    @abc.abstractmethod
    def set_io_limit(self, cgroup: str, device: str, limit: IOLimit) -> bool:
        """Throttle block IO on ``device`` (``major:minor``); IOLimit() lifts it.

        A device the kernel does not know is :class:`CgroupInvalidValue`.
        """

    @abc.abstractmethod
    def io_limit(self, cgroup: str, device: str) -> IOLimit:
        """The current throttle on ``device``."""

    @abc.abstractmethod
    def io_limited_devices(self, cgroup: str) -> list[str]:
        """The devices (``major:minor``) with any throttle on ``cgroup``, sorted."""

    @abc.abstractmethod
    def set_io_weight(self, cgroup: str, weight: int) -> bool:
        """Proportional IO weight in v2 units [1, 10000], default 100.

        It needs an IO scheduler that honours weights (BFQ, or iocost on v2);
        :class:`CgroupUnsupported` otherwise.
        """

    @abc.abstractmethod
    def io_stat(self, cgroup: str) -> dict[str, IOStat]:
        """Completed IO per device (``major:minor``)."""

    def _write_device_rule(self, path: str, rule: str, device: str) -> None:
        try:
            self.write(path, rule)
        except CgroupNotFound as exc:
            # ENODEV: the kernel has no such block device. The cgroup exists (we
            # just read the file), so this is the caller's device, not pod churn.
            if self.fs.is_dir(posixpath.dirname(path)):
                raise CgroupInvalidValue(
                    f"device {device} does not exist on this host", path=path
                ) from exc
            raise

    def set_pids_max(self, cgroup: str, limit: int | None) -> bool:
        """Maximum number of tasks; None is unlimited."""
        if limit is not None:
            check_range("pids limit", limit, 0, PIDS_MAX, cgroup)
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

    def pressure(self, cgroup: str, resource: PressureResource) -> Pressure:
        """PSI for the cgroup where the kernel offers it, else node-wide (``/proc/pressure``).

        A cgroup that does not exist is :class:`CgroupNotFound`, not node pressure.
        """
        if not self.exists(cgroup):
            raise CgroupNotFound(f"cgroup {cgroup!r} does not exist", path=cgroup)
        path = self._pressure_path(cgroup, resource)
        if path is not None and self.fs.exists(path):
            text = self.fs.read_text(path)
            return parse_file(path, text, lambda t: parse_pressure(t, scope="cgroup"))
        return self.node_pressure(resource)

    def node_pressure(self, resource: PressureResource) -> Pressure:
        """System-wide PSI from ``/proc/pressure/<resource>``."""
        path = self.fs.proc_path(f"pressure/{resource}")
        try:
            text = self.fs.read_text(path)
        except CgroupNotFound:
            raise CgroupUnsupported(
                f"{path} is missing: the kernel has no PSI (CONFIG_PSI, or psi=0 at boot)"
            ) from None
        return parse_file(path, text, lambda t: parse_pressure(t, scope="node"))

    def _pressure_path(self, cgroup: str, resource: PressureResource) -> str | None:
        unified = self.layout.unified
        if unified is None or unified not in self._bases:
            return None
        return self.path_in(unified, cgroup, f"{resource}.pressure")
