"""Export-friendly torch modules of the DualAR LLM (gpt-fast style) and their ONNX export.

fish-speech's own modules keep a static 8192-slot KV cache inside the model and index it with
in-place writes; that does not export as such. The slow graph keeps the same idea through ONNX
Runtime's com.microsoft.GroupQueryAttention (GQA): per layer a cache buffer [1, Hkv, capacity, D]
is an input and the same-shaped `present` output, and when the engine binds one buffer to both
(IO binding), GQA writes the new positions in place and attends over the filled ones only, so a
decode step neither copies nor grows the cache. The fast graph (a <= 10-position cache) takes its
KV as inputs and returns the grown KV. Parameter names are the checkpoint's; the graphs reproduce
forward_generate / forward_generate_fast numerically (fp32 RMSNorm, interleaved-pair RoPE over a bf16-rounded table,
causal mask, GQA by grouping query heads, √(num_codebooks+1) scaling at audio positions).
Every branch is a tensor `where` on shapes, never Python control flow on values, so the graphs
carry no If/Loop (TensorRT friendly).
"""

from __future__ import annotations

import math
import sys
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .checkpoint import LlmConfig
from .tokenizer_files import TokenIds

OPSET = 17
PROTOBUF_LIMIT = 2 * 1024**3


def rope_table(seq_len: int, head_dim: int, base: float) -> Tensor:
    """fish-speech precompute_freqs_cis: [seq_len, head_dim/2, 2] (cos, sin), rounded to bf16.

    Kept as fp32 values of the bf16 numbers: fish multiplies fp32 activations by the bf16 table,
    which promotes to fp32, so the products are the same.
    """
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    t = torch.arange(seq_len)
    freqs = torch.outer(t, freqs)
    cis = torch.polar(torch.ones_like(freqs), freqs)
    return torch.stack([cis.real, cis.imag], dim=-1).to(torch.bfloat16).float()


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    # fish RMSNorm: normalise in fp32, cast back, then scale. Written as x / sqrt(mean(x^2) + eps)
    # (Pow, ReduceMean, Add, Sqrt, Div, Mul): the pattern ONNX Runtime's SimplifiedLayerNormFusion
    # turns into one SimplifiedLayerNormalization node, where fish's x * rsqrt(...) stays six
    # nodes per norm (113 norms per slow step, 9 per fast step: a tenth of a decoded frame's
    # time went to such element-wise nodes). Same value up to the last bit of the division.
    xf = x.float()
    y = xf / torch.sqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return y.to(x.dtype) * weight


class Norm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


def apply_rope(x: Tensor, cos_sin: Tensor) -> Tensor:
    # x: [B, T, H, D]; cos_sin: [T, D/2, 2] (every row at the same positions) or [B, T, D/2, 2]
    # (per-row positions). Adjacent pairs (x0, x1) rotate together.
    b, t, h, d = x.shape
    xs = x.float().reshape(b, t, h, d // 2, 2)
    if cos_sin.dim() == 3:
        cos_sin = cos_sin[None]
    c = cos_sin[:, :, None, :, 0]
    s = cos_sin[:, :, None, :, 1]
    x0, x1 = xs[..., 0], xs[..., 1]
    out = torch.stack([x0 * c - x1 * s, x1 * c + x0 * s], dim=-1)
    return out.reshape(b, t, h, d).to(x.dtype)


def rope_caches(table: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin [seq_len, D/2] of a rope_table, the caches RotaryEmbedding takes."""
    return table[..., 0].contiguous(), table[..., 1].contiguous()


class RotaryEmbedding(torch.autograd.Function):
    """com.microsoft.RotaryEmbedding, interleaved (fish's adjacent-pair rotation), as ONNX
    Runtime runs it: x [B, T, H*D], position_ids [B, T] int64 (each row's own positions) or [1]
    (the first position of every row: positions p..p+T), cos/sin caches [S, D/2] -> [B, T, H*D]. One node where the written-out rotation is about twenty (Split, Squeeze, Mul,
    Sub, Add, Unsqueeze, Concat, Reshape, Gather per call); out = (x0 c - x1 s, x1 c + x0 s), the
    same products and sums as apply_rope. forward() is the reference math; symbolic() emits the
    contrib op."""

    @staticmethod
    def forward(ctx, x, position_ids, cos, sin, n_head: int):  # noqa: ARG004
        b, t, hd = x.shape
        pos = position_ids if position_ids.dim() == 2 else (position_ids[0] + torch.arange(t))[None]
        cs = torch.stack([cos[pos], sin[pos]], dim=-1)  # [B or 1, T, D/2, 2]
        return apply_rope(x.view(b, t, n_head, hd // n_head), cs).reshape(b, t, hd)

    @staticmethod
    def symbolic(g, x, position_ids, cos, sin, n_head: int):
        out = g.op("com.microsoft::RotaryEmbedding", x, position_ids, cos, sin, interleaved_i=1, num_heads_i=n_head)
        out.setType(x.type())
        return out


class Attention(nn.Module):
    def __init__(
        self, dim: int, n_head: int, n_kv: int, head_dim: int, qk_norm: bool, qkv_bias: bool, o_bias: bool, eps: float
    ):
        super().__init__()
        self.n_head, self.n_kv, self.head_dim = n_head, n_kv, head_dim
        self.wqkv = nn.Linear(dim, (n_head + 2 * n_kv) * head_dim, bias=qkv_bias)
        self.wo = nn.Linear(n_head * head_dim, dim, bias=o_bias)
        self.qk_norm = qk_norm
        if qk_norm:
            # torch nn.RMSNorm in fish; the same formula written out (opset 17 has no RMSNorm op).
            self.q_norm = Norm(head_dim, eps)
            self.k_norm = Norm(head_dim, eps)

    def forward(
        self, x: Tensor, position_ids: Tensor, cos: Tensor, sin: Tensor, past_k: Tensor, past_v: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        # One new position per row (the fast graph): x [B, 1, dim]; past_k/v [B, Hkv, P, D];
        # position_ids [1] (every row is at the same fast position). The query attends to all
        # P+1 keys, so there is no mask. Reshapes name constant sizes (-1 for the batch, 1 for
        # T): a traced x.shape would put a Shape/Gather/Unsqueeze/Concat chain before every
        # Reshape of the graph.
        hq, hk, d = self.n_head, self.n_kv, self.head_dim
        q, k, v = self.wqkv(x).split([hq * d, hk * d, hk * d], dim=-1)
        if self.qk_norm:
            q = self.q_norm(q.reshape(-1, 1, hq, d)).reshape(-1, 1, hq * d)
            k = self.k_norm(k.reshape(-1, 1, hk, d)).reshape(-1, 1, hk * d)
        q = RotaryEmbedding.apply(q, position_ids, cos, sin, hq).reshape(-1, 1, hq, d).transpose(1, 2)
        k = RotaryEmbedding.apply(k, position_ids, cos, sin, hk).reshape(-1, 1, hk, d).transpose(1, 2)
        v = v.reshape(-1, 1, hk, d).transpose(1, 2)
        k_all = torch.cat([past_k, k], dim=2)  # [B, Hkv, P+1, D]
        v_all = torch.cat([past_v, v], dim=2)
        # GQA: query head h uses kv head h // rep (fish's repeat_interleave), done by grouping
        # queries as [B, Hkv, rep, 1, D] so the KV is broadcast instead of copied.
        rep = hq // hk
        qg = q.reshape(-1, hk, rep, 1, d)
        scores = torch.matmul(qg, k_all[:, :, None].transpose(-2, -1)) * (1.0 / math.sqrt(d))
        probs = torch.softmax(scores, dim=-1)
        y = torch.matmul(probs, v_all[:, :, None])  # [B, Hkv, rep, 1, D]
        y = y.reshape(-1, hq, 1, d).transpose(1, 2).reshape(-1, 1, hq * d)
        return self.wo(y), k, v

    def forward_cached(
        self,
        x: Tensor,
        position_ids: Tensor,
        cos: Tensor,
        sin: Tensor,
        cache_k: Tensor,
        cache_v: Tensor,
        seqlens_k: Tensor,
        total: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        # x: [B, T, dim]; cache_k/v: [B, Hkv, C, D] (row b: positions 0..P_b filled); row b's
        # new keys go to P_b..P_b+T. qk-norm works on [B*T, H, D] and takes its shape back from
        # the projection (one Shape node: B and T are both dynamic here).
        hq, hk, d = self.n_head, self.n_kv, self.head_dim
        q, k, v = self.wqkv(x).split([hq * d, hk * d, hk * d], dim=-1)
        if self.qk_norm:
            q = self.q_norm(q.reshape(-1, hq, d)).reshape_as(q)
            k = self.k_norm(k.reshape(-1, hk, d)).reshape_as(k)
        # qk-norm, then fish's interleaved RoPE over its bf16 table (RotaryEmbedding); GQA gets
        # rotated q/k (its own do_rotary is left off: it derives positions from the cache).
        q = RotaryEmbedding.apply(q, position_ids, cos, sin, hq)
        k = RotaryEmbedding.apply(k, position_ids, cos, sin, hk)
        y, present_k, present_v = GroupQueryAttention.apply(q, k, v, cache_k, cache_v, seqlens_k, total, hq, hk)
        return self.wo(y), present_k, present_v


class GroupQueryAttention(torch.autograd.Function):
    """com.microsoft.GroupQueryAttention over a fixed-capacity cache, as ONNX Runtime runs it.

    q [B, T, Hq*D], k/v [B, T, Hkv*D] (qk-norm and RoPE already applied), past_k/v
    [B, Hkv, C, D] with row b's positions 0..P_b filled, seqlens_k [B] int32 = P_b+T-1,
    total [] int32 = max_b P_b + T. Returns (out [B, T, Hq*D], present_k, present_v
    [B, Hkv, C, D]): present = past with row b's positions P_b..P_b+T overwritten by its k/v;
    its query i attends keys 0..P_b+i (causal). GQA maps query head h to kv
    head h // (Hq/Hkv), as fish-speech's repeat_interleave. forward() is the reference math (used
    when the module runs in torch); symbolic() emits the contrib op.
    """

    @staticmethod
    def forward(ctx, q, k, v, past_k, past_v, seqlens_k, total, n_head: int, n_kv: int):  # noqa: ARG004
        b, t, _ = q.shape
        d = past_k.shape[3]
        present_k = past_k.clone()
        present_v = past_v.clone()
        rep = n_head // n_kv
        ys = []
        for r in range(b):  # reference math, row by row: each row at its own position
            tot = int(seqlens_k[r]) + 1
            p = tot - t
            present_k[r, :, p:tot] = k[r].view(t, n_kv, d).transpose(0, 1)
            present_v[r, :, p:tot] = v[r].view(t, n_kv, d).transpose(0, 1)
            k_all, v_all = present_k[r : r + 1, :, :tot], present_v[r : r + 1, :, :tot]
            qg = q[r : r + 1].view(1, t, n_head, d).transpose(1, 2).reshape(1, n_kv, rep, t, d)
            scores = torch.matmul(qg, k_all[:, :, None].transpose(-2, -1)) * (1.0 / math.sqrt(d))
            pos = torch.arange(t) + p
            mask = torch.arange(tot)[None, :] <= pos[:, None]
            scores = torch.where(mask, scores, torch.full_like(scores, float("-inf")))
            y = torch.matmul(torch.softmax(scores, dim=-1), v_all[:, :, None])
            ys.append(y.reshape(1, n_head, t, d).transpose(1, 2).reshape(1, t, n_head * d))
        return torch.cat(ys), present_k, present_v

    @staticmethod
    def symbolic(g, q, k, v, past_k, past_v, seqlens_k, total, n_head: int, n_kv: int):
        out, present_k, present_v = g.op(
            "com.microsoft::GroupQueryAttention",
            q,
            k,
            v,
            past_k,
            past_v,
            seqlens_k,
            total,
            num_heads_i=n_head,
            kv_num_heads_i=n_kv,
            outputs=3,
        )
        # Shapes as ONNX Runtime's own inference gives them: out like q, present like past.
        out.setType(q.type())
        present_k.setType(past_k.type())
        present_v.setType(past_v.type())
        return out, present_k, present_v


class FeedForward(nn.Module):
    def __init__(self, dim: int, inter: int):
        super().__init__()
        self.w1 = nn.Linear(dim, inter, bias=False)
        self.w3 = nn.Linear(dim, inter, bias=False)
        self.w2 = nn.Linear(inter, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        n_head: int,
        n_kv: int,
        head_dim: int,
        inter: int,
        qk_norm: bool,
        qkv_bias: bool,
        o_bias: bool,
        eps: float,
    ):
        super().__init__()
        self.attention = Attention(dim, n_head, n_kv, head_dim, qk_norm, qkv_bias, o_bias, eps)
        self.feed_forward = FeedForward(dim, inter)
        self.attention_norm = Norm(dim, eps)
        self.ffn_norm = Norm(dim, eps)

    def forward(
        self, x: Tensor, position_ids: Tensor, cos: Tensor, sin: Tensor, past_k: Tensor, past_v: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.attention(self.attention_norm(x), position_ids, cos, sin, past_k, past_v)
        h = x + a
        return h + self.feed_forward(self.ffn_norm(h)), k, v

    def forward_cached(
        self,
        x: Tensor,
        position_ids: Tensor,
        cos: Tensor,
        sin: Tensor,
        cache_k: Tensor,
        cache_v: Tensor,
        seqlens_k: Tensor,
        total: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.attention.forward_cached(
            self.attention_norm(x), position_ids, cos, sin, cache_k, cache_v, seqlens_k, total
        )
        h = x + a
        return h + self.feed_forward(self.ffn_norm(h)), k, v


def _positions(past: Tensor) -> Tensor:
    # [1]: the absolute position P of one new token after P cached ones.
    return torch.arange(1, device=past.device) + past.shape[3]


class SlowGraph(nn.Module):
    """slow.onnx: tokens [B, 1+N, T], row b at positions P_b..P_b+T, + per-layer cache buffers
    [B, Hkv, C, D] -> restricted logits [B, rows], hidden [B, fast_dim], per-layer present
    buffers (the same buffers, row b filled to P_b+T). B > 1 is a decode batch of independent
    requests (continuous batching); a prompt runs as B = 1."""

    def __init__(self, cfg: LlmConfig, tokens: TokenIds):
        super().__init__()
        c = cfg
        self.cfg = c
        self.sem_begin, self.sem_end = tokens.semantic_begin, tokens.semantic_end
        self.embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.codebook_embeddings = nn.Embedding(c.codebook_size * c.num_codebooks, c.dim)
        self.layers = nn.ModuleList(
            Block(
                c.dim,
                c.n_head,
                c.n_local_heads,
                c.head_dim,
                c.intermediate_size,
                c.attention_qk_norm,
                c.attention_qkv_bias,
                c.attention_o_bias,
                c.norm_eps,
            )
            for _ in range(c.n_layer)
        )
        self.norm = Norm(c.dim, c.norm_eps)
        # Restricted head: rows semantic_begin..semantic_end, then <|im_end|> (filled by load()).
        self.head = nn.Linear(c.dim, tokens.semantic_rows + 1, bias=False)
        self.fast_project_in: nn.Module = nn.Linear(c.dim, c.fast_dim) if c.fast_dim != c.dim else nn.Identity()
        cos, sin = rope_caches(rope_table(c.max_seq_len, c.head_dim, c.rope_base))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("cb_offsets", (torch.arange(c.num_codebooks) * c.codebook_size)[:, None], persistent=False)

    def forward(self, tokens: Tensor, past_sequence_length: Tensor, *cache: Tensor):
        # tokens: [B, 1+N, T] int64; past_sequence_length: [B] int64 = P_b;
        # cache: past_key_0, past_value_0, past_key_1, ... each [B, Hkv, C, D], C >= P_b+T
        c = self.cfg
        t = tokens.shape[2]
        ids = tokens[:, 0]  # [B, T]
        vq = self.codebook_embeddings(tokens[:, 1:] + self.cb_offsets).sum(dim=1)  # [B, T, dim]
        is_sem = (ids >= self.sem_begin) & (ids <= self.sem_end)
        x = self.embeddings(ids) + torch.where(is_sem[..., None], vq, torch.zeros_like(vq))
        if c.scale_codebook_embeddings:
            x = torch.where(is_sem[..., None], x / math.sqrt(c.num_codebooks + 1), x)
        # [B, T] absolute positions of each row
        pos = torch.arange(t, device=tokens.device)[None] + past_sequence_length[:, None]
        total64 = past_sequence_length + t  # [B]
        total = total64.max().to(torch.int32)  # GQA total_sequence_length: int32 scalar
        seqlens_k = (total64 - 1).to(torch.int32)  # GQA seqlens_k: [B] int32 = P_b+T-1
        presents = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer.forward_cached(
                x, pos, self.rope_cos, self.rope_sin, cache[2 * i], cache[2 * i + 1], seqlens_k, total
            )
            presents += [k, v]
        last = x[:, -1]  # [B, dim], pre-final-norm
        logits = self.head(self.norm(last))
        hidden = self.fast_project_in(last)
        return (logits, hidden, *presents)


def slow_cache_names(n_layer: int) -> tuple[list[str], list[str]]:
    """slow.onnx's per-layer cache inputs and outputs, in graph order."""
    ins = [f"past_{kv}_{i}" for i in range(n_layer) for kv in ("key", "value")]
    outs = [f"present_{kv}_{i}" for i in range(n_layer) for kv in ("key", "value")]
    return ins, outs


class SlowRunner:
    """Runs slow.onnx the way the engine does (one fixed-capacity cache per layer, P tracked on
    the host) with numpy buffers: for tests and calibration. ONNX Runtime's Python API returns
    the present outputs as new arrays, so this copies per call; the engine binds one buffer to
    input and output instead (src/backend/onnx)."""

    def __init__(self, session, manifest: dict, capacity: int, dtype=None):
        import numpy as np

        c = manifest["model"]
        self.session = session
        if dtype is None:  # the graph's own cache type (fp16 in fp16 bundles and fp16-cache int8 / int4)
            past = next(i for i in session.get_inputs() if i.name == "past_key_0")
            dtype = np.float16 if past.type == "tensor(float16)" else np.float32
        self.dtype = dtype
        self.names, self.outs = slow_cache_names(c["n_layer"])
        shape = (1, c["n_local_heads"], capacity, c["head_dim"])
        self.cache = {n: np.zeros(shape, self.dtype) for n in self.names}
        self.pos = 0

    def feed(self, tokens):
        import numpy as np

        tokens = np.asarray(tokens, np.int64)
        if tokens.ndim == 2:
            tokens = tokens[None]
        return {"tokens": tokens, "past_sequence_length": np.array([self.pos], np.int64), **self.cache}

    def run(self, tokens):
        """tokens [1+N, T] or [1, 1+N, T] -> (logits [1, rows], hidden [1, fast_dim])."""
        feed = self.feed(tokens)
        out = self.session.run(None, feed)
        logits, hidden = out[0], out[1]
        for name, value in zip(self.names, out[2:]):
            self.cache[name] = value
        self.pos += feed["tokens"].shape[2]
        return logits, hidden


class FastGraph(nn.Module):
    """fast.onnx: one fast-transformer position P (from the past KV length) for B rows."""

    def __init__(self, cfg: LlmConfig, logit_rows: int):
        super().__init__()
        c = cfg
        self.cfg = c
        self.fast_embeddings = nn.Embedding(c.codebook_size, c.fast_dim)
        self.fast_layers = nn.ModuleList(
            Block(
                c.fast_dim,
                c.fast_n_head,
                c.fast_n_local_heads,
                c.fast_head_dim,
                c.fast_intermediate_size,
                c.fast_attention_qk_norm,
                c.fast_attention_qkv_bias,
                c.fast_attention_o_bias,
                c.norm_eps,
            )
            for _ in range(c.n_fast_layer)
        )
        self.fast_norm = Norm(c.fast_dim, c.norm_eps)
        self.fast_output = nn.Linear(c.fast_dim, logit_rows, bias=False)  # first logit_rows rows
        cos, sin = rope_caches(rope_table(c.num_codebooks, c.fast_head_dim, c.rope_base))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, hidden: Tensor, code: Tensor, past_keys: Tensor, past_values: Tensor):
        # hidden: [B, fast_dim]; code: [B] int64; past_*: [Lf, B, Hkv, P, Df]. Every row of a
        # batch is at the same fast position P (each frame restarts the fast transformer).
        pos = _positions(past_keys)
        emb = self.fast_embeddings(code)  # [B, fast_dim]
        x = torch.where(pos[:, None] == 0, hidden, emb)[:, None]  # [B, 1, fast_dim]
        ks, vs = [], []
        for i, layer in enumerate(self.fast_layers):
            x, k, v = layer(x, pos, self.rope_cos, self.rope_sin, past_keys[i], past_values[i])
            ks.append(k)
            vs.append(v)
        logits = self.fast_output(self.fast_norm(x[:, 0]))
        present_k = torch.cat([past_keys, torch.stack(ks)], dim=3)
        present_v = torch.cat([past_values, torch.stack(vs)], dim=3)
        return logits, present_k, present_v


def fast_logit_rows(cfg: LlmConfig) -> int:
    # fish-speech samples codebooks 1..N-1 from logits[:, :, :1024] (inference.py L151).
    return min(1024, cfg.codebook_size)


def build_slow(cfg: LlmConfig, tokens: TokenIds, sd: OrderedDict[str, Tensor], dtype: torch.dtype) -> SlowGraph:
    m = SlowGraph(cfg, tokens)
    out_w = sd["embeddings.weight"] if cfg.tie_word_embeddings else sd["output.weight"]
    head = torch.cat([out_w[tokens.semantic_begin : tokens.semantic_end + 1], out_w[tokens.im_end : tokens.im_end + 1]])
    own = {k: v for k, v in sd.items() if not k.startswith("fast_") and k != "output.weight"}
    if cfg.fast_dim != cfg.dim:
        own["fast_project_in.weight"] = sd["fast_project_in.weight"]
        own["fast_project_in.bias"] = sd["fast_project_in.bias"]
    own["head.weight"] = head
    m.load_state_dict({k: v.float() for k, v in own.items()}, strict=True)
    return m.to(dtype).eval()


def build_fast(cfg: LlmConfig, sd: OrderedDict[str, Tensor], dtype: torch.dtype) -> FastGraph:
    rows = fast_logit_rows(cfg)
    m = FastGraph(cfg, rows)
    own = {k: v for k, v in sd.items() if k.startswith("fast_") and not k.startswith("fast_project_in")}
    own["fast_output.weight"] = own["fast_output.weight"][:rows]
    m.load_state_dict({k: v.float() for k, v in own.items()}, strict=True)
    return m.to(dtype).eval()


def _export(
    module: nn.Module,
    args: tuple,
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict,
    custom_opsets: dict | None = None,
) -> None:
    """torch.onnx (TorchScript exporter, deterministic) -> path; weights > 2 GiB go to path.data."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / path.name
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notices
            torch.onnx.export(
                module,
                args,
                str(raw),
                dynamo=False,
                opset_version=OPSET,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                custom_opsets=custom_opsets,
            )
        import onnx

        model = onnx.load(str(raw), load_external_data=True)
        # The TorchScript exporter names initializers deterministically; pin the producer fields
        # so the bytes do not depend on the torch build either.
        model.producer_name = "s1mini_export"
        model.producer_version = ""
        if custom_opsets:
            _retype_attention_outputs(model)
        big = sum(t.ByteSize() for t in model.graph.initializer) > PROTOBUF_LIMIT - 64 * 1024**2
        if big:
            onnx.save_model(
                model,
                str(path),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=path.name + ".data",
                size_threshold=1024,
            )
        else:
            onnx.save_model(model, str(path))


def _retype_attention_outputs(model) -> None:
    """The tracer records trace-time shapes (T = 3, capacity 8) for the contrib op's outputs and
    ONNX's shape inference stops at a com.microsoft node, so the value_info of the graph is
    replaced by one entry per GroupQueryAttention output 0: [B, T, num_heads * head_dim] in the
    cache's float type. Tools that rely on ONNX shape inference past the attention (ONNX
    Runtime's calibrators) then see every tensor; ONNX Runtime infers the rest itself."""
    import onnx

    g = model.graph
    inputs = {i.name: i for i in g.input}
    del g.value_info[:]
    for n in g.node:
        if n.op_type != "GroupQueryAttention":
            continue
        past = inputs[n.input[3]].type.tensor_type
        heads = next(a.i for a in n.attribute if a.name == "num_heads")
        width = heads * past.shape.dim[3].dim_value
        g.value_info.append(onnx.helper.make_tensor_value_info(n.output[0], past.elem_type, ["B", "T", width]))


def export_slow(m: SlowGraph, path: Path, dtype: torch.dtype) -> list[str]:
    c = m.cfg
    # Traced at B = 2 with different past lengths, so nothing specialises to one row.
    tok = torch.zeros(2, 1 + c.num_codebooks, 3, dtype=torch.long)
    past_len = torch.tensor([2, 1], dtype=torch.long)
    buf = torch.zeros(2, c.n_local_heads, 8, c.head_dim, dtype=dtype)
    ins, outs = slow_cache_names(c.n_layer)
    cache = tuple(buf.clone() for _ in ins)
    axes = {n: {0: "B", 2: "capacity"} for n in ins + outs}
    _export(
        m,
        (tok, past_len, *cache),
        path,
        ["tokens", "past_sequence_length", *ins],
        ["logits", "hidden", *outs],
        {
            "tokens": {0: "B", 2: "T"},
            "past_sequence_length": {0: "B"},
            "logits": {0: "B"},
            "hidden": {0: "B"},
            **axes,
        },
        custom_opsets={"com.microsoft": 1},
    )
    return _written(path)


def export_fast(m: FastGraph, path: Path, dtype: torch.dtype) -> list[str]:
    c = m.cfg
    hidden = torch.zeros(2, c.fast_dim, dtype=dtype)
    code = torch.zeros(2, dtype=torch.long)
    past = torch.zeros(c.n_fast_layer, 2, c.fast_n_local_heads, 2, c.fast_head_dim, dtype=dtype)
    kv_axes = {1: "B", 3: "past"}
    out_axes = {1: "B", 3: "total"}
    _export(
        m,
        (hidden, code, past, past.clone()),
        path,
        ["hidden", "code", "past_keys", "past_values"],
        ["logits", "present_keys", "present_values"],
        {
            "hidden": {0: "B"},
            "code": {0: "B"},
            "logits": {0: "B"},
            "past_keys": kv_axes,
            "past_values": kv_axes,
            "present_keys": out_axes,
            "present_values": out_axes,
        },
    )
    return _written(path)


def _written(path: Path) -> list[str]:
    names = [path.name]
    if (path.parent / (path.name + ".data")).exists():
        names.append(path.name + ".data")
    return names


def progress(msg: str) -> None:
    print(f"s1mini_export: {msg}", file=sys.stderr, flush=True)
