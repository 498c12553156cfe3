"""The reporter: publish the capacity lent to reclaimed pods, so schedulers can fit them.

Compute apart from effect. Compute (pure, synchronous, time from an injected clock):
each sysadvisor period the loop shows the :class:`ReportPlanner` a
:class:`ReclaimSample` (the plan's ``reclaim_cpus`` and ``reclaim_memory_limit``, with
per-NUMA weights); the planner smooths it (the minimum over a window: drops at once,
rises once they last), holds back small changes, resyncs periodically and backs off
after failures, and answers with a :class:`Report` (or None) naming the targets due.

Effect: the :class:`Reporter` writes a report over an injected :class:`ReportClient`:
the Node's ``status.capacity``/``status.allocatable`` extended resources
``resource.katalyst.kubewharf.io/reclaimed_millicpu`` and ``.../reclaimed_memory``
(what the stock kube-scheduler fits reclaimed pods against), and the node's
CustomNodeResource status (``status.resources`` and per-NUMA ``status.topologyZone``),
creating the CNR when it is missing. :class:`ReportLoop` ties the two together;
:class:`ReporterCollector` exposes the state. See ``docs/reporter.md``.
"""

from agent.reporter.loop import HeartbeatSink, ReportLoop
from agent.reporter.metrics import ReporterCollector, status
from agent.reporter.model import (
    Reason,
    Reclaimed,
    ReclaimSample,
    Report,
    Target,
    ZoneAmount,
    cpu_weights,
    numa_sockets,
    split,
    to_millicpu,
)
from agent.reporter.planner import ReportPlanner, TargetState
from agent.reporter.reporter import ReportClient, Reporter, WriteOutcome
from agent.reporter.wire import (
    CNR_API_VERSION,
    CNR_GROUP,
    CNR_KIND,
    CNR_PLURAL,
    CNR_VERSION,
    MERGE_PATCH,
    cnr_object,
    cnr_status_patch,
    merge_zones,
    node_status_patch,
    topology_zones,
)
from katalyst.config.reporter import ReporterConfig, ReporterConfigError

__all__ = [
    "CNR_API_VERSION",
    "CNR_GROUP",
    "CNR_KIND",
    "CNR_PLURAL",
    "CNR_VERSION",
    "MERGE_PATCH",
    "HeartbeatSink",
    "Reason",
    "ReclaimSample",
    "Reclaimed",
    "Report",
    "ReportClient",
    "ReportLoop",
    "ReportPlanner",
    "Reporter",
    "ReporterCollector",
    "ReporterConfig",
    "ReporterConfigError",
    "Target",
    "TargetState",
    "WriteOutcome",
    "ZoneAmount",
    "cnr_object",
    "cnr_status_patch",
    "cpu_weights",
    "merge_zones",
    "node_status_patch",
    "numa_sockets",
    "split",
    "status",
    "to_millicpu",
    "topology_zones",
]
