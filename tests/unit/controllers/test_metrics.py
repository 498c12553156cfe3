"""The controller's state gauges (read at scrape time: nothing stale) and /healthz's rule."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from controllers.metrics import ControllerCollector, Health, State


def test_gauges_follow_the_state_without_stale_series() -> None:
    state = [
        State(
            leading=True,
            terms=2,
            nodes=3,
            configs={
                ("AdminQoSConfiguration", "Valid"): 2,
                ("AdminQoSConfiguration", "Invalid"): 1,
            },
            last_sync=1700000000.0,
            synced=True,
        )
    ]
    registry = CollectorRegistry()
    registry.register(ControllerCollector(lambda: state[0]))
    assert registry.get_sample_value("katalyst_controller_leader") == 1.0
    assert registry.get_sample_value("katalyst_controller_lease_terms_total") == 2.0
    assert registry.get_sample_value("katalyst_controller_nodes") == 3.0
    labels = {"kind": "AdminQoSConfiguration", "reason": "Invalid"}
    assert registry.get_sample_value("katalyst_controller_configs", labels) == 1.0
    assert registry.get_sample_value("katalyst_controller_last_sync_timestamp_seconds") == 1.7e9
    # The invalid config is fixed: its series goes, it does not stay at 1.
    state[0] = State(configs={("AdminQoSConfiguration", "Valid"): 3})
    assert registry.get_sample_value("katalyst_controller_configs", labels) is None
    assert registry.get_sample_value("katalyst_controller_leader") == 0.0
    text = generate_latest(registry).decode()
    assert "katalyst_controller_last_sync_timestamp_seconds" not in text  # none yet
    assert "katalyst_controller_caches_synced 0.0" in text


def test_healthz_fails_only_for_a_leader_that_stopped_renewing() -> None:
    assert Health(leading=False, since_renewal_s=None, lease_duration_s=15).problems() == []
    assert Health(leading=False, since_renewal_s=500.0, lease_duration_s=15).problems() == []
    assert Health(leading=True, since_renewal_s=35.0, lease_duration_s=15).problems() == []
    (problem,) = Health(leading=True, since_renewal_s=36.0, lease_duration_s=15).problems()
    assert "leading without renewing the lease for 36 s" in problem
