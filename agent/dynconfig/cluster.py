"""The cluster node's dynamic configuration: its ``CustomNodeConfig`` (CNC), watched;
the target configs it lists, fetched only when their hash changes; the result
applied without a restart.

The controller resolves the SREs' configs for every node and writes each node's CNC
(``config.katalyst.kubewharf.io/v1alpha1``, cluster-scoped, named as the node): its
``status.katalystCustomConfigList`` names, lowest precedence first (cluster, node
pool, named nodes), each config that applies and the
:func:`katalyst.dynconfig.spec_hash` of its ``spec``. For every version of the CNC,
:class:`ClusterSource`:

1. takes each listed config whose hash it already holds (applied, checkpointed, or
   fetched before) as it is, and GETs only the others;
2. recomputes the hash of each fetched object's ``spec``; one that differs from the
   CNC's means that the object changed since the controller wrote the CNC (the
   controller has not caught up): nothing is applied, and the next CNC version is
   awaited (``pending`` on ``/status`` says which config it waits for);
3. validates each fetched config with the library's checks
   (:func:`katalyst.dynconfig.validate_config`,
   :func:`~katalyst.dynconfig.validate_service_overrides`) and over the agent's own
   ``--config`` file (what the running agent can take);
4. merges the layers in the CNC's order over the agent's file and applies them
   through the :class:`~agent.dynconfig.SettingsApplier`, all or nothing, then
   checkpoints them (:class:`~agent.dynconfig.sink.LayerSink`, the path the
   standalone folder uses too).

**A refused config** (invalid, or breaking the merge over the layers below it) leaves
the settings in force as they are, counts one
``katalyst_dynamic_config_refusals_total``, shows on ``/status``, and posts a Warning
Event ``DynamicConfigRefused`` on the config object, its message naming the field:
``kubectl describe`` of the config shows why a node does not take it. It is refused
once per version: a CNC that lists it again changes nothing until its hash does.

**An API server that cannot be reached** changes nothing on the node: at start the
checkpoint is applied before anything is asked of the API server, the CNC's watch
retries with a jittered back-off
(:class:`agent.metaserver.apiserver.ObjectWatcher`), and a GET that fails is retried
the same way. A node without a CNC (a controller not running yet) keeps what is in
force; a CNC with an empty list is the agent's own file.

One case cannot be served: a CNC that lists a version the API server no longer has
(the controller kept the last good version of a config the SRE broke since) and that
this agent has never held (a new node, or a lost checkpoint). The agent then keeps
what is in force and waits, as for any hash mismatch, until the SRE fixes the config.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from agent.dynconfig.applier import SettingsApplier
from agent.dynconfig.checkpoint import LayerCheckpoint
from agent.dynconfig.record import DynamicConfigRecord
from agent.dynconfig.settings import DynamicConfigError, Layer, raw_overrides
from agent.dynconfig.sink import LayerSink
from agent.eviction import COMPONENT
from agent.eviction.evictor import MAX_MESSAGE
from katalyst.clock import Clock, first_of
from katalyst.dynconfig import (
    ADMIN_QOS_GVR,
    ADMIN_QOS_KIND,
    CNCEntry,
    GroupVersionResource,
    InvalidTarget,
    ParseError,
    ServiceOverride,
    load_target,
    parse_cnc,
    spec_hash,
    validate_config,
    validate_service_overrides,
)

__all__ = [
    "REFUSED_REASON",
    "ClusterSource",
    "ConfigReader",
    "EventPoster",
    "NodeConfigFeed",
    "config_path",
    "refusal_event",
]

log = logging.getLogger(__name__)

REFUSED_REASON: Final = "DynamicConfigRefused"
"""The ``reason`` of the Event posted on a config the agent refuses."""


class NodeConfigFeed(Protocol):
    """This node's CNC as the API server has it, kept up to date by :meth:`run`
    (:class:`agent.metaserver.apiserver.ObjectWatcher`)."""

    object: Mapping[str, Any] | None
    """The CNC's JSON; None while there is none."""
    synced: asyncio.Event
    """Set once the first list has arrived."""
    changed: asyncio.Event
    """Set whenever :attr:`object` changes; the consumer clears it before it reads."""

    async def run(self, stop: asyncio.Event) -> None: ...


class ConfigReader(Protocol):
    """GET of a target config (:class:`agent.metaserver.apiserver.ApiServerConfigClient`)."""

    async def get_object(
        self, resource: GroupVersionResource, namespace: str, name: str
    ) -> Mapping[str, Any] | None:
        """The object's JSON; None when it does not exist; ``OSError`` (or
        ``TimeoutError``) when the API server gave no usable answer."""
        ...


class EventPoster(Protocol):
    """POST of a core/v1 Event (:class:`agent.metaserver.apiserver.ApiServerEvictionClient`)."""

    async def post_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        """``OSError`` also for an answer that is not 2xx."""
        ...


def config_path(resource: GroupVersionResource, namespace: str, name: str) -> str:
    """The API path of a target config (``/apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME``):
    the key of its layer, and the layer's ``source`` in the checkpoint."""
    root = (
        f"/apis/{resource.group}/{resource.version}"
        if resource.group
        else f"/api/{resource.version}"
    )
    return f"{root}/namespaces/{namespace}/{resource.resource}/{name}"


@dataclass(frozen=True, slots=True)
class _Involved:
    """A config object as an Event names it."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def _involved(entry: CNCEntry, obj: Mapping[str, Any] | None = None) -> _Involved:
    body = obj or {}
    meta = body.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    kind = body.get("kind")
    if not isinstance(kind, str) or not kind:
        kind = ADMIN_QOS_KIND if entry.config_type == ADMIN_QOS_GVR else entry.config_type.resource
    api_version = body.get("apiVersion")
    uid, version = meta.get("uid"), meta.get("resourceVersion")
    return _Involved(
        api_version=api_version
        if isinstance(api_version, str) and api_version
        else entry.config_type.api_version,
        kind=kind,
        namespace=entry.namespace,
        name=entry.name,
        uid=uid if isinstance(uid, str) else "",
        resource_version=version if isinstance(version, str) else "",
    )


def refusal_event(
    involved: _Involved, *, message: str, node_name: str, wall: float, serial: int = 0
) -> dict[str, Any]:
    """A core/v1 Warning Event ``DynamicConfigRefused`` on a config object, written
    as client-go's legacy recorder writes one (as the evictor's Events are):
    named ``<config>.<hex nanoseconds>``, count 1, ``source`` and
    ``reportingComponent``/``reportingInstance`` naming this agent and node."""
    stamp = datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    target: dict[str, Any] = {
        "apiVersion": involved.api_version,
        "kind": involved.kind,
        "namespace": involved.namespace,
        "name": involved.name,
    }
    if involved.uid:
        target["uid"] = involved.uid
    if involved.resource_version:
        target["resourceVersion"] = involved.resource_version
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{involved.name}.{int(wall * 1e9) + serial:x}",
            "namespace": involved.namespace,
        },
        "involvedObject": target,
        "reason": REFUSED_REASON,
        "message": message[:MAX_MESSAGE],
        "type": "Warning",
        "source": {"component": COMPONENT, "host": node_name},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "action": "ApplyDynamicConfig",
        "reportingComponent": COMPONENT,
        "reportingInstance": node_name,
    }


class ClusterSource:
    """Follows this node's CNC and applies what it lists; see the module docstring.
    ``record`` receives every application and refusal."""

    def __init__(
        self,
        *,
        feed: NodeConfigFeed,
        reader: ConfigReader,
        events: EventPoster,
        applier: SettingsApplier,
        node_name: str,
        clock: Clock,
        checkpoint: LayerCheckpoint | None = None,
        record: DynamicConfigRecord | None = None,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._feed = feed
        self._reader = reader
        self._events = events
        self._applier = applier
        self._node = node_name
        self._clock = clock
        self.record = record or DynamicConfigRecord(
            f"CustomNodeConfig {node_name}", applier.current
        )
        self._sink = LayerSink(applier, record=self.record, checkpoint=checkpoint)
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        # API path -> a version fetched, hash-checked and valid (or applied, or
        # restored from the checkpoint): what needs no GET while the CNC lists its hash.
        self._held: dict[str, Layer] = {}
        # API path -> the hash of its version this agent refused (its Event posted).
        self._refused: dict[str, str] = {}
        # The last set of layers refused as a whole (they do not merge).
        self._refused_set: tuple[tuple[str, str], ...] | None = None
        # API path -> the object as an Event names it (uid, resourceVersion) when fetched.
        self._involved: dict[str, _Involved] = {}
        self._bad_cnc: str | None = None
        self._failures = 0
        self._serial = 0
        self._started = False

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The layers in force (empty before any was applied)."""
        return self._sink.layers or ()

    @property
    def service_overrides(self) -> tuple[ServiceOverride, ...]:
        """The service-level overrides in force, the highest layer's first."""
        return self._sink.service_overrides

    async def start(self) -> None:
        """Apply the checkpoint (before the loops start, and before anything is asked
        of the API server: it may be down)."""
        self._started = True
        if await self._sink.restore():
            for layer in self._sink.layers or ():
                self._held[layer.source] = layer

    async def run(self, stop: asyncio.Event) -> None:
        """Watch the CNC and apply each version of it until ``stop`` (after
        :meth:`start`, which it calls first if nobody did)."""
        if not self._started:
            await self.start()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._feed.run(stop))
            await self._follow(stop)

    async def _follow(self, stop: asyncio.Event) -> None:
        await first_of(stop, self._feed.synced)
        retry: float | None = None
        while not stop.is_set():
            self._feed.changed.clear()
            retry = await self.sync()
            waits: list[Awaitable[object] | asyncio.Event] = [stop, self._feed.changed]
            if retry is not None:
                waits.append(self._clock.sleep(retry))
            await first_of(*waits)

    async def sync(self) -> float | None:
        """Apply the CNC as the feed has it now. Returns when to try again (seconds)
        when the API server did not answer a GET; None when the next CNC version is
        what is awaited."""
        now = self._clock.wall()
        raw = self._feed.object
        if raw is None:
            self._pending(
                f"no CustomNodeConfig {self._node} on the API server yet: the settings in "
                "force stay"
            )
            return None
        try:
            cnc = parse_cnc(raw)
        except ParseError as exc:
            meta = raw.get("metadata")
            version = str(meta.get("resourceVersion")) if isinstance(meta, Mapping) else ""
            if version != self._bad_cnc:
                self._bad_cnc = version
                message = f"CustomNodeConfig {self._node}: {exc}"
                log.error("dynamic config refused, the settings in force stay: %s", message)
                self.record.refused([message], at=now)
            return None
        in_force = {(layer.source, layer.hash): layer for layer in self._sink.layers or ()}
        layers: list[tuple[CNCEntry, Layer]] = []
        for entry in cnc.entries:
            key = config_path(entry.config_type, entry.namespace, entry.name)
            held = in_force.get((key, entry.hash)) or self._held.get(key)
            if held is not None and held.hash == entry.hash:
                layers.append((entry, held))
                continue
            if self._refused.get(key) == entry.hash:
                self._pending(
                    f"{_involved(entry)}@{entry.hash} was refused (see its Events): the "
                    "settings in force stay until the CustomNodeConfig lists another version"
                )
                return None
            try:
                obj = await self._reader.get_object(entry.config_type, entry.namespace, entry.name)
            except (OSError, TimeoutError) as exc:
                delay = self._backoff()
                self._pending(f"cannot read {_involved(entry)} ({exc}); retrying")
                log.warning(
                    "dynamic config: cannot read %s (%s); retrying in %.1f s",
                    _involved(entry),
                    exc,
                    delay,
                )
                return delay
            self.record.fetched()
            if obj is not None:
                self._involved[key] = _involved(entry, obj)
            found = self._verify(key, entry, obj)
            if found is None:
                return None
            if isinstance(found, str):
                await self._refuse(entry, found, now, remember=True)
                return None
            self._held[key] = found
            layers.append((entry, found))
        self._failures = 0
        self._forget(cnc.entries)
        await self._apply(layers, now)
        return None

    def _verify(
        self, key: str, entry: CNCEntry, obj: Mapping[str, Any] | None
    ) -> Layer | str | None:
        """The layer of a fetched object; a problem (str) to refuse it for; None when
        it is not the version the CNC lists (the controller has not caught up)."""
        what = _involved(entry, obj)
        if obj is None:
            self._pending(
                f"{what} is listed by the CustomNodeConfig but not found: waiting for the "
                "controller to catch up"
            )
            return None
        spec = obj.get("spec")
        actual = spec_hash(spec) if isinstance(spec, Mapping) else None
        if actual != entry.hash:
            self._pending(
                f"{what}: its spec hashes to {actual}, the CustomNodeConfig lists "
                f"{entry.hash}: waiting for the controller to catch up"
            )
            return None
        kind = obj.get("kind")
        try:
            target = load_target(obj, kind=kind if isinstance(kind, str) and kind else what.kind)
        except ParseError as exc:
            return str(exc)
        if isinstance(target, InvalidTarget):
            return target.error
        problems = (
            *validate_config(target.config),
            *validate_service_overrides(target.service_overrides),
        )
        if problems:
            return "; ".join(problems)
        layer = Layer(
            name=f"{entry.namespace}/{entry.name}",
            level=target.level,
            hash=entry.hash,
            config=target.config,
            source=key,
            service_overrides=raw_overrides(target.spec),
        )
        try:
            self._sink.settings([layer])  # over the agent's own file, alone
        except DynamicConfigError as exc:
            return str(exc)
        return layer

    async def _apply(self, listed: Sequence[tuple[CNCEntry, Layer]], now: float) -> None:
        layers = tuple(layer for _, layer in listed)
        if layers == self._sink.layers:
            self._pending(None)
            self.record.clear_error()
            return
        signature = tuple((layer.source, layer.hash) for layer in layers)
        if signature == self._refused_set:
            self._pending("the layers listed were refused (see the Events): the settings stay")
            return
        try:
            await self._sink.apply(layers, now=now, origin="cluster")
        except DynamicConfigError as exc:
            self._refused_set = signature
            index = self._culprit(layers)
            below = ", ".join(layer.name for layer in layers[:index]) or "the agent's file"
            await self._refuse(
                listed[index][0], f"{exc} (merged over {below})", now, remember=False
            )
            return
        self._refused_set = None
        self._pending(None)
        self.record.clear_error()

    def _culprit(self, layers: Sequence[Layer]) -> int:
        """The first layer whose merge over those below it the agent cannot take."""
        for index in range(len(layers)):
            try:
                self._sink.settings(layers[: index + 1])
            except DynamicConfigError:
                return index
        return len(layers) - 1

    async def _refuse(
        self,
        entry: CNCEntry,
        problem: str,
        now: float,
        *,
        remember: bool,
    ) -> None:
        """Refuse one config (``remember``: this version of it, whatever it is merged
        with): log, count, show, and post an Event on it."""
        key = config_path(entry.config_type, entry.namespace, entry.name)
        involved = self._involved.get(key) or _involved(entry)
        if remember:
            self._refused[key] = entry.hash
        message = f"{involved}: {problem}"
        log.error("dynamic config refused, the settings in force stay: %s", message)
        self.record.refused([message], at=now)
        self._pending(f"{involved}@{entry.hash} was refused: the settings in force stay")
        self._serial += 1
        body = refusal_event(
            involved,
            message=f"refused by node {self._node}, which keeps its last good settings: {problem}",
            node_name=self._node,
            wall=now,
            serial=self._serial,
        )
        try:
            await self._events.post_event(involved.namespace, body)
        except (OSError, TimeoutError) as exc:
            log.warning("event %s on %s not recorded: %s", REFUSED_REASON, involved, exc)

    def _forget(self, entries: Sequence[CNCEntry]) -> None:
        """Drop what no longer matters: versions neither listed nor in force."""
        listed = {config_path(e.config_type, e.namespace, e.name) for e in entries}
        keep = listed | {layer.source for layer in self._sink.layers or ()}
        self._held = {k: v for k, v in self._held.items() if k in keep}
        self._refused = {k: v for k, v in self._refused.items() if k in listed}
        self._involved = {k: v for k, v in self._involved.items() if k in keep}

    def _backoff(self) -> float:
        self._failures += 1
        cap = min(self._retry_max_s, self._retry_initial_s * 2.0 ** min(self._failures - 1, 30))
        return cap / 2 + self._rng.uniform(0, cap / 2)

    def _pending(self, why: str | None) -> None:
        if why != self.record.pending:
            if why is not None:
                log.info("dynamic config: %s", why)
            self.record.note_pending(why)
