"""Which cgroup hierarchies are mounted where: detected once from mountinfo.

Never assume ``cpu,cpuacct`` are co-mounted: on some hosts (this project's CI
machines among them) each v1 controller has its own hierarchy; on others they are
grouped; on modern distributions there is only the unified (v2) hierarchy, and on
"hybrid" hosts v1 controllers sit beside a cgroup2 mount that has none of them.
"""

from __future__ import annotations

import enum
import posixpath
from dataclasses import dataclass

from katalyst.cgroup.errors import CgroupError, CgroupUnsupported
from katalyst.cgroup.fs import CgroupFS

#: v1 controllers the kernel can mount (``name=`` hierarchies carry none).
V1_CONTROLLERS = frozenset(
    {
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "blkio",
        "pids",
        "devices",
        "freezer",
        "net_cls",
        "net_prio",
        "perf_event",
        "hugetlb",
        "rdma",
        "misc",
    }
)


class CgroupMode(enum.StrEnum):
    """How the host mounts cgroups."""

    V1 = "v1"
    """Only v1 hierarchies."""
    HYBRID = "hybrid"
    """v1 hierarchies for the resource controllers plus a cgroup2 mount (PSI, systemd)."""
    V2 = "v2"
    """Only the unified hierarchy."""


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """One mounted cgroup hierarchy."""

    mountpoint: str
    """Where it is mounted, e.g. ``/sys/fs/cgroup/cpu``."""
    root: str
    """The cgroup that the mount shows at its mountpoint (``/`` unless in a cgroup namespace)."""
    controllers: frozenset[str]
    """v1: the controllers bound to it; v2: those listed in the root's ``cgroup.controllers``."""
    version: int
    """1 or 2."""


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    """The host's cgroup mounts, as detected at start-up."""

    mode: CgroupMode
    v1: tuple[Hierarchy, ...]
    """v1 hierarchies with at least one controller (``name=systemd`` is left out)."""
    unified: Hierarchy | None
    """The cgroup2 mount, if any."""

    def hierarchy_for(self, controller: str) -> Hierarchy:
        """The hierarchy that carries ``controller``.

        In v1 and hybrid modes that is the v1 mount binding it; in v2 mode the
        unified mount, provided its root lists the controller.
        """
        if self.mode is not CgroupMode.V2:
            for h in self.v1:
                if controller in h.controllers:
                    return h
        # A controller is bound to one hierarchy at a time: one not on a v1 mount
        # may be on the unified one (hugetlb on a hybrid host, say).
        if self.unified is not None and controller in self.unified.controllers:
            return self.unified
        raise CgroupUnsupported(
            f"cgroup controller {controller!r} is not mounted ({self.mode} layout)"
        )

    def has(self, controller: str) -> bool:
        """Whether ``controller`` is usable in this layout."""
        try:
            self.hierarchy_for(controller)
        except CgroupUnsupported:
            return False
        return True

    def describe(self) -> list[str]:
        """Human-readable lines, one per hierarchy, for logs and ``make demo``."""
        lines = [f"mode: {self.mode}"]
        for h in self.v1:
            lines.append(f"v1 {','.join(sorted(h.controllers))} at {h.mountpoint} (root {h.root})")
        if self.unified is not None:
            ctrls = ",".join(sorted(self.unified.controllers)) or "no controllers"
            lines.append(f"v2 unified at {self.unified.mountpoint} ({ctrls})")
        return lines


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal (proc(5)).
    out: list[str] = []
    i = 0
    while i < len(field):
        octal = field[i + 1 : i + 4]
        if field[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _Mount:
    root: str
    mountpoint: str
    fstype: str
    superopts: tuple[str, ...]


def _parse_mountinfo(text: str) -> list[_Mount]:
    mounts: list[_Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 3:
            continue
        mounts.append(
            _Mount(
                root=_unescape(fields[3]),
                mountpoint=_unescape(fields[4]),
                fstype=fields[sep + 1],
                superopts=tuple(fields[sep + 3].split(",")),
            )
        )
    return mounts


def detect_layout(fs: CgroupFS) -> CgroupLayout:
    """Detect the layout from ``fs.mountinfo()`` (``/proc/self/mountinfo`` on a host).

    A hierarchy mounted twice (bind mounts, or a container that sees the host's
    mount) is taken once, at its first mountpoint whose root is ``/`` if there is
    one. Raises :class:`CgroupError` when no cgroup filesystem is mounted at all.
    """
    v1: dict[frozenset[str], Hierarchy] = {}
    unified: Hierarchy | None = None
    for m in _parse_mountinfo(fs.mountinfo()):
        if m.fstype == "cgroup":
            ctrls = frozenset(o for o in m.superopts if o in V1_CONTROLLERS)
            if not ctrls:
                continue  # name=systemd and other named hierarchies hold no resources
            prev = v1.get(ctrls)
            if prev is None or (prev.root != "/" and m.root == "/"):
                v1[ctrls] = Hierarchy(m.mountpoint, m.root, ctrls, 1)
        elif m.fstype == "cgroup2":
            if unified is not None and not (unified.root != "/" and m.root == "/"):
                continue
            try:
                listed = fs.read_text(posixpath.join(m.mountpoint, "cgroup.controllers"))
            except CgroupError:
                listed = ""
            unified = Hierarchy(m.mountpoint, m.root, frozenset(listed.split()), 2)
    if not v1 and unified is None:
        raise CgroupError("no cgroup filesystem is mounted (checked /proc/self/mountinfo)")
    if not v1 or (unified is not None and {"cpu", "memory"} <= unified.controllers):
        # A v2 host may still carry a stray v1 mount (net_cls for a CNI plugin):
        # where cpu and memory are on the unified hierarchy, it is a v2 host.
        mode = CgroupMode.V2
    elif unified is None:
        mode = CgroupMode.V1
    else:
        mode = CgroupMode.HYBRID
    hierarchies = tuple(sorted(v1.values(), key=lambda h: h.mountpoint))
    return CgroupLayout(mode=mode, v1=hierarchies, unified=unified)


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Parse ``/proc/<pid>/cgroup`` into controller -> cgroup path.

    v1 lines (``4:memory:/a/b``, ``2:cpu,cpuacct:/``) give one entry per
    controller; the v2 line (``0::/a``) gives the key ``""``. ``name=`` hierarchies
    are kept under their ``name=...`` key.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if not ctrls:
            out[""] = path
            continue
        for c in ctrls.split(","):
            out[c] = path
    return out
