"""The cgroup layer: one driver interface over cgroup v1, hybrid and v2 hosts.

* :mod:`.fs` — the ``CgroupFS`` seam (host kernel, or :mod:`.fake` in tests);
* :mod:`.layout` — which hierarchies are mounted where, from mountinfo;
* :mod:`.driver` — create/configure/read/remove cgroups, read-compare-write;
* :mod:`.errors` — the typed errors every operation raises.
"""

from katalyst.cgroup.driver import (
    CgroupDriver,
    CgroupV1Driver,
    CgroupV2Driver,
    CpuStat,
    IOLimit,
    IOStat,
    Pressure,
    PressureLine,
    open_driver,
    shares_to_weight,
    validate_cgroup_path,
    weight_to_shares,
)
from katalyst.cgroup.errors import (
    CgroupBusy,
    CgroupError,
    CgroupInvalidValue,
    CgroupNotFound,
    CgroupPermissionError,
    CgroupUnsupported,
)
from katalyst.cgroup.fs import CgroupFS, HostCgroupFS
from katalyst.cgroup.layout import CgroupLayout, CgroupMode, Hierarchy, detect_layout

__all__ = [
    "CgroupBusy",
    "CgroupDriver",
    "CgroupError",
    "CgroupFS",
    "CgroupInvalidValue",
    "CgroupLayout",
    "CgroupMode",
    "CgroupNotFound",
    "CgroupPermissionError",
    "CgroupUnsupported",
    "CgroupV1Driver",
    "CgroupV2Driver",
    "CpuStat",
    "Hierarchy",
    "HostCgroupFS",
    "IOLimit",
    "IOStat",
    "Pressure",
    "PressureLine",
    "detect_layout",
    "open_driver",
    "shares_to_weight",
    "validate_cgroup_path",
    "weight_to_shares",
]
