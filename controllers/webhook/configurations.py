"""The webhook configurations the leader keeps: ``caBundle`` and ``failurePolicy``.

The chart installs the Mutating- and ValidatingWebhookConfiguration with
``failurePolicy: Ignore`` and, in secret mode, no ``caBundle``: until a replica serves a
certificate the API server can verify, a call to the webhook fails, and with ``Fail``
every pod creation in the selected namespaces would fail with it (a fresh install would
block the cluster until the controller is up). The leader switches each webhook to
``--webhook-failure-policy`` (default ``Fail``) only once that webhook's ``caBundle``
verifies the certificate this replica serves, for the name the API server dials
(``<service>.<namespace>.svc`` of ``clientConfig.service``, or the host of
``clientConfig.url``) at this moment; while it does not, ``failurePolicy`` is left as
it is (a webhook already on ``Fail`` stays there: this guards the switch, it does not
undo an operator's choice).

The ``caBundle`` (secret mode only: in cert-dir mode cert-manager's CA injector owns
it) is the union of the CAs in the Secret's ``ca.crt`` and those already published
that are still valid, newest first (``notBefore``), duplicates removed by SHA-256
fingerprint, at most :data:`MAX_CAS` (more only if the Secret itself holds more).
So when the CA changes, certificates signed by the old CA and by the new one both
verify while the replicas roll over to the new pair (each serves the Secret's pair
from its next pass, at most a minute later). An old CA leaves the bundle when it
expires, or when two newer CAs must be published: the one in the Secret and the one a
previous pass published. By then the old CA has been out of the Secret for at least
one completed pass of every replica (it was replaced before that previous pass
published its successor), so no replica still serves a certificate it signed.

:func:`plan` is pure: a configuration in, the configuration to write (or None) out.
:class:`ConfigurationKeeper` does the I/O: GET, a conditional PUT (one retry on a 409,
the change re-planned on the object read again), at most one write per configuration
per pass, a configuration that does not exist logged (once until it appears).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import ipaddress
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from controllers.apiserver import (
    MUTATING_WEBHOOK_CONFIGURATIONS,
    VALIDATING_WEBHOOK_CONFIGURATIONS,
    ApiError,
    ApiWebhookClient,
    Obj,
    WatchSettings,
    backoff,
)
from controllers.webhook.certs import ServingPair
from controllers.webhook.tls import ServingCert, utc_from_wall
from katalyst.clock import Clock, first_of

__all__ = [
    "FAILURE_POLICIES",
    "MAX_CAS",
    "ConfigurationKeeper",
    "FailurePolicy",
    "KeeperPass",
    "dial_name",
    "merge_ca_bundle",
    "plan",
    "verifies",
]

log = logging.getLogger(__name__)

FailurePolicy = Literal["Fail", "Ignore"]
FAILURE_POLICIES: Final[tuple[FailurePolicy, ...]] = ("Fail", "Ignore")
MAX_CAS: Final = 2
"""CAs kept in a ``caBundle``: the Secret's and the one before it."""
PERIOD_S: Final = 60.0
"""Seconds between passes in cert-dir mode (secret mode runs one per Secret pass)."""


# --- pure -------------------------------------------------------------------------------


def _certs(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def _decode(ca_bundle: object) -> bytes:
    if not isinstance(ca_bundle, str) or not ca_bundle:
        return b""
    try:
        return base64.b64decode(ca_bundle, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _valid_at(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def merge_ca_bundle(published: bytes, secret_ca: bytes, *, now: datetime.datetime) -> bytes:
    """The ``caBundle`` (PEM) to publish: the Secret's CAs and the published ones still
    valid at ``now``, newest first, no duplicates, at most :data:`MAX_CAS` (the
    Secret's CAs are always kept). ``published`` may be empty or unreadable."""
    keep: dict[bytes, x509.Certificate] = {}
    for cert in _certs(secret_ca):
        keep.setdefault(_fingerprint(cert), cert)
    older = [
        cert
        for cert in _certs(published)
        if _valid_at(cert, now) and _fingerprint(cert) not in keep
    ]
    older.sort(key=lambda c: c.not_valid_before_utc, reverse=True)
    for cert in older:
        if len(keep) >= MAX_CAS:
            break
        keep.setdefault(_fingerprint(cert), cert)
    ordered = sorted(keep.values(), key=lambda c: c.not_valid_before_utc, reverse=True)
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in ordered)


def dial_name(hook: Mapping[str, Any]) -> str | None:
    """The name the API server verifies the webhook's certificate for: a
    ServiceReference is dialled as ``<name>.<namespace>.svc``, a URL by its host."""
    client = hook.get("clientConfig")
    if not isinstance(client, Mapping):
        return None
    service = client.get("service")
    if isinstance(service, Mapping):
        name, namespace = service.get("name"), service.get("namespace")
        if isinstance(name, str) and isinstance(namespace, str) and name and namespace:
            return f"{name}.{namespace}.svc"
        return None
    url = client.get("url")
    if isinstance(url, str):
        return urlsplit(url).hostname or None
    return None


def verifies(
    ca_bundle: bytes, pair: ServingPair, *, name: str, now: datetime.datetime
) -> str | None:
    """None when ``ca_bundle`` (PEM) verifies ``pair`` for ``name`` at ``now`` as a TLS
    client does (a chain to one of its CAs, every certificate valid, the name in the
    subjectAltName); else why not. The check is the web PKI profile of
    ``cryptography``, stricter than Go's in places (no SHA-1, RSA of 2048 bits at
    least): a certificate it refuses keeps ``failurePolicy`` as it is, never the
    reverse."""
    roots = _certs(ca_bundle)
    if not roots:
        return "caBundle holds no certificate"
    chain = _certs(pair.chain_pem)
    subject: x509.DNSName | x509.IPAddress
    try:
        subject = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = x509.DNSName(name)
    try:
        verifier = PolicyBuilder().store(Store(roots)).time(now).build_server_verifier(subject)
        verifier.verify(pair.cert, chain[1:])
    except (VerificationError, ValueError) as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class Planned:
    """What :func:`plan` decided for one configuration."""

    body: Obj | None
    """The configuration to write; None: nothing to change."""
    ca_bundle: bool
    """Whether a ``caBundle`` changes."""
    failure_policy: bool
    """Whether a ``failurePolicy`` changes."""
    unverified: tuple[str, ...]
    """``webhook-name: why`` for each webhook whose caBundle does not verify."""


def plan(
    obj: Mapping[str, Any],
    *,
    secret_ca: bytes | None,
    serving: ServingPair | None,
    failure_policy: FailurePolicy,
    now: datetime.datetime,
) -> Planned:
    """The configuration with each webhook's ``caBundle`` merged with ``secret_ca``
    (None: left as it is) and its ``failurePolicy`` set to ``failure_policy`` where the
    resulting ``caBundle`` verifies ``serving`` for the name the API server dials."""
    webhooks = obj.get("webhooks")
    if not isinstance(webhooks, list):
        return Planned(None, ca_bundle=False, failure_policy=False, unverified=())
    ca_changed = policy_changed = False
    unverified: list[str] = []
    hooks: list[Any] = []
    for hook in webhooks:
        if not isinstance(hook, dict):
            hooks.append(hook)
            continue
        new = dict(hook)
        client = hook.get("clientConfig")
        client = dict(client) if isinstance(client, Mapping) else {}
        published = _decode(client.get("caBundle"))
        bundle = published
        if secret_ca is not None:
            bundle = merge_ca_bundle(published, secret_ca, now=now)
            encoded = base64.b64encode(bundle).decode("ascii")
            if client.get("caBundle") != encoded:
                client["caBundle"] = encoded
                new["clientConfig"] = client
                ca_changed = True
        why: str | None = "no certificate served yet"
        name = dial_name(hook)
        if serving is not None:
            why = "no service or url" if name is None else None
            if name is not None:
                why = verifies(bundle, serving, name=name, now=now)
        if why is None:
            if hook.get("failurePolicy") != failure_policy:
                new["failurePolicy"] = failure_policy
                policy_changed = True
        else:
            unverified.append(f"{hook.get('name', '?')}: {why}")
        hooks.append(new)
    body = dict(obj, webhooks=hooks) if ca_changed or policy_changed else None
    return Planned(
        body, ca_bundle=ca_changed, failure_policy=policy_changed, unverified=tuple(unverified)
    )


# --- effect -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeeperPass:
    """What one :meth:`ConfigurationKeeper.sync` wrote."""

    writes: int
    missing: tuple[str, ...]


class ConfigurationKeeper:
    """The leader's writes to the two configurations named ``name`` (see the module's
    docstring). :meth:`sync` is one pass; :meth:`run` is the cert-dir mode's loop
    (a pass every ``period_s``, at once when leadership starts or the certificate
    served changes)."""

    def __init__(
        self,
        client: ApiWebhookClient,
        serving: ServingCert,
        *,
        name: str,
        failure_policy: FailurePolicy,
        clock: Clock,
        period_s: float = PERIOD_S,
        retry: WatchSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._serving = serving
        self.name = name
        self.failure_policy: FailurePolicy = failure_policy
        self._clock = clock
        self._period_s = period_s
        self._retry = retry or WatchSettings()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._leading = False
        self._wake = asyncio.Event()
        self._missing: set[str] = set()
        self._unverified: dict[str, tuple[str, ...]] = {}
        self.ca_bundle_writes = 0
        """Configurations whose caBundle this replica wrote."""
        self.failure_policy_writes = 0
        """Configurations whose failurePolicy this replica wrote."""

    @property
    def leading(self) -> bool:
        return self._leading

    def set_leading(self, leading: bool) -> None:
        """The leader elector's callback: a new leader makes a pass at once."""
        self._leading = leading
        if leading:
            self._wake.set()

    def poke(self) -> None:
        """Make a pass now (the certificate served changed)."""
        self._wake.set()

    async def sync(self, *, secret_ca: bytes | None = None) -> None:
        """If leading: one pass over both configurations, ``caBundle`` merged with
        ``secret_ca`` when given. :class:`ApiError` if a request failed."""
        for resource in (MUTATING_WEBHOOK_CONFIGURATIONS, VALIDATING_WEBHOOK_CONFIGURATIONS):
            if not self._leading:
                return  # stepped down meanwhile: the new leader does it
            what = f"{resource.kind} {self.name}"
            outcome: list[Planned] = []

            def change(obj: Obj, outcome: list[Planned] = outcome) -> Obj | None:
                planned = plan(
                    obj,
                    secret_ca=secret_ca,
                    serving=self._serving.current,
                    failure_policy=self.failure_policy,
                    now=utc_from_wall(self._clock.wall()),
                )
                outcome[:] = [planned]
                return planned.body

            written = await self._client.update_configuration(resource, self.name, change)
            if written is None:
                if what not in self._missing:
                    self._missing.add(what)
                    log.warning("webhook: %s does not exist; it is kept once it does", what)
                continue
            self._missing.discard(what)
            planned = outcome[0] if outcome else None
            if planned is None:
                continue
            self._report(what, planned)
            if written and planned.ca_bundle:
                self.ca_bundle_writes += 1
                log.info("webhook: %s: caBundle set to the Secret's CA (and the one before)", what)
            if written and planned.failure_policy:
                self.failure_policy_writes += 1
                log.info(
                    "webhook: %s: failurePolicy set to %s (its caBundle verifies the "
                    "certificate served)",
                    what,
                    self.failure_policy,
                )

    def _report(self, what: str, planned: Planned) -> None:
        """Say once (per change of reason) why a webhook's failurePolicy is left alone."""
        if planned.unverified == self._unverified.get(what, ()):
            return
        self._unverified[what] = planned.unverified
        if planned.unverified:
            log.warning(
                "webhook: %s: failurePolicy left as it is until the caBundle verifies the "
                "certificate served (%s)",
                what,
                "; ".join(planned.unverified),
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Cert-dir mode: a pass (when leading) every ``period_s`` and on a wake-up,
        until ``stop``; a failed pass is retried with backoff."""
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            delay = self._period_s
            if self._leading:
                try:
                    await self.sync()
                    failures = 0
                except ApiError as exc:
                    failures += 1
                    delay = min(self._period_s, backoff(failures, self._retry, self._rng))
                    log.warning(
                        "webhook: configurations %s: pass failed (%s); retrying in %.1f s",
                        self.name,
                        exc,
                        delay,
                    )
            await first_of(self._clock.sleep(delay), stop, self._wake)
