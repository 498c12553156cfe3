"""Build the ``qrm_gpu_plugin`` policy from the node's GPU inventory."""

from __future__ import annotations

import logging
import os

from agent.gpu.inventory import GPU, GPUInventory, NVMLInventory
from agent.qrm.checkpoints import restore_or_new
from agent.qrm.gpu.policy import PLUGIN_NAME, GPUPolicy
from katalyst.checkpoint import CheckpointStore

__all__ = ["build_gpu_policy"]

log = logging.getLogger(__name__)


def build_gpu_policy(
    *,
    store: CheckpointStore,
    sysfs: str | os.PathLike[str] = "/sys",
    inventory: GPUInventory | None = None,
) -> tuple[GPUPolicy, tuple[GPU, ...]]:
    """The policy over the inventory's GPUs (NVML by default; none without a driver),
    restored from its checkpoint when it still fits the GPUs."""
    gpus = (inventory if inventory is not None else NVMLInventory(sysfs=sysfs)).gpus()
    policy, restored = restore_or_new(
        store,
        PLUGIN_NAME,
        restore=lambda s: GPUPolicy.from_state(s, gpus=gpus),
        new=lambda: GPUPolicy(gpus),
    )
    log.info(
        "gpu plugin %s: %s",
        "restored" if restored else "fresh",
        ", ".join(f"gpu {g.index} {g.uuid} {g.memory_mib} MiB" for g in gpus) or "no GPUs",
    )
    return policy, gpus
