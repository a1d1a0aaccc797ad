"""Recall and precision of the redaction step per PII type, and its cost per event.

Why: the redactor is regexes with validators (see :mod:`monitor.privacy.redact`); this shows on a
hand-labelled fixture (``tests/fixtures/pii/labelled.jsonl``, no real personal data) what it
catches and what it masks needlessly, so a pattern change is measured rather than guessed.

A labelled value counts as *caught* when findings (of any kind) cover all of its characters:
that is what keeps it from leaving. A finding is *right* when it overlaps a labelled value;
precision per type is over findings of that kind. ``typed`` is the share of caught values whose
covering finding has the labelled kind.

    PYTHONPATH=. python bench/redaction.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from monitor.privacy.redact import KINDS, find, redact

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pii"
FIXTURE = FIXTURES / "labelled.jsonl"  # written with the patterns, and tuned on
HELDOUT = FIXTURES / "heldout.jsonl"  # written after tuning; first score recorded in the README


def load(path: Path = FIXTURE) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """``(text, [(kind, start, end)])`` per line; spans are the first occurrence of each labelled value."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        text, spans = item["text"], []
        for kind, value in item["pii"]:
            start = text.index(value)
            spans.append((kind, start, start + len(value)))
        rows.append((text, spans))
    return rows


def score(rows: list[tuple[str, list[tuple[str, int, int]]]]) -> dict[str, dict[str, float]]:
    labelled, caught, typed, found, right = Counter(), Counter(), Counter(), Counter(), Counter()
    for text, spans in rows:
        findings = find(text)
        for kind, start, end in spans:
            labelled[kind] += 1
            covered = [f for f in findings if f.start < end and start < f.end]
            chars = {i for f in covered for i in range(f.start, f.end)}
            if all(i in chars or text[i].isspace() for i in range(start, end)):
                caught[kind] += 1
                typed[kind] += any(f.kind == kind for f in covered)
        for f in findings:
            found[f.kind] += 1
            right[f.kind] += any(f.start < e and s < f.end for _, s, e in spans)
    out = {}
    for kind in KINDS:
        if labelled[kind] or found[kind]:
            out[kind] = {
                "labelled": labelled[kind], "recall": caught[kind] / labelled[kind] if labelled[kind] else float("nan"),
                "typed": typed[kind] / caught[kind] if caught[kind] else float("nan"),
                "found": found[kind], "precision": right[kind] / found[kind] if found[kind] else float("nan"),
            }
    total_l, total_f = sum(labelled.values()), sum(found.values())
    out["all"] = {"labelled": total_l, "recall": sum(caught.values()) / total_l, "typed": sum(typed.values()) / max(1, sum(caught.values())),
                  "found": total_f, "precision": sum(right.values()) / max(1, total_f)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="passes over the fixture for the timing")
    args = parser.parse_args()
    for path in (FIXTURE, HELDOUT):
        table = score(load(path))
        print(f"\n{path.name}\n{'type':8} {'labelled':>8} {'recall':>7} {'typed':>6} {'found':>6} {'precision':>9}")
        for kind, r in table.items():
            print(f"{kind:8} {r['labelled']:8d} {r['recall']:7.2f} {r['typed']:6.2f} {r['found']:6d} {r['precision']:9.2f}")
    rows = load(FIXTURE) + load(HELDOUT)
    texts = [t for t, _ in rows]
    start = time.perf_counter()
    for _ in range(args.repeat):
        for t in texts:
            redact(t)
    per = (time.perf_counter() - start) / (args.repeat * len(texts)) * 1e6
    chars = sum(map(len, texts)) / len(texts)
    print(f"{per:.1f} µs per event (mean {chars:.0f} chars, {len(texts)} texts x {args.repeat})")
    long_text = " ".join(texts) * 4
    start = time.perf_counter()
    for _ in range(20):
        redact(long_text)
    print(f"{(time.perf_counter() - start) / 20 * 1e3:.2f} ms for one {len(long_text):,}-char text")


if __name__ == "__main__":
    main()
