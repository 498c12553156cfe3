"""The memory resource plugin: NUMA binding, limits and protection, OOM priority."""

from agent.qrm.memory.policy import MemoryPlan, MemoryPolicy, oom_score_adj_for

__all__ = ["MemoryPlan", "MemoryPolicy", "oom_score_adj_for"]
