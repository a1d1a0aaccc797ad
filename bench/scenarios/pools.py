"""Real prompt pools from the shared data, embedded once with the bundled MiniLM and cached by content.

Pools: benign real-user chat (ToxicChat, ConvAbuse, OpenAI moderation, HateCheck and XSTest prompts
labelled safe), benign instructions (self-instruct/Alpaca seeds, T0 templates, Alpaca), one pool per
harm category of the taxonomy (prompts with exactly one mapped category), and *withheld* groups of
raw source labels that no other pool holds (emerging-category scenarios inject them).

Caps are per pool and taken as a prefix of a seeded permutation, so a smaller (``--quick``) run
embeds a subset of what a full run embeds and the cache serves both. The cache is one file per
(model, backend and its export revision, max_seq_length) under ``cache_dir``, keyed by the SHA-1 of each text: changing the data
or the caps only embeds the texts not seen before.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from monitor.embed.onnx_export import export_revision
from monitor.judge.dataset import LabelMapper, read_records
from monitor.judge.text_embeddings import CachedEncoder, cache_file_for, vectors_name

CHAT = "benign_chat"
INSTRUCTIONS = "benign_instructions"
CHAT_FILES = ("toxicchat-train", "convabuse", "openai-moderation", "hatecheck", "xstest-prompts")
INSTRUCTION_FILES = ("benign-instructions", "alpaca-harmless-harmful")
# Withheld groups: (file, first raw label). Their prompts sit in their own pool, never in a category's.
WITHHELD = {
    "ailuminate-ipv": ("ailuminate-en", "ipv"),  # intellectual property (the taxonomy files it under unethical behaviour)
    "ailuminate-dfm": ("ailuminate-en", "dfm"),  # defamation (under misinformation)
}
MODEL = "bundled:all-MiniLM-L6-v2"
MAX_SEQ_LENGTH = 256


def default_cache_dir() -> Path:
    """``$BENCH_CACHE``, else ``$XDG_CACHE_HOME/llm-safety-drift-monitor/bench`` (``~/.cache`` by default)."""
    if os.environ.get("BENCH_CACHE"):
        return Path(os.environ["BENCH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llm-safety-drift-monitor" / "bench"


@dataclass(frozen=True)
class Caps:
    """Most prompts kept per pool (None: all)."""

    chat_per_file: int | None
    instructions_per_file: int | None
    per_category: int | None


FULL = Caps(chat_per_file=1500, instructions_per_file=1500, per_category=400)
QUICK = Caps(chat_per_file=400, instructions_per_file=150, per_category=120)


@dataclass(frozen=True)
class Pools:
    """Texts and unit embeddings per pool name."""

    texts: Mapping[str, list[str]]
    vectors: Mapping[str, np.ndarray]

    def categories(self) -> list[str]:
        """Harm-category pools (not benign, not withheld)."""
        return [n for n in self.vectors if n not in (CHAT, INSTRUCTIONS) and n not in WITHHELD]


def _prefix_sample(items: list[str], cap: int | None, seed: str) -> list[str]:
    if cap is None or len(items) <= cap:
        return items
    rng = np.random.default_rng(list(seed.encode()))
    return [items[i] for i in sorted(rng.permutation(len(items))[:cap])]


def load_pools(data_dir: Path, cache_dir: Path, caps: Caps, backend: str = "torch") -> Pools:
    """Read, cap and embed every pool (texts missing from the cache are embedded now) with the
    embedding ``backend`` (torch, onnx-int8, onnx-fp32; each has its own cache file)."""
    mapper = LabelMapper()
    texts: dict[str, list[str]] = {CHAT: [], INSTRUCTIONS: []}
    by_category: dict[str, list[str]] = {}
    withheld: dict[str, list[str]] = {name: [] for name in WITHHELD}
    seen: set[str] = set()
    for path in sorted(data_dir.glob("*.jsonl")):
        origin = path.stem
        records = read_records(path)
        if origin in CHAT_FILES or origin in INSTRUCTION_FILES:
            benign = [r.prompt for r in records if r.unsafe is False and r.prompt.strip()]
            cap = caps.chat_per_file if origin in CHAT_FILES else caps.instructions_per_file
            pool = texts[CHAT if origin in CHAT_FILES else INSTRUCTIONS]
            for text in _prefix_sample(benign, cap, origin):
                if text not in seen:
                    seen.add(text)
                    pool.append(text)
        for r in records:
            if r.prompt in seen or not r.prompt.strip():
                continue
            group = next((g for g, (f, lab) in WITHHELD.items() if f == origin and r.labels[:1] == (lab,)), None)
            cats = mapper.harm_categories(r)
            if group is not None:
                withheld[group].append(r.prompt)
            elif cats and len(cats) == 1:
                by_category.setdefault(next(iter(cats)), []).append(r.prompt)
            else:
                continue
            seen.add(r.prompt)
    for cat in sorted(by_category):
        texts[cat] = _prefix_sample(by_category[cat], caps.per_category, cat)
    texts.update(withheld)

    embedder = None

    def encode(batch: list[str]) -> np.ndarray:
        nonlocal embedder
        if embedder is None:
            from monitor.embed.embedder import Embedder

            embedder = Embedder(MODEL, MAX_SEQ_LENGTH, device="auto", backend=backend)
            print(f"embedding texts missing from the cache in {cache_dir} ...", flush=True)
        t0 = time.perf_counter()
        out = embedder.encode(batch)
        print(f"  embedded {len(batch)} texts in {time.perf_counter() - t0:.0f} s", flush=True)
        return out

    encoder = CachedEncoder(encode, cache_file_for(cache_dir, vectors_name(MODEL, backend, export_revision(backend)), MAX_SEQ_LENGTH))
    return Pools(texts, {name: encoder(items) for name, items in texts.items()})
