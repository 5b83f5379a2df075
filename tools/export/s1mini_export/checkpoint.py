"""The Hugging Face checkpoint layout of fishaudio/openaudio-s1-mini: config + weights, validated.

Every dimension comes from config.json (resolved like fish-speech's DualARModelArgs) and every
weight's shape is checked against it, so a config that does not match the weights fails here with
the key and the config fields at fault instead of deep inside the ONNX export.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .errors import ExportError
from .tokenizer_files import TokenIds, read_tiktoken_ranks, resolve_token_ids

CHECKPOINT_FILES = ("config.json", "special_tokens.json", "tokenizer.tiktoken", "model.pth", "codec.pth")


@dataclass(frozen=True)
class LlmConfig:
    """config.json of a dual_ar checkpoint, with fish-speech's fallbacks for the fast_* fields."""

    dim: int
    n_layer: int
    n_head: int
    n_local_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_seq_len: int
    rope_base: float
    norm_eps: float
    attention_qk_norm: bool
    attention_qkv_bias: bool
    attention_o_bias: bool
    tie_word_embeddings: bool
    codebook_size: int
    num_codebooks: int
    scale_codebook_embeddings: bool
    n_fast_layer: int
    fast_dim: int
    fast_n_head: int
    fast_n_local_heads: int
    fast_head_dim: int
    fast_intermediate_size: int
    fast_attention_qk_norm: bool
    fast_attention_qkv_bias: bool
    fast_attention_o_bias: bool

    def manifest_dict(self) -> dict:
        return asdict(self)


_REQUIRED = ("dim", "n_layer", "n_head", "vocab_size", "codebook_size", "num_codebooks")


def load_config(path: Path) -> LlmConfig:
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: invalid JSON ({e})") from None
    if d.get("model_type") != "dual_ar":
        raise ExportError(f"{path}: model_type is {d.get('model_type')!r}, expected 'dual_ar'")
    for key in _REQUIRED:
        if not isinstance(d.get(key), int) or d[key] <= 0:
            raise ExportError(f"{path}: field {key!r} missing or not a positive integer")

    # Defaults and fallbacks of fish_speech BaseModelArgs / DualARModelArgs.__post_init__.
    n_head = d["n_head"]
    n_local = d.get("n_local_heads", -1)
    n_local = n_head if n_local == -1 else n_local
    head_dim = d.get("head_dim", 64)
    head_dim = d["dim"] // n_head if head_dim is None else head_dim
    inter = d.get("intermediate_size")
    if inter is None:
        n_hidden = int(2 * 4 * d["dim"] / 3)
        inter = n_hidden if n_hidden % 256 == 0 else n_hidden + 256 - n_hidden % 256
    qk_norm = bool(d.get("attention_qk_norm", False))
    qkv_bias = bool(d.get("attention_qkv_bias", False))
    o_bias = bool(d.get("attention_o_bias", False))

    def fb(key: str, default):  # fish-speech uses `x or default` for the sizes
        v = d.get(key)
        return v if v else default

    def fbool(key: str, default: bool) -> bool:
        v = d.get(key)
        return default if v is None else bool(v)

    cfg = LlmConfig(
        dim=d["dim"],
        n_layer=d["n_layer"],
        n_head=n_head,
        n_local_heads=n_local,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=d["vocab_size"],
        max_seq_len=d.get("max_seq_len", 2048),
        rope_base=float(d.get("rope_base", 10000)),
        norm_eps=float(d.get("norm_eps", 1e-5)),
        attention_qk_norm=qk_norm,
        attention_qkv_bias=qkv_bias,
        attention_o_bias=o_bias,
        tie_word_embeddings=bool(d.get("tie_word_embeddings", True)),
        codebook_size=d["codebook_size"],
        num_codebooks=d["num_codebooks"],
        scale_codebook_embeddings=bool(d.get("scale_codebook_embeddings", False)),
        n_fast_layer=d.get("n_fast_layer", 4),
        fast_dim=fb("fast_dim", d["dim"]),
        fast_n_head=fb("fast_n_head", n_head),
        fast_n_local_heads=fb("fast_n_local_heads", n_local),
        fast_head_dim=fb("fast_head_dim", head_dim),
        fast_intermediate_size=fb("fast_intermediate_size", inter),
        fast_attention_qk_norm=fbool("fast_attention_qk_norm", qk_norm),
        fast_attention_qkv_bias=fbool("fast_attention_qkv_bias", qkv_bias),
        fast_attention_o_bias=fbool("fast_attention_o_bias", o_bias),
    )
    if cfg.n_head % cfg.n_local_heads or cfg.fast_n_head % cfg.fast_n_local_heads:
        raise ExportError(f"{path}: n_head must be a multiple of n_local_heads (also for fast_*)")
    if cfg.head_dim % 2 or cfg.fast_head_dim % 2:
        raise ExportError(f"{path}: head_dim and fast_head_dim must be even (RoPE pairs)")
    return cfg


def expected_shapes(cfg: LlmConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Checkpoint key -> (shape, the config fields that determine it)."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}

    def block(prefix: str, dim: int, nh: int, nkv: int, hd: int, inter: int, qk: bool, qkvb: bool, ob: bool, f: str):
        a = f"{prefix}.attention"
        out[f"{a}.wqkv.weight"] = (((nh + 2 * nkv) * hd, dim), f"{f}dim, {f}n_head, {f}n_local_heads, {f}head_dim")
        if qkvb:
            out[f"{a}.wqkv.bias"] = (((nh + 2 * nkv) * hd,), f"{f}attention_qkv_bias")
        out[f"{a}.wo.weight"] = ((dim, nh * hd), f"{f}dim, {f}n_head, {f}head_dim")
        if ob:
            out[f"{a}.wo.bias"] = ((dim,), f"{f}attention_o_bias")
        if qk:
            out[f"{a}.q_norm.weight"] = ((hd,), f"{f}head_dim")
            out[f"{a}.k_norm.weight"] = ((hd,), f"{f}head_dim")
        ff = f"{prefix}.feed_forward"
        out[f"{ff}.w1.weight"] = ((inter, dim), f"{f}dim, {f}intermediate_size")
        out[f"{ff}.w3.weight"] = ((inter, dim), f"{f}dim, {f}intermediate_size")
        out[f"{ff}.w2.weight"] = ((dim, inter), f"{f}dim, {f}intermediate_size")
        out[f"{prefix}.attention_norm.weight"] = ((dim,), f"{f}dim")
        out[f"{prefix}.ffn_norm.weight"] = ((dim,), f"{f}dim")

    c = cfg
    out["embeddings.weight"] = ((c.vocab_size, c.dim), "vocab_size, dim")
    out["codebook_embeddings.weight"] = (
        (c.codebook_size * c.num_codebooks, c.dim),
        "codebook_size, num_codebooks, dim",
    )
    for i in range(c.n_layer):
        block(
            f"layers.{i}",
            c.dim,
            c.n_head,
            c.n_local_heads,
            c.head_dim,
            c.intermediate_size,
            c.attention_qk_norm,
            c.attention_qkv_bias,
            c.attention_o_bias,
            "",
        )
    out["norm.weight"] = ((c.dim,), "dim")
    if not c.tie_word_embeddings:
        out["output.weight"] = ((c.vocab_size, c.dim), "vocab_size, dim, tie_word_embeddings")
    if c.fast_dim != c.dim:
        out["fast_project_in.weight"] = ((c.fast_dim, c.dim), "fast_dim, dim")
        out["fast_project_in.bias"] = ((c.fast_dim,), "fast_dim")
    out["fast_embeddings.weight"] = ((c.codebook_size, c.fast_dim), "codebook_size, fast_dim")
    for i in range(c.n_fast_layer):
        block(
            f"fast_layers.{i}",
            c.fast_dim,
            c.fast_n_head,
            c.fast_n_local_heads,
            c.fast_head_dim,
            c.fast_intermediate_size,
            c.fast_attention_qk_norm,
            c.fast_attention_qkv_bias,
            c.fast_attention_o_bias,
            "fast_",
        )
    out["fast_norm.weight"] = ((c.fast_dim,), "fast_dim")
    out["fast_output.weight"] = ((c.codebook_size, c.fast_dim), "codebook_size, fast_dim")
    return out


def load_llm_weights(path: Path, cfg: LlmConfig) -> OrderedDict[str, torch.Tensor]:
    """model.pth -> state dict with exactly the keys of expected_shapes(), in that order.

    Normalised like BaseTransformer.from_pretrained: Lightning 'state_dict' wrapper and 'model.'
    prefix removed, 'audio_' keys dropped, split wq/wk/wv fused into wqkv (Attention.load_hook).
    Dtype is kept (bf16 in the real checkpoint); callers cast.
    """
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    try:
        sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise ExportError(f"{path}: cannot load ({str(e).splitlines()[0]})") from None
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        raise ExportError(f"{path}: not a state dict")
    if next(iter(sd)).startswith("model."):
        sd = {k.replace("model.", ""): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if "audio_" not in k}
    for k in [k for k in sd if k.endswith(".attention.wq.weight")]:
        p = k[: -len("wq.weight")]
        sd[p + "wqkv.weight"] = torch.cat([sd.pop(p + "wq.weight"), sd.pop(p + "wk.weight"), sd.pop(p + "wv.weight")])

    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, (shape, fields) in expected_shapes(cfg).items():
        if key not in sd:
            raise ExportError(f"{path}: missing weight {key!r} (expected by config.json: {fields})")
        got = tuple(sd[key].shape)
        if got != shape:
            raise ExportError(f"{path}: {key} has shape {list(got)}, but config.json ({fields}) implies {list(shape)}")
        out[key] = sd[key]
    return out


@dataclass(frozen=True)
class Checkpoint:
    dir: Path
    config: LlmConfig
    tokens: TokenIds

    @property
    def model_pth(self) -> Path:
        return self.dir / "model.pth"

    @property
    def codec_pth(self) -> Path:
        return self.dir / "codec.pth"


def open_checkpoint(ckpt_dir: Path, need_llm: bool, need_codec: bool) -> Checkpoint:
    """Checks the files needed for the requested parts exist and config + tokens are consistent."""
    if not ckpt_dir.is_dir():
        raise ExportError(f"{ckpt_dir}: checkpoint directory not found")
    needed = ["config.json", "special_tokens.json", "tokenizer.tiktoken"]
    if need_llm:
        needed.append("model.pth")
    if need_codec:
        needed.append("codec.pth")
    for name in needed:
        if not (ckpt_dir / name).is_file():
            raise ExportError(f"{ckpt_dir / name}: file not found")
    cfg = load_config(ckpt_dir / "config.json")
    ranks = read_tiktoken_ranks(ckpt_dir / "tokenizer.tiktoken")
    tokens = resolve_token_ids(ckpt_dir / "special_tokens.json", len(ranks))
    last_id = max(tokens.special.values())
    if last_id >= cfg.vocab_size:
        raise ExportError(
            f"{ckpt_dir / 'config.json'}: vocab_size {cfg.vocab_size} is too small for token id {last_id} "
            f"(special_tokens.json)"
        )
    if tokens.semantic_rows > cfg.codebook_size:
        raise ExportError(
            f"{ckpt_dir / 'config.json'}: codebook_size {cfg.codebook_size} < {tokens.semantic_rows} semantic tokens"
        )
    return Checkpoint(dir=ckpt_dir, config=cfg, tokens=tokens)
