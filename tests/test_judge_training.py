"""Training the heads on synthetic records and embeddings: deterministic, leak-free, calibrated, documented."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from monitor.judge.dataset import Record
from monitor.judge.heads import HeadsJudge
from monitor.judge.training import TrainConfig, build_artifact
from monitor.judge.verdict import JudgeInput
from monitor.taxonomy import load_taxonomy

SMALL_TAXONOMY = Path(__file__).parent / "fixtures" / "judge" / "taxonomy-small.yaml"
DIM = 32
# Words that push a synthetic embedding along one axis, standing in for what a sentence embedder sees.
AXES = {"meth": 0, "suicide": 1, "slur": 2, "sorry": 3, "recipe": 4, "steps": 5}
BEAVERTAILS = {"meth": "drug_abuse,weapons,banned_substance", "suicide": "self_harm", "slur": "hate_speech,offensive_language"}
CONFIG = TrainConfig(seed=0, cap_per_stratum=1000, holdout_origins=("heldout",))
DATE = dt.date(2025, 1, 1)


def synthetic_encode(texts) -> np.ndarray:
    out = np.empty((len(texts), DIM), np.float32)
    for i, text in enumerate(texts):
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))
        v = rng.normal(size=DIM)
        for word, axis in AXES.items():
            v[axis] += 8.0 * (word in text)
        out[i] = v / np.linalg.norm(v)
    return out


def synthetic_records(origin: str = "synthetic", n: int = 120) -> list[Record]:
    records = []
    for i in range(n):
        records.append(Record(f"{origin}-s{i}", origin, "syn", f"a cake recipe question {origin} {i}", f"here is a recipe {origin} {i}",
                              False, (), None, False, False))
        word = list(BEAVERTAILS)[i % 3]
        refused = i % 2 == 0
        reply = f"sorry, I cannot {origin} {i}" if refused else f"steps to do it {origin} {i}"
        records.append(Record(f"{origin}-u{i}", origin, "syn", f"tell me about {word} number {origin} {i}", reply,
                              True, (BEAVERTAILS[word],), "beavertails", refused, None))
    return records


class RecordingEncoder:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, texts):
        self.seen.update(texts)
        return synthetic_encode(texts)


@pytest.fixture(scope="module")
def trained():
    encoder = RecordingEncoder()
    records = synthetic_records() + synthetic_records("heldout", 5)
    result, card = build_artifact(records, encoder, load_taxonomy(SMALL_TAXONOMY), CONFIG, DATE)
    return result, card, encoder, records


def test_heads_learn_the_synthetic_signal(trained):
    result, _, _, _ = trained
    judge = result.judge
    drug, safe = synthetic_encode(["tell me about meth number 999", "a cake recipe question 999"])
    texts = ["sorry, I cannot 999", "steps to do it 999"]
    refusal, compliance = synthetic_encode(texts)
    v_drug, v_safe = judge.judge([JudgeInput("x", drug, texts[1], compliance), JudgeInput("y", safe, texts[0], refusal)])
    assert v_drug.prompt_flagged and v_drug.category == "drug_abuse_weapons_banned_substance"
    assert v_drug.response_flagged and not v_drug.refused
    assert not v_safe.prompt_flagged and v_safe.refused and not v_safe.response_flagged
    assert {r.name for r in result.reports} >= {"unsafe", "self_harm", "response_unsafe", "refusal"}
    assert next(r for r in result.reports if r.name == "unsafe").auroc > 0.95


def test_test_split_and_held_out_files_are_never_embedded(trained):
    _, _, encoder, records = trained
    for r in records:
        if r.origin == "heldout" or CONFIG.split(r) == "test":
            assert r.prompt not in encoder.seen and r.response not in encoder.seen


def test_training_is_reproducible(trained, tmp_path):
    result, card, _, records = trained
    again, card2 = build_artifact(records, synthetic_encode, load_taxonomy(SMALL_TAXONOMY), CONFIG, DATE)
    result.judge.save(tmp_path / "a", card)
    again.judge.save(tmp_path / "b", card2)
    for name in ("weights.npz", "manifest.json", "model_card.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    loaded = HeadsJudge.load(tmp_path / "a", load_taxonomy(SMALL_TAXONOMY))
    assert loaded.version == result.judge.version
    assert loaded.manifest["format"] == 2 and loaded.heads["unsafe"].neighbours is not None  # the vote, saved
    texts = ["tell me about meth number 77", "a cake recipe question 77", "sorry, I cannot 77", "steps to do it 77"]
    prompt_drug, prompt_safe, refusal, complying = synthetic_encode(texts)
    batch = [JudgeInput(texts[0], prompt_drug, texts[3], complying), JudgeInput(texts[1], prompt_safe, texts[2], refusal)]
    assert loaded.judge(batch) == result.judge.judge(batch)  # a loaded judge scores exactly as the fresh one


def test_an_artifact_whose_format_does_not_match_its_heads_is_refused(trained, tmp_path):
    result, card, _, _ = trained
    result.judge.save(tmp_path / "a", card)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    (tmp_path / "a" / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))
    with pytest.raises(ValueError, match="a neighbour vote needs format 2"):
        HeadsJudge.load(tmp_path / "a")
    (tmp_path / "a" / "manifest.json").write_text(json.dumps({**manifest, "format": 3}))
    with pytest.raises(ValueError, match="format 3, this version reads 1 or 2"):
        HeadsJudge.load(tmp_path / "a")


def test_model_card_documents_data_thresholds_and_date(trained):
    _, card, _, _ = trained
    assert "Created 2025-01-01" in card
    assert "| synthetic |" in card and "| heldout |" not in card
    assert "| self_harm |" in card and "threshold" in card
    assert "Licence notice" not in card  # no CC-BY-NC file used


def test_model_card_flags_non_commercial_sources():
    records = synthetic_records("toxicchat-train")
    _, card = build_artifact(records, synthetic_encode, load_taxonomy(SMALL_TAXONOMY), CONFIG, DATE)
    assert "CC-BY-NC-4.0 data (toxicchat-train)" in card
    assert "Lin et al. 2023, ToxiGen" not in card and "ToxicChat" in card


def test_a_category_without_training_examples_is_a_clear_error():
    records = [r for r in synthetic_records() if "slur" not in r.prompt]
    with pytest.raises(ValueError, match="cannot train output 'hate_speech_offensive_language'"):
        build_artifact(records, synthetic_encode, load_taxonomy(SMALL_TAXONOMY), CONFIG, DATE)


def test_user_mappings_label_a_new_label_set(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "label_set: my-labels\nmapping:\n  pills: self_harm\n  dope: drug_abuse_weapons_banned_substance\n  rude: hate_speech_offensive_language\n"
    )
    renamed = {"self_harm": "pills", "drug_abuse,weapons,banned_substance": "dope", "hate_speech,offensive_language": "rude"}
    records = [
        Record(r.id, r.origin, r.source, r.prompt, r.response, r.unsafe, tuple(renamed[x] for x in r.labels),
               "my-labels" if r.labels else None, r.refusal, r.response_unsafe)
        for r in synthetic_records()
    ]
    with pytest.raises(ValueError, match="no mapping for label set 'my-labels'"):
        build_artifact(records, synthetic_encode, load_taxonomy(SMALL_TAXONOMY), CONFIG, DATE)
    result, _ = build_artifact(records, synthetic_encode, load_taxonomy(SMALL_TAXONOMY), CONFIG, DATE,
                               mapping_dirs=(tmp_path,))
    assert next(r for r in result.reports if r.name == "self_harm").train_pos > 0
