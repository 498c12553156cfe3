"""The GPU inventory (NVML, through a fake module and the real one) and RDMA devices
from fake sysfs trees."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pynvml
import pytest

from agent.gpu import (
    GPU,
    FakeGPUInventory,
    GPUInventory,
    NVMLInventory,
    normalize_pci_address,
    read_rdma_devices,
)

# ---- sysfs trees -----------------------------------------------------------------------


def pci_device(sysfs: Path, *chain: str, numa: str | None = None) -> Path:
    """``/sys/devices/pci<domain>:<bus>/<chain...>`` with ``numa_node`` on the last,
    and the ``/sys/bus/pci/devices/<address>`` link to it."""
    root = sysfs / "devices" / f"pci{chain[0][:7]}"
    path = root.joinpath(*chain)
    path.mkdir(parents=True, exist_ok=True)
    if numa is not None:
        (path / "numa_node").write_text(numa + "\n")
    bus = sysfs / "bus" / "pci" / "devices"
    bus.mkdir(parents=True, exist_ok=True)
    link = bus / chain[-1]
    if not link.exists():
        link.symlink_to(os.path.relpath(path, bus))
    return path


def rdma_device(
    sysfs: Path, name: str, *chain: str, numa: str | None = None, netdevs: tuple[str, ...] = ()
) -> None:
    device = pci_device(sysfs, *chain, numa=numa)
    for netdev in netdevs:
        (device / "net" / netdev).mkdir(parents=True)
    (device / "infiniband" / name).mkdir(parents=True)
    cls = sysfs / "class" / "infiniband"
    cls.mkdir(parents=True, exist_ok=True)
    (cls / name).mkdir()
    (cls / name / "device").symlink_to(os.path.relpath(device, cls / name))


# ---- a fake pynvml ----------------------------------------------------------------------


class FakeNVMLError(Exception):
    pass


class FakeLibraryNotFound(FakeNVMLError):
    pass


class FakeNotSupported(FakeNVMLError):
    pass


@dataclass
class FakeDevice:
    uuid: str
    total: int
    bus: str
    name: str = "NVIDIA H100"
    nvlinks: list[str] = field(default_factory=list)


@dataclass
class _Memory:
    total: int


@dataclass
class _Pci:
    busId: str


class FakeNVML:
    """The parts of ``pynvml`` the inventory calls."""

    NVMLError = FakeNVMLError
    NVML_FEATURE_ENABLED = 1
    NVML_NVLINK_MAX_LINKS = 4

    def __init__(
        self,
        devices: list[FakeDevice],
        *,
        init_error: FakeNVMLError | None = None,
        fail_at: int | None = None,
    ) -> None:
        self.devices = devices
        self.init_error = init_error
        self.fail_at = fail_at
        self.inits = 0
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        if index == self.fail_at:
            raise FakeNVMLError("GPU is lost")
        return self.devices[index]

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> bytes:
        return handle.uuid.encode()  # older bindings answer bytes

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str:
        return handle.name

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> _Memory:
        return _Memory(total=handle.total)

    def nvmlDeviceGetPciInfo(self, handle: FakeDevice) -> _Pci:
        return _Pci(busId=handle.bus)

    def nvmlDeviceGetNvLinkState(self, handle: FakeDevice, link: int) -> int:
        if link >= len(handle.nvlinks):
            raise FakeNotSupported("not supported")
        return 1

    def nvmlDeviceGetNvLinkRemotePciInfo(self, handle: FakeDevice, link: int) -> _Pci:
        return _Pci(busId=handle.nvlinks[link])


GIB = 1 << 30


def two_gpus(sysfs: Path) -> FakeNVML:
    """Two 80 GiB GPUs behind one PCIe switch on NUMA node 0, NVLinked to each other
    and to an NVSwitch (which is not a GPU)."""
    pci_device(sysfs, "0000:17:00.0", "0000:18:00.0", "0000:19:00.0", "0000:1a:00.0", numa="0")
    pci_device(sysfs, "0000:17:00.0", "0000:18:00.0", "0000:19:01.0", "0000:1b:00.0", numa="0")
    return FakeNVML(
        [
            FakeDevice(
                "GPU-aaaa",
                80 * GIB,
                "00000000:1A:00.0",
                nvlinks=["00000000:1B:00.0", "00000000:C0:00.0"],
            ),
            FakeDevice("GPU-bbbb", 80 * GIB, "00000000:1B:00.0", nvlinks=["00000000:1A:00.0"]),
        ]
    )


# ---- GPUs -------------------------------------------------------------------------------


def test_nvml_inventory_reads_every_gpu(tmp_path: Path) -> None:
    nvml = two_gpus(tmp_path)
    inventory: GPUInventory = NVMLInventory(nvml=nvml, sysfs=tmp_path)
    assert inventory.gpus() == (
        GPU(
            index=0,
            uuid="GPU-aaaa",
            memory_mib=81920,
            pci_bus_id="0000:1a:00.0",
            numa_node=0,
            pcie_switch="0000:18:00.0",
            nvlink_peers=(1,),
            name="NVIDIA H100",
        ),
        GPU(
            index=1,
            uuid="GPU-bbbb",
            memory_mib=81920,
            pci_bus_id="0000:1b:00.0",
            numa_node=0,
            pcie_switch="0000:18:00.0",
            nvlink_peers=(0,),
            name="NVIDIA H100",
        ),
    )
    assert nvml.shutdowns == 1


def test_unknown_numa_and_no_sysfs_entry(tmp_path: Path) -> None:
    pci_device(tmp_path, "0000:3b:00.0", numa="-1")
    nvml = FakeNVML(
        [
            FakeDevice("GPU-a", 16 * GIB, "00000000:3B:00.0"),
            FakeDevice("GPU-b", 16 * GIB, "00000000:5E:00.0"),  # not in sysfs
        ]
    )
    gpus = NVMLInventory(nvml=nvml, sysfs=tmp_path).gpus()
    assert [(g.numa_node, g.pcie_switch, g.nvlink_peers) for g in gpus] == [
        (None, None, ()),
        (None, None, ()),
    ]


@pytest.mark.parametrize(
    "error", [FakeLibraryNotFound("libnvidia-ml.so.1 not found"), FakeNVMLError("driver")]
)
def test_no_driver_means_no_gpus_logged_once(
    tmp_path: Path, error: FakeNVMLError, caplog: pytest.LogCaptureFixture
) -> None:
    nvml = FakeNVML([], init_error=error)
    inventory = NVMLInventory(nvml=nvml, sysfs=tmp_path)
    with caplog.at_level(logging.INFO, logger="agent.gpu.inventory"):
        assert inventory.gpus() == ()
        assert inventory.gpus() == ()
    assert nvml.inits == 2
    assert nvml.shutdowns == 0  # never started
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert type(error).__name__ in messages[0]


def test_a_failure_half_way_reports_no_gpus_rather_than_some(tmp_path: Path) -> None:
    nvml = two_gpus(tmp_path)
    nvml.fail_at = 1
    assert NVMLInventory(nvml=nvml, sysfs=tmp_path).gpus() == ()
    assert nvml.shutdowns == 1


def test_the_real_nvml_lists_the_gpus_or_none_without_a_driver() -> None:
    """The real library: without an NVIDIA driver (these machines) ``nvmlInit``
    fails and the inventory is empty without raising; with one, it lists every GPU
    the driver counts, each with its UUID and memory."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        assert NVMLInventory().gpus() == ()
        return
    try:
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    gpus = NVMLInventory().gpus()
    assert [g.index for g in gpus] == list(range(count))
    assert all(g.uuid.startswith("GPU-") and g.memory_mib > 0 for g in gpus)


def test_fake_inventory_sorts_by_index() -> None:
    a = GPU(index=1, uuid="GPU-b", memory_mib=1024)
    b = GPU(index=0, uuid="GPU-a", memory_mib=1024)
    assert FakeGPUInventory([a, b]).gpus() == (b, a)
    assert FakeGPUInventory().gpus() == ()


@pytest.mark.parametrize(
    ("index", "uuid", "mib"),
    [(-1, "GPU-a", 1), (True, "GPU-a", 1), (0, "", 1), (0, "GPU-a,GPU-b", 1), (0, "GPU-a", 0)],
)
def test_gpu_refuses_nonsense(index: int, uuid: str, mib: int) -> None:
    with pytest.raises(ValueError, match="GPU"):
        GPU(index=index, uuid=uuid, memory_mib=mib)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("00000000:3B:00.0", "0000:3b:00.0"),
        ("0000:3b:00.0", "0000:3b:00.0"),
        ("00010000:3b:00.7", "10000:3b:00.7"),
        ("3b:00.0", None),
        ("0000:3b:00.8", None),
        ("", None),
    ],
)
def test_normalize_pci_address(raw: str, expected: str | None) -> None:
    assert normalize_pci_address(raw) == expected


# ---- RDMA -------------------------------------------------------------------------------


def test_rdma_devices_from_sysfs(tmp_path: Path) -> None:
    # mlx5_0 behind a PCIe switch on node 0 with two netdevs; mlx5_1 right below a
    # root port, NUMA unknown, no netdev (an IB-only port).
    rdma_device(
        tmp_path,
        "mlx5_0",
        "0000:17:00.0",
        "0000:18:00.0",
        "0000:19:02.0",
        "0000:1c:00.0",
        numa="0",
        netdevs=("ib0", "eth2"),
    )
    rdma_device(tmp_path, "mlx5_1", "0000:ae:00.0", "0000:af:00.0", numa="-1")
    devices = read_rdma_devices(tmp_path)
    assert [d.name for d in devices] == ["mlx5_0", "mlx5_1"]
    first, second = devices
    assert first.netdevs == ("eth2", "ib0")
    assert first.pci_address == "0000:1c:00.0"
    assert first.pci_path == ("0000:17:00.0", "0000:18:00.0", "0000:19:02.0", "0000:1c:00.0")
    assert first.pcie_switch == "0000:18:00.0"
    assert first.numa_node == 0
    assert second.netdevs == ()
    assert second.pci_address == "0000:af:00.0"
    assert second.pcie_switch is None
    assert second.numa_node is None


def test_rdma_and_gpu_behind_the_same_switch(tmp_path: Path) -> None:
    nvml = two_gpus(tmp_path)
    rdma_device(tmp_path, "mlx5_0", "0000:17:00.0", "0000:18:00.0", "0000:19:02.0", "0000:1c:00.0")
    gpus = NVMLInventory(nvml=nvml, sysfs=tmp_path).gpus()
    (nic,) = read_rdma_devices(tmp_path)
    assert {g.pcie_switch for g in gpus} == {nic.pcie_switch}


def test_odd_rdma_entries_count_as_unknown(tmp_path: Path) -> None:
    cls = tmp_path / "class" / "infiniband"
    (cls / "broken").mkdir(parents=True)  # no device link
    (cls / "dangling").mkdir()
    (cls / "dangling" / "device").symlink_to(tmp_path / "nowhere")
    device = pci_device(tmp_path, "0000:3b:00.0")
    (device / "numa_node").write_text("garbage\n")
    (cls / "odd").mkdir()
    (cls / "odd" / "device").symlink_to(device)
    by_name = {d.name: d for d in read_rdma_devices(tmp_path)}
    assert by_name["broken"].pci_path == () and by_name["broken"].numa_node is None
    assert by_name["dangling"].pci_address is None
    assert by_name["odd"].pci_address == "0000:3b:00.0"
    assert by_name["odd"].numa_node is None


def test_no_infiniband_class_means_no_rdma_devices(tmp_path: Path) -> None:
    assert read_rdma_devices(tmp_path) == ()
