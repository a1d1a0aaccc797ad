"""Alert lifecycle: pending → firing → resolved, dedup by fingerprint, cooldown, event times, state."""

from __future__ import annotations

from monitor.signals import Condition
from monitor.alerts.engine import AlertEngine


def cond(active: bool, at: float, key: str = "self_harm", kind: str = "category_share", scope: str = "global", **kw) -> Condition:
    return Condition(kind, scope, key, active, at, **kw)


def test_repeated_active_conditions_make_one_alert_with_event_times():
    engine = AlertEngine(pending_seconds=0, cooldown_seconds=0)
    for t in (10.0, 11.0, 12.0):
        engine.observe([cond(True, t, summary=f"at {t}", evidence={"share": t})])
    [alert] = engine.alerts("all")
    assert (alert.status, alert.started_at, alert.updated_at) == ("firing", 10.0, 12.0)
    assert alert.evidence == {"share": 12.0} and alert.summary == "at 12.0"
    engine.observe([cond(False, 20.0)])
    assert engine.alerts("firing") == []
    assert engine.alerts("resolved")[0].resolved_at == 20.0


def test_pending_until_condition_holds_long_enough_in_event_time():
    engine = AlertEngine(pending_seconds=60, cooldown_seconds=0)
    engine.observe([cond(True, 0.0)])
    assert [a.status for a in engine.alerts()] == ["pending"]
    engine.observe([cond(True, 59.0)])
    assert [a.status for a in engine.alerts()] == ["pending"]
    [transition] = engine.observe([cond(True, 60.0)])
    assert (transition.previous, transition.alert.status) == ("pending", "firing")


def test_pending_that_clears_never_becomes_a_resolved_alert():
    engine = AlertEngine(pending_seconds=60, cooldown_seconds=0)
    engine.observe([cond(True, 0.0)])
    assert engine.observe([cond(False, 30.0)]) == []
    assert engine.alerts("all") == []


def test_flapping_within_cooldown_reopens_the_same_alert():
    engine = AlertEngine(pending_seconds=0, cooldown_seconds=100)
    engine.observe([cond(True, 0.0)])
    first_id = engine.alerts()[0].id
    engine.observe([cond(False, 10.0)])
    engine.observe([cond(True, 50.0)])
    [alert] = engine.alerts("all")
    assert alert.id == first_id and alert.status == "firing" and alert.resolved_at is None
    engine.observe([cond(False, 60.0)])
    engine.observe([cond(True, 500.0)])  # after the cooldown: a new alert
    assert len(engine.alerts("all")) == 2


def test_fingerprints_separate_scopes_and_keys():
    engine = AlertEngine()
    engine.observe([cond(True, 1.0), cond(True, 1.0, scope="model=gpt-4o"), cond(True, 1.0, key="privacy_violation")])
    assert len(engine.alerts("firing")) == 3
    assert len({a.id for a in engine.alerts()}) == 3


def test_severity_only_escalates_and_ids_are_deterministic():
    a, b = AlertEngine(), AlertEngine()
    for engine in (a, b):
        engine.observe([cond(True, 5.0, severity="warning")])
        engine.observe([cond(True, 6.0, severity="critical")])
        engine.observe([cond(True, 7.0, severity="info")])
    assert a.alerts()[0].severity == "critical"
    assert a.alerts()[0].id == b.alerts()[0].id


def test_resolved_history_is_bounded():
    engine = AlertEngine(cooldown_seconds=0, max_resolved=10)
    for i in range(30):
        engine.observe([cond(True, float(2 * i), key=f"k{i}")])
        engine.observe([cond(False, float(2 * i + 1), key=f"k{i}")])
    assert len(engine.alerts("resolved")) == 10


def test_state_round_trip_keeps_firing_alerts_without_refiring():
    engine = AlertEngine(cooldown_seconds=0)
    engine.observe([cond(True, 1.0), cond(True, 1.0, key="x")])
    engine.observe([cond(False, 2.0, key="x")])
    restored = AlertEngine(cooldown_seconds=0)
    restored.load_state_dict(engine.state_dict())
    assert [a.to_dict() for a in restored.alerts()] == [a.to_dict() for a in engine.alerts()]
    assert restored.observe([cond(True, 3.0)]) == []  # still firing: no new transition, no second page


def test_reopened_alert_takes_a_higher_severity():
    engine = AlertEngine(pending_seconds=0, cooldown_seconds=100)
    engine.observe([cond(True, 0.0, severity="warning")])
    engine.observe([cond(False, 10.0)])
    engine.observe([cond(True, 20.0, severity="critical")])
    assert engine.alerts("firing")[0].severity == "critical"
