"""`--random {tiny,s1-mini}`: a checkpoint directory in the Hugging Face layout with random weights.

Weights follow fish-speech's init (BaseTransformer._init_weights): Linear and Embedding weights
~ N(0, initializer_range), biases 0, norm weights 1; stored in bf16 like the real model.pth.

One deliberate change: the rows of `output.weight` for every token that is neither a semantic
token nor <|im_end|> are zeroed. fish-speech's S1 head samples over the full vocabulary while our
bundle's head is restricted to semantic rows + <|im_end|>; with random weights a text token could
win fish-speech's argmax and the two would diverge. Zero rows give logit 0, and the maximum of
the ≥1025 random restricted logits is positive with overwhelming probability, so greedy decoding
picks the same token in both. (Real checkpoints never emit text tokens in the TTS path.)
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch

from .bpe import SAMPLE_TEXT, synthetic_ranks, train_bpe
from .checkpoint import expected_shapes, load_config
from .errors import ExportError
from .tokenizer_files import S1_SPECIAL_TOKENS, write_special_tokens, write_tiktoken

# S1MINI_FACTS §1.1, verbatim.
S1_MINI_CONFIG: dict = {
    "model_type": "dual_ar",
    "dim": 1024,
    "n_layer": 28,
    "n_head": 16,
    "n_local_heads": 8,
    "head_dim": 128,
    "intermediate_size": 3072,
    "vocab_size": 155776,
    "max_seq_len": 8192,
    "rope_base": 1000000,
    "norm_eps": 1e-06,
    "attention_qk_norm": True,
    "attention_qkv_bias": False,
    "attention_o_bias": False,
    "dropout": 0.0,
    "tie_word_embeddings": False,
    "codebook_size": 4096,
    "num_codebooks": 10,
    "scale_codebook_embeddings": True,
    "n_fast_layer": 4,
    "fast_dim": 1024,
    "fast_n_head": 16,
    "fast_n_local_heads": 8,
    "fast_head_dim": 64,
    "fast_intermediate_size": 3072,
    "fast_attention_qk_norm": False,
    "fast_attention_qkv_bias": False,
    "fast_attention_o_bias": False,
    "initializer_range": 0.03125,
    "use_gradient_checkpointing": True,
}
S1_MINI_RANKS = 151_643

# The tiny model: the same structure at toy sizes, so the committed bundle stays a few MB.
# - q width (n_head·head_dim = 64) > dim (32) and GQA 2:1, qk-norm on the slow side only, as in S1.
# - codebook_size 1024 = number of semantic tokens: the codec's residual codebooks have 1024 entries.
# - max_seq_len 4096: fish-speech refuses prompts longer than max_seq_len − 2048.
# - initializer_range 0.1 (S1: 0.03125) so that at dim 32 the random logits are peaked enough for
#   top-p to cut and greedy/sampled runs to be meaningful.
TINY_CONFIG: dict = {
    "model_type": "dual_ar",
    "dim": 32,
    "n_layer": 2,
    "n_head": 4,
    "n_local_heads": 2,
    "head_dim": 16,
    "intermediate_size": 96,
    "vocab_size": 0,
    "max_seq_len": 4096,
    "rope_base": 1000000,
    "norm_eps": 1e-06,
    "attention_qk_norm": True,
    "attention_qkv_bias": False,
    "attention_o_bias": False,
    "dropout": 0.0,
    "tie_word_embeddings": False,
    "codebook_size": 1024,
    "num_codebooks": 10,
    "scale_codebook_embeddings": True,
    "n_fast_layer": 2,
    "fast_dim": 32,
    "fast_n_head": 4,
    "fast_n_local_heads": 2,
    "fast_head_dim": 8,
    "fast_intermediate_size": 96,
    "fast_attention_qk_norm": False,
    "fast_attention_qkv_bias": False,
    "fast_attention_o_bias": False,
    "initializer_range": 0.1,
    "use_gradient_checkpointing": True,
}
TINY_MERGES = 768  # + 256 bytes = 1024 ranks

KINDS = ("tiny", "s1-mini")


def _round_up(n: int, k: int) -> int:
    return (n + k - 1) // k * k


def random_llm_state_dict(
    cfg_path: Path, num_ranks: int, special: list[str], seed: int
) -> OrderedDict[str, torch.Tensor]:
    cfg = load_config(cfg_path)
    std = json.loads(cfg_path.read_text())["initializer_range"]
    gen = torch.Generator().manual_seed(seed)
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, (shape, _) in expected_shapes(cfg).items():
        if key.endswith(".bias"):
            t = torch.zeros(shape)
        elif "norm" in key.rsplit(".", 2)[-2]:
            t = torch.ones(shape)
        else:
            t = torch.empty(shape).normal_(0.0, std, generator=gen)
        sd[key] = t.to(torch.bfloat16)
    keep = [num_ranks + i for i, name in enumerate(special) if name.startswith("<|semantic:") or name == "<|im_end|>"]
    if "output.weight" in sd:
        mask = torch.ones(cfg.vocab_size, dtype=torch.bool)
        mask[keep] = False
        sd["output.weight"][mask] = 0
    return sd


def write_random_checkpoint(kind: str, seed: int, out: Path, log=lambda m: None, with_codec: bool = True) -> None:
    """Writes config.json, special_tokens.json, tokenizer.tiktoken, model.pth and (with_codec) codec.pth."""
    if kind not in KINDS:
        raise ExportError(f"--random: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    log(f"{kind}: tokenizer")
    base = train_bpe(SAMPLE_TEXT.read_text(encoding="utf-8"), TINY_MERGES)
    if kind == "tiny":
        write_llm_checkpoint(out, dict(TINY_CONFIG), base, seed, log)
    else:
        write_llm_checkpoint(out, dict(S1_MINI_CONFIG), synthetic_ranks(base, S1_MINI_RANKS, seed), seed, log)
    if with_codec:
        from . import codec  # imported late: LLM-only use needs nothing of the codec module

        log(f"{kind}: codec weights")
        codec.random_codec_checkpoint(kind, seed, out / "codec.pth")


def write_llm_checkpoint(out: Path, cfg: dict, ranks: list[bytes], seed: int, log=lambda m: None) -> None:
    """The LLM half of a checkpoint: S1's special tokens after `ranks` (codebook_size semantic
    tokens, as S1's 4096), config.json (vocab_size 0 = smallest multiple of 64 that fits) and
    random model.pth."""
    out.mkdir(parents=True, exist_ok=True)
    special = S1_SPECIAL_TOKENS + [f"<|semantic:{i}|>" for i in range(cfg["codebook_size"])]
    if not cfg["vocab_size"]:
        # S1's own rule: last id + 1, padded to a multiple of 64 (155,754 -> 155,776).
        cfg["vocab_size"] = _round_up(len(ranks) + len(special), 64)
    write_tiktoken(out / "tokenizer.tiktoken", ranks)
    write_special_tokens(out / "special_tokens.json", special, len(ranks))
    (out / "config.json").write_text(json.dumps(cfg, indent=4, sort_keys=True) + "\n")
    log("LLM weights")
    sd = random_llm_state_dict(out / "config.json", len(ranks), special, seed)
    torch.save(sd, out / "model.pth")
