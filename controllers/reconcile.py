"""The reconciler: KCCs and their target configs into one CustomNodeConfig per node,
the CNR lifecycle, and the configs' ``Valid`` conditions.

**What it watches.** Nodes, KatalystCustomConfigs, CustomNodeConfigs,
CustomNodeResources, and for each KCC in force the resource its
``spec.targetType`` names (``AdminQoSConfiguration``, or any other kind with the
common spec): one :class:`~controllers.apiserver.Informer` each, so that every
replica, leader or standby, holds the same warm copy and the same resolution.

**How it resolves.** One :class:`katalyst.dynconfig.Resolver` per KCC in force,
fed by the watches as objects change (only the nodes a change can affect are
recomputed), and moved to the wall-clock time at each pass so that named-node
configs expire. Of several KCCs naming one target type, the oldest is in force
and the others get ``Valid=False`` (``Duplicate``).

**What survives a restart.** A resolver's history (each config's last good
version, each named config's expiry clock) is what makes a rejected edit leave
the nodes as they were. The leader keeps it on the configs themselves, in the
annotation :data:`controllers.status.LAST_GOOD`, written when a version becomes
the last good one; a resolver starts from those annotations (and, for a config
without one, takes a current version whose hash some CNC lists as good). So a
controller that starts cold, an upgrade or a restart of every replica, resolves
exactly as the one before it, and writes nothing over an unchanged cluster.

**A pass** (after any change, at the next expiry of a named config, after each
periodic relist, and after a failure with backoff) computes what every object
should hold and writes only what differs from the copy (read-compare-write):

1. each node's CNC (created, named as the node, when missing) lists the configs
   in force on it, lowest precedence first, with their spec hashes; CNCs of
   nodes that are gone are deleted;
2. each node has a CNR (created empty when missing; the node's agent writes its
   status); CNRs of nodes that are gone are deleted;
3. each target config's ``status.conditions`` carries its ``Valid`` condition
   (with ``observedGeneration``; ``lastTransitionTime`` moves only when the
   status flips), and a Warning Event when it turns invalid;
4. each named-node config whose ``lastDuration`` has passed is deleted (with a
   log line, a metric and a Normal ``Expired`` Event);
5. each KCC's ``Valid`` condition.

Only the leader writes: a pass of a standby resolves and stops there. Losing the
lease cancels the writes of the pass in flight at once. A write answers with the
stored object, which goes into the copy at once, so that a pass that runs before
its watch event arrives finds nothing to do. A conditional write that conflicts
(409) is read again and retried once; a second conflict waits for the next pass.
When the API server does not answer, the pass stops and is retried with
exponential, jittered backoff; the watches relist when it is back, and the pass
that follows writes only what still differs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from controllers.apiserver import (
    ApiError,
    Informer,
    Kube,
    Obj,
    WatchSettings,
    backoff,
    metadata_only,
    object_key,
    resource_version,
)
from controllers.metrics import ControllerMetrics, State
from controllers.resources import CNCS, CNRS, EVENTS, KCCS, NODES, Resource, target_resource
from controllers.status import (
    LAST_GOOD,
    Verdict,
    annotated,
    cnc_entries,
    cnc_object,
    cnc_status,
    cnr_object,
    last_good_annotation,
    read_last_good,
    rfc3339,
    valid_status,
)
from katalyst.clock import Clock, first_of
from katalyst.dynconfig import (
    EMPTY,
    KCC,
    CNCEntry,
    ConfigRef,
    GroupVersionResource,
    History,
    InvalidTarget,
    Node,
    ParseError,
    Resolution,
    Resolver,
    TargetConfig,
    load_target,
    parse_kcc,
    parse_node,
    parse_timestamp,
)

__all__ = ["COMPONENT", "Controller"]

log = logging.getLogger(__name__)

COMPONENT = "katalyst-controller"
"""The Events' ``source.component`` and ``reportingComponent``."""

_T = TypeVar("_T")


class _Unavailable(Exception):
    """The API server did not answer a write: stop the pass, retry with backoff."""


class _NotLeading(Exception):
    """Leadership ended: no more writes."""


@dataclass
class _Active:
    """A KCC in force for its target type, and its resolver (built once the copies it
    starts from are listed)."""

    kcc: KCC
    resource: Resource
    resolver: Resolver | None = None
    previous: History | None = None
    """The history of the resolver of another KCC for the same type, to continue."""


@dataclass
class _Targets:
    informer: Informer
    task: asyncio.Task[None] | None = None


@dataclass
class _PassResult:
    failed: bool = False
    """The API server did not answer: retry with backoff."""
    retry: bool = False
    """A write conflicted twice: pass again soon."""


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _uid(obj: Mapping[str, Any]) -> str:
    uid = _meta(obj).get("uid")
    return uid if isinstance(uid, str) else ""


def _generation(obj: Mapping[str, Any]) -> int:
    generation = _meta(obj).get("generation")
    return generation if isinstance(generation, int) and not isinstance(generation, bool) else 0


def _version_of(obj: Mapping[str, Any] | None) -> tuple[object, ...] | None:
    """What resolution reads of a config or KCC (not its status): equal before and after
    a status write, so that the controller's own writes do not re-resolve."""
    if obj is None:
        return None
    meta = _meta(obj)
    return (meta.get("uid"), meta.get("generation"), meta.get("creationTimestamp"), obj.get("spec"))


def _kind(obj: Mapping[str, Any], resource: Resource) -> str:
    kind = obj.get("kind")
    return kind if isinstance(kind, str) and kind else resource.kind


class Controller:
    """See the module's docstring. ``set_leading`` is the leader elector's callback."""

    def __init__(
        self,
        kube: Kube,
        *,
        clock: Clock,
        metrics: ControllerMetrics,
        identity: str,
        resync_s: float,
        watch: WatchSettings,
        rng: random.Random | None = None,
    ) -> None:
        self._kube = kube
        self._clock = clock
        self._metrics = metrics
        self._identity = identity
        self._resync_s = resync_s
        self._watch = watch
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        # Only a node's name, uid and labels matter here: its status (heartbeats,
        # conditions, images) is dropped on arrival, so that thousands of nodes cost
        # little memory.
        self._nodes_informer = self._informer(NODES, self._on_node, metadata_only)
        self._kcc_informer = self._informer(KCCS, self._on_kcc)
        self._cnc_informer = self._informer(CNCS, self._on_copy)
        self._cnr_informer = self._informer(CNRS, self._on_copy)
        self._targets: dict[GroupVersionResource, _Targets] = {}
        self._active: dict[GroupVersionResource, _Active] = {}
        self._kcc_verdicts: dict[tuple[str, str], Verdict] = {}
        self._nodes: dict[str, Node] = {}
        self._leading = False
        self._wake = asyncio.Event()
        self._writing: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._configs: dict[tuple[str, str], int] = {}
        self.last_sync: float | None = None
        """Epoch seconds at the end of the last pass that completed."""

    def _informer(
        self,
        resource: Resource,
        handler: Callable[[Informer, Obj | None, Obj | None], None],
        transform: Callable[[Obj], Obj] | None = None,
    ) -> Informer:
        return Informer(
            self._kube,
            resource,
            clock=self._clock,
            handler=handler,
            on_synced=self._on_synced,
            settings=self._watch,
            rng=self._rng,
            transform=transform,
        )

    # ---- public -----------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        return self._leading

    def set_leading(self, leading: bool) -> None:
        """Start or stop writing. Stopping cancels the writes in flight at once."""
        if leading == self._leading:
            return
        self._leading = leading
        if not leading and self._writing is not None:
            self._writing.cancel()
        log.info("controller: %s", "leading: writing" if leading else "standby: not writing")
        self._wake.set()

    def resync(self) -> None:
        """List every resource again, then pass (what ``--resync-s`` does periodically)."""
        for informer in self._informers():
            informer.relist_soon()

    def state(self, *, leading: bool = False, terms: int = 0) -> State:
        return State(
            leading=leading,
            terms=terms,
            nodes=len(self._nodes),
            configs=dict(self._configs),
            last_sync=self.last_sync,
            synced=self._synced(),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Watch and reconcile until ``stop`` is set."""
        self._stop = stop
        async with asyncio.TaskGroup() as group:
            self._group = group
            for informer in self._informers()[:4]:
                group.create_task(informer.run(stop))
            for targets in self._targets.values():
                targets.task = group.create_task(targets.informer.run(stop))
            group.create_task(self._loop(stop))
            group.create_task(self._resync_loop(stop))
        self._group = None

    def _informers(self) -> list[Informer]:
        base = [self._nodes_informer, self._kcc_informer, self._cnc_informer, self._cnr_informer]
        return base + [t.informer for t in self._targets.values()]

    def _synced(self) -> bool:
        base = (self._nodes_informer, self._kcc_informer, self._cnc_informer, self._cnr_informer)
        if not all(i.synced for i in base):
            return False
        for gvr in self._active:
            targets = self._targets.get(gvr)
            if targets is None or not (targets.informer.synced or targets.informer.not_found):
                return False
        return True

    # ---- watch events -----------------------------------------------------------------

    def _on_synced(self, _informer: Informer) -> None:
        self._refresh_kccs()
        self._wake.set()

    def _on_copy(self, _informer: Informer, _old: Obj | None, _new: Obj | None) -> None:
        self._wake.set()

    def _on_node(self, _informer: Informer, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            assert old is not None
            name = object_key(old)[1]
            if self._nodes.pop(name, None) is not None:
                for active in self._active.values():
                    if active.resolver is not None:
                        active.resolver.remove_node(name)
            self._wake.set()
            return
        try:
            node = parse_node(new)
        except ParseError as exc:
            log.warning("node %s: %s; ignored", object_key(new)[1], exc)
            return
        known = self._nodes.get(node.name)
        if known is not None and known.labels == node.labels:
            if old is None or _uid(old) != _uid(new):
                self._wake.set()  # made again under the same name
            return  # a status update (heartbeats): nothing to resolve
        self._nodes[node.name] = node
        for active in self._active.values():
            if active.resolver is not None:
                active.resolver.set_node(node)
        self._wake.set()

    def _on_kcc(self, _informer: Informer, old: Obj | None, new: Obj | None) -> None:
        if _version_of(old) != _version_of(new):
            self._refresh_kccs()
        self._wake.set()

    def _on_target(self, informer: Informer, old: Obj | None, new: Obj | None) -> None:
        self._wake.set()
        active = self._active.get(informer.resource.gvr)
        if active is None or active.resolver is None or _version_of(old) == _version_of(new):
            return
        if new is None:
            assert old is not None
            namespace, name = object_key(old)
            active.resolver.remove_target(ConfigRef(_kind(old, informer.resource), namespace, name))
            return
        loaded = self._load(new, informer.resource)
        if loaded is not None:
            active.resolver.set_target(loaded)

    def _load(self, obj: Obj, resource: Resource) -> TargetConfig | InvalidTarget | None:
        try:
            return load_target(obj, kind=_kind(obj, resource))
        except ParseError as exc:
            log.warning("%s %s: %s; ignored", resource.short, "/".join(object_key(obj)), exc)
            return None

    # ---- KCCs -------------------------------------------------------------------------

    def _refresh_kccs(self) -> None:
        """Which KCC is in force per target type; their verdicts; start and stop the
        target watches to match."""
        verdicts: dict[tuple[str, str], Verdict] = {}
        chosen: dict[GroupVersionResource, tuple[tuple[float, str, str], KCC]] = {}
        for key, obj in sorted(self._kcc_informer.store.items()):
            try:
                kcc = parse_kcc(obj)
            except ParseError as exc:
                verdicts[key] = Verdict(False, "Invalid", str(exc))
                continue
            created = _meta(obj).get("creationTimestamp")
            try:
                since = parse_timestamp(created) if created is not None else 0.0
            except ParseError:
                since = 0.0
            order = (since, key[0], key[1])
            best = chosen.get(kcc.target)
            if best is None or order < best[0]:
                chosen[kcc.target] = (order, kcc)
        for key, obj in self._kcc_informer.store.items():
            if key in verdicts:
                continue
            kcc = parse_kcc(obj)
            winner = chosen[kcc.target][1]
            if (winner.namespace, winner.name) != key:
                verdicts[key] = Verdict(
                    False,
                    "Duplicate",
                    f"spec.targetType: {kcc.target.resource}.{kcc.target.group} is already "
                    f"configured by KatalystCustomConfig {winner.namespace}/{winner.name}; "
                    "one KCC per target type (the oldest applies)",
                )
        self._kcc_verdicts = verdicts
        for gvr, (_, kcc) in chosen.items():
            active = self._active.get(gvr)
            if active is None:
                self._active[gvr] = _Active(kcc, target_resource(gvr))
                log.info("KCC %s/%s: resolving %s", kcc.namespace, kcc.name, gvr.resource)
            elif active.kcc.ref != kcc.ref:
                history = active.resolver.history if active.resolver else active.previous
                self._active[gvr] = _Active(kcc, active.resource, previous=history)
            elif active.kcc != kcc:
                active.kcc = kcc
                if active.resolver is not None:
                    active.resolver.set_kcc(kcc)
            self._watch_targets(gvr)
        for gvr in [g for g in self._active if g not in chosen]:
            del self._active[gvr]
            log.info("no KCC configures %s any more", gvr.resource)
        for gvr in [g for g in self._targets if g not in chosen]:
            targets = self._targets.pop(gvr)
            if targets.task is not None:
                targets.task.cancel()

    def _watch_targets(self, gvr: GroupVersionResource) -> None:
        if gvr in self._targets:
            return
        informer = self._informer(target_resource(gvr), self._on_target)
        targets = self._targets[gvr] = _Targets(informer)
        if self._group is not None:
            targets.task = self._group.create_task(informer.run(self._stop))

    def _ensure_resolver(self, active: _Active, now: float) -> Resolver | None:
        if active.resolver is not None:
            return active.resolver
        targets = self._targets.get(active.kcc.target)
        if targets is None or (not targets.informer.synced and not targets.informer.not_found):
            return None
        loaded = [
            t
            for obj in targets.informer.store.values()
            if (t := self._load(obj, active.resource)) is not None
        ]
        previous = active.previous or self._seed(active, targets.informer, loaded)
        resolver = Resolver(active.kcc, now=now, previous=previous)
        resolver.load(loaded, self._nodes.values())
        resolver.resolve_all()
        active.resolver = resolver
        return resolver

    def _seed(
        self,
        active: _Active,
        informer: Informer,
        loaded: Iterable[TargetConfig | InvalidTarget],
    ) -> History:
        """The history a cold resolver starts from: each config's last good version and
        expiry clock from its annotation; for a config without one, its current
        version if a CNC lists its hash (it was good to whoever wrote the CNC)."""
        last_good: dict[ConfigRef, TargetConfig] = {}
        names_since: dict[tuple[ConfigRef, frozenset[str]], float] = {}
        for key, obj in informer.store.items():
            ref = ConfigRef(_kind(obj, active.resource), *key)
            kept = read_last_good(obj, ref)
            if kept is None:
                continue
            last_good[ref] = kept.target
            if kept.names_since is not None:
                names_since[(ref, kept.target.node_names)] = kept.names_since
        listed: set[tuple[str, str, str]] = set()
        for cnc in self._cnc_informer.store.values():
            for entry in cnc_entries(cnc) or ():
                if entry.config_type == active.kcc.target:
                    listed.add((entry.namespace, entry.name, entry.hash))
        for target in loaded:
            if (
                isinstance(target, TargetConfig)
                and target.ref not in last_good
                and (target.ref.namespace, target.ref.name, target.hash) in listed
            ):
                last_good[target.ref] = target
        return History(last_good=last_good, names_since=names_since)

    # ---- the pass loop ----------------------------------------------------------------

    async def _resync_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await first_of(self._clock.sleep(self._resync_s), stop)
            if not stop.is_set():
                log.debug("resync: listing everything again")
                self.resync()

    async def _loop(self, stop: asyncio.Event) -> None:
        failures = 0
        due: float | None = None
        while not stop.is_set():
            waits: list[Awaitable[object] | asyncio.Event] = [self._wake, stop]
            if due is not None:
                waits.append(self._clock.sleep(max(0.0, due - self._clock.monotonic())))
            await first_of(*waits)
            if stop.is_set():
                return
            self._wake.clear()
            result = await self._pass()
            now = self._clock.monotonic()
            due = None
            if result.failed:
                failures += 1
                due = now + backoff(failures, self._watch, self._rng)
            else:
                failures = 0
                if result.retry:
                    due = now + backoff(1, self._watch, self._rng)
            expiry = min(
                (
                    e
                    for a in self._active.values()
                    if a.resolver is not None and (e := a.resolver.next_expiry()) is not None
                ),
                default=None,
            )
            if expiry is not None:
                # Expiry is at `start + lastDuration` exactly; a hair later, it is due.
                at = now + max(0.0, expiry - self._clock.wall()) + 0.001
                due = at if due is None else min(due, at)

    async def _pass(self) -> _PassResult:
        result = _PassResult()
        if not self._synced():
            return result
        started = time.perf_counter()
        now = self._clock.wall()
        resolutions: dict[GroupVersionResource, Resolution] = {}
        for gvr, active in sorted(self._active.items()):
            resolver = self._ensure_resolver(active, now)
            if resolver is not None:
                resolver.set_time(now)
                resolutions[gvr] = resolver.resolution()
        self._configs = _count_reasons(resolutions)
        leading = self._leading
        actions = self._plan(resolutions, now) if leading else []
        self._metrics.resolution.observe(time.perf_counter() - started)
        if not leading:
            self._metrics.passes.labels("standby").inc()
            self.last_sync = self._clock.wall()
            return result
        task = self._writing = asyncio.ensure_future(self._execute(actions, result))
        try:
            await asyncio.wait({task})
        finally:
            if not task.done():
                task.cancel()
            self._writing = None
        if task.cancelled():
            log.info("stepped down: the rest of the pass is not written")
            return result
        exc = task.exception()
        if isinstance(exc, _Unavailable):
            result.failed = True
            self._metrics.passes.labels("failed").inc()
            log.warning("pass stopped: %s; retrying with backoff", exc)
            return result
        if exc is not None:
            raise exc
        self._metrics.passes.labels("ok").inc()
        self.last_sync = self._clock.wall()
        return result

    # ---- planning (no I/O) ------------------------------------------------------------

    def _plan(
        self, resolutions: Mapping[GroupVersionResource, Resolution], now: float
    ) -> list[_Action]:
        actions: list[_Action] = []
        ordered = sorted(self._active.items())
        ready = all(gvr in resolutions for gvr, _ in ordered)
        nodes = self._nodes_informer.store
        cncs = self._cnc_informer.store
        cnrs = self._cnr_informer.store
        later: list[_Action] = []
        for name in sorted(self._nodes):
            raw = nodes.get(("", name))
            if raw is None:
                continue
            cnc = cncs.get(("", name))
            desired: list[CNCEntry] | None = None
            if ready:
                desired = [
                    CNCEntry(active.kcc.target, ref.namespace, ref.name, digest)
                    for gvr, active in ordered
                    for ref, digest in resolutions[gvr].nodes.get(name, EMPTY).entries
                ]
            if cnc is None:
                actions.append(_Action("cnc", name, self._create_cnc(raw, desired)))
            elif desired is not None and cnc_status(cnc, desired) is not None:
                actions.append(_Action("cnc", name, self._update_cnc(cnc, desired)))
            if ("", name) not in cnrs:
                actions.append(_Action("cnr", name, self._create_cnr(raw)))
        for (_, name), cnc in sorted(cncs.items()):
            if name not in self._nodes:
                later.append(_Action("cnc", name, self._delete(CNCS, self._cnc_informer, cnc)))
        for (_, name), cnr in sorted(cnrs.items()):
            if name not in self._nodes:
                later.append(_Action("cnr", name, self._delete(CNRS, self._cnr_informer, cnr)))
        stamp = rfc3339(now)
        for gvr, active in ordered:
            res = resolutions.get(gvr)
            targets = self._targets.get(gvr)
            if res is None or targets is None:
                continue
            informer = targets.informer
            for key, obj in sorted(informer.store.items()):
                ref = ConfigRef(_kind(obj, active.resource), *key)
                found = res.conditions.get(ref)
                if found is None:
                    continue
                verdict = Verdict.of(found)
                deadline = res.deadlines.get(ref)
                if verdict.reason == "Valid" and deadline is not None:
                    # Stable while the version and its node names are: one write.
                    verdict = Verdict(True, "Valid", f"applies until {rfc3339(deadline)}")
                note = None
                good = res.history.last_good.get(ref)
                if good is not None and good.uid == _uid(obj):
                    since = res.history.names_since.get((ref, good.node_names))
                    value = last_good_annotation(good, since)
                    if value is not None and annotated(obj, LAST_GOOD, value) is not None:
                        note = value
                status = valid_status(
                    obj.get("status"), verdict, generation=_generation(obj), now=stamp
                )
                if note is not None or status is not None:
                    what = f"{active.resource.short} {key[0]}/{key[1]}"
                    actions.append(
                        _Action(
                            "config", what, self._sync_config(informer, obj, verdict, note, stamp)
                        )
                    )
            for ref in res.expired:
                gone = informer.get(ref.name, ref.namespace)
                if gone is not None:
                    message = res.conditions[ref].message if ref in res.conditions else "expired"
                    what = f"{active.resource.short} {ref.namespace}/{ref.name}"
                    later.append(_Action("config", what, self._expire(informer, gone, message)))
        for key, obj in sorted(self._kcc_informer.store.items()):
            verdict = self._kcc_verdict(key, obj)
            if valid_status(obj.get("status"), verdict, generation=_generation(obj), now=stamp):
                what = f"KCC {key[0]}/{key[1]}"
                actions.append(
                    _Action(
                        "kcc", what, self._update_valid(self._kcc_informer, obj, verdict, stamp)
                    )
                )
        return actions + later

    def _kcc_verdict(self, key: tuple[str, str], obj: Obj) -> Verdict:
        verdict = self._kcc_verdicts.get(key)
        if verdict is not None:
            return verdict
        kcc = parse_kcc(obj)
        targets = self._targets.get(kcc.target)
        if targets is not None and targets.informer.forbidden:
            return Verdict(
                False,
                "TargetForbidden",
                f"spec.targetType: katalyst-controller may not list {kcc.target.resource}."
                f"{kcc.target.group}; grant it (and the agent) access: Helm value "
                "agent.extraConfigTargets, docs/install.md",
            )
        if targets is not None and targets.informer.not_found:
            return Verdict(
                False,
                "TargetNotServed",
                f"spec.targetType: the API server does not serve {kcc.target.resource}."
                f"{kcc.target.group}/{kcc.target.version} (is its CRD installed?)",
            )
        return Verdict(True, "Valid")

    # ---- writing ------------------------------------------------------------------------

    async def _execute(self, actions: list[_Action], result: _PassResult) -> None:
        try:
            for action in actions:
                if not self._leading:
                    return
                try:
                    await action.run
                except _NotLeading:
                    return
                except ApiError as exc:
                    if exc.transient:
                        raise _Unavailable(str(exc)) from exc
                    if exc.conflict:
                        result.retry = True
                        log.info("%s %s: %s; again at the next pass", action.kind, action.what, exc)
                    else:
                        log.error("%s %s: %s", action.kind, action.what, exc)
        finally:
            for action in actions:
                action.close()

    async def _call(self, kind: str, verb: str, request: Callable[[], Awaitable[_T]]) -> _T:
        """One write, if still leading, counted by its outcome."""
        if not self._leading:
            raise _NotLeading
        try:
            answer = await request()
        except ApiError as exc:
            outcome = (
                "unavailable"
                if exc.transient
                else "conflict"
                if exc.conflict
                else "not_found"
                if exc.not_found
                else "error"
            )
            self._metrics.writes.labels(kind, verb, outcome).inc()
            raise
        self._metrics.writes.labels(kind, verb, "ok").inc()
        return answer

    async def _update_status(
        self,
        kind: str,
        informer: Informer,
        obj: Obj,
        rebuild: Callable[[Obj], dict[str, Any] | None],
    ) -> Obj | None:
        """:meth:`Kube.update_status`, each PUT counted and made only while leading; the
        stored object goes into the copy."""
        resource = informer.resource

        async def put(body: Obj) -> Obj:
            return await self._call(
                kind, "update", functools.partial(self._kube.replace, resource, body, status=True)
            )

        stored = await self._kube.update_status(
            resource, obj, rebuild, put=put, on_read=informer.observe
        )
        if stored is not None:
            informer.observe(stored)
        return stored

    async def _create_cnc(self, node: Obj, desired: list[CNCEntry] | None) -> None:
        name = object_key(node)[1]
        try:
            stored = await self._call(
                "cnc", "create", lambda: self._kube.create(CNCS, cnc_object(node))
            )
        except ApiError as exc:
            if not exc.conflict:
                raise
            fresh = await self._kube.get(CNCS, name)
            if fresh is None:
                return
            stored = fresh
        self._cnc_informer.observe(stored)
        log.info("CNC %s created", name)
        if desired:
            await self._update_cnc(stored, desired)

    async def _update_cnc(self, cnc: Obj, desired: list[CNCEntry]) -> None:
        name = object_key(cnc)[1]
        before = cnc_entries(cnc)
        stored = await self._update_status(
            "cnc_status", self._cnc_informer, cnc, lambda fresh: cnc_status(fresh, desired)
        )
        if stored is not None:
            log.info(
                "CNC %s: %s (was %s)",
                name,
                _names(desired),
                "unreadable" if before is None else _names(before),
            )

    async def _create_cnr(self, node: Obj) -> None:
        name = object_key(node)[1]
        try:
            stored = await self._call(
                "cnr", "create", lambda: self._kube.create(CNRS, cnr_object(node))
            )
        except ApiError as exc:
            if not exc.conflict:
                raise
            return  # created by the node's agent meanwhile: the watch brings it
        self._cnr_informer.observe(stored)
        log.info("CNR %s created", name)

    async def _delete(self, resource: Resource, informer: Informer, obj: Obj) -> None:
        namespace, name = object_key(obj)
        kind = "cnc" if resource == CNCS else "cnr"
        try:
            await self._call(
                kind,
                "delete",
                lambda: self._kube.delete(resource, name, namespace, uid=_uid(obj) or None),
            )
        except ApiError as exc:
            if exc.conflict:
                return  # made again under the same name: the watch brings it
            if not exc.not_found:
                raise
        informer.forget(name, namespace)
        log.info("%s %s deleted: its node is gone", resource.kind, name)

    async def _sync_config(
        self, informer: Informer, obj: Obj, verdict: Verdict, note: str | None, now: str
    ) -> None:
        """A target config's last-good annotation (when ``note``), then its condition.
        Both were computed for ``obj``'s generation: a retry after a conflict writes
        nothing to a newer one (the next pass, which its watch event brings, does)."""
        planned = (_uid(obj), _generation(obj))
        if note is not None:

            async def put(body: Obj) -> Obj:
                return await self._call(
                    "config",
                    "annotate",
                    functools.partial(self._kube.replace, informer.resource, body, status=False),
                )

            stored = await self._kube.rewrite(
                informer.resource,
                obj,
                lambda current: (
                    annotated(current, LAST_GOOD, note)
                    if (_uid(current), _generation(current)) == planned
                    else None
                ),
                status=False,
                put=put,
                on_read=informer.observe,
            )
            if stored is not None:
                informer.observe(stored)
                obj = stored
            namespace, name = object_key(obj)
            current = informer.get(name, namespace)
            if current is None or (_uid(current), _generation(current)) != planned:
                return  # changed meanwhile: the next pass decides
            obj = current
        await self._update_valid(informer, obj, verdict, now)

    async def _update_valid(self, informer: Informer, obj: Obj, verdict: Verdict, now: str) -> None:
        """The ``Valid`` condition, for ``obj``'s generation only (see :meth:`_sync_config`)."""
        kind = "kcc_status" if informer is self._kcc_informer else "config_status"
        old = _valid_condition(obj)
        planned = (_uid(obj), _generation(obj))

        def rebuild(fresh: Obj) -> dict[str, Any] | None:
            if (_uid(fresh), _generation(fresh)) != planned:
                return None
            return valid_status(fresh.get("status"), verdict, generation=planned[1], now=now)

        stored = await self._update_status(kind, informer, obj, rebuild)
        if stored is None:
            return
        namespace, name = object_key(stored)
        what = f"{_kind(stored, informer.resource)} {namespace}/{name}"
        if verdict.valid:
            log.info("%s: Valid (%s)", what, verdict.reason)
            return
        log.warning("%s: rejected (%s): %s", what, verdict.reason, verdict.message)
        if old is None or old.get("status") != "False" or old.get("reason") != verdict.reason:
            await self._event(stored, informer.resource, "Warning", verdict.reason, verdict.message)

    async def _expire(self, informer: Informer, obj: Obj, message: str) -> None:
        resource = informer.resource
        namespace, name = object_key(obj)
        try:
            await self._call(
                "config",
                "delete",
                lambda: self._kube.delete(
                    resource,
                    name,
                    namespace,
                    uid=_uid(obj) or None,
                    version=resource_version(obj) or None,
                ),
            )
        except ApiError as exc:
            if exc.conflict:
                return  # edited since (a new lastDuration?): resolved again from the watch
            if not exc.not_found:
                raise
        informer.forget(name, namespace)
        self._metrics.expired.inc()
        what = f"{_kind(obj, resource)} {namespace}/{name}"
        log.info("%s deleted: %s", what, message)
        await self._event(obj, resource, "Normal", "Expired", f"{message}; deleted")

    async def _event(
        self, obj: Obj, resource: Resource, type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event on ``obj`` (best effort: a failure is logged, not retried)."""
        namespace, name = object_key(obj)
        wall = self._clock.wall()
        stamp = rfc3339(wall)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{int(wall * 1e9):x}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": resource.api_version,
                "kind": _kind(obj, resource),
                "namespace": namespace,
                "name": name,
                "uid": _uid(obj),
                "resourceVersion": resource_version(obj),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": COMPONENT},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": COMPONENT,
            "reportingInstance": self._identity,
        }
        try:
            await self._call("event", "create", lambda: self._kube.create(EVENTS, body))
        except ApiError as exc:
            if exc.transient:
                raise
            log.warning("event %s on %s/%s not recorded: %s", reason, namespace, name, exc)


@dataclass
class _Action:
    """One planned write (a coroutine, run by the executor if still leading)."""

    kind: str
    what: str
    run: Awaitable[None]

    def close(self) -> None:
        """Discard the coroutine if it never ran."""
        close = getattr(self.run, "close", None)
        if close is not None:
            close()


def _valid_condition(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    status = obj.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(conditions, list):
        return None
    for condition in conditions:
        if isinstance(condition, Mapping) and condition.get("type") == "Valid":
            return condition
    return None


def _names(entries: Iterable[CNCEntry]) -> str:
    listed = [f"{e.namespace}/{e.name}@{e.hash[:7]}" for e in entries]
    return "[" + ", ".join(listed) + "]"


def _count_reasons(
    resolutions: Mapping[GroupVersionResource, Resolution],
) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for res in resolutions.values():
        for ref, condition in res.conditions.items():
            key = (ref.kind, condition.reason)
            counts[key] = counts.get(key, 0) + 1
    return counts
