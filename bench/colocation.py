"""Colocation: the service's latency and the batch work done under four policies,
and the agent's reaction to a load step, all measured on this machine in one run.

Every scenario runs the same latency-sensitive service (``examples/standalone/
service.py``, about 1 ms of CPU per request; the hash rounds are calibrated once,
in (a), and fixed for the others) on the same CPUs, at the same open-loop request
rate, for the same measured window after the same warm-up:

(a) alone     the service alone;
(b) plain     + two busy-loop batch jobs, no agent, plain CFS: every job in its own
              cgroup at the default weight (cpu.shares 1024), no quota;
(c) static    + the same jobs under one parent with cpu.shares 2 (the agent's weight
              for reclaimed pods) and a fixed CFS quota (``--static-cpus``, default
              half the allocatable CPUs);
(d) agent     ``katalyst-agent --standalone``: the service a ``shared_cores`` pod,
              the jobs ``reclaimed_cores`` pods; the sysadvisor sets the reclaimed
              quota every period (``--agent-config`` adds settings);
step          as (d), the request rate doubling half-way through the window.

Everything is pinned as the agent pins it: CPU 0 is reserved, the service and the
batch jobs run on the other CPUs (the share pool; on a 2-CPU machine the reclaimed
pods share CPU 1 with the service, as they do under the agent); the load generator
runs on the reserved CPU in every scenario, so that the client does not compete
with what it measures. Under (d) the agent itself is not pinned (neither is it in
production, beyond its own cgroup).

Reported for each: the service's p50/p99/p99.9, batch CPU (cpuacct of the batch
cgroups), service CPU, node and pool CPU utilization (/proc/stat), the ratios
against (a) and (b), and the goals of the issue as PASS or MISS (reported, never
asserted): (d) p99 within 10 % of (a); batch under (d) gets at least 70 % of the
CPU that (a) leaves idle (allocatable CPUs minus (a)'s service CPU); (d) better
than (c) on one of the two and equal (within 5 %) or better on the other; after
the step the agent cuts the reclaimed CPU within 2 periods. Also the agent's
headroom and lend over time, from ``GET /status`` polled four times a period, and
with ``--plot`` a PNG of them. Cgroups are made below this process's own and
removed at the end, also on failure.

With ``--repeat N`` every scenario runs N times, in rounds (a, b, c, d, step; then
again), so that slow drifts of a shared machine fall on every scenario alike; the
report then gives each round's key ratios and, for the goals, the median of every
number over the rounds.

    python -m bench.colocation [--duration 20] [--rate 150] [--period 1] [--warmup 3]
        [--repeat 1] [--static-cpus C] [--agent-config FILE] [--plot PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.config import load_config
from agent.enforcement.applier import RECLAIMED_SHARES
from agent.errors import ConfigError
from agent.standalone.node import RECLAIMED_ROOT
from agent.standalone.runtime import kill_cgroup_tasks, spawn_in_cgroup, stop_processes
from examples.standalone.loadgen import Request, percentile, run_phases
from katalyst.cgroup import CgroupDriver, CgroupError, HostCgroupFS, open_driver
from katalyst.cpuset import CPUSet
from katalyst.topology import read_cpu_topology

REPO = Path(__file__).resolve().parent.parent
SERVICE_PY = REPO / "examples" / "standalone" / "service.py"
BUSY_LOOP = ("sh", "-c", "while :; do :; done")
BATCH_JOBS = ("batch-1", "batch-2")
RESERVED = CPUSet.of([0])
"""The agent's default reserve pool; the other CPUs are the share pool (allocatable)."""
WORK_US = 1000
"""The service's CPU work per request, microseconds (as in the demo's manifest)."""
BACKLOG = 128
"""The service's listen queue: Linux's SOMAXCONN default before 5.4. With the demo's
default of 5, a starved service overflows it and the client's SYN is retried after
a second: a 1 s outlier that measures the toy server's accept queue, not CPU."""
SERVICE_SHARES = 1024
"""The service's cpu.shares: the kubelet gives 1024 per requested CPU; it requests 1."""
CFS_PERIOD_US = 100_000

GOAL_P99_RATIO = 1.10
GOAL_IDLE_SHARE = 0.70
GOAL_STEP_PERIODS = 2
TOLERANCE = 0.05
"""(d) against (c): within 5 % counts as equal; better means better by more than 5 %."""
MAX_CONVERGE_PERIODS = 12
"""Under the agent, the warm-up goes on until the lend stops ramping, at most this many
periods more (the default safety cool-down is 10 periods, the ramp 0.5 CPU a period)."""

_METRICS_LINE = re.compile(r"metrics and health on http://(127\.0\.0\.1:\d+)/metrics")
_ROUNDS_LINE = re.compile(r"(\d+) hash rounds per request")


# ---- results and the pure computations on them --------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of the answered requests, milliseconds, and how many there were."""

    p50: float
    p99: float
    p999: float
    requests: int
    errors: int

    @classmethod
    def median(cls, rounds: Sequence[Latency]) -> Latency:
        """Each percentile's median over ``rounds``; the requests and errors summed."""
        return cls(
            p50=median(r.p50 for r in rounds),
            p99=median(r.p99 for r in rounds),
            p999=median(r.p999 for r in rounds),
            requests=sum(r.requests for r in rounds),
            errors=sum(r.errors for r in rounds),
        )

    @classmethod
    def of(cls, requests: Iterable[Request]) -> Latency:
        done = list(requests)
        ok = [r.latency_ms for r in done if r.ok]
        return cls(
            p50=percentile(ok, 50),
            p99=percentile(ok, 99),
            p999=percentile(ok, 99.9),
            requests=len(done),
            errors=len(done) - len(ok),
        )


@dataclass(frozen=True, slots=True)
class AgentSample:
    """One reading of the agent's ``GET /status`` (its ``sysadvisor`` part)."""

    t_s: float
    """Seconds after the measured load started (negative: before)."""
    mode: str
    headroom_cpus: float
    reclaim_target_cpus: float
    reclaim_cpus: float
    reclaim_quota_us: int
    breaches: tuple[str, ...] = ()
    """``region/indicator`` of each reading above its safety limit."""
    batch_cpu_s: float | None = None
    """Batch CPU since the window started (cpuacct of the reclaimed root), when read."""


@dataclass(frozen=True, slots=True)
class PeriodRow:
    """One control period of a run under the agent: its last status reading and the
    latency of the requests sent in it."""

    t_s: float
    sample: AgentSample | None
    p99_ms: float
    requests: int
    batch_cores: float | None


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """One scenario's measured window."""

    name: str
    title: str
    window_s: float
    latency: Latency
    service_cpu_s: float
    batch_cpu_s: float
    node_util: float
    """All CPUs of the node, busy fraction (0-1) over the window, from /proc/stat."""
    pool_util: float
    """The allocatable (non-reserved) CPUs only, busy fraction (0-1)."""
    samples: tuple[AgentSample, ...] = ()
    """The agent's status readings over the window (runs under the agent)."""
    periods: tuple[PeriodRow, ...] = ()
    """The window, period by period."""

    @property
    def service_cores(self) -> float:
        return self.service_cpu_s / self.window_s if self.window_s > 0 else math.nan

    @property
    def batch_cores(self) -> float:
        return self.batch_cpu_s / self.window_s if self.window_s > 0 else math.nan


@dataclass(frozen=True, slots=True)
class StepResult:
    """The load step under the agent."""

    run: ScenarioResult
    step_at_s: float
    rate_before: float
    rate_after: float
    before: Latency
    reaction: Latency
    """Requests sent in the first ``GOAL_STEP_PERIODS`` periods after the step."""
    after: Latency
    """Requests sent after the step (the whole doubled half)."""
    lend_before: float | None
    cut_after_periods: float | None
    """Periods from the step to the first reading with a smaller lend (or safety mode);
    None when that never happened in the window."""


@dataclass(frozen=True, slots=True)
class Ratios:
    """A scenario against (a) and (b); NaN where a baseline is missing or zero."""

    p50_vs_a: float
    p99_vs_a: float
    p999_vs_a: float
    p99_vs_b: float
    batch_vs_b: float
    idle_share: float
    """Batch cores over the cores (a) leaves idle: allocatable - (a)'s service cores."""


@dataclass(frozen=True, slots=True)
class Goal:
    text: str
    measured: str
    met: bool | None
    """None: could not be measured in this run."""


def median(values: Iterable[float]) -> float:
    """The median of the values that are numbers; NaN when none is."""
    numbers = [v for v in values if not math.isnan(v)]
    return statistics.median(numbers) if numbers else math.nan


def _typical(items: Sequence[Any], key: Callable[[Any], float]) -> Any:
    """The item whose key is the (lower) median; NaN keys sort last."""
    ordered = sorted(items, key=lambda item: (math.isnan(key(item)), key(item)))
    return ordered[(len(ordered) - 1) // 2]


def combine_rounds(runs: Sequence[ScenarioResult]) -> ScenarioResult:
    """One scenario over several rounds: the median of each number (latency
    percentiles, service and batch CPU, utilization), the requests summed; the
    status readings and periods of the round whose p99 is the median, so that the
    headroom table and the plot show a typical round."""
    if not runs:
        raise ValueError("combine_rounds: no rounds")
    if len(runs) == 1:
        return runs[0]
    typical: ScenarioResult = _typical(runs, lambda r: r.latency.p99)
    window = typical.window_s
    return dataclasses.replace(
        typical,
        latency=Latency.median([r.latency for r in runs]),
        service_cpu_s=median(r.service_cores for r in runs) * window,
        batch_cpu_s=median(r.batch_cores for r in runs) * window,
        node_util=median(r.node_util for r in runs),
        pool_util=median(r.pool_util for r in runs),
    )


def combine_steps(steps: Sequence[StepResult]) -> StepResult:
    """The load step over several rounds: the median cut (a round with no cut counts
    as the longest), the median latencies and lend, the runs combined."""
    if not steps:
        raise ValueError("combine_steps: no rounds")
    if len(steps) == 1:
        return steps[0]

    def cut(s: StepResult) -> float:
        return math.inf if s.cut_after_periods is None else s.cut_after_periods

    typical: StepResult = _typical(steps, cut)
    lends = [s.lend_before for s in steps if s.lend_before is not None]
    return dataclasses.replace(
        typical,
        run=combine_rounds([s.run for s in steps]),
        before=Latency.median([s.before for s in steps]),
        reaction=Latency.median([s.reaction for s in steps]),
        after=Latency.median([s.after for s in steps]),
        lend_before=median(lends) if lends else None,
    )


def ratio(x: float, y: float) -> float:
    """x / y, NaN when either is NaN or y is 0."""
    if math.isnan(x) or math.isnan(y) or y == 0:
        return math.nan
    return x / y


def idle_cores(alone: ScenarioResult, allocatable_cpus: float) -> float:
    """The CPU that (a) leaves idle on the allocatable CPUs, in cores."""
    return allocatable_cpus - alone.service_cores


def ratios(
    result: ScenarioResult,
    *,
    alone: ScenarioResult,
    plain: ScenarioResult | None,
    allocatable_cpus: float,
) -> Ratios:
    return Ratios(
        p50_vs_a=ratio(result.latency.p50, alone.latency.p50),
        p99_vs_a=ratio(result.latency.p99, alone.latency.p99),
        p999_vs_a=ratio(result.latency.p999, alone.latency.p999),
        p99_vs_b=ratio(result.latency.p99, plain.latency.p99) if plain else math.nan,
        batch_vs_b=ratio(result.batch_cores, plain.batch_cores) if plain else math.nan,
        idle_share=ratio(result.batch_cores, idle_cores(alone, allocatable_cpus)),
    )


def better_on_one_equal_on_other(
    *, p99: float, p99_ref: float, batch: float, batch_ref: float, tolerance: float = TOLERANCE
) -> bool:
    """Whether (p99, batch) beats (p99_ref, batch_ref) on at least one (lower p99, more
    batch) by more than ``tolerance`` while not worse than ``tolerance`` on the other."""
    values = (p99, p99_ref, batch, batch_ref)
    if any(math.isnan(v) for v in values):
        return False
    p99_better = p99 < p99_ref * (1 - tolerance)
    p99_ok = p99 <= p99_ref * (1 + tolerance)
    batch_better = batch > batch_ref * (1 + tolerance)
    batch_ok = batch >= batch_ref * (1 - tolerance)
    return (p99_better and batch_ok) or (batch_better and p99_ok)


def evaluate_goals(
    results: Mapping[str, ScenarioResult],
    step: StepResult | None,
    *,
    allocatable_cpus: float,
    tolerance: float = TOLERANCE,
) -> list[Goal]:
    """The issue's goals, each met, missed or not measurable."""
    a, c, d = results.get("a"), results.get("c"), results.get("d")
    goals: list[Goal] = []
    if a and d:
        r = ratio(d.latency.p99, a.latency.p99)
        goals.append(
            Goal(
                f"(d) p99 within {GOAL_P99_RATIO - 1:.0%} of (a)",
                f"p99 (d)/(a) = {r:.2f} (goal <= {GOAL_P99_RATIO:.2f})",
                None if math.isnan(r) else r <= GOAL_P99_RATIO,
            )
        )
        share = ratio(d.batch_cores, idle_cores(a, allocatable_cpus))
        goals.append(
            Goal(
                f"(d) batch gets >= {GOAL_IDLE_SHARE:.0%} of the CPU (a) leaves idle",
                f"{d.batch_cores:.2f} of {idle_cores(a, allocatable_cpus):.2f} cores = {share:.2f}"
                f" (goal >= {GOAL_IDLE_SHARE:.2f})",
                None if math.isnan(share) else share >= GOAL_IDLE_SHARE,
            )
        )
    if c and d:
        p99_r = ratio(d.latency.p99, c.latency.p99)
        batch_r = ratio(d.batch_cores, c.batch_cores)
        goals.append(
            Goal(
                f"(d) better than (c) on p99 or batch, equal (+-{tolerance:.0%}) or better "
                "on the other",
                f"p99 (d)/(c) = {p99_r:.2f}, batch (d)/(c) = {batch_r:.2f}",
                better_on_one_equal_on_other(
                    p99=d.latency.p99,
                    p99_ref=c.latency.p99,
                    batch=d.batch_cores,
                    batch_ref=c.batch_cores,
                    tolerance=tolerance,
                ),
            )
        )
    if step is not None:
        text = f"load step: the agent cuts reclaimed CPU within {GOAL_STEP_PERIODS} periods"
        if step.lend_before is None or step.lend_before <= 0.0:
            goals.append(Goal(text, "not measurable: nothing was lent before the step", None))
        elif step.cut_after_periods is None:
            goals.append(Goal(text, "no cut seen in the window", False))
        else:
            goals.append(
                Goal(
                    text,
                    f"{step.cut_after_periods:.2f} periods (goal <= {GOAL_STEP_PERIODS})",
                    step.cut_after_periods <= GOAL_STEP_PERIODS,
                )
            )
    return goals


def periods_to_cut(
    samples: Sequence[AgentSample], *, step_at_s: float, period_s: float
) -> tuple[float | None, float | None]:
    """(the lend at the last reading before the step, periods from the step to the
    first reading after it with a smaller lend or that entered safety mode); None for
    what the readings do not show."""
    before = [s for s in samples if s.t_s <= step_at_s]
    if not before:
        return None, None
    lend, was_safe = before[-1].reclaim_cpus, before[-1].mode == "safety"
    for s in samples:
        if s.t_s <= step_at_s:
            continue
        if s.reclaim_cpus < lend - 1e-6 or (s.mode == "safety" and not was_safe):
            return lend, (s.t_s - step_at_s) / period_s
    return lend, None


def sample_from_status(doc: object, t_s: float) -> AgentSample | None:
    """The sysadvisor's part of a ``/status`` document; None before its first decision
    or when the document lacks a field."""
    if not isinstance(doc, dict):
        return None
    adv = doc.get("sysadvisor")
    if not isinstance(adv, dict):
        return None
    try:
        return AgentSample(
            t_s=t_s,
            mode=str(adv["mode"]),
            headroom_cpus=float(adv["headroom_cpus"]),
            reclaim_target_cpus=float(adv["reclaim_target_cpus"]),
            reclaim_cpus=float(adv["reclaim_cpus"]),
            reclaim_quota_us=int(adv["reclaim_quota_us"]),
            breaches=tuple(str(b) for b in adv.get("breaches") or ()),
        )
    except (KeyError, TypeError, ValueError):
        return None


def converged(sample: AgentSample | None) -> bool:
    """Whether the lend has stopped ramping: normal mode, lend at its target."""
    return (
        sample is not None
        and sample.mode == "normal"
        and abs(sample.reclaim_cpus - sample.reclaim_target_cpus) < 0.01
    )


def parse_metrics_addr(log_text: str) -> str | None:
    """``127.0.0.1:PORT`` from the agent's "metrics and health on" log line."""
    match = _METRICS_LINE.search(log_text)
    return match.group(1) if match else None


def parse_proc_stat(text: str) -> dict[str, tuple[int, int]]:
    """``/proc/stat``'s cpu lines: name -> (busy, total) in clock ticks.

    Idle is ``idle + iowait``; busy is everything else of the first eight fields
    (user, nice, system, idle, iowait, irq, softirq, steal; guest time is already
    counted in user).
    """
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *fields = line.split()
        values = [int(v) for v in fields[:8]]
        total = sum(values)
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        out[name] = (total - idle, total)
    return out


def utilization(
    before: Mapping[str, tuple[int, int]],
    after: Mapping[str, tuple[int, int]],
    cpus: Iterable[str],
) -> float:
    """Busy fraction of ``cpus`` (``cpu`` for the whole node, ``cpuN``) between two reads."""
    busy = total = 0
    for name in cpus:
        busy += after[name][0] - before[name][0]
        total += after[name][1] - before[name][1]
    return busy / total if total > 0 else math.nan


def per_period(
    requests: Sequence[Request],
    samples: Sequence[AgentSample],
    *,
    period_s: float,
    span_s: float,
) -> list[PeriodRow]:
    """One row per period of the ``span_s`` seconds during which requests were sent:
    the last status reading in it, the p99 of the requests sent in it, and the batch
    cores between that reading and the one before (the window's start for the first)."""
    count = max(1, math.ceil(span_s / period_s - 1e-9))
    rows: list[PeriodRow] = []
    prev_t, prev_cpu = 0.0, 0.0
    for k in range(count):
        lo, hi = k * period_s, (k + 1) * period_s
        sent = [r.latency_ms for r in requests if lo <= r.sent_s < hi and r.ok]
        inside = [s for s in samples if lo <= s.t_s < hi]
        last = inside[-1] if inside else None
        batch: float | None = None
        if last is not None and last.batch_cpu_s is not None:
            if last.t_s > prev_t:
                batch = (last.batch_cpu_s - prev_cpu) / (last.t_s - prev_t)
            prev_t, prev_cpu = last.t_s, last.batch_cpu_s
        rows.append(PeriodRow(lo, last, percentile(sent, 99), len(sent), batch))
    return rows


def step_result(
    run: ScenarioResult,
    requests: Sequence[Request],
    *,
    step_at_s: float,
    rate_before: float,
    rate_after: float,
    period_s: float,
) -> StepResult:
    """The load step's numbers from the run's requests and status readings."""
    lend, cut = periods_to_cut(run.samples, step_at_s=step_at_s, period_s=period_s)
    react_end = step_at_s + GOAL_STEP_PERIODS * period_s
    return StepResult(
        run=run,
        step_at_s=step_at_s,
        rate_before=rate_before,
        rate_after=rate_after,
        before=Latency.of(r for r in requests if r.sent_s < step_at_s),
        reaction=Latency.of(r for r in requests if step_at_s <= r.sent_s < react_end),
        after=Latency.of(r for r in requests if r.sent_s >= step_at_s),
        lend_before=lend,
        cut_after_periods=cut,
    )


@dataclass(frozen=True, slots=True)
class Options:
    duration: float
    rate: float
    period: float
    warmup: float
    static_cpus: float | None
    plot: Path | None
    json: Path | None
    agent_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Extra settings of the agent's config file (``--agent-config``); ``sysadvisor.
    period_s`` is always ``period``."""
    repeat: int = 1
    """Rounds of every scenario (``--repeat``); the goals use the medians."""


def agent_settings(extra: Mapping[str, Any], *, period_s: float) -> dict[str, Any]:
    """The agent's config file: ``extra`` (``--agent-config``) with the period set."""
    settings = dict(extra)
    settings["sysadvisor"] = {**settings.get("sysadvisor", {}), "period_s": period_s}
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.colocation", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="S",
        default=20.0,
        help="measured seconds per scenario (default 20)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        metavar="RPS",
        default=150.0,
        help="service requests per second (default 150)",
    )
    parser.add_argument(
        "--period",
        type=float,
        metavar="S",
        default=1.0,
        help="the sysadvisor's period, seconds (default 1)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        metavar="S",
        default=3.0,
        help="unmeasured seconds of load first (default 3)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        default=1,
        help="run every scenario N times, in interleaved rounds, and judge the goals on "
        "the medians (default 1)",
    )
    parser.add_argument(
        "--static-cpus",
        type=float,
        metavar="CPUS",
        default=None,
        help="(c)'s fixed batch quota in CPUs (default: half the allocatable CPUs)",
    )
    parser.add_argument(
        "--agent-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML settings for the agent under (d) and the step, e.g. a sysadvisor: "
        "section (docs/headroom.md); --period sets sysadvisor.period_s (default: none)",
    )
    parser.add_argument(
        "--plot", type=Path, metavar="PATH", help="save a PNG here (needs matplotlib)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every number here")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """The options, checked; a bad one exits with status 2 and a message naming it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    finite = ("duration", "rate", "period", "warmup", "static_cpus")
    for name in finite:
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            parser.error(f"--{name.replace('_', '-')}: must be a finite number, got {value}")
    if not 0.1 <= args.period <= 60:
        parser.error(f"--period: must be between 0.1 and 60 seconds, got {args.period}")
    if args.duration < 4 * args.period:
        parser.error(
            f"--duration: must be at least 4 periods ({4 * args.period:g} s) so that the "
            f"load step has two periods on each side, got {args.duration:g}"
        )
    if not 0 < args.rate <= 5000:
        parser.error(f"--rate: must be > 0 and <= 5000 requests per second, got {args.rate:g}")
    if args.warmup < 0:
        parser.error(f"--warmup: must be >= 0, got {args.warmup:g}")
    if not 1 <= args.repeat <= 20:
        parser.error(f"--repeat: must be between 1 and 20 rounds, got {args.repeat}")
    if args.static_cpus is not None and not args.static_cpus >= 0.01:
        parser.error(
            f"--static-cpus: must be >= 0.01 (the kernel's smallest quota is 1 ms per "
            f"100 ms), got {args.static_cpus:g}"
        )
    for name in ("plot", "json"):
        path = getattr(args, name)
        if path is not None and not path.resolve().parent.is_dir():
            parser.error(f"--{name}: the folder of {path} does not exist")
    agent_config: dict[str, Any] = {}
    if args.agent_config is not None:
        try:
            loaded = yaml.safe_load(args.agent_config.read_text())
        except (OSError, yaml.YAMLError) as exc:
            parser.error(f"--agent-config: cannot read {args.agent_config}: {exc}")
        if loaded is not None and not isinstance(loaded, dict):
            parser.error(f"--agent-config: {args.agent_config} must hold a mapping")
        agent_config = loaded or {}
        if not isinstance(agent_config.get("sysadvisor", {}), dict):
            parser.error(f"--agent-config: sysadvisor in {args.agent_config} must be a mapping")
    # Checked as the agent will read it, before minutes of the other scenarios.
    with tempfile.NamedTemporaryFile("w", prefix="kqb", suffix=".yaml") as file:
        file.write(yaml.safe_dump(agent_settings(agent_config, period_s=args.period)))
        file.flush()
        try:
            load_config(["--config", file.name], env={})
        except ConfigError as exc:
            parser.error(f"--agent-config: {str(exc).replace(file.name, str(args.agent_config))}")
    return Options(
        duration=args.duration,
        rate=args.rate,
        period=args.period,
        warmup=args.warmup,
        static_cpus=args.static_cpus,
        plot=args.plot,
        json=args.json,
        agent_config=agent_config,
        repeat=args.repeat,
    )


# ---- the machine side -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Machine:
    online: CPUSet
    reserved: CPUSet
    pool: CPUSet

    @property
    def allocatable_cpus(self) -> float:
        return float(len(self.pool))


@dataclass(frozen=True, slots=True)
class _Counters:
    at: float
    stat: dict[str, tuple[int, int]]
    service_ns: int
    batch_ns: int


def _read_counters(driver: CgroupDriver, service: str, batch: Sequence[str]) -> _Counters:
    return _Counters(
        at=time.perf_counter(),
        stat=parse_proc_stat(Path("/proc/stat").read_text()),
        service_ns=driver.cpu_usage_ns(service),
        batch_ns=sum(driver.cpu_usage_ns(b) for b in batch),
    )


def _result(
    name: str,
    title: str,
    *,
    machine: Machine,
    before: _Counters,
    after: _Counters,
    requests: Sequence[Request],
    period_s: float,
    span_s: float,
    samples: Sequence[AgentSample] = (),
) -> ScenarioResult:
    window = after.at - before.at
    rows = per_period(requests, samples, period_s=period_s, span_s=span_s)
    return ScenarioResult(
        name=name,
        title=title,
        window_s=window,
        latency=Latency.of(requests),
        service_cpu_s=(after.service_ns - before.service_ns) / 1e9,
        batch_cpu_s=(after.batch_ns - before.batch_ns) / 1e9,
        node_util=utilization(before.stat, after.stat, ["cpu"]),
        pool_util=utilization(before.stat, after.stat, [f"cpu{c}" for c in machine.pool]),
        samples=tuple(samples),
        periods=tuple(rows),
    )


class _Load(threading.Thread):
    """The open-loop load, in a thread pinned (with the threads it starts) to the
    reserved CPUs, so that the client never competes with the service it measures."""

    def __init__(self, url: str, phases: Sequence[tuple[float, float]], cpus: CPUSet) -> None:
        super().__init__(name="load", daemon=True)
        self._url, self._phases, self._cpus = url, list(phases), cpus
        self.requests: list[Request] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        # sched_setaffinity(0) pins the calling thread only (Linux); threads it
        # creates inherit its mask, the main thread and subprocesses do not.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, set(self._cpus))
        try:
            self.requests = run_phases(self._url, self._phases)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            self.error = exc


def _load(
    url: str,
    phases: Sequence[tuple[float, float]],
    cpus: CPUSet,
    *,
    every_s: float = 0.0,
    tick: Callable[[float], None] | None = None,
) -> list[Request]:
    """Run the load; meanwhile call ``tick(seconds since start)`` every ``every_s``."""
    start = time.perf_counter()
    load = _Load(url, phases, cpus)
    load.start()
    while load.is_alive():
        if tick is not None:
            tick(time.perf_counter() - start)
            load.join(timeout=every_s)
        else:
            load.join(timeout=0.5)
    if load.error is not None:
        raise load.error
    return load.requests


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_url(url: str, deadline_s: float, alive: Callable[[], bool]) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and alive():
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
            response.read()
            return True
        time.sleep(0.1)
    return False


def _walk(driver: CgroupDriver, cgroup: str = "") -> list[str]:
    try:
        names = driver.children(cgroup)
    except CgroupError:
        return []
    below = [f"{cgroup}/{n}" if cgroup else n for n in names]
    return [cgroup] + [c for b in below for c in _walk(driver, b)]


def _clean_cgroups(driver: CgroupDriver) -> None:
    """Kill what is left in the cgroups (started by this run), deepest first, and
    remove them; a cgroup already gone is fine."""
    if not driver.exists(""):
        return
    for cgroup in reversed(_walk(driver)):
        kill_cgroup_tasks(driver, cgroup)
    driver.remove("")


def _unique(name: str) -> str:
    return f"kqbench-{os.getpid()}-{name}"


# ---- (a), (b), (c): cgroups of our own, no agent ----------------------------------------------


def run_plain(
    name: str, title: str, opts: Options, machine: Machine, *, rounds: int | None
) -> tuple[ScenarioResult, int]:
    """(a), (b) or (c); returns the result and the service's hash rounds per request."""
    driver = open_driver(HostCgroupFS(), base=_unique(name), below_own_cgroup=True)
    procs: list[subprocess.Popen[bytes]] = []
    work = Path(tempfile.mkdtemp(prefix="kqb"))
    try:
        driver.create("service")
        driver.set_cpuset("service", cpus=machine.pool)
        driver.set_cpu_shares("service", SERVICE_SHARES)
        port = _free_port()
        url = f"http://127.0.0.1:{port}/"
        env = {"PORT": str(port), "WORK_US": str(WORK_US), "BACKLOG": str(BACKLOG)}
        if rounds is not None:
            env["ROUNDS"] = str(rounds)
        with (work / "service.log").open("wb") as out:
            service = spawn_in_cgroup(
                driver, "service", [sys.executable, str(SERVICE_PY)], env=env, stdout=out
            )
        procs.append(service)
        if not _wait_for_url(url, 30, lambda: service.poll() is None):
            raise RuntimeError(f"the service did not come up: {(work / 'service.log').read_text()}")
        match = _ROUNDS_LINE.search((work / "service.log").read_text())
        used_rounds = int(match.group(1)) if match else (rounds or 0)
        batch: list[str] = []
        if name == "b":
            # Plain CFS: each job a sibling of the service at the default weight, as
            # plain processes beside it would be.
            batch = list(BATCH_JOBS)
        elif name == "c":
            driver.create(RECLAIMED_ROOT)
            driver.set_cpuset(RECLAIMED_ROOT, cpus=machine.pool)
            driver.set_cpu_shares(RECLAIMED_ROOT, RECLAIMED_SHARES)
            static = opts.static_cpus or machine.allocatable_cpus / 2
            driver.set_cpu_quota(RECLAIMED_ROOT, quota_us=max(1000, round(static * CFS_PERIOD_US)))
            batch = [f"{RECLAIMED_ROOT}/{job}" for job in BATCH_JOBS]
        for cgroup in batch:
            driver.create(cgroup)
            driver.set_cpuset(cgroup, cpus=machine.pool)
            if name == "b":
                driver.set_cpu_shares(cgroup, 1024)  # the kernel's default, said out loud
            procs.append(spawn_in_cgroup(driver, cgroup, BUSY_LOOP))
        if opts.warmup > 0:
            _load(url, [(opts.rate, opts.warmup)], machine.reserved)
        before = _read_counters(driver, "service", batch)
        requests = _load(url, [(opts.rate, opts.duration)], machine.reserved)
        after = _read_counters(driver, "service", batch)
        return (
            _result(
                name,
                title,
                machine=machine,
                before=before,
                after=after,
                requests=requests,
                period_s=opts.period,
                span_s=opts.duration,
            ),
            used_rounds,
        )
    finally:
        stop_processes(procs)
        _clean_cgroups(driver)
        shutil.rmtree(work, ignore_errors=True)


# ---- (d) and the step: the agent ------------------------------------------------------------


def manifests(port: int, rounds: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    service = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "latency-service",
            "annotations": {"katalyst.kubewharf.io/qos_level": "shared_cores"},
        },
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "command": [sys.executable, str(SERVICE_PY)],
                    "env": [
                        {"name": "PORT", "value": str(port)},
                        {"name": "WORK_US", "value": str(WORK_US)},
                        {"name": "BACKLOG", "value": str(BACKLOG)},
                        {"name": "ROUNDS", "value": str(rounds)},
                    ],
                    "resources": {"requests": {"cpu": "1", "memory": "128Mi"}},
                }
            ]
        },
    }
    batch = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": job,
                "namespace": "batch",
                "annotations": {"katalyst.kubewharf.io/qos_level": "reclaimed_cores"},
            },
            "spec": {
                "containers": [
                    {
                        "name": "burn",
                        "command": list(BUSY_LOOP),
                        "resources": {
                            "requests": {
                                "resource.katalyst.kubewharf.io/reclaimed_millicpu": "1000",
                                "resource.katalyst.kubewharf.io/reclaimed_memory": "256Mi",
                            }
                        },
                    }
                ]
            },
        }
        for job in BATCH_JOBS
    ]
    return service, batch


def _status(addr: str) -> object:
    with urllib.request.urlopen(f"http://{addr}/status", timeout=2) as response:
        return json.loads(response.read())


def _sample(addr: str, t_s: float) -> AgentSample | None:
    try:
        return sample_from_status(_status(addr), t_s)
    except (OSError, ValueError):
        return None


def _wait_for_running(driver: CgroupDriver, count: int, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(CgroupError):
            running = [c for c in _walk(driver) if c.count("/") >= 1 and driver.procs(c)]
            if len(running) >= count:
                return True
        time.sleep(0.2)
    return False


def _service_cgroup(driver: CgroupDriver) -> str:
    pods = [p for p in driver.children("") if p != RECLAIMED_ROOT]
    if len(pods) != 1:
        raise RuntimeError(f"expected the service's pod cgroup only, found {pods}")
    return pods[0]


def run_agent(
    name: str,
    title: str,
    opts: Options,
    machine: Machine,
    *,
    rounds: int,
    phases: Sequence[tuple[float, float]],
) -> tuple[ScenarioResult, list[Request]]:
    """A run under ``katalyst-agent --standalone``: (d), or the load step with two
    ``phases``; returns the result and the requests (for the step's windows)."""
    root = _unique(name)
    driver = open_driver(HostCgroupFS(), base=root, below_own_cgroup=True)
    work = Path(tempfile.mkdtemp(prefix="kqb"))  # short: the plugin sockets live below
    folder, state, config = work / "pods", work / "state", work / "agent.yaml"
    folder.mkdir()
    config.write_text(yaml.safe_dump(agent_settings(opts.agent_config, period_s=opts.period)))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    service, batch = manifests(port, rounds)
    (folder / "latency-service.yaml").write_text(yaml.safe_dump(service))
    agent_cmd = [
        str(Path(sys.executable).with_name("katalyst-agent")),
        "--standalone", str(folder),
        "--state-dir", str(state),
        "--cgroup-root", root,
        "--metrics-addr", "127.0.0.1:0",
        "--config", str(config),
    ]  # fmt: skip
    log_path = work / "agent.log"
    failed = True
    with log_path.open("wb") as log:
        agent = subprocess.Popen(agent_cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        found: str | None = None
        end = time.monotonic() + 30
        while found is None and time.monotonic() < end and agent.poll() is None:
            found = parse_metrics_addr(log_path.read_text(errors="replace"))
            time.sleep(0.1)
        if found is None:
            raise RuntimeError("the agent did not report its metrics address")
        addr: str = found
        if not _wait_for_url(url, 30, lambda: agent.poll() is None):
            raise RuntimeError("the service pod did not come up under the agent")
        for job, manifest in zip(BATCH_JOBS, batch, strict=True):
            (folder / f"{job}.yaml").write_text(yaml.safe_dump(manifest))
        # Warm-up: the same load as the others get, from the moment the service is up
        # (an idle start would let the requirement sink, and the first requests would
        # trip the safety layer), then on until the lend stops ramping.
        if opts.warmup > 0:
            _load(url, [(opts.rate, opts.warmup)], machine.reserved)
        if not _wait_for_running(driver, 1 + len(BATCH_JOBS), 30):
            raise RuntimeError("the batch pods did not start under the agent")
        service_cgroup = _service_cgroup(driver)
        for _ in range(MAX_CONVERGE_PERIODS):
            if converged(_sample(addr, 0.0)):
                break
            _load(url, [(opts.rate, opts.period)], machine.reserved)
        samples: list[AgentSample] = []
        before = _read_counters(driver, service_cgroup, [RECLAIMED_ROOT])

        def tick(t_s: float) -> None:
            sample = _sample(addr, t_s)
            if sample is not None:
                with contextlib.suppress(CgroupError):
                    used = driver.cpu_usage_ns(RECLAIMED_ROOT) - before.batch_ns
                    sample = dataclasses.replace(sample, batch_cpu_s=used / 1e9)
                samples.append(sample)

        requests = _load(
            url, phases, machine.reserved, every_s=max(0.05, opts.period / 4), tick=tick
        )
        after = _read_counters(driver, service_cgroup, [RECLAIMED_ROOT])
        result = _result(
            name,
            title,
            machine=machine,
            before=before,
            after=after,
            requests=requests,
            period_s=opts.period,
            span_s=sum(seconds for _, seconds in phases),
            samples=samples,
        )
        failed = False
        return result, requests
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
        try:
            status = agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            status = agent.wait()
        if failed or status != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-25:]
            print(f"agent ({name}) exited with status {status}; its log ends:", file=sys.stderr)
            print("\n".join("  " + line for line in tail), file=sys.stderr)
        _clean_cgroups(driver)
        shutil.rmtree(work, ignore_errors=True)


# ---- the report ---------------------------------------------------------------------------


def _f(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def format_report(
    results: Mapping[str, ScenarioResult],
    step: StepResult | None,
    *,
    machine: Machine,
    opts: Options,
    rounds: int,
) -> list[str]:
    """The plain-text report: scenarios, ratios, goals, the load step, headroom over time."""
    static = opts.static_cpus or machine.allocatable_cpus / 2
    lines = [
        f"colocation on this machine: CPUs {machine.online}, reserved {machine.reserved}, "
        f"pool {machine.pool} ({machine.allocatable_cpus:g} allocatable)",
        f"service: {opts.rate:g} req/s open loop, {WORK_US} us of work per request "
        f"({rounds} hash rounds); {opts.duration:g} s measured per scenario after "
        f"{opts.warmup:g} s of warm-up; agent period {opts.period:g} s; "
        f"(c) quota {static:g} CPU"
        + (f"; every number the median of {opts.repeat} rounds" if opts.repeat > 1 else ""),
        "agent settings: "
        + (json.dumps(opts.agent_config, sort_keys=True) if opts.agent_config else "defaults")
        + f", sysadvisor.period_s {opts.period:g}",
        "",
        f"  {'scenario':<28} {'p50 ms':>7} {'p99 ms':>7} {'p99.9':>7} {'reqs':>6} {'err':>4} "
        f"{'svc cores':>9} {'batch cores':>11} {'node %':>7} {'pool %':>7}",
    ]
    rows = [*results.values(), *([step.run] if step else [])]
    for r in rows:
        lines.append(
            f"  {r.title:<28} {_f(r.latency.p50):>7} {_f(r.latency.p99):>7} "
            f"{_f(r.latency.p999):>7} {r.latency.requests:>6} {r.latency.errors:>4} "
            f"{_f(r.service_cores):>9} {_f(r.batch_cores):>11} "
            f"{_f(100 * r.node_util, '.1f'):>7} {_f(100 * r.pool_util, '.1f'):>7}"
        )
    alone = results.get("a")
    if alone is not None:
        lines += [
            "",
            f"  {'ratios':<28} {'p50/a':>7} {'p99/a':>7} {'p99.9/a':>7} {'p99/b':>7} "
            f"{'batch/b':>7} {'batch / idle(a)':>15}",
        ]
        for r in results.values():
            if r.name == "a":
                continue
            x = ratios(
                r, alone=alone, plain=results.get("b"), allocatable_cpus=machine.allocatable_cpus
            )
            lines.append(
                f"  {r.title:<28} {_f(x.p50_vs_a):>7} {_f(x.p99_vs_a):>7} {_f(x.p999_vs_a):>7} "
                f"{_f(x.p99_vs_b):>7} {_f(x.batch_vs_b):>7} {_f(x.idle_share):>15}"
            )
        lines.append(
            f"  idle(a) = {machine.allocatable_cpus:g} allocatable - "
            f"{alone.service_cores:.2f} service cores = "
            f"{idle_cores(alone, machine.allocatable_cpus):.2f} cores"
        )
    lines += ["", "goals (reported, not asserted)"]
    for g in evaluate_goals(results, step, allocatable_cpus=machine.allocatable_cpus):
        verdict = "n/a " if g.met is None else ("PASS" if g.met else "MISS")
        lines.append(f"  {verdict}  {g.text}: {g.measured}")
    if step is not None:
        cut = step.cut_after_periods
        lines += [
            "",
            f"load step under the agent: {step.rate_before:g} -> {step.rate_after:g} req/s "
            f"at t = {step.step_at_s:g} s",
            f"  lend before the step {_f(step.lend_before)} CPU; "
            + (
                "nothing lent, nothing to cut"
                if not step.lend_before
                else f"first cut {cut:.2f} periods after it ({cut * opts.period:.2f} s)"
                if cut is not None
                else "no cut seen in the window"
            ),
            f"  {'latency (ms)':<28} {'p50':>7} {'p99':>7} {'p99.9':>7} {'reqs':>6} {'err':>4}",
        ]
        for label, lat in (
            (f"before ({step.rate_before:g}/s)", step.before),
            (f"first {GOAL_STEP_PERIODS} periods after", step.reaction),
            (f"after ({step.rate_after:g}/s)", step.after),
        ):
            lines.append(
                f"  {label:<28} {_f(lat.p50):>7} {_f(lat.p99):>7} {_f(lat.p999):>7} "
                f"{lat.requests:>6} {lat.errors:>4}"
            )
    agent_runs: list[tuple[ScenarioResult | None, float | None]] = [(results.get("d"), None)]
    if step is not None:
        agent_runs.append((step.run, step.step_at_s))
    for run, step_at_s in agent_runs:
        if run is not None and run.samples:
            lines += ["", *headroom_table(run, step_at_s=step_at_s)]
    return lines


def round_summaries(
    per_round: Sequence[Mapping[str, ScenarioResult]],
    steps: Sequence[StepResult],
    allocatable_cpus: float,
) -> list[dict[str, float | None]]:
    """Each round's key numbers: the p99s of (a) and (d), (d)'s p99 and batch against
    (a) and (c), the share of (a)'s idle CPU the batch got, and the step's cut."""
    out: list[dict[str, float | None]] = []
    for k, results in enumerate(per_round):
        a, c, d = results.get("a"), results.get("c"), results.get("d")
        step = steps[k] if k < len(steps) else None
        nan = math.nan
        out.append(
            {
                "p99_a_ms": a.latency.p99 if a else nan,
                "p99_d_ms": d.latency.p99 if d else nan,
                "p99_d_vs_a": ratio(d.latency.p99, a.latency.p99) if a and d else nan,
                "p99_d_vs_c": ratio(d.latency.p99, c.latency.p99) if c and d else nan,
                "batch_d_vs_c": ratio(d.batch_cores, c.batch_cores) if c and d else nan,
                "idle_share_d": (
                    ratio(d.batch_cores, idle_cores(a, allocatable_cpus)) if a and d else nan
                ),
                "step_cut_periods": step.cut_after_periods if step else None,
            }
        )
    return out


def round_table(
    per_round: Sequence[Mapping[str, ScenarioResult]],
    steps: Sequence[StepResult],
    *,
    allocatable_cpus: float,
) -> list[str]:
    """One line per round: the spread behind the medians the goals are judged on."""
    lines = [
        f"rounds (the goals above use the medians of {len(per_round)} rounds)",
        f"  {'round':>5} {'p99 a':>7} {'p99 d':>7} {'d/a':>6} {'d/c':>6} "
        f"{'batch d/c':>9} {'idle share':>10} {'step cut':>8}",
    ]
    for k, row in enumerate(round_summaries(per_round, steps, allocatable_cpus), start=1):
        cut = row["step_cut_periods"]
        lines.append(
            f"  {k:>5} {_f(row['p99_a_ms']):>7} {_f(row['p99_d_ms']):>7} "
            f"{_f(row['p99_d_vs_a']):>6} {_f(row['p99_d_vs_c']):>6} "
            f"{_f(row['batch_d_vs_c']):>9} {_f(row['idle_share_d']):>10} "
            f"{_f(cut):>8}"
        )
    return lines


def headroom_table(run: ScenarioResult, *, step_at_s: float | None) -> list[str]:
    """The agent's headroom and lend over a run, one row per period."""
    lines = [
        f"headroom over time, {run.title} (one row per period: its last /status reading, "
        "the batch cores since the reading before, the p99 of the requests sent in it)",
        f"  {'t s':>6} {'mode':<8} {'headroom':>8} {'lend':>6} {'quota us':>9} "
        f"{'batch cores':>11} {'p99 ms':>7} {'reqs':>5}  breaches",
    ]
    for i, row in enumerate(run.periods):
        end = run.periods[i + 1].t_s if i + 1 < len(run.periods) else math.inf
        note = ""
        if step_at_s is not None and row.t_s <= step_at_s < end:
            note = f"  <- load x2 at {step_at_s:g} s"
        s = row.sample
        state = (
            f"{s.mode:<8} {s.headroom_cpus:8.2f} {s.reclaim_cpus:6.2f} {s.reclaim_quota_us:9d}"
            if s is not None
            else f"{'-':<8} {'-':>8} {'-':>6} {'-':>9}"
        )
        why = " ".join(s.breaches) if s is not None and s.breaches else ""
        lines.append(
            f"  {row.t_s:6.1f} {state} {_f(row.batch_cores):>11} {_f(row.p99_ms):>7} "
            f"{row.requests:>5}  {why}".rstrip()
            + note
        )
    return lines


def _jsonable(value: object) -> object:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def report_json(
    results: Mapping[str, ScenarioResult],
    step: StepResult | None,
    *,
    machine: Machine,
    opts: Options,
    rounds: int,
) -> object:
    """Every number of the run, JSON-ready (NaN as null)."""
    alone, plain = results.get("a"), results.get("b")
    scenarios: dict[str, object] = {}
    for name, r in results.items():
        entry: dict[str, object] = dataclasses.asdict(r)
        entry["service_cores"], entry["batch_cores"] = r.service_cores, r.batch_cores
        if alone is not None and name != "a":
            entry["ratios"] = dataclasses.asdict(
                ratios(r, alone=alone, plain=plain, allocatable_cpus=machine.allocatable_cpus)
            )
        scenarios[name] = entry
    doc = {
        "options": dataclasses.asdict(opts),
        "machine": {
            "online": str(machine.online),
            "reserved": str(machine.reserved),
            "pool": str(machine.pool),
            "allocatable_cpus": machine.allocatable_cpus,
        },
        "service": {"work_us": WORK_US, "rounds": rounds},
        "static_cpus": opts.static_cpus or machine.allocatable_cpus / 2,
        "scenarios": scenarios,
        "step": dataclasses.asdict(step) if step else None,
        "goals": [
            dataclasses.asdict(g)
            for g in evaluate_goals(results, step, allocatable_cpus=machine.allocatable_cpus)
        ],
    }
    return _jsonable(doc)


def save_plot(
    runs: Sequence[tuple[ScenarioResult, float | None]], path: Path, *, period_s: float
) -> str:
    """Headroom, lend and p99 over time of each (run, load step time or None) as a
    PNG; returns the line to print (saying it was skipped without matplotlib)."""
    try:
        # Imported by name: matplotlib is an optional extra (``.[bench]``).
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install -e '.[bench]')"
    runs = [(r, t) for r, t in runs if r.samples]
    if not runs:
        return "plot skipped: no run under the agent"
    fig, axes = plt.subplots(2, len(runs), figsize=(6 * len(runs), 6), sharex="col", squeeze=False)
    for col, (run, step_at_s) in enumerate(runs):
        top, bottom = axes[0][col], axes[1][col]
        t = [s.t_s for s in run.samples]
        top.step(t, [s.reclaim_cpus for s in run.samples], where="post", lw=2.5, label="lend")
        top.step(t, [s.headroom_cpus for s in run.samples], where="post", ls="--", label="headroom")
        top.set_ylim(bottom=0)
        top.set_title(run.title)
        top.set_ylabel("CPUs")
        # One step per period; the last value repeated at the end so that it shows.
        p99 = [r.p99_ms for r in run.periods]
        bottom.step(
            [r.t_s for r in run.periods] + [run.periods[-1].t_s + period_s],
            [*p99, p99[-1]],
            where="post",
            label="service p99 of the requests sent in the period",
        )
        bottom.set_ylim(bottom=0)
        bottom.set_ylabel("ms")
        bottom.set_xlabel("seconds into the measured window")
        if step_at_s is not None:
            for ax in (top, bottom):
                ax.axvline(step_at_s, color="red", linestyle="--", label="load x2")
        top.legend(loc="best")
        bottom.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot saved to {path}"


def machine_here() -> Machine:
    online = read_cpu_topology().online
    pool = online.difference(RESERVED)
    if not RESERVED.issubset(online) or not len(pool):
        raise SystemExit(f"need CPU 0 to reserve and at least one more; online: {online}")
    return Machine(online=online, reserved=RESERVED, pool=pool)


def titles(opts: Options, machine: Machine) -> dict[str, str]:
    static = opts.static_cpus or machine.allocatable_cpus / 2
    return {
        "a": "(a) alone",
        "b": "(b) + batch, plain CFS",
        "c": f"(c) + batch, static {static:g} CPU",
        "d": "(d) + batch, agent",
        "step": f"step {opts.rate:g}->{2 * opts.rate:g}/s, agent",
    }


def run_round(
    opts: Options, machine: Machine, *, rounds: int | None
) -> tuple[dict[str, ScenarioResult], StepResult, int]:
    """One round: (a), (b), (c), (d) and the load step; returns them and the hash
    rounds per request (calibrated in (a) when ``rounds`` is None)."""
    title = titles(opts, machine)
    results: dict[str, ScenarioResult] = {}
    for name in ("a", "b", "c"):
        print(f"running {title[name]} ...", flush=True)
        results[name], rounds = run_plain(name, title[name], opts, machine, rounds=rounds)
    assert rounds is not None
    print(f"running {title['d']} ...", flush=True)
    results["d"], _ = run_agent(
        "d", title["d"], opts, machine, rounds=rounds, phases=[(opts.rate, opts.duration)]
    )
    print(f"running {title['step']} ...", flush=True)
    half = opts.duration / 2
    run, requests = run_agent(
        "step",
        title["step"],
        opts,
        machine,
        rounds=rounds,
        phases=[(opts.rate, half), (2 * opts.rate, half)],
    )
    step = step_result(
        run,
        requests,
        step_at_s=half,
        rate_before=opts.rate,
        rate_after=2 * opts.rate,
        period_s=opts.period,
    )
    return results, step, rounds


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    machine = machine_here()
    if opts.static_cpus is not None and opts.static_cpus > machine.allocatable_cpus:
        print(
            f"--static-cpus: at most the {machine.allocatable_cpus:g} allocatable CPUs, "
            f"got {opts.static_cpus:g}",
            file=sys.stderr,
        )
        return 2
    per_round: list[dict[str, ScenarioResult]] = []
    steps: list[StepResult] = []
    rounds: int | None = None
    try:
        for k in range(opts.repeat):
            if opts.repeat > 1:
                print(f"round {k + 1} of {opts.repeat}", flush=True)
            results, step, rounds = run_round(opts, machine, rounds=rounds)
            per_round.append(results)
            steps.append(step)
    except (RuntimeError, CgroupError, OSError) as exc:
        print(f"the benchmark could not run: {exc}", file=sys.stderr)
        return 1
    assert rounds is not None
    results = {name: combine_rounds([r[name] for r in per_round]) for name in per_round[0]}
    step = combine_steps(steps)
    print()
    lines = format_report(results, step, machine=machine, opts=opts, rounds=rounds)
    if opts.repeat > 1:
        lines += ["", *round_table(per_round, steps, allocatable_cpus=machine.allocatable_cpus)]
    print("\n".join(lines))
    if opts.json is not None:
        doc = report_json(results, step, machine=machine, opts=opts, rounds=rounds)
        assert isinstance(doc, dict)
        doc["rounds"] = _jsonable(round_summaries(per_round, steps, machine.allocatable_cpus))
        opts.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nnumbers written to {opts.json}")
    if opts.plot is not None:
        runs = [(results["d"], None), (step.run, step.step_at_s)]
        print(save_plot(runs, opts.plot, period_s=opts.period))
    else:
        print("plot skipped: no --plot PATH given")
    return 0


if __name__ == "__main__":
    sys.exit(main())
