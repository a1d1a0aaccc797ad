"""Fine-tune the judge v2 encoder (:mod:`monitor.judge.encoder_model`) on labelled JSONL records.

Recipe (seeded end to end, so the same files, seed and thread count give the same weights):

1. Split by prompt hash exactly as the heads judge does (:class:`~monitor.judge.training.TrainConfig`:
   test rows and held-out files are never read here), cap each (file, label combination) stratum.
2. Build examples: each distinct labelled prompt once (prompt harm, categories where known), and each
   labelled (prompt, reply) pair once (response harm given the prompt, refusal where known).
3. Run the frozen lower layers once over every example and keep their outputs (float16): training then
   costs only the top layers' forward and backward passes, which is what makes it a CPU job.
4. Train the top layers and both heads with masked binary cross-entropy (an unknown label contributes
   nothing), AdamW with warm-up and linear decay, length-bucketed batches. ``precision="bf16"`` runs the
   layers' matrix products in bfloat16 (autocast; weights and optimizer state stay float32): on a CPU
   with AMX or a GPU that is what lets more layers train within the hour; elsewhere keep ``fp32``.
   ``device`` moves only this step (the cached states stay in host memory, one batch at a time moves).
   Bit-for-bit reproducible on the CPU (same machine kind and threads); GPU kernels are not.
5. Round the top layers to float16 (what ships), then Platt-calibrate every output and pick its F1-best
   threshold on the validation split, scored through those rounded weights.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from monitor.embed.embedder import DEFAULT_EMBEDDING_MODEL
from monitor.judge.calibration import best_f1_threshold, expected_calibration_error, fit_platt, platt
from monitor.judge.dataset import LabelMapper, Record, record_split, stratified_cap
from monitor.judge.encoder_judge import ENCODER_FORMAT, encoder_version
from monitor.judge.encoder_model import PAIR_OUTPUTS, TrainableTop, bottom_of, layer_arrays, load_base
from monitor.judge.artifact import deterministic_npz
from monitor.judge.training import OutputReport, _auroc, summarise_data
from monitor.taxonomy import Taxonomy

@dataclass(frozen=True)
class EncoderTrainConfig:
    seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    holdout_origins: tuple[str, ...] = ("xstest-completions-mistralinstruct",)
    cap_per_stratum: int = 1500
    safe_prompt_cap: int = 3000
    base_model: str = DEFAULT_EMBEDDING_MODEL
    frozen_layers: int = 4
    max_prompt_tokens: int = 128
    max_pair_tokens: int = 256
    epochs: float = 2.0
    batch_size: int = 32
    lr: float = 5e-5
    head_lr: float = 1e-3
    warmup_fraction: float = 0.05
    category_weight: float = 1.0
    precision: str = "fp32"
    device: str = "cpu"

    def split(self, record: Record) -> str:
        return record_split(record, self.seed, self.test_fraction, self.val_fraction, self.holdout_origins)


@dataclass
class Example:
    """One training input: a prompt alone (``pair`` None) or a (prompt, reply) pair; NaN = label unknown."""

    origin: str
    text: str
    pair: str | None
    targets: np.ndarray


def build_examples(records: Sequence[Record], mapper: LabelMapper) -> tuple[list[Example], list[Example]]:
    """Prompt examples (unsafe, then one target per harm category) and pair examples (response harm, refusal)."""
    cats = mapper.taxonomy.harm_ids
    prompts: dict[str, Example] = {}
    pairs: dict[tuple[str, str], Example] = {}
    for r in records:
        if r.unsafe is not None and r.prompt.strip() and r.prompt not in prompts:
            t = np.full(1 + len(cats), np.nan, np.float32)
            t[0] = float(r.unsafe)
            known = mapper.harm_categories(r)
            if known is not None:
                t[1:] = [c in known for c in cats]
            prompts[r.prompt] = Example(r.origin, r.prompt, None, t)
        harm, refusal = r.response_harm, r.refusal
        if r.response and r.response.strip() and (harm is not None or refusal is not None):
            key = (r.prompt, r.response)
            if key not in pairs:
                t = np.array([np.nan if harm is None else float(harm), np.nan if refusal is None else float(refusal)],
                             np.float32)
                pairs[key] = Example(r.origin, r.prompt, r.response, t)
    return list(prompts.values()), list(pairs.values())


class CachedStates:
    """The frozen lower layers' outputs for a list of examples, float16, one ``(tokens, hidden)`` array each."""

    def __init__(self, states: list[np.ndarray]) -> None:
        self.states = states

    @classmethod
    def compute(cls, bottom: nn.Module, tokenizer, examples: Sequence[Example], max_tokens: int,
                batch_size: int = 64, progress: Callable[[str], None] = lambda _: None) -> "CachedStates":
        enc = [tokenize(tokenizer, e, max_tokens) for e in examples]
        order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]))
        out: list[np.ndarray | None] = [None] * len(enc)
        started = time.perf_counter()
        with torch.inference_mode():
            for b, start in enumerate(range(0, len(order), batch_size)):
                idx = order[start:start + batch_size]
                ids, types, mask = pad([enc[i] for i in idx])
                hidden = bottom(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
                for row, i in enumerate(idx):
                    out[i] = hidden[row, : int(mask[row].sum())].numpy().astype(np.float16)
                if b % 50 == 0:
                    progress(f"  lower layers: {start + len(idx)}/{len(order)} ({time.perf_counter() - started:.0f} s)")
        return cls([s for s in out if s is not None])

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(len(self.states[i]) for i in indices)
        hidden = self.states[indices[0]].shape[1]
        x = np.zeros((len(indices), length, hidden), np.float32)
        mask = np.zeros((len(indices), length), np.float32)
        for row, i in enumerate(indices):
            n = len(self.states[i])
            x[row, :n] = self.states[i]
            mask[row, :n] = 1.0
        return torch.from_numpy(x), torch.from_numpy(mask)


def tokenize(tokenizer, example: Example, max_tokens: int) -> tuple[list[int], list[int]]:
    """Token ids and segment ids; a pair truncates the longer side first (``longest_first``)."""
    enc = tokenizer(example.text, example.pair, truncation=True, max_length=max_tokens, return_token_type_ids=True)
    return enc["input_ids"], enc["token_type_ids"]


def pad(rows: Sequence[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    length = max(len(ids) for ids, _ in rows)
    ids = torch.zeros((len(rows), length), dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for r, (i, t) in enumerate(rows):
        ids[r, : len(i)] = torch.tensor(i)
        types[r, : len(t)] = torch.tensor(t)
        mask[r, : len(i)] = 1
    return ids, types, mask


def length_batches(states: CachedStates, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (little padding), in shuffled order: sort within shuffled chunks of 50 batches."""
    idx = list(range(len(states.states)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(idx), chunk):
        part = sorted(idx[start:start + chunk], key=lambda i: len(states.states[i]))
        batches += [part[s:s + batch_size] for s in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    known = ~torch.isnan(targets)
    if not known.any():
        return logits.sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(logits[known], targets[known])


@dataclass
class Split:
    prompts: list[Example]
    pairs: list[Example]
    prompt_states: CachedStates
    pair_states: CachedStates


PRECISIONS = ("fp32", "bf16")


def training_device(requested: str, precision: str = "fp32") -> str:
    """``auto`` takes the GPU when torch sees one (training never requires it), else the CPU. Refused
    before any work: a GPU where torch sees none, and bfloat16 on a GPU without it (it would fail at
    the first step, after the lower layers' outputs had been cached)."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device {requested!r} is not 'auto', 'cpu' or 'cuda'")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no GPU (use 'cpu' or 'auto')")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if requested == "auto" else requested
    if device == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU has no bfloat16: use precision 'fp32' on it, or device 'cpu'")
    return device


def train_top(top: TrainableTop, train: Split, config: EncoderTrainConfig,
              progress: Callable[[str], None] = lambda _: None) -> None:
    """Fit the top layers and heads on cached lower-layer states (seeded), on ``config.device``;
    the model comes back on the CPU."""
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision {config.precision!r} is not one of {', '.join(PRECISIONS)}")
    device = torch.device(config.device)
    top.to(device)
    try:
        _train_steps(top, train, config, device, progress)
    finally:
        top.to("cpu").eval()


def _train_steps(top: TrainableTop, train: Split, config: EncoderTrainConfig, device: torch.device,
                 progress: Callable[[str], None]) -> None:
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    prompt_t = torch.from_numpy(np.stack([e.targets for e in train.prompts])).to(device)
    pair_t = torch.from_numpy(np.stack([e.targets for e in train.pairs])).to(device)
    head_params = list(top.prompt_head.parameters()) + list(top.pair_head.parameters())
    opt = torch.optim.AdamW([{"params": top.layers.parameters(), "lr": config.lr},
                             {"params": head_params, "lr": config.head_lr}], weight_decay=0.01)
    per_epoch = math.ceil(len(train.prompts) / config.batch_size) + math.ceil(len(train.pairs) / config.batch_size)
    total = max(1, int(per_epoch * config.epochs))
    warmup = max(1, int(total * config.warmup_fraction))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / (total - warmup))))
    top.train()
    step, started = 0, time.perf_counter()
    while step < total:
        jobs = [("prompt", b) for b in length_batches(train.prompt_states, config.batch_size, rng)]
        jobs += [("pair", b) for b in length_batches(train.pair_states, config.batch_size, rng)]
        rng.shuffle(jobs)
        for kind, batch in jobs:
            if step >= total:
                break
            states = train.prompt_states if kind == "prompt" else train.pair_states
            x, mask = (v.to(device) for v in states.batch(batch))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                pooled = top.pooled(x, mask)
            if kind == "prompt":
                logits = top.prompt_head(pooled.float())
                t = prompt_t[batch]
                loss = masked_bce(logits[:, 0], t[:, 0]) + config.category_weight * masked_bce(logits[:, 1:], t[:, 1:])
            else:
                logits = top.pair_head(pooled.float())
                loss = masked_bce(logits, pair_t[batch])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(top.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                progress(f"  step {step}/{total} loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)")


def top_logits(top: TrainableTop, states: CachedStates, head: nn.Module, batch_size: int = 128) -> np.ndarray:
    order = sorted(range(len(states.states)), key=lambda i: len(states.states[i]))
    out = np.zeros((len(order), head.out_features), np.float64)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, mask = states.batch(idx)
            out[idx] = head(top.pooled(x, mask)).numpy()
    return out


def round_top(top: TrainableTop) -> dict[str, np.ndarray]:
    """Round the layers to float16 in place (so validation scores what ships); returns the rounded arrays."""
    arrays = layer_arrays(top)
    top.layers.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in arrays.items()})
    return arrays


def calibrate(names: Sequence[str], logits: np.ndarray, targets: np.ndarray,
              train_counts: dict[str, tuple[int, int]]) -> tuple[dict[str, dict], list[OutputReport]]:
    """Platt scale/shift and F1-best threshold per output on validation logits; reports for the card."""
    calib, reports = {}, []
    for k, name in enumerate(names):
        known = ~np.isnan(targets[:, k])
        y = targets[known, k].astype(bool)
        z = logits[known, k]
        if y.all() or not y.any():
            # Too few labelled rows (a rare category): keep the raw sigmoid and a 0.5 threshold, and say so.
            scale, shift, threshold = 1.0, 0.0, 0.5
            p = platt(z, scale, shift)
        else:
            scale, shift = fit_platt(z, y)
            p = platt(z, scale, shift)
            threshold = best_f1_threshold(y, p)
        calib[name] = {"scale": float(scale), "shift": float(shift), "threshold": float(threshold)}
        flag = p >= threshold
        tp = int((flag & y).sum())
        reports.append(OutputReport(
            name=name, train_n=train_counts[name][0], train_pos=train_counts[name][1], val_n=int(len(y)),
            val_pos=int(y.sum()), model="fine-tuned encoder, linear head", threshold=round(threshold, 6),
            auroc=_r(_auroc(y, p)), f1=_r(2 * tp / (flag.sum() + y.sum()) if flag.sum() + y.sum() else None),
            precision=_r(tp / flag.sum() if flag.sum() else None), recall=_r(tp / y.sum() if y.sum() else None),
            ece=_r(expected_calibration_error(y, p) if len(y) else None)))
    return calib, reports


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _counts(names: Sequence[str], targets: np.ndarray) -> dict[str, tuple[int, int]]:
    return {n: (int((~np.isnan(targets[:, k])).sum()), int(np.nansum(targets[:, k]))) for k, n in enumerate(names)}


@dataclass
class EncoderTrainingResult:
    arrays: dict[str, np.ndarray]
    manifest: dict
    reports: list[OutputReport] = field(default_factory=list)


def build_encoder_artifact(records: Sequence[Record], taxonomy: Taxonomy, config: EncoderTrainConfig,
                           model_path: str, date: dt.date | None = None,
                           progress: Callable[[str], None] = lambda _: None,
                           mapping_dirs: tuple[Path, ...] = ()) -> EncoderTrainingResult:
    """The whole ``monitor judge train --kind encoder`` recipe; returns weights, manifest and validation reports."""
    torch.manual_seed(config.seed)
    mapper = LabelMapper(taxonomy, mapping_dirs)
    usable = [r for r in records if config.split(r) != "test"]
    chosen = stratified_cap(usable, config.cap_per_stratum, config.seed, config.safe_prompt_cap)
    base, tokenizer = load_base(model_path)
    bottom = bottom_of(base, config.frozen_layers)
    splits = {}
    for name in ("train", "val"):
        prompts, pairs = build_examples([r for r in chosen if config.split(r) == name], mapper)
        progress(f"{name}: {len(prompts)} prompts, {len(pairs)} (prompt, reply) pairs")
        splits[name] = Split(prompts, pairs,
                             CachedStates.compute(bottom, tokenizer, prompts, config.max_prompt_tokens, progress=progress),
                             CachedStates.compute(bottom, tokenizer, pairs, config.max_pair_tokens, progress=progress))
    top = TrainableTop(base, config.frozen_layers, len(taxonomy.harm_ids))
    progress("training the top layers")
    train_top(top, splits["train"], config, progress)
    arrays = round_top(top)
    val = splits["val"]
    prompt_names = ["unsafe", *taxonomy.harm_ids]
    tr_prompt = np.stack([e.targets for e in splits["train"].prompts])
    tr_pair = np.stack([e.targets for e in splits["train"].pairs])
    calib_p, rep_p = calibrate(prompt_names, top_logits(top, val.prompt_states, top.prompt_head),
                               np.stack([e.targets for e in val.prompts]), _counts(prompt_names, tr_prompt))
    calib_r, rep_r = calibrate(PAIR_OUTPUTS, top_logits(top, val.pair_states, top.pair_head),
                               np.stack([e.targets for e in val.pairs]), _counts(PAIR_OUTPUTS, tr_pair))
    for name, head in (("prompt_head", top.prompt_head), ("pair_head", top.pair_head)):
        arrays[f"{name}.weight"] = head.weight.detach().numpy().astype(np.float32)
        arrays[f"{name}.bias"] = head.bias.detach().numpy().astype(np.float32)
    blob = deterministic_npz(dict(sorted(arrays.items())))
    manifest = {
        "format": ENCODER_FORMAT,
        "version": encoder_version(blob, taxonomy.harm_ids),
        "created": (date or dt.datetime.now(dt.timezone.utc).date()).isoformat(),
        "taxonomy": {"name": taxonomy.name, "version": taxonomy.version},
        "categories": taxonomy.harm_ids,
        "embedding": {"model": config.base_model, "base_weights_sha256": base_weights_digest(base)},
        "encoder": {"frozen_layers": config.frozen_layers, "max_prompt_tokens": config.max_prompt_tokens,
                    "max_pair_tokens": config.max_pair_tokens, "pooling": "mean"},
        "calibration": {**calib_p, **calib_r},
        "training": {**asdict(config), "holdout_origins": list(config.holdout_origins),
                     "torch": torch.__version__, "threads": torch.get_num_threads()},
        "data": summarise_data(chosen),
        "validation": [asdict(r) for r in rep_p + rep_r],
    }
    return EncoderTrainingResult(arrays, manifest, rep_p + rep_r)


def base_weights_digest(base: nn.Module) -> str:
    """A hash of the base model's parameters: the artifact only holds the top layers, so loading it on a
    different base (another model, another release of the package) must fail instead of judging nonsense."""
    h = hashlib.sha256()
    for name, value in sorted(base.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().numpy().astype(np.float32).tobytes())
    return h.hexdigest()[:16]
