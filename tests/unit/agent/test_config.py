"""The agent's configuration loader: file, then environment, then flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, LogFormat, Mode, build_parser, load_config
from agent.errors import ConfigError
from katalyst.cpuset import CPUSet


def test_defaults() -> None:
    config = load_config([], env={})
    assert config.mode is Mode.QRM
    assert config.metrics_addr == "127.0.0.1:9316"
    assert config.qrm_socket_dir == Path("/var/lib/kubelet/plugins_registry")
    assert config.reserved_cpus == CPUSet.of([0])
    assert config.log_format is LogFormat.TEXT
    assert config.node_name


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text("mode: orm\nnode_name: from-file\nreserved_cpus: 0-1\nlog_format: json\n")
    env = {"KATALYST_NODE_NAME": "from-env", "KATALYST_MODE": "qrm"}
    config = load_config(["--config", str(file), "--node-name", "from-flag"], env=env)
    assert config.node_name == "from-flag"
    assert config.mode is Mode.QRM
    assert config.reserved_cpus == CPUSet.parse("0-1")
    assert config.log_format is LogFormat.JSON


def test_every_field_has_a_flag_or_is_a_config_file_section() -> None:
    help_text = build_parser().format_help()
    for name in AgentConfig.__dataclass_fields__:
        if name in ("sysadvisor", "eviction", "reporter", "network", "io"):
            assert f"{name}:" in help_text  # named as a section of --config
        else:
            assert "--" + name.replace("_", "-") in help_text
    assert "--config" in help_text


def test_sections_of_the_config_file_are_loaded_and_validated(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "sysadvisor:\n  period_s: 2\n  limits: {ramp_up_cpus_per_period: 1.5}\neviction: {}\n"
    )
    config = load_config(["--config", str(good)], env={})
    assert config.sysadvisor.period_s == 2
    assert config.sysadvisor.limits.ramp_up_cpus_per_period == 1.5

    bad = tmp_path / "bad.yaml"
    bad.write_text("sysadvisor:\n  indicators:\n    cpu_usage_ratio: {target: -1}\n")
    with pytest.raises(ConfigError, match=r"sysadvisor\.indicators\.cpu_usage_ratio\.target"):
        load_config(["--config", str(bad)], env={})

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("eviction: [1, 2]\n")
    with pytest.raises(ConfigError, match="eviction must be a mapping"):
        load_config(["--config", str(wrong)], env={})


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--mode", "fast"], {}, "mode (from --mode): 'fast' is not one of qrm, orm"),
        (["--node-name", "Bad_Name"], {}, "node_name (from --node-name): 'Bad_Name' is not a DNS"),
        (["--reserved-cpus", "3-1"], {}, "reserved_cpus (from --reserved-cpus): cpu list"),
        (["--metrics-addr", "localhost"], {}, "metrics_addr (from --metrics-addr): 'localhost'"),
        (["--metrics-addr", "1.2.3.4:99999"], {}, "port in 0-65535"),
        (["--cgroup-root", "../etc"], {}, "cgroup_root (from --cgroup-root)"),
        ([], {"KATALYST_LOG_FORMAT": "xml"}, "log_format (from $KATALYST_LOG_FORMAT)"),
    ],
)
def test_bad_values_name_the_field_and_source(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(argv, env=env)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("mode: [1, 2]\n", "expected a string, got list"),
        ("- a\n- b\n", "must be a mapping of settings"),
        ("speed: 3\n", "unknown settings speed"),
        ("mode: 'qrm\n", "not valid YAML"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(["--config", str(file)], env={})


def test_a_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(["--config", str(tmp_path / "nope.yaml")], env={})


def test_an_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        load_config(["--speed", "3"], env={})
    assert exc.value.code == 2
    assert "unrecognized arguments: --speed" in capsys.readouterr().err
