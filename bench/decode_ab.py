"""Paired A/B of the decode frame of two or more bundles' transformer graphs on ONNX Runtime's CPU
provider, for comparing graph or quantisation changes on a shared machine.

    .venv/bin/python bench/decode_ab.py --threads 2 --context 72 --frames 40 OLD_BUNDLE NEW_BUNDLE [...]

One frame is what the engine runs per decoded frame (src/backend/onnx): one slow.onnx step with the
per-layer caches bound as input and output (updated in place, bundle format 2) at a context of
`--context` positions, then 10 fast.onnx calls. All bundles are loaded in one process and run
frame by frame in alternating order, so each sees the same load from other processes; the report
gives each bundle's median ms per frame and the median of its per-frame ratio to the first bundle
(the figure to trust when the machine is busy). Sampling and the codec are not run (`s1-mini bench
--profile` measures those). Inputs are constant token ids: the cost of a frame does not depend on
them. Needs onnxruntime (scripts/setup-python.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort

PREFILL_CHUNK = 512  # as the engine (src/backend/onnx/kv.rs)


def session_options(threads: int) -> ort.SessionOptions:
    # The engine's CPU settings (src/backend/onnx/mod.rs open_session).
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.prepack.enable_parallel", "1")
    return so


class Decoder:
    """One bundle's slow and fast sessions, with a slow cache filled to `context` positions."""

    def __init__(self, path: str, threads: int, context: int, frames: int):
        c = json.load(open(f"{path}/manifest.json", encoding="utf-8"))["model"]
        self.c = c
        self.rows = 1 + c["num_codebooks"]
        cpu = ["CPUExecutionProvider"]
        self.slow_s = ort.InferenceSession(f"{path}/slow.onnx", session_options(threads), providers=cpu)
        self.fast_s = ort.InferenceSession(f"{path}/fast.onnx", session_options(threads), providers=cpu)
        capacity = context + frames + 8
        self.io = self.slow_s.io_binding()
        self.cache = []  # keeps the bound buffers alive
        for i in range(c["n_layer"]):
            for kv in ("key", "value"):
                buf = np.zeros((1, c["n_local_heads"], capacity, c["head_dim"]), np.float32)
                v = ort.OrtValue.ortvalue_from_numpy(buf)
                self.cache.append(v)
                self.io.bind_ortvalue_input(f"past_{kv}_{i}", v)
                self.io.bind_ortvalue_output(f"present_{kv}_{i}", v)
        self.io.bind_output("logits")
        self.io.bind_output("hidden")
        self.pos = 0
        while self.pos < context:
            self.slow(min(PREFILL_CHUNK, context - self.pos))
        self.hidden = np.random.default_rng(0).random((1, c["fast_dim"]), dtype=np.float32)
        self.frame()  # warm-up

    def slow(self, t: int) -> None:
        self.io.bind_cpu_input("tokens", np.full((1, self.rows, t), 5, np.int64))
        self.io.bind_cpu_input("past_sequence_length", np.array([self.pos], np.int64))
        self.slow_s.run_with_iobinding(self.io)
        self.pos += t

    def frame(self) -> None:
        c = self.c
        self.slow(1)
        shape = (c["n_fast_layer"], 1, c["fast_n_local_heads"], 0, c["fast_head_dim"])
        pk = pv = np.zeros(shape, np.float32)
        for k in range(c["num_codebooks"]):
            feed = {"hidden": self.hidden, "code": np.array([k], np.int64), "past_keys": pk, "past_values": pv}
            _, pk, pv = self.fast_s.run(None, feed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = one per core)")
    ap.add_argument("--context", type=int, default=72, help="positions in the slow cache before the frames")
    ap.add_argument("--frames", type=int, default=40)
    args = ap.parse_args()
    decoders = [Decoder(b, args.threads, args.context, args.frames) for b in args.bundles]
    ms = np.zeros((len(decoders), args.frames))
    for i in range(args.frames):
        order = range(len(decoders)) if i % 2 == 0 else reversed(range(len(decoders)))
        for j in order:
            t0 = time.perf_counter()
            decoders[j].frame()
            ms[j, i] = 1e3 * (time.perf_counter() - t0)
    report = {"threads": args.threads, "context": args.context, "frames": args.frames}
    report["load_avg_1min"] = os.getloadavg()[0]
    for j, b in enumerate(args.bundles):
        med = float(np.median(ms[j]))
        report[b] = {
            "ms_per_frame": round(med, 2),
            "frames_per_s": round(1e3 / med, 2),
            "ratio_to_first": round(float(np.median(ms[j] / ms[0])), 3),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
