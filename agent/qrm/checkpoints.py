"""A policy's state, checkpointed after every change and restored at start.

On start the checkpoint is loaded: missing means a fresh node; corrupt (bad
checksum, truncated) was already set aside by the store; state that parses but
does not fit this machine any more (the policy's ``from_state`` raises
ValueError) is set aside here, with a warning. In the last two cases the
agent starts empty and rebuilds the allocations from the live pods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

from katalyst.checkpoint import CheckpointLoaded, CheckpointStore

log = logging.getLogger(__name__)
_P = TypeVar("_P")


def restore_or_new(
    store: CheckpointStore,
    name: str,
    *,
    restore: Callable[[Mapping[str, object]], _P],
    new: Callable[[], _P],
) -> tuple[_P, bool]:
    """The policy from checkpoint ``name``, or a fresh one; and whether it was restored."""
    result = store.load(name)
    if isinstance(result, CheckpointLoaded):
        try:
            return restore(result.data), True
        except ValueError as exc:
            store.discard(name, reason=str(exc))
            log.warning(
                "checkpoint %r does not fit this node (%s); set aside, "
                "rebuilding from the live pods",
                name,
                exc,
            )
    return new(), False
