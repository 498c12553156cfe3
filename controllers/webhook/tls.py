"""The webhook's TLS: a fresh ``ssl.SSLContext`` per certificate, chosen per handshake.

:class:`ServingCert` owns the serving context the HTTPS server listens with (TLS 1.2
or later, as kube-apiserver's client negotiates). It holds no certificate itself: its
``sni_callback`` runs early in every handshake (OpenSSL calls it whether or not the
client sent a server name) and hands the connection the context of the pair installed
last (``ssl_object.context = current``; OpenSSL's ``SSL_set_SSL_CTX`` takes that
context's certificate and key). :meth:`ServingCert.install` checks a pair (readable
PEM, the key is the certificate's) and loads it into a new context; only if OpenSSL
takes it does that context become the current one: handshakes from then on present
the new certificate, connections already open keep theirs, and a pair that fails any
check is refused with a :class:`~controllers.webhook.certs.CertError` while the old
one stays. A new context per pair, rather than ``load_cert_chain`` again on one live
context: OpenSSL keeps one certificate per key type in a context, so loading an ECDSA
pair into a context that held an RSA one would serve both (the old RSA one to any
client that prefers RSA). ``load_cert_chain`` reads files, so the checked bytes are
written to a private directory first, and what is loaded is exactly what was
checked, whatever happens on disk meanwhile.

:class:`CertDirSource` serves ``tls.crt`` and ``tls.key`` from a directory (a Secret
volume that cert-manager or Helm fills) and polls them: the kubelet replaces a
Secret volume's files by swapping a ``..data`` symlink, which changes the files'
inode and mtime as seen through the links. A half-written or mismatched pair is
logged once and the old certificate kept; the next change is tried again.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from controllers.webhook.certs import CertError, ServingPair, parse_pair
from katalyst.clock import Clock, first_of

__all__ = ["POLL_S", "CertDirSource", "ServingCert", "server_context"]

log = logging.getLogger(__name__)

POLL_S: Final = 5.0
"""Seconds between looks at the mounted files (the kubelet itself syncs Secret
volumes only every minute or so)."""


def server_context() -> ssl.SSLContext:
    """A server context without a certificate yet: TLS 1.2+, no compression."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    return context


class ServingCert:
    """The live context and the certificate it presents (None until the first)."""

    def __init__(self, *, on_change: Callable[[ServingPair], None] | None = None) -> None:
        self.context = server_context()
        """The context the server listens with; it picks :attr:`pair_context`."""
        self.context.sni_callback = self._select
        self.pair_context: ssl.SSLContext | None = None
        """The context of the pair served (None until the first)."""
        self.current: ServingPair | None = None
        self.loads = 0
        """Certificates installed."""
        self.errors = 0
        """Pairs refused (unreadable, mismatched, refused by OpenSSL)."""
        self._on_change = on_change
        self._dir = tempfile.TemporaryDirectory(prefix="katalyst-webhook-tls-")

    def on_change(self, callback: Callable[[ServingPair], None] | None) -> None:
        """Call ``callback`` with each pair installed from now on."""
        self._on_change = callback

    def _select(self, ssl_object: ssl.SSLObject, _server_name: str | None, _ctx: object) -> None:
        # Runs in the handshake; returning None lets it go on. Before the first pair,
        # the listening context (no certificate) fails the handshake, as it should.
        current = self.pair_context
        if current is not None:
            ssl_object.context = current

    def close(self) -> None:
        """Remove the private copies of the key."""
        self._dir.cleanup()

    @property
    def ready(self) -> bool:
        return self.current is not None

    def install(self, chain_pem: bytes, key_pem: bytes, *, what: str) -> bool:
        """Serve this pair from the next handshake on; False if it is the one served.
        :class:`CertError` (and the old pair kept) if it is not a usable pair."""
        try:
            return self._install(chain_pem, key_pem, what=what)
        except CertError:
            self.errors += 1
            raise

    def _install(self, chain_pem: bytes, key_pem: bytes, *, what: str) -> bool:
        pair = parse_pair(chain_pem, key_pem, what=what)
        if (
            self.current is not None
            and self.current.chain_pem == chain_pem
            and self.current.key_pem == key_pem
        ):
            return False
        base = Path(self._dir.name)
        crt, key = base / "tls.crt", base / "tls.key"
        # The key is written readable by this user only.
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_pem)
        with crt.open("wb") as out:
            out.write(chain_pem)
        fresh = server_context()
        try:
            fresh.load_cert_chain(crt, key)
        except (ssl.SSLError, OSError) as exc:
            raise CertError(f"{what}: OpenSSL refuses the pair: {exc}") from None
        self.pair_context = fresh
        self.current = pair
        self.loads += 1
        log.info(
            "webhook: serving certificate %s from %s (SHA-256 %s, valid until %s)",
            pair.cert.subject.rfc4514_string(),
            what,
            pair.fingerprint[:16],
            pair.not_after.isoformat(),
        )
        if self._on_change is not None:
            self._on_change(pair)
        return True


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()  # follows the ..data symlinks of a Secret volume
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class CertDirSource:
    """``tls.crt`` and ``tls.key`` in ``directory``, loaded when they change."""

    def __init__(
        self, serving: ServingCert, directory: Path, *, clock: Clock, poll_s: float = POLL_S
    ) -> None:
        self._serving = serving
        self.directory = directory
        self._clock = clock
        self._poll_s = poll_s
        self._seen: object = None

    def load(self) -> bool:
        """Load the files now, whatever their state; :class:`CertError` (the old
        certificate kept) when they are missing, unreadable or do not fit."""
        crt, key = self.directory / "tls.crt", self.directory / "tls.key"
        self._seen = (_signature(crt), _signature(key))
        what = str(self.directory)
        try:
            chain_pem, key_pem = crt.read_bytes(), key.read_bytes()
        except OSError as exc:
            self._serving.errors += 1
            raise CertError(f"{what}: {exc.strerror}: {exc.filename}") from None
        return self._serving.install(chain_pem, key_pem, what=what)

    def check(self) -> bool:
        """Look at the files once; load them when they changed. True when a new
        certificate is served. A pair that cannot be served is logged (once per
        change) and the old one kept."""
        crt, key = self.directory / "tls.crt", self.directory / "tls.key"
        if (_signature(crt), _signature(key)) == self._seen:
            return False
        try:
            return self.load()
        except CertError as exc:
            self._refused(str(self.directory), exc)
        return False

    def _refused(self, what: str, exc: Exception) -> None:
        kept = "keeping the certificate served" if self._serving.ready else "serving none"
        log.warning("webhook: cannot load %s/tls.crt and tls.key (%s); %s", what, exc, kept)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``poll_s`` until ``stop`` is set."""
        while not stop.is_set():
            await first_of(self._clock.sleep(self._poll_s), stop)
            if not stop.is_set():
                self.check()


def not_after_epoch(pair: ServingPair) -> float:
    """``notAfter`` in seconds since the epoch (the expiry gauge)."""
    return pair.not_after.timestamp()


def utc_from_wall(seconds: float) -> datetime.datetime:
    """A :meth:`Clock.wall` reading as an aware datetime."""
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
