"""The plugin watcher's handshake and the plugin options, through the kubelet emulator."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from agent.qrm.server import PluginServer
from agent.qrm.types import PluginOptions
from katalyst.api.pluginregistration import api_pb2 as reg_pb2
from katalyst.api.resourceplugin.v1alpha1 import api_pb2 as rp_pb2
from tests.integration.fake_policy import FakePolicy
from tests.support.kubelet import Container, KubeletEmulator, PluginCallError, Pod


async def test_get_info_names_the_resource_and_the_socket(
    server: PluginServer, socket_dir: Path
) -> None:
    async with KubeletEmulator() as kubelet:
        found = await kubelet.discover(socket_dir)
    assert [p.socket.name for p in found] == ["qrm_fake_cpu.sock"]
    assert found[0].info == reg_pb2.PluginInfo(
        type="ResourcePlugin",
        name="cpu",
        endpoint=str(socket_dir / "qrm_fake_cpu.sock"),
        supported_versions=["v1alpha1"],
    )
    assert server.socket_path == socket_dir / "qrm_fake_cpu.sock"


async def test_successful_registration_is_recorded(server: PluginServer, socket_dir: Path) -> None:
    assert not server.registered
    async with KubeletEmulator() as kubelet:
        await kubelet.discover(socket_dir)
    assert server.registered
    assert server.last_registration_error is None


async def test_a_refused_registration_is_recorded_with_the_kubelets_error(
    server: PluginServer, kubelet: KubeletEmulator
) -> None:
    verdict = reg_pb2.RegistrationStatus(
        plugin_registered=False, error="resource cpu is already served by another plugin"
    )
    await kubelet.plugin("cpu").registration.NotifyRegistrationStatus(verdict, timeout=10)
    assert not server.registered
    assert server.last_registration_error == "resource cpu is already served by another plugin"


async def test_options_come_from_the_policy(socket_dir: Path) -> None:
    policy = FakePolicy(
        options=PluginOptions(
            pre_start_required=True, with_topology_alignment=False, need_reconcile=False
        )
    )
    async with (
        PluginServer(policy, socket_dir=socket_dir),
        KubeletEmulator() as kubelet,
    ):
        (plugin,) = await kubelet.discover(socket_dir)
        assert plugin.options == rp_pb2.ResourcePluginOptions(
            pre_start_required=True, with_topology_alignment=False, need_reconcile=False
        )
        # pre_start_required: the emulator calls PreStartContainer, which answers.
        await kubelet.admit(Pod(uid="uid-1", name="web", containers=(Container("app"),)))
        # with_topology_alignment=False: no hints asked, only Allocate.
        assert [r.hint is None for r in policy.seen] == [False]
        # need_reconcile=False: the kubelet never polls GetResourcesAllocation.
        assert await kubelet.reconcile() == {}


async def test_default_options(kubelet: KubeletEmulator) -> None:
    assert kubelet.plugin("cpu").options == rp_pb2.ResourcePluginOptions(
        pre_start_required=False, with_topology_alignment=True, need_reconcile=True
    )


async def test_a_failing_options_call_is_internal_and_does_not_register(
    policy: FakePolicy, server: PluginServer, socket_dir: Path
) -> None:
    policy.fail_next = RuntimeError("options exploded")
    async with KubeletEmulator() as kubelet:
        with pytest.raises(PluginCallError) as raised:
            await kubelet.discover(socket_dir)
        assert raised.value.rpc == "GetResourcePluginOptions"
        assert raised.value.code == grpc.StatusCode.INTERNAL
        assert kubelet.plugins == {}
        await kubelet.discover(socket_dir)  # still serving
        assert set(kubelet.plugins) == {"cpu"}
