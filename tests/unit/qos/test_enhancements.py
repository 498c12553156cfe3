"""Enhancement annotations: every field valid and invalid, JSON rules, unknown keys."""

from __future__ import annotations

import json

import pytest

from katalyst.qos import (
    CPU_ENHANCEMENT_ANNOTATION,
    MEMORY_ENHANCEMENT_ANNOTATION,
    NETWORK_ENHANCEMENT_ANNOTATION,
    CPUBurstPolicy,
    CPUEnhancement,
    Enhancements,
    MemoryEnhancement,
    NetworkEnhancement,
    NetworkNamespaceType,
    QoSLevel,
    QoSValidationError,
    parse_cpu_enhancement,
    parse_enhancements,
    parse_memory_enhancement,
    parse_network_enhancement,
)


def _memory(fields: dict[str, str], level: QoSLevel = QoSLevel.SHARED_CORES) -> MemoryEnhancement:
    return parse_memory_enhancement(json.dumps(fields), level=level)


# --- Defaults --------------------------------------------------------------------------


def test_absent_annotations_give_defaults() -> None:
    assert parse_enhancements({}, QoSLevel.SHARED_CORES) == Enhancements()
    memory, cpu, network = MemoryEnhancement(), CPUEnhancement(), NetworkEnhancement()
    assert (memory.numa_binding, memory.numa_exclusive) == (False, False)
    assert (memory.rss_overuse_threshold, memory.oom_priority) == (None, None)
    assert (cpu.cpuset_pool, cpu.numa_share, cpu.suppression_tolerance_rate) == (None, True, None)
    assert (cpu.cpu_burst_policy, cpu.cpu_burst_percent) == (None, None)
    assert (network.namespace_type, network.topology_affinity_restricted) == (None, False)


def test_empty_objects_give_defaults() -> None:
    annotations = {
        MEMORY_ENHANCEMENT_ANNOTATION: "{}",
        CPU_ENHANCEMENT_ANNOTATION: " { } ",
        NETWORK_ENHANCEMENT_ANNOTATION: "{}",
    }
    assert parse_enhancements(annotations, QoSLevel.DEDICATED_CORES) == Enhancements()


def test_parse_enhancements_reads_all_three() -> None:
    annotations = {
        MEMORY_ENHANCEMENT_ANNOTATION: '{"numa_binding": "true", "oom_priority": "150"}',
        CPU_ENHANCEMENT_ANNOTATION: '{"cpu_burst_policy": "static", "cpu_burst_percent": "50"}',
        NETWORK_ENHANCEMENT_ANNOTATION: '{"namespace_type": "host_ns"}',
    }
    parsed = parse_enhancements(annotations, QoSLevel.DEDICATED_CORES)
    assert parsed.memory == MemoryEnhancement(numa_binding=True, oom_priority=150)
    assert parsed.cpu == CPUEnhancement(
        cpu_burst_policy=CPUBurstPolicy.STATIC, cpu_burst_percent=50
    )
    assert parsed.network == NetworkEnhancement(namespace_type=NetworkNamespaceType.HOST_NS)


# --- Memory ------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("false", False)])
def test_numa_binding(raw: str, expected: bool) -> None:
    assert _memory({"numa_binding": raw}).numa_binding is expected


def test_numa_exclusive_with_binding() -> None:
    parsed = _memory({"numa_binding": "true", "numa_exclusive": "true"})
    assert parsed.numa_exclusive is True
    assert _memory({"numa_exclusive": "false"}).numa_exclusive is False


@pytest.mark.parametrize("binding", [None, "false"])
def test_numa_exclusive_without_binding_is_an_error(binding: str | None) -> None:
    fields = {"numa_exclusive": "true"}
    if binding is not None:
        fields["numa_binding"] = binding
    with pytest.raises(QoSValidationError) as caught:
        _memory(fields)
    assert caught.value.field == "numa_exclusive"
    assert caught.value.rule == 'requires "numa_binding": "true"'


@pytest.mark.parametrize(
    ("raw", "expected"), [("1.2", 1.2), ("2", 2.0), (".5", 0.5), ("1e1", 10.0), ("+3.", 3.0)]
)
def test_rss_overuse_threshold(raw: str, expected: float) -> None:
    assert _memory({"rss_overuse_threshold": raw}).rss_overuse_threshold == expected


@pytest.mark.parametrize(
    "raw",
    ["0", "-1", "0.0", "inf", "nan", "Infinity", "1e400", "", " 1", "1_0", "0x1p0", "abc", "1e"],
)
def test_rss_overuse_threshold_invalid(raw: str) -> None:
    with pytest.raises(QoSValidationError) as caught:
        _memory({"rss_overuse_threshold": raw})
    assert caught.value.field == "rss_overuse_threshold"
    assert caught.value.rule == "must be a finite decimal number greater than 0"


@pytest.mark.parametrize(
    ("level", "good", "bad"),
    [
        (QoSLevel.RECLAIMED_CORES, ["-100", "-1", "-50"], ["0", "-101", "50"]),
        (QoSLevel.SHARED_CORES, ["0", "99", "+5"], ["-1", "100", "150"]),
        (QoSLevel.DEDICATED_CORES, ["100", "199", "0150"], ["99", "200"]),
        (QoSLevel.SYSTEM_CORES, ["200", "299"], ["199", "301", "-299"]),
    ],
)
def test_oom_priority_must_lie_in_the_level_range(
    level: QoSLevel, good: list[str], bad: list[str]
) -> None:
    for raw in good:
        assert _memory({"oom_priority": raw}, level).oom_priority == int(raw)
    for raw in bad:
        with pytest.raises(QoSValidationError) as caught:
            _memory({"oom_priority": raw}, level)
        assert caught.value.field == "oom_priority"
        assert level.value in caught.value.rule


@pytest.mark.parametrize("level", list(QoSLevel))
@pytest.mark.parametrize("special", ["-300", "300"])
def test_oom_priority_ignore_and_top_are_allowed_for_every_level(
    level: QoSLevel, special: str
) -> None:
    assert _memory({"oom_priority": special}, level).oom_priority == int(special)


@pytest.mark.parametrize("raw", ["", "1.0", "one", " 1", "1e2", "9" * 5000, "\u0661"])
def test_oom_priority_must_be_an_integer(raw: str) -> None:
    with pytest.raises(QoSValidationError) as caught:
        _memory({"oom_priority": raw})
    assert caught.value.rule.startswith("must be an integer in [0, 100) for shared_cores")


def test_oom_priority_error_message() -> None:
    with pytest.raises(QoSValidationError) as caught:
        _memory({"oom_priority": "150"}, QoSLevel.SHARED_CORES)
    assert str(caught.value) == (
        'annotation "katalyst.kubewharf.io/memory_enhancement" field "oom_priority": '
        'value "150" is invalid: must be an integer in [0, 100) for shared_cores, '
        "or -300 (ignore) or 300 (top)"
    )


# --- Booleans are strict -----------------------------------------------------------------


@pytest.mark.parametrize("raw", ["True", "TRUE", "1", "t", "yes", "", " true", "false "])
@pytest.mark.parametrize(
    ("annotation", "field"),
    [
        (MEMORY_ENHANCEMENT_ANNOTATION, "numa_binding"),
        (MEMORY_ENHANCEMENT_ANNOTATION, "numa_exclusive"),
        (CPU_ENHANCEMENT_ANNOTATION, "numa_share"),
        (NETWORK_ENHANCEMENT_ANNOTATION, "topology_affinity_restricted"),
    ],
)
def test_booleans_accept_only_true_and_false(annotation: str, field: str, raw: str) -> None:
    with pytest.raises(QoSValidationError) as caught:
        parse_enhancements({annotation: json.dumps({field: raw})}, QoSLevel.DEDICATED_CORES)
    err = caught.value
    assert (err.key, err.field, err.value, err.rule) == (
        annotation,
        field,
        raw,
        'must be "true" or "false"',
    )


# --- CPU -------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["batch", "flink-streaming", "a", "pool1", "0", "a" * 63])
def test_cpuset_pool(pool: str) -> None:
    assert parse_cpu_enhancement(json.dumps({"cpuset_pool": pool})).cpuset_pool == pool


@pytest.mark.parametrize(
    "pool", ["", "Batch", "-batch", "batch-", "a_b", "a.b", "a" * 64, "pool\n", "p\u00f6ol"]
)
def test_cpuset_pool_invalid(pool: str) -> None:
    with pytest.raises(QoSValidationError) as caught:
        parse_cpu_enhancement(json.dumps({"cpuset_pool": pool}))
    assert caught.value.field == "cpuset_pool"
    assert "pool name" in caught.value.rule


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("false", False)])
def test_numa_share(raw: str, expected: bool) -> None:
    assert parse_cpu_enhancement(json.dumps({"numa_share": raw})).numa_share is expected


def test_suppression_tolerance_rate() -> None:
    parsed = parse_cpu_enhancement('{"suppression_tolerance_rate": "1.5"}')
    assert parsed.suppression_tolerance_rate == 1.5
    for raw in ["0", "-1", "nan", "inf", "x"]:
        with pytest.raises(QoSValidationError, match="greater than 0"):
            parse_cpu_enhancement(json.dumps({"suppression_tolerance_rate": raw}))


@pytest.mark.parametrize("policy", list(CPUBurstPolicy))
def test_cpu_burst_policy(policy: CPUBurstPolicy) -> None:
    parsed = parse_cpu_enhancement(json.dumps({"cpu_burst_policy": policy.value}))
    assert parsed.cpu_burst_policy is policy


@pytest.mark.parametrize("raw", ["", "Static", "none", "auto"])
def test_cpu_burst_policy_invalid(raw: str) -> None:
    with pytest.raises(QoSValidationError) as caught:
        parse_cpu_enhancement(json.dumps({"cpu_burst_policy": raw}))
    assert caught.value.rule == "must be one of default, closed, static, dynamic"


@pytest.mark.parametrize("raw", ["0", "50", "100", "007"])
def test_cpu_burst_percent(raw: str) -> None:
    assert parse_cpu_enhancement(json.dumps({"cpu_burst_percent": raw})).cpu_burst_percent == int(
        raw
    )


@pytest.mark.parametrize("raw", ["-1", "101", "50.5", "", "fifty", "1e2"])
def test_cpu_burst_percent_invalid(raw: str) -> None:
    with pytest.raises(QoSValidationError) as caught:
        parse_cpu_enhancement(json.dumps({"cpu_burst_percent": raw}))
    assert caught.value.field == "cpu_burst_percent"
    assert caught.value.rule == "must be an integer from 0 to 100"


# --- Network ---------------------------------------------------------------------------


@pytest.mark.parametrize("namespace_type", list(NetworkNamespaceType))
def test_namespace_type(namespace_type: NetworkNamespaceType) -> None:
    parsed = parse_network_enhancement(json.dumps({"namespace_type": namespace_type.value}))
    assert parsed.namespace_type is namespace_type


def test_namespace_type_values_are_katalysts() -> None:
    assert [t.value for t in NetworkNamespaceType] == [
        "host_ns",
        "host_ns_preferred",
        "anti_host_ns",
        "anti_host_ns_preferred",
    ]


@pytest.mark.parametrize("raw", ["", "anonymous_ns", "HOST_NS", "host"])
def test_namespace_type_invalid(raw: str) -> None:
    with pytest.raises(QoSValidationError) as caught:
        parse_network_enhancement(json.dumps({"namespace_type": raw}))
    assert caught.value.rule == (
        "must be one of host_ns, host_ns_preferred, anti_host_ns, anti_host_ns_preferred"
    )


def test_topology_affinity_restricted() -> None:
    parsed = parse_network_enhancement('{"topology_affinity_restricted": "true"}')
    assert parsed.topology_affinity_restricted is True


# --- The JSON object itself --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("", "must be a JSON object of string to string (Expecting value)"),
        ("{", "must be a JSON object of string to string"),
        ("numa_binding=true", "must be a JSON object of string to string"),
        ("{'numa_binding': 'true'}", "must be a JSON object of string to string"),
        ("[]", "must be a JSON object of string to string, not an array"),
        ('["numa_binding"]', "must be a JSON object of string to string, not an array"),
        ("1", "must be a JSON object of string to string, not a number"),
        ("null", "must be a JSON object of string to string, not null"),
        ('"x"', "must be a JSON object of string to string, not a string"),
        ("true", "must be a JSON object of string to string, not a boolean"),
        ('{"a": "1"} x', "must be a JSON object of string to string (Extra data)"),
        ("[" * 100_000 + "]" * 100_000, "must be a JSON object of string to string"),
        ('{"a": ' + "1" * 5000 + "}", "must be a JSON object of string to string"),
        (
            '{"numa_binding": "true", "numa_binding": "false"}',
            'must not repeat the key "numa_binding"',
        ),
    ],
)
def test_value_must_be_a_json_object(raw: str, rule: str) -> None:
    for annotation in (
        MEMORY_ENHANCEMENT_ANNOTATION,
        CPU_ENHANCEMENT_ANNOTATION,
        NETWORK_ENHANCEMENT_ANNOTATION,
    ):
        with pytest.raises(QoSValidationError) as caught:
            parse_enhancements({annotation: raw}, QoSLevel.SHARED_CORES)
        err = caught.value
        assert err.key == annotation
        assert err.rule.startswith(rule)
        assert err.field is None


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("true", "a boolean"),
        ("1", "a number"),
        ("null", "null"),
        ("NaN", "a number"),
        ("[]", "an array"),
        ("{}", "an object"),
    ],
)
def test_values_must_be_strings(value: str, kind: str) -> None:
    with pytest.raises(QoSValidationError) as caught:
        parse_memory_enhancement(f'{{"numa_binding": {value}}}', level=QoSLevel.DEDICATED_CORES)
    err = caught.value
    assert err.field == "numa_binding"
    assert err.rule == f"must be a JSON string, not {kind}"


def test_unknown_keys_are_kept_and_ignored() -> None:
    parsed = parse_enhancements(
        {
            MEMORY_ENHANCEMENT_ANNOTATION: '{"numa_binding": "true", "future_knob": "x"}',
            CPU_ENHANCEMENT_ANNOTATION: '{"numa_affinity": "true", "cpu_burst_threshold": "50"}',
            NETWORK_ENHANCEMENT_ANNOTATION: '{"new": "1"}',
        },
        QoSLevel.DEDICATED_CORES,
    )
    assert dict(parsed.memory.extra) == {"future_knob": "x"}
    assert parsed.memory.numa_binding is True
    assert dict(parsed.cpu.extra) == {"numa_affinity": "true", "cpu_burst_threshold": "50"}
    assert dict(parsed.network.extra) == {"new": "1"}


def test_unknown_keys_still_must_be_strings() -> None:
    with pytest.raises(QoSValidationError, match="must be a JSON string"):
        parse_network_enhancement('{"new": 1}')


def test_enhancements_are_frozen_and_hashable() -> None:
    parsed = parse_enhancements(
        {MEMORY_ENHANCEMENT_ANNOTATION: '{"x": "y"}'}, QoSLevel.SHARED_CORES
    )
    with pytest.raises(AttributeError):
        parsed.memory.numa_binding = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        parsed.memory.extra["x"] = "z"  # type: ignore[index]
    assert isinstance(hash(parsed), int)
    assert parsed != Enhancements()


def test_non_string_annotation_value_is_an_error() -> None:
    with pytest.raises(QoSValidationError, match="must be a string"):
        parse_enhancements({CPU_ENHANCEMENT_ANNOTATION: 5}, QoSLevel.SHARED_CORES)  # type: ignore[dict-item]


def test_leading_zeros_do_not_defeat_the_integer_length_bound() -> None:
    # CPython's int() refuses strings over 4300 digits, leading zeros included.
    padded = "0" * 5000 + "150"
    parsed = _memory({"oom_priority": padded}, QoSLevel.DEDICATED_CORES)
    assert parsed.oom_priority == 150
    assert _memory({"oom_priority": "-" + "0" * 5000 + "300"}).oom_priority == -300
    with pytest.raises(QoSValidationError):
        _memory({"oom_priority": "1" * 5000})


def test_long_non_numbers_are_rejected_without_backtracking() -> None:
    # A regexp like [0-9]+\.?[0-9]* backtracks quadratically here; this would hang.
    for raw in ("1" * 50_000 + "x", "1." + "1" * 50_000 + "x", "1e" + "1" * 50_000 + "x"):
        with pytest.raises(QoSValidationError):
            _memory({"rss_overuse_threshold": raw})
