"""The cgroup layer: one driver interface over cgroup v1, hybrid and v2 hosts.

* :mod:`.fs` — the ``CgroupFS`` seam (host kernel, or :mod:`.fake` in tests);
* :mod:`.layout` — which hierarchies are mounted where, from mountinfo;
* :mod:`.driver` — the driver interface: create/configure/read/remove cgroups,
  read-compare-write; :mod:`.v1` and :mod:`.v2` implement it, :mod:`.factory`
  picks one;
* :mod:`.errors` — the typed errors every operation raises.
"""

from katalyst.cgroup.driver import (
    CgroupDriver,
    CpuStat,
    IOLimit,
    IOStat,
    Pressure,
    PressureLine,
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
from katalyst.cgroup.factory import describe_driver, open_driver
from katalyst.cgroup.fs import CgroupFS, HostCgroupFS
from katalyst.cgroup.layout import CgroupLayout, CgroupMode, Hierarchy, detect_layout
from katalyst.cgroup.v1 import CgroupV1Driver
from katalyst.cgroup.v2 import CgroupV2Driver

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
    "describe_driver",
    "detect_layout",
    "open_driver",
    "shares_to_weight",
    "validate_cgroup_path",
    "weight_to_shares",
]
