"""What the controller writes: the ``Valid`` condition, a CNC's list, new CNCs and CNRs,
and the paths of the resources; each "already so" answered with None (no write)."""

from __future__ import annotations

from typing import Any

import pytest

from controllers.resources import CNCS, KCCS, LEASES, NODES, target_resource
from controllers.status import (
    LAST_GOOD,
    Verdict,
    annotated,
    cnc_entries,
    cnc_object,
    cnc_status,
    cnr_object,
    last_good_annotation,
    read_last_good,
    rfc3339,
    valid_status,
)
from katalyst.dynconfig import ADMIN_QOS_GVR, CNCEntry, Condition, GroupVersionResource
from tests.unit.dynconfig.support import named, ref, target, target_object

T1 = "2024-01-01T00:00:00Z"
T2 = "2024-01-01T00:05:00Z"


def test_rfc3339_is_whole_seconds_in_utc() -> None:
    assert rfc3339(1704067200.9) == T1


def test_a_first_condition_is_added_with_the_generation() -> None:
    status = valid_status(None, Verdict(True, "Valid"), generation=3, now=T1)
    assert status == {
        "conditions": [
            {
                "type": "Valid",
                "status": "True",
                "reason": "Valid",
                "message": "",
                "lastTransitionTime": T1,
                "observedGeneration": 3,
            }
        ],
        "observedGeneration": 3,
    }
    assert valid_status(status, Verdict(True, "Valid"), generation=3, now=T2) is None


def test_the_transition_time_moves_only_when_the_status_flips() -> None:
    first = valid_status({}, Verdict(False, "Invalid", "spec.priority: bad"), generation=1, now=T1)
    assert first is not None
    # Same status, another reason and message: rewritten, the transition time kept.
    second = valid_status(first, Verdict(False, "Conflict", "overlaps"), generation=2, now=T2)
    assert second is not None
    (condition,) = second["conditions"]
    assert (condition["reason"], condition["lastTransitionTime"]) == ("Conflict", T1)
    assert second["observedGeneration"] == 2
    third = valid_status(second, Verdict.of(Condition(True, "Valid")), generation=2, now=T2)
    assert third is not None
    assert third["conditions"][0]["lastTransitionTime"] == T2
    assert third["conditions"][0]["status"] == "True"


def test_other_conditions_and_status_fields_are_kept_in_place() -> None:
    status: dict[str, Any] = {
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Valid", "status": "True", "reason": "Valid", "lastTransitionTime": T1},
            "garbage",
        ],
        "note": "someone else's",
    }
    new = valid_status(status, Verdict(True, "Paused", "paused"), generation=4, now=T2)
    assert new is not None
    assert [c["type"] for c in new["conditions"]] == ["Ready", "Valid"]
    assert new["conditions"][1]["lastTransitionTime"] == T1
    assert new["note"] == "someone else's"
    assert status["conditions"][1]["reason"] == "Valid"  # the input is not changed


def test_a_status_of_the_wrong_shape_is_replaced() -> None:
    assert valid_status("nonsense", Verdict(True, "Valid"), generation=1, now=T1) is not None
    new = valid_status({"conditions": "x"}, Verdict(True, "Valid"), generation=1, now=T1)
    assert new is not None and len(new["conditions"]) == 1


def entry(
    name: str, digest: str = "0123456789abcdef", gvr: GroupVersionResource = ADMIN_QOS_GVR
) -> CNCEntry:
    return CNCEntry(gvr, "katalyst-system", name, digest)


def cnc(*entries: CNCEntry, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "config.katalyst.kubewharf.io/v1alpha1",
        "kind": "CustomNodeConfig",
        "metadata": {"name": "n1", "resourceVersion": "5"},
        "status": {"katalystCustomConfigList": [e.to_json() for e in entries], **status},
    }


def test_a_cnc_is_rewritten_only_when_its_list_differs() -> None:
    current = cnc(entry("cluster"), entry("pool"))
    assert cnc_entries(current) == (entry("cluster"), entry("pool"))
    assert cnc_status(current, [entry("cluster"), entry("pool")]) is None
    # Another order (precedence) is another content.
    swapped = cnc_status(current, [entry("pool"), entry("cluster")])
    assert swapped is not None
    assert [e["configName"] for e in swapped["katalystCustomConfigList"]] == ["pool", "cluster"]
    assert cnc_status(current, [entry("cluster"), entry("pool", "fedcba9876543210")]) is not None


def test_an_absent_list_is_an_empty_one_and_other_fields_stay() -> None:
    bare = {"kind": "CustomNodeConfig", "metadata": {"name": "n1"}}
    assert cnc_status(bare, []) is None
    assert cnc_status(None, []) is None
    new = cnc_status(cnc(entry("a"), serviceProfileConfigList=[1]), [])
    assert new == {"katalystCustomConfigList": [], "serviceProfileConfigList": [1]}


def test_a_cnc_whose_status_does_not_parse_is_rewritten() -> None:
    broken = {
        "kind": "CustomNodeConfig",
        "metadata": {"name": "n1"},
        "status": {"katalystCustomConfigList": 3},
    }
    assert cnc_entries(broken) is None
    assert cnc_status(broken, []) == {"katalystCustomConfigList": []}


def test_the_last_good_version_round_trips_through_its_annotation() -> None:
    good = named("incident", ["n2", "n1"], {"reclaim": {"enabled": False}}, generation=3)
    value = last_good_annotation(good, 1704067200.0)
    assert value is not None
    assert value == last_good_annotation(good, 1704067200.0)  # canonical: no rewrite
    # On the object as it is now (a later, different spec): the old version comes back.
    now = target_object("incident", {"config": {}}, generation=4)
    marked = annotated(now, LAST_GOOD, value)
    assert marked is not None
    assert annotated(marked, LAST_GOOD, value) is None
    assert now["metadata"].get("annotations") is None  # the input is not changed
    kept = read_last_good(marked, ref("incident"))
    assert kept is not None
    assert kept.target.hash == good.hash
    assert kept.target.generation == 3
    assert kept.target.uid == good.uid
    assert kept.target.node_names == {"n1", "n2"}
    assert kept.names_since == 1704067200.0
    # Another annotation is kept beside it.
    other = target_object("cluster", {"config": {}})
    other["metadata"]["annotations"] = {"team": "sre"}
    marked = annotated(other, LAST_GOOD, last_good_annotation(target("cluster"), None) or "")
    assert marked is not None and marked["metadata"]["annotations"]["team"] == "sre"
    kept = read_last_good(marked, ref("cluster"))
    assert kept is not None and kept.names_since is None


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"spec": 3}',
        '{"hash": "0000000000000000", "spec": {"config": {}}}',  # hand-edited: hash mismatch
        '{"spec": {"unknownField": 1}, "hash": "x"}',
    ],
)
def test_an_annotation_that_does_not_read_back_is_ignored(text: str) -> None:
    obj = target_object("cluster", {"config": {}})
    obj["metadata"]["annotations"] = {LAST_GOOD: text}
    assert read_last_good(obj, ref("cluster")) is None
    assert read_last_good(target_object("cluster"), ref("cluster")) is None


def test_new_cncs_and_cnrs_are_named_as_and_owned_by_their_node() -> None:
    node = {"metadata": {"name": "n1", "uid": "u-1"}}
    for made in (cnc_object(node), cnr_object(node)):
        assert made["metadata"]["name"] == "n1"
        assert made["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u-1"}
        ]
        assert "status" not in made
    assert cnc_object(node)["kind"] == "CustomNodeConfig"
    assert cnr_object(node)["apiVersion"] == "node.katalyst.kubewharf.io/v1alpha1"
    assert "ownerReferences" not in cnc_object({"metadata": {"name": "n2"}})["metadata"]


def test_resource_paths() -> None:
    assert NODES.collection_path() == "/api/v1/nodes"
    assert NODES.object_path("n1") == "/api/v1/nodes/n1"
    assert CNCS.object_path("n1", subresource="status") == (
        "/apis/config.katalyst.kubewharf.io/v1alpha1/customnodeconfigs/n1/status"
    )
    assert (
        KCCS.collection_path()
        == "/apis/config.katalyst.kubewharf.io/v1alpha1/katalystcustomconfigs"
    )
    assert LEASES.object_path("l", "ns") == "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"
    aqc = target_resource(ADMIN_QOS_GVR)
    assert (aqc.kind, aqc.namespaced, aqc.short) == (
        "AdminQoSConfiguration",
        True,
        "adminqosconfigurations.config.katalyst.kubewharf.io",
    )
    with pytest.raises(ValueError, match="needs a namespace"):
        aqc.object_path("x")
