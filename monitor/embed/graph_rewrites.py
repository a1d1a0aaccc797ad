"""Rewrites of an exported encoder graph into ops that ONNX Runtime's CPU kernels run faster.

Why: two steps of the export leave the graph slower than it need be on a CPU, without changing
what it computes.

* The BERT fusion's ``SkipLayerNormalization`` (residual add, bias add and layer norm in one op)
  runs slower on ONNX Runtime's CPU provider than the same arithmetic as ``Add`` nodes and the
  standard ``LayerNormalization``, whose kernel is vectorised; on long texts it was one of the int8
  graph's largest costs. :func:`split_skip_layer_norms` undoes that fusion.
* With dynamic quantization, ONNX Runtime fuses each ``MatMulInteger → Cast → Mul(scale)`` chain
  into one ``MatMulIntegerToFloat`` (inside ``DynamicQuantizeMatMul``) when the session loads. Once
  activation ranges are fixed (``activation_ranges``) the scale is a constant, constant folding
  runs first and the chain no longer matches its pattern, so every int8 product paid for an int32
  tensor, a cast and a multiply. :func:`fuse_integer_matmuls` writes the fused op directly; its
  output is bit-identical (the kernel scales the int32 sums by the same float product).

What the rewrites gain is measured in README ("Fast inference", *CPU graph rewrites*); a test
checks each against the graph it replaces.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VERSION = "cpu-rewrites-v1"  # bump when a rewrite changes (it is part of the export recipe)
# ONNX Runtime's own session-time fusions that would undo a rewrite here: a session loading a
# rewritten graph disables them (``OnnxBackend``; a test checks the names still mean something).
UNDONE_FUSIONS = ("SkipLayerNormFusion",)


def split_skip_layer_norms(model: Any) -> int:
    """Replace each ``SkipLayerNormalization`` in ``model`` (an ``onnx.ModelProto``, edited in place)
    by ``Add`` (input + skip), ``Add`` (+ bias, when it has one) and ``LayerNormalization``; its
    mean and inverse standard deviation outputs, when read, become LayerNormalization's. Needs
    default-domain opset 17 (LayerNormalization's first). Returns how many were replaced.

    >>> import onnx
    >>> from onnx import helper
    >>> node = helper.make_node("SkipLayerNormalization", ["x", "s", "g", "b", "bias"], ["y"], domain="com.microsoft", epsilon=1e-12)
    >>> m = helper.make_model(helper.make_graph([node], "g", [], []), opset_imports=[helper.make_opsetid("", 17)])
    >>> split_skip_layer_norms(m), [n.op_type for n in m.graph.node]
    (1, ['Add', 'Add', 'LayerNormalization'])
    """
    from onnx import helper

    opset = max((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), default=0)
    if opset < 17:
        raise ValueError(f"splitting skip layer norms needs opset 17 (LayerNormalization); the graph has {opset}")
    consumed = ({name for node in model.graph.node for name in node.input} | {out.name for out in model.graph.output}) - {""}
    nodes, replaced = [], 0
    for node in model.graph.node:
        if node.op_type != "SkipLayerNormalization":
            nodes.append(node)
            continue
        output, mean, inv_std, total = (list(node.output) + [""] * 4)[:4]
        data, skip, gamma, beta, bias = (list(node.input) + [""] * 5)[:5]
        # Names derive from the output's, unique in a valid graph; the sum keeps the fused op's
        # fourth output's name when a later node reads it.
        if total not in consumed:
            total = f"{output}_skip_bias_sum"
        first = f"{output}_skip_sum" if bias else total
        nodes.append(helper.make_node("Add", [data, skip], [first], name=f"{output}_skip"))
        if bias:
            nodes.append(helper.make_node("Add", [first, bias], [total], name=f"{output}_bias"))
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        statistics = [name if name in consumed else "" for name in (mean, inv_std)]
        norm_outputs = [output, *statistics] if any(statistics) else [output]
        inputs = [total, gamma] + ([beta] if beta else [])
        nodes.append(helper.make_node("LayerNormalization", inputs, norm_outputs, name=f"{output}_norm", axis=-1, epsilon=epsilon))
        replaced += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return replaced


def fuse_integer_matmuls(model: Any) -> int:
    """Replace each ``MatMulInteger → Cast(float) → Mul(a_scale × b_scale)`` chain, whose scale is the
    product of two float constants, a scalar (the activation's) and a scalar or one per column (the
    weights'), by one ``com.microsoft.MatMulIntegerToFloat``. This is the chain ``quantize_dynamic``
    writes, once its activation scale is a constant. Edits ``model`` in place; returns how many were
    fused. A chain of any other shape is left as it is.

    >>> import onnx
    >>> from onnx import helper, numpy_helper
    >>> import numpy as np
    >>> nodes = [helper.make_node("MatMulInteger", ["a", "w", "az", "wz"], ["i"]),
    ...          helper.make_node("Cast", ["i"], ["f"], to=onnx.TensorProto.FLOAT),
    ...          helper.make_node("Mul", ["ws", "as"], ["s"]),
    ...          helper.make_node("Mul", ["f", "s"], ["y"])]
    >>> constants = [numpy_helper.from_array(np.ones((3, 2), np.int8), "w"),
    ...              numpy_helper.from_array(np.array(0.5, np.float32), "as"), numpy_helper.from_array(np.ones(2, np.float32), "ws")]
    >>> m = helper.make_model(helper.make_graph(nodes, "g", [], [], constants))
    >>> fuse_integer_matmuls(m), [(n.op_type, list(n.input)) for n in m.graph.node]
    (1, [('MatMulIntegerToFloat', ['a', 'w', 'as', 'ws', 'az', 'wz'])])
    """
    from onnx import TensorProto, helper, numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    readers: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            readers[name].append(node)
    graph_outputs = {out.name for out in model.graph.output}

    def only_reader(name: str) -> Any | None:
        nodes = readers.get(name, [])
        return nodes[0] if len(nodes) == 1 and name not in graph_outputs else None

    fused: dict[int, Any] = {}
    dropped: set[int] = set()
    for node in model.graph.node:
        if node.op_type != "MatMulInteger" or len(node.input) != 4:
            continue
        cast = only_reader(node.output[0])
        if cast is None or cast.op_type != "Cast" or next((a.i for a in cast.attribute if a.name == "to"), None) != TensorProto.FLOAT:
            continue
        mul = only_reader(cast.output[0])
        if mul is None or mul.op_type != "Mul" or list(mul.input).count(cast.output[0]) != 1:
            continue
        (scale,) = [name for name in mul.input if name != cast.output[0]]
        scale_node = producer.get(scale)
        if scale_node is None or scale_node.op_type != "Mul" or only_reader(scale) is not mul:
            continue
        scales = _activation_and_weight_scales(scale_node.input, constants, columns=_columns(node.input[1], constants))
        if scales is None:
            continue
        a, b, a_zero, b_zero = node.input
        fused[id(node)] = helper.make_node(
            "MatMulIntegerToFloat", [a, b, *scales, a_zero, b_zero], [mul.output[0]], name=f"{mul.output[0]}_to_float", domain="com.microsoft"
        )
        dropped |= {id(cast), id(mul), id(scale_node)}
    nodes = [fused.get(id(node), node) for node in model.graph.node if id(node) not in dropped]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if fused and not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(fused)


def _columns(weights: str, constants: dict[str, np.ndarray]) -> int | None:
    """How many columns the constant weight matrix ``weights`` has (None when it is not a constant matrix)."""
    value = constants.get(weights)
    return int(value.shape[-1]) if value is not None and value.ndim == 2 else None


def _activation_and_weight_scales(names: Any, constants: dict[str, np.ndarray], columns: int | None) -> list[str] | None:
    """``[a_scale, b_scale]`` of a scale product's two inputs: float constants, the activation's a
    scalar and the weights' a scalar or one per column; None when the product is anything else."""
    if columns is None or len(names) != 2 or not all(name in constants for name in names):
        return None
    values = [constants[name] for name in names]
    if any(value.dtype != np.float32 for value in values):
        return None
    scalars = [name for name, value in zip(names, values) if value.size == 1 and value.ndim <= 1]
    if not scalars:
        return None
    activation = scalars[0]
    (weight,) = [name for name in names if name != activation] or [activation]
    value = constants[weight]
    if value.ndim > 1 or value.size not in (1, columns):
        return None
    return [activation, weight]


def rewrite_for_cpu(path: Any, quantized: bool) -> None:
    """Apply the rewrites to the exported graph file at ``path`` in place: the layer-norm split
    always, the integer products' fusion on an int8 graph (where a product left unfused is logged:
    it runs, but slower)."""
    import onnx

    model = onnx.load(str(path))
    split_skip_layer_norms(model)
    if quantized:
        fuse_integer_matmuls(model)
        left = sum(node.op_type == "MatMulInteger" for node in model.graph.node)
        if left:
            log.warning("ONNX export: %d integer matrix products were not fused (the graph runs, but slower)", left)
    onnx.save(model, str(path))
