"""The install manifests: the Helm chart rendered by Helm's own engine (the
``helm-python-sdk`` package binds Helm's Go SDK), the kustomize base built by
``kubectl kustomize``, every object validated against the Kubernetes OpenAPI
schemas in strict mode (``kubernetes-validate``), and every command line in them
accepted by the process it starts.

RBAC is checked elsewhere, against the code itself: the fake API server refuses
our processes anything the shipped manifests do not grant (tests/support/rbac.py),
and ``make test`` fails when a grant goes unused (tests/conftest.py).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from agent.config import load_config as load_agent
from controllers.config import build_parser as controller_parser
from controllers.config import load_config as load_controller
from katalyst import __version__
from scheduler_plugins.app import build_parser as extender_parser
from tests.deploy.third_party import SCHEMAS as THIRD_PARTY

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "katalyst"
BASE = ROOT / "deploy" / "kustomize" / "base"
K8S_VERSION = kubernetes_validate.latest_version()
BIN = Path(sys.executable).parent


VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"webhook": {"certMode": "certManager"}},
    "cert-manager-issuer": {
        "webhook": {
            "certMode": "certManager",
            "certManager": {"issuerRef": {"name": "ca", "kind": "ClusterIssuer"}},
        }
    },
    "no-webhook": {"webhook": {"enabled": False}},
    "single-replicas": {"controller": {"replicas": 1}, "extender": {"replicas": 1}},
    "monitoring": {
        "monitoring": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        }
    },
    "tuned": {
        "logFormat": "text",
        "agent": {
            "mode": "orm",
            "reservedCpus": "0-1",
            "config": {"sysadvisor": {"period_s": 2}, "eviction": {"evicting_grace_s": 30}},
            "extraConfigTargets": [{"group": "config.example.com", "resource": "myconfigs"}],
            "extraArgs": ["--cgroup-root=kubepods.slice"],
        },
        "webhook": {
            "failurePolicy": "Ignore",
            "defaults": [{"qosLevel": "reclaimed_cores", "namespaces": ["batch"]}],
        },
        "extender": {"scoreStrategy": "most-allocated", "gpuStrategy": "spread"},
        "commonLabels": {"team": "sre"},
    },
    "agent-only": {"controller": {"enabled": False}, "extender": {"enabled": False}},
}


def _render_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "katalyst_deploy_render", ROOT / "deploy" / "render.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RENDER = _render_module()


def render(values: Mapping[str, Any], namespace: str = "katalyst-system") -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = RENDER.render_chart(values, namespace=namespace)
    return objects


def kustomize_build() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to build the kustomize base (it is on CI machines)"
    out = subprocess.run(
        [kubectl, "kustomize", str(BASE)], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


# ---- the chart ------------------------------------------------------------------------


def test_the_chart_lints_clean_and_follows_the_project_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == __version__
    findings = helm_python.lint(str(CHART))
    text = repr(findings)
    assert "[ERROR]" not in text and "[WARNING]" not in text, text


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_renders_and_validates_strictly(variant: str) -> None:
    objects = render(VARIANTS[variant])
    assert objects
    keys = [_key(o) for o in objects]
    assert len(keys) == len(set(keys)), f"duplicate objects: {keys}"
    for obj in objects:
        _validate(obj)


def _validate(obj: dict[str, Any]) -> None:
    schema = THIRD_PARTY.get((obj["apiVersion"], obj["kind"]))
    if schema is not None:
        # Their CRDs' schemas are not available here: closed schemas of the fields
        # the chart uses, from the projects' API references (tests/deploy/third_party.py).
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=str)
        assert not errors, f"{obj['kind']} {obj['metadata']['name']}: {errors[0].message}"
        return
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(
            f"{obj['kind']} {obj['metadata'].get('name')}: {exc.message} at {list(exc.path)}"
        )


def test_a_release_in_another_namespace_points_everything_there() -> None:
    objects = render({}, namespace="qos")
    for obj in objects:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding") or obj["kind"].endswith(
            "WebhookConfiguration"
        ):
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] == "qos", _key(obj)
    hooks = [o for o in objects if o["kind"].endswith("WebhookConfiguration")]
    for hook in hooks:
        (webhook,) = hook["webhooks"]
        assert webhook["clientConfig"]["service"]["namespace"] == "qos"
        excluded = webhook["namespaceSelector"]["matchExpressions"][0]["values"]
        assert set(excluded) == {"kube-system", "kube-node-lease", "qos"}
    (config,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-webhook")
    ]
    assert yaml.safe_load(config["data"]["webhook.yaml"])["excludedNamespaces"] == [
        "kube-system",
        "kube-node-lease",
        "qos",
    ]


def test_webhooks_cannot_block_system_pods() -> None:
    objects = render({})
    hooks = {o["kind"]: o for o in objects if o["kind"].endswith("WebhookConfiguration")}
    assert set(hooks) == {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    for hook in hooks.values():
        (webhook,) = hook["webhooks"]
        # Installed as Ignore: a controller that never comes up blocks nothing; its
        # leader sets the chosen policy once the certificate verifies.
        assert webhook["failurePolicy"] == "Ignore" and webhook["timeoutSeconds"] <= 10
        assert webhook["sideEffects"] == "None" and webhook["admissionReviewVersions"] == ["v1"]
        first = webhook["namespaceSelector"]["matchExpressions"][0]
        assert first["key"] == "kubernetes.io/metadata.name" and first["operator"] == "NotIn"
        assert {"kube-system", "kube-node-lease", "katalyst-system"} <= set(first["values"])
        assert webhook["rules"][0]["resources"] == ["pods"]
    paths = {k: h["webhooks"][0]["clientConfig"]["service"]["path"] for k, h in hooks.items()}
    assert paths == {
        "MutatingWebhookConfiguration": "/mutate",
        "ValidatingWebhookConfiguration": "/validate",
    }
    mutating = hooks["MutatingWebhookConfiguration"]["webhooks"][0]
    assert mutating["rules"][0]["operations"] == ["CREATE"]
    validating = hooks["ValidatingWebhookConfiguration"]["webhooks"][0]
    (condition,) = validating["matchConditions"]
    assert "katalyst.kubewharf.io/qos_level" in condition["expression"]
    (controller,) = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "katalyst-controller"
    ]
    args = controller["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--webhook-failure-policy=Fail" in args
    assert "--webhook-configurations=katalyst-webhook" in args


def test_cert_manager_mode_uses_a_ca_and_never_waits_on_its_own_webhook() -> None:
    objects = render(VARIANTS["cert-manager"])
    certs = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Certificate"}
    assert certs["katalyst-webhook-ca"]["spec"]["isCA"] is True
    assert certs["katalyst-webhook"]["spec"]["issuerRef"]["name"] == "katalyst-webhook-ca"
    for hook in (o for o in objects if o["kind"].endswith("WebhookConfiguration")):
        annotations = hook["metadata"]["annotations"]
        assert (
            annotations["cert-manager.io/inject-ca-from"] == "katalyst-system/katalyst-webhook-ca"
        )
        excluded = hook["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
        assert "cert-manager" in excluded


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"webhook": {"certMode": "certmanager"}}, "/webhook/certMode"),
        ({"webhook": {"certmode": "controller"}}, "certmode"),
        ({"agent": {"mode": "kubelet"}}, "/agent/mode"),
        ({"extender": {"replicas": 0}}, "/extender/replicas"),
        ({"webhook": {"failurePolicy": "fail"}}, "/webhook/failurePolicy"),
    ],
)
def test_bad_values_are_refused_by_the_chart_schema(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(where)):
        render(values)


def test_the_controller_and_extender_are_highly_available_and_unprivileged() -> None:
    objects = {_key(o): o for o in render({})}
    for name in ("katalyst-controller", "katalyst-scheduler-extender"):
        deployment = objects[("Deployment", "katalyst-system", name)]
        assert deployment["spec"]["replicas"] == 2
        pdb = objects[("PodDisruptionBudget", "katalyst-system", name)]
        assert pdb["spec"]["minAvailable"] == 1
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert "--leader-elect" in container["args"] or name == "katalyst-controller"
        security = container["securityContext"]
        assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert not security["allowPrivilegeEscalation"]
        assert container["livenessProbe"] and container["readinessProbe"]
        assert container["lifecycle"]["preStop"]  # drained before it stops serving
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    extender = objects[("Service", "katalyst-system", "katalyst-scheduler-extender")]
    assert "selector" not in extender["spec"]  # the leader's EndpointSlice routes
    metrics = objects[("Service", "katalyst-system", "katalyst-scheduler-extender-metrics")]
    assert metrics["spec"]["selector"]["app.kubernetes.io/component"] == "scheduler-extender"


def test_the_agent_daemonset_runs_everywhere_with_the_host_mounts() -> None:
    objects = {_key(o): o for o in render({})}
    ds = objects[("DaemonSet", "katalyst-system", "katalyst-agent")]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] and pod["hostNetwork"]
    assert {"operator": "Exists"} in pod["tolerations"]
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {
        "/sys/fs/cgroup",
        "/var/lib/kubelet/plugins_registry",
        "/var/lib/katalyst",
        "/run/netns",
    } <= mounts
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]


# ---- the kustomize base ----------------------------------------------------------------


def test_the_kustomize_base_is_the_rendered_chart() -> None:
    stale = [
        name
        for name, content in RENDER.base_files().items()
        if not (BASE / name).is_file() or (BASE / name).read_text() != content
    ]
    assert not stale, f"stale {stale}: run .venv/bin/python deploy/render.py"


def test_the_kustomize_base_builds_and_validates_strictly() -> None:
    objects = kustomize_build()
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "CustomResourceDefinition", "DaemonSet", "Deployment"} <= kinds
    for obj in objects:
        _validate(obj)
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/managed-by", "kustomize") == "kustomize"


def test_the_chart_ships_the_crds_of_deploy_crds() -> None:
    ours = sorted(p.name for p in (ROOT / "deploy" / "crds").glob("*_*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert ours == chart
    for name in ours:
        assert (CHART / "crds" / name).read_text() == (ROOT / "deploy" / "crds" / name).read_text()


def test_the_chart_ships_the_monitoring_assets_of_deploy() -> None:
    for chart_file, source in (
        ("prometheus-rules.yaml", ROOT / "deploy" / "prometheus" / "rules.yaml"),
        ("katalyst-dashboard.json", ROOT / "deploy" / "grafana" / "katalyst-dashboard.json"),
    ):
        assert (CHART / "files" / chart_file).read_text() == source.read_text(), chart_file


# ---- command lines -----------------------------------------------------------------------


def _containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        spec = obj.get("spec", {}).get("template", {}).get("spec")
        if obj["kind"] in ("Deployment", "DaemonSet") and spec:
            for container in spec["containers"]:
                yield obj["metadata"]["name"], container


def _help_flags(command: str) -> set[str]:
    out = subprocess.run(
        [str(BIN / command), "--help"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", out))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_flag_in_a_manifest_is_one_the_binary_accepts(variant: str) -> None:
    accepted: dict[str, set[str]] = {}
    seen = 0
    for owner, container in _containers(render(VARIANTS[variant])):
        (command,) = container["command"]
        flags = accepted.setdefault(command, _help_flags(command))
        for arg in container.get("args", []):
            assert arg.startswith("--"), f"{owner}: {arg!r} is not a flag"
            flag = arg.split("=", 1)[0]
            assert flag in flags, f"{owner}: {command} has no {flag} (its --help: {sorted(flags)})"
            seen += 1
    assert seen > 0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_command_line_passes_the_process_own_checks(variant: str, tmp_path: Path) -> None:
    """The rendered arguments, with the ConfigMaps' files where the pod mounts them,
    go through each process's own flag and config-file checks."""
    objects = render(VARIANTS[variant])
    files = {
        name: content
        for o in objects
        if o["kind"] == "ConfigMap"
        for name, content in o.get("data", {}).items()
    }
    env = {"NODE_NAME": "node-a", "POD_NAME": "p-0", "POD_NAMESPACE": "katalyst-system"}
    for _, container in _containers(objects):
        (command,) = container["command"]
        args = [_local(a, tmp_path, files, env) for a in container.get("args", [])]
        _check_command_line(command, args, env)


def _local(arg: str, tmp: Path, files: Mapping[str, str], env: Mapping[str, str]) -> str:
    for name, value in env.items():
        arg = arg.replace(f"$({name})", value)
    flag, sep, value = arg.partition("=")
    if sep and value.startswith("/etc/katalyst/") and Path(value).name in files:
        local = tmp / Path(value).name
        local.write_text(files[Path(value).name])
        return f"{flag}={local}"
    if sep and value.startswith("/etc/katalyst/"):
        local = tmp / Path(value).name  # a mounted Secret's directory
        local.mkdir(exist_ok=True)
        return f"{flag}={local}"
    return arg


def _check_command_line(command: str, args: list[str], env: Mapping[str, str]) -> None:
    if command == "katalyst-agent":
        config = load_agent(args, env=dict(env))
        assert config.node_name == "node-a"
    elif command == "katalyst-controller":
        load_controller(controller_parser(command, None), args, env=dict(env))
    elif command == "katalyst-scheduler-extender":
        extender_parser().parse_args(args)
    else:
        pytest.fail(f"unknown command {command}")


# ---- the image ------------------------------------------------------------------------------


def test_the_dockerfile_pins_its_base_and_runs_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", base), base
    assert text.count("FROM ${PYTHON_IMAGE}") == 2  # multi-stage
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users == ["65532:65532"]
    for source in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
        assert (ROOT / source).exists(), source
    scripts = {
        line.split("=")[0].strip()
        for line in (ROOT / "pyproject.toml")
        .read_text()
        .split("[project.scripts]")[1]
        .split("\n\n")[0]
        .splitlines()[1:]
    }
    commands = {c["command"][0] for _, c in _containers(render({}))}
    assert commands <= scripts


def test_the_node_cleanup_daemonset_validates_and_runs_the_agent_cleanup(tmp_path: Path) -> None:
    objects = [
        d
        for d in yaml.safe_load_all((ROOT / "deploy" / "cleanup" / "cleanup.yaml").read_text())
        if d
    ]
    for obj in objects:
        _validate(obj)
    (ds,) = [o for o in objects if o["kind"] == "DaemonSet"]
    (init,) = ds["spec"]["template"]["spec"]["initContainers"]
    assert init["command"] == ["katalyst-agent"]
    flags = _help_flags("katalyst-agent")
    assert {a.split("=", 1)[0] for a in init["args"]} <= flags
    files = {n: c for o in objects if o["kind"] == "ConfigMap" for n, c in o["data"].items()}
    args = [_local(a, tmp_path, files, {}) for a in init["args"]]
    assert load_agent(args, env={}).cleanup


def test_the_chart_scheduler_config_is_deploy_scheduler_config() -> None:
    """kube-scheduler's configuration in the chart's ConfigMap is the one of
    deploy/scheduler/ (which test_deploy checks against the extender)."""
    (config,) = [o for o in render({}) if o["metadata"]["name"] == "katalyst-scheduler-config"]
    ours = yaml.safe_load(config["data"]["scheduler-config.yaml"])
    shipped = yaml.safe_load((ROOT / "deploy" / "scheduler" / "scheduler-config.yaml").read_text())
    assert ours == shipped


def test_a_misspelt_field_fails_validation_on_every_kind() -> None:
    """Strict on built-in and third-party kinds alike: one wrong key fails."""
    objects = render(VARIANTS["monitoring"]) + render(VARIANTS["cert-manager"])
    checked: set[str] = set()
    for obj in objects:
        if obj["kind"] in checked or "spec" not in obj:
            continue
        checked.add(obj["kind"])
        broken = dict(obj, spec={**obj["spec"], "replicaz": 2})
        with pytest.raises(BaseException, match=r"replicaz|Additional properties"):
            _validate(broken)
    assert {"ServiceMonitor", "PrometheusRule", "Certificate", "Deployment"} <= checked


def test_a_fixed_cluster_ip_is_what_kube_scheduler_calls() -> None:
    """kube-scheduler on the host network cannot resolve cluster DNS names."""
    objects = {_key(o): o for o in render({"extender": {"clusterIP": "10.96.0.88"}})}
    service = objects[("Service", "katalyst-system", "katalyst-scheduler-extender")]
    assert service["spec"]["clusterIP"] == "10.96.0.88"
    config = objects[("ConfigMap", "katalyst-system", "katalyst-scheduler-config")]
    scheduler = yaml.safe_load(config["data"]["scheduler-config.yaml"])
    assert scheduler["extenders"][0]["urlPrefix"] == "http://10.96.0.88:8888"
