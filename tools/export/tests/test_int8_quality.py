"""int8_quality.py: the quantiser against hand-computed cases, and one short run on the tiny checkpoint."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
import torch

# tools/export/ is on sys.path (conftest.py); imported by name so that the import's first- or
# third-party class does not depend on where ruff runs from
iq = importlib.import_module("int8_quality")


def quant(rows) -> tuple[np.ndarray, np.ndarray]:
    q, s = iq.quantize_rows(torch.tensor(rows, dtype=torch.float32))
    assert q.dtype == torch.int8 and s.dtype == torch.float32
    return q.numpy(), s.numpy()


def test_round_half_to_even():
    # max 127 -> scale exactly 1: W / scale is W itself, so every .5 is a tie
    q, s = quant([[127.0, 63.5, 62.5, 0.5, -0.5, 1.5, 2.5, -2.5, -3.5]])
    assert s.tolist() == [1.0]
    assert q.tolist() == [[127, 64, 62, 0, 0, 2, 2, -2, -4]]
    # max 254 -> scale 2
    q, s = quant([[254.0, 3.0, 5.0, -3.0, 1.0, 7.0, -254.0]])
    assert s.tolist() == [2.0]
    assert q.tolist() == [[127, 2, 2, -2, 0, 4, -127]]


def test_all_zero_row_scale_one():
    q, s = quant([[0.0, 0.0, 0.0, 0.0], [0.0, -1.27, 0.0, 0.635]])
    assert s[0] == 1.0 and q[0].tolist() == [0, 0, 0, 0]
    assert s[1] == np.float32(np.float32(1.27) / np.float32(127.0))
    assert q[1].tolist() == [0, -127, 0, 64]  # f32: 0.635 / 0.01 is exactly 63.5 -> 64 (even)


def test_clamped_to_127_never_minus_128():
    # the largest |w| of a row maps to exactly +-127 whatever f32 does with m / (m / 127)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((512, 64)).astype(np.float32) * rng.uniform(1e-6, 1e3, (512, 1)).astype(np.float32)
    w[::2, 5] = -np.abs(w[::2]).max(axis=1) * 1.0  # even rows: the extreme is negative
    q, s = quant(w)
    assert q.min() >= -127 and q.max() <= 127
    idx = np.abs(w).argmax(axis=1)
    assert np.array_equal(np.abs(q[np.arange(512), idx]), np.full(512, 127))
    assert np.array_equal(np.sign(q[np.arange(512), idx]), np.sign(w[np.arange(512), idx]).astype(np.int8))


def test_error_bound_and_numpy_reference():
    rng = np.random.default_rng(1)
    w = torch.tensor(rng.standard_normal((64, 96)) * 0.03, dtype=torch.bfloat16)
    q, s = iq.quantize_rows(w)
    w64 = w.to(torch.float64).numpy()
    deq = iq.dequantize_rows(q, s).numpy().astype(np.float64)
    s64 = s.numpy().astype(np.float64)[:, None]
    # |w - q s| <= s / 2, up to the f32 rounding of w / s (|w / s| <= 127: 127 ulps of 1 at most)
    err = np.abs(w64 - deq)
    assert np.all(err <= s64 / 2 + s64 * 128 * 2.0**-23)
    assert np.mean(err <= s64 / 2) > 0.99 and (err / s64).max() > 0.45
    # independent numpy model: f32 max / 127, f32 division, np.rint (half to even), clip
    w32 = w.to(torch.float32).numpy()
    m = np.abs(w32).max(axis=1)
    ref_s = np.where(m > 0, m / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    ref_q = np.clip(np.rint(w32 / ref_s[:, None]), -127, 127).astype(np.int8)
    assert np.array_equal(s.numpy(), ref_s) and np.array_equal(q.numpy(), ref_q)


def test_layer_matrix_rule():
    assert iq.is_layer_matrix("layers.0.attention.wqkv.weight", (128, 32))
    assert iq.is_layer_matrix("fast_layers.3.feed_forward.w2.weight", (32, 96))
    assert not iq.is_layer_matrix("layers.0.attention_norm.weight", (32,))
    assert not iq.is_layer_matrix("output.weight", (2112, 32))
    assert not iq.is_layer_matrix("fast_embeddings.weight", (1024, 32))
    with pytest.raises(ValueError):
        iq.quantize_rows(torch.zeros(4))


def test_main_on_tiny_checkpoint(tiny_ckpt, capsys):
    r = iq.main(["--checkpoint", str(tiny_ckpt), "--frames", "4"])
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if ln.startswith("INT8_QUALITY ")]
    assert len(line) == 1
    j = json.loads(line[0].split(" ", 1)[1])
    assert j["frames_requested"] == 4 and j["kind"] == "checkpoint"
    assert j["layer_matrices"] == 20  # tiny: (2 slow + 2 fast layers) x (wqkv, wo, w1, w2, w3)
    assert j["harness_max_diff"] == 0.0  # teacher-forced bf16 logits are generate()'s own
    for head in ("slow", "fast"):
        st = j["teacher_forced"][head]
        assert math.isfinite(st["rmse"]) and math.isfinite(st["rel_rmse"]) and math.isfinite(st["max_abs"])
        assert 0 < st["rel_rmse"] < 0.1  # int8 moves logits, by about a percent
        assert 0.0 <= st["top1_agree"] <= 1.0
    fr = j["free_running"]
    assert fr["frames_ref"] == 4 and 0 <= fr["prefix_frames"] <= 4
    assert 0.0 <= fr["identical_frac"] <= 1.0 and 0.0 <= fr["value_agree"] <= 1.0
    assert 0.0 <= j["teacher_forced"]["frame_top1_agree"] <= 1.0
    assert 0 < j["weight_rel_rmse"] < 0.02
    assert r["teacher_forced"]["slow"]["rmse"] == j["teacher_forced"]["slow"]["rmse"]
