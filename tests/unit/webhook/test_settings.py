"""``--webhook-config`` and the webhook's flags: parsed, or refused naming the flag,
the file, the field and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from controllers.app import PROG
from controllers.config import ControllerConfig, FlagError, build_parser, load_config
from controllers.webhook.admission import DEFAULT_EXCLUDED_NAMESPACES, AdmissionConfig
from controllers.webhook.settings import AdmissionConfigError, parse_admission_config
from katalyst.qos import QoSLevel


def load(*argv: str) -> ControllerConfig:
    return load_config(build_parser(PROG, None), ["--identity", "x", *argv], env={})


def test_a_full_file() -> None:
    config = parse_admission_config(
        {
            "excludedNamespaces": ["kube-system", "monitoring"],
            "defaults": [
                {"qosLevel": "reclaimed_cores", "namespaces": ["batch"]},
                {"qosLevel": "shared_cores", "matchLabels": {"tier": "web", "app.io/x": ""}},
            ],
        }
    )
    assert config.excluded_namespaces == {"kube-system", "monitoring"}
    first, second = config.defaults.rules
    assert first.qos_level is QoSLevel.RECLAIMED_CORES and first.namespaces == {"batch"}
    assert second.qos_level is QoSLevel.SHARED_CORES
    assert dict(second.match_labels) == {"tier": "web", "app.io/x": ""}
    assert config.defaults.level_for(namespace="batch", labels={}) is QoSLevel.RECLAIMED_CORES


def test_an_empty_file_is_the_defaults() -> None:
    assert parse_admission_config(None) == AdmissionConfig()
    assert parse_admission_config({}).excluded_namespaces == DEFAULT_EXCLUDED_NAMESPACES


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "the document must be a map"),
        ({"excludedNamespace": []}, "unknown field 'excludedNamespace'"),
        ({"excludedNamespaces": "kube-system"}, "excludedNamespaces: must be a list"),
        ({"excludedNamespaces": ["Kube_System"]}, "excludedNamespaces[0]: 'Kube_System' is not"),
        ({"defaults": {"qosLevel": "x"}}, "defaults: must be a list of rules"),
        ({"defaults": ["x"]}, "defaults[0]: must be a map with qosLevel"),
        (
            {"defaults": [{"qosLevel": "gold", "namespaces": ["a"]}]},
            "defaults[0].qosLevel: 'gold' is not a QoS level (one of ",
        ),
        ({"defaults": [{"namespaces": ["a"]}]}, "defaults[0].qosLevel: None is not a QoS level"),
        (
            {"defaults": [{"qosLevel": "reclaimed_cores"}]},
            "defaults[0]: give namespaces, matchLabels or both",
        ),
        (
            {"defaults": [{"qosLevel": "reclaimed_cores", "labels": {"a": "b"}}]},
            "defaults[0]: unknown field 'labels'",
        ),
        (
            {"defaults": [{"qosLevel": "reclaimed_cores", "matchLabels": {"tier": True}}]},
            "defaults[0].matchLabels.tier: True is not a label value",
        ),
        (
            {"defaults": [{"qosLevel": "reclaimed_cores", "matchLabels": {"bad key!": "x"}}]},
            "defaults[0].matchLabels: 'bad key!' is not a label key",
        ),
    ],
)
def test_a_bad_document_names_the_field_and_the_rule(document: object, message: str) -> None:
    with pytest.raises(AdmissionConfigError) as raised:
        parse_admission_config(document)
    assert message in str(raised.value)


def test_the_flag_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "admission.yaml"
    path.write_text("defaults:\n  - qosLevel: reclaimed_cores\n    namespaces: [batch]\n")
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    config = load(
        "--webhook-addr",
        "0.0.0.0:9443",
        "--webhook-cert-dir",
        str(cert_dir),
        "--webhook-config",
        str(path),
    )
    assert config.webhook_config == path
    assert config.admission.defaults.rules[0].namespaces == {"batch"}
    assert config.webhook_max_body_bytes == 4 * 1024 * 1024
    assert config.webhook_service == "katalyst-webhook"
    assert config.webhook_configurations == "katalyst-webhook"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults: [{qosLevel: gold, namespaces: [a]}]", "defaults[0].qosLevel: 'gold'"),
        ("defaults: [", "is not YAML"),
    ],
)
def test_a_bad_file_is_a_flag_error_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "admission.yaml"
    path.write_text(text)
    with pytest.raises(FlagError) as raised:
        load("--webhook-config", str(path))
    assert str(raised.value).startswith(f"--webhook-config {path}: ")
    assert message in str(raised.value)


def test_a_missing_file_is_a_flag_error(tmp_path: Path) -> None:
    with pytest.raises(FlagError, match=r"--webhook-config .*missing.yaml: cannot be read"):
        load("--webhook-config", str(tmp_path / "missing.yaml"))


def test_the_webhook_is_off_by_default() -> None:
    assert load().webhook_addr == ""


def test_failure_policy_and_concurrency_flags() -> None:
    config = load()
    assert (config.webhook_failure_policy, config.webhook_max_concurrency) == ("Fail", 32)
    config = load("--webhook-failure-policy", "Ignore", "--webhook-max-concurrency", "4")
    assert (config.webhook_failure_policy, config.webhook_max_concurrency) == ("Ignore", 4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--webhook-addr", "0.0.0.0:9443"], "--webhook-addr: give exactly one of"),
        (
            [
                "--webhook-addr",
                "0.0.0.0:9443",
                "--webhook-cert-secret",
                "s",
                "--webhook-cert-dir",
                ".",
            ],
            "got both",
        ),
        (["--webhook-addr", "9443", "--webhook-cert-secret", "s"], "--webhook-addr: '9443' is not"),
        (["--webhook-cert-secret", "s"], "--webhook-cert-secret: needs --webhook-addr"),
        (["--webhook-cert-dir", "."], "--webhook-cert-dir: needs --webhook-addr"),
        (
            ["--webhook-addr", "0.0.0.0:1", "--webhook-cert-dir", "/nonexistent"],
            "--webhook-cert-dir: '/nonexistent' is not a directory",
        ),
        (
            ["--webhook-addr", "0.0.0.0:1", "--webhook-cert-secret", "Bad_Name"],
            "--webhook-cert-secret: 'Bad_Name' is not an object name",
        ),
        (["--webhook-service", "9svc"], "--webhook-service: '9svc' is not a Service name"),
        (["--webhook-configurations", "A"], "--webhook-configurations: 'A' is not an object"),
        (["--webhook-max-body-bytes", "lots"], "--webhook-max-body-bytes: 'lots' is not"),
        (["--webhook-max-body-bytes", "100"], "--webhook-max-body-bytes: must be a whole number"),
        (["--webhook-failure-policy", "fail"], "--webhook-failure-policy: must be Fail or Ignore"),
        (["--webhook-failure-policy", ""], "--webhook-failure-policy: must be Fail or Ignore"),
        (["--webhook-max-concurrency", "many"], "--webhook-max-concurrency: 'many' is not"),
        (["--webhook-max-concurrency", "0"], "--webhook-max-concurrency: must be a whole number"),
    ],
)
def test_a_bad_webhook_flag_is_refused_naming_it(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError) as raised:
        load(*argv)
    assert message in str(raised.value)
