"""Network isolation on the real kernel: two namespaces joined by a veth, a shared
and a reclaimed bulk sender in their own cgroups in the sending namespace, a sink
in the other. The agent's loop shapes the veth to a known rate with its HTB tree,
classifies the senders by ``net_cls.classid`` through its nftables table, and caps
the reclaimed class from the measured traffic of the others.

Throughputs are the kernel's own class counters over a window of a few periods;
the bounds are physical (a capped class cannot exceed its ceil by more than a
burst), not timings of our code.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from agent.isolation.netcls import NetClsClassifier
from agent.isolation.network import (
    MINOR,
    RECLAIMED,
    SHARED,
    InterfaceConfig,
    NetworkConfig,
    NetworkLoop,
    ShapedInterface,
)
from agent.isolation.nft import FAMILY, TABLE
from agent.isolation.setup import cgroupv2_match
from agent.isolation.tc import HANDLE_MAJOR
from agent.metaserver.metrics import ContainerRef
from agent.standalone.runtime import spawn_in_cgroup, stop_processes
from katalyst.cgroup import CgroupDriver
from katalyst.cgroup.layout import Hierarchy
from katalyst.clock import MonotonicClock
from tests.support.kernel import check_kernel_ready, kernel_driver
from tests.support.netns import VethPair, net_cls_hierarchy, sender_argv, sink_argv, veth_pair

LINK_MBIT = 100
SHARED_GUARANTEE = 60.0
PERIOD_S = 0.5
PORT = 5001


@dataclass
class Bed:
    pair: VethPair
    driver: CgroupDriver
    loop: NetworkLoop
    procs: list[subprocess.Popen[bytes]]

    def start_sender(self, cgroup: str) -> None:
        argv = self.pair.exec_argv(self.pair.ns_a, sender_argv(self.pair.addr_b, PORT))
        self.procs.append(spawn_in_cgroup(self.driver, cgroup, argv))

    def periods(self, n: int) -> None:
        for _ in range(n):
            self.loop.step()
            time.sleep(PERIOD_S)

    def until(self, condition: Callable[[], bool], what: str, *, periods: int = 20) -> None:
        """Run periods until ``condition`` holds; fail naming ``what`` after ``periods``
        (a bound on the kernel's and the senders' work, not a timing)."""
        for _ in range(periods):
            self.loop.step()
            if condition():
                return
            time.sleep(PERIOD_S)
        state = self.loop.interfaces[0]
        raise AssertionError(
            f"after {periods} periods: {what} (last {state.last}, error {state.error}, "
            f"classify error {self.loop.classify_error})"
        )

    def throughput(self, seconds: float) -> dict[str, float]:
        """Mbit/s per class over ``seconds`` of the loop's periods (kernel counters)."""
        shaper = self.loop.interfaces[0].shaper
        before, t0 = shaper.stats(), time.monotonic()
        self.periods(max(1, round(seconds / PERIOD_S)))
        after, t1 = shaper.stats(), time.monotonic()
        return {
            name: (after[minor].bytes - before[minor].bytes) * 8 / (t1 - t0) / 1e6
            for name, minor in MINOR.items()
        }


def _containers() -> list[ContainerRef]:
    return [
        ContainerRef("t", "svc", "c", "shared_cores", "shared"),
        ContainerRef("t", "batch", "c", "reclaimed_cores", "reclaimed"),
    ]


@pytest.fixture(params=["net_cls", "cgroupv2"])
def bed(request: pytest.FixtureRequest) -> Iterator[Bed]:
    check_kernel_ready(["cpu"])
    with veth_pair() as pair, net_cls_hierarchy() as hier:
        loops: list[NetworkLoop] = []
        try:
            with kernel_driver() as driver:
                driver.create("shared")
                driver.create("reclaimed")
                loop = _loop(pair, driver, hier, classify=request.param)
                loops.append(loop)
                sink = pair.exec_argv(pair.ns_b, sink_argv(pair.addr_b, PORT))
                # Its own process group: stop_processes signals groups.
                procs = [subprocess.Popen(sink, start_new_session=True)]
                try:
                    yield Bed(pair, driver, loop, procs)
                finally:
                    stop_processes(procs)
                    loop.cleanup()
        finally:
            # The test's cgroups are gone now: their net_cls mirrors belong to no one.
            for loop in loops:
                loop.release()


def _loop(pair: VethPair, driver: CgroupDriver, hier: Hierarchy, *, classify: str) -> NetworkLoop:
    """The loop as the agent builds it, classifying by ``net_cls`` or by cgroup v2
    (this hybrid host has both: the test's cgroups are mirrored in the unified mount)."""
    config = NetworkConfig(
        interfaces=(InterfaceConfig(name=pair.dev_a, speed_mbit=LINK_MBIT, netns=pair.ns_a),),
        period_s=PERIOD_S,
        step_up_ratio=0.5,
        classify=classify,
    )
    v2 = classify == "cgroupv2"
    return NetworkLoop(
        config,
        interfaces=[ShapedInterface(pair.dev_a, LINK_MBIT, pair.ns_a)],
        guaranteed=lambda: {pair.dev_a: {SHARED: SHARED_GUARANTEE}},
        containers=_containers,
        classifier=None if v2 else (lambda: NetClsClassifier(driver, hier)),
        cgroupv2_match=cgroupv2_match(driver) if v2 else None,
        clock=MonotonicClock(),
    )


def _nft_tables(pair: VethPair) -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "exec", pair.ns_a, "nft", "-j", "list", "tables"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [i["table"]["name"] for i in json.loads(out)["nftables"] if "table" in i]


def _root_qdisc(pair: VethPair) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", pair.ns_a, "tc", "qdisc", "show", "dev", pair.dev_a, "root"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_reclaimed_sender_is_capped_and_the_cap_falls_when_the_service_sends(bed: Bed) -> None:
    state = bed.loop.interfaces[0]

    def cap() -> float:
        return state.last.cap_mbit if state.last else 0.0

    bed.start_sender("reclaimed")
    # The cap ramps up from the floor, half the link per period, once the sender's
    # traffic is classified as reclaimed (until then it counts as the services').
    bed.until(lambda: cap() >= 0.8 * LINK_MBIT, "the cap ramps up")
    alone = bed.throughput(2.0)
    cap_alone = state.last.cap_mbit if state.last else 0.0
    assert bed.loop.supported, (state.error, bed.loop.classify_error)
    assert bed.loop.classified == 2
    # Nothing else sends: Heracles leaves 5 % of the link, and the batch may use the rest.
    assert cap_alone >= 0.8 * LINK_MBIT
    assert alone[RECLAIMED] >= 0.5 * cap_alone  # it is the one sending...
    assert alone[RECLAIMED] <= 1.1 * cap_alone + 2  # ...and it is held to its cap

    bed.start_sender("shared")
    bed.until(lambda: cap() <= 0.2 * LINK_MBIT, "the cap falls")
    bed.periods(1)
    busy = bed.throughput(2.0)
    cap_busy = state.last.cap_mbit if state.last else LINK_MBIT
    print(
        f"alone: cap {cap_alone:.1f}, reclaimed {alone[RECLAIMED]:.1f} Mbit/s; with the "
        f"service: cap {cap_busy:.1f}, shared {busy[SHARED]:.1f}, reclaimed "
        f"{busy[RECLAIMED]:.2f} Mbit/s"
    )
    assert cap_busy < cap_alone  # the cap fell when the service's traffic rose
    assert cap_busy <= 0.2 * LINK_MBIT
    assert busy[SHARED] >= 0.9 * SHARED_GUARANTEE  # the service gets its guaranteed rate
    assert busy[RECLAIMED] <= 1.25 * cap_busy + 1.5  # and the batch stays under the cap
    assert state.last is not None and state.last.service_mbit is not None
    assert state.last.service_mbit >= 0.9 * SHARED_GUARANTEE


def test_the_tree_and_table_are_restored_and_cleanup_removes_everything(bed: Bed) -> None:
    pair = bed.pair
    state = bed.loop.interfaces[0]
    # Nothing sends: once the cap has ramped to its target, a period writes nothing
    # (read-compare-write, the buckets included).
    bed.until(lambda: state.last is not None and state.last.cap_mbit >= 0.9 * LINK_MBIT, "ramp")
    before = state.writes
    bed.loop.step()
    assert state.writes == before
    assert f"htb {HANDLE_MAJOR:x}:" in _root_qdisc(pair)
    assert TABLE in _nft_tables(pair)
    # Someone removes both: the next period puts them back.
    subprocess.run(
        ["ip", "netns", "exec", pair.ns_a, "tc", "qdisc", "del", "dev", pair.dev_a, "root"],
        check=True,
    )
    subprocess.run(
        ["ip", "netns", "exec", pair.ns_a, "nft", "delete", "table", FAMILY, TABLE], check=True
    )
    bed.loop.step()
    assert f"htb {HANDLE_MAJOR:x}:" in _root_qdisc(pair)
    assert TABLE in _nft_tables(pair)
    classifier_dirs = bed.loop.cleanup()
    assert classifier_dirs  # it said what it removed
    assert f"htb {HANDLE_MAJOR:x}:" not in _root_qdisc(pair)
    assert TABLE not in _nft_tables(pair)


def test_a_root_qdisc_the_agent_did_not_create_is_left_alone(bed: Bed) -> None:
    pair = bed.pair
    subprocess.run(
        ["ip", "netns", "exec", pair.ns_a, "tc", "qdisc", "add", "dev", pair.dev_a, "root",
         "handle", "5:", "tbf", "rate", "10mbit", "burst", "32kbit", "latency", "50ms"],
        check=True,
    )  # fmt: skip
    bed.loop.step()
    state = bed.loop.interfaces[0]
    assert not bed.loop.supported
    assert state.error is not None and "did not create" in state.error
    assert "tbf 5:" in _root_qdisc(pair)  # untouched
    assert bed.loop.cleanup() is not None
    assert "tbf 5:" in _root_qdisc(pair)  # cleanup does not remove what is not ours
