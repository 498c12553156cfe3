"""The agent's dynamic configuration: new settings for the running loops, without a
restart.

* :class:`DynamicSettings` is one complete set of what the loops take at run time
  (the ``sysadvisor``, ``eviction``, ``network`` and ``io`` sections and the
  ``reclaim.enabled`` switch); :func:`from_layers` makes one from an SRE's partial
  ``spec.config`` layers merged over the agent's ``--config`` file, with the
  file's own checks.
* :class:`SettingsApplier` hands a set to the loops, all or nothing; each loop
  takes it up at its next period.
* :class:`LayerCheckpoint` keeps the applied layers across restarts.
* :class:`FolderSource` is the standalone source (``--dynamic-config DIR``); its
  :class:`DynamicConfigRecord` feeds ``/status`` and :class:`DynamicConfigCollector`.

See ``docs/configuration.md`` for the objects and worked examples.
"""

from agent.dynconfig.applier import SettingsApplier, heartbeat_max_age
from agent.dynconfig.checkpoint import LayerCheckpoint
from agent.dynconfig.folder import FolderSource
from agent.dynconfig.record import DynamicConfigCollector, DynamicConfigRecord
from agent.dynconfig.settings import (
    DynamicConfigError,
    DynamicSettings,
    Layer,
    canonical_hash,
    changes,
    from_layers,
    merge_layers,
)

__all__ = [
    "DynamicConfigCollector",
    "DynamicConfigError",
    "DynamicConfigRecord",
    "DynamicSettings",
    "FolderSource",
    "Layer",
    "LayerCheckpoint",
    "SettingsApplier",
    "canonical_hash",
    "changes",
    "from_layers",
    "heartbeat_max_age",
    "merge_layers",
]
