"""Where every source's layers go: merged over the agent's file, applied to the
running loops, checkpointed and recorded, and, at start, restored from the
checkpoint. The standalone folder (:class:`agent.dynconfig.FolderSource`) and the
cluster's CustomNodeConfig (:class:`agent.dynconfig.ClusterSource`) share this one
path, so that both apply all or nothing, both survive a restart the same way, and
``/status`` and ``/metrics`` read the same record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from agent.dynconfig.applier import SettingsApplier
from agent.dynconfig.checkpoint import LayerCheckpoint
from agent.dynconfig.record import DynamicConfigRecord
from agent.dynconfig.settings import DynamicConfigError, DynamicSettings, Layer, from_layers
from agent.metaserver.metrics import ContainerRef
from katalyst.dynconfig import ParseError, ServiceOverride, parse_service_overrides, service_targets
from katalyst.qos import PodView

__all__ = ["LayerSink", "service_targets_hook"]

log = logging.getLogger(__name__)


class LayerSink:
    """Applies whole sets of layers through ``applier``; saves each applied set to
    ``checkpoint`` (when given) and tells ``record``."""

    def __init__(
        self,
        applier: SettingsApplier,
        *,
        record: DynamicConfigRecord,
        checkpoint: LayerCheckpoint | None = None,
    ) -> None:
        self._applier = applier
        self._record = record
        self._checkpoint = checkpoint
        self._layers: tuple[Layer, ...] | None = None
        self._overrides: tuple[ServiceOverride, ...] = ()

    @property
    def layers(self) -> tuple[Layer, ...] | None:
        """The layers in force; None before any set was applied (the agent's file alone)."""
        return self._layers

    @property
    def service_overrides(self) -> tuple[ServiceOverride, ...]:
        """The service-level overrides of the layers in force, the highest layer's first
        (the order :func:`katalyst.dynconfig.service_targets` expects)."""
        return self._overrides

    def _set_layers(self, layers: tuple[Layer, ...]) -> None:
        overrides: list[ServiceOverride] = []
        for layer in reversed(layers):
            try:
                overrides.extend(parse_service_overrides(list(layer.service_overrides)))
            except ParseError as exc:  # validated when read; a checkpoint may be older
                log.warning("dynamic config: %s: service overrides left out: %s", layer.name, exc)
        self._layers = layers
        self._overrides = tuple(overrides)

    def settings(self, layers: Sequence[Layer]) -> DynamicSettings:
        """What ``layers`` make over the agent's file, checked against what the running
        agent can take; :class:`DynamicConfigError` naming the field otherwise. Applies
        nothing."""
        settings = from_layers(self._applier.base, [layer.config for layer in layers])
        self._applier.check(settings)
        return settings

    async def restore(self) -> bool:
        """Apply the checkpoint's layers, if there is a usable one; whether it was."""
        if self._checkpoint is None:
            return False
        loaded = await asyncio.to_thread(self._checkpoint.load)
        if loaded is None:
            return False
        layers, applied_at = loaded
        try:
            settings = from_layers(self._applier.base, [layer.config for layer in layers])
            changed = self._applier.apply(settings)
        except DynamicConfigError as exc:
            log.warning(
                "dynamic config: the checkpoint's layers no longer apply over the agent's "
                "configuration (%s); starting from that configuration",
                exc,
            )
            return False
        self._set_layers(tuple(layers))
        self._record.applied(layers, settings, changed, at=applied_at, origin="checkpoint")
        log.info(
            "dynamic config: restored %d layer(s) from the checkpoint: %s",
            len(layers),
            ", ".join(f"{x.name}@{x.hash}" for x in layers) or "none",
        )
        return True

    async def apply(self, layers: Sequence[Layer], *, now: float, origin: str) -> list[str]:
        """Make ``layers`` the ones in force: every loop gets the settings from its next
        period, the set is checkpointed and recorded (``origin``: the source); what
        changed, one line per setting. All or nothing: :class:`DynamicConfigError`
        (naming the field) before anything changes."""
        layers = tuple(layers)
        settings = from_layers(self._applier.base, [layer.config for layer in layers])
        changed = self._applier.apply(settings)
        self._set_layers(layers)
        if self._checkpoint is not None:
            try:
                await asyncio.to_thread(self._checkpoint.save, layers, applied_at=now)
            except (OSError, ValueError) as exc:
                # Applied all the same: the loops run with it; a restart would start
                # from the previous checkpoint until the next change saves again.
                log.error("dynamic config: cannot checkpoint the applied layers: %s", exc)
        self._record.applied(layers, settings, changed, at=now, origin=origin)
        log.info(
            "dynamic config: layers %s applied from %s (%s)",
            ", ".join(f"{x.level} {x.name}@{x.hash}" for x in layers) or "none",
            origin,
            "; ".join(changed) or "no setting changed",
        )
        return changed


def service_targets_hook(
    overrides: Callable[[], Sequence[ServiceOverride]],
    views: Callable[[], Iterable[PodView]],
) -> Callable[[Sequence[ContainerRef]], Mapping[str, float]]:
    """The sysadvisor's per-region hook (:attr:`AdvisorLoop.service_targets`): for a
    region's containers, each indicator's target from the service overrides in force
    (the highest layer's matching override, per pod), the lowest over the region's
    pods: the most conservative service in a region sets its pace."""

    def targets(refs: Sequence[ContainerRef]) -> Mapping[str, float]:
        current = overrides()
        if not current:
            return {}
        pods: dict[str, PodView] = {str(view.uid): view for view in views()}
        out: dict[str, float] = {}
        for uid in {ref.pod_uid for ref in refs}:
            view = pods.get(uid)
            if view is None:
                continue
            for name, target in service_targets(current, view.namespace, view.labels).items():
                out[name] = min(target, out.get(name, target))
        return out

    return targets
