"""Judge artifact folders: ``manifest.json``, ``weights.npz`` and ``model_card.md``, read and written one way.

Both artifact kinds (the heads and the fine-tuned encoder) are named by a content hash of their weights and
category order, so a version names exactly what judges, and a folder whose weights do not match its
manifest is refused instead of judging with the wrong numbers.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Collection, Mapping, Sequence

import numpy as np

from monitor.taxonomy import Taxonomy


def deterministic_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive with fixed entry timestamps, so equal arrays give equal bytes (dtypes kept)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in arrays.items():
            arr = io.BytesIO()
            np.lib.format.write_array(arr, np.ascontiguousarray(value))
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, arr.getvalue())
    return buf.getvalue()


def content_version(kind: str, blob: bytes, categories: Sequence[str]) -> str:
    """``<kind>-<12 hex>``: a hash of the weights' bytes and the category order."""
    h = hashlib.sha256(blob)
    h.update("\x00".join(categories).encode())
    return f"{kind}-{h.hexdigest()[:12]}"


def read_artifact(path: Path | str, formats: Collection[object], kind: str) -> tuple[dict, bytes]:
    """The manifest and weights bytes of an artifact folder of one of ``formats``, checked against its version."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        blob = (path / "weights.npz").read_bytes()
    except FileNotFoundError as exc:
        raise ValueError(f"judge artifact {path}: missing {Path(exc.filename).name}") from None
    if manifest.get("format") not in formats:
        expected = " or ".join(repr(f) for f in formats)
        raise ValueError(f"judge artifact {path}: format {manifest.get('format')!r}, this version reads {expected}")
    if manifest.get("version") != content_version(kind, blob, manifest["categories"]):
        raise ValueError(f"judge artifact {path}: weights.npz does not match the manifest's version")
    return manifest, blob


def check_categories(path: Path | str, categories: Sequence[str], taxonomy: Taxonomy | None) -> None:
    """With a taxonomy, the artifact must score exactly its harm categories, in its order."""
    if taxonomy is not None and list(categories) != taxonomy.harm_ids:
        raise ValueError(f"judge artifact {path} scores categories {list(categories)}, "
                         f"but taxonomy {taxonomy.name!r} has {taxonomy.harm_ids}")


def write_artifact(path: Path | str, blob: bytes, manifest: Mapping, card: str) -> None:
    """Write the folder (the weights' bytes depend only on the arrays: reproducible)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "weights.npz").write_bytes(blob)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (path / "model_card.md").write_text(card)
