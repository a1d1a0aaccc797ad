"""Body parsing and per-event validation: every accepted shape, every documented error."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from monitor.api.adapter_ingest import OFF_LOOP_BYTES, parse_off_loop
from monitor.ingest.normalize import event_sizes, to_event
from monitor.ingest.parsing import BodyError, parse_body

JSON = "application/json"
NDJSON = "application/x-ndjson"


def ok(body: object, content_type: str = JSON, max_events: int = 100):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_body(raw, content_type, max_events)


def error(body: bytes, content_type: str | None = JSON, max_events: int = 100) -> BodyError:
    with pytest.raises(BodyError) as info:
        parse_body(body, content_type, max_events)
    return info.value


def test_single_array_envelope_and_ndjson_shapes_parse_alike():
    events = [{"prompt": "a"}, {"prompt": "b", "response": "r"}]
    single = ok(events[0])
    assert single.single and len(single.events) == 1
    for parsed in (ok(events), ok({"events": events}), ok(b"\n".join(json.dumps(e).encode() for e in events) + b"\n", NDJSON)):
        assert not parsed.single
        assert [e.prompt for _, e in parsed.events] == ["a", "b"]
        assert parsed.rejected == []


def test_one_bad_event_is_rejected_with_its_index_and_field_the_rest_pass():
    parsed = ok([{"prompt": "fine"}, {"prompt": 5}, {"response": "no prompt"}, "not an object"])
    assert [i for i, _ in parsed.events] == [0]
    errors = {r.index: r.error for r in parsed.rejected}
    assert errors[1].startswith("prompt:")
    assert "prompt" in errors[2] and "input_messages" in errors[2]
    assert "must be a JSON object" in errors[3]


def test_ndjson_bad_line_is_rejected_alone():
    parsed = ok(b'{"prompt": "a"}\n{not json\n{"prompt": "c"}\n', NDJSON)
    assert [e.prompt for _, e in parsed.events] == ["a", "c"]
    assert parsed.rejected[0].index == 1 and "line 2" in parsed.rejected[0].error


def test_ndjson_lines_end_at_newline_only_not_at_unicode_line_separators():
    """JSON strings may hold U+2028, U+2029 and U+0085 unescaped: ``str.splitlines`` split such a record in two."""
    record = json.dumps({"prompt": "one\u2028two\u2029three\u0085four"}, ensure_ascii=False).encode()
    parsed = ok(record + b"\r\n", NDJSON)
    assert [e.prompt for _, e in parsed.events] == ["one\u2028two\u2029three\u0085four"]
    assert parsed.rejected == []
    # A stray \x0b, \x0c or \x1c-\x1e is not JSON: its line is one rejection, and later indexes stay the sender's.
    parsed = ok(b'{"prompt": "a\x0bb"}\n{"prompt": "c\x1cd"}\r\n' + record, NDJSON)
    assert [(r.index, r.error.split(":")[0]) for r in parsed.rejected] == [(0, "line 1"), (1, "line 2")]
    assert [i for i, _ in parsed.events] == [2]


@pytest.mark.parametrize(
    "body, content_type, status, needle",
    [
        (b"{", JSON, 400, "not valid JSON"),
        (b"\xff\xfe{}", JSON, 400, "UTF-8"),
        (b"   ", JSON, 400, "empty"),
        (b"[]", JSON, 422, "empty"),
        (b"42", JSON, 422, "body"),
        (b'{"events": 3}', JSON, 422, "events"),
        (b'{"events": [], "x": 1}', JSON, 422, "envelope"),
        (b'{"prompt": "a"}', "text/plain", 415, "Content-Type"),
        (b'{"prompt": "a"}', None, 415, "Content-Type"),
    ],
)
def test_body_level_errors_have_status_and_message(body, content_type, status, needle):
    exc = error(body, content_type)
    assert exc.status == status
    assert needle in exc.message


def test_batch_over_the_limit_is_413_naming_the_limit():
    body = json.dumps([{"prompt": "x"}] * 11).encode()
    exc = error(body, max_events=10)
    assert exc.status == 413 and "10" in exc.message


def test_messages_give_prompt_and_response():
    parsed = ok(
        {
            "input_messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
                {"role": "user", "content": [{"type": "text", "text": "last question"}]},
            ],
            "output_messages": [{"role": "assistant", "content": "the answer"}],
        }
    )
    item = parsed.events[0][1]
    assert item.prompt_text() == "last question"
    assert item.response_text() == "the answer"


def test_messages_without_user_turn_are_rejected():
    parsed = ok([{"input_messages": [{"role": "system", "content": "x"}]}, {"prompt": "ok"}])
    assert "no message with role 'user'" in parsed.rejected[0].error


@pytest.mark.parametrize(
    "value, expected",
    [("2026-01-01T00:00:00Z", 1767225600.0), ("2026-01-01T01:00:00+01:00", 1767225600.0), (1767225600, 1767225600.0), ("2026-01-01T00:00:00", 1767225600.0),
     ("2026-01-01T00:00:00z", 1767225600.0), ("2026-01-01t00:00:00z", 1767225600.0), ("2026-01-01t00:00:00.5Z", 1767225600.5)],
)
def test_timestamps_rfc3339_and_epoch(value, expected):
    item = ok({"prompt": "a", "timestamp": value}).events[0][1]
    assert item.timestamp == expected


@pytest.mark.parametrize("value", ["yesterday", True, -5, 1e20, [1], 10**400, "9999-12-31T23:59:59-23:59"])
def test_bad_timestamps_name_the_field(value):
    parsed = ok([{"prompt": "a", "timestamp": value}, {"prompt": "b"}])
    assert parsed.rejected[0].error.startswith("timestamp")


def test_labels_are_bounded_and_extra_fields_rejected():
    parsed = ok([{"prompt": "a", "labels": {f"k{i}": "v" for i in range(17)}}, {"prompt": "a", "colour": "red"}, {"prompt": "a", "labels": {"x": 1}}])
    assert parsed.rejected[0].error.startswith("labels")
    assert parsed.rejected[1].error.startswith("colour")
    assert parsed.rejected[2].error.startswith("labels.x")


def test_normalisation_fills_defaults_and_truncates():
    item = ok({"prompt": "p" * 50, "response": "r" * 10}).events[0][1]
    event = to_event(item, arrival_time=123.0, max_text_chars=20)
    assert event.timestamp == 123.0 and len(event.event_id) == 32
    assert event.prompt == "p" * 20 and event.response == "r" * 10 and event.truncated


def test_metadata_is_validated_then_dropped_so_queued_events_hold_only_counted_bytes():
    # 128 KiB of [[],[],...] parses into ~43,000 lists, megabytes held for bytes the queue counts once.
    item = ok(b'{"prompt": "p", "metadata": [' + b"[]," * 43_690 + b"[]]}").events[0][1]
    event = to_event(item, arrival_time=0.0, max_text_chars=20)
    assert len(item.metadata) == 43_691 and event.metadata is None
    assert sum(event_sizes(event).values()) == len(event.prompt) + len(event.event_id)


def test_huge_integers_are_a_clear_400_not_a_crash():
    exc = error(b'{"prompt": "x", "timestamp": ' + b"9" * 5000 + b"}")
    assert exc.status == 400 and "JSON" in exc.message
    parsed = ok(b'{"prompt": "a"}\n{"prompt": "b", "timestamp": ' + b"9" * 5000 + b"}\n", NDJSON)
    assert [e.prompt for _, e in parsed.events] == ["a"] and "line 2" in parsed.rejected[0].error


async def test_large_bodies_are_parsed_one_at_a_time_small_ones_inline():
    # Parsed JSON takes many times its text in memory: six 8 MiB bodies parsed at once held about three
    # times the memory of one at a time, for no speed (the parse holds the GIL).
    running, most, lock = 0, 0, threading.Lock()
    loop_thread = threading.get_ident()

    def parse(tag: int) -> tuple[int, bool]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return tag, threading.get_ident() == loop_thread

    large, small = b"x" * (OFF_LOOP_BYTES + 1), b"x"
    answers = await asyncio.gather(*(parse_off_loop(large, parse, i) for i in range(4)))
    assert answers == [(i, False) for i in range(4)] and most == 1
    assert await parse_off_loop(small, parse, 9) == (9, True)
