//! onnx-cpu's own kernel for the slow graph's attention over an fp16 KV cache.
//!
//! A bundle exported with `--kv-cache fp16` (tools/export/s1mini_export/kv_cache.py) keeps the
//! standard `com.microsoft.GroupQueryAttention` node, with fp16 q/k/v and fp16 cache buffers.
//! ONNX Runtime's own CPU kernel runs that correctly but slowly: it converts each KV head to
//! fp32 once per *query* head, so a decode step at 4,025 positions takes 1.25× the fp32 cache's
//! time instead of about half (docs/bench.md "(e)"). This kernel is registered under the same domain and name for the
//! slow session of such a bundle (ONNX Runtime looks custom operators up before its own), so the
//! graph stays one any runtime can run, and this engine gets:
//!
//! - one read of each KV head per step for all the query heads that share it (S1-mini: 2),
//!   converting fp16 to fp32 in registers (F16C) next to the dot products (FMA);
//! - half the bytes of the fp32 cache, which is what bounds a CPU decode step at long contexts;
//! - prompts (more than one new position) through a real matrix product (`matrixmultiply`) on
//!   the head's keys and values converted once, since a per-query loop would be compute-bound.
//!
//! Semantics are GroupQueryAttention's as the exporter uses it (llm.py `GroupQueryAttention`):
//! row b's `seqlens_k[b] + 1` positions are filled after this call, its T new keys go to
//! positions `seqlens_k[b] + 1 - T ..`, its query i attends keys `0 ..= seqlens_k[b] + 1 - T + i`;
//! query head h reads KV head `h / (num_heads / kv_num_heads)`; past and present are one buffer
//! when the engine binds them so (kv.rs), else past is copied into present first. Rotary
//! embedding, local windows and soft-capping are not used by the exporter and are refused.
//!
//! Hand-written because no crate does attention over an fp16 cache in place; the SIMD is
//! x86-64 AVX2 + FMA + F16C, detected at run time, with a portable path for other CPUs.

use half::f16;
use half::slice::HalfFloatSliceExt;
use ort::operator::{
    BoxedKernel, ComputeContext, KernelContext, Operator, OperatorDomain, OperatorInput,
    OperatorOutput,
};
use ort::value::TensorElementType;

use super::shared_out::SharedOut;
use crate::error::{Error, Result};

/// ONNX Runtime's contrib domain, where GroupQueryAttention lives.
const DOMAIN: &str = "com.microsoft";
const OP: &str = "GroupQueryAttention";

/// The operator domain to register on a slow session whose cache is fp16.
pub(crate) fn operators() -> Result<OperatorDomain> {
    let e = |e: ort::Error| Error::Internal(format!("registering the fp16 attention kernel: {e}"));
    OperatorDomain::new(DOMAIN).map_err(e)?.add(HalfCacheAttention).map_err(e)
}

struct HalfCacheAttention;

impl Operator for HalfCacheAttention {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        OP
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        use TensorElementType::{Float16, Int32};
        // query, key, value, past_key, past_value, seqlens_k, total_sequence_length
        [Float16, Float16, Float16, Float16, Float16, Int32, Int32].map(OperatorInput::required)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        // output, present_key, present_value
        [TensorElementType::Float16; 3].map(OperatorOutput::required)
    }

    fn create_kernel<'attr>(
        &self,
        info: &KernelContext<'attr>,
    ) -> ort::Result<Self::Kernel<'attr>> {
        let heads = info.get::<i64>("num_heads").unwrap_or(0);
        let kv_heads = info.get::<i64>("kv_num_heads").unwrap_or(0);
        if heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 {
            return Err(ort::Error::new(format!(
                "{OP} (s1-mini fp16 cache): num_heads {heads} is not a multiple of kv_num_heads {kv_heads}"
            )));
        }
        for (attr, unused) in [("do_rotary", 0), ("local_window_size", -1)] {
            if let Some(v) = info.get::<i64>(attr) {
                if v != unused {
                    return Err(ort::Error::new(format!(
                        "{OP} (s1-mini fp16 cache): {attr} = {v} is not supported"
                    )));
                }
            }
        }
        if info.get::<f32>("softcap").is_some_and(|v| v != 0.0) {
            return Err(ort::Error::new(format!(
                "{OP} (s1-mini fp16 cache): softcap is not supported"
            )));
        }
        let shape = Heads {
            heads: heads as usize,
            kv_heads: kv_heads as usize,
            scale: info.get::<f32>("scale").filter(|s| *s != 0.0),
        };
        Ok(Box::new(move |ctx: &ComputeContext| compute(ctx, shape)))
    }
}

#[derive(Clone, Copy)]
struct Heads {
    heads: usize,
    kv_heads: usize,
    /// Softmax scale; `None`: 1/√D.
    scale: Option<f32>,
}

fn bad(message: String) -> ort::Error {
    ort::Error::new(format!("{OP} (s1-mini fp16 cache): {message}"))
}

/// Calls of this kernel (tests: proof that a session runs it).
#[cfg(test)]
pub(crate) static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn compute(ctx: &ComputeContext, h: Heads) -> ort::Result<()> {
    #[cfg(test)]
    CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let input = |i: usize| ctx.input(i)?.ok_or_else(|| bad(format!("input {i} missing")));
    let (q_in, k_in, v_in) = (input(0)?, input(1)?, input(2)?);
    let (pk_in, pv_in, seq_in) = (input(3)?, input(4)?, input(5)?);
    let (q_shape, q) = q_in.try_extract_tensor::<f16>()?;
    let (_, k_new) = k_in.try_extract_tensor::<f16>()?;
    let (_, v_new) = v_in.try_extract_tensor::<f16>()?;
    let (_, seqlens) = seq_in.try_extract_tensor::<i32>()?;
    let past_shape: Vec<i64> = pk_in.shape().to_vec();
    let (&[b, t, width], &[pb, hkv, cap, d]) = (&q_shape[..], &past_shape[..]) else {
        return Err(bad(format!(
            "query {q_shape:?}, past {past_shape:?}: want [B,T,H*D], [B,Hkv,C,D]"
        )));
    };
    let (b, t, width, cap, d) = (b as usize, t as usize, width as usize, cap as usize, d as usize);
    if pb as usize != b || hkv as usize != h.kv_heads || width != h.heads * d || seqlens.len() != b
    {
        return Err(bad(format!(
            "query {q_shape:?}, past {past_shape:?}, {} seqlens for {} heads / {} kv heads",
            seqlens.len(),
            h.heads,
            h.kv_heads
        )));
    }
    if k_new.len() != b * t * h.kv_heads * d || v_new.len() != k_new.len() {
        return Err(bad(format!(
            "key/value of {} values for [{b}, {t}, {}]",
            k_new.len(),
            h.kv_heads * d
        )));
    }
    let mut past = Vec::with_capacity(b);
    for &s in seqlens {
        let total = s as i64 + 1;
        if total < t as i64 || total as usize > cap {
            return Err(bad(format!(
                "seqlens_k {s} for {t} new positions in a {cap}-position cache"
            )));
        }
        past.push(total as usize - t);
    }
    let layout = Layout { b, t, d, cap, kv_heads: h.kv_heads, rep: h.heads / h.kv_heads };
    let (pk_ptr, pv_ptr) = (data_ptr(&pk_in)?, data_ptr(&pv_in)?);
    let mut y_out = ctx
        .output(0, [b as i64, t as i64, width as i64])?
        .ok_or_else(|| bad("no output".into()))?;
    let mut pk_out =
        ctx.output(1, past_shape.clone())?.ok_or_else(|| bad("no present_key".into()))?;
    let mut pv_out =
        ctx.output(2, past_shape.clone())?.ok_or_else(|| bad("no present_value".into()))?;
    let (_, present_k) = pk_out.try_extract_tensor_mut::<f16>()?;
    let (_, present_v) = pv_out.try_extract_tensor_mut::<f16>()?;
    // Past and present are one buffer when the engine bound them so; else present starts as a
    // copy of past (ONNX Runtime's own kernel behaves the same way).
    if present_k.as_ptr() != pk_ptr {
        present_k.copy_from_slice(pk_in.try_extract_tensor::<f16>()?.1);
    }
    if present_v.as_ptr() != pv_ptr {
        present_v.copy_from_slice(pv_in.try_extract_tensor::<f16>()?.1);
    }
    layout.write_new(present_k, k_new, &past);
    layout.write_new(present_v, v_new, &past);
    let (_, y) = y_out.try_extract_tensor_mut::<f16>()?;
    let scale = h.scale.unwrap_or(1.0 / (d as f32).sqrt());
    let y_at = SharedOut::new(y);
    let (present_k, present_v): (&[f16], &[f16]) = (present_k, present_v);
    ctx.par_for(b * h.kv_heads, b * h.kv_heads, |task| {
        let (row, g) = (task / h.kv_heads, task % h.kv_heads);
        let group = Group { layout: &layout, row, g, past: past[row], scale };
        // SAFETY: task (row, g) writes only the query heads g*rep..(g+1)*rep of row `row`,
        // which no other task writes; `y` outlives par_for, which returns after every task.
        let (at, len) = y_at.parts();
        let y = unsafe { std::slice::from_raw_parts_mut(at, len) };
        group.attend(q, present_k, present_v, y);
    })
}

fn data_ptr(v: &ort::value::ValueRef<'_>) -> ort::Result<*const f16> {
    Ok(v.try_extract_tensor::<f16>()?.1.as_ptr())
}

/// Sizes of one call: rows, new positions, head size, cache capacity, KV heads and query heads
/// per KV head.
struct Layout {
    b: usize,
    t: usize,
    d: usize,
    cap: usize,
    kv_heads: usize,
    rep: usize,
}

impl Layout {
    /// Start of position `pos` of KV head `g` of row `row` in a `[B, Hkv, C, D]` buffer.
    fn cache_at(&self, row: usize, g: usize, pos: usize) -> usize {
        ((row * self.kv_heads + g) * self.cap + pos) * self.d
    }

    /// Start of query head `head`, position `i` of row `row` in `[B, T, H*D]`.
    fn query_at(&self, row: usize, i: usize, head: usize) -> usize {
        ((row * self.t + i) * self.kv_heads * self.rep + head) * self.d
    }

    /// Writes the new keys (or values) `[B, T, Hkv*D]` at each row's positions `past..past+T`.
    fn write_new(&self, cache: &mut [f16], new: &[f16], past: &[usize]) {
        let d = self.d;
        for (row, &start) in past.iter().enumerate().take(self.b) {
            for i in 0..self.t {
                for g in 0..self.kv_heads {
                    let from = ((row * self.t + i) * self.kv_heads + g) * d;
                    let to = self.cache_at(row, g, start + i);
                    cache[to..to + d].copy_from_slice(&new[from..from + d]);
                }
            }
        }
    }
}

/// One KV head of one row and its query heads.
struct Group<'a> {
    layout: &'a Layout,
    row: usize,
    g: usize,
    past: usize,
    scale: f32,
}

impl Group<'_> {
    fn attend(&self, q: &[f16], k: &[f16], v: &[f16], y: &mut [f16]) {
        let l = self.layout;
        let total = self.past + l.t;
        let keys = &k[l.cache_at(self.row, self.g, 0)..l.cache_at(self.row, self.g, total)];
        let values = &v[l.cache_at(self.row, self.g, 0)..l.cache_at(self.row, self.g, total)];
        // Queries of this group as rows (head r, position i) -> r * T + i, scaled, in f32.
        let (d, m) = (l.d, l.rep * l.t);
        let mut qs = vec![0f32; m * d];
        for r in 0..l.rep {
            for i in 0..l.t {
                let at = l.query_at(self.row, i, self.g * l.rep + r);
                for (dst, src) in qs[(r * l.t + i) * d..][..d].iter_mut().zip(&q[at..at + d]) {
                    *dst = src.to_f32() * self.scale;
                }
            }
        }
        let out = if l.t == 1 {
            decode(&qs, keys, values, d, total)
        } else {
            prompt(&qs, keys, values, d, l.t, self.past)
        };
        for r in 0..l.rep {
            for i in 0..l.t {
                let at = l.query_at(self.row, i, self.g * l.rep + r);
                for (dst, src) in y[at..at + d].iter_mut().zip(&out[(r * l.t + i) * d..][..d]) {
                    *dst = f16::from_f32(*src);
                }
            }
        }
    }
}

/// One new position per query head (`qs`: `[m, d]`, every query attends all `total` keys):
/// one pass over the keys for all `m` scores, one over the values. `[m, d]` out.
fn decode(qs: &[f32], keys: &[f16], values: &[f16], d: usize, total: usize) -> Vec<f32> {
    let m = qs.len() / d;
    let mut scores = vec![0f32; m * total];
    for j in 0..total {
        let key = &keys[j * d..(j + 1) * d];
        for r in 0..m {
            scores[r * total + j] = simd::dot(&qs[r * d..(r + 1) * d], key);
        }
    }
    for r in 0..m {
        softmax(&mut scores[r * total..(r + 1) * total]);
    }
    let mut out = vec![0f32; m * d];
    for j in 0..total {
        let value = &values[j * d..(j + 1) * d];
        for r in 0..m {
            simd::axpy(&mut out[r * d..(r + 1) * d], scores[r * total + j], value);
        }
    }
    out
}

/// Keys per block of the prompt path: a block's scores (`rep * chunk * KEY_BLOCK` f32, 1 MiB
/// for S1-mini's 512-position chunks) stay in the cache between their product, their
/// exponentials and the product with the values.
const KEY_BLOCK: usize = 256;

/// `t` new positions (`qs`: `[m = rep * t, d]`, row `r * t + i` is query head r at position
/// `past + i`, which attends keys `0..=past + i`): blocks of keys and values converted to f32,
/// two matrix products per block and a running softmax (each row's maximum and sum so far
/// rescale what it accumulated, as in FlashAttention), so no `m × total` score matrix is
/// written out. `[m, d]` out.
fn prompt(qs: &[f32], keys: &[f16], values: &[f16], d: usize, t: usize, past: usize) -> Vec<f32> {
    let m = qs.len() / d;
    let total = past + t;
    let mut out = vec![0f32; m * d];
    let mut max = vec![f32::NEG_INFINITY; m];
    let mut sum = vec![0f32; m];
    let (mut k32, mut v32) = (vec![0f32; KEY_BLOCK * d], vec![0f32; KEY_BLOCK * d]);
    let mut scores = vec![0f32; m * KEY_BLOCK];
    for j0 in (0..total).step_by(KEY_BLOCK) {
        let n = KEY_BLOCK.min(total - j0);
        // half's slice conversion uses F16C where the CPU has it (detected at run time).
        keys[j0 * d..(j0 + n) * d].convert_to_f32_slice(&mut k32[..n * d]);
        values[j0 * d..(j0 + n) * d].convert_to_f32_slice(&mut v32[..n * d]);
        // SAFETY: qs is [m, d], k32 read as its transpose [d, n], scores [m, n] (row stride n).
        unsafe {
            matrixmultiply::sgemm(
                m,
                d,
                n,
                1.0,
                qs.as_ptr(),
                d as isize,
                1,
                k32.as_ptr(),
                1,
                d as isize,
                0.0,
                scores.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        for row in 0..m {
            let s = &mut scores[row * n..(row + 1) * n];
            // Keys j0.. visible to this row; block 0 holds key 0, which every row sees, so
            // `max` is finite after it.
            let visible = (past + row % t + 1).saturating_sub(j0).min(n);
            let new_max = max[row].max(lanes(&s[..visible], f32::NEG_INFINITY, f32::max));
            if new_max > max[row] {
                let rescale = exp(max[row] - new_max);
                max[row] = new_max;
                sum[row] *= rescale;
                for x in &mut out[row * d..(row + 1) * d] {
                    *x *= rescale;
                }
            }
            for x in &mut s[..visible] {
                *x = exp(*x - new_max);
            }
            sum[row] += lanes(&s[..visible], 0.0, |a, b| a + b);
            s[visible..].fill(0.0);
        }
        // SAFETY: scores [m, n], v32 [n, d], out [m, d]; out accumulates (beta 1).
        unsafe {
            matrixmultiply::sgemm(
                m,
                n,
                d,
                1.0,
                scores.as_ptr(),
                n as isize,
                1,
                v32.as_ptr(),
                d as isize,
                1,
                1.0,
                out.as_mut_ptr(),
                d as isize,
                1,
            );
        }
    }
    for row in 0..m {
        let inv = 1.0 / sum[row];
        for x in &mut out[row * d..(row + 1) * d] {
            *x *= inv;
        }
    }
    out
}

/// `xs` folded by `op` over 16 interleaved lanes, then across them: a form the compiler
/// vectorises (a single running maximum or sum is a chain it must keep in order).
#[inline]
fn lanes(xs: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a = op(*a, *x);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, x| op(a, *x));
    acc.iter().fold(tail, |a, x| op(a, *x))
}

/// `e^x` for `x <= 0` (softmax after subtracting the maximum), to a few ulp: written as
/// plain float arithmetic so that the compiler vectorises the loops that call it, which it
/// cannot do with the C library's `expf` (5 % of a long prompt's time in a profile).
#[inline]
fn exp(x: f32) -> f32 {
    // e^x = 2^n * e^f with n = round(x log2 e) and f = x - n ln 2 in [-0.35, 0.35], ln 2 split
    // in two (Cody and Waite) so that f is exact; e^f by its Taylor polynomial to degree 7
    // (truncation error < 1e-8 there), Horner's scheme over 1/k!, highest first.
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    const LN2_HI: f32 = 0.693_359_4; // few mantissa bits: n * LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    const C: [f32; 8] =
        [1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];
    let x = x.max(-87.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let f = (x - n * LN2_HI) - n * LN2_LO;
    let p = C.iter().fold(0.0, |acc, c| acc * f + c);
    // n is also in the low mantissa bits of `shifted`: taken from there, 2^n is integer
    // arithmetic on bits (a float-to-int `as` cast checks for NaN and does not vectorise).
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    p * f32::from_bits((n_bits.wrapping_add(127) << 23) as u32)
}

fn softmax(s: &mut [f32]) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in s.iter_mut() {
        *x = exp(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in s.iter_mut() {
        *x *= inv;
    }
}

/// Dot product and axpy of f32 vectors with fp16 ones, the decode step's inner loops.
mod simd {
    use half::f16;

    /// `Σ q[i] · k[i]`.
    pub fn dot(q: &[f32], k: &[f16]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if avx2() && q.len().is_multiple_of(8) {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked), lengths are equal multiples of 8.
            return unsafe { x86::dot(q, k) };
        }
        q.iter().zip(k).map(|(a, b)| a * b.to_f32()).sum()
    }

    /// `acc[i] += a · v[i]`.
    pub fn axpy(acc: &mut [f32], a: f32, v: &[f16]) {
        #[cfg(target_arch = "x86_64")]
        if avx2() && acc.len().is_multiple_of(8) {
            // SAFETY: as in `dot`.
            return unsafe { x86::axpy(acc, a, v) };
        }
        for (x, b) in acc.iter_mut().zip(v) {
            *x += a * b.to_f32();
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn avx2() -> bool {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use half::f16;
        use std::arch::x86_64::*;

        /// # Safety
        /// The CPU has AVX2, FMA and F16C; `q` and `k` have the same length, a multiple of 8.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn dot(q: &[f32], k: &[f16]) -> f32 {
            debug_assert!(q.len() == k.len() && q.len().is_multiple_of(8));
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let n = q.len();
            let (qp, kp) = (q.as_ptr(), k.as_ptr() as *const __m128i);
            let mut i = 0;
            // SAFETY: every load reads 8 values at i < n (n a multiple of 8) of both slices.
            unsafe {
                while i + 16 <= n {
                    let k0 = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(i / 8)));
                    let k1 = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(i / 8 + 1)));
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i)), k0, a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i + 8)), k1, a1);
                    i += 16;
                }
                if i < n {
                    let k0 = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(i / 8)));
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i)), k0, a0);
                }
            }
            let s = _mm256_add_ps(a0, a1);
            let lo = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
            let lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
            _mm_cvtss_f32(_mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1)))
        }

        /// # Safety
        /// As [`dot`], for `acc` and `v`.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn axpy(acc: &mut [f32], a: f32, v: &[f16]) {
            debug_assert!(acc.len() == v.len() && acc.len().is_multiple_of(8));
            let av = _mm256_set1_ps(a);
            let (xp, vp) = (acc.as_mut_ptr(), v.as_ptr() as *const __m128i);
            for c in 0..acc.len() / 8 {
                // SAFETY: 8 values at c * 8 < len of both slices.
                unsafe {
                    let x = _mm256_loadu_ps(xp.add(c * 8));
                    let y = _mm256_cvtph_ps(_mm_loadu_si128(vp.add(c)));
                    _mm256_storeu_ps(xp.add(c * 8), _mm256_fmadd_ps(av, y, x));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halves(n: usize, seed: u32) -> Vec<f16> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                f16::from_f32((x % 2000) as f32 / 1000.0 - 1.0)
            })
            .collect()
    }

    /// Reference attention in f64 over the f16 values.
    fn reference(q: &[f32], k: &[f16], v: &[f16], d: usize, visible: usize) -> Vec<f64> {
        let s: Vec<f64> = (0..visible)
            .map(|j| (0..d).map(|c| q[c] as f64 * k[j * d + c].to_f64()).sum())
            .collect();
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        (0..d).map(|c| (0..visible).map(|j| e[j] / sum * v[j * d + c].to_f64()).sum()).collect()
    }

    #[test]
    fn decode_and_prompt_paths_equal_the_reference() {
        for d in [8usize, 16, 24, 128] {
            // A past of 300 positions: the prompt path's key blocks, the last one partial.
            let (past, t, rep) = (300usize, 5usize, 2usize);
            let total = past + t;
            let k = halves(total * d, 1);
            let v = halves(total * d, 2);
            let q: Vec<f32> = halves(rep * t * d, 3).iter().map(|x| x.to_f32() * 0.3).collect();
            let out = prompt(&q, &k, &v, d, t, past);
            for row in 0..rep * t {
                let want = reference(&q[row * d..(row + 1) * d], &k, &v, d, past + row % t + 1);
                for (a, b) in out[row * d..(row + 1) * d].iter().zip(&want) {
                    assert!((*a as f64 - b).abs() < 1e-5, "prompt d {d} row {row}: {a} vs {b}");
                }
            }
            let q1 = &q[..rep * d];
            let out = decode(q1, &k, &v, d, total);
            for r in 0..rep {
                let want = reference(&q1[r * d..(r + 1) * d], &k, &v, d, total);
                for (a, b) in out[r * d..(r + 1) * d].iter().zip(&want) {
                    assert!((*a as f64 - b).abs() < 1e-5, "decode d {d} head {r}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_the_library_one() {
        for i in 0..=20_000 {
            let x = -(i as f32) * 0.0043; // 0 down to -86
            let (a, b) = (exp(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-7, "exp({x}) = {a}, want {b}");
        }
        assert!(exp(-1e30) >= 0.0 && exp(-1e30) < 1e-37);
    }

    #[test]
    fn simd_dot_and_axpy_equal_the_plain_loops() {
        let k = halves(136, 7);
        let q: Vec<f32> = halves(136, 8).iter().map(|x| x.to_f32()).collect();
        let plain: f32 = q.iter().zip(&k).map(|(a, b)| a * b.to_f32()).sum();
        assert!((simd::dot(&q, &k) - plain).abs() < 1e-4);
        let mut acc = q.clone();
        simd::axpy(&mut acc, 0.5, &k);
        for ((a, x), y) in acc.iter().zip(&q).zip(&k) {
            assert!((a - (x + 0.5 * y.to_f32())).abs() < 1e-6);
        }
    }
}
