"""The node's accelerators and RDMA devices: what the GPU plugin shares out and
what the scheduler's topology placement needs to know."""

from agent.gpu.inventory import (
    GPU,
    FakeGPUInventory,
    GPUInventory,
    NVMLInventory,
    RDMADevice,
    normalize_pci_address,
    read_rdma_devices,
)

__all__ = [
    "GPU",
    "FakeGPUInventory",
    "GPUInventory",
    "NVMLInventory",
    "RDMADevice",
    "normalize_pci_address",
    "read_rdma_devices",
]
