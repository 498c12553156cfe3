"""``katalyst-controller``'s flags: defaults, the environment, and a message naming the
flag for every bad value (through ``main``, as a user meets them)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from controllers import app
from controllers.config import ControllerConfig, FlagError, build_parser, load_config
from katalyst import __version__

ALL_FLAGS = (
    "--kubeconfig",
    "--namespace",
    "--lease-name",
    "--identity",
    "--metrics-addr",
    "--resync-s",
    "--lease-duration-s",
    "--renew-deadline-s",
    "--retry-period-s",
    "--log-format",
    "--version",
)


@pytest.fixture(autouse=True)
def _root_logger() -> Iterator[None]:
    """``main`` configures logging (on the stderr pytest captures, closed after the
    test): put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def load(*argv: str, env: dict[str, str] | None = None) -> ControllerConfig:
    return load_config(build_parser("katalyst-controller", None), argv, env or {})


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        app.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ALL_FLAGS:
        assert flag in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        app.main(["--version"])
    assert exc.value.code == 0
    assert f"katalyst-controller {__version__}" in capsys.readouterr().out


def test_defaults_and_the_pods_environment() -> None:
    config = load(env={"POD_NAME": "ctl-7d9f-x2", "POD_NAMESPACE": "kube-system"})
    assert config.identity == "ctl-7d9f-x2"
    assert config.namespace == "kube-system"
    assert config.kubeconfig is None
    assert config.lease_name == "katalyst-controller"
    assert config.metrics_addr == "127.0.0.1:9317"
    assert (config.lease_duration_s, config.renew_deadline_s, config.retry_period_s) == (
        15,
        10.0,
        2.0,
    )
    assert config.resync_s == 300.0
    outside = load()
    assert outside.namespace == "katalyst-system"
    assert outside.identity != load().identity  # host name and a random suffix


def test_flags_override_the_environment(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("{}")
    config = load(
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        "ops",
        "--identity",
        "replica-1",
        "--lease-name",
        "qos.controller",
        "--metrics-addr",
        "0.0.0.0:0",
        "--resync-s",
        "60",
        "--lease-duration-s",
        "1",
        "--renew-deadline-s",
        "0.6",
        "--retry-period-s",
        "0.2",
        env={"POD_NAME": "ignored", "POD_NAMESPACE": "ignored"},
    )
    assert config.kubeconfig == kubeconfig
    assert (config.namespace, config.identity, config.lease_name) == (
        "ops",
        "replica-1",
        "qos.controller",
    )
    assert (config.lease_duration_s, config.renew_deadline_s, config.retry_period_s) == (
        1,
        0.6,
        0.2,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kubeconfig", "/no/such/file"], "--kubeconfig: '/no/such/file' is not a file"),
        (["--namespace", "Kube_System"], "--namespace: 'Kube_System' is not a namespace name"),
        (["--lease-name=Lease"], "--lease-name: 'Lease' is not an object name"),
        (["--identity", ""], "--identity: '' must be 1 to 253 printable characters"),
        (["--metrics-addr", "9317"], "--metrics-addr: '9317' is not host:port"),
        (["--metrics-addr", "bad host:80"], "--metrics-addr: 'bad host' is not an IP address"),
        (["--resync-s", "0"], "--resync-s: must be a finite number > 0, got 0.0"),
        (["--resync-s", "often"], "--resync-s: 'often' is not a number"),
        (["--retry-period-s", "nan"], "--retry-period-s: must be a finite number > 0"),
        (["--lease-duration-s", "1.5"], "--lease-duration-s: '1.5' is not a whole number"),
        (["--lease-duration-s", "0"], "--lease-duration-s: must be a whole number of seconds >= 1"),
        (
            ["--renew-deadline-s", "15"],
            "--renew-deadline-s: must be less than --lease-duration-s (15), got 15.0",
        ),
        (
            ["--retry-period-s", "9"],
            "--renew-deadline-s: must be more than 1.2 x --retry-period-s (10.8), got 10.0",
        ),
    ],
)
def test_a_bad_flag_is_refused_naming_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(FlagError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        load(*argv, "--identity", "x") if "--identity" not in argv else load(*argv)
    assert app.main([*argv, "--identity", "x"] if "--identity" not in argv else argv) == 2
    assert capsys.readouterr().err.strip().startswith(f"katalyst-controller: error: {message}")


def test_an_unknown_log_format_is_refused_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        app.main(["--log-format", "xml"])
    assert exc.value.code == 2
    assert "--log-format" in capsys.readouterr().err


def test_outside_a_cluster_without_kubeconfig_it_says_what_to_give(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert app.main(["--identity", "x", "--metrics-addr", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert "katalyst-controller: error: in-cluster service account" in err
    assert "--kubeconfig" in err


def test_a_kubeconfig_that_does_not_load_is_a_start_up_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [")
    assert app.main(["--kubeconfig", str(bad), "--identity", "x"]) == 2
    assert f"katalyst-controller: error: kubeconfig {bad}" in capsys.readouterr().err
