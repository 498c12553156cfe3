"""Secret mode: the controller issues the webhook's certificate and keeps it current.

Every replica, each pass (every ``period_s``, and at once when it starts leading):

1. reads the Secret ``--webhook-cert-secret`` in ``--namespace``
   (``kubernetes.io/tls``: ``ca.crt``, ``tls.crt``, ``tls.key``, and ``ca.key``, the
   CA's key, so that a renewal keeps the CA and the ``caBundle`` does not change);
2. when there is none, or :func:`~controllers.webhook.certs.renewal_reason` finds
   fault with it (less than 30 days left, a name of the service not covered, parts
   that do not fit), issues a new certificate and creates (POST) or updates (PUT,
   conditional on the resourceVersion read) the Secret. Replicas race for that
   write; the loser's 409 makes it read the Secret again and take the winner's;
3. serves the Secret's ``tls.crt``/``tls.key`` (:class:`ServingCert`);
4. if it leads, makes the pass of :class:`~controllers.webhook.configurations.ConfigurationKeeper`
   over the Mutating- and ValidatingWebhookConfiguration ``--webhook-configurations``:
   ``caBundle`` the union of the Secret's ``ca.crt`` and the CAs published before
   that are still valid (at most two), and ``failurePolicy`` switched to
   ``--webhook-failure-policy`` once the caBundle verifies the certificate served.

A renewal that cannot be written (the Secret is immutable, RBAC refuses the update,
a webhook refuses it) is counted in ``katalyst_webhook_certificate_errors_total`` and
logged at WARNING every pass it fails; the certificate the Secret holds is served
meanwhile (it has 30 days left when renewal starts), and the pass goes on.
A failed pass (the API server did not answer) is retried with backoff; the
certificate served meanwhile is the last one read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random
from collections.abc import Mapping
from typing import Any, Final

from controllers.apiserver import (
    ApiError,
    ApiWebhookClient,
    Obj,
    WatchSettings,
    backoff,
)
from controllers.webhook.certs import CertBundle, CertError, generate, renewal_reason
from controllers.webhook.configurations import ConfigurationKeeper
from controllers.webhook.tls import ServingCert, utc_from_wall
from katalyst.clock import Clock, first_of

__all__ = ["PERIOD_S", "SecretCertSource", "bundle_from_secret", "secret_body"]

log = logging.getLogger(__name__)

PERIOD_S: Final = 60.0
"""Seconds between passes: how soon a replica serves a Secret another one renewed."""
TLS_SECRET_TYPE: Final = "kubernetes.io/tls"  # noqa: S105 - a Secret type, not a password
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "katalyst-controller"}


def bundle_from_secret(secret: Mapping[str, Any] | None) -> CertBundle | None:
    """The PEM parts of a Secret (a part that is absent or not base64 is empty)."""
    if secret is None:
        return None
    data = secret.get("data")
    data = data if isinstance(data, Mapping) else {}

    def part(key: str) -> bytes:
        value = data.get(key)
        if not isinstance(value, str):
            return b""
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return b""

    return CertBundle(
        ca_crt=part("ca.crt"),
        tls_crt=part("tls.crt"),
        tls_key=part("tls.key"),
        ca_key=part("ca.key"),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def secret_body(
    bundle: CertBundle, *, name: str, namespace: str, current: Obj | None = None
) -> Obj:
    """The Secret to write: ``current`` (its metadata, resourceVersion and type kept:
    the type of a Secret is immutable) with new data, or a new ``kubernetes.io/tls``
    Secret."""
    data = {
        "ca.crt": _b64(bundle.ca_crt),
        "tls.crt": _b64(bundle.tls_crt),
        "tls.key": _b64(bundle.tls_key),
    }
    if bundle.ca_key:
        data["ca.key"] = _b64(bundle.ca_key)
    if current is not None:
        return dict(current, data=data)
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "type": TLS_SECRET_TYPE,
        "data": data,
    }


class SecretCertSource:
    """See the module's docstring."""

    def __init__(
        self,
        client: ApiWebhookClient,
        serving: ServingCert,
        *,
        keeper: ConfigurationKeeper,
        secret: str,
        service: str,
        clock: Clock,
        period_s: float = PERIOD_S,
        retry: WatchSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._serving = serving
        self.secret = secret
        self.namespace = client.namespace
        self.service = service
        self.keeper = keeper
        self._clock = clock
        self._period_s = period_s
        self._retry = retry or WatchSettings()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._wake = asyncio.Event()
        self.issued = 0
        """Certificates this replica issued and wrote."""
        self.write_failures = 0
        """Renewals this replica could not write (also in ``serving.errors``)."""

    @property
    def leading(self) -> bool:
        return self.keeper.leading

    def set_leading(self, leading: bool) -> None:
        """The leader elector's callback: a new leader publishes the CA at once."""
        self.keeper.set_leading(leading)
        if leading:
            self._wake.set()

    async def sync(self) -> None:
        """One pass (see the module's docstring); :class:`ApiError` if a request failed."""
        where = f"secret {self.namespace}/{self.secret}"
        current = await self._client.get_secret(self.secret)
        bundle = bundle_from_secret(current)
        now = utc_from_wall(self._clock.wall())
        reason = renewal_reason(bundle, service=self.service, namespace=self.namespace, now=now)
        if reason is not None:
            log.info("webhook: %s: %s; issuing a new certificate", where, reason)
            fresh = generate(
                service=self.service, namespace=self.namespace, now=now, reuse_ca=bundle
            )
            body = secret_body(fresh, name=self.secret, namespace=self.namespace, current=current)
            try:
                if current is None:
                    current = await self._client.create_secret(body)
                else:
                    current = await self._client.replace_secret(body)
                self.issued += 1
                log.info("webhook: %s: wrote a certificate valid for 1 year", where)
            except ApiError as exc:
                if not exc.conflict:
                    self._write_failed(where, exc)
                    if exc.transient:
                        raise  # retried with backoff, sooner than the next pass
                    if current is None:
                        return  # nothing to serve
                    return await self._serve(where, bundle)
                # Another replica wrote it first (409 AlreadyExists on create, Conflict
                # on update): serve theirs.
                log.info("webhook: %s: another replica wrote it first; reading theirs", where)
                current = await self._client.get_secret(self.secret)
            bundle = bundle_from_secret(current)
        if bundle is None:
            raise ApiError(0, f"{where}: gone while it was being written")
        await self._serve(where, bundle)

    def _write_failed(self, where: str, exc: ApiError) -> None:
        self.write_failures += 1
        self._serving.errors += 1
        log.warning(
            "webhook: %s: cannot write the new certificate (%s); serving the one the Secret "
            "holds, trying again next pass",
            where,
            exc,
        )

    async def _serve(self, where: str, bundle: CertBundle | None) -> None:
        """Serve ``bundle``'s pair; then, if leading, the configurations' pass."""
        if bundle is None:
            return
        try:
            self._serving.install(bundle.tls_crt, bundle.tls_key, what=where)
        except CertError as exc:
            log.warning("webhook: %s: cannot serve it (%s); trying again next pass", where, exc)
            return
        await self.keeper.sync(secret_ca=bundle.ca_crt or None)

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every ``period_s`` (and when leadership starts) until ``stop``."""
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.sync()
                failures = 0
                delay = self._period_s
            except ApiError as exc:
                failures += 1
                delay = min(self._period_s, backoff(failures, self._retry, self._rng))
                log.warning(
                    "webhook: secret %s/%s: pass failed (%s); retrying in %.1f s",
                    self.namespace,
                    self.secret,
                    exc,
                    delay,
                )
            await first_of(self._clock.sleep(delay), stop, self._wake)
