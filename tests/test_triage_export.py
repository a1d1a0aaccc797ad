"""What triage exports: shared-data records that the judge's dataset reader takes as they are,
preference pairs only where a refusal and a harmful reply to one prompt both exist, CSV that a
spreadsheet cannot run, and raw texts only where they were kept."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from monitor.judge.dataset import LabelMapper, read_records
from monitor.triage.export import preference_pairs, render
from monitor.triage.state import Labelled


def labelled(event_id: str, label: str, prompt: str, response: str | None, harmful: bool | None, refused: bool | None,
             raw: str | None = None) -> Labelled:
    return Labelled(event_id, label, 1.0, np.zeros(4, np.float32), prompt, response, "global", "self_harm", harmful, refused,
                    "alice", 2.0, "c1", 1, raw)


ITEMS = [
    labelled("a", "self_harm", "how do I <redacted>", "I can't help with that.", False, True, raw="how do I raw"),
    labelled("b", "self_harm", "how do I <redacted>", "Here is how: step one ...", True, False),
    labelled("c", "safe", "=HYPERLINK(\"http://x\")", "Sure!", False, False),
    labelled("d", "self_harm", "lonely prompt", "Here is how", True, False),
]


def test_records_are_read_by_the_dataset_reader_with_taxonomy_labels(tmp_path):
    path = tmp_path / "triaged.jsonl"
    path.write_text(render(ITEMS, "jsonl"))
    records = read_records(path)
    assert [r.id for r in records] == ["triage:a", "triage:b", "triage:c", "triage:d"]
    mapper = LabelMapper()
    assert mapper.harm_categories(records[0]) == frozenset({"self_harm"}) and mapper.harm_categories(records[2]) == frozenset()
    assert records[0].prompt == "how do I <redacted>"  # redacted by default


def test_preference_pairs_need_both_a_safe_and_a_harmful_reply():
    [pair] = preference_pairs(ITEMS)
    assert pair["chosen"] == "I can't help with that." and pair["rejected"].startswith("Here is how: step one")
    assert pair["event_ids"] == ["a", "b"] and pair["reply_labels"] == "judge"
    assert json.loads(render(ITEMS, "pairs")) == pair


def test_csv_cells_cannot_start_a_formula_and_raw_needs_kept_text():
    rows = list(csv.reader(io.StringIO(render(ITEMS, "csv"))))
    assert rows[0][:4] == ["event_id", "label", "unsafe", "prompt"]
    assert rows[3][3].startswith("'=HYPERLINK")
    raw = [json.loads(line) for line in render(ITEMS, "jsonl", raw=True).splitlines()]
    assert raw[0]["prompt"] == "how do I raw" and raw[1]["prompt"] == "how do I <redacted>"  # no raw text kept for b
    with pytest.raises(ValueError, match="^format:"):
        render(ITEMS, "xml")
