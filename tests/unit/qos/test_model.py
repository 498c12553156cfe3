"""QoS levels, names and OOM priority ranges, wire-identical to Katalyst."""

from __future__ import annotations

import pytest

from katalyst.qos import (
    CPU_ENHANCEMENT_ANNOTATION,
    MEMORY_ENHANCEMENT_ANNOTATION,
    NETWORK_ENHANCEMENT_ANNOTATION,
    QOS_LEVEL_ANNOTATION,
    RESOURCE_GPU_MEMORY,
    RESOURCE_MILLIGPU,
    RESOURCE_NET_BANDWIDTH,
    RESOURCE_RECLAIMED_MEMORY,
    RESOURCE_RECLAIMED_MILLICPU,
    QoSLevel,
    QoSValidationError,
    default_oom_priority,
    oom_priority_range,
    parse_qos_level,
)


def test_wire_names() -> None:
    assert QOS_LEVEL_ANNOTATION == "katalyst.kubewharf.io/qos_level"
    assert MEMORY_ENHANCEMENT_ANNOTATION == "katalyst.kubewharf.io/memory_enhancement"
    assert CPU_ENHANCEMENT_ANNOTATION == "katalyst.kubewharf.io/cpu_enhancement"
    assert NETWORK_ENHANCEMENT_ANNOTATION == "katalyst.kubewharf.io/network_enhancement"
    assert RESOURCE_RECLAIMED_MILLICPU == "resource.katalyst.kubewharf.io/reclaimed_millicpu"
    assert RESOURCE_RECLAIMED_MEMORY == "resource.katalyst.kubewharf.io/reclaimed_memory"
    assert RESOURCE_GPU_MEMORY == "resource.katalyst.kubewharf.io/gpu_memory"
    assert RESOURCE_MILLIGPU == "resource.katalyst.kubewharf.io/milligpu"
    assert RESOURCE_NET_BANDWIDTH == "resource.katalyst.kubewharf.io/net_bandwidth"
    assert {level.value for level in QoSLevel} == {
        "dedicated_cores",
        "shared_cores",
        "reclaimed_cores",
        "system_cores",
    }


@pytest.mark.parametrize("level", list(QoSLevel))
def test_every_level_parses(level: QoSLevel) -> None:
    assert parse_qos_level({QOS_LEVEL_ANNOTATION: level.value, "other": "x"}) is level


def test_missing_annotation_means_shared_cores() -> None:
    assert parse_qos_level({}) is QoSLevel.SHARED_CORES
    assert parse_qos_level({"app": "web"}) is QoSLevel.SHARED_CORES


@pytest.mark.parametrize(
    "raw",
    ["", "foo", "Shared_Cores", "SHARED_CORES", " shared_cores", "shared_cores\n", "shared"],
)
def test_bad_level_is_an_error_never_another_class(raw: str) -> None:
    with pytest.raises(QoSValidationError) as caught:
        parse_qos_level({QOS_LEVEL_ANNOTATION: raw})
    err = caught.value
    assert err.key == QOS_LEVEL_ANNOTATION
    assert err.value == raw
    assert err.rule == (
        "must be one of dedicated_cores, reclaimed_cores, shared_cores, system_cores"
    )


def test_error_message_reads_as_documented() -> None:
    with pytest.raises(QoSValidationError) as caught:
        parse_qos_level({QOS_LEVEL_ANNOTATION: "foo"})
    assert str(caught.value) == (
        'annotation "katalyst.kubewharf.io/qos_level": value "foo" is invalid: must be one '
        "of dedicated_cores, reclaimed_cores, shared_cores, system_cores"
    )


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (QoSLevel.RECLAIMED_CORES, range(-100, 0)),
        (QoSLevel.SHARED_CORES, range(0, 100)),
        (QoSLevel.DEDICATED_CORES, range(100, 200)),
        (QoSLevel.SYSTEM_CORES, range(200, 300)),
    ],
)
def test_oom_priority_ranges(level: QoSLevel, expected: range) -> None:
    assert oom_priority_range(level) == expected
    assert default_oom_priority(level) == expected.start
