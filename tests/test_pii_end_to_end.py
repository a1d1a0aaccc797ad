"""Personal data sent through the pipeline leaves it nowhere: exemplars, keywords, alert evidence,
Alertmanager/webhook/Slack payloads, report texts and state snapshots all carry the redacted text.

The emerging detector is driven with the synthetic stream of ``test_drift_emerging``: the new
category's prompts carry the labelled PII fixture, so they become a cluster's exemplars and keywords.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import pytest

from monitor.alerts.engine import AlertEngine
from monitor.alerts.notice import Notice
from monitor.alerts.targets import alertmanager_alert, slack_text, webhook_body
from monitor.events import Event
from monitor.export.reservoir import WindowReservoir
from monitor.export.windows import TimeWindow
from monitor.privacy.redact import Redactor
from tests.test_drift_emerging import NEW_WORDS, detector, run, stream
from tests.test_privacy_redaction import _rows

PII = [row for row in _rows("labelled.jsonl") if row["pii"]]
VALUES = sorted({value for row in PII for _, value in row["pii"]})


def _with_pii(events):
    """The new category's prompts (the ones that will cluster) carry one fixture line each."""
    out, k = [], 0
    for e in events:
        if e.event.prompt.startswith(NEW_WORDS):
            e = replace(e, event=Event(e.event.event_id, e.event.timestamp, f"{NEW_WORDS}: {PII[k % len(PII)]['text']}"))
            k += 1
        out.append(e)
    return out


def _leaks(blob: str) -> list[str]:
    return [v for v in VALUES if v in blob]


@pytest.fixture(scope="module")
def emerged():
    events = _with_pii(stream(9000, seed=1, change_at=6000))
    det = detector(store_raw_text=False)
    conditions = [c for _, c in run(det, events)]
    assert any(c.active for c in conditions), "the PII-carrying category must still emerge"
    return events, det, conditions


def test_exemplars_keywords_and_evidence_are_redacted_before_they_are_stored(emerged):
    events, det, conditions = emerged
    clusters = [c.to_dict() for scope in det.scopes() for c in det.clusters(scope)]
    exemplars = [t for c in clusters for t in c["exemplars"]]
    assert exemplars and all(t.startswith(NEW_WORDS) for t in exemplars[:3])
    assert any("<email>" in t or "<phone>" in t or "<person>" in t for t in exemplars)
    blob = json.dumps([clusters, [c.evidence for c in conditions], [c.summary for c in conditions]], ensure_ascii=False)
    assert _leaks(blob) == []
    # what is stored (the snapshot that goes to Redis) holds no raw text either
    assert _leaks(pickle.dumps(det.state_dict()).decode("latin-1") + json.dumps(_strings(det.state_dict()), ensure_ascii=False)) == []
    keywords = {w for c in clusters for w in c["keywords"]}
    assert {"counterfeit", "watches"} & keywords and not keywords & {"email", "phone", "person", "sarah", "maria", "lopez"}


def test_only_what_is_kept_is_redacted_and_a_snapshot_redacts_what_waits():
    """Candidates wait raw in the gate window and mostly leave it unadmitted: redacting each on
    arrival was most of the detector's cost. Only admitted members and saved ones are redacted."""
    calls = []

    class Counting(Redactor):
        def cut(self, text: str, limit: int) -> str:
            calls.append(text)
            return super().cut(text, limit)

    det = detector(redactor=Counting("on"))
    events = _with_pii(stream(9000, seed=1, change_at=6000))
    run(det, events)
    candidates = sum(1 for e in events[det.settings.reference_events:] if e.verdict.prompt_flagged)
    kept = len(calls)
    assert 0 < kept < candidates / 2
    waiting = [m for st in det._scopes.values() if st.window for m in st.window.payloads if m is not None and m.pending]
    assert waiting  # raw prefixes, in memory only
    assert _leaks(json.dumps(_strings(det.state_dict()), ensure_ascii=False)) == []
    assert len(calls) > kept and not any(m.pending for m in waiting)  # saving redacted them, once


def test_alert_payloads_carry_no_pii(emerged):
    _, _, conditions = emerged
    engine = AlertEngine()
    transitions = engine.observe(conditions)
    notices = [Notice.from_alert(t.alert) for t in transitions]
    assert any(n.kind == "emerging_category" and n.status == "firing" for n in notices)
    payloads = [alertmanager_alert(n, now=20_000.0, base_url="http://monitor:8000", expiry_s=240) for n in notices]
    blob = json.dumps([payloads, webhook_body(notices, "http://monitor:8000"), slack_text(notices, "http://monitor:8000"),
                       [a.evidence for a in engine.alerts()],
                       [t.alert.evidence for t in transitions]], ensure_ascii=False)
    assert _leaks(blob) == []


def test_alert_engine_redacts_evidence_from_any_detector():
    """Defence in depth: a detector that forgets to redact still cannot push raw text to receivers."""
    from monitor.signals import Condition

    cond = Condition("emerging_category", "global", "c1", True, at=1.0, summary="Dear Maria Lopez, mail maria@example.com",
                     evidence={"exemplars": ["call 555/123/4567"]})
    alert = AlertEngine().observe([cond])[0].alert
    assert "maria" not in (alert.summary + json.dumps(alert.evidence)).lower() and "4567" not in json.dumps(alert.evidence)
    raw = AlertEngine(redactor=Redactor("off")).observe([cond])[0].alert
    assert "maria@example.com" in raw.summary


def test_report_texts_and_reservoir_snapshot_are_redacted(emerged):
    events, _, _ = emerged
    reservoir = WindowReservoir(texts="redacted", text_chars=300, per_window=10_000)
    reservoir([e for e in events if e.event.prompt.startswith(NEW_WORDS)])
    texts = [t for t in reservoir.sample(TimeWindow(0, 1e9)).columns["prompt_text"] if t]
    assert len(texts) > 50 and any("<email>" in t for t in texts)
    assert _leaks(json.dumps(texts, ensure_ascii=False) + pickle.dumps(reservoir.state_dict()).decode("latin-1")) == []


def test_raw_texts_are_kept_separately_only_when_asked(emerged):
    events, _, _ = emerged
    det = detector(store_raw_text=True)
    run(det, events)
    scope = next(s for s in det.scopes() if det.clusters(s))
    redacted = json.dumps([c.to_dict() for c in det.clusters(scope)], ensure_ascii=False)
    raw = json.dumps([c.to_dict() for c in det.clusters(scope, raw=True)], ensure_ascii=False)
    assert _leaks(redacted) == [] and _leaks(raw)
    cid = det.clusters(scope)[0].id
    assert det.cluster(cid, scope, raw=True).exemplars != det.cluster(cid, scope).exemplars
    # and without the setting there is nothing raw to hand out
    _, plain, _ = emerged
    assert _leaks(json.dumps([c.to_dict() for s in plain.scopes() for c in plain.clusters(s, raw=True)], ensure_ascii=False)) == []


def test_a_snapshot_from_before_redaction_is_redacted_on_restore(emerged):
    events, _, _ = emerged
    old = detector(redactor=Redactor("off"))
    run(old, events[:6600])
    state = old.state_dict()
    del state["texts"]  # as written before redaction existed
    assert _leaks(json.dumps(_strings(state), ensure_ascii=False))
    restored = detector()
    restored.load_state_dict(state)
    assert _leaks(json.dumps(_strings(restored.state_dict()), ensure_ascii=False)) == []


def _strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _strings(v)]
    return []
