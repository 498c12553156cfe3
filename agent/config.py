"""The agent's start-up configuration: one loader, file then environment then flags.

Every field is documented with its unit and default; values are validated at
start-up and a bad one stops the agent with a one-line message naming the field
(exit status 2). What SREs tune at run time (targets, gains, thresholds) comes
on top of the sections here from the dynamic configuration (``agent.dynconfig``;
standalone: ``--dynamic-config DIR``).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from agent.errors import ConfigError
from agent.isolation.network import NetworkConfig
from katalyst.cgroup import validate_cgroup_path
from katalyst.cgroup.errors import CgroupInvalidValue
from katalyst.config.eviction import EvictionConfig
from katalyst.config.io import IOConfig
from katalyst.config.reporter import ReporterConfig
from katalyst.config.sysadvisor import AdvisorConfig
from katalyst.cpuset import CPUSet
from katalyst.entrypoint import base_parser

ENV_PREFIX = "KATALYST_"
_DNS_SUBDOMAIN = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", re.ASCII
)
# A label's name part, and its value (which may be empty): Kubernetes' rules.
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", re.ASCII)


class Mode(enum.StrEnum):
    """How the agent attaches to the node's kubelet."""

    QRM = "qrm"
    """The (patched) kubelet calls the QoS resource manager hook on our sockets."""
    ORM = "orm"
    """A vanilla kubelet: the agent watches its pods and writes cgroups itself."""


class LogFormat(enum.StrEnum):
    """How log lines are written."""

    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything the agent needs to start."""

    node_name: str = field(default_factory=lambda: socket.gethostname().lower())
    """This node's name as the API server knows it (a DNS subdomain). Default: the hostname."""
    mode: Mode = Mode.QRM
    """``qrm`` or ``orm``; ignored with ``standalone``. Default ``qrm``."""
    standalone: Path | None = None
    """A folder of Pod manifests: run without a cluster, the local node playing the kubelet."""
    qrm_socket_dir: Path = Path("/var/lib/kubelet/plugins_registry")
    """Where the plugin sockets are created (the kubelet's plugin watcher directory)."""
    state_dir: Path = Path("/var/lib/katalyst")
    """Checkpoints (allocations, dynamic config). Created 0700 if missing."""
    cgroup_root: str = "kubepods"
    """The cgroup, relative to each hierarchy's root, under which pods live."""
    reserved_cpus: CPUSet = field(default_factory=lambda: CPUSet.of([0]))
    """CPUs kept for the system (the reserve pool), kernel list format. Default ``0``."""
    metrics_addr: str = "127.0.0.1:9316"
    """``host:port`` of the /metrics and /healthz HTTP endpoint (port 0: any free port)."""
    kubeconfig: Path | None = None
    """A kubeconfig for the API server; None: in-cluster service account (ORM mode)."""
    log_format: LogFormat = LogFormat.TEXT
    """``text`` or ``json``."""
    sysadvisor: AdvisorConfig = field(default_factory=AdvisorConfig)
    """The headroom loop (``sysadvisor:`` section of the config file only)."""
    eviction: EvictionConfig = field(default_factory=EvictionConfig)
    """The eviction manager (``eviction:`` section of the config file only)."""
    reporter: ReporterConfig = field(default_factory=ReporterConfig)
    """The reporter of reclaimed capacity (``reporter:`` section of the config file only)."""
    network: NetworkConfig = field(default_factory=NetworkConfig)
    """The NIC inventory and network isolation (``network:`` section of the config file
    only)."""
    io: IOConfig = field(default_factory=IOConfig)
    """Block IO isolation (``io:`` section of the config file only)."""
    dynamic_config: Path | None = None
    """A folder of ``AdminQoSConfiguration`` YAML files (and optionally a
    ``KatalystCustomConfig``): the agent resolves its own layers from them (by
    ``node_name`` and ``node_labels``) and applies them without a restart, reloading
    when a file changes. None (default): no dynamic configuration from files."""
    node_labels: Mapping[str, str] = field(default_factory=dict)
    """This node's labels for the node-pool selectors of ``dynamic_config``
    (``k=v,k2=v2``; in the config file also a mapping). Default none."""
    cleanup: bool = False
    """``--cleanup`` (flag only): remove what the agent wrote to the kernel beyond pod
    cgroups (its tc trees, nftables tables, net_cls classids, IO throttles) and exit."""


# Flag name -> (field, help). The single table keeps --help, the environment
# variables and the config file keys in step.
_FIELDS: tuple[tuple[str, str], ...] = (
    ("node_name", "this node's name as the API server knows it (default: the hostname)"),
    ("mode", "qrm: a patched kubelet calls our sockets; orm: vanilla kubelet (default qrm)"),
    ("standalone", "run without a cluster: DIR holds Pod manifests the local node runs"),
    (
        "qrm_socket_dir",
        "directory of the plugin sockets (default /var/lib/kubelet/plugins_registry)",
    ),
    ("state_dir", "directory of checkpoints (default /var/lib/katalyst)"),
    ("cgroup_root", "cgroup below which pods live, relative to each hierarchy (default kubepods)"),
    ("reserved_cpus", "CPUs of the reserve pool, kernel list format such as 0-1 (default 0)"),
    ("metrics_addr", "host:port of /metrics and /healthz (default 127.0.0.1:9316)"),
    ("kubeconfig", "kubeconfig file; default: the in-cluster service account"),
    ("log_format", "text or json (default text)"),
    (
        "dynamic_config",
        "folder of AdminQoSConfiguration YAML files applied without a restart, reloaded on "
        "change (docs/configuration.md)",
    ),
    ("node_labels", "this node's labels for the dynamic config's node-pool selectors: k=v,k2=v2"),
)


def build_parser(prog: str = "katalyst-agent") -> argparse.ArgumentParser:
    """The agent's flags; every one can also come from the config file or environment."""
    parser = base_parser(
        prog,
        "The node agent. Settings come from --config FILE (YAML, keys as the flags with "
        f"underscores), then {ENV_PREFIX}<FLAG> environment variables, then flags. The "
        "file alone may also hold the sections sysadvisor: (docs/headroom.md), "
        "eviction: (docs/eviction.md), reporter: (docs/reporter.md), network: and io: "
        "(docs/isolation.md).",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file with any of the settings below")
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="remove the agent's tc trees, nftables tables, net_cls classids and IO "
        "throttles (per the network: and io: settings), then exit",
    )
    for name, text in _FIELDS:
        flag = "--" + name.replace("_", "-")
        metavar = {
            "standalone": "DIR",
            "kubeconfig": "FILE",
            "qrm_socket_dir": "DIR",
            "state_dir": "DIR",
            "dynamic_config": "DIR",
            "node_labels": "K=V,...",
        }
        parser.add_argument(flag, dest=name, default=None, metavar=metavar.get(name), help=text)
    return parser


def _convert(name: str, raw: object, source: str) -> object:
    """Turn one raw value into the field's type, or ConfigError naming it."""
    where = f"{name} (from {source})"
    if name == "node_labels":
        return _labels(raw, where)
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ConfigError(f"{where}: expected a string, got {type(raw).__name__}")
    text = str(raw).strip()
    if name == "node_name":
        if len(text) > 253 or not _DNS_SUBDOMAIN.fullmatch(text):
            raise ConfigError(
                f"{where}: {text!r} is not a DNS subdomain (lowercase, digits, '-', '.')"
            )
        return text
    if name == "mode":
        try:
            return Mode(text)
        except ValueError:
            raise ConfigError(f"{where}: {text!r} is not one of qrm, orm") from None
    if name == "log_format":
        try:
            return LogFormat(text)
        except ValueError:
            raise ConfigError(f"{where}: {text!r} is not one of text, json") from None
    if name in ("standalone", "qrm_socket_dir", "state_dir", "kubeconfig", "dynamic_config"):
        if not text or "\x00" in text:
            raise ConfigError(f"{where}: must be a path")
        return Path(text)
    if name == "cgroup_root":
        try:
            root = validate_cgroup_path(text.strip("/"))
        except CgroupInvalidValue as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not root:
            # The agent creates and removes its cgroups below this root; an empty
            # one would make it the hierarchy's root (or the agent's own cgroup).
            raise ConfigError(f"{where}: must name a cgroup, not the root")
        return root
    if name == "reserved_cpus":
        try:
            cpus = CPUSet.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return cpus
    if name == "metrics_addr":
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"{where}: {text!r} is not host:port with a port in 0-65535")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if not _DNS_SUBDOMAIN.fullmatch(host.lower()):
                raise ConfigError(f"{where}: {host!r} is not an IP address or host name") from None
        return text
    raise ConfigError(f"{where}: unknown setting")  # pragma: no cover - table and code agree


def _labels(raw: object, where: str) -> dict[str, str]:
    """``k=v,k2=v2`` (or a mapping, from the file) as labels, each checked."""
    if isinstance(raw, Mapping):
        pairs = [(str(k), v) for k, v in raw.items()]
    elif isinstance(raw, str):
        pairs = []
        for item in (i.strip() for i in raw.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"{where}: {item!r} is not key=value")
            pairs.append((key.strip(), value.strip()))
    else:
        raise ConfigError(f"{where}: expected k=v,k2=v2 or a mapping, got {type(raw).__name__}")
    labels: dict[str, str] = {}
    for key, value in pairs:
        prefix, slash, name = key.rpartition("/")
        if (slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix))) or (
            not _LABEL_NAME.fullmatch(name)
        ):
            raise ConfigError(f"{where}: {key!r} is not a label key ([prefix/]name)")
        if not isinstance(value, str) or (value and not _LABEL_NAME.fullmatch(value)):
            raise ConfigError(f"{where}: label {key}: {value!r} is not a label value")
        if key in labels:
            raise ConfigError(f"{where}: label {key} is given twice")
        labels[key] = value
    return labels


#: Nested sections of the config file: name -> loader (validating, naming the field).
_SECTIONS: Mapping[str, Callable[[Mapping[str, object]], object]] = {
    "sysadvisor": lambda m: AdvisorConfig.from_mapping(m, where="sysadvisor"),
    "eviction": lambda m: EvictionConfig.from_mapping(m, where="eviction"),
    "reporter": lambda m: ReporterConfig.from_mapping(m, where="reporter"),
    "network": lambda m: NetworkConfig.from_mapping(m, where="network"),
    "io": lambda m: IOConfig.from_mapping(m, where="io"),
}


def _section(name: str, raw: object, path: str) -> object:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"--config {path}: {name} must be a mapping, not {type(raw).__name__}")
    try:
        return _SECTIONS[name]({str(k): v for k, v in raw.items()})
    except ValueError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None


def _from_file(path: str) -> Mapping[str, object]:
    try:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"--config {path}: must be a mapping of settings, not {type(loaded).__name__}"
        )
    known = {name for name, _ in _FIELDS} | set(_SECTIONS)
    unknown = sorted(str(k) for k in loaded if k not in known)
    if unknown:
        raise ConfigError(f"--config {path}: unknown settings {', '.join(unknown)}")
    return {str(k): v for k, v in loaded.items()}


def load_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> AgentConfig:
    """Parse flags, read ``--config``, overlay the environment, then the flags.

    Raises :class:`ConfigError` for a bad value; argparse itself exits 2 for an
    unknown flag.
    """
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    values: dict[str, object] = {}
    if args.config is not None:
        for name, raw in _from_file(args.config).items():
            if name in _SECTIONS:
                values[name] = _section(name, raw, args.config)
            else:
                values[name] = _convert(name, raw, f"--config {args.config}")
    for name, _ in _FIELDS:
        var = ENV_PREFIX + name.upper()
        if var in env:
            values[name] = _convert(name, env[var], f"${var}")
    for name, _ in _FIELDS:
        raw = getattr(args, name)
        if raw is not None:
            values[name] = _convert(name, raw, "--" + name.replace("_", "-"))
    values["cleanup"] = bool(args.cleanup)
    return dataclasses.replace(AgentConfig(), **values)  # type: ignore[arg-type]
