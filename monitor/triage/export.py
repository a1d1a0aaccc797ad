"""What was triaged, as files: labelled events (JSONL in the shared-data record format), preference
pairs for safety fine-tuning, and CSV for spreadsheets.

Texts are the redacted ones unless ``raw`` (an admin's request, and only where ``store_raw_text``
kept the raw texts). Labels are taxonomy ids (label set ``llmsafety-taxonomy``, an identity
mapping, so ``monitor judge train --data export.jsonl`` reads the file as it is); a category learned
at run time is not in the shipped taxonomy and maps to nothing there.

Preference pairs: for a prompt labelled unsafe that was seen with two replies, one the judge
called a refusal or safe (``chosen``) and one it called harmful and not a refusal (``rejected``).
The reply verdicts are the judge's at labelling time, not a reviewer's: the pair says so.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable, Literal

from monitor.taxonomy import SAFE
from monitor.triage.state import Labelled

LABEL_SET = "llmsafety-taxonomy"
SOURCE = "llmsafety-triage"
Format = Literal["jsonl", "pairs", "csv"]
FORMATS: tuple[str, ...] = ("jsonl", "pairs", "csv")
CSV_FIELDS = ("event_id", "label", "unsafe", "prompt", "response", "scope", "event_time", "judge_category",
              "judge_response_harmful", "judge_refused", "labelled_by", "labelled_at", "cluster_id")


def _texts(item: Labelled, raw: bool) -> tuple[str, str | None]:
    if raw and item.raw_prompt is not None:
        return item.raw_prompt, item.raw_response
    return item.prompt, item.response


def record(item: Labelled, raw: bool = False) -> dict[str, Any]:
    """One labelled event in the ``../shared/data`` record format."""
    prompt, response = _texts(item, raw)
    return {"id": f"triage:{item.event_id}", "source": SOURCE, "prompt": prompt, "response": response,
            "unsafe": item.label != SAFE, "labels": [] if item.label == SAFE else [item.label], "label_set": LABEL_SET,
            "refusal": None, "response_unsafe": None, "lang": None}


def preference_pairs(items: Iterable[Labelled], raw: bool = False) -> list[dict[str, Any]]:
    by_prompt: dict[str, list[Labelled]] = {}
    for item in items:
        if item.label != SAFE and item.response is not None:
            by_prompt.setdefault(_texts(item, raw)[0], []).append(item)
    out = []
    for prompt, group in by_prompt.items():
        chosen = next((i for i in group if i.refused or i.response_flagged is False), None)
        rejected = next((i for i in group if i.response_flagged and not i.refused), None)
        if chosen is not None and rejected is not None:
            out.append({"prompt": prompt, "chosen": _texts(chosen, raw)[1], "rejected": _texts(rejected, raw)[1],
                        "label": chosen.label, "event_ids": [chosen.event_id, rejected.event_id], "reply_labels": "judge"})
    return out


def render(items: list[Labelled], fmt: str, raw: bool = False) -> str:
    """The export as text; ``ValueError`` naming ``format`` for an unknown one."""
    if fmt == "jsonl":
        return "".join(json.dumps(record(i, raw), ensure_ascii=False) + "\n" for i in items)
    if fmt == "pairs":
        return "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in preference_pairs(items, raw))
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_FIELDS)
        for i in items:
            prompt, response = _texts(i, raw)
            writer.writerow([i.event_id, i.label, i.label != SAFE, _cell(prompt), _cell(response), i.scope, i.timestamp,
                             i.judge_category, i.response_flagged, i.refused, i.who, i.at, i.cluster_id or ""])
        return buf.getvalue()
    raise ValueError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _cell(text: str | None) -> str:
    """A spreadsheet cell that cannot run as a formula (CSV injection: =, +, -, @ at the start)."""
    if text is None:
        return ""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
