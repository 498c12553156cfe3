"""Restoring a policy from its checkpoint, or starting fresh."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from agent.qrm.checkpoints import restore_or_new
from agent.qrm.memory import MemoryPolicy
from katalyst.checkpoint import CheckpointStore

GiB = 1024**3


def _restore(state: Mapping[str, object]) -> MemoryPolicy:
    return MemoryPolicy.from_state(state, numa_memory={0: GiB})


def _new() -> MemoryPolicy:
    return MemoryPolicy(numa_memory={0: GiB})


def test_missing_means_fresh(tmp_path: Path) -> None:
    policy, restored = restore_or_new(CheckpointStore(tmp_path), "m", restore=_restore, new=_new)
    assert not restored
    assert policy.allocations() == {}


def test_a_good_checkpoint_is_restored(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save("m", _new().to_state())
    _, restored = restore_or_new(store, "m", restore=_restore, new=_new)
    assert restored


def test_a_checkpoint_that_does_not_fit_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(tmp_path)
    store.save("m", {"version": 99})
    policy, restored = restore_or_new(store, "m", restore=_restore, new=_new)
    assert not restored
    assert policy.allocations() == {}
    assert any(p.name.startswith("m.corrupt-") for p in tmp_path.iterdir())
    assert "does not fit this node" in caplog.text
