"""Two ``katalyst-controller`` replicas against one fake API server: only the Lease's
holder writes; a killed leader is taken over once its lease expires, a stopped one
hands over at once; after an API-server outage the writes resume with no duplicate.

Short lease timings (lease 1 s, renew deadline 0.6 s, retry 0.2 s) keep each test to
a few seconds; waits are bounds (``eventually``), never timing assertions.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.test_controller import (
    AQC,
    NS,
    Cluster,
    aqc,
    cluster_wide,
    converged,
    edit,
    kcc,
    last_good,
    listed,
    node,
    pool,
    reason,
    relabel,
)
from tests.support.apiserver import CUSTOM_NODE_CONFIGS, LEASES, FakeApiServer
from tests.support.wait import eventually


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer(bookmark_interval=0.05) as server:
        yield server


@pytest.fixture
async def cluster(api: FakeApiServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(api, tmp_path)
    try:
        yield c
    finally:
        await c.close()


def lease(api: FakeApiServer) -> dict[str, object]:
    obj = api.get_object(LEASES, "katalyst-controller", namespace=NS)
    assert obj is not None
    return dict(obj["spec"])


def setup_objects(api: FakeApiServer) -> None:
    node(api, "n1", node_pool="batch")
    node(api, "n2", node_pool="online")
    node(api, "n3")
    kcc(api)
    aqc(api, "cluster", cluster_wide())
    aqc(api, "batch", pool("node-pool=batch"))


async def test_only_the_leader_writes_and_a_killed_one_is_taken_over(
    cluster: Cluster, api: FakeApiServer
) -> None:
    setup_objects(api)
    a = await cluster.start("ctl-a")
    b = await cluster.start("ctl-b")
    leader = await cluster.leader(a, b)
    standby = b if leader is a else a
    await converged(api, {"n1": ["cluster", "batch"], "n2": ["cluster"], "n3": ["cluster"]})
    # The standby keeps its copies warm and resolves, but writes nothing.
    await eventually(
        lambda: standby.metric("katalyst_controller_passes_total", outcome="standby") >= 1,
        "a standby pass",
    )
    assert standby.metric("katalyst_controller_caches_synced") == 1.0
    relabel(api, "n2", node_pool="batch")
    await eventually(lambda: listed(api, "n2") == ["cluster", "batch"], "the leader writes")
    assert standby.writes == 0.0
    assert leader.writes > 0
    transitions = lease(api)["leaseTransitions"]

    # The leader dies without releasing: the standby waits for the lease to expire.
    await leader.kill()
    await eventually(lambda: standby.leading, "the standby takes over")
    spec = lease(api)
    assert spec["holderIdentity"] == standby.identity
    assert spec["leaseTransitions"] == transitions + 1  # type: ignore[operator]
    relabel(api, "n3", node_pool="batch")
    await eventually(lambda: listed(api, "n3") == ["cluster", "batch"], "the new leader writes")
    assert standby.writes > 0


async def test_a_stopped_leader_releases_and_the_standby_takes_over_at_once(
    cluster: Cluster, api: FakeApiServer
) -> None:
    setup_objects(api)
    # A 30 s lease: a takeover within the wait below can only come from a release.
    timings = {"lease_duration_s": 30, "renew_deadline_s": 10.0, "retry_period_s": 0.2}
    a = await cluster.start("ctl-a", **timings)
    await cluster.leader(a)
    b = await cluster.start("ctl-b", **timings)
    await converged(api, {"n1": ["cluster", "batch"]})
    await a.shut_down()
    assert not a.leading
    await eventually(lambda: b.leading, "the standby takes over", timeout=5)
    spec = lease(api)
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("ctl-b", 30)
    assert spec["leaseTransitions"] == 1
    edit(api, "batch", lambda s: s.update(nodeLabelSelector="node-pool in (batch,online)"))
    await eventually(lambda: listed(api, "n2") == ["cluster", "batch"], "the new leader writes")


@pytest.mark.parametrize("mode", ["reset", "unavailable"])
async def test_after_an_outage_writes_resume_without_duplicates(
    cluster: Cluster, api: FakeApiServer, mode: str
) -> None:
    setup_objects(api)
    a = await cluster.start("ctl-a")
    await cluster.leader(a)
    await converged(api, {"n1": ["cluster", "batch"], "n2": ["cluster"], "n3": ["cluster"]})
    mark = len(api.writes)

    api.start_outage(mode)  # type: ignore[arg-type]
    try:
        # The cluster changes while the controller cannot see it; its watch history
        # is compacted too, so that the watches must list again.
        relabel(api, "n2", node_pool="batch")
        aqc(api, "zone-a", pool("zone=a", priority=1))
        api.compact()
        # Past the renew deadline: the leader steps down.
        await eventually(lambda: not a.leading, "the leader steps down")
    finally:
        api.end_outage()
    await eventually(lambda: a.leading, "leading again")
    await converged(
        api, {"n1": ["cluster", "batch"], "n2": ["cluster", "batch"], "n3": ["cluster"]}
    )
    await eventually(
        lambda: reason(api, "zone-a") == "Valid" and last_good(api, "zone-a") is not None,
        "the new config's condition and last good version",
    )

    after = [w for w in api.writes[mark:] if w.code != 0 and w.code < 500]
    content = [w for w in after if w.resource != LEASES.qualified]
    # n2's CNC: one write, that changed it; n1's and n3's: none.
    assert [
        (w.name, w.changed) for w in content if w.resource == CUSTOM_NODE_CONFIGS.qualified
    ] == [("n2", True)]
    # The new config: its annotation and its condition, once each; nothing else.
    assert sorted((w.name, w.subresource) for w in content if w.resource == AQC.qualified) == [
        ("zone-a", ""),
        ("zone-a", "status"),
    ]
    assert all(w.changed for w in content)


async def test_the_process_leads_and_releases_the_lease_on_sigterm(
    api: FakeApiServer, tmp_path: Path
) -> None:
    setup_objects(api)
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    log_file = (tmp_path / "stderr").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controllers.app",
        "--kubeconfig",
        str(kubeconfig),
        "--identity",
        "ctl-process",
        "--metrics-addr",
        "127.0.0.1:0",
        "--lease-duration-s",
        "1",
        "--renew-deadline-s",
        "0.6",
        "--retry-period-s",
        "0.2",
        "--log-format",
        "json",
        stderr=log_file,
    )
    try:
        await converged(api, {"n1": ["cluster", "batch"], "n2": ["cluster"], "n3": ["cluster"]})
        assert lease(api)["holderIdentity"] == "ctl-process"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log_file.close()
    spec = lease(api)
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)
    lines = [json.loads(line) for line in (tmp_path / "stderr").read_text().splitlines()]
    assert any(line["msg"] == "leader election: ctl-process released the lease" for line in lines)
