"""Fixed activation ranges for an int8 graph, so that a text's vector never depends on its pass.

Why: ``quantize_dynamic`` quantizes each activation with one scale per tensor, computed at run time
over the whole pass (``DynamicQuantizeLinear``). That scale depends on which other texts share the
pass, so one text embedded in two different batches got two different vectors, and a verdict near a
threshold could flip with the batching. Live traffic, whose batches form by arrival time, and a
replay of it then did not give the same verdicts or alerts. Here each ``DynamicQuantizeLinear``
becomes a ``QuantizeLinear`` with a constant scale and zero point: the range that activation takes
in the float graph over the calibration texts shipped beside this module (``calibration_texts.txt``),
each run alone, without padding. Padding positions may fall outside the range; they saturate, and
attention and pooling ignore them. A real text's activation outside the range saturates too.

The ranges come from texts in the package, never from a dataset: the export must run on a fresh
machine. They are measured in float (int8 kernels differ between CPUs more than float ones do) on
one thread, and rounded outwards to a coarse grid, so that the last bits of a CPU's float sums do
not change the exported bytes. How close the result stays to fp32 is measured in README ("Fast
inference").
"""

from __future__ import annotations

import functools
import hashlib
import math
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import numpy as np

VERSION = "static-ranges-v1"  # bump when the method changes (it is part of an int8 export's recipe)
CALIBRATION_FILE = "calibration_texts.txt"
GRID_BITS = 5  # ranges are rounded outwards to 1/32 of their magnitude's power of two
LONG_GROUP = 12  # texts joined into one long calibration text: ranges at later positions count too


def calibration_texts() -> list[str]:
    """The calibration texts, one per line (``#`` lines are comments; ``\\n`` in a line is a newline)."""
    lines = resources.files(__package__).joinpath(CALIBRATION_FILE).read_text(encoding="utf-8").splitlines()
    return [line.replace("\\n", "\n") for line in lines if line.strip() and not line.startswith("#")]


@functools.cache
def calibration_digest() -> str:
    """sha256 of the calibration file: part of an int8 export's cache key and manifest."""
    return hashlib.sha256(resources.files(__package__).joinpath(CALIBRATION_FILE).read_bytes()).hexdigest()


def calibration_feeds(tokenizer: Any, max_length: int) -> Iterator[dict[str, np.ndarray]]:
    """One unpadded input per calibration case: each text alone, consecutive texts as a pair (the
    judge's encoder cross-encodes ``prompt [SEP] reply``), and runs of texts joined into long ones."""
    texts = calibration_texts()
    pairs = list(zip(texts[0::2], texts[1::2]))
    longs = [" ".join(texts[i : i + LONG_GROUP]) for i in range(0, len(texts), LONG_GROUP)]
    cases: list[tuple[str, str | None]] = [(t, None) for t in texts + longs] + list(pairs)
    for text, pair in cases:
        encoded = tokenizer(text, pair, truncation=True, max_length=max_length, return_tensors="np")
        yield {name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}


def fix_activation_ranges(path: Path, float_path: Path, tokenizer: Any, max_length: int) -> None:
    """Rewrite the int8 graph at ``path`` in place: every dynamic activation quantization becomes a
    static one, with the range its input takes in the float graph at ``float_path`` (the graph that
    was quantized, so the tensors have the same names) over :func:`calibration_feeds`."""
    import onnx

    model = onnx.load(str(path))
    dynamic = [node for node in model.graph.node if node.op_type == "DynamicQuantizeLinear"]
    observed = _observed_ranges(onnx.load(str(float_path)), [node.input[0] for node in dynamic], calibration_feeds(tokenizer, max_length))
    static = {id(node): _static_node(model, node, *rounded_out(*observed[node.input[0]])) for node in dynamic}
    nodes = [static.get(id(node), node) for node in model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))


def _observed_ranges(model: Any, names: list[str], feeds: Iterator[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """Each named tensor's (min, max) over all feeds, widened to include 0 as DynamicQuantizeLinear's is."""
    import onnx
    import onnxruntime as ort

    produced = {out for node in model.graph.node for out in node.output}
    missing = sorted(set(names) - produced)
    if missing:
        raise ValueError(f"activation ranges: the float graph has no tensor {missing[0]!r} (and {len(missing) - 1} more) to measure")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one thread: the same sums in the same order on one machine
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    low = dict.fromkeys(names, 0.0)
    high = dict.fromkeys(names, 0.0)
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            low[name] = min(low[name], float(value.min()))
            high[name] = max(high[name], float(value.max()))
    return {name: (low[name], high[name]) for name in names}


def rounded_out(low: float, high: float) -> tuple[float, float]:
    """``[low, high]`` widened to a grid of 1/32 of the larger magnitude's power of two.

    >>> rounded_out(-0.30001, 5.2), rounded_out(-0.29999, 5.2), rounded_out(0.0, 0.0)
    ((-0.375, 5.25), (-0.375, 5.25), (0.0, 0.0))
    """
    magnitude = max(abs(low), abs(high))
    if magnitude == 0:
        return 0.0, 0.0
    step = 2.0 ** (math.floor(math.log2(magnitude)) - GRID_BITS)
    return math.floor(low / step) * step, math.ceil(high / step) * step


def _static_node(model: Any, node: Any, low: float, high: float) -> Any:
    """A QuantizeLinear for ``node``'s input with the uint8 scale and zero point of [low, high]; the
    scale and zero point become constants under the names of ``node``'s other two outputs, so the
    nodes that read them are unchanged.

    >>> import onnx
    >>> m = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    >>> n = onnx.helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])
    >>> _static_node(m, n, -1.0, 3.0).op_type, [(i.name, onnx.numpy_helper.to_array(i).item()) for i in m.graph.initializer]
    ('QuantizeLinear', [('s', 0.01568627543747425), ('z', 64)])
    """
    from onnx import helper, numpy_helper

    scale = (high - low) / 255.0 or 1.0
    zero_point = int(np.clip(round(-low / scale), 0, 255))
    _, scale_name, zero_name = node.output
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array(scale, np.float32), scale_name),
        numpy_helper.from_array(np.array(zero_point, np.uint8), zero_name),
    ])
    return helper.make_node("QuantizeLinear", [node.input[0], scale_name, zero_name], [node.output[0]], name=f"{node.name}_static")
