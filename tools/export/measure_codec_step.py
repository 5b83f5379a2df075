#!/usr/bin/env python3
"""Measures streamed decode through codec_decode_step.onnx against the old path and one-shot.

    PYTHONPATH=tools/export nice -n 10 .venv/bin/python tools/export/measure_codec_step.py --dir /tmp/rc [--kind s1-mini]

Writes DIR/codec.pth (random weights of the real codec, 1.9 GB) and DIR/bundle (codec_decode.onnx +
codec_decode_step.onnx, fp32, ~1.5 GB) unless present, then with ONNX Runtime (CPU EP, default
threads):
- parity: 320 frames streamed (chunks 4, then 16) vs the one-shot graph vs fish-speech DAC.decode;
- one-shot decode of 300 frames;
- a 16-frame chunk at frame 16, 500 and 1000: the step graph (state carried from frame 0, every
  chunk of the stream timed) and the old path (`decode_range`: the one-shot graph on
  [s - receptive_field_frames, s + 16) with start_frame, keeping the last 16 frames).
Delete DIR afterwards. Not a test: figures for docs/rust-core.md.
"""

from __future__ import annotations

import argparse
import json
import platform
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
    ap.add_argument("--stream-frames", type=int, default=1024)
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
    print(f"cpu: {platform.processor() or platform.machine()}, ort {ort.__version__}, receptive field {ctx}", flush=True)
    rng = np.random.default_rng(320)
    n = max(a.stream_frames, 320)
    codes = np.stack([rng.integers(0, s, n) for s in c["codebook_sizes"]]).astype(np.int64)

    def new(name: str) -> ort.InferenceSession:
        return ort.InferenceSession(str(bundle / name), providers=["CPUExecutionProvider"])

    # Parity on 320 frames.
    dac = codec.load_reference_codec(pth)
    t = time.perf_counter()
    ref = codec.reference_decode(pth, codes[:, :320], dac)
    print(f"torch DAC.decode 320 frames {time.perf_counter() - t:.1f} s", flush=True)
    del dac
    one = new("codec_decode.onnx")
    t = time.perf_counter()
    one_shot = one.run(None, {"codes": codes[None, :, :320]})[0][0, 0]
    print(f"one-shot graph 320 frames {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    one.run(None, {"codes": codes[None, :, :300]})
    print(f"one-shot graph 300 frames {time.perf_counter() - t:.1f} s", flush=True)

    step = new("codec_decode_step.onnx")
    state = {s["input"]: np.zeros(s["shape"], np.float32) for s in spec}
    pcm, times, s = [], {}, 0
    t_all = time.perf_counter()
    while s < n:
        e = min(n, s + (4 if s == 0 else 16))
        t = time.perf_counter()
        res = step.run(None, {"codes": codes[None, :, s:e], "start_frame": np.array([s], np.int64), **state})
        times[s] = time.perf_counter() - t
        state = {x["input"]: v for x, v in zip(spec, res[1:], strict=True)}
        pcm.append(res[0][0, 0])
        s = e
    wall = time.perf_counter() - t_all
    got = np.concatenate(pcm)
    print(f"parity 320 frames, chunks (4, 16): streamed vs one-shot graph {rel(got[: 320 * 2048], one_shot):.3g}, "
          f"streamed vs DAC.decode {rel(got[: 320 * 2048], ref):.3g}, one-shot vs DAC.decode {rel(one_shot, ref):.3g}",
          flush=True)
    print(f"step graph: streamed {n} frames (4 then 16 per chunk) in {wall:.1f} s "
          f"({wall / n * 1000:.1f} ms/frame)", flush=True)
    for p in (4, 500, 1000):
        q = min(times, key=lambda k: abs(k - p))
        if abs(q - p) <= 16:
            print(f"step graph: 16-frame chunk at frame {q}: {times[q] * 1000:.0f} ms", flush=True)
    for p in (16, 500, 1000):
        if p + 16 > n:
            continue
        begin = max(0, p - ctx)
        t = time.perf_counter()
        one.run(None, {"codes": codes[None, :, begin : p + 16], "start_frame": np.array([begin], np.int64)})
        print(f"old path: 16-frame chunk at frame {p} (decodes {p + 16 - begin} frames): "
              f"{(time.perf_counter() - t) * 1000:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
