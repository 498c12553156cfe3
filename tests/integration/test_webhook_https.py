"""The admission webhook over real HTTPS on 127.0.0.1, the client verifying the CA and
the service name as kube-apiserver does; its two certificate sources (a mounted
directory swapped as the kubelet swaps a Secret volume, and a Secret the controller
manages against the fake API server); and the controller serving it end to end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from controllers.apiserver import ApiWebhookClient, Kube, Obj, connect
from controllers.app import run
from controllers.config import ControllerConfig
from controllers.webhook.admission import AdmissionConfig
from controllers.webhook.certs import CertBundle, generate
from controllers.webhook.configurations import ConfigurationKeeper
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
from tests.support.apiserver import ApiError as FakeApiError
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
                # As the chart installs it: Ignore until the leader sees the caBundle
                # verify the certificate served.
                "failurePolicy": "Ignore",
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
    keeper: ConfigurationKeeper


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
            client = RacingClient(kube, barrier)
            keeper = ConfigurationKeeper(
                client, serving, name=CONFIGS, failure_policy="Fail", clock=clock
            )
            source = SecretCertSource(
                client, serving, keeper=keeper, secret=SECRET, service=SVC, clock=clock
            )
            made.append(Replica(source, serving, keeper))
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


def failure_policies(api: FakeApiServer) -> list[str | None]:
    found: list[str | None] = []
    for rtype in (MUTATING_WEBHOOK_CONFIGURATIONS, VALIDATING_WEBHOOK_CONFIGURATIONS):
        obj = api.get_object(rtype, CONFIGS)
        assert obj is not None
        found.extend(hook.get("failurePolicy") for hook in obj["webhooks"])
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
    assert failure_policies(api) == ["Ignore", "Ignore"]
    await b.source.sync()
    ca = base64.b64encode(stored_bundle(api).ca_crt).decode()
    assert ca_bundles(api) == [ca, ca]
    # The caBundle and the failurePolicy it now allows: one write per configuration.
    assert failure_policies(api) == ["Fail", "Fail"]
    assert config_writes(api) == 2
    assert b.keeper.ca_bundle_writes == 2 and b.keeper.failure_policy_writes == 2
    # Already so: nothing written again, by either.
    await asyncio.gather(a.source.sync(), b.source.sync())
    assert config_writes(api) == 2
    assert a.keeper.ca_bundle_writes == a.keeper.failure_policy_writes == 0
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


def quick_controller(
    api: FakeApiServer, tmp_path: Path, identity: str, **webhook: Any
) -> ControllerConfig:
    """A controller serving the webhook on any free port, with lease and backoff
    timings short enough for a test."""
    return ControllerConfig(
        kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"),
        namespace=NS,
        identity=identity,
        metrics_addr="127.0.0.1:0",
        lease_duration_s=1,
        renew_deadline_s=0.6,
        retry_period_s=0.2,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        webhook_addr="127.0.0.1:0",
        **webhook,
    )


# --- the controller serving it ------------------------------------------------------------


async def test_the_controller_serves_the_webhook_from_its_secret(
    api: FakeApiServer, tmp_path: Path
) -> None:
    config = quick_controller(api, tmp_path, "ctl-a", webhook_cert_secret=SECRET)
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
        assert failure_policies(api) == ["Fail", "Fail"]  # in the same write
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


# --- failurePolicy switched by the leader once the caBundle verifies ----------------------


def retarget(api: FakeApiServer, rtype: Any, service: str) -> None:
    """Point the configuration's webhook at another Service (as an operator might)."""
    api.update_object(
        rtype,
        CONFIGS,
        lambda obj: obj["webhooks"][0]["clientConfig"]["service"].update(name=service),
    )


def inject_ca(api: FakeApiServer, ca_pem: bytes) -> None:
    """What cert-manager's CA injector does in cert-dir mode."""
    for rtype in (MUTATING_WEBHOOK_CONFIGURATIONS, VALIDATING_WEBHOOK_CONFIGURATIONS):
        api.update_object(
            rtype,
            CONFIGS,
            lambda obj: obj["webhooks"][0]["clientConfig"].update(
                caBundle=base64.b64encode(ca_pem).decode()
            ),
        )


async def test_secret_mode_keeps_ignore_until_the_ca_bundle_verifies(
    api: FakeApiServer,
    replicas: tuple[Replica, Replica, FakeClock],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b, _ = replicas
    # The validating webhook points at a Service the issued certificate does not name:
    # the API server could not verify it, so it must stay on Ignore.
    retarget(api, VALIDATING_WEBHOOK_CONFIGURATIONS, "elsewhere")
    b.source.set_leading(True)
    await asyncio.gather(a.source.sync(), b.source.sync())
    ca = base64.b64encode(stored_bundle(api).ca_crt).decode()
    assert ca_bundles(api) == [ca, ca]
    assert failure_policies(api) == ["Fail", "Ignore"]
    assert config_writes(api) == 2
    assert "failurePolicy left as it is" in caplog.text
    assert "no matching subjectAltName" in caplog.text
    await b.source.sync()
    assert config_writes(api) == 2
    # Pointed back at the webhook's Service: switched at the next pass, one write.
    retarget(api, VALIDATING_WEBHOOK_CONFIGURATIONS, SVC)
    await a.source.sync()
    assert failure_policies(api) == ["Fail", "Ignore"]  # not the leader
    await b.source.sync()
    assert failure_policies(api) == ["Fail", "Fail"]
    writes = [
        w
        for rtype in (MUTATING_WEBHOOK_CONFIGURATIONS, VALIDATING_WEBHOOK_CONFIGURATIONS)
        for w in api.writes_to(rtype, CONFIGS)
    ]
    assert [(w.method, w.code, w.changed) for w in writes] == [("PUT", 200, True)] * 3
    assert a.keeper.failure_policy_writes == 0


@dataclass
class DirReplica:
    keeper: ConfigurationKeeper
    serving: ServingCert


@pytest.fixture
async def dir_replicas(
    api: FakeApiServer, tmp_path: Path, bundle: CertBundle
) -> AsyncIterator[tuple[DirReplica, DirReplica]]:
    """Two replicas in cert-dir mode: they serve the mounted pair (``bundle``) and keep
    only the failurePolicy; they run under the shipped RBAC (their User-Agent)."""
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    clock = FakeClock(wall_offset=now().timestamp())
    kubes: list[Kube] = []
    made: list[DirReplica] = []
    try:
        for name in ("a", "b"):
            kube = await connect(kubeconfig, user_agent=f"katalyst-controller/test ({name})")
            kubes.append(kube)
            serving = ServingCert()
            serving.install(bundle.tls_crt, bundle.tls_key, what="mounted")
            keeper = ConfigurationKeeper(
                ApiWebhookClient(kube, namespace=NS),
                serving,
                name=CONFIGS,
                failure_policy="Fail",
                clock=clock,
            )
            made.append(DirReplica(keeper, serving))
        yield made[0], made[1]
    finally:
        for replica in made:
            replica.serving.close()
        for kube in kubes:
            await kube.close()


async def test_cert_dir_mode_switches_once_the_injected_ca_bundle_verifies(
    api: FakeApiServer, dir_replicas: tuple[DirReplica, DirReplica], bundle: CertBundle
) -> None:
    a, b = dir_replicas
    b.keeper.set_leading(True)
    await asyncio.gather(a.keeper.sync(), b.keeper.sync())
    # No caBundle yet (cert-manager has not injected it): left on Ignore.
    assert failure_policies(api) == ["Ignore", "Ignore"]
    assert config_writes(api) == 0
    # Another CA injected (a stale Certificate): still Ignore.
    inject_ca(api, generate(service=SVC, namespace=NS, now=now()).ca_crt)
    await b.keeper.sync()
    assert config_writes(api) == 0
    # The CA of the certificate served: switched, one write per configuration, and the
    # injected caBundle untouched.
    inject_ca(api, bundle.ca_crt)
    await a.keeper.sync()
    assert config_writes(api) == 0  # not the leader
    await b.keeper.sync()
    assert failure_policies(api) == ["Fail", "Fail"]
    assert ca_bundles(api) == [base64.b64encode(bundle.ca_crt).decode()] * 2
    assert config_writes(api) == 2
    await asyncio.gather(a.keeper.sync(), b.keeper.sync())
    assert config_writes(api) == 2
    # Cert-dir mode reads and writes only the two configurations: never a Secret.
    assert not [r for r in api.requests if "/secrets" in r.path]


async def test_the_controller_in_cert_dir_mode_switches_the_failure_policy(
    api: FakeApiServer, tmp_path: Path, bundle: CertBundle
) -> None:
    directory = tmp_path / "certs"
    directory.mkdir()
    write_secret_volume(directory, bundle, 1)
    inject_ca(api, bundle.ca_crt)
    config = quick_controller(api, tmp_path, "ctl-dir", webhook_cert_dir=directory)
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, stop=stop, registry=CollectorRegistry()))
    try:
        await eventually(
            lambda: task.done() or failure_policies(api) == ["Fail", "Fail"],
            "the leader switching the failurePolicy",
        )
        if task.done():
            task.result()
        assert config_writes(api) == 2
    finally:
        stop.set()
        await asyncio.wait({task}, timeout=10)
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --- the CA union -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving_pair(pair: CertBundle) -> AsyncIterator[tuple[str, ServingCert]]:
    """An HTTPS webhook serving ``pair``; its URL and certificate."""
    serving = ServingCert()
    serving.install(pair.tls_crt, pair.tls_key, what="test")
    app = build_webhook_app(
        config=AdmissionConfig(), metrics=WebhookMetrics(CollectorRegistry()), serving=serving
    )
    runner, bound = await start_https(app, "127.0.0.1:0", serving.context)
    try:
        yield f"https://{bound}", serving
    finally:
        await runner.cleanup()
        serving.close()


async def test_a_ca_change_publishes_the_old_and_the_new_ca(
    api: FakeApiServer, replicas: tuple[Replica, Replica, FakeClock]
) -> None:
    a, b, _ = replicas
    b.source.set_leading(True)
    await asyncio.gather(a.source.sync(), b.source.sync())
    old = stored_bundle(api)
    # The Secret is lost (deleted by hand): the next pass issues a new CA, and replica
    # a serves a certificate of the new CA while b still serves the old CA's.
    api.delete_object(SECRETS, SECRET, namespace=NS)
    await a.source.sync()
    new = stored_bundle(api)
    assert new.ca_crt != old.ca_crt
    await b.source.sync()
    published = {base64.b64decode(value or "") for value in ca_bundles(api)}
    assert len(published) == 1
    (bundle_pem,) = published
    # Newest first.
    assert x509.load_pem_x509_certificates(bundle_pem) == [
        x509.load_pem_x509_certificate(new.ca_crt),
        x509.load_pem_x509_certificate(old.ca_crt),
    ]
    # A certificate of each CA verifies against it, as kube-apiserver's client does.
    for pair in (old, new):
        async with serving_pair(pair) as (url, _):
            seen = await peer_certificate(url, bundle_pem)
        assert seen == x509.load_pem_x509_certificate(pair.tls_crt)
    assert failure_policies(api) == ["Fail", "Fail"]
    # Another change: at most two, the oldest leaves.
    api.delete_object(SECRETS, SECRET, namespace=NS)
    await b.source.sync()
    third = stored_bundle(api)
    (value, *_) = ca_bundles(api)
    assert x509.load_pem_x509_certificates(base64.b64decode(value or "")) == [
        x509.load_pem_x509_certificate(third.ca_crt),
        x509.load_pem_x509_certificate(new.ca_crt),
    ]


# --- a renewal that cannot be written ------------------------------------------------------


async def test_a_renewal_that_cannot_be_written_is_counted_and_logged_each_pass(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frozen: dict[str, Any] = {}

    def immutable(secret: Obj) -> None:
        # kube-apiserver's ValidateSecretUpdate: an immutable Secret's data cannot change.
        if not secret.get("immutable"):
            return
        if "data" not in frozen:
            frozen["data"] = secret.get("data")
        elif secret.get("data") != frozen["data"]:
            name = secret["metadata"]["name"]
            raise FakeApiError(
                422,
                f'Secret "{name}" is invalid: data: Forbidden: field is immutable when '
                "`immutable` is set",
            )

    expiring = generate(service=SVC, namespace=NS, now=now() - datetime.timedelta(days=340))
    async with FakeApiServer() as server:
        server.register(dataclasses.replace(SECRETS, validate=immutable))
        server.register(MUTATING_WEBHOOK_CONFIGURATIONS)
        server.register(VALIDATING_WEBHOOK_CONFIGURATIONS)
        server.create_object(MUTATING_WEBHOOK_CONFIGURATIONS, webhook_configuration("mutating"))
        server.create_object(VALIDATING_WEBHOOK_CONFIGURATIONS, webhook_configuration("validating"))
        server.create_object(
            SECRETS,
            {
                "metadata": {"name": SECRET, "namespace": NS},
                "type": "kubernetes.io/tls",
                "immutable": True,
                "data": {
                    "ca.crt": base64.b64encode(expiring.ca_crt).decode(),
                    "tls.crt": base64.b64encode(expiring.tls_crt).decode(),
                    "tls.key": base64.b64encode(expiring.tls_key).decode(),
                    "ca.key": base64.b64encode(expiring.ca_key).decode(),
                },
            },
        )
        kube = await connect(
            server.kubeconfig(tmp_path / "kubeconfig"), user_agent="katalyst-controller/test"
        )
        serving = ServingCert()
        try:
            registry = CollectorRegistry()
            registry.register(CertCollector(serving))
            clock = FakeClock(wall_offset=now().timestamp())
            client = ApiWebhookClient(kube, namespace=NS)
            keeper = ConfigurationKeeper(
                client, serving, name=CONFIGS, failure_policy="Fail", clock=clock
            )
            source = SecretCertSource(
                client, serving, keeper=keeper, secret=SECRET, service=SVC, clock=clock
            )
            source.set_leading(True)
            for passes in (1, 2):
                await source.sync()
                errors = registry.get_sample_value("katalyst_webhook_certificate_errors_total")
                assert errors == passes
                warnings = [
                    r
                    for r in caplog.records
                    if r.levelno == logging.WARNING
                    and "cannot write the new certificate" in r.getMessage()
                ]
                assert len(warnings) == passes
                assert "field is immutable" in warnings[-1].getMessage()
            # The Secret's certificate is served meanwhile, and the leader's pass ran.
            assert serving.current is not None
            assert serving.current.chain_pem == expiring.tls_crt
            assert source.issued == 0
            puts = [w.code for w in server.writes_to(SECRETS, SECRET, namespace=NS)]
            assert puts == [422, 422]
            assert failure_policies(server) == ["Fail", "Fail"]
        finally:
            serving.close()
            await kube.close()


# --- load: the concurrency limit and the body timeout --------------------------------------


@dataclass
class Limited:
    url: str
    clock: FakeClock
    registry: CollectorRegistry
    release: asyncio.Event
    inside: list[int]


@pytest.fixture
async def limited(bundle: CertBundle) -> AsyncIterator[Limited]:
    """A webhook with two slots whose reviews wait for ``release`` while they hold one."""
    serving = ServingCert()
    serving.install(bundle.tls_crt, bundle.tls_key, what="test")
    registry = CollectorRegistry()
    clock = FakeClock()
    release = asyncio.Event()
    inside = [0]

    async def holding() -> None:
        inside[0] += 1
        await release.wait()

    app = build_webhook_app(
        config=AdmissionConfig(),
        metrics=WebhookMetrics(registry),
        serving=serving,
        max_concurrency=2,
        queue_wait_s=2.0,
        body_timeout_s=10.0,
        clock=clock,
        holding=holding,
    )
    runner, bound = await start_https(app, "127.0.0.1:0", serving.context)
    try:
        yield Limited(f"https://{bound}", clock, registry, release, inside)
    finally:
        release.set()
        await runner.cleanup()
        serving.close()


async def post_with_headers(url: str, body: Obj, *, ca: bytes) -> tuple[int, Obj, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, ssl=client_context(ca), server_hostname=HOST) as resp,
    ):
        return resp.status, await resp.json(), resp.headers


async def test_a_review_that_finds_no_free_slot_is_answered_429(
    limited: Limited, bundle: CertBundle
) -> None:
    url = limited.url + "/validate"
    body = admission_review(pod({}, {}), uid="uid-load")
    held = [asyncio.create_task(post_to(url, body, ca=bundle.ca_crt)) for _ in range(2)]
    await eventually(lambda: limited.inside[0] == 2, "two reviews holding both slots")
    third = asyncio.create_task(post_with_headers(url, body, ca=bundle.ca_crt))
    await eventually(lambda: limited.clock.sleepers == 1, "a third review waiting for a slot")
    await limited.clock.advance(2.0)
    status, answer, headers = await third
    assert status == 429 and headers["Retry-After"] == "1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 429
    overloaded = {"path": "/validate", "outcome": "overloaded"}
    assert limited.registry.get_sample_value("katalyst_webhook_requests_total", overloaded) == 1
    # One that waits less than that gets the slot a finished review frees.
    fourth = asyncio.create_task(post_to(url, body, ca=bundle.ca_crt))
    await eventually(lambda: limited.clock.sleepers == 1, "a fourth review waiting for a slot")
    limited.release.set()
    for status, answer in await asyncio.gather(*held, fourth):
        assert (status, answer["response"]["allowed"]) == (200, True)
    assert limited.inside[0] == 3
    assert limited.registry.get_sample_value("katalyst_webhook_requests_total", overloaded) == 1


async def test_a_body_that_does_not_arrive_is_answered_408(
    limited: Limited, bundle: CertBundle
) -> None:
    limited.release.set()
    host, port = limited.url.removeprefix("https://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(
        host, int(port), ssl=client_context(bundle.ca_crt), server_hostname=HOST
    )
    try:
        writer.write(
            b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"kind":'
        )
        await writer.drain()
        await eventually(lambda: limited.clock.sleepers == 1, "the body timer")
        await limited.clock.advance(10.0)
        status_line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 408")
    timeout = {"path": "/mutate", "outcome": "timeout"}
    assert limited.registry.get_sample_value("katalyst_webhook_requests_total", timeout) == 1


# --- a key type change: a fresh context per pair --------------------------------------------


def rsa_bundle() -> CertBundle:
    """A CA and a serving certificate for HOST with RSA keys (a pair an operator might
    mount before switching to cert-manager's ECDSA default)."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = now() - datetime.timedelta(hours=1)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return CertBundle(
        ca_crt=ca.public_bytes(pem),
        tls_crt=leaf.public_bytes(pem),
        tls_key=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


async def test_an_ecdsa_pair_replaces_an_rsa_pair_entirely(bundle: CertBundle) -> None:
    old = rsa_bundle()
    both = old.ca_crt + bundle.ca_crt
    async with serving_pair(old) as (url, serving):
        assert await peer_certificate(url, both) == x509.load_pem_x509_certificate(old.tls_crt)
        # A client that only takes RSA key exchange: served while the RSA pair is.
        rsa_only = client_context(both)
        rsa_only.maximum_version = ssl.TLSVersion.TLSv1_2
        rsa_only.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384")
        host, port = url.removeprefix("https://").rsplit(":", 1)
        _, writer = await asyncio.open_connection(
            host, int(port), ssl=rsa_only, server_hostname=HOST
        )
        writer.close()
        await writer.wait_closed()
        # The ECDSA pair: a new handshake sees it, and only it.
        assert serving.install(bundle.tls_crt, bundle.tls_key, what="ecdsa")
        assert await peer_certificate(url, both) == x509.load_pem_x509_certificate(bundle.tls_crt)
        # No RSA certificate left to serve it (OpenSSL aborts the handshake).
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await asyncio.open_connection(host, int(port), ssl=rsa_only, server_hostname=HOST)
        assert serving.pair_context is not None
        assert serving.pair_context.minimum_version is ssl.TLSVersion.TLSv1_2
