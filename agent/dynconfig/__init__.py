"""The agent's dynamic configuration: new settings for the running loops, without a
restart.

* :class:`DynamicSettings` is one complete set of what the loops take at run time
  (the ``sysadvisor``, ``eviction``, ``network`` and ``io`` sections and the
  ``reclaim.enabled`` switch); :func:`from_layers` makes one from an SRE's partial
  ``spec.config`` layers merged over the agent's ``--config`` file, with the
  library's merge and section checks (:mod:`katalyst.dynconfig`, shared with the
  controller).
* :class:`SettingsApplier` hands a set to the loops, all or nothing; each loop
  takes it up at its next period.
* :class:`LayerCheckpoint` keeps the applied layers across restarts;
  :class:`LayerSink` is the one path from layers to the loops, the checkpoint and
  the record, shared by the sources.
* The sources: :class:`FolderSource` (standalone, ``--dynamic-config DIR``: the
  agent resolves its own layers with :func:`katalyst.dynconfig.resolve`) and
  :class:`ClusterSource` (a cluster node: its CustomNodeConfig, watched, and the
  configs it lists, fetched when their hash changes). Their
  :class:`DynamicConfigRecord` feeds ``/status`` and :class:`DynamicConfigCollector`.

See ``docs/configuration.md`` for the objects and worked examples.
"""

from agent.dynconfig.applier import SettingsApplier, heartbeat_max_age
from agent.dynconfig.checkpoint import LayerCheckpoint
from agent.dynconfig.cluster import REFUSED_REASON, ClusterSource, config_path, refusal_event
from agent.dynconfig.folder import FolderSource, read_document
from agent.dynconfig.record import DynamicConfigCollector, DynamicConfigRecord
from agent.dynconfig.settings import (
    DynamicConfigError,
    DynamicSettings,
    Layer,
    changes,
    from_layers,
)
from agent.dynconfig.sink import LayerSink

__all__ = [
    "REFUSED_REASON",
    "ClusterSource",
    "DynamicConfigCollector",
    "DynamicConfigError",
    "DynamicConfigRecord",
    "DynamicSettings",
    "FolderSource",
    "Layer",
    "LayerCheckpoint",
    "LayerSink",
    "SettingsApplier",
    "changes",
    "config_path",
    "from_layers",
    "heartbeat_max_age",
    "read_document",
    "refusal_event",
]
