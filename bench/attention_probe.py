"""One S1-mini attention layer's decode step on ONNX Runtime's CPU GroupQueryAttention, with an
fp32 and an fp16 cache, at a given context (docs/bench.md "(e)": why onnx-cpu has its own
kernel for fp16 caches). Shapes: 16 query heads, 8 KV heads of 128, cache [1, 8, context+256, 128]
bound as past and present (IO binding), 2 intra-op threads, spinning off; median of 55 runs,
the two sessions alternated.

    .venv/bin/python bench/attention_probe.py 4025
"""

import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as h

HQ, HK, D = 16, 8, 128


def model(cache: int, cap: int):
    vi = h.make_tensor_value_info
    nodes, ins = [], ["q", "k", "v"]
    if cache == TP.FLOAT16:  # as kv_cache.py writes it: fp32 around, fp16 at the attention
        nodes += [h.make_node("Cast", [n], [n + "16"], to=TP.FLOAT16) for n in ins]
        ins = [n + "16" for n in ins]
    y = "y16" if cache == TP.FLOAT16 else "y"
    nodes.append(
        h.make_node(
            "GroupQueryAttention", ins + ["pk", "pv", "seqlens", "total"], [y, "ok", "ov"],
            domain="com.microsoft", num_heads=HQ, kv_num_heads=HK,
        )
    )
    if cache == TP.FLOAT16:
        nodes.append(h.make_node("Cast", ["y16"], ["y"], to=TP.FLOAT))
    g = h.make_graph(
        nodes, "g",
        [vi("q", TP.FLOAT, [1, 1, HQ * D]), vi("k", TP.FLOAT, [1, 1, HK * D]), vi("v", TP.FLOAT, [1, 1, HK * D]),
         vi("pk", cache, [1, HK, cap, D]), vi("pv", cache, [1, HK, cap, D]),
         vi("seqlens", TP.INT32, [1]), vi("total", TP.INT32, [])],
        [vi("y", TP.FLOAT, [1, 1, HQ * D]), vi("ok", cache, [1, HK, cap, D]), vi("ov", cache, [1, HK, cap, D])],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])


def main() -> None:
    context = int(sys.argv[1]) if len(sys.argv) > 1 else 4025
    cap = context + 256
    rng = np.random.default_rng(0)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    act = {n: rng.standard_normal((1, 1, w), dtype=np.float32) for n, w in (("q", HQ * D), ("k", HK * D), ("v", HK * D))}
    past = rng.standard_normal((1, HK, cap, D), dtype=np.float32)
    runs, keep = {}, []
    for name, cache, dt in (("fp32 cache", TP.FLOAT, np.float32), ("fp16 cache", TP.FLOAT16, np.float16)):
        s = ort.InferenceSession(model(cache, cap).SerializeToString(), so, providers=["CPUExecutionProvider"])
        b = s.io_binding()
        for n, a in act.items():
            b.bind_cpu_input(n, a)
        for i, o in (("pk", "ok"), ("pv", "ov")):
            buf = ort.OrtValue.ortvalue_from_numpy(past.astype(dt))
            keep.append(buf)
            b.bind_ortvalue_input(i, buf)
            b.bind_ortvalue_output(o, buf)
        b.bind_cpu_input("seqlens", np.array([context - 1], np.int32))
        b.bind_cpu_input("total", np.array(context, np.int32))
        b.bind_output("y")
        runs[name] = (s, b, [])
    for _ in range(60):
        for s, b, ts in runs.values():
            t0 = time.perf_counter()
            s.run_with_iobinding(b)
            ts.append(time.perf_counter() - t0)
    base = None
    for name, (_, _, ts) in runs.items():
        ms = float(np.median(ts[5:])) * 1e3
        base = base or ms
        print(f"context {context}, {name}: {ms:.3f} ms per layer ({ms / base:.2f}x the fp32 cache)")


if __name__ == "__main__":
    main()
