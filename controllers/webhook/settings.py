"""``--webhook-config FILE``: the admission settings, from YAML.

.. code-block:: yaml

    # Pods in these namespaces are allowed untouched. Replaces the default
    # (kube-system, katalyst-system): list those too to keep them.
    excludedNamespaces: [kube-system, katalyst-system, monitoring]
    # QoS levels for pods that set none; the first rule that matches wins.
    defaults:
      - qosLevel: reclaimed_cores
        namespaces: [batch]          # any of these namespaces (absent: any)
        matchLabels: {tier: batch}   # all of these labels (absent: any)

Unknown keys are refused (a misspelt key would otherwise silently do nothing).
:func:`parse_admission_config` is pure; :class:`AdmissionConfigError` names the
field and the rule it broke.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from controllers.webhook.admission import (
    DEFAULT_EXCLUDED_NAMESPACES,
    AdmissionConfig,
    DefaultRule,
    Defaults,
)
from katalyst.qos import QoSLevel

__all__ = ["AdmissionConfigError", "load_admission_config", "parse_admission_config"]

_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Label keys: an optional DNS-subdomain prefix and a name (63 at most), as
# apimachinery's IsQualifiedName; values: 63 at most, alphanumeric at both ends.
_LABEL_NAME: Final = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)")
_LABEL_PREFIX: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_LEVELS: Final = ", ".join(level.value for level in QoSLevel)


class AdmissionConfigError(ValueError):
    """The file broke a rule; the message names the field (``defaults[0].qosLevel``)."""


def _namespaces(value: object, where: str) -> frozenset[str]:
    if not isinstance(value, list):
        raise AdmissionConfigError(f"{where}: must be a list of namespace names")
    for index, item in enumerate(value):
        if not isinstance(item, str) or len(item) > 63 or not _DNS_LABEL.fullmatch(item):
            raise AdmissionConfigError(
                f"{where}[{index}]: {item!r} is not a namespace name (at most 63 of a-z 0-9 "
                "and -, starting and ending alphanumeric)"
            )
    return frozenset(value)


def _label_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _LABEL_PREFIX.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.fullmatch(name))


def _labels(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise AdmissionConfigError(f"{where}: must be a map of label keys to values")
    labels: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _label_key(key):
            raise AdmissionConfigError(f"{where}: {key!r} is not a label key")
        if not isinstance(item, str) or not (
            item == "" or (len(item) <= 63 and _LABEL_NAME.fullmatch(item))
        ):
            raise AdmissionConfigError(
                f"{where}.{key}: {item!r} is not a label value (a string of at most 63 of "
                "A-Z a-z 0-9 - _ ., alphanumeric at both ends; quote numbers and booleans)"
            )
        labels[key] = item
    return labels


def _rule(value: object, where: str) -> DefaultRule:
    if not isinstance(value, Mapping):
        raise AdmissionConfigError(f"{where}: must be a map with qosLevel")
    unknown = sorted(str(k) for k in value if k not in ("qosLevel", "namespaces", "matchLabels"))
    if unknown:
        raise AdmissionConfigError(
            f"{where}: unknown field {unknown[0]!r} (known: qosLevel, namespaces, matchLabels)"
        )
    level = value.get("qosLevel")
    try:
        qos = QoSLevel(str(level)) if isinstance(level, str) else None
    except ValueError:
        qos = None
    if qos is None:
        raise AdmissionConfigError(
            f"{where}.qosLevel: {level!r} is not a QoS level (one of {_LEVELS})"
        )
    namespaces = (
        _namespaces(value["namespaces"], f"{where}.namespaces")
        if "namespaces" in value
        else frozenset()
    )
    labels = _labels(value["matchLabels"], f"{where}.matchLabels") if "matchLabels" in value else {}
    if not namespaces and not labels:
        raise AdmissionConfigError(
            f"{where}: give namespaces, matchLabels or both (a rule for every pod would "
            "change pods the cluster did not mean to)"
        )
    return DefaultRule(qos_level=qos, namespaces=namespaces, match_labels=labels)


def parse_admission_config(document: object) -> AdmissionConfig:
    """The settings from a decoded YAML document (None, an empty file: the defaults)."""
    if document is None:
        return AdmissionConfig()
    if not isinstance(document, Mapping):
        raise AdmissionConfigError("the document must be a map (excludedNamespaces, defaults)")
    unknown = sorted(str(k) for k in document if k not in ("excludedNamespaces", "defaults"))
    if unknown:
        raise AdmissionConfigError(
            f"unknown field {unknown[0]!r} (known: excludedNamespaces, defaults)"
        )
    excluded = DEFAULT_EXCLUDED_NAMESPACES
    if "excludedNamespaces" in document:
        excluded = _namespaces(document["excludedNamespaces"], "excludedNamespaces")
    rules: tuple[DefaultRule, ...] = ()
    raw_rules: Any = document.get("defaults", [])
    if raw_rules is not None:
        if not isinstance(raw_rules, list):
            raise AdmissionConfigError("defaults: must be a list of rules")
        rules = tuple(_rule(item, f"defaults[{i}]") for i, item in enumerate(raw_rules))
    return AdmissionConfig(excluded_namespaces=excluded, defaults=Defaults(rules=rules))


def load_admission_config(path: Path) -> AdmissionConfig:
    """Read and parse ``path``; :class:`AdmissionConfigError` for a file that cannot be
    read, is not YAML, or breaks a rule (the message does not name the file: the
    caller does)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdmissionConfigError(f"cannot be read: {exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AdmissionConfigError(f"is not YAML: {exc}".replace("\n", " ")) from None
    return parse_admission_config(document)
