"""The cgroup v2 (unified hierarchy) driver.

Kernel behaviour it relies on (Documentation/admin-guide/cgroup-v2.rst):

* a cgroup has a controller's interface files only if its parent lists the
  controller in ``cgroup.subtree_control``, and a non-root cgroup that delegates
  domain controllers (memory, io) to children may not hold tasks itself;
* ``cpu.max`` is ``$MAX $PERIOD``, ``memory.*`` and ``pids.max`` take ``max``;
* an empty ``cpuset.cpus`` means the parent's effective set;
* ``io.max`` lines are ``major:minor rbps=.. wbps=.. riops=.. wiops=..``.
"""

from __future__ import annotations

import posixpath

from katalyst.cgroup.driver import (
    BYTES_MAX,
    CFS_QUOTA_MAX_US,
    MANAGED_CONTROLLERS,
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
    shares_to_weight,
    validate_device,
    weight_to_shares,
)
from katalyst.cgroup.errors import CgroupBusy, CgroupUnsupported
from katalyst.cgroup.layout import Hierarchy
from katalyst.cpuset import CPUSet

_IO_KEYS = (
    ("read_bps", "rbps"),
    ("write_bps", "wbps"),
    ("read_iops", "riops"),
    ("write_iops", "wiops"),
)


def _parse_cpu_max(text: str) -> tuple[int | None, int]:
    quota, period = text.split()
    return (None if quota == "max" else int(quota)), int(period)


def _parse_io_max(text: str, device: str) -> IOLimit:
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == device:
            kv = dict(p.split("=", 1) for p in parts[1:])
            values = {
                attr: (None if kv.get(key, "max") == "max" else int(kv[key]))
                for attr, key in _IO_KEYS
            }
            return IOLimit(**values)
    return IOLimit()


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
        if not wanted:
            return
        try:
            self.write(
                posixpath.join(parent, "cgroup.subtree_control"), " ".join(f"+{c}" for c in wanted)
            )
        except CgroupBusy as exc:
            raise CgroupBusy(
                f"cannot enable {', '.join(wanted)} below {parent}: it holds processes "
                "(cgroup v2 no-internal-process rule); run the agent in a leaf cgroup "
                "and give it a separate subtree to manage",
                path=parent,
                err=exc.errno,
            ) from exc

    # ---- CPU ---------------------------------------------------------------------------

    def set_cpu_quota(self, cgroup: str, *, quota_us: int | None, period_us: int = 100_000) -> bool:
        check_quota(quota_us, period_us, cgroup)
        if quota_us is not None:
            burst_path = self.path("cpu", cgroup, "cpu.max.burst")
            if self.fs.exists(burst_path) and self.read_int(burst_path) > quota_us:
                self.write(burst_path, str(quota_us))
        want = f"{'max' if quota_us is None else quota_us} {period_us}"
        # One write sets both: no intermediate state for the kernel to refuse.
        return self.write_if_changed(self.path("cpu", cgroup, "cpu.max"), want)

    def cpu_quota(self, cgroup: str) -> tuple[int | None, int]:
        path = self.path("cpu", cgroup, "cpu.max")
        return parse_file(path, self.fs.read_text(path), _parse_cpu_max)

    def set_cpu_shares(self, cgroup: str, shares: int) -> bool:
        check_range("cpu shares", shares, 2, 262144, cgroup)
        path = self.path("cpu", cgroup, "cpu.weight")
        return self.write_if_changed(path, str(shares_to_weight(shares)))

    def cpu_shares(self, cgroup: str) -> int:
        return weight_to_shares(self.read_int(self.path("cpu", cgroup, "cpu.weight")))

    def set_cpu_burst(self, cgroup: str, burst_us: int) -> bool:
        path = self.require_file(
            "cpu", cgroup, "cpu.max.burst", missing="needs Linux 5.14 or newer"
        )
        check_range("cpu burst (us)", burst_us, 0, CFS_QUOTA_MAX_US, cgroup)
        return self.write_if_changed(path, str(burst_us))

    def cpuset(self, cgroup: str) -> tuple[CPUSet, CPUSet]:
        cpus_path = self.path("cpuset", cgroup, "cpuset.cpus.effective")
        mems_path = self.path("cpuset", cgroup, "cpuset.mems.effective")
        return (
            parse_file(cpus_path, self.fs.read_text(cpus_path), CPUSet.parse),
            parse_file(mems_path, self.fs.read_text(mems_path), CPUSet.parse),
        )

    # ---- memory ------------------------------------------------------------------------

    def _set_bytes(self, cgroup: str, name: str, value: int | None) -> bool:
        if value is not None:
            check_range(name, value, 0, BYTES_MAX, cgroup)
        want = "max" if value is None else str(value)
        page = self.page_size

        def same(text: str) -> bool:
            current = text.strip()
            if value is None:
                return current == "max"
            return current != "max" and int(current) == value // page * page

        return self.write_if_changed(self.path("memory", cgroup, name), want, same=same)

    def set_memory_limit(self, cgroup: str, limit: int | None) -> bool:
        return self._set_bytes(cgroup, "memory.max", limit)

    def memory_limit(self, cgroup: str) -> int | None:
        path = self.path("memory", cgroup, "memory.max")
        text = self.fs.read_text(path).strip()
        return None if text == "max" else parse_file(path, text, int)

    def set_memory_high(self, cgroup: str, limit: int | None) -> bool:
        return self._set_bytes(cgroup, "memory.high", limit)

    def set_memory_low(self, cgroup: str, protection: int) -> bool:
        return self._set_bytes(cgroup, "memory.low", protection)

    def set_memory_min(self, cgroup: str, protection: int) -> bool:
        return self._set_bytes(cgroup, "memory.min", protection)

    def set_swap_limit(self, cgroup: str, swap: int | None) -> bool:
        self.require_file(
            "memory", cgroup, "memory.swap.max", missing="no swap accounting in this kernel"
        )
        return self._set_bytes(cgroup, "memory.swap.max", swap)

    def swap_limit(self, cgroup: str) -> int | None:
        path = self.require_file(
            "memory", cgroup, "memory.swap.max", missing="no swap accounting in this kernel"
        )
        text = self.fs.read_text(path).strip()
        return None if text == "max" else parse_file(path, text, int)

    def memory_usage(self, cgroup: str) -> int:
        return self.read_int(self.path("memory", cgroup, "memory.current"))

    # ---- IO ------------------------------------------------------------------------------

    def io_limit(self, cgroup: str, device: str) -> IOLimit:
        path = self.path("io", cgroup, "io.max")
        return parse_file(path, self.fs.read_text(path), lambda t: _parse_io_max(t, device))

    def io_limited_devices(self, cgroup: str) -> list[str]:
        path = self.path("io", cgroup, "io.max")
        text = self.fs.read_text(path)
        return sorted({line.split()[0] for line in text.splitlines() if line.split()})

    def set_io_limit(self, cgroup: str, device: str, limit: IOLimit) -> bool:
        validate_device(device)
        check_io_limit(limit, cgroup)
        if self.io_limit(cgroup, device) == limit:
            return False
        fields = " ".join(
            f"{key}={'max' if getattr(limit, attr) is None else getattr(limit, attr)}"
            for attr, key in _IO_KEYS
        )
        self._write_device_rule(self.path("io", cgroup, "io.max"), f"{device} {fields}", device)
        return True

    def set_io_weight(self, cgroup: str, weight: int) -> bool:
        check_range("io weight", weight, 1, 10000, cgroup)
        # io.weight is iocost's; BFQ offers io.bfq.weight ([1, 1000]) instead.
        for name, hi in (("io.weight", 10000), ("io.bfq.weight", 1000)):
            path = self.path("io", cgroup, name)
            if self.fs.exists(path):
                value = str(min(weight, hi))
                return self.write_if_changed(
                    path, f"default {value}", same=default_weight_is(value)
                )
        self.ensure_exists("io", cgroup)
        raise CgroupUnsupported(
            "io weights need iocost (io.weight) or the BFQ scheduler (io.bfq.weight)",
            path=self.path("io", cgroup),
        )

    def io_stat(self, cgroup: str) -> dict[str, IOStat]:
        out: dict[str, IOStat] = {}
        for line in self.fs.read_text(self.path("io", cgroup, "io.stat")).splitlines():
            parts = line.split()
            if not parts:
                continue
            kv = {
                k: int(v)
                for k, _, v in (p.partition("=") for p in parts[1:])
                if v.isascii() and v.isdigit()
            }
            out[parts[0]] = IOStat(
                read_bytes=kv.get("rbytes", 0),
                write_bytes=kv.get("wbytes", 0),
                read_ios=kv.get("rios", 0),
                write_ios=kv.get("wios", 0),
            )
        return out

    # ---- usage ---------------------------------------------------------------------------

    def _cpu_stat(self, cgroup: str) -> dict[str, int]:
        unified = self.layout.unified
        if unified is None:
            raise CgroupUnsupported("no unified hierarchy is mounted")
        return parse_flat(self.fs.read_text(self.path_in(unified, cgroup, "cpu.stat")))

    def cpu_usage_ns(self, cgroup: str) -> int:
        return self._cpu_stat(cgroup).get("usage_usec", 0) * 1000

    def cpu_stat(self, cgroup: str) -> CpuStat:
        stat = self._cpu_stat(cgroup)
        return CpuStat(
            nr_periods=stat.get("nr_periods", 0),
            nr_throttled=stat.get("nr_throttled", 0),
            throttled_ns=stat.get("throttled_usec", 0) * 1000,
        )
