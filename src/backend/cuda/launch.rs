//! The kernel launchers: one method per kernel, each owning its grid and block math and
//! restating the `.cu` signature it must match.

use super::device::args;
use super::engine::{Model, Stack};
use super::error::{CudaError, CudaResult};
use super::plan;
use super::request::Workspace;
use super::weights::{LayerW, Lin, Numerics};

impl Model {
    pub(super) fn embed(
        &self,
        ws: &Workspace,
        tokens: u64,
        tok_stride: usize,
        t: usize,
    ) -> CudaResult<()> {
        let c = &self.cfg;
        let scale =
            if c.scale_codebook_embeddings { ((c.num_codebooks + 1) as f32).sqrt() } else { 1.0 };
        let (ts, tt, dim, k, cbs, voc, sb, se) = (
            tok_stride as i32,
            t as i32,
            c.dim as i32,
            c.num_codebooks as i32,
            c.codebook_size as i32,
            c.vocab_size as i32,
            c.semantic_begin as i32,
            c.semantic_end as i32,
        );
        let (emb, cb, out) = (self.w.emb, self.w.cb_emb, ws.x.ptr());
        // SAFETY: embed_tokens_f32(const i64* tokens, int tok_stride, int T, const bf16* emb,
        // const bf16* cb_emb, float* out, int dim, int K, int codebook_size, int vocab,
        // int sem_begin, int sem_end, float scale_div); tokens holds [1+K, tok_stride] i64,
        // out [T, dim] f32 (T <= PREFILL_CHUNK).
        unsafe {
            self.gpu.launch(
                "embed_tokens_f32",
                plan::embed(t, c.dim),
                &mut args![tokens, ts, tt, emb, cb, out, dim, k, cbs, voc, sb, se, scale],
            )
        }
    }

    pub(super) fn rmsnorm(&self, x: u64, w: u64, out: u64, rows: usize) -> CudaResult<()> {
        let (dim, eps) = (self.cfg.dim as i32, self.cfg.norm_eps);
        // SAFETY: rmsnorm_f32(const float* x, const bf16* w, float* out, int dim, float eps);
        // x/out hold [rows, dim] f32, w [dim] bf16.
        unsafe {
            self.gpu.launch("rmsnorm_f32", plan::per_row(rows), &mut args![x, w, out, dim, eps])
        }
    }

    /// Whether a T-row product goes through cuBLAS (prefill) rather than the GEMV kernels.
    pub(super) fn uses_blas(&self, w: Lin, t: usize) -> bool {
        t > 1
            && self.numerics == Numerics::Fast
            && self.gpu.has_blas()
            && (matches!(w, Lin::Bf16(_)) || self.w.dequant.is_some())
    }

    /// The bf16 [n, k] matrix cuBLAS reads for `w`: the arena's, or for an int8 layer the
    /// scratch refilled with its dequantisation (stream order keeps the previous GEMM's reads
    /// before the refill).
    pub(super) fn gemm_operand(&self, w: Lin, n: usize, k: usize) -> CudaResult<u64> {
        match w {
            Lin::Bf16(p) => Ok(p),
            Lin::I8 { q, scale } => {
                let scratch = self
                    .w
                    .dequant
                    .as_ref()
                    .ok_or_else(|| CudaError::invariant("no dequantisation scratch"))?;
                let (out, kk, cnt) = (scratch.ptr(), k as i32, (n * k) as i32);
                debug_assert!(n * k * 2 <= scratch.bytes());
                // SAFETY: dequantize_i8_bf16(const int8* q, const float* scale, bf16* W, int K,
                // int count); q [n, k] and scale [n] of this layer, W the scratch, sized at
                // load for the largest layer matrix.
                unsafe {
                    self.gpu.launch(
                        "dequantize_i8_bf16",
                        plan::elementwise(n * k),
                        &mut args![q, scale, out, kk, cnt],
                    )?
                };
                Ok(out)
            }
        }
    }

    /// y[t] = (residual ? y[t] : 0) + W xn[t] for t < T, xn = x or rmsnorm(x) · `norm`.
    /// GEMV kernels (the norm fused in); cuBLAS for T > 1 when present (the norm written to
    /// ws.h first). `norm` needs k = dim.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear(
        &self,
        ws: &Workspace,
        w: Lin,
        norm: Option<u64>,
        x: u64,
        y: u64,
        n: usize,
        k: usize,
        t: usize,
        residual: bool,
    ) -> CudaResult<()> {
        if self.uses_blas(w, t) {
            let src = match norm {
                Some(nw) => {
                    self.rmsnorm(x, nw, ws.h.ptr(), t)?;
                    ws.h.ptr()
                }
                None => x,
            };
            let wb = self.gemm_operand(w, n, k)?;
            self.cast_bf16(src, ws.xb.ptr(), t * k)?;
            // SAFETY: W [n, k] bf16 (arena or dequantisation scratch), xb [t, k] bf16 (sized
            // for the widest input), y [t, n] f32 dense (beta = 1 adds in place).
            return unsafe {
                self.gpu.gemm_bf16(wb, ws.xb.ptr(), y, n, k, t, if residual { 1.0 } else { 0.0 })
            };
        }
        let (xs, ys, nn, kk, tt) = (k as i32, n as i32, n as i32, k as i32, t as i32);
        let res = if residual { y } else { 0u64 };
        let (nw, eps) = (norm.unwrap_or(0), self.cfg.norm_eps);
        match w {
            Lin::Bf16(wp) => {
                let (dims, kss) = w.gemv_launch(n, k, t);
                // SAFETY: gemv_bf16(const bf16* W, const float* x, int x_stride, float* y,
                // int y_stride, const float* res, int N, int K, int T, const bf16* norm_w,
                // float eps, int ks); W [N, K], x [T, K], y/res [T, N], norm_w [K] or null;
                // K % (8 ks) == 0 (gemv_split).
                unsafe {
                    self.gpu.launch(
                        "gemv_bf16",
                        dims,
                        &mut args![wp, x, xs, y, ys, res, nn, kk, tt, nw, eps, kss],
                    )
                }
            }
            Lin::I8 { q, scale, .. } => {
                let (dims, kss) = w.gemv_launch(n, k, t);
                // SAFETY: gemv_i8(const int8* W, const float* scale, const float* x,
                // int x_stride, float* y, int y_stride, const float* res, int N, int K, int T,
                // const bf16* norm_w, float eps, int ks); K % (16 ks) == 0.
                unsafe {
                    self.gpu.launch(
                        "gemv_i8",
                        dims,
                        &mut args![q, scale, x, xs, y, ys, res, nn, kk, tt, nw, eps, kss],
                    )
                }
            }
        }
    }

    /// y = silu(W1 xn) · (W3 xn), xn = rmsnorm(x) · `norm` (one fused GEMV kernel; two
    /// cuBLAS GEMMs and `silu_mul_f32` for prefill).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn swiglu(
        &self,
        ws: &Workspace,
        l: &LayerW,
        norm: u64,
        x: u64,
        y: u64,
        n: usize,
        k: usize,
        t: usize,
    ) -> CudaResult<()> {
        if self.uses_blas(l.w1, t) {
            self.rmsnorm(x, norm, ws.tmp.ptr(), t)?;
            self.linear(ws, l.w1, None, ws.tmp.ptr(), ws.ffa.ptr(), n, k, t, false)?;
            self.linear(ws, l.w3, None, ws.tmp.ptr(), ws.ffb.ptr(), n, k, t, false)?;
            let (a, b, cnt) = (ws.ffa.ptr(), ws.ffb.ptr(), (n * t) as i32);
            // SAFETY: silu_mul_f32(const float* a, const float* b, float* out, int n); all [t, n].
            return unsafe {
                self.gpu.launch("silu_mul_f32", plan::elementwise(n * t), &mut args![a, b, y, cnt])
            };
        }
        let (xs, ys, nn, kk, tt) = (k as i32, n as i32, n as i32, k as i32, t as i32);
        let eps = self.cfg.norm_eps;
        let (dims, kss) = l.w1.gemv_launch(n, k, t);
        match (l.w1, l.w3) {
            (Lin::I8 { q: q1, scale: s1, .. }, Lin::I8 { q: q3, scale: s3, .. }) => {
                // SAFETY: gemv_swiglu_i8(W1, s1, W3, s3, x, x_stride, y, y_stride, N, K, T,
                // norm_w, eps, ks); K % (16 ks) == 0.
                unsafe {
                    self.gpu.launch(
                        "gemv_swiglu_i8",
                        dims,
                        &mut args![q1, s1, q3, s3, x, xs, y, ys, nn, kk, tt, norm, eps, kss],
                    )
                }
            }
            (Lin::Bf16(p1), Lin::Bf16(p3)) => {
                // SAFETY: gemv_swiglu_bf16(const bf16* W1, const bf16* W3, const float* x,
                // int x_stride, float* y, int y_stride, int N, int K, int T,
                // const bf16* norm_w, float eps, int ks); K % (8 ks) == 0.
                unsafe {
                    self.gpu.launch(
                        "gemv_swiglu_bf16",
                        dims,
                        &mut args![p1, p3, x, xs, y, ys, nn, kk, tt, norm, eps, kss],
                    )
                }
            }
            _ => Err(CudaError::invariant("w1 and w3 must have the same weight type")),
        }
    }

    pub(super) fn cast_bf16(&self, x: u64, out: u64, n: usize) -> CudaResult<()> {
        let nn = n as i32;
        // SAFETY: cast_bf16_f32(const float* x, bf16* out, int n); out sized for the widest input.
        unsafe { self.gpu.launch("cast_bf16_f32", plan::elementwise(n), &mut args![x, out, nn]) }
    }

    pub(super) fn copy(&self, src: u64, dst: u64, n: usize) -> CudaResult<()> {
        let nn = n as i32;
        // SAFETY: copy_f32(const float* src, float* dst, int n).
        unsafe { self.gpu.launch("copy_f32", plan::elementwise(n), &mut args![src, dst, nn]) }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn rope(
        &self,
        st: &Stack,
        l: &LayerW,
        qkv: u64,
        t: usize,
        pos_ptr: u64,
        pos_add: usize,
        rope: u64,
        kc: u64,
        vc: u64,
    ) -> CudaResult<()> {
        let (tt, pa, qn, kn, use_qk) =
            (t as i32, pos_add as i32, l.q_norm, l.k_norm, i32::from(st.qk_norm));
        let (nh, nkv, hd, eps, mp) = (
            st.n_head as i32,
            st.n_kv as i32,
            st.head_dim as i32,
            self.cfg.norm_eps,
            st.max_pos as i32,
        );
        let kv32 = i32::from(st.kv_bytes == 4);
        // SAFETY: qk_rope_f32(float* qkv, int T, const int* pos_ptr, int pos_add,
        // const bf16* q_norm, const bf16* k_norm, int use_qk_norm, const bf16* rope, int nh,
        // int nkv, int hd, float eps, void* kc, void* vc, int max_pos, int kv_f32);
        // qkv [T, (nh+2nkv)hd], rope [max_pos, hd/2, 2], kc/vc [nkv, max_pos, hd] of this layer
        // in the stack's KV type.
        unsafe {
            self.gpu.launch(
                "qk_rope_f32",
                plan::qk_rope(t, st.n_head, st.n_kv, st.head_dim),
                &mut args![
                    qkv, tt, pos_ptr, pa, qn, kn, use_qk, rope, nh, nkv, hd, eps, kc, vc, mp, kv32
                ],
            )
        }
    }

    /// Attention of T queries; `rope` = Some((layer, table)) for decode (T = 1) does the
    /// qk-norm, RoPE and KV write of the new position in the same launch (no `rope` launch).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention(
        &self,
        ws: &Workspace,
        st: &Stack,
        t: usize,
        pos_ptr: u64,
        pos_add: usize,
        kc: u64,
        vc: u64,
        splits: usize,
        rope: Option<(&LayerW, u64)>,
    ) -> CudaResult<()> {
        debug_assert!(rope.is_none() || t == 1);
        let (table, qn, kn) = match rope {
            Some((l, table)) if st.qk_norm => (table, l.q_norm, l.k_norm),
            Some((_, table)) => (table, 0u64, 0u64),
            None => (0u64, 0u64, 0u64),
        };
        let eps = self.cfg.norm_eps;
        let (q, qs, tt, pa) = (ws.qkv.ptr(), st.qkv_w() as i32, t as i32, pos_add as i32);
        let (nh, nkv, hd, mp) =
            (st.n_head as i32, st.n_kv as i32, st.head_dim as i32, st.max_pos as i32);
        let scale = 1.0f32 / (st.head_dim as f32).sqrt();
        let (ns, po, pml, cnt) =
            (splits as i32, ws.part_o.ptr(), ws.part_ml.ptr(), ws.att_count.ptr());
        let (out, os, kv32) = (ws.att.ptr(), st.q_w() as i32, i32::from(st.kv_bytes == 4));
        // SAFETY: attention_f32(const float* q, int q_stride, void* kc, void* vc, int kv_f32,
        // int T, const int* pos_ptr, int pos_add, int nh, int nkv, int hd, int max_pos,
        // float scale, int n_split, float* part_o, float* part_ml, unsigned* counters,
        // float* out, int out_stride, const bf16* rope, const bf16* q_norm, const bf16* k_norm,
        // float eps); q is the qkv row ([T, (nh+2nkv)hd]), part buffers hold
        // nh*T*n_split*(hd | 2) floats and the counters nh*T (sized for the largest use in
        // new_workspace), out [T, nh*hd]; rope [max_pos, hd/2, 2] or null (then T may be > 1).
        unsafe {
            self.gpu.launch(
                "attention_f32",
                plan::attention(st.n_head, t, splits),
                &mut args![
                    q, qs, kc, vc, kv32, tt, pos_ptr, pa, nh, nkv, hd, mp, scale, ns, po, pml, cnt,
                    out, os, table, qn, kn, eps
                ],
            )
        }
    }

    pub(super) fn sample(&self, ws: &Workspace, slot: usize) -> CudaResult<()> {
        let c = &self.cfg;
        let (logits, n) = if slot == 0 {
            (ws.logits.ptr(), c.head_rows())
        } else {
            (ws.flogits.ptr(), c.fast_logit_rows)
        };
        let (nn, sl, pad) = (n as i32, slot as i32, plan::sample_pad(n) as i32);
        let (st, hist, mh, k) =
            (ws.state.ptr(), ws.hist.ptr(), c.max_seq_len as i32, c.num_codebooks as i32);
        let (sb, se, ie, iei, sr, fr) = (
            c.semantic_begin as i32,
            c.semantic_end as i32,
            c.im_end as i32,
            c.im_end_index as i32,
            c.semantic_rows as i32,
            ws.frame.ptr(),
        );
        // SAFETY: sample_f32(const float* logits, int n, int slot, int n_pad,
        // const S1State* st, const i64* hist, int max_hist, int K, int sem_begin, int sem_end,
        // int im_end, int im_end_index, int semantic_rows, i64* frame); dynamic shared memory
        // n_pad*12 bytes (attribute raised at load), hist [max_hist, K+1], frame [K+1].
        unsafe {
            self.gpu.launch(
                "sample_f32",
                plan::sample(n),
                &mut args![logits, nn, sl, pad, st, hist, mh, k, sb, se, ie, iei, sr, fr],
            )
        }
    }
}
