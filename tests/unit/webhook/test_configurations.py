"""The pure half of the leader's configuration pass: the CA union and the guarded
failurePolicy switch (:func:`plan`)."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest
from cryptography import x509

from controllers.webhook.certs import CertBundle, generate, parse_pair
from controllers.webhook.configurations import dial_name, merge_ca_bundle, plan, verifies

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
SVC, NS = "katalyst-webhook", "katalyst-system"
DAY = datetime.timedelta(days=1)


def make(at: datetime.datetime) -> CertBundle:
    return generate(service=SVC, namespace=NS, now=at)


def cas(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem) if pem else []


def b64(pem: bytes) -> str:
    return base64.b64encode(pem).decode()


def config(*, ca_bundle: bytes | None = None, policy: str = "Ignore") -> dict[str, Any]:
    client: dict[str, Any] = {"service": {"name": SVC, "namespace": NS, "path": "/mutate"}}
    if ca_bundle is not None:
        client["caBundle"] = b64(ca_bundle)
    return {
        "metadata": {"name": "katalyst-webhook", "resourceVersion": "7"},
        "webhooks": [
            {"name": "mutate.pods.katalyst.kubewharf.io", "clientConfig": client},
            {
                "name": "other.pods.katalyst.kubewharf.io",
                "clientConfig": dict(client),
                "failurePolicy": policy,
            },
        ],
    }


@pytest.fixture(scope="module")
def three() -> tuple[CertBundle, CertBundle, CertBundle]:
    return make(NOW - 20 * DAY), make(NOW - 10 * DAY), make(NOW)


def test_the_union_is_newest_first_deduplicated_and_at_most_two(
    three: tuple[CertBundle, CertBundle, CertBundle],
) -> None:
    a, b, c = three
    assert cas(merge_ca_bundle(b"", a.ca_crt, now=NOW)) == cas(a.ca_crt)
    assert merge_ca_bundle(a.ca_crt, a.ca_crt, now=NOW) == a.ca_crt
    ab = merge_ca_bundle(a.ca_crt, b.ca_crt, now=NOW)
    assert cas(ab) == cas(b.ca_crt) + cas(a.ca_crt)
    # Published again: stable (no write).
    assert merge_ca_bundle(ab, b.ca_crt, now=NOW) == ab
    # A third CA: the oldest leaves.
    assert cas(merge_ca_bundle(ab, c.ca_crt, now=NOW)) == cas(c.ca_crt) + cas(b.ca_crt)
    # The Secret rolled back to an older CA: both kept, newest first.
    assert cas(merge_ca_bundle(b.ca_crt, a.ca_crt, now=NOW)) == cas(b.ca_crt) + cas(a.ca_crt)


def test_expired_and_unreadable_cas_leave_the_bundle(
    three: tuple[CertBundle, CertBundle, CertBundle],
) -> None:
    a, b, _ = three
    later = NOW + datetime.timedelta(days=3651)
    fresh = make(later)
    assert cas(merge_ca_bundle(a.ca_crt, fresh.ca_crt, now=later)) == cas(fresh.ca_crt)
    assert cas(merge_ca_bundle(b"stale", b.ca_crt, now=NOW)) == cas(b.ca_crt)


def test_dial_name() -> None:
    assert dial_name({"clientConfig": {"service": {"name": "s", "namespace": "n"}}}) == "s.n.svc"
    assert dial_name({"clientConfig": {"url": "https://10.0.0.1:9443/mutate"}}) == "10.0.0.1"
    assert dial_name({"clientConfig": {}}) is None


def test_verifies_names_the_reason(three: tuple[CertBundle, CertBundle, CertBundle]) -> None:
    a, b, _ = three
    pair = parse_pair(a.tls_crt, a.tls_key)
    assert verifies(a.ca_crt, pair, name=f"{SVC}.{NS}.svc", now=NOW) is None
    assert verifies(b.ca_crt, pair, name=f"{SVC}.{NS}.svc", now=NOW) is not None
    assert verifies(a.ca_crt, pair, name="elsewhere.svc", now=NOW) is not None
    assert verifies(b"", pair, name=f"{SVC}.{NS}.svc", now=NOW) == "caBundle holds no certificate"


def test_failure_policy_waits_for_a_verifying_ca_bundle(
    three: tuple[CertBundle, CertBundle, CertBundle],
) -> None:
    a, b, _ = three
    pair = parse_pair(a.tls_crt, a.tls_key)

    def decide(obj: dict[str, Any], secret_ca: bytes | None = None) -> Any:
        return plan(obj, secret_ca=secret_ca, serving=pair, failure_policy="Fail", now=NOW)

    # No caBundle (cert-dir mode before cert-manager injects it): nothing to write.
    planned = decide(config())
    assert planned.body is None and len(planned.unverified) == 2
    # Another CA: still nothing.
    assert decide(config(ca_bundle=b.ca_crt)).body is None
    # Its CA: every webhook switched, in one write.
    planned = decide(config(ca_bundle=a.ca_crt))
    assert planned.failure_policy and not planned.ca_bundle
    assert [h["failurePolicy"] for h in planned.body["webhooks"]] == ["Fail", "Fail"]
    # Already so: nothing.
    assert decide(planned.body).body is None
    # Secret mode: the caBundle and the policy in the same write.
    planned = decide(config(), secret_ca=a.ca_crt)
    assert planned.ca_bundle and planned.failure_policy
    hooks = planned.body["webhooks"]
    assert [h["clientConfig"]["caBundle"] for h in hooks] == [b64(a.ca_crt)] * 2
    # No certificate served yet: the policy is left alone.
    planned = plan(
        config(ca_bundle=a.ca_crt), secret_ca=None, serving=None, failure_policy="Fail", now=NOW
    )
    assert planned.body is None
    # A webhook already on Fail whose caBundle does not verify is not switched back.
    planned = decide(config(ca_bundle=b.ca_crt, policy="Fail"))
    assert planned.body is None
