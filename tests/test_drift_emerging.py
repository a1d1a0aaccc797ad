"""Emerging-category detector: fires on a new cluster, stays quiet on a stationary stream, restores exactly."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, replace

import numpy as np
import pytest

from monitor.drift.base import Detector
from monitor.drift.emerging_clusters import KIND, EmergingClusterDetector, EmergingClusterSettings
from monitor.events import Event, ScoredEvent
from monitor.taxonomy import SAFE
from tests.helpers.scored import verdict

DIM = 64
KNOWN = ("cat_a", "cat_b", "cat_c", "cat_d")
NEW_WORDS = "counterfeit designer watches replica"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class World:
    """Topic directions: known harm categories, benign topics, and one category the judge never learned."""

    known: np.ndarray
    benign: np.ndarray
    new: np.ndarray

    @classmethod
    def make(cls, seed: int = 0) -> World:
        rng = np.random.default_rng(seed)
        return cls(_unit(rng.normal(size=(len(KNOWN), DIM))), _unit(rng.normal(size=(40, DIM))), _unit(rng.normal(size=DIM)))


def _around(rng: np.random.Generator, centre: np.ndarray, spread: float = 0.16) -> np.ndarray:
    return _unit(centre + spread * rng.normal(size=DIM))


def stream(
    n: int,
    seed: int,
    *,
    change_at: int | None = None,
    prevalence: float = 0.02,
    unsafe_rate: float = 0.05,
    false_positive_rate: float = 0.01,
    emerging_scope: str = "model=a",
    world: World | None = None,
) -> list[ScoredEvent]:
    """Benign traffic, known unsafe categories, judge false positives; from ``change_at`` a new category.

    The judge flags the new category's prompts but files them under a known category (it was never
    trained on it). Events alternate between two models; the new category comes from one of them.
    """
    world = world or World.make()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        u = rng.random()
        scope = ("global", "model=a" if i % 2 == 0 else "model=b")
        if change_at is not None and i >= change_at and u < prevalence:
            emb, v, text = _around(rng, world.new), verdict(KNOWN[0]), f"{NEW_WORDS} request {i}"
            scope = ("global", emerging_scope)
        elif u > 1 - unsafe_rate:
            k = int(rng.integers(len(KNOWN)))
            emb, v, text = _around(rng, world.known[k]), verdict(KNOWN[k]), f"known harm {KNOWN[k]} ask {i}"
        else:
            emb = _around(rng, world.benign[int(rng.integers(len(world.benign)))], spread=0.3)
            flagged = rng.random() < false_positive_rate
            v = verdict(KNOWN[int(rng.integers(len(KNOWN)))] if flagged else SAFE)
            text = f"everyday question about topic {i % 97}"
        out.append(ScoredEvent(Event(f"e{i}", 1000.0 + i, text), 1.0, emb, None, v, scope))
    return out


def detector(**overrides) -> EmergingClusterDetector:
    # The synthetic topics are random directions in 64 dimensions: no low-dimensional structure for a
    # PCA to find, and members of a topic sit at cosine ~0.4 from each other (MiniLM's in 32 PCA
    # dimensions nearer 0.5), hence all dimensions and a wider gate radius. The short reference (1,000
    # events of candidates against a window of 1,000) makes every count twice as likely under no
    # change as with the default reference, hence a smaller surprise.
    params = dict(reference_events=2000, calibration_events=2000, n_components=DIM, gate_components=DIM, gate_radius=0.3,
                  gate_surprise=10.0)
    params.update(overrides)
    detector_args = {k: params.pop(k) for k in ("redactor", "store_raw_text") if k in params}
    return EmergingClusterDetector(EmergingClusterSettings(**params), **detector_args)


def run(det: EmergingClusterDetector, events: list[ScoredEvent], batch: int = 64) -> list[tuple[int, object]]:
    """(index of the batch's last event, condition) for every condition, in order."""
    out = []
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        out += [(start + len(chunk) - 1, c) for c in det.update(chunk)]
    return out


def test_is_a_detector():
    assert isinstance(detector(), Detector)


def test_fires_on_an_emerging_cluster_with_evidence_and_lists_it():
    change = 6000
    det = detector()
    conditions = run(det, stream(9000, seed=1, change_at=change))
    fired = [(i, c) for i, c in conditions if c.active]
    assert fired, "no emerging_category condition"
    i, first = fired[0]
    assert all(j >= change for j, _ in fired), "alert before the new category appeared"
    assert i - change <= 1000
    assert first.kind == KIND and first.key.startswith("c")
    ev = first.evidence
    purity = np.mean([NEW_WORDS in text for text in ev["exemplars"]])
    assert len(ev["exemplars"]) == min(10, ev["size"]) and purity >= 0.8
    assert {"counterfeit", "watches"} <= set(ev["keywords"])
    assert ev["size"] >= det.settings.min_recent and ev["share_of_traffic"] >= ev["share_threshold"] > 0
    assert ev["growth_rate"] > 0 and ev["nearest_category"] in KNOWN and ev["distance_to_nearest"] > 0
    json.dumps(ev)  # evidence travels to webhooks as JSON

    listed = {c.id: c for c in det.clusters(first.scope)}
    assert listed[first.key].status == "emerging"
    assert det.cluster(first.key, first.scope) == listed[first.key]
    # The new category came from model=a only: that scope alerts, model=b has nothing emerging.
    assert {c.scope for _, c in fired} >= {"model=a"}
    assert all(c.status != "emerging" for c in det.clusters("model=b"))
    reading = {r.scope: r for r in det.readings()}
    assert reading["model=a"].active and reading["model=a"].key == ""


def test_an_alert_opens_at_the_same_event_time_however_the_stream_is_batched():
    """Live batches form by arrival time and a replay's do not: the alert's start (and so its id)
    must come from the event that opened it, not from the last event of its batch."""
    events = stream(9000, seed=1, change_at=6000)

    def openings(batch: int) -> dict[tuple[str, str], float]:
        opened: dict[tuple[str, str], float] = {}
        for _, c in run(detector(), events, batch=batch):
            if c.active:
                opened.setdefault((c.scope, c.key), c.at)
        return opened

    by_64 = openings(64)
    assert by_64 and by_64 == openings(37) == openings(256)


def test_alert_resolves_when_the_category_stops():
    det = detector()
    events = stream(9000, seed=1, change_at=6000)
    # The new category stops at 7500: replace its events after that with benign ones.
    quiet = stream(9000, seed=1)
    events = events[:7500] + quiet[7500:]
    events += [
        ScoredEvent(Event(f"x{i}", 1000.0 + i, e.event.prompt), 1.0, e.prompt_embedding, None, e.verdict, e.scopes)
        for i, e in zip(range(9000, 14000), stream(5000, seed=7))
    ]
    conditions = run(det, events)
    key = next(c.key for _, c in conditions if c.active and c.scope == "global")
    states = [c.active for _, c in conditions if c.key == key and c.scope == "global"]
    assert states[0] and states[-1] is False
    assert next(c for c in det.clusters() if c.id == key).status != "emerging"


def test_quiet_on_a_stationary_stream():
    det = detector()
    conditions = run(det, stream(40_000, seed=3))
    assert det.phase == "detection"
    assert [c for _, c in conditions if c.active] == []
    assert all(c.status != "emerging" for c in det.clusters())


def test_judge_false_positives_at_their_usual_rate_stay_out_of_the_clusters():
    """Benign prompts the judge flags sit far from every known category, but no faster than in the reference."""
    det = detector()
    events = stream(12_000, seed=8, false_positive_rate=0.1)
    run(det, events)
    candidates = sum(1 for e in events[4000:] if e.verdict.prompt_flagged)
    admitted = _admitted(det)
    assert candidates > 1000 and admitted <= 0.02 * candidates


def test_a_known_category_at_its_usual_rate_stays_out_too():
    det = detector()
    run(det, stream(12_000, seed=9, unsafe_rate=0.2))
    assert _admitted(det) <= 20


def test_sampled_traffic_is_gated_like_unsampled_traffic():
    """Events judged at a sampling rate of 1/4 carry weight 4; the gate counts them as one observation each.

    Counting weights on the recent side (as an earlier gate did) made a known category at its usual
    rate look four times as dense as its reference: nearly every candidate passed."""
    events = [replace(e, weight=4.0) for e in stream(12_000, seed=9, unsafe_rate=0.2)]
    det = detector()
    run(det, events)
    assert _admitted(det) <= 20
    # and a new category still emerges from sampled traffic
    det = detector()
    fired = [(i, c) for i, c in run(det, [replace(e, weight=4.0) for e in stream(9000, seed=1, change_at=6000)]) if c.active]
    assert fired and 6000 <= fired[0][0] <= 7000
    assert fired[0][1].evidence["share_of_traffic"] > 0.005  # shares stay in traffic units (weights)


def _admitted(det: EmergingClusterDetector) -> int:
    """Candidates of the global scope that passed the gate: clustered or waiting in the buffer."""
    st = det._scopes["global"]
    return sum(c.size for c in st.clusters.values()) + len(st.buffer)


CUT = 6400  # inside the emergence of ``stream(8000, seed=2, change_at=6000)``, with clusters and a non-empty buffer


def _restore_mid_stream(edit_state=lambda state: None):
    """(uninterrupted detector and its conditions, restored detector and its conditions after ``CUT``)."""
    events = stream(8000, seed=2, change_at=6000)
    whole = detector()
    expected = run(whole, events)
    first = detector()
    got = run(first, events[:CUT])
    state = first.state_dict()
    edit_state(state)
    restored = detector()
    restored.load_state_dict(pickle.loads(pickle.dumps(state)))
    return whole, expected, restored, got + [(i + CUT, c) for i, c in run(restored, events[CUT:])]


def test_save_restore_mid_stream_matches_an_uninterrupted_run():
    whole, expected, restored, got = _restore_mid_stream()
    assert any(c.active for _, c in expected)
    assert got == expected
    for scope in whole.scopes():
        assert restored.clusters(scope) == whole.clusters(scope)
    assert restored.readings() == whole.readings()


def test_a_snapshot_without_the_event_count_restores_from_the_clock():
    """Snapshots written before scopes counted events (the gate's clock) still restore, and alert the same."""
    def drop_event_counts(state):
        for scope in state["scopes"].values():
            del scope["judged"]

    _, expected, restored, got = _restore_mid_stream(drop_event_counts)
    assert [c for i, c in got if i >= CUT] == [c for i, c in expected if i >= CUT]
    assert restored._scopes["global"].judged == 8000  # 6,400 restored from the clock, 1,600 counted since


def test_memory_stays_bounded():
    det = detector(buffer_size=40, max_clusters=3, max_exemplars=4, max_text_chars=20, recluster_every=4)
    run(det, stream(12_000, seed=4, change_at=5000, prevalence=0.05, false_positive_rate=0.05))
    for scope in det.scopes():
        st = det._scopes[scope]
        assert len(st.buffer) <= 40 and len(st.clusters) <= 3
        for c in st.clusters.values():
            assert len(c.exemplars) <= 8 and all(len(m.text) <= 20 for m in c.exemplars)
        assert all(len(c.exemplars) <= 4 for c in det.clusters(scope))
    assert "sample" in det.state_dict() and det.state_dict()["sample"] == []  # reference data freed


def test_scopes_are_bounded():
    det = detector(max_scopes=2)
    events = stream(200, seed=5)
    events = [ScoredEvent(e.event, 1.0, e.prompt_embedding, None, e.verdict, ("global", f"model=m{i}")) for i, e in enumerate(events)]
    run(det, events)
    assert len(det.scopes()) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(prompt_embedding=np.zeros((2, DIM), dtype=np.float32)), "prompt_embedding"),
        (dict(prompt_embedding=np.full(DIM, np.nan, dtype=np.float32)), "prompt_embedding"),
        (dict(weight=0.0), "weight"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(change, message):
    det = detector()
    good = stream(10, seed=6)
    run(det, good)
    before = det.state_dict()
    bad = good[3]
    fields = dict(event=bad.event, weight=bad.weight, prompt_embedding=bad.prompt_embedding, response_embedding=None,
                  verdict=bad.verdict, scopes=bad.scopes)
    fields.update(change)
    with pytest.raises(ValueError, match=message) as err:
        det.update([good[0], ScoredEvent(**fields)])
    assert "e3" in str(err.value)
    assert pickle.dumps(det.state_dict()) == pickle.dumps(before)


def test_wrong_dimension_after_the_first_batch_is_rejected():
    det = detector()
    run(det, stream(10, seed=6))
    e = stream(1, seed=6)[0]
    with pytest.raises(ValueError, match=f"prompt_embedding must be a vector of {DIM} floats"):
        det.update([ScoredEvent(e.event, 1.0, np.ones(DIM + 1, dtype=np.float32), None, e.verdict)])


@pytest.mark.parametrize(
    ("arg", "value"), [("reference_events", 0), ("join_similarity", 1.5), ("min_share", 0.0), ("baseline_events", 10)]
)
def test_bad_settings_name_the_argument(arg, value):
    with pytest.raises(ValueError, match=arg):
        EmergingClusterSettings(**{arg: value})


@pytest.mark.slow
def test_real_embeddings_withheld_category_is_found(shared_data, embedder):
    """AILuminate defamation prompts, which the judge files under misinformation, emerge among real traffic."""
    rows = [json.loads(line) for line in (shared_data / "beavertails-evaluation.jsonl").open()]
    ailuminate = [json.loads(line) for line in (shared_data / "ailuminate-en.jsonl").open()]
    new = [r["prompt"] for r in ailuminate if r["labels"][:1] == ["dfm"]][:100]
    known = [(r["prompt"], r["labels"][0].replace(",", "_")) for r in rows]
    known = [k for i, k in enumerate(known) if i % 35 < 15]  # 15 per category
    benign = [json.loads(line)["prompt"] for line in (shared_data / "toxicchat-train.jsonl").open()]
    benign = [t for t in benign if not t.startswith("{")][:2000:7][:250]
    texts = new + [t for t, _ in known] + benign
    assert len(new) == 100 and len(texts) <= 600
    emb = embedder.encode(texts)
    e_new, e_known, e_benign = emb[: len(new)], emb[len(new) : len(new) + len(known)], emb[len(new) + len(known) :]

    rng = np.random.default_rng(0)
    change, pending = 23_000, list(rng.permutation(len(new)))  # after the default reference (20,000) and 2,000 to calibrate
    events = []
    for i in range(change + 4000):
        u = rng.random()
        if i >= change and pending and u < 0.02:
            j = pending.pop()
            # The judge flags it but, never trained on defamation, files it under misinformation.
            emb_i, v, text = e_new[j], verdict("misinformation_regarding_ethics_laws_and_safety"), new[j]
        elif u > 0.95:
            j = int(rng.integers(len(known)))
            emb_i, v, text = e_known[j], verdict(known[j][1]), known[j][0]
        else:
            j = int(rng.integers(len(benign)))
            emb_i, v, text = e_benign[j], verdict(SAFE), benign[j]
        events.append(ScoredEvent(Event(f"e{i}", float(i), text), 1.0, emb_i, None, v))

    det = EmergingClusterDetector(EmergingClusterSettings(calibration_events=2000))
    fired = [(i, c) for i, c in run(det, events) if c.active]
    assert fired and fired[0][0] >= change
    i, first = fired[0]

    def purity(condition) -> float:
        return float(np.mean([t in set(new) for t in condition.evidence["exemplars"]]))

    last = [c for _, c in fired if c.key == first.key][-1]
    print(f"alert after {i - change} events, exemplar purity {purity(first):.2f} then {purity(last):.2f}, "
          f"keywords {first.evidence['keywords']}")
    # Measured: 999 events, purity 0.60 at the first alert (the others: BeaverTails prompts about
    # ruining a competitor's reputation, defamation in all but label), 0.90 by the end; the
    # per-candidate gate before needed 2,743 events. On the bench (24 streams) first-alert purity is 0.87.
    assert i - change <= 1500 and purity(first) >= 0.5 and purity(last) >= 0.8


def test_benign_only_reference_fits_and_keeps_running():
    """A reference period with no flagged prompt (benign-only traffic) used to raise
    ``cannot reshape array of size 0`` on every batch from the end of the reference on."""
    events = [replace(e, verdict=verdict(SAFE)) for e in stream(2600, seed=4, unsafe_rate=0.0, false_positive_rate=0.0)]
    det = detector()
    run(det, events)
    assert det.phase == "calibration" and det.regions is not None and det.regions.categories == ()
    # unsafe-looking traffic after it is still watched (every candidate counts as novel)
    later = stream(600, seed=5, unsafe_rate=0.5)
    run(det, [replace(e, event=replace(e.event, event_id="x" + e.event.event_id)) for e in later])
    assert det.clusters() is not None
