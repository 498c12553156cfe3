"""PodView.from_dict over realistic pods: levels, quantities, native QoS class, errors."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pytest

from katalyst.qos import (
    MEMORY_ENHANCEMENT_ANNOTATION,
    QOS_LEVEL_ANNOTATION,
    RESOURCE_RECLAIMED_MILLICPU,
    NativeQoSClass,
    PodDict,
    PodView,
    QoSLevel,
    QoSValidationError,
    parse_quantity,
)

from .pods import API_SERVER_POD, RECLAIMED_POD


def _with(base: Mapping[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    pod = copy.deepcopy(dict(base))
    change(pod)
    return pod


def test_api_server_pod() -> None:
    view = PodView.from_dict(API_SERVER_POD)
    assert view.uid == "0f1c2d3e-4a5b-6c7d-8e9f-0a1b2c3d4e5f"
    assert (view.namespace, view.name, view.node_name) == ("shop", "web-7d9f8c6b5-x2k4q", "node-17")
    assert view.level is QoSLevel.DEDICATED_CORES
    assert view.enhancements.memory.numa_binding is True
    assert view.enhancements.memory.numa_exclusive is True
    assert view.oom_priority == 100  # dedicated default
    assert [c.name for c in view.containers] == ["app", "sidecar"]
    assert [c.name for c in view.init_containers] == ["warmup"]
    assert view.init_containers[0].init is True
    assert view.containers[0].requests["cpu"] == parse_quantity("4")
    assert view.containers[1].limits["memory"].value() == 256 * 2**20
    assert view.containers[1].requests["cpu"].milli_value() == 500
    assert view.qos_class is NativeQoSClass.GUARANTEED
    assert view.computed_qos_class is NativeQoSClass.GUARANTEED
    assert (view.priority, view.priority_class_name, view.is_critical) == (0, None, False)
    assert dict(view.labels) == {"app": "web", "pod-template-hash": "7d9f8c6b5"}
    assert view.annotations[QOS_LEVEL_ANNOTATION] == "dedicated_cores"
    assert (view.reclaimed_millicpu, view.reclaimed_memory) == (0, 0)


def test_view_is_frozen_and_detached_from_the_dict() -> None:
    pod = copy.deepcopy(API_SERVER_POD)
    view = PodView.from_dict(pod)
    pod["metadata"]["labels"]["app"] = "changed"
    assert view.labels["app"] == "web"
    with pytest.raises(AttributeError):
        view.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        view.labels["app"] = "x"  # type: ignore[index]


def test_reclaimed_pod_sums_app_container_requests() -> None:
    view = PodView.from_dict(RECLAIMED_POD)
    assert view.level is QoSLevel.RECLAIMED_CORES
    assert view.enhancements.cpu.suppression_tolerance_rate == 2.5
    # executor 4k + shuffle 1500 (defaulted from its limit); the init container is not summed
    assert view.reclaimed_millicpu == 5500
    assert view.reclaimed_memory == 9 * 2**30
    # reclaimed resources are not cpu/memory: Kubernetes calls the pod BestEffort
    assert view.qos_class is NativeQoSClass.BEST_EFFORT
    assert view.namespace == "batch"
    assert view.node_name is None
    assert view.oom_priority == -100


def test_shared_cores_default_and_namespace_default() -> None:
    pod: PodDict = {
        "metadata": {"uid": "u", "name": "p"},
        "spec": {"containers": [{"name": "c"}]},
    }
    view = PodView.from_dict(pod)
    assert view.level is QoSLevel.SHARED_CORES
    assert view.namespace == "default"
    assert view.qos_class is NativeQoSClass.BEST_EFFORT
    assert view.oom_priority == 0


def test_json_numbers_are_accepted_as_quantities() -> None:
    def change(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][0]["resources"] = {
            "requests": {"cpu": 0.5, "memory": 1073741824},
            "limits": {"cpu": 2},
        }

    view = PodView.from_dict(_with(API_SERVER_POD, change))
    assert view.containers[0].requests["cpu"].amount == Decimal("0.5")
    assert view.containers[0].requests["memory"].value() == 2**30


def test_nulls_in_optional_fields_are_absent() -> None:
    pod = {
        "metadata": {"uid": "u", "name": "p", "namespace": None, "annotations": None},
        "spec": {"containers": [{"name": "c", "resources": None}], "initContainers": None},
        "status": None,
    }
    view = PodView.from_dict(pod)
    assert view.namespace == "default"
    assert view.init_containers == ()


# --- Native QoS class ----------------------------------------------------------------------


def _containers(*resources: dict[str, dict[str, str]], init: int = 0) -> dict[str, Any]:
    containers = [{"name": f"c{i}", "resources": r} for i, r in enumerate(resources)]
    return {
        "metadata": {"uid": "u", "name": "p"},
        "spec": {
            "containers": containers[init:] or [{"name": "main"}],
            "initContainers": containers[:init],
        },
    }


GUARANTEED = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
LIMITS_ONLY = {"limits": {"cpu": "1", "memory": "1Gi"}}
BURSTABLE = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
CPU_ONLY = {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}
NONE: dict[str, dict[str, str]] = {}


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (_containers(NONE), NativeQoSClass.BEST_EFFORT),
        (_containers(NONE, NONE), NativeQoSClass.BEST_EFFORT),
        (_containers({"requests": {"ephemeral-storage": "1Gi"}}), NativeQoSClass.BEST_EFFORT),
        (_containers({"requests": {"cpu": "0", "memory": "0"}}), NativeQoSClass.BEST_EFFORT),
        (_containers(GUARANTEED), NativeQoSClass.GUARANTEED),
        (_containers(GUARANTEED, GUARANTEED), NativeQoSClass.GUARANTEED),
        (_containers(LIMITS_ONLY), NativeQoSClass.GUARANTEED),  # requests default to limits
        (
            _containers(
                {"requests": {"cpu": "1000m", "memory": "1024Mi"}, "limits": GUARANTEED["limits"]}
            ),
            NativeQoSClass.GUARANTEED,  # equal values in different spellings
        ),
        (
            _containers(
                {
                    "requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"},
                    "limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"},
                }
            ),
            NativeQoSClass.GUARANTEED,  # only cpu and memory count
        ),
        (_containers(BURSTABLE), NativeQoSClass.BURSTABLE),
        (_containers(CPU_ONLY), NativeQoSClass.BURSTABLE),
        (_containers({"requests": {"memory": "1Gi"}}), NativeQoSClass.BURSTABLE),
        (_containers(GUARANTEED, NONE), NativeQoSClass.BURSTABLE),
        (_containers(NONE, GUARANTEED, init=1), NativeQoSClass.BURSTABLE),  # init counts
        (_containers(GUARANTEED, GUARANTEED, init=1), NativeQoSClass.GUARANTEED),
        (_containers(BURSTABLE, GUARANTEED, init=1), NativeQoSClass.BURSTABLE),
    ],
)
def test_native_qos_class(pod: dict[str, Any], expected: NativeQoSClass) -> None:
    view = PodView.from_dict(pod)
    assert view.computed_qos_class is expected
    assert view.qos_class is expected


def test_status_qos_class_wins_like_get_pod_qos() -> None:
    pod = _containers(GUARANTEED)
    pod["status"] = {"qosClass": "Burstable"}
    view = PodView.from_dict(pod)
    assert view.qos_class is NativeQoSClass.BURSTABLE
    assert view.computed_qos_class is NativeQoSClass.GUARANTEED
    pod["status"] = {"qosClass": ""}
    assert PodView.from_dict(pod).qos_class is NativeQoSClass.GUARANTEED


# --- Critical pods -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "annotations", "critical"),
    [
        ({"priorityClassName": "system-node-critical"}, {}, True),
        ({"priorityClassName": "system-cluster-critical"}, {}, True),
        ({"priorityClassName": "high"}, {}, False),
        ({"priority": 2_000_000_000}, {}, True),
        ({"priority": 2_000_001_000}, {}, True),
        ({"priority": 1_999_999_999}, {}, False),
        ({}, {"kubernetes.io/config.source": "file"}, True),  # a static pod
        ({}, {"kubernetes.io/config.source": "api"}, False),
        ({}, {"kubernetes.io/config.mirror": "abc"}, True),
        ({}, {}, False),
    ],
)
def test_critical(spec: dict[str, Any], annotations: dict[str, str], critical: bool) -> None:
    pod = _containers(NONE)
    pod["spec"].update(spec)
    pod["metadata"]["annotations"] = annotations
    assert PodView.from_dict(pod).is_critical is critical


# --- Errors name the path ----------------------------------------------------------------------


def _set(path: tuple[str | int, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def change(pod: dict[str, Any]) -> None:
        target: Any = pod
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


def _delete(path: tuple[str | int, ...]) -> Callable[[dict[str, Any]], None]:
    def change(pod: dict[str, Any]) -> None:
        target: Any = pod
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return change


@pytest.mark.parametrize(
    ("change", "key", "rule"),
    [
        (_delete(("metadata",)), "metadata", "must be present"),
        (_set(("metadata",), []), "metadata", "must be an object"),
        (_delete(("metadata", "uid")), "metadata.uid", "must be present"),
        (_set(("metadata", "uid"), ""), "metadata.uid", "must not be empty"),
        (_set(("metadata", "uid"), 7), "metadata.uid", "must be a string"),
        (_set(("metadata", "name"), "Web"), "metadata.name", "must be a DNS subdomain"),
        (_set(("metadata", "name"), "a" * 254), "metadata.name", "must be a DNS subdomain"),
        (_set(("metadata", "namespace"), "a.b"), "metadata.namespace", "must be a DNS label"),
        (_set(("metadata", "labels"), "app=web"), "metadata.labels", "must be an object"),
        (_set(("metadata", "labels", "app"), 1), "metadata.labels[app]", "must be a string"),
        (_set(("metadata", "annotations", 5), "x"), "metadata.annotations", "keys must be strings"),
        (
            _set(("metadata", "annotations", QOS_LEVEL_ANNOTATION), "best"),
            QOS_LEVEL_ANNOTATION,
            "must be one of",
        ),
        (
            _set(("metadata", "annotations", MEMORY_ENHANCEMENT_ANNOTATION), "{"),
            MEMORY_ENHANCEMENT_ANNOTATION,
            "JSON object",
        ),
        (_delete(("spec",)), "spec", "must be present"),
        (_delete(("spec", "containers")), "spec.containers", "must be present"),
        (_set(("spec", "containers"), []), "spec.containers", "at least one container"),
        (_set(("spec", "containers"), {"name": "app"}), "spec.containers", "must be a list"),
        (_set(("spec", "containers", 0), "app"), "spec.containers[0]", "must be an object"),
        (_delete(("spec", "containers", 0, "name")), "spec.containers[0].name", "must be present"),
        (
            _set(("spec", "containers", 0, "name"), "App"),
            "spec.containers[0].name",
            "must be a DNS label",
        ),
        (
            _set(("spec", "containers", 1, "name"), "app"),
            "spec.containers[app].name",
            "must be unique",
        ),
        (
            _set(("spec", "initContainers", 0, "name"), "app"),
            "spec.initContainers[app].name",
            "must be unique",
        ),
        (_set(("spec", "initContainers"), "x"), "spec.initContainers", "must be a list"),
        (
            _set(("spec", "containers", 0, "resources"), []),
            "spec.containers[app].resources",
            "must be an object",
        ),
        (
            _set(("spec", "containers", 0, "resources", "requests"), "4"),
            "spec.containers[app].resources.requests",
            "must be an object",
        ),
        (
            _set(("spec", "containers", 0, "resources", "requests", "cpu"), "4 cores"),
            "spec.containers[app].resources.requests[cpu]",
            "whitespace",
        ),
        (
            _set(("spec", "containers", 0, "resources", "requests", "cpu"), "-1"),
            "spec.containers[app].resources.requests[cpu]",
            "must not be negative",
        ),
        (
            _set(("spec", "containers", 0, "resources", "requests", "cpu"), True),
            "spec.containers[app].resources.requests[cpu]",
            "quantity string",
        ),
        (
            _set(("spec", "containers", 0, "resources", "requests", "cpu"), [1]),
            "spec.containers[app].resources.requests[cpu]",
            "quantity string",
        ),
        (
            _set(("spec", "containers", 0, "resources", "requests", "cpu"), float("inf")),
            "spec.containers[app].resources.requests[cpu]",
            "finite",
        ),
        (
            _set(("spec", "containers", 0, "resources", "requests", "cpu"), 2**64),
            "spec.containers[app].resources.requests[cpu]",
            "64-bit",
        ),
        (
            _set(("spec", "containers", 0, "resources", "requests", "cpu"), "1e16"),
            "spec.containers[app].resources.requests[cpu]",
            "milli-value must fit",
        ),
        (
            _set(("spec", "containers", 0, "resources", "limits", "memory"), "8Ei"),
            "spec.containers[app].resources.limits[memory]",
            "value must fit",
        ),
        (
            _set(("spec", "containers", 0, "resources", "limits", "memory"), "4Gi"),
            "spec.containers[app].resources.requests[memory]",
            "less than or equal to the limit 4294967296",
        ),
        (
            _set(("spec", "containers", 0, "resources", "limits", ""), "1"),
            "spec.containers[app].resources.limits",
            "non-empty strings",
        ),
        (
            _set(
                ("spec", "containers", 0, "resources", "limits", RESOURCE_RECLAIMED_MILLICPU), "1.5"
            ),
            f"spec.containers[app].resources.limits[{RESOURCE_RECLAIMED_MILLICPU}]",
            "whole number",
        ),
        (_set(("spec", "nodeName"), 3), "spec.nodeName", "must be a string"),
        (_set(("spec", "priority"), "high"), "spec.priority", "32-bit integer"),
        (_set(("spec", "priority"), True), "spec.priority", "32-bit integer"),
        (_set(("spec", "priority"), 2**31), "spec.priority", "32-bit integer"),
        (_set(("spec", "priorityClassName"), ["x"]), "spec.priorityClassName", "must be a string"),
        (_set(("status",), "Running"), "status", "must be an object"),
        (
            _set(("status", "qosClass"), "guaranteed"),
            "status.qosClass",
            "must be one of Guaranteed, Burstable, BestEffort",
        ),
    ],
)
def test_structural_errors_name_the_path(
    change: Callable[[dict[str, Any]], None], key: str, rule: str
) -> None:
    with pytest.raises(QoSValidationError) as caught:
        PodView.from_dict(_with(API_SERVER_POD, change))
    err = caught.value
    assert err.key == key
    assert rule in err.rule
    assert key in str(err)
    assert err.rule in str(err)


def test_error_message_for_a_bad_request() -> None:
    pod = _with(
        API_SERVER_POD, _set(("spec", "containers", 0, "resources", "requests", "cpu"), "2 cores")
    )
    with pytest.raises(QoSValidationError) as caught:
        PodView.from_dict(pod)
    assert str(caught.value) == (
        'field "spec.containers[app].resources.requests[cpu]": value "2 cores" is invalid: '
        "must not contain whitespace, like 500m, 1.5Gi or 1e3"
    )


def test_a_pod_that_is_not_a_mapping() -> None:
    with pytest.raises(QoSValidationError) as caught:
        PodView.from_dict(["not", "a", "pod"])  # type: ignore[arg-type]
    assert caught.value.key == "pod"
