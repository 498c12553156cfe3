"""One object that hands a whole new :class:`DynamicSettings` to the running loops.

:meth:`SettingsApplier.apply` first checks the set against what the running agent
can take (:meth:`SettingsApplier.check`), and only then hands each changed section
to its loop; every loop takes it up at its next period. An invalid set changes no
loop. The loops' own ``configure`` methods are the only way in:

========================  =====================================================
section                   taken by
========================  =====================================================
``sysadvisor``, reclaim   :meth:`agent.sysadvisor.loop.AdvisorLoop.configure`
                          (and the metrics loop's period, which is the advisor's)
``eviction``              :meth:`agent.eviction.manager.EvictionManager.configure`
``network``               :meth:`agent.isolation.network.NetworkLoop.configure`
``io``                    :meth:`agent.isolation.io_loop.IOLoop.configure`
========================  =====================================================

The heartbeats of the loops whose period changed get the same allowance as at
start-up (ten periods, at least 30 s), so that a longer period does not turn
``/healthz`` red.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from agent.config import AgentConfig
from agent.dynconfig.settings import DynamicConfigError, DynamicSettings, changes
from agent.eviction.manager import EvictionManager
from agent.isolation.io_loop import IOLoop
from agent.isolation.network import NetworkLoop, static_changes
from agent.metaserver.metrics import MetricsLoop
from agent.observability import Heartbeat
from agent.sysadvisor.loop import AdvisorLoop

__all__ = ["SettingsApplier", "heartbeat_max_age"]

log = logging.getLogger(__name__)


def heartbeat_max_age(period_s: float) -> float:
    """How stale a loop of this period may get before ``/healthz`` fails (the rule
    ``agent.app`` and ``agent.isolation.setup`` use at start-up)."""
    return max(30.0, 10 * period_s)


# Heartbeat name -> the section whose period paces that loop.
_PACED_BY = {"metrics": "sysadvisor", "sysadvisor": "sysadvisor", "network": "network", "io": "io"}


class SettingsApplier:
    """Applies whole :class:`DynamicSettings` to the loops given (any may be None:
    a loop the agent does not run). ``base`` is the agent's start-up configuration:
    the settings in force until the first :meth:`apply`, and the reference for the
    settings fixed at start-up."""

    def __init__(
        self,
        base: AgentConfig | DynamicSettings,
        *,
        advisor: AdvisorLoop | None = None,
        eviction: EvictionManager | None = None,
        network: NetworkLoop | None = None,
        io: IOLoop | None = None,
        metrics: MetricsLoop | None = None,
        heartbeats: Iterable[Heartbeat] = (),
    ) -> None:
        self._base = base if isinstance(base, DynamicSettings) else DynamicSettings.of(base)
        self._current = self._base
        self._advisor = advisor
        self._eviction = eviction
        self._network = network
        self._io = io
        self._metrics = metrics
        self._heartbeats = list(heartbeats)
        self._lock = threading.Lock()

    @property
    def base(self) -> DynamicSettings:
        """The start-up settings (the agent's ``--config`` file, reclaim on)."""
        return self._base

    @property
    def current(self) -> DynamicSettings:
        """The settings last applied (the loops take them up at their next period)."""
        return self._current

    def check(self, settings: DynamicSettings) -> None:
        """Raise :class:`DynamicConfigError` naming every problem when ``settings``
        cannot be applied to the running agent: an invalid section, a change of a
        setting fixed at start-up, the IO loop switched on where it was not started."""
        problems: list[str] = []
        try:
            settings.sysadvisor.check()
        except ValueError as exc:
            problems.append(str(exc))
        problems += static_changes(self._base.network, settings.network)
        if self._io is None and settings.io.enabled and not self._base.io.enabled:
            problems.append(
                "io.enabled: the IO loop was not started (io.enabled is false in the "
                "agent's --config file); switching it on takes a restart"
            )
        if problems:
            raise DynamicConfigError("; ".join(problems))

    def apply(self, settings: DynamicSettings) -> list[str]:
        """Hand ``settings`` to the loops (each from its next period); what changed,
        one line per setting (``sysadvisor.period_s: 1.0 -> 2.0``), empty when
        nothing did. All or nothing: :class:`DynamicConfigError` (naming every
        problem) before any loop is touched."""
        with self._lock:
            self.check(settings)
            changed = changes(self._current, settings)
            if not changed:
                return []
            sections = {line.split(".", 1)[0].split(":", 1)[0] for line in changed}
            self._hand_over(settings, sections)
            self._current = settings
        log.info("dynamic config applied: %s", "; ".join(changed))
        return changed

    def _hand_over(self, settings: DynamicSettings, sections: set[str]) -> None:
        old = self._current
        if self._advisor is not None and sections & {"sysadvisor", "reclaim"}:
            self._advisor.configure(settings.sysadvisor, reclaim_enabled=settings.reclaim_enabled)
        if self._metrics is not None and settings.sysadvisor.period_s != old.sysadvisor.period_s:
            self._metrics.set_period(settings.sysadvisor.period_s)
        if self._eviction is not None and "eviction" in sections:
            self._eviction.configure(settings.eviction)
        if self._network is not None and "network" in sections:
            self._network.configure(settings.network)
        if self._io is not None and "io" in sections:
            self._io.configure(settings.io)
        for beat in self._heartbeats:
            section = _PACED_BY.get(beat.name)
            if section is not None:
                period: float = getattr(settings, section).period_s
                beat.max_age = heartbeat_max_age(period)
