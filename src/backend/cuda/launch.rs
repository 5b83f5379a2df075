//! The kernel launchers: one method per kernel, each owning its grid and block math and filling
//! the kernel's argument struct (`kernel_args.rs`) by name.

use super::engine::{Model, Stack};
use super::error::{CudaError, CudaResult};
use super::kernel_args as ka;
use super::plan::{self, Dims};
use super::request::Workspace;
use super::weights::{LayerW, Lin, Numerics};

impl Model {
    /// Embeds T prompt positions (`tokens` [1+K, tok_stride] i64 on the device) into ws.x.
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
        let a = ka::EmbedTokens {
            tokens,
            tok_stride: tok_stride as i32,
            t: t as i32,
            emb: self.w.emb,
            cb_emb: self.w.cb_emb,
            out: ws.x.ptr(),
            dim: c.dim as i32,
            k: c.num_codebooks as i32,
            codebook_size: c.codebook_size as i32,
            vocab: c.vocab_size as i32,
            sem_begin: c.semantic_begin as i32,
            sem_end: c.semantic_end as i32,
            scale_div: scale,
        };
        // SAFETY: tokens holds [1+K, tok_stride] i64, ws.x [T, dim] f32 (T <= PREFILL_CHUNK),
        // the embeddings are the arena's.
        unsafe { a.launch(&self.gpu, plan::embed(t, c.dim)) }
    }

    /// out = rmsnorm(x) · w over `rows` rows of dim.
    pub(super) fn rmsnorm(&self, x: u64, w: u64, out: u64, rows: usize) -> CudaResult<()> {
        let a = ka::RmsNorm { x, w, out, dim: self.cfg.dim as i32, eps: self.cfg.norm_eps };
        // SAFETY: x/out hold [rows, dim] f32, w [dim] bf16.
        unsafe { a.launch(&self.gpu, plan::per_row(rows)) }
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
                debug_assert!(n * k * 2 <= scratch.bytes());
                let a = ka::DequantizeI8 {
                    q,
                    scale,
                    w: scratch.ptr(),
                    k: k as i32,
                    count: (n * k) as i32,
                };
                // SAFETY: q [n, k] and scale [n] of this layer, w the scratch, sized at load for
                // the largest layer matrix.
                unsafe { a.launch(&self.gpu, plan::elementwise(n * k))? };
                Ok(scratch.ptr())
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
        let (dims, ks) = w.gemv_launch(n, k, t);
        let res = if residual { y } else { 0u64 };
        let (norm_w, eps) = (norm.unwrap_or(0), self.cfg.norm_eps);
        let (x_stride, y_stride, nn, kk, tt) = (k as i32, n as i32, n as i32, k as i32, t as i32);
        match w {
            Lin::Bf16(wp) => {
                let a = ka::GemvBf16 {
                    w: wp,
                    x,
                    x_stride,
                    y,
                    y_stride,
                    res,
                    n: nn,
                    k: kk,
                    t: tt,
                    norm_w,
                    eps,
                    ks,
                };
                // SAFETY: W [N, K], x [T, K], y/res [T, N], norm_w [K] or null;
                // K % (8 ks) == 0 (gemv_split).
                unsafe { a.launch(&self.gpu, dims) }
            }
            Lin::I8 { q, scale } => {
                let a = ka::GemvI8 {
                    w: q,
                    scale,
                    x,
                    x_stride,
                    y,
                    y_stride,
                    res,
                    n: nn,
                    k: kk,
                    t: tt,
                    norm_w,
                    eps,
                    ks,
                };
                // SAFETY: as above, W int8 with [N] scales; K % (16 ks) == 0.
                unsafe { a.launch(&self.gpu, dims) }
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
            let a = ka::SiluMul { a: ws.ffa.ptr(), b: ws.ffb.ptr(), out: y, n: (n * t) as i32 };
            // SAFETY: a, b, out all [t, n] f32.
            return unsafe { a.launch(&self.gpu, plan::elementwise(n * t)) };
        }
        let (x_stride, y_stride, nn, kk, tt) = (k as i32, n as i32, n as i32, k as i32, t as i32);
        let eps = self.cfg.norm_eps;
        let (dims, ks) = l.w1.gemv_launch(n, k, t);
        match (l.w1, l.w3) {
            (Lin::I8 { q: w1, scale: s1 }, Lin::I8 { q: w3, scale: s3 }) => {
                let a = ka::GemvSwigluI8 {
                    w1,
                    s1,
                    w3,
                    s3,
                    x,
                    x_stride,
                    y,
                    y_stride,
                    n: nn,
                    k: kk,
                    t: tt,
                    norm_w: norm,
                    eps,
                    ks,
                };
                // SAFETY: W1/W3 [N, K] int8 with [N] scales, x [T, K], y [T, N], norm_w [K];
                // K % (16 ks) == 0.
                unsafe { a.launch(&self.gpu, dims) }
            }
            (Lin::Bf16(w1), Lin::Bf16(w3)) => {
                let a = ka::GemvSwigluBf16 {
                    w1,
                    w3,
                    x,
                    x_stride,
                    y,
                    y_stride,
                    n: nn,
                    k: kk,
                    t: tt,
                    norm_w: norm,
                    eps,
                    ks,
                };
                // SAFETY: W1/W3 [N, K] bf16, x [T, K], y [T, N], norm_w [K]; K % (8 ks) == 0.
                unsafe { a.launch(&self.gpu, dims) }
            }
            _ => Err(CudaError::invariant("w1 and w3 must have the same weight type")),
        }
    }

    /// out = bf16(x), n values.
    pub(super) fn cast_bf16(&self, x: u64, out: u64, n: usize) -> CudaResult<()> {
        let a = ka::CastBf16 { x, out, n: n as i32 };
        // SAFETY: x [n] f32; out sized for the widest input.
        unsafe { a.launch(&self.gpu, plan::elementwise(n)) }
    }

    /// dst = src, n f32 values.
    pub(super) fn copy(&self, src: u64, dst: u64, n: usize) -> CudaResult<()> {
        let a = ka::CopyF32 { src, dst, n: n as i32 };
        // SAFETY: both hold at least n f32.
        unsafe { a.launch(&self.gpu, plan::elementwise(n)) }
    }

    /// qk-norm and RoPE of T rows of `qkv`, K and V written into this layer's caches kc/vc.
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
        let a = ka::QkRope {
            qkv,
            t: t as i32,
            pos_ptr,
            pos_add: pos_add as i32,
            q_norm: l.q_norm,
            k_norm: l.k_norm,
            use_qk_norm: i32::from(st.qk_norm),
            rope,
            nh: st.n_head as i32,
            nkv: st.n_kv as i32,
            hd: st.head_dim as i32,
            eps: self.cfg.norm_eps,
            kc,
            vc,
            max_pos: st.max_pos as i32,
            kv_f32: i32::from(st.kv_bytes == 4),
        };
        // SAFETY: qkv [T, (nh+2nkv)hd], rope [max_pos, hd/2, 2], kc/vc [nkv, max_pos, hd] of
        // this layer in the stack's KV type.
        unsafe { a.launch(&self.gpu, plan::qk_rope(t, st.n_head, st.n_kv, st.head_dim)) }
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
        let (table, q_norm, k_norm) = match rope {
            Some((l, table)) if st.qk_norm => (table, l.q_norm, l.k_norm),
            Some((_, table)) => (table, 0u64, 0u64),
            None => (0u64, 0u64, 0u64),
        };
        let a = ka::Attention {
            q: ws.qkv.ptr(),
            q_stride: st.qkv_w() as i32,
            kc,
            vc,
            kv_f32: i32::from(st.kv_bytes == 4),
            t: t as i32,
            pos_ptr,
            pos_add: pos_add as i32,
            nh: st.n_head as i32,
            nkv: st.n_kv as i32,
            hd: st.head_dim as i32,
            max_pos: st.max_pos as i32,
            scale: 1.0f32 / (st.head_dim as f32).sqrt(),
            n_split: splits as i32,
            part_o: ws.part_o.ptr(),
            part_ml: ws.part_ml.ptr(),
            counters: ws.att_count.ptr(),
            out: ws.att.ptr(),
            out_stride: st.q_w() as i32,
            rope: table,
            q_norm,
            k_norm,
            eps: self.cfg.norm_eps,
        };
        // SAFETY: q is the qkv row ([T, (nh+2nkv)hd]), part buffers hold nh*T*n_split*(hd | 2)
        // floats and the counters nh*T (sized for the largest use in new_workspace), out
        // [T, nh*hd]; rope [max_pos, hd/2, 2] or null (then T may be > 1).
        unsafe { a.launch(&self.gpu, plan::attention(st.n_head, t, splits)) }
    }

    /// Samples slot `slot` of ws.frame: the slow head's logits (slot 0) or the fast head's.
    pub(super) fn sample(&self, ws: &Workspace, slot: usize) -> CudaResult<()> {
        let c = &self.cfg;
        let (logits, n) = if slot == 0 {
            (ws.logits.ptr(), c.head_rows())
        } else {
            (ws.flogits.ptr(), c.fast_logit_rows)
        };
        let a = ka::Sample {
            logits,
            n: n as i32,
            slot: slot as i32,
            n_pad: plan::sample_pad(n) as i32,
            st: ws.state.ptr(),
            hist: ws.hist.ptr(),
            max_hist: c.max_seq_len as i32,
            k: c.num_codebooks as i32,
            sem_begin: c.semantic_begin as i32,
            sem_end: c.semantic_end as i32,
            im_end: c.im_end as i32,
            im_end_index: c.im_end_index as i32,
            semantic_rows: c.semantic_rows as i32,
            frame: ws.frame.ptr(),
        };
        // SAFETY: dynamic shared memory n_pad*12 bytes (attribute raised at load), hist
        // [max_hist, K+1], frame [K+1].
        unsafe { a.launch(&self.gpu, plan::sample(n)) }
    }

    /// The device state's kv_pos += T, after a slow pass over T positions.
    pub(super) fn advance_pos(&self, ws: &Workspace, t: usize) -> CudaResult<()> {
        let a = ka::AdvancePos { st: ws.state.ptr(), t: t as i32 };
        // SAFETY: ws.state is the request's S1State.
        unsafe { a.launch(&self.gpu, Dims { grid: (1, 1, 1), block: 1, shared_bytes: 0 }) }
    }

    /// ws.x = the fast transformer's input at `pos`: ws.hidden (pos 0) or fast_emb[*code].
    pub(super) fn fast_input(&self, ws: &Workspace, pos: usize, code: u64) -> CudaResult<()> {
        let c = &self.cfg;
        let a = ka::FastInput {
            hidden: ws.hidden.ptr(),
            code,
            pos: pos as i32,
            fast_emb: self.w.fast_emb,
            codebook_size: c.codebook_size as i32,
            out: ws.x.ptr(),
            dim: c.dim as i32,
        };
        // SAFETY: hidden and out hold [dim] f32 (ws.x more), code one i64 on the device.
        unsafe { a.launch(&self.gpu, Dims { grid: (1, 1, 1), block: 256, shared_bytes: 0 }) }
    }

    /// Records ws.frame in the history and advances the device state's frame counter.
    pub(super) fn frame_finish(&self, ws: &Workspace) -> CudaResult<()> {
        let a = ka::FrameFinish {
            st: ws.state.ptr(),
            frame: ws.frame.ptr(),
            hist: ws.hist.ptr(),
            max_hist: self.cfg.max_seq_len as i32,
            k: self.cfg.num_codebooks as i32,
        };
        // SAFETY: ws.state the S1State, frame [K+1] and hist [max_hist, K+1] i64.
        unsafe { a.launch(&self.gpu, Dims { grid: (1, 1, 1), block: 32, shared_bytes: 0 }) }
    }
}
