"""The node's NICs from sysfs: name, link speed, NUMA node, PCI address.

The network plugin divides each NIC's bandwidth among the pods placed on it, so it
needs the NICs that carry pod traffic and how fast each is. Linux tells both in
sysfs (``Documentation/ABI/testing/sysfs-class-net``):

* ``/sys/class/net/<iface>`` exists for every interface of the network namespace
  that mounted that sysfs. Only a device backed by hardware (a physical port or an
  SR-IOV function) has the ``device`` link to its bus device; ``lo``, bridges,
  veths, bonds' upper devices and tunnels have none. Without a configured list,
  the NICs are the interfaces with that link.
* ``<iface>/speed`` is the negotiated link speed in Mbit/s. Reading it fails with
  EINVAL when the link is down or the driver has no ``get_link_ksettings``, and
  reads ``-1`` (``SPEED_UNKNOWN``) for drivers that do not know it (older veth,
  some virtual NICs). A NIC of unknown speed cannot be divided, so it needs a
  configured speed or it is left out, with a warning that says how to fix it.
* ``<iface>/device/numa_node`` is the NUMA node of the device's PCI bus, ``-1``
  when the platform does not say (single-node machines, most VMs).

The sysfs root is injectable, so tests describe any machine with a directory tree,
and a NIC in another network namespace can be read from a sysfs mounted inside
that namespace (``netns`` then names it on every NIC read there). Nothing here
raises on odd sysfs contents: an unreadable or malformed attribute counts as
unknown. Only a configured interface that does not exist is an error, since the
configuration is then wrong.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "NIC",
    "NICInventory",
    "NICInventoryError",
    "read_nics",
    "valid_interface_name",
]

logger = logging.getLogger(__name__)

# IFNAMSIZ is 16 with the NUL; the kernel's dev_valid_name() refuses "", ".", "..",
# and names with "/", ":" or white space.
_IFNAMSIZ: Final = 16
# A PCI address as the kernel names the device: domain:bus:device.function.
_PCI_ADDRESS: Final = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", re.ASCII)
#: What the configuration must set for a NIC whose speed the kernel does not know.
SPEED_RULE: Final = "speed unknown; set network.interfaces[].speed_mbit"


def valid_interface_name(name: str) -> bool:
    """Whether ``name`` is a name the kernel accepts for a network interface."""
    return (
        0 < len(name.encode("utf-8", "surrogateescape")) < _IFNAMSIZ
        and name not in (".", "..")
        and not any(c in "/:" or c.isspace() for c in name)
    )


class NICInventoryError(Exception):
    """The configured interfaces do not match the node; the message names the interface."""


@dataclass(frozen=True, slots=True)
class NIC:
    """One network interface whose bandwidth the network plugin shares out."""

    name: str
    """The interface name (``eth0``), as in ``/sys/class/net``."""
    speed_mbit: int
    """Link speed in Mbit/s (the kernel's ``speed``, or the configured one); > 0."""
    numa_node: int | None
    """The NUMA node of the NIC's PCI bus; ``None`` when unknown."""
    netns: str | None = None
    """The network namespace the NIC lives in (a name under ``/run/netns``);
    ``None`` for the host namespace."""
    pci_address: str | None = None
    """``0000:3b:00.0`` for a PCI device; ``None`` for others (virtio, veth)."""

    def __post_init__(self) -> None:
        if not valid_interface_name(self.name):
            raise ValueError(
                f"NIC name {self.name!r} is not an interface name "
                f"(1-{_IFNAMSIZ - 1} bytes, no '/', ':' or white space)"
            )
        if isinstance(self.speed_mbit, bool) or not isinstance(self.speed_mbit, int):
            raise ValueError(f"NIC {self.name}: speed_mbit must be an integer (Mbit/s)")
        if self.speed_mbit <= 0:
            raise ValueError(f"NIC {self.name}: speed_mbit {self.speed_mbit} must be positive")
        if self.numa_node is not None and self.numa_node < 0:
            raise ValueError(f"NIC {self.name}: NUMA node {self.numa_node} must be >= 0 or None")
        if self.netns is not None and not self.netns:
            raise ValueError(f"NIC {self.name}: netns must be a name or None (host)")


@dataclass(frozen=True, slots=True)
class NICInventory:
    """What :func:`read_nics` found."""

    nics: tuple[NIC, ...]
    """The usable NICs, in name order (or in the configured order)."""
    warnings: tuple[str, ...] = ()
    """NICs left out and why; each was also logged at WARNING."""


def _read_text(path: Path) -> str | None:
    """The attribute's content, or None when it cannot be read (EINVAL, ENOENT...)."""
    try:
        with open(path, "rb") as f:
            # sysfs attributes are at most a page; more is not an attribute.
            raw = f.read(4096)
    except OSError:
        return None
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    if text is None or not re.fullmatch(r"-?[0-9]{1,19}", text):
        return None
    return int(text)


def _has_device(iface: Path) -> bool:
    # A dangling link still marks a hardware-backed interface.
    device = iface / "device"
    return device.is_symlink() or device.exists()


def _pci_address(iface: Path) -> str | None:
    device = iface / "device"
    if not _has_device(iface):
        return None
    try:
        target = os.path.realpath(device)
    except OSError:  # a link loop
        return None
    name = os.path.basename(target)
    return name if _PCI_ADDRESS.fullmatch(name) else None


def _numa_node(iface: Path) -> int | None:
    node = _read_int(iface / "device" / "numa_node")
    return node if node is not None and node >= 0 else None


def read_nics(
    sysfs_root: str | os.PathLike[str] = "/sys",
    *,
    interfaces: Sequence[str] = (),
    speeds: Mapping[str, int] | None = None,
    netns: str | None = None,
) -> NICInventory:
    """The NICs of ``<sysfs_root>/class/net``.

    :param sysfs_root: where sysfs is mounted (``/sys``; a tree in tests).
    :param interfaces: the interfaces to use, any kind (a veth in tests); each must
        exist, or :class:`NICInventoryError` names it. Empty (the default): every
        interface with a ``device`` link (physical or SR-IOV).
    :param speeds: interface -> speed in Mbit/s, from the configuration. It wins over
        the kernel's value (the operator may know that the uplink is slower than the
        link), and is required when the kernel does not know the speed.
    :param netns: the network namespace this sysfs belongs to, recorded on every NIC
        (``None``: the host's).
    :returns: the NICs, and a warning for each NIC left out because its speed is
        unknown and not configured ("speed unknown; set
        network.interfaces[].speed_mbit").
    :raises ValueError: a configured name or speed is invalid (names it).
    :raises NICInventoryError: a configured interface does not exist.
    """
    configured = dict(speeds or {})
    for name, given in configured.items():
        if isinstance(given, bool) or not isinstance(given, int) or given <= 0:
            raise ValueError(
                f"network interface {name!r}: speed_mbit {given!r} must be a positive integer"
            )
    for name in interfaces:
        if not valid_interface_name(name):
            raise ValueError(f"network interface name {name!r} is not a valid interface name")
    duplicates = sorted({n for n in interfaces if list(interfaces).count(n) > 1})
    if duplicates:
        raise ValueError(f"network interfaces {duplicates} are listed more than once")

    net = Path(sysfs_root) / "class" / "net"
    warnings: list[str] = []
    try:
        present = sorted(entry.name for entry in net.iterdir())
    except OSError as exc:
        present = []
        if not interfaces:
            warnings.append(f"cannot list {net} ({exc.strerror}): no NICs")
    if interfaces:
        missing = [n for n in interfaces if n not in present]
        if missing:
            raise NICInventoryError(
                f"network interface(s) {missing} not found in {net} "
                f"(present: {', '.join(present) or 'none'})"
            )
        names = list(interfaces)
    else:
        names = [n for n in present if valid_interface_name(n) and _has_device(net / n)]

    nics: list[NIC] = []
    for name in names:
        iface = net / name
        speed: int | None = configured.get(name)
        if speed is None:
            kernel = _read_int(iface / "speed")
            speed = kernel if kernel is not None and kernel > 0 else None
        if speed is None:
            warnings.append(f"NIC {name} left out: {SPEED_RULE}")
            continue
        nics.append(
            NIC(
                name=name,
                speed_mbit=speed,
                numa_node=_numa_node(iface),
                netns=netns,
                pci_address=_pci_address(iface),
            )
        )
    unused = sorted(set(configured) - set(names))
    if unused:
        warnings.append(f"speed_mbit configured for {unused}, which are not NICs here")
    for warning in warnings:
        logger.warning("%s", warning)
    return NICInventory(nics=tuple(nics), warnings=tuple(warnings))
