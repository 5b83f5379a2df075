#!/usr/bin/env python3
"""Measures streamed decode through codec_decode_step.onnx against the old path and one-shot.

    PYTHONPATH=tools/export nice -n 10 .venv/bin/python tools/export/measure_codec_step.py --dir /tmp/rc [--kind s1-mini]

Writes DIR/codec.pth (random weights of the real codec, 1.9 GB) and DIR/bundle (codec_decode.onnx +
codec_decode_step.onnx, fp32, ~1.5 GB) unless present, then with ONNX Runtime (CPU EP, default
threads):
- with --parity: 320 frames streamed (chunks 4, then 16) vs the one-shot graph vs DAC.decode;
- one-shot decode of 300 frames and of 16 frames;
- 1016 frames streamed through the step graph in 16-frame chunks (state carried from frame 0);
- a 16-frame chunk at frame 16, 500 and 1000: the step graph (fed the state the stream had
  there, rerun 3 times) and the old path (`decode_range`: the one-shot graph on
  [s - receptive_field_frames, s + 16) with start_frame, whose last 16 frames are kept).
Each timing is the minimum of its runs (the machine is shared); all runs are printed.
Delete DIR afterwards. Not a test: figures for docs/rust-core.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort

warnings.simplefilter("ignore")
ort.set_default_logger_severity(3)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def main() -> None:
    from s1mini_export import codec

    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--kind", default="s1-mini")
    ap.add_argument("--stream-frames", type=int, default=1016)
    ap.add_argument("--parity", action="store_true", help="also check 320 frames against DAC.decode")
    a = ap.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    pth, bundle = a.dir / "codec.pth", a.dir / "bundle"
    if not pth.exists():
        t = time.perf_counter()
        codec.random_codec_checkpoint(a.kind, 0, pth)
        print(f"checkpoint {time.perf_counter() - t:.1f} s", flush=True)
    if not (bundle / "info.json").exists():
        t = time.perf_counter()
        info = codec.export_codec(pth, bundle, "fp32", {"codec-decode", "codec-decode-step"})
        (bundle / "info.json").write_text(json.dumps(info))
        print(f"export decode + step fp32 {time.perf_counter() - t:.1f} s, sizes "
              f"{ {f: (bundle / f).stat().st_size for f in info['files']} }", flush=True)
    info = json.loads((bundle / "info.json").read_text())
    c = info["codec"]
    spec = c["step_state"]
    ctx = c["receptive_field_frames"]
    cpu = next((x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")), "?")
    print(f"cpu: {cpu} x {os.cpu_count()}, ort {ort.__version__}, receptive field {ctx}", flush=True)
    rng = np.random.default_rng(320)
    n = max(a.stream_frames, 320)
    codes = np.stack([rng.integers(0, s, n) for s in c["codebook_sizes"]]).astype(np.int64)

    def new(name: str) -> ort.InferenceSession:
        return ort.InferenceSession(str(bundle / name), providers=["CPUExecutionProvider"])

    if a.parity:
        # Parity on 320 frames.
        dac = codec.load_reference_codec(pth)
        ref = codec.reference_decode(pth, codes[:, :320], dac)
        del dac
        one_shot = new("codec_decode.onnx").run(None, {"codes": codes[None, :, :320]})[0][0, 0]
        got = stream(new("codec_decode_step.onnx"), spec, codes[:, :320], [])[0]
        print(f"parity 320 frames, chunks (4, 16): streamed vs one-shot graph {rel(got, one_shot):.3g}, "
              f"streamed vs DAC.decode {rel(got, ref):.3g}, one-shot vs DAC.decode {rel(one_shot, ref):.3g}",
              flush=True)
        # The bounds of tools/export/tests/test_codec.py's tiny-codec parity tests.
        if not (rel(got, one_shot) <= 1e-5 and rel(got, ref) <= 1e-4 and rel(one_shot, ref) <= 1e-4):
            print("parity: FAILED (bounds 1e-5 streamed vs one-shot, 1e-4 vs DAC.decode)", flush=True)
            sys.exit(1)

    def best(f, n: int) -> str:
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return f"min {min(ts) * 1000:.0f} ms of {n} (" + ", ".join(f"{x * 1000:.0f}" for x in ts) + ")"

    one = new("codec_decode.onnx")
    print(f"one-shot graph, 300 frames: {best(lambda: one.run(None, {'codes': codes[None, :, :300]}), 2)}",
          flush=True)
    print(f"one-shot graph, 16 frames: {best(lambda: one.run(None, {'codes': codes[None, :, :16]}), 3)}", flush=True)
    targets = [p for p in (16, 500, 1000) if p + 16 <= n]
    step = new("codec_decode_step.onnx")
    t = time.perf_counter()
    _, states = stream(step, spec, codes, targets)
    wall = time.perf_counter() - t
    print(f"step graph: streamed {n} frames (16 per chunk) in {wall:.1f} s ({wall / n * 1000:.0f} ms/frame)", flush=True)
    for p in targets:
        feeds = {"codes": codes[None, :, p : p + 16], "start_frame": np.array([p], np.int64), **states[p]}
        print(f"step graph: 16-frame chunk at frame {p}: {best(lambda f=feeds: step.run(None, f), 3)}", flush=True)
    for p in targets:
        begin = max(0, p - ctx)
        feeds = {"codes": codes[None, :, begin : p + 16], "start_frame": np.array([begin], np.int64)}
        print(f"old path: 16-frame chunk at frame {p} (decodes {p + 16 - begin} frames): "
              f"{best(lambda f=feeds: one.run(None, f), 1 if p >= 1000 else 2)}", flush=True)


def stream(sess: ort.InferenceSession, spec: list[dict], codes: np.ndarray, targets: list[int]):
    """Streams codes [N, T] in chunks of 16 (4 first when there are no targets), a chunk starting
    at each target frame; returns (pcm, {target: the state fed to the chunk at target})."""
    state = {s["input"]: np.zeros(s["shape"], np.float32) for s in spec}
    pcm, saved, s, t = [], {}, 0, codes.shape[1]
    while s < t:
        e = min(t, s + (4 if s == 0 and not targets else 16), *[p for p in targets if p > s])
        if s in targets:
            saved[s] = state
        res = sess.run(None, {"codes": codes[None, :, s:e], "start_frame": np.array([s], np.int64), **state})
        state = {x["input"]: v for x, v in zip(spec, res[1:], strict=True)}
        pcm.append(res[0][0, 0])
        s = e
    return np.concatenate(pcm), saved


if __name__ == "__main__":
    main()
