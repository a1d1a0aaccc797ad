"""Find and mask personal data and secrets in prompt/response texts, offline and in one pass.

Why one module: cluster exemplars, cluster keywords, alert summaries and evidence (Alertmanager,
webhooks, Slack), report texts and exports all carry user text out of the process; each of them
calls :func:`redact` (or a :class:`Redactor`) so a pattern fixed here is fixed everywhere. It
imports only the standard library, so every layer may import it and nothing flows back.

Why regexes with validators and not Presidio: Presidio's named-entity recognition needs a spaCy
model that is published only on GitHub (PyPI has unofficial re-uploads of unknown provenance),
and its pattern recognisers are regexes of this kind behind a heavier dependency tree (spaCy is
a hard requirement of ``presidio-analyzer``). Here validators cut false positives where a check
exists: Luhn for card numbers, mod-97 for IBANs, :mod:`ipaddress` for IPv6. Person names are
found by cues ("my name is", "Dr.", "Dear") and a bundled list of common first names followed
by a capitalised word; addresses by street-number + street-type and postcode shapes. Names
without a cue or a listed first name are missed: ``bench/redaction.py`` reports the recall.

The patterns lean greedy: a masked harmless number costs nothing, a leaked card number does.
Placeholders (``<email>``, ``<phone>``...) are never matched again, so redaction is idempotent.

>>> redact("Mail jane.doe@example.com or call +1 (555) 123-4567, key sk-abc123DEF456ghi789JKL012")
'Mail <email> or call <phone>, key <secret>'
>>> redact("write to john at example dot com or ｊｏｅ＠corp, card 4111 1111 1111 1111")
'write to <email> or <email>, card <card>'
>>> redact("Dear Maria Lopez, your IBAN DE89 3704 0044 0532 0130 00 is set; ping 2001:db8::1")
'Dear <person>, your IBAN <iban> is set; ping <ip>'
>>> redact("clone https://deploy:hunter2@git.example.com/repo.git")
'clone https://<secret>@git.example.com/repo.git'
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Literal, Pattern

Kind = Literal["email", "phone", "card", "iban", "ip", "secret", "url", "person", "address", "number"]
KINDS: tuple[Kind, ...] = ("email", "phone", "card", "iban", "ip", "secret", "url", "person", "address", "number")
PLACEHOLDER = re.compile(r"<(?:" + "|".join(KINDS) + r")>")


@dataclass(frozen=True, slots=True)
class Finding:
    """One masked span of the input: ``text[start:end]`` is of ``kind``."""

    start: int
    end: int
    kind: Kind


# ---------------------------------------------------------------------------------------- validators
def luhn_ok(digits: str) -> bool:
    """The payment-card check digit (ISO/IEC 7812).

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN without spaces.

    >>> iban_ok("GB82WEST12345698765432"), iban_ok("GB82WEST12345698765433")
    (True, False)
    """
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


# ---------------------------------------------------------------------------------------- patterns
_NUMBER_WORDS = r"(?:zero|oh|o|one|two|three|four|five|six|seven|eight|nine|double|triple|\d)"
_AT = r"(?:\s*[\[({]\s*at\s*[\])}]\s*|\s+at\s+)"
_DOT = r"(?:\s*[\[({]\s*dot\s*[\])}]\s*|\s+dot\s+|\.)"
_FIRST_NAMES = frozenset("""
aaron abdul abigail adam adrian ahmed aisha alan albert alejandro alex alexander alexandra alice alicia
amanda amber amelia amy ana andrea andreas andrew angela anna anne anthony antonio arjun ashley barbara
ben benjamin beth betty bob brandon brian bruno carl carlos carmen carol caroline catherine charles
charlotte chen chloe chris christian christina christine christopher claire claudia daniel david deborah
dennis diana diego dmitri donald donna dorothy edward elena elizabeth emily emma eric erik eva fatima
felix fernando francesca frank gary george gerald giovanni giulia gregory hannah hans harold harry
heather helen henry hiroshi ibrahim igor ivan jack jacob james jane janet jason javier jean jennifer
jeremy jessica jiang joan joe john jonathan jorge jose joseph joshua juan judith julia julie justin
karen kate katherine kathleen kenji kevin kim kimberly klaus laura lauren lei leon li linda lisa liu
lucas lucia luis luke maria marie marco margaret mark martha martin mary matthew maya megan melissa
michael michelle miguel mohammed muhammad nancy natalia natasha nathan nicholas nicole nina noah olga
oliver olivia omar pablo pamela patricia patrick paul pedro peter pierre priya rachel rahul raj ramon
raymond rebecca richard robert roberto ronald rosa ryan samantha samuel sandra sara sarah scott sean
sergei sharon sofia sophia sophie stephanie stephen steven susan thomas timothy tom tyler vanessa
victor victoria vincent walter wei william yuki yusuf zhang
""".split())
_UPPER, _LOWER = "A-ZÀ-ÖØ-Þ", "a-zß-öø-ÿĀ-ž"
_CAP = rf"(?:[{_UPPER}]['’])?[{_UPPER}][{_LOWER}]+(?:-[{_UPPER}][{_LOWER}]+)?"  # Maria, O'Brien, Smith-Jones
_HONORIFIC = r"(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Madam)"
_TLD = r"(?:com|org|net|edu|gov|mil|int|io|co|uk|de|fr|nl|es|it|ch|at|se|no|dk|fi|pl|eu|us|ca|au|in|jp|cn|ru|br|info|biz|me|ai|dev|app)"
_STREET_TYPES = (r"Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl|Terrace|"
                 r"Close|Square|Sq|Parkway|Pkwy|Highway|Hwy|Crescent|Row")

_Validator = Callable[[re.Match[str]], "tuple[int, int] | None"]


def _whole(match: re.Match[str]) -> tuple[int, int] | None:
    return match.span()


def _group1(match: re.Match[str]) -> tuple[int, int] | None:
    return match.span(1)


def _secret_token(match: re.Match[str]) -> tuple[int, int] | None:
    """Long tokens mixing letters and digits (API keys, session ids, hashes)."""
    token = match.group(0)
    return match.span() if any(c.isdigit() for c in token) and any(c.isalpha() for c in token) else None


def _card(match: re.Match[str]) -> tuple[int, int] | None:
    digits = _digits(match.group(0))
    return match.span() if 13 <= len(digits) <= 19 and luhn_ok(digits) else None


def _iban(match: re.Match[str]) -> tuple[int, int] | None:
    """The longest prefix (in whole groups) that passes mod-97: a following word in capitals is not swallowed."""
    groups = match.group(0).split(" ")
    for n in range(len(groups), 0, -1):
        candidate = "".join(groups[:n])
        if iban_ok(candidate):
            return match.start(), match.start() + len(" ".join(groups[:n]))
    return None


def _ipv6(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group(0)
    if sum(c in "0123456789abcdefABCDEF" for c in text) < 2:
        return None
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return match.span()


_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|\d+\.\d+")


def _phone(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group(0)
    n = len(_digits(text))
    if not 7 <= n <= 15 or (not text.startswith(("+", "00", "(")) and _DATE.fullmatch(text)):
        return None
    return match.span()


def _email(match: re.Match[str]) -> tuple[int, int] | None:
    if (match.group(1) or match.group(2)) and not re.search(r"[@＠﹫]\s?[\w-]+[.．]", match.group(0)):
        return None  # "the @decorator", "me @ home": a spaced @ needs a dotted domain
    return match.span()


def _ipv4(match: re.Match[str]) -> tuple[int, int] | None:
    return match.span() if all(int(part) <= 255 for part in match.group(0).split(".")) else None


def _not_date(match: re.Match[str]) -> tuple[int, int] | None:
    return None if _DATE.fullmatch(match.group(0)) else match.span()


def _person(match: re.Match[str]) -> tuple[int, int] | None:
    first = match.group(1)
    return match.span() if first.lower() in _FIRST_NAMES else None


# (kind, cue, pattern, validator) in priority order. The cue is a cheap test of the whole text (see
# _cue) that must pass for the pattern to be tried: most texts have no digit or no "@", and skipping
# those patterns saves about half the cost per event.
_RULES: tuple[tuple[Kind, str | None, Pattern[str], _Validator], ...] = (
    # secrets: values after key=/token=/password=..., then known token shapes, then long mixed tokens
    ("secret", None, re.compile(r"(?i)\b(?=[acstp])(?:api[_-]?key|apikey|access[_-]?key|secret(?:[_-]?key)?|token|auth[_-]?token|"
                          r"password|passwd|pwd|pass|client[_-]?secret|private[_-]?key)\b[\"']?\s*[:=]\s*[\"']?"
                          r"([^\s\"',;]{4,})"), _group1),
    ("secret", None, re.compile(r"(?i)\bbearer\s+([\w.~+/-]{12,}=*)"), _group1),
    # credentials in a URL (https://user:pass@host/): before the email rule, which would keep "user:"
    ("secret", None, re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://([^\s/?#@]+)@"), _group1),
    ("secret", None, re.compile(r"\b(?:sk|pk|rk)-(?:[a-z]+-)?[A-Za-z0-9_-]{16,}|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|"
                          r"\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bgithub_pat_\w{20,}|\bxox[abposre]-[A-Za-z0-9-]{10,}|"
                          r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*|\bAIza[\w-]{30,}|\bglpat-[\w-]{20,}"), _whole),
    # user@example.com, user@localhost, ｊｏｅ＠ｅｘａｍｐｌｅ．ｃｏｍ, "john @ example.com" (spaced: dotted domain only)
    ("email", "at", re.compile(r"(?<![\w.+-])[\w.+-]+(\s?)[@＠﹫](\s?)[\w-]+(?:[.．][\w-]+)*"), _email),
    ("email", "spelled_at", re.compile(r"(?i)(?<![\w.+-])[\w.+-]+" + _AT + r"[\w-]+(?:" + _DOT + r"[\w-]+)*" + _DOT + _TLD + r"\b"), _whole),
    ("url", None, re.compile(r"(?i)\b(?:https?://|www\.)\S+"), _whole),
    ("iban", "digit", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}\b"), _iban),
    ("card", "digit", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card),
    ("ip", "digit", re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.]*\d)"), _ipv4),
    ("ip", "colon", re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), _ipv6),
    ("secret", None, re.compile(r"(?<![\w+/=-])[\w+/-]{24,}={0,2}"), _secret_token),  # keys, session ids, long hex
    ("address", "digit", re.compile(r"\b\d{1,5}[A-Za-z]?\s+(?:" + _CAP + r"\s+){1,3}(?:" + _STREET_TYPES + r")\b\.?"
                           r"(?:,?\s*(?:Apt|Apartment|Suite|Unit|Flat|#)\.?\s*[\w-]+)?"), _whole),
    ("address", "digit", re.compile(r"\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring)\s+\d{1,4}[a-z]?\b"), _whole),
    ("address", "digit", re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}\b|\b[A-Z]{2}\s\d{5}(?:-\d{4})?\b"), _whole),
    ("phone", "number_word", re.compile(r"(?i)\b" + _NUMBER_WORDS + r"(?:[\s,-]+" + _NUMBER_WORDS + r"){6,14}\b"), _whole),
    ("phone", "digit", re.compile(r"(?:\+|\b00|(?<!\w))\(?\d(?:[\s./()-]{0,3}\d){5,16}(?!\w)"), _phone),
    ("person", None, re.compile(r"\b" + _HONORIFIC + r"\.?\s+(" + _CAP + r"(?:\s+" + _CAP + r"){0,2})"), _group1),
    ("person", None, re.compile(r"\b(?=[mitndhsrcaefMITNDHSRCAEF])(?i:my name is|my name's|i am|i'm|this is|name:|dear|hi|hello|sincerely,?|regards,?|"
                          r"signed|contact|ask|tell|email|call|text|from|dox|doxx|stalk|harass)"
                          r"\s+(?!" + _HONORIFIC + r"\b)(" + _CAP + r"(?:\s+" + _CAP + r"){0,2})"), _group1),
    ("person", None, re.compile(r"\b(" + _CAP + r")(?:\s+(?:[A-Z]\.\s*)?" + _CAP + r"){0,2}\b"), _person),
    ("number", "digit", re.compile(r"\d(?:[\s().-]{0,2}\d){5,}"), _not_date),
)
_PERSON_CUE_FALSE = frozenset({"I", "The", "A", "An", "It", "This", "That", "There", "Here", "We", "You", "My", "Your"})


_CUE_RES = {
    "digit": re.compile(r"\d"),
    "at": re.compile(r"[@＠﹫]"),
    "spelled_at": re.compile(r"(?i)[\s\[({]at[\s\])}]"),
    "spelled_dot": re.compile(r"(?i)[\s\[({]dot[\s\])}]"),
    "colon": re.compile(r"[0-9A-Fa-f]:|:[0-9A-Fa-f]"),
}
_NUMBER_WORD_RE = re.compile(r"(?i)\b(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)\b")


def _cue(name: str, text: str) -> bool:
    if name == "number_word":  # a spelled-out phone number has 7+ number words; fewer than 5 cannot be one
        return sum(1 for _ in zip(range(5), _NUMBER_WORD_RE.finditer(text))) == 5
    if name == "spelled_at":
        return _CUE_RES["spelled_at"].search(text) is not None and _CUE_RES["spelled_dot"].search(text) is not None
    return _CUE_RES[name].search(text) is not None


def find(text: str) -> list[Finding]:
    """Personal data and secrets in ``text``, as non-overlapping spans sorted by start."""
    if not text:
        return []
    folded = unicodedata.normalize("NFKC", text)
    if len(folded) != len(text):  # NFKC changed lengths (ligatures, some symbols): scan the original
        folded = text
    taken: list[Finding] = []
    cues: dict[str, bool] = {}
    for kind, cue, pattern, validate in _RULES:
        if cue is not None:
            if cue not in cues:
                cues[cue] = _cue(cue, folded)
            if not cues[cue]:
                continue
        for match in pattern.finditer(folded):
            span = validate(match)
            if span is None or span[0] >= span[1]:
                continue
            start, end = span
            if kind == "person" and folded[start:end].split()[0] in _PERSON_CUE_FALSE:
                continue
            if PLACEHOLDER.search(folded, max(0, start - 1), min(len(folded), end + 1)) and _inside_placeholder(folded, start, end):
                continue
            if any(start < f.end and f.start < end for f in taken):
                continue
            taken.append(Finding(start, end, kind))
    return sorted(taken, key=lambda f: f.start)


def _inside_placeholder(text: str, start: int, end: int) -> bool:
    """True when the span only touches placeholders of an earlier redaction (idempotence)."""
    rest = PLACEHOLDER.sub("", text[max(0, start - 1): end + 1])
    return not any(ch.isalnum() for ch in rest)


# Zero-width and soft-hyphen characters split a value without showing (alice\u200b@example.com reads as
# an address but matches nothing): they are dropped before matching.
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")


def redact(text: str) -> str:
    """``text`` with each finding replaced by ``<kind>``; invisible characters dropped first.

    >>> redact("mail alice\u200b@example.com or bob@exam\u00adple.org")
    'mail <email> or <email>'
    """
    text = _visible(text)
    return _masked(text, find(text), len(text))


def _visible(text: str) -> str:
    return text if text.isascii() else _INVISIBLE.sub("", text)


def _masked(text: str, findings: list[Finding], end: int) -> str:
    """``text[:end]`` with each finding that starts before ``end`` replaced by ``<kind>``, whole even where it runs past ``end``."""
    out, at = [], 0
    for f in findings:
        if f.start >= end:
            break
        out.append(text[at:f.start])
        out.append(f"<{f.kind}>")
        at = f.end
    out.append(text[at:end])
    return "".join(out)


#: Longer than any value of several words a rule matches (an address with its flat, a spaced IBAN or
#: card, a phone number spelled out in words); single-token values (e-mails, keys, long numbers) still
#: match on the part of them that the scan holds.
SCAN_MARGIN = 128


def cut_reads(limit: int) -> int:
    """How much of a text :func:`redact_cut` reads: a prefix this long redacts and cuts to the same,
    so a caller may hold that raw prefix in memory and redact it only if it keeps it."""
    return 2 * limit + 64 + SCAN_MARGIN


def redact_cut(text: str, limit: int) -> str:
    """Redact, then cut to ``limit`` characters, without leaking the head of a value cut in two.

    Only a window is kept (texts may be a megabyte long): its first ``2 * limit + 64`` characters, as
    placeholders shrink a text. The scan reaches :data:`SCAN_MARGIN` characters past the window, so a
    value that starts inside the window and ends beyond it (``I live at 1600 | Pennsylvania Avenue``,
    ``IBAN DE89 | 3704 ...``) is found whole and masked whole, never cut to a head that no rule knows.

    >>> text = " ".join(["someone.longname@example.com"] * 7) + " call +44 20 7946 0958 now"
    >>> text[: 2 * 73 + 64][-10:], redact_cut(text, 73)[-12:]  # the window ends inside the phone number
    ('om call +4', 'call <phone>')
    """
    text = _visible(text[: cut_reads(limit)])
    return _masked(text, find(text), 2 * limit + 64)[:limit]


def strip_placeholders(text: str) -> str:
    """``text`` without ``<kind>`` placeholders: for keyword extraction, where they would rank as words."""
    return PLACEHOLDER.sub(" ", text)


class Redactor:
    """The redaction policy of one process: ``on`` masks, ``off`` passes texts through (an operator's choice).

    Callers hold one instance and call it on every text that leaves; :meth:`value` walks
    JSON-like evidence (dicts, lists, tuples) and redacts every string in it.
    """

    def __init__(self, mode: Literal["on", "off"] = "on") -> None:
        if mode not in ("on", "off"):
            raise ValueError(f"redaction must be 'on' or 'off', got {mode!r}")
        self.mode = mode

    @property
    def enabled(self) -> bool:
        return self.mode == "on"

    def __call__(self, text: str) -> str:
        return redact(text) if self.enabled else text

    def cut(self, text: str, limit: int) -> str:
        return redact_cut(text, limit) if self.enabled else text[:limit]

    def cached(self, text: str) -> str:
        """:meth:`__call__` through a bounded cache: for alert evidence, which repeats every batch while an alert is open."""
        return _redact_cached(text) if self.enabled else text

    def value(self, obj: Any, cached: bool = False) -> Any:
        """``obj`` with every string in it redacted (dict keys too: they may be free text)."""
        if not self.enabled:
            return obj
        if isinstance(obj, str):
            return _redact_cached(obj) if cached else redact(obj)
        if isinstance(obj, dict):
            return {self.value(k, cached) if isinstance(k, str) else k: self.value(v, cached) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.value(v, cached) for v in obj)
        return obj


_redact_cached = functools.lru_cache(maxsize=4096)(redact)


REDACT_ON = Redactor("on")
