"""What both processes' Lease clients and flags share (:mod:`katalyst.leader`): the
Lease's body, the identity's default, the flags' rules."""

from __future__ import annotations

import math
from typing import Any

import pytest

from katalyst.leader import (
    LeaseFlagError,
    LeaseRecord,
    LeaseSettings,
    check_lease_flags,
    default_identity,
    lease_object,
    record_from_lease,
)

GOOD: dict[str, Any] = {
    "namespace": "katalyst-system",
    "lease_name": "katalyst-scheduler-extender",
    "identity": "ext-0",
    "lease_duration_s": 15,
    "renew_deadline_s": 10.0,
    "retry_period_s": 2.0,
}


def test_a_create_has_no_resource_version_and_a_replace_is_conditional() -> None:
    record = LeaseRecord("a", 15, "t0", "t1", 2)
    created = lease_object(record, namespace="ns", name="l")
    assert created == {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "l", "namespace": "ns"},
        "spec": {
            "holderIdentity": "a",
            "leaseDurationSeconds": 15,
            "leaseTransitions": 2,
            "acquireTime": "t0",
            "renewTime": "t1",
        },
    }
    read = LeaseRecord("a", 15, "t0", "t1", 2, resource_version="42")
    replaced = lease_object(read, namespace="ns", name="l")
    assert replaced["metadata"] == {"name": "l", "namespace": "ns", "resourceVersion": "42"}
    assert record_from_lease(replaced) == read


def test_the_identity_is_the_pod_name_else_unique_per_process() -> None:
    assert default_identity({"POD_NAME": " ext-0 "}) == "ext-0"
    one, two = default_identity({}), default_identity({"POD_NAME": ""})
    assert one != two
    assert one.rpartition("_")[0] == two.rpartition("_")[0] != ""


def test_good_flags_give_the_settings() -> None:
    assert check_lease_flags(**GOOD) == LeaseSettings(15, 10.0, 2.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"namespace": "A"}, "--namespace: 'A' is not a namespace name"),
        ({"namespace": "a" * 64}, "--namespace:"),
        ({"lease_name": "a..b"}, "--lease-name: 'a..b' is not an object name"),
        ({"identity": "a\nb"}, "--identity:"),
        ({"lease_duration_s": 0}, "--lease-duration-s: must be a whole number of seconds >= 1"),
        ({"lease_duration_s": True}, "--lease-duration-s:"),
        ({"renew_deadline_s": math.inf}, "--renew-deadline-s: must be a finite number > 0"),
        ({"retry_period_s": -1.0}, "--retry-period-s: must be a finite number > 0"),
        ({"retry_period_s": "2"}, "--retry-period-s: must be a number, got '2'"),
        ({"renew_deadline_s": 15.0}, "--renew-deadline-s: must be less than --lease-duration-s"),
        ({"retry_period_s": 8.5}, "--renew-deadline-s: must be more than 1.2 x --retry-period-s"),
    ],
)
def test_each_rule_names_its_flag(change: dict[str, object], message: str) -> None:
    with pytest.raises(LeaseFlagError) as exc:
        check_lease_flags(**{**GOOD, **change})
    assert str(exc.value).startswith(message)
