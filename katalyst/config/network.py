"""The ``network:`` section: the NIC inventory and network isolation settings
(see docs/isolation.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from katalyst.settings import (
    Section,
    SettingError,
    boolean,
    choice,
    integer,
    number,
    optional,
    section_list,
    setting,
    text,
)

__all__ = ["InterfaceConfig", "NetworkConfig", "NetworkConfigError"]

_IFNAME = re.compile(r"[A-Za-z0-9_.@-]{1,15}")
"""What the kernel's dev_valid_name() accepts (no ``/``, ``:`` or space; not ``.``/``..``)."""
_NETNS = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class NetworkConfigError(SettingError):
    """A ``network:`` setting broke its rule; the message names it."""


@dataclass(frozen=True, slots=True)
class InterfaceConfig(Section):
    """One egress interface the agent shapes."""

    error = NetworkConfigError
    where = "network.interfaces[]"

    name: str = setting(
        "",
        text(
            pattern=lambda s: _IFNAME.fullmatch(s) is not None and s not in (".", ".."),
            rule="an interface name (1-15 of A-Z a-z 0-9 _ . @ -, not . or ..)",
        ),
    )
    """The interface, e.g. ``eth0``. Required."""
    speed_mbit: int | None = setting(None, optional(integer(1)))
    """The link rate to shape to, Mbit/s; null (default): the NIC's ``speed`` in
    sysfs. Set it below the physical rate to keep the queue in the agent's HTB
    (a 10 Gbit/s NIC shaped at 9500), or for a virtual NIC without a speed."""
    netns: str | None = setting(
        None,
        optional(
            text(
                pattern=lambda s: _NETNS.fullmatch(s) is not None,
                rule="a network namespace name from `ip netns` (A-Z a-z 0-9 _ . -)",
            )
        ),
    )
    """The named network namespace the interface lives in (``ip netns``); null
    (default): the agent's own. The nftables table goes to the same namespace."""

    def __post_init__(self) -> None:
        if not self.name:
            raise NetworkConfigError(f"{type(self).__name__}.name: is required")
        Section.__post_init__(self)


@dataclass(frozen=True, slots=True)
class NetworkConfig(Section):
    """The ``network:`` section: the NIC inventory and the enforcement loop."""

    error = NetworkConfigError
    where = "network"

    interfaces: tuple[InterfaceConfig, ...] = setting(
        (), section_list(InterfaceConfig, unique="name")
    )
    """The interfaces to shape; empty (default): none is shaped, and the
    ``net_bandwidth`` plugin accounts every physical NIC in sysfs."""
    reserved_ratio: float = setting(0.0, number(at_least=0.0, at_most=0.9))
    """Share of each NIC's rate the plugin never hands out as guarantees (for the
    node's own traffic). Default 0."""
    period_s: float = setting(1.0, number(at_least=0.1, at_most=60.0))
    """Seconds between two measurements and decisions. Default 1."""
    headroom_ratio: float = setting(0.05, number(at_least=0.0, at_most=0.5))
    """Heracles' fixed slack: the cap leaves at least this share of the link free.
    Default 0.05."""
    service_margin_ratio: float = setting(0.10, number(at_least=0.0, at_most=1.0))
    """Heracles' proportional slack: and at least this share of the services'
    measured traffic. Default 0.10."""
    reclaimed_floor_ratio: float = setting(0.01, number(at_least=0.0, at_most=0.5))
    """The reclaimed class keeps at least this share of the link (so that its
    connections do not time out). Default 0.01."""
    step_up_ratio: float = setting(0.10, number(above=0.0, at_most=1.0))
    """The cap grows by at most this share of the link per period. Default 0.10."""
    stale_periods: int = setting(3, integer(1))
    """Periods without counters before the cap falls to the floor. Default 3."""
    min_class_ratio: float = setting(0.01, number(above=0.0, at_most=0.5))
    """Guaranteed rate of the system and shared classes when their pods request
    less, as a share of the link (HTB needs a rate above 0). Default 0.01."""
    classify: str = setting("auto", choice("auto", "net_cls", "cgroupv2"))
    """How a container's traffic finds its class: ``net_cls`` (cgroup v1
    ``net_cls.classid`` and nft ``meta cgroup``), ``cgroupv2`` (nft ``socket cgroupv2``
    rules per container), or ``auto`` (default): ``cgroupv2`` on a cgroup v2 host,
    ``net_cls`` otherwise."""
    replace_foreign_qdisc: bool = setting(False, boolean())
    """Replace a root qdisc the agent did not create (other than the kernel's
    default). Default false: such an interface is reported and left alone."""
    mount_net_cls: bool = setting(True, boolean())
    """Mount the ``net_cls`` cgroup hierarchy at :attr:`net_cls_mountpoint` when the
    host has not. Default true."""
    net_cls_mountpoint: str = setting(
        "/sys/fs/cgroup/net_cls", text(pattern=lambda s: s.startswith("/"), rule="an absolute path")
    )
    """Where to mount ``net_cls``. Default ``/sys/fs/cgroup/net_cls``."""
