"""The webhook's certificates: made, parsed and judged; no I/O.

kube-apiserver calls an admission webhook over HTTPS only, and verifies the serving
certificate against the ``caBundle`` of the webhook configuration, for the name it
dials: ``<service>.<namespace>.svc`` (``ServiceReference``; the API server never uses
the cluster domain, but a port-forward or a mesh may, so every form is covered).

:func:`generate` makes a self-signed CA (10 years) and a serving certificate signed
by it (1 year); :func:`renewal_reason` says whether a bundle must be replaced (a part
missing or unreadable, a key that is not the certificate's, a certificate the CA did
not sign, a name not covered, less than :data:`RENEW_BEFORE` left). Keys are ECDSA
P-256 (kube-apiserver's Go TLS client takes them; they are made in microseconds).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_VALIDITY",
    "RENEW_BEFORE",
    "SERVING_VALIDITY",
    "CertBundle",
    "CertError",
    "ServingPair",
    "dns_names",
    "generate",
    "parse_pair",
    "renewal_reason",
]

CA_VALIDITY: Final = datetime.timedelta(days=3650)
SERVING_VALIDITY: Final = datetime.timedelta(days=365)
RENEW_BEFORE: Final = datetime.timedelta(days=30)
"""A certificate with less than this left is replaced (cert-manager's default is a
third of the lifetime; 30 days leaves a month of alerts before anything breaks)."""
BACKDATE: Final = datetime.timedelta(hours=1)
"""``notBefore`` is this far in the past, so a replica or an API server whose clock
lags a little does not see a certificate that is not valid yet."""


class CertError(ValueError):
    """A certificate or key is unreadable or does not fit; the message says which."""


def dns_names(service: str, namespace: str) -> tuple[str, ...]:
    """The names the serving certificate must cover, shortest first."""
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )


@dataclass(frozen=True, slots=True)
class CertBundle:
    """PEM bytes of the three parts (and the CA's key, when this replica or another
    made the CA: kept so that the serving certificate is renewed under the same CA
    and the webhook configurations' ``caBundle`` need not change)."""

    ca_crt: bytes
    tls_crt: bytes
    tls_key: bytes
    ca_key: bytes = b""


@dataclass(frozen=True, slots=True)
class ServingPair:
    """A parsed serving certificate (the first of the chain) and its key, checked to
    belong together."""

    cert: x509.Certificate
    chain_pem: bytes
    key_pem: bytes

    @property
    def not_after(self) -> datetime.datetime:
        return self.cert.not_valid_after_utc

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def _utc(now: datetime.datetime) -> datetime.datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_ca(
    service: str, namespace: str, now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{service}.{namespace} webhook CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signatures (ECDSA), and for a CA also certificate and CRL signing."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _make_serving(
    ca: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    names: Sequence[str],
    now: datetime.datetime,
    ips: Sequence[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    not_after = min(now + SERVING_VALIDITY, ca.not_valid_after_utc)
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    san.extend(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-2])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def generate(
    *,
    service: str,
    namespace: str,
    now: datetime.datetime,
    reuse_ca: CertBundle | None = None,
    ips: Sequence[str] = (),
) -> CertBundle:
    """A serving certificate for ``service`` in ``namespace`` (every form of its DNS
    name, and ``ips``), valid from ``now`` for :data:`SERVING_VALIDITY`, signed by the
    CA of ``reuse_ca`` when that one has its key and stays valid for longer than
    :data:`RENEW_BEFORE` past the new certificate's end, else by a new CA."""
    now = _utc(now)
    names = dns_names(service, namespace)
    ca_pair = _reusable_ca(reuse_ca) if reuse_ca is not None else None
    issuer_key: CertificateIssuerPrivateKeyTypes
    if ca_pair is None or reuse_ca is None or not _ca_lasts(ca_pair[0], now):
        ca, new_ca_key = _make_ca(service, namespace, now)
        issuer_key = new_ca_key
        ca_key_pem = _key_pem(new_ca_key)
    else:
        ca, issuer_key = ca_pair
        ca_key_pem = reuse_ca.ca_key
    cert, key = _make_serving(ca, issuer_key, names, now, ips)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    return CertBundle(
        ca_crt=ca_pem,
        tls_crt=cert.public_bytes(serialization.Encoding.PEM),
        tls_key=_key_pem(key),
        ca_key=ca_key_pem,
    )


def _reusable_ca(bundle: CertBundle) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The CA of ``bundle`` and its key, when both are there and belong together."""
    if not bundle.ca_key:
        return None
    try:
        ca = x509.load_pem_x509_certificate(bundle.ca_crt)
        key = serialization.load_pem_private_key(bundle.ca_key, password=None)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_key(ca, key):
        return None
    return ca, key


def _ca_lasts(ca: x509.Certificate, now: datetime.datetime) -> bool:
    """Whether a serving certificate made now would expire well before the CA."""
    return ca.not_valid_after_utc - now >= SERVING_VALIDITY + RENEW_BEFORE


def _same_key(cert: x509.Certificate, key: object) -> bool:
    public = getattr(key, "public_key", None)
    if public is None:
        return False
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        cert.public_key().public_bytes(serialization.Encoding.DER, fmt)
        == public().public_bytes(serialization.Encoding.DER, fmt)
    )


def parse_pair(chain_pem: bytes, key_pem: bytes, *, what: str = "tls.crt/tls.key") -> ServingPair:
    """``tls.crt`` (a PEM chain, the serving certificate first) and ``tls.key``, checked
    to be readable and to belong together; :class:`CertError` naming the part."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertError(f"{what}: tls.crt is not a PEM certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"{what}: tls.key is not an unencrypted PEM private key ({exc})") from None
    if not _same_key(certs[0], key):
        raise CertError(f"{what}: tls.key is not the key of the certificate in tls.crt")
    return ServingPair(cert=certs[0], chain_pem=chain_pem, key_pem=key_pem)


def renewal_reason(
    bundle: CertBundle | None,
    *,
    service: str,
    namespace: str,
    now: datetime.datetime,
    renew_before: datetime.timedelta = RENEW_BEFORE,
) -> str | None:
    """Why ``bundle`` must be replaced, or None when it may be served as it is."""
    if bundle is None:
        return "there is none"
    now = _utc(now)
    for part, value in (("ca.crt", bundle.ca_crt), ("tls.crt", bundle.tls_crt)):
        if not value:
            return f"{part} is missing"
    try:
        pair = parse_pair(bundle.tls_crt, bundle.tls_key)
    except CertError as exc:
        return str(exc)
    try:
        ca = x509.load_pem_x509_certificate(bundle.ca_crt)
    except ValueError:
        return "ca.crt is not a PEM certificate"
    try:
        pair.cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "the certificate in tls.crt is not signed by the CA in ca.crt"
    for name, cert in (("tls.crt", pair.cert), ("ca.crt", ca)):
        left = cert.not_valid_after_utc - now
        if left < renew_before:
            return (
                f"the certificate in {name} expires at {cert.not_valid_after_utc.isoformat()}, "
                f"less than {renew_before.days} days from now"
            )
    try:
        san = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        covered = set(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        covered = set()
    missing = [n for n in dns_names(service, namespace) if n not in covered]
    if missing:
        return f"the certificate in tls.crt does not name {', '.join(missing)}"
    return None
