"""One generic gRPC server that puts any :class:`ResourcePolicy` behind the kubelet's hook.

A :class:`PluginServer` serves one policy on the unix socket
``<socket_dir>/<policy.plugin_name>.sock``. The same socket carries both services
the kubelet dials:

* ``pluginregistration.Registration`` for the kubelet's plugin watcher, which
  finds the socket in its directory (``/var/lib/kubelet/plugins_registry``), calls
  ``GetInfo`` and reports the outcome with ``NotifyRegistrationStatus``;
* ``resourceplugin.v1alpha1.ResourcePlugin``, the QoS resource manager hook:
  ``GetTopologyHints`` and ``Allocate`` at admission, ``RemovePod`` on deletion,
  ``GetResourcesAllocation`` every few seconds when the plugin asks to be reconciled.

The server is the boundary between the wire and the policy. It converts each
``ResourceRequest`` into a :class:`~agent.qrm.types.ContainerRequest` (parsing the
QoS annotations once, checking the pod UID and container name), maps the policy's
exceptions to gRPC status codes, serializes calls into the policy with a lock,
and awaits ``on_change`` (where the agent checkpoints) after every state change,
still under the lock and shielded from the RPC's cancellation, so that a kubelet
deadline can never separate a state change from its checkpoint. A slow
``on_change`` therefore delays every other call into the policy.

Error mapping::

    bad annotation, pod UID, container name,   INVALID_ARGUMENT  details name the key
    container type, quantity, resource name
    (not ours); InvalidRequest from the policy
    AllocationRefused                          RESOURCE_EXHAUSTED  the policy's message
    any other exception in the policy          INTERNAL  logged with the traceback
    AllocateForPod, GetPodTopologyHints        UNIMPLEMENTED (pod-scope topology policy)

Socket hygiene. The socket is bound under a hidden temporary name in the same
directory, made 0600, and then hard-linked to its public name, which fails if
that name exists: the public name never exists with a looser mode, and a socket
that appeared there meanwhile is never replaced. Two properties of gRPC make the
temporary name necessary, not just tidy (both seen with grpcio 1.85): gRPC
unlinks whatever socket is at the path before binding (it would silently take
over a live plugin's socket), and it unlinks the bound path again when the
server stops (stopping an old server after a rebind would delete the new
server's socket). The kubelet's plugin watcher ignores file names that start
with ``.``, so it never sees the temporary name; gRPC's own log lines do show
it, as the address the server listens on. A stale socket (a leftover of a
killed agent: connecting is refused) is removed at start; a live one is never
taken over.

Kubelet restarts. On start the kubelet may wipe its plugin directory, and its
watcher only discovers sockets that exist in it. A watchdog checks every
``watchdog_period`` seconds that the public name still points at our socket
(same device and inode) and, if not, binds a fresh server, publishes it, and
stops the old one; the policy and its state carry over untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import os
import re
import secrets
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import grpc
import grpc.aio

from agent.qrm.types import (
    AllocationInfo,
    AllocationRefused,
    ContainerAllocation,
    ContainerRequest,
    ContainerType,
    InvalidRequest,
    ResourcePolicy,
    TopologyHint,
    valid_container_name,
    valid_pod_uid,
)
from katalyst.api.pluginregistration import api_pb2 as reg_pb2
from katalyst.api.pluginregistration import api_pb2_grpc as reg_grpc
from katalyst.api.resourceplugin.v1alpha1 import api_pb2 as rp_pb2
from katalyst.api.resourceplugin.v1alpha1 import api_pb2_grpc as rp_grpc
from katalyst.clock import Clock, MonotonicClock
from katalyst.qos import PodUID, QoSValidationError, parse_enhancements, parse_qos_level

__all__ = [
    "PLUGIN_TYPE",
    "SUPPORTED_VERSIONS",
    "OnChange",
    "PluginServer",
    "PluginServerError",
    "SocketInUseError",
]

logger = logging.getLogger(__name__)

PLUGIN_TYPE: Final = "ResourcePlugin"
"""``PluginInfo.type``: the kubelet handler that takes QRM plugins."""
SUPPORTED_VERSIONS: Final = ("v1alpha1",)
"""``PluginInfo.supported_versions``: the ``resourceplugin`` API versions we speak."""

OnChange = Callable[[], Awaitable[None]]
"""Awaited after every successful ``Allocate`` and ``RemovePod``."""

# sun_path holds 108 bytes with the NUL, but gRPC refuses a path of 107 (seen on
# grpcio 1.85: "should not have more than 107 characters"), so 106 is the limit.
_SUN_PATH_MAX: Final = 106
# The plugin name becomes a file name: keep it to a plain, visible one.
_PLUGIN_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
_TMP_SUFFIX: Final = ".tmp"
# How long an old server, replaced by the watchdog, may finish its in-flight
# calls. Its clients (a kubelet that did not restart) reconnect by path to the
# new server as soon as their connection closes.
_REBIND_GRACE: Final = 1.0

_T = TypeVar("_T")
_Context = grpc.aio.ServicerContext[Any, Any]


class PluginServerError(Exception):
    """The server cannot start or bind its socket; the message says why and where."""


class SocketInUseError(PluginServerError):
    """Another live process serves on our socket path; we never take it over."""


class _PathState(enum.Enum):
    MISSING = "missing"
    STALE = "stale"
    LIVE = "live"
    NOT_A_SOCKET = "not a socket"


def _probe(path: Path) -> _PathState:
    """What is at ``path``: nothing, a socket nobody listens on, a live one, or a file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return _PathState.MISSING
    if not stat.S_ISSOCK(st.st_mode):
        return _PathState.NOT_A_SOCKET
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        # Non-blocking: a unix connect either completes at once or fails at once;
        # EAGAIN means a listener exists whose backlog is full, which is live.
        probe.setblocking(False)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            # The kernel refuses when no process holds the listening socket
            # bound to this inode any more: a leftover of a killed process.
            return _PathState.STALE
        except FileNotFoundError:
            return _PathState.MISSING
        except BlockingIOError:
            return _PathState.LIVE
        except OSError as err:
            raise PluginServerError(
                f"cannot tell whether {path} is in use (connect: {err.strerror}); "
                "refusing to touch it"
            ) from err
    return _PathState.LIVE


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _check_path_length(path: Path) -> None:
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise PluginServerError(
            f"socket path {path} is longer than the {_SUN_PATH_MAX} bytes a unix socket "
            "address can hold; use a shorter socket directory"
        )


def _invalid_field(key: str, value: object, rule: str) -> QoSValidationError:
    # The QoS model's error type renders any value safely (quoted, truncated,
    # one line), so request fields get the same message shape as annotations.
    return QoSValidationError(key=key, value=value, rule=rule, kind="field")


def _check_pod_uid(uid: str) -> PodUID:
    if not valid_pod_uid(uid):
        raise _invalid_field(
            "pod_uid", uid, "must be a Kubernetes UID (letters, digits and '-', 1-128 characters)"
        )
    return PodUID(uid)


_CONTAINER_TYPES: Final = ", ".join(t.name for t in ContainerType)


def _to_request(request: rp_pb2.ResourceRequest, *, resource_name: str) -> ContainerRequest:
    """The domain form of a wire request; raises ``QoSValidationError`` naming the field."""
    uid = _check_pod_uid(request.pod_uid)
    if not valid_container_name(request.container_name):
        raise _invalid_field(
            "container_name",
            request.container_name,
            "must be a Kubernetes container name (an RFC 1123 label)",
        )
    if request.resource_name != resource_name:
        # The kubelet routes a request to the plugin registered for its
        # resource name; anything else is a misrouted or forged call.
        raise _invalid_field(
            "resource_name",
            request.resource_name,
            f'must be "{resource_name}", the resource this plugin serves',
        )
    try:
        container_type = ContainerType(request.container_type)
    except ValueError:
        # proto3 enums are open: an unknown number arrives as is.
        raise _invalid_field(
            "container_type", request.container_type, f"must be one of {_CONTAINER_TYPES}"
        ) from None
    requests: dict[str, float] = {}
    for name, quantity in request.resource_requests.items():
        if not (math.isfinite(quantity) and quantity >= 0):
            raise _invalid_field(
                f"resource_requests[{name}]", quantity, "must be a finite, non-negative quantity"
            )
        requests[name] = quantity
    annotations = dict(request.annotations)
    # Parsed exactly once per request: a policy never sees a malformed annotation.
    level = parse_qos_level(annotations)
    enhancements = parse_enhancements(annotations, level)
    hint = (
        TopologyHint(nodes=frozenset(request.hint.nodes), preferred=request.hint.preferred)
        if request.HasField("hint")
        else None
    )
    return ContainerRequest(
        pod_uid=uid,
        pod_namespace=request.pod_namespace,
        pod_name=request.pod_name,
        container_name=request.container_name,
        container_type=container_type,
        container_index=request.container_index,
        resource_name=request.resource_name,
        requests=requests,
        level=level,
        enhancements=enhancements,
        labels=dict(request.labels),
        annotations=annotations,
        native_qos_class=request.native_qos_class,
        hint=hint,
        pod_role=request.pod_role,
        pod_type=request.pod_type,
    )


def _echo(request: rp_pb2.ResourceRequest) -> dict[str, Any]:
    """The request's identity fields (tags 1-9), which both answers repeat."""
    return {
        "pod_uid": request.pod_uid,
        "pod_namespace": request.pod_namespace,
        "pod_name": request.pod_name,
        "container_name": request.container_name,
        "container_type": request.container_type,
        "container_index": request.container_index,
        "pod_role": request.pod_role,
        "pod_type": request.pod_type,
        "resource_name": request.resource_name,
    }


def _hints_to_wire(hints: tuple[TopologyHint, ...]) -> rp_pb2.ListOfTopologyHints:
    return rp_pb2.ListOfTopologyHints(
        hints=[rp_pb2.TopologyHint(nodes=sorted(h.nodes), preferred=h.preferred) for h in hints]
    )


def _info_to_wire(info: AllocationInfo) -> rp_pb2.ResourceAllocationInfo:
    return rp_pb2.ResourceAllocationInfo(
        oci_property_name=info.oci_property_name,
        is_node_resource=info.is_node_resource,
        is_scalar_resource=info.is_scalar_resource,
        allocated_quantity=info.allocated_quantity,
        allocation_result=info.allocation_result,
        envs=dict(info.envs),
        annotations=dict(info.annotations),
        resource_hints=_hints_to_wire(info.hints),
        topology_assignments=dict(info.topology_assignments),
    )


def _per_numa(quantities: Mapping[int, float]) -> list[rp_pb2.TopologyAwareQuantity]:
    return [
        rp_pb2.TopologyAwareQuantity(
            resource_value=float(value), node=node, topology_level=rp_pb2.NUMA
        )
        for node, value in sorted(quantities.items())
    ]


def _topology_aware(info: AllocationInfo) -> rp_pb2.TopologyAwareResource:
    """One resource of a container, per NUMA node (the original lists are the same:
    nothing here is scaled by a dynamic ratio)."""
    per_node = _per_numa(info.topology_assignments)
    return rp_pb2.TopologyAwareResource(
        is_node_resource=info.is_node_resource,
        is_scalar_resource=info.is_scalar_resource,
        aggregated_quantity=info.allocated_quantity,
        original_aggregated_quantity=info.allocated_quantity,
        topology_aware_quantity_list=per_node,
        original_topology_aware_quantity_list=per_node,
    )


def _allocation_to_wire(allocation: ContainerAllocation) -> rp_pb2.ResourceAllocation:
    return rp_pb2.ResourceAllocation(
        resource_allocation={name: _info_to_wire(info) for name, info in allocation.items()}
    )


def _describe(request: rp_pb2.ResourceRequest) -> str:
    # %r-style quoting: these strings come from the pod and must not forge log lines.
    return (
        f"pod {request.pod_namespace!r}/{request.pod_name!r} (uid {request.pod_uid!r}) "
        f"container {request.container_name!r}"
    )


class PluginServer:
    """Serves one :class:`ResourcePolicy` to the kubelet on a unix socket.

    Use it as an async context manager, or call :meth:`start` and :meth:`stop`, or
    run :meth:`run_until` as a child of the agent's task group.
    """

    def __init__(
        self,
        policy: ResourcePolicy,
        *,
        socket_dir: str | os.PathLike[str],
        clock: Clock | None = None,
        watchdog_period: float = 5.0,
        on_change: OnChange | None = None,
    ) -> None:
        """
        :param policy: the resource policy; only this server calls it, one call at a time.
        :param socket_dir: the kubelet's plugin directory; created (0700) if missing.
        :param clock: drives the socket watchdog (default: the real monotonic clock).
        :param watchdog_period: seconds between checks that our socket is still there.
        :param on_change: awaited after each successful ``Allocate`` and ``RemovePod``.
        """
        name = policy.plugin_name
        if not _PLUGIN_NAME.fullmatch(name):
            raise ValueError(
                f"plugin name {name!r} must be a plain file name "
                "([A-Za-z0-9_.-], starting with a letter or digit, at most 64 characters)"
            )
        if not (math.isfinite(watchdog_period) and watchdog_period > 0):
            raise ValueError(
                f"watchdog_period must be a positive number of seconds, not {watchdog_period}"
            )
        self._policy = policy
        self._dir = Path(socket_dir).absolute()
        self._path = self._dir / f"{name}.sock"
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._period = watchdog_period
        self._on_change = on_change
        # Policies are not thread-safe nor re-entrant; the lock also keeps a
        # state change and its on_change checkpoint together.
        self._lock = asyncio.Lock()
        # Serializes start/stop and the watchdog's rebinding of the socket.
        self._socket_lock = asyncio.Lock()
        self._server: grpc.aio.Server | None = None
        self._published: tuple[int, int] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.registered = False
        """Whether the kubelet's last ``NotifyRegistrationStatus`` reported success."""
        self.last_registration_error: str | None = None
        """The kubelet's error from its last failed registration, if any."""
        self.rebinds = 0
        """How many times the watchdog recreated the socket."""

    # ------------------------------------------------------------------ lifecycle

    @property
    def socket_path(self) -> Path:
        """``<socket_dir>/<plugin_name>.sock``, an absolute path."""
        return self._path

    @property
    def policy(self) -> ResourcePolicy:
        """The policy served."""
        return self._policy

    @property
    def serving(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` was not called since."""
        return self._server is not None

    async def start(self) -> None:
        """Bind and publish the socket, start serving, start the watchdog.

        Raises :class:`SocketInUseError` when a live process serves on the path,
        and :class:`PluginServerError` for anything else that prevents binding.
        """
        async with self._socket_lock:
            if self._server is not None:
                raise RuntimeError(f"plugin server {self._path} is already started")
            _check_path_length(self._path)
            # The temporary name we bind first is longer than the public one.
            _check_path_length(self._dir / f"{self._temporary_prefix()}{'0' * 8}{_TMP_SUFFIX}")
            self._ensure_dir()
            self._remove_stale_temporaries()
            self._server = await self._bind_and_publish()
            self.registered = False
        logger.info(
            "plugin %s serves resource %s on %s",
            self._policy.plugin_name,
            self._policy.resource_name,
            self._path,
        )
        self._watchdog = asyncio.create_task(
            self._watch_socket(), name=f"qrm-socket-watchdog:{self._policy.plugin_name}"
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the watchdog, stop serving (in-flight calls get ``grace`` seconds),
        and remove the socket file if it is still ours. Idempotent."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        async with self._socket_lock:
            server, self._server = self._server, None
            if server is None:
                return
            try:
                await server.stop(grace)
            finally:
                # Only our own inode: after a kubelet restart the name may be another's.
                if self._published is not None and _identity(self._path) == self._published:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._path)
                self._published = None
                logger.info("plugin %s stopped serving on %s", self._policy.plugin_name, self._path)

    async def run_until(self, stop: asyncio.Event, *, grace: float = 5.0) -> None:
        """Serve until ``stop`` is set (or this task is cancelled), then stop.

        Fits a child of the agent's task group: a start failure raises at once,
        and a cancellation (a sibling failed) still stops the server and removes
        the socket.
        """
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop(grace)

    async def __aenter__(self) -> PluginServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(grace=0)

    async def check_socket(self) -> bool:
        """One watchdog pass: recreate the socket if its file is gone or replaced.

        Returns whether it rebound. Raises :class:`SocketInUseError` when another
        live process now serves on the path (we keep serving on our old,
        unreachable socket and check again next period).
        """
        async with self._socket_lock:
            if self._server is None:
                raise RuntimeError(f"plugin server {self._path} is not started")
            if _identity(self._path) == self._published:
                return False
            await self._rebind(self._server)
            return True

    async def _rebind(self, old: grpc.aio.Server) -> None:
        logger.warning(
            "socket %s of plugin %s is gone or replaced (kubelet restart wiping its "
            "plugin directory?); recreating it so that the plugin watcher finds it again",
            self._path,
            self._policy.plugin_name,
        )
        # Stop the old server before the new one serves: grpc.aio cancels calls
        # in flight on the loop's other server too while one stops (seen with
        # grpcio 1.85 as CANCELLED GetInfo calls on the new socket). The old
        # socket's name is gone anyway; its open connections get the grace.
        await old.stop(_REBIND_GRACE)
        self._ensure_dir()
        self._server = await self._bind_and_publish()
        self.rebinds += 1
        # The kubelet registers the new socket afresh (GetInfo, Notify...).
        self.registered = False
        logger.info("plugin %s serves again on %s", self._policy.plugin_name, self._path)

    async def _watch_socket(self) -> None:
        while True:
            await self._clock.sleep(self._period)
            try:
                await self.check_socket()
            except Exception:
                # Keep watching: a directory that is briefly unwritable or a
                # transient squatter must not end the watchdog for good.
                logger.exception(
                    "plugin %s: cannot recreate socket %s; retrying in %.1f s",
                    self._policy.plugin_name,
                    self._path,
                    self._period,
                )

    def _ensure_dir(self) -> None:
        if self._dir.is_dir():
            return
        try:
            os.makedirs(self._dir, mode=0o700)
        except FileExistsError:
            return  # created meanwhile (by the kubelet): theirs, leave its mode
        except OSError as err:
            raise PluginServerError(
                f"cannot create socket directory {self._dir}: {err.strerror}"
            ) from err
        # makedirs' mode is filtered by the umask; make the leaf exactly 0700.
        os.chmod(self._dir, 0o700)
        logger.info("created socket directory %s (mode 0700)", self._dir)

    def _temporary_prefix(self) -> str:
        return f".{self._policy.plugin_name}."

    def _remove_stale_temporaries(self) -> None:
        # A process killed between bind and publish leaves its hidden temporary
        # socket behind; the kubelet ignores it, but do not let them pile up.
        prefix = self._temporary_prefix()
        try:
            entries = [e for e in os.scandir(self._dir) if e.name.startswith(prefix)]
        except OSError:
            return
        for entry in entries:
            if entry.name.endswith(_TMP_SUFFIX) and _probe(Path(entry.path)) is _PathState.STALE:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                logger.info("removed stale temporary socket %s", entry.path)

    async def _bind_and_publish(self) -> grpc.aio.Server:
        """A started server whose socket is published at :attr:`socket_path`."""
        tmp = self._dir / f"{self._temporary_prefix()}{secrets.token_hex(4)}{_TMP_SUFFIX}"
        _check_path_length(tmp)
        server = grpc.aio.server()
        rp_grpc.add_ResourcePluginServicer_to_server(_ResourcePluginService(self), server)
        reg_grpc.add_RegistrationServicer_to_server(_RegistrationService(self), server)
        try:
            try:
                bound = server.add_insecure_port(f"unix://{tmp}")
            except RuntimeError as err:  # grpc raises on bind failure in recent versions
                raise PluginServerError(f"cannot bind a unix socket at {tmp}: {err}") from err
            if bound == 0:
                raise PluginServerError(f"cannot bind a unix socket at {tmp}")
            try:
                # Before the name is public: nobody but us (root) may connect.
                os.chmod(tmp, 0o600)
                # Serving before publishing: the plugin watcher dials as soon as
                # the name appears (inotify), and must find a listener.
                await server.start()
                self._published = self._publish(tmp)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        except BaseException:
            await server.stop(None)
            raise
        return server

    def _publish(self, tmp: Path) -> tuple[int, int]:
        """Hard-link ``tmp`` to the public name without ever replacing a live socket."""
        for _ in range(3):
            state = _probe(self._path)
            if state is _PathState.LIVE:
                raise SocketInUseError(
                    f"another process is serving on {self._path}; refusing to take over a "
                    f"live socket (is another {self._policy.plugin_name} agent running?)"
                )
            if state is _PathState.NOT_A_SOCKET:
                raise PluginServerError(
                    f"{self._path} exists and is not a socket; refusing to remove it"
                )
            if state is _PathState.STALE:
                logger.warning("removing stale socket %s (left by a killed process)", self._path)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path)
            try:
                # link(2) fails with EEXIST instead of replacing, unlike rename(2).
                os.link(tmp, self._path)
            except FileExistsError:
                continue  # someone created it since the probe: look again
            except OSError as err:
                raise PluginServerError(
                    f"cannot publish socket {self._path}: {err.strerror}"
                ) from err
            identity = _identity(self._path)
            if identity is None:  # removed between link and stat; caught by the watchdog
                return (-1, -1)
            return identity
        raise SocketInUseError(f"{self._path} keeps reappearing; refusing to take it over")

    # --------------------------------------------------------------- RPC plumbing

    async def _guard(self, context: _Context, rpc: str, what: str, call: Awaitable[_T]) -> _T:
        """Await ``call`` and turn the policy's exceptions into gRPC statuses."""
        try:
            return await call
        except QoSValidationError as err:
            code, details = grpc.StatusCode.INVALID_ARGUMENT, str(err)
            logger.warning("%s %s: invalid request: %s", rpc, what, details)
        except InvalidRequest as err:
            code, details = grpc.StatusCode.INVALID_ARGUMENT, str(err)
            logger.warning("%s %s: invalid request: %s", rpc, what, details)
        except AllocationRefused as err:
            code, details = grpc.StatusCode.RESOURCE_EXHAUSTED, str(err)
            logger.warning("%s %s: refused: %s", rpc, what, details)
        except Exception as err:
            # A bug in the policy (or in converting its answer): the kubelet
            # gets a short message, the log gets the traceback, and we keep serving.
            code = grpc.StatusCode.INTERNAL
            details = (
                f"{rpc} failed: internal error in the {self._policy.plugin_name} plugin "
                f"({type(err).__name__}); see the agent log"
            )
            logger.exception("%s %s: internal error in the policy", rpc, what)
        await context.abort(code, details)

    async def update(self, what: str, change: Callable[[], _T]) -> _T:
        """Change the policy from inside the agent (the sysadvisor resizing a pool),
        serialized with the kubelet's calls and checkpointed like them."""
        return await self._mutate(what, change)

    async def _mutate(self, rpc: str, change: Callable[[], _T]) -> _T:
        """Run ``change`` on the policy, then ``on_change``, as one locked unit.

        Shielded from the RPC's cancellation (gRPC cancels the handler when the
        kubelet's deadline passes): a state change is always followed by its
        checkpoint, and the next policy call waits for both. The kubelet, which
        saw an error, retries or removes the pod; both are idempotent.
        """

        async def unit() -> _T:
            async with self._lock:
                result = change()
                if self._on_change is not None:
                    try:
                        await self._on_change()
                    except Exception:
                        # The decision is made and held in memory; the kubelet
                        # must get it. The next change checkpoints everything again.
                        logger.exception("%s: the on_change callback failed; answering anyway", rpc)
                return result

        return await asyncio.shield(unit())

    async def _get_topology_hints(
        self, request: rp_pb2.ResourceRequest
    ) -> rp_pb2.ResourceHintsResponse:
        req = _to_request(request, resource_name=self._policy.resource_name)
        async with self._lock:
            hints = self._policy.topology_hints(req)
        return rp_pb2.ResourceHintsResponse(
            **_echo(request),
            # An absent resource means "no preference" to the topology manager;
            # a present, empty list means "cannot be satisfied".
            resource_hints={name: _hints_to_wire(h) for name, h in hints.items()},
            labels=request.labels,
            annotations=request.annotations,
            native_qos_class=request.native_qos_class,
        )

    async def _allocate(self, request: rp_pb2.ResourceRequest) -> rp_pb2.ResourceAllocationResponse:
        req = _to_request(request, resource_name=self._policy.resource_name)
        # Checkpointed before answering: once the kubelet has the answer, the
        # container may start, and a restarted agent must know about it.
        allocation = await self._mutate("Allocate", lambda: self._policy.allocate(req))
        return rp_pb2.ResourceAllocationResponse(
            **_echo(request),
            allocation_result=_allocation_to_wire(allocation),
            labels=request.labels,
            annotations=request.annotations,
            native_qos_class=request.native_qos_class,
        )

    async def _remove_pod(self, request: rp_pb2.RemovePodRequest) -> rp_pb2.RemovePodResponse:
        uid = _check_pod_uid(request.pod_uid)
        await self._mutate("RemovePod", lambda: self._policy.remove_pod(uid))
        return rp_pb2.RemovePodResponse()

    async def _resources_allocation(self) -> rp_pb2.GetResourcesAllocationResponse:
        async with self._lock:
            allocations = self._policy.allocations()
        return rp_pb2.GetResourcesAllocationResponse(
            pod_resources={
                uid: rp_pb2.ContainerResources(
                    container_resources={
                        name: _allocation_to_wire(allocation)
                        for name, allocation in containers.items()
                    }
                )
                for uid, containers in allocations.items()
            }
        )

    async def _topology_aware_resources(
        self, request: rp_pb2.GetTopologyAwareResourcesRequest
    ) -> rp_pb2.GetTopologyAwareResourcesResponse:
        """The container's allocation per NUMA node. A container the plugin does not
        hold gets an answer with nothing allocated (the kubelet's pod-resources API
        asks for every container, and reports that as "nothing topology-aware")."""
        async with self._lock:
            allocations = self._policy.allocations()
        held = allocations.get(PodUID(request.pod_uid), {}).get(request.container_name, {})
        return rp_pb2.GetTopologyAwareResourcesResponse(
            pod_uid=request.pod_uid,
            container_topology_aware_resources=rp_pb2.ContainerTopologyAwareResources(
                container_name=request.container_name,
                allocated_resources={
                    name: _topology_aware(info)
                    for name, info in held.items()
                    if info.topology_assignments
                },
            ),
        )

    async def _topology_aware_allocatable(
        self,
    ) -> rp_pb2.GetTopologyAwareAllocatableResourcesResponse:
        async with self._lock:
            capacities = self._policy.topology_capacity()
        return rp_pb2.GetTopologyAwareAllocatableResourcesResponse(
            allocatable_resources={
                name: rp_pb2.AllocatableTopologyAwareResource(
                    is_node_resource=True,
                    is_scalar_resource=capacity.is_scalar_resource,
                    aggregated_allocatable_quantity=sum(capacity.allocatable.values()),
                    topology_aware_allocatable_quantity_list=_per_numa(capacity.allocatable),
                    aggregated_capacity_quantity=sum(capacity.capacity.values()),
                    topology_aware_capacity_quantity_list=_per_numa(capacity.capacity),
                )
                for name, capacity in capacities.items()
            }
        )

    async def _plugin_options(self) -> rp_pb2.ResourcePluginOptions:
        async with self._lock:
            options = self._policy.options()
        return rp_pb2.ResourcePluginOptions(
            pre_start_required=options.pre_start_required,
            with_topology_alignment=options.with_topology_alignment,
            need_reconcile=options.need_reconcile,
        )

    def _plugin_info(self) -> reg_pb2.PluginInfo:
        """What the plugin watcher learns from ``GetInfo``."""
        return reg_pb2.PluginInfo(
            type=PLUGIN_TYPE,
            name=self._policy.resource_name,
            endpoint=str(self._path),
            supported_versions=list(SUPPORTED_VERSIONS),
        )

    def _registration_status(self, status: reg_pb2.RegistrationStatus) -> None:
        """Record the kubelet's verdict on our registration."""
        self.registered = status.plugin_registered
        if status.plugin_registered:
            self.last_registration_error = None
            logger.info(
                "kubelet registered plugin %s for resource %s",
                self._policy.plugin_name,
                self._policy.resource_name,
            )
        else:
            self.last_registration_error = status.error
            logger.error(
                "kubelet refused to register plugin %s for resource %s: %r",
                self._policy.plugin_name,
                self._policy.resource_name,
                status.error,
            )


_POD_SCOPE: Final = (
    "pod-scope topology policy is not supported yet by this plugin; "
    "configure the kubelet's topology manager with scope=container"
)


class _ResourcePluginService(rp_grpc.ResourcePluginServicer):
    """``resourceplugin.v1alpha1.ResourcePlugin``: the wire side of :class:`PluginServer`."""

    def __init__(self, server: PluginServer) -> None:
        self._s = server

    async def GetTopologyHints(
        self, request: rp_pb2.ResourceRequest, context: _Context
    ) -> rp_pb2.ResourceHintsResponse:
        return await self._s._guard(
            context, "GetTopologyHints", _describe(request), self._s._get_topology_hints(request)
        )

    async def Allocate(
        self, request: rp_pb2.ResourceRequest, context: _Context
    ) -> rp_pb2.ResourceAllocationResponse:
        return await self._s._guard(
            context, "Allocate", _describe(request), self._s._allocate(request)
        )

    async def RemovePod(
        self, request: rp_pb2.RemovePodRequest, context: _Context
    ) -> rp_pb2.RemovePodResponse:
        return await self._s._guard(
            context, "RemovePod", f"pod uid {request.pod_uid!r}", self._s._remove_pod(request)
        )

    async def GetResourcesAllocation(
        self, request: rp_pb2.GetResourcesAllocationRequest, context: _Context
    ) -> rp_pb2.GetResourcesAllocationResponse:
        return await self._s._guard(
            context, "GetResourcesAllocation", "for all pods", self._s._resources_allocation()
        )

    async def GetResourcePluginOptions(
        self, request: rp_pb2.Empty, context: _Context
    ) -> rp_pb2.ResourcePluginOptions:
        return await self._s._guard(
            context, "GetResourcePluginOptions", "of the plugin", self._s._plugin_options()
        )

    async def PreStartContainer(
        self, request: rp_pb2.PreStartContainerRequest, context: _Context
    ) -> rp_pb2.PreStartContainerResponse:
        # Our policies set pre_start_required=False: all work happens at Allocate.
        return rp_pb2.PreStartContainerResponse()

    async def GetTopologyAwareResources(
        self, request: rp_pb2.GetTopologyAwareResourcesRequest, context: _Context
    ) -> rp_pb2.GetTopologyAwareResourcesResponse:
        return await self._s._guard(
            context,
            "GetTopologyAwareResources",
            f"of pod {request.pod_uid!r} container {request.container_name!r}",
            self._s._topology_aware_resources(request),
        )

    async def GetTopologyAwareAllocatableResources(
        self, request: rp_pb2.GetTopologyAwareAllocatableResourcesRequest, context: _Context
    ) -> rp_pb2.GetTopologyAwareAllocatableResourcesResponse:
        return await self._s._guard(
            context,
            "GetTopologyAwareAllocatableResources",
            "of the node",
            self._s._topology_aware_allocatable(),
        )

    async def AllocateForPod(
        self, request: rp_pb2.PodResourceRequest, context: _Context
    ) -> rp_pb2.PodResourceAllocationResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"AllocateForPod: {_POD_SCOPE}")

    async def GetPodTopologyHints(
        self, request: rp_pb2.PodResourceRequest, context: _Context
    ) -> rp_pb2.PodResourceHintsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"GetPodTopologyHints: {_POD_SCOPE}")

    # Katalyst's own plugins that manage no associated device answer these
    # three with empty responses rather than UNIMPLEMENTED (a newer kubelet
    # calls them on every plugin and would log or fail admission otherwise).

    async def GetAssociatedDeviceTopologyHints(
        self, request: rp_pb2.AssociatedDeviceRequest, context: _Context
    ) -> rp_pb2.AssociatedDeviceHintsResponse:
        return rp_pb2.AssociatedDeviceHintsResponse()

    async def UpdateAllocatableAssociatedDevices(
        self, request: rp_pb2.UpdateAllocatableAssociatedDevicesRequest, context: _Context
    ) -> rp_pb2.UpdateAllocatableAssociatedDevicesResponse:
        return rp_pb2.UpdateAllocatableAssociatedDevicesResponse()

    async def AllocateAssociatedDevice(
        self, request: rp_pb2.AssociatedDeviceRequest, context: _Context
    ) -> rp_pb2.AssociatedDeviceAllocationResponse:
        return rp_pb2.AssociatedDeviceAllocationResponse()


class _RegistrationService(reg_grpc.RegistrationServicer):
    """``pluginregistration.Registration``: the kubelet plugin watcher's handshake."""

    def __init__(self, server: PluginServer) -> None:
        self._s = server

    async def GetInfo(self, request: reg_pb2.InfoRequest, context: _Context) -> reg_pb2.PluginInfo:
        return self._s._plugin_info()

    async def NotifyRegistrationStatus(
        self, request: reg_pb2.RegistrationStatus, context: _Context
    ) -> reg_pb2.RegistrationStatusResponse:
        self._s._registration_status(request)
        return reg_pb2.RegistrationStatusResponse()
