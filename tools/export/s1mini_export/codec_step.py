"""The stateful codec decoder: codes of one chunk + carried state -> the chunk's PCM + new state.

`DecodeStepGraph` (exported as codec_decode_step.onnx) re-implements the decode path's forward
(codec_graph.DecodeGraph: codebooks -> post_module -> upsample -> decoder) over fish-speech's own
modules and weights, with every piece of left context made an explicit tensor:

- post_module (WindowLimitedTransformer, causal window W): per layer the rotated keys and the
  values of the W - 1 positions before the chunk, `past.keys` / `past.values`
  [n_layer, 1, n_head, W - 1, head_dim]. Slot j holds position start_frame - (W - 1) + j; slots at
  negative positions are masked (a fresh state is all zeros at start_frame 0). Query i (position
  p_i = start_frame + i) sees key position p iff p_i - W < p <= p_i and p >= 0: fish-speech's
  make_window_limited_mask (column >= row - W + 1, column <= row) at absolute positions. RoPE
  indexes fish-speech's (bf16-rounded) table at the absolute positions.
- every causal conv of stride 1 (ConvNeXt depthwise k7, the decoder's k7 convs, the residual
  units' dilated k7 convs): its last (k - 1) * dilation input samples, `past.<module path>`
  [1, C_in, (k - 1) * dilation]; zeros = the one-shot decode's zero left padding.
- every causal transposed conv (kernel k, stride s, tail trimmed): its last ceil(k / s) - 1 input
  samples (1 for the decoder's k = 2s; 0 for upsample's k = s, which has no state).

Outputs are `pcm` [1, 1, T * frame_samples] and `present.<name>` of the same shapes as the
`past.<name>` inputs, to be fed back as the next chunk's `past.<name>`. Each call costs its own T
frames plus a fixed W - 1 keys of attention: nothing grows with start_frame. Chunks of any sizes,
fed in order from a zero state at start_frame 0, give the one-shot decode's samples (tested to
float rounding); start_frame + T must stay <= max_decode_frames (the RoPE table).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .codec_graph import _fish, convnext_tail, from_codes, rope_table, snake, trans_conv

KEYS, VALUES = "keys", "values"


class _Carry:
    """The state of one call: `past` tensors by name (None: all zeros) in, `present` out, and
    the state's names and shapes in call order (`spec`)."""

    def __init__(self, past: dict[str, Tensor] | None, dtype: torch.dtype) -> None:
        self.past = past
        self.dtype = dtype
        self.present: dict[str, Tensor] = {}
        self.spec: dict[str, list[int]] = {}

    def take(self, name: str, shape: list[int]) -> Tensor:
        assert name not in self.spec, name
        self.spec[name] = shape
        if self.past is None:
            return torch.zeros(shape, dtype=self.dtype)
        return self.past[name]

    def put(self, name: str, t: Tensor) -> None:
        self.present[name] = t


class DecodeStepGraph(nn.Module):
    """(codes [1, N, T] int64, start_frame [1] int64, *past) -> (pcm [1, 1, T * frame_samples]
    f32, *present); `state_spec()` names the state tensors, in input order."""

    def __init__(self, dac: nn.Module, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        md, _, _ = _fish()
        self.dac = dac
        self.compute_dtype = compute_dtype
        q = dac.quantizer
        self.semantic_max = q.semantic_quantizer.codebook_size - 1
        self.residual_max = q.quantizer.codebook_size - 1
        self.names = {id(m): n for n, m in dac.named_modules()}
        post = q.post_module
        assert isinstance(post, md.WindowLimitedTransformer) and post.causal and post.channels_first
        if post.window_size is None:
            raise ValueError("post_module has unbounded attention: no finite state")
        self.window = int(post.window_size)
        with torch.no_grad():
            carry = _Carry(None, compute_dtype)
            self._forward(torch.zeros(1, 1 + len(q.quantizer.quantizers), 1, dtype=torch.int64),
                          torch.zeros(1, dtype=torch.int64), carry)
        self.spec: dict[str, list[int]] = carry.spec

    def state_spec(self) -> list[tuple[str, list[int]]]:
        """[(name, shape)] of the state, in the graph's input order (`past.<name>`)."""
        return list(self.spec.items())

    def forward(self, codes: Tensor, start_frame: Tensor, *past: Tensor) -> tuple[Tensor, ...]:
        carry = _Carry(dict(zip(self.spec, past, strict=True)), self.compute_dtype)
        pcm = self._forward(codes, start_frame, carry)
        return (pcm, *(carry.present[n] for n in self.spec))

    def _forward(self, codes: Tensor, start_frame: Tensor, carry: _Carry) -> Tensor:
        q = self.dac.quantizer
        sem = codes[:, :1].clamp(0, self.semantic_max)
        res = codes[:, 1:].clamp(0, self.residual_max)
        z = from_codes(q.semantic_quantizer, sem) + from_codes(q.quantizer, res)  # [1, D, T]
        z = self._window_transformer(q.post_module, z, start_frame[0], carry)
        z = self._run(q.upsample, z, carry)  # [1, D, 4T]
        return self._run(self.dac.decoder, z, carry).float()  # [1, 1, T * frame_samples]

    # ---------------------------------------------------------------------------------------------
    # post_module with a rolling window of keys/values

    def _window_transformer(self, m: nn.Module, x: Tensor, start: Tensor, carry: _Carry) -> Tensor:
        md, _, _ = _fish()
        x = m.input_proj(x.transpose(1, 2))  # [1, T, D]
        x = m.look_ahead_conv(x)
        t = x.shape[1]
        w, p = self.window, self.window - 1
        att0 = m.layers[0].attention
        assert att0.n_head == att0.n_local_heads, "post_module has no grouped-query attention"
        n_layer, h, d = len(m.layers), att0.n_head, att0.head_dim
        keys = carry.take(KEYS, [n_layer, 1, h, p, d])
        values = carry.take(VALUES, [n_layer, 1, h, p, d])
        pos = torch.arange(t) + start  # [T] absolute positions of the chunk
        freqs = rope_table(m)[pos]  # [T, d / 2, 2] f32
        kpos = torch.cat([torch.arange(p) + (start - p), pos])  # [P + T] key positions
        qi, kj = pos[:, None], kpos[None, :]
        mask = ((kj <= qi) & (kj > qi - w) & (kj >= 0))[None, None]  # [1, 1, T, P + T]
        new_k, new_v = [], []
        for i, layer in enumerate(m.layers):
            a = layer.attention
            hx = layer.attention_norm(x)
            qkv = a.wqkv(hx)
            kv = a.n_local_heads * a.head_dim
            qq, kk, vv = qkv.split([kv, kv, kv], dim=-1)
            qq = md.apply_rotary_emb(qq.view(1, t, h, d), freqs).transpose(1, 2)  # [1, H, T, d]
            kk = md.apply_rotary_emb(kk.view(1, t, h, d), freqs).transpose(1, 2)
            vv = vv.view(1, t, h, d).transpose(1, 2)
            kk = torch.cat([keys[i], kk], dim=2)  # [1, H, P + T, d]
            vv = torch.cat([values[i], vv], dim=2)
            new_k.append(kk[:, :, -p:])
            new_v.append(vv[:, :, -p:])
            y = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask)
            y = a.wo(y.transpose(1, 2).contiguous().view(1, t, h * d))
            x = x + layer.attention_layer_scale(y)
            x = x + layer.ffn_layer_scale(layer.feed_forward(layer.ffn_norm(x)))
        carry.put(KEYS, torch.stack(new_k))
        carry.put(VALUES, torch.stack(new_v))
        x = m.norm(x)
        return m.output_proj(x).transpose(1, 2)

    # ---------------------------------------------------------------------------------------------
    # convolutions with carried left context (codec_graph.run with state)

    def _run(self, m: nn.Module, x: Tensor, carry: _Carry) -> Tensor:
        md, rvq, Snake1d = _fish()
        if isinstance(m, nn.Sequential):
            for child in m:
                x = self._run(child, x, carry)
            return x
        if isinstance(m, (md.DecoderBlock,)):
            return self._run(m.block, x, carry)
        if isinstance(m, md.Decoder):
            return self._run(m.model, x, carry)
        if isinstance(m, md.ResidualUnit):
            return x + self._run(m.block, x, carry)
        if isinstance(m, Snake1d):
            return snake(x, m.alpha)
        if isinstance(m, (md.CausalConvNet, rvq.CausalConvNet)):
            return self._conv(m, x, carry)
        if isinstance(m, (md.CausalTransConvNet, rvq.CausalTransConvNet)):
            return self._trans_conv(m, x, carry)
        if isinstance(m, rvq.ConvNeXtBlock):
            return convnext_tail(m, x, self._conv(m.dwconv, x, carry))
        if isinstance(m, (nn.Tanh, nn.Identity)):
            return m(x)
        raise TypeError(f"codec step export: no stateful forward for {type(m).__name__}")

    def _conv(self, m: nn.Module, x: Tensor, carry: _Carry) -> Tensor:
        # x [1, C, L] -> [1, C', L]: the conv over (last `pad` inputs, x), no padding.
        assert m.stride == 1, "decode path convs have stride 1"
        pad = int(m.padding)  # (k - 1) * dilation
        if pad == 0:
            return m.conv(x)
        xx = torch.cat([carry.take(self.names[id(m)], [1, int(m.conv.in_channels), pad]), x], dim=-1)
        carry.put(self.names[id(m)], xx[..., -pad:])
        return m.conv(xx)

    def _trans_conv(self, m: nn.Module, x: Tensor, carry: _Carry) -> Tensor:
        # x [1, C, L] -> [1, C', L * s]: output block t of the one-shot decode depends on inputs
        # t - n..t, n = ceil(k / s) - 1; with those n inputs prepended, the stride-1 conv form
        # (codec_graph.trans_conv) gives exactly the chunk's L blocks.
        s, k = int(m.stride), int(m.kernel_size)
        assert m.conv.dilation[0] == 1 and m.conv.padding[0] == 0
        n = math.ceil(k / s) - 1
        if n == 0:
            return trans_conv(m, x)
        xx = torch.cat([carry.take(self.names[id(m)], [1, int(m.conv.in_channels), n]), x], dim=-1)
        carry.put(self.names[id(m)], xx[..., -n:])
        return trans_conv(m, xx)


@torch.no_grad()
def stream_decode(step: DecodeStepGraph, codes: Tensor, chunks: list[int]) -> Tensor:
    """Decodes codes [1, N, T] chunk by chunk through `step` in PyTorch (chunk sizes cycled from
    `chunks`: the first, then the rest repeating the last); returns pcm [1, 1, T * frame]."""
    past = [torch.zeros(s, dtype=step.compute_dtype) for _, s in step.state_spec()]
    out, s, i = [], 0, 0
    t = codes.shape[-1]
    while s < t:
        n = chunks[min(i, len(chunks) - 1)]
        e = min(t, s + n)
        pcm, *past = step(codes[..., s:e], torch.tensor([s]), *past)
        out.append(pcm)
        s, i = e, i + 1
    return torch.cat(out, dim=-1)
