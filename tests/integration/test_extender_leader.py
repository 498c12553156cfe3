"""Two replicas of the scheduler extender behind one Service: both are ready once
synced; the Lease's holder alone answers kube-scheduler and carries the label
``katalyst.kubewharf.io/extender-leader: "true"`` on its own Pod (the Service selects
it); the standby answers 503; a stopped leader releases the Lease and removes its
label, and the standby takes over, labels its pod and serves from its own synced
watches.

Each replica is the whole process (:func:`scheduler_plugins.app.run`, or the console
script for SIGTERM) against the fake API server, over real HTTP on loopback, under
the RBAC the manifests grant the extender (its User-Agent). The test plays the
kubelet: it creates each replica's Pod in the fake before starting the replica, with
``$POD_NAME`` and ``$POD_NAMESPACE`` as the downward API gives them. The elector and
the label's retries run on a shared :class:`FakeClock`: a standby tries again only
when the test advances it, and the lease is an hour of virtual time, so a takeover
within the few minutes of virtual time a test advances can only come from a release.
Real-time waits are bounds on work done by the servers, never timing assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from katalyst.clock import FakeClock
from katalyst.leader import (
    JITTER_FACTOR,
    LeaseConflict,
    LeaseError,
    acquired,
    released,
)
from scheduler_plugins import apiserver, app
from scheduler_plugins.replica import LEADER_LABEL
from tests.integration.test_extender_apiserver import free_port, names
from tests.support.apiserver import (
    CUSTOM_NODE_RESOURCES,
    LEASES,
    MERGE_PATCH,
    PODS,
    FakeApiServer,
    pod_manifest,
)
from tests.unit.scheduler.helpers import cnr_json, gpu_zone, pod_json

NS = "katalyst-system"
LEASE = "katalyst-scheduler-extender"
RETRY_S = 2.0
TIMINGS = ["--lease-duration-s", "3600", "--renew-deadline-s", "1800", "--retry-period-s", "2"]
"""An hour's lease and a half-hour renew deadline: virtual time advanced by a test
never expires a lease nor makes a leader step down; only a release hands over."""
MAX_RETRY_S = RETRY_S * (1 + JITTER_FACTOR)
"""The longest a standby sleeps between tries."""
APP_LABELS = {"app.kubernetes.io/component": "scheduler-extender"}


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait (a bound, not a timing assertion) until ``check()`` holds."""
    for _ in range(500):
        if await check():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


@dataclass
class Extender:
    identity: str
    url: str
    stop: asyncio.Event
    task: asyncio.Task[None]
    session: aiohttp.ClientSession

    async def readyz(self) -> tuple[int, str]:
        async with self.session.get(f"{self.url}/readyz") as resp:
            return resp.status, await resp.text()

    async def ready(self) -> bool:
        return (await self.readyz())[0] == 200

    async def call(self, verb: str, body: Any) -> tuple[int, Any]:
        async with self.session.post(f"{self.url}/{verb}", json=body) as resp:
            return resp.status, await resp.json()

    async def shut_down(self) -> None:
        """What SIGTERM does in the process."""
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


@dataclass
class Cluster:
    api: FakeApiServer
    kubeconfig: Path
    clock: FakeClock
    session: aiohttp.ClientSession
    running: list[Extender]

    def pod(self, name: str, *, leader_label: bool = False) -> None:
        """The replica's own Pod, as the kubelet runs it (a previous container of it
        may have left the leader label)."""
        labels = dict(APP_LABELS)
        if leader_label:
            labels[LEADER_LABEL] = "true"
        self.api.create_pod(
            pod_manifest(name, namespace=NS, labels=labels, node_name="n1", phase="Running")
        )

    def labels(self, name: str) -> dict[str, str]:
        pod = self.api.get_pod(NS, name)
        assert pod is not None
        return dict(pod["metadata"].get("labels") or {})

    def labelled(self) -> list[str]:
        """The pods in the extender's namespace that the Service routes to."""
        return sorted(
            p["metadata"]["name"]
            for p in self.api.pods()
            if p["metadata"]["namespace"] == NS
            and (p["metadata"].get("labels") or {}).get(LEADER_LABEL) == "true"
        )

    def pod_patches(self, name: str) -> list[int]:
        """The HTTP status of each PATCH of the pod ``name``, in order."""
        return [w.code for w in self.api.writes_to(PODS, name, namespace=NS) if w.method == "PATCH"]

    async def start(self, identity: str, *flags: str, elect: bool = True) -> Extender:
        """Start the replica whose Pod (and identity) is ``identity``; its Pod must exist."""
        port = free_port()
        argv = ["--listen", f"127.0.0.1:{port}", "--kubeconfig", str(self.kubeconfig), *flags]
        if elect:
            argv += ["--leader-elect", *TIMINGS]
        args = app.parse_args(argv)
        stop = asyncio.Event()
        env = {"POD_NAME": identity, "POD_NAMESPACE": NS}
        task = asyncio.create_task(app.run(args, stop, clock=self.clock, env=env))
        extender = Extender(identity, f"http://127.0.0.1:{port}", stop, task, self.session)
        self.running.append(extender)

        async def listening() -> bool:
            if task.done():
                task.result()  # raise what stopped it
            try:
                async with self.session.get(f"{extender.url}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await until(listening, f"{identity} to listen")
        return extender

    def lease(self) -> dict[str, Any]:
        obj = self.api.get_object(LEASES, LEASE, namespace=NS)
        return {} if obj is None else dict(obj["spec"])


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with FakeApiServer(bookmark_interval=0.05) as api, aiohttp.ClientSession() as session:
        c = Cluster(api, api.kubeconfig(tmp_path / "kubeconfig"), FakeClock(), session, [])
        try:
            yield c
        finally:
            for extender in c.running:
                extender.stop.set()
            await asyncio.gather(*(e.task for e in c.running), return_exceptions=True)


def binding(pod: dict[str, Any], node: str) -> dict[str, Any]:
    meta = pod["metadata"]
    return {
        "PodName": meta["name"],
        "PodNamespace": meta["namespace"],
        "PodUID": meta["uid"],
        "Node": node,
    }


async def test_one_replica_answers_and_a_stopped_leader_hands_over(cluster: Cluster) -> None:
    api = cluster.api
    api.create_cnr(cnr_json("g", zones=[gpu_zone(0, memory=16384)]))
    first = api.create_pod(pod_json("a", uid="uid-a", gpu_memory=4096))
    second = api.create_pod(pod_json("b", uid="uid-b", gpu_memory=4096))
    cluster.pod("ext-a")
    cluster.pod("ext-b")

    # No Lease yet: the first replica creates it at its first try, and labels its pod.
    a = await cluster.start("ext-a")

    async def a_routed() -> bool:
        return cluster.labelled() == ["ext-a"]

    await until(a_routed, "ext-a to lead and label its pod")
    b = await cluster.start("ext-b")
    reason = "standby: ext-a holds the lease, not this replica (ext-b)"

    async def b_saw_a() -> bool:
        return await b.call("filter", names(first, "g")) == (503, {"Error": reason})

    await until(b_saw_a, "ext-b to find the Lease held")
    # Both are Ready once synced: the standby is a spare that a rollout and a
    # PodDisruptionBudget count. Only the leader's pod is routed to.
    await until(a.ready, "ext-a to sync")
    await until(b.ready, "ext-b to sync")
    assert (await a.readyz(), await b.readyz()) == ((200, "ok"), (200, "ok"))
    assert cluster.lease()["holderIdentity"] == "ext-a"
    assert cluster.labelled() == ["ext-a"]
    # The leader's pod was patched once, its only patch a merge patch of the label; the
    # standby's once too, removing the label a previous container might have left.
    assert (cluster.pod_patches("ext-a"), cluster.pod_patches("ext-b")) == ([200, 200], [200])
    mine = [p for p in api.patches if p.path == PODS.object_path("ext-a", NS)]
    assert [(p.content_type, p.body) for p in mine] == [
        (MERGE_PATCH, {"metadata": {"labels": {LEADER_LABEL: None}}}),
        (MERGE_PATCH, {"metadata": {"labels": {LEADER_LABEL: "true"}}}),
    ]
    assert cluster.labels("ext-a") == {**APP_LABELS, LEADER_LABEL: "true"}

    # A call routed to the standby fails rather than bypass the leader's assume cache.
    for verb, body in (
        ("filter", names(first, "g")),
        ("prioritize", names(first, "g")),
        ("bind", binding(first, "g")),
    ):
        assert await b.call(verb, body) == (503, {"Error": reason})
    assert api.bindings == []
    # The leader answers.
    status, result = await a.call("filter", names(first, "g"))
    assert (status, result["NodeNames"]) == (200, ["g"])
    assert await a.call("bind", binding(first, "g")) == (200, {"Error": ""})

    # A graceful stop (SIGTERM) releases the Lease (no holder, a one-second lease) and
    # takes the label off the pod before the process exits.
    await a.shut_down()
    spec = cluster.lease()
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)
    assert cluster.labelled() == []
    assert cluster.labels("ext-a") == APP_LABELS
    # In that order (ext-b sends nothing while the clock stands still).
    writes = [(r.method, r.path) for r in api.requests if r.method in ("PUT", "PATCH")]
    assert writes[-2:] == [
        ("PUT", LEASES.object_path(LEASE, NS)),
        ("PATCH", PODS.object_path("ext-a", NS)),
    ]

    # The standby takes it at its next try (the clock still far from the hour's expiry)
    # and labels its own pod.
    async def b_leads() -> bool:
        await cluster.clock.advance(MAX_RETRY_S)
        return cluster.labelled() == ["ext-b"]

    await until(b_leads, "ext-b to take over and label its pod")
    assert cluster.clock.monotonic() < 600
    spec = cluster.lease()
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("ext-b", 3600)
    assert spec["leaseTransitions"] == 1
    # It serves from its own watches: the bound pod is counted (12 GiB of 16 left,
    # so a pod of 16 GiB does not fit), and it binds.
    big = api.create_pod(pod_json("c", uid="uid-c", gpu_memory=16384))

    async def counted() -> bool:
        status, result = await b.call("filter", names(big, "g"))
        assert status == 200
        return bool(result["NodeNames"] == [])

    await until(counted, "ext-b's pod watch to show the bound pod")
    assert await b.call("bind", binding(second, "g")) == (200, {"Error": ""})
    assert [body["metadata"]["name"] for body in api.bindings] == ["a", "b"]


async def test_a_stale_label_is_removed_at_start_and_a_failed_patch_is_retried(
    cluster: Cluster,
) -> None:
    api = cluster.api
    cluster.pod("ext-a")
    a = await cluster.start("ext-a")

    async def a_routed() -> bool:
        return cluster.labelled() == ["ext-a"] and await a.ready()

    await until(a_routed, "ext-a to lead, label its pod and sync")
    # ext-b's previous container crashed while leading: its pod still has the label,
    # so the Service would route to a replica that is about to be a standby.
    cluster.pod("ext-b", leader_label=True)
    assert cluster.labelled() == ["ext-a", "ext-b"]
    # The API server fails ext-b's first three requests: nothing else is sent now (the
    # clock stands still), and they are its CNR list, its pod list and the removal
    # of the stale label, which goes before it campaigns.
    api.fail_next(3, 500)
    b = await cluster.start("ext-b")
    reason = "standby: ext-a holds the lease, not this replica (ext-b)"

    async def b_standby() -> bool:
        return await b.call("filter", {"Pod": {}, "NodeNames": []}) == (503, {"Error": reason})

    await until(b_standby, "ext-b to campaign and find the Lease held")
    assert cluster.pod_patches("ext-b") == [500]

    # The failure did not stop the campaign nor the verbs' rule; the patch is retried
    # with backoff (virtual time) and the stale label goes.
    async def stale_gone() -> bool:
        await cluster.clock.advance(0.5)
        return cluster.labelled() == ["ext-a"]

    await until(stale_gone, "ext-b to remove its stale label")
    assert cluster.pod_patches("ext-b") == [500, 200]
    await until(b.ready, "ext-b's watches to list again")
    assert await b.call("filter", {"Pod": {}, "NodeNames": []}) == (503, {"Error": reason})

    # The label lands on ext-b once it leads.
    await a.shut_down()

    async def b_routed() -> bool:
        await cluster.clock.advance(MAX_RETRY_S)
        return cluster.labelled() == ["ext-b"]

    await until(b_routed, "ext-b to take over and label its pod")
    assert cluster.pod_patches("ext-b") == [500, 200, 200]


async def test_a_leader_whose_watches_have_not_synced_is_not_ready(tmp_path: Path) -> None:
    # No CRD for CNRs: their list is a 404 until the CRD is installed.
    async with (
        FakeApiServer(custom_resources=(), bookmark_interval=0.05) as api,
        aiohttp.ClientSession() as session,
    ):
        cluster = Cluster(api, api.kubeconfig(tmp_path / "kubeconfig"), FakeClock(), session, [])
        try:
            cluster.pod("ext-a")
            a = await cluster.start("ext-a")

            async def leads() -> bool:
                return cluster.lease().get("holderIdentity") == "ext-a"

            await until(leads, "ext-a to take the Lease")

            async def only_cnrs_missing() -> bool:
                reason = "not synced: waiting for the first list of cnr"
                return await a.readyz() == (503, reason)

            await until(only_cnrs_missing, "the pods listed and the CNRs not")

            # Installed, the CRD is listed at the watch's next retry (virtual time).
            api.register(CUSTOM_NODE_RESOURCES)

            async def ready() -> bool:
                await cluster.clock.advance(1.0)
                return await a.ready()

            await until(ready, "ext-a to list the CNRs")
        finally:
            for extender in cluster.running:
                extender.stop.set()
            await asyncio.gather(*(e.task for e in cluster.running), return_exceptions=True)


async def test_without_leader_election_ready_follows_the_watches(cluster: Cluster) -> None:
    # $POD_NAME is set (start() passes it), but without --leader-elect there is no
    # label to keep: the pod is never patched.
    cluster.pod("solo", leader_label=True)
    a = await cluster.start("solo", elect=False)
    await until(a.ready, "the watches to sync")
    pod = cluster.api.create_pod(pod_json("p", uid="uid-p", gpu_memory=1024))
    assert (await a.call("filter", names(pod)))[0] == 200
    await a.shut_down()
    assert cluster.lease() == {}
    assert not any(r.path.startswith("/apis/coordination.k8s.io") for r in cluster.api.requests)
    assert not any(r.method == "PATCH" for r in cluster.api.requests)
    assert cluster.api.patches == []
    assert cluster.labelled() == ["solo"]


async def test_sigterm_releases_the_lease_and_removes_the_label(tmp_path: Path) -> None:
    async with FakeApiServer(bookmark_interval=0.05) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        api.create_pod(pod_manifest("ext-process", namespace=NS, node_name="n1"))
        log_file = (tmp_path / "stderr").open("wb")
        # --identity and --namespace default to the downward API's variables.
        env = {**os.environ, "POD_NAME": "ext-process", "POD_NAMESPACE": NS}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scheduler_plugins.app",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--kubeconfig",
            str(kubeconfig),
            "--leader-elect",
            stderr=log_file,
            env=env,
        )

        def label() -> str | None:
            pod = api.get_pod(NS, "ext-process")
            assert pod is not None
            labels: dict[str, str] = pod["metadata"].get("labels") or {}
            return labels.get(LEADER_LABEL)

        try:

            async def leads() -> bool:
                obj = api.get_object(LEASES, LEASE, namespace=NS)
                return (
                    obj is not None
                    and obj["spec"]["holderIdentity"] == "ext-process"
                    and label() == "true"
                )

            await until(leads, "the process to take the Lease and label its pod")
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 10) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            log_file.close()
        obj = api.get_object(LEASES, LEASE, namespace=NS)
        assert obj is not None
        assert (obj["spec"]["holderIdentity"], obj["spec"]["leaseDurationSeconds"]) == ("", 1)
        assert label() is None
        stderr = (tmp_path / "stderr").read_text()
        assert "leader election: ext-process released the lease" in stderr
        assert f"pod {NS}/ext-process: label {LEADER_LABEL} removed" in stderr


# ---- the Lease client --------------------------------------------------------------------


async def test_the_lease_client_reads_creates_and_updates_conditionally(tmp_path: Path) -> None:
    async with FakeApiServer() as api:
        client = await apiserver.connect(api.kubeconfig(tmp_path / "kubeconfig"))
        try:
            leases = apiserver.ApiServerLeaseClient(client, namespace=NS, name=LEASE)
            assert await leases.get() is None
            wall = 1_700_000_000.0
            created = await leases.create(acquired(None, identity="a", wall=wall, duration_s=15))
            assert (created.holder, created.duration_s, created.transitions) == ("a", 15, 0)
            assert created.resource_version
            assert await leases.get() == created
            with pytest.raises(LeaseConflict, match="already exists"):
                await leases.create(acquired(None, identity="b", wall=wall, duration_s=15))

            renewed = await leases.update(
                acquired(created, identity="a", wall=wall + 2, duration_s=15)
            )
            assert renewed.renew_time == "2023-11-14T22:13:22.000000Z"
            assert renewed.resource_version != created.resource_version
            # Written at a resourceVersion that is no longer the Lease's: 409.
            stale = acquired(created, identity="b", wall=wall + 3, duration_s=15)
            with pytest.raises(LeaseConflict, match="has been modified"):
                await leases.update(stale)
            assert (await leases.get()) == renewed

            gone = await leases.update(released(renewed, wall=wall + 4))
            assert (gone.holder, gone.duration_s) == ("", 1)
            stored = api.get_object(LEASES, LEASE, namespace=NS)
            assert stored is not None
            assert stored["spec"]["holderIdentity"] == ""

            api.fail_next(1, 500)
            with pytest.raises(LeaseError) as failed:
                await leases.get()
            assert not isinstance(failed.value, LeaseConflict)
            assert f"lease {NS}/{LEASE}: HTTP 500" in str(failed.value)
            # No answer at all.
            await api.stop()
            with pytest.raises(LeaseError, match="API server"):
                await leases.update(gone)
        finally:
            await client.close()  # type: ignore[no-untyped-call]


def test_lease_flags_and_their_defaults() -> None:
    args: argparse.Namespace = app.parse_args([])
    assert args.leader_elect is False
    lease = app.lease_options(args, {"POD_NAME": "ext-0", "POD_NAMESPACE": "sched"})
    assert (lease.namespace, lease.name, lease.identity) == ("sched", LEASE, "ext-0")
    settings = lease.settings
    assert (settings.duration_s, settings.renew_deadline_s, settings.retry_period_s) == (
        15,
        10.0,
        2.0,
    )
    assert lease.pod == ("sched", "ext-0")
    lease = app.lease_options(args, {"POD_NAME": "ext-0"})
    assert lease.pod == (NS, "ext-0")
    lease = app.lease_options(args, {})
    assert lease.pod is None
    assert lease.namespace == NS
    assert lease.identity  # <hostname>_<random>
    assert lease.identity != app.lease_options(args, {}).identity
    flagged = app.parse_args(["--namespace", "x", "--identity", "me", "--lease-name", "l"])
    assert app.lease_options(flagged, {"POD_NAME": "p", "POD_NAMESPACE": "q"}).identity == "me"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lease-duration-s", "1.5"], "'1.5' is not a whole number of seconds"),
        (["--renew-deadline-s", "x"], "'x' is not a number"),
        (["--renew-deadline-s", "15"], "--renew-deadline-s: must be less than"),
        (["--retry-period-s", "9"], "--renew-deadline-s: must be more than 1.2 x"),
        (["--retry-period-s", "nan"], "--retry-period-s: must be a finite number > 0"),
        (["--namespace", "Bad_NS"], "--namespace: 'Bad_NS' is not a namespace name"),
        (["--lease-name", "no/slash"], "--lease-name: 'no/slash' is not an object name"),
        (["--identity", ""], "--identity: '' must be 1 to 253 printable characters"),
    ],
)
def test_bad_lease_flags_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        app.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
