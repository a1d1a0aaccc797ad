"""JSON that cannot crash the parser or what reads it afterwards.

Why: ``json.loads`` recurses once per nesting level (``'[' * 100000`` raises ``RecursionError``,
a 500), converts integer literals in quadratic time and refuses those over 4,300 digits with a
``ValueError``; and it turns ``"\\ud800"`` into a lone surrogate that every UTF-8 encoder after
it (the tokenizer, Redis, logs) refuses. :func:`check_text` scans the raw text before parsing,
in C-speed steps (regex and numpy), for nesting depth and long digit runs; :func:`lone_surrogate`
finds a lone surrogate in a parsed value and names where it is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np


class JsonLimitError(ValueError):
    """The text breaks a limit checked before parsing; the message names the limit (a 400)."""


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """``max_json_depth`` and ``max_int_digits`` of the settings."""

    depth: int = 64
    digits: int = 1000

    @classmethod
    def of(cls, settings: Any) -> "JsonLimits":
        return cls(settings.max_json_depth, settings.max_int_digits)


# A string literal, or an unterminated one up to the end of the text: every '"' the scan starts at
# matches, so it never restarts inside a literal (a failed match on '"' + '\\"' * n would retry at
# each escaped quote: quadratic, seconds of a held GIL for a 64 KiB body). JSON parsing rejects the
# unterminated literal afterwards.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_BRACKETS = re.compile(r"[^\[\]{}]+")
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)


def structure(text: str) -> str:
    """``text`` without its string literals (brackets or digits inside strings are data, not structure).

    >>> structure('{"a": "[1]", "b\\\\"c": [2]}'), structure('["x", "unterminated \\\\" [[')
    ('{"": "", "": [2]}', '["", ""')
    """
    return _STRING.sub('""', text)


def max_depth(text: str) -> int:
    """Deepest bracket nesting of JSON ``text`` (strings ignored).

    >>> max_depth('{"a": [1, {"b": "[[[["}]}'), max_depth("[]"), max_depth("1")
    (3, 1, 0)
    """
    return _depth(structure(text))


def _depth(bare: str) -> int:
    brackets = _BRACKETS.sub("", bare).encode("ascii")
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where(np.isin(codes, _OPEN), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max())


def check_text(text: str, depth_limit: int, digits_limit: int, where: str = "body") -> None:
    """:class:`JsonLimitError` when ``text`` nests deeper than ``depth_limit`` or holds a number
    with more than ``digits_limit`` digits in a row; both checked before any parsing.

    >>> check_text('[' * 100 + ']' * 100, 64, 64)
    Traceback (most recent call last):
    ...
    monitor.ingest.safejson.JsonLimitError: body: JSON nested 100 levels deep; the limit is max_json_depth=64
    """
    bare = structure(text)
    depth = _depth(bare)
    if depth > depth_limit:
        raise JsonLimitError(f"{where}: JSON nested {depth} levels deep; the limit is max_json_depth={depth_limit}")
    long_number = re.search(r"\d{%d,}" % (digits_limit + 1), bare)
    if long_number is not None:
        raise JsonLimitError(f"{where}: JSON number with more than max_int_digits={digits_limit} digits")


def loads(text: str | bytes, limits: JsonLimits, where: str = "body") -> Any:
    """``json.loads`` after :func:`check_text`; a syntax error raises ``json.JSONDecodeError`` as usual."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    check_text(text, limits.depth, limits.digits, where)
    return json.loads(text)


def _bad(text: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone UTF-16 surrogate (\\u{ord(text[exc.start]):04x} at character {exc.start})"
    return None


def lone_surrogate(value: Any, path: str = "") -> str | None:
    """``"path: contains a lone UTF-16 surrogate ..."`` for the first string (or key) in ``value``
    that is not valid Unicode text, else None. ``value`` is parsed JSON, so its depth is bounded.

    >>> lone_surrogate({"prompt": "a\\ud800b"}), lone_surrogate({"labels": {"k": ["ok", "\\udc00"]}})
    ('prompt: contains a lone UTF-16 surrogate (\\\\ud800 at character 1)', 'labels.k.1: contains a lone UTF-16 surrogate (\\\\udc00 at character 0)')
    """
    if isinstance(value, str):
        problem = _bad(value)
        return f"{path or 'value'}: {problem}" if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _bad(key):
                return f"{path or 'object'}: a key {_bad(key)}"
            found = lone_surrogate(item, where)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = lone_surrogate(item, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None
