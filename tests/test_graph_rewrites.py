"""The export's CPU rewrites compute what the graph they replace computes (``monitor/embed/graph_rewrites.py``)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from monitor.embed.graph_rewrites import UNDONE_FUSIONS, fuse_integer_matmuls, split_skip_layer_norms  # noqa: E402

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


def test_split_skip_layer_norm_keeps_its_statistics_outputs_when_read():
    width = 8
    weights = [numpy_helper.from_array(RNG.normal(size=width).astype(np.float32), "gamma")]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [3, width]) for name in ("x", "skip")]
    nodes = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma"], ["y", "mean", "inv_std"], domain="com.microsoft", epsilon=1e-5)]
    fused = model_of(nodes, inputs, ["y", "mean", "inv_std"], weights)
    split = onnx.ModelProto()
    split.CopyFrom(fused)
    assert split_skip_layer_norms(split) == 1
    assert [(n.op_type, list(n.output)) for n in split.graph.node] == [("Add", ["y_skip_bias_sum"]), ("LayerNormalization", ["y", "mean", "inv_std"])]
    feed = {name: RNG.normal(size=(3, width)).astype(np.float32) for name in ("x", "skip")}
    for before, after in zip(run(fused, feed), run(split, feed), strict=True):
        np.testing.assert_allclose(after.reshape(before.shape), before, rtol=1e-5, atol=1e-5)


def test_split_skip_layer_norm_needs_opset_17():
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma"], ["y"], domain="com.microsoft")
    model = helper.make_model(helper.make_graph([node], "g", [], []), opset_imports=[helper.make_opsetid("", 14)])
    with pytest.raises(ValueError, match="opset 17"):
        split_skip_layer_norms(model)


def test_the_session_keeps_onnx_runtime_from_fusing_the_split_back(tmp_path):
    """``UNDONE_FUSIONS`` names ONNX Runtime's fusion: without it a split layer norm (here one with
    no bias, which ORT matches) is fused back when a session loads; with it, it stays split. An
    unknown name would be ignored silently, so only this notices a rename."""
    width = 16
    weights = [numpy_helper.from_array(RNG.normal(size=width).astype(np.float32), name) for name in ("gamma", "beta")]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 5, width]) for name in ("x", "skip")]
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"], domain="com.microsoft", epsilon=1e-5)
    split = model_of([node], inputs, ["y"], weights)
    split_skip_layer_norms(split)

    def loaded_ops(**kwargs) -> set[str]:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(split.SerializeToString(), options, providers=["CPUExecutionProvider"], **kwargs)
        return {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}

    assert "SkipLayerNormalization" in loaded_ops()
    assert "SkipLayerNormalization" not in loaded_ops(disabled_optimizers=list(UNDONE_FUSIONS))


def integer_chain(scale_inputs, constants, cast_readers=1):
    """MatMulInteger → Cast → Mul(scale product) over a uint8 [6, 8] input and int8 [8, 4] weights."""
    inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, [6, 8])]
    constants = [
        numpy_helper.from_array(RNG.integers(-127, 128, size=(8, 4)).astype(np.int8), "w"),
        numpy_helper.from_array(np.array(7, np.uint8), "a_zero"),
        numpy_helper.from_array(np.array([0, 3, -2, 1], np.int8), "w_zero"),
        *constants,
    ]
    nodes = [
        helper.make_node("MatMulInteger", ["a", "w", "a_zero", "w_zero"], ["int"]),
        helper.make_node("Cast", ["int"], ["float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", scale_inputs, ["scale"]),
        helper.make_node("Mul", ["float", "scale"], ["y"]),
    ]
    outputs = ["y"] + (["twice"] if cast_readers == 2 else [])
    if cast_readers == 2:
        nodes.append(helper.make_node("Relu", ["float"], ["twice"]))
    return model_of(nodes, inputs, outputs, constants)


def scales() -> list:
    return [
        numpy_helper.from_array(np.array(0.0371, np.float32), "a_scale"),
        numpy_helper.from_array(RNG.uniform(1e-3, 1e-2, size=4).astype(np.float32), "w_scale"),
    ]


@pytest.mark.parametrize("order", [["a_scale", "w_scale"], ["w_scale", "a_scale"]], ids=["activation-first", "weights-first"])
def test_fused_integer_matmul_is_bit_identical(order):
    chain = integer_chain(order, scales())
    fused = onnx.ModelProto()
    fused.CopyFrom(chain)
    assert fuse_integer_matmuls(fused) == 1
    assert [(n.op_type, list(n.input)) for n in fused.graph.node] == [
        ("MatMulIntegerToFloat", ["a", "w", "a_scale", "w_scale", "a_zero", "w_zero"])
    ]
    feed = {"a": RNG.integers(0, 256, size=(6, 8)).astype(np.uint8)}
    np.testing.assert_array_equal(run(fused, feed)[0], run(chain, feed)[0])


def test_chains_that_are_not_a_scaled_integer_product_are_left_alone():
    wide = numpy_helper.from_array(np.ones((3, 1, 4), np.float32), "wide")  # broadcasts the product to another shape
    cases = {
        "the float product is read elsewhere": integer_chain(["a_scale", "w_scale"], scales(), cast_readers=2),
        "a constant that is no per-column scale": integer_chain(["a_scale", "wide"], [*scales(), wide]),
        "no scalar activation scale": integer_chain(["w_scale", "w_scale"], scales()),
    }
    for why, chain in cases.items():
        ops = [n.op_type for n in chain.graph.node]
        assert fuse_integer_matmuls(chain) == 0, why
        assert [n.op_type for n in chain.graph.node] == ops, why
