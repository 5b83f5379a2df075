#!/usr/bin/env python3
"""Quality cost of the CUDA backend's weight-only int8 layers, measured with fish-speech on the CPU.

    PYTHONPATH=tools/export .venv/bin/python tools/export/int8_quality.py --checkpoint DIR [--frames N] [--text T]
    PYTHONPATH=tools/export .venv/bin/python tools/export/int8_quality.py --random tiny|s1-mini --seed S [...]

What is quantised (as `S1_CUDA_WEIGHTS=int8`, kernel `quantize_i8_bf16` in
src/backend/cuda/kernels/gemv.cu): every 2-D weight whose name starts with `layers.` or
`fast_layers.` (wqkv, wo, w1, w2, w3 of every slow and fast layer). Embeddings, norms and both output
heads stay bf16. Per output row n: scale[n] = max_k |W[n,k]| / 127 in f32 (1 when the row is all
zero), q = clamp(rint(W / scale), -127, 127) with rint = round half to even, and the layer computes
with q * scale[n]. The CUDA engine uses the int8 GEMV for the prefill too (cuBLAS only sees bf16
layers), so every layer matrix of every step is int8 there, as here.

How: fish-speech 0.1.0's DualARTransformer in fp32 on the CPU (oracle.load_model), first with the
checkpoint's bf16 values, then with each layer matrix replaced by q * scale (computed in f32 from
the bf16 values). Only the weights differ, so the numbers below are the cost of the quantisation
scheme itself (the CUDA kernels match a host model of it to 1e-7), not of the GPU's other numerics
(bf16 KV cache, f32 accumulation order).

1. Greedy reference: fish-speech's own `generate()` as generate_long calls it (the golden's greedy
   knobs: temperature 0.8, top_p 1e-6, repetition_penalty 1.1) for --frames frames with the bf16
   weights. The restricted slow-head logits (semantic rows + <|im_end|>, the bundle's head) and the
   fast head's logits (first min(1024, codebook_size) rows, the rows fish-speech samples, positions
   1..num_codebooks-1) are recorded at every frame.
2. Teacher forcing: the SAME frames (the bf16 run's) are fed to the bf16 and to the int8 model,
   prefill + one decode step per frame, and the fast transformer walks the frame's own codes. Per
   head: RMSE of int8 vs bf16 logits, RMSE relative to the bf16 logits' RMS, max |diff|, top-1
   (raw argmax) agreement, and the median top-1/top-2 margin of the bf16 logits (how close greedy
   decisions are). `harness_max_diff` checks that the teacher-forced bf16 logits are generate()'s.
3. Free running: `generate()` again with the int8 weights; frames identical from the start, the
   fraction of identical frames (over the longer run) and of identical values (token + codes).

Random checkpoints (`--random`): their logits are nearly flat (random weights, every top-1/top-2
margin tiny next to the logit scale), so a small perturbation flips argmaxes that a trained model
would keep, and one flipped frame makes every later free-running frame diverge (the flipped token is
fed back). Greedy agreement on random weights is therefore a pessimistic measure; the logit RMSE
relative to the logit RMS is the number that carries over. On a real checkpoint (`--checkpoint`)
all numbers are meaningful.

Prints a table to stdout, then one line `INT8_QUALITY {json}` with every number.

Measured 2026-11-26 (2-core VM, no GPU, random checkpoints, default text for tiny, "Hello world."
for s1-mini); rel = logit RMSE / logit RMS, teacher forced; free = greedy frames identical from
the start / fraction identical:

| checkpoint | frames | weight rel RMSE | slow rel | slow top-1 | fast rel | fast top-1 | free |
|---|---|---|---|---|---|---|---|
| tiny seed 0 | 32 | 5.6e-3 | 1.70e-2 | 0.969 | 1.90e-2 | 0.955 | 1 / 0.031 |
| tiny seed 1 | 32 | 5.6e-3 | 1.69e-2 | 1.000 | 1.81e-2 | 0.972 | 6 / 0.188 |
| tiny seed 2 | 32 | 5.5e-3 | 1.36e-2 | 1.000 | 1.61e-2 | 0.979 | 9 / 0.281 |
| s1-mini seed 0 | 8 | 8.0e-3 | 5.43e-2 | 0.625 | 7.75e-2 | 0.847 | 0 / 0.000 |

s1-mini (real shapes, 28 + 4 random layers): 7.4 GB peak RSS, ≈ 6 min on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from s1mini_export import oracle  # noqa: E402

DEFAULT_TEXT = "Hello world! (happy) 今日は、いい天気ですね。语音合成。"  # make_golden.py's
GREEDY = {"temperature": 0.8, "top_p": 1e-6, "repetition_penalty": 1.1}  # make_golden.py's


# ---------------------------------------------------------------------------------------------
# The quantiser (quantize_i8_bf16)


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W [N, K] (any float dtype) -> (q int8 [N, K], scale f32 [N]) exactly as quantize_i8_bf16.

    scale = max|row| / 127 in f32 (1 for an all-zero row); q = clamp(rint(W / scale), -127, 127),
    rint = round half to even (torch.round), the division in f32 (IEEE, as CUDA's '/').
    """
    if w.dim() != 2:
        raise ValueError(f"quantize_rows: expected a 2-D weight, got shape {tuple(w.shape)}")
    w32 = w.to(torch.float32)
    m = w32.abs().amax(dim=1)
    scale = torch.where(m > 0, m / torch.tensor(127.0, dtype=torch.float32), torch.ones_like(m))
    v = torch.round(w32 / scale[:, None])
    q = torch.clamp(v, -127.0, 127.0).to(torch.int8)
    return q, scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """q * scale[n] in f32: what the int8 GEMV multiplies the activations with."""
    return q.to(torch.float32) * scale.to(torch.float32)[:, None]


def is_layer_matrix(name: str, shape) -> bool:
    """The engine's rule (engine.rs load_weights): 2-D and named layers.* or fast_layers.*."""
    return len(shape) == 2 and (name.startswith("layers.") or name.startswith("fast_layers."))


class Weights:
    """Swaps the model's layer matrices between the checkpoint's bf16 values and int8 q * scale."""

    def __init__(self, model) -> None:
        self.params = {n: p for n, p in model.named_parameters() if is_layer_matrix(n, p.shape)}
        if not self.params:
            raise ValueError("no layer matrices (layers.* / fast_layers.*) in the model")
        self.bf16: dict[str, torch.Tensor] = {}
        num = den = 0.0
        for n, p in self.params.items():
            b = p.detach().to(torch.bfloat16)
            if not torch.equal(b.to(torch.float32), p.detach().to(torch.float32)):
                raise ValueError(f"{n}: weights are not bf16 values (the checkpoint should be bf16)")
            self.bf16[n] = b  # bf16 copy: exact, half the memory of f32
            q, s = quantize_rows(b)
            err = dequantize_rows(q, s) - b.to(torch.float32)
            num += float(err.double().pow(2).sum())
            den += float(b.double().pow(2).sum())
        self.count = len(self.params)
        self.elements = sum(p.numel() for p in self.params.values())
        self.weight_rel_rmse = math.sqrt(num / den) if den > 0 else 0.0

    @torch.no_grad()
    def use(self, kind: str) -> None:
        for n, p in self.params.items():
            b = self.bf16[n]
            p.copy_(b.to(torch.float32) if kind == "bf16" else dequantize_rows(*quantize_rows(b)))


# ---------------------------------------------------------------------------------------------
# fish-speech runs


@contextlib.contextmanager
def _recording(model, rows: int):
    """Records generate()'s restricted slow logits and fast logits (positions >= 1) per call."""
    import fish_speech.models.text2semantic.inference as inf

    rec = {"slow": [], "fast": []}
    fwd, fwd_fast, tq = model.forward_generate, model.forward_generate_fast, inf.tqdm

    def slow(*a, **k):
        r = fwd(*a, **k)
        rec["slow"].append(oracle.restricted(model, r.logits.detach().clone()))
        return r

    def fast(x, input_pos=None, *a, **k):
        r = fwd_fast(x, input_pos, *a, **k)
        if int(input_pos.reshape(-1)[0]) >= 1:
            rec["fast"].append(r[0, -1, :rows].detach().clone().numpy())
        return r

    model.forward_generate, model.forward_generate_fast = slow, fast
    inf.tqdm = lambda it, *a, **k: it  # decode_n_tokens' progress bar
    try:
        yield rec
    finally:
        del model.forward_generate, model.forward_generate_fast
        inf.tqdm = tq


def generate(model, prompt: np.ndarray, frames: int, rows: int):
    """fish-speech generate() (greedy knobs) -> (frames [n, 1+N], slow logits [n, S], fast [n, N-1, rows])."""
    n_cb = model.config.num_codebooks
    with _recording(model, rows) as rec:
        out = oracle.generate_frames(model, prompt, frames, **GREEDY)
    slow = np.stack(rec["slow"])
    fast = np.stack(rec["fast"]).reshape(len(out), n_cb - 1, rows)
    return out, slow, fast


@torch.inference_mode()
def teacher_forced(model, prompt: np.ndarray, frames: np.ndarray, rows: int):
    """Slow and fast logits with the given frames fed back: as generate() computes them for those frames."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model.setup_caches(max_batch_size=1, max_seq_len=model.config.max_seq_len, dtype=torch.float32)
    n_cb = model.config.num_codebooks
    slow, fast = [], []
    cur, pos = np.asarray(prompt, dtype=np.int64), 0
    for f, frame in enumerate(frames):
        # generate() prefills outside, and decodes inside, sdpa_kernel(MATH): the same here
        ctx = sdpa_kernel(SDPBackend.MATH) if f > 0 else contextlib.nullcontext()
        with ctx:
            logits, hidden = oracle.slow_step(model, cur, pos)
            pos += cur.shape[1]
            oracle.reset_fast(model)
            oracle.fast_step(model, hidden, None, 0, rows)  # output unused, as in fish-speech
            # frame = [token, c0..c_{N-1}]; position k reads c_{k-1} = frame[k] and predicts frame[k + 1]
            fast.append(np.stack([oracle.fast_step(model, None, int(frame[k]), k, rows) for k in range(1, n_cb)]))
        slow.append(logits)
        cur = np.asarray(frame, dtype=np.int64)[:, None]
    return np.stack(slow), np.stack(fast)


# ---------------------------------------------------------------------------------------------
# Metrics


def logit_stats(ref: np.ndarray, test: np.ndarray) -> dict:
    """ref/test [..., V]: RMSE, RMSE / RMS(ref), max |diff|, top-1 agreement, median top-2 margin."""
    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    d = test - ref
    rmse = float(np.sqrt(np.mean(d * d)))
    rms = float(np.sqrt(np.mean(ref * ref)))
    top2 = np.sort(ref, axis=-1)[..., -2:]
    return {
        "rmse": rmse,
        "ref_rms": rms,
        "rel_rmse": rmse / rms if rms > 0 else float("nan"),
        "max_abs": float(np.max(np.abs(d))),
        "top1_agree": float(np.mean(np.argmax(ref, axis=-1) == np.argmax(test, axis=-1))),
        "median_margin": float(np.median(top2[..., 1] - top2[..., 0])),
        "count": int(np.prod(ref.shape[:-1])),
    }


def free_running_stats(a: np.ndarray, b: np.ndarray) -> dict:
    """Two greedy runs' frames [n, 1+N]: identical prefix, identical frames and values."""
    n = min(len(a), len(b))
    same = [bool(np.array_equal(a[i], b[i])) for i in range(n)]
    prefix = next((i for i, s in enumerate(same) if not s), n)
    longest = max(len(a), len(b))
    return {
        "frames_ref": int(len(a)),
        "frames_int8": int(len(b)),
        "prefix_frames": int(prefix),
        "identical_frac": sum(same) / longest if longest else 1.0,
        "value_agree": float(np.mean(a[:n] == b[:n])) if n else 1.0,
    }


# ---------------------------------------------------------------------------------------------
# Driver


def measure(ckpt: Path, frames: int, text: str, log=lambda m: None, make_weights=None) -> dict:
    """Every number for one checkpoint (see the module docstring). `make_weights(model)` gives
    the object that swaps the model's matrices ("bf16" / anything else: the scheme's); default
    this file's CUDA int8 rows (cpu_quant_quality.py passes an ONNX bundle's MatMulNBits)."""
    if frames < 2:
        raise ValueError("--frames must be >= 2 (fish-speech's decode loop needs one decode step)")
    if "int8" in str(ckpt) or "int4" in str(ckpt):
        raise ValueError(
            f"{ckpt}: fish-speech's from_pretrained treats a path containing 'int8' or 'int4' as its own "
            "quantised checkpoint; rename or symlink the directory"
        )
    model = oracle.load_model(ckpt)
    cfg = model.config
    rows = min(1024, cfg.codebook_size)
    prompt = oracle.prompt_ids(oracle.tokenizer(ckpt), cfg.num_codebooks, text)
    weights = (make_weights or Weights)(model)
    log(f"{weights.count} layer matrices ({weights.elements} weights), weight rel RMSE {weights.weight_rel_rmse:.3e}")
    times = {}

    t0 = time.perf_counter()
    weights.use("bf16")
    ref_frames, gen_slow, gen_fast = generate(model, prompt, frames, rows)
    times["generate_bf16_s"] = time.perf_counter() - t0
    log(f"bf16 generate: {len(ref_frames)} frames, {times['generate_bf16_s']:.1f} s")

    t0 = time.perf_counter()
    tf_slow_ref, tf_fast_ref = teacher_forced(model, prompt, ref_frames, rows)
    times["teacher_bf16_s"] = time.perf_counter() - t0
    harness = max(float(np.max(np.abs(tf_slow_ref - gen_slow))), float(np.max(np.abs(tf_fast_ref - gen_fast))))

    t0 = time.perf_counter()
    weights.use("int8")
    tf_slow_q, tf_fast_q = teacher_forced(model, prompt, ref_frames, rows)
    times["teacher_int8_s"] = time.perf_counter() - t0
    log(f"teacher forcing: {times['teacher_bf16_s']:.1f} s + {times['teacher_int8_s']:.1f} s")

    t0 = time.perf_counter()
    q_frames, _, _ = generate(model, prompt, frames, rows)
    times["generate_int8_s"] = time.perf_counter() - t0
    log(f"int8 generate: {len(q_frames)} frames, {times['generate_int8_s']:.1f} s")
    weights.use("bf16")

    slow = logit_stats(tf_slow_ref, tf_slow_q)
    fast = logit_stats(tf_fast_ref, tf_fast_q)
    # a frame agrees when the main token and every fast code have the same raw argmax
    slow_ok = np.argmax(tf_slow_ref, -1) == np.argmax(tf_slow_q, -1)
    fast_ok = np.all(np.argmax(tf_fast_ref, -1) == np.argmax(tf_fast_q, -1), axis=-1)
    per_frame = [logit_stats(tf_slow_ref[i : i + 1], tf_slow_q[i : i + 1])["rel_rmse"] for i in range(len(tf_slow_ref))]
    return {
        "frames_requested": frames,
        "prompt_tokens": int(prompt.shape[1]),
        "text": text,
        "layer_matrices": weights.count,
        "layer_weights": weights.elements,
        "weight_rel_rmse": weights.weight_rel_rmse,
        "teacher_forced": {
            "slow": slow,
            "fast": fast,
            "frame_top1_agree": float(np.mean(slow_ok & fast_ok)),
            "slow_rel_rmse_per_frame": per_frame,
        },
        "free_running": free_running_stats(ref_frames, q_frames),
        "harness_max_diff": harness,
        "times": times,
    }


def table(r: dict) -> str:
    tf, fr = r["teacher_forced"], r["free_running"]
    lines = [
        f"checkpoint: {r['checkpoint']}  kind: {r['kind']}  seed: {r['seed']}  frames: {r['frames_requested']}"
        f"  prompt tokens: {r['prompt_tokens']}",
        f"layer matrices: {r['layer_matrices']} ({r['layer_weights']} weights), "
        f"weight rel RMSE |W - q*s| / |W|: {r['weight_rel_rmse']:.3e}",
        "",
        "teacher forced (bf16 frames fed to both) | logits | RMSE | RMS(bf16) | RMSE/RMS | max |diff| "
        "| top-1 agree | median top-2 margin",
    ]
    for name, s in (("slow head (semantic + im_end)", tf["slow"]), ("fast head (codebooks 1..)", tf["fast"])):
        lines.append(
            f"  {name:<38} | {s['count']:>6} | {s['rmse']:.3e} | {s['ref_rms']:.3e} | {s['rel_rmse']:.3e} "
            f"| {s['max_abs']:.3e} | {s['top1_agree']:.4f} | {s['median_margin']:.3e}"
        )
    lines += [
        f"  whole frames (main token and all fast codes top-1 equal): {tf['frame_top1_agree']:.4f}",
        "",
        f"free running (greedy): bf16 {fr['frames_ref']} frames, int8 {fr['frames_int8']} frames; "
        f"identical from the start: {fr['prefix_frames']}; identical frames: {fr['identical_frac']:.4f}; "
        f"identical values: {fr['value_agree']:.4f}",
        f"harness check (teacher-forced bf16 vs generate() logits, max |diff|): {r['harness_max_diff']:.3e}",
        f"wall: {r['wall_s']:.1f} s",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="fish-speech S1 checkpoint directory")
    src.add_argument("--random", choices=["tiny", "s1-mini"], help="write a random checkpoint (s1mini_export --random)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --random checkpoint")
    ap.add_argument("--frames", type=int, default=32, help="greedy frames (default 32)")
    ap.add_argument("--text", default=DEFAULT_TEXT)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    log = lambda m: print(f"int8_quality: {m}", file=sys.stderr, flush=True)  # noqa: E731

    start = time.perf_counter()
    # No "int8"/"int4" in the temporary path: fish-speech's from_pretrained switches to its own
    # quantised model when the checkpoint path contains either.
    with tempfile.TemporaryDirectory(prefix="s1q-") as tmp:
        if args.random:
            from s1mini_export.random_checkpoint import write_random_checkpoint

            ckpt = Path(tmp) / args.random
            t0 = time.perf_counter()
            write_random_checkpoint(args.random, args.seed, ckpt, log, with_codec=False)
            log(f"random {args.random} checkpoint (seed {args.seed}): {time.perf_counter() - t0:.1f} s")
            kind, seed, name = args.random, args.seed, f"--random {args.random}"
        else:
            ckpt, kind, seed, name = args.checkpoint, "checkpoint", None, str(args.checkpoint)
        result = {"checkpoint": name, "kind": kind, "seed": seed, "torch_threads": torch.get_num_threads()}
        result.update(measure(ckpt, args.frames, args.text, log))
    result["wall_s"] = time.perf_counter() - start
    print(table(result))
    line = json.dumps(result, ensure_ascii=False, sort_keys=True)
    print(f"INT8_QUALITY {line}", flush=True)
    if args.json:
        args.json.write_text(line + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
