"""Labelled records for training and evaluating judges: reading, label mapping, seeded splits.

Records come from JSONL files in the shared-data format (see ``../shared/data/README.md``): one
object per line with ``prompt``, ``response``, ``unsafe``, ``labels``, ``label_set``, ``refusal`` and
``response_unsafe``. Each record's ``origin`` is its file's stem, so a whole file (say the XSTest
completions of one model) can be held out.

Splits hash the prompt text, not the record id: the same prompt appearing in several files (XSTest's
prompts sit in four) always lands in the same split, so a test prompt is never trained on.

>>> [split_of(t, seed=0, test_fraction=0.2, val_fraction=0.2) for t in ("Write a haiku about rain.", "What is 2+2?")]
['train', 'val']
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

from monitor.taxonomy import SAFE
from monitor.taxonomy import Taxonomy, load_taxonomy
from monitor.taxonomy.mapping import get_mapping

Split = Literal["train", "val", "test"]

_OPTIONAL_BOOLS = ("unsafe", "refusal", "response_unsafe")


def default_data_dir() -> Path:
    """``$MONITOR_DATA_DIR``, else ``../shared/data`` beside the repository root."""
    env = os.environ.get("MONITOR_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True, slots=True)
class Record:
    """One labelled example; ``None`` means the source does not say."""

    id: str
    origin: str
    source: str
    prompt: str
    response: str | None
    unsafe: bool | None
    labels: tuple[str, ...]
    label_set: str | None
    refusal: bool | None
    response_unsafe: bool | None
    lang: str | None = None

    @property
    def response_harm(self) -> bool | None:
        """Whether the response is harmful given the prompt, from the record's own labels.

        Sources without ``response_unsafe`` still say something: an XSTest completion that complies
        with an unsafe prompt is harmful compliance, one that refuses or answers a safe prompt is not;
        a reference answer to a prompt labelled safe (benign instructions) is safe.
        """
        if self.response is None:
            return None
        if self.response_unsafe is not None:
            return self.response_unsafe
        if self.unsafe is None:
            return None
        if self.refusal is not None:
            return self.unsafe and not self.refusal
        return False if not self.unsafe else None


def data_files(paths: Iterable[Path | str]) -> list[Path]:
    """Expand folders to their ``*.jsonl`` files (sorted); keep files as given, in order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.glob("*.jsonl")))
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"data path not found: {p}")
    return out


def read_records(path: Path | str) -> list[Record]:
    """Read one JSONL file; a bad line raises ``ValueError`` naming the file, line and field."""
    path = Path(path)
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                records.append(_parse(line, path.stem, f"{path}:{lineno}"))
    return records


def _parse(line: str, origin: str, where: str) -> Record:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a record must be a JSON object")
    for name in ("id", "prompt"):
        if not isinstance(raw.get(name), str):
            raise ValueError(f"{where}: field {name!r} must be a string")
    for name in ("response", "label_set", "lang", "source"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise ValueError(f"{where}: field {name!r} must be a string or null")
    for name in _OPTIONAL_BOOLS:
        if raw.get(name) is not None and not isinstance(raw[name], bool):
            raise ValueError(f"{where}: field {name!r} must be true, false or null")
    labels = raw.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{where}: field 'labels' must be a list of strings")
    return Record(
        id=raw["id"],
        origin=origin,
        source=raw.get("source") or origin,
        prompt=raw["prompt"],
        response=raw.get("response"),
        unsafe=raw.get("unsafe"),
        labels=tuple(labels),
        label_set=raw.get("label_set"),
        refusal=raw.get("refusal"),
        response_unsafe=raw.get("response_unsafe"),
        lang=raw.get("lang"),
    )


class LabelMapper:
    """Maps a record's source labels to harm category ids of the taxonomy.

    Only leaf labels count: in ``["Physical Harm", "Physical Harm/Self-harm"]`` the subcategory
    decides. A leaf without its own mapping falls back to its parent (``"cse/skilled"`` -> ``"cse"``).
    """

    def __init__(self, taxonomy: Taxonomy | None = None, extra_dirs: tuple[Path, ...] = ()) -> None:
        self.taxonomy = taxonomy or load_taxonomy()
        self._extra_dirs = extra_dirs
        self._tables: dict[str, dict[str, str]] = {}

    def harm_categories(self, record: Record) -> frozenset[str] | None:
        """Harm categories of the prompt: empty when it is safe, None when unknown.

        Unknown means unlabelled, or unsafe with no label that names a category (HarmfulQA topics,
        ToxicChat's "toxic"): such records teach the overall unsafe head but no category head.
        """
        if record.unsafe is None:
            return None
        if not record.unsafe:
            return frozenset()
        found = set()
        if record.label_set:
            table = self._table(record.label_set)
            for label in _leaves(record.labels):
                target = _lookup(table, label)
                if target is not None and target != SAFE:
                    found.add(target)
        return frozenset(found) or None

    def _table(self, label_set: str) -> dict[str, str]:
        if label_set not in self._tables:
            self._tables[label_set] = get_mapping(label_set, self._extra_dirs)
        return self._tables[label_set]


def _leaves(labels: Sequence[str]) -> list[str]:
    return [a for a in labels if not any(b != a and b.startswith(a + "/") for b in labels)]


def _lookup(table: dict[str, str], label: str) -> str | None:
    while True:
        if label in table:
            return table[label]
        if "/" not in label:
            return None
        label = label.rsplit("/", 1)[0]


def record_split(record: Record, seed: int, test_fraction: float, val_fraction: float,
                 holdout_origins: Sequence[str] = ()) -> Split:
    """A record's split: whole held-out files are test; otherwise its prompt's hash decides (:func:`split_of`)."""
    if record.origin in holdout_origins:
        return "test"
    return split_of(record.prompt, seed, test_fraction, val_fraction)


def split_of(key: str, seed: int, test_fraction: float, val_fraction: float) -> Split:
    """Deterministic split for a key (the prompt text): same key, seed and fractions, same split."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def stratified_cap(records: Sequence[Record], cap: int, seed: int, safe_prompt_cap: int | None = None) -> list[Record]:
    """At most ``cap`` records per (origin, label combination), chosen by a seeded shuffle.

    Stratifying keeps rare labels: a plain cap on the Alpaca file (25k harmless, 299 harmful) would
    keep almost no harmful rows. ``safe_prompt_cap`` (default ``cap``) applies instead to strata of
    safe prompts without a response: they are cheap to embed, and the benign side needs the most
    variety (live traffic is mostly benign, in every style). Output keeps the input order.
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[(r.origin, r.unsafe, r.response_harm, r.refusal)].append(i)
    keep: list[int] = []
    for key in sorted(groups, key=repr):
        idx = groups[key]
        limit = safe_prompt_cap if safe_prompt_cap is not None and key[1:] == (False, None, None) else cap
        if len(idx) > limit:
            idx = sorted(random.Random(f"{seed}:{key!r}").sample(idx, limit))
        keep.extend(idx)
    return [records[i] for i in sorted(keep)]
