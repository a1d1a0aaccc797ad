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


def test_strata_split_rows_by_the_verdicts_uncertainty():
    """The stratum rows hold exactly the rows of each stratum: here the judge is wrong exactly where it
    says it is uncertain, so the uncertain stratum's accuracy is 0 and the confident one's is 1."""
    from dataclasses import replace

    tax = load_taxonomy()
    records = read_records(FIXTURE)
    data = embed_records(records, zeros)
    verdicts = run_judge(KeywordJudge(tax.harm_ids), data)
    marked = [replace(v, uncertainty=0.9 if r.unsafe is not None and v.prompt_flagged != r.unsafe else 0.1)
              for v, r in zip(verdicts, records)]
    ev = evaluate("keyword", marked, data, LabelMapper(tax), tax.harm_ids)
    uncertain, confident = ev.metrics[("stratum", "prompt, uncertain (>= 0.5)")], ev.metrics[("stratum", "prompt, confident")]
    assert uncertain.n + confident.n == 22 and uncertain.n > 0
    assert (uncertain.accuracy, confident.accuracy) == (0.0, 1.0)
    assert "By second-opinion stratum" in format_report([ev])
    assert not any(k[0] == "stratum" for k in evaluate("k", verdicts, data, LabelMapper(tax), tax.harm_ids).metrics)
