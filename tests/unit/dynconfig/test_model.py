"""Parsing the dynamic-configuration objects: values, selectors, durations, and
errors that name the field; nothing else is ever raised."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from katalyst.dynconfig import (
    ADMIN_QOS_GVR,
    CNC_GVR,
    CNR_GVR,
    KCC_GVR,
    ConfigRef,
    InvalidTarget,
    ParseError,
    Requirement,
    cnc_config_list,
    load_target,
    parse_cnc,
    parse_duration,
    parse_kcc,
    parse_label_selector,
    parse_node,
    parse_selector,
    parse_target,
    parse_timestamp,
    spec_hash,
)
from tests.unit.dynconfig.support import NS, T0, kcc_object, node_object, ref, target_object


def test_constants_name_the_resources() -> None:
    assert KCC_GVR.api_version == "config.katalyst.kubewharf.io/v1alpha1"
    assert KCC_GVR.resource == "katalystcustomconfigs"
    assert ADMIN_QOS_GVR.resource == "adminqosconfigurations"
    assert CNC_GVR.resource == "customnodeconfigs"
    assert CNR_GVR.group == "node.katalyst.kubewharf.io"
    assert CNR_GVR.resource == "customnoderesources"


# ---- KCC -------------------------------------------------------------------------------


def test_a_kcc_lists_its_target_and_the_keys_allowed_per_priority() -> None:
    kcc = parse_kcc(kcc_object({1: ["node-pool", "zone"], 0: ["node-pool"]}))
    assert kcc.name == "admin-qos" and kcc.namespace == NS
    assert kcc.target == ADMIN_QOS_GVR
    assert kcc.priorities == (0, 1)
    assert kcc.keys_at(1) == frozenset({"node-pool", "zone"})
    assert kcc.keys_at(5) is None
    assert kcc.ref == ConfigRef("KatalystCustomConfig", NS, "admin-qos")


def test_a_kcc_priority_listed_twice_is_refused() -> None:
    obj = kcc_object()
    obj["spec"]["nodeLabelSelectorAllowedKeyList"].append({"priority": 0, "keyList": ["x"]})
    with pytest.raises(ParseError, match=r"nodeLabelSelectorAllowedKeyList\[3\]\.priority: 0 is"):
        parse_kcc(obj)


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda o: o["spec"].pop("targetType"), "spec.targetType: must be a mapping"),
        (lambda o: o["spec"]["targetType"].pop("resource"), "spec.targetType.resource:"),
        (lambda o: o["metadata"].pop("namespace"), "metadata.namespace:"),
        (
            lambda o: o["spec"]["nodeLabelSelectorAllowedKeyList"][0].update(priority=-1),
            r"nodeLabelSelectorAllowedKeyList\[0\]\.priority: must be >= 0",
        ),
        (
            lambda o: o["spec"]["nodeLabelSelectorAllowedKeyList"][0].update(keyList=["a b"]),
            r"nodeLabelSelectorAllowedKeyList\[0\]\.keyList\[0\]: 'a b' is not a label key",
        ),
        (lambda o: o.update(kind="Pod"), "kind: must be 'KatalystCustomConfig'"),
    ],
)
def test_kcc_errors_name_the_field(edit: Any, path: str) -> None:
    obj = kcc_object()
    edit(obj)
    with pytest.raises(ParseError, match=path):
        parse_kcc(obj)


# ---- target configs --------------------------------------------------------------------


def test_a_target_config_is_read_field_by_field() -> None:
    obj = target_object(
        "pool-batch",
        {
            "nodeLabelSelector": "node-pool=batch, zone in (a,b)",
            "priority": 1,
            "paused": False,
            "config": {"reclaim": {"enabled": True}},
            "serviceOverrides": [
                {
                    "namespace": "default",
                    "selector": {"matchLabels": {"app": "web"}},
                    "indicators": {"cpu_usage_ratio": {"target": 0.5}},
                }
            ],
        },
        generation=4,
    )
    t = parse_target(obj)
    assert t.ref == ref("pool-batch")
    assert (t.uid, t.generation, t.resource_version) == ("uid-pool-batch", 4, "104")
    assert t.creation_timestamp == T0
    assert t.level == "pool"
    assert t.priority == 1
    assert t.node_selector is not None
    assert t.node_selector.keys == t.selector_keys == frozenset({"node-pool", "zone"})
    assert str(t.node_selector) == "node-pool=batch,zone in (a,b)"
    assert t.config == {"reclaim": {"enabled": True}}
    assert t.hash == spec_hash(obj["spec"])
    assert t.version == ("uid-pool-batch", t.hash)
    (override,) = t.service_overrides
    assert override.matches("default", {"app": "web"})
    assert not override.matches("other", {"app": "web"})
    assert override.targets == {"cpu_usage_ratio": 0.5}


def test_levels_follow_the_fields_set() -> None:
    assert parse_target(target_object("c", {})).level == "cluster"
    assert parse_target(target_object("c", {})).selector_keys == frozenset()
    assert parse_target(target_object("c", {"nodeLabelSelector": "  "})).level == "cluster"
    spec = {"ephemeralSelector": {"nodeNames": ["n1", "n1"], "lastDuration": "90s"}}
    t = parse_target(target_object("n", spec))
    assert t.level == "named"
    assert t.node_names == frozenset({"n1"})
    assert t.last_duration == 90.0
    # katalyst-api's Go types write an empty ephemeralSelector on every object
    assert parse_target(target_object("c", {"ephemeralSelector": {}})).level == "cluster"


def test_a_parsed_target_does_not_share_the_callers_data() -> None:
    obj = target_object("c", {"config": {"io": {"devices": ["8:0"]}}})
    t = parse_target(obj)
    obj["spec"]["config"]["io"]["devices"].append("8:16")
    assert t.config == {"io": {"devices": ["8:0"]}}


def test_list_items_without_kind_take_the_given_kind() -> None:
    obj = target_object("c", {})
    del obj["kind"]
    assert parse_target(obj, kind="OtherConfig").ref == ConfigRef("OtherConfig", NS, "c")
    with pytest.raises(ParseError, match=r"kind: must be 'OtherConfig'"):
        parse_target(target_object("c", {}), kind="OtherConfig")


def test_a_target_without_a_creation_time_has_none() -> None:
    assert parse_target(target_object("c", {}, created=None)).creation_timestamp is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nodeLabelSelecter": "a=b"}, "spec.nodeLabelSelecter: unknown field"),
        ({"nodeLabelSelector": 5}, "spec.nodeLabelSelector: must be a string"),
        ({"nodeLabelSelector": "a=b,"}, "spec.nodeLabelSelector: expected a requirement"),
        ({"priority": "1"}, "spec.priority: must be an integer"),
        ({"priority": -1}, "spec.priority: must be >= 0"),
        ({"priority": True}, "spec.priority: must be an integer"),
        ({"ephemeralSelector": []}, "spec.ephemeralSelector: must be a mapping"),
        ({"ephemeralSelector": {"nodeNames": "n1"}}, "spec.ephemeralSelector.nodeNames: must"),
        (
            {"ephemeralSelector": {"nodeNames": ["n1", ""]}},
            r"spec.ephemeralSelector.nodeNames\[1\]: must not be empty",
        ),
        (
            {"ephemeralSelector": {"nodeNames": ["n"], "lastDuration": "1 hour"}},
            "spec.ephemeralSelector.lastDuration: ",
        ),
        (
            {"ephemeralSelector": {"nodeNames": ["n"], "lastDuration": 3600}},
            "spec.ephemeralSelector.lastDuration: must be a duration string",
        ),
        (
            {"ephemeralSelector": {"nodeNames": ["n"], "lastDuration": "0s"}},
            "spec.ephemeralSelector.lastDuration: must be a positive duration",
        ),
        (
            {"ephemeralSelector": {"nodeNames": ["n"], "lastDuration": "-5m"}},
            "spec.ephemeralSelector.lastDuration: must be a positive duration",
        ),
        ({"paused": "yes"}, "spec.paused: must be true or false"),
        ({"config": [1]}, "spec.config: must be a mapping"),
        ({"config": {"io": {"x": 2**64}}}, "spec.config.io.x: integer out of range"),
        ({"serviceOverrides": {}}, "spec.serviceOverrides: must be a list"),
        (
            {"serviceOverrides": [{"selector": {}, "indicators": {}}]},
            r"spec.serviceOverrides\[0\].namespace: must be a string",
        ),
        (
            {"serviceOverrides": [{"namespace": "Bad_NS", "selector": {}, "indicators": {}}]},
            r"spec.serviceOverrides\[0\].namespace: 'Bad_NS' is not a namespace name",
        ),
        (
            {"serviceOverrides": [{"namespace": "d", "indicators": {}}]},
            r"spec.serviceOverrides\[0\].selector: is required",
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
            r"spec.serviceOverrides\[0\].selector.matchExpressions\[0\].operator: must be one of",
        ),
        (
            {
                "serviceOverrides": [
                    {"namespace": "d", "selector": {}, "indicators": {"cpu_usage_ratio": 0.5}}
                ]
            },
            r"spec.serviceOverrides\[0\].indicators.cpu_usage_ratio: must be a mapping",
        ),
        ({"revisionHistoryLimit": -1}, "spec.revisionHistoryLimit: must be >= 0"),
    ],
)
def test_target_errors_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ParseError, match=message) as info:
        parse_target(target_object("bad", spec))
    assert info.value.ref == ref("bad")
    assert str(info.value).startswith(info.value.path)


def test_target_metadata_errors_name_the_field() -> None:
    obj = target_object("x", {})
    obj["metadata"]["creationTimestamp"] = "yesterday"
    with pytest.raises(ParseError, match=r"metadata.creationTimestamp: must be an RFC 3339 time"):
        parse_target(obj)
    obj = target_object("x", {})
    obj["metadata"]["generation"] = "1"
    with pytest.raises(ParseError, match=r"metadata.generation: must be an integer"):
        parse_target(obj)
    with pytest.raises(ParseError, match=r"metadata.name: must not be empty"):
        parse_target({"metadata": {"name": "", "namespace": NS}})
    with pytest.raises(ParseError, match=r"must be a mapping"):
        parse_target([])


def test_load_target_turns_a_spec_that_does_not_parse_into_an_invalid_target() -> None:
    loaded = load_target(target_object("bad", {"priority": "high"}, generation=3))
    assert loaded == InvalidTarget(
        ref("bad"), "uid-bad", 3, "spec.priority: must be an integer, got 'high' (str)"
    )
    with pytest.raises(ParseError, match=r"metadata.name"):
        load_target({"metadata": {"namespace": NS}, "spec": {}})


# ---- selectors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("pool=a", {"pool": "a"}, True),
        ("pool==a", {"pool": "a"}, True),
        ("pool=a", {"pool": "b"}, False),
        ("pool=a", {}, False),
        ("pool!=a", {"pool": "b"}, True),
        ("pool!=a", {}, True),  # Kubernetes: != matches a node without the key
        ("pool!=a", {"pool": "a"}, False),
        ("pool in (a, b)", {"pool": "b"}, True),
        ("pool in (a,b)", {"pool": "c"}, False),
        ("pool in (a,b)", {}, False),
        ("pool notin (a,b)", {"pool": "c"}, True),
        ("pool notin (a,b)", {}, True),
        ("pool notin (a,b)", {"pool": "a"}, False),
        ("gpu", {"gpu": ""}, True),
        ("gpu", {}, False),
        ("!gpu", {}, True),
        ("!gpu", {"gpu": "true"}, False),
        ("pool=a,zone in (x),!gpu", {"pool": "a", "zone": "x"}, True),
        ("pool=a,zone in (x),!gpu", {"pool": "a", "zone": "x", "gpu": "1"}, False),
        ("pool=", {"pool": ""}, True),
        ("", {"any": "thing"}, True),
        ("example.com/pool=a", {"example.com/pool": "a"}, True),
    ],
)
def test_selector_strings_match_as_kubernetes_does(
    text: str, labels: dict[str, str], expected: bool
) -> None:
    assert parse_selector(text).matches(labels) is expected


def test_selector_requirements_are_normalized() -> None:
    sel = parse_selector("zone in (b,a), pool==x, !gpu, ssd")
    assert str(sel) == "!gpu,pool=x,ssd,zone in (a,b)"
    assert sel.keys == frozenset({"gpu", "pool", "ssd", "zone"})
    assert parse_selector("pool=x,zone=y") == parse_selector("zone=y, pool=x")
    assert Requirement("pool", "in", frozenset({"a"})).matches({"pool": "a"})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("pool=a,", "expected a requirement after ','"),
        (",pool=a", "expected a label key"),
        ("pool in a", "expected '('"),
        ("pool in (a", "expected ')'"),
        ("pool in ()", "needs at least one value"),
        ("pool > 3", "unknown operator '>'"),
        ("pool = a b", "expected ',' or the end"),
        ("pool=a=b", "expected ',' or the end"),
        ("!", "expected a label key"),
        ("!pool=a", "expected ',' or the end"),
        ("bad key=a", "unknown operator 'key'"),
        ("-pool=a", "is not a label key"),
        ("Example.com/pool=a", "the prefix of label key"),
        ("pool=" + "v" * 64, "is not a label value"),
        ("pool in (a b)", "expected a value or ')'"),
    ],
)
def test_bad_selector_strings_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ParseError, match=r"spec.x: ") as info:
        parse_selector(text, where="spec.x")
    assert problem in str(info.value)


def test_label_selector_mappings() -> None:
    sel = parse_label_selector(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "team", "operator": "Exists"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
            ],
        }
    )
    assert sel.matches({"app": "web", "tier": "fe", "team": "x"})
    assert not sel.matches({"app": "web", "tier": "fe", "team": "x", "canary": "1"})
    assert not sel.matches({"app": "web", "tier": "fe", "team": "x", "env": "dev"})
    assert not sel.matches({"app": "web", "tier": "fe"})
    assert parse_label_selector({}).matches({})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"matchLabels": {"app": 1}}, "s.matchLabels.app: must be a string"),
        ({"matchLabels": {"a b": "x"}}, "s.matchLabels.a b: 'a b' is not a label key"),
        ({"matchExpressions": {}}, "s.matchExpressions: must be a list"),
        (
            {"matchExpressions": [{"key": "a", "operator": "In"}]},
            r"s.matchExpressions\[0\].values: In needs at least one value",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            r"s.matchExpressions\[0\].values: Exists takes no values",
        ),
        (
            {"matchExpressions": [{"operator": "Exists"}]},
            r"s.matchExpressions\[0\].key: must be a string",
        ),
        ({"matchLables": {}}, "s.matchLables: unknown field"),
    ],
)
def test_bad_label_selectors_name_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_label_selector(raw, where="s")


# ---- durations and times ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("2h45m30.5s", 9930.5),
        ("100us", 0.0001),
        ("100µs", 0.0001),
        ("3ns", 3e-9),
        (".5m", 30.0),
        ("0", 0.0),
        ("-1m", -60.0),
        ("+1m", 60.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "1", "1d", "h", "1h 30m", "1.h.5", "--1s", "1e3s", "9999999h"]
)
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ParseError, match=r"^d: "):
        parse_duration(text, where="d")


def test_timestamps() -> None:
    assert parse_timestamp("2024-01-01T00:00:00Z") == T0
    assert parse_timestamp("2024-01-01T01:00:00+01:00") == T0
    with pytest.raises(ParseError, match=r"with a zone"):
        parse_timestamp("2024-01-01T00:00:00")


# ---- nodes and CNCs --------------------------------------------------------------------


def test_nodes() -> None:
    node = parse_node(node_object("n1", {"node-pool": "a"}))
    assert (node.name, dict(node.labels)) == ("n1", {"node-pool": "a"})
    assert parse_node({"metadata": {"name": "n2"}}).labels == {}
    with pytest.raises(ParseError, match=r"metadata.labels.a: must be a string"):
        parse_node({"metadata": {"name": "n", "labels": {"a": 1}}})
    with pytest.raises(ParseError, match=r"metadata.labels.a: must be a string"):
        parse_node({"metadata": {"name": "n", "labels": {"a": None}}})


def test_cnc_status_round_trip() -> None:
    entries = [(ref("cluster"), "0" * 16), (ref("pool"), "1" * 16)]
    listed = cnc_config_list(ADMIN_QOS_GVR, entries)
    assert listed[1] == {
        "configType": {
            "group": "config.katalyst.kubewharf.io",
            "version": "v1alpha1",
            "resource": "adminqosconfigurations",
        },
        "configNamespace": NS,
        "configName": "pool",
        "hash": "1" * 16,
    }
    cnc = parse_cnc(
        {
            "kind": "CustomNodeConfig",
            "metadata": {"name": "n1", "resourceVersion": "7"},
            "status": {"katalystCustomConfigList": listed},
        }
    )
    assert cnc.name == "n1" and cnc.resource_version == "7"
    assert [(e.config_type, e.namespace, e.name, e.hash) for e in cnc.entries] == [
        (ADMIN_QOS_GVR, NS, "cluster", "0" * 16),
        (ADMIN_QOS_GVR, NS, "pool", "1" * 16),
    ]
    assert parse_cnc({"metadata": {"name": "n2"}}).entries == ()
    with pytest.raises(ParseError, match=r"katalystCustomConfigList\[0\].hash: must be a string"):
        parse_cnc(
            {
                "metadata": {"name": "n"},
                "status": {"katalystCustomConfigList": [dict(listed[0], hash=None)]},
            }
        )


# ---- nothing but ParseError, whatever the input ----------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["a=b", "a in (x)", "90s", "1h", "2024-01-01T00:00:00Z", "n1"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "metadata",
                    "name",
                    "namespace",
                    "spec",
                    "labels",
                    "nodeLabelSelector",
                    "priority",
                    "ephemeralSelector",
                    "nodeNames",
                    "lastDuration",
                    "config",
                    "serviceOverrides",
                    "selector",
                    "matchLabels",
                    "matchExpressions",
                    "indicators",
                    "targetType",
                    "nodeLabelSelectorAllowedKeyList",
                    "keyList",
                    "status",
                    "katalystCustomConfigList",
                    "creationTimestamp",
                    "key",
                    "operator",
                    "values",
                ]
            )
            | st.text(max_size=4),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(
    _json,
    st.sampled_from(["kcc", "target", "node", "cnc", "selector", "label_selector", "load"]),
)
def test_parsing_raises_nothing_but_parse_error(raw: object, what: str) -> None:
    parse: dict[str, Callable[[Any], object]] = {
        "kcc": parse_kcc,
        "target": parse_target,
        "node": parse_node,
        "cnc": parse_cnc,
        "selector": lambda r: parse_selector(r if isinstance(r, str) else str(r)),
        "label_selector": parse_label_selector,
        "load": load_target,
    }
    with contextlib.suppress(ParseError):
        parse[what](raw)


@given(
    st.dictionaries(
        st.sampled_from(["nodeLabelSelector", "priority", "ephemeralSelector", "paused", "config"]),
        _json,
    )
)
def test_any_spec_parses_or_is_refused_with_a_parse_error(spec: dict[str, Any]) -> None:
    try:
        parse_target(target_object("x", spec))
    except ParseError as exc:
        error = exc
    else:
        return
    assert error.ref == ref("x")
    assert error.path.startswith("spec")
