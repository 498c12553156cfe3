"""The node's GPUs (through NVML) and RDMA devices (from sysfs).

GPUs come through a seam, :class:`GPUInventory`: :class:`NVMLInventory` asks the
driver through ``pynvml`` (the ``nvidia-ml-py`` package), :class:`FakeGPUInventory`
returns what a test gives it. For each GPU NVML tells its index, UUID, total memory
and PCI bus id, and, when the GPU has NVLink, the PCI bus ids of the devices at the
other end of each active link. The NUMA node and the PCIe switch come from sysfs
(``/sys/bus/pci/devices/<bus id>``), as for the RDMA devices: NVML's own
``nvmlDeviceGetNumaNodeId`` is missing from older drivers.

A node without a GPU, without the driver, or whose driver does not answer
(``NVMLError_LibraryNotFound``, ``NVMLError_DriverNotLoaded``, any ``NVMLError``)
has no GPUs: the inventory is empty, the failure is logged once, and the agent
carries on. An inventory that fails half-way is empty too, rather than partial, so
that the GPU indices the scheduler sees are always the driver's whole list.

RDMA devices are ``/sys/class/infiniband/<dev>`` (``mlx5_0``...): their network
interfaces are ``device/net/*``; the resolved ``device`` link is the PCI path from
the root complex (``/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0/...``); the
PCIe switch a device sits behind is the bridge two levels up (the switch's upstream
port: the device's parent is the switch's downstream port); ``device/numa_node`` is
its NUMA node, ``-1`` when the platform does not say. The sysfs root is injectable;
odd or unreadable attributes count as unknown, never as an error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import pynvml

__all__ = [
    "GPU",
    "FakeGPUInventory",
    "GPUInventory",
    "NVMLInventory",
    "RDMADevice",
    "normalize_pci_address",
    "read_rdma_devices",
]

logger = logging.getLogger(__name__)

_MIB: Final = 1 << 20
# A PCI address as sysfs names it (domain:bus:device.function), and as NVML writes
# it (an 8-digit domain, upper case: ``00000000:3B:00.0``).
_PCI_ADDRESS: Final = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", re.ASCII)


def normalize_pci_address(address: str) -> str | None:
    """A PCI address in sysfs form (``0000:3b:00.0``), or None if it is not one.

    NVML writes a 32-bit domain (``00000000:3B:00.0``); the kernel names the device
    with ``%04x`` (four digits unless the domain needs more).
    """
    text = address.strip().lower()
    if _PCI_ADDRESS.fullmatch(text) is None:
        return None
    domain, rest = text.split(":", 1)
    value = int(domain, 16)
    return f"{value:04x}:{rest}"


@dataclass(frozen=True, slots=True)
class GPU:
    """One GPU as the driver reports it."""

    index: int
    """NVML's index (the order of ``nvidia-smi``), which the scheduler names."""
    uuid: str
    """``GPU-...``: what ``NVIDIA_VISIBLE_DEVICES`` names."""
    memory_mib: int
    """Total memory in MiB."""
    pci_bus_id: str = ""
    """Sysfs form (``0000:3b:00.0``); empty when unknown."""
    numa_node: int | None = None
    pcie_switch: str | None = None
    """The PCI address of the PCIe switch (upstream port) it sits behind, if any."""
    nvlink_peers: tuple[int, ...] = ()
    """Indices of the GPUs it has an active NVLink to (empty without NVLink)."""
    name: str = ""
    """The product name (``NVIDIA H100 80GB HBM3``), for people."""

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise ValueError(f"GPU index {self.index!r} is not a non-negative integer")
        if not isinstance(self.uuid, str) or not self.uuid or "," in self.uuid:
            raise ValueError(f"GPU {self.index}: UUID {self.uuid!r} is not a UUID")
        if (
            isinstance(self.memory_mib, bool)
            or not isinstance(self.memory_mib, int)
            or self.memory_mib <= 0
        ):
            raise ValueError(f"GPU {self.index}: memory {self.memory_mib!r} MiB is not positive")


class GPUInventory(Protocol):
    """Where the GPUs come from."""

    def gpus(self) -> tuple[GPU, ...]:
        """The node's GPUs by index; empty when it has none (or no driver)."""
        ...


class FakeGPUInventory:
    """An inventory of given GPUs (tests, and nodes described by configuration)."""

    __slots__ = ("_gpus",)

    def __init__(self, gpus: Sequence[GPU] = ()) -> None:
        self._gpus = tuple(sorted(gpus, key=lambda g: g.index))

    def gpus(self) -> tuple[GPU, ...]:
        return self._gpus


def _text(value: object) -> str:
    """NVML strings: ``bytes`` from older bindings, ``str`` from newer ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _numa(path: Path) -> int | None:
    """A ``numa_node`` attribute: None when missing, malformed or ``-1``."""
    raw = _read(path)
    if raw is None:
        return None
    try:
        node = int(raw)
    except ValueError:
        return None
    return node if node >= 0 else None


def _pci_path(device: Path) -> tuple[str, ...]:
    """The PCI addresses from the root port down to ``device`` (a sysfs device link)."""
    try:
        resolved = os.path.realpath(device, strict=True)
    except OSError:
        return ()
    return tuple(part for part in Path(resolved).parts if _PCI_ADDRESS.fullmatch(part))


def _switch(path: Sequence[str]) -> str | None:
    """The PCIe switch's upstream port: two levels above the device, when the
    device is not right below the root port."""
    return path[-3] if len(path) >= 3 else None


class NVMLInventory:
    """The GPUs the NVIDIA driver reports, through ``pynvml``.

    :param nvml: the ``pynvml`` module (tests pass a fake).
    :param sysfs: the sysfs root for NUMA nodes and PCIe switches.
    """

    def __init__(self, *, nvml: Any = None, sysfs: str | os.PathLike[str] = "/sys") -> None:
        self._nvml: Any = nvml if nvml is not None else pynvml
        self._sysfs = Path(sysfs)
        self._warned = False

    def gpus(self) -> tuple[GPU, ...]:
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            self._unavailable(f"NVML did not start ({type(exc).__name__}: {exc})")
            return ()
        try:
            return self._read(nvml)
        except nvml.NVMLError as exc:
            self._unavailable(f"NVML failed while listing GPUs ({type(exc).__name__}: {exc})")
            return ()
        finally:
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlShutdown()

    def _unavailable(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            logger.info("no GPUs: %s", why)

    def _read(self, nvml: Any) -> tuple[GPU, ...]:
        found: list[tuple[int, str, int, str, str, list[str]]] = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            total = int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // _MIB
            bus = normalize_pci_address(_text(nvml.nvmlDeviceGetPciInfo(handle).busId)) or ""
            try:
                name = _text(nvml.nvmlDeviceGetName(handle))
            except nvml.NVMLError:
                name = ""
            found.append((index, uuid, total, bus, name, self._nvlinks(nvml, handle)))
        by_bus = {bus: index for index, _, _, bus, _, _ in found if bus}
        gpus: list[GPU] = []
        for index, uuid, total, bus, name, remotes in found:
            path = _pci_path(self._sysfs / "bus" / "pci" / "devices" / bus) if bus else ()
            numa = _numa(self._sysfs / "bus/pci/devices" / bus / "numa_node") if bus else None
            peers = sorted({by_bus[r] for r in remotes if r in by_bus and by_bus[r] != index})
            gpus.append(
                GPU(
                    index=index,
                    uuid=uuid,
                    memory_mib=total,
                    pci_bus_id=bus,
                    numa_node=numa,
                    pcie_switch=_switch(path),
                    nvlink_peers=tuple(peers),
                    name=name,
                )
            )
        return tuple(gpus)

    @staticmethod
    def _nvlinks(nvml: Any, handle: object) -> list[str]:
        """The PCI bus ids at the far end of the GPU's active NVLinks (NVSwitches
        included; the caller keeps the GPUs). Empty without NVLink."""
        remotes: list[str] = []
        for link in range(int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 0))):
            try:
                if nvml.nvmlDeviceGetNvLinkState(handle, link) != nvml.NVML_FEATURE_ENABLED:
                    continue
                bus = _text(nvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId)
            except nvml.NVMLError:
                # NOT_SUPPORTED (no NVLink, or fewer links than the maximum).
                continue
            address = normalize_pci_address(bus)
            if address is not None:
                remotes.append(address)
        return remotes


@dataclass(frozen=True, slots=True)
class RDMADevice:
    """One RDMA device (``/sys/class/infiniband/<name>``)."""

    name: str
    netdevs: tuple[str, ...] = ()
    """Its network interfaces (``ib0``, ``eth2``), sorted."""
    pci_address: str | None = None
    pci_path: tuple[str, ...] = ()
    """PCI addresses from the root port down to the device."""
    pcie_switch: str | None = None
    """The PCIe switch's upstream port, when the device sits behind one."""
    numa_node: int | None = None


def read_rdma_devices(sysfs: str | os.PathLike[str] = "/sys") -> tuple[RDMADevice, ...]:
    """The RDMA devices below ``<sysfs>/class/infiniband``, by name; empty when there
    are none (or no such directory)."""
    root = Path(sysfs) / "class" / "infiniband"
    try:
        names = sorted(entry.name for entry in os.scandir(root))
    except OSError:
        return ()
    devices: list[RDMADevice] = []
    for name in names:
        device = root / name / "device"
        try:
            netdevs = tuple(sorted(entry.name for entry in os.scandir(device / "net")))
        except OSError:
            netdevs = ()
        path = _pci_path(device)
        devices.append(
            RDMADevice(
                name=name,
                netdevs=netdevs,
                pci_address=path[-1] if path else None,
                pci_path=path,
                pcie_switch=_switch(path),
                numa_node=_numa(device / "numa_node"),
            )
        )
    return tuple(devices)
