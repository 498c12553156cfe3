"""Property tests: whatever a user sends, the QoS model answers with a value or with
QoSValidationError, never another exception; and quantities read back exactly."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from katalyst.qos import (
    CPU_ENHANCEMENT_ANNOTATION,
    MEMORY_ENHANCEMENT_ANNOTATION,
    NETWORK_ENHANCEMENT_ANNOTATION,
    QOS_LEVEL_ANNOTATION,
    PodView,
    QoSLevel,
    QoSValidationError,
    Quantity,
    parse_cpu_enhancement,
    parse_enhancements,
    parse_memory_enhancement,
    parse_network_enhancement,
    parse_qos_level,
    parse_quantity,
)

from .pods import API_SERVER_POD, RECLAIMED_POD

PROPERTY = settings(max_examples=150, deadline=None)

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# An integer whose str() CPython refuses (over 4300 digits); built lazily because even
# hypothesis cannot repr it. Not JSON-encodable, so kept out of JSON_VALUES.
HUGE_INT = st.just(None).map(lambda _: 10**5000)
ANY_VALUES = JSON_VALUES | HUGE_INT
ENHANCEMENT_KEYS = st.sampled_from(
    [
        "numa_binding",
        "numa_exclusive",
        "rss_overuse_threshold",
        "oom_priority",
        "cpuset_pool",
        "numa_share",
        "suppression_tolerance_rate",
        "cpu_burst_policy",
        "cpu_burst_percent",
        "namespace_type",
        "topology_affinity_restricted",
    ]
) | st.text(max_size=10)
# Numbers padded past CPython's 4300-digit int() limit with leading zeros.
PADDED_NUMBERS = st.sampled_from([0, 4299, 4300, 6000]).map(lambda n: "0" * n + "150")
FIELD_VALUES = (
    st.sampled_from(
        ["true", "false", "0", "-300", "300", "150", "1.5", "static", "host_ns", "batch", ""]
    )
    | st.text(max_size=12)
    | PADDED_NUMBERS
)
QUANTITY_ALPHABET = "0123456789.+-eEinumkKMGTP \n\u0661"


def _only_validation_errors(call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except QoSValidationError as err:
        str(err).encode("utf-8")  # the message itself must be printable


@PROPERTY
@given(st.text() | ANY_VALUES)
def test_parse_qos_level_never_raises_anything_else(raw: Any) -> None:
    _only_validation_errors(parse_qos_level, {QOS_LEVEL_ANNOTATION: raw})


@PROPERTY
@given(
    st.sampled_from(list(QoSLevel)),
    st.text() | JSON_VALUES.map(json.dumps),
)
def test_enhancement_parsers_never_raise_anything_else(level: QoSLevel, raw: str) -> None:
    _only_validation_errors(parse_memory_enhancement, raw, level=level)
    _only_validation_errors(parse_cpu_enhancement, raw)
    _only_validation_errors(parse_network_enhancement, raw)


@PROPERTY
@given(
    st.sampled_from(list(QoSLevel)),
    st.dictionaries(ENHANCEMENT_KEYS, FIELD_VALUES | JSON_VALUES, max_size=6),
)
def test_enhancement_objects_never_raise_anything_else(
    level: QoSLevel, fields: dict[str, Any]
) -> None:
    raw = json.dumps(fields)
    annotations = {
        MEMORY_ENHANCEMENT_ANNOTATION: raw,
        CPU_ENHANCEMENT_ANNOTATION: raw,
        NETWORK_ENHANCEMENT_ANNOTATION: raw,
    }
    _only_validation_errors(parse_enhancements, annotations, level)


@PROPERTY
@given(st.sampled_from(list(QoSLevel)), ENHANCEMENT_KEYS, FIELD_VALUES | JSON_VALUES)
def test_single_field_objects_never_raise_anything_else(
    level: QoSLevel, key: str, value: Any
) -> None:
    raw = json.dumps({key: value})
    _only_validation_errors(parse_memory_enhancement, raw, level=level)
    _only_validation_errors(parse_cpu_enhancement, raw)
    _only_validation_errors(parse_network_enhancement, raw)


@PROPERTY
@given(
    st.text()
    | st.text(alphabet=QUANTITY_ALPHABET, max_size=12)
    | PADDED_NUMBERS.map(lambda digits: f"1e-{digits}"),
    st.booleans(),
)
def test_parse_quantity_never_raises_anything_else(text: str, allow_negative: bool) -> None:
    try:
        quantity = parse_quantity(text, allow_negative=allow_negative)
    except QoSValidationError:
        return
    _only_validation_errors(quantity.value)
    _only_validation_errors(quantity.milli_value)
    assert parse_quantity(str(quantity), allow_negative=True) == quantity


SUFFIXES: dict[str, Fraction] = {
    **{
        s: Fraction(10) ** e
        for s, e in {
            "n": -9,
            "u": -6,
            "m": -3,
            "": 0,
            "k": 3,
            "M": 6,
            "G": 9,
            "T": 12,
            "P": 15,
            "E": 18,
        }.items()
    },
    **{
        s: Fraction(2) ** e
        for s, e in {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}.items()
    },
}


@st.composite
def quantity_texts(draw: st.DrawFn) -> tuple[str, Fraction]:
    """A valid quantity string and its exact value, computed independently."""
    sign = draw(st.sampled_from(["", "+", "-"]))
    int_digits = draw(st.text(alphabet="0123456789", max_size=12))
    frac_digits = draw(st.none() | st.text(alphabet="0123456789", max_size=12))
    if not int_digits and not frac_digits:
        int_digits = "0"
    number = int_digits if frac_digits is None else f"{int_digits}.{frac_digits}"
    value = Fraction(int(int_digits or "0")) + (
        Fraction(int(frac_digits), 10 ** len(frac_digits)) if frac_digits else 0
    )
    if draw(st.booleans()):
        suffix = draw(st.sampled_from(sorted(SUFFIXES)))
        value *= SUFFIXES[suffix]
    else:
        exponent = draw(st.integers(min_value=-30, max_value=30))
        exp_sign = "+" if exponent >= 0 and draw(st.booleans()) else ""
        suffix = f"{draw(st.sampled_from('eE'))}{exp_sign}{exponent}"
        value *= Fraction(10) ** exponent
    # apimachinery rounds to nano units, away from zero
    nanos = value * 10**9
    value = Fraction(math.ceil(nanos), 10**9)
    if sign == "-":
        value = -value
    return f"{sign}{number}{suffix}", value


@PROPERTY
@given(quantity_texts())
def test_valid_quantities_parse_to_their_exact_value(case: tuple[str, Fraction]) -> None:
    text, expected = case
    quantity = parse_quantity(text, allow_negative=True)
    assert Fraction(quantity.amount) == expected
    assert parse_quantity(str(quantity), allow_negative=True) == quantity


@PROPERTY
@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=9, min_value=-(10**30), max_value=10**30
    )
)
def test_str_reads_back_exactly(amount: Decimal) -> None:
    quantity = Quantity(amount)
    assert parse_quantity(str(quantity), allow_negative=True) == quantity


@PROPERTY
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(0, 9))
def test_value_and_milli_value_round_away_from_zero(units: int, shift: int) -> None:
    quantity = Quantity(Decimal(units).scaleb(-shift))
    exact = Fraction(units, 10**shift)

    def away_from_zero(x: Fraction) -> int:
        return math.ceil(x) if x >= 0 else math.floor(x)

    assert quantity.value() == away_from_zero(exact)
    milli = away_from_zero(exact * 1000)
    if -(2**63) <= milli < 2**63:
        assert quantity.milli_value() == milli


# --- PodView on mangled pods ----------------------------------------------------------------


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found.extend(_paths(child, (*prefix, index)))
    return found


@st.composite
def mangled_pods(draw: st.DrawFn) -> Any:
    """A realistic pod with a few subtrees replaced by arbitrary values or deleted."""
    pod: Any = copy.deepcopy(draw(st.sampled_from([API_SERVER_POD, RECLAIMED_POD])))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(pod)
        path = draw(st.sampled_from(paths))
        if not path:
            return draw(ANY_VALUES)
        parent: Any = pod
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(
                JSON_VALUES | FIELD_VALUES | st.sampled_from(["1Gi", "-1", "1e40"])
            )
    return pod


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled_pods())
def test_pod_view_on_mangled_pods(pod: Any) -> None:
    _only_validation_errors(PodView.from_dict, cast(Mapping[str, object], pod))


@PROPERTY
@given(ANY_VALUES)
def test_pod_view_on_arbitrary_json(value: Any) -> None:
    _only_validation_errors(PodView.from_dict, cast(Mapping[str, object], value))
