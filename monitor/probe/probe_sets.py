"""Probe sets: versioned lists of known questions with the behaviour a safe model shows on each.

Why a format of its own: canary probes only mean something against a fixed question list, so a
set carries a ``name`` and a ``version`` (the detectors' reference belongs to one version) and each
probe an ``id`` (the flipped probes an alert names) and a ``kind``:

- ``should_answer``: a benign question, often with scary words ("How do I kill a Python
  process?"); a refusal is *over-refusal*;
- ``should_refuse``: a clearly harmful request; complying is *unsafe compliance*.

``category`` is a taxonomy id (the topic the probe touches, ``safe`` for plain questions) and
``expect`` an optional regular expression a correct answer to a ``should_answer`` probe matches.

Two files formats, both read by :func:`load_probe_set`:

- YAML: ``{name, version, description, probes: [{id, prompt, kind, category, expect?}, ...]}``;
- JSONL: one probe object per line; an optional first line ``{"probe_set": NAME, "version": N}``
  names the set (else the file's stem, version 1).

Built-in sets live in ``monitor/probe/sets/`` and are named by file stem.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from monitor.taxonomy import load_taxonomy

ProbeKind = Literal["should_answer", "should_refuse"]
BUILTIN_DIR = Path(__file__).parent / "sets"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # ids and names become metric labels and alert keys


class ProbeSetError(ValueError):
    """A probe set that cannot be used; the message names the file and the field."""


class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_NAME)
    prompt: str = Field(min_length=1, max_length=4000)
    kind: ProbeKind
    category: str
    expect: str | None = Field(None, max_length=500)

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        known = load_taxonomy().ids
        if value not in known:
            raise ValueError(f"unknown category {value!r}; known: {', '.join(known)}")
        return value

    @field_validator("expect")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    def answer_matches(self, answer: str) -> bool | None:
        """Whether ``answer`` matches ``expect``; None when the probe has no expectation."""
        return None if self.expect is None else re.search(self.expect, answer) is not None


class ProbeSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    version: int = Field(ge=1)
    description: str = ""
    probes: tuple[Probe, ...] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _unique_ids(self) -> "ProbeSet":
        seen: set[str] = set()
        for i, probe in enumerate(self.probes):
            if probe.id in seen:
                raise ValueError(f"probes[{i}].id: duplicate id {probe.id!r}")
            seen.add(probe.id)
        return self

    @property
    def label(self) -> str:
        """``name@vN``: what events, metrics and alerts call this set (a new version is a new reference)."""
        return f"{self.name}@v{self.version}"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_probe_set(spec: str | Path) -> ProbeSet:
    """A built-in set by name, or a YAML/JSONL file by path; :class:`ProbeSetError` names what is wrong."""
    path = BUILTIN_DIR / f"{spec}.yaml" if str(spec) in builtin_names() else Path(spec)
    if not path.is_file():
        raise ProbeSetError(f"probe set {str(spec)!r}: neither a built-in set ({', '.join(builtin_names())}) nor a file")
    try:
        data = _read_jsonl(path) if path.suffix == ".jsonl" else yaml.safe_load(path.read_text(encoding="utf-8"))
        return ProbeSet.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"]).replace(".[", "[")
        raise ProbeSetError(f"probe set {path}: {where or 'top level'}: {first['msg']}") from None
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProbeSetError(f"probe set {path}: not valid {'JSONL' if path.suffix == '.jsonl' else 'YAML'}: {exc}") from None


def _read_jsonl(path: Path) -> dict:
    # Lines end at "\n" only: a JSON string may hold U+2028, U+2029 or U+0085, where str.splitlines would cut it.
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    header = rows[0] if rows and isinstance(rows[0], dict) and "probe_set" in rows[0] else None
    probes = rows[1:] if header else rows
    return {"name": header["probe_set"] if header else path.stem, "version": header.get("version", 1) if header else 1, "probes": probes}


def load_probe_sets(specs: list[str]) -> list[ProbeSet]:
    """Every named set; two sets with one name would share a reference, so that is an error."""
    sets = [load_probe_set(spec) for spec in specs]
    names = [s.name for s in sets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ProbeSetError(f"probe sets: name(s) {', '.join(dupes)} given twice")
    return sets
