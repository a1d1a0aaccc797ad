"""Emerging-category detector on real data: detection delay, exemplar purity, false alarms, cost.

Streams are sampled from the public pools in ``MONITOR_DATA_DIR`` (default ``../shared/data``):
benign real-user and instruction prompts, known unsafe prompts from BeaverTails-Evaluation,
AILuminate, CatQA and Do-Not-Answer, and one *withheld* unsafe group the judge never saw. The
judge is a stand-in (logistic regressions on the embeddings of the known pools) so that flags and
uncertainty look like a real classifier's; the detector is the shipped one.

Prints, asserts nothing. Embeddings are cached under ``$BENCH_CACHE`` (default
``/tmp/emerging_bench_cache``)::

    .venv/bin/python bench/emerging_clusters.py            # all withheld groups, 3 seeds
    .venv/bin/python bench/emerging_clusters.py --quick    # one group, one seed
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# A 384x384 eigen-decomposition gains nothing from threads and crawls on a busy shared CPU.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.alerts.condition import Condition  # noqa: E402
from monitor.drift.emerging import EmergingClusterDetector  # noqa: E402
from monitor.events import Event, ScoredEvent  # noqa: E402
from monitor.judge.verdict import SAFE, Verdict  # noqa: E402

DATA_DIR = Path(os.environ.get("MONITOR_DATA_DIR", ROOT.parent / "shared" / "data"))
CACHE_DIR = Path(os.environ.get("BENCH_CACHE", "/tmp/emerging_bench_cache"))

# AILuminate hazard codes -> taxonomy ids (local to the bench; the project's mapping files are the
# reference for production use).
AILUMINATE = {
    "cse": "child_abuse",
    "dfm": "misinformation_regarding_ethics_laws_and_safety",
    "hte": "hate_speech_offensive_language",
    "ipv": "non_violent_unethical_behavior",
    "iwp": "drug_abuse_weapons_banned_substance",
    "ncr": "financial_crime_property_crime_theft",
    "prv": "privacy_violation",
    "src": "sexually_explicit_adult_content",
    "ssh": "self_harm",
    "sxc_prn": "sexually_explicit_adult_content",
    "vcr": "violence_aiding_and_abetting_incitement",
}

# Withheld groups: (name, file, label) -> texts the judge never trains on.
WITHHELD = {
    "ailuminate-ipv": ("ailuminate-en", "ipv"),
    "ailuminate-dfm": ("ailuminate-en", "dfm"),
    "ailuminate-cse": ("ailuminate-en", "cse"),
    "beavertails-animal_abuse": ("beavertails-evaluation", "animal_abuse"),
}


@dataclass
class Pool:
    texts: list[str]
    labels: list[str]  # taxonomy id, or "safe"
    emb: np.ndarray


def _read(name: str) -> list[dict]:
    with open(DATA_DIR / f"{name}.jsonl") as fh:
        return [json.loads(line) for line in fh]


def embed_cached(texts: list[str], tag: str) -> np.ndarray:
    """Embed with the bundled model once; later runs load ``CACHE_DIR/<tag>-<hash>.npy``."""
    digest = hashlib.sha1("\x00".join(texts).encode()).hexdigest()[:12]
    path = CACHE_DIR / f"{tag}-{digest}.npy"
    if path.exists():
        return np.load(path)
    from monitor.embed.embedder import Embedder

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.process_time()
    emb = Embedder(device="cpu").encode(texts)
    print(f"  embedded {len(texts)} {tag} texts in {time.perf_counter() - t0:.0f}s", flush=True)
    np.save(path, emb)
    return emb


def load_pools() -> tuple[Pool, Pool, dict[str, Pool]]:
    """(benign, known unsafe, withheld groups), each with cached embeddings."""
    benign: list[str] = []
    for r in _read("toxicchat-train") + _read("convabuse"):
        if r["unsafe"] is False and len(r["prompt"].split()) >= 3:
            benign.append(r["prompt"])
    alpaca = [r["prompt"] for r in _read("alpaca-harmless-harmful") if r["unsafe"] is False]
    benign += alpaca[::3]
    benign = list(dict.fromkeys(benign))

    withheld_keys = {(f, lab) for f, lab in WITHHELD.values()}
    known_t: list[str] = []
    known_l: list[str] = []
    groups: dict[str, tuple[list[str], list[str]]] = {k: ([], []) for k in WITHHELD}
    for r in _read("beavertails-evaluation"):
        lab = r["labels"][0]
        cat = lab.replace(",", "_")
        if ("beavertails-evaluation", lab) in withheld_keys:
            name = next(k for k, v in WITHHELD.items() if v == ("beavertails-evaluation", lab))
            groups[name][0].append(r["prompt"])
            continue
        known_t.append(r["prompt"])
        known_l.append(cat)
    for r in _read("ailuminate-en"):
        lab = r["labels"][0]
        if ("ailuminate-en", lab) in withheld_keys:
            name = next(k for k, v in WITHHELD.items() if v == ("ailuminate-en", lab))
            groups[name][0].append(r["prompt"])
            continue
        if lab in AILUMINATE:
            known_t.append(r["prompt"])
            known_l.append(AILUMINATE[lab])

    b = Pool(benign, [SAFE] * len(benign), embed_cached(benign, "benign"))
    k = Pool(known_t, known_l, embed_cached(known_t, "known"))
    w = {name: Pool(t, [name] * len(t), embed_cached(t, f"withheld-{name}")) for name, (t, _) in groups.items()}
    return b, k, w


@dataclass
class Judged:
    """A pool with stand-in judge outputs: P(unsafe) and the top known category."""

    pool: Pool
    p_unsafe: np.ndarray
    category: list[str]


def stand_in_judge(benign: Pool, known: Pool, withheld: dict[str, Pool]) -> tuple[Judged, Judged, dict[str, Judged]]:
    """Logistic regressions on embeddings; known pools are scored out-of-fold (5-fold cross-fitting)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.vstack([benign.emb, known.emb])
    y = np.r_[np.zeros(len(benign.texts)), np.ones(len(known.texts))]
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    harm = LogisticRegression(C=4.0, max_iter=2000)
    p = cross_val_predict(harm, x, y, cv=folds, method="predict_proba")[:, 1]
    harm.fit(x, y)
    cats = LogisticRegression(C=4.0, max_iter=2000)
    known_cat = cross_val_predict(cats, known.emb, known.labels, cv=folds)
    cats.fit(known.emb, known.labels)

    def judged(pool: Pool, probs: np.ndarray, category: Sequence[str]) -> Judged:
        return Judged(pool, probs, [c if q >= 0.5 else SAFE for c, q in zip(category, probs)])

    nb = len(benign.texts)
    return (
        judged(benign, p[:nb], cats.predict(benign.emb)),
        judged(known, p[nb:], known_cat),
        {n: judged(g, harm.predict_proba(g.emb)[:, 1], cats.predict(g.emb)) for n, g in withheld.items()},
    )


def scored(i: int, src: Judged, j: int, t: float) -> ScoredEvent:
    p = float(src.p_unsafe[j])
    cat = src.category[j]
    verdict = Verdict("stand-in", cat, {cat: p} if cat != SAFE else {}, p, p >= 0.5)
    event = Event(event_id=f"e{i}", timestamp=t, prompt=src.pool.texts[j])
    return ScoredEvent(event, 1.0, src.pool.emb[j], None, verdict)


def stream(n: int, benign: Judged, known: Judged, seed: int, unsafe_rate: float = 0.05,
           inject: Judged | None = None, change_at: int = 0, prevalence: float = 0.02) -> list[ScoredEvent]:
    """Benign with replacement, known unsafe without replacement while it lasts, injected group from ``change_at``."""
    rng = np.random.default_rng(seed)
    known_order = list(rng.permutation(len(known.p_unsafe)))
    inject_order = list(rng.permutation(len(inject.p_unsafe))) if inject is not None else []
    out = []
    for i in range(n):
        u = rng.random()
        if inject is not None and i >= change_at and inject_order and u < prevalence:
            out.append(scored(i, inject, inject_order.pop(), float(i)))
        elif u > 1 - unsafe_rate and known_order:
            out.append(scored(i, known, known_order.pop(), float(i)))
        else:
            out.append(scored(i, benign, int(rng.integers(len(benign.p_unsafe))), float(i)))
    return out


def run(detector: EmergingClusterDetector, events: list[ScoredEvent], batch: int = 64) -> tuple[list[tuple[int, Condition]], float]:
    """Feed in batches; return (index of the batch's last event, condition) for every active condition, and
    CPU µs/event (process time: the machine is shared, so wall time would measure the neighbours)."""
    fired: list[tuple[int, Condition]] = []
    spent = 0.0
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        t0 = time.process_time()
        conditions = detector.update(chunk)
        spent += time.process_time() - t0
        fired += [(start + len(chunk) - 1, c) for c in conditions if c.active]
    return fired, spent / len(events) * 1e6


def first_alerts(fired: list[tuple[int, Condition]]) -> list[tuple[int, Condition]]:
    seen: set[str] = set()
    out = []
    for i, c in fired:
        if c.fingerprint not in seen:
            seen.add(c.fingerprint)
            out.append((i, c))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one withheld group, one seed")
    parser.add_argument("--events", type=int, default=25_000, help="events per stream")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if not DATA_DIR.is_dir():
        sys.exit(f"datasets not found at {DATA_DIR} (set MONITOR_DATA_DIR)")
    benign, known, withheld = stand_in_judge(*load_pools())
    groups = ["ailuminate-ipv"] if args.quick else list(withheld)
    seeds = range(1 if args.quick else args.seeds)
    print(f"stand-in judge: benign flagged {np.mean(benign.p_unsafe >= 0.5):.3f}, known flagged "
          f"{np.mean(known.p_unsafe >= 0.5):.3f}, " + ", ".join(
              f"{n} flagged {np.mean(g.p_unsafe >= 0.5):.2f}" for n, g in withheld.items()))

    # Stationary: false alarms after warm-up, and cost.
    for seed in seeds:
        det = EmergingClusterDetector()
        fired, us = run(det, stream(args.events, benign, known, seed))
        alerts = first_alerts(fired)
        after = args.events - det.reference_events - det.calibration_events
        print(f"stationary seed={seed}: {len(alerts)} alerts in {after} detection events, "
              f"threshold {det.threshold():.4f}, {len(det.clusters())} clusters, {us:.1f} µs/event")
        for i, c in alerts:
            print(f"   false alarm at {i}: {c.summary[:160]}")

    # Emerging: delay and purity.
    change = 12_000
    for name in groups:
        texts = set(withheld[name].pool.texts)
        for seed in seeds:
            det = EmergingClusterDetector()
            events = stream(args.events, benign, known, seed, inject=withheld[name], change_at=change)
            fired, us = run(det, events)
            alerts = first_alerts(fired)
            before = [a for a in alerts if a[0] < change]
            hits = [(i, c) for i, c in alerts if i >= change]
            injected = sum(1 for e in events if e.event.prompt in texts)
            if not hits:
                print(f"{name} seed={seed}: NOT detected ({injected} injected), {len(before)} alerts before change")
                continue
            i, c = hits[0]
            purity = np.mean([x in texts for x in c.evidence["exemplars"]])
            print(f"{name} seed={seed}: alert after {i - change} events, exemplar purity {purity:.2f} "
                  f"({len(c.evidence['exemplars'])} texts), share {c.evidence['share_of_traffic']:.4f}, "
                  f"distance {c.evidence['distance_to_nearest']:.2f} to {c.evidence['nearest_category']}, "
                  f"{len(before)} alerts before change, {len(hits) - 1} other alerts after, {us:.1f} µs/event")
            print(f"   keywords: {c.evidence['keywords']}")


if __name__ == "__main__":
    main()
