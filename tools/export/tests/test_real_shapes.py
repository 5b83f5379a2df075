"""S1-mini's real layer widths through the exporter and ONNX Runtime, vs fish-speech.

The fast variant (CI) keeps every real per-layer shape (dim 1024, 16 query × 128 / 8 KV heads,
FFN 3072, qk-norm, fast heads × 64, codebook_size 4096 so fast logit_rows 1024 < codebook_size,
4096 semantic tokens) but 2 slow + 1 fast layers and the tiny BPE. The full-size check is
a manual script, `tools/export/check_full_size.py DIR` (DIR/ckpt from `--random s1-mini`, DIR/bundle).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from s1mini_export import oracle
from s1mini_export.llm import SlowRunner
from s1mini_export.bpe import SAMPLE_TEXT, train_bpe
from s1mini_export.prompt import build_prompt, load_encoding
from s1mini_export.random_checkpoint import S1_MINI_CONFIG, TINY_MERGES, write_llm_checkpoint

RTOL = 1e-4


def rel(got, want) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def check_bundle_against_fish(ckpt: Path, bundle: Path, decode_steps: int, fast_positions: int) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    c = m["model"]
    enc, ids = load_encoding(bundle)
    rng = np.random.default_rng(11)
    ref = rng.integers(0, m["fast"]["logit_rows"], size=(c["num_codebooks"], 4))
    prompt = build_prompt(enc, ids, c["num_codebooks"], "Real shapes (calm). 形状。", [("ref", ref)])
    model = oracle.load_model(ckpt)
    opts = ort.SessionOptions()
    slow = ort.InferenceSession(str(bundle / "slow.onnx"), opts, providers=["CPUExecutionProvider"])
    runner = SlowRunner(slow, m, capacity=prompt.shape[1] + decode_steps)
    cur, pos = prompt, 0
    for step in range(1 + decode_steps):
        want_l, want_h = oracle.slow_step(model, cur, pos)
        logits, hidden = runner.run(cur)
        assert rel(logits[0], want_l) < RTOL and rel(hidden[0], want_h) < RTOL, f"slow step {step}"
        pos += cur.shape[1]
        codes = rng.integers(0, m["fast"]["logit_rows"], size=c["num_codebooks"])
        cur = np.concatenate([[m["tokens"]["semantic_begin"] + codes[0]], codes])[:, None].astype(np.int64)
    del slow, runner
    fast = ort.InferenceSession(str(bundle / "fast.onnx"), providers=["CPUExecutionProvider"])
    oracle.reset_fast(model)
    fk = np.zeros((c["n_fast_layer"], 1, c["fast_n_local_heads"], 0, c["fast_head_dim"]), np.float32)
    fv = fk.copy()
    codes = [0] + list(rng.integers(0, m["fast"]["logit_rows"], size=c["num_codebooks"]))
    for k in range(fast_positions):
        want = oracle.fast_step(model, want_h, codes[k], k, m["fast"]["logit_rows"])
        lg, fk, fv = fast.run(
            None, {"hidden": hidden, "code": np.array([codes[k]], np.int64), "past_keys": fk, "past_values": fv}
        )
        assert rel(lg[0], want) < RTOL, f"fast position {k}"


def test_real_widths_two_layers_match_fish_speech(tmp_path):
    from s1mini_export.export import export

    cfg = dict(S1_MINI_CONFIG, n_layer=2, n_fast_layer=1, vocab_size=0)
    ckpt = tmp_path / "ckpt"
    write_llm_checkpoint(ckpt, cfg, train_bpe(SAMPLE_TEXT.read_text(encoding="utf-8"), TINY_MERGES), seed=5)
    bundle = tmp_path / "bundle"
    m = export(ckpt, bundle, "fp32", {"llm"}, log=lambda s: None)
    assert m["head"]["semantic_rows"] == 4096 and m["fast"]["logit_rows"] == 1024
    check_bundle_against_fish(ckpt, bundle, decode_steps=5, fast_positions=10)
