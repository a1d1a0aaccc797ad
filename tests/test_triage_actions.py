"""Triage actions on a running service (synthetic judged traffic): a labelled new category is learned
by the judge, the emerging alert resolves and stays resolved, revert restores the judge, every action
is audited, bad input is refused naming the field, and Redis keeps it all across a restart."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from prometheus_client import generate_latest

from monitor.judge.verdict import JudgeInput
from monitor.taxonomy import SAFE
from monitor.state.memory import MemoryStateStore
from monitor.pipeline.triaging import triage_of
from monitor.drift.base import CategoryReferences
from monitor.signals import Reading
from monitor.triage.console import SplitLabel, TriageError
from monitor.triage.state import TriageState
from monitor.triage.export import render
from tests.helpers.triage import drifting, emerging_alert, feed, synthetic_service
from tests.test_drift_emerging import NEW_WORDS, World, _around

WORLD = World.make()


@pytest.fixture()
def alerted():
    """A service whose emerging-cluster detector fired on the new category."""
    service = synthetic_service()
    feed(service, drifting(world=WORLD))
    return service, triage_of(service), emerging_alert(service)


def _judge(service, vectors: np.ndarray) -> list[str]:
    return [v.category for v in service.scorer.judge.judge([JudgeInput("p", x) for x in vectors])]


def test_new_category_is_learned_resolves_the_alert_and_does_not_refire(alerted):
    service, triage, alert = alerted
    before = service.judge_version
    opened_before = {a.id for a in service.alerts("all")}
    entry = triage.label_cluster("alice", alert.key, "new_category", name="counterfeit_goods", reason="fake watches")
    assert entry["who"] == "alice" and entry["action"] == "cluster.new_category" and entry["reason"] == "fake watches"
    assert service.judge_version == f"{before}+triage-1" == entry["judge_version_after"]
    assert "counterfeit_goods" in triage.categories and "counterfeit_goods" in service.scorer.judge.categories
    exposed = generate_latest(service.metrics.registry).decode()
    assert f'llmsafety_judge_info{{judge_version="{before}+triage-1"}} 1.0' in exposed
    assert f'llmsafety_judge_info{{judge_version="{before}"}}' not in exposed
    [build] = [line for line in exposed.splitlines() if line.startswith("llmsafety_build_info{")]
    assert f'judge_version="{before}+triage-1"' in build

    rng = np.random.default_rng(99)
    held_back = np.stack([_around(rng, WORLD.new) for _ in range(500)])
    benign = np.stack([_around(rng, WORLD.benign[i % len(WORLD.benign)], spread=0.3) for i in range(2000)])
    assert np.mean([c == "counterfeit_goods" for c in _judge(service, held_back)]) >= 0.8
    assert np.mean([c == "counterfeit_goods" for c in _judge(service, benign)]) <= 0.01

    assert all(a.kind != "emerging_category" for a in service.alerts("firing"))  # resolved at once, every scope
    assert service.alert(alert.id).status == "resolved"
    # The new category keeps coming: no emerging alert opens again, the category has its own share key.
    feed(service, drifting(13000, seed=1, world=WORLD)[9000:])
    assert service.alert(alert.id).status == "resolved"
    again = [a for a in service.alerts("all") if a.kind == "emerging_category" and a.id not in opened_before]
    assert not [a for a in again if np.mean([NEW_WORDS in t for t in a.evidence["exemplars"]]) > 0.5]
    readings = {(r.detector, r.scope, r.key) for r in service.detectors.readings()}
    assert ("category_share", "global", "counterfeit_goods") in readings
    assert any(c.label == "counterfeit_goods" for c in service.clusters("global"))
    assert 'category="counterfeit_goods"' in generate_latest(service.metrics.registry).decode()  # a verdict label value now


def test_revert_restores_the_previous_judge_and_is_audited(alerted):
    service, triage, alert = alerted
    base = service.judge_version
    triage.label_cluster("alice", alert.key, "new_category", name="counterfeit_goods")
    triage.revert("bob", reason="too broad")
    assert service.judge_version == base and "counterfeit_goods" not in triage.categories
    rng = np.random.default_rng(5)
    assert "counterfeit_goods" not in _judge(service, np.stack([_around(rng, WORLD.new) for _ in range(50)]))
    log = triage.audit()
    assert [e["action"] for e in log] == ["judge.revert", "cluster.new_category"]
    assert log[0]["who"] == "bob" and log[0]["judge_version_after"] == base
    with pytest.raises(TriageError, match="^revert: nothing to revert"):
        triage.revert("bob")


def test_revert_watches_the_cluster_and_drops_the_category_share_key_again(alerted):
    """A wrong label reverted must not leave the monitor blind: the cluster it named alerts again while
    the new traffic keeps coming, and the reverted category is no longer a share key."""
    service, triage, alert = alerted
    triage.label_cluster("alice", alert.key, "new_category", name="counterfeit_goods")
    assert service.find_cluster(alert.key).label == "counterfeit_goods"
    entry = triage.revert("bob", reason="wrong category")
    assert entry["detail"]["clusters_unlabelled"] == [alert.key]
    assert service.find_cluster(alert.key).label is None and alert.key not in triage.state.clusters
    assert not [r for r in service.detectors.readings() if r.key == "counterfeit_goods"]
    def new_traffic_alerts() -> list:
        return [a for a in service.alerts("firing") if a.kind == "emerging_category"
                and np.mean([NEW_WORDS in t for t in a.evidence["exemplars"]]) > 0.5]

    assert not new_traffic_alerts()
    feed(service, drifting(13000, seed=1, world=WORLD)[9000:])
    assert new_traffic_alerts()


def test_a_false_alarm_mark_survives_reverting_a_later_revision(alerted):
    """Only what the reverted revision named is un-named: a cluster dismissed as a false alarm stays known."""
    service, triage, alert = alerted
    triage.act_on_alert("carol", alert.id, "false_alarm")
    first = service.find_cluster(alert.key).exemplar_ids[0]
    triage.label_cluster("alice", alert.key, "split", labels=[SplitLabel(first, SAFE)])
    assert triage.revert("bob")["detail"]["clusters_unlabelled"] == []
    assert triage.state.clusters[alert.key] == SAFE and service.find_cluster(alert.key).label == SAFE


def test_dropping_a_learned_category_resolves_its_open_alarms(alerted, monkeypatch):
    service, _, _ = alerted
    [share] = service.detectors.having(CategoryReferences)
    assert share.add_category("counterfeit_goods") and share.add_category("fake_reviews")
    monkeypatch.setattr(share._learned["counterfeit_goods"], "readings",
                        lambda: [Reading("category_share", "global", "counterfeit_goods", 9.0, 1.0, True)])
    conditions = share.retain_categories({"fake_reviews"}, at=123.0)
    assert [(c.kind, c.scope, c.key, c.active, c.at) for c in conditions] == [("category_share", "global", "counterfeit_goods", False, 123.0)]
    assert share.retain_categories({"fake_reviews"}, at=124.0) == []
    assert set(share._learned) == {"fake_reviews"} and "cat_a" in {r.key for r in share.readings()}  # kept, and base keys stay


def test_a_restart_from_a_detector_snapshot_older_than_a_revert_keeps_the_revert(alerted):
    """Triage saves its state at every action, the detectors only every snapshot interval: a restart
    from a snapshot taken before the revert must not bring the reverted category or its cluster back."""
    service, triage, alert = alerted
    triage.label_cluster("alice", alert.key, "new_category", name="counterfeit_goods")
    stale = service.state_dict()
    triage.revert("bob")
    assert "counterfeit_goods" in json.dumps(stale, default=str)  # the stale snapshot still names it
    restarted = synthetic_service(store=service.store, restore=stale)  # triage attaches after, from its own saved state
    assert restarted.find_cluster(alert.key).label is None
    assert not [r for r in restarted.detectors.readings() if r.key == "counterfeit_goods"]


def test_cluster_revisions_survive_a_restart_and_older_snapshots_load():
    state = TriageState()
    state.clusters["c1"], state.cluster_revisions["c1"] = "cat_a", 3
    again = TriageState.from_bytes(state.to_bytes(), state.limits)
    assert again.cluster_revisions == {"c1": 3} and again.copy().cluster_revisions == {"c1": 3}
    older = json.loads(state.to_bytes())
    del older["cluster_revisions"]
    assert TriageState.from_bytes(json.dumps(older).encode(), state.limits).cluster_revisions == {}


def test_benign_label_teaches_safe(alerted):
    service, triage, alert = alerted
    triage.label_cluster("alice", alert.key, "benign", reason="sales chatter")
    rng = np.random.default_rng(3)
    cats = _judge(service, np.stack([_around(rng, WORLD.new) for _ in range(200)]))
    assert np.mean([c == SAFE for c in cats]) >= 0.8
    assert service.alert(alert.id).status == "resolved"


def test_split_labels_individual_exemplars(alerted):
    service, triage, alert = alerted
    cluster = service.find_cluster(alert.key)
    first, second = cluster.exemplar_ids[:2]
    entry = triage.label_cluster("alice", alert.key, "split", labels=[SplitLabel(first, "cat_b"), SplitLabel(second, SAFE)])
    assert entry["detail"]["examples"] == 2
    assert {v.event_id: v.label for v in triage.state.labels.values()} == {first: "cat_b", second: SAFE}
    assert service.find_cluster(alert.key).label is None  # a split cluster stays undecided


@pytest.mark.parametrize("kwargs, status, field", [
    (dict(action="rename"), 422, "action"),
    (dict(action="new_category", name="Bad Name"), 422, "name"),
    (dict(action="new_category", name="cat_a"), 409, "name"),
    (dict(action="new_category", name="ok_name", description="x" * 501), 422, "description"),
    (dict(action="existing_category", category="nope"), 422, "category"),
    (dict(action="split"), 422, "labels"),
    (dict(action="split", labels=[SplitLabel("not-an-exemplar", "cat_a")]), 422, "labels[0].event_id"),
    (dict(action="benign", reason="r" * 501), 422, "reason"),
])
def test_bad_cluster_input_is_refused_naming_the_field(alerted, kwargs, status, field):
    service, triage, alert = alerted
    action = kwargs.pop("action")
    with pytest.raises(TriageError) as caught:
        triage.label_cluster("alice", alert.key, action, **kwargs)
    assert caught.value.status == status and caught.value.message.startswith(f"{field}:")
    assert triage.state.seq == 0 and service.judge_version == "table-1"  # nothing applied


def test_unknown_targets_and_bounds(alerted):
    service, triage, alert = alerted
    with pytest.raises(TriageError, match="^cluster_id: no cluster"):
        triage.label_cluster("a", "c-missing", "benign")
    with pytest.raises(TriageError, match="^alert_id: no alert"):
        triage.act_on_alert("a", "nope", "acknowledge")
    with pytest.raises(TriageError, match="^duration_seconds:"):
        triage.act_on_alert("a", alert.id, "silence", seconds=5)
    triage.label_cluster("a", alert.key, "benign")
    with pytest.raises(TriageError, match="^cluster_id: cluster .* is already labelled"):
        triage.label_cluster("a", alert.key, "benign")
    with pytest.raises(TriageError, match="^alert_id: .* already resolved"):
        triage.act_on_alert("a", alert.id, "false_alarm")


def test_learned_categories_are_bounded(alerted):
    _, triage, alert = alerted
    triage.state.limits = type(triage.state.limits)(max_categories=0)
    with pytest.raises(TriageError, match="^name: at most 0 categories"):
        triage.label_cluster("a", alert.key, "new_category", name="one_more")


def test_alert_actions_acknowledge_silence_and_false_alarm(alerted):
    service, triage, alert = alerted
    triage.act_on_alert("carol", alert.id, "acknowledge", reason="looking")
    triage.act_on_alert("carol", alert.id, "silence", seconds=3600)
    mark = triage.state.marks[alert.id]
    assert mark.acknowledged_by == "carol" and mark.silenced_until is not None and mark.silence_ids == []  # no Alertmanager configured
    triage.act_on_alert("carol", alert.id, "false_alarm", reason="noise")
    assert service.alert(alert.id).status == "resolved"
    assert service.find_cluster(alert.key).label == SAFE  # the region is known now: it does not alert again
    assert [e["action"] for e in triage.audit()] == ["alert.false_alarm", "alert.silence", "alert.acknowledge"]


def test_reason_is_redacted_in_the_audit_log(alerted):
    _, triage, alert = alerted
    triage.act_on_alert("carol", alert.id, "acknowledge", reason="mail jane.doe@example.com about it")
    assert "jane.doe@example.com" not in json.dumps(triage.audit()) and "<email>" in triage.audit()[0]["reason"]


def test_state_survives_a_restart_in_redis_between_labelling_and_export(redis_store_factory):
    store = redis_store_factory()
    service = synthetic_service(store)
    feed(service, drifting(world=WORLD))
    alert = emerging_alert(service)
    triage_of(service).label_cluster("alice", alert.key, "new_category", name="counterfeit_goods", reason="fakes")
    version = service.judge_version
    exported = render(list(triage_of(service).state.labels.values()), "jsonl")

    restarted = synthetic_service(redis_store_factory(store.key_prefix))  # a new process: a new client, same keys
    triage = triage_of(restarted)
    assert restarted.judge_version == version
    assert render(list(triage.state.labels.values()), "jsonl") == exported
    assert [e["action"] for e in triage.audit()] == ["cluster.new_category"]
    rng = np.random.default_rng(7)
    assert np.mean([c == "counterfeit_goods" for c in _judge(restarted, np.stack([_around(rng, WORLD.new) for _ in range(200)]))]) >= 0.8
    rows = [json.loads(line) for line in exported.splitlines()]
    assert rows and all(r["labels"] == ["counterfeit_goods"] and r["unsafe"] and r["source"] == "llmsafety-triage" for r in rows)


@pytest.fixture()
def redis_store_factory():
    redis = pytest.importorskip("redis")
    from monitor.state.redis_store import RedisStateStore

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379 (tests/run.sh starts one)")
    prefix = f"test-triage-{uuid.uuid4().hex[:8]}:"
    made = []

    def make(key_prefix: str = prefix) -> RedisStateStore:
        made.append(RedisStateStore.from_url(url, key_prefix))
        return made[-1]

    yield make
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    for store in made:
        store.close()


def test_memory_store_keeps_state_for_a_service_rebuilt_in_process():
    store = MemoryStateStore()
    service = synthetic_service(store)
    feed(service, drifting(world=WORLD))
    triage_of(service).act_on_alert("dave", emerging_alert(service).id, "acknowledge")
    assert [e["who"] for e in triage_of(synthetic_service(store)).audit()] == ["dave"]


def test_a_silence_covers_its_alert_and_later_ones_with_its_labels_until_it_ends(alerted):
    from dataclasses import replace

    from monitor.alerts.notice import Notice

    _, triage, alert = alerted
    now = [1_800_000_000.0]
    triage.clock = lambda: now[0]
    own = Notice.from_alert(alert)
    later = replace(own, id="a-later-alert")  # same kind, scope and key: Alertmanager's matchers would cover it
    other = replace(own, id="another", key="c-other", fingerprint=f"{alert.kind}/{alert.scope}/c-other")
    assert not any(triage.silences(n) for n in (own, later, other))
    triage.act_on_alert("carol", alert.id, "silence", seconds=600)
    assert triage.silences(own) and triage.silences(later) and not triage.silences(other)
    now[0] += 601
    assert not triage.silences(own) and not triage.silences(later)
