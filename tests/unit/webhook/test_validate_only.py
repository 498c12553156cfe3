"""``review(mutate=False)``, the validating webhook: the same checks, never a patch."""

from __future__ import annotations

from typing import Any

from controllers.webhook import AdmissionConfig, DefaultRule, Defaults, review
from controllers.webhook.certs import CertBundle
from controllers.webhook.secret import bundle_from_secret, secret_body
from katalyst.qos import QOS_LEVEL_ANNOTATION, QoSLevel


def admission(annotations: dict[str, str], resources: dict[str, Any]) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "batch", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "x", "resources": resources}]},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "batch",
            "operation": "CREATE",
            "object": pod,
        },
    }


RECLAIMED = {QOS_LEVEL_ANNOTATION: "reclaimed_cores"}
DEFAULTS = AdmissionConfig(
    defaults=Defaults((DefaultRule(QoSLevel.RECLAIMED_CORES, namespaces=frozenset({"batch"})),))
)


def test_a_reclaimed_pod_is_allowed_without_a_patch() -> None:
    body = admission(RECLAIMED, {"requests": {"cpu": "1"}})
    assert "patch" in review(body)["response"]
    assert review(body, mutate=False)["response"] == {"uid": "u1", "allowed": True}


def test_no_default_level_is_applied() -> None:
    body = admission({}, {"requests": {"cpu": "1"}})
    assert "patch" in review(body, config=DEFAULTS)["response"]
    assert review(body, config=DEFAULTS, mutate=False)["response"] == {"uid": "u1", "allowed": True}


def test_the_same_denials() -> None:
    body = admission(RECLAIMED, {"limits": {"cpu": "1"}})
    for mutate in (True, False):
        response = review(body, mutate=mutate)["response"]
        assert not response["allowed"]
        assert "limits[cpu]" in response["status"]["message"]


def test_a_secret_round_trips_and_bad_data_reads_as_empty() -> None:
    bundle = CertBundle(b"ca", b"crt", b"key", b"cakey")
    body = secret_body(bundle, name="s", namespace="ns")
    assert body["type"] == "kubernetes.io/tls"
    assert set(body["data"]) == {"ca.crt", "tls.crt", "tls.key", "ca.key"}
    assert bundle_from_secret(body) == bundle
    assert bundle_from_secret({"data": {"ca.crt": "!!", "tls.crt": 3}}) == CertBundle(b"", b"", b"")
    assert bundle_from_secret(None) is None
    kept = secret_body(
        bundle, name="s", namespace="ns", current={"type": "Opaque", "metadata": {"x": 1}}
    )
    assert kept["type"] == "Opaque" and kept["metadata"] == {"x": 1}
