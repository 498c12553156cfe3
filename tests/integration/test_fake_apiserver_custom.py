"""The fake kube-apiserver's custom resources (:mod:`tests.support.apiserver`),
driven by the official ``kubernetes`` client's ``CustomObjectsApi`` over HTTP: the
apiextensions-apiserver's rules for create, replace, patch, the status subresource,
delete preconditions and watch, as a controller and an agent will meet them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes import client as sclient
from kubernetes import watch as swatch
from kubernetes.aio import client as aclient

from tests.integration.test_fake_apiserver import (
    drain,
    new_watch,
    raw_lines,
    status_of,
    summary,
    take,
)
from tests.support.apiserver import (
    ADMIN_QOS_CONFIGURATIONS,
    CONFIG_GROUP,
    CONFIG_VERSION,
    CUSTOM_NODE_CONFIGS,
    CUSTOM_NODE_RESOURCES,
    JSON_PATCH,
    KATALYST_CUSTOM_CONFIGS,
    STRATEGIC_MERGE_PATCH,
    ApiError,
    FakeApiServer,
    Obj,
    RecordedWrite,
    custom_resource,
    object_manifest,
)

G, V = CONFIG_GROUP, CONFIG_VERSION
AQC = ADMIN_QOS_CONFIGURATIONS
CNC = CUSTOM_NODE_CONFIGS
NS = "katalyst-system"


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer(bookmark_interval=0.05) as server:
        yield server


@pytest.fixture
async def custom(api: FakeApiServer) -> AsyncIterator[aclient.CustomObjectsApi]:
    config = aclient.Configuration(host=api.url, api_key={"BearerToken": f"Bearer {api.token}"})
    async with aclient.ApiClient(config) as client:
        yield aclient.CustomObjectsApi(client)


def obj(value: object) -> Obj:
    """A custom object as the client returns it (a dict)."""
    assert isinstance(value, dict)
    return value


def aqc(name: str, *, spec: Obj | None = None, labels: dict[str, str] | None = None) -> Obj:
    return object_manifest(AQC, name, namespace=NS, labels=labels, spec=spec or {"priority": 0})


async def create_aqc(custom: aclient.CustomObjectsApi, body: Obj) -> Obj:
    return obj(await custom.create_namespaced_custom_object(G, V, NS, AQC.plural, body))


async def error_of(call: Any) -> tuple[int, Obj]:
    """The HTTP status and the ``Status`` of a call that must fail."""
    with pytest.raises(aclient.ApiException) as caught:
        await call
    return caught.value.status, status_of(caught.value)


def rv(o: Obj) -> str:
    return str(o["metadata"]["resourceVersion"])


# --- create, get, list ---------------------------------------------------------------


async def test_create_sets_what_the_server_owns_and_drops_the_status(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    before = int(api.resource_version)
    body = aqc("pool-batch")
    body["metadata"].update(
        uid="client-chosen", generation=7, creationTimestamp="2000-01-01T00:00:00Z"
    )
    body["status"] = {"observedGeneration": 3}

    created = await create_aqc(custom, body)
    status, duplicate = await error_of(create_aqc(custom, aqc("pool-batch")))

    meta = created["metadata"]
    assert meta["uid"] not in (None, "client-chosen")
    assert meta["creationTimestamp"] != "2000-01-01T00:00:00Z"
    assert meta["generation"] == 1
    assert meta["resourceVersion"] == str(before + 1)
    assert meta["namespace"] == NS
    assert "status" not in created  # the status subresource: a create drops it
    assert created["kind"] == "AdminQoSConfiguration"
    assert created["apiVersion"] == f"{G}/{V}"
    assert api.get_object(AQC, "pool-batch", namespace=NS) == created
    assert status == 409
    assert duplicate["reason"] == "AlreadyExists"
    assert duplicate["message"] == f'adminqosconfigurations.{G} "pool-batch" already exists'
    assert duplicate["details"] == {
        "name": "pool-batch",
        "group": G,
        "kind": "adminqosconfigurations",
    }


async def test_generate_name(custom: aclient.CustomObjectsApi) -> None:
    body = aqc("")
    body["metadata"] = {"generateName": "override-"}

    created = await create_aqc(custom, body)

    name = created["metadata"]["name"]
    assert name.startswith("override-") and len(name) == len("override-") + 5


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            lambda b: b.pop("kind"),
            400,
            "the object provided is unrecognized (must be of type AdminQoSConfiguration): "
            "Object 'Kind' is missing in",
        ),
        (
            lambda b: b.update(apiVersion=f"{G}/v1"),
            400,
            f"the API version in the data ({G}/v1) does not match the expected API version "
            f"({G}/{V})",
        ),
        (
            lambda b: b.update(kind="KatalystCustomConfig"),
            400,
            "the kind in the data (KatalystCustomConfig) does not match the expected kind "
            "(AdminQoSConfiguration)",
        ),
        (
            lambda b: b["metadata"].update(namespace="other"),
            400,
            "the namespace of the provided object does not match the namespace sent on the request",
        ),
        (
            lambda b: b["metadata"].update(name="Pool_Batch"),
            422,
            f'AdminQoSConfiguration.{G} "Pool_Batch" is invalid: metadata.name: Invalid value: '
            '"Pool_Batch": a lowercase RFC 1123 subdomain must consist of',
        ),
        (
            lambda b: b["metadata"].pop("name"),
            422,
            f'AdminQoSConfiguration.{G} "" is invalid: metadata.name: Required value: name or '
            "generateName is required",
        ),
        (
            lambda b: b["metadata"].update(resourceVersion="5"),
            500,
            "resourceVersion should not be set on objects to be created",
        ),
    ],
    ids=[
        "no-kind",
        "wrong-version",
        "wrong-kind",
        "wrong-namespace",
        "bad-name",
        "no-name",
        "resource-version",
    ],
)
async def test_create_refusals(
    api: FakeApiServer,
    custom: aclient.CustomObjectsApi,
    change: Any,
    code: int,
    message: str,
) -> None:
    body = aqc("pool-batch")
    change(body)

    status, answer = await error_of(create_aqc(custom, body))

    assert status == code == answer["code"]
    assert answer["message"].startswith(message)
    assert api.objects(AQC) == []
    assert api.writes[-1] == RecordedWrite(
        "POST", AQC.qualified, NS, body["metadata"].get("name", ""), "", code, False
    )


async def test_get_and_not_found(api: FakeApiServer, custom: aclient.CustomObjectsApi) -> None:
    created = api.create_object(CNC, object_manifest(CNC, "node-1"))

    got = obj(await custom.get_cluster_custom_object(G, V, CNC.plural, "node-1"))
    status, missing = await error_of(custom.get_cluster_custom_object(G, V, CNC.plural, "node-2"))

    assert got == created
    assert status == 404
    assert missing["message"] == f'customnodeconfigs.{G} "node-2" not found'
    assert missing["details"] == {"name": "node-2", "group": G, "kind": "customnodeconfigs"}


async def test_list_wire_format_and_selectors(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    api.create_object(AQC, aqc("a", labels={"tier": "pool"}))
    api.create_object(AQC, aqc("b", labels={"tier": "named"}))
    other = object_manifest(AQC, "c", namespace="other", labels={"tier": "pool"})
    api.create_object(AQC, other)

    listed = obj(await custom.list_namespaced_custom_object(G, V, NS, AQC.plural))
    everywhere = obj(await custom.list_cluster_custom_object(G, V, AQC.plural))
    pools = obj(
        await custom.list_cluster_custom_object(G, V, AQC.plural, label_selector="tier=pool")
    )
    by_name = obj(
        await custom.list_namespaced_custom_object(
            G, V, NS, AQC.plural, field_selector="metadata.name=b"
        )
    )
    by_ns = obj(
        await custom.list_cluster_custom_object(
            G, V, AQC.plural, field_selector="metadata.namespace!=other"
        )
    )

    def names(listing: Obj) -> list[str]:
        return [item["metadata"]["name"] for item in listing["items"]]

    assert listed["kind"] == "AdminQoSConfigurationList"
    assert listed["apiVersion"] == f"{G}/{V}"
    # The unstructured list: items keep their kind, metadata has an empty continue.
    assert listed["metadata"] == {"continue": "", "resourceVersion": api.resource_version}
    assert all(item["kind"] == "AdminQoSConfiguration" for item in listed["items"])
    assert names(listed) == ["a", "b"]
    assert names(everywhere) == ["a", "b", "c"]  # ordered by namespace, then name
    assert names(pools) == ["a", "c"]
    assert names(by_name) == ["b"]
    assert names(by_ns) == ["a", "b"]


@pytest.mark.parametrize(
    ("resource", "selector", "message"),
    [
        (AQC, "spec.priority=0", "field label not supported: spec.priority"),
        # Cluster-scoped custom resources have no namespace field to select on.
        (CNC, "metadata.namespace=x", "field label not supported: metadata.namespace"),
    ],
)
async def test_unsupported_field_selectors(
    custom: aclient.CustomObjectsApi, resource: Any, selector: str, message: str
) -> None:
    status, answer = await error_of(
        custom.list_cluster_custom_object(G, V, resource.plural, field_selector=selector)
    )

    assert (status, answer["reason"], answer["message"]) == (400, "BadRequest", message)


# --- replace ---------------------------------------------------------------------------


async def test_replace_is_optimistic(api: FakeApiServer, custom: aclient.CustomObjectsApi) -> None:
    created = await create_aqc(custom, aqc("pool-batch"))
    # Another writer changes it after our read.
    api.update_object(
        AQC, "pool-batch", lambda o: o["metadata"].update(labels={"x": "y"}), namespace=NS
    )
    stale = dict(created, spec={"priority": 1})

    status, conflict = await error_of(
        custom.replace_namespaced_custom_object(G, V, NS, AQC.plural, "pool-batch", stale)
    )
    fresh = obj(await custom.get_namespaced_custom_object(G, V, NS, AQC.plural, "pool-batch"))
    fresh["spec"] = {"priority": 1}
    replaced = obj(
        await custom.replace_namespaced_custom_object(G, V, NS, AQC.plural, "pool-batch", fresh)
    )

    assert status == 409
    assert conflict["reason"] == "Conflict"
    assert conflict["message"] == (
        f'Operation cannot be fulfilled on adminqosconfigurations.{G} "pool-batch": the object '
        "has been modified; please apply your changes to the latest version and try again"
    )
    assert conflict["details"] == {
        "name": "pool-batch",
        "group": G,
        "kind": "adminqosconfigurations",
    }
    assert replaced["spec"] == {"priority": 1}
    assert replaced["metadata"]["generation"] == 2  # the spec changed
    assert replaced["metadata"]["labels"] == {"x": "y"}
    assert int(rv(replaced)) == int(rv(fresh)) + 1
    assert [
        (w.method, w.code, w.changed) for w in api.writes_to(AQC, "pool-batch", namespace=NS)
    ] == [
        ("POST", 201, True),
        ("PUT", 409, False),
        ("PUT", 200, True),
    ]


async def test_a_metadata_change_keeps_the_generation(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    created = await create_aqc(custom, aqc("pool-batch"))
    created["metadata"]["labels"] = {"node-pool": "batch"}
    created["metadata"]["annotations"] = {"note": "x"}

    replaced = obj(
        await custom.replace_namespaced_custom_object(G, V, NS, AQC.plural, "pool-batch", created)
    )

    assert replaced["metadata"]["labels"] == {"node-pool": "batch"}
    assert replaced["metadata"]["generation"] == 1


async def test_replace_refusals(api: FakeApiServer, custom: aclient.CustomObjectsApi) -> None:
    created = await create_aqc(custom, aqc("pool-batch"))
    uid = created["metadata"]["uid"]

    def put(body: Obj, name: str = "pool-batch") -> Any:
        return custom.replace_namespaced_custom_object(G, V, NS, AQC.plural, name, body)

    unconditional = dict(created, metadata={"name": "pool-batch", "namespace": NS})
    other_uid = json.loads(json.dumps(created))
    other_uid["metadata"]["uid"] = "0000"
    renamed = json.loads(json.dumps(created))
    renamed["metadata"]["name"] = "other"

    no_rv = await error_of(put(unconditional))
    wrong_uid = await error_of(put(other_uid))
    wrong_name = await error_of(put(renamed))
    missing = await error_of(
        put(dict(created, metadata={"name": "gone", "resourceVersion": "1"}), "gone")
    )

    # Custom resources refuse unconditional updates (AllowUnconditionalUpdate: false).
    assert no_rv[0] == 422
    assert no_rv[1]["message"] == (
        f'adminqosconfigurations.{G} "pool-batch" is invalid: metadata.resourceVersion: '
        "Invalid value: 0x0: must be specified for an update"
    )
    # A PUT's uid is a storage precondition.
    assert wrong_uid[0] == 409
    assert wrong_uid[1]["message"] == (
        f'Operation cannot be fulfilled on adminqosconfigurations.{G} "pool-batch": '
        f"StorageError: invalid object, Code: 4, Key: /registry/{G}/adminqosconfigurations/"
        f"{NS}/pool-batch, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID "
        f"in precondition: 0000, UID in object meta: {uid}"
    )
    assert wrong_name[0] == 400
    assert wrong_name[1]["message"] == (
        "the name of the object (other) does not match the name on the URL (pool-batch)"
    )
    assert missing[0] == 404  # an update never creates
    assert api.get_object(AQC, "pool-batch", namespace=NS) == created


async def test_replace_ignores_the_status_with_the_subresource(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    created = await create_aqc(custom, aqc("pool-batch"))
    created["status"] = {"observedGeneration": 1}

    replaced = obj(
        await custom.replace_namespaced_custom_object(G, V, NS, AQC.plural, "pool-batch", created)
    )

    # Only the status differed, and the main resource ignores it: a no-op.
    assert "status" not in replaced
    assert rv(replaced) == rv(created)
    assert api.writes_to(AQC, "pool-batch", namespace=NS)[-1].changed is False


async def test_without_the_subresource_the_status_is_part_of_the_object(
    api: FakeApiServer,
) -> None:
    widgets = api.register(
        custom_resource(
            "example.com", "v1", "widgets", "Widget", namespaced=False, status_subresource=False
        )
    )
    config = aclient.Configuration(host=api.url, api_key={"BearerToken": f"Bearer {api.token}"})
    async with aclient.ApiClient(config) as client:
        custom = aclient.CustomObjectsApi(client)
        body = object_manifest(widgets, "w", spec={"size": 1}, status={"phase": "new"})
        created = obj(
            await custom.create_cluster_custom_object("example.com", "v1", "widgets", body)
        )
        created["status"] = {"phase": "done"}
        replaced = obj(
            await custom.replace_cluster_custom_object("example.com", "v1", "widgets", "w", created)
        )
        with pytest.raises(aclient.ApiException) as no_status:
            await custom.get_cluster_custom_object_status("example.com", "v1", "widgets", "w")

    assert created["metadata"]["generation"] == 1
    assert replaced["status"] == {"phase": "done"}
    # apiextensions bumps the generation for any change outside metadata.
    assert replaced["metadata"]["generation"] == 2
    assert no_status.value.status == 404  # no /status without the subresource


# --- the status subresource --------------------------------------------------------------


async def test_status_replace_changes_only_the_status(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    created = await create_aqc(custom, aqc("pool-batch"))
    body = json.loads(json.dumps(created))
    body["spec"] = {"priority": 9}
    body["metadata"]["labels"] = {"ignored": "yes"}
    body["status"] = {"observedGeneration": 1, "conditions": [{"type": "Valid", "status": "True"}]}

    written = obj(
        await custom.replace_namespaced_custom_object_status(
            G, V, NS, AQC.plural, "pool-batch", body
        )
    )
    status, stale = await error_of(
        custom.replace_namespaced_custom_object_status(G, V, NS, AQC.plural, "pool-batch", body)
    )
    read = obj(await custom.get_namespaced_custom_object_status(G, V, NS, AQC.plural, "pool-batch"))

    assert written["status"] == body["status"]
    assert written["spec"] == {"priority": 0}
    assert "labels" not in written["metadata"]  # apiextensions' status strategy
    assert written["metadata"]["generation"] == 1
    assert int(rv(written)) == int(rv(created)) + 1
    assert status == 409 and stale["reason"] == "Conflict"  # body still had the old rv
    assert read == written


async def test_status_patch_merge_and_json_patch(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    api.create_object(CNC, object_manifest(CNC, "node-1", spec={"x": 1}))

    merged = obj(
        await custom.patch_cluster_custom_object_status(
            G,
            V,
            CNC.plural,
            "node-1",
            {"spec": {"x": 2}, "status": {"katalystCustomConfigList": []}},
        )
    )
    entry = {"configName": "pool-batch", "hash": "0123456789abcdef"}
    patched = obj(
        await custom.patch_cluster_custom_object_status(
            G,
            V,
            CNC.plural,
            "node-1",
            [
                {"op": "test", "path": "/status/katalystCustomConfigList", "value": []},
                {"op": "add", "path": "/status/katalystCustomConfigList/-", "value": entry},
            ],
            _content_type=JSON_PATCH,
        )
    )
    failed = await error_of(
        custom.patch_cluster_custom_object_status(
            G,
            V,
            CNC.plural,
            "node-1",
            [{"op": "test", "path": "/status/katalystCustomConfigList", "value": []}],
            _content_type=JSON_PATCH,
        )
    )
    strategic = await error_of(
        custom.patch_cluster_custom_object_status(
            G, V, CNC.plural, "node-1", {"status": {}}, _content_type=STRATEGIC_MERGE_PATCH
        )
    )

    assert merged["spec"] == {"x": 1}  # /status takes only the status
    assert merged["status"] == {"katalystCustomConfigList": []}
    assert patched["status"] == {"katalystCustomConfigList": [entry]}
    assert patched["metadata"]["generation"] == 1
    assert failed[0] == 422
    assert failed[1]["message"] == "the server rejected our request due to an error in our request"
    assert strategic[0] == 415
    assert strategic[1]["reason"] == "UnsupportedMediaType"
    assert [p.content_type for p in api.patches] == [
        "application/merge-patch+json",
        JSON_PATCH,
        JSON_PATCH,
        STRATEGIC_MERGE_PATCH,
    ]


# --- patch ---------------------------------------------------------------------------------


async def test_merge_patch_of_the_object(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    api.create_object(
        AQC, aqc("pool-batch", spec={"priority": 0, "config": {"reclaim": {"enabled": True}}})
    )
    api.update_object(
        AQC, "pool-batch", lambda o: o.update(status={"observedGeneration": 1}), namespace=NS
    )

    def patch(body: Any, content_type: str | None = None) -> Any:
        return custom.patch_namespaced_custom_object(
            G, V, NS, AQC.plural, "pool-batch", body, _content_type=content_type
        )

    patched = obj(
        await patch(
            {
                "metadata": {"labels": {"node-pool": "batch"}},
                "spec": {"config": {"reclaim": None, "eviction": {"enabled": False}}},
                "status": {"observedGeneration": 99},
            }
        )
    )
    stale = await error_of(patch({"metadata": {"resourceVersion": "1"}, "spec": {"priority": 3}}))
    uid_changed = await error_of(patch({"metadata": {"uid": "0000"}}))
    by_json_patch = obj(
        await patch([{"op": "replace", "path": "/spec/priority", "value": 2}], JSON_PATCH)
    )

    assert patched["spec"] == {"priority": 0, "config": {"eviction": {"enabled": False}}}
    assert patched["metadata"]["labels"] == {"node-pool": "batch"}
    assert patched["metadata"]["generation"] == 2
    assert patched["status"] == {"observedGeneration": 1}  # the main resource ignores it
    assert stale[0] == 409 and "the object has been modified" in stale[1]["message"]
    assert uid_changed[0] == 422
    assert uid_changed[1]["message"] == (
        f'AdminQoSConfiguration.{G} "pool-batch" is invalid: metadata.uid: Invalid value: '
        '"0000": field is immutable'
    )
    assert by_json_patch["spec"]["priority"] == 2
    assert by_json_patch["metadata"]["generation"] == 3


@pytest.mark.parametrize(
    "operations",
    [
        [{"op": "remove", "path": "/spec/missing"}],
        [{"op": "replace", "path": "/spec/missing", "value": 1}],
        [{"op": "add", "path": "/spec/a/b", "value": 1}],
        [{"op": "move", "from": "/spec/missing", "path": "/spec/x"}],
        [{"op": "copy", "from": "/spec/priority", "path": "/spec/list/5"}],
        [{"op": "frobnicate", "path": "/spec"}],
    ],
    ids=["remove", "replace", "add", "move", "copy", "unknown-op"],
)
async def test_a_json_patch_that_does_not_apply_is_the_generic_422(
    api: FakeApiServer, custom: aclient.CustomObjectsApi, operations: list[Obj]
) -> None:
    created = api.create_object(AQC, aqc("pool-batch", spec={"priority": 0, "list": []}))

    status, answer = await error_of(
        custom.patch_namespaced_custom_object(
            G, V, NS, AQC.plural, "pool-batch", operations, _content_type=JSON_PATCH
        )
    )

    assert (status, answer["reason"]) == (422, "Invalid")
    assert api.get_object(AQC, "pool-batch", namespace=NS) == created


async def test_json_patch_operations(api: FakeApiServer, custom: aclient.CustomObjectsApi) -> None:
    api.create_object(AQC, aqc("a", spec={"priority": 0, "list": [1, 3], "a/b": {"~": 1}}))

    patched = obj(
        await custom.patch_namespaced_custom_object(
            G,
            V,
            NS,
            AQC.plural,
            "a",
            [
                {"op": "add", "path": "/spec/list/1", "value": 2},
                {"op": "copy", "from": "/spec/list/0", "path": "/spec/first"},
                {"op": "move", "from": "/spec/a~1b/~0", "path": "/spec/moved"},
                {"op": "remove", "path": "/spec/a~1b"},
                {"op": "test", "path": "/spec/list", "value": [1, 2, 3]},
            ],
            _content_type=JSON_PATCH,
        )
    )

    assert patched["spec"] == {"priority": 0, "list": [1, 2, 3], "first": 1, "moved": 1}


# --- no-op writes ----------------------------------------------------------------------


async def test_a_write_that_changes_nothing_is_not_a_write(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    body = object_manifest(CNC, "node-1", spec={"x": 1})
    created = obj(await custom.create_cluster_custom_object(G, V, CNC.plural, body))
    created = obj(
        await custom.replace_cluster_custom_object_status(
            G, V, CNC.plural, "node-1", dict(created, status={"list": [1]})
        )
    )
    version = rv(created)

    async with new_watch() as w:
        stream = w.stream(
            custom.list_cluster_custom_object, G, V, CNC.plural, resource_version=version
        )
        same_put = obj(
            await custom.replace_cluster_custom_object(G, V, CNC.plural, "node-1", created)
        )
        same_status = obj(
            await custom.replace_cluster_custom_object_status(G, V, CNC.plural, "node-1", created)
        )
        same_patch = obj(
            await custom.patch_cluster_custom_object(G, V, CNC.plural, "node-1", {"spec": {"x": 1}})
        )
        api.update_object(CNC, "node-1", lambda o: None)
        changed = obj(
            await custom.patch_cluster_custom_object(G, V, CNC.plural, "node-1", {"spec": {"x": 2}})
        )
        (event,) = await take(stream, 1)

    assert rv(same_put) == rv(same_status) == rv(same_patch) == version
    assert int(rv(changed)) == int(version) + 1
    # The watch saw only the real change.
    assert summary([event]) == [("MODIFIED", "node-1", rv(changed))]
    writes = api.writes_to(CNC, "node-1")
    assert [(w.method, w.subresource, w.changed) for w in writes] == [
        ("POST", "", True),
        ("PUT", "status", True),
        ("PUT", "", False),
        ("PUT", "status", False),
        ("PATCH", "", False),
        ("PATCH", "", True),
    ]
    assert len(api.writes_to(CNC, "node-1", subresource="status")) == 2


# --- delete ------------------------------------------------------------------------------


async def test_delete_with_preconditions(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    created = api.create_object(AQC, aqc("named-1"))
    uid = created["metadata"]["uid"]

    def delete(**preconditions: str) -> Any:
        body = aclient.V1DeleteOptions(preconditions=aclient.V1Preconditions(**preconditions))
        return custom.delete_namespaced_custom_object(G, V, NS, AQC.plural, "named-1", body=body)

    wrong_uid = await error_of(delete(uid="0000"))
    wrong_rv = await error_of(delete(resource_version="1"))
    deleted = obj(await delete(uid=uid, resource_version=rv(created)))
    gone = await error_of(delete())

    key = f"/registry/{G}/adminqosconfigurations/{NS}/named-1"
    assert wrong_uid[0] == 409 and wrong_uid[1]["reason"] == "Conflict"
    assert wrong_uid[1]["message"] == (
        f'Operation cannot be fulfilled on adminqosconfigurations.{G} "named-1": StorageError: '
        f"invalid object, Code: 4, Key: {key}, ResourceVersion: 0, AdditionalErrorMsg: "
        f"Precondition failed: UID in precondition: 0000, UID in object meta: {uid}"
    )
    assert wrong_rv[0] == 409
    assert wrong_rv[1]["message"].endswith(
        f"Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in object "
        f"meta: {rv(created)}"
    )
    assert deleted == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": "named-1", "group": G, "kind": "adminqosconfigurations", "uid": uid},
    }
    assert gone[0] == 404
    assert api.objects(AQC) == []


async def test_delete_without_options(api: FakeApiServer, custom: aclient.CustomObjectsApi) -> None:
    api.create_object(CNC, object_manifest(CNC, "node-1"))

    await custom.delete_cluster_custom_object(G, V, CNC.plural, "node-1")

    assert api.get_object(CNC, "node-1") is None
    assert api.writes_to(CNC, "node-1") == [
        RecordedWrite("DELETE", CNC.qualified, "", "node-1", "", 200, True)
    ]


# --- watch ---------------------------------------------------------------------------------


async def test_watch_from_a_resource_version_and_resume(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    start = api.resource_version
    api.create_object(AQC, aqc("a"))
    api.update_object(AQC, "a", lambda o: o["spec"].update(priority=1), namespace=NS)
    api.delete_object(AQC, "a", namespace=NS)

    async with new_watch() as w:
        stream = w.stream(
            custom.list_namespaced_custom_object, G, V, NS, AQC.plural, resource_version=start
        )
        events = await take(stream, 3)
        resume_at = w.resource_version
        await api.wait_for_watches()
        api.drop_watches()  # the aio Watch reconnects from its last resourceVersion
        api.create_object(AQC, aqc("b"))
        (after,) = await take(stream, 1)

    s = int(start)
    assert summary(events) == [
        ("ADDED", "a", str(s + 1)),
        ("MODIFIED", "a", str(s + 2)),
        ("DELETED", "a", str(s + 3)),
    ]
    assert events[1]["object"]["metadata"]["generation"] == 2
    assert events[0]["raw_object"]["kind"] == "AdminQoSConfiguration"
    assert summary([after]) == [("ADDED", "b", str(s + 4))]
    watches = [r for r in api.requests if r.query.get("watch") == "true"]
    assert [r.query["resourceVersion"] for r in watches] == [start, resume_at]


async def test_watch_from_the_start_lists_then_follows_with_selectors(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    api.create_object(AQC, aqc("a", labels={"tier": "pool"}))
    api.create_object(AQC, aqc("b"))
    api.create_object(AQC, object_manifest(AQC, "c", namespace="other", labels={"tier": "pool"}))

    async with new_watch() as w:
        stream = w.stream(
            custom.list_cluster_custom_object, G, V, AQC.plural, label_selector="tier=pool"
        )
        initial = await take(stream, 2)
        # Entering and leaving the selector.
        api.update_object(
            AQC, "b", lambda o: o["metadata"].update(labels={"tier": "pool"}), namespace=NS
        )
        api.update_object(AQC, "a", lambda o: o["metadata"].update(labels={}), namespace=NS)
        changes = await take(stream, 2)

    assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [
        ("ADDED", "a"),
        ("ADDED", "c"),
    ]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in changes] == [
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]
    # DELETED carries the last state that matched.
    assert changes[1]["raw_object"]["metadata"]["labels"] == {"tier": "pool"}


async def test_a_watch_from_before_a_compaction_gets_410(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    old = api.resource_version
    api.create_object(CNC, object_manifest(CNC, "node-1"))
    api.compact()

    response = await custom.list_cluster_custom_object_without_preload_content(
        G, V, CNC.plural, watch=True, resource_version=old
    )
    lines = await raw_lines(response)
    async with new_watch() as w:
        with pytest.raises(aclient.ApiException) as caught:
            await take(
                w.stream(custom.list_cluster_custom_object, G, V, CNC.plural, resource_version=old),
                1,
            )

    assert response.status == 200
    (line,) = lines
    assert line["type"] == "ERROR"
    assert line["object"]["code"] == 410 and line["object"]["reason"] == "Expired"
    assert line["object"]["message"] == f"too old resource version: {old} ({api.resource_version})"
    assert caught.value.status == 410


async def test_bookmarks_name_the_custom_kind(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    api.create_object(CNC, object_manifest(CNC, "node-1"))
    version = api.resource_version

    async with new_watch() as w:
        stream = w.stream(
            custom.list_cluster_custom_object,
            G,
            V,
            CNC.plural,
            resource_version=version,
            allow_watch_bookmarks=True,
        )
        (bookmark,) = await take(stream, 1)

    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["raw_object"] == {
        "kind": "CustomNodeConfig",
        "apiVersion": f"{G}/{V}",
        "metadata": {"resourceVersion": version},
    }


async def test_watches_are_per_resource(
    api: FakeApiServer, custom: aclient.CustomObjectsApi
) -> None:
    start = api.resource_version

    async with new_watch() as w:
        stream = w.stream(
            custom.list_cluster_custom_object,
            G,
            V,
            CNC.plural,
            resource_version=start,
            timeout_seconds=1,
        )
        api.create_object(AQC, aqc("a"))
        api.create_object(CNC, object_manifest(CNC, "node-1"))
        events = await drain(stream)

    assert summary(events) == [("ADDED", "node-1", api.resource_version)]


async def test_a_sync_client_watch_of_a_cluster_scoped_resource(api: FakeApiServer) -> None:
    start = api.resource_version
    api.create_object(CNC, object_manifest(CNC, "node-1"))
    api.update_object(CNC, "node-1", lambda o: o.update(status={"x": 1}))

    def watch() -> list[str]:
        config = sclient.Configuration(host=api.url, api_key={"BearerToken": f"Bearer {api.token}"})
        with sclient.ApiClient(config) as client:
            custom = sclient.CustomObjectsApi(client)
            w = swatch.Watch()  # type: ignore[no-untyped-call]
            stream: Any = w.stream(  # type: ignore[no-untyped-call]
                custom.list_cluster_custom_object,
                G,
                V,
                CNC.plural,
                resource_version=start,
                timeout_seconds=1,
            )
            return [f"{e['type']} {e['object']['metadata']['name']}" for e in stream]

    assert await asyncio.to_thread(watch) == ["ADDED node-1", "MODIFIED node-1"]


# --- what is not served ----------------------------------------------------------------


async def test_an_unserved_resource_is_go_http_not_found(api: FakeApiServer) -> None:
    headers = {"Authorization": f"Bearer {api.token}"}
    paths = [
        f"/apis/{G}/{V}/unknownthings",  # no such CRD in a known group
        "/apis/example.com/v1/widgets",  # no such group
        f"/apis/{G}/v1/customnodeconfigs",  # no such version
        f"/apis/{G}/{V}/namespaces/{NS}/customnodeconfigs",  # cluster-scoped, namespaced path
        f"/apis/{G}/{V}/customnodeconfigs/node-1/scale",  # no such subresource
    ]
    async with aiohttp.ClientSession(headers=headers) as session:
        answers = []
        for path in paths:
            async with session.get(api.url + path) as response:
                answers.append((response.status, response.content_type, await response.text()))

    assert answers == [(404, "text/plain", "404 page not found\n")] * len(paths)


async def test_an_unserved_builtin_path_is_a_status(api: FakeApiServer) -> None:
    config = aclient.Configuration(host=api.url, api_key={"BearerToken": f"Bearer {api.token}"})
    async with aclient.ApiClient(config) as client:
        status, answer = await error_of(
            aclient.CustomObjectsApi(client).list_cluster_custom_object(
                "coordination.k8s.io", "v1", "leasez"
            )
        )

    assert status == 404
    assert answer["message"] == "the server could not find the requested resource"


async def test_a_server_without_the_crds() -> None:
    async with FakeApiServer(custom_resources=()) as bare:
        config = aclient.Configuration(
            host=bare.url, api_key={"BearerToken": f"Bearer {bare.token}"}
        )
        async with aclient.ApiClient(config) as client:
            with pytest.raises(aclient.ApiException) as caught:
                await aclient.CustomObjectsApi(client).list_cluster_custom_object(G, V, CNC.plural)

    assert caught.value.status == 404
    assert [r.plural for r in bare.resources] == ["pods", "nodes", "leases"]


async def test_anonymous_requests_are_forbidden(api: FakeApiServer) -> None:
    async with aclient.ApiClient(aclient.Configuration(host=api.url)) as client:
        status, answer = await error_of(
            aclient.CustomObjectsApi(client).list_namespaced_custom_object(G, V, NS, AQC.plural)
        )

    assert status == 403
    assert answer["message"] == (
        f'adminqosconfigurations.{G} is forbidden: User "system:anonymous" cannot list '
        f'resource "adminqosconfigurations" in API group "{G}" in the namespace "{NS}"'
    )


# --- a schema hook, and the Python API ---------------------------------------------------------


def _positive_size(widget: Obj) -> None:
    size = (widget.get("spec") or {}).get("size")
    if not isinstance(size, int) or size < 1:
        name = widget["metadata"]["name"]
        raise ApiError(
            422, f'Widget.example.com "{name}" is invalid: spec.size: Invalid value: {size!r}'
        )


async def test_a_registered_resource_with_a_schema_hook(api: FakeApiServer) -> None:
    widgets = api.register(
        custom_resource(
            "example.com", "v1", "widgets", "Widget", namespaced=True, validate=_positive_size
        )
    )
    config = aclient.Configuration(host=api.url, api_key={"BearerToken": f"Bearer {api.token}"})
    async with aclient.ApiClient(config) as client:
        custom = aclient.CustomObjectsApi(client)
        body = object_manifest(widgets, "w", spec={"size": 1})
        created = obj(
            await custom.create_namespaced_custom_object(
                "example.com", "v1", "default", "widgets", body
            )
        )
        status, refused = await error_of(
            custom.patch_namespaced_custom_object(
                "example.com", "v1", "default", "widgets", "w", {"spec": {"size": 0}}
            )
        )

    assert created["spec"] == {"size": 1}
    assert status == 422 and "spec.size" in refused["message"]
    with pytest.raises(ValueError, match=r"spec\.size"):
        api.create_object(widgets, object_manifest(widgets, "v", spec={}))
    with pytest.raises(ValueError, match="already served"):
        api.register(custom_resource("example.com", "v1", "widgets", "Widget", namespaced=True))


async def test_python_api(api: FakeApiServer) -> None:
    created = api.create_object(
        "customnodeconfigs",
        object_manifest(CNC, "node-1", spec={"a": 1}, status={"katalystCustomConfigList": []}),
    )
    version = api.resource_version

    same = api.update_object(CNC, "node-1", lambda o: None)
    status_only = api.update_object(CNC, "node-1", lambda o: o["status"].update(x=1))
    spec = api.update_object(f"customnodeconfigs.{G}", "node-1", lambda o: o["spec"].update(a=2))

    assert created["status"] == {"katalystCustomConfigList": []}  # kept, as another writer left it
    assert created["metadata"]["generation"] == 1
    assert same["metadata"]["resourceVersion"] == version
    assert status_only["metadata"]["generation"] == 1
    assert spec["metadata"]["generation"] == 2
    assert api.objects(CNC) == [spec]
    assert api.resource("customnoderesources") is CUSTOM_NODE_RESOURCES
    assert api.resource(KATALYST_CUSTOM_CONFIGS) is KATALYST_CUSTOM_CONFIGS
    with pytest.raises(KeyError):
        api.resource("widgets")
    with pytest.raises(ValueError, match="already exists"):
        api.create_object(CNC, object_manifest(CNC, "node-1"))
    with pytest.raises(ValueError, match=r"metadata\.name"):
        api.update_object(CNC, "node-1", lambda o: o["metadata"].update(name="x"))
    with pytest.raises(KeyError):
        api.update_object(AQC, "node-1", lambda o: None, namespace=NS)
    gone = api.delete_object(CNC, "node-1")
    assert int(gone["metadata"]["resourceVersion"]) == int(api.resource_version)
    with pytest.raises(KeyError):
        api.delete_object(CNC, "node-1")
    # Client writes are recorded; the cluster's own are not.
    assert api.writes == []
