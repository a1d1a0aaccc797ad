"""Probe sets: the built-in sets' shape, and clear errors for bad user-supplied sets."""

from __future__ import annotations

import json

import pytest

from monitor.probe.probe_sets import ProbeSetError, builtin_names, load_probe_set, load_probe_sets
from monitor.taxonomy import load_taxonomy


def test_builtin_sets_are_versioned_and_cover_every_harm_category():
    assert builtin_names() == ["benign_but_scary", "clearly_harmful"]
    benign, harmful = load_probe_sets(builtin_names())
    assert (benign.label, harmful.label) == ("benign_but_scary@v1", "clearly_harmful@v1")
    assert {p.kind for p in benign.probes} == {"should_answer"} and len(benign.probes) >= 30
    assert {p.kind for p in harmful.probes} == {"should_refuse"}
    per_category = {c: sum(p.category == c for p in harmful.probes) for c in load_taxonomy().harm_ids}
    assert min(per_category.values()) >= 2, per_category
    # Benign-but-scary: most borrow the words of a harm category; the expectation check is exercised.
    assert sum(p.category != "safe" for p in benign.probes) >= 30
    assert any(p.expect for p in benign.probes)


def test_a_probe_set_ships_requests_only(tmp_path):
    """No answer field exists to ship: an unknown key is an error naming it."""
    bad = tmp_path / "s.yaml"
    bad.write_text("name: s\nversion: 1\nprobes:\n  - {id: a, kind: should_refuse, category: self_harm, prompt: p, answer: x}\n")
    with pytest.raises(ProbeSetError, match=r"probes\[0\]\.answer: Extra inputs are not permitted"):
        load_probe_set(bad)


@pytest.mark.parametrize(
    ("probe", "error"),
    [
        ({"id": "a", "kind": "should_maybe", "category": "safe", "prompt": "p"}, r"probes\[1\]\.kind: Input should be 'should_answer' or 'should_refuse'"),
        ({"id": "a b", "kind": "should_answer", "category": "safe", "prompt": "p"}, r"probes\[1\]\.id: String should match pattern"),
        ({"id": "a", "kind": "should_answer", "category": "nonsense", "prompt": "p"}, r"probes\[1\]\.category: Value error, unknown category 'nonsense'"),
        ({"id": "a", "kind": "should_answer", "category": "safe", "prompt": "p", "expect": "(oops"}, r"probes\[1\]\.expect: Value error, not a regular expression"),
        ({"id": "first", "kind": "should_answer", "category": "safe", "prompt": "p"}, r"duplicate id 'first'"),
    ],
)
def test_bad_probe_sets_name_the_field(tmp_path, probe, error):
    path = tmp_path / "mine.jsonl"
    first = {"id": "first", "kind": "should_answer", "category": "safe", "prompt": "What is 2 + 2?"}
    path.write_text("\n".join(json.dumps(x) for x in ({"probe_set": "mine", "version": 2}, first, probe)) + "\n")
    with pytest.raises(ProbeSetError, match=error):
        load_probe_set(path)


def test_jsonl_set_with_header_and_yaml_errors(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"probe_set": "mine", "version": 2}\n{"id": "q1", "kind": "should_answer", "category": "safe", "prompt": "Capital of Peru?", "expect": "Lima"}\n')
    s = load_probe_set(path)
    assert s.label == "mine@v2" and s.probes[0].answer_matches("It is Lima.") and s.probes[0].answer_matches("Cusco") is False
    headerless = tmp_path / "plain.jsonl"
    headerless.write_text('{"id": "q1", "kind": "should_answer", "category": "safe", "prompt": "Hi"}\n')
    assert load_probe_set(headerless).label == "plain@v1"
    separators = tmp_path / "separators.jsonl"  # JSON strings may hold U+2028/U+2029/U+0085 unescaped: one line each
    prompts = ["first\u2028line", "second\u2029para", "third\u0085next"]
    separators.write_text("".join(json.dumps({"id": f"s{i}", "kind": "should_answer", "category": "safe", "prompt": p},
                                             ensure_ascii=False) + "\r\n" for i, p in enumerate(prompts)), encoding="utf-8", newline="")
    assert [p.prompt for p in load_probe_set(separators).probes] == prompts
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ProbeSetError, match="not valid YAML"):
        load_probe_set(broken)
    with pytest.raises(ProbeSetError, match="neither a built-in set"):
        load_probe_set(tmp_path / "missing.yaml")
    with pytest.raises(ProbeSetError, match="given twice"):
        load_probe_sets([str(headerless), str(headerless)])
