"""The CRDs in ``deploy/crds/``: structurally valid ``apiextensions.k8s.io/v1``
definitions, whose schemas accept the objects the controller, the agent and the
reporter write, keep every field of them (nothing pruned), refuse wrong types, and
bound each setting exactly as the agent's own sections do.

Values are validated with ``jsonschema`` (Draft 4, the dialect OpenAPI 3.0 builds
on) after the two Kubernetes extensions it does not know are translated
(``nullable`` and ``x-kubernetes-int-or-string``); the structural rules and the
pruning that the API server applies are checked here by hand, as the API server
states them ("Specifying a structural schema" in the Kubernetes documentation).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agent.gpu.inventory import GPU, RDMADevice
from agent.qrm.gpu.policy import GPUPolicy
from agent.reporter import Reclaimed, ZoneAmount, cnr_object, cnr_status_patch
from agent.reporter.devices import device_zones
from katalyst.config.eviction import EvictionConfig
from katalyst.config.io import IOConfig
from katalyst.config.network import NetworkConfig
from katalyst.config.sysadvisor import AdvisorConfig
from katalyst.dynconfig import (
    ADMIN_QOS_GVR,
    CNC_GVR,
    CNR_GVR,
    DYNAMIC_SECTIONS,
    KCC_GVR,
    STATIC_KEYS,
    ReclaimConfig,
    cnc_config_list,
    parse_target,
    validate_config,
)
from tests.unit.dynconfig.support import kcc_object, ref, target_object

CRDS = Path(__file__).resolve().parents[3] / "deploy" / "crds"
FILES = {
    KCC_GVR: "config.katalyst.kubewharf.io_katalystcustomconfigs.yaml",
    ADMIN_QOS_GVR: "config.katalyst.kubewharf.io_adminqosconfigurations.yaml",
    CNC_GVR: "config.katalyst.kubewharf.io_customnodeconfigs.yaml",
    CNR_GVR: "node.katalyst.kubewharf.io_customnoderesources.yaml",
}
SCOPES = {
    KCC_GVR: "Namespaced",
    ADMIN_QOS_GVR: "Namespaced",
    CNC_GVR: "Cluster",
    CNR_GVR: "Cluster",
}
SHORT = {KCC_GVR: "kcc", ADMIN_QOS_GVR: "aqc", CNC_GVR: "cnc", CNR_GVR: "kcnr"}


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _text(gvr: Any) -> str:
    return (CRDS / FILES[gvr]).read_text()


def load(gvr: Any) -> dict[str, Any]:
    """The CRD, a fresh copy."""
    doc = yaml.load(_text(gvr), Loader=_Loader)  # noqa: S506 - a safe loader
    assert isinstance(doc, dict)
    return doc


@functools.cache
def _schema(gvr: Any) -> dict[str, Any]:
    (version,) = load(gvr)["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def schema_of(gvr: Any) -> dict[str, Any]:
    """The CRD's schema (shared: do not change it)."""
    return _schema(gvr)


# ---- structure -------------------------------------------------------------------------

_KEYWORDS = {
    "type",
    "format",
    "title",
    "description",
    "default",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "items",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "properties",
    "additionalProperties",
    "nullable",
    "example",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-map-type",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-embedded-resource",
}
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")


def structural_problems(node: Any, path: str = "") -> Iterator[str]:
    """Where ``node`` breaks a rule of a structural schema (or uses a keyword a v1
    CRD refuses)."""
    if not isinstance(node, dict):
        yield f"{path}: not a schema"
        return
    for key in node:
        if key not in _KEYWORDS:
            yield f"{path}: keyword {key!r} is not allowed in a CRD schema"
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        yield f"{path}: x-kubernetes-preserve-unknown-fields must be true or absent"
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    kind = node.get("type")
    if kind is None and not (preserve or int_or_string):
        yield f"{path}: no type"
    if kind is not None and kind not in _TYPES:
        yield f"{path}: unknown type {kind!r}"
    if "properties" in node and "additionalProperties" in node:
        yield f"{path}: properties and additionalProperties together"
    if ("properties" in node or "additionalProperties" in node) and kind not in (None, "object"):
        yield f"{path}: properties on a {kind}"
    if kind == "array" and "items" not in node:
        yield f"{path}: an array without items"
    if node.get("additionalProperties") is False:
        yield f"{path}: additionalProperties: false is not structural"
    for name, child in node.get("properties", {}).items():
        yield from structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from structural_problems(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from structural_problems(node["items"], f"{path}[]")
    for junctor in _JUNCTORS:
        branches = node.get(junctor)
        if branches is None:
            continue
        for branch in branches if isinstance(branches, list) else [branches]:
            allowed = {"type"} if int_or_string and junctor == "anyOf" else set()
            for key in ("description", "type", "default", "additionalProperties", "nullable"):
                if key in branch and key not in allowed:
                    yield f"{path}.{junctor}: {key} inside a junctor"
            for name in branch.get("properties", {}):
                if name not in node.get("properties", {}):
                    yield f"{path}.{junctor}: field {name} not specified outside it"
    if node.get("x-kubernetes-list-type") == "map":
        item = node.get("items", {})
        for key in node.get("x-kubernetes-list-map-keys", []):
            if key not in item.get("required", []):
                yield f"{path}: list map key {key} must be required"
    for key in node.get("required", []):
        if key not in node.get("properties", {}):
            yield f"{path}: required field {key} is not a property"


@pytest.mark.parametrize("gvr", list(FILES), ids=[g.resource for g in FILES])
def test_each_file_is_a_valid_v1_crd(gvr: Any) -> None:
    crd = load(gvr)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{gvr.resource}.{gvr.group}"
    spec = crd["spec"]
    assert spec["group"] == gvr.group
    assert spec["scope"] == SCOPES[gvr]
    names = spec["names"]
    assert names["plural"] == gvr.resource
    assert names["listKind"] == f"{names['kind']}List"
    assert names["singular"] == names["kind"].lower()
    assert SHORT[gvr] in names["shortNames"]
    (version,) = spec["versions"]
    assert version["name"] == gvr.version
    assert version["served"] is True and version["storage"] is True
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert list(structural_problems(schema)) == []
    for column in version["additionalPrinterColumns"]:
        assert set(column) <= {"name", "type", "jsonPath", "priority", "format", "description"}
        assert column["type"] in {"integer", "number", "string", "boolean", "date"}
        assert column["jsonPath"].startswith(".")


def test_the_structural_check_can_fail() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"properties": {}},
            "b": {"type": "array"},
            "c": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "d": {"type": "string", "$ref": "#/x"},
            "e": {"type": "object", "anyOf": [{"type": "string"}]},
        },
        "required": ["z"],
    }
    assert len(list(structural_problems(bad))) == 6


# ---- values ----------------------------------------------------------------------------


def _draft4(node: Any) -> Any:
    """A Kubernetes schema as plain JSON Schema draft 4."""
    if isinstance(node, list):
        return [_draft4(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _draft4(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    out.pop("nullable", None)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node:
        out["properties"] = {k: _draft4(v) for k, v in node["properties"].items()}
    return out


@functools.cache
def _validator(gvr: Any) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(_draft4(schema_of(gvr)))


def value_errors(gvr: Any, obj: Any) -> list[str]:
    validator = _validator(gvr)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


def pruned(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """The fields of ``value`` that the API server would drop (not in the schema)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or path == ".metadata":
        return []
    out: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                out.extend(pruned(props[key], item, f"{path}.{key}"))
            elif isinstance(extra, dict):
                out.extend(pruned(extra, item, f"{path}.{key}"))
            else:
                out.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out.extend(pruned(schema["items"], item, f"{path}[{i}]"))
    return out


def accepted(gvr: Any, obj: Any) -> None:
    assert value_errors(gvr, obj) == []
    assert pruned(schema_of(gvr), obj) == []


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def every_default() -> dict[str, Any]:
    """Every dynamic setting at its default, as a ``spec.config``."""
    network = _plain(NetworkConfig())
    for key in STATIC_KEYS["network"]:
        del network[key]
    return {
        "reclaim": _plain(ReclaimConfig()),
        "sysadvisor": _plain(AdvisorConfig()),
        "eviction": _plain(EvictionConfig()),
        "network": network,
        "io": _plain(IOConfig()),
    }


AQC_EXAMPLES = [
    target_object("cluster", {"config": every_default()}),
    target_object(
        "pool-batch",
        {
            "nodeLabelSelector": "node-pool=batch,zone in (a,b)",
            "priority": 1,
            "paused": False,
            "revisionHistoryLimit": 3,
            "config": {
                "sysadvisor": {
                    "indicators": {"cpu_usage_ratio": {"target": 0.5}},
                    "period_s": None,
                },
                "io": {"devices": ["8:0", "/dev/nvme0n1"], "max_read_bps": 104857600},
            },
        },
    ),
    target_object(
        "incident",
        {
            "ephemeralSelector": {"nodeNames": ["node-1", "node-2"], "lastDuration": "1h30m"},
            "config": {"reclaim": {"enabled": False}},
            "serviceOverrides": [
                {
                    "namespace": "shop",
                    "selector": {
                        "matchLabels": {"app": "web"},
                        "matchExpressions": [
                            {"key": "tier", "operator": "In", "values": ["fe"]},
                            {"key": "canary", "operator": "DoesNotExist"},
                        ],
                    },
                    "indicators": {
                        "cpu_usage_ratio": {"target": 0.4},
                        "cpu_sched_wait": {"target": 250},
                    },
                }
            ],
        },
    ),
]


@pytest.mark.parametrize("obj", AQC_EXAMPLES, ids=lambda o: o["metadata"]["name"])
def test_the_example_configs_are_accepted_whole(obj: dict[str, Any]) -> None:
    parse_target(obj)
    status = {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Valid",
                "status": "True",
                "reason": "Valid",
                "message": "",
                "lastTransitionTime": "2024-01-01T00:00:00Z",
            }
        ],
    }
    accepted(ADMIN_QOS_GVR, {**obj, "status": status})


def test_every_default_is_accepted_and_is_valid_for_the_agent() -> None:
    assert validate_config(every_default()) == ()


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"priority": "1"}, "spec.priority"),
        ({"priority": -1}, "spec.priority"),
        ({"ephemeralSelector": {"nodeNames": "n1"}}, "spec.ephemeralSelector.nodeNames"),
        ({"ephemeralSelector": {"lastDuration": "1 hour"}}, "spec.ephemeralSelector.lastDuration"),
        ({"paused": "yes"}, "spec.paused"),
        ({"config": {"sysadvisor": {"period_s": 0}}}, "spec.config.sysadvisor.period_s"),
        ({"config": {"eviction": {"rate_limit": {"burst": 1.5}}}}, "spec.config.eviction"),
        ({"config": {"network": {"classify": "tc"}}}, "spec.config.network.classify"),
        ({"config": {"io": {"devices": ["sda"]}}}, "spec.config.io.devices.0"),
        (
            {"serviceOverrides": [{"namespace": "d", "selector": {}, "indicators": {}, "x": 1}]},
            None,
        ),
        (
            {
                "serviceOverrides": [
                    {
                        "namespace": "d",
                        "selector": {"matchExpressions": [{"key": "a", "operator": "Is"}]},
                        "indicators": {},
                    }
                ]
            },
            "spec.serviceOverrides.0.selector.matchExpressions.0.operator",
        ),
        (
            {
                "serviceOverrides": [
                    {
                        "namespace": "d",
                        "selector": {},
                        "indicators": {"cpu_usage_ratio": {"target": 0}},
                    }
                ]
            },
            "spec.serviceOverrides.0.indicators.cpu_usage_ratio.target",
        ),
        ({"serviceOverrides": [{"namespace": "d"}]}, "spec.serviceOverrides.0"),
    ],
)
def test_wrong_values_are_refused_or_pruned(spec: dict[str, Any], where: str | None) -> None:
    obj = target_object("bad", spec)
    errors = value_errors(ADMIN_QOS_GVR, obj)
    if where is None:
        assert pruned(schema_of(ADMIN_QOS_GVR), obj) != []
    else:
        assert errors and all(e.startswith(where) for e in errors), errors


def test_a_typo_in_a_config_key_would_be_pruned() -> None:
    obj = target_object("typo", {"config": {"sysadvisor": {"period": 2}}})
    assert pruned(schema_of(ADMIN_QOS_GVR), obj) == [".spec.config.sysadvisor.period"]


def test_the_kcc_example_is_accepted() -> None:
    accepted(KCC_GVR, kcc_object())
    bad = kcc_object()
    bad["spec"]["nodeLabelSelectorAllowedKeyList"][0]["priority"] = "0"
    assert value_errors(KCC_GVR, bad)
    del bad["spec"]["targetType"]
    assert any("targetType" in e for e in value_errors(KCC_GVR, bad))


def test_what_the_controller_writes_in_a_cnc_is_accepted() -> None:
    listed = cnc_config_list(ADMIN_QOS_GVR, [(ref("cluster"), "0123456789abcdef")])
    cnc: dict[str, Any] = {
        "apiVersion": "config.katalyst.kubewharf.io/v1alpha1",
        "kind": "CustomNodeConfig",
        "metadata": {"name": "node-1"},
        "spec": {},
        "status": {"katalystCustomConfigList": listed},
    }
    accepted(CNC_GVR, cnc)
    bad = copy.deepcopy(cnc)
    bad["status"]["katalystCustomConfigList"][0]["hash"] = "not-a-hash"
    assert value_errors(CNC_GVR, bad)


def test_what_the_reporter_writes_in_a_cnr_is_accepted() -> None:
    values = Reclaimed(
        millicpu=3000,
        memory_bytes=6000,
        zones=(
            ZoneAmount(numa=0, socket=0, millicpu=2000, memory_bytes=1000),
            ZoneAmount(numa=1, socket=1, millicpu=1000, memory_bytes=5000),
        ),
    )
    created = cnr_object("node-1")
    accepted(CNR_GVR, created)
    stored: dict[str, Any] = {
        **created,
        "metadata": {"name": "node-1", "resourceVersion": "5"},
        "status": {
            "topologyPolicy": "None",
            "topologyZone": [
                {
                    "type": "Socket",
                    "name": "0",
                    "resources": {},
                    "children": [
                        {
                            "type": "Numa",
                            "name": "0",
                            "resources": {"allocatable": {"cpu": "48", "memory": "192Gi"}},
                            "attributes": [{"name": "numa_distance", "value": "10,21"}],
                            "children": [
                                {
                                    "type": "NIC",
                                    "name": "eth0",
                                    # deeper than the typed levels: kept as written
                                    "children": [
                                        {"type": "Dev", "name": "d", "children": [{"any": 1}]}
                                    ],
                                }
                            ],
                        }
                    ],
                }
            ],
        },
    }
    accepted(CNR_GVR, stored)
    patch = cnr_status_patch(values, stored)
    written = {**stored, "status": {**stored["status"], **patch["status"]}}
    accepted(CNR_GVR, written)
    bad = copy.deepcopy(written)
    bad["status"]["resources"]["allocatable"]["cpu"] = "lots"
    assert value_errors(CNR_GVR, bad)


# ---- the schema and the agent's sections agree -------------------------------------------


def _config_schema() -> dict[str, Any]:
    schema = schema_of(ADMIN_QOS_GVR)["properties"]["spec"]["properties"]["config"]
    assert isinstance(schema, dict)
    return schema


def _leaves(
    schema: dict[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    if "properties" in schema:
        for name, child in schema["properties"].items():
            yield from _leaves(child, (*path, name))
    else:
        yield path, schema


def _fields(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _fields(item, (*path, key))
    else:
        yield path


def test_the_schema_has_exactly_the_dynamic_settings() -> None:
    schema_paths = {path for path, _ in _leaves(_config_schema())}
    assert set(_config_schema()["properties"]) == set(DYNAMIC_SECTIONS)
    assert schema_paths == set(_fields(every_default()))


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: Any = value
    for key in reversed(path):
        out = {key: out}
    assert isinstance(out, dict)
    return out


def _with_context(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``path`` set to ``value``, with what the agent requires beside it (an IO ceiling
    needs a floor no higher)."""
    config = _nested(path, value)
    if path[0] == "io" and path[-1].startswith("max_"):
        config["io"][path[-1].replace("max_", "min_")] = value if value >= 1 else 1
    return config


def _numeric_leaves() -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    for path, schema in _leaves(_config_schema()):
        if schema.get("type") in ("integer", "number"):
            yield path, schema


@pytest.mark.parametrize(
    ("path", "schema"),
    list(_numeric_leaves()),
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else "",
)
def test_each_bound_is_the_agents_bound(path: tuple[str, ...], schema: dict[str, Any]) -> None:
    integer = schema["type"] == "integer"
    step = 1 if integer else 1e-6

    def agent_accepts(value: float) -> bool:
        return validate_config(_with_context(path, value)) == ()

    def schema_accepts(value: float) -> bool:
        obj = target_object("b", {"config": _with_context(path, value)})
        return value_errors(ADMIN_QOS_GVR, obj) == []

    for bound, exclusive, beyond in (
        (schema.get("minimum"), schema.get("exclusiveMinimum", False), -step),
        (schema.get("maximum"), schema.get("exclusiveMaximum", False), step),
    ):
        if bound is None:
            continue
        inside = bound - beyond if exclusive else bound
        outside = bound if exclusive else bound + beyond
        if integer:
            inside, outside = int(inside), int(outside)
        assert schema_accepts(inside) and agent_accepts(inside), (path, inside)
        assert not schema_accepts(outside), (path, outside)
        assert not agent_accepts(outside), (path, outside)
    # every number the agent reads is bounded below: the schema says so too
    assert schema.get("minimum") is not None, path


def test_the_device_zones_the_reporter_writes_are_accepted() -> None:
    zones = device_zones(
        GPUPolicy((GPU(index=0, uuid="GPU-a", memory_mib=1024, numa_node=0),)),
        [RDMADevice(name="mlx5_0", netdevs=("eth2",), numa_node=0)],
    )
    cnr = {
        "apiVersion": f"{CNR_GVR.group}/{CNR_GVR.version}",
        "kind": "CustomNodeResource",
        "metadata": {"name": "node-a"},
        "spec": {},
        "status": {"topologyZone": list(zones)},
    }
    accepted(CNR_GVR, cnr)
