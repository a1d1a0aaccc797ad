"""Mask personal data and secrets in texts kept for human review.

Reports show example prompts so a reviewer can see *what* moved; they must not become a store of
e-mail addresses, phone numbers or credentials. The patterns are deliberately greedy: a masked
harmless number costs nothing, a leaked card number does.

>>> redact("Mail jane.doe@example.com or call +1 (555) 123-4567, key sk-abc123DEF456ghi789JKL012")
'Mail <email> or call <number>, key <secret>'
>>> redact("see https://example.com/x?id=42 from 10.0.0.1")
'see <url> from <ip>'
"""

from __future__ import annotations

import re

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE), "<url>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), "<ip>"),
    # Long tokens mixing letters and digits: API keys, session ids, hashes.
    (re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{20,}\b"), "<secret>"),
    # Phone, card, account and id numbers: 6+ digits, possibly split by spaces, dots, dashes or brackets.
    (re.compile(r"\+?\(?\d(?:[\s().-]*\d){5,}"), "<number>"),
)


def redact(text: str) -> str:
    for pattern, mask in _PATTERNS:
        text = pattern.sub(mask, text)
    return text
