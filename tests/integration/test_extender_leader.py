"""Two replicas of the scheduler extender behind one selector-less Service: both are
ready once synced; the Lease's holder alone answers kube-scheduler and publishes its
address as the one endpoint of the EndpointSlice ``katalyst-scheduler-extender-leader``
(which routes the Service); the standby answers 503 and closes the connection; a
stopped leader releases the Lease and withdraws its address (its own only), and the
standby takes over, publishes its address and serves from its own synced watches.

Each replica is the whole process (:func:`scheduler_plugins.app.run`, or the console
script for SIGTERM) against the fake API server (endpointslices registered), over
real HTTP on loopback, under the RBAC the manifests grant the extender (its
User-Agent). Each replica gets the downward API's ``$POD_NAME``, ``$POD_NAMESPACE``,
``$POD_IP`` and ``$NODE_NAME``. The elector and the slice's retries and checks run on
a shared :class:`FakeClock`: a standby tries again only when the test advances it, and
the lease is an hour of virtual time, so a takeover within the few minutes of virtual
time a test advances can only come from a release. Real-time waits are bounds on work
done by the servers, never timing assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from katalyst.clock import FakeClock
from katalyst.leader import (
    JITTER_FACTOR,
    LeaseConflict,
    LeaseError,
    acquired,
    lease_object,
    released,
)
from scheduler_plugins import apiserver, app
from scheduler_plugins.replica import SliceConflict, SliceError
from tests.integration.test_extender_apiserver import free_port, names
from tests.support import rbac
from tests.support.apiserver import (
    CUSTOM_NODE_RESOURCES,
    ENDPOINT_SLICES,
    LEASES,
    FakeApiServer,
)
from tests.unit.scheduler.helpers import cnr_json, gpu_zone, pod_json

NS = "katalyst-system"
LEASE = "katalyst-scheduler-extender"
SERVICE = "katalyst-scheduler-extender"
SLICE = "katalyst-scheduler-extender-leader"
RETRY_S = 2.0
TIMINGS = ["--lease-duration-s", "3600", "--renew-deadline-s", "1800", "--retry-period-s", "2"]
"""An hour's lease and a half-hour renew deadline: virtual time advanced by a test
never expires a lease nor makes a leader step down; only a release hands over."""
MAX_RETRY_S = RETRY_S * (1 + JITTER_FACTOR)
"""The longest a standby sleeps between tries."""
REASSERT_S = 30.0
"""How often the leader checks its slice."""
IPS = {"ext-a": "10.0.0.1", "ext-b": "10.0.0.2", "solo": "10.0.0.3", "ext-process": "10.0.0.4"}


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
    ip: str
    port: int
    stop: asyncio.Event
    task: asyncio.Task[None]
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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

    def routed(self) -> dict[str, Any]:
        """The slice that routes the Service to this replica, as kube-proxy reads it."""
        return {
            "labels": {
                "kubernetes.io/service-name": SERVICE,
                "endpointslice.kubernetes.io/managed-by": "katalyst-scheduler-extender",
            },
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": [self.ip],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "namespace": NS, "name": self.identity},
                    "nodeName": f"node-{self.identity}",
                }
            ],
            "ports": [{"name": "http", "port": self.port, "protocol": "TCP"}],
        }


def routing(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    return {
        "labels": obj["metadata"].get("labels"),
        "addressType": obj.get("addressType"),
        "endpoints": obj.get("endpoints"),
        "ports": obj.get("ports"),
    }


@dataclass
class Cluster:
    api: FakeApiServer
    kubeconfig: Path
    clock: FakeClock
    session: aiohttp.ClientSession
    running: list[Extender]

    def slice(self) -> dict[str, Any] | None:
        return self.api.get_object(ENDPOINT_SLICES, SLICE, namespace=NS)

    def addresses(self) -> list[str] | None:
        """The addresses the Service routes to; None: there is no slice."""
        obj = self.slice()
        if obj is None:
            return None
        return [a for e in obj.get("endpoints") or [] for a in e["addresses"]]

    def slice_writes(self) -> list[tuple[str, int]]:
        """(method, HTTP status) of each write of an EndpointSlice in the extender's
        namespace, in order (a create refused before its body is read has no name)."""
        return [
            (w.method, w.code)
            for w in self.api.writes
            if w.resource == ENDPOINT_SLICES.qualified and w.namespace == NS
        ]

    def slice_requests(self) -> list[str]:
        return [r.method for r in self.api.requests if "/endpointslices" in r.path]

    def put_slice(self, ip: str) -> None:
        """Another writer (a crashed container, an operator) makes the slice route to
        ``ip``."""
        endpoints = [{"addresses": [ip], "conditions": {"ready": True}}]
        if self.slice() is None:
            self.api.create_object(
                ENDPOINT_SLICES,
                {
                    "metadata": {
                        "name": SLICE,
                        "namespace": NS,
                        "labels": {"kubernetes.io/service-name": SERVICE},
                    },
                    "addressType": "IPv4",
                    "endpoints": endpoints,
                    "ports": [{"name": "http", "port": 8888, "protocol": "TCP"}],
                },
            )
        else:

            def mutate(obj: dict[str, Any]) -> None:
                obj["endpoints"] = endpoints

            self.api.update_object(ENDPOINT_SLICES, SLICE, mutate, namespace=NS)

    async def start(
        self, identity: str, *flags: str, elect: bool = True, pod_ip: bool = True
    ) -> Extender:
        """Start the replica whose pod (and identity) is ``identity``."""
        port = free_port()
        argv = ["--listen", f"127.0.0.1:{port}", "--kubeconfig", str(self.kubeconfig), *flags]
        if elect:
            argv += ["--leader-elect", *TIMINGS]
        args = app.parse_args(argv)
        stop = asyncio.Event()
        env = {"POD_NAME": identity, "POD_NAMESPACE": NS, "NODE_NAME": f"node-{identity}"}
        if pod_ip:
            env["POD_IP"] = IPS[identity]
        task = asyncio.create_task(app.run(args, stop, clock=self.clock, env=env))
        extender = Extender(identity, IPS[identity], port, stop, task, self.session)
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
        api.register(ENDPOINT_SLICES)
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

    # No Lease and no slice yet: the first replica creates both.
    a = await cluster.start("ext-a")

    async def a_routed() -> bool:
        return routing(cluster.slice()) == a.routed()

    await until(a_routed, "ext-a to lead and publish its address")
    b = await cluster.start("ext-b")
    reason = "standby: ext-a holds the lease, not this replica (ext-b)"

    async def b_saw_a() -> bool:
        return await b.call("filter", names(first, "g")) == (503, {"Error": reason})

    await until(b_saw_a, "ext-b to find the Lease held")
    # Both are Ready once synced: the standby is a spare that a rollout and a
    # PodDisruptionBudget count. Only the leader's address is in the slice.
    await until(a.ready, "ext-a to sync")
    await until(b.ready, "ext-b to sync")
    assert (await a.readyz(), await b.readyz()) == ((200, "ok"), (200, "ok"))
    assert cluster.lease()["holderIdentity"] == "ext-a"
    assert routing(cluster.slice()) == a.routed()
    # One write: ext-a's create. ext-b read the slice at its start (was its own address
    # left there?) and left ext-a's alone. No pod was written.
    assert cluster.slice_writes() == [("POST", 201)]
    assert cluster.slice_requests() == ["GET", "GET", "POST", "GET"]
    assert api.patches == []
    assert not [w for w in api.writes if w.resource == "pods" and not w.subresource]

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
    # takes the address out of the slice before the process exits.
    await a.shut_down()
    spec = cluster.lease()
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)
    assert cluster.addresses() == []
    # In that order (ext-b sends nothing while the clock stands still).
    writes = [(r.method, r.path) for r in api.requests if r.method in ("POST", "PUT", "PATCH")]
    assert writes[-2:] == [
        ("PUT", LEASES.object_path(LEASE, NS)),
        ("PUT", ENDPOINT_SLICES.object_path(SLICE, NS)),
    ]

    # The standby takes it at its next try (the clock still far from the hour's expiry)
    # and publishes its own address.
    async def b_routed() -> bool:
        await cluster.clock.advance(MAX_RETRY_S)
        return routing(cluster.slice()) == b.routed()

    await until(b_routed, "ext-b to take over and publish its address")
    assert cluster.clock.monotonic() < 600
    spec = cluster.lease()
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("ext-b", 3600)
    assert spec["leaseTransitions"] == 1
    assert cluster.slice_writes() == [("POST", 201), ("PUT", 200), ("PUT", 200)]
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


async def test_a_standby_closes_the_connection_of_each_503(cluster: Cluster) -> None:
    a = await cluster.start("ext-a")

    async def a_leads() -> bool:
        return cluster.lease().get("holderIdentity") == "ext-a"

    await until(a_leads, "ext-a to take the Lease")
    b = await cluster.start("ext-b")
    body: dict[str, Any] = {"Pod": {}, "NodeNames": []}

    async def b_standby() -> bool:
        return (await b.call("filter", body))[0] == 503

    await until(b_standby, "ext-b to find the Lease held")

    # kube-scheduler's client keeps connections alive; count the ones it opens.
    opened = 0

    async def on_open(*_: object) -> None:
        nonlocal opened
        opened += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_open)
    async with aiohttp.ClientSession(trace_configs=[trace]) as keep_alive:

        async def post(extender: Extender) -> tuple[int, str | None]:
            async with keep_alive.post(f"{extender.url}/filter", json=body) as resp:
                await resp.read()
                return resp.status, resp.headers.get("Connection")

        # The leader's answers keep the connection: two calls, one connection.
        assert [await post(a), await post(a)] == [(200, None), (200, None)]
        assert opened == 1
        async with keep_alive.get(f"{b.url}/healthz") as resp:
            assert resp.status == 200
        assert opened == 2
        # The standby's 503 goes on that same connection, and closes it: the next call
        # needs a new one (which the Service would route to the current leader).
        assert await post(b) == (503, "close")
        assert opened == 2
        assert await post(b) == (503, "close")
        assert opened == 3

    # On the wire: an HTTP/1.1 request (keep-alive by default) is answered, then the
    # standby closes the connection (EOF); the bound only keeps a bug from hanging.
    reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
    try:
        writer.write(
            b"POST /filter HTTP/1.1\r\nHost: extender\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head = answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 503 Service Unavailable"
    assert b"Connection: close" in head
    assert reader.at_eof()


async def test_a_stale_address_is_removed_at_start_and_another_leaders_is_kept(
    cluster: Cluster,
) -> None:
    api = cluster.api
    # ext-b's previous container crashed while leading and left its address; ext-a
    # has taken the Lease since (ext-a is not running in this test: the Lease is an
    # hour's, so ext-b stays a standby).
    record = acquired(None, identity="ext-a", wall=cluster.clock.wall(), duration_s=3600)
    api.create_object(LEASES, lease_object(record, namespace=NS, name=LEASE))
    cluster.put_slice(IPS["ext-b"])
    # The API server fails ext-b's first three requests: nothing else is sent now (the
    # clock stands still), and they are its CNR list, its pod list and its read of the
    # slice, which goes before it campaigns.
    api.fail_next(3, 500)
    b = await cluster.start("ext-b")
    reason = "standby: ext-a holds the lease, not this replica (ext-b)"

    async def b_standby() -> bool:
        return await b.call("filter", {"Pod": {}, "NodeNames": []}) == (503, {"Error": reason})

    await until(b_standby, "ext-b to campaign and find the Lease held")
    assert cluster.addresses() == [IPS["ext-b"]]
    assert cluster.slice_requests() == ["GET"]

    # The failure did not stop the campaign nor the verbs' rule; the read is retried
    # with backoff (virtual time) and the stale address goes (a conditional update).
    async def stale_gone() -> bool:
        await cluster.clock.advance(0.5)
        return cluster.addresses() == []

    await until(stale_gone, "ext-b to remove its stale address")
    assert cluster.slice_writes() == [("PUT", 200)]
    await until(b.ready, "ext-b's watches to list again")

    # Another replica's address: a standby never removes it, at its stop either.
    cluster.put_slice(IPS["ext-a"])
    await b.shut_down()
    assert cluster.addresses() == [IPS["ext-a"]]
    assert cluster.slice_writes() == [("PUT", 200)]


async def test_a_leader_withdraws_only_its_own_address(cluster: Cluster) -> None:
    a = await cluster.start("ext-a")

    async def a_routed() -> bool:
        return cluster.addresses() == [a.ip] and await a.ready()

    await until(a_routed, "ext-a to lead and publish its address")
    b = await cluster.start("ext-b")

    async def b_standby() -> bool:
        return (await b.call("filter", {"Pod": {}, "NodeNames": []}))[0] == 503

    await until(b_standby, "ext-b to find the Lease held")
    # Someone else's address gets in (as a successor's would after a lost Lease):
    # stopping, ext-a reads the slice, finds it not its own, and leaves it.
    cluster.put_slice("10.0.0.7")
    await a.shut_down()
    assert cluster.addresses() == ["10.0.0.7"]
    assert cluster.slice_writes() == [("POST", 201)]
    assert cluster.slice_requests()[-1] == "GET"
    # ext-b, leading at its next try, replaces it with its own.

    async def b_routed() -> bool:
        await cluster.clock.advance(MAX_RETRY_S)
        return routing(cluster.slice()) == b.routed()

    await until(b_routed, "ext-b to take over and publish its address")
    assert cluster.slice_writes() == [("POST", 201), ("PUT", 200)]


async def test_the_leader_restores_a_slice_deleted_or_edited_by_someone_else(
    cluster: Cluster,
) -> None:
    a = await cluster.start("ext-a")

    async def a_routed() -> bool:
        return routing(cluster.slice()) == a.routed()

    await until(a_routed, "ext-a to lead and publish its address")
    cluster.api.delete_object(ENDPOINT_SLICES, SLICE, namespace=NS)

    # The next check (every 30 s of virtual time) recreates it.
    async def restored() -> bool:
        await cluster.clock.advance(REASSERT_S / 3)
        return routing(cluster.slice()) == a.routed()

    await until(restored, "ext-a to recreate its slice")
    assert cluster.slice_writes() == [("POST", 201), ("POST", 201)]
    cluster.put_slice("10.0.0.7")
    await until(restored, "ext-a to restore its slice")
    assert cluster.slice_writes() == [("POST", 201), ("POST", 201), ("PUT", 200)]
    # While it routes to the leader, a check is a read: nothing is written.
    reads = cluster.slice_requests().count("GET")

    async def checked_twice() -> bool:
        await cluster.clock.advance(REASSERT_S / 3)
        return cluster.slice_requests().count("GET") >= reads + 2

    await until(checked_twice, "two more checks")
    assert len(cluster.slice_writes()) == 3


async def test_a_refused_write_is_retried_and_the_leader_answers_meanwhile(
    cluster: Cluster,
) -> None:
    api = cluster.api
    # The chart applied without the extender's endpointslices grant yet (only get):
    # the create is Forbidden.
    read_only = rbac.policy_from_objects(
        [
            {
                "kind": "Role",
                "metadata": {"name": "read-slices", "namespace": NS},
                "rules": [
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["get"],
                    }
                ],
            },
            {
                "kind": "RoleBinding",
                "metadata": {"name": "read-slices", "namespace": NS},
                "roleRef": {"kind": "Role", "name": "read-slices"},
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "namespace": NS,
                        "name": "katalyst-scheduler-extender",
                    }
                ],
            },
        ]
    )
    shipped = rbac.shipped_policy()
    api.rbac = rbac.Policy(
        tuple(g for g in shipped.grants if "endpointslices" not in g.resources) + read_only.grants
    )
    a = await cluster.start("ext-a")

    async def refused() -> bool:
        return cluster.slice_writes() == [("POST", 403)]

    await until(refused, "ext-a's create to be refused")
    # The Lease, not the slice, decides who answers.
    await until(a.ready, "ext-a to sync")
    assert (await a.call("filter", {"Pod": {}, "NodeNames": []}))[0] == 200
    assert cluster.slice() is None
    assert await endpoint_series(a) == (0.0, 1.0)  # /metrics: no write, one failure

    # Granted, the create goes through at the next retry (backoff from 0.5 s, jittered).
    api.rbac = True

    async def published() -> bool:
        await cluster.clock.advance(0.5)
        return routing(cluster.slice()) == a.routed()

    await until(published, "ext-a to publish its address")
    assert cluster.slice_writes() == [("POST", 403), ("POST", 201)]
    assert await endpoint_series(a) == (1.0, 0.0)


async def endpoint_series(extender: Any) -> tuple[float, float]:
    """(writes, failures in a row) of the leader's EndpointSlice, from its /metrics."""
    async with extender.session.get(f"{extender.url}/metrics") as resp:
        text = await resp.text()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return (
        values["katalyst_extender_endpoint_writes_total"],
        values["katalyst_extender_endpoint_failures"],
    )


async def test_a_leader_that_has_not_synced_is_not_ready(tmp_path: Path) -> None:
    # No CRD for CNRs: their list is a 404 until the CRD is installed.
    async with (
        FakeApiServer(custom_resources=(), bookmark_interval=0.05) as api,
        aiohttp.ClientSession() as session,
    ):
        api.register(ENDPOINT_SLICES)
        cluster = Cluster(api, api.kubeconfig(tmp_path / "kubeconfig"), FakeClock(), session, [])
        try:
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


async def test_without_leader_election_nothing_is_published(cluster: Cluster) -> None:
    # $POD_IP is set (start() passes it), but without --leader-elect there is no slice
    # to keep: none is read or written.
    a = await cluster.start("solo", elect=False)
    await until(a.ready, "the watches to sync")
    pod = cluster.api.create_pod(pod_json("p", uid="uid-p", gpu_memory=1024))
    assert (await a.call("filter", names(pod)))[0] == 200
    await a.shut_down()
    assert cluster.lease() == {}
    assert not any(r.path.startswith("/apis/coordination.k8s.io") for r in cluster.api.requests)
    assert cluster.slice_requests() == []
    assert cluster.api.patches == []


async def test_without_pod_ip_the_leader_warns_and_publishes_nothing(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="scheduler_plugins.app")
    a = await cluster.start("ext-a", pod_ip=False)

    async def leads() -> bool:
        return cluster.lease().get("holderIdentity") == "ext-a" and await a.ready()

    await until(leads, "ext-a to take the Lease")
    assert (await a.call("filter", {"Pod": {}, "NodeNames": []}))[0] == 200
    await a.shut_down()
    assert cluster.slice_requests() == []
    assert (
        "leader election: no $POD_IP, so the leader publishes no EndpointSlice; the "
        f"Service {SERVICE} does not route to this replica"
    ) in caplog.messages


async def test_sigterm_releases_the_lease_and_withdraws_the_address(tmp_path: Path) -> None:
    async with FakeApiServer(bookmark_interval=0.05) as api:
        api.register(ENDPOINT_SLICES)
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        log_file = (tmp_path / "stderr").open("wb")
        port = free_port()
        # --identity and --namespace default to the downward API's variables.
        env = {
            **os.environ,
            "POD_NAME": "ext-process",
            "POD_NAMESPACE": NS,
            "POD_IP": IPS["ext-process"],
        }
        env.pop("NODE_NAME", None)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scheduler_plugins.app",
            "--listen",
            f"127.0.0.1:{port}",
            "--kubeconfig",
            str(kubeconfig),
            "--leader-elect",
            stderr=log_file,
            env=env,
        )

        def addresses() -> list[str] | None:
            obj = api.get_object(ENDPOINT_SLICES, SLICE, namespace=NS)
            return None if obj is None else [a for e in obj["endpoints"] for a in e["addresses"]]

        try:

            async def leads() -> bool:
                obj = api.get_object(LEASES, LEASE, namespace=NS)
                return (
                    obj is not None
                    and obj["spec"]["holderIdentity"] == "ext-process"
                    and addresses() == [IPS["ext-process"]]
                )

            await until(leads, "the process to take the Lease and publish its address")
            stored = api.get_object(ENDPOINT_SLICES, SLICE, namespace=NS)
            assert stored is not None
            # Without $NODE_NAME: no nodeName; the port is --listen's.
            assert stored["endpoints"] == [
                {
                    "addresses": [IPS["ext-process"]],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "namespace": NS, "name": "ext-process"},
                }
            ]
            assert stored["ports"] == [{"name": "http", "port": port, "protocol": "TCP"}]
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
        assert addresses() == []
        stderr = (tmp_path / "stderr").read_text()
        assert "leader election: ext-process released the lease" in stderr
        assert (
            f"endpointslice {NS}/{SLICE}: published {IPS['ext-process']}:{port} (created)"
        ) in stderr
        assert (
            f"endpointslice {NS}/{SLICE}: withdrew {IPS['ext-process']} (no endpoint until "
            "the next leader)"
        ) in stderr


# ---- the API clients --------------------------------------------------------------------


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


async def test_the_slice_client_reads_creates_and_updates_conditionally(tmp_path: Path) -> None:
    async with FakeApiServer() as api:
        api.register(ENDPOINT_SLICES)
        client = await apiserver.connect(api.kubeconfig(tmp_path / "kubeconfig"))
        try:
            slices = apiserver.ApiServerEndpointSlice(client, namespace=NS, name=SLICE)
            assert slices.where == f"endpointslice {NS}/{SLICE}"
            assert await slices.get() is None
            body = {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": SLICE, "labels": {"kubernetes.io/service-name": SERVICE}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}],
                "ports": [{"name": "http", "port": 8888, "protocol": "TCP"}],
            }
            created = await slices.create(body)
            version = created["metadata"]["resourceVersion"]
            assert (created["metadata"]["namespace"], created["endpoints"]) == (
                NS,
                body["endpoints"],
            )
            assert await slices.get() == created
            with pytest.raises(SliceConflict, match="already exists"):
                await slices.create(body)

            emptied = await slices.update({**created, "endpoints": []})
            assert emptied["endpoints"] == []
            assert emptied["metadata"]["resourceVersion"] != version
            # Written at a resourceVersion that is no longer the slice's: a lost race.
            with pytest.raises(SliceConflict, match="has been modified"):
                await slices.update(created)
            api.delete_object(ENDPOINT_SLICES, SLICE, namespace=NS)
            with pytest.raises(SliceConflict, match="not found"):
                await slices.update(emptied)

            api.fail_next(1, 500)
            with pytest.raises(SliceError) as failed:
                await slices.get()
            assert not isinstance(failed.value, SliceConflict)
            assert f"endpointslice {NS}/{SLICE}: HTTP 500" in str(failed.value)
            # The extender's Role is in its own namespace: anywhere else is Forbidden.
            elsewhere = apiserver.ApiServerEndpointSlice(client, namespace="default", name=SLICE)
            with pytest.raises(SliceError, match="HTTP 403"):
                await elsewhere.get()
            # No answer at all.
            await api.stop()
            with pytest.raises(SliceError, match="API server"):
                await slices.get()
        finally:
            await client.close()  # type: ignore[no-untyped-call]


def test_lease_flags_and_their_defaults() -> None:
    args: argparse.Namespace = app.parse_args([])
    assert (args.leader_elect, args.service) == (False, SERVICE)
    lease = app.lease_options(args, {"POD_NAME": "ext-0", "POD_NAMESPACE": "sched"})
    assert (lease.namespace, lease.name, lease.identity) == ("sched", LEASE, "ext-0")
    settings = lease.settings
    assert (settings.duration_s, settings.renew_deadline_s, settings.retry_period_s) == (
        15,
        10.0,
        2.0,
    )
    lease = app.lease_options(args, {})
    assert lease.namespace == NS
    assert lease.identity  # <hostname>_<random>
    assert lease.identity != app.lease_options(args, {}).identity
    flagged = app.parse_args(["--namespace", "x", "--identity", "me", "--lease-name", "l"])
    assert app.lease_options(flagged, {"POD_NAME": "p", "POD_NAMESPACE": "q"}).identity == "me"


def test_the_endpoint_comes_from_the_downward_api() -> None:
    pod = {"POD_NAME": "ext-0", "POD_NAMESPACE": "sched", "POD_IP": "10.1.2.3", "NODE_NAME": "n"}
    # Without --leader-elect nothing is published, whatever the environment says.
    assert app.lease_options(app.parse_args([]), pod).endpoint is None
    elect = app.parse_args(["--leader-elect", "--listen", ":9000", "--service", "sched-ext"])
    endpoint = app.lease_options(elect, pod).endpoint
    assert endpoint is not None
    assert (endpoint.service, endpoint.namespace, endpoint.slice_name) == (
        "sched-ext",
        "sched",
        "sched-ext-leader",
    )
    assert (endpoint.ip, endpoint.port, endpoint.pod, endpoint.node) == (
        "10.1.2.3",
        9000,
        "ext-0",
        "n",
    )
    # The slice goes with the Service, in the pod's namespace (else the Lease's).
    endpoint = app.lease_options(elect, {"POD_IP": "fd00::a"}).endpoint
    assert endpoint is not None
    assert (endpoint.namespace, endpoint.address_type, endpoint.pod, endpoint.node) == (
        NS,
        "IPv6",
        "",
        "",
    )
    assert app.lease_options(elect, {"POD_NAME": "ext-0"}).endpoint is None


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--service", "Bad_Name"], {}, "argument --service: 'Bad_Name' is not a Service name"),
        (["--leader-elect"], {"POD_IP": "10.0.0"}, "$POD_IP: '10.0.0' is not an IPv4 or IPv6"),
    ],
)
def test_a_bad_service_or_pod_ip_exits_2(
    argv: list[str],
    env: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exc:
        app.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


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
