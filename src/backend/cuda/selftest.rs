//! Kernel-by-kernel check on a GPU: every kernel (and the cuBLAS prefill GEMM) runs once on
//! fresh random inputs and is compared with a plain f64 reference on the host. Run by
//! `cuda_check selftest` (bench/gpu_check.sh) before the end-to-end parity checks, so that a
//! wrong result there can be traced to one kernel.

use super::device::{DevBuf, Gpu};
use super::error::CudaError;
use super::kernel_args as ka;
use super::layout::{bf16_bits, bf16_to_f32, rope_table_bf16};
use super::plan;
use super::KernelCheck;
use crate::config::EngineConfig;
use crate::sampling::{self, SamplingParams};

type R<T> = std::result::Result<T, CudaError>;

/// xorshift64: reproducible inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
    fn bf16(&mut self, n: usize, scale: f32) -> Vec<u16> {
        (0..n).map(|_| bf16_bits(self.f() * scale)).collect()
    }
}

fn up<T: Copy>(g: &Gpu, v: &[T]) -> R<DevBuf> {
    let b = g.alloc(std::mem::size_of_val(v))?;
    g.upload(b.ptr(), v)?;
    Ok(b)
}

fn down_f32(g: &Gpu, b: &DevBuf, n: usize) -> R<Vec<f32>> {
    let mut v = vec![0f32; n];
    g.download(&mut v, b.ptr())?;
    Ok(v)
}

/// NaN-poisoned f32 buffer: an element the kernel should write but does not shows up as NaN.
fn poisoned(g: &Gpu, n: usize) -> R<DevBuf> {
    up(g, &vec![f32::NAN; n])
}

/// max |a - b| / max |b|; NaN anywhere gives infinity.
pub(super) fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
    let mut e = 0f64;
    for (x, y) in a.iter().zip(b) {
        if x.is_nan() {
            return f64::INFINITY;
        }
        e = e.max((f64::from(*x) - y).abs());
    }
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    e / scale
}

fn check(name: &str, err: f64, tol: f64) -> KernelCheck {
    KernelCheck { name: name.to_string(), max_rel_err: err, tolerance: tol, passed: err <= tol }
}

const TOL: f64 = 2e-5;

/// Host model of the GEMV's RMSNorm prologue: the activations times 1/rms of their row and
/// the norm weight (unchanged without a norm).
fn normed(x: &[f32], rows: usize, k: usize, norm: Option<&[u16]>, eps: f32) -> Vec<f64> {
    let mut out: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    if let Some(w) = norm {
        for r in 0..rows {
            let row = &mut out[r * k..(r + 1) * k];
            let ms = row.iter().map(|v| v * v).sum::<f64>() / k as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            for (c, v) in row.iter_mut().enumerate() {
                *v *= inv * f64::from(bf16_to_f32(w[c]));
            }
        }
    }
    out
}

/// gemv_bf16 with `ks` K-parts, with or without the residual and the RMSNorm prologue.
#[allow(clippy::too_many_arguments)]
fn gemv(
    g: &Gpu,
    rng: &mut Rng,
    n: usize,
    k: usize,
    t: usize,
    ks: usize,
    residual: bool,
    norm: bool,
) -> R<KernelCheck> {
    let eps = 1e-6f32;
    let w = rng.bf16(n * k, 0.05);
    let x = rng.vec(t * k, 1.0);
    let y0 = rng.vec(t * n, 1.0);
    let nw = rng.bf16(k, 1.0);
    let (wb, xb, yb, nb) = (up(g, &w)?, up(g, &x)?, up(g, &y0)?, up(g, &nw)?);
    if !residual {
        g.upload(yb.ptr(), &vec![f32::NAN; t * n])?;
    }
    let (wp, xp, yp) = (wb.ptr(), xb.ptr(), yb.ptr());
    let res = if residual { yp } else { 0u64 };
    let np = if norm { nb.ptr() } else { 0u64 };
    let (xs, ys, nn, kk, tt, kss) = (k as i32, n as i32, n as i32, k as i32, t as i32, ks as i32);
    // SAFETY: gemv_bf16(W [n,k] bf16, x [t,k], x_stride, y [t,n], y_stride, res, N, K, T,
    // norm_w [k] or null, eps, ks); k % (8 ks) == 0 for every case run.
    unsafe {
        ka::GemvBf16 {
            w: wp,
            x: xp,
            x_stride: xs,
            y: yp,
            y_stride: ys,
            res,
            n: nn,
            k: kk,
            t: tt,
            norm_w: np,
            eps,
            ks: kss,
        }
        .launch(g, plan::gemv(n, ks, k, t))?
    };
    let got = down_f32(g, &yb, t * n)?;
    let xn = normed(&x, t, k, norm.then_some(&nw[..]), eps);
    let mut want = vec![0f64; t * n];
    for ti in 0..t {
        for ni in 0..n {
            let mut s = if residual { f64::from(y0[ti * n + ni]) } else { 0.0 };
            for ki in 0..k {
                s += f64::from(bf16_to_f32(w[ni * k + ki])) * xn[ti * k + ki];
            }
            want[ti * n + ni] = s;
        }
    }
    let name = format!(
        "gemv_bf16 (N={n} K={k} T={t} ks={ks}{}{})",
        if residual { " +residual" } else { "" },
        if norm { " +norm" } else { "" }
    );
    Ok(check(&name, rel_err(&got, &want), TOL))
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn swiglu(g: &Gpu, rng: &mut Rng) -> R<KernelCheck> {
    let (n, k, t) = (301usize, 512usize, 2usize);
    let (w1, w3) = (rng.bf16(n * k, 0.1), rng.bf16(n * k, 0.1));
    let x = rng.vec(t * k, 1.0);
    let (b1, b3, xb, yb) = (up(g, &w1)?, up(g, &w3)?, up(g, &x)?, poisoned(g, t * n)?);
    let (p1, p3, xp, yp) = (b1.ptr(), b3.ptr(), xb.ptr(), yb.ptr());
    let (eps, ks) = (1e-6f32, plan::gemv_split(n, k, 8));
    let nw = rng.bf16(k, 1.0);
    let nb = up(g, &nw)?;
    let np = nb.ptr();
    let (xs, ys, nn, kk, tt, kss) = (k as i32, n as i32, n as i32, k as i32, t as i32, ks as i32);
    // SAFETY: gemv_swiglu_bf16(W1, W3 [n,k] bf16, x [t,k], x_stride, y [t,n], y_stride, N, K, T,
    // norm_w [k], eps, ks).
    unsafe {
        ka::GemvSwigluBf16 {
            w1: p1,
            w3: p3,
            x: xp,
            x_stride: xs,
            y: yp,
            y_stride: ys,
            n: nn,
            k: kk,
            t: tt,
            norm_w: np,
            eps,
            ks: kss,
        }
        .launch(g, plan::gemv(n, ks, k, t))?
    };
    let got = down_f32(g, &yb, t * n)?;
    let xn = normed(&x, t, k, Some(&nw), eps);
    let mut want = vec![0f64; t * n];
    for ti in 0..t {
        for ni in 0..n {
            let (mut a, mut b) = (0f64, 0f64);
            for ki in 0..k {
                let xv = xn[ti * k + ki];
                a += f64::from(bf16_to_f32(w1[ni * k + ki])) * xv;
                b += f64::from(bf16_to_f32(w3[ni * k + ki])) * xv;
            }
            want[ti * n + ni] = silu(a) * b;
        }
    }
    Ok(check(
        &format!("gemv_swiglu_bf16 (+norm, N={n} K={k} T={t} ks={ks})"),
        rel_err(&got, &want),
        TOL,
    ))
}

/// quantize_i8_bf16 then gemv_i8: scales vs max|row|/127, output vs the host dot product of
/// the downloaded int8 values.
fn int8(g: &Gpu, rng: &mut Rng) -> R<Vec<KernelCheck>> {
    let (n, k, t) = (257usize, 512usize, 3usize);
    let w = rng.bf16(n * k, 0.05);
    let x = rng.vec(t * k, 1.0);
    let (wb, qb, sb) = (up(g, &w)?, g.alloc(n * k)?, poisoned(g, n)?);
    let (wp, qp, sp, kk) = (wb.ptr(), qb.ptr(), sb.ptr(), k as i32);
    // SAFETY: quantize_i8_bf16(W [N,K] bf16, q [N,K] int8, scale [N] f32, K), grid N.
    unsafe { ka::QuantizeI8 { w: wp, q: qp, scale: sp, k: kk }.launch(g, plan::per_row(n))? };
    let scale = down_f32(g, &sb, n)?;
    let mut q = vec![0i8; n * k];
    g.download(&mut q, qb.ptr())?;
    let want_scale: Vec<f64> = (0..n)
        .map(|r| {
            w[r * k..(r + 1) * k].iter().fold(0f64, |m, &v| m.max(f64::from(bf16_to_f32(v)).abs()))
                / 127.0
        })
        .collect();
    let mut q_off = 0usize;
    for r in 0..n {
        for c in 0..k {
            let want = (f64::from(bf16_to_f32(w[r * k + c])) / f64::from(scale[r])).round();
            if (want - f64::from(q[r * k + c])).abs() > 1.0 {
                q_off += 1;
            }
        }
    }
    let (xb, yb) = (up(g, &x)?, poisoned(g, t * n)?);
    let (xp, yp) = (xb.ptr(), yb.ptr());
    let (eps, ks) = (1e-6f32, plan::gemv_split(n, k, 16));
    let nw = rng.bf16(k, 1.0);
    let nb = up(g, &nw)?;
    let np = nb.ptr();
    let (xs, ys, nn, tt, res, kss) = (k as i32, n as i32, n as i32, t as i32, 0u64, ks as i32);
    // SAFETY: gemv_i8(q, scale, x [t,k], x_stride, y [t,n], y_stride, res, N, K, T, norm_w,
    // eps, ks).
    unsafe {
        ka::GemvI8 {
            w: qp,
            scale: sp,
            x: xp,
            x_stride: xs,
            y: yp,
            y_stride: ys,
            res,
            n: nn,
            k: kk,
            t: tt,
            norm_w: np,
            eps,
            ks: kss,
        }
        .launch(g, plan::gemv(n, ks, k, t))?
    };
    let got = down_f32(g, &yb, t * n)?;
    let xn = normed(&x, t, k, Some(&nw), eps);
    let mut want = vec![0f64; t * n];
    for ti in 0..t {
        for ni in 0..n {
            let s: f64 = (0..k).map(|ki| f64::from(q[ni * k + ki]) * xn[ti * k + ki]).sum();
            want[ti * n + ni] = s * f64::from(scale[ni]);
        }
    }
    // dequantize_i8_bf16 (the int8 prefill's cuBLAS operand): bf16(q * scale), bit for bit.
    let db = up(g, &vec![0u16; n * k])?;
    let (dp, cnt) = (db.ptr(), (n * k) as i32);
    // SAFETY: dequantize_i8_bf16(q [N,K] int8, scale [N] f32, W [N,K] bf16, K, count = N*K).
    unsafe {
        ka::DequantizeI8 { q: qp, scale: sp, w: dp, k: kk, count: cnt }
            .launch(g, plan::elementwise(n * k))?
    };
    let mut deq = vec![0u16; n * k];
    g.download(&mut deq, db.ptr())?;
    let deq_off =
        (0..n * k).filter(|&i| deq[i] != bf16_bits(f32::from(q[i]) * scale[i / k])).count();
    Ok(vec![
        check("quantize_i8_bf16 (scales)", rel_err(&scale, &want_scale), 1e-6),
        check("dequantize_i8_bf16 (values not bf16(q * scale))", deq_off as f64, 0.0),
        check("quantize_i8_bf16 (values off by > 1)", q_off as f64, 0.0),
        check(&format!("gemv_i8 (+norm, N={n} K={k} T={t} ks={ks})"), rel_err(&got, &want), TOL),
    ])
}

fn rmsnorm(g: &Gpu, rng: &mut Rng) -> R<KernelCheck> {
    let (rows, dim, eps) = (3usize, 1024usize, 1e-6f32);
    let x = rng.vec(rows * dim, 2.0);
    let w = rng.bf16(dim, 1.0);
    let (xb, wb, ob) = (up(g, &x)?, up(g, &w)?, poisoned(g, rows * dim)?);
    let (xp, wp, op, dd) = (xb.ptr(), wb.ptr(), ob.ptr(), dim as i32);
    // SAFETY: rmsnorm_f32(x, w, out, dim, eps); x, out [rows, dim] f32, w [dim] bf16.
    unsafe { ka::RmsNorm { x: xp, w: wp, out: op, dim: dd, eps }.launch(g, plan::per_row(rows))? };
    let got = down_f32(g, &ob, rows * dim)?;
    Ok(check("rmsnorm_f32", rel_err(&got, &normed(&x, rows, dim, Some(&w), eps)), TOL))
}

/// Host model of qk_rope_f32 for one head vector at position `pos`.
fn rope_ref(x: &[f32], norm: Option<&[u16]>, eps: f32, table: &[u16], pos: usize) -> Vec<f64> {
    let hd = x.len();
    let mut v: Vec<f64> = x.iter().map(|&a| f64::from(a)).collect();
    if let Some(w) = norm {
        let ms = v.iter().map(|a| a * a).sum::<f64>() / hd as f64;
        let inv = 1.0 / (ms + f64::from(eps)).sqrt();
        for (i, a) in v.iter_mut().enumerate() {
            *a = *a * inv * f64::from(bf16_to_f32(w[i]));
        }
    }
    let mut out = vec![0f64; hd];
    for i in 0..hd / 2 {
        let c = f64::from(bf16_to_f32(table[(pos * hd / 2 + i) * 2]));
        let s = f64::from(bf16_to_f32(table[(pos * hd / 2 + i) * 2 + 1]));
        out[2 * i] = v[2 * i] * c - v[2 * i + 1] * s;
        out[2 * i + 1] = v[2 * i + 1] * c + v[2 * i] * s;
    }
    out
}

/// A KV cache on the host: bf16 bits or f32 values, as the kernels store them.
enum HostKv {
    Bf16(Vec<u16>),
    F32(Vec<f32>),
}

impl HostKv {
    fn random(rng: &mut Rng, n: usize, f32: bool) -> HostKv {
        if f32 {
            HostKv::F32(rng.vec(n, 1.0))
        } else {
            HostKv::Bf16(rng.bf16(n, 1.0))
        }
    }
    fn zeros(n: usize, f32: bool) -> HostKv {
        if f32 {
            HostKv::F32(vec![0.0; n])
        } else {
            HostKv::Bf16(vec![0; n])
        }
    }
    fn get(&self, i: usize) -> f64 {
        match self {
            HostKv::Bf16(v) => f64::from(bf16_to_f32(v[i])),
            HostKv::F32(v) => f64::from(v[i]),
        }
    }
    fn upload(&self, g: &Gpu) -> R<DevBuf> {
        match self {
            HostKv::Bf16(v) => up(g, v),
            HostKv::F32(v) => up(g, v),
        }
    }
    fn download(&mut self, g: &Gpu, b: &DevBuf) -> R<()> {
        match self {
            HostKv::Bf16(v) => g.download(v, b.ptr()),
            HostKv::F32(v) => g.download(v, b.ptr()),
        }
    }
}

/// qk_rope_f32: q rotated in place, k (rotated) and v written to the caches (bf16 or f32).
fn rope(g: &Gpu, rng: &mut Rng, kv_f32: bool) -> R<Vec<KernelCheck>> {
    let (t, nh, nkv, hd, max_pos, eps) = (3usize, 4usize, 2usize, 128usize, 64usize, 1e-6f32);
    let (pos0, pos_add) = (40i32, 2i32);
    let row_w = (nh + 2 * nkv) * hd;
    let qkv = rng.vec(t * row_w, 1.0);
    let (qn, kn) = (rng.bf16(hd, 1.0), rng.bf16(hd, 1.0));
    let table = rope_table_bf16(1_000_000.0, hd, max_pos);
    let (mut kc, mut vc) =
        (HostKv::zeros(nkv * max_pos * hd, kv_f32), HostKv::zeros(nkv * max_pos * hd, kv_f32));
    let (qb, pb, qnb, knb, tb) =
        (up(g, &qkv)?, up(g, &[pos0])?, up(g, &qn)?, up(g, &kn)?, up(g, &table)?);
    let (kcb, vcb) = (kc.upload(g)?, vc.upload(g)?);
    let (qp, pp, qnp, knp, tp, kcp, vcp) =
        (qb.ptr(), pb.ptr(), qnb.ptr(), knb.ptr(), tb.ptr(), kcb.ptr(), vcb.ptr());
    let (tt, nhh, nkk, hdd, mp, use_qk, kv32) =
        (t as i32, nh as i32, nkv as i32, hd as i32, max_pos as i32, 1i32, i32::from(kv_f32));
    // SAFETY: qk_rope_f32(qkv, T, pos_ptr, pos_add, q_norm, k_norm, use_qk_norm, rope, nh, nkv,
    // hd, eps, kc, vc, max_pos, kv_f32); shapes as allocated above.
    unsafe {
        ka::QkRope {
            qkv: qp,
            t: tt,
            pos_ptr: pp,
            pos_add,
            q_norm: qnp,
            k_norm: knp,
            use_qk_norm: use_qk,
            rope: tp,
            nh: nhh,
            nkv: nkk,
            hd: hdd,
            eps,
            kc: kcp,
            vc: vcp,
            max_pos: mp,
            kv_f32: kv32,
        }
        .launch(g, plan::qk_rope(t, nh, nkv, hd))?
    };
    let got_q = down_f32(g, &qb, t * row_w)?;
    kc.download(g, &kcb)?;
    vc.download(g, &vcb)?;
    let round = |a: f64| if kv_f32 { a } else { f64::from(bf16_to_f32(bf16_bits(a as f32))) };
    let (mut gq, mut wq, mut gk, mut wk, mut gv, mut wv) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for ti in 0..t {
        let pos = (pos0 + pos_add) as usize + ti;
        let row = &qkv[ti * row_w..(ti + 1) * row_w];
        for h in 0..nh {
            wq.extend(rope_ref(&row[h * hd..(h + 1) * hd], Some(&qn), eps, &table, pos));
            gq.extend_from_slice(&got_q[ti * row_w + h * hd..ti * row_w + (h + 1) * hd]);
        }
        for h in 0..nkv {
            let kx = &row[(nh + h) * hd..(nh + h + 1) * hd];
            wk.extend(rope_ref(kx, Some(&kn), eps, &table, pos));
            let vx = &row[(nh + nkv + h) * hd..(nh + nkv + h + 1) * hd];
            wv.extend(vx.iter().map(|&a| round(f64::from(a))));
            let at = (h * max_pos + pos) * hd;
            gk.extend((at..at + hd).map(|i| kc.get(i) as f32));
            gv.extend((at..at + hd).map(|i| vc.get(i) as f32));
        }
    }
    let ty = if kv_f32 { "f32" } else { "bf16" };
    // k is rounded to the cache type: 2^-8 relative for bf16.
    let k_tol = if kv_f32 { TOL } else { 8e-3 };
    Ok(vec![
        check("qk_rope_f32 (q, in place)", rel_err(&gq, &wq), TOL),
        check(&format!("qk_rope_f32 (k cache, {ty})"), rel_err(&gk, &wk), k_tol),
        check(&format!("qk_rope_f32 (v cache, {ty})"), rel_err(&gv, &wv), 0.0),
    ])
}

/// attention_f32 against softmax(q·k / √hd) v over keys 0..=pos, launched twice (the split
/// counters must be back at zero for the second launch, as in a replayed graph).
/// `pos0` + 1 + t keys for query t: 601..603 keys use one or three blocks of ≥ 256 keys, 2001..2003
/// all seven of seven splits.
fn attention(g: &Gpu, rng: &mut Rng, splits: usize, kv_f32: bool, pos0: i32) -> R<KernelCheck> {
    let (t, nh, nkv, hd) = (3usize, 8usize, 2usize, 128usize);
    let max_pos = pos0 as usize + 100;
    let pos_add = 1i32;
    let q_stride = (nh + 2 * nkv) * hd;
    let q = rng.vec(t * q_stride, 1.0);
    let kc = HostKv::random(rng, nkv * max_pos * hd, kv_f32);
    let vc = HostKv::random(rng, nkv * max_pos * hd, kv_f32);
    let (qb, kb, vb, pb) = (up(g, &q)?, kc.upload(g)?, vc.upload(g)?, up(g, &[pos0])?);
    let (pob, pmb, cb) = (
        poisoned(g, nh * t * splits * hd)?,
        poisoned(g, nh * t * splits * 2)?,
        up(g, &vec![0u32; nh * t])?,
    );
    let scale = 1.0f32 / (hd as f32).sqrt();
    let (qs, tt, nhh, nkk, hdd, mp, ns, os, kv32) = (
        q_stride as i32,
        t as i32,
        nh as i32,
        nkv as i32,
        hd as i32,
        max_pos as i32,
        splits as i32,
        (nh * hd) as i32,
        i32::from(kv_f32),
    );
    let mut want = vec![0f64; t * nh * hd];
    for ti in 0..t {
        let len = (pos0 + pos_add) as usize + ti + 1;
        for h in 0..nh {
            let kvh = h / (nh / nkv);
            let qv = &q[ti * q_stride + h * hd..ti * q_stride + (h + 1) * hd];
            let s: Vec<f64> = (0..len)
                .map(|j| {
                    let base = (kvh * max_pos + j) * hd;
                    (0..hd).map(|e| f64::from(qv[e]) * kc.get(base + e)).sum::<f64>()
                        * f64::from(scale)
                })
                .collect();
            let m = s.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let l: f64 = p.iter().sum();
            for e in 0..hd {
                let o: f64 = (0..len).map(|j| p[j] * vc.get((kvh * max_pos + j) * hd + e)).sum();
                want[ti * nh * hd + h * hd + e] = o / l;
            }
        }
    }
    let mut err = 0f64;
    for _launch in 0..2 {
        let ob = poisoned(g, t * nh * hd)?;
        let (qp, kp, vp, pp, po, pm, cp, op) =
            (qb.ptr(), kb.ptr(), vb.ptr(), pb.ptr(), pob.ptr(), pmb.ptr(), cb.ptr(), ob.ptr());
        // SAFETY: attention_f32(q, q_stride, kc, vc, kv_f32, T, pos_ptr, pos_add, nh, nkv, hd,
        // max_pos, scale, n_split, part_o [nh*T*n_split*hd], part_ml [nh*T*n_split*2],
        // counters [nh*T], out [T, nh*hd], out_stride, rope (null: q is rotated), q_norm,
        // k_norm, eps).
        let (no_rope, eps) = (0u64, 1e-6f32);
        unsafe {
            ka::Attention {
                q: qp,
                q_stride: qs,
                kc: kp,
                vc: vp,
                kv_f32: kv32,
                t: tt,
                pos_ptr: pp,
                pos_add,
                nh: nhh,
                nkv: nkk,
                hd: hdd,
                max_pos: mp,
                scale,
                n_split: ns,
                part_o: po,
                part_ml: pm,
                counters: cp,
                out: op,
                out_stride: os,
                rope: no_rope,
                q_norm: no_rope,
                k_norm: no_rope,
                eps,
            }
            .launch(g, plan::attention(nh, t, splits))?;
        }
        err = err.max(rel_err(&down_f32(g, &ob, t * nh * hd)?, &want));
    }
    let ty = if kv_f32 { "f32" } else { "bf16" };
    let keys = pos0 + 2;
    let name = format!("attention_f32 ({splits} split(s), {ty} KV, {keys}.. keys, 2 launches)");
    Ok(check(&name, err, 1e-4))
}

/// Decode shapes of [`attention_rope`]: heads, KV heads, head size, qk-norm, splits, keys
/// already in the cache, cache capacity.
struct DecodeCase {
    nh: usize,
    nkv: usize,
    hd: usize,
    qk_norm: bool,
    splits: usize,
    pos: i32,
    max_pos: usize,
}

/// attention_f32 with its RoPE prologue (decode, T = 1) against qk_rope_f32 followed by
/// attention_f32 on a copy of the same inputs: the same output and the same caches afterwards
/// (the new key and value written once per KV head, nothing else touched).
fn attention_rope(g: &Gpu, rng: &mut Rng, c: &DecodeCase, kv_f32: bool) -> R<Vec<KernelCheck>> {
    let (nh, nkv, hd, max_pos, eps) = (c.nh, c.nkv, c.hd, c.max_pos, 1e-6f32);
    let row_w = (nh + 2 * nkv) * hd;
    let qkv = rng.vec(row_w, 1.0);
    let (qn, kn) = (rng.bf16(hd, 1.0), rng.bf16(hd, 1.0));
    let table = rope_table_bf16(1_000_000.0, hd, max_pos);
    let kc = HostKv::random(rng, nkv * max_pos * hd, kv_f32);
    let vc = HostKv::random(rng, nkv * max_pos * hd, kv_f32);
    let (pb, qnb, knb, tb) = (up(g, &[c.pos])?, up(g, &qn)?, up(g, &kn)?, up(g, &table)?);
    let (qnp, knp) = if c.qk_norm { (qnb.ptr(), knb.ptr()) } else { (0u64, 0u64) };
    let scale = 1.0f32 / (hd as f32).sqrt();
    let (one, pos_add, use_qk) = (1i32, 0i32, i32::from(c.qk_norm));
    let (qs, nhh, nkk, hdd, mp, ns, os, kv32) = (
        row_w as i32,
        nh as i32,
        nkv as i32,
        hd as i32,
        max_pos as i32,
        c.splits as i32,
        (nh * hd) as i32,
        i32::from(kv_f32),
    );
    // Two runs on separate copies: (rope kernel + attention) and (attention with the prologue).
    let mut outs = Vec::new();
    let mut caches = Vec::new();
    for fused in [false, true] {
        let (qb, kb, vb) = (up(g, &qkv)?, kc.upload(g)?, vc.upload(g)?);
        let (pob, pmb, cb, ob) = (
            poisoned(g, nh * c.splits * hd)?,
            poisoned(g, nh * c.splits * 2)?,
            up(g, &vec![0u32; nh])?,
            poisoned(g, nh * hd)?,
        );
        let (qp, kp, vp, pp, tp) = (qb.ptr(), kb.ptr(), vb.ptr(), pb.ptr(), tb.ptr());
        let (po, pm, cp, op) = (pob.ptr(), pmb.ptr(), cb.ptr(), ob.ptr());
        if !fused {
            // SAFETY: qk_rope_f32(qkv [1, row_w], T, pos_ptr, pos_add, q_norm, k_norm,
            // use_qk_norm, rope, nh, nkv, hd, eps, kc, vc, max_pos, kv_f32).
            unsafe {
                ka::QkRope {
                    qkv: qp,
                    t: one,
                    pos_ptr: pp,
                    pos_add,
                    q_norm: qnp,
                    k_norm: knp,
                    use_qk_norm: use_qk,
                    rope: tp,
                    nh: nhh,
                    nkv: nkk,
                    hd: hdd,
                    eps,
                    kc: kp,
                    vc: vp,
                    max_pos: mp,
                    kv_f32: kv32,
                }
                .launch(g, plan::qk_rope(1, nh, nkv, hd))?
            };
        }
        let rope = if fused { tp } else { 0u64 };
        // SAFETY: attention_f32 as in `attention`, T = 1; with `rope` the q, k and v of the new
        // position come from the un-rotated qkv row.
        unsafe {
            ka::Attention {
                q: qp,
                q_stride: qs,
                kc: kp,
                vc: vp,
                kv_f32: kv32,
                t: one,
                pos_ptr: pp,
                pos_add,
                nh: nhh,
                nkv: nkk,
                hd: hdd,
                max_pos: mp,
                scale,
                n_split: ns,
                part_o: po,
                part_ml: pm,
                counters: cp,
                out: op,
                out_stride: os,
                rope,
                q_norm: qnp,
                k_norm: knp,
                eps,
            }
            .launch(g, plan::attention(nh, 1, c.splits))?
        };
        outs.push(down_f32(g, &ob, nh * hd)?);
        let n = nkv * max_pos * hd;
        let (mut k2, mut v2) = (HostKv::zeros(n, kv_f32), HostKv::zeros(n, kv_f32));
        k2.download(g, &kb)?;
        v2.download(g, &vb)?;
        caches.push((k2, v2));
    }
    let want: Vec<f64> = outs[0].iter().map(|&v| f64::from(v)).collect();
    let n = nkv * max_pos * hd;
    let differing = (0..n)
        .filter(|&i| {
            caches[0].0.get(i) != caches[1].0.get(i) || caches[0].1.get(i) != caches[1].1.get(i)
        })
        .count();
    let ty = if kv_f32 { "f32" } else { "bf16" };
    let what =
        format!("hd {hd}, {} heads/{} KV, {} split(s), {ty} KV, key {}", nh, nkv, c.splits, c.pos);
    Ok(vec![
        check(
            &format!("attention_f32 + RoPE prologue ({what}) vs two kernels"),
            rel_err(&outs[1], &want),
            1e-6,
        ),
        check(
            &format!("attention_f32 + RoPE prologue ({what}): cache values differing"),
            differing as f64,
            0.0,
        ),
    ])
}

/// embed_tokens_f32: a text token, a semantic token with codes, an out-of-range id (→ 0).
fn embed(g: &Gpu, rng: &mut Rng) -> R<KernelCheck> {
    let (vocab, dim, k, cbs, sb, se) = (64usize, 256usize, 3usize, 16usize, 32i32, 47i32);
    let emb = rng.bf16(vocab * dim, 1.0);
    let cb = rng.bf16(k * cbs * dim, 1.0);
    let t = 3usize;
    // rows: main ids, then codes c0..c2 (row stride t).
    let tokens: Vec<i64> = vec![5, 40, 999, 0, 3, 0, 0, 15, 0, 0, 7, 0];
    let (tb, eb, cbb, ob) = (up(g, &tokens)?, up(g, &emb)?, up(g, &cb)?, poisoned(g, t * dim)?);
    let scale_div = ((k + 1) as f32).sqrt();
    let (tp, ep, cp, op) = (tb.ptr(), eb.ptr(), cbb.ptr(), ob.ptr());
    let (ts, tt, dd, kk, cs, voc) =
        (t as i32, t as i32, dim as i32, k as i32, cbs as i32, vocab as i32);
    // SAFETY: embed_tokens_f32(tokens [1+K, tok_stride], tok_stride, T, emb, cb_emb, out [T, dim],
    // dim, K, codebook_size, vocab, sem_begin, sem_end, scale_div).
    unsafe {
        ka::EmbedTokens {
            tokens: tp,
            tok_stride: ts,
            t: tt,
            emb: ep,
            cb_emb: cp,
            out: op,
            dim: dd,
            k: kk,
            codebook_size: cs,
            vocab: voc,
            sem_begin: sb,
            sem_end: se,
            scale_div,
        }
        .launch(g, plan::embed(t, dim))?
    };
    let got = down_f32(g, &ob, t * dim)?;
    let mut want = vec![0f64; t * dim];
    for c in 0..dim {
        want[c] = f64::from(bf16_to_f32(emb[5 * dim + c]));
        let mut v = f64::from(bf16_to_f32(emb[40 * dim + c]));
        for i in 0..k {
            let code = tokens[(1 + i) * t + 1] as usize;
            v += f64::from(bf16_to_f32(cb[(code + i * cbs) * dim + c]));
        }
        want[dim + c] = v / f64::from(scale_div);
        want[2 * dim + c] = f64::from(bf16_to_f32(emb[c]));
    }
    Ok(check("embed_tokens_f32", rel_err(&got, &want), TOL))
}

/// cuBLAS GemmEx in the prefill layout: Y[t, n] = beta·Y + bf16(X)[t, :] · W[n, :].
fn gemm(g: &Gpu, rng: &mut Rng, beta: f32) -> R<KernelCheck> {
    if !g.has_blas() {
        return Ok(check("cublas gemm_bf16 (libcublas not found)", f64::INFINITY, 0.0));
    }
    let (n, k, t) = (96usize, 256usize, 7usize);
    let w = rng.bf16(n * k, 0.1);
    let xb16 = rng.bf16(t * k, 1.0);
    let y0 = rng.vec(t * n, 1.0);
    let (wb, xb, yb) = (up(g, &w)?, up(g, &xb16)?, up(g, &y0)?);
    // SAFETY: w n·k bf16, xb t·k bf16, y t·n f32, all allocated above.
    unsafe { g.gemm_bf16(wb.ptr(), xb.ptr(), yb.ptr(), n, k, t, beta)? };
    let got = down_f32(g, &yb, t * n)?;
    let mut want = vec![0f64; t * n];
    for ti in 0..t {
        for ni in 0..n {
            let s: f64 = (0..k)
                .map(|ki| {
                    f64::from(bf16_to_f32(w[ni * k + ki]))
                        * f64::from(bf16_to_f32(xb16[ti * k + ki]))
                })
                .sum();
            want[ti * n + ni] = f64::from(beta) * f64::from(y0[ti * n + ni]) + s;
        }
    }
    Ok(check(&format!("cublas gemm_bf16 (beta {beta})"), rel_err(&got, &want), 1e-4))
}

/// sample_f32 on random logits against `sampling::sample` (same seed, frame 0, no window;
/// top-p 0.8, 0.95 and 0.5 in turn, logits ever wider).
fn sample(g: &Gpu, rng: &mut Rng, slot: usize, temperature: f32, trials: usize) -> R<KernelCheck> {
    let (n, k) = if slot == 0 { (4097usize, 10usize) } else { (1024usize, 10usize) };
    let (sem_begin, im_end) = (151_678i32, 151_645i32);
    let seed = 4321u64;
    let hist = up(g, &vec![0i64; 16 * (k + 1)])?;
    let frame = up(g, &vec![0i64; k + 1])?;
    let mut mismatches = 0usize;
    for trial in 0..trials {
        let top_p = [0.8, 0.95, 0.5][trial % 3];
        let p = SamplingParams { temperature, top_p, repetition_penalty: 1.1 };
        let logits = rng.vec(n, 4.0 + trial as f32);
        let lb = up(g, &logits)?;
        let words: [u32; 16] = [
            0,
            0,
            seed as u32,
            (seed >> 32) as u32,
            p.temperature.to_bits(),
            p.top_p.to_bits(),
            p.repetition_penalty.to_bits(),
            0,
            0,
            16,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let stb = up(g, &words)?;
        let (lp, nn, sl, pad, sp, hp, mh, kk) = (
            lb.ptr(),
            n as i32,
            slot as i32,
            plan::sample_pad(n) as i32,
            stb.ptr(),
            hist.ptr(),
            16i32,
            k as i32,
        );
        let (sb, se, ie, iei, sr, fp) =
            (sem_begin, sem_begin + 4095, im_end, 4096i32, 4096i32, frame.ptr());
        // SAFETY: sample_f32(logits [n], n, slot, n_pad, state, hist [16, K+1], max_hist, K,
        // sem_begin, sem_end, im_end, im_end_index, semantic_rows, frame [K+1]); dynamic shared
        // memory n_pad * 12 bytes (raised at load).
        unsafe {
            ka::Sample {
                logits: lp,
                n: nn,
                slot: sl,
                n_pad: pad,
                st: sp,
                hist: hp,
                max_hist: mh,
                k: kk,
                sem_begin: sb,
                sem_end: se,
                im_end: ie,
                im_end_index: iei,
                semantic_rows: sr,
                frame: fp,
            }
            .launch(g, plan::sample(n))?
        };
        let mut fr = vec![0i64; k + 1];
        g.download(&mut fr, frame.ptr())?;
        let got = match slot {
            0 if fr[0] == i64::from(im_end) => 4096,
            0 => fr[1],
            _ => fr[slot + 1],
        };
        let mut l = logits.clone();
        let want = sampling::sample(&mut l, &[], p, seed, 0, slot as u32) as i64;
        if got != want {
            mismatches += 1;
        }
    }
    let name =
        format!("sample_f32 (slot {slot}, temperature {temperature}, {trials} draws: mismatches)");
    Ok(check(&name, mismatches as f64, 0.0))
}

/// Runs every check on the GPU; an error in one (a launch failure) is reported as that check
/// failing.
pub(super) fn run(config: &EngineConfig) -> R<Vec<KernelCheck>> {
    let g = Gpu::open(config)?;
    Ok(checks(&g, 24))
}

/// Every check on `g`, with `draws` sampler draws per sampling case.
pub(super) fn checks(g: &Gpu, draws: usize) -> Vec<KernelCheck> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::new();
    let mut push = |name: &str, r: R<Vec<KernelCheck>>| match r {
        Ok(v) => out.extend(v),
        Err(e) => out.push(KernelCheck {
            name: format!("{name}: {e}"),
            max_rel_err: f64::INFINITY,
            tolerance: 0.0,
            passed: false,
        }),
    };
    // (N, K, T, ks, residual, norm): one warp per row, split K, activation rows > GEMV_TT.
    for (n, k, t, ks, residual, norm) in [
        (1003, 1024, 1, 1, false, false),
        (1003, 1024, 5, 1, true, false),
        (1024, 3072, 1, 4, true, false),
        (4097, 1024, 1, 1, false, true),
        (1000, 1024, 2, 4, false, true),
        (77, 2048, 6, 8, true, true),
    ] {
        push("gemv_bf16", gemv(g, &mut rng, n, k, t, ks, residual, norm).map(|c| vec![c]));
    }
    push("gemv_swiglu_bf16", swiglu(g, &mut rng).map(|c| vec![c]));
    push("int8", int8(g, &mut rng));
    push("rmsnorm_f32", rmsnorm(g, &mut rng).map(|c| vec![c]));
    for kv_f32 in [false, true] {
        push("qk_rope_f32", rope(g, &mut rng, kv_f32));
        for (splits, pos0) in [(1, 600), (5, 600), (7, 2000)] {
            push("attention_f32", attention(g, &mut rng, splits, kv_f32, pos0).map(|c| vec![c]));
        }
    }
    // Decode with the RoPE prologue: slow shapes (qk-norm, the new key in the last of 1, 3 or
    // 7 splits), fast shapes (hd 64, no qk-norm, a handful of keys).
    let decode = [
        DecodeCase { nh: 8, nkv: 2, hd: 128, qk_norm: true, splits: 1, pos: 40, max_pos: 64 },
        DecodeCase { nh: 8, nkv: 2, hd: 128, qk_norm: true, splits: 3, pos: 300, max_pos: 400 },
        DecodeCase { nh: 8, nkv: 2, hd: 128, qk_norm: true, splits: 7, pos: 2000, max_pos: 2100 },
        DecodeCase { nh: 16, nkv: 8, hd: 64, qk_norm: false, splits: 1, pos: 6, max_pos: 10 },
    ];
    for kv_f32 in [false, true] {
        for c in &decode {
            push("attention_f32 + RoPE", attention_rope(g, &mut rng, c, kv_f32));
        }
    }
    push("embed_tokens_f32", embed(g, &mut rng).map(|c| vec![c]));
    push("gemm beta 0", gemm(g, &mut rng, 0.0).map(|c| vec![c]));
    push("gemm beta 1", gemm(g, &mut rng, 1.0).map(|c| vec![c]));
    for (slot, temp) in [(0usize, 0.0f32), (0, 0.8), (3, 0.8), (3, 0.0)] {
        push("sample_f32", sample(g, &mut rng, slot, temp, draws).map(|c| vec![c]));
    }
    out
}
