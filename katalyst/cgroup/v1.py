"""The cgroup v1 driver (also for hybrid hosts: v1 controllers beside a cgroup2 mount).

Kernel behaviour it relies on, each checked by the contract suite against the
real kernel (``tests/contract``):

* a new cpuset cgroup starts with empty ``cpuset.cpus``/``cpuset.mems`` and refuses
  tasks (ENOSPC) until both are set; cpus outside the parent's are EACCES;
* a child's CFS quota/period ratio may not exceed its parent's (EINVAL), and a
  quota may not be lower than the burst (EINVAL);
* memory limits read back rounded down to whole pages, "unlimited" as
  PAGE_COUNTER_MAX pages; ``memory.limit_in_bytes`` may not exceed
  ``memory.memsw.limit_in_bytes`` (memory + swap) when swap accounting is on;
* blkio throttle rules are ``major:minor value`` lines; writing 0 deletes one.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from katalyst.cgroup.driver import (
    BYTES_MAX,
    CFS_QUOTA_MAX_US,
    CgroupDriver,
    CpuStat,
    IOLimit,
    IOStat,
    check_io_limit,
    check_quota,
    check_range,
    default_weight_is,
    parse_file,
    parse_flat,
    same_cpuset,
    validate_device,
)
from katalyst.cgroup.errors import CgroupInvalidValue, CgroupPermissionError, CgroupUnsupported
from katalyst.cgroup.layout import Hierarchy
from katalyst.cpuset import CPUSet

#: v1 reads "no memory limit" as PAGE_COUNTER_MAX pages; anything this large is unlimited.
V1_UNLIMITED_FLOOR = 1 << 62

_THROTTLE = (
    ("read_bps", "blkio.throttle.read_bps_device"),
    ("write_bps", "blkio.throttle.write_bps_device"),
    ("read_iops", "blkio.throttle.read_iops_device"),
    ("write_iops", "blkio.throttle.write_iops_device"),
)
# (file, lowest, highest): CFQ's blkio.weight is [10, 1000], BFQ's [1, 1000]; both
# default to 100 on current kernels, the same default as v2's io.weight.
_WEIGHT_FILES = (("blkio.bfq.weight", 1, 1000), ("blkio.weight", 10, 1000))


def _device_table(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = int(parts[1])
    return out


class CgroupV1Driver(CgroupDriver):
    """cgroup v1, and hybrid hosts (with a per-cgroup PSI mirror in the unified mount)."""

    version = 1

    def _after_mkdir(self, hier: Hierarchy, cgroup: str) -> None:
        if hier.version != 1 or "cpuset" not in hier.controllers:
            return
        path = self.path_in(hier, cgroup)
        parent = posixpath.dirname(path)
        for name in ("cpuset.mems", "cpuset.cpus"):
            if not self.fs.read_text(posixpath.join(path, name)).strip():
                inherited = self.fs.read_text(posixpath.join(parent, name)).strip()
                self.write(posixpath.join(path, name), inherited)

    # ---- CPU ---------------------------------------------------------------------------

    def set_cpu_quota(self, cgroup: str, *, quota_us: int | None, period_us: int = 100_000) -> bool:
        check_quota(quota_us, period_us, cgroup)
        quota_path = self.path("cpu", cgroup, "cpu.cfs_quota_us")
        period_path = self.path("cpu", cgroup, "cpu.cfs_period_us")
        old_quota, old_period = self.cpu_quota(cgroup)
        if (old_quota, old_period) == (quota_us, period_us):
            return False
        if quota_us is not None:
            burst_path = self.path("cpu", cgroup, "cpu.cfs_burst_us")
            if self.fs.exists(burst_path) and self.read_int(burst_path) > quota_us:
                self.write(burst_path, str(quota_us))
        new_q = "-1" if quota_us is None else str(quota_us)
        # The kernel checks every intermediate state against the parent's ratio.
        # Of the two orders, write first whichever gives the smaller intermediate
        # quota/period: it is at most sqrt(old * new) <= max(old, new), so it never
        # exceeds a ratio that both the old and the new setting satisfy. An
        # unlimited child is always accepted, so "unlimited" counts as 0 here.
        period_first = 0.0 if old_quota is None else old_quota / period_us
        quota_first = 0.0 if quota_us is None else quota_us / old_period
        writes = [(period_path, str(period_us)), (quota_path, new_q)]
        if quota_first < period_first:
            writes.reverse()
        changed = False
        for path, value in writes:
            changed = self.write_if_changed(path, value) or changed
        return changed

    def cpu_quota(self, cgroup: str) -> tuple[int | None, int]:
        quota = self.read_int(self.path("cpu", cgroup, "cpu.cfs_quota_us"))
        period = self.read_int(self.path("cpu", cgroup, "cpu.cfs_period_us"))
        return (None if quota < 0 else quota), period

    def set_cpu_shares(self, cgroup: str, shares: int) -> bool:
        check_range("cpu shares", shares, 2, 262144, cgroup)
        return self.write_if_changed(self.path("cpu", cgroup, "cpu.shares"), str(shares))

    def cpu_shares(self, cgroup: str) -> int:
        return self.read_int(self.path("cpu", cgroup, "cpu.shares"))

    def set_cpu_burst(self, cgroup: str, burst_us: int) -> bool:
        path = self.require_file(
            "cpu", cgroup, "cpu.cfs_burst_us", missing="needs Linux 5.14 or newer"
        )
        check_range("cpu burst (us)", burst_us, 0, CFS_QUOTA_MAX_US, cgroup)
        return self.write_if_changed(path, str(burst_us))

    def _write_cpuset(self, path: str, value: CPUSet) -> bool:
        try:
            return self.write_if_changed(path, str(value), same=same_cpuset(value))
        except CgroupPermissionError as exc:
            # v1 answers EACCES for CPUs or nodes outside the parent's set.
            parent = self.fs.read_text(
                posixpath.join(posixpath.dirname(posixpath.dirname(path)), posixpath.basename(path))
            ).strip()
            raise CgroupInvalidValue(
                f"{posixpath.basename(path)} {value} is not within the parent's {parent}",
                path=path,
                err=exc.errno,
            ) from exc

    def cpuset(self, cgroup: str) -> tuple[CPUSet, CPUSet]:
        cpus_path = self.path("cpuset", cgroup, "cpuset.cpus")
        mems_path = self.path("cpuset", cgroup, "cpuset.mems")
        return (
            parse_file(cpus_path, self.fs.read_text(cpus_path), CPUSet.parse),
            parse_file(mems_path, self.fs.read_text(mems_path), CPUSet.parse),
        )

    # ---- memory ------------------------------------------------------------------------

    def _bytes_or_none(self, path: str) -> int | None:
        value = self.read_int(path)
        return None if value >= V1_UNLIMITED_FLOOR else value

    def _same_limit(self, want: int | None) -> Callable[[str], bool]:
        page = self.page_size

        def same(text: str) -> bool:
            current = int(text.strip())
            if want is None:
                return current >= V1_UNLIMITED_FLOOR
            return current == want // page * page

        return same

    def _write_limit(self, path: str, limit: int | None) -> bool:
        value = "-1" if limit is None else str(limit)
        return self.write_if_changed(path, value, same=self._same_limit(limit))

    def set_memory_limit(self, cgroup: str, limit: int | None) -> bool:
        if limit is not None:
            check_range("memory limit", limit, 0, BYTES_MAX, cgroup)
        mem_path = self.path("memory", cgroup, "memory.limit_in_bytes")
        memsw_path = self.path("memory", cgroup, "memory.memsw.limit_in_bytes")
        if not self.fs.exists(memsw_path):
            return self._write_limit(mem_path, limit)
        memsw = self._bytes_or_none(memsw_path)
        if memsw is None:
            return self._write_limit(mem_path, limit)
        # With swap accounting the kernel refuses memory > memory+swap (EINVAL).
        # Keep the swap allowance (memsw - memory) as it is: write memsw first when
        # the limit grows and memory first when it shrinks, so that every
        # intermediate state is valid.
        mem = self._bytes_or_none(mem_path)
        swap = memsw - (mem if mem is not None else memsw)
        new_memsw = None if limit is None else limit + swap
        growing = limit is None or (mem is not None and limit > mem)
        if growing:
            changed = self._write_limit(memsw_path, new_memsw)
            return self._write_limit(mem_path, limit) or changed
        changed = self._write_limit(mem_path, limit)
        return self._write_limit(memsw_path, new_memsw) or changed

    def memory_limit(self, cgroup: str) -> int | None:
        return self._bytes_or_none(self.path("memory", cgroup, "memory.limit_in_bytes"))

    def set_memory_soft_limit(self, cgroup: str, limit: int | None) -> bool:
        if limit is not None:
            check_range("memory soft limit", limit, 0, BYTES_MAX, cgroup)
        return self._write_limit(self.path("memory", cgroup, "memory.soft_limit_in_bytes"), limit)

    def _memsw_path(self, cgroup: str) -> str:
        return self.require_file(
            "memory",
            cgroup,
            "memory.memsw.limit_in_bytes",
            missing="swap limits need swap accounting (boot with swapaccount=1)",
        )

    def set_swap_limit(self, cgroup: str, swap: int | None) -> bool:
        path = self._memsw_path(cgroup)
        memory = self.memory_limit(cgroup)
        if swap is None:
            return self._write_limit(path, None)
        check_range("swap limit", swap, 0, BYTES_MAX, cgroup)
        if memory is None:
            # v1 limits memory+swap together: with no memory limit there is no
            # "swap beyond memory" to cap.
            raise CgroupInvalidValue(
                "a v1 swap limit needs a memory limit first (memsw = memory + swap)", path=path
            )
        return self._write_limit(path, memory + swap)

    def swap_limit(self, cgroup: str) -> int | None:
        memsw = self._bytes_or_none(self._memsw_path(cgroup))
        memory = self.memory_limit(cgroup)
        return None if memsw is None or memory is None else memsw - memory

    def memory_usage(self, cgroup: str) -> int:
        return self.read_int(self.path("memory", cgroup, "memory.usage_in_bytes"))

    # ---- IO ------------------------------------------------------------------------------

    def set_io_limit(self, cgroup: str, device: str, limit: IOLimit) -> bool:
        validate_device(device)
        check_io_limit(limit, cgroup)
        changed = False
        for attr, name in _THROTTLE:
            want: int | None = getattr(limit, attr)
            path = self.path("blkio", cgroup, name)
            current = parse_file(path, self.fs.read_text(path), _device_table).get(device)
            if current == want:
                continue
            # Writing 0 deletes the rule: v1's "no limit".
            self._write_device_rule(path, f"{device} {want or 0}", device)
            changed = True
        return changed

    def io_limit(self, cgroup: str, device: str) -> IOLimit:
        values: dict[str, int | None] = {}
        for attr, name in _THROTTLE:
            path = self.path("blkio", cgroup, name)
            values[attr] = parse_file(path, self.fs.read_text(path), _device_table).get(device)
        return IOLimit(**values)

    def io_limited_devices(self, cgroup: str) -> list[str]:
        devices: set[str] = set()
        for _, name in _THROTTLE:
            path = self.path("blkio", cgroup, name)
            devices.update(parse_file(path, self.fs.read_text(path), _device_table))
        return sorted(devices)

    def set_io_weight(self, cgroup: str, weight: int) -> bool:
        check_range("io weight", weight, 1, 10000, cgroup)
        for name, lo, hi in _WEIGHT_FILES:
            path = self.path("blkio", cgroup, name)
            if self.fs.exists(path):
                value = str(max(lo, min(hi, weight)))
                return self.write_if_changed(path, value, same=default_weight_is(value))
        self.ensure_exists("blkio", cgroup)
        raise CgroupUnsupported(
            "blkio weights need the BFQ (or CFQ) IO scheduler; this kernel offers neither",
            path=self.path("blkio", cgroup),
        )

    def io_stat(self, cgroup: str) -> dict[str, IOStat]:
        def table(name: str) -> dict[tuple[str, str], int]:
            path = self.path("blkio", cgroup, name)
            out: dict[tuple[str, str], int] = {}
            for line in self.fs.read_text(path).splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[2].isascii() and parts[2].isdigit():
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

    # ---- usage ---------------------------------------------------------------------------

    def cpu_usage_ns(self, cgroup: str) -> int:
        return self.read_int(self.path("cpuacct", cgroup, "cpuacct.usage"))

    def cpu_stat(self, cgroup: str) -> CpuStat:
        stat = parse_flat(self.fs.read_text(self.path("cpu", cgroup, "cpu.stat")))
        return CpuStat(
            nr_periods=stat.get("nr_periods", 0),
            nr_throttled=stat.get("nr_throttled", 0),
            throttled_ns=stat.get("throttled_time", 0),
        )
