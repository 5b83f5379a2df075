#!/usr/bin/env python3
"""Cost of one decode step of the batched graphs (bundle format 3) at 1, 2, 4 and 8 rows:

    .venv/bin/python bench/batch_scaling.py BUNDLE

ONNX Runtime CPU, 2 intra-op threads, spinning off (as the engine), slow graph at a 100-position
context and fast graph at position 5; prints ms per slow call, per fast call and per frame.
Used for the "how it grows" line of README's concurrency table."""
import json, numpy as np, onnxruntime as ort, sys, time
b = sys.argv[1]
m = json.load(open(f"{b}/manifest.json")); c = m["model"]
so = ort.SessionOptions(); so.intra_op_num_threads = 2
so.add_session_config_entry("session.intra_op.allow_spinning", "0")
slow = ort.InferenceSession(f"{b}/slow.onnx", so, providers=["CPUExecutionProvider"])
fast = ort.InferenceSession(f"{b}/fast.onnx", so, providers=["CPUExecutionProvider"])
L, H, D, K = c["n_layer"], c["n_local_heads"], c["head_dim"], c["num_codebooks"]
names = [f"past_{kv}_{i}" for i in range(L) for kv in ("key","value")]
Lf, Hf, Df = c["n_fast_layer"], c["fast_n_local_heads"], c["fast_head_dim"]
for B in (1, 2, 4, 8):
    cache = {n: np.zeros((B,H,256,D), np.float32) for n in names}
    tok = np.zeros((B,1+K,1), np.int64); past = np.full((B,), 100, np.int64)
    slow.run(None, {"tokens": tok, "past_sequence_length": past, **cache})
    t=time.perf_counter(); n=3
    for _ in range(n): slow.run(None, {"tokens": tok, "past_sequence_length": past, **cache})
    ts=(time.perf_counter()-t)/n*1e3
    hid=np.zeros((B,c["fast_dim"]),np.float32); code=np.zeros(B,np.int64)
    pk=np.zeros((Lf,B,Hf,5,Df),np.float32)
    fast.run(None, {"hidden":hid,"code":code,"past_keys":pk,"past_values":pk})
    t=time.perf_counter(); n=10
    for _ in range(n): fast.run(None, {"hidden":hid,"code":code,"past_keys":pk,"past_values":pk})
    tf=(time.perf_counter()-t)/n*1e3
    print(f"B={B}: slow {ts:.1f} ms, fast {tf:.2f} ms/call -> frame {ts+10*tf:.0f} ms, per row {(ts+10*tf)/B:.0f} ms", flush=True)
