"""The one error type of the QoS model: a user's input broke a rule.

Everything in :mod:`katalyst.qos` that can fail because of what a user wrote (an
annotation, a pod manifest, a resource quantity) raises :class:`QoSValidationError`
and nothing else: no ``KeyError``, ``TypeError``, ``json.JSONDecodeError`` or
``decimal.InvalidOperation`` leaks out. Callers (the admission path, the QRM
``Allocate`` handler, the standalone manifest loader) catch this one type and turn it
into a user-facing message that names the input and the rule it broke.
"""

from __future__ import annotations

import json
from typing import Final, Literal

__all__ = ["MISSING", "ErrorKind", "QoSValidationError", "display_value"]

ErrorKind = Literal["annotation", "field"]
"""What ``key`` names: a pod annotation, or a field path in an object or request."""

DISPLAY_LIMIT: Final = 100
"""Characters of the offending value kept for display; the rest is elided."""


class _Missing:
    """Marker for "the value is absent", distinct from ``None`` (JSON ``null``)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()
"""Pass as ``value`` when the problem is that a required value is absent."""


def _truncate(text: str, *, limit: int = DISPLAY_LIMIT) -> str:
    if len(text) > limit:
        text = f"{text[:limit]}...({len(text) - limit} more characters)"
    return _printable(text)


def _printable(text: str) -> str:
    # A JSON string may decode to a lone surrogate ("\ud800"); such a str cannot be
    # encoded as UTF-8, and a log handler writing it would fail. Escape those.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _one_line(text: str) -> str:
    # Rendered JSON has no raw newlines except from a _type_name() of an odd type.
    return " ".join(text.splitlines())


def _quote(text: str) -> str:
    # json.dumps quotes and escapes control characters and quotes, so a value with a
    # newline or a '"' cannot forge a second log line or end the quoted part early.
    return json.dumps(_printable(text), ensure_ascii=False)


def display_value(value: object) -> str:
    """Render any value a user could send as a short, safe, one-line string.

    Strings are shown as they are; other values as JSON where that is cheap and safe.
    It never raises: a pod dict can hold anything (huge integers whose ``str()``
    Python refuses, self-referencing containers), and an error message must not fail
    while being built.
    """
    if isinstance(value, str):
        return _truncate(value)
    if isinstance(value, _Missing):
        return "<missing>"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        # str() of an int above ~4300 digits raises ValueError (CPython's
        # int_max_str_digits); do not even try for long ones.
        return f"<integer of {value.bit_length()} bits>"
    if not isinstance(value, int | float | list | tuple | dict | type(None)):
        return _type_name(value)
    try:
        rendered = json.dumps(value, ensure_ascii=False, allow_nan=True, default=_type_name)
    except (ValueError, TypeError, RecursionError):
        rendered = _type_name(value)
    return _truncate(rendered)


def _type_name(value: object) -> str:
    return f"<{type(value).__name__}>"


class QoSValidationError(ValueError):
    """A user-supplied value broke a rule of the QoS model.

    ``str(err)`` reads like::

        annotation "katalyst.kubewharf.io/qos_level": value "foo" is invalid: must be one
        of dedicated_cores, reclaimed_cores, shared_cores, system_cores

    and, for a field inside a JSON enhancement annotation::

        annotation "katalyst.kubewharf.io/memory_enhancement" field "numa_binding":
        value "yes" is invalid: must be "true" or "false"
    """

    key: str
    """The annotation key, or the field path such as
    ``spec.containers[app].resources.requests[cpu]``."""
    value: str
    """The offending value for display, truncated to about 100 characters
    (``"<missing>"`` when the value is absent)."""
    rule: str
    """The rule that was broken, as a short sentence fragment (``must be ...``)."""
    kind: ErrorKind
    """What ``key`` names: ``annotation`` or ``field``."""
    field: str | None
    """The field inside a JSON annotation (``numa_binding``), or ``None``."""

    def __init__(
        self,
        *,
        key: str,
        value: object,
        rule: str,
        kind: ErrorKind = "annotation",
        field: str | None = None,
    ) -> None:
        self.key = key
        self.value = display_value(value)
        self.rule = rule
        self.kind = kind
        self.field = field
        # Strings are quoted in the message; other values (5, true, [1]) are shown as
        # JSON without quotes, so "must be a string" is not shown next to "5".
        self._quoted = isinstance(value, str)
        self._raw_value = value
        super().__init__(self._message())

    def __reduce__(self) -> tuple[object, ...]:
        # The constructor is keyword-only, so the default pickling (which calls
        # cls(*args)) fails; errors must survive a process pool or a deepcopy.
        return (
            _rebuild_error,
            (self.key, self._raw_value, self.rule, self.kind, self.field),
        )

    def _message(self) -> str:
        # Keys and fields can embed user text (a resource name, a JSON key): bound them.
        where = f"{self.kind} {_quote(_truncate(self.key, limit=2 * DISPLAY_LIMIT))}"
        if self.field is not None:
            where += f" field {_quote(_truncate(self.field))}"
        shown = _quote(self.value) if self._quoted else _one_line(self.value)
        return f"{where}: value {shown} is invalid: {_printable(self.rule)}"

    def __str__(self) -> str:
        return self._message()


def _rebuild_error(
    key: str, value: object, rule: str, kind: ErrorKind, field: str | None
) -> QoSValidationError:
    return QoSValidationError(key=key, value=value, rule=rule, kind=kind, field=field)
