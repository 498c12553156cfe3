"""Network isolation: a service's request latency while a reclaimed bulk sender
shares its egress link, under four policies, all measured on this machine in one run.

The bed: two network namespaces of this run's own (``kqb<pid>a`` and ``kqb<pid>b``)
joined by a veth; the egress of A's end is the bottleneck, shaped to
``--link-mbit`` (default 100 Mbit/s) by an HTB tree with the agent's handle. In A
run the service (a TCP request/response server: 64 B request, 1 KiB response) and
the bulk sender (one TCP flow writing as fast as it may); in B the latency client
(open loop, ``--rate`` requests per second over a pool of kept-alive connections)
and the bulk sink. So the service's responses and the bulk data compete for A's
egress, and nothing else does. Every scenario runs the same programs, at the same
rate, for the same measured window after the same warm-up:

(u) alone     the service alone, the link one HTB class at the link rate (a FIFO:
              the queue of a NIC);
(n) FIFO      + the bulk sender, the same single class: no isolation, the bulk
              data fills the queue the responses wait in;
(s) static    + the bulk sender, the agent's three-class tree built in this process
              with the agent's own ``HTBShaper``, ``NftTable`` and
              ``NetClsClassifier``: the service in the shared class (guaranteed its
              ``net_bandwidth`` request), the sender in the reclaimed class with a
              fixed ceil, ``--static-cap`` (default half the link);
(d) agent     ``katalyst-agent --standalone``: the service a ``shared_cores`` pod
              (``net_bandwidth`` 20 Mbit/s), the sender a ``reclaimed_cores`` pod,
              both started by the agent as ``ip netns exec <A> python -c ...``; its
              config shapes A's veth (``network.interfaces`` with ``netns``), and its
              network loop classifies the pods by ``net_cls.classid`` and sets the
              reclaimed cap every ``--period`` from the other classes' measured
              traffic (Heracles). The window starts once the cap has stopped ramping.

Reported for each: the service's p50/p99/p99.9 (ms) and its requests and failures,
the bulk throughput (the sink's received payload, Mbit/s: goodput, a few per cent
below the wire rate the link counts), what crossed the link (the HTB parent
class's byte counter) and its utilization, the reclaimed cap; the ratios against
(u) and (n) and the bulk's share of the spare link (the link minus what the
service sent in (u)); the goals as PASS or MISS (reported, never asserted): under
(d) the p99 within 10 % of (u)'s and the bulk at least 60 % of the spare link;
(d) better than (s) on one of the two and not worse on the other; (d)'s p99 below
(n)'s. For (d), the agent's cap over time from ``GET /status`` (four readings a
period). ``--repeat N`` runs the scenarios N times in interleaved rounds and judges
the goals on the medians.

Fairness and what is measured: the service and the bulk sender run on the CPUs the
agent would give them (all but CPU 0), the client and the sink on CPU 0, in every
scenario (cgroups of this run's own below this process's, or the agent's pods).
A request is timed from the moment the client dispatched it to the last byte of
its response: waiting for a free connection counts (open loop), the client's
timer slack does not (epoll sleeps in whole milliseconds).

Root only, and it changes nothing outside what it creates: the namespaces, the veth
inside them, the HTB trees and nftables tables inside namespace A, cgroups below
this process's own. When the host has no ``net_cls`` hierarchy, the run mounts one
on a temporary folder of its own for its duration (the agent under (d) is pointed
at it with ``network.net_cls_mountpoint``, and so never mounts one at
``/sys/fs/cgroup/net_cls``); it is unmounted at the end. Everything is removed at
the end, also on failure, Ctrl-C or SIGTERM. The hierarchy is the host's one
``net_cls``: a ``katalyst-agent --cleanup`` elsewhere on the host during a run
resets this run's classids too, and its bulk then shows in no class (the ``bulk
cls`` column falls, (s) or (d) look like (n)).

The p99 of a 200 req/s service is a tail of rare stalls: on a small virtual
machine it moves by more than the 10 % goal from one round to the next even with
nothing else running (the vCPUs' wake-up latency); compare scenarios of the same
run, use ``--repeat``, and read the rounds table.

    sudo .venv/bin/python -m bench.net_isolation [--duration 20] [--warmup 3]
        [--link-mbit 100] [--rate 200] [--static-cap MBIT] [--period 1] [--repeat 1]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import posixpath
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import yaml

from agent.enforcement.applier import RECLAIMED_SHARES
from agent.isolation.netcls import NetClsClassifier, find_net_cls
from agent.isolation.network import (
    MINOR,
    RECLAIMED,
    SHARED,
    SYSTEM,
    NetworkConfig,
    class_specs,
)
from agent.isolation.nft import ClassifyRule, NftError, NftTable
from agent.isolation.tc import PARENT_MINOR, ClassSpec, HTBShaper, ShaperError, classid
from agent.standalone.node import RECLAIMED_ROOT
from agent.standalone.runtime import kill_cgroup_tasks, spawn_in_cgroup, stop_processes
from bench.colocation import (
    Goal,
    Latency,
    Machine,
    better_on_one_equal_on_other,
    machine_here,
    median,
    parse_metrics_addr,
    ratio,
)
from examples.standalone.loadgen import Request, percentile
from katalyst.cgroup import (
    CgroupDriver,
    CgroupError,
    CgroupUnsupported,
    HostCgroupFS,
    open_driver,
)
from katalyst.cgroup.fs import CgroupFS
from katalyst.cgroup.layout import Hierarchy
from katalyst.qos import RESOURCE_NET_BANDWIDTH

REPO = Path(__file__).resolve().parent.parent

REQUEST_BYTES = 64
RESPONSE_BYTES = 1024
CONNECTIONS = 32
"""The client's pool of kept-alive connections: a request waits for a free one (and
that wait counts), so the pool is many times the requests in flight at the default
rate, and a slow response never holds up the schedule."""
SERVICE_PORT = 7000
SINK_PORT = 7001
SERVICE_REQUEST_MBIT = 20
"""The service's ``net_bandwidth`` request: the shared class's guaranteed rate under
(s) and (d). Its traffic at the default rate is under 2 Mbit/s."""
BULK_FLOWS = 1
CLIENT_GRACE_S = 2.0
"""After the window, requests still unanswered this long are failures."""
ADDR_A, ADDR_B = "10.250.0.1", "10.250.0.2"
"""The veth's addresses; they exist only inside the run's namespaces."""

GOAL_P99_RATIO = 1.10
GOAL_SPARE_SHARE = 0.60
TOLERANCE = 0.05
"""(d) against (s) and (n): within 5 % counts as equal."""
MAX_CONVERGE_PERIODS = 30
"""Under the agent, the warm-up goes on until the cap has stopped ramping, at most
this many periods more (it ramps 10 % of the link a period from a 1 % floor)."""

TITLES = {
    "u": "(u) service alone",
    "n": "(n) + bulk, one FIFO",
    "s": "(s) + bulk, static cap",
    "d": "(d) + bulk, agent",
}
SCENARIOS = tuple(TITLES)


# ---- the programs of the bed (run with ``python -c``; stdlib only) ------------------------

SERVER = """
import selectors, socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((HOST, PORT))
srv.listen(128)
sel = selectors.DefaultSelector()
sel.register(srv, selectors.EVENT_READ)
reply = b"r" * RESPONSE
pending = {}
def drop(sock):
    sel.unregister(sock)
    pending.pop(sock, None)
    sock.close()
while True:
    for key, _ in sel.select():
        sock = key.fileobj
        if sock is srv:
            conn, _ = srv.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(conn, selectors.EVENT_READ)
            pending[conn] = 0
            continue
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            drop(sock)
            continue
        got = pending[sock] + len(data)
        try:
            while got >= REQUEST:
                got -= REQUEST
                sock.sendall(reply)
        except OSError:
            drop(sock)
            continue
        pending[sock] = got
"""
"""The service: answers every ``REQUEST`` bytes with ``RESPONSE`` bytes, one thread."""

CLIENT = """
import collections, selectors, signal, socket, sys, time
def connect():
    end = time.monotonic() + 30
    while True:
        try:
            s = socket.create_connection((HOST, PORT), timeout=2)
            break
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    return s
idle = collections.deque(connect() for _ in range(CONNECTIONS))
sel = selectors.DefaultSelector()
for s in idle:
    sel.register(s, selectors.EVENT_READ)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(time.monotonic()))
busy, waiting = {}, collections.deque()
request = b"q" * REQUEST
out = sys.stdout
def lost(s):
    sel.unregister(s)
    s.close()
print("ready", flush=True)
interval = 1.0 / RATE
next_t = time.monotonic()
while True:
    now = time.monotonic()
    if not stop:
        while next_t <= now:
            waiting.append(now)
            next_t += interval
    elif now > stop[0] + GRACE or not (busy or waiting):
        break
    while waiting and idle:
        s, t = idle.popleft(), waiting.popleft()
        try:
            s.send(request)
        except OSError:
            lost(s)
            out.write(f"{t:.6f} -\\n")
            continue
        busy[s] = [t, 0]
    timeout = 0.05 if stop else max(0.0, next_t - time.monotonic())
    for key, _ in sel.select(timeout):
        s = key.fileobj
        entry = busy.get(s)
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if entry is None:
            if not data:
                idle.remove(s)
                lost(s)
            continue
        if not data:
            del busy[s]
            lost(s)
            out.write(f"{entry[0]:.6f} -\\n")
            continue
        entry[1] += len(data)
        if entry[1] >= RESPONSE:
            done = time.monotonic()
            del busy[s]
            idle.append(s)
            out.write(f"{entry[0]:.6f} {(done - entry[0]) * 1000:.4f}\\n")
for t in [e[0] for e in busy.values()] + list(waiting):
    out.write(f"{t:.6f} -\\n")
out.flush()
"""
"""The latency client: dispatches a request every ``1/RATE`` s on a free connection
(or queues it until one is free) and prints ``<dispatch time> <ms>`` per request
(``-`` for a failure), both on ``time.monotonic()``, which all processes share; on
SIGTERM it stops dispatching, waits ``GRACE`` s for what is in flight, and exits."""

SINK = """
import signal, socket, threading
counts = []
def drain(conn, slot):
    buf = bytearray(1 << 16)
    with conn:
        while True:
            try:
                n = conn.recv_into(buf)
            except OSError:
                return
            if not n:
                return
            counts[slot] += n
def accept():
    while True:
        conn, _ = srv.accept()
        counts.append(0)
        threading.Thread(target=drain, args=(conn, len(counts) - 1), daemon=True).start()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((HOST, PORT))
srv.listen(16)
signal.signal(signal.SIGUSR1, lambda *_: print(sum(counts), flush=True))
threading.Thread(target=accept, daemon=True).start()
print("ready", flush=True)
while True:
    signal.pause()
"""
"""The bulk sink: reads everything; on SIGUSR1 prints the bytes received so far."""

SENDER = """
import socket, threading, time
def send():
    end = time.monotonic() + 30
    while True:
        try:
            s = socket.create_connection((HOST, PORT))
            break
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)
    chunk = b"x" * 65536
    try:
        while True:
            s.sendall(chunk)
    except OSError:
        pass
threads = [threading.Thread(target=send) for _ in range(FLOWS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""
"""The bulk sender: ``FLOWS`` TCP connections writing 64 KiB at a time until stopped."""


def program(source: str, **values: str | int | float) -> str:
    """``source`` with its upper-case names bound, for ``python -c``."""
    head = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    return head + source


def server_code(host: str, port: int) -> str:
    return program(SERVER, HOST=host, PORT=port, REQUEST=REQUEST_BYTES, RESPONSE=RESPONSE_BYTES)


def client_code(host: str, port: int, rate: float) -> str:
    return program(
        CLIENT,
        HOST=host,
        PORT=port,
        RATE=rate,
        REQUEST=REQUEST_BYTES,
        RESPONSE=RESPONSE_BYTES,
        CONNECTIONS=CONNECTIONS,
        GRACE=CLIENT_GRACE_S,
    )


def sink_code(host: str, port: int) -> str:
    return program(SINK, HOST=host, PORT=port)


def sender_code(host: str, port: int, flows: int = BULK_FLOWS) -> str:
    return program(SENDER, HOST=host, PORT=port, FLOWS=flows)


# ---- results and the pure computations on them --------------------------------------------


@dataclass(frozen=True, slots=True)
class CapSample:
    """One reading of the agent's ``GET /status``: its ``network`` part (the first
    interface) and the sysadvisor's CPU lend (the bulk sender's CPU)."""

    t_s: float
    """Seconds after the measured window started (negative: before)."""
    supported: bool
    classified: int
    mode: str | None
    cap_mbit: float | None
    target_mbit: float | None
    service_mbit: float | None
    """The system and shared classes' traffic the agent measured over its last period."""
    reclaimed_mbit: float | None
    """The reclaimed class's traffic over the agent's last period."""
    reclaim_cpus: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Counters:
    """What the window is measured with, read at its start and at its end."""

    at: float
    """``time.monotonic()``."""
    sink_bytes: int
    """Payload the bulk sink received so far."""
    class_bytes: Mapping[int, int]
    """Bytes through each HTB class of A's veth, by minor (``PARENT_MINOR``: all)."""


@dataclass(frozen=True, slots=True)
class PeriodRow:
    """One agent period of (d)'s window: its last status reading and the latency of
    the requests dispatched in it."""

    t_s: float
    sample: CapSample | None
    p99_ms: float
    requests: int


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """One scenario's measured window."""

    name: str
    title: str
    window_s: float
    latency: Latency
    bulk_mbit: float
    """The bulk sink's goodput, Mbit/s."""
    link_mbit: float
    """Everything that crossed A's shaped egress (the HTB parent class), Mbit/s."""
    service_class_mbit: float
    """The system and shared classes (the service), Mbit/s; NaN where unclassified."""
    reclaimed_class_mbit: float
    """The reclaimed class (the bulk, on the wire), Mbit/s; NaN where unclassified."""
    cap_mbit: float
    """The reclaimed class's ceil: fixed under (s), the median reading under (d); NaN
    where there is none."""
    samples: tuple[CapSample, ...] = ()
    """The agent's status readings over the window (under (d))."""
    periods: tuple[PeriodRow, ...] = ()
    """The window, period by period (under (d))."""


@dataclass(frozen=True, slots=True)
class Ratios:
    """A scenario against (u) and (n); NaN where a baseline is missing or zero."""

    p99_vs_u: float
    p999_vs_u: float
    p99_vs_n: float
    bulk_vs_n: float
    spare_share: float
    """Bulk over the spare link: the link rate minus the service's traffic in (u)."""


def mbit(byte_delta: float, seconds: float) -> float:
    """Mbit/s of ``byte_delta`` bytes over ``seconds``; NaN for no time or a negative
    delta (a counter that went back: the class was recreated)."""
    if not seconds > 0 or byte_delta < 0:
        return math.nan
    return byte_delta * 8 / seconds / 1e6


def class_mbit(before: Counters, after: Counters, minors: Iterable[int]) -> float:
    """The summed throughput of HTB classes ``minors``; NaN when one is missing."""
    total = 0
    for minor in minors:
        if minor not in before.class_bytes or minor not in after.class_bytes:
            return math.nan
        total += after.class_bytes[minor] - before.class_bytes[minor]
    return mbit(total, after.at - before.at)


def window_requests(
    records: Iterable[tuple[float, float | None]], start: float, end: float
) -> list[Request]:
    """The client's records (dispatch time, ms or None) dispatched in ``[start, end)``,
    as requests timed from ``start``."""
    return [
        Request(t - start, math.nan if ms is None else ms, ok=ms is not None)
        for t, ms in records
        if start <= t < end
    ]


def parse_client_line(line: str) -> tuple[float, float | None] | None:
    """``<dispatch time> <ms>`` or ``<dispatch time> -``; None for any other line."""
    parts = line.split()
    if len(parts) != 2:
        return None
    try:
        t = float(parts[0])
        ms = None if parts[1] == "-" else float(parts[1])
    except ValueError:
        return None
    return t, ms


def scenario_result(
    name: str,
    title: str,
    *,
    before: Counters,
    after: Counters,
    requests: Sequence[Request],
    cap_mbit: float = math.nan,
    samples: Sequence[CapSample] = (),
    period_s: float | None = None,
    span_s: float | None = None,
) -> ScenarioResult:
    """The window's numbers; with ``period_s``, also one row per period of its first
    ``span_s`` seconds (default: all of it)."""
    window = after.at - before.at
    periods = (
        per_period(requests, samples, period_s=period_s, span_s=span_s or window)
        if period_s is not None
        else []
    )
    return ScenarioResult(
        name=name,
        title=title,
        window_s=window,
        latency=Latency.of(requests),
        bulk_mbit=mbit(after.sink_bytes - before.sink_bytes, window),
        link_mbit=class_mbit(before, after, [PARENT_MINOR]),
        service_class_mbit=class_mbit(before, after, [MINOR[SYSTEM], MINOR[SHARED]]),
        reclaimed_class_mbit=class_mbit(before, after, [MINOR[RECLAIMED]]),
        cap_mbit=cap_mbit,
        samples=tuple(samples),
        periods=tuple(periods),
    )


def spare_mbit(alone: ScenarioResult, link_mbit: float) -> float:
    """What (u) leaves of the link: the link rate minus everything the service sent."""
    return link_mbit - alone.link_mbit


def ratios(
    result: ScenarioResult,
    *,
    alone: ScenarioResult,
    fifo: ScenarioResult | None,
    link_mbit: float,
) -> Ratios:
    return Ratios(
        p99_vs_u=ratio(result.latency.p99, alone.latency.p99),
        p999_vs_u=ratio(result.latency.p999, alone.latency.p999),
        p99_vs_n=ratio(result.latency.p99, fifo.latency.p99) if fifo else math.nan,
        bulk_vs_n=ratio(result.bulk_mbit, fifo.bulk_mbit) if fifo else math.nan,
        spare_share=ratio(result.bulk_mbit, spare_mbit(alone, link_mbit)),
    )


def evaluate_goals(
    results: Mapping[str, ScenarioResult], *, link_mbit: float, tolerance: float = TOLERANCE
) -> list[Goal]:
    """The issue's goals, each met, missed or not measurable."""
    u, n, s, d = (results.get(k) for k in SCENARIOS)
    goals: list[Goal] = []
    if u and d:
        r = ratio(d.latency.p99, u.latency.p99)
        goals.append(
            Goal(
                f"(d) p99 within {GOAL_P99_RATIO - 1:.0%} of (u)",
                f"p99 (d)/(u) = {r:.2f} (goal <= {GOAL_P99_RATIO:.2f})",
                None if math.isnan(r) else r <= GOAL_P99_RATIO,
            )
        )
        spare = spare_mbit(u, link_mbit)
        share = ratio(d.bulk_mbit, spare)
        goals.append(
            Goal(
                f"(d) bulk gets >= {GOAL_SPARE_SHARE:.0%} of the spare link",
                f"{d.bulk_mbit:.1f} of {spare:.1f} Mbit/s = {share:.2f} "
                f"(goal >= {GOAL_SPARE_SHARE:.2f})",
                None if math.isnan(share) else share >= GOAL_SPARE_SHARE,
            )
        )
    if s and d:
        goals.append(
            Goal(
                f"(d) better than (s) on p99 or bulk, equal (+-{tolerance:.0%}) or better "
                "on the other",
                f"p99 (d)/(s) = {ratio(d.latency.p99, s.latency.p99):.2f}, "
                f"bulk (d)/(s) = {ratio(d.bulk_mbit, s.bulk_mbit):.2f}",
                better_on_one_equal_on_other(
                    p99=d.latency.p99,
                    p99_ref=s.latency.p99,
                    batch=d.bulk_mbit,
                    batch_ref=s.bulk_mbit,
                    tolerance=tolerance,
                ),
            )
        )
    if n and d:
        r = ratio(d.latency.p99, n.latency.p99)
        goals.append(
            Goal(
                f"(d) p99 below (n)'s by more than {tolerance:.0%}",
                f"p99 (d)/(n) = {r:.2f}, bulk (d)/(n) = {ratio(d.bulk_mbit, n.bulk_mbit):.2f}",
                None if math.isnan(r) else r < 1 - tolerance,
            )
        )
    return goals


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def sample_from_status(doc: object, t_s: float) -> CapSample | None:
    """The first interface of the ``network`` part of a ``/status`` document (and the
    sysadvisor's lend); None when the document has no network part."""
    if not isinstance(doc, dict):
        return None
    net = doc.get("network")
    if not isinstance(net, dict):
        return None
    interfaces = net.get("interfaces")
    iface = interfaces[0] if isinstance(interfaces, list) and interfaces else {}
    if not isinstance(iface, dict):
        return None
    through = iface.get("throughput_mbit")
    adv = doc.get("sysadvisor")
    mode = iface.get("mode")
    error = iface.get("error") or net.get("classify_error")
    classified = net.get("classified_containers")
    return CapSample(
        t_s=t_s,
        supported=net.get("supported") is True,
        classified=classified if isinstance(classified, int) else 0,
        mode=mode if isinstance(mode, str) else None,
        cap_mbit=_num(iface.get("reclaimed_cap_mbit")),
        target_mbit=_num(iface.get("cap_target_mbit")),
        service_mbit=_num(iface.get("service_mbit")),
        reclaimed_mbit=_num(through.get(RECLAIMED)) if isinstance(through, dict) else None,
        reclaim_cpus=_num(adv.get("reclaim_cpus")) if isinstance(adv, dict) else None,
        error=str(error) if error else None,
    )


def converged(sample: CapSample | None, *, link_mbit: float, pods: int = 2) -> bool:
    """Whether the agent is shaping and classifying every pod, and its cap has stopped
    ramping (normal mode, the cap at its target)."""
    # Before its first measurement the agent holds the cap at the floor and reports
    # it as the target: not converged.
    return (
        sample is not None
        and sample.supported
        and sample.classified >= pods
        and sample.mode == "normal"
        and sample.service_mbit is not None
        and sample.cap_mbit is not None
        and sample.target_mbit is not None
        and abs(sample.cap_mbit - sample.target_mbit) <= 0.01 * link_mbit
    )


def per_period(
    requests: Sequence[Request], samples: Sequence[CapSample], *, period_s: float, span_s: float
) -> list[PeriodRow]:
    """One row per period of the window: the last status reading in it and the p99 of
    the requests dispatched in it."""
    rows: list[PeriodRow] = []
    for k in range(max(1, math.ceil(span_s / period_s - 1e-9))):
        lo, hi = k * period_s, (k + 1) * period_s
        sent = [r.latency_ms for r in requests if lo <= r.sent_s < hi and r.ok]
        inside = [s for s in samples if lo <= s.t_s < hi]
        rows.append(PeriodRow(lo, inside[-1] if inside else None, percentile(sent, 99), len(sent)))
    return rows


def _typical(items: Sequence[ScenarioResult]) -> ScenarioResult:
    """The round whose p99 is the (lower) median; NaN sorts last."""
    ordered = sorted(
        items,
        key=lambda r: (
            math.isnan(r.latency.p99),
            0.0 if math.isnan(r.latency.p99) else r.latency.p99,
        ),
    )
    return ordered[(len(ordered) - 1) // 2]


def combine_rounds(runs: Sequence[ScenarioResult]) -> ScenarioResult:
    """One scenario over several rounds: the median of each number, the requests
    summed, the status readings of the round whose p99 is the median."""
    if not runs:
        raise ValueError("combine_rounds: no rounds")
    if len(runs) == 1:
        return runs[0]
    typical = _typical(runs)
    return dataclasses.replace(
        typical,
        latency=Latency.median([r.latency for r in runs]),
        bulk_mbit=median(r.bulk_mbit for r in runs),
        link_mbit=median(r.link_mbit for r in runs),
        service_class_mbit=median(r.service_class_mbit for r in runs),
        reclaimed_class_mbit=median(r.reclaimed_class_mbit for r in runs),
        cap_mbit=median(r.cap_mbit for r in runs),
    )


# ---- options ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    duration: float = 20.0
    """Measured seconds per scenario."""
    warmup: float = 3.0
    """Unmeasured seconds of load first (under the agent, then until the cap settles)."""
    link_mbit: int = 100
    """The link rate A's egress is shaped to, Mbit/s."""
    rate: float = 200.0
    """The service's requests per second."""
    static_cap: float | None = None
    """(s)'s reclaimed ceil, Mbit/s; None: half the link."""
    period: float = 1.0
    """The agent's ``network.period_s``."""
    repeat: int = 1
    json: Path | None = None

    @property
    def static_cap_mbit(self) -> float:
        return self.static_cap if self.static_cap is not None else self.link_mbit / 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.net_isolation", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--duration", type=float, metavar="S", default=20.0, help="measured seconds (default 20)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        metavar="S",
        default=3.0,
        help="unmeasured seconds first (default 3)",
    )
    parser.add_argument(
        "--link-mbit",
        type=int,
        metavar="MBIT",
        default=100,
        help="the link rate A's egress is shaped to, Mbit/s (default 100)",
    )
    parser.add_argument(
        "--rate", type=float, metavar="RPS", default=200.0, help="service requests per second "
        "(default 200)",
    )  # fmt: skip
    parser.add_argument(
        "--static-cap",
        type=float,
        metavar="MBIT",
        default=None,
        help="(s)'s fixed reclaimed cap, Mbit/s (default half the link)",
    )
    parser.add_argument(
        "--period",
        type=float,
        metavar="S",
        default=1.0,
        help="the agent's network.period_s (default 1)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        default=1,
        help="run every scenario N times, in interleaved rounds, and judge the goals on "
        "the medians (default 1)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every number here")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """The options, checked; a bad one exits with status 2 and a message naming it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("duration", "warmup", "rate", "static_cap", "period"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            parser.error(f"--{name.replace('_', '-')}: must be a finite number, got {value}")
    if not 0.1 <= args.period <= 60:
        parser.error(f"--period: must be between 0.1 and 60 seconds, got {args.period:g}")
    if args.duration < max(1.0, 2 * args.period):
        parser.error(
            f"--duration: must be at least 1 s and 2 periods ({2 * args.period:g} s), "
            f"got {args.duration:g}"
        )
    if args.warmup < 0:
        parser.error(f"--warmup: must be >= 0, got {args.warmup:g}")
    if not 1 <= args.link_mbit <= 10_000:
        parser.error(f"--link-mbit: must be between 1 and 10000 Mbit/s, got {args.link_mbit}")
    if not 0 < args.rate <= 5000:
        parser.error(f"--rate: must be > 0 and <= 5000 requests per second, got {args.rate:g}")
    if args.static_cap is not None and not 0.1 <= args.static_cap <= args.link_mbit:
        parser.error(
            f"--static-cap: must be between 0.1 Mbit/s and the link ({args.link_mbit} "
            f"Mbit/s), got {args.static_cap:g}"
        )
    if not 1 <= args.repeat <= 20:
        parser.error(f"--repeat: must be between 1 and 20 rounds, got {args.repeat}")
    if args.json is not None and not args.json.resolve().parent.is_dir():
        parser.error(f"--json: the folder of {args.json} does not exist")
    return Options(
        duration=args.duration,
        warmup=args.warmup,
        link_mbit=args.link_mbit,
        rate=args.rate,
        static_cap=args.static_cap,
        period=args.period,
        repeat=args.repeat,
        json=args.json,
    )


def preflight(
    *, euid: int, which: Callable[[str], str | None], agent: Path | None = None
) -> str | None:
    """Why the benchmark cannot run here, or None (``agent``: the ``katalyst-agent``
    script, by default beside this Python)."""
    if euid != 0:
        return "the network isolation benchmark needs root (network namespaces, tc, nftables)"
    tools = (
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("nsenter", "util-linux"),
        ("mount", "util-linux"),
    )
    for tool, package in tools:
        if which(tool) is None:
            return f"{tool} is not installed (package {package})"
    agent = agent or Path(sys.executable).with_name("katalyst-agent")
    if not agent.exists():
        return f"{agent} is missing: install the project into this environment (pip install -e .)"
    return None


# ---- the bed ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bed:
    """Two namespaces joined by a veth: A (``addr_a``) sends to B (``addr_b``)."""

    ns_a: str
    ns_b: str
    dev_a: str
    dev_b: str
    addr_a: str = ADDR_A
    addr_b: str = ADDR_B

    @classmethod
    def named(cls, tag: str) -> Bed:
        return cls(ns_a=f"{tag}a", ns_b=f"{tag}b", dev_a=f"{tag}va"[-15:], dev_b=f"{tag}vb"[-15:])

    def exec_argv(self, ns: str, argv: Sequence[str], *, ip: str = "ip") -> list[str]:
        return [ip, "netns", "exec", ns, *argv]

    def shaper(self) -> HTBShaper:
        return HTBShaper(self.dev_a, netns=self.ns_a, default_minor=MINOR[SYSTEM])

    def nft(self) -> NftTable:
        return NftTable(netns=self.ns_a)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@contextlib.contextmanager
def make_bed(tag: str) -> Iterator[Bed]:
    """The namespaces and the veth; deleted on exit (the veth, its qdiscs and the
    namespaces' nftables tables go with them)."""
    bed = Bed.named(tag)
    made: list[str] = []
    try:
        for ns in (bed.ns_a, bed.ns_b):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("-n", bed.ns_a, "link", "add", bed.dev_a, "type", "veth", "peer", "name", bed.dev_b)
        _ip("-n", bed.ns_a, "link", "set", bed.dev_b, "netns", bed.ns_b)
        for ns, dev, addr in ((bed.ns_a, bed.dev_a, bed.addr_a), (bed.ns_b, bed.dev_b, bed.addr_b)):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield bed
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20, check=False)


def _remove_tree(fs: CgroupFS, top: str, root: str) -> None:
    """Remove the cgroup directory ``top`` and everything below it, deepest first;
    tasks still inside go back to the hierarchy's ``root`` first."""
    if not fs.is_dir(top):
        return
    stack, order = [top], []
    while stack:
        path = stack.pop()
        order.append(path)
        with contextlib.suppress(CgroupError):
            stack.extend(
                p for name in fs.listdir(path) if fs.is_dir(p := posixpath.join(path, name))
            )
    for path in reversed(order):
        with contextlib.suppress(CgroupError):
            for pid in fs.read_text(posixpath.join(path, "cgroup.procs")).split():
                with contextlib.suppress(CgroupError):
                    fs.write_text(posixpath.join(root, "cgroup.procs"), pid)
            fs.rmdir(path)


@contextlib.contextmanager
def net_cls_mount(tag: str) -> Iterator[Hierarchy]:
    """The host's ``net_cls`` hierarchy, or one mounted on a temporary folder for the
    run (unmounted at the end, with what was left below it)."""
    fs = HostCgroupFS()
    found = find_net_cls(fs)
    if found is not None:
        yield found
        return
    where = tempfile.mkdtemp(prefix=f"{tag}netcls")
    try:
        done = subprocess.run(
            ["mount", "-t", "cgroup", "-o", "net_cls", f"{tag}netcls", where],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cannot mount net_cls on {where}: {done.stderr.strip()}")
        try:
            hier = find_net_cls(fs)
            if hier is None or hier.mountpoint != where:
                raise RuntimeError(f"net_cls was mounted on {where} but is not in mountinfo")
            yield hier
        finally:
            for name in fs.listdir(where):
                _remove_tree(fs, posixpath.join(where, name), where)
            subprocess.run(["umount", where], capture_output=True, timeout=20, check=False)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(where)


def fifo_tree(link_mbit: float) -> list[ClassSpec]:
    """(u) and (n): one class at the link rate, which every packet goes to."""
    return [ClassSpec(MINOR[SYSTEM], link_mbit, link_mbit, 0)]


def static_tree(
    link_mbit: float, *, cap_mbit: float, shared_mbit: float, config: NetworkConfig | None = None
) -> list[ClassSpec]:
    """(s): the classes the agent's loop writes (:func:`class_specs`), with the
    reclaimed ceil fixed at ``cap_mbit`` instead of the measured Heracles cap."""
    return class_specs(
        link_mbit,
        guaranteed={SHARED: shared_mbit},
        cap_mbit=cap_mbit,
        config=config or NetworkConfig(),
    )


def classify_rules() -> list[ClassifyRule]:
    """The agent's nftables rules: each class id's sockets to its class."""
    return [ClassifyRule(classid(MINOR[c])) for c in (SYSTEM, SHARED, RECLAIMED)]


class _Program:
    """A program of the bed: its process and the lines it printed (read by a thread,
    so that the pipe never fills)."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode(errors="replace").rstrip("\n"))
        self._lines.put(None)

    def _failed(self, what: str) -> RuntimeError:
        with contextlib.suppress(OSError):
            tail = self.log.read_text(errors="replace").strip().splitlines()[-8:]
            what += ("; its log ends:\n    " + "\n    ".join(tail)) if tail else ""
        return RuntimeError(f"{self.name}: {what}")

    def line(self, timeout_s: float) -> str:
        try:
            got = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise self._failed(f"printed nothing in {timeout_s:g} s") from None
        if got is None:
            raise self._failed(f"exited with status {self.proc.wait()}")
        return got

    def rest(self, timeout_s: float) -> list[str]:
        """Every line until the program exits (or ``timeout_s`` passes)."""
        self._reader.join(timeout_s)
        out: list[str] = []
        while True:
            try:
                got = self._lines.get_nowait()
            except queue.Empty:
                return out
            if got is not None:
                out.append(got)


def _spawn(
    driver: CgroupDriver, cgroup: str, name: str, argv: Sequence[str], work: Path
) -> _Program:
    log = work / f"{name}.log"
    with log.open("wb") as err:
        proc = spawn_in_cgroup(driver, cgroup, argv, stdout=subprocess.PIPE, stderr=err)
    return _Program(name, proc, log)


class _Sink:
    def __init__(self, prog: _Program) -> None:
        self.prog = prog
        prog.line(30)  # "ready"

    def received(self) -> int:
        os.kill(self.prog.proc.pid, signal.SIGUSR1)
        return int(self.prog.line(5))


def _read_counters(sink: _Sink, shaper: HTBShaper) -> Counters:
    sink_bytes = sink.received()
    at = time.monotonic()
    classes = {minor: s.bytes for minor, s in shaper.stats().items()}
    return Counters(at=at, sink_bytes=sink_bytes, class_bytes=classes)


def _client_records(client: _Program) -> list[tuple[float, float | None]]:
    """Stop the client (it reports what is still in flight as failures) and parse it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(client.proc.pid, signal.SIGTERM)
    lines = client.rest(CLIENT_GRACE_S + 5)
    return [r for r in (parse_client_line(line) for line in lines) if r is not None]


@dataclass
class _Run:
    """What one scenario started; stopped and removed by :meth:`close`."""

    bed: Bed
    driver: CgroupDriver
    work: Path
    procs: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)

    def spawn(self, cgroup: str, name: str, ns: str, code: str) -> _Program:
        argv = self.bed.exec_argv(ns, [sys.executable, "-c", code])
        prog = _spawn(self.driver, cgroup, name, argv, self.work)
        self.procs.append(prog.proc)
        return prog

    def close(self) -> None:
        stop_processes(self.procs)
        _clean_cgroups(self.driver)
        shutil.rmtree(self.work, ignore_errors=True)


def _walk(driver: CgroupDriver, cgroup: str = "") -> list[str]:
    try:
        names = driver.children(cgroup)
    except CgroupError:
        return []
    below = [f"{cgroup}/{n}" if cgroup else n for n in names]
    return [cgroup] + [c for b in below for c in _walk(driver, b)]


def _clean_cgroups(driver: CgroupDriver) -> None:
    """Kill what is left in the run's cgroups, deepest first, and remove them."""
    if not driver.exists(""):
        return
    for cgroup in reversed(_walk(driver)):
        kill_cgroup_tasks(driver, cgroup)
    driver.remove("")


def _new_run(bed: Bed, base: str, machine: Machine) -> _Run:
    driver = open_driver(HostCgroupFS(), base=base, below_own_cgroup=True)
    run = _Run(bed=bed, driver=driver, work=Path(tempfile.mkdtemp(prefix="kqb")))
    try:
        driver.create("client")
        driver.set_cpuset("client", cpus=machine.reserved)
    except BaseException:
        run.close()
        raise
    return run


def _start_client(run: _Run, rate: float) -> _Program:
    client = run.spawn("client", "client", run.bed.ns_b, client_code(ADDR_A, SERVICE_PORT, rate))
    ready = client.line(40)
    if ready != "ready":
        raise RuntimeError(f"client: expected 'ready', got {ready!r}")
    return client


def _unshape(bed: Bed) -> None:
    """Remove the tree and the table from A's veth (the agent leaves them when it
    stops: isolation holds while it restarts)."""
    with contextlib.suppress(ShaperError):
        bed.shaper().remove()
    with contextlib.suppress(NftError):
        bed.nft().remove()


# ---- (u), (n), (s): trees and cgroups of this run's own -------------------------------------


def _reclaimed_cpu(driver: CgroupDriver) -> None:
    """The bulk sender's CPU as the standalone node gives reclaimed pods (SCHED_IDLE,
    or the minimum weight where the kernel has no ``cpu.idle``), so that the
    scenarios differ in their network policy only (the agent adds its quota)."""
    try:
        driver.set_cpu_idle(RECLAIMED_ROOT, True)
    except CgroupUnsupported:
        driver.set_cpu_shares(RECLAIMED_ROOT, RECLAIMED_SHARES)


def run_plain(
    name: str, title: str, *, opts: Options, bed: Bed, hier: Hierarchy, machine: Machine
) -> ScenarioResult:
    run = _new_run(bed, f"kqbnet-{os.getpid()}-{name}", machine)
    classifier: NetClsClassifier | None = None
    try:
        bulk = f"{RECLAIMED_ROOT}/bulk"
        for cgroup in ("service", bulk):
            run.driver.create(cgroup)
            run.driver.set_cpuset(cgroup, cpus=machine.pool)
        _reclaimed_cpu(run.driver)
        shaper = bed.shaper()
        if name == "s":
            cap = opts.static_cap_mbit
            shaper.ensure(
                opts.link_mbit,
                static_tree(opts.link_mbit, cap_mbit=cap, shared_mbit=SERVICE_REQUEST_MBIT),
            )
            bed.nft().ensure(classify_rules())
        else:
            cap = math.nan
            shaper.ensure(opts.link_mbit, fifo_tree(opts.link_mbit))
        sink = _Sink(run.spawn("client", "sink", bed.ns_b, sink_code(ADDR_B, SINK_PORT)))
        run.spawn("service", "service", bed.ns_a, server_code(ADDR_A, SERVICE_PORT))
        if name != "u":
            run.spawn(bulk, "bulk", bed.ns_a, sender_code(ADDR_B, SINK_PORT))
        if name == "s":
            # Tagging moves the tasks and re-tags their sockets (the kernel updates a
            # task's open sockets when its net_cls cgroup or classid changes).
            classifier = NetClsClassifier(run.driver, hier)
            classifier.sync({"service": classid(MINOR[SHARED]), bulk: classid(MINOR[RECLAIMED])})
        client = _start_client(run, opts.rate)
        time.sleep(opts.warmup)
        before = _read_counters(sink, shaper)
        time.sleep(opts.duration)
        after = _read_counters(sink, shaper)
        records = _client_records(client)
        return scenario_result(
            name,
            title,
            before=before,
            after=after,
            requests=window_requests(records, before.at, after.at),
            cap_mbit=cap,
        )
    finally:
        run.close()
        if classifier is not None:
            classifier.cleanup()
        _unshape(bed)


# ---- (d): the agent -----------------------------------------------------------------------


def agent_settings(
    bed: Bed, *, link_mbit: int, period_s: float, net_cls_mountpoint: str
) -> dict[str, Any]:
    """The agent's config file: A's veth shaped in its namespace, traffic classified
    by ``net_cls`` as under (s) (``auto`` would pick cgroup v2 rules on a v2 host),
    IO isolation off (there is no disk traffic to isolate)."""
    return {
        "network": {
            "interfaces": [{"name": bed.dev_a, "speed_mbit": link_mbit, "netns": bed.ns_a}],
            "period_s": period_s,
            "classify": "net_cls",
            "net_cls_mountpoint": net_cls_mountpoint,
        },
        "io": {"enabled": False},
    }


def manifests(bed: Bed, *, python: str, ip: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The service (``shared_cores``, asking for ``SERVICE_REQUEST_MBIT``) and the bulk
    sender (``reclaimed_cores``) as pods whose commands run in namespace A."""
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
                    "command": bed.exec_argv(
                        bed.ns_a, [python, "-c", server_code(bed.addr_a, SERVICE_PORT)], ip=ip
                    ),
                    "resources": {
                        "requests": {
                            "cpu": "1",
                            "memory": "128Mi",
                            RESOURCE_NET_BANDWIDTH: str(SERVICE_REQUEST_MBIT),
                        }
                    },
                }
            ]
        },
    }
    bulk = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "bulk-sender",
            "namespace": "batch",
            "annotations": {"katalyst.kubewharf.io/qos_level": "reclaimed_cores"},
        },
        "spec": {
            "containers": [
                {
                    "name": "send",
                    "command": bed.exec_argv(
                        bed.ns_a, [python, "-c", sender_code(bed.addr_b, SINK_PORT)], ip=ip
                    ),
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
    return service, bulk


def _status(addr: str) -> object:
    with urllib.request.urlopen(f"http://{addr}/status", timeout=2) as response:
        return json.loads(response.read())


def _sample(addr: str, t_s: float) -> CapSample | None:
    try:
        return sample_from_status(_status(addr), t_s)
    except (OSError, ValueError):
        return None


def run_agent(
    name: str, title: str, *, opts: Options, bed: Bed, hier: Hierarchy, machine: Machine
) -> ScenarioResult:
    pid = os.getpid()
    run = _new_run(bed, f"kqbnet-{pid}-{name}", machine)
    root = f"kqbnet-{pid}-{name}-agent"
    agent_driver = open_driver(HostCgroupFS(), base=root, below_own_cgroup=True)
    work = run.work
    folder, state, config = work / "pods", work / "state", work / "agent.yaml"
    folder.mkdir()
    config.write_text(
        yaml.safe_dump(
            agent_settings(
                bed,
                link_mbit=opts.link_mbit,
                period_s=opts.period,
                net_cls_mountpoint=hier.mountpoint,
            )
        )
    )
    agent: subprocess.Popen[bytes] | None = None
    log_path = work / "agent.log"
    failed, interrupted = True, False
    try:
        sink = _Sink(run.spawn("client", "sink", bed.ns_b, sink_code(ADDR_B, SINK_PORT)))
        service, bulk = manifests(bed, python=sys.executable, ip=shutil.which("ip") or "ip")
        (folder / "latency-service.yaml").write_text(yaml.safe_dump(service))
        (folder / "bulk-sender.yaml").write_text(yaml.safe_dump(bulk))
        agent_cmd = [
            str(Path(sys.executable).with_name("katalyst-agent")),
            "--standalone", str(folder),
            "--state-dir", str(state),
            "--cgroup-root", root,
            "--metrics-addr", "127.0.0.1:0",
            "--config", str(config),
        ]  # fmt: skip
        with log_path.open("wb") as log:
            agent = subprocess.Popen(
                agent_cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
            )
        found: str | None = None
        end = time.monotonic() + 30
        while found is None and time.monotonic() < end and agent.poll() is None:
            found = parse_metrics_addr(log_path.read_text(errors="replace"))
            time.sleep(0.1)
        if found is None:
            raise RuntimeError("the agent did not report its metrics address")
        addr: str = found
        client = _start_client(run, opts.rate)
        time.sleep(opts.warmup)
        last: CapSample | None = None
        for _ in range(MAX_CONVERGE_PERIODS):
            last = _sample(addr, 0.0)
            if converged(last, link_mbit=opts.link_mbit):
                break
            time.sleep(opts.period)
        else:
            print(
                f"  the agent's cap did not settle in {MAX_CONVERGE_PERIODS} periods "
                f"(last reading: {last}); measuring anyway",
                file=sys.stderr,
            )
        shaper = bed.shaper()
        samples: list[CapSample] = []
        before = _read_counters(sink, shaper)
        end = before.at + opts.duration
        while (now := time.monotonic()) < end:
            sample = _sample(addr, now - before.at)
            if sample is not None:
                samples.append(sample)
            time.sleep(max(0.0, min(opts.period / 4, end - time.monotonic())))
        after = _read_counters(sink, shaper)
        records = _client_records(client)
        caps = [s.cap_mbit for s in samples if s.cap_mbit is not None]
        result = scenario_result(
            name,
            title,
            before=before,
            after=after,
            requests=window_requests(records, before.at, after.at),
            cap_mbit=median(caps),
            samples=samples,
            period_s=opts.period,
            span_s=opts.duration,
        )
        failed = False
        return result
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        status: int | None = None
        if agent is not None:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
            try:
                status = agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                agent.kill()
                status = agent.wait()
        if (failed and not interrupted) or status:
            with contextlib.suppress(OSError):
                tail = log_path.read_text(errors="replace").splitlines()[-25:]
                print(f"agent ({name}) exited with status {status}; its log ends:", file=sys.stderr)
                print("\n".join("  " + line for line in tail), file=sys.stderr)
        _clean_cgroups(agent_driver)
        # The agent's classifier made the pods' net_cls directories below the mirror
        # of its cgroup root and removes them as its pods go; should it not have
        # (killed, or stopped before its last pass), they go here.
        with contextlib.suppress(CgroupError):
            mirror = NetClsClassifier(agent_driver, hier).path_for("")
            _remove_tree(agent_driver.fs, mirror, hier.mountpoint)
        run.close()
        _unshape(bed)


# ---- the report ---------------------------------------------------------------------------


def _f(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def titles(opts: Options) -> dict[str, str]:
    out = dict(TITLES)
    out["s"] = f"(s) + bulk, static {opts.static_cap_mbit:g} Mbit"
    return out


def format_report(results: Mapping[str, ScenarioResult], *, bed: Bed, opts: Options) -> list[str]:
    """The plain-text report: scenarios, ratios, goals, the agent's cap over time."""
    link = opts.link_mbit
    lines = [
        f"network isolation: {bed.dev_a} (netns {bed.ns_a}) -> {bed.dev_b} (netns "
        f"{bed.ns_b}), A's egress shaped to {link} Mbit/s",
        f"service: {opts.rate:g} req/s open loop, {REQUEST_BYTES} B request / "
        f"{RESPONSE_BYTES} B response over {CONNECTIONS} connections; bulk: {BULK_FLOWS} "
        f"TCP flow(s); {opts.duration:g} s measured per scenario after {opts.warmup:g} s "
        f"of warm-up; agent network.period_s {opts.period:g}"
        + (f"; every number the median of {opts.repeat} rounds" if opts.repeat > 1 else ""),
        "",
        f"  {'scenario':<28} {'p50 ms':>7} {'p99 ms':>7} {'p99.9':>7} {'reqs':>6} {'err':>4} "
        f"{'bulk Mbit':>9} {'link Mbit':>9} {'util %':>6} {'svc cls':>7} {'bulk cls':>8} "
        f"{'cap':>6}",
    ]
    for r in results.values():
        lines.append(
            f"  {r.title:<28} {_f(r.latency.p50, '.3f'):>7} {_f(r.latency.p99, '.3f'):>7} "
            f"{_f(r.latency.p999, '.3f'):>7} {r.latency.requests:>6} {r.latency.errors:>4} "
            f"{_f(r.bulk_mbit, '.1f'):>9} {_f(r.link_mbit, '.1f'):>9} "
            f"{_f(100 * r.link_mbit / link, '.1f'):>6} {_f(r.service_class_mbit, '.1f'):>7} "
            f"{_f(r.reclaimed_class_mbit, '.1f'):>8} {_f(r.cap_mbit, '.1f'):>6}"
        )
    lines.append(
        "  (bulk: the sink's goodput; link: all A sent, on the wire; svc/bulk cls: the "
        "service's and the reclaimed HTB classes; cap: the reclaimed ceil, Mbit/s)"
    )
    alone = results.get("u")
    if alone is not None:
        lines += [
            "",
            f"  {'ratios':<28} {'p99/u':>7} {'p99.9/u':>7} {'p99/n':>7} {'bulk/n':>7} "
            f"{'bulk / spare':>12}",
        ]
        for r in results.values():
            if r.name == "u":
                continue
            x = ratios(r, alone=alone, fifo=results.get("n"), link_mbit=link)
            lines.append(
                f"  {r.title:<28} {_f(x.p99_vs_u):>7} {_f(x.p999_vs_u):>7} {_f(x.p99_vs_n):>7} "
                f"{_f(x.bulk_vs_n):>7} {_f(x.spare_share):>12}"
            )
        lines.append(
            f"  spare = {link} Mbit/s link - {_f(alone.link_mbit)} Mbit/s the service sent in "
            f"(u) = {_f(spare_mbit(alone, link))} Mbit/s"
        )
    lines += ["", "goals (reported, not asserted)"]
    for g in evaluate_goals(results, link_mbit=link):
        verdict = "n/a " if g.met is None else ("PASS" if g.met else "MISS")
        lines.append(f"  {verdict}  {g.text}: {g.measured}")
    d = results.get("d")
    if d is not None and d.periods:
        lines += ["", *cap_table(d)]
    return lines


def cap_table(run: ScenarioResult) -> list[str]:
    """The agent's reclaimed cap over (d)'s window, one row per period."""
    lines = [
        f"the agent's cap over time, {run.title} (one row per period: its last /status "
        "reading, Mbit/s, and the p99 of the requests dispatched in the period)",
        f"  {'t s':>6} {'mode':<8} {'cap':>6} {'target':>6} {'service':>7} {'reclaimed':>9} "
        f"{'lend CPU':>8} {'p99 ms':>7} {'reqs':>5}  error",
    ]
    for row in run.periods:
        s = row.sample
        state = (
            f"{s.mode or '-':<8} {_f(s.cap_mbit, '.1f'):>6} {_f(s.target_mbit, '.1f'):>6} "
            f"{_f(s.service_mbit):>7} {_f(s.reclaimed_mbit, '.1f'):>9} {_f(s.reclaim_cpus):>8}"
            if s is not None
            else f"{'-':<8} {'-':>6} {'-':>6} {'-':>7} {'-':>9} {'-':>8}"
        )
        error = s.error if s is not None and s.error else ""
        p99 = _f(row.p99_ms, ".3f")
        lines.append(f"  {row.t_s:6.1f} {state} {p99:>7} {row.requests:>5}  {error}".rstrip())
    return lines


def round_summaries(
    per_round: Sequence[Mapping[str, ScenarioResult]], *, link_mbit: float
) -> list[dict[str, float]]:
    """Each round's key numbers: the p99s of (u) and (d), (d) against (u), (s) and (n),
    and (d)'s share of the spare link."""
    out: list[dict[str, float]] = []
    nan = math.nan
    for results in per_round:
        u, n, s, d = (results.get(k) for k in SCENARIOS)
        out.append(
            {
                "p99_u_ms": u.latency.p99 if u else nan,
                "p99_d_ms": d.latency.p99 if d else nan,
                "p99_d_vs_u": ratio(d.latency.p99, u.latency.p99) if u and d else nan,
                "p99_d_vs_s": ratio(d.latency.p99, s.latency.p99) if s and d else nan,
                "p99_d_vs_n": ratio(d.latency.p99, n.latency.p99) if n and d else nan,
                "bulk_d_vs_s": ratio(d.bulk_mbit, s.bulk_mbit) if s and d else nan,
                "spare_share_d": (ratio(d.bulk_mbit, spare_mbit(u, link_mbit)) if u and d else nan),
            }
        )
    return out


def round_table(
    per_round: Sequence[Mapping[str, ScenarioResult]], *, link_mbit: float
) -> list[str]:
    """One line per round: the spread behind the medians the goals are judged on."""
    lines = [
        f"rounds (the goals above use the medians of {len(per_round)} rounds)",
        f"  {'round':>5} {'p99 u':>7} {'p99 d':>7} {'d/u':>6} {'d/s':>6} {'d/n':>6} "
        f"{'bulk d/s':>8} {'spare share':>11}",
    ]
    for k, row in enumerate(round_summaries(per_round, link_mbit=link_mbit), start=1):
        lines.append(
            f"  {k:>5} {_f(row['p99_u_ms'], '.3f'):>7} {_f(row['p99_d_ms'], '.3f'):>7} "
            f"{_f(row['p99_d_vs_u']):>6} {_f(row['p99_d_vs_s']):>6} {_f(row['p99_d_vs_n']):>6} "
            f"{_f(row['bulk_d_vs_s']):>8} {_f(row['spare_share_d']):>11}"
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
    *,
    bed: Bed,
    opts: Options,
    per_round: Sequence[Mapping[str, ScenarioResult]] = (),
) -> object:
    """Every number of the run, JSON-ready (NaN as null)."""
    alone, fifo = results.get("u"), results.get("n")
    scenarios: dict[str, object] = {}
    for name, r in results.items():
        entry: dict[str, object] = dataclasses.asdict(r)
        if alone is not None and name != "u":
            entry["ratios"] = dataclasses.asdict(
                ratios(r, alone=alone, fifo=fifo, link_mbit=opts.link_mbit)
            )
        scenarios[name] = entry
    doc = {
        "options": {**dataclasses.asdict(opts), "static_cap_mbit": opts.static_cap_mbit},
        "bed": dataclasses.asdict(bed),
        "workload": {
            "request_bytes": REQUEST_BYTES,
            "response_bytes": RESPONSE_BYTES,
            "connections": CONNECTIONS,
            "bulk_flows": BULK_FLOWS,
            "service_request_mbit": SERVICE_REQUEST_MBIT,
        },
        "spare_mbit": spare_mbit(alone, opts.link_mbit) if alone else None,
        "scenarios": scenarios,
        "goals": [dataclasses.asdict(g) for g in evaluate_goals(results, link_mbit=opts.link_mbit)],
        "rounds": round_summaries(per_round, link_mbit=opts.link_mbit),
    }
    return _jsonable(doc)


# ---- main ---------------------------------------------------------------------------------


def run_round(
    opts: Options, bed: Bed, hier: Hierarchy, machine: Machine
) -> dict[str, ScenarioResult]:
    title = titles(opts)
    results: dict[str, ScenarioResult] = {}
    for name in SCENARIOS:
        print(f"running {title[name]} ...", flush=True)
        runner = run_agent if name == "d" else run_plain
        results[name] = runner(name, title[name], opts=opts, bed=bed, hier=hier, machine=machine)
    return results


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so that every finally block removes what it made


def main(argv: Sequence[str] | None = None, *, out: IO[str] | None = None) -> int:
    opts = parse_args(argv)
    out = out or sys.stdout
    reason = preflight(euid=os.geteuid(), which=shutil.which)
    if reason is not None:
        print(f"bench.net_isolation: {reason}", file=sys.stderr)
        return 1
    try:
        machine = machine_here()
    except SystemExit as exc:
        print(f"bench.net_isolation: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupted)
    tag = f"kqb{os.getpid()}"
    per_round: list[dict[str, ScenarioResult]] = []
    try:
        with make_bed(tag) as bed, net_cls_mount(tag) as hier:
            for k in range(opts.repeat):
                if opts.repeat > 1:
                    print(f"round {k + 1} of {opts.repeat}", flush=True)
                per_round.append(run_round(opts, bed, hier, machine))
    except KeyboardInterrupt:
        print("interrupted; everything the run made is removed", file=sys.stderr)
        return 130
    except (RuntimeError, CgroupError, ShaperError, NftError, OSError) as exc:
        print(f"the benchmark could not run: {exc}", file=sys.stderr)
        return 1
    results = {name: combine_rounds([r[name] for r in per_round]) for name in SCENARIOS}
    lines = format_report(results, bed=bed, opts=opts)
    if opts.repeat > 1:
        lines += ["", *round_table(per_round, link_mbit=opts.link_mbit)]
    print("\n" + "\n".join(lines), file=out)
    if opts.json is not None:
        doc = report_json(results, bed=bed, opts=opts, per_round=per_round)
        opts.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nnumbers written to {opts.json}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
