"""The export's CPU rewrites compute what the graph they replace computes (``monitor/embed/graph_rewrites.py``)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from monitor.embed.graph_rewrites import fuse_integer_matmuls, split_skip_layer_norms  # noqa: E402

RNG = np.random.default_rng(0)


def run(model, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written, not as ORT rewrites it
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feed)


def model_of(nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def test_split_skip_layer_norm_gives_the_fused_ops_output_and_its_sum():
    width = 16
    weights = [numpy_helper.from_array(RNG.normal(size=width).astype(np.float32), name) for name in ("gamma", "beta", "bias")]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 5, width]) for name in ("x", "skip")]
    nodes = [
        helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y", "", "", "sum"], domain="com.microsoft", epsilon=1e-5),
        helper.make_node("Relu", ["sum"], ["read_sum"]),  # a later node reads the fourth output
    ]
    fused = model_of(nodes, inputs, ["y", "read_sum"], weights)
    split = onnx.ModelProto()
    split.CopyFrom(fused)
    assert split_skip_layer_norms(split) == 1
    assert [n.op_type for n in split.graph.node] == ["Add", "Add", "LayerNormalization", "Relu"]
    feed = {name: RNG.normal(size=(2, 5, width)).astype(np.float32) for name in ("x", "skip")}
    for before, after in zip(run(fused, feed), run(split, feed), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_split_skip_layer_norm_refuses_a_graph_that_reads_its_statistics():
    nodes = [
        helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma"], ["y", "mean"], domain="com.microsoft"),
        helper.make_node("Relu", ["mean"], ["z"]),
    ]
    with pytest.raises(ValueError, match="mean or inverse std deviation"):
        split_skip_layer_norms(model_of(nodes, [], ["z"], []))


def integer_chain(scale_nodes, scales, cast_readers=1):
    inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, [6, 8])]
    constants = [
        numpy_helper.from_array(RNG.integers(-127, 128, size=(8, 4)).astype(np.int8), "w"),
        numpy_helper.from_array(np.array(7, np.uint8), "a_zero"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zero"),
        *scales,
    ]
    nodes = [
        helper.make_node("MatMulInteger", ["a", "w", "a_zero", "w_zero"], ["int"]),
        helper.make_node("Cast", ["int"], ["float"], to=TensorProto.FLOAT),
        *scale_nodes,
        helper.make_node("Mul", ["float", "scale"], ["y"]),
    ]
    outputs = ["y"] + (["twice"] if cast_readers == 2 else [])
    if cast_readers == 2:
        nodes.append(helper.make_node("Relu", ["float"], ["twice"]))
    return model_of(nodes, inputs, outputs, constants)


@pytest.mark.parametrize("product", [True, False], ids=["activation-times-weight-scale", "one-constant-scale"])
def test_fused_integer_matmul_is_bit_identical(product):
    weight_scale = numpy_helper.from_array(RNG.uniform(1e-3, 1e-2, size=4).astype(np.float32), "w_scale" if product else "scale")
    if product:
        scales = [numpy_helper.from_array(np.array(0.0371, np.float32), "a_scale"), weight_scale]
        scale_nodes = [helper.make_node("Mul", ["a_scale", "w_scale"], ["scale"])]
    else:
        scales, scale_nodes = [weight_scale], []
    chain = integer_chain(scale_nodes, scales)
    fused = onnx.ModelProto()
    fused.CopyFrom(chain)
    assert fuse_integer_matmuls(fused) == 1
    assert [n.op_type for n in fused.graph.node] == ["MatMulIntegerToFloat"]
    feed = {"a": RNG.integers(0, 256, size=(6, 8)).astype(np.uint8)}
    np.testing.assert_array_equal(run(fused, feed)[0], run(chain, feed)[0])


def test_a_chain_whose_integer_product_is_read_elsewhere_is_left_alone():
    scale = numpy_helper.from_array(np.full(4, 0.01, np.float32), "scale")
    chain = integer_chain([], [scale], cast_readers=2)
    assert fuse_integer_matmuls(chain) == 0
    assert [n.op_type for n in chain.graph.node] == ["MatMulInteger", "Cast", "Mul", "Relu"]
