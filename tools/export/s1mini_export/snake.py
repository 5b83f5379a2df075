"""Each Snake activation of an fp32 codec graph as one node, `ai.s1mini.Snake(x, alpha, inv_alpha)`,
whose ONNX function body (in the model) is the standard subgraph it replaces.

The traced Snake (codec_graph.snake: `x + (alpha + 1e-9)^-1 * sin(alpha * x)^2`) is five nodes:

    ax = Mul(alpha, x); s = Sin(ax); s2 = Mul(s, s); t = Mul(inv_alpha, s2); y = Add(x, t)

Any ONNX runtime runs the rewritten graph by inlining the function: Python's onnxruntime gives
the same floats as before. The engine's onnx-cpu backend registers its own kernel under the
same domain and name (src/backend/onnx/snake.rs), which ONNX Runtime then calls instead: one
pass over memory instead of five, and a vectorised sine instead of ONNX Runtime's scalar one
(docs/rust-core.md "Codec speed (CPU)"). Only fp32 graphs are rewritten: fp16 codecs are for
GPU providers, which would inline the function anyway.
"""

from __future__ import annotations

import onnx
from onnx import helper

DOMAIN = "ai.s1mini"
OP = "Snake"
OPSET = 17  # the function body's ONNX opset (codec.OPSET)


def snake_function() -> onnx.FunctionProto:
    """The function body: the five standard nodes, in the traced graph's order of operations."""
    body = [
        helper.make_node("Mul", ["alpha", "x"], ["ax"]),
        helper.make_node("Sin", ["ax"], ["s"]),
        helper.make_node("Mul", ["s", "s"], ["s2"]),
        helper.make_node("Mul", ["inv_alpha", "s2"], ["t"]),
        helper.make_node("Add", ["x", "t"], ["y"]),
    ]
    return helper.make_function(DOMAIN, OP, ["x", "alpha", "inv_alpha"], ["y"], body,
                                [helper.make_opsetid("", OPSET)])


def fuse_snakes(model: onnx.ModelProto) -> int:
    """Rewrites every Snake subgraph of `model` in place into one `ai.s1mini.Snake` node and adds
    the function and its opset import (once); returns how many were rewritten. A subgraph whose
    intermediate values are used elsewhere or are graph outputs is left alone."""
    g = model.graph
    nodes = list(g.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in set(n.input):
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}

    def only_use(value: str) -> onnx.NodeProto | None:
        users = consumers.get(value, [])
        return users[0] if len(users) == 1 and value not in graph_outputs else None

    fused: dict[int, onnx.NodeProto] = {}  # id of the Add it replaces -> the Snake node
    dropped: set[int] = set()
    for sin in (n for n in nodes if n.op_type == "Sin" and n.domain in ("", "ai.onnx")):
        mul_ax = producer.get(sin.input[0])
        square = only_use(sin.output[0])
        if mul_ax is None or mul_ax.op_type != "Mul" or only_use(mul_ax.output[0]) is not sin:
            continue
        if square is None or square.op_type != "Mul" or list(square.input) != [sin.output[0]] * 2:
            continue
        scale = only_use(square.output[0])
        if scale is None or scale.op_type != "Mul":
            continue
        inv_alpha = [i for i in scale.input if i != square.output[0]]
        add = only_use(scale.output[0])
        if len(inv_alpha) != 1 or add is None or add.op_type != "Add":
            continue
        x = [i for i in add.input if i != scale.output[0]]
        if len(x) != 1 or x[0] not in mul_ax.input:
            continue
        alpha = [i for i in mul_ax.input if i != x[0]]
        if len(alpha) != 1:
            continue
        fused[id(add)] = helper.make_node(OP, [x[0], alpha[0], inv_alpha[0]], list(add.output),
                                          name=f"{sin.name}/Snake", domain=DOMAIN)
        dropped |= {id(mul_ax), id(sin), id(square), id(scale)}
    if not fused:
        return 0
    rewritten = [fused.get(id(n), n) for n in nodes if id(n) not in dropped]
    del g.node[:]
    g.node.extend(rewritten)
    if not any(f.domain == DOMAIN and f.name == OP for f in model.functions):
        model.functions.append(snake_function())
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return len(fused)
