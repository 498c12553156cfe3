"""Schemas of the third-party kinds the chart renders (prometheus-operator's
ServiceMonitor and PrometheusRule, cert-manager's Certificate and Issuer), written
here from their API references for the fields the chart uses, each level closed
(``additionalProperties: false``) so that a misspelt or misplaced field fails as
``kubernetes-validate --strict`` fails one on a built-in kind. Their CRDs are not
bundled with any package available here; a field the chart starts to use must be
added to these schemas, from the project's API reference.

* monitoring.coreos.com/v1: https://prometheus-operator.dev/docs/api-reference/api/
* cert-manager.io/v1: https://cert-manager.io/docs/reference/api-docs/
"""

from __future__ import annotations

from typing import Any, Final

_STR: Final = {"type": "string"}
_STR_MAP: Final = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION: Final = {"type": "string", "pattern": r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w|y))+)$"}


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


_METADATA: Final = _closed(
    {
        "name": _STR,
        "namespace": _STR,
        "labels": _STR_MAP,
        "annotations": _STR_MAP,
    },
    ["name"],
)
_LABEL_SELECTOR: Final = _closed(
    {
        "matchLabels": _STR_MAP,
        "matchExpressions": {
            "type": "array",
            "items": _closed(
                {"key": _STR, "operator": _STR, "values": {"type": "array", "items": _STR}},
                ["key", "operator"],
            ),
        },
    }
)
_RELABEL: Final = _closed(
    {
        "sourceLabels": {"type": "array", "items": _STR},
        "separator": _STR,
        "targetLabel": _STR,
        "regex": _STR,
        "modulus": {"type": "integer"},
        "replacement": _STR,
        "action": _STR,
    }
)
_RULE: Final = _closed(
    {
        "alert": _STR,
        "record": _STR,
        "expr": {"type": ["string", "integer"]},
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": _STR_MAP,
        "annotations": _STR_MAP,
    },
    ["expr"],
)


def _kind(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _closed(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
        ["apiVersion", "kind", "metadata", "spec"],
    )


SCHEMAS: Final[dict[tuple[str, str], dict[str, Any]]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _kind(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        _closed(
            {
                "jobLabel": _STR,
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": _closed(
                    {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STR}}
                ),
                "endpoints": {
                    "type": "array",
                    "items": _closed(
                        {
                            "port": _STR,
                            "targetPort": {"type": ["string", "integer"]},
                            "path": _STR,
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "relabelings": {"type": "array", "items": _RELABEL},
                            "metricRelabelings": {"type": "array", "items": _RELABEL},
                        }
                    ),
                },
            },
            ["selector"],
        ),
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _kind(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        _closed(
            {
                "groups": {
                    "type": "array",
                    "items": _closed(
                        {
                            "name": _STR,
                            "interval": _DURATION,
                            "rules": {"type": "array", "items": _RULE},
                        },
                        ["name"],
                    ),
                }
            }
        ),
    ),
    ("cert-manager.io/v1", "Certificate"): _kind(
        "cert-manager.io/v1",
        "Certificate",
        _closed(
            {
                "secretName": _STR,
                "commonName": _STR,
                "duration": _DURATION,
                "renewBefore": _DURATION,
                "dnsNames": {"type": "array", "items": _STR},
                "ipAddresses": {"type": "array", "items": _STR},
                "isCA": {"type": "boolean"},
                "usages": {"type": "array", "items": _STR},
                "privateKey": _closed(
                    {"algorithm": _STR, "size": {"type": "integer"}, "rotationPolicy": _STR}
                ),
                "issuerRef": _closed({"name": _STR, "kind": _STR, "group": _STR}, ["name"]),
            },
            ["secretName", "issuerRef"],
        ),
    ),
    ("cert-manager.io/v1", "Issuer"): _kind(
        "cert-manager.io/v1",
        "Issuer",
        _closed(
            {
                "selfSigned": _closed({"crlDistributionPoints": {"type": "array"}}),
                "ca": _closed({"secretName": _STR}, ["secretName"]),
            }
        ),
    ),
}
