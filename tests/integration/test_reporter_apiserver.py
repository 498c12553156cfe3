"""The reporter against the fake kube-apiserver, over HTTP: the Node's extended
resources and the node's CustomNodeResource, and the fake's own wire behaviour for
both (merge patches, the status subresource, Status errors, preconditions).

The client is ``agent.metaserver.apiserver.ApiServerReportClient``, over the official
``kubernetes`` client.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes.aio import client as aclient

from agent.metaserver import apiserver
from agent.reporter import (
    ReclaimSample,
    ReportClient,
    Reporter,
    ReporterConfig,
    ReportLoop,
    ReportPlanner,
    Target,
    WriteOutcome,
)
from katalyst.clock import FakeClock
from katalyst.qos import parse_quantity
from tests.support.apiserver import (
    CNR_GROUP,
    CNR_PATH,
    CNR_PLURAL,
    CNR_VERSION,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    FakeApiServer,
    node_manifest,
)

NODE = "node-a"
GIB = 1024**3
CPU = "resource.katalyst.kubewharf.io/reclaimed_millicpu"
MEM = "resource.katalyst.kubewharf.io/reclaimed_memory"
NUMA_SOCKETS = {0: 0, 1: 1}

JSON = dict[str, Any]


ClientFactory = Callable[[FakeApiServer], Awaitable[ReportClient]]


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[ClientFactory]:
    """Builds the report client for a started server."""
    closers: list[Callable[[], Awaitable[object]]] = []

    async def make(api: FakeApiServer) -> ReportClient:
        kube = await apiserver.connect(api.kubeconfig(tmp_path / "kubeconfig"))
        closers.append(kube.close)
        return apiserver.ApiServerReportClient(kube)

    yield make
    for close in closers:
        await close()


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer() as server:
        yield server


def _loop(client: ReportClient, clock: FakeClock, **settings: Any) -> ReportLoop:
    config = ReporterConfig(**settings)
    planner = ReportPlanner(config, numa_sockets=NUMA_SOCKETS, clock=clock)
    return ReportLoop(planner, Reporter(client, node_name=NODE), next_sample=_never, clock=clock)


async def _never() -> ReclaimSample | None:  # the tests drive ReportLoop.step
    raise AssertionError("not used")


def _sample(cpus: float, memory: int, cpu_weights: dict[int, float] | None = None) -> ReclaimSample:
    return ReclaimSample(
        cpus=cpus,
        memory_bytes=memory,
        cpu_weights=cpu_weights or {0: 3.0, 1: 1.0},
        memory_weights={0: 1.0, 1: 1.0},
    )


def _amount(resources: JSON, key: str) -> int:
    return parse_quantity(resources[key]).value()


def _numa_zones(cnr: JSON) -> dict[str, JSON]:
    return {
        child["name"]: child
        for socket in cnr["status"]["topologyZone"]
        if socket["type"] == "Socket"
        for child in socket.get("children", [])
        if child["type"] == "Numa"
    }


# ---- the Node ------------------------------------------------------------------------


async def test_the_node_gets_reclaimed_extended_resources(
    api: FakeApiServer, make_client: ClientFactory
) -> None:
    api.create_node(node_manifest(NODE, capacity={"cpu": "8", "memory": "32Gi", "pods": "110"}))
    loop = _loop(await make_client(api), FakeClock())

    report = await loop.step(_sample(2.0, 3 * GIB))

    assert report is not None and set(report.targets) == {Target.NODE, Target.CNR}
    node = api.get_node(NODE)
    assert node is not None
    for field in ("capacity", "allocatable"):
        resources = node["status"][field]
        assert (_amount(resources, CPU), _amount(resources, MEM)) == (2000, 3 * GIB)
        assert resources[CPU] == "2k"  # the API server stores the canonical form
        assert (resources["cpu"], resources["memory"], resources["pods"]) == ("8", "32Gi", "110")
    assert node["status"]["conditions"][0]["type"] == "Ready"
    [patch] = [p for p in api.patches if p.path == f"/api/v1/nodes/{NODE}/status"]
    assert patch.content_type == MERGE_PATCH
    assert patch.body == {
        "status": {
            "capacity": {CPU: "2000", MEM: str(3 * GIB)},
            "allocatable": {CPU: "2000", MEM: str(3 * GIB)},
        }
    }


async def test_a_node_not_registered_yet_is_retried_after_the_back_off(
    api: FakeApiServer, make_client: ClientFactory
) -> None:
    clock = FakeClock()
    loop = _loop(await make_client(api), clock, cnr=False, backoff_initial_s=2.0)

    await loop.step(_sample(1.0, GIB))
    assert loop.reporter.writes == {(Target.NODE, WriteOutcome.FAILED): 1}
    assert loop.reporter.last_error == {Target.NODE: "node status patch: HTTP 404"}

    api.create_node(node_manifest(NODE))
    await clock.advance(0.5)
    assert await loop.step(None) is None  # still backing off (at least half the delay)
    await clock.advance(2.0)
    await loop.step(None)
    node = api.get_node(NODE)
    assert node is not None and _amount(node["status"]["allocatable"], CPU) == 1000


async def test_a_server_error_fails_the_write_and_the_next_one_succeeds(
    api: FakeApiServer, make_client: ClientFactory
) -> None:
    clock = FakeClock()
    api.create_node(node_manifest(NODE))
    loop = _loop(await make_client(api), clock, cnr=False, backoff_initial_s=1.0)
    api.fail_next(1, 500)

    await loop.step(_sample(1.0, GIB))
    await clock.advance(1.0)
    await loop.step(None)

    assert loop.reporter.writes == {
        (Target.NODE, WriteOutcome.FAILED): 1,
        (Target.NODE, WriteOutcome.WRITTEN): 1,
    }


async def test_the_resync_restores_what_a_re_registered_kubelet_zeroed(
    api: FakeApiServer, make_client: ClientFactory
) -> None:
    clock = FakeClock()
    api.create_node(node_manifest(NODE))
    loop = _loop(await make_client(api), clock, cnr=False, resync_s=600.0)
    await loop.step(_sample(1.5, GIB))

    def kubelet_restarted(node: JSON) -> None:
        # The kubelet zeroes every extended resource when it re-registers the node.
        for field in ("capacity", "allocatable"):
            node["status"][field].update({CPU: "0", MEM: "0"})

    api.update_node(NODE, kubelet_restarted)
    await clock.advance(599)
    assert await loop.step(_sample(1.5, GIB)) is None
    await clock.advance(1)
    report = await loop.step(_sample(1.5, GIB))

    assert report is not None and report.targets == {Target.NODE: "resync"}
    node = api.get_node(NODE)
    assert node is not None and node["status"]["capacity"][CPU] == "1500"


# ---- the CNR -------------------------------------------------------------------------


async def test_a_missing_cnr_is_created_and_its_status_written(
    api: FakeApiServer, make_client: ClientFactory
) -> None:
    loop = _loop(await make_client(api), FakeClock(), node_resources=False)

    await loop.step(_sample(2.0, 4 * GIB))

    assert [(r.method, r.path) for r in api.requests] == [
        ("GET", f"{CNR_PATH}/{NODE}"),
        ("POST", CNR_PATH),
        ("GET", f"{CNR_PATH}/{NODE}"),
        ("PATCH", f"{CNR_PATH}/{NODE}/status"),
    ]
    cnr = api.get_cnr(NODE)
    assert cnr is not None
    assert cnr["apiVersion"] == f"{CNR_GROUP}/{CNR_VERSION}"
    assert cnr["kind"] == "CustomNodeResource"
    assert cnr["metadata"]["name"] == NODE
    assert cnr["spec"] == {}
    status = cnr["status"]
    assert status["topologyPolicy"] == "none"  # the CRD's default
    assert status["resources"] == {
        "allocatable": {CPU: "2000", MEM: str(4 * GIB)},
        "capacity": {CPU: "2000", MEM: str(4 * GIB)},
    }
    assert [(z["type"], z["name"], z["resources"]) for z in status["topologyZone"]] == [
        ("Socket", "0", {}),
        ("Socket", "1", {}),
    ]
    zones = _numa_zones(cnr)
    assert _amount(zones["0"]["resources"]["allocatable"], CPU) == 1500
    assert _amount(zones["1"]["resources"]["allocatable"], CPU) == 500
    assert _amount(zones["0"]["resources"]["capacity"], MEM) == 2 * GIB
    assert loop.reporter.writes == {(Target.CNR, WriteOutcome.CREATED): 1}


async def test_an_existing_cnr_is_updated_in_place(
    api: FakeApiServer, make_client: ClientFactory
) -> None:
    clock = FakeClock()
    loop = _loop(await make_client(api), clock, node_resources=False)
    await loop.step(_sample(2.0, 4 * GIB))
    uid = (api.get_cnr(NODE) or {})["metadata"]["uid"]
    api.requests.clear()

    await clock.advance(1)
    await loop.step(_sample(1.0, 4 * GIB))  # a drop: written at once

    assert [(r.method, r.path) for r in api.requests] == [
        ("GET", f"{CNR_PATH}/{NODE}"),
        ("PATCH", f"{CNR_PATH}/{NODE}/status"),
    ]
    cnr = api.get_cnr(NODE)
    assert cnr is not None and cnr["metadata"]["uid"] == uid
    assert cnr["status"]["resources"]["allocatable"][CPU] == "1000"
    assert _amount(_numa_zones(cnr)["0"]["resources"]["allocatable"], CPU) == 750
    assert loop.reporter.writes[Target.CNR, WriteOutcome.WRITTEN] == 1


async def test_what_other_writers_put_in_the_cnr_is_kept(
    api: FakeApiServer, make_client: ClientFactory
) -> None:
    gpu = {"type": "GPU", "name": "gpu-0", "resources": {"capacity": {"nvidia.com/gpu": "1"}}}
    allocation = {"consumer": "default/web/uid-1", "requests": {"cpu": "4"}}
    api.create_cnr(
        {
            "metadata": {"name": NODE, "labels": {"pool": "a"}},
            "spec": {"taints": [{"key": "k", "effect": "NoScheduleForReclaimedTasks"}]},
            "status": {
                "resources": {"allocatable": {"cpu": "16"}, "capacity": {"cpu": "16"}},
                "topologyPolicy": "SingleNUMANodeContainerLevel",
                "topologyZone": [
                    {
                        "type": "Socket",
                        "name": "0",
                        "resources": {},
                        "children": [
                            {
                                "type": "Numa",
                                "name": "0",
                                "resources": {"allocatable": {"cpu": "8"}},
                                "allocations": [allocation],
                            }
                        ],
                    },
                    gpu,
                ],
            },
        }
    )
    loop = _loop(await make_client(api), FakeClock(), node_resources=False)

    await loop.step(_sample(2.0, 4 * GIB))

    cnr = api.get_cnr(NODE)
    assert cnr is not None
    assert cnr["metadata"]["labels"] == {"pool": "a"}
    assert cnr["spec"]["taints"][0]["key"] == "k"
    status = cnr["status"]
    assert status["topologyPolicy"] == "SingleNUMANodeContainerLevel"
    assert status["resources"]["allocatable"] == {"cpu": "16", CPU: "2000", MEM: str(4 * GIB)}
    assert gpu in status["topologyZone"]
    numa0 = _numa_zones(cnr)["0"]
    assert numa0["allocations"] == [allocation]
    assert numa0["resources"]["allocatable"]["cpu"] == "8"
    assert numa0["resources"]["allocatable"][CPU] == "1500"
    assert "1" in _numa_zones(cnr)  # socket 1 and its NUMA node were added
    assert loop.reporter.writes == {(Target.CNR, WriteOutcome.WRITTEN): 1}


class MeddlingClient:
    """Delegates to a client; after its first CNR read, another writer changes the CNR."""

    def __init__(self, inner: ReportClient, api: FakeApiServer) -> None:
        self._inner = inner
        self._api = api
        self.meddled = False

    async def patch_node_status(self, name: str, body: Any) -> int:
        return await self._inner.patch_node_status(name, body)

    async def get_cnr(self, name: str) -> dict[str, Any] | None:
        found = await self._inner.get_cnr(name)
        if found is not None and not self.meddled:
            self.meddled = True

            def add_gpu(cnr: JSON) -> None:
                cnr["status"].setdefault("topologyZone", []).append(
                    {"type": "GPU", "name": "gpu-0", "resources": {}}
                )

            self._api.update_cnr(name, add_gpu)
        return found

    async def create_cnr(self, body: Any) -> int:
        return await self._inner.create_cnr(body)

    async def patch_cnr_status(self, name: str, body: Any) -> int:
        return await self._inner.patch_cnr_status(name, body)


async def test_a_cnr_changed_between_read_and_patch_loses_nothing(
    api: FakeApiServer, make_client: ClientFactory
) -> None:
    api.create_cnr({"metadata": {"name": NODE}, "status": {"resources": {}}})
    client = MeddlingClient(await make_client(api), api)
    loop = _loop(client, FakeClock(), node_resources=False)

    await loop.step(_sample(1.0, GIB))

    patches = [(r.method, r.path) for r in api.requests if r.method == "PATCH"]
    assert len(patches) == 2  # the first was refused with 409 Conflict
    cnr = api.get_cnr(NODE)
    assert cnr is not None
    assert {"type": "GPU", "name": "gpu-0", "resources": {}} in cnr["status"]["topologyZone"]
    assert cnr["status"]["resources"]["allocatable"][CPU] == "1000"
    assert loop.reporter.writes == {(Target.CNR, WriteOutcome.WRITTEN): 1}


async def test_a_deleted_cnr_is_created_again(
    api: FakeApiServer, make_client: ClientFactory
) -> None:
    clock = FakeClock()
    loop = _loop(await make_client(api), clock, node_resources=False)
    await loop.step(_sample(2.0, 4 * GIB))
    api.delete_cnr(NODE)

    await clock.advance(1)
    await loop.step(_sample(1.0, 4 * GIB))

    cnr = api.get_cnr(NODE)
    assert cnr is not None and cnr["status"]["resources"]["capacity"][CPU] == "1000"
    assert loop.reporter.writes == {(Target.CNR, WriteOutcome.CREATED): 2}


# ---- the fake API server's wire ------------------------------------------------------


async def _raw(
    api: FakeApiServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    anonymous: bool = False,
) -> tuple[int, JSON]:
    headers = {"Accept": "application/json"}
    if not anonymous and api.token is not None:
        headers["Authorization"] = f"Bearer {api.token}"
    data = None
    if body is not None:
        headers["Content-Type"] = content_type
        data = aiohttp.payload.JsonPayload(body, content_type=content_type)
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, api.url + path, data=data, headers=headers) as resp,
    ):
        assert resp.content_type == "application/json"
        answer = await resp.json()
        assert isinstance(answer, dict)
        if resp.status >= 400:
            assert answer["code"] == resp.status  # a Status names its own HTTP code
        return resp.status, answer


def _failure(status: JSON) -> tuple[int, str, str]:
    assert (status["kind"], status["apiVersion"], status["status"]) == ("Status", "v1", "Failure")
    return status["code"], status["reason"], status["message"]


async def test_fake_node_patches_merge_and_respect_the_status_subresource(
    api: FakeApiServer,
) -> None:
    api.create_node(node_manifest(NODE, capacity={"cpu": "4", "example.com/dongle": "2"}))
    path = f"/api/v1/nodes/{NODE}"

    code, node = await _raw(
        api,
        "PATCH",
        path + "/status",
        {
            "spec": {"unschedulable": True},
            "metadata": {"labels": {"a": "b"}},
            "status": {"capacity": {"example.com/dongle": None, "cpu": "4000m"}},
        },
        content_type=MERGE_PATCH,
    )
    assert code == 200
    assert node["status"]["capacity"] == {"cpu": "4"}  # null deletes; canonical form
    assert node["spec"] == {}  # /status keeps the spec
    assert node["metadata"]["labels"] == {"a": "b"}  # ... and takes metadata
    version = node["metadata"]["resourceVersion"]

    code, node = await _raw(
        api,
        "PATCH",
        path,
        {"spec": {"unschedulable": True}, "status": {"capacity": {"cpu": "1"}}},
        content_type=MERGE_PATCH,
    )
    assert code == 200
    assert node["spec"] == {"unschedulable": True}
    assert node["status"]["capacity"] == {"cpu": "4"}  # the main resource keeps the status
    assert int(node["metadata"]["resourceVersion"]) > int(version)

    code, again = await _raw(
        api, "PATCH", path, {"spec": {"unschedulable": True}}, content_type=MERGE_PATCH
    )
    assert again["metadata"]["resourceVersion"] == node["metadata"]["resourceVersion"]  # no-op


async def test_fake_node_strategic_merge_merges_conditions_by_type(api: FakeApiServer) -> None:
    api.create_node(node_manifest(NODE))
    code, node = await _raw(
        api,
        "PATCH",
        f"/api/v1/nodes/{NODE}/status",
        {"status": {"conditions": [{"type": "MemoryPressure", "status": "False"}]}},
        content_type=STRATEGIC_MERGE_PATCH,
    )
    assert code == 200
    assert [c["type"] for c in node["status"]["conditions"]] == ["Ready", "MemoryPressure"]

    code, node = await _raw(
        api,
        "PATCH",
        f"/api/v1/nodes/{NODE}/status",
        {"status": {"conditions": [{"type": "MemoryPressure", "status": "False"}]}},
        content_type=MERGE_PATCH,
    )
    assert [c["type"] for c in node["status"]["conditions"]] == ["MemoryPressure"]  # replaced


async def test_fake_node_errors(api: FakeApiServer) -> None:
    code, status = await _raw(
        api, "PATCH", "/api/v1/nodes/ghost/status", {"status": {}}, content_type=MERGE_PATCH
    )
    assert _failure(status) == (404, "NotFound", 'nodes "ghost" not found')
    assert status["details"] == {"name": "ghost", "kind": "nodes"}

    api.create_node(node_manifest(NODE))
    code, status = await _raw(
        api,
        "PATCH",
        f"/api/v1/nodes/{NODE}/status",
        {"status": {"capacity": {"cpu": "lots"}}},
        content_type=MERGE_PATCH,
    )
    assert code == 400
    assert "quantities must match the regular expression" in status["message"]

    code, status = await _raw(
        api,
        "PATCH",
        f"/api/v1/nodes/{NODE}/status",
        {"metadata": {"resourceVersion": "1"}, "status": {}},
        content_type=MERGE_PATCH,
    )
    assert _failure(status) == (
        409,
        "Conflict",
        f'Operation cannot be fulfilled on nodes "{NODE}": the object has been modified; '
        "please apply your changes to the latest version and try again",
    )

    code, status = await _raw(
        api,
        "PATCH",
        f"/api/v1/nodes/{NODE}/status",
        [{"op": "add", "path": "/status/capacity/x", "value": "1"}],
        content_type="application/json-patch+json",
    )
    assert code == 415
    assert "does not implement application/json-patch+json" in status["message"]

    code, status = await _raw(
        api,
        "PATCH",
        f"/api/v1/nodes/{NODE}/status",
        {"status": {}},
        content_type="application/json",
    )
    assert _failure(status)[:2] == (415, "UnsupportedMediaType")


async def test_fake_cnr_create(api: FakeApiServer) -> None:
    body = {
        "apiVersion": f"{CNR_GROUP}/{CNR_VERSION}",
        "kind": "CustomNodeResource",
        "metadata": {"name": NODE, "namespace": "ignored"},
        "spec": {},
        "status": {"resources": {"allocatable": {"cpu": "1"}}},
    }
    code, created = await _raw(api, "POST", CNR_PATH, body)
    assert code == 201
    assert "status" not in created  # the status subresource: a create drops it
    assert "namespace" not in created["metadata"]  # cluster-scoped
    assert created["metadata"]["generation"] == 1
    assert created["metadata"]["uid"]

    code, status = await _raw(api, "POST", CNR_PATH, body)
    assert _failure(status) == (
        409,
        "AlreadyExists",
        f'{CNR_PLURAL}.{CNR_GROUP} "{NODE}" already exists',
    )
    assert status["details"] == {"name": NODE, "group": CNR_GROUP, "kind": CNR_PLURAL}

    nameless = copy.deepcopy(body)
    nameless["metadata"] = {}
    code, status = await _raw(api, "POST", CNR_PATH, nameless)
    assert _failure(status)[:2] == (422, "Invalid")
    assert "metadata.name: Required value" in status["message"]

    wrong = {**body, "apiVersion": "node.katalyst.kubewharf.io/v1"}
    code, status = await _raw(api, "POST", CNR_PATH, wrong)
    assert code == 400
    assert "does not match the expected API version" in status["message"]


async def test_fake_cnr_get_and_patch(api: FakeApiServer) -> None:
    code, status = await _raw(api, "GET", f"{CNR_PATH}/ghost")
    assert _failure(status) == (404, "NotFound", f'{CNR_PLURAL}.{CNR_GROUP} "ghost" not found')

    api.create_cnr({"metadata": {"name": NODE}, "spec": {}})
    path = f"{CNR_PATH}/{NODE}"

    code, status = await _raw(
        api, "PATCH", path + "/status", {"status": {}}, content_type=STRATEGIC_MERGE_PATCH
    )
    assert _failure(status) == (
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, "
        "application/apply-patch+yaml",
    )

    code, status = await _raw(
        api, "PATCH", path + "/status", {"status": {"topologyZone": []}}, content_type=MERGE_PATCH
    )
    assert _failure(status)[:2] == (422, "Invalid")
    assert "status.resources: Required value" in status["message"]

    code, status = await _raw(
        api,
        "PATCH",
        path + "/status",
        {"status": {"resources": {"allocatable": {CPU: "lots"}}}},
        content_type=MERGE_PATCH,
    )
    assert code == 422 and f"status.resources.allocatable.{CPU}: Invalid value" in status["message"]

    code, cnr = await _raw(
        api,
        "PATCH",
        path + "/status",
        {"spec": {"taints": []}, "status": {"resources": {"capacity": {CPU: 1500}}}},
        content_type=MERGE_PATCH,
    )
    assert code == 200
    assert cnr["spec"] == {}  # /status takes only the status
    assert cnr["status"] == {"resources": {"capacity": {CPU: 1500}}, "topologyPolicy": "none"}

    code, cnr = await _raw(
        api,
        "PATCH",
        path,
        {"spec": {"taints": []}, "status": {"resources": {}}},
        content_type=MERGE_PATCH,
    )
    assert code == 200
    assert cnr["spec"] == {"taints": []}
    assert cnr["metadata"]["generation"] == 2
    assert cnr["status"]["resources"] == {"capacity": {CPU: 1500}}  # status ignored here

    code, status = await _raw(
        api,
        "PATCH",
        path + "/status",
        {"metadata": {"resourceVersion": "1"}, "status": {"resources": {}}},
        content_type=MERGE_PATCH,
    )
    assert _failure(status)[:2] == (409, "Conflict")
    assert "the object has been modified" in status["message"]


async def test_fake_cnr_refuses_anonymous_writes(api: FakeApiServer) -> None:
    api.create_cnr({"metadata": {"name": NODE}})
    code, status = await _raw(
        api,
        "PATCH",
        f"{CNR_PATH}/{NODE}/status",
        {"status": {"resources": {}}},
        content_type=MERGE_PATCH,
        anonymous=True,
    )
    assert code == 403
    assert _failure(status) == (
        403,
        "Forbidden",
        f'{CNR_PLURAL}.{CNR_GROUP} "{NODE}" is forbidden: User "system:anonymous" cannot '
        f'patch resource "{CNR_PLURAL}/status" in API group "{CNR_GROUP}" at the cluster scope',
    )


async def test_fake_speaks_the_official_clients_dialect(api: FakeApiServer) -> None:
    """kubernetes.aio's own calls: CoreV1Api.patch_node_status (which sends a strategic
    merge patch) and the CustomObjectsApi (merge patches for custom resources)."""
    api.create_node(node_manifest(NODE))
    config = aclient.Configuration(host=api.url, api_key={"BearerToken": f"Bearer {api.token}"})
    async with aclient.ApiClient(config) as client:
        core = aclient.CoreV1Api(client)
        node = await core.patch_node_status(NODE, {"status": {"capacity": {CPU: "1000"}}})
        assert node.status is not None and node.status.capacity is not None
        assert node.status.capacity[CPU] == "1k"
        assert api.patches[-1].content_type == STRATEGIC_MERGE_PATCH

        custom = aclient.CustomObjectsApi(client)
        with pytest.raises(aclient.ApiException) as missing:
            await custom.get_cluster_custom_object(CNR_GROUP, CNR_VERSION, CNR_PLURAL, NODE)
        assert missing.value.status == 404
        await custom.create_cluster_custom_object(
            CNR_GROUP,
            CNR_VERSION,
            CNR_PLURAL,
            {
                "apiVersion": f"{CNR_GROUP}/{CNR_VERSION}",
                "kind": "CustomNodeResource",
                "metadata": {"name": NODE},
            },
        )
        patched: Any = await custom.patch_cluster_custom_object_status(
            CNR_GROUP,
            CNR_VERSION,
            CNR_PLURAL,
            NODE,
            {"status": {"resources": {"allocatable": {CPU: "1000"}}}},
        )
        assert patched["status"]["resources"]["allocatable"] == {CPU: "1000"}
        assert api.patches[-1].content_type == MERGE_PATCH
