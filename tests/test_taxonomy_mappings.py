"""Bundled label mappings: valid against the taxonomy, complete for the shared data, and mapped as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.judge.dataset import LabelMapper, Record
from monitor.taxonomy import load_taxonomy
from monitor.taxonomy.mapping import MAPPINGS_DIR, bundled_mappings, get_mapping, load_mapping_file


def record(labels, label_set, unsafe=True) -> Record:
    return Record(id="r", origin="f", source="s", prompt="p", response=None, unsafe=unsafe, labels=tuple(labels),
                  label_set=label_set, refusal=None, response_unsafe=None)


def test_every_bundled_mapping_targets_taxonomy_ids():
    ids = set(load_taxonomy().ids)
    for file in MAPPINGS_DIR.glob("*.yaml"):
        _, mapping = load_mapping_file(file)
        assert set(mapping.values()) <= ids, file.name


def test_every_label_set_in_shared_data_has_a_mapping(shared_data: Path):
    label_sets = set()
    for file in shared_data.glob("*.jsonl"):
        with file.open() as fh:
            label_sets |= {json.loads(line).get("label_set") for line in fh}
    missing = sorted(ls for ls in label_sets - {None} if ls not in bundled_mappings())
    assert not missing


def test_openai_moderation_codes_map_into_the_taxonomy():
    m = get_mapping("openai-moderation")
    assert m["S3"] == "child_abuse"
    assert m["SH"] == "self_harm"
    assert m["self-harm/intent"] == "self_harm"


def test_subcategory_wins_over_its_category():
    mapper = LabelMapper()
    cats = mapper.harm_categories(record(["Physical Harm", "Physical Harm/Self-harm"], "catqa"))
    assert cats == {"self_harm"}


def test_unlisted_subcategory_falls_back_to_its_parent():
    mapper = LabelMapper()
    assert mapper.harm_categories(record(["cse", "cse/skilled"], "ailuminate-hazard")) == {"child_abuse"}
    assert mapper.harm_categories(record(["slur_h", "slur_h/gay people"], "hatecheck-functionality")) == {
        "hate_speech_offensive_language"
    }


def test_multi_label_records_get_every_category():
    mapper = LabelMapper()
    assert mapper.harm_categories(record(["S", "S3"], "openai-moderation")) == {
        "sexually_explicit_adult_content",
        "child_abuse",
    }


def test_topics_and_broad_labels_leave_the_category_unknown():
    mapper = LabelMapper()
    assert mapper.harm_categories(record(["Health and Medicine", "Health and Medicine/Drugs"], "harmfulqa-topic")) is None
    assert mapper.harm_categories(record(["toxic"], "toxicchat")) is None


def test_safe_records_have_no_category_even_with_a_typed_label():
    # ConvAbuse annotators typed some turns they judged not abusive overall.
    assert LabelMapper().harm_categories(record(["sex_harassment"], "convabuse", unsafe=False)) == frozenset()


def test_unknown_label_set_is_a_clear_error():
    with pytest.raises(ValueError, match="no mapping for label set 'nope'"):
        LabelMapper().harm_categories(record(["x"], "nope"))
