"""Typed settings sections: frozen dataclasses whose fields carry their own checks.

A section is a frozen dataclass deriving from :class:`Section`; each field is a
:func:`setting` (a default and the check applied to it) or a :func:`section` (a
nested section). :meth:`Section.from_mapping` builds the tree from decoded
YAML/JSON and refuses anything else with the section's :attr:`Section.error`
whose message names the field and the rule (``eviction.rate_limit.per_minute:
must be a finite number > 0, got -1 (int)``). Keys left out keep their defaults;
unknown keys are errors, so that a misspelt threshold is not silently ignored. A
section built in code is held to the same rules.

Hand-written rather than pydantic: the messages must name the path exactly as an
SRE wrote it in the agent's file or a dynamic config, and the agent's sections
are plain frozen dataclasses everywhere else (no second model layer to keep in
step).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any, ClassVar, Self, TypeVar

__all__ = [
    "Check",
    "ConfigError",
    "Section",
    "SettingError",
    "boolean",
    "choice",
    "describe",
    "integer",
    "number",
    "optional",
    "section",
    "section_list",
    "setting",
    "text",
]


class ConfigError(ValueError):
    """A configuration value broke a rule; the message names the field and the rule."""


class SettingError(ConfigError):
    """A setting broke its rule; the message names the field and the rule."""


Check = Callable[[str, object], object]
"""``check(path, value)``: the value to store, or :class:`SettingError` naming ``path``."""
_T = TypeVar("_T")


def describe(value: object) -> str:
    """A value as a message shows it: ``-1 (int)``."""
    return f"{value!r} ({type(value).__name__})"


def boolean() -> Check:
    def check(where: str, value: object) -> object:
        if not isinstance(value, bool):
            raise SettingError(f"{where}: must be true or false, got {describe(value)}")
        return value

    return check


def integer(minimum: int, maximum: int | None = None) -> Check:
    rule = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    def check(where: str, value: object) -> object:
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            raise SettingError(f"{where}: must be {rule}, got {describe(value)}")
        return value

    return check


def number(
    *, above: float | None = None, at_least: float | None = None, at_most: float | None = None
) -> Check:
    rules = []
    if above is not None:
        rules.append(f"> {above:g}")
    if at_least is not None:
        rules.append(f">= {at_least:g}")
    if at_most is not None:
        rules.append(f"<= {at_most:g}")
    rule = "a finite number" + (" " + " and ".join(rules) if rules else "")

    def within(value: float) -> bool:
        try:
            value = float(value)
        except OverflowError:  # an integer too large for a float
            return False
        return (
            math.isfinite(value)
            and (above is None or value > above)
            and (at_least is None or value >= at_least)
            and (at_most is None or value <= at_most)
        )

    def check(where: str, value: object) -> object:
        if not isinstance(value, int | float) or isinstance(value, bool) or not within(value):
            raise SettingError(f"{where}: must be {rule}, got {describe(value)}")
        return float(value)

    return check


def text(*, pattern: Callable[[str], bool] | None = None, rule: str = "a string") -> Check:
    """A string; with ``pattern``, one it accepts (``rule`` says which)."""

    def check(where: str, value: object) -> object:
        if not isinstance(value, str) or (pattern is not None and not pattern(value)):
            raise SettingError(f"{where}: must be {rule}, got {describe(value)}")
        return value

    return check


def choice(*names: str) -> Check:
    """One of ``names``."""

    def check(where: str, value: object) -> object:
        if value not in names:
            raise SettingError(f"{where}: must be one of {', '.join(names)}, got {describe(value)}")
        return value

    return check


def optional(inner: Check) -> Check:
    """``inner``, or null."""

    def check(where: str, value: object) -> object:
        return None if value is None else inner(where, value)

    return check


def section_list(cls: type[Section], *, unique: str | None = None) -> Check:
    """A list of ``cls`` sections (stored as a tuple); with ``unique``, no two may
    share that field's value."""

    def check(where: str, value: object) -> object:
        if isinstance(value, tuple) and all(isinstance(v, cls) for v in value):
            items = list(value)
        elif isinstance(value, list):
            items = [cls.from_mapping(v, where=f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            raise SettingError(f"{where}: must be a list, got {describe(value)}")
        if unique is not None:
            seen: set[object] = set()
            for i, item in enumerate(items):
                key = getattr(item, unique)
                if key in seen:
                    raise SettingError(f"{where}[{i}].{unique}: {key!r} is listed twice")
                seen.add(key)
        return tuple(items)

    return check


def setting(default: Any, check: Check) -> Any:
    """A field with its default and the check :meth:`Section.from_mapping` applies."""
    return field(default=default, metadata={"check": check})


def section(cls: type[Section]) -> Any:
    """A nested section, its defaults when left out."""
    return field(default_factory=cls, metadata={"section": cls})


def _load(cls: type[_T], raw: object, where: str) -> _T:
    if not isinstance(raw, Mapping):
        raise SettingError(f"{where}: must be a mapping, got {describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in raw if k not in fields)
    if unknown:
        raise SettingError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})"
        )
    values: dict[str, object] = {}
    for name, value in raw.items():
        meta = fields[name].metadata
        path = f"{where}.{name}"
        if "section" in meta:
            values[name] = _load(meta["section"], value, path)
        else:
            values[name] = meta["check"](path, value)
    try:
        return cls(**values)
    except SettingError as exc:
        # A rule across fields, checked when the section is built: name it by its
        # path in the file rather than by the class.
        prefix = f"{cls.__name__}."
        message = str(exc)
        if not message.startswith(prefix):
            raise
        raise type(exc)(f"{where}.{message[len(prefix) :]}") from None


class Section:
    """Base of a settings section (a frozen dataclass with ``slots=True``)."""

    __slots__ = ()
    error: ClassVar[type[ConfigError]] = SettingError
    """What a broken rule raises (a subclass of :class:`SettingError`)."""
    where: ClassVar[str] = ""
    """The path of this section in the agent's file, the default prefix of messages."""

    def __post_init__(self) -> None:
        # A section built in code is held to the same rules as one read from a file.
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            check = f.metadata.get("check")
            if check is not None:
                try:
                    check(f"{type(self).__name__}.{f.name}", getattr(self, f.name))
                except SettingError as exc:
                    raise self.error(str(exc)) from None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object], *, where: str | None = None) -> Self:
        """This section from decoded YAML/JSON; :attr:`error` naming the field
        (``where`` is the prefix of its path) on the first bad value."""
        try:
            return _load(cls, raw, cls.where if where is None else where)
        except SettingError as exc:
            if isinstance(exc, cls.error):
                raise
            raise cls.error(str(exc)) from None
