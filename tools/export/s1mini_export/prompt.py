"""The S1 TTS prompt, built from the bundle's tokenizer files alone (what the engine implements).

Mirrors generate_long + ContentSequence(modality="interleave").encode_for_inference: each part is
tokenised on its own (so BPE never merges across part boundaries), in this order:
    <|interleave|>
    per reference: "<|speaker:0|>" ref_text  <semantic tokens of code row 0>  <|im_end|>
    "<|speaker:0|>" text
Rows 1..N carry the reference codes at the semantic positions and 0 elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tiktoken

from .tokenizer_files import (
    FISH_TIKTOKEN_PATTERN,
    TIKTOKEN_MAX_ENCODE_CHARS,
    TokenIds,
    read_tiktoken_ranks,
    resolve_token_ids,
)

SPEAKER = "<|speaker:0|>"


def load_encoding(bundle_or_ckpt: Path) -> tuple[tiktoken.Encoding, TokenIds]:
    ranks = read_tiktoken_ranks(bundle_or_ckpt / "tokenizer.tiktoken")
    ids = resolve_token_ids(bundle_or_ckpt / "special_tokens.json", len(ranks))
    enc = tiktoken.Encoding(
        name="s1mini", pat_str=FISH_TIKTOKEN_PATTERN, mergeable_ranks=ranks, special_tokens=ids.special
    )
    return enc, ids


def encode(enc: tiktoken.Encoding, text: str) -> list[int]:
    out: list[int] = []
    for i in range(0, len(text), TIKTOKEN_MAX_ENCODE_CHARS):
        out += enc.encode(text[i : i + TIKTOKEN_MAX_ENCODE_CHARS], allowed_special="all", disallowed_special=())
    return out


def build_prompt(
    enc: tiktoken.Encoding, ids: TokenIds, num_codebooks: int, text: str, references: list[tuple[str, np.ndarray]] = ()
) -> np.ndarray:
    """-> [1 + num_codebooks, T] int64. references: (text, codes [num_codebooks, n])."""
    cols: list[np.ndarray] = []

    def text_part(s: str) -> None:
        t = encode(enc, s)
        c = np.zeros((1 + num_codebooks, len(t)), dtype=np.int64)
        c[0] = t
        cols.append(c)

    text_part("<|interleave|>")
    for ref_text, codes in references:
        text_part(SPEAKER)
        text_part(ref_text)
        codes = np.asarray(codes, dtype=np.int64)
        c = np.zeros((1 + num_codebooks, codes.shape[1]), dtype=np.int64)
        c[0] = codes[0] + ids.semantic_begin
        c[1:] = codes
        cols.append(c)
        text_part("<|im_end|>")
    text_part(SPEAKER)
    text_part(text)
    return np.concatenate(cols, axis=1)
