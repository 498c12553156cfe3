"""The local kubelet: drives QRM plugins over their unix sockets as the kubelet does.

The standalone node has no kubelet, and neither have the test machines, so this
class plays the kubelet's part in the conversation with the real protos, over
real unix sockets. The standalone node admits its pods through it; the tests use
it as their kubelet emulator (``tests/support/kubelet.py``).

* **Plugin watcher** (``discover``): every ``*.sock`` in the plugin directory,
  except names starting with ``.`` (the watcher ignores those), gets ``GetInfo``;
  a ``ResourcePlugin`` that speaks ``v1alpha1`` is registered and told so with
  ``NotifyRegistrationStatus(plugin_registered=True)`` (otherwise it is told the
  error), then asked for ``GetResourcePluginOptions``. A later registration for
  the same resource replaces the earlier one, as in the kubelet.
* **Admission** (``admit``), container by container in the order given: each
  plugin whose resource the container requests (cpu and memory plugins always;
  Katalyst's reclaimed resources count for them through ``resource_aliases``, the
  kubelet's ``--qos-resource-names-map``) takes part; those whose options set
  ``with_topology_alignment`` get ``GetTopologyHints``; the hints are merged by
  the topology manager's algorithm (below); every taking part plugin then gets
  ``Allocate`` with the chosen hint, and ``PreStartContainer`` when its options
  ask for it. Admission stops at the first error.
* **Reconcile** (``reconcile``): ``GetResourcesAllocation`` on plugins whose
  options set ``need_reconcile``, returned as plain dicts.
* **Deletion** (``remove``): ``RemovePod`` on every plugin.

Hint merging follows the kubelet's ``best-effort`` and ``restricted`` policies
(container scope; ``pkg/kubelet/cm/topologymanager/policy.go``): every resource
of every plugin is one list of hints (no answer for a resource: "don't care",
i.e. any node, preferred; an empty list: "cannot satisfy", any node, not
preferred); every combination of one hint per list is merged by intersecting
the NUMA sets, and is preferred only if all its hints are; empty intersections
are dropped; the best merged hint is preferred over not, then the narrowest
(fewest nodes, then lowest node ids). ``restricted`` rejects the pod when the
best hint is not preferred; ``best-effort`` admits it anyway.

Simplifications, on purpose: no ``single-numa-node`` or ``none`` policy, no pod
scope, no ``prefer-closest-numa-nodes`` or ``max-allowable-numa-nodes`` options,
no device plugins or CPU/memory managers taking part in the merge, and no
automatic ``RemovePod`` after a failed admission (the caller decides, so that a
test can look at the state first).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Final, Literal, TypedDict, TypeVar

import grpc
import grpc.aio

from agent.qrm.types import AllocationInfo
from katalyst.api.pluginregistration import api_pb2 as reg_pb2
from katalyst.api.pluginregistration import api_pb2_grpc as reg_grpc
from katalyst.api.resourceplugin.v1alpha1 import api_pb2 as rp_pb2
from katalyst.api.resourceplugin.v1alpha1 import api_pb2_grpc as rp_grpc
from katalyst.qos import PodView, Quantity

if TYPE_CHECKING:
    from katalyst.api.pluginregistration.api_pb2_grpc import RegistrationAsyncStub
    from katalyst.api.resourceplugin.v1alpha1.api_pb2_grpc import ResourcePluginAsyncStub

__all__ = [
    "DEFAULT_RESOURCE_ALIASES",
    "AllocationDict",
    "Container",
    "ContainerAdmission",
    "HintDict",
    "KubeletEmulator",
    "LocalKubelet",
    "MergedHint",
    "PluginCallError",
    "Pod",
    "ProviderHint",
    "Reconciled",
    "RegisteredPlugin",
    "RegistrationRejected",
    "TopologyAffinityError",
    "TopologyPolicy",
    "allocation_dict",
    "allocation_info",
    "merge_hints",
    "pod_for",
]

TopologyPolicy = Literal["best-effort", "restricted"]
"""The kubelet topology manager policies emulated (``--topology-manager-policy``)."""
_R = TypeVar("_R")

DEFAULT_RESOURCE_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "resource.katalyst.kubewharf.io/reclaimed_millicpu": "cpu",
        "resource.katalyst.kubewharf.io/reclaimed_memory": "memory",
    }
)
"""Katalyst's kubelet flag ``--qos-resource-names-map``: reclaimed resources are
served by the cpu and memory plugins."""

# The kubelet always consults the cpu and memory plugins, even for a container
# that requests neither (a BestEffort container still gets a cpuset).
_ALWAYS: Final = frozenset({"cpu", "memory"})


@dataclass(frozen=True, slots=True)
class Container:
    """One container of a pod, as the kubelet sees it at admission."""

    name: str
    requests: Mapping[str, float] = field(default_factory=dict)
    """Resource name -> quantity as the kubelet sends it (cores, bytes, milli-units)."""
    type: rp_pb2.ContainerType.ValueType = rp_pb2.MAIN
    index: int = 0


@dataclass(frozen=True, slots=True)
class Pod:
    """The parts of a pod the kubelet puts into QRM requests."""

    uid: str
    name: str
    containers: tuple[Container, ...]
    namespace: str = "default"
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    native_qos_class: str = "Burstable"
    pod_role: str = ""
    pod_type: str = ""


@dataclass(frozen=True, slots=True)
class MergedHint:
    """The topology manager's choice for a container."""

    nodes: frozenset[int]
    preferred: bool


class HintDict(TypedDict):
    """A ``TopologyHint`` as plain data."""

    nodes: list[int]
    preferred: bool


class AllocationDict(TypedDict):
    """A ``ResourceAllocationInfo`` as plain data (every field)."""

    oci_property_name: str
    is_node_resource: bool
    is_scalar_resource: bool
    allocated_quantity: float
    allocation_result: str
    envs: dict[str, str]
    annotations: dict[str, str]
    resource_hints: list[HintDict]
    topology_assignments: dict[int, int]


#: plugin resource -> pod UID -> container name -> resource name -> allocation.
Reconciled = dict[str, dict[str, dict[str, dict[str, AllocationDict]]]]


class PluginCallError(Exception):
    """A plugin answered a call (admission, registration, reconcile...) with an error
    status; ``code`` and ``details`` are the gRPC status the plugin sent."""

    def __init__(self, *, resource: str, rpc: str, code: grpc.StatusCode, details: str) -> None:
        self.resource = resource
        """The resource of the plugin that answered."""
        self.rpc = rpc
        self.code = code
        self.details = details
        super().__init__(f"{rpc} on the {resource} plugin failed: {code.name}: {details}")


class TopologyAffinityError(Exception):
    """The ``restricted`` policy found no preferred hint (kubelet: TopologyAffinityError)."""

    def __init__(self, *, container: str, best: MergedHint) -> None:
        self.container = container
        self.best = best
        super().__init__(
            f"container {container!r}: no preferred NUMA affinity "
            f"(best is {sorted(best.nodes)}, not preferred)"
        )


class RegistrationRejected(Exception):
    """``discover`` found a socket whose plugin the kubelet would not register."""


@dataclass(slots=True)
class RegisteredPlugin:
    """A plugin the emulator registered, with stubs on its endpoint."""

    socket: Path
    info: reg_pb2.PluginInfo
    options: rp_pb2.ResourcePluginOptions
    channels: tuple[grpc.aio.Channel, ...]
    """The socket's channel, and the endpoint's when the plugin named another."""
    stub: ResourcePluginAsyncStub
    registration: RegistrationAsyncStub

    @property
    def resource(self) -> str:
        """The resource the plugin registered for (``PluginInfo.name``)."""
        return self.info.name


@dataclass(frozen=True, slots=True)
class ContainerAdmission:
    """What admission of one container produced."""

    container: str
    hint: MergedHint
    """The merged hint sent to every plugin's ``Allocate``."""
    hints: Mapping[str, rp_pb2.ResourceHintsResponse]
    """Plugin resource -> its ``GetTopologyHints`` answer."""
    responses: Mapping[str, rp_pb2.ResourceAllocationResponse]
    """Plugin resource -> its ``Allocate`` answer."""

    @property
    def allocations(self) -> dict[str, dict[str, AllocationDict]]:
        """Plugin resource -> resource name -> allocation, as plain data."""
        return {
            plugin: {
                name: allocation_dict(info)
                for name, info in response.allocation_result.resource_allocation.items()
            }
            for plugin, response in self.responses.items()
        }


def allocation_dict(info: rp_pb2.ResourceAllocationInfo) -> AllocationDict:
    """Every field of a ``ResourceAllocationInfo`` as plain data."""
    return AllocationDict(
        oci_property_name=info.oci_property_name,
        is_node_resource=info.is_node_resource,
        is_scalar_resource=info.is_scalar_resource,
        allocated_quantity=info.allocated_quantity,
        allocation_result=info.allocation_result,
        envs=dict(info.envs),
        annotations=dict(info.annotations),
        resource_hints=[
            HintDict(nodes=list(h.nodes), preferred=h.preferred) for h in info.resource_hints.hints
        ],
        topology_assignments=dict(info.topology_assignments),
    )


def allocation_info(allocation: AllocationDict | None) -> AllocationInfo | None:
    """The parts of an allocation that say what to enforce, as the policies' type."""
    if allocation is None:
        return None
    return AllocationInfo(
        oci_property_name=allocation["oci_property_name"],
        allocation_result=allocation["allocation_result"],
        annotations=allocation["annotations"],
    )


def _quantities(requests: Mapping[str, Quantity]) -> dict[str, float]:
    """Requests as the kubelet sends them: cores, bytes, milli-units as plain numbers."""
    return {name: float(quantity.amount) for name, quantity in requests.items()}


def pod_for(view: PodView) -> Pod:
    """The pod as the kubelet describes it in QRM requests: init containers first."""
    containers = [
        Container(name=c.name, requests=_quantities(c.requests), type=rp_pb2.INIT, index=i)
        for i, c in enumerate(view.init_containers)
    ]
    containers.extend(
        Container(name=c.name, requests=_quantities(c.requests), type=rp_pb2.MAIN, index=i)
        for i, c in enumerate(view.containers)
    )
    return Pod(
        uid=view.uid,
        name=view.name,
        namespace=view.namespace,
        containers=tuple(containers),
        annotations=dict(view.annotations),
        labels=dict(view.labels),
        native_qos_class=str(view.qos_class),
    )


ProviderHint = tuple[frozenset[int] | None, bool]
"""One hint of one resource: its NUMA nodes (``None``: any node, the kubelet's
nil affinity) and whether it is preferred."""


def _mask(nodes: frozenset[int]) -> int:
    mask = 0
    for node in nodes:
        mask |= 1 << node
    return mask


def _nodes(mask: int) -> frozenset[int]:
    return frozenset(i for i in range(mask.bit_length()) if mask >> i & 1)


def _narrower(a: int, b: int) -> bool:
    # bitmask.IsNarrowerThan: fewer NUMA nodes, or as many and a lower mask.
    ca, cb = a.bit_count(), b.bit_count()
    return ca < cb or (ca == cb and a < b)


def merge_hints(
    providers: Sequence[Sequence[ProviderHint]], *, numa_nodes: Sequence[int]
) -> MergedHint:
    """The topology manager's best hint over ``providers`` (one list per resource).

    No lists at all means nobody cares: every node, preferred.
    """
    default = _mask(frozenset(numa_nodes))
    best_mask, best_preferred = default, False
    lists: Sequence[Sequence[ProviderHint]] = providers or [[(None, True)]]
    for combination in itertools.product(*lists):
        mask, preferred = default, True
        for nodes, hint_preferred in combination:
            if nodes is not None:
                mask &= _mask(nodes)
            preferred = preferred and hint_preferred
        if mask == 0:  # no NUMA node satisfies every resource
            continue
        if preferred and not best_preferred:
            best_mask, best_preferred = mask, True
        elif preferred == best_preferred and _narrower(mask, best_mask):
            best_mask = mask
    return MergedHint(nodes=_nodes(best_mask), preferred=best_preferred)


def _hints_from(response: rp_pb2.ResourceHintsResponse) -> list[list[ProviderHint]]:
    """One list per resource the plugin answered for; absent resources add nothing
    (the kubelet's "don't care")."""
    lists: list[list[ProviderHint]] = []
    for _, listed in sorted(response.resource_hints.items()):
        if not listed.hints:
            # Present but empty: the plugin cannot place the container; the
            # kubelet turns it into "any node, not preferred".
            lists.append([(None, False)])
        else:
            lists.append([(frozenset(h.nodes), h.preferred) for h in listed.hints])
    return lists


class LocalKubelet:
    """Talks to QRM plugins over their sockets as Katalyst's patched kubelet does."""

    def __init__(
        self,
        *,
        numa_nodes: Sequence[int] = (0,),
        topology_policy: TopologyPolicy = "restricted",
        resource_aliases: Mapping[str, str] = DEFAULT_RESOURCE_ALIASES,
        timeout: float = 10.0,
    ) -> None:
        """
        :param numa_nodes: the node's NUMA nodes ("any node" is all of them).
        :param topology_policy: the topology manager policy emulated.
        :param resource_aliases: requested resource -> plugin resource serving it.
        :param timeout: seconds allowed for each call.
        """
        self._numa_nodes = tuple(numa_nodes)
        self._policy: TopologyPolicy = topology_policy
        self._aliases = dict(resource_aliases)
        self._timeout = timeout
        self._plugins: dict[str, RegisteredPlugin] = {}
        self._retired: list[grpc.aio.Channel] = []

    async def __aenter__(self) -> LocalKubelet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every channel."""
        channels = [c for p in self._plugins.values() for c in p.channels] + self._retired
        self._plugins.clear()
        self._retired.clear()
        for channel in channels:
            await channel.close()

    @property
    def plugins(self) -> Mapping[str, RegisteredPlugin]:
        """Registered plugins by resource name."""
        return MappingProxyType(self._plugins)

    def plugin(self, resource: str) -> RegisteredPlugin:
        """The plugin registered for ``resource``."""
        return self._plugins[resource]

    # ------------------------------------------------------------ registration

    async def discover(self, socket_dir: str | os.PathLike[str]) -> list[RegisteredPlugin]:
        """Register every plugin socket in ``socket_dir``, as the plugin watcher does.

        Raises :class:`RegistrationRejected` (after telling the plugin) for a
        socket whose ``GetInfo`` the kubelet would refuse, and
        :class:`PluginCallError` for a failing call; either stops the discovery
        (the real watcher logs and carries on with the other sockets).
        """
        found: list[RegisteredPlugin] = []
        for path in sorted(Path(socket_dir).iterdir()):
            # pluginwatcher: "This socket filename should not start with a '.'
            # as it will be ignored."
            if path.name.startswith(".") or path.suffix != ".sock" or not path.is_socket():
                continue
            found.append(await self._register(path))
        return found

    async def _register(self, path: Path) -> RegisteredPlugin:
        channel = grpc.aio.insecure_channel(f"unix://{path}")
        channels = [channel]
        try:
            registration = reg_grpc.RegistrationStub(channel)
            info = await self._call(
                path.name,
                "GetInfo",
                registration.GetInfo(reg_pb2.InfoRequest(), timeout=self._timeout),
            )
            problem = None
            if info.type != "ResourcePlugin":
                problem = f"plugin type {info.type!r} is not handled (want 'ResourcePlugin')"
            elif "v1alpha1" not in info.supported_versions:
                problem = f"no supported version in {list(info.supported_versions)}"
            elif not info.name:
                problem = "empty resource name"
            if problem is not None:
                await registration.NotifyRegistrationStatus(
                    reg_pb2.RegistrationStatus(plugin_registered=False, error=problem),
                    timeout=self._timeout,
                )
                raise RegistrationRejected(f"{path}: {problem}")
            service = channel
            if info.endpoint and Path(info.endpoint).resolve() != path.resolve():
                # The plugin service lives on another socket: the kubelet's
                # resource plugin handler dials the endpoint it was given.
                service = grpc.aio.insecure_channel(f"unix://{info.endpoint}")
                channels.append(service)
            stub = rp_grpc.ResourcePluginStub(service)
            await registration.NotifyRegistrationStatus(
                reg_pb2.RegistrationStatus(plugin_registered=True), timeout=self._timeout
            )
            options = await self._call(
                info.name,
                "GetResourcePluginOptions",
                stub.GetResourcePluginOptions(rp_pb2.Empty(), timeout=self._timeout),
            )
        except BaseException:
            for c in channels:
                await c.close()
            raise
        plugin = RegisteredPlugin(
            socket=path,
            info=info,
            options=options,
            channels=tuple(channels),
            stub=stub,
            registration=registration,
        )
        old = self._plugins.get(plugin.resource)
        if old is not None:
            # Re-registration replaces the plugin (a restarted or rebound one).
            self._retired.extend(old.channels)
        self._plugins[plugin.resource] = plugin
        return plugin

    # ------------------------------------------------------------- admission

    def _requests_for(self, resource: str, container: Container) -> dict[str, float] | None:
        """The ``resource_requests`` a plugin gets, or ``None`` if it is not consulted."""
        requests = {
            name: quantity
            for name, quantity in container.requests.items()
            if name == resource or self._aliases.get(name) == resource
        }
        if requests:
            return requests
        if resource in _ALWAYS:
            return {resource: 0.0}
        return None

    def _request(
        self, pod: Pod, container: Container, resource: str, requests: Mapping[str, float]
    ) -> rp_pb2.ResourceRequest:
        return rp_pb2.ResourceRequest(
            pod_uid=pod.uid,
            pod_namespace=pod.namespace,
            pod_name=pod.name,
            container_name=container.name,
            container_type=container.type,
            container_index=container.index,
            pod_role=pod.pod_role,
            pod_type=pod.pod_type,
            resource_name=resource,
            resource_requests=dict(requests),
            labels=dict(pod.labels),
            annotations=dict(pod.annotations),
            native_qos_class=pod.native_qos_class,
        )

    async def admit(self, pod: Pod) -> dict[str, ContainerAdmission]:
        """Admit ``pod``: hints, merge, Allocate (and PreStartContainer) per container.

        Returns container name -> :class:`ContainerAdmission`. Raises
        :class:`PluginCallError` carrying the status of the first failing call, or
        :class:`TopologyAffinityError` under the ``restricted`` policy.
        """
        admitted: dict[str, ContainerAdmission] = {}
        for container in pod.containers:
            admitted[container.name] = await self._admit_container(pod, container)
        return admitted

    async def _admit_container(self, pod: Pod, container: Container) -> ContainerAdmission:
        consulted = {
            resource: (plugin, requests)
            for resource, plugin in sorted(self._plugins.items())
            if (requests := self._requests_for(resource, container)) is not None
        }
        hints: dict[str, rp_pb2.ResourceHintsResponse] = {}
        providers: list[list[ProviderHint]] = []
        for resource, (plugin, requests) in consulted.items():
            if not plugin.options.with_topology_alignment:
                # The kubelet asks only topology-aligned plugins for hints.
                continue
            response = await self._call(
                resource,
                "GetTopologyHints",
                plugin.stub.GetTopologyHints(
                    self._request(pod, container, resource, requests), timeout=self._timeout
                ),
            )
            hints[resource] = response
            providers.extend(_hints_from(response))
        best = merge_hints(providers, numa_nodes=self._numa_nodes)
        if self._policy == "restricted" and not best.preferred:
            raise TopologyAffinityError(container=container.name, best=best)
        responses: dict[str, rp_pb2.ResourceAllocationResponse] = {}
        for resource, (plugin, requests) in consulted.items():
            request = self._request(pod, container, resource, requests)
            request.hint.CopyFrom(
                rp_pb2.TopologyHint(nodes=sorted(best.nodes), preferred=best.preferred)
            )
            responses[resource] = await self._call(
                resource, "Allocate", plugin.stub.Allocate(request, timeout=self._timeout)
            )
            if plugin.options.pre_start_required:
                await self._call(
                    resource,
                    "PreStartContainer",
                    plugin.stub.PreStartContainer(
                        rp_pb2.PreStartContainerRequest(
                            pod_uid=pod.uid,
                            pod_namespace=pod.namespace,
                            pod_name=pod.name,
                            container_name=container.name,
                        ),
                        timeout=self._timeout,
                    ),
                )
        return ContainerAdmission(
            container=container.name, hint=best, hints=hints, responses=responses
        )

    async def remove(self, pod_uid: str) -> None:
        """``RemovePod`` on every registered plugin (the pod was deleted)."""
        for resource, plugin in sorted(self._plugins.items()):
            await self._call(
                resource,
                "RemovePod",
                plugin.stub.RemovePod(
                    rp_pb2.RemovePodRequest(pod_uid=pod_uid), timeout=self._timeout
                ),
            )

    async def reconcile(self) -> Reconciled:
        """``GetResourcesAllocation`` on plugins that asked for reconciliation.

        Returns plugin resource -> pod UID -> container -> resource -> allocation.
        """
        result: Reconciled = {}
        for resource, plugin in sorted(self._plugins.items()):
            if not plugin.options.need_reconcile:
                continue
            response = await self._call(
                resource,
                "GetResourcesAllocation",
                plugin.stub.GetResourcesAllocation(
                    rp_pb2.GetResourcesAllocationRequest(), timeout=self._timeout
                ),
            )
            result[resource] = {
                uid: {
                    name: {
                        res: allocation_dict(info)
                        for res, info in allocation.resource_allocation.items()
                    }
                    for name, allocation in containers.container_resources.items()
                }
                for uid, containers in response.pod_resources.items()
            }
        return result

    async def _call(self, resource: str, rpc: str, call: Awaitable[_R]) -> _R:
        try:
            return await call
        except grpc.aio.AioRpcError as err:
            raise PluginCallError(
                resource=resource, rpc=rpc, code=err.code(), details=err.details() or ""
            ) from err


KubeletEmulator = LocalKubelet
"""The name the tests use for it."""
