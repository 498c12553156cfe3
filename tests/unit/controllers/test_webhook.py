"""The admission decision through its public surface: AdmissionReview in, response out.

Patches are decoded from base64 and applied with a small RFC 6902 applier, so the tests
check the pod the API server would store, not just the list of operations.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from controllers.webhook import (
    AdmissionConfig,
    AdmissionReviewDict,
    DefaultRule,
    Defaults,
    review,
)
from katalyst.qos import (
    QOS_LEVEL_ANNOTATION,
    RESOURCE_RECLAIMED_MEMORY,
    RESOURCE_RECLAIMED_MILLICPU,
    PodView,
    QoSLevel,
)

UID = "705ab4f5-6393-11e8-b7cc-42010a800002"
MEM = "katalyst.kubewharf.io/memory_enhancement"
RECLAIMED = {QOS_LEVEL_ANNOTATION: "reclaimed_cores"}


# --- Helpers -----------------------------------------------------------------------------


def pod(
    *,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A pod as the API server sends it at CREATE: no uid yet."""
    metadata: dict[str, Any] = {"name": "web", "namespace": "team"}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    spec: dict[str, Any] = {"containers": containers or [{"name": "app", "image": "nginx"}]}
    if init_containers is not None:
        spec["initContainers"] = init_containers
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def admission(
    obj: object,
    *,
    operation: str = "CREATE",
    namespace: str = "team",
    old: object = None,
    **extra: object,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": UID,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "name": "web",
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "alice"},
        "object": obj,
        "oldObject": old,
        "dryRun": False,
        **extra,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def container(
    name: str = "app",
    *,
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": name, "image": "busybox", "resources": resources}


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 ``add`` and ``remove`` (all this webhook emits), strict as the API server's
    applier (evanphx/json-patch): a missing parent or removed member is an error."""
    doc = copy.deepcopy(doc)
    for op in ops:
        assert set(op) <= {"op", "path", "value"}, op
        path = op["path"]
        assert path.startswith("/"), path
        tokens = [unescape(t) for t in path[1:].split("/")]
        parent = doc
        for token in tokens[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last = tokens[-1]
        if op["op"] == "add":
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                parent.insert(index, op["value"])
            else:
                assert isinstance(parent, dict), path
                parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                assert last in parent, f"remove of a missing member {path}"
                del parent[last]
        else:
            raise AssertionError(f"unexpected op {op['op']}")
    return doc


def decoded_patch(answer: AdmissionReviewDict) -> list[dict[str, Any]]:
    response = answer["response"]
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"], validate=True))
    return ops


def patched(answer: AdmissionReviewDict, obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = apply_patch(obj, decoded_patch(answer))
    return result


def assert_allowed_untouched(answer: AdmissionReviewDict) -> None:
    assert answer == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": UID, "allowed": True},
    }


def as_kubernetes_would_store(obj: dict[str, Any]) -> PodView:
    """The patched pod must still validate, as the API server would store it."""
    stored = copy.deepcopy(obj)
    stored["metadata"]["uid"] = "stored-uid"
    return PodView.from_dict(stored)


# --- Validating --------------------------------------------------------------------------

DENIALS: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown level",
        pod(annotations={QOS_LEVEL_ANNOTATION: "gold"}),
        'pod team/web: annotation "katalyst.kubewharf.io/qos_level": value "gold" is invalid: '
        "must be one of dedicated_cores, reclaimed_cores, shared_cores, system_cores",
    ),
    (
        "empty level",
        pod(annotations={QOS_LEVEL_ANNOTATION: ""}),
        'annotation "katalyst.kubewharf.io/qos_level": value "" is invalid: must be one of',
    ),
    (
        "malformed enhancement JSON",
        pod(annotations={MEM: "{numa_binding: true"}),
        'annotation "katalyst.kubewharf.io/memory_enhancement": value "{numa_binding: true" '
        "is invalid",
    ),
    (
        "contradictory enhancements",
        pod(
            annotations={
                QOS_LEVEL_ANNOTATION: "dedicated_cores",
                MEM: '{"numa_exclusive": "true"}',
            }
        ),
        'annotation "katalyst.kubewharf.io/memory_enhancement" field "numa_exclusive": '
        'value "true" is invalid: requires "numa_binding": "true"',
    ),
    (
        "oom priority outside the level's range",
        pod(annotations={**RECLAIMED, MEM: '{"oom_priority": "150"}'}),
        'field "oom_priority": value "150" is invalid: must be an integer in [-100, 0) '
        "for reclaimed_cores",
    ),
    (
        "reclaimed pod with a cpu limit",
        pod(annotations=RECLAIMED, containers=[container(limits={"cpu": "2"})]),
        'pod team/web: field "spec.containers[app].resources.limits[cpu]": value "2" is '
        "invalid: must be absent for a reclaimed_cores pod: it runs on lent capacity and has "
        "no cpu limit; ask for resource.katalyst.kubewharf.io/reclaimed_millicpu instead",
    ),
    (
        "reclaimed pod with a memory limit on an init container",
        pod(
            annotations=RECLAIMED,
            containers=[container()],
            init_containers=[
                container("init", requests={"memory": "1Gi"}, limits={"memory": "1Gi"})
            ],
        ),
        'field "spec.initContainers[init].resources.limits[memory]": value "1Gi" is invalid: '
        "must be absent for a reclaimed_cores pod",
    ),
    (
        "reclaimed pod asking for cpu and reclaimed_millicpu",
        pod(
            annotations=RECLAIMED,
            containers=[container(requests={"cpu": "1", RESOURCE_RECLAIMED_MILLICPU: "1000"})],
        ),
        'field "spec.containers[app].resources.requests[cpu]": value "1" is invalid: must not '
        "be set together with resource.katalyst.kubewharf.io/reclaimed_millicpu",
    ),
    (
        "bad quantity",
        pod(containers=[container(requests={"cpu": "lots"})]),
        'field "spec.containers[app].resources.requests[cpu]": value "lots" is invalid',
    ),
    (
        "annotations not an object",
        {**pod(), "metadata": {"name": "web", "annotations": ["x"]}},
        'field "metadata.annotations": value ["x"] is invalid: must be an object',
    ),
]


@pytest.mark.parametrize(
    ("obj", "message"), [(o, m) for _, o, m in DENIALS], ids=[d[0] for d in DENIALS]
)
def test_denied_with_the_key_and_the_rule(obj: dict[str, Any], message: str) -> None:
    answer = review(admission(obj))
    response = answer["response"]
    assert response["uid"] == UID
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert message in response["status"]["message"]
    assert "patch" not in response and "patchType" not in response


def test_denial_message_starts_with_the_pod() -> None:
    answer = review(admission(pod(annotations={QOS_LEVEL_ANNOTATION: "gold"})))
    assert answer["response"]["status"]["message"].startswith(
        'pod team/web: annotation "katalyst.kubewharf.io/qos_level"'
    )


def test_generate_name_pod_is_validated_and_named() -> None:
    obj = pod(annotations={QOS_LEVEL_ANNOTATION: "gold"})
    obj["metadata"] = {"generateName": "web-", "annotations": obj["metadata"]["annotations"]}
    answer = review(admission(obj, name=""))
    assert answer["response"]["status"]["message"].startswith("pod team/web-<generated>: ")


@pytest.mark.parametrize(
    "obj",
    [
        pod(),
        pod(annotations={QOS_LEVEL_ANNOTATION: "shared_cores"}),
        pod(
            annotations={
                QOS_LEVEL_ANNOTATION: "dedicated_cores",
                MEM: '{"numa_binding": "true", "numa_exclusive": "true"}',
            },
            containers=[container(requests={"cpu": "2"}, limits={"cpu": "2", "memory": "1Gi"})],
        ),
        pod(annotations=RECLAIMED),
        pod(
            annotations=RECLAIMED,
            containers=[container(requests={RESOURCE_RECLAIMED_MILLICPU: "500"})],
        ),
    ],
    ids=["no annotation", "shared", "dedicated numa", "reclaimed no requests", "already ext"],
)
def test_valid_pods_allowed_untouched(obj: dict[str, Any]) -> None:
    assert_allowed_untouched(review(admission(obj)))


# --- Mutating reclaimed pods -------------------------------------------------------------


def test_reclaimed_requests_rewritten_exactly() -> None:
    obj = pod(
        annotations=RECLAIMED,
        containers=[
            container(
                "app", requests={"cpu": "1500m", "memory": "1Gi", "ephemeral-storage": "1Gi"}
            ),
            container("side", requests={"cpu": "0.25"}, limits={"ephemeral-storage": "2Gi"}),
            {"name": "bare", "image": "busybox"},
        ],
        init_containers=[container("init", requests={"memory": "100M"})],
    )
    answer = review(admission(obj))
    assert answer["response"]["allowed"] is True
    assert "status" not in answer["response"]
    c = "/spec/containers"
    ext_cpu = "resource.katalyst.kubewharf.io~1reclaimed_millicpu"
    ext_mem = "resource.katalyst.kubewharf.io~1reclaimed_memory"
    assert decoded_patch(answer) == [
        {"op": "remove", "path": f"{c}/0/resources/requests/cpu"},
        {"op": "remove", "path": f"{c}/0/resources/requests/memory"},
        {"op": "add", "path": f"{c}/0/resources/requests/{ext_cpu}", "value": "1500"},
        {"op": "add", "path": f"{c}/0/resources/requests/{ext_mem}", "value": "1073741824"},
        {
            "op": "add",
            "path": f"{c}/0/resources/limits",
            "value": {RESOURCE_RECLAIMED_MILLICPU: "1500", RESOURCE_RECLAIMED_MEMORY: "1073741824"},
        },
        {"op": "remove", "path": f"{c}/1/resources/requests/cpu"},
        {"op": "add", "path": f"{c}/1/resources/requests/{ext_cpu}", "value": "250"},
        {"op": "add", "path": f"{c}/1/resources/limits/{ext_cpu}", "value": "250"},
        {"op": "remove", "path": "/spec/initContainers/0/resources/requests/memory"},
        {
            "op": "add",
            "path": f"/spec/initContainers/0/resources/requests/{ext_mem}",
            "value": "100000000",
        },
        {
            "op": "add",
            "path": "/spec/initContainers/0/resources/limits",
            "value": {RESOURCE_RECLAIMED_MEMORY: "100000000"},
        },
    ]
    result = patched(answer, obj)
    containers = result["spec"]["containers"]
    assert containers[0]["resources"] == {
        "requests": {
            "ephemeral-storage": "1Gi",
            RESOURCE_RECLAIMED_MILLICPU: "1500",
            RESOURCE_RECLAIMED_MEMORY: "1073741824",
        },
        "limits": {RESOURCE_RECLAIMED_MILLICPU: "1500", RESOURCE_RECLAIMED_MEMORY: "1073741824"},
    }
    assert containers[1]["resources"] == {
        "requests": {RESOURCE_RECLAIMED_MILLICPU: "250"},
        "limits": {"ephemeral-storage": "2Gi", RESOURCE_RECLAIMED_MILLICPU: "250"},
    }
    assert containers[2] == {"name": "bare", "image": "busybox"}
    view = as_kubernetes_would_store(result)
    assert view.computed_qos_class == "BestEffort"
    assert view.reclaimed_millicpu == 1750
    assert view.reclaimed_memory == 1073741824
    for c_view in (*view.containers, *view.init_containers):
        assert not {"cpu", "memory"} & (set(c_view.requests) | set(c_view.limits))
        # Kubernetes: an extended resource's request must equal its limit.
        for name, amount in c_view.requests.items():
            if name.startswith("resource.katalyst.kubewharf.io/"):
                assert c_view.limits[name] == amount
    # The patched pod passes the webhook again without change (idempotent).
    assert_allowed_untouched(review(admission(result)))


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        ({"cpu": "1"}, {RESOURCE_RECLAIMED_MILLICPU: "1000"}),
        ({"cpu": "0.0005"}, {RESOURCE_RECLAIMED_MILLICPU: "1"}),  # MilliValue rounds up
        ({"cpu": "2k"}, {RESOURCE_RECLAIMED_MILLICPU: "2000000"}),
        ({"memory": "512Mi"}, {RESOURCE_RECLAIMED_MEMORY: "536870912"}),
        ({"memory": "1.5"}, {RESOURCE_RECLAIMED_MEMORY: "2"}),  # Value rounds up
        ({"cpu": "0", "memory": "0"}, {}),  # zero: removed, nothing asked for instead
    ],
)
def test_reclaimed_quantities_become_integer_strings(
    requests: dict[str, str], expected: dict[str, str]
) -> None:
    obj = pod(annotations=RECLAIMED, containers=[container(requests=requests)])
    result = patched(review(admission(obj)), obj)
    resources = result["spec"]["containers"][0]["resources"]
    assert resources["requests"] == expected
    assert resources.get("limits", {}) == expected


def test_reclaimed_null_limits_replaced() -> None:
    obj = pod(annotations=RECLAIMED, containers=[container(requests={"cpu": "1"})])
    obj["spec"]["containers"][0]["resources"]["limits"] = None
    result = patched(review(admission(obj)), obj)
    assert result["spec"]["containers"][0]["resources"]["limits"] == {
        RESOURCE_RECLAIMED_MILLICPU: "1000"
    }


@pytest.mark.parametrize("level", ["shared_cores", "dedicated_cores", "system_cores"])
def test_other_levels_keep_native_requests(level: str) -> None:
    obj = pod(
        annotations={QOS_LEVEL_ANNOTATION: level},
        containers=[container(requests={"cpu": "1", "memory": "1Gi"})],
    )
    assert_allowed_untouched(review(admission(obj)))


# --- Defaults ----------------------------------------------------------------------------

BATCH_NS = DefaultRule(qos_level=QoSLevel.RECLAIMED_CORES, namespaces=frozenset({"batch"}))
LABELLED = DefaultRule(qos_level=QoSLevel.SYSTEM_CORES, match_labels={"tier": "node-daemon"})
BOTH = DefaultRule(
    qos_level=QoSLevel.DEDICATED_CORES, namespaces=frozenset({"db"}), match_labels={"app": "pg"}
)
CONFIG = AdmissionConfig(defaults=Defaults(rules=(BOTH, BATCH_NS, LABELLED)))


@pytest.mark.parametrize(
    ("namespace", "labels", "annotations", "level"),
    [
        ("batch", None, None, "reclaimed_cores"),
        ("team", {"tier": "node-daemon"}, None, "system_cores"),
        ("team", {"tier": "node-daemon"}, {"owner": "x"}, "system_cores"),
        ("db", {"app": "pg"}, None, "dedicated_cores"),
        ("db", {"app": "pg", "tier": "node-daemon"}, None, "dedicated_cores"),  # first wins
        ("db", {"app": "mysql"}, None, None),
        ("team", {"tier": "web"}, None, None),
        ("batch", None, {QOS_LEVEL_ANNOTATION: "shared_cores"}, None),  # carries one
    ],
)
def test_defaults_by_namespace_and_labels(
    namespace: str,
    labels: dict[str, str] | None,
    annotations: dict[str, str] | None,
    level: str | None,
) -> None:
    obj = pod(annotations=annotations, labels=labels)
    obj["metadata"]["namespace"] = namespace
    answer = review(admission(obj, namespace=namespace), config=CONFIG)
    assert answer["response"]["allowed"] is True
    if level is None:
        assert "patch" not in answer["response"]
        return
    ops = decoded_patch(answer)
    if annotations is None:
        assert ops == [
            {"op": "add", "path": "/metadata/annotations", "value": {QOS_LEVEL_ANNOTATION: level}}
        ]
    else:
        assert ops == [
            {
                "op": "add",
                "path": "/metadata/annotations/katalyst.kubewharf.io~1qos_level",
                "value": level,
            }
        ]
    result = apply_patch(obj, ops)
    assert result["metadata"]["annotations"] == {**(annotations or {}), QOS_LEVEL_ANNOTATION: level}
    assert as_kubernetes_would_store(result).level == level


def test_defaulted_reclaimed_pod_is_also_rewritten() -> None:
    obj = pod(containers=[container(requests={"cpu": "1"})])
    answer = review(admission(obj, namespace="batch"), config=CONFIG)
    result = patched(answer, obj)
    assert result["metadata"]["annotations"] == RECLAIMED
    assert result["spec"]["containers"][0]["resources"] == {
        "requests": {RESOURCE_RECLAIMED_MILLICPU: "1000"},
        "limits": {RESOURCE_RECLAIMED_MILLICPU: "1000"},
    }


def test_defaulted_reclaimed_pod_with_a_limit_is_denied() -> None:
    obj = pod(containers=[container(limits={"memory": "1Gi"})])
    answer = review(admission(obj, namespace="batch"), config=CONFIG)
    assert answer["response"]["allowed"] is False
    assert "limits[memory]" in answer["response"]["status"]["message"]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"namespaces": frozenset()}, {"match_labels": {}}],
)
def test_default_rule_needs_a_selector(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="set namespaces, match_labels or both"):
        DefaultRule(qos_level=QoSLevel.SHARED_CORES, **kwargs)


# --- Excluded namespaces, operations -----------------------------------------------------


@pytest.mark.parametrize("namespace", ["kube-system", "katalyst-system"])
def test_excluded_namespaces_untouched(namespace: str) -> None:
    bad = pod(
        annotations=RECLAIMED, containers=[container(requests={"cpu": "1"}, limits={"cpu": "1"})]
    )
    config = AdmissionConfig(
        defaults=Defaults(
            rules=(
                DefaultRule(qos_level=QoSLevel.RECLAIMED_CORES, namespaces=frozenset({namespace})),
            )
        )
    )
    assert_allowed_untouched(review(admission(bad, namespace=namespace), config=config))
    assert_allowed_untouched(review(admission(pod(), namespace=namespace), config=config))


def test_excluded_namespaces_configurable() -> None:
    config = AdmissionConfig(excluded_namespaces=frozenset({"legacy"}))
    bad = pod(annotations={QOS_LEVEL_ANNOTATION: "gold"})
    assert_allowed_untouched(review(admission(bad, namespace="legacy"), config=config))
    assert (
        review(admission(bad, namespace="kube-system"), config=config)["response"]["allowed"]
        is False
    )


@pytest.mark.parametrize(
    ("operation", "sub_resource"),
    [("DELETE", None), ("CONNECT", None), ("UPDATE", "status"), ("CREATE", "binding")],
)
def test_other_operations_and_subresources_untouched(
    operation: str, sub_resource: str | None
) -> None:
    obj = pod(annotations=RECLAIMED, containers=[container(requests={"cpu": "1"})])
    body = admission(obj, operation=operation)
    if sub_resource is not None:
        body["request"]["subResource"] = sub_resource
    assert_allowed_untouched(review(body))


def test_update_validates_changed_qos_annotations_and_never_patches() -> None:
    old = pod(annotations={QOS_LEVEL_ANNOTATION: "gold"})
    # Unchanged (even if invalid): allowed, so finalizers and labels can still change.
    assert_allowed_untouched(review(admission(old, operation="UPDATE", old=old)))
    new = pod(annotations={QOS_LEVEL_ANNOTATION: "silver"})
    answer = review(admission(new, operation="UPDATE", old=old))
    assert answer["response"]["allowed"] is False
    assert '"silver"' in answer["response"]["status"]["message"]
    # A reclaimed pod with native requests is not rewritten at UPDATE (resources are
    # immutable after creation); a valid change is allowed untouched.
    reclaimed = pod(annotations=RECLAIMED, containers=[container(requests={"cpu": "1"})])
    assert_allowed_untouched(review(admission(reclaimed, operation="UPDATE", old=pod())))


# --- Malformed reviews -------------------------------------------------------------------


def _without(key: str) -> dict[str, Any]:
    body = admission(pod())
    del body["request"][key]
    return body


def _with(key: str, value: object) -> dict[str, Any]:
    body = admission(pod())
    body["request"][key] = value
    return body


MALFORMED: list[tuple[str, object, str, str]] = [
    ("not an object", ["AdmissionReview"], "", "must be a JSON object"),
    ("null", None, "", "must be a JSON object"),
    (
        "v1beta1",
        {**admission(pod()), "apiVersion": "admission.k8s.io/v1beta1"},
        UID,
        'must be apiVersion "admission.k8s.io/v1", kind "AdmissionReview"',
    ),
    ("wrong kind", {**admission(pod()), "kind": "Pod"}, UID, 'kind "AdmissionReview"'),
    (
        "no request",
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
        "",
        '"request" must be an object',
    ),
    ("no uid", _without("uid"), "", '"request.uid" must be a non-empty string'),
    ("numeric uid", _with("uid", 5), "", '"request.uid" must be a non-empty string'),
    (
        "not a pod",
        _with("kind", {"group": "apps", "version": "v1", "kind": "Deployment"}),
        UID,
        '"request.kind" must be',
    ),
    ("no operation", _without("operation"), UID, '"request.operation" must be'),
    ("no namespace", _without("namespace"), UID, '"request.namespace" must be'),
    ("no object", _with("object", None), UID, '"request.object" must be a Pod object'),
    ("object a string", _with("object", "pod"), UID, '"request.object" must be a Pod object'),
    (
        "object a Service",
        _with("object", {**pod(), "kind": "Service"}),
        UID,
        '"request.object" must be apiVersion "v1", kind "Pod"',
    ),
]


@pytest.mark.parametrize(
    ("body", "uid", "message"),
    [(b, u, m) for _, b, u, m in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
def test_malformed_reviews_denied_not_raised(body: object, uid: str, message: str) -> None:
    answer = review(body)  # type: ignore[arg-type]
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == uid
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert message in response["status"]["message"]
    assert "patch" not in response


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "v1", "kind": "Pod"},
        {**pod(), "metadata": "web"},
        {**pod(), "spec": {"containers": "app"}},
        {**pod(), "spec": {"containers": [{"name": "app", "resources": {"requests": ["x"]}}]}},
    ],
    ids=["no metadata", "metadata a string", "containers a string", "requests a list"],
)
def test_malformed_pods_denied_with_the_field(obj: dict[str, Any]) -> None:
    response = review(admission(obj))["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert 'field "' in response["status"]["message"]


# --- Wire format -------------------------------------------------------------------------


@pytest.mark.parametrize("uid", [UID, "x", "ünïcode-uid"])
def test_uid_echoed(uid: str) -> None:
    for obj in (pod(), pod(annotations={QOS_LEVEL_ANNOTATION: "gold"})):
        body = admission(obj)
        body["request"]["uid"] = uid
        assert review(body)["response"]["uid"] == uid


def test_patch_is_standard_base64_of_compact_json() -> None:
    obj = pod(annotations=RECLAIMED, containers=[container(requests={"cpu": "1"})])
    response = review(admission(obj))["response"]
    raw = base64.b64decode(response["patch"], validate=True)  # standard alphabet, padded
    assert base64.b64encode(raw).decode("ascii") == response["patch"]
    text = raw.decode("utf-8")
    assert json.loads(text) == decoded_patch(review(admission(obj)))
    assert ", " not in text and ": " not in text
    assert set(response) == {"uid", "allowed", "patchType", "patch"}


def test_response_is_json_serialisable() -> None:
    obj = pod(annotations=RECLAIMED, containers=[container(requests={"cpu": "1"})])
    for body in (admission(obj), admission(pod(annotations={QOS_LEVEL_ANNOTATION: "x"}))):
        answer = review(body)
        assert json.loads(json.dumps(answer)) == answer


def test_input_is_not_mutated() -> None:
    obj = pod(annotations=RECLAIMED, containers=[container(requests={"cpu": "1"})])
    body = admission(obj, namespace="batch")
    before = copy.deepcopy(body)
    review(body, config=CONFIG)
    assert body == before
