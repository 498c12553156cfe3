"""The admission webhook over real HTTPS on 127.0.0.1, the client verifying the CA and
the service name as kube-apiserver does; its two certificate sources (a mounted
directory swapped as the kubelet swaps a Secret volume, and a Secret the controller
manages against the fake API server); and the controller serving it end to end.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from controllers.apiserver import ApiWebhookClient, Kube, Obj, connect
from controllers.app import run
from controllers.config import ControllerConfig
from controllers.webhook.admission import AdmissionConfig
from controllers.webhook.certs import CertBundle, generate
from controllers.webhook.secret import SecretCertSource, bundle_from_secret
from controllers.webhook.server import CertCollector, WebhookMetrics, build_webhook_app, start_https
from controllers.webhook.tls import CertDirSource, ServingCert
from katalyst.clock import FakeClock
from katalyst.qos import QOS_LEVEL_ANNOTATION
from tests.support.apiserver import (
    MUTATING_WEBHOOK_CONFIGURATIONS,
    SECRETS,
    VALIDATING_WEBHOOK_CONFIGURATIONS,
    FakeApiServer,
)
from tests.support.wait import eventually

SVC, NS = "katalyst-webhook", "katalyst-system"
HOST = f"{SVC}.{NS}.svc"
"""The name kube-apiserver dials for a ServiceReference, and verifies."""
SECRET = "katalyst-webhook-cert"  # noqa: S105 - a Secret's name (the chart's)
CONFIGS = "katalyst-webhook"
LIMIT = 64 * 1024
MEM = "katalyst.kubewharf.io/memory_enhancement"


def now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


# --- AdmissionReviews as kube-apiserver sends them ----------------------------------------


def pod(annotations: Mapping[str, str], resources: Mapping[str, Any]) -> Obj:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "web-7d4b9c-",
            "namespace": "team",
            "creationTimestamp": None,
            "labels": {"app": "web"},
            "annotations": dict(annotations),
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.27",
                    "resources": dict(resources),
                    "terminationMessagePath": "/dev/termination-log",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
        },
        "status": {},
    }


def admission_review(
    obj: Obj, *, uid: str, operation: str = "CREATE", old: Obj | None = None
) -> Obj:
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    options = {
        "kind": "CreateOptions" if operation == "CREATE" else "UpdateOptions",
        "apiVersion": "meta.k8s.io/v1",
    }
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": "" if operation == "CREATE" else "web-7d4b9c-x2x7k",
            "namespace": "team",
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "5b1f3e0a-2c1e-4a8e-9e57-0f0b3f0c8c11",
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "object": obj,
            "oldObject": old,
            "dryRun": False,
            "options": options,
        },
    }


RECLAIMED = {QOS_LEVEL_ANNOTATION: "reclaimed_cores"}
BAD_ANNOTATION = {MEM: "{numa_binding: true"}


# --- a webhook on a mounted directory ------------------------------------------------------


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode("ascii"))


def write_secret_volume(directory: Path, bundle: CertBundle, generation: int) -> None:
    """As the kubelet writes a Secret volume: the files in a timestamped directory,
    ``..data`` an atomically swapped symlink to it, the names links through it."""
    data = directory / f"..2026_05_01_{generation:02d}"
    data.mkdir()
    (data / "tls.crt").write_bytes(bundle.tls_crt)
    (data / "tls.key").write_bytes(bundle.tls_key)
    (data / "ca.crt").write_bytes(bundle.ca_crt)
    link = directory / "..data_tmp"
    link.symlink_to(data.name)
    link.replace(directory / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


@dataclass
class Webhook:
    url: str
    ca: bytes
    serving: ServingCert
    source: CertDirSource
    registry: CollectorRegistry

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture(scope="module")
def bundle() -> CertBundle:
    return generate(service=SVC, namespace=NS, now=now())


@pytest.fixture
async def webhook(tmp_path: Path, bundle: CertBundle) -> AsyncIterator[Webhook]:
    directory = tmp_path / "certs"
    directory.mkdir()
    write_secret_volume(directory, bundle, 1)
    serving = ServingCert()
    source = CertDirSource(serving, directory, clock=FakeClock())
    assert source.load()
    registry = CollectorRegistry()
    registry.register(CertCollector(serving))
    app = build_webhook_app(
        config=AdmissionConfig(),
        metrics=WebhookMetrics(registry),
        serving=serving,
        max_body_bytes=LIMIT,
    )
    runner, bound = await start_https(app, "127.0.0.1:0", serving.context)
    try:
        yield Webhook(f"https://{bound}", bundle.ca_crt, serving, source, registry)
    finally:
        await runner.cleanup()
        serving.close()


async def post(
    hook: Webhook, path: str, body: bytes | Obj, *, ca: bytes | None = None
) -> tuple[int, Obj]:
    return await post_to(hook.url + path, body, ca=ca or hook.ca)


async def post_to(url: str, body: bytes | Obj, *, ca: bytes) -> tuple[int, Obj]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            data=data,
            headers={"Content-Type": "application/json"},
            ssl=client_context(ca),
            server_hostname=HOST,
        ) as resp,
    ):
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def peer_certificate(url: str, ca: bytes) -> x509.Certificate:
    """The certificate a new handshake presents (verified against ``ca`` for HOST)."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(
        host, int(port), ssl=client_context(ca), server_hostname=HOST
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


@pytest.mark.parametrize("path", ["/mutate", "/validate"])
async def test_an_ordinary_pod_is_allowed(webhook: Webhook, path: str) -> None:
    body = admission_review(pod({}, {"requests": {"cpu": "500m"}}), uid="uid-allowed")
    status, answer = await post(webhook, path, body)
    assert status == 200
    assert answer == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "uid-allowed", "allowed": True},
    }
    assert webhook.sample("katalyst_webhook_requests_total", path=path, outcome="allowed") == 1


@pytest.mark.parametrize("path", ["/mutate", "/validate"])
async def test_a_malformed_annotation_is_denied_and_logged(
    webhook: Webhook, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="controllers.webhook.server")
    body = admission_review(pod(BAD_ANNOTATION, {}), uid="uid-denied")
    status, answer = await post(webhook, path, body)
    assert status == 200
    response = answer["response"]
    assert response["uid"] == "uid-denied" and response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"].startswith("pod team/web-7d4b9c-<generated>: ")
    assert f'annotation "{MEM}"' in response["status"]["message"]
    denials = [r for r in caplog.records if "denied" in r.getMessage()]
    assert len(denials) == 1
    assert "replicaset-controller" in denials[0].getMessage()
    assert webhook.sample("katalyst_webhook_denials_total", path=path) == 1
    assert webhook.sample("katalyst_webhook_requests_total", path=path, outcome="denied") == 1


async def test_a_reclaimed_pod_is_patched_on_mutate_only(webhook: Webhook) -> None:
    body = admission_review(
        pod(RECLAIMED, {"requests": {"cpu": "1500m", "memory": "1Gi"}}), uid="uid-mutated"
    )
    status, answer = await post(webhook, "/mutate", body)
    assert status == 200
    response = answer["response"]
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    base = "/spec/containers/0/resources"
    assert ops == [
        {"op": "remove", "path": f"{base}/requests/cpu"},
        {"op": "remove", "path": f"{base}/requests/memory"},
        {
            "op": "add",
            "path": f"{base}/requests/resource.katalyst.kubewharf.io~1reclaimed_millicpu",
            "value": "1500",
        },
        {
            "op": "add",
            "path": f"{base}/requests/resource.katalyst.kubewharf.io~1reclaimed_memory",
            "value": str(1024**3),
        },
        {
            "op": "add",
            "path": f"{base}/limits",
            "value": {
                "resource.katalyst.kubewharf.io/reclaimed_millicpu": "1500",
                "resource.katalyst.kubewharf.io/reclaimed_memory": str(1024**3),
            },
        },
    ]
    status, answer = await post(webhook, "/validate", body)
    assert (status, answer["response"]) == (200, {"uid": "uid-mutated", "allowed": True})
    assert webhook.sample("katalyst_webhook_patches_total", path="/mutate") == 1
    assert webhook.sample("katalyst_webhook_patch_operations_total", path="/mutate") == 5
    assert webhook.sample("katalyst_webhook_patches_total", path="/validate") == 0


async def test_an_update_that_breaks_the_qos_annotation_is_denied(webhook: Webhook) -> None:
    old = pod({}, {})
    new = pod(BAD_ANNOTATION, {})
    body = admission_review(new, uid="uid-update", operation="UPDATE", old=old)
    for path in ("/mutate", "/validate"):
        status, answer = await post(webhook, path, body)
        assert status == 200 and answer["response"]["allowed"] is False
        assert "patch" not in answer["response"]
    body = admission_review(old, uid="uid-update-2", operation="UPDATE", old=old)
    _, answer = await post(webhook, "/mutate", body)
    assert answer["response"] == {"uid": "uid-update-2", "allowed": True}


@pytest.mark.parametrize("garbage", [b"{not json", b"", b"\xff\xfe"])
async def test_a_body_that_is_not_json_is_a_400(webhook: Webhook, garbage: bytes) -> None:
    status, answer = await post(webhook, "/mutate", garbage)
    assert status == 400
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 400
    assert answer["response"]["status"]["message"].startswith("the body is not JSON")
    assert webhook.sample("katalyst_webhook_requests_total", path="/mutate", outcome="bad_request")


async def test_json_that_is_not_a_review_is_answered_200(webhook: Webhook) -> None:
    status, answer = await post(webhook, "/validate", b"[1, 2]")
    assert status == 200 and answer["response"]["allowed"] is False
    status, answer = await post(webhook, "/validate", {"kind": "AdmissionReview"})
    assert status == 200 and answer["response"]["status"]["code"] == 400


async def test_an_oversized_body_is_a_413(webhook: Webhook) -> None:
    status, answer = await post(webhook, "/mutate", b" " * (LIMIT + 1))
    assert status == 413
    assert answer["response"]["status"]["message"] == f"the body is larger than {LIMIT} bytes"

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit holds while reading.
        for _ in range(3):
            yield b" " * (LIMIT // 2)

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            webhook.url + "/validate",
            data=chunks(),
            ssl=client_context(webhook.ca),
            server_hostname=HOST,
        ) as resp,
    ):
        assert resp.status == 413
    assert webhook.sample("katalyst_webhook_requests_total", path="/mutate", outcome="too_large")
    # A body at the limit is read.
    status, _ = await post(webhook, "/mutate", b" " * (LIMIT - 2) + b"{}")
    assert status == 200


async def test_healthz(webhook: Webhook) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            webhook.url + "/healthz", ssl=client_context(webhook.ca), server_hostname=HOST
        ) as resp,
    ):
        assert (resp.status, await resp.text()) == (200, "ok\n")
    assert webhook.serving.context.minimum_version is ssl.TLSVersion.TLSv1_2


async def test_a_client_that_does_not_trust_the_ca_is_refused(webhook: Webhook) -> None:
    other = generate(service=SVC, namespace=NS, now=now())
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await post(webhook, "/mutate", {}, ca=other.ca_crt)


async def test_swapped_files_are_served_from_the_next_handshake(
    webhook: Webhook, tmp_path: Path, bundle: CertBundle
) -> None:
    first = await peer_certificate(webhook.url, bundle.ca_crt)
    assert first == x509.load_pem_x509_certificate(bundle.tls_crt)
    assert not webhook.source.check()  # nothing changed
    renewed = generate(service=SVC, namespace=NS, now=now(), reuse_ca=bundle)
    write_secret_volume(webhook.source.directory, renewed, 2)
    assert webhook.source.check()
    second = await peer_certificate(webhook.url, bundle.ca_crt)
    assert second == x509.load_pem_x509_certificate(renewed.tls_crt)
    assert webhook.sample("katalyst_webhook_certificate_loads_total") == 2
    expiry = webhook.sample("katalyst_webhook_certificate_expiry_timestamp_seconds")
    assert expiry == second.not_valid_after_utc.timestamp()


async def test_a_half_written_pair_keeps_the_old_certificate(
    webhook: Webhook, bundle: CertBundle, caplog: pytest.LogCaptureFixture
) -> None:
    directory = webhook.source.directory
    new = generate(service=SVC, namespace=NS, now=now(), reuse_ca=bundle)
    # Files written in place one after the other (not as the kubelet does): the
    # certificate first, the key not yet.
    for name in ("tls.crt", "tls.key"):
        target = (directory / name).resolve()
        (directory / name).unlink()
        (directory / name).write_bytes(target.read_bytes())
    (directory / "tls.crt").write_bytes(new.tls_crt)
    assert not webhook.source.check()
    assert "tls.key is not the key of the certificate" in caplog.text
    assert "keeping the certificate served" in caplog.text
    assert await peer_certificate(webhook.url, bundle.ca_crt) == x509.load_pem_x509_certificate(
        bundle.tls_crt
    )
    assert webhook.sample("katalyst_webhook_certificate_errors_total") == 1
    # A truncated key: still refused.
    (directory / "tls.key").write_bytes(new.tls_key[:40])
    assert not webhook.source.check()
    # The key arrives: the new pair is served.
    (directory / "tls.key").write_bytes(new.tls_key)
    os.utime(directory / "tls.key")
    assert webhook.source.check()
    assert await peer_certificate(webhook.url, bundle.ca_crt) == x509.load_pem_x509_certificate(
        new.tls_crt
    )


async def test_the_poll_loop_reloads(webhook: Webhook, bundle: CertBundle) -> None:
    clock = FakeClock()
    source = CertDirSource(webhook.serving, webhook.source.directory, clock=clock, poll_s=5.0)
    source.load()
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    try:
        renewed = generate(service=SVC, namespace=NS, now=now(), reuse_ca=bundle)
        write_secret_volume(source.directory, renewed, 3)
        await clock.advance(4.9)
        assert webhook.serving.current is not None
        assert webhook.serving.current.chain_pem == bundle.tls_crt
        await clock.advance(0.1)
        assert webhook.serving.current.chain_pem == renewed.tls_crt
    finally:
        stop.set()
        await task


# --- secret mode against the fake API server ----------------------------------------------


def webhook_configuration(kind: str) -> Obj:
    verb = "mutate" if kind == "mutating" else "validate"
    return {
        "metadata": {"name": CONFIGS},
        "webhooks": [
            {
                "name": f"{verb}.pods.katalyst.kubewharf.io",
                "clientConfig": {"service": {"name": SVC, "namespace": NS, "path": f"/{verb}"}},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["pods"],
                    }
                ],
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }
        ],
    }


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    # The replicas below name themselves katalyst-controller: they run under the
    # RBAC the chart ships (tests/support/rbac.py).
    async with FakeApiServer() as server:
        for rtype in (SECRETS, MUTATING_WEBHOOK_CONFIGURATIONS, VALIDATING_WEBHOOK_CONFIGURATIONS):
            server.register(rtype)
        server.create_object(MUTATING_WEBHOOK_CONFIGURATIONS, webhook_configuration("mutating"))
        server.create_object(VALIDATING_WEBHOOK_CONFIGURATIONS, webhook_configuration("validating"))
        yield server


class RacingClient(ApiWebhookClient):
    """Its first read of the Secret waits for the other replica's, so that both find
    none and both create: the race two replicas starting together run."""

    def __init__(self, kube: Kube, barrier: asyncio.Barrier) -> None:
        super().__init__(kube, namespace=NS)
        self._barrier: asyncio.Barrier | None = barrier

    async def get_secret(self, name: str) -> Obj | None:
        found = await super().get_secret(name)
        if self._barrier is not None:
            barrier, self._barrier = self._barrier, None
            await barrier.wait()
        return found


@dataclass
class Replica:
    source: SecretCertSource
    serving: ServingCert


@pytest.fixture
async def replicas(
    api: FakeApiServer, tmp_path: Path
) -> AsyncIterator[tuple[Replica, Replica, FakeClock]]:
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    clock = FakeClock(wall_offset=now().timestamp())
    barrier = asyncio.Barrier(2)
    kubes: list[Kube] = []
    made: list[Replica] = []
    try:
        for name in ("a", "b"):
            kube = await connect(kubeconfig, user_agent=f"katalyst-controller/test ({name})")
            kubes.append(kube)
            serving = ServingCert()
            source = SecretCertSource(
                RacingClient(kube, barrier),
                serving,
                secret=SECRET,
                service=SVC,
                configurations=CONFIGS,
                clock=clock,
            )
            made.append(Replica(source, serving))
        yield made[0], made[1], clock
    finally:
        for replica in made:
            replica.serving.close()
        for kube in kubes:
            await kube.close()


def ca_bundles(api: FakeApiServer) -> list[str | None]:
    found: list[str | None] = []
    for rtype in (MUTATING_WEBHOOK_CONFIGURATIONS, VALIDATING_WEBHOOK_CONFIGURATIONS):
        obj = api.get_object(rtype, CONFIGS)
        assert obj is not None
        found.extend(hook["clientConfig"].get("caBundle") for hook in obj["webhooks"])
    return found


def config_writes(api: FakeApiServer) -> int:
    return sum(
        len(api.writes_to(rtype, CONFIGS))
        for rtype in (MUTATING_WEBHOOK_CONFIGURATIONS, VALIDATING_WEBHOOK_CONFIGURATIONS)
    )


def stored_bundle(api: FakeApiServer) -> CertBundle:
    bundle = bundle_from_secret(api.get_object(SECRETS, SECRET, namespace=NS))
    assert bundle is not None
    return bundle


async def test_two_replicas_create_the_secret_once_and_serve_it(
    api: FakeApiServer, replicas: tuple[Replica, Replica, FakeClock]
) -> None:
    a, b, _ = replicas
    await asyncio.gather(a.source.sync(), b.source.sync())
    writes = api.writes_to(SECRETS, SECRET, namespace=NS)
    assert sorted((w.method, w.code) for w in writes) == [("POST", 201), ("POST", 409)]
    assert a.source.issued + b.source.issued == 1
    secret = api.get_object(SECRETS, SECRET, namespace=NS)
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    assert {"ca.crt", "tls.crt", "tls.key"} <= set(secret["data"])
    stored = stored_bundle(api)
    for replica in (a, b):
        assert replica.serving.current is not None
        assert replica.serving.current.chain_pem == stored.tls_crt
    # Neither leads: the webhook configurations are not touched.
    assert config_writes(api) == 0
    assert ca_bundles(api) == [None, None]


async def test_only_the_leader_sets_the_ca_bundle(
    api: FakeApiServer,
    replicas: tuple[Replica, Replica, FakeClock],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b, _ = replicas
    await asyncio.gather(a.source.sync(), b.source.sync())
    b.source.set_leading(True)
    await a.source.sync()
    assert config_writes(api) == 0
    await b.source.sync()
    ca = base64.b64encode(stored_bundle(api).ca_crt).decode()
    assert ca_bundles(api) == [ca, ca]
    assert config_writes(api) == 2
    # Already so: nothing written again.
    await b.source.sync()
    assert config_writes(api) == 2
    # A configuration that does not exist is logged, not fatal.
    api.delete_object(VALIDATING_WEBHOOK_CONFIGURATIONS, CONFIGS)
    api.update_object(
        MUTATING_WEBHOOK_CONFIGURATIONS,
        CONFIGS,
        lambda obj: obj["webhooks"][0]["clientConfig"].update(caBundle="c3RhbGU="),
    )
    await b.source.sync()
    assert ca_bundles_of(api, MUTATING_WEBHOOK_CONFIGURATIONS) == [ca]
    assert f"ValidatingWebhookConfiguration {CONFIGS} does not exist" in caplog.text


def ca_bundles_of(api: FakeApiServer, rtype: Any) -> list[str | None]:
    obj = api.get_object(rtype, CONFIGS)
    assert obj is not None
    return [hook["clientConfig"].get("caBundle") for hook in obj["webhooks"]]


async def test_renewed_30_days_before_expiry_under_the_same_ca(
    api: FakeApiServer, replicas: tuple[Replica, Replica, FakeClock]
) -> None:
    a, b, clock = replicas
    b.source.set_leading(True)
    await asyncio.gather(a.source.sync(), b.source.sync())
    await b.source.sync()
    first = stored_bundle(api)
    assert config_writes(api) == 2
    end = x509.load_pem_x509_certificate(first.tls_crt).not_valid_after_utc
    # 31 days before the end: nothing to do.
    await clock.advance((end - now()).total_seconds() - 31 * 86400)
    await a.source.sync()
    assert stored_bundle(api) == first
    # 29 days before: renewed by whichever replica looks first, served by both.
    await clock.advance(2 * 86400)
    await a.source.sync()
    renewed = stored_bundle(api)
    assert renewed.tls_crt != first.tls_crt
    assert renewed.ca_crt == first.ca_crt  # the caBundle stays valid
    puts = [w for w in api.writes_to(SECRETS, SECRET, namespace=NS) if w.method == "PUT"]
    assert [(w.code, w.changed) for w in puts] == [(200, True)]
    await b.source.sync()
    for replica in (a, b):
        assert replica.serving.current is not None
        assert replica.serving.current.chain_pem == renewed.tls_crt
    assert config_writes(api) == 2


async def test_a_secret_for_another_service_is_replaced(
    api: FakeApiServer, replicas: tuple[Replica, Replica, FakeClock]
) -> None:
    a, b, _ = replicas
    other = generate(service="old-name", namespace=NS, now=now())
    api.create_object(
        SECRETS,
        {
            "metadata": {"name": SECRET, "namespace": NS},
            "type": "kubernetes.io/tls",
            "data": {
                "ca.crt": base64.b64encode(other.ca_crt).decode(),
                "tls.crt": base64.b64encode(other.tls_crt).decode(),
                "tls.key": base64.b64encode(other.tls_key).decode(),
            },
        },
    )
    await asyncio.gather(a.source.sync(), b.source.sync())
    assert stored_bundle(api).tls_crt != other.tls_crt
    # Both found it wanting; one PUT won, the other's lost (409) and it took the winner's.
    puts = [w.code for w in api.writes_to(SECRETS, SECRET, namespace=NS) if w.method == "PUT"]
    assert sorted(puts) == [200, 409]
    assert a.source.issued + b.source.issued == 1


# --- the controller serving it ------------------------------------------------------------


async def test_the_controller_serves_the_webhook_from_its_secret(
    api: FakeApiServer, tmp_path: Path
) -> None:
    config = ControllerConfig(
        kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"),
        namespace=NS,
        identity="ctl-a",
        metrics_addr="127.0.0.1:0",
        lease_duration_s=1,
        renew_deadline_s=0.6,
        retry_period_s=0.2,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        webhook_addr="127.0.0.1:0",
        webhook_cert_secret=SECRET,
    )
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    registry = CollectorRegistry()
    task = asyncio.create_task(run(config, stop=stop, registry=registry, webhook_ready=ready))
    try:
        waits: set[asyncio.Future[Any]] = {ready, task}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        url = f"https://{ready.result()}"
        await eventually(lambda: None not in ca_bundles(api), "the caBundle set by the leader")
        bundle = stored_bundle(api)
        assert ca_bundles(api) == [base64.b64encode(bundle.ca_crt).decode()] * 2
        body = admission_review(pod(RECLAIMED, {"requests": {"cpu": "1"}}), uid="e2e")
        status, answer = await post_to(f"{url}/mutate", body, ca=bundle.ca_crt)
        assert status == 200 and answer["response"]["patchType"] == "JSONPatch"
        patched = {"path": "/mutate", "outcome": "patched"}
        assert registry.get_sample_value("katalyst_webhook_requests_total", patched) == 1
    finally:
        stop.set()
        await asyncio.wait({task}, timeout=10)
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
