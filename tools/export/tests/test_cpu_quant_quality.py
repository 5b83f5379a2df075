"""cpu_quant_quality.py: its dequantisation equals ONNX Runtime's own MatMulNBits, and one short
run on the tiny checkpoint."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from conftest import REPO
from s1mini_export.quantize import quantize_bundle

cq = importlib.import_module("cpu_quant_quality")
FIXTURE = REPO / "tests" / "fixtures" / "tiny"


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_dequantize_equals_onnxruntime_matmulnbits(tmp_path, precision):
    out = tmp_path / precision
    quantize_bundle(FIXTURE, out, precision)
    g = onnx.load(str(out / "slow.onnx"))
    inits = {i.name: i for i in g.graph.initializer}
    nodes = [n for n in g.graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 11
    rng = np.random.default_rng(0)
    for node in nodes:
        w = cq.dequantize(node, inits)  # [N, K]
        attrs = {a.name: a.i for a in node.attribute}
        assert w.shape == (attrs["N"], attrs["K"])
        # The same node alone, with fp32 arithmetic (accuracy_level 0), on random activations.
        one = helper.make_node(
            "MatMulNBits",
            ["x", node.input[1], node.input[2]],
            ["y"],
            domain="com.microsoft",
            K=attrs["K"],
            N=attrs["N"],
            bits=attrs["bits"],
            block_size=attrs["block_size"],
            accuracy_level=0,
        )
        graph = helper.make_graph(
            [one],
            "one",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, attrs["K"]])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, attrs["N"]])],
            [inits[node.input[1]], inits[node.input[2]]],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
        s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        x = rng.standard_normal((3, attrs["K"])).astype(np.float32)
        y = s.run(None, {"x": x})[0]
        np.testing.assert_allclose(y, x @ w.T, rtol=1e-4, atol=1e-5, err_msg=node.name)


def test_checkpoint_names_of_the_exported_nodes():
    # format 2 (layer scopes flattened) and format 1 names
    slow2 = ["/wqkv/MatMul_Q4", "/wo/MatMul_Q4", "/feed_forward/w1/MatMul_Q4", "/wqkv_1/MatMul_Q4", "/head/MatMul_Q8"]
    assert cq.checkpoint_names("slow", slow2) == [
        "layers.0.attention.wqkv.weight",
        "layers.0.attention.wo.weight",
        "layers.0.feed_forward.w1.weight",
        "layers.1.attention.wqkv.weight",
        "head.weight",
    ]
    fast1 = ["/fast_layers.0/feed_forward/w2/MatMul_Q8", "/fast_output/MatMul_Q8"]
    assert cq.checkpoint_names("fast", fast1) == ["fast_layers.0.feed_forward.w2.weight", "fast_output.weight"]
    with pytest.raises(ValueError, match="cannot tell"):
        cq.checkpoint_names("slow", ["/something/MatMul_Q4"])


def test_main_on_tiny_checkpoint(capsys):
    r = cq.main(["--random", "tiny", "--precision", "int4", "--frames", "4"])
    assert r["precision"] == "int4" and r["layer_matrices"] == 22
    assert 0 < r["weight_rel_rmse"] < 0.2
    tf = r["teacher_forced"]
    assert 0 < tf["slow"]["rel_rmse"] < 1 and 0 < tf["fast"]["rel_rmse"] < 1
    assert r["harness_max_diff"] < 1e-4
    assert "CPU_QUANT_QUALITY {" in capsys.readouterr().out
