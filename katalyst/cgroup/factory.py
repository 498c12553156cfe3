"""Build the right driver for the host: :func:`open_driver`."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from katalyst.cgroup.driver import (
    MANAGED_CONTROLLERS,
    CgroupDriver,
    ChangeHook,
    validate_cgroup_path,
)
from katalyst.cgroup.errors import CgroupError
from katalyst.cgroup.fs import CgroupFS
from katalyst.cgroup.layout import (
    CgroupLayout,
    CgroupMode,
    Hierarchy,
    detect_layout,
    parse_proc_cgroup,
)
from katalyst.cgroup.v1 import CgroupV1Driver
from katalyst.cgroup.v2 import CgroupV2Driver


def _managed_hierarchies(layout: CgroupLayout, *, mirror_unified: bool) -> list[Hierarchy]:
    seen: list[Hierarchy] = []
    for ctrl in MANAGED_CONTROLLERS:
        if layout.has(ctrl):
            hier = layout.hierarchy_for(ctrl)
            if hier not in seen:
                seen.append(hier)
    unified = layout.unified
    wanted = layout.mode is CgroupMode.V2 or mirror_unified
    if unified is not None and unified not in seen and wanted:
        seen.append(unified)
    return seen


def _own_start(hier: Hierarchy, own: dict[str, str]) -> str:
    """This process's cgroup in ``hier``, relative to the hierarchy's mountpoint."""
    key = "" if hier.version == 2 else sorted(hier.controllers)[0]
    if key not in own:
        raise CgroupError(
            f"/proc/self/cgroup has no line for the {key or 'unified'} hierarchy "
            f"({hier.mountpoint}): cannot place cgroups below our own"
        )
    path = own[key]
    norm = posixpath.normpath(path)
    # A process outside its cgroup namespace sees "/../x": never go above the mount.
    if not norm.startswith("/") or norm.startswith("/..") or "/../" in path or path.endswith("/.."):
        raise CgroupError(f"our own cgroup {path!r} lies outside the {hier.mountpoint} mount")
    root = hier.root.rstrip("/")
    if root:
        if norm != root and not norm.startswith(root + "/"):
            raise CgroupError(
                f"our own cgroup {path!r} is not below the mount's root {hier.root!r}"
            )
        norm = norm[len(root) :] or "/"
    return norm


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

    ``base`` is the driver's base cgroup, relative to each hierarchy's root or,
    with ``below_own_cgroup``, to this process's own cgroup in each hierarchy as
    ``/proc/self/cgroup`` lists it (what tests and the standalone node use, so
    that they never touch cgroups they did not create; the own cgroups may differ
    per hierarchy). In hybrid mode the driver also creates its cgroups in the
    unified mount (``mirror_unified``), as runc does on such hosts, because the
    kernel offers per-cgroup PSI there even with no controllers enabled.
    """
    layout = layout or detect_layout(fs)
    rel = validate_cgroup_path(base)
    own = parse_proc_cgroup(fs.proc_self_cgroup()) if below_own_cgroup else {}
    bases: dict[Hierarchy, str] = {}
    for hier in _managed_hierarchies(layout, mirror_unified=mirror_unified):
        start = _own_start(hier, own) if below_own_cgroup else "/"
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
