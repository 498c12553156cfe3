"""The dynamic configuration's core: partial layers merged over the agent's own
settings, a whole set applied to the running loops all or nothing, and the
checkpoint of the applied layers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agent.config import AgentConfig, load_config
from agent.dynconfig import (
    DynamicConfigError,
    DynamicSettings,
    Layer,
    LayerCheckpoint,
    SettingsApplier,
    changes,
    from_layers,
)
from agent.dynconfig.sink import service_targets_hook
from agent.errors import ConfigError
from agent.eviction import EvictionManager, build_plugins
from agent.isolation.io_loop import BlockDevices, IOLoop
from agent.isolation.network import InterfaceConfig, NetworkConfig
from agent.metaserver.metrics import ContainerRef, MetricsCollector, MetricsLoop
from agent.observability import Heartbeat
from agent.qrm.cpu import CPUPolicy
from agent.qrm.server import PluginServer
from agent.sysadvisor import Advisor, AdvisorConfig
from agent.sysadvisor.loop import AdvisorLoop
from katalyst.cgroup import open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.checkpoint import CheckpointStore
from katalyst.clock import FakeClock
from katalyst.config.eviction import EvictionConfig
from katalyst.config.io import IOConfig
from katalyst.cpuset import CPUSet
from katalyst.dynconfig import merge_layers, parse_service_overrides, spec_hash
from katalyst.qos import PodView
from katalyst.topology import read_cpu_topology
from tests.unit.isolation.test_network import make_loop as make_network_loop
from tests.unit.qrm.cpu.machines import write_flat_machine

# ---- merging and validating layers ------------------------------------------------------


def test_layers_merge_field_by_field_and_null_lets_the_level_below_show() -> None:
    cluster = {"sysadvisor": {"period_s": 2, "limits": {"ramp_up_cpus_per_period": 1}}}
    pool = {"sysadvisor": {"limits": {"reclaim_floor_cpus": 1}}, "reclaim": {"enabled": False}}
    named = {"sysadvisor": {"period_s": None}, "io": {"devices": ["8:0"]}}
    assert merge_layers([cluster, pool, named]) == {
        "sysadvisor": {"limits": {"ramp_up_cpus_per_period": 1, "reclaim_floor_cpus": 1}},
        "reclaim": {"enabled": False},
        "io": {"devices": ["8:0"]},
    }
    base = AgentConfig(sysadvisor=AdvisorConfig(period_s=0.5))
    settings = from_layers(base, [cluster, pool, named])
    assert settings.sysadvisor.period_s == 0.5  # the null: the agent's own file shows
    assert settings.sysadvisor.limits.ramp_up_cpus_per_period == 1.0
    assert settings.sysadvisor.limits.reclaim_floor_cpus == 1.0
    assert settings.io.devices == ("8:0",)
    assert not settings.reclaim_enabled
    # Whatever no layer names is the agent's own.
    assert settings.eviction == base.eviction
    assert settings.network == base.network


def test_no_layer_is_the_agent_s_own_settings() -> None:
    base = AgentConfig(io=IOConfig(period_s=3.0))
    assert from_layers(base, []) == DynamicSettings.of(base)
    assert DynamicSettings.of(base).reclaim_enabled


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (
            {"sysadvisor": {"indicators": {"cpu_usage_ratio": {"target": -1}}}},
            "spec.config.sysadvisor.indicators.cpu_usage_ratio.target: must be > 0",
        ),
        (
            {"eviction": {"rate_limit": {"burst": 0}}},
            "spec.config.eviction.rate_limit.burst: must be an integer >= 1",
        ),
        ({"io": {"pressure_target": 0}}, "spec.config.io.pressure_target: must be a finite"),
        ({"network": {"headroom_ratio": 2}}, "spec.config.network.headroom_ratio"),
        ({"reclaim": {"enabled": "yes"}}, "spec.config.reclaim.enabled: must be true or false"),
        ({"reclaim": {"on": True}}, "spec.config.reclaim: unknown key 'on'"),
        ({"sysadvisr": {}}, "spec.config.sysadvisr: unknown section"),
        (
            {"network": {"interfaces": [{"name": "eth1"}]}},
            "spec.config.network.interfaces: not allowed in a dynamic config",
        ),
        ({"eviction": [1]}, "spec.config.eviction: must be a mapping"),
        (
            {"sysadvisor": {"indicators": {"cpu_fast": {"target": 1}}}},
            "spec.config.sysadvisor.indicators.cpu_fast: unknown setting",
        ),
    ],
)
def test_a_bad_layer_names_the_field(layer: dict[str, object], message: str) -> None:
    with pytest.raises(DynamicConfigError) as exc:
        from_layers(AgentConfig(), [layer])
    assert message in str(exc.value)


def test_changes_name_every_setting_that_differs() -> None:
    base = DynamicSettings.of(AgentConfig())
    new = from_layers(
        base,
        [
            {
                "reclaim": {"enabled": False},
                "sysadvisor": {"indicators": {"cpu_usage_ratio": {"target": 0.5}}},
                "io": {"devices": ["8:0"]},
            }
        ],
    )
    assert changes(base, new) == [
        "reclaim.enabled: true -> false",
        "sysadvisor.indicators.cpu_usage_ratio.target: 0.6 -> 0.5",
        'io.devices: [] -> ["8:0"]',
    ]
    assert changes(new, new) == []
    assert base.hash != new.hash
    assert base.hash == DynamicSettings.of(AgentConfig()).hash
    # The library's hash, as the controller computes it for a spec.
    assert new.hash == spec_hash(new.to_mapping())


# ---- the applier ------------------------------------------------------------------------


@dataclasses.dataclass
class Loops:
    advisor: AdvisorLoop
    eviction: EvictionManager
    io: IOLoop
    metrics: MetricsLoop
    beats: list[Heartbeat]
    applier: SettingsApplier


def loops(tmp_path: Path, base: AgentConfig) -> Loops:
    """The agent's loops, built (not run), and an applier over them."""
    clock = FakeClock()
    driver = open_driver(FakeCgroupFS.hybrid(cpus="0-7"))
    metrics = MetricsLoop(MetricsCollector(driver, clock=clock), list, clock=clock)
    cpu = CPUPolicy(
        topology=read_cpu_topology(str(write_flat_machine(tmp_path / "sys", cpus=8))),
        reserved=CPUSet.parse("0"),
    )
    advisor = AdvisorLoop(
        Advisor(base.sysadvisor),
        metrics=metrics,
        cpu=cpu,
        cpu_server=PluginServer(cpu, socket_dir=tmp_path, clock=clock),
        driver=driver,
        reclaimed_cgroup=lambda: None,
        clock=clock,
    )
    eviction = EvictionManager(base.eviction, plugins=build_plugins(base.eviction), clock=clock)
    io = IOLoop(
        base.io,
        driver=driver,
        containers=list,
        reclaimed_cgroup=lambda: None,
        clock=clock,
        devices=BlockDevices(sysfs=str(tmp_path / "sys")),
        offload=False,
    )
    beats = [Heartbeat("sysadvisor", 30.0), Heartbeat("io", 30.0), Heartbeat("eviction", 60.0)]
    applier = SettingsApplier(
        base, advisor=advisor, eviction=eviction, io=io, metrics=metrics, heartbeats=beats
    )
    return Loops(advisor, eviction, io, metrics, beats, applier)


def test_apply_hands_each_changed_section_to_its_loop(tmp_path: Path) -> None:
    base = AgentConfig()
    run = loops(tmp_path, base)
    settings = from_layers(
        base,
        [
            {
                "reclaim": {"enabled": False},
                "sysadvisor": {"period_s": 5},
                "eviction": {"rate_limit": {"per_minute": 1}},
                "io": {"period_s": 10},
            }
        ],
    )
    changed = run.applier.apply(settings)
    assert changed == [
        "reclaim.enabled: true -> false",
        "sysadvisor.period_s: 1.0 -> 5.0",
        "eviction.rate_limit.per_minute: 6.0 -> 1.0",
        "io.period_s: 1.0 -> 10.0",
    ]
    assert run.applier.current == settings
    assert run.advisor.config.period_s == 5.0
    assert not run.advisor.reclaim_enabled
    assert run.metrics.period == 5.0  # the metrics loop runs at the advisor's period
    assert run.eviction.config.rate_limit.per_minute == 1.0
    assert run.io.config.period_s == 10.0
    # Ten periods before /healthz calls a loop stale, as at start-up.
    assert [b.max_age for b in run.beats] == [50.0, 100.0, 60.0]
    assert run.applier.apply(settings) == []  # nothing new


def test_an_invalid_set_changes_no_loop(tmp_path: Path) -> None:
    base = AgentConfig(network=NetworkConfig(interfaces=(InterfaceConfig(name="eth0"),)))
    run = loops(tmp_path, base)
    network, _, _ = make_network_loop(base.network)
    applier = SettingsApplier(
        base, advisor=run.advisor, eviction=run.eviction, network=network, io=run.io
    )
    good = from_layers(base, [{"sysadvisor": {"period_s": 5}, "eviction": {"retry_after_s": 1}}])
    moved = dataclasses.replace(
        good,
        network=dataclasses.replace(
            good.network, interfaces=(InterfaceConfig(name="eth1"),), headroom_ratio=0.3
        ),
    )
    with pytest.raises(DynamicConfigError, match=r"network\.interfaces: fixed at start-up"):
        applier.apply(moved)
    assert applier.current == applier.base
    assert run.advisor.config == base.sysadvisor
    assert run.eviction.config == base.eviction
    assert network.config == base.network
    bad_advisor = dataclasses.replace(good, sysadvisor=AdvisorConfig(period_s=0.0))
    with pytest.raises(DynamicConfigError, match=r"sysadvisor\.period_s: must be in"):
        applier.apply(bad_advisor)
    assert run.eviction.config == base.eviction
    # The good part alone applies.
    assert applier.apply(good) == [
        "sysadvisor.period_s: 1.0 -> 5.0",
        "eviction.retry_after_s: 30.0 -> 1.0",
    ]


def test_the_io_loop_cannot_be_switched_on_when_it_was_not_started() -> None:
    base = AgentConfig(io=IOConfig(enabled=False))
    applier = SettingsApplier(base)  # no IO loop: io.enabled was false at start
    on = from_layers(base, [{"io": {"enabled": True}}])
    with pytest.raises(DynamicConfigError, match=r"io\.enabled: the IO loop was not started"):
        applier.apply(on)
    # Other IO settings are kept for the day it is: nothing runs them meanwhile.
    assert applier.apply(from_layers(base, [{"io": {"period_s": 2}}])) == [
        "io.period_s: 1.0 -> 2.0"
    ]


# ---- the checkpoint -----------------------------------------------------------------


LAYERS = [
    Layer("katalyst-system/cluster", "cluster", "aaaa", {"reclaim": {"enabled": False}}, "c.yaml"),
    Layer(
        "katalyst-system/batch",
        "pool",
        "bbbb",
        {"sysadvisor": {"indicators": {"cpu_usage_ratio": {"target": 0.5}}}},
        "p.yaml",
    ),
]


def test_the_checkpoint_round_trips_the_layers(tmp_path: Path) -> None:
    checkpoint = LayerCheckpoint(tmp_path / "checkpoints" / "dynamic_config")
    assert checkpoint.load() is None
    checkpoint.save(LAYERS, applied_at=1234.5)
    assert LayerCheckpoint(checkpoint.path).load() == (LAYERS, 1234.5)
    checkpoint.save([], applied_at=1300.0)
    assert checkpoint.load() == ([], 1300.0)


def test_a_corrupt_checkpoint_is_set_aside_and_the_base_stays(tmp_path: Path) -> None:
    checkpoint = LayerCheckpoint(tmp_path / "dynamic_config")
    checkpoint.save(LAYERS, applied_at=1.0)
    text = checkpoint.path.read_text()
    checkpoint.path.write_text(text.replace("0.5", "0.1"))  # no longer matches its checksum
    assert checkpoint.load() is None
    assert not checkpoint.path.exists()
    assert list(tmp_path.glob("dynamic_config.corrupt-*"))


def test_a_checkpoint_of_another_layout_is_not_used(tmp_path: Path) -> None:
    checkpoint = LayerCheckpoint(tmp_path / "dynamic_config")
    CheckpointStore(tmp_path).save("dynamic_config", {"version": 99, "layers": []})
    assert checkpoint.load() is None
    CheckpointStore(tmp_path).save(
        "dynamic_config", {"version": 1, "applied_at": 1, "layers": [{"name": 1}]}
    )
    assert checkpoint.load() is None


def test_the_checkpoint_file_is_plain_json(tmp_path: Path) -> None:
    checkpoint = LayerCheckpoint(tmp_path / "dynamic_config")
    checkpoint.save(LAYERS[:1], applied_at=2.0)
    data = json.loads(checkpoint.path.read_text())["data"]
    assert data["layers"][0] == {
        "name": "katalyst-system/cluster",
        "level": "cluster",
        "hash": "aaaa",
        "source": "c.yaml",
        "config": {"reclaim": {"enabled": False}},
        "service_overrides": [],
    }


def test_service_overrides_survive_the_checkpoint(tmp_path: Path) -> None:
    override = {
        "namespace": "default",
        "selector": {"matchLabels": {"app": "web"}},
        "indicators": {"cpu_usage_ratio": {"target": 0.5}},
    }
    layer = dataclasses.replace(LAYERS[0], service_overrides=(override,))
    checkpoint = LayerCheckpoint(tmp_path / "dynamic_config")
    checkpoint.save([layer], applied_at=2.0)
    loaded = checkpoint.load()
    assert loaded is not None and loaded[0][0].service_overrides == (override,)


# ---- the flags ------------------------------------------------------------------------


def test_the_dynamic_config_flags(tmp_path: Path) -> None:
    config = load_config(
        ["--dynamic-config", str(tmp_path), "--node-labels", "node-pool=batch, zone=a,x.io/gpu="],
        env={},
    )
    assert config.dynamic_config == tmp_path
    assert config.node_labels == {"node-pool": "batch", "zone": "a", "x.io/gpu": ""}
    file = tmp_path / "agent.yaml"
    file.write_text("node_labels: {node-pool: web}\n")
    assert load_config(["--config", str(file)], env={}).node_labels == {"node-pool": "web"}


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("pool", "'pool' is not key=value"),
        ("a=b,a=c", "label a is given twice"),
        ("a-=b", "'a-' is not a label key"),
        ("a=b c", "'b c' is not a label value"),
    ],
)
def test_bad_node_labels_name_the_flag(labels: str, message: str) -> None:
    with pytest.raises(ConfigError, match="node_labels \\(from --node-labels\\)") as exc:
        load_config(["--node-labels", labels], env={})
    assert message in str(exc.value)


def test_eviction_section_of_a_layer_keeps_the_base_where_unnamed() -> None:
    base = AgentConfig(eviction=EvictionConfig.from_mapping({"retry_after_s": 5}))
    got = from_layers(base, [{"eviction": {"memory_pressure": {"consecutive_samples": 9}}}])
    assert got.eviction.retry_after_s == 5.0
    assert got.eviction.memory_pressure.consecutive_samples == 9


def _pod(uid: str, namespace: str, labels: dict[str, str]) -> PodView:
    return PodView.from_dict(
        {
            "metadata": {"uid": uid, "name": f"p-{uid}", "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "c"}]},
        }
    )


def test_the_advisors_hook_takes_the_lowest_service_target_of_a_regions_pods() -> None:
    overrides = parse_service_overrides(
        [
            {
                "namespace": "default",
                "selector": {"matchLabels": {"app": "web"}},
                "indicators": {"cpu_usage_ratio": {"target": 0.5}},
            },
            {
                "namespace": "default",
                "selector": {"matchLabels": {"tier": "gold"}},
                "indicators": {
                    "cpu_usage_ratio": {"target": 0.4},
                    "cpu_sched_wait": {"target": 200},
                },
            },
        ]
    )
    pods = [
        _pod("a", "default", {"app": "web"}),
        _pod("b", "default", {"tier": "gold"}),
        _pod("c", "other", {"app": "web"}),  # another namespace: no override
    ]
    hook = service_targets_hook(lambda: overrides, lambda: pods)

    def refs(*uids: str) -> list[ContainerRef]:
        return [
            ContainerRef("default", f"p-{u}", "c", "shared_cores", f"{u}/c", pod_uid=u)
            for u in uids
        ]

    assert hook(refs("a")) == {"cpu_usage_ratio": 0.5}
    assert hook(refs("a", "b")) == {"cpu_usage_ratio": 0.4, "cpu_sched_wait": 200.0}
    assert hook(refs("c", "gone")) == {}
    assert service_targets_hook(lambda: (), lambda: pods)(refs("a")) == {}
