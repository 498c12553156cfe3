"""Scripted inputs for the advisor's tests: one helper per thing a period carries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.sysadvisor import (
    Advisor,
    AdvisorConfig,
    AdvisorInput,
    Plan,
    RegionInput,
    dedicated_region,
)

GIB = 1 << 30


def share(
    usage: float | None = None,
    *,
    requests: float = 4.0,
    cpus: float = 8.0,
    wait: float | None = None,
    psi: float | None = None,
    ws: int | None = None,
) -> RegionInput:
    """The share region with the given readings (cores, µs, percent, bytes)."""
    return RegionInput(
        name="share",
        kind="share",
        cpus=cpus,
        requests_cpu=requests,
        usage_cores=usage,
        sched_wait_us=wait,
        psi_some_avg10=psi,
        memory_working_set=ws,
    )


def dedicated(
    uid: str,
    usage: float | None = None,
    *,
    cpus: float = 4.0,
    requests: float = 4.0,
    wait: float | None = None,
    psi: float | None = None,
    ws: int | None = None,
) -> RegionInput:
    """A dedicated pod's region."""
    return RegionInput(
        name=dedicated_region(uid),
        kind="dedicated",
        cpus=cpus,
        requests_cpu=requests,
        usage_cores=usage,
        sched_wait_us=wait,
        psi_some_avg10=psi,
        memory_working_set=ws,
    )


def node(
    *regions: RegionInput,
    at: float = 0.0,
    fresh: bool = True,
    alloc: float = 16.0,
    memory: int = 64 * GIB,
) -> AdvisorInput:
    """One period's input."""
    return AdvisorInput(
        at=at, fresh=fresh, allocatable_cpus=alloc, memory_allocatable=memory, regions=regions
    )


def config(overrides: Mapping[str, object] | None = None) -> AdvisorConfig:
    """The defaults with ``overrides`` (the nested layout of the config file) put in."""
    return AdvisorConfig.from_mapping(overrides or {})


def run(advisor: Advisor, inputs: Iterable[AdvisorInput]) -> list[Plan]:
    """Advise once per input, in order: one plan per period."""
    return [advisor.advise(inp) for inp in inputs]


def lends(plans: Iterable[Plan]) -> list[float]:
    """The lend of each period, rounded to hide float noise (1e-9 cores)."""
    return [round(p.reclaim_cpus, 9) for p in plans]
