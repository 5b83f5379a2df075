# Copied from /work/shared/bench/torch_reference.py (the project's reference script, H100 results beside it
# there). Changes here: REF_FRAMES / REF_PROMPT_LEN environment overrides, so bench/compare_torch.sh can
# run the same shapes as `s1-mini bench`; REF_CODEC_FRAMES (comma list) likewise for the codec; REF_THREADS sets torch's CPU threads; frames_per_s has 3 decimals
# (CPU rates are below 1 frame/s).
"""PyTorch reference for OpenAudio S1-mini decode cost (random weights, real shapes).

Re-implements the compute of fish-speech's S1 inference path (commit d3df505):
DualARTransformer slow step (28 layers, full-vocab head, static 8192 KV cache
read every step, MATH SDPA), 10 serial fast steps per frame, fish-speech sampling
(repetition penalty, top-p over full softmax, temperature, exponential race),
and the modded-DAC decode path (8-layer windowed transformer, 2x ConvNeXt
upsample, DAC conv decoder with Snake).  Weights are random: the cost of a
frame does not depend on their values, so the number of frames is fixed.

Modes: eager; compile = torch.compile(mode="reduce-overhead", fullgraph=True), the
same as fish-speech's --compile; compile-opt = compile with the slow head restricted
to the 4096 semantic rows + <|im_end|> (what a careful PyTorch user could do).
Prints one JSON line per measurement.
"""
import json, math, os, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

DEV = "cuda" if torch.cuda.is_available() else "cpu"
DT = torch.bfloat16 if DEV == "cuda" else torch.float32
SMALL = os.environ.get("REF_SMALL") == "1"  # tiny shapes for a CPU smoke run
FRAMES = int(os.environ["REF_FRAMES"]) if os.environ.get("REF_FRAMES") else None  # decode frames per mode
PROMPT_LEN = int(os.environ.get("REF_PROMPT_LEN", "64"))  # prefill tokens
CODEC_FRAMES = [int(f) for f in os.environ["REF_CODEC_FRAMES"].split(",")] if os.environ.get("REF_CODEC_FRAMES") else None
if os.environ.get("REF_THREADS"):
    torch.set_num_threads(int(os.environ["REF_THREADS"]))

C = dict(dim=1024, n_layer=28, n_head=16, n_kv=8, head_dim=128, inter=3072,
         vocab=155776, max_seq=8192, rope_base=1e6, eps=1e-6,
         f_layer=4, f_head=16, f_kv=8, f_head_dim=64, f_inter=3072,
         ncb=10, cbs=4096, sem_begin=151658, im_end=151647)
if SMALL:
    C.update(dim=64, n_layer=2, n_head=4, n_kv=2, head_dim=16, inter=128, vocab=155776,
             max_seq=512, f_layer=1, f_head=4, f_kv=2, f_head_dim=16, f_inter=128)


def out(**kw):
    print(json.dumps(kw), flush=True)


class RMSNorm(nn.Module):
    def __init__(s, d, eps):
        super().__init__(); s.eps = eps; s.weight = nn.Parameter(torch.ones(d))
    def forward(s, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + s.eps)).type_as(x) * s.weight


def precompute_freqs(seq, n_elem, base):
    freqs = 1.0 / (base ** (torch.arange(0, n_elem, 2)[: n_elem // 2].float() / n_elem))
    t = torch.arange(seq)
    freqs = torch.outer(t, freqs)
    cis = torch.polar(torch.ones_like(freqs), freqs)
    return torch.stack([cis.real, cis.imag], dim=-1).to(torch.bfloat16)


def apply_rope(x, fc):
    xs = x.float().reshape(*x.shape[:-1], -1, 2)
    fc = fc.view(1, xs.size(1), 1, xs.size(3), 2)
    o = torch.stack([xs[..., 0] * fc[..., 0] - xs[..., 1] * fc[..., 1],
                     xs[..., 1] * fc[..., 0] + xs[..., 0] * fc[..., 1]], -1)
    return o.flatten(3).type_as(x)


class Attn(nn.Module):
    def __init__(s, dim, nh, nkv, hd, qk_norm, max_seq, sdpa):
        super().__init__()
        s.nh, s.nkv, s.hd, s.sdpa = nh, nkv, hd, sdpa
        s.wqkv = nn.Linear(dim, (nh + 2 * nkv) * hd, bias=False)
        s.wo = nn.Linear(nh * hd, dim, bias=False)
        s.qn = RMSNorm(hd, C["eps"]) if qk_norm else None
        s.kn = RMSNorm(hd, C["eps"]) if qk_norm else None
        s.register_buffer("kc", torch.zeros(1, nkv, max_seq, hd, dtype=DT))
        s.register_buffer("vc", torch.zeros(1, nkv, max_seq, hd, dtype=DT))

    def forward(s, x, fc, mask, pos):
        b, t, _ = x.shape
        q, k, v = s.wqkv(x).split([s.nh * s.hd, s.nkv * s.hd, s.nkv * s.hd], -1)
        q = q.view(b, t, s.nh, s.hd); k = k.view(b, t, s.nkv, s.hd); v = v.view(b, t, s.nkv, s.hd)
        if s.qn is not None:
            q, k = s.qn(q), s.kn(k)
        q, k = apply_rope(q, fc), apply_rope(k, fc)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        s.kc[:, :, pos] = k; s.vc[:, :, pos] = v
        k = s.kc.repeat_interleave(s.nh // s.nkv, 1); v = s.vc.repeat_interleave(s.nh // s.nkv, 1)
        if s.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:  # fish-speech's eq_scaled_dot_product_attention for the fast model
            w = (q @ k.transpose(-2, -1)) / math.sqrt(s.hd)
            w = w.masked_fill(~mask, float("-inf")).softmax(-1)
            y = w @ v
        return s.wo(y.transpose(1, 2).reshape(b, t, s.nh * s.hd))


class Block(nn.Module):
    def __init__(s, dim, nh, nkv, hd, inter, qk_norm, max_seq, sdpa):
        super().__init__()
        s.attn = Attn(dim, nh, nkv, hd, qk_norm, max_seq, sdpa)
        s.w1 = nn.Linear(dim, inter, bias=False); s.w3 = nn.Linear(dim, inter, bias=False)
        s.w2 = nn.Linear(inter, dim, bias=False)
        s.n1 = RMSNorm(dim, C["eps"]); s.n2 = RMSNorm(dim, C["eps"])
    def forward(s, x, fc, mask, pos):
        h = x + s.attn(s.n1(x), fc, mask, pos)
        n = s.n2(h)
        return h + s.w2(F.silu(s.w1(n)) * s.w3(n))


class DualAR(nn.Module):
    def __init__(s):
        super().__init__()
        d = C["dim"]
        s.emb = nn.Embedding(C["vocab"], d)
        s.cb_emb = nn.Embedding(C["cbs"] * C["ncb"], d)
        s.layers = nn.ModuleList(Block(d, C["n_head"], C["n_kv"], C["head_dim"], C["inter"], True, C["max_seq"], True) for _ in range(C["n_layer"]))
        s.norm = RMSNorm(d, C["eps"])
        s.output = nn.Linear(d, C["vocab"], bias=False)
        s.f_emb = nn.Embedding(C["cbs"], d)
        s.f_layers = nn.ModuleList(Block(d, C["f_head"], C["f_kv"], C["f_head_dim"], C["f_inter"], False, C["ncb"], False) for _ in range(C["f_layer"]))
        s.f_norm = RMSNorm(d, C["eps"])
        s.f_out = nn.Linear(d, C["cbs"], bias=False)
        s.register_buffer("fc", precompute_freqs(C["max_seq"], C["head_dim"], C["rope_base"]))
        s.register_buffer("ffc", precompute_freqs(C["ncb"], C["f_head_dim"], C["rope_base"]))
        s.register_buffer("cmask", torch.tril(torch.ones(C["max_seq"], C["max_seq"], dtype=torch.bool)))
        s.register_buffer("fmask", torch.tril(torch.ones(C["ncb"], C["ncb"], dtype=torch.bool)))

    def slow(s, inp, pos):  # inp (1, 11, T)
        return s.slow_sem(inp, pos) if getattr(s, "sem_head", None) is not None else s.slow_full(inp, pos)

    def slow_sem(s, inp, pos):  # head restricted to semantic ids + im_end (4097 rows)
        logits, h = s.slow_body(inp, pos)
        return F.linear(s.norm(h), s.sem_head), h

    def slow_full(s, inp, pos):
        h = s.slow_body(inp, pos)[1]
        return s.output(s.norm(h)), h

    def slow_body(s, inp, pos):
        tok = inp[:, 0]
        vq = sum(s.cb_emb(inp[:, i + 1] + i * C["cbs"]) for i in range(C["ncb"]))
        sem = (tok >= C["sem_begin"]) & (tok <= C["sem_begin"] + C["cbs"] - 1)
        vq = vq * sem.unsqueeze(-1)
        x = s.emb(tok) + vq
        x = torch.where(sem.unsqueeze(-1), x / math.sqrt(C["ncb"] + 1), x)
        mask = s.cmask[None, None, pos, : C["max_seq"]]
        fc = s.fc[pos]
        for l in s.layers:
            x = l(x, fc, mask, pos)
        h = x[:, -1:]
        return None, h

    def fast(s, x, pos):
        mask = s.fmask[None, None, pos, : C["ncb"]]
        fc = s.ffc[pos]
        for l in s.f_layers:
            x = l(x, fc, mask, pos)
        return s.f_out(s.f_norm(x))


def logits_to_probs(logits, prev, temperature, top_p, rp):
    if prev is not None:
        prev = prev.long()
        score = torch.gather(logits, 0, prev)
        score = torch.where(score < 0, score * rp, score / rp)
        logits = logits.scatter(0, prev, score)
    sl, si = torch.sort(logits, descending=True)
    cum = torch.cumsum(F.softmax(sl, -1), -1)
    rm = cum > top_p
    rm[0] = False
    logits = logits.masked_fill(rm.scatter(0, si, rm), -float("inf"))
    logits = logits / torch.clip(temperature, min=1e-5)
    return F.softmax(logits, -1)


def sample(logits, prev, t, p, rp):
    probs = logits_to_probs(logits[0, -1], prev, t, p, rp)
    q = torch.empty_like(probs).exponential_(1)
    return torch.argmax(probs / q, -1, keepdim=True).to(torch.int)


def decode_one(model, x, pos, prev, t, p, rp):
    logits, h = model.slow(x, pos)
    codes = [sample(logits, prev[:, 0] if prev is not None else None, t, p, rp)]
    for l in model.f_layers:
        l.attn.kc.fill_(0); l.attn.vc.fill_(0)
    model.fast(h, torch.tensor([0], device=x.device))
    c = (codes[0] - C["sem_begin"]).clamp(min=0)
    cb = [c]
    for k in range(1, C["ncb"]):
        fl = model.fast(model.f_emb(c).view(1, 1, -1), torch.tensor([k], device=x.device))
        c = sample(fl[:, :, :1024], prev[k + 1] if prev is not None else None, t, p, rp)
        cb.append(c)
    return torch.cat([codes[0]] + cb, 0)  # (11, 1)


# ---- modded DAC decode path ----
class Snake(nn.Module):
    def __init__(s, ch):
        super().__init__(); s.alpha = nn.Parameter(torch.ones(1, ch, 1))
    def forward(s, x):
        return x + (s.alpha + 1e-9).reciprocal() * torch.sin(s.alpha * x).pow(2)

class CConv(nn.Conv1d):
    def forward(s, x):
        pad = (s.kernel_size[0] - 1) * s.dilation[0]
        return super().forward(F.pad(x, (pad, 0)))

class CConvT(nn.ConvTranspose1d):
    def forward(s, x):
        y = super().forward(x)
        trim = s.kernel_size[0] - s.stride[0]
        return y[..., : y.shape[-1] - trim] if trim > 0 else y

class ResUnit(nn.Module):
    def __init__(s, ch, dil):
        super().__init__()
        s.b = nn.Sequential(Snake(ch), CConv(ch, ch, 7, dilation=dil), Snake(ch), CConv(ch, ch, 1))
    def forward(s, x):
        return x + s.b(x)

class DecBlock(nn.Module):
    def __init__(s, i, o, st):
        super().__init__()
        s.b = nn.Sequential(Snake(i), CConvT(i, o, 2 * st, stride=st), ResUnit(o, 1), ResUnit(o, 3), ResUnit(o, 9))
    def forward(s, x):
        return s.b(x)

class ConvNeXt(nn.Module):
    def __init__(s, d):
        super().__init__()
        s.dw = CConv(d, d, 7, groups=d); s.ln = nn.LayerNorm(d)
        s.p1 = nn.Linear(d, 4 * d); s.p2 = nn.Linear(4 * d, d); s.g = nn.Parameter(torch.full((d,), 1e-6))
    def forward(s, x):
        y = s.dw(x).transpose(1, 2)
        y = s.p2(F.gelu(s.p1(s.ln(y)))) * s.g
        return x + y.transpose(1, 2)

class WinBlock(nn.Module):
    def __init__(s, d, nh, inter):
        super().__init__()
        s.nh = nh; s.qkv = nn.Linear(d, 3 * d, bias=False); s.o = nn.Linear(d, d, bias=False)
        s.n1 = RMSNorm(d, 1e-5); s.n2 = RMSNorm(d, 1e-5)
        s.w1 = nn.Linear(d, inter, bias=False); s.w3 = nn.Linear(d, inter, bias=False); s.w2 = nn.Linear(inter, d, bias=False)
        s.g1 = nn.Parameter(torch.full((d,), 1e-2)); s.g2 = nn.Parameter(torch.full((d,), 1e-2))
    def forward(s, x, fc, mask):
        b, t, d = x.shape
        q, k, v = s.qkv(s.n1(x)).view(b, t, 3, s.nh, d // s.nh).unbind(2)
        q, k = apply_rope(q, fc), apply_rope(k, fc)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        x = x + s.g1 * s.o(y.transpose(1, 2).reshape(b, t, d))
        n = s.n2(x)
        return x + s.g2 * s.w2(F.silu(s.w1(n)) * s.w3(n))

class CodecDecoder(nn.Module):
    def __init__(s):
        super().__init__()
        d = 1024
        s.sem_cb = nn.Embedding(4096, 8); s.sem_out = nn.Conv1d(8, d, 1)
        s.res_cb = nn.ModuleList(nn.Embedding(1024, 8) for _ in range(9)); s.res_out = nn.ModuleList(nn.Conv1d(8, d, 1) for _ in range(9))
        s.post = nn.ModuleList(WinBlock(d, 16, 3072) for _ in range(8)); s.post_n = RMSNorm(d, 1e-5)
        s.up = nn.ModuleList(nn.Sequential(CConvT(d, d, 2, stride=2), ConvNeXt(d)) for _ in range(2))
        ch = [1536, 768, 384, 192, 96]
        s.dec = nn.Sequential(CConv(d, 1536, 7), *[DecBlock(ch[i], ch[i + 1], r) for i, r in enumerate([8, 8, 4, 2])],
                              Snake(96), CConv(96, 1, 7), nn.Tanh())
        s.register_buffer("fc", precompute_freqs(4096, 64, 1e4))
    def forward(s, codes):  # (1, 10, T)
        z = s.sem_out(s.sem_cb(codes[:, 0]).transpose(1, 2))
        for i in range(9):
            z = z + s.res_out[i](s.res_cb[i](codes[:, i + 1]).transpose(1, 2))
        t = z.shape[-1]
        idx = torch.arange(t, device=z.device)
        mask = (idx[None, :] <= idx[:, None]) & (idx[:, None] - idx[None, :] < 128)
        x = z.transpose(1, 2)
        for b in s.post:
            x = b(x, s.fc[:t], mask)
        x = s.post_n(x).transpose(1, 2)
        for u in s.up:
            x = u(x)
        return s.dec(x)


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def bench_llm(mode, n_frames, prompt_len=64):
    torch.manual_seed(0)
    with torch.device(DEV):
        m = DualAR().to(DT).eval()
    for p in m.parameters():
        nn.init.normal_(p, std=0.02)
    n_params = sum(p.numel() for p in m.parameters())
    step = decode_one
    if mode == "compile-opt":
        b = C["sem_begin"]
        m.sem_head = nn.Parameter(torch.cat([m.output.weight[b:b + C["cbs"]], m.output.weight[C["im_end"]:C["im_end"] + 1]]).detach())
    if mode in ("compile", "compile-opt"):
        step = torch.compile(decode_one, mode="reduce-overhead", fullgraph=True)
    t_, p_, rp_ = (torch.tensor(v, device=DEV, dtype=torch.float) for v in (0.8, 0.8, 1.1))
    with torch.inference_mode():
        x = torch.zeros(1, 11, prompt_len, dtype=torch.int, device=DEV)
        x[0, 0] = torch.randint(0, 151000, (prompt_len,))
        sync(); t0 = time.perf_counter()
        cur = decode_one(m, x, torch.arange(prompt_len, device=DEV), None, t_, p_, rp_)
        sync(); prefill_s = time.perf_counter() - t0
        prev = torch.zeros(11, 16, dtype=torch.int, device=DEV)
        pos = prompt_len
        warm = 3 if mode.startswith("compile") else 1
        t0 = time.perf_counter()
        for i in range(warm):
            cur = step(m, cur.view(1, 11, 1), torch.tensor([pos], device=DEV), prev, t_, p_, rp_).clone(); pos += 1
        sync(); warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(n_frames):
            cur = step(m, cur.view(1, 11, 1), torch.tensor([pos], device=DEV), prev, t_, p_, rp_).clone(); pos += 1
            prev = torch.roll(prev, -1, 1); prev[:, -1] = cur.view(-1)
        sync(); dt = time.perf_counter() - t0
    fps = n_frames / dt
    out(kind="llm", mode=mode, device=torch.cuda.get_device_name() if DEV == "cuda" else "cpu", params_m=round(n_params / 1e6, 1),
        prompt_len=prompt_len, prefill_ms=round(prefill_s * 1e3, 1), warmup_s=round(warm_s, 1), frames=n_frames,
        frames_per_s=round(fps, 3), x_realtime=round(fps / 21.533, 4),
        peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEV == "cuda" else None)
    del m
    if DEV == "cuda":
        torch.cuda.empty_cache()


def bench_codec(frames_list):
    torch.manual_seed(0)
    with torch.device(DEV):
        dec = CodecDecoder().eval()
    n_params = sum(p.numel() for p in dec.parameters())
    for T in frames_list:
        codes = torch.randint(0, 1024, (1, 10, T), device=DEV)
        with torch.inference_mode(), torch.autocast(DEV, dtype=torch.bfloat16, enabled=DEV == "cuda"):
            dec(codes); sync()
            ts = []
            for _ in range(3):
                t0 = time.perf_counter(); y = dec(codes); sync(); ts.append(time.perf_counter() - t0)
        ms = sorted(ts)[1] * 1e3
        out(kind="codec", mode="eager-autocast-bf16", params_m=round(n_params / 1e6, 1), frames=T, samples=int(y.shape[-1]),
            audio_s=round(y.shape[-1] / 44100, 2), decode_ms=round(ms, 1), x_realtime=round(y.shape[-1] / 44100 / (ms / 1e3), 1))


if __name__ == "__main__":
    what = sys.argv[1:] or ["eager", "codec", "compile"]
    for w in what:
        try:
            if w == "codec":
                bench_codec(CODEC_FRAMES or ([108, 215] if not SMALL else [8]))
            else:
                bench_llm(w, FRAMES or (128 if w.startswith("compile") else 48 if not SMALL else 4), PROMPT_LEN)
        except Exception as e:  # report and go on to the next measurement
            out(kind="error", what=w, error=repr(e)[:500])
