"""Reading judge training records, deriving labels, seeded splits and caps."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from monitor.judge.dataset import Record, data_files, read_records, split_of, stratified_cap

FIXTURES = Path(__file__).parent / "fixtures" / "judge"


def rec(**kw) -> Record:
    base = dict(id="r", origin="f", source="s", prompt="p", response=None, unsafe=None, labels=(), label_set=None,
                refusal=None, response_unsafe=None)
    return Record(**{**base, **kw})


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fixture_reads_with_origin_from_file_name():
    records = read_records(FIXTURES / "records.jsonl")
    assert len(records) == 22
    assert {r.origin for r in records} == {"records"}
    assert records[0].response and records[0].refusal is False


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"data.jsonl:2: not valid JSON"),
        ('{"id": "x"}', r"data.jsonl:2: field 'prompt' must be a string"),
        ('{"id": "x", "prompt": "p", "unsafe": "yes"}', r"field 'unsafe' must be true, false or null"),
        ('{"id": "x", "prompt": "p", "labels": "S"}', r"field 'labels' must be a list of strings"),
        ('["x"]', r"a record must be a JSON object"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path, line, message):
    path = write(tmp_path, json.dumps({"id": "ok", "prompt": "fine"}), line)
    with pytest.raises(ValueError, match=message):
        read_records(path)


def test_data_files_expands_folders_and_rejects_missing_paths(tmp_path):
    (tmp_path / "b.jsonl").write_text("")
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("")
    assert [p.name for p in data_files([tmp_path])] == ["a.jsonl", "b.jsonl"]
    with pytest.raises(ValueError, match="data path not found"):
        data_files([tmp_path / "nope.jsonl"])


def test_response_harm_derivation():
    assert rec(response="r", response_unsafe=True).response_harm is True
    # XSTest completions: complying with an unsafe prompt is harmful, refusing it is not.
    assert rec(response="r", unsafe=True, refusal=False).response_harm is True
    assert rec(response="r", unsafe=True, refusal=True).response_harm is False
    assert rec(response="r", unsafe=False, refusal=False).response_harm is False
    # A reference answer to a safe instruction is safe; an unlabelled pair says nothing.
    assert rec(response="r", unsafe=False).response_harm is False
    assert rec(response="r").response_harm is None
    assert rec(unsafe=True, response_unsafe=None).response_harm is None


def test_split_depends_on_prompt_text_and_seed_only():
    prompts = [f"prompt number {i}" for i in range(2000)]
    splits = [split_of(p, 0, 0.2, 0.2) for p in prompts]
    assert splits == [split_of(p, 0, 0.2, 0.2) for p in prompts]
    shares = Counter(splits)
    assert 0.17 < shares["test"] / 2000 < 0.23 and 0.17 < shares["val"] / 2000 < 0.23
    assert splits != [split_of(p, 1, 0.2, 0.2) for p in prompts]


def test_stratified_cap_keeps_rare_labels_and_is_seeded():
    records = [rec(id=f"s{i}", prompt=f"s{i}", unsafe=False) for i in range(1000)]
    records += [rec(id=f"u{i}", prompt=f"u{i}", unsafe=True) for i in range(7)]
    capped = stratified_cap(records, 50, seed=3)
    assert Counter(r.unsafe for r in capped) == {False: 50, True: 7}
    assert capped == stratified_cap(records, 50, seed=3)
    assert capped != stratified_cap(records, 50, seed=4)
    assert [r.id for r in capped] == [r.id for r in records if r in capped]  # input order kept
