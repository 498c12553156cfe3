"""Kubernetes resource quantities (``500m``, ``1.5Gi``, ``1e3``), parsed exactly.

The grammar is apimachinery's (``k8s.io/apimachinery/pkg/api/resource/quantity.go``)::

    <quantity>        ::= <signedNumber><suffix>
    <signedNumber>    ::= <number> | <sign><number>
    <sign>            ::= "+" | "-"
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <digits>          ::= ASCII 0-9, one or more
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei                  (powers of 1024)
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E       (powers of 1000)
    <decimalExponent> ::= "e" <signedInteger> | "E" <signedInteger>

Values are held as exact :class:`decimal.Decimal`, never float, and like apimachinery
a value is rounded away from zero to a multiple of 10^-9 (``0.1n`` is ``1n``: "if you
want some resources, you should get some resources").

Why this is hand-written rather than ``kubernetes.utils.parse_quantity``: the Python
client's parser is a thin wrapper around ``Decimal(str)``, so it accepts what
apimachinery's ``ParseQuantity`` rejects -- ``inf``/``Infinity``, non-ASCII digits
(Arabic-Indic "12", U+0661 U+0662, is 12), underscores (``1_000``), surrounding
spaces -- and importing it pulls in the whole client (about 0.4 s of imports, measured
with ``python -X importtime``), while this library must not import ``kubernetes`` at
all (an import-linter contract). Note that apimachinery's JSON decoder does trim
surrounding spaces before calling ``ParseQuantity``; the API server then stores the
canonical form, so pods read back from it never carry them, and this parser rejects
them as ``ParseQuantity`` itself does.

Where apimachinery's scanner is laxer than its own documented grammar, this parser
follows the grammar and says so:

* A number with no digit at all (``"+"``, ``"."``, ``"Ki"``, ``"m"``) is rejected;
  apimachinery's scanner reads it as zero.
* An exponent outside the signed 32-bit range is rejected; apimachinery parses it as
  int64 and silently truncates it to int32 (``1e4294967296`` becomes ``1``).
* Binary-suffixed values above 2^63-1 are not silently capped at 2^63-1 as apimachinery
  does; :meth:`Quantity.value` and :meth:`Quantity.milli_value` reject them instead.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal
from typing import Final

from katalyst.qos.errors import ErrorKind, QoSValidationError

__all__ = ["INT64_MAX", "INT64_MIN", "Quantity", "parse_quantity"]

INT64_MAX: Final = 2**63 - 1
"""Largest value ``Quantity.value()``/``milli_value()`` may return (Go's int64)."""
INT64_MIN: Final = -(2**63)
"""Smallest value ``Quantity.value()``/``milli_value()`` may return (Go's int64)."""

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1

_DECIMAL_SUFFIXES: Final[dict[str, int]] = {
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
}
_BINARY_SUFFIXES: Final[dict[str, int]] = {
    "Ki": 10,
    "Mi": 20,
    "Gi": 30,
    "Ti": 40,
    "Pi": 50,
    "Ei": 60,
}
_SUFFIX_FOR_EXPONENT: Final[dict[int, str]] = {e: s for s, e in _DECIMAL_SUFFIXES.items()}

# [0-9], not \d: without re.ASCII, \d matches every Unicode decimal digit (U+0661
# ARABIC-INDIC DIGIT ONE, U+FF19 FULLWIDTH DIGIT NINE). fullmatch, not match + "$":
# "$" also matches before a trailing newline.
_NUMBER_RE: Final = re.compile(
    r"(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?(?P<rest>.*)", re.DOTALL
)
_EXPONENT_RE: Final = re.compile(r"[eE](?P<exp>[+-]?[0-9]+)")

_SUFFIX_HELP: Final = "n u m k M G T P E Ki Mi Gi Ti Pi Ei, or e<integer>"
_EXAMPLES: Final = "like 500m, 1.5Gi or 1e3"

# Exact arithmetic: precision large enough that nothing we do rounds. libmpdec sizes
# results by their actual digits, not by prec, so this costs nothing for small values.
# Callers bound magnitudes before any operation whose exact result could be huge.
_EXACT: Final = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    rounding=ROUND_UP,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
# Sums: bounded precision, and any rounding is an error rather than a silent change.
# 1e2147483647 + 1n would need two billion digits exactly; it is refused instead.
_SUM_PRECISION: Final = 4096
_SUM: Final = decimal.Context(
    prec=_SUM_PRECISION,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation, decimal.Overflow, decimal.Inexact],
)
_NANO: Final = Decimal("1e-9")
_ZERO: Final = Decimal(0)
_INT64_MAX_DEC: Final = Decimal(INT64_MAX)
_INT64_MIN_DEC: Final = Decimal(INT64_MIN)


@dataclass(frozen=True, slots=True, order=True)
class Quantity:
    """An exact resource quantity.

    Build one with :func:`parse_quantity`. Instances compare, hash and add by value
    (``Quantity.parse("1") == parse_quantity("1000m")``).
    """

    amount: Decimal
    """The exact value in base units (cores for cpu, bytes for memory)."""

    def __post_init__(self) -> None:
        # A programming error, not a user's: parse_quantity never builds these.
        if not isinstance(self.amount, Decimal) or not self.amount.is_finite():
            raise TypeError(f"Quantity needs a finite Decimal, not {self.amount!r}")

    @classmethod
    def zero(cls) -> Quantity:
        """The quantity 0, the start value for sums."""
        return cls(_ZERO)

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        key: str = "quantity",
        kind: ErrorKind = "field",
        allow_negative: bool = False,
    ) -> Quantity:
        """Same as :func:`parse_quantity`."""
        return parse_quantity(text, key=key, kind=kind, allow_negative=allow_negative)

    def value(self, *, key: str = "quantity", kind: ErrorKind = "field") -> int:
        """The value rounded away from zero to an integer, like Kubernetes' ``Value()``.

        Raises :class:`QoSValidationError` naming ``key`` when the result does not fit
        a signed 64-bit integer (Kubernetes would silently overflow or saturate).
        """
        return _to_int64(self, key=key, kind=kind, milli=False)

    def milli_value(self, *, key: str = "quantity", kind: ErrorKind = "field") -> int:
        """``value * 1000`` rounded away from zero, like Kubernetes' ``MilliValue()``.

        Raises :class:`QoSValidationError` naming ``key`` when the result does not fit
        a signed 64-bit integer.
        """
        return _to_int64(self, key=key, kind=kind, milli=True)

    def __add__(self, other: Quantity) -> Quantity:
        """The exact sum; a sum that cannot be held exactly raises QoSValidationError."""
        if not isinstance(other, Quantity):
            return NotImplemented
        try:
            return Quantity(_SUM.add(self.amount, other.amount))
        except decimal.DecimalException:
            raise QoSValidationError(
                key="quantity",
                kind="field",
                value=f"{self} + {other}",
                rule=f"the sum must be representable in {_SUM_PRECISION} decimal digits",
            ) from None

    def __str__(self) -> str:
        """The canonical text; :func:`parse_quantity` reads it back to an equal value for
        every quantity it can produce (a precision of 10**-9 at most).

        Like apimachinery's DecimalSI canonical form: the largest power-of-1000 suffix
        that keeps the number an integer (``1.5`` is ``1500m``, ``2000`` is ``2k``).
        Magnitudes beyond the ``E`` suffix, or finer than ``n``, use ``e`` notation.
        """
        if self.amount.is_zero():
            return "0"
        normal = self.amount.normalize(_EXACT)
        sign, digits, _ = normal.as_tuple()
        exponent = _exponent_of(normal)
        coefficient = "".join(map(str, digits))
        prefix = "-" if sign else ""
        if exponent > 18 or exponent < -9:
            return f"{prefix}{coefficient}e{exponent}"
        suffix_exponent = (exponent // 3) * 3
        return (
            f"{prefix}{coefficient}{'0' * (exponent - suffix_exponent)}"
            f"{_SUFFIX_FOR_EXPONENT[suffix_exponent]}"
        )

    def __repr__(self) -> str:
        return f"Quantity({str(self)!r})"


def parse_quantity(
    text: str,
    *,
    key: str = "quantity",
    kind: ErrorKind = "field",
    allow_negative: bool = False,
) -> Quantity:
    """Parse a Kubernetes quantity string exactly.

    ``key`` and ``kind`` name the input in the error (e.g. ``key=
    "spec.containers[app].resources.requests[cpu]"``). Negative values are refused
    unless ``allow_negative`` (resource requests and limits are never negative).

    >>> parse_quantity("1.5Gi").value()
    1610612736
    >>> parse_quantity("500m").amount
    Decimal('0.500')
    """

    def fail(rule: str) -> QoSValidationError:
        return QoSValidationError(key=key, kind=kind, value=text, rule=rule)

    if not isinstance(text, str):
        raise fail("must be a string")
    if not text:
        raise fail("must not be empty")
    if not text.isascii():
        raise fail(f"must be ASCII only, {_EXAMPLES}")
    if any(c.isspace() for c in text):
        raise fail(f"must not contain whitespace, {_EXAMPLES}")

    match = _NUMBER_RE.fullmatch(text)
    assert match is not None  # every group can be empty and "rest" takes anything
    int_digits, frac_digits = match["int"], match["frac"] or ""
    suffix = match["rest"]
    if not int_digits and not frac_digits:
        raise fail(f"must start with a number, {_EXAMPLES}")

    decimal_exponent = 0
    binary_exponent = 0
    if suffix in _DECIMAL_SUFFIXES:
        decimal_exponent = _DECIMAL_SUFFIXES[suffix]
    elif suffix in _BINARY_SUFFIXES:
        binary_exponent = _BINARY_SUFFIXES[suffix]
    elif (exp_match := _EXPONENT_RE.fullmatch(suffix)) is not None:
        decimal_exponent = _parse_exponent(exp_match["exp"], fail=fail)
    else:
        shown = suffix if len(suffix) <= 20 else suffix[:20] + "..."
        raise fail(f"suffix {shown!r} is not one of {_SUFFIX_HELP}")

    digits = (int_digits + frac_digits).lstrip("0") or "0"
    exponent = decimal_exponent - len(frac_digits)
    # Building a Decimal from a string is exact whatever the context's precision.
    amount = Decimal(f"{'-' if match['sign'] == '-' else ''}{digits}E{exponent}")
    if binary_exponent:
        amount = _EXACT.multiply(amount, Decimal(2**binary_exponent))
    if amount.is_zero():
        amount = _ZERO  # "-0" is zero, not negative
    elif _exponent_of(amount) < -9:
        # apimachinery rounds to nano units, away from zero (inf.RoundUp).
        amount = amount.quantize(_NANO, rounding=ROUND_UP, context=_EXACT)
    if amount < 0 and not allow_negative:
        raise fail("must not be negative")
    return Quantity(amount)


def _parse_exponent(text: str, *, fail: Callable[[str], QoSValidationError]) -> int:
    # Strip leading zeros and bound the length before int(): CPython refuses str->int
    # conversion above 4300 digits (leading zeros count), and a longer exponent is out
    # of range anyway.
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > 10:
        raise fail("exponent must fit in a signed 32-bit integer")
    exponent = -int(digits) if text.startswith("-") else int(digits)
    if not _INT32_MIN <= exponent <= _INT32_MAX:
        raise fail("exponent must fit in a signed 32-bit integer")
    return exponent


def _exponent_of(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)  # finite: we never build NaN or Infinity
    return exponent


def _to_int64(quantity: Quantity, *, key: str, kind: ErrorKind, milli: bool) -> int:
    scaled = quantity.amount.scaleb(3, context=_EXACT) if milli else quantity.amount
    # Range-check the Decimal before int(): int() of 1e2147483647 would build a
    # two-billion-digit integer. Decimal comparisons are exact and cheap.
    rounded = scaled.to_integral_value(rounding=ROUND_UP, context=_EXACT)
    if not _INT64_MIN_DEC <= rounded <= _INT64_MAX_DEC:
        raise QoSValidationError(
            key=key,
            kind=kind,
            value=str(quantity),
            rule=f"its {'milli-value' if milli else 'value'} must fit in a signed 64-bit "
            f"integer ({INT64_MIN} to {INT64_MAX})",
        )
    return int(rounded)
