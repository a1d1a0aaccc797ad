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

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")  # the look-behind keeps it linear in long words
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_IP = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_TOKEN = re.compile(r"[\w-]{20,}")
# Phone, card, account and id numbers: 6+ digits, possibly split by spaces, dots, dashes or brackets.
_NUMBER = re.compile(r"\+?\(?\d(?:[\s().-]*\d){5,}")
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[A-Za-z]")


def _secret(match: re.Match[str]) -> str:
    """Long tokens mixing letters and digits (API keys, session ids, hashes); checked per token to stay linear."""
    token = match.group(0)
    return "<secret>" if _DIGIT.search(token) and _LETTER.search(token) else token


def redact(text: str) -> str:
    text = _EMAIL.sub("<email>", text)
    text = _URL.sub("<url>", text)
    text = _IP.sub("<ip>", text)
    text = _TOKEN.sub(_secret, text)
    return _NUMBER.sub("<number>", text)
