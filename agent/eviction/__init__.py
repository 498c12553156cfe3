"""The node's eviction manager: compute apart from effect.

Compute (pure, synchronous, no I/O): each period the agent builds a :class:`Sample`
(the node's memory and PSI, the reclaimed allocatable it reports, and every pod's
level, priority, requests, usage and CPU supply); :meth:`EvictionManager.step`
shows it to the plugins (:class:`MemoryPressurePlugin`,
:class:`ReclaimedOvercommitPlugin`, :class:`CPUSuppressionPlugin`), each of which
counts its own bad samples and names victims, and returns the rate-limited,
de-duplicated :class:`EvictionDecision` list.

Effect: an :class:`Evictor` carries a decision out, through the API server's
Eviction API (:class:`ApiServerEvictor` over an injected :class:`EvictionClient`)
or by stopping a standalone pod (:class:`LocalEvictor`), and the manager records the
:class:`EvictionOutcome`. :class:`EvictionLoop` ties the two together;
:class:`EvictionCollector` exposes the counters. See ``docs/eviction.md``.
"""

from agent.eviction.evictor import (
    COMPONENT,
    ApiServerEvictor,
    EvictionClient,
    Evictor,
    LocalEvictor,
    StopPod,
    event_body,
    eviction_body,
)
from agent.eviction.loop import EvictionLoop
from agent.eviction.manager import EvictionCounters, EvictionManager
from agent.eviction.metrics import EvictionCollector
from agent.eviction.model import (
    Candidate,
    EvictionDecision,
    EvictionOutcome,
    NodeSample,
    Outcome,
    PodSample,
    Resource,
    Sample,
    never_evicted,
    reclaim_pool_supply_ratio,
)
from agent.eviction.plugins import (
    CPUSuppressionPlugin,
    EvictionPlugin,
    MemoryPressurePlugin,
    ReclaimedOvercommitPlugin,
    build_plugins,
    rank_victims,
)
from agent.eviction.ratelimit import RateLimiter
from katalyst.config.eviction import (
    CPUSuppressionConfig,
    EvictionConfig,
    EvictionConfigError,
    MemoryPressureConfig,
    RateLimitConfig,
    ReclaimedOvercommitConfig,
)

__all__ = [
    "COMPONENT",
    "ApiServerEvictor",
    "CPUSuppressionConfig",
    "CPUSuppressionPlugin",
    "Candidate",
    "EvictionClient",
    "EvictionCollector",
    "EvictionConfig",
    "EvictionConfigError",
    "EvictionCounters",
    "EvictionDecision",
    "EvictionLoop",
    "EvictionManager",
    "EvictionOutcome",
    "EvictionPlugin",
    "Evictor",
    "LocalEvictor",
    "MemoryPressureConfig",
    "MemoryPressurePlugin",
    "NodeSample",
    "Outcome",
    "PodSample",
    "RateLimitConfig",
    "RateLimiter",
    "ReclaimedOvercommitConfig",
    "ReclaimedOvercommitPlugin",
    "Resource",
    "Sample",
    "StopPod",
    "build_plugins",
    "event_body",
    "eviction_body",
    "never_evicted",
    "rank_victims",
    "reclaim_pool_supply_ratio",
]
