"""Mappings from other label sets (dataset labels, Llama Guard S-codes, moderation APIs) into the taxonomy.

A mapping file is YAML::

    label_set: openai-moderation        # the name other code looks it up by
    mapping:                             # source label -> taxonomy category id
      H: hate_speech_offensive_language
      S3: child_abuse

Every target must be a category id of the taxonomy in use; a label missing from the mapping maps
to nothing (the caller decides what an unmapped label means).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from monitor.taxonomy import Taxonomy, load_taxonomy

MAPPINGS_DIR = Path(__file__).with_name("mappings")


def load_mapping_file(path: Path, taxonomy: Taxonomy | None = None) -> tuple[str, dict[str, str]]:
    """Load one mapping file; ``ValueError`` names the file and the bad label or target."""
    taxonomy = taxonomy or load_taxonomy()
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict) or "label_set" not in raw or not isinstance(raw.get("mapping"), dict):
        raise ValueError(f"mapping file {path}: needs 'label_set' (string) and 'mapping' (label: category id)")
    valid = set(taxonomy.ids)
    mapping: dict[str, str] = {}
    for label, target in raw["mapping"].items():
        if target not in valid:
            raise ValueError(f"mapping file {path}: label {label!r} maps to unknown category {target!r}")
        mapping[str(label)] = target
    return str(raw["label_set"]), mapping


@lru_cache(maxsize=1)
def _bundled() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for file in sorted(MAPPINGS_DIR.glob("*.yaml")):
        name, mapping = load_mapping_file(file)
        out[name] = mapping
    return out


def bundled_mappings() -> dict[str, dict[str, str]]:
    """All mappings shipped with the package, keyed by label set."""
    return dict(_bundled())


def get_mapping(label_set: str, extra_dirs: tuple[Path, ...] = ()) -> dict[str, str]:
    """The mapping for ``label_set``: user directories first, then the bundled ones."""
    for folder in extra_dirs:
        for file in sorted(Path(folder).glob("*.yaml")):
            name, mapping = load_mapping_file(file)
            if name == label_set:
                return mapping
    try:
        return _bundled()[label_set]
    except KeyError:
        known = ", ".join(sorted(_bundled())) or "none"
        raise ValueError(f"no mapping for label set {label_set!r} (known: {known})") from None
