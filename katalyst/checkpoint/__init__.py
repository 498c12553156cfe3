"""Crash-safe, checksummed JSON checkpoints for node state.

Usage::

    store = CheckpointStore(Path("/var/lib/katalyst/checkpoints"))
    store.save("qrm_cpu_plugin", {"pods": {...}})
    match store.load("qrm_cpu_plugin"):
        case CheckpointLoaded(data=data):
            ...  # restore from data
        case CheckpointMissing() | CheckpointCorrupt():
            ...  # start from scratch (a corrupt file was logged and set aside)

See :mod:`katalyst.checkpoint.store` for the file format and the guarantees.
"""

from katalyst.checkpoint.store import (
    FORMAT_VERSION,
    CheckpointCorrupt,
    CheckpointLoaded,
    CheckpointMissing,
    CheckpointStore,
    JSONInput,
    JSONValue,
    LoadResult,
    LoadStatus,
    validate_name,
)

__all__ = [
    "FORMAT_VERSION",
    "CheckpointCorrupt",
    "CheckpointLoaded",
    "CheckpointMissing",
    "CheckpointStore",
    "JSONInput",
    "JSONValue",
    "LoadResult",
    "LoadStatus",
    "validate_name",
]
