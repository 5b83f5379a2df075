"""Hyper-parameters of fish-speech's modded DAC codec, read back from a codec.pth state dict.

fish-speech builds the codec from `configs/modded_dac_vq.yaml` and then loads codec.pth into it
(`fish_speech/models/dac/inference.py` load_model). We build the same `DAC` object directly from a
`CodecConfig` so that a smaller codec of the same structure (the "tiny" test codec) loads too:

- everything that shows in a weight's shape (channels, strides, layer counts, codebook sizes, RoPE
  table length and head size) is read from the state dict;
- the attention windows do not show anywhere; a codec.pth we wrote carries them in a small
  `codec_config` dict entry (ignored by fish-speech's `load_state_dict(strict=False)`), and a real
  checkpoint, which has none, gets modded_dac_vq.yaml's values (128 for the VQ transformers, 512
  hard-coded in `EncoderBlock`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import torch

from .errors import ExportError

# The key under which a codec.pth written by us stores the hyper-parameters no shape reveals.
CONFIG_KEY = "codec_config"


@dataclass(frozen=True)
class TransformerConfig:
    """One WindowLimitedTransformer (fish_speech ModelArgs + the window)."""

    n_layer: int
    dim: int
    n_head: int
    head_dim: int
    intermediate_size: int
    block_size: int  # RoPE table and causal-mask length, in positions (frames)
    window: int  # causal attention window, in positions (the query's own included)
    rope_base: float = 10000.0
    norm_eps: float = 1e-5


@dataclass(frozen=True)
class CodecConfig:
    """modded_dac_vq.yaml, flattened. Defaults are the yaml's (the real S1-mini codec)."""

    sample_rate: int = 44100
    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    encoder_transformer_layers: tuple[int, ...] = (0, 0, 0, 4)
    # Built by fish-speech's DecoderBlock and then dropped (never registered): no weights, no effect.
    decoder_transformer_layers: tuple[int, ...] = (4, 0, 0, 0)
    # The encoder transformers' shared ModelArgs (`transformer_general_config`); their n_head is
    # dim // 64 and intermediate_size dim * 3, hard-coded in EncoderBlock.
    encoder_block_size: int = 16384
    encoder_head_dim: int = 64
    encoder_window: int = 512
    # Quantizer (DownsampleResidualVectorQuantize).
    n_codebooks: int = 9  # residual codebooks; + 1 semantic codebook
    codebook_size: int = 1024
    semantic_codebook_size: int = 4096
    codebook_dim: int = 8
    downsample_factor: tuple[int, ...] = (2, 2)
    pre: TransformerConfig = field(
        default_factory=lambda: TransformerConfig(8, 1024, 16, 64, 3072, 4096, 128)
    )
    post: TransformerConfig = field(
        default_factory=lambda: TransformerConfig(8, 1024, 16, 64, 3072, 4096, 128)
    )

    @property
    def latent_dim(self) -> int:
        # DAC(latent_dim=None): encoder_dim * 2 ** len(encoder_rates), also the quantizer's input_dim.
        return self.encoder_dim * 2 ** len(self.encoder_rates)

    @property
    def hop_length(self) -> int:
        n = 1
        for r in self.encoder_rates:
            n *= r
        return n

    @property
    def frame_samples(self) -> int:
        # DAC.frame_length = hop_length * 4 for the yaml's (2, 2) downsampling.
        n = self.hop_length
        for f in self.downsample_factor:
            n *= f
        return n

    def stored_dict(self) -> dict[str, Any]:
        """What random_codec_checkpoint writes under CONFIG_KEY (plain ints: weights_only loads it)."""
        return {
            "format": 1,
            "encoder_window": self.encoder_window,
            "pre_window": self.pre.window,
            "post_window": self.post.window,
            "pre_rope_base": self.pre.rope_base,
            "post_rope_base": self.post.rope_base,
            "pre_norm_eps": self.pre.norm_eps,
            "post_norm_eps": self.post.norm_eps,
            "decoder_transformer_layers": list(self.decoder_transformer_layers),
            "sample_rate": self.sample_rate,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


REAL = CodecConfig()

# The committed test codec: S1-mini's structure (same rates, so 2048 samples per frame at 44.1 kHz,
# 1 + 9 codebooks of codebook_dim 8), with few channels, 1-2 transformer layers and short windows.
# Codebooks are 1024 wide, the tiny LLM's codebook_size.
TINY = CodecConfig(
    encoder_dim=4,  # the encoder transformer's n_head is dim // 64: its dim 4 * 16 must reach 64
    decoder_dim=32,
    encoder_transformer_layers=(0, 0, 0, 1),
    # fish-speech would build (and drop) a decoder transformer of n_head decoder_dim // 64 = 0.
    decoder_transformer_layers=(0, 0, 0, 0),
    encoder_block_size=512,  # encoder frames (86 Hz): encodes up to 5.9 s
    encoder_head_dim=32,
    encoder_window=16,
    semantic_codebook_size=1024,
    pre=TransformerConfig(1, 64, 4, 16, 128, 512, 8),
    post=TransformerConfig(2, 64, 4, 16, 128, 512, 8),  # decodes up to 512 frames (23.8 s)
)

KINDS: dict[str, CodecConfig] = {"s1-mini": REAL, "tiny": TINY}


def build_dac(cfg: CodecConfig) -> torch.nn.Module:
    """fish-speech's DAC with cfg's sizes, built as hydra's `instantiate(modded_dac_vq.yaml)` would.

    Runs fish-speech's own constructors (random init); load weights afterwards. Works under
    `torch.device("meta")` for counting parameters without memory.
    """
    from fish_speech.models.dac.modded_dac import DAC, ModelArgs, WindowLimitedTransformer
    from fish_speech.models.dac.rvq import DownsampleResidualVectorQuantize

    def vq_transformer(t: TransformerConfig) -> WindowLimitedTransformer:
        args = ModelArgs(
            block_size=t.block_size,
            n_layer=t.n_layer,
            n_head=t.n_head,
            dim=t.dim,
            intermediate_size=t.intermediate_size,
            n_local_heads=-1,
            head_dim=t.head_dim,
            rope_base=t.rope_base,
            norm_eps=t.norm_eps,
            dropout_rate=0.1,
            attn_dropout_rate=0.1,
            channels_first=True,
        )
        return WindowLimitedTransformer(
            config=args, input_dim=cfg.latent_dim, window_size=t.window, causal=True
        )

    quantizer = DownsampleResidualVectorQuantize(
        input_dim=cfg.latent_dim,
        n_codebooks=cfg.n_codebooks,
        codebook_size=cfg.codebook_size,
        codebook_dim=cfg.codebook_dim,
        quantizer_dropout=0.5,
        downsample_factor=list(cfg.downsample_factor),
        post_module=vq_transformer(cfg.post),
        pre_module=vq_transformer(cfg.pre),
        semantic_codebook_size=cfg.semantic_codebook_size,
    )
    general = functools.partial(
        ModelArgs,
        block_size=cfg.encoder_block_size,
        n_local_heads=-1,
        head_dim=cfg.encoder_head_dim,
        rope_base=10000,
        norm_eps=1e-5,
        dropout_rate=0.1,
        attn_dropout_rate=0.1,
        channels_first=True,
    )
    dac = DAC(
        encoder_dim=cfg.encoder_dim,
        encoder_rates=list(cfg.encoder_rates),
        decoder_dim=cfg.decoder_dim,
        decoder_rates=list(cfg.decoder_rates),
        quantizer=quantizer,
        sample_rate=cfg.sample_rate,
        causal=True,
        encoder_transformer_layers=list(cfg.encoder_transformer_layers),
        decoder_transformer_layers=list(cfg.decoder_transformer_layers),
        transformer_general_config=general,
    )
    # EncoderBlock hard-codes window_size=512; a plain attribute, so a smaller codec sets its own.
    for m in dac.encoder.modules():
        if isinstance(m, WindowLimitedTransformer):
            m.window_size = cfg.encoder_window
    return dac


def normalize_state_dict(sd: Mapping[str, Any], path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """codec.pth contents -> (tensor state dict with DAC key names, stored codec_config or {}).

    Same unwrapping as fish-speech's load_model: a Lightning "state_dict" wrapper, and only the
    "generator." keys (prefix removed) when a training checkpoint holds a discriminator too.
    """
    if isinstance(sd, Mapping) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not sd:
        raise ExportError(f"{path}: not a state dict")
    extra = sd.get(CONFIG_KEY, {})
    if not isinstance(extra, Mapping):
        raise ExportError(f"{path}: {CONFIG_KEY!r} is not a dict")
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if any("generator" in k for k in tensors):
        tensors = {k.replace("generator.", ""): v for k, v in tensors.items() if "generator." in k}
    return tensors, dict(extra)


def _wn_weight(sd: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor | None:
    """The direction tensor of a conv, whatever weight-norm flavour stored it."""
    for suffix in ("conv.parametrizations.weight.original1", "conv.weight_v", "conv.weight"):
        t = sd.get(f"{prefix}.{suffix}")
        if t is not None:
            return t
    return None


def _indices(sd: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def _transformer(
    sd: Mapping[str, torch.Tensor], prefix: str, window: int, default: TransformerConfig, path: str
) -> TransformerConfig:
    layers = _indices(sd, re.escape(prefix) + r"\.layers\.(\d+)\.")
    if not layers:
        raise ExportError(f"{path}: no {prefix}.layers.* weights (not a modded DAC codec?)")
    dim = sd[f"{prefix}.norm.weight"].shape[0]
    wqkv = sd[f"{prefix}.layers.0.attention.wqkv.weight"].shape[0]
    inter = sd[f"{prefix}.layers.0.feed_forward.w1.weight"].shape[0]
    freqs = sd.get(f"{prefix}.freqs_cis")  # [block_size, head_dim / 2, 2], when persistent
    if freqs is not None:
        block_size, head_dim = freqs.shape[0], freqs.shape[1] * 2
    else:
        block_size, head_dim = default.block_size, default.head_dim
    if wqkv % (3 * head_dim):
        raise ExportError(f"{path}: {prefix} wqkv rows {wqkv} are not 3 * n_head * head_dim {head_dim}")
    return TransformerConfig(
        n_layer=len(layers),
        dim=dim,
        n_head=wqkv // (3 * head_dim),
        head_dim=head_dim,
        intermediate_size=inter,
        block_size=block_size,
        window=window,
        rope_base=default.rope_base,
        norm_eps=default.norm_eps,
    )


def config_from_state_dict(sd: Mapping[str, torch.Tensor], extra: Mapping[str, Any], path: str) -> CodecConfig:
    """Reads every size the weights reveal; windows etc. from `extra` (CONFIG_KEY) or the yaml."""
    try:
        enc_dim = _wn_weight(sd, "encoder.block.0")
        if enc_dim is None:
            raise KeyError("encoder.block.0.conv")
        encoder_dim = enc_dim.shape[0]
        # Encoder.block = [conv, EncoderBlock * n, Snake1d, conv]; EncoderBlock.block[4] is the
        # strided conv, kernel 2 * stride, block[5] the (optional) transformer.
        enc_blocks = _indices(sd, r"encoder\.block\.(\d+)\.block\.4\.conv\.")
        encoder_rates = tuple(_wn_weight(sd, f"encoder.block.{i}.block.4").shape[-1] // 2 for i in enc_blocks)
        enc_layers = tuple(len(_indices(sd, rf"encoder\.block\.{i}\.block\.5\.layers\.(\d+)\.")) for i in enc_blocks)
        enc_head_dim, enc_block = REAL.encoder_head_dim, REAL.encoder_block_size
        for i in enc_blocks:
            f = sd.get(f"encoder.block.{i}.block.5.freqs_cis")
            if f is not None:
                enc_block, enc_head_dim = f.shape[0], f.shape[1] * 2
        # Decoder.model = [conv, DecoderBlock * n, Snake1d, conv, Tanh]; DecoderBlock.block[1] is
        # the transposed conv ([in, out, 2 * stride]).
        decoder_dim = _wn_weight(sd, "decoder.model.0").shape[0]
        dec_blocks = _indices(sd, r"decoder\.model\.(\d+)\.block\.1\.conv\.")
        decoder_rates = tuple(_wn_weight(sd, f"decoder.model.{i}.block.1").shape[-1] // 2 for i in dec_blocks)
        sem = sd["quantizer.semantic_quantizer.quantizers.0.codebook.weight"]  # [size, dim]
        res = _indices(sd, r"quantizer\.quantizer\.quantizers\.(\d+)\.codebook\.weight")
        res0 = sd["quantizer.quantizer.quantizers.0.codebook.weight"]
        down = _indices(sd, r"quantizer\.downsample\.(\d+)\.0\.conv\.weight")
        downsample_factor = tuple(sd[f"quantizer.downsample.{i}.0.conv.weight"].shape[-1] for i in down)
        pre = _transformer(sd, "quantizer.pre_module", int(extra.get("pre_window", REAL.pre.window)), REAL.pre, path)
        post = _transformer(sd, "quantizer.post_module", int(extra.get("post_window", REAL.post.window)), REAL.post, path)
    except (KeyError, AttributeError, IndexError) as e:
        raise ExportError(f"{path}: missing or malformed codec weight ({e})") from None
    pre = replace(pre, rope_base=float(extra.get("pre_rope_base", pre.rope_base)),
                  norm_eps=float(extra.get("pre_norm_eps", pre.norm_eps)))
    post = replace(post, rope_base=float(extra.get("post_rope_base", post.rope_base)),
                   norm_eps=float(extra.get("post_norm_eps", post.norm_eps)))
    cfg = CodecConfig(
        sample_rate=int(extra.get("sample_rate", REAL.sample_rate)),
        encoder_dim=encoder_dim,
        encoder_rates=encoder_rates,
        decoder_dim=decoder_dim,
        decoder_rates=decoder_rates,
        encoder_transformer_layers=enc_layers,
        decoder_transformer_layers=tuple(extra.get("decoder_transformer_layers", REAL.decoder_transformer_layers)),
        encoder_block_size=enc_block,
        encoder_head_dim=enc_head_dim,
        encoder_window=int(extra.get("encoder_window", REAL.encoder_window)),
        n_codebooks=len(res),
        codebook_size=res0.shape[0],
        semantic_codebook_size=sem.shape[0],
        codebook_dim=res0.shape[1],
        downsample_factor=downsample_factor,
        pre=pre,
        post=post,
    )
    if len(cfg.decoder_transformer_layers) != len(cfg.decoder_rates):
        cfg = replace(cfg, decoder_transformer_layers=(0,) * len(cfg.decoder_rates))
    in_proj = sd.get("quantizer.semantic_quantizer.quantizers.0.in_proj.weight_v")
    if in_proj is None:
        in_proj = sd.get("quantizer.semantic_quantizer.quantizers.0.in_proj.parametrizations.weight.original1")
    if in_proj is None or cfg.latent_dim != in_proj.shape[1]:
        raise ExportError(
            f"{path}: encoder_dim {encoder_dim} * 2^{len(encoder_rates)} does not match the quantizer's input_dim"
        )
    return cfg
