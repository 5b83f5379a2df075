"""Philox4x32-10 (Salmon et al., Random123) in numpy: the engine's sampling RNG (bundle-format.md)."""

from __future__ import annotations

import numpy as np

M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = np.uint64(0xFFFFFFFF)
KNOWN_ANSWER = ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8))


def philox4x32_10(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """counter: [..., 4] uint32 -> [..., 4] uint32 output words (vectorised over leading axes)."""
    c = [counter[..., i].astype(np.uint64) for i in range(4)]
    k0, k1 = key[0] & 0xFFFFFFFF, key[1] & 0xFFFFFFFF
    for r in range(10):
        if r:
            k0 = (k0 + W0) & 0xFFFFFFFF
            k1 = (k1 + W1) & 0xFFFFFFFF
        p0 = M0 * c[0]
        p1 = M1 * c[2]
        hi0, lo0 = p0 >> np.uint64(32), p0 & MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & MASK32
        c = [hi1 ^ c[1] ^ np.uint64(k0), lo1, hi0 ^ c[3] ^ np.uint64(k1), lo0]
    return np.stack(c, axis=-1).astype(np.uint32)


def uniforms(seed: int, n: int, frame: int, slot: int) -> np.ndarray:
    """u_i for i in 0..n: counter (i, frame, slot, 0), key (seed lo, seed hi), first word x,
    u = ((x >> 8) + 0.5) / 2^24 evaluated in f32 (so the top value rounds to 1.0, as in Rust)."""
    ctr = np.zeros((n, 4), dtype=np.uint32)
    ctr[:, 0] = np.arange(n, dtype=np.uint32)
    ctr[:, 1] = frame
    ctr[:, 2] = slot
    x = philox4x32_10(ctr, (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF))[:, 0]
    return ((x >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) / np.float32(16777216.0)


def check_known_answer() -> None:
    ctr, key, want = KNOWN_ANSWER
    got = tuple(int(v) for v in philox4x32_10(np.array(ctr, dtype=np.uint32), key))
    if got != want:
        raise AssertionError(f"Philox4x32-10 known answer: got {[hex(v) for v in got]}, want {[hex(v) for v in want]}")
