"""Rewrites of an exported encoder graph into ops that ONNX Runtime's CPU kernels run faster.

Why: two steps of the export leave the graph slower than it need be on a CPU, without changing
what it computes.

* The BERT fusion's ``SkipLayerNormalization`` (residual add, bias add and layer norm in one op)
  runs about three times slower on ONNX Runtime's CPU provider than the same arithmetic as ``Add``
  nodes and the standard ``LayerNormalization``, whose kernel is vectorised; at 256 tokens it was
  the third largest cost of the int8 graph. :func:`split_skip_layer_norms` undoes that fusion.
* With dynamic quantization, ONNX Runtime fuses each ``MatMulInteger → Cast → Mul(scale)`` chain
  into one ``MatMulIntegerToFloat`` (inside ``DynamicQuantizeMatMul``) when the session loads. Once
  activation ranges are fixed (``activation_ranges``) the scale is a constant, constant folding
  runs first and the chain no longer matches its pattern, so every int8 product paid for an int32
  tensor, a cast and a multiply. :func:`fuse_integer_matmuls` writes the fused op directly; its
  output is bit-identical (the kernel scales the int32 sums by the same float product).

What each rewrite gains is measured in README ("Fast inference"); a test checks each against the
graph it replaces.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

VERSION = "cpu-rewrites-v1"  # bump when a rewrite changes (it is part of the export recipe)


def split_skip_layer_norms(model: Any) -> int:
    """Replace each ``SkipLayerNormalization`` in ``model`` (an ``onnx.ModelProto``, edited in place)
    by ``Add`` (input + skip), ``Add`` (+ bias, when it has one) and ``LayerNormalization``
    (opset 17). Returns how many were replaced.

    >>> import onnx
    >>> from onnx import helper
    >>> node = helper.make_node("SkipLayerNormalization", ["x", "s", "g", "b", "bias"], ["y"], domain="com.microsoft", epsilon=1e-12)
    >>> m = helper.make_model(helper.make_graph([node], "g", [], []), opset_imports=[helper.make_opsetid("", 17)])
    >>> split_skip_layer_norms(m), [n.op_type for n in m.graph.node]
    (1, ['Add', 'Add', 'LayerNormalization'])
    """
    from onnx import helper

    consumed = ({name for node in model.graph.node for name in node.input} | {out.name for out in model.graph.output}) - {""}
    nodes, replaced = [], 0
    for node in model.graph.node:
        if node.op_type != "SkipLayerNormalization":
            nodes.append(node)
            continue
        outputs = list(node.output) + [""] * (4 - len(node.output))
        if any(name in consumed for name in outputs[1:3]):
            raise ValueError(f"{node.name}: its mean or inverse std deviation output is read; LayerNormalization cannot replace it")
        data, skip, gamma = node.input[:3]
        beta = node.input[3] if len(node.input) > 3 else ""
        bias = node.input[4] if len(node.input) > 4 else ""
        # The sum of input, skip and bias keeps the name of the fused op's fourth output, if a later node reads it.
        total = outputs[3] if outputs[3] in consumed else f"{node.name}_sum"
        first = f"{node.name}_skip_sum" if bias else total
        nodes.append(helper.make_node("Add", [data, skip], [first], name=f"{node.name}_skip"))
        if bias:
            nodes.append(helper.make_node("Add", [first, bias], [total], name=f"{node.name}_bias"))
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        inputs = [total, gamma] + ([beta] if beta else [])
        nodes.append(helper.make_node("LayerNormalization", inputs, [outputs[0]], name=f"{node.name}_norm", axis=-1, epsilon=epsilon))
        replaced += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return replaced


def fuse_integer_matmuls(model: Any) -> int:
    """Replace each ``MatMulInteger → Cast(float) → Mul(scale)`` chain whose scale is a constant, or
    the product of two constants (the activation's and the weights' scale), by one
    ``com.microsoft.MatMulIntegerToFloat``. Edits ``model`` in place; returns how many were fused.

    >>> import onnx
    >>> from onnx import helper, numpy_helper
    >>> import numpy as np
    >>> nodes = [helper.make_node("MatMulInteger", ["a", "w", "az", "wz"], ["i"]),
    ...          helper.make_node("Cast", ["i"], ["f"], to=onnx.TensorProto.FLOAT),
    ...          helper.make_node("Mul", ["as", "ws"], ["s"]),
    ...          helper.make_node("Mul", ["f", "s"], ["y"])]
    >>> scales = [numpy_helper.from_array(np.array(0.5, np.float32), "as"), numpy_helper.from_array(np.ones(2, np.float32), "ws")]
    >>> m = helper.make_model(helper.make_graph(nodes, "g", [], [], scales))
    >>> fuse_integer_matmuls(m), [(n.op_type, list(n.input)) for n in m.graph.node]
    (1, [('MatMulIntegerToFloat', ['a', 'w', 'as', 'ws', 'az', 'wz'])])
    """
    from onnx import TensorProto, helper

    constants = {init.name for init in model.graph.initializer}
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
        if mul is None or mul.op_type != "Mul":
            continue
        (scale,) = [name for name in mul.input if name != cast.output[0]] or [""]
        scale_node = producer.get(scale)
        if scale in constants:
            scales, drop = ["", scale], []
        elif scale_node is not None and scale_node.op_type == "Mul" and set(scale_node.input) <= constants and only_reader(scale) is mul:
            scales, drop = list(scale_node.input), [scale_node]
        else:
            continue
        if not scales[0]:
            scales[0] = _one(model)
        a, b, a_zero, b_zero = node.input
        fused[id(node)] = helper.make_node(
            "MatMulIntegerToFloat", [a, b, *scales, a_zero, b_zero], [mul.output[0]], name=f"{node.name}_to_float", domain="com.microsoft"
        )
        dropped |= {id(cast), id(mul)} | {id(n) for n in drop}
    nodes = [fused.get(id(node), node) for node in model.graph.node if id(node) not in dropped]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if fused and not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(fused)


def _one(model: Any) -> str:
    """The name of a float constant 1 in ``model`` (added once): the unit activation scale of a
    chain whose one constant scale is already the product of both."""
    from onnx import numpy_helper
    import numpy as np

    name = "graph_rewrites_unit_scale"
    if not any(init.name == name for init in model.graph.initializer):
        model.graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), name))
    return name


def rewrite_for_cpu(path: Any, quantized: bool) -> None:
    """Apply the rewrites to the exported graph file at ``path`` in place: the layer-norm split
    always, the integer products' fusion on an int8 graph."""
    import onnx

    model = onnx.load(str(path))
    split_skip_layer_norms(model)
    if quantized:
        fuse_integer_matmuls(model)
    onnx.save(model, str(path))
