"""Small byte-level BPE vocabularies for random checkpoints.

`train_bpe` learns merges on a sample text pre-split with fish-speech's regex, so the tiny
tokenizer merges real English/Chinese/Japanese pieces and the tokenizer golden test exercises
multi-byte merges. `synthetic_ranks` pads a vocabulary to an exact rank count (S1-mini's 151,643)
with deterministic random concatenations: shape-faithful, linguistically meaningless.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import regex

from .tokenizer_files import FISH_TIKTOKEN_PATTERN

SAMPLE_TEXT = Path(__file__).with_name("data") / "bpe_sample.txt"


def train_bpe(text: str, num_merges: int) -> list[bytes]:
    """Tokens in rank order: the 256 single bytes, then merges in the order they were learned."""
    words: Counter[tuple[bytes, ...]] = Counter()
    for m in regex.finditer(FISH_TIKTOKEN_PATTERN, text):
        words[tuple(bytes([b]) for b in m.group(0).encode("utf-8"))] += 1
    vocab = [bytes([b]) for b in range(256)]
    seen = set(vocab)
    for _ in range(num_merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:], strict=False):
                pairs[(a, b)] += n
        if not pairs:
            break
        # Highest count, ties to the smallest pair: deterministic regardless of dict order.
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merged = best[0] + best[1]
        if merged not in seen:
            seen.add(merged)
            vocab.append(merged)
        new_words: Counter[tuple[bytes, ...]] = Counter()
        for w, n in words.items():
            out: list[bytes] = []
            i = 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += n
        words = new_words
    return vocab


def synthetic_ranks(base: list[bytes], count: int, seed: int) -> list[bytes]:
    """Extends `base` to exactly `count` unique tokens by concatenating existing ones (≤ 16 bytes)."""
    rng = np.random.default_rng(seed)
    vocab = list(base)
    seen = set(vocab)
    while len(vocab) < count:
        n = len(vocab)
        idx = rng.integers(0, n, size=4096)
        for a, b in zip(idx[0::2], idx[1::2], strict=True):
            tok = vocab[a] + vocab[b]
            if len(tok) <= 16 and tok not in seen:
                seen.add(tok)
                vocab.append(tok)
                if len(vocab) == count:
                    break
    return vocab
