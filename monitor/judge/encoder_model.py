"""The judge v2 network: the stock MiniLM encoder with its layers fine-tuned for safety, and linear heads.

Why this shape:

- Only the top ``len(layers) - frozen_layers`` transformer layers are trained (every one, ``frozen_layers=0``,
  in the shipped encoder: the token embeddings stay the stock model's). The frozen lower layers' outputs
  are cached once, so training runs just the layers above them, and an artifact ships only the layers
  that changed; fewer frozen layers buy accuracy with training time.
- One encoder serves two kinds of input: a prompt alone (prompt harm and its categories) and a
  ``prompt [SEP] reply`` pair (response harm *given the prompt*, and refusal). A reply is harmful only
  relative to what was asked, so the pair is cross-encoded rather than judged from two separate vectors.
- Outputs are masked mean pools of the last layer (as sentence-transformers pools MiniLM), so the same
  pooled vectors come out of every inference backend (torch or ONNX) and the heads run in numpy.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
from torch import nn

PROMPT_OUTPUTS = "unsafe"  # first prompt-head output; the harm categories follow in taxonomy order
PAIR_OUTPUTS = ("response_unsafe", "refusal")


def load_base(model_path: str):
    """The stock encoder (eager attention: it takes the additive masks used when training the top) and tokenizer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(model_path, attn_implementation="eager")
    model.eval()
    return model, AutoTokenizer.from_pretrained(model_path)


def bottom_of(base: nn.Module, frozen_layers: int) -> nn.Module:
    """A copy of ``base`` that stops after its first ``frozen_layers`` layers (its output feeds the top)."""
    bottom = copy.deepcopy(base)
    bottom.encoder.layer = bottom.encoder.layer[:frozen_layers]
    bottom.config.num_hidden_layers = frozen_layers
    return bottom.eval()


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class TrainableTop(nn.Module):
    """The fine-tuned layers over cached lower-layer states, the mean pool and the two linear heads."""

    def __init__(self, base: nn.Module, frozen_layers: int, n_categories: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(base.encoder.layer[frozen_layers:]))
        hidden = base.config.hidden_size
        self.prompt_head = nn.Linear(hidden, 1 + n_categories)
        self.pair_head = nn.Linear(hidden, len(PAIR_OUTPUTS))

    def pooled(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        additive = (1.0 - mask[:, None, None, :].to(states.dtype)) * torch.finfo(states.dtype).min
        h = states
        for layer in self.layers:
            h = layer(h, additive)
        return masked_mean(h, mask)


def assemble(base: nn.Module, frozen_layers: int, top_layers: dict[str, np.ndarray]) -> nn.Module:
    """The full encoder for inference: the stock lower layers and the fine-tuned top ones."""
    model = copy.deepcopy(base)
    state = {f"encoder.layer.{frozen_layers + int(k.split('.', 1)[0])}.{k.split('.', 1)[1]}": torch.from_numpy(
        np.asarray(v, dtype=np.float32)) for k, v in top_layers.items()}
    missing = set(state) - set(model.state_dict())
    if missing:
        raise ValueError(f"judge encoder weights name parameters the base model lacks: {sorted(missing)[:3]}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def layer_arrays(top: TrainableTop) -> dict[str, np.ndarray]:
    """The top layers' parameters as float16 arrays keyed ``<layer>.<param>`` (half the bytes; the
    calibration runs on the rounded weights, so what ships is what was measured)."""
    return {k: v.detach().cpu().numpy().astype(np.float16) for k, v in top.layers.state_dict().items()}
