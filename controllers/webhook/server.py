"""The webhook's HTTPS server: a thin layer over :func:`controllers.webhook.admission.review`.

=================  ==========================================================================
``POST /mutate``   the MutatingWebhookConfiguration's path: validation, QoS defaults and the
                   reclaimed pods' JSON Patch
``POST /validate`` the ValidatingWebhookConfiguration's path: validation only, never a patch
``GET /healthz``   200 once a certificate is served (a probe over HTTPS)
=================  ==========================================================================

Every AdmissionReview, allowed or not, is answered 200 with the review's answer: the
API server reads ``response.allowed`` and ``response.status``, and turns any other
HTTP status into a webhook failure (``failurePolicy``). Only what is not an
AdmissionReview at all is refused at the HTTP level: a body larger than
``--webhook-max-body-bytes`` (413), a body that is not JSON (400), a body that does
not arrive within ``body_timeout_s`` (408), and a request that finds no free slot
(429, below), each with an AdmissionReview error as the body. Nothing a client sends
raises out of a handler.

Load: decoding a review takes about 34 times its size in memory, so at most
``--webhook-max-concurrency`` requests (default 32: 32 x 4 MiB x 34, about 4.3 GiB
in the worst case, in practice pods are a few KiB) are read and decided at once,
guarded by one ``asyncio.Semaphore``. A request that waits more than
``queue_wait_s`` (2 s) for a slot is answered **429 Too Many Requests** with
``Retry-After: 1``: kube-apiserver calls webhooks with client-go's REST client,
which retries a 429 (or a 5xx) that carries ``Retry-After`` within the call's
``timeoutSeconds``, so a short burst costs the pod creation a second, not a
failure; 429 also reads as shedding load (as the API server's own priority and
fairness answers), where 503 would look like a webhook that is down. Two seconds
leaves a retry room within the chart's ``timeoutSeconds: 5``. The body is read
(within ``body_timeout_s``, 10 s) only once a slot is held, so a slow sender holds
a slot for at most that long.

Metrics, on the controller's registry (served on ``--metrics-addr``):

======================================================================  ==========================
series                                                                  meaning
======================================================================  ==========================
``katalyst_webhook_requests_total{path,outcome}``                       requests; outcome:
                                                                        allowed, patched, denied,
                                                                        malformed (not a pod
                                                                        review), bad_request
                                                                        (not JSON), too_large,
                                                                        timeout (body too slow),
                                                                        overloaded (no free slot)
``katalyst_webhook_denials_total{path}``                                pods denied for a QoS rule
``katalyst_webhook_patches_total{path}``                                answers with a JSON Patch
``katalyst_webhook_patch_operations_total{path}``                       operations in them
``katalyst_webhook_request_duration_seconds{path}``                     time to answer a review
``katalyst_webhook_certificate_expiry_timestamp_seconds``               ``notAfter`` of the
                                                                        certificate served
``katalyst_webhook_certificate_loads_total``                            certificates installed
``katalyst_webhook_certificate_errors_total``                           pairs refused (the old
                                                                        one kept), renewals
                                                                        that could not be written
======================================================================  ==========================
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controllers.webhook.admission import (
    CODE_BAD_REVIEW,
    AdmissionConfig,
    AdmissionReviewDict,
    malformed,
    review,
)
from controllers.webhook.tls import ServingCert
from katalyst.clock import Clock, MonotonicClock
from katalyst.httpserve import serve

__all__ = [
    "BODY_TIMEOUT_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONCURRENCY",
    "QUEUE_WAIT_S",
    "CertCollector",
    "WebhookMetrics",
    "build_webhook_app",
    "start_https",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
"""4 MiB: a pod is at most 1.5 MiB in etcd, and an UPDATE review carries it twice."""
DEFAULT_MAX_CONCURRENCY: Final = 32
"""Requests read and decided at once (``--webhook-max-concurrency``)."""
QUEUE_WAIT_S: Final = 2.0
"""Seconds a request waits for a slot before it is answered 429."""
BODY_TIMEOUT_S: Final = 10.0
"""Seconds a request's body may take to arrive once it holds a slot (408 after)."""
RETRY_AFTER_S: Final = 1
MUTATE: Final = "/mutate"
VALIDATE: Final = "/validate"


class WebhookMetrics:
    """The request counters and the latency histogram, on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "katalyst_webhook_requests",
            "Admission requests by path and outcome (allowed, patched, denied, malformed, "
            "bad_request, too_large, timeout, overloaded)",
            ["path", "outcome"],
            registry=registry,
        )
        self.denials = Counter(
            "katalyst_webhook_denials",
            "Pods denied for breaking a QoS rule",
            ["path"],
            registry=registry,
        )
        self.patches = Counter(
            "katalyst_webhook_patches",
            "Admission answers that carried a JSON Patch",
            ["path"],
            registry=registry,
        )
        self.patch_operations = Counter(
            "katalyst_webhook_patch_operations",
            "JSON Patch operations sent",
            ["path"],
            registry=registry,
        )
        self.duration = Histogram(
            "katalyst_webhook_request_duration_seconds",
            "Time to decide one AdmissionReview (body read to answer)",
            ["path"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )


class CertCollector(Collector):
    """The certificate gauges, read from the :class:`ServingCert` at scrape time."""

    def __init__(self, serving: ServingCert) -> None:
        self._serving = serving

    def collect(self) -> Iterable[Metric]:
        current = self._serving.current
        if current is not None:
            yield GaugeMetricFamily(
                "katalyst_webhook_certificate_expiry_timestamp_seconds",
                "notAfter of the serving certificate (epoch seconds)",
                value=current.not_after.timestamp(),
            )
        yield CounterMetricFamily(
            "katalyst_webhook_certificate_loads",
            "Serving certificates installed",
            value=float(self._serving.loads),
        )
        yield CounterMetricFamily(
            "katalyst_webhook_certificate_errors",
            "Certificate pairs refused (unreadable, mismatched; the old one is kept) and "
            "renewals that could not be written",
            value=float(self._serving.errors),
        )


def _reply(answer: AdmissionReviewDict, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(answer), status=status, content_type="application/json")


def _outcome(answer: AdmissionReviewDict) -> str:
    response = answer["response"]
    status = response.get("status")
    if status is not None and status["code"] == CODE_BAD_REVIEW:
        return "malformed"
    if not response["allowed"]:
        return "denied"
    return "patched" if "patch" in response else "allowed"


def _who(body: Mapping[str, object]) -> tuple[str, str, str]:
    """``(uid, operation, username)`` of a review, for the log."""
    request = body.get("request")
    request = request if isinstance(request, Mapping) else {}
    user = request.get("userInfo")
    username = user.get("username") if isinstance(user, Mapping) else None
    return (str(request.get("uid", "")), str(request.get("operation", "")), str(username or "?"))


async def _acquire(slots: asyncio.Semaphore, *, clock: Clock, wait_s: float) -> bool:
    """Take a slot, waiting at most ``wait_s`` on ``clock``; False if none came free."""
    if not slots.locked():
        await slots.acquire()  # free: returns at once
        return True
    acquire = asyncio.ensure_future(slots.acquire())
    timer = asyncio.ensure_future(clock.sleep(wait_s))
    try:
        await asyncio.wait({acquire, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not acquire.done():
            acquire.cancel()
            await asyncio.wait({acquire})
    # Done with a result: the slot is ours, even if the timer fired in the same turn.
    return not acquire.cancelled() and acquire.exception() is None


def build_webhook_app(
    *,
    config: AdmissionConfig,
    metrics: WebhookMetrics,
    serving: ServingCert,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    queue_wait_s: float = QUEUE_WAIT_S,
    body_timeout_s: float = BODY_TIMEOUT_S,
    clock: Clock | None = None,
    holding: Callable[[], Awaitable[None]] | None = None,
) -> web.Application:
    """``/mutate``, ``/validate`` and ``/healthz``. ``holding`` (tests) is awaited by a
    review while it holds its slot, before its body is read."""
    clock = clock or MonotonicClock()
    slots = asyncio.Semaphore(max_concurrency)

    async def admit(request: web.Request, *, path: str, mutate: bool) -> web.Response:
        too_large = malformed(f"the body is larger than {max_body_bytes} bytes")
        if request.content_length is not None and request.content_length > max_body_bytes:
            metrics.requests.labels(path, "too_large").inc()
            return _reply(too_large, 413)
        if not await _acquire(slots, clock=clock, wait_s=queue_wait_s):
            metrics.requests.labels(path, "overloaded").inc()
            log.warning(
                "webhook %s: %d reviews in progress and none finished within %.1f s; answering 429",
                path,
                max_concurrency,
                queue_wait_s,
            )
            busy = malformed(
                f"the webhook is busy ({max_concurrency} reviews in progress); retry", code=429
            )
            reply = _reply(busy, 429)
            reply.headers["Retry-After"] = str(RETRY_AFTER_S)
            return reply
        try:
            if holding is not None:
                await holding()
            return await decide(request, path=path, mutate=mutate, too_large=too_large)
        finally:
            slots.release()

    async def read_body(request: web.Request) -> bytes | None:
        """The body, or None if it did not arrive within ``body_timeout_s``."""
        reading = asyncio.ensure_future(request.read())
        timer = asyncio.ensure_future(clock.sleep(body_timeout_s))
        try:
            await asyncio.wait({reading, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not reading.done():
                reading.cancel()
                await asyncio.wait({reading})
        if reading.cancelled():
            return None
        return reading.result()  # re-raises HTTPRequestEntityTooLarge

    async def decide(
        request: web.Request, *, path: str, mutate: bool, too_large: AdmissionReviewDict
    ) -> web.Response:
        started = time.perf_counter()
        try:
            raw = await read_body(request)
        except web.HTTPRequestEntityTooLarge:
            metrics.requests.labels(path, "too_large").inc()
            return _reply(too_large, 413)
        if raw is None:
            metrics.requests.labels(path, "timeout").inc()
            log.info("webhook %s: the body did not arrive within %.1f s", path, body_timeout_s)
            late = malformed(f"the body did not arrive within {body_timeout_s} s", code=408)
            return _reply(late, 408)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            metrics.requests.labels(path, "bad_request").inc()
            log.info("webhook %s: a body that is not JSON (%s)", path, exc)
            return _reply(malformed(f"the body is not JSON: {exc}"), 400)
        if isinstance(body, dict):
            answer = review(body, config=config, mutate=mutate)
        else:
            answer = malformed("the body must be a JSON object (an AdmissionReview)")
        outcome = _outcome(answer)
        metrics.requests.labels(path, outcome).inc()
        response = answer["response"]
        if outcome == "denied":
            metrics.denials.labels(path).inc()
            uid, operation, user = _who(body)
            log.info(
                "webhook %s: denied %s by %s (uid %s): %s",
                path,
                operation,
                user,
                uid,
                response.get("status", {}).get("message", ""),
            )
        elif outcome == "patched":
            metrics.patches.labels(path).inc()
            operations = orjson.loads(base64.b64decode(response.get("patch", "")))
            metrics.patch_operations.labels(path).inc(len(operations))
        metrics.duration.labels(path).observe(time.perf_counter() - started)
        return _reply(answer)

    async def mutate(request: web.Request) -> web.Response:
        return await admit(request, path=MUTATE, mutate=True)

    async def validate(request: web.Request) -> web.Response:
        return await admit(request, path=VALIDATE, mutate=False)

    async def healthz(_request: web.Request) -> web.Response:
        if not serving.ready:
            return web.Response(status=503, text="no certificate yet\n")
        return web.Response(text="ok\n")

    # One byte over the limit is what aiohttp refuses (its check is `size >= max`).
    app = web.Application(client_max_size=max_body_bytes + 1)
    app.router.add_post(MUTATE, mutate)
    app.router.add_post(VALIDATE, validate)
    app.router.add_get("/healthz", healthz)
    return app


async def start_https(
    app: web.Application, addr: str, context: ssl.SSLContext
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` over TLS on ``host:port`` (port 0: any free one); the runner (its
    ``cleanup`` stops it) and the address bound. ``OSError`` if it cannot bind."""
    runner, url_addr = await serve(app, addr, ssl_context=context)
    log.info("webhook on https://%s/mutate and /validate", url_addr)
    return runner, url_addr
