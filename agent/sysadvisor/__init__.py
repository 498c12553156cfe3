"""The sysadvisor: how much CPU and memory the node lends to reclaimed pods.

This package is the pure decision core (compute apart from effect): an
:class:`Advisor` turns one period's indicator readings (:class:`AdvisorInput`) into
a :class:`Plan`. Reading the metrics and applying the plan to cgroups are the
caller's; nothing here does I/O or reads a clock. The algorithm, its formulas and
its defaults are in ``docs/headroom.md``.
"""

from agent.sysadvisor.advisor import Advisor
from agent.sysadvisor.types import (
    SHARE_REGION,
    AdvisorInput,
    Decision,
    IndicatorTrace,
    Mode,
    Plan,
    RegionInput,
    RegionKind,
    RegionPlan,
    dedicated_region,
)
from katalyst.config.sysadvisor import (
    INDICATORS,
    AdvisorConfig,
    Gains,
    IndicatorConfig,
    IndicatorName,
    IndicatorsConfig,
    LimitsConfig,
    MemoryConfig,
)

__all__ = [
    "INDICATORS",
    "SHARE_REGION",
    "Advisor",
    "AdvisorConfig",
    "AdvisorInput",
    "Decision",
    "Gains",
    "IndicatorConfig",
    "IndicatorName",
    "IndicatorTrace",
    "IndicatorsConfig",
    "LimitsConfig",
    "MemoryConfig",
    "Mode",
    "Plan",
    "RegionInput",
    "RegionKind",
    "RegionPlan",
    "dedicated_region",
]
