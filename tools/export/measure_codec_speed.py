#!/usr/bin/env python3
"""Codec decode speed on the CPU: graphs side by side, and ONNX Runtime's per-op profile.

    .venv/bin/python tools/export/measure_codec_speed.py ab DIR_A[,DIR_B...] one,step16 108,431 [--reps 2]
    .venv/bin/python tools/export/measure_codec_speed.py profile DIR codec_decode|codec_decode_step 108 [--chunk 16]

DIR is a bundle (manifest.json) or a codec-only export (info.json, as measure_codec_step.py
writes). `ab` decodes the same random codes with every (bundle, mode) pair, interleaved, `--reps`
times, and prints the minimum wall and process CPU time per second of audio and each PCM's error
relative to the first pair's; modes: `one` (codec_decode.onnx, whole utterance) and `stepN`
(codec_decode_step.onnx in chunks of N frames, state carried). `profile` runs one mode twice with
ONNX Runtime's profiler and prints the node time per op type and the top nodes. Sessions as the
engine opens them (CPU EP, default threads: THREADS=n to set, spinning off), except that Python
runs each ai.s1mini.Snake through its function body, not onnx-cpu's kernel. Not a test:
figures for docs/rust-core.md "Codec speed"; the machine is shared, so compare within one run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import tempfile
import time

import numpy as np
import onnxruntime as ort

ort.set_default_logger_severity(3)


def codec_info(d: str) -> dict:
    for f in ("manifest.json", "info.json"):
        p = os.path.join(d, f)
        if os.path.exists(p):
            return json.load(open(p))["codec"]
    raise SystemExit(f"{d}: no manifest.json or info.json")


def options(profile_prefix: str | None = None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if os.environ.get("THREADS"):
        so.intra_op_num_threads = int(os.environ["THREADS"])
    if os.environ.get("DISABLE_OPTIMIZERS"):  # e.g. NhwcTransformer (experiments)
        so.add_session_config_entry("optimization.disable_specified_optimizers", os.environ["DISABLE_OPTIMIZERS"])
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def decode(sess: ort.InferenceSession, c: dict, mode: str, codes: np.ndarray) -> np.ndarray:
    """codes [1, K, T] -> pcm [T * frame_samples]."""
    if mode == "one":
        return sess.run(None, {"codes": codes})[0][0, 0]
    chunk, spec = int(mode.removeprefix("step")), c["step_state"]
    state = {x["input"]: np.zeros(x["shape"], np.float32) for x in spec}
    out, p, n = [], 0, codes.shape[-1]
    while p < n:
        e = min(n, p + chunk)
        r = sess.run(None, {"codes": codes[:, :, p:e], "start_frame": np.array([p], np.int64), **state})
        state = {x["input"]: v for x, v in zip(spec, r[1:], strict=True)}
        out.append(r[0][0, 0])
        p = e
    return np.concatenate(out)


def graph_of(mode: str) -> str:
    return "codec_decode.onnx" if mode == "one" else "codec_decode_step.onnx"


def random_codes(c: dict, frames: int) -> np.ndarray:
    rng = np.random.default_rng(320)
    return np.stack([rng.integers(0, s, frames) for s in c["codebook_sizes"]]).astype(np.int64)[None]


def ab(dirs: list[str], modes: list[str], frames_list: list[int], reps: int) -> None:
    sessions = {(d, m): ort.InferenceSession(os.path.join(d, graph_of(m)), options(), providers=["CPUExecutionProvider"])
                for d in dirs for m in modes}
    print(f"load average {os.getloadavg()}", flush=True)
    for frames in frames_list:
        codes = random_codes(codec_info(dirs[0]), frames)
        audio = frames * codec_info(dirs[0])["frame_samples"] / codec_info(dirs[0])["sample_rate_hz"]
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        pcm = {}
        for (d, m), s in sessions.items():  # warm-up
            decode(s, codec_info(d), m, codes[:, :, :8])
        for _ in range(reps):
            for (d, m), s in sessions.items():
                t, cpu = time.perf_counter(), time.process_time()
                pcm[(d, m)] = decode(s, codec_info(d), m, codes)
                times.setdefault((d, m), []).append((time.perf_counter() - t, time.process_time() - cpu))
        ref = pcm[(dirs[0], modes[0])]
        for (d, m), v in times.items():
            diff = pcm[(d, m)] - ref
            err = float(np.abs(diff).max() / np.abs(ref).max())
            snr = 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / max(float(np.sum(diff.astype(np.float64) ** 2)), 1e-30))
            print(f"{frames} frames ({audio:.2f} s of audio) {d} {m}: wall/audio {min(w for w, _ in v) / audio:.3f}, "
                  f"cpu/audio {min(c for _, c in v) / audio:.3f} (runs wall/cpu s: "
                  + " ".join(f"{w:.2f}/{c:.2f}" for w, c in v) + f"), PCM vs the first: max |diff| / peak {err:.2e}, SNR {snr:.1f} dB", flush=True)
    print(f"load average {os.getloadavg()}, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


def profile(d: str, graph: str, frames: int, chunk: int) -> None:
    c = codec_info(d)
    mode = "one" if graph == "codec_decode" else f"step{chunk}"
    prefix = os.path.join(tempfile.mkdtemp(prefix="codec-profile-"), "p")
    sess = ort.InferenceSession(os.path.join(d, graph + ".onnx"), options(prefix), providers=["CPUExecutionProvider"])
    codes = random_codes(c, frames)
    for _ in range(2):
        t, cpu = time.perf_counter(), time.process_time()
        decode(sess, c, mode, codes)
        print(f"{graph} {frames} frames ({mode}): wall {time.perf_counter() - t:.2f} s, cpu {time.process_time() - cpu:.2f} s",
              flush=True)
    events = json.load(open(sess.end_profiling()))
    by_op: collections.Counter[str] = collections.Counter()
    by_node: collections.Counter[tuple[str, str]] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[(e["name"].removesuffix("_kernel_time"), e["args"]["op_name"])] += e["dur"]
    total = sum(by_op.values())
    print(f"node time {total / 1e6:.2f} s (load average {os.getloadavg()})")
    for op, us in by_op.most_common(20):
        print(f"  {op:24s} {us / 1e6:8.3f} s {100 * us / total:5.1f} %")
    for (n, op), us in by_node.most_common(15):
        print(f"  {n[:60]:60s} {op:16s} {us / 1e6:7.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ab")
    a.add_argument("dirs")
    a.add_argument("modes")
    a.add_argument("frames")
    a.add_argument("--reps", type=int, default=2)
    p = sub.add_parser("profile")
    p.add_argument("dir")
    p.add_argument("graph", choices=["codec_decode", "codec_decode_step"])
    p.add_argument("frames", type=int)
    p.add_argument("--chunk", type=int, default=16)
    x = ap.parse_args()
    if x.cmd == "ab":
        ab(x.dirs.split(","), x.modes.split(","), [int(f) for f in x.frames.split(",")], x.reps)
    else:
        profile(x.dir, x.graph, x.frames, x.chunk)


if __name__ == "__main__":
    main()
