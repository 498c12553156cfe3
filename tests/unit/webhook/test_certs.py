"""Certificates: what :func:`generate` makes, and when :func:`renewal_reason` replaces one."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controllers.webhook.certs import (
    CertBundle,
    CertError,
    dns_names,
    generate,
    parse_pair,
    renewal_reason,
)

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
SVC, NS = "katalyst-webhook", "katalyst-system"


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def reason(
    bundle: CertBundle | None, *, now: datetime.datetime = NOW, service: str = SVC
) -> str | None:
    return renewal_reason(bundle, service=service, namespace=NS, now=now)


@pytest.fixture(scope="module")
def bundle() -> CertBundle:
    return generate(service=SVC, namespace=NS, now=NOW)


def test_names_cover_every_form_of_the_service() -> None:
    assert dns_names(SVC, NS) == (
        "katalyst-webhook",
        "katalyst-webhook.katalyst-system",
        "katalyst-webhook.katalyst-system.svc",
        "katalyst-webhook.katalyst-system.svc.cluster.local",
    )


def test_generated_ca_and_serving_certificate(bundle: CertBundle) -> None:
    ca, leaf = cert(bundle.ca_crt), cert(bundle.tls_crt)
    assert ca.not_valid_after_utc - NOW == datetime.timedelta(days=3650)
    assert leaf.not_valid_after_utc - NOW == datetime.timedelta(days=365)
    assert leaf.not_valid_before_utc < NOW  # backdated for clocks that lag
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(dns_names(SVC, NS))
    leaf.verify_directly_issued_by(ca)
    assert reason(bundle) is None
    assert parse_pair(bundle.tls_crt, bundle.tls_key).cert == leaf


def test_missing_and_unreadable_are_renewed(bundle: CertBundle) -> None:
    assert reason(None) == "there is none"
    assert reason(CertBundle(b"", bundle.tls_crt, bundle.tls_key)) == "ca.crt is missing"
    assert "tls.crt is not a PEM certificate" in str(
        reason(CertBundle(bundle.ca_crt, b"-----BEGIN CERT", bundle.tls_key))
    )
    assert "tls.key is not an unencrypted PEM private key" in str(
        reason(CertBundle(bundle.ca_crt, bundle.tls_crt, b"garbage"))
    )


def test_a_key_of_another_certificate_is_renewed(bundle: CertBundle) -> None:
    other = generate(service=SVC, namespace=NS, now=NOW)
    assert reason(CertBundle(bundle.ca_crt, bundle.tls_crt, other.tls_key)) == (
        "tls.crt/tls.key: tls.key is not the key of the certificate in tls.crt"
    )
    with pytest.raises(CertError, match="not the key of the certificate"):
        parse_pair(bundle.tls_crt, other.tls_key)


def test_a_certificate_another_ca_signed_is_renewed(bundle: CertBundle) -> None:
    other = generate(service=SVC, namespace=NS, now=NOW)
    assert reason(CertBundle(other.ca_crt, bundle.tls_crt, bundle.tls_key)) == (
        "the certificate in tls.crt is not signed by the CA in ca.crt"
    )


def test_renewed_30_days_before_expiry(bundle: CertBundle) -> None:
    end = cert(bundle.tls_crt).not_valid_after_utc
    assert reason(bundle, now=end - datetime.timedelta(days=30, seconds=1)) is None
    found = reason(bundle, now=end - datetime.timedelta(days=30) + datetime.timedelta(seconds=1))
    assert found is not None and found.startswith("the certificate in tls.crt expires at")
    assert "less than 30 days from now" in found
    assert reason(bundle, now=end + datetime.timedelta(days=1)) is not None


def test_another_service_name_is_renewed(bundle: CertBundle) -> None:
    found = reason(bundle, service="other")
    assert found == (
        "the certificate in tls.crt does not name other, other.katalyst-system, "
        "other.katalyst-system.svc, other.katalyst-system.svc.cluster.local"
    )


def test_renewal_keeps_a_ca_that_lasts(bundle: CertBundle) -> None:
    later = NOW + datetime.timedelta(days=340)
    renewed = generate(service=SVC, namespace=NS, now=later, reuse_ca=bundle)
    assert renewed.ca_crt == bundle.ca_crt and renewed.ca_key == bundle.ca_key
    assert renewed.tls_crt != bundle.tls_crt
    assert reason(renewed, now=later) is None
    assert cert(renewed.tls_crt).not_valid_after_utc == later + datetime.timedelta(days=365)


def test_a_ca_near_its_end_or_without_its_key_is_replaced(bundle: CertBundle) -> None:
    near_end = NOW + datetime.timedelta(days=3650 - 380)
    renewed = generate(service=SVC, namespace=NS, now=near_end, reuse_ca=bundle)
    assert renewed.ca_crt != bundle.ca_crt
    assert reason(renewed, now=near_end) is None
    keyless = CertBundle(bundle.ca_crt, bundle.tls_crt, bundle.tls_key)
    assert generate(service=SVC, namespace=NS, now=NOW, reuse_ca=keyless).ca_crt != bundle.ca_crt
    foreign_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    mismatched = CertBundle(bundle.ca_crt, bundle.tls_crt, bundle.tls_key, foreign_key)
    assert generate(service=SVC, namespace=NS, now=NOW, reuse_ca=mismatched).ca_crt != bundle.ca_crt


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        generate(service=SVC, namespace=NS, now=datetime.datetime(2026, 1, 1))
