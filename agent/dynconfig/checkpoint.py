"""The applied layers on disk, so that a restart (or an API-server outage at start)
changes nothing on the node.

One checkpoint file in a :class:`katalyst.checkpoint.CheckpointStore` (atomic
rename, fsyncs, a checksum: a kill at any instant leaves the old file or the new
one). It holds the layers in order with their hashes and partial configs, not
the merged settings: merged again over the agent's ``--config`` file at start, a
change of that file still shows through where no layer overrides it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from agent.dynconfig.settings import Layer
from katalyst.checkpoint import (
    CheckpointCorrupt,
    CheckpointLoaded,
    CheckpointMissing,
    CheckpointStore,
    JSONInput,
)

__all__ = ["LayerCheckpoint"]

log = logging.getLogger(__name__)

VERSION = 1
"""The layout of ``data``; a checkpoint of another version is not used."""


class LayerCheckpoint:
    """``save(layers)`` / ``load()`` of the layers applied, at ``path`` (a file in a
    checkpoint directory, e.g. ``<state_dir>/checkpoints/dynamic_config``)."""

    def __init__(self, path: Path) -> None:
        self._store = CheckpointStore(path.parent)
        self._name = path.name
        self.path = self._store.path(self._name)
        """The checkpoint file."""

    def save(self, layers: Sequence[Layer], *, applied_at: float) -> None:
        """Replace the checkpoint with ``layers`` (lowest precedence first), applied at
        ``applied_at`` (wall-clock seconds). Blocking: fsyncs."""
        data: dict[str, JSONInput] = {
            "version": VERSION,
            "applied_at": applied_at,
            "layers": [
                {
                    "name": layer.name,
                    "level": layer.level,
                    "hash": layer.hash,
                    "source": layer.source,
                    "config": _json(layer.config),
                    "service_overrides": [_json(o) for o in layer.service_overrides],
                }
                for layer in layers
            ],
        }
        self._store.save(self._name, data)

    def load(self) -> tuple[list[Layer], float] | None:
        """The layers saved last and when they were applied; None when there is no
        checkpoint or it cannot be used (a corrupt file is set aside by the store,
        an unreadable layout is logged): the caller then starts from its base."""
        result = self._store.load(self._name)
        if isinstance(result, CheckpointMissing):
            return None
        if isinstance(result, CheckpointCorrupt):
            log.warning(
                "dynamic config checkpoint %s is corrupt (%s), moved to %s; starting from "
                "the agent's own configuration",
                result.path,
                result.reason,
                result.moved_to,
            )
            return None
        assert isinstance(result, CheckpointLoaded)
        try:
            return _parse(result.data)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning(
                "dynamic config checkpoint %s is not usable (%s); starting from the "
                "agent's own configuration",
                result.path,
                exc,
            )
            return None


def _json(value: Mapping[str, object]) -> Mapping[str, JSONInput]:
    # The configs come from YAML or JSON: plain data already (checked again by the
    # store, which names any value JSON cannot hold).
    return value  # type: ignore[return-value]


def _parse(data: Mapping[str, object]) -> tuple[list[Layer], float]:
    if data.get("version") != VERSION:
        raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
    applied_at = data["applied_at"]
    raw = data["layers"]
    if not isinstance(applied_at, int | float) or not isinstance(raw, list):
        raise TypeError("applied_at must be a number and layers a list")
    layers = []
    for item in raw:
        if not isinstance(item, dict):
            raise TypeError(f"a layer must be an object, got {type(item).__name__}")
        name, level, hash_, source, config = (
            item["name"],
            item["level"],
            item["hash"],
            item["source"],
            item["config"],
        )
        if not all(isinstance(v, str) for v in (name, level, hash_, source)):
            raise TypeError("a layer's name, level, hash and source must be strings")
        if not isinstance(config, dict):
            raise TypeError("a layer's config must be an object")
        overrides = item.get("service_overrides", [])
        if not isinstance(overrides, list) or not all(isinstance(o, dict) for o in overrides):
            raise TypeError("a layer's service_overrides must be a list of objects")
        layers.append(
            Layer(
                name=name,
                level=level,
                hash=hash_,
                config=config,
                source=source,
                service_overrides=tuple(overrides),
            )
        )
    return layers, float(applied_at)
