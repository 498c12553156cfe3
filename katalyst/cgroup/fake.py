"""A file-faithful, in-memory model of the kernel's cgroup filesystems, for tests.

It behaves like the kernel where the project depends on it: new v1 cpuset cgroups
start with empty ``cpuset.cpus``/``cpuset.mems`` and refuse tasks (ENOSPC) until
both are set; a cpuset outside the parent's is EINVAL and beyond the machine's CPUs
ERANGE; values the kernel rejects are EINVAL/ERANGE; ``cpu.shares`` is EINVAL while
``cpu.idle`` is 1; memory limits read back rounded down to whole pages; cgroup v2
has the no-internal-process rule and ``cgroup.subtree_control`` delegation; a
cgroup with tasks or children cannot be removed (EBUSY); read-only files refuse
writes (EACCES). The same contract suite runs against this fake and the real kernel
(``tests/contract``), which is what keeps the two honest.

Every error is raised as the typed error of :mod:`katalyst.cgroup.errors`, through
the same translation the host implementation uses.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

from katalyst.cgroup.errors import CgroupInvalidValue, CgroupNotFound, translate_oserror
from katalyst.cpuset import CPUSet

#: What v1 reads back for "no limit" (PAGE_COUNTER_MAX pages of 4 KiB).
V1_UNLIMITED = 9223372036854771712
#: max_cfs_runtime in microseconds.
_MAX_CFS_US = 2**44 - 1
#: PID_MAX_LIMIT.
_PIDS_MAX = 4 * 1024 * 1024
_MEMPARSE = re.compile(r"^(\d+)([kKmMgGtTpPeE]?)$")
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}

DEFAULT_V1_GROUPS: tuple[tuple[str, ...], ...] = (
    ("blkio",),
    ("cpu",),
    ("cpuacct",),
    ("cpuset",),
    ("memory",),
    ("pids",),
)
DEFAULT_V2_CONTROLLERS: tuple[str, ...] = ("cpuset", "cpu", "io", "memory", "pids")


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _uint(value: str) -> int:
    v = value.strip()
    if not v.isdigit():
        raise _err(errno.EINVAL)
    return int(v)


def _sint(value: str) -> int:
    v = value.strip()
    if not re.fullmatch(r"-?\d+", v):
        raise _err(errno.EINVAL)
    return int(v)


def _memparse(value: str) -> int:
    """The kernel's memparse(): a number with an optional K/M/G/T/P/E suffix."""
    m = _MEMPARSE.match(value.strip())
    if m is None:
        raise _err(errno.EINVAL)
    return int(m.group(1)) << _SHIFT[m.group(2).lower()]


def _pages(fs: FakeCgroupFS, nbytes: int) -> int:
    return nbytes // fs.page_size * fs.page_size


@dataclass(eq=False)
class _Node:
    name: str
    parent: _Node | None
    files: dict[str, str] = field(default_factory=dict)
    children: dict[str, _Node] = field(default_factory=dict)
    procs: set[int] = field(default_factory=set)
    # Per-device IO settings: file name -> {"maj:min": value line}.
    devmaps: dict[str, dict[str, str]] = field(default_factory=dict)

    def path(self) -> str:
        parts: list[str] = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/" + "/".join(reversed(parts))


@dataclass(eq=False)
class _Hier:
    mountpoint: str
    version: int
    controllers: frozenset[str]
    root: _Node


_Writer = Callable[["FakeCgroupFS", _Hier, _Node, str], None]
_Reader = Callable[["FakeCgroupFS", _Hier, _Node], str]


@dataclass(frozen=True)
class _Spec:
    default: Callable[[FakeCgroupFS, _Hier, _Node], str] | None
    """Initial value stored in the node's files; None for computed files."""
    write: _Writer | None = None
    """None: read-only (EACCES on write, as kernfs answers for a file without write op)."""
    read: _Reader | None = None
    """For computed files."""
    root_only: bool = False
    non_root: bool = False


def _const(text: str) -> Callable[[FakeCgroupFS, _Hier, _Node], str]:
    return lambda _fs, _h, _n: text


def _reset_only(name: str) -> _Writer:
    """Statistics the kernel lets one reset by writing 0 (EINVAL for anything else)."""

    def write(_fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
        if value.strip() != "0":
            raise _err(errno.EINVAL)
        node.files[name] = "0"

    return write


def _store(name: str, parse: Callable[[str], str]) -> _Writer:
    def write(_fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
        node.files[name] = parse(value)

    return write


# ---- cgroup core files ---------------------------------------------------------


def _read_procs(_fs: FakeCgroupFS, _h: _Hier, node: _Node) -> str:
    return "".join(f"{p}\n" for p in sorted(node.procs))


def _write_procs(fs: FakeCgroupFS, hier: _Hier, node: _Node, value: str) -> None:
    pid = _uint(value)
    if pid == 0:
        pid = fs.self_pid
    if pid not in fs.processes:
        raise _err(errno.ESRCH)
    if (
        hier.version == 1
        and "cpuset" in hier.controllers
        and (
            not node.files.get("cpuset.cpus", "").strip()
            or not node.files.get("cpuset.mems", "").strip()
        )
    ):
        raise _err(errno.ENOSPC)  # kernel: cpuset_can_attach() with no cpus or mems
    if hier.version == 2 and node.parent is not None and _delegates_domain(node):
        raise _err(errno.EBUSY)  # the no-internal-process rule
    for n in fs.walk(hier.root):
        n.procs.discard(pid)
    node.procs.add(pid)


#: v2 controllers that may be enabled in a cgroup that keeps tasks of its own
#: (a "thread root"); the no-internal-process rule is about the others.
_THREADED = frozenset({"cpu", "cpuset", "perf_event", "pids"})


def _delegates_domain(node: _Node) -> bool:
    return bool(set(node.files["cgroup.subtree_control"].split()) - _THREADED)


def _v2_controllers(_fs: FakeCgroupFS, hier: _Hier, node: _Node) -> str:
    if node.parent is None:
        return " ".join(sorted(hier.controllers))
    return node.parent.files["cgroup.subtree_control"]


def _write_subtree(fs: FakeCgroupFS, hier: _Hier, node: _Node, value: str) -> None:
    enabled = set(node.files["cgroup.subtree_control"].split())
    available = set(_v2_controllers(fs, hier, node).split())
    for tok in value.split():
        if len(tok) < 2 or tok[0] not in "+-":
            raise _err(errno.EINVAL)
        ctrl = tok[1:]
        if ctrl not in available:
            raise _err(errno.ENOENT)
        if tok[0] == "+":
            if node.parent is not None and node.procs and ctrl not in _THREADED:
                raise _err(errno.EBUSY)
            enabled.add(ctrl)
        else:
            if any(
                ctrl in c.files["cgroup.subtree_control"].split() for c in node.children.values()
            ):
                raise _err(errno.EBUSY)
            enabled.discard(ctrl)
    node.files["cgroup.subtree_control"] = " ".join(sorted(enabled))
    for child in node.children.values():
        fs.populate(hier, child)


# ---- cpu -------------------------------------------------------------------------


def _write_shares(_fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
    if node.files.get("cpu.idle", "0") == "1":
        raise _err(errno.EINVAL)  # sched_group_set_shares() refuses idle groups
    node.files["cpu.shares"] = str(min(max(_uint(value), 2), 262144))


def _ratio(node: _Node) -> float | None:
    quota = int(node.files["cpu.cfs_quota_us"])
    return None if quota < 0 else quota / int(node.files["cpu.cfs_period_us"])


def _parent_ratio(node: _Node) -> float | None:
    up = node.parent
    while up is not None:
        r = _ratio(up) if "cpu.cfs_quota_us" in up.files else None
        if r is not None:
            return r
        up = up.parent
    return None


def _check_bandwidth(node: _Node, quota: int, period: int) -> None:
    """v1 tg_cfs_schedulable_down(): no child may get more CPU than its parent."""
    mine = None if quota < 0 else quota / period
    parent = _parent_ratio(node)
    if mine is not None and parent is not None and mine > parent:
        raise _err(errno.EINVAL)
    effective = mine if mine is not None else parent
    if effective is None:
        return
    stack = list(node.children.values())
    while stack:
        child = stack.pop()
        r = _ratio(child)
        if r is not None and r > effective:
            raise _err(errno.EINVAL)
        if r is None:
            stack.extend(child.children.values())


def _write_quota(_fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
    q = _sint(value)
    if q < 0:
        q = -1
    elif q < 1000 or q > _MAX_CFS_US:
        raise _err(errno.EINVAL)  # below min_cfs_quota_period (1 ms) or max_cfs_runtime
    burst = int(node.files.get("cpu.cfs_burst_us", "0"))
    if q != -1 and burst > q:
        raise _err(errno.EINVAL)
    _check_bandwidth(node, q, int(node.files["cpu.cfs_period_us"]))
    node.files["cpu.cfs_quota_us"] = str(q)


def _write_period(_fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
    p = _uint(value)
    if not 1000 <= p <= 1_000_000:
        raise _err(errno.EINVAL)
    _check_bandwidth(node, int(node.files["cpu.cfs_quota_us"]), p)
    node.files["cpu.cfs_period_us"] = str(p)


def _write_burst_v1(_fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
    b = _uint(value)
    q = int(node.files["cpu.cfs_quota_us"])
    if (q != -1 and b > q) or b > _MAX_CFS_US:
        raise _err(errno.EINVAL)
    node.files["cpu.cfs_burst_us"] = str(b)


def _write_idle(_fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
    v = _sint(value)
    if v not in (0, 1):
        raise _err(errno.EINVAL)
    if node.files["cpu.idle"] != str(v):
        # sched_group_set_idle(): the group's weight becomes WEIGHT_IDLEPRIO (3)
        # while idle and NICE_0_LOAD (1024) when idle is cleared.
        if "cpu.shares" in node.files:
            node.files["cpu.shares"] = "3" if v else "1024"
        if "cpu.weight" in node.files:
            node.files["cpu.weight"] = "1" if v else "100"
    node.files["cpu.idle"] = str(v)


def _write_cpu_max(_fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
    parts = value.split()
    if not 1 <= len(parts) <= 2:
        raise _err(errno.EINVAL)
    quota_s, period_s = (
        parts[0],
        (parts[1] if len(parts) == 2 else node.files["cpu.max"].split()[1]),
    )
    period = _uint(period_s)
    if not 1000 <= period <= 1_000_000:
        raise _err(errno.EINVAL)
    if quota_s != "max":
        quota = _uint(quota_s)
        if quota < 1000 or quota > _MAX_CFS_US:
            raise _err(errno.EINVAL)
        burst = int(node.files.get("cpu.max.burst", "0"))
        if burst > quota:
            raise _err(errno.EINVAL)
        quota_s = str(quota)
    node.files["cpu.max"] = f"{quota_s} {period}"


def _write_weight(_fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
    if node.files.get("cpu.idle", "0") == "1":
        raise _err(errno.EINVAL)  # the same sched_group_set_shares() check as v1
    w = _uint(value)
    if not 1 <= w <= 10000:
        raise _err(errno.ERANGE)
    node.files["cpu.weight"] = str(w)


def _write_burst_v2(_fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
    b = _uint(value)
    quota = node.files["cpu.max"].split()[0]
    if (quota != "max" and b > int(quota)) or b > _MAX_CFS_US:
        raise _err(errno.EINVAL)
    node.files["cpu.max.burst"] = str(b)


# ---- cpuset ----------------------------------------------------------------------


def _machine_set(fs: FakeCgroupFS, name: str) -> CPUSet:
    """All CPUs (for ``cpuset.cpus``) or all memory nodes (``cpuset.mems``)."""
    return fs.cpus if name == "cpuset.cpus" else fs.mems


def _cpuset_writer(name: str) -> _Writer:
    def write(fs: FakeCgroupFS, hier: _Hier, node: _Node, value: str) -> None:
        try:
            wanted = CPUSet.parse(value)
        except ValueError:
            raise _err(errno.EINVAL) from None
        if not wanted.issubset(_machine_set(fs, name)):
            raise _err(errno.ERANGE)  # ids the machine does not have
        if node.parent is None:
            raise _err(errno.EACCES)
        if hier.version == 1:
            parent = CPUSet.parse(node.parent.files[name])
            if not wanted.issubset(parent):
                raise _err(errno.EACCES)  # v1 validate_change(): not within the parent
            for child in node.children.values():
                if not CPUSet.parse(child.files[name]).issubset(wanted):
                    raise _err(errno.EBUSY)
            if not wanted.ids and node.procs:
                raise _err(errno.ENOSPC)
        node.files[name] = str(wanted)

    return write


def _v1_cpuset_default(name: str) -> Callable[[FakeCgroupFS, _Hier, _Node], str]:
    """v1: the root holds every CPU/node; a new cgroup starts empty (no clone_children)."""

    def default(fs: FakeCgroupFS, _h: _Hier, node: _Node) -> str:
        return str(_machine_set(fs, name)) if node.parent is None else ""

    return default


def _effective(fs: FakeCgroupFS, hier: _Hier, node: _Node, name: str) -> str:
    """v1: the configured set. v2: the configured set within the parent's effective
    set; the parent's when that is empty (v2 has no "must be a subset" rule)."""
    own = node.files.get(name, "")
    if node.parent is None:
        return str(_machine_set(fs, name))
    if hier.version == 1:
        return own
    parent = CPUSet.parse(_effective(fs, hier, node.parent, name))
    within = CPUSet.parse(own).intersection(parent)
    return str(within if within.ids else parent)


# ---- memory ----------------------------------------------------------------------


def _v1_limit(name: str) -> _Writer:
    def write(fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
        v = value.strip()
        new = V1_UNLIMITED if v == "-1" else min(_pages(fs, _memparse(v)), V1_UNLIMITED)
        memsw = node.files.get("memory.memsw.limit_in_bytes")
        if name == "memory.limit_in_bytes" and memsw is not None and new > int(memsw):
            raise _err(errno.EINVAL)  # memory limit above the memory+swap limit
        if name == "memory.memsw.limit_in_bytes" and new < int(node.files["memory.limit_in_bytes"]):
            raise _err(errno.EINVAL)
        node.files[name] = str(new)

    return write


def _v2_memory(name: str) -> _Writer:
    def write(fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
        v = value.strip()
        node.files[name] = "max" if v == "max" else str(_pages(fs, _memparse(v)))

    return write


# ---- io ----------------------------------------------------------------------------


def _dev(fs: FakeCgroupFS, token: str) -> str:
    if not re.fullmatch(r"\d+:\d+", token):
        raise _err(errno.EINVAL)
    if token not in fs.devices:
        raise _err(errno.ENODEV)
    return token


def _v1_throttle(name: str) -> _Writer:
    def write(fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
        parts = value.split()
        if len(parts) != 2:
            raise _err(errno.EINVAL)
        dev = _dev(fs, parts[0])
        rate = _uint(parts[1])
        table = node.devmaps.setdefault(name, {})
        if rate == 0:
            table.pop(dev, None)  # 0 removes the rule
        elif name.endswith("iops_device"):
            table[dev] = str(rate & 0xFFFFFFFF)  # blk-throttle keeps iops in 32 bits
        else:
            table[dev] = str(rate)

    return write


def _devmap_reader(name: str, fmt: Callable[[str, str], str]) -> _Reader:
    def read(_fs: FakeCgroupFS, _h: _Hier, node: _Node) -> str:
        table = node.devmaps.get(name, {})
        return "".join(fmt(d, v) + "\n" for d, v in sorted(table.items()))

    return read


_IO_MAX_KEYS = ("rbps", "wbps", "riops", "wiops")


def _write_io_max(fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
    parts = value.split()
    if not parts:
        raise _err(errno.EINVAL)
    dev = _dev(fs, parts[0])
    table = node.devmaps.setdefault("io.max", {})
    current = dict(kv.split("=") for kv in table.get(dev, "").split()) if dev in table else {}
    limits = {k: current.get(k, "max") for k in _IO_MAX_KEYS}
    for kv in parts[1:]:
        key, sep, val = kv.partition("=")
        if not sep or key not in _IO_MAX_KEYS:
            raise _err(errno.EINVAL)
        if val != "max" and _uint(val) == 0:
            raise _err(errno.EINVAL)
        limits[key] = val
    if all(v == "max" for v in limits.values()):
        table.pop(dev, None)
    else:
        table[dev] = " ".join(f"{k}={limits[k]}" for k in _IO_MAX_KEYS)


def _write_io_weight(fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
    parts = value.split()
    if len(parts) == 1:
        parts = ["default", parts[0]]
    if len(parts) != 2:
        raise _err(errno.EINVAL)
    w = _uint(parts[1])
    if not 1 <= w <= 10000:
        raise _err(errno.ERANGE)
    if parts[0] == "default":
        node.files["io.weight"] = f"default {w}"
    else:
        node.devmaps.setdefault("io.weight", {})[_dev(fs, parts[0])] = str(w)


def _read_io_weight(_fs: FakeCgroupFS, _h: _Hier, node: _Node) -> str:
    lines = [node.files["io.weight"]]
    lines += [f"{d} {w}" for d, w in sorted(node.devmaps.get("io.weight", {}).items())]
    return "\n".join(lines) + "\n"


def _write_pids_max(_fs: FakeCgroupFS, _h: _Hier, node: _Node, value: str) -> None:
    v = value.strip()
    if v != "max":
        n = _uint(v)
        if n > _PIDS_MAX:
            raise _err(errno.EINVAL)
        v = str(n)
    node.files["pids.max"] = v


_PSI = (
    "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
)


def _specs(version: int, controller: str) -> dict[str, _Spec]:
    """The interface files a controller adds to each cgroup of its hierarchy."""
    if version == 1:
        return _V1_SPECS.get(controller, {})
    return _V2_SPECS.get(controller, {})


_V1_SPECS: dict[str, dict[str, _Spec]] = {
    "cpu": {
        "cpu.shares": _Spec(_const("1024"), _write_shares),
        "cpu.cfs_quota_us": _Spec(_const("-1"), _write_quota),
        "cpu.cfs_period_us": _Spec(_const("100000"), _write_period),
        "cpu.cfs_burst_us": _Spec(_const("0"), _write_burst_v1),
        "cpu.idle": _Spec(_const("0"), _write_idle),
        "cpu.stat": _Spec(_const("nr_periods 0\nnr_throttled 0\nthrottled_time 0\n")),
    },
    "cpuacct": {
        "cpuacct.usage": _Spec(_const("0"), _reset_only("cpuacct.usage")),
        "cpuacct.stat": _Spec(_const("user 0\nsystem 0\n")),
    },
    "cpuset": {
        name: _Spec(_v1_cpuset_default(name), _cpuset_writer(name))
        for name in ("cpuset.cpus", "cpuset.mems")
    },
    "memory": {
        "memory.limit_in_bytes": _Spec(
            _const(str(V1_UNLIMITED)), _v1_limit("memory.limit_in_bytes")
        ),
        "memory.soft_limit_in_bytes": _Spec(
            _const(str(V1_UNLIMITED)), _v1_limit("memory.soft_limit_in_bytes")
        ),
        "memory.memsw.limit_in_bytes": _Spec(
            _const(str(V1_UNLIMITED)), _v1_limit("memory.memsw.limit_in_bytes")
        ),
        "memory.usage_in_bytes": _Spec(_const("0")),
        "memory.max_usage_in_bytes": _Spec(_const("0")),
        "memory.stat": _Spec(_const("cache 0\nrss 0\nmapped_file 0\nswap 0\n")),
        "memory.swappiness": _Spec(
            _const("60"), _store("memory.swappiness", lambda v: str(_uint(v)))
        ),
        "memory.oom_control": _Spec(_const("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")),
    },
    "blkio": {
        **{
            f"blkio.throttle.{f}": _Spec(
                None,
                _v1_throttle(f"blkio.throttle.{f}"),
                _devmap_reader(f"blkio.throttle.{f}", lambda d, v: f"{d} {v}"),
            )
            for f in (
                "read_bps_device",
                "write_bps_device",
                "read_iops_device",
                "write_iops_device",
            )
        },
        "blkio.throttle.io_service_bytes": _Spec(_const("Total 0\n")),
        "blkio.throttle.io_serviced": _Spec(_const("Total 0\n")),
    },
    "pids": {
        "pids.max": _Spec(_const("max"), _write_pids_max, non_root=True),
        "pids.current": _Spec(_const("0"), non_root=True),
    },
}

_V2_SPECS: dict[str, dict[str, _Spec]] = {
    "cpu": {
        "cpu.max": _Spec(_const("max 100000"), _write_cpu_max, non_root=True),
        "cpu.max.burst": _Spec(_const("0"), _write_burst_v2, non_root=True),
        "cpu.weight": _Spec(_const("100"), _write_weight, non_root=True),
        "cpu.idle": _Spec(_const("0"), _write_idle, non_root=True),
    },
    "cpuset": {
        "cpuset.cpus": _Spec(_const(""), _cpuset_writer("cpuset.cpus"), non_root=True),
        "cpuset.mems": _Spec(_const(""), _cpuset_writer("cpuset.mems"), non_root=True),
        "cpuset.cpus.effective": _Spec(
            None, read=lambda fs, h, n: _effective(fs, h, n, "cpuset.cpus") + "\n"
        ),
        "cpuset.mems.effective": _Spec(
            None, read=lambda fs, h, n: _effective(fs, h, n, "cpuset.mems") + "\n"
        ),
    },
    "memory": {
        **{
            f: _Spec(_const(d), _v2_memory(f), non_root=True)
            for f, d in (
                ("memory.max", "max"),
                ("memory.high", "max"),
                ("memory.low", "0"),
                ("memory.min", "0"),
                ("memory.swap.max", "max"),
            )
        },
        "memory.current": _Spec(_const("0"), non_root=True),
        "memory.stat": _Spec(_const("anon 0\nfile 0\nkernel 0\nshmem 0\n")),
    },
    "io": {
        "io.max": _Spec(
            None, _write_io_max, _devmap_reader("io.max", lambda d, v: f"{d} {v}"), non_root=True
        ),
        "io.weight": _Spec(_const("default 100"), _write_io_weight, _read_io_weight, non_root=True),
        "io.stat": _Spec(_const("")),
    },
    "pids": {
        "pids.max": _Spec(_const("max"), _write_pids_max, non_root=True),
        "pids.current": _Spec(_const("0"), non_root=True),
    },
}

_SWAP_FILES = frozenset({"memory.memsw.limit_in_bytes", "memory.swap.max"})

_V1_CORE: dict[str, _Spec] = {
    "cgroup.procs": _Spec(None, _write_procs, _read_procs),
    "tasks": _Spec(None, _write_procs, _read_procs),
    "notify_on_release": _Spec(_const("0"), _store("notify_on_release", lambda v: str(_uint(v)))),
}

_V2_CORE: dict[str, _Spec] = {
    "cgroup.procs": _Spec(None, _write_procs, _read_procs),
    "cgroup.controllers": _Spec(None, read=_v2_controllers),
    "cgroup.subtree_control": _Spec(
        _const(""),
        _write_subtree,
        read=lambda _f, _h, n: (
            n.files["cgroup.subtree_control"] + "\n" if n.files["cgroup.subtree_control"] else "\n"
        ),
    ),
    # cpu.stat exists in every v2 cgroup (usage), with throttling lines once cpu is on.
    "cpu.stat": _Spec(
        _const(
            "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"
            "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"
        )
    ),
    "cpu.pressure": _Spec(_const(_PSI)),
    "memory.pressure": _Spec(_const(_PSI)),
    "io.pressure": _Spec(_const(_PSI)),
}


class FakeOptions(TypedDict, total=False):
    """Machine properties every fake layout takes."""

    cpus: str
    """The machine's CPUs in list format (default ``0-3``)."""
    mems: str
    """Its memory nodes (default ``0``)."""
    devices: Iterable[str]
    """Block devices (``major:minor``) the kernel knows (default 7:0 and 8:0)."""
    own_cgroup: dict[str, str]
    """This process's cgroup per controller ("" for unified); default ``/``."""
    swap_accounting: bool
    """Whether memsw / memory.swap.max exist (default True)."""
    page_size: int
    """The kernel's page size (default 4096)."""


class FakeCgroupFS:
    """An in-memory cgroup filesystem implementing :class:`katalyst.cgroup.fs.CgroupFS`.

    Build it with :meth:`v1`, :meth:`hybrid` or :meth:`v2`. Tests register
    processes with :meth:`add_process`, set kernel-maintained statistics with
    :meth:`set_stat`, and may add arbitrary files (``/proc/pressure/cpu``) with
    :meth:`set_file`.
    """

    def __init__(
        self,
        *,
        hierarchies: Iterable[tuple[str, int, frozenset[str]]],
        **options: Unpack[FakeOptions],
    ) -> None:
        self.cpus = CPUSet.parse(options.get("cpus", "0-3"))
        self.mems = CPUSet.parse(options.get("mems", "0"))
        self.devices = set(options.get("devices", ("7:0", "8:0")))
        self.swap_accounting = options.get("swap_accounting", True)
        self.page_size = options.get("page_size", 4096)
        self._own = options.get("own_cgroup", {})
        self.self_pid = 1
        self.processes: set[int] = {1}
        self._hiers: list[_Hier] = []
        self._extra: dict[str, str] = {}
        for mountpoint, version, controllers in hierarchies:
            hier = _Hier(mountpoint, version, controllers, _Node("", None))
            self._hiers.append(hier)
            self.populate(hier, hier.root)
            own = self._own_path(hier)
            node = hier.root
            for part in [p for p in own.split("/") if p]:
                if hier.version == 2:
                    # As systemd does on a v2 host: controllers delegated down the path.
                    node.files["cgroup.subtree_control"] = " ".join(sorted(hier.controllers))
                node = node.children.setdefault(part, _Node(part, node))
                self.populate(hier, node)
                if hier.version == 1 and "cpuset" in hier.controllers:
                    node.files["cpuset.cpus"] = str(self.cpus)
                    node.files["cpuset.mems"] = str(self.mems)
            node.procs.add(self.self_pid)
        for resource in ("cpu", "memory", "io"):
            self._extra[f"/proc/pressure/{resource}"] = _PSI

    # ---- constructors ---------------------------------------------------------

    @classmethod
    def v1(
        cls,
        *,
        groups: Iterable[tuple[str, ...]] = DEFAULT_V1_GROUPS,
        mount: str = "/sys/fs/cgroup",
        unified: bool = False,
        **options: Unpack[FakeOptions],
    ) -> FakeCgroupFS:
        """A v1 host: one hierarchy per group of controllers (each separate by default)."""
        hiers = [(f"{mount}/{','.join(g)}", 1, frozenset(g)) for g in groups]
        if unified:
            hiers.append((f"{mount}/unified", 2, frozenset()))
        return cls(hierarchies=hiers, **options)

    @classmethod
    def hybrid(
        cls,
        *,
        groups: Iterable[tuple[str, ...]] = DEFAULT_V1_GROUPS,
        mount: str = "/sys/fs/cgroup",
        **options: Unpack[FakeOptions],
    ) -> FakeCgroupFS:
        """A v1 host with an empty cgroup2 mount at ``<mount>/unified`` (like systemd hybrid)."""
        return cls.v1(groups=groups, mount=mount, unified=True, **options)

    @classmethod
    def v2(
        cls,
        *,
        controllers: Iterable[str] = DEFAULT_V2_CONTROLLERS,
        mount: str = "/sys/fs/cgroup",
        **options: Unpack[FakeOptions],
    ) -> FakeCgroupFS:
        """A pure cgroup v2 host."""
        return cls(hierarchies=[(mount, 2, frozenset(controllers))], **options)

    # ---- test helpers -----------------------------------------------------------

    def add_process(self, pid: int) -> None:
        """Make ``pid`` exist, in the root cgroup of every hierarchy."""
        self.processes.add(pid)
        for hier in self._hiers:
            hier.root.procs.add(pid)

    def exit_process(self, pid: int) -> None:
        """The process exits: it leaves every cgroup."""
        self.processes.discard(pid)
        for hier in self._hiers:
            for node in self.walk(hier.root):
                node.procs.discard(pid)

    def set_stat(self, path: str, content: str) -> None:
        """Set a kernel-maintained file (``cpuacct.usage``, ``memory.stat``) as the kernel would."""
        _hier, node, name = self._resolve(path)
        if name is None or name not in node.files:
            raise translate_oserror(_err(errno.ENOENT), path=path, action="set stat")
        node.files[name] = content

    def set_file(self, path: str, content: str) -> None:
        """Add a file outside the cgroup mounts, such as ``/proc/pressure/cpu``."""
        self._extra[path] = content

    def walk(self, node: _Node) -> list[_Node]:
        """``node`` and every cgroup below it."""
        out = [node]
        for child in node.children.values():
            out.extend(self.walk(child))
        return out

    def populate(self, hier: _Hier, node: _Node) -> None:
        """(Re)create the interface files a cgroup has in ``hier``; keeps existing values."""
        wanted = self._spec_table(hier, node)
        for name in list(node.files):
            if name not in wanted:
                del node.files[name]
        for name, spec in wanted.items():
            if spec.default is not None and name not in node.files:
                node.files[name] = spec.default(self, hier, node)

    # ---- CgroupFS ---------------------------------------------------------------

    def proc_path(self, relative: str) -> str:
        return f"/proc/{relative}"

    def read_text(self, path: str) -> str:
        if path in self._extra:
            return self._extra[path]
        hier, node, name = self._resolve(path, action="read")
        if name is None:
            raise translate_oserror(_err(errno.EISDIR), path=path, action="read")
        spec = self._spec_table(hier, node).get(name)
        if spec is None:
            raise translate_oserror(_err(errno.ENOENT), path=path, action="read")
        if spec.read is not None:
            return spec.read(self, hier, node)
        value = node.files[name]
        return value if value.endswith("\n") else value + "\n"

    def write_text(self, path: str, value: str) -> None:
        action = f"write {value.strip()!r} to"
        if path in self._extra:
            raise translate_oserror(_err(errno.EACCES), path=path, action=action)
        hier, node, name = self._resolve(path, action=action)
        spec = self._spec_table(hier, node).get(name) if name is not None else None
        if spec is None:
            raise translate_oserror(_err(errno.ENOENT), path=path, action=action)
        if spec.write is None:
            raise translate_oserror(_err(errno.EACCES), path=path, action=action)
        try:
            spec.write(self, hier, node, value)
        except OSError as exc:
            raise translate_oserror(exc, path=path, action=action) from exc

    def exists(self, path: str) -> bool:
        if path in self._extra:
            return True
        try:
            hier, node, name = self._resolve(path)
        except CgroupNotFound:
            return False
        return name is None or name in self._spec_table(hier, node)

    def is_dir(self, path: str) -> bool:
        try:
            _, _, name = self._resolve(path)
        except CgroupNotFound:
            return False
        return name is None

    def listdir(self, path: str) -> list[str]:
        hier, node, name = self._resolve(path, action="list")
        if name is not None:
            raise translate_oserror(_err(errno.ENOTDIR), path=path, action="list")
        return sorted([*node.children, *self._spec_table(hier, node)])

    def mkdir(self, path: str) -> None:
        parent_path, _, leaf = path.rstrip("/").rpartition("/")
        hier, parent, name = self._resolve(parent_path or "/", action="create cgroup")
        if name is not None:
            raise translate_oserror(_err(errno.ENOTDIR), path=path, action="create cgroup")
        if leaf in parent.children:
            return
        if leaf in self._spec_table(hier, parent):
            raise CgroupInvalidValue(
                f"create cgroup {path}: the name is taken by an interface file", path=path
            )
        if not leaf or leaf in (".", ".."):
            raise translate_oserror(_err(errno.EEXIST), path=path, action="create cgroup")
        node = _Node(leaf, parent)
        parent.children[leaf] = node
        self.populate(hier, node)

    def rmdir(self, path: str) -> None:
        _, node, name = self._resolve(path, action="remove cgroup")
        if name is not None:
            raise translate_oserror(_err(errno.ENOTDIR), path=path, action="remove cgroup")
        if node.parent is None:
            raise translate_oserror(_err(errno.EBUSY), path=path, action="remove cgroup")
        if node.children or node.procs:
            raise translate_oserror(_err(errno.EBUSY), path=path, action="remove cgroup")
        del node.parent.children[node.name]

    def mountinfo(self) -> str:
        lines = []
        for i, h in enumerate(self._hiers):
            if h.version == 1:
                opts = "rw," + ",".join(sorted(h.controllers))
                lines.append(
                    f"{40 + i} 31 0:{40 + i} / {h.mountpoint} rw,relatime - cgroup cgroup {opts}"
                )
            else:
                lines.append(
                    f"{40 + i} 31 0:{40 + i} / {h.mountpoint} rw,relatime - cgroup2 cgroup2 rw"
                )
        return "\n".join(lines) + "\n"

    def proc_self_cgroup(self) -> str:
        lines = []
        for i, h in enumerate(self._hiers):
            if h.version == 1:
                lines.append(f"{i + 1}:{','.join(sorted(h.controllers))}:{self._own_path(h)}")
            else:
                lines.append(f"0::{self._own_path(h)}")
        return "\n".join(lines) + "\n"

    def _own_path(self, hier: _Hier) -> str:
        """This (fake) process's cgroup in ``hier``: ``own_cgroup`` maps a
        controller (or "" for the unified hierarchy) to a path."""
        if hier.version == 2:
            return self._own.get("", "/")
        for ctrl in sorted(hier.controllers):
            if ctrl in self._own:
                return self._own[ctrl]
        return "/"

    # ---- internals ----------------------------------------------------------------

    def _spec_table(self, hier: _Hier, node: _Node) -> dict[str, _Spec]:
        is_root = node.parent is None
        table: dict[str, _Spec] = dict(_V1_CORE if hier.version == 1 else _V2_CORE)
        if hier.version == 1:
            ctrls: Iterable[str] = hier.controllers
        elif is_root:
            ctrls = ["cpuset"] if "cpuset" in hier.controllers else []
            table["cgroup.subtree_control"] = _V2_CORE["cgroup.subtree_control"]
        else:
            assert node.parent is not None
            ctrls = node.parent.files["cgroup.subtree_control"].split()
        for c in ctrls:
            for name, spec in _specs(hier.version, c).items():
                if (spec.non_root and is_root) or (spec.root_only and not is_root):
                    continue
                if not self.swap_accounting and name in _SWAP_FILES:
                    continue
                table[name] = spec
        return table

    def _resolve(self, path: str, *, action: str = "open") -> tuple[_Hier, _Node, str | None]:
        norm = posixpath.normpath(path)
        for hier in sorted(self._hiers, key=lambda h: -len(h.mountpoint)):
            if norm == hier.mountpoint or norm.startswith(hier.mountpoint + "/"):
                rel = norm[len(hier.mountpoint) :].strip("/")
                node = hier.root
                parts = rel.split("/") if rel else []
                for i, part in enumerate(parts):
                    if part in node.children:
                        node = node.children[part]
                    elif i == len(parts) - 1:
                        return hier, node, part
                    else:
                        raise translate_oserror(_err(errno.ENOENT), path=path, action=action)
                return hier, node, None
        raise translate_oserror(_err(errno.ENOENT), path=path, action=action)
