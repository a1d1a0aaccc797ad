"""A rolling upgrade of scale-out processes: what the release before wrote still loads."""

from __future__ import annotations

import json
import pickle
from dataclasses import fields

from monitor.events import Event
from monitor.judge.verdict import Verdict
from monitor.scale.streams import decode_event, encode_event


def _pickled_without_last_field(obj, cls, monkeypatch) -> bytes:
    """Pickle ``obj`` as the release before its newest field would have (state one value shorter)."""
    older = [f.name for f in fields(cls)][:-1]
    monkeypatch.setattr(cls, "__getstate__", lambda self: tuple(getattr(self, name) for name in older))
    data = pickle.dumps(obj)
    monkeypatch.undo()
    return data


def test_events_and_verdicts_pickled_before_their_newest_field_load_with_its_default(monkeypatch):
    event = pickle.loads(_pickled_without_last_field(Event("req-1", 1.0, "hi", sender="ignored"), Event, monkeypatch))
    assert (event.sender, event.key) == ("", "req-1")
    verdict = pickle.loads(_pickled_without_last_field(Verdict("j", "safe", {}, 0.2, False, extra={"x": 1.0}), Verdict, monkeypatch))
    assert verdict.extra == {} and verdict.outputs()["prompt_unsafe"] == 0.2


def test_stream_events_name_their_sender_only_when_there_is_one():
    assert "sender" not in json.loads(encode_event(Event("a", 1.0, "hi")))
    tagged = Event("a", 1.0, "hi", sender="gateway")
    assert decode_event(encode_event(tagged)) == tagged
