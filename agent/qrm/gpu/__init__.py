"""The GPU resource plugin: shares of GPU memory, isolated by MPS."""

from agent.qrm.gpu.policy import (
    GPU_INDICES_ANNOTATION,
    GPU_MEMORY_ANNOTATION,
    GPU_UUIDS_ANNOTATION,
    GPUPlan,
    GPUPolicy,
    parse_gpu_indices,
)
from agent.qrm.gpu.setup import build_gpu_policy

__all__ = [
    "GPU_INDICES_ANNOTATION",
    "GPU_MEMORY_ANNOTATION",
    "GPU_UUIDS_ANNOTATION",
    "GPUPlan",
    "GPUPolicy",
    "build_gpu_policy",
    "parse_gpu_indices",
]
