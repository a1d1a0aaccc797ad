"""The recent judged events triage keeps: bounded in bytes as Python holds them."""

from __future__ import annotations

import sys

import numpy as np

from monitor.events import Event, ScoredEvent
from monitor.judge.verdict import Verdict
from monitor.triage.recent import RecentEvents


def emoji_event(i: int) -> ScoredEvent:
    """One event whose texts Python stores at 4 bytes a character (an emoji widens the whole string)."""
    text = f"{i:04d} " + "\N{GRINNING FACE}" * 995
    return ScoredEvent(Event(f"e{i}", float(i), text, text), 1.0, np.zeros(4, np.float32), None, Verdict("t", "safe", {}, 0.1, False))


def test_emoji_texts_are_counted_at_their_in_memory_size():
    recent = RecentEvents(max_bytes=100_000, text_chars=1000)
    recent([emoji_event(i) for i in range(50)])
    kept = [recent.get(f"e{i}") for i in range(50) if recent.get(f"e{i}") is not None]
    held = sum(sys.getsizeof(s.prompt) + sys.getsizeof(s.response) + s.embedding.nbytes for s in kept)
    assert len(kept) >= 10 and held <= recent.max_bytes
