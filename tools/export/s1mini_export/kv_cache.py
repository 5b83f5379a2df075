"""The slow graph's KV cache in fp16: `past_*` / `present_*` buffers of half the bytes.

At a long context the decode step of a CPU bundle is bound by reading the cache: at 4,025
positions S1-mini's fp32 cache is 0.92 GB per frame, more than the int4 weights (0.61 GB). This
rewrites each com.microsoft.GroupQueryAttention node of slow.onnx to take fp16 q/k/v and fp16
cache buffers (a Cast before, one after for the attention's output), so everything around the
attention, the weights and the logits stay what they were. ONNX Runtime runs the graph as it is
on every provider (its CPU kernel converts each head to fp32 per query head, slowly); onnx-cpu
replaces that kernel with its own, which reads each KV head once (src/backend/onnx/attention.rs).

fish-speech itself keeps its cache in the model's bf16, which has fewer mantissa bits than fp16.
The loss is measured in tools/export/tests/test_quantize.py (3-7e-4 of the logits' RMS on the
fp32 fixture's graph) and docs/bench.md "(e)".
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

GQA = "GroupQueryAttention"
# GroupQueryAttention's inputs that carry activations (query, key, value) and cache buffers
# (past_key, past_value); outputs: attention output, present_key, present_value.
ACTIVATION_INPUTS = (0, 1, 2)
CACHE_INPUTS = (3, 4)


def cache_dtype(model: onnx.ModelProto) -> str:
    """"fp16" or "fp32": the element type of the graph's first cache input."""
    for i in model.graph.input:
        if i.name == "past_key_0":
            return "fp16" if i.type.tensor_type.elem_type == TensorProto.FLOAT16 else "fp32"
    raise ValueError("not a slow graph: no past_key_0 input")


def cache_to_fp16(model: onnx.ModelProto) -> int:
    """Rewrites `model` in place; returns the number of attention nodes changed (0 when the
    cache is fp16 already)."""
    g = model.graph
    if cache_dtype(model) == "fp16":
        return 0
    cache_names = set()
    nodes = []
    changed = 0
    shapes = {v.name: v for v in g.value_info}  # the export's shapes of node outputs
    for n in g.node:
        if n.op_type != GQA or n.domain != "com.microsoft":
            nodes.append(n)
            continue
        for i in ACTIVATION_INPUTS:
            half = f"{n.input[i]}/fp16"
            nodes.append(helper.make_node("Cast", [n.input[i]], [half], name=f"{n.name}/cast_in{i}", to=TensorProto.FLOAT16))
            n.input[i] = half
        cache_names.update(n.input[j] for j in CACHE_INPUTS)
        cache_names.update(n.output[1:3])
        out = n.output[0]
        n.output[0] = f"{out}/fp16"
        if out in shapes:  # the output's shape, for the fp16 one too
            half = g.value_info.add()
            half.CopyFrom(shapes[out])
            half.name = n.output[0]
            half.type.tensor_type.elem_type = TensorProto.FLOAT16
        nodes.append(n)
        nodes.append(helper.make_node("Cast", [n.output[0]], [out], name=f"{n.name}/cast_out", to=TensorProto.FLOAT))
        changed += 1
    del g.node[:]
    g.node.extend(nodes)
    for v in list(g.input) + list(g.output):
        if v.name in cache_names:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    # Shapes recorded for the old outputs would now name the wrong type; ONNX Runtime infers them.
    keep = [v for v in g.value_info if v.name not in cache_names]
    del g.value_info[:]
    g.value_info.extend(keep)
    return changed
