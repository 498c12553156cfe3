"""Quantities: apimachinery's grammar, exact values, Value()/MilliValue() rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest

from katalyst.qos import INT64_MAX, INT64_MIN, QoSValidationError, Quantity, parse_quantity


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", "0"),
        ("1", "1"),
        ("2k", "2000"),
        ("500m", "0.5"),
        ("1.5Gi", "1610612736"),
        ("1e3", "1000"),
        ("1E3", "1000"),
        ("1e+3", "1000"),
        ("1E-3", "0.001"),
        ("1e03", "1000"),
        (".5", "0.5"),
        ("5.", "5"),
        ("5.Gi", str(5 * 2**30)),
        ("+5", "5"),
        ("007", "7"),
        ("0.000", "0"),
        ("1Ki", "1024"),
        ("1Mi", str(2**20)),
        ("1Gi", str(2**30)),
        ("1Ti", str(2**40)),
        ("1Pi", str(2**50)),
        ("1Ei", str(2**60)),
        ("0.5Ki", "512"),
        ("1n", "1e-9"),
        ("1u", "1e-6"),
        ("1m", "0.001"),
        ("1k", "1000"),
        ("1M", "1e6"),
        ("1G", "1e9"),
        ("1T", "1e12"),
        ("1P", "1e15"),
        ("1E", "1e18"),  # "E" alone is the exa suffix, not an exponent
        ("1.5e-9", "2e-9"),  # rounded away from zero to nano units, like apimachinery
        ("0.1n", "1e-9"),
        ("1.0000000001", "1.000000001"),
        ("1e-2147483648", "1e-9"),
        ("1e" + "0" * 5000 + "3", "1000"),  # leading zeros do not count against int()
        ("1e-" + "0" * 5000 + "3", "0.001"),
        ("12345678901234567890123456789", "12345678901234567890123456789"),
    ],
)
def test_valid_quantities(text: str, expected: str) -> None:
    assert parse_quantity(text).amount == Decimal(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("-1.5", "-1.5"), ("-0.1n", "-1e-9"), ("-1Ki", "-1024"), ("-0", "0"), ("-1e-3", "-0.001")],
)
def test_negative_quantities_when_allowed(text: str, expected: str) -> None:
    assert parse_quantity(text, allow_negative=True).amount == Decimal(expected)


@pytest.mark.parametrize("text", ["-1", "-0.1n", "-1Ki", "-1e-3"])
def test_negative_quantities_rejected_by_default(text: str) -> None:
    with pytest.raises(QoSValidationError, match="must not be negative"):
        parse_quantity(text)


def test_negative_zero_is_not_negative() -> None:
    quantity = parse_quantity("-0")
    assert quantity.amount == 0
    assert str(quantity) == "0"


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "must not be empty"),
        (" 1", "must not contain whitespace"),
        ("1 ", "must not contain whitespace"),
        ("1\n", "must not contain whitespace"),
        ("\t1", "must not contain whitespace"),
        ("1 Gi", "must not contain whitespace"),
        ("inf", "must start with a number"),
        ("Infinity", "must start with a number"),
        ("nan", "must start with a number"),
        ("+", "must start with a number"),
        ("-", "must start with a number"),
        (".", "must start with a number"),
        ("+.", "must start with a number"),
        ("Ki", "must start with a number"),
        ("m", "must start with a number"),
        ("--1", "must start with a number"),
        ("1K", "suffix 'K' is not one of"),
        ("1ki", "suffix 'ki' is not one of"),
        ("1mi", "suffix 'mi' is not one of"),
        ("1KiB", "suffix 'KiB' is not one of"),
        ("1e", "suffix 'e' is not one of"),
        ("1e+", "suffix 'e+' is not one of"),
        ("1e3.5", "suffix 'e3.5' is not one of"),
        ("1e3Ki", "suffix 'e3Ki' is not one of"),
        ("1Gi3", "suffix 'Gi3' is not one of"),
        ("1.2.3", "suffix '.3' is not one of"),
        ("1_000", "suffix '_000' is not one of"),
        ("0x10", "suffix 'x10' is not one of"),
        ("1,5", "suffix ',5' is not one of"),
        ("\u0661", "must be ASCII only"),  # ARABIC-INDIC DIGIT ONE
        ("\uff11", "must be ASCII only"),  # FULLWIDTH DIGIT ONE
        ("1\u00a0", "must be ASCII only"),  # NO-BREAK SPACE
        ("1e2147483648", "exponent must fit in a signed 32-bit integer"),
        ("1e-2147483649", "exponent must fit in a signed 32-bit integer"),
        ("1e" + "9" * 5000, "exponent must fit in a signed 32-bit integer"),
    ],
)
def test_invalid_quantities(text: str, rule: str) -> None:
    with pytest.raises(QoSValidationError) as caught:
        parse_quantity(text, key="spec.containers[app].resources.requests[cpu]")
    err = caught.value
    assert rule in err.rule
    assert err.key == "spec.containers[app].resources.requests[cpu]"
    assert err.kind == "field"
    assert err.value == text[:100] or err.value.startswith(text[:100])


def test_error_message_for_a_request() -> None:
    with pytest.raises(QoSValidationError) as caught:
        parse_quantity("2 cores", key="spec.containers[app].resources.requests[cpu]")
    assert str(caught.value) == (
        'field "spec.containers[app].resources.requests[cpu]": value "2 cores" is invalid: '
        "must not contain whitespace, like 500m, 1.5Gi or 1e3"
    )


@pytest.mark.parametrize(
    ("text", "value", "milli"),
    [
        ("0", 0, 0),
        ("1", 1, 1000),
        ("500m", 1, 500),
        ("1.5", 2, 1500),
        ("1.4", 2, 1400),
        ("0.1m", 1, 1),  # MilliValue rounds up too
        ("1n", 1, 1),
        ("1Gi", 2**30, 2**30 * 1000),
        ("-1.5", -2, -1500),  # away from zero, as Quantity.Value() documents
        ("-0.1m", -1, -1),
        ("9223372036854775807m", 9223372036854776, INT64_MAX),
        ("-9223372036854775808m", -9223372036854776, INT64_MIN),
    ],
)
def test_value_and_milli_value_round_away_from_zero(text: str, value: int, milli: int) -> None:
    quantity = parse_quantity(text, allow_negative=True)
    assert quantity.value() == value
    assert quantity.milli_value() == milli


@pytest.mark.parametrize(
    ("text", "value_fits", "milli_fits"),
    [
        ("9223372036854775807", True, False),
        ("-9223372036854775808", True, False),
        ("9223372036854775808", False, False),
        ("8Ei", False, False),  # 2^63: apimachinery would cap it at 2^63-1
        ("7Ei", True, False),
        ("9223372036854775807.1", False, False),  # rounds up past the maximum
        ("1e2147483647", False, False),
        ("9223372036854775807m", True, True),
    ],
)
def test_int64_overflow_is_rejected(text: str, value_fits: bool, milli_fits: bool) -> None:
    quantity = parse_quantity(text, allow_negative=True)
    for method, fits in ((quantity.value, value_fits), (quantity.milli_value, milli_fits)):
        if fits:
            method(key="k")
        else:
            with pytest.raises(QoSValidationError, match="must fit in a signed 64-bit") as caught:
                method(key="spec.x")
            assert caught.value.key == "spec.x"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("0", "0"),
        ("1.5", "1500m"),
        ("2000", "2k"),
        ("12e5", "1200k"),
        ("1.000", "1"),
        ("100m", "100m"),
        ("1n", "1n"),
        ("1Gi", "1073741824"),
        ("1E", "1E"),
        ("1e19", "1e19"),
        ("-1.5", "-1500m"),
        ("0.5u", "500n"),
    ],
)
def test_str_is_canonical_and_reads_back(text: str, canonical: str) -> None:
    quantity = parse_quantity(text, allow_negative=True)
    assert str(quantity) == canonical
    assert parse_quantity(canonical, allow_negative=True) == quantity
    assert repr(quantity) == f"Quantity('{canonical}')"


def test_str_of_a_quantity_finer_than_nano() -> None:
    # Only reachable by building a Quantity by hand: the parser rounds to 1n, as
    # apimachinery does, so this one prints in e notation but does not read back.
    quantity = Quantity(Decimal("1e-12"))
    assert str(quantity) == "1e-12"
    assert parse_quantity(str(quantity)) == parse_quantity("1n")


def test_quantities_compare_and_add_by_value() -> None:
    assert parse_quantity("1") == parse_quantity("1000m")
    assert parse_quantity("1") < parse_quantity("1001m")
    assert hash(parse_quantity("1")) == hash(parse_quantity("1000m"))
    assert parse_quantity("1") + parse_quantity("500m") == parse_quantity("1.5")
    assert Quantity.zero() + parse_quantity("1Ki") == parse_quantity("1024")
    assert Quantity.parse("2k") == parse_quantity("2000")


def test_a_sum_that_cannot_be_exact_is_an_error() -> None:
    with pytest.raises(QoSValidationError, match="sum must be representable"):
        _ = parse_quantity("1e2147483647") + parse_quantity("1n")


def test_non_string_input_is_an_error() -> None:
    with pytest.raises(QoSValidationError, match="must be a string"):
        parse_quantity(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [Decimal("NaN"), Decimal("Infinity"), 1])
def test_quantity_holds_only_finite_decimals(amount: object) -> None:
    with pytest.raises(TypeError):
        Quantity(amount)  # type: ignore[arg-type]
