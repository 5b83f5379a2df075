"""Export-friendly forward passes over fish-speech's own codec modules.

The ONNX graphs run fish-speech's modules and weights (convs, Snake, ConvNeXt, transformer blocks,
codebooks) but not three of its forward functions, which do not trace to a graph with a dynamic
length:
- `WindowLimitedTransformer.forward` builds its window mask with `torch.ones(T, T)` (a constant once
  traced) and indexes a bf16 RoPE buffer; here the mask comes from `arange` of the input's shape and
  the RoPE table is the same buffer widened to f32 (bf16 -> f32 is exact). The 16384² / 4096² bool
  `causal_mask` buffers are never read, so they are not in the graphs.
- `CausalConvNet.forward` computes a right "extra padding" with `math.ceil` of the length (a
  constant once traced). It is 0 for every stride-1 conv, and for the strided encoder convs once the
  input is a multiple of the frame length, which `DAC.encode` (and our encode graph) pads to first.
- `DownsampleResidualVectorQuantize.decode` clamps codes through an in-place index_put; here it is a
  plain clamp per codebook group.
Weight-norm parametrizations are removed (folded into plain conv weights) before export.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _fish():  # imported lazily: fish-speech pulls in audiotools, hydra, librosa (~2 s)
    from dac.nn.layers import Snake1d
    from fish_speech.models.dac import modded_dac as md
    from fish_speech.models.dac import rvq

    return md, rvq, Snake1d


def snake(x: Tensor, alpha: Tensor) -> Tensor:
    # dac.nn.layers.snake without its reshape (a no-op on [B, C, T]) and without torch.jit.script;
    # sin² as s * s (a Mul) rather than pow(2), which ONNX Runtime's CPU Pow runs more slowly.
    s = torch.sin(alpha * x)
    return x + (alpha + 1e-9).reciprocal() * (s * s)


def trans_conv_taps(m: nn.Module) -> tuple[Tensor, Tensor | None]:
    """A causal transposed conv (kernel k, stride s, groups 1) as a stride-1 conv with n + 1 taps,
    n = ceil(k / s) - 1, and C_out * s output channels (channel o * s + j = output sample j of
    each block of s): (weight [C_out * s, C_in, n + 1], bias [C_out * s] or None).

    Output block t of the transposed conv (its tail trimmed) is sum_q W[:, :, q s + j] x[t - q],
    q = 0..n; tap tau of the conv multiplies x[t - n + tau], so it holds kernel block q = n - tau.
    ONNX Runtime's CPU ConvTranspose (GEMM + col2im) ran at about half the rate of its Conv on
    the same FLOPs (codec profile, docs/rust-core.md "Codec speed"). Precomputed on the module by
    `prepare_for_export` (a buffer, so `.half()` converts it); computed here otherwise."""
    cached = getattr(m, "conv_taps", None)
    if cached is not None:
        return cached, getattr(m, "conv_taps_bias", None)
    conv = m.conv
    assert conv.groups == 1 and conv.dilation[0] == 1 and conv.padding[0] == 0 and conv.output_padding[0] == 0
    w = conv.weight  # [C_in, C_out, k]
    c_in, c_out, k = w.shape
    s = int(m.stride)
    n = math.ceil(k / s) - 1
    blocks = []
    for q in range(n, -1, -1):  # tap tau = n - q
        b = w[..., q * s : min(k, (q + 1) * s)]
        if b.shape[-1] < s:
            b = torch.cat([b, b.new_zeros(c_in, c_out, s - b.shape[-1])], dim=-1)
        blocks.append(b)
    taps = torch.stack(blocks, dim=-1)  # [C_in, C_out, s, n + 1]
    weight = taps.permute(1, 2, 0, 3).reshape(c_out * s, c_in, n + 1).contiguous()
    bias = None if conv.bias is None else conv.bias.repeat_interleave(s)
    return weight, bias


def trans_conv(m: nn.Module, xx: Tensor) -> Tensor:
    """xx [B, C_in, n + L] (n = ceil(k / s) - 1 samples of left context, then the L inputs) ->
    [B, C_out, L * s]: the causal transposed conv's output for the L inputs, tail trimmed."""
    weight, bias = trans_conv_taps(m)
    s = int(m.stride)
    y = F.conv1d(xx, weight, bias)  # [B, C_out * s, L]
    b, cs, t = y.shape
    return y.view(b, cs // s, s, t).transpose(2, 3).reshape(b, cs // s, t * s)


def run(m: nn.Module, x: Tensor) -> Tensor:
    """Applies a codec sub-module the way fish-speech's forward does, with traceable shapes."""
    md, rvq, Snake1d = _fish()
    if isinstance(m, nn.Sequential):
        for child in m:
            x = run(child, x)
        return x
    if isinstance(m, (md.Encoder, md.EncoderBlock, md.DecoderBlock)):
        return run(m.block, x)
    if isinstance(m, md.Decoder):
        return run(m.model, x)
    if isinstance(m, md.ResidualUnit):
        # Causal and stride 1: y has x's length, so fish-speech's crop of x is a no-op.
        return x + run(m.block, x)
    if isinstance(m, Snake1d):
        return snake(x, m.alpha)
    if isinstance(m, (md.CausalConvNet, rvq.CausalConvNet)):
        # x: [B, C, L] -> [B, C', L / stride]; left pad = (k - 1) * dilation + 1 - stride.
        return m.conv(F.pad(x, (m.padding, 0)))
    if isinstance(m, (md.CausalTransConvNet, rvq.CausalTransConvNet)):
        # x: [B, C, L] -> [B, C', L * stride]: the transposed conv with its k - stride tail
        # dropped, as a conv over n zeros of left context (trans_conv_taps).
        n = math.ceil(int(m.kernel_size) / int(m.stride)) - 1
        return trans_conv(m, F.pad(x, (n, 0)) if n > 0 else x)
    if isinstance(m, rvq.ConvNeXtBlock):
        return convnext(m, x)
    if isinstance(m, md.WindowLimitedTransformer):
        return window_transformer(m, x)
    if isinstance(m, (nn.Tanh, nn.Identity)):
        return m(x)
    raise TypeError(f"codec export: no traceable forward for {type(m).__name__}")


def convnext(m: nn.Module, x: Tensor) -> Tensor:
    # x: [B, C, L] -> [B, C, L]; rvq.ConvNeXtBlock.forward with the traceable causal conv.
    return convnext_tail(m, x, run(m.dwconv, x))


def convnext_tail(m: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    # The rest of rvq.ConvNeXtBlock.forward after the depthwise conv's output y [B, C, L].
    y = y.permute(0, 2, 1)
    y = m.pwconv2(m.act(m.pwconv1(m.norm(y))))
    if m.gamma is not None:
        y = m.gamma * y
    return x + y.permute(0, 2, 1)


def window_mask(t: int | Tensor, window: int | None, device: torch.device) -> Tensor:
    """[1, 1, T, T] bool: key j visible to query i iff i - window < j <= i (fish-speech's mask)."""
    pos = torch.arange(t, device=device)
    i, j = pos[:, None], pos[None, :]
    mask = j <= i
    if window is not None:
        mask = mask & (j > i - window)
    return mask[None, None]


def window_transformer(m: nn.Module, x: Tensor, start: Tensor | None = None) -> Tensor:
    # x: [B, C, T] (channels_first) -> [B, C, T]. Same steps as WindowLimitedTransformer.forward +
    # Transformer.forward, at positions start..start+T-1 (fish-speech: always 0..T-1).
    assert m.channels_first and m.causal, "fish-speech's codec transformers are causal, channels-first"
    x = m.input_proj(x.transpose(1, 2))  # [B, T, D]
    x = m.look_ahead_conv(x)
    t = x.shape[1]
    pos = torch.arange(t, device=x.device)
    # The mask only depends on relative positions; RoPE's table does not quite: its bf16-rounded
    # cos/sin make scores depend on absolute positions by ~1e-3, hence `start` for chunked decode.
    freqs = rope_table(m)[pos if start is None else pos + start]  # [T, head_dim / 2, 2] f32
    mask = window_mask(t, m.window_size, x.device)
    for layer in m.layers:
        x = layer(x, pos, freqs, mask)
    x = m.norm(x)
    return m.output_proj(x).transpose(1, 2)


def rope_table(m: nn.Module) -> Tensor:
    """The transformer's RoPE table as f32 (fish-speech stores it bf16 and multiplies in f32)."""
    t = getattr(m, "rope_f32", None)
    return t if t is not None else m.freqs_cis.float()


def _rms_norm_forward(self: nn.Module, x: Tensor) -> Tensor:
    # modded_dac.RMSNorm.forward with .to(x.dtype) for .type_as(x): same values, but the
    # TorchScript exporter drops type_as's cast back to f16 (f32 then meets f16 weights).
    return self._norm(x.float()).to(x.dtype) * self.weight


def _apply_rotary_emb(x: Tensor, freqs_cis: Tensor) -> Tensor:
    # modded_dac.apply_rotary_emb, same change. x: [B, T, H, D], freqs_cis: [T, D / 2, 2] f32.
    xs = x.float().reshape(*x.shape[:-1], -1, 2)
    f = freqs_cis.view(1, xs.size(1), 1, xs.size(3), 2)
    out = torch.stack(
        [xs[..., 0] * f[..., 0] - xs[..., 1] * f[..., 1], xs[..., 1] * f[..., 0] + xs[..., 0] * f[..., 1]], -1
    )
    return out.flatten(3).to(x.dtype)


@contextlib.contextmanager
def export_patches() -> Iterator[None]:
    """Swaps the two fish-speech functions above in while tracing (fp16 graphs need them)."""
    md, _, _ = _fish()
    saved = md.RMSNorm.forward, md.apply_rotary_emb
    md.RMSNorm.forward, md.apply_rotary_emb = _rms_norm_forward, _apply_rotary_emb
    try:
        yield
    finally:
        md.RMSNorm.forward, md.apply_rotary_emb = saved


def prepare_for_export(dac: nn.Module) -> nn.Module:
    """In place: folds weight norm into plain weights, drops the causal-mask buffers, gives each
    transformer an f32 RoPE table (`rope_f32`) that survives a later `.half()`, and each causal
    transposed conv its stride-1 conv form (`conv_taps`, `conv_taps_bias`: trans_conv_taps)."""
    md, rvq, _ = _fish()
    from torch.nn.utils import parametrize

    for m in list(dac.modules()):
        if parametrize.is_parametrized(m):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        if hasattr(m, "weight_g") and hasattr(m, "weight_v"):
            torch.nn.utils.remove_weight_norm(m)
        if isinstance(m, (md.CausalTransConvNet, rvq.CausalTransConvNet)):
            weight, bias = trans_conv_taps(m)
            m.register_buffer("conv_taps", weight.detach().clone())
            m.register_buffer("conv_taps_bias", None if bias is None else bias.detach().clone())
        if isinstance(m, md.Transformer):
            m.causal_mask = None  # 16384² / 4096² bools: never read by our forward
            m.rope_f32 = m.freqs_cis.float()
    return dac


class DecodeGraph(nn.Module):
    """codes: [1, N, T] int64, start_frame: [1] int64 -> pcm: [1, 1, T * frame_samples] f32.

    With start_frame = 0 this is DAC.decode. A chunk decoded with left context passes the frame
    index of its first (context) frame, so that post_module's RoPE sees the positions a one-shot
    decode would: then the chunk's samples equal the one-shot ones to float rounding (~1e-6)
    instead of ~1e-4..1e-3 (fish-speech's RoPE table is bf16-rounded, so not shift-invariant).
    """

    def __init__(self, dac: nn.Module, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.dac = dac
        self.compute_dtype = compute_dtype
        q = dac.quantizer
        self.semantic_max = q.semantic_quantizer.codebook_size - 1
        self.residual_max = q.quantizer.codebook_size - 1

    def forward(self, codes: Tensor, start_frame: Tensor) -> Tensor:
        q = self.dac.quantizer
        # quantizer.decode clamps from above only; also clamping at 0 keeps ONNX Gather from
        # wrapping a negative index around (torch would raise on it instead).
        sem = codes[:, :1].clamp(0, self.semantic_max)
        res = codes[:, 1:].clamp(0, self.residual_max)
        z = from_codes(q.semantic_quantizer, sem) + from_codes(q.quantizer, res)  # [1, D, T]
        z = window_transformer(q.post_module, z, start_frame[0])
        z = run(q.upsample, z)  # [1, D, T * 4]
        pcm = run(self.dac.decoder, z)  # [1, 1, T * frame_samples]
        return pcm.float()


def from_codes(rvq_module: nn.Module, codes: Tensor) -> Tensor:
    # codes: [B, n, T] -> z_q: [B, D, T]; dac ResidualVectorQuantize.from_codes, same summation order.
    z_q: Tensor | float = 0.0
    for i, vq in enumerate(rvq_module.quantizers):
        z_p = F.embedding(codes[:, i, :], vq.codebook.weight).transpose(1, 2)  # [B, d, T]
        z_q = z_q + vq.out_proj(z_p)
    assert isinstance(z_q, Tensor)
    return z_q


def vq_encode(vq: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
    """dac VectorQuantize.forward at eval: z [B, D, T] -> (z_q [B, D, T], indices [B, T])."""
    z_e = vq.in_proj(z)  # [B, d, T]
    enc = z_e.transpose(1, 2).reshape(-1, z_e.shape[1])  # [(B T), d]
    enc = F.normalize(enc)
    cb = F.normalize(vq.codebook.weight)  # folded to a constant at export
    dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ cb.t() + cb.pow(2).sum(1, keepdim=True).t()
    indices = (-dist).max(1)[1].reshape(z.shape[0], -1)  # [B, T]
    z_q = F.embedding(indices, vq.codebook.weight).transpose(1, 2)
    # The straight-through estimator's forward value, kept op for op: z_e + (z_q - z_e) is not
    # bit-equal to z_q, and the residual chain below depends on those bits.
    z_q = z_e + (z_q - z_e)
    return vq.out_proj(z_q), indices


def rvq_encode(rvq_module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
    # dac ResidualVectorQuantize.forward at eval: z [B, D, T] -> (z_q [B, D, T], codes [B, n, T]).
    z_q: Tensor | float = 0.0
    residual = z
    codes = []
    for vq in rvq_module.quantizers:
        z_q_i, idx = vq_encode(vq, residual)
        z_q = z_q + z_q_i
        residual = residual - z_q_i
        codes.append(idx)
    assert isinstance(z_q, Tensor)
    return z_q, torch.stack(codes, dim=1)


class EncodeGraph(nn.Module):
    """pcm: [1, 1, S] f32 -> codes: [1, N, ceil(S / frame_samples)] int64 (= DAC.encode)."""

    def __init__(self, dac: nn.Module, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.dac = dac
        self.frame = int(dac.frame_length)
        self.compute_dtype = compute_dtype

    def forward(self, pcm: Tensor) -> Tensor:
        s = pcm.shape[-1]
        # DAC.encode: right-pad with zeros to a whole number of frames.
        pad = (self.frame - s % self.frame) % self.frame
        x = F.pad(pcm.to(self.compute_dtype), (0, pad))
        z = run(self.dac.encoder, x)  # [1, D, S' / hop]
        q = self.dac.quantizer
        z = run(q.downsample, z)  # [1, D, T]
        z = run(q.pre_module, z)
        semantic_z, semantic_codes = rvq_encode(q.semantic_quantizer, z)
        _, codes = rvq_encode(q.quantizer, z - semantic_z)
        return torch.cat([semantic_codes, codes], dim=1)


def receptive_field_frames(dac: nn.Module) -> int:
    """Left context, in frames, after which a decoded sample no longer depends on earlier codes.

    Walks the decode path backwards from one output sample, tracking how many earlier positions
    (at each stage's own rate) it reaches: a causal conv adds (k - 1) * dilation; a causal
    transposed conv (kernel k, stride s, tail trimmed) maps a reach of r outputs to
    ceil(r / s) + ceil(k / s) - 1 inputs; each window-limited transformer layer adds window - 1.
    Decoding every chunk with this many frames of left context (and keeping only the chunk's own
    samples) gives the samples of a one-shot decode.
    """
    md, rvq, _ = _fish()
    q = dac.quantizer
    stages: list[nn.Module] = [q.post_module, q.upsample, dac.decoder]

    def flat(m: nn.Module) -> list[nn.Module]:
        if isinstance(m, nn.Sequential):
            return [x for c in m for x in flat(c)]
        if isinstance(m, (md.Encoder, md.EncoderBlock, md.DecoderBlock)):
            return flat(m.block)
        if isinstance(m, md.Decoder):
            return flat(m.model)
        if isinstance(m, md.ResidualUnit):
            return flat(m.block)
        if isinstance(m, rvq.ConvNeXtBlock):
            return [m.dwconv]
        return [m]

    ops = [x for s in stages for x in flat(s)]
    reach = 0.0  # in positions at the current (output-side) rate
    for m in reversed(ops):
        if isinstance(m, (md.CausalConvNet, rvq.CausalConvNet)):
            assert m.stride == 1, "decode path convs have stride 1"
            reach += m.kernel_size - 1  # kernel_size here already includes dilation
        elif isinstance(m, (md.CausalTransConvNet, rvq.CausalTransConvNet)):
            s, k = m.stride, m.kernel_size
            reach = math.ceil(reach / s) + math.ceil(k / s) - 1
        elif isinstance(m, md.WindowLimitedTransformer):
            if m.window_size is None:
                raise ValueError("unbounded attention: chunked decode cannot be exact")
            reach += len(m.layers) * (m.window_size - 1)
    return int(math.ceil(reach))
