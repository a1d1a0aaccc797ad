"""Evaluation tables: metrics match their definitions, every section is filled, judges line up side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monitor.judge.dataset import LabelMapper, read_records
from monitor.judge.evaluation import binary_metrics, evaluate, format_report, run_judge
from monitor.judge.keyword_baseline import KeywordJudge
from monitor.judge.text_embeddings import embed_records
from monitor.taxonomy import load_taxonomy

FIXTURE = Path(__file__).parent / "fixtures" / "judge" / "records.jsonl"


def zeros(texts):
    return np.zeros((len(texts), 4), np.float32)


def test_binary_metrics_definitions():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.0])
    m = binary_metrics(y, p, p >= 0.5)
    assert (m.tp, m.fp, m.fn, m.tn) == (2, 1, 1, 3)
    assert m.precision == 2 / 3 and m.recall == 2 / 3 and m.accuracy == 5 / 7
    assert m.auroc == 11 / 12
    assert binary_metrics(np.array([1, 1]), np.array([0.3, 0.9]), np.array([False, True])).auroc is None


def test_keyword_baseline_report_has_every_section():
    tax = load_taxonomy()
    data = embed_records(read_records(FIXTURE), zeros)
    judge = KeywordJudge(tax.harm_ids)
    ev = evaluate("keyword", run_judge(judge, data), data, LabelMapper(tax), tax.harm_ids)
    overall = ev.metrics[("prompt", "unsafe (all files)")]
    assert overall.n == 22 and overall.positives == 14
    # The HarmfulQA-topic row has no known category, so category rows cover the other 21.
    assert ev.metrics[("category", "self_harm")].n == 21
    assert ev.metrics[("category", "self_harm")].positives == 3
    refusal = ev.metrics[("refusal", "all files")]
    assert refusal.n == 16 and refusal.accuracy > 0.8  # the fixture's refusals use stock phrases
    assert ("response", "records") in ev.metrics
    text = format_report([ev, ev])
    for title in ("Prompt harm: unsafe vs safe", "per category", "Response harm", "Refusal"):
        assert title in text
    assert text.count("| self_harm | keyword |") == 2
