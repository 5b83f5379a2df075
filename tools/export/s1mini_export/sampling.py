"""The engine's sampling algorithm (bundle-format.md "Sampling and the RNG"), f32 numpy.

Mirrors src/sampling.rs step by step so the golden sampled run is what the Rust engine must
draw: repetition penalty (each distinct index once) -> top-p on the un-tempered softmax (stable
descending sort, f64 cumsum rounded to f32, first always kept) -> temperature -> softmax
(max-subtracted, times 1/sum) -> exponential race argmax p/q, q = -ln(u) with Philox u.
"""

from __future__ import annotations

import numpy as np

from .philox import uniforms

F32 = np.float32
WINDOW = 16


def penalise(logits: np.ndarray, window: np.ndarray, rp: float) -> np.ndarray:
    out = logits.astype(F32).copy()
    idx = np.unique(window[(window >= 0) & (window < len(out))]).astype(np.int64)
    v = out[idx]
    out[idx] = np.where(v < 0, v * F32(rp), v / F32(rp)).astype(F32)
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    m = x.max()
    e = np.exp((x - m).astype(F32)).astype(F32)
    s = F32(0.0)
    for v in e:  # sequential f32 sum, as the Rust loop
        s = F32(s + v)
    return (e * (F32(1.0) / s)).astype(F32)


def top_p_mask(logits: np.ndarray, top_p: float) -> np.ndarray:
    order = np.argsort(-logits, kind="stable")
    probs = _softmax(logits[order])
    cum = np.cumsum(probs.astype(np.float64)).astype(F32)
    drop = cum > F32(top_p)
    drop[0] = False
    out = logits.copy()
    out[order[drop]] = -np.inf
    return out


def sample(
    logits: np.ndarray,
    window: np.ndarray,
    temperature: float,
    top_p: float,
    rp: float,
    seed: int,
    frame: int,
    slot: int,
) -> int:
    x = penalise(logits, window, rp)
    if temperature == 0.0:
        return int(np.argmax(x))
    x = top_p_mask(x, top_p)
    x = (x / F32(max(temperature, 1e-5))).astype(F32)
    p = _softmax(x)
    u = uniforms(seed, len(p), frame, slot)
    with np.errstate(divide="ignore"):
        q = (-np.log(u)).astype(F32)
        ratio = np.where(p > 0, p / q, F32(0.0))
    return int(np.argmax(ratio))  # first maximum = lowest index, like the strict '>' in Rust


def window_columns(history: np.ndarray, d: int) -> np.ndarray:
    """fish-speech decode_n_tokens: the window of decoded frame d over a zero-initialised
    history [1+N, max] of decoded frames (columns 0..16 while d < 16, else d-16..d)."""
    return history[:, :WINDOW] if d < WINDOW else history[:, d - WINDOW : d]
