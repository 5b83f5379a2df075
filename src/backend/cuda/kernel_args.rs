//! Every kernel's parameters as a named-field struct: the one place where a kernel's positional
//! argument list is written down, in the `.cu` signature's order.
//!
//! The kernels keep their plain parameter lists (no `#[repr(C)]` struct passed by value): that
//! would change every `.cu` signature, the PTX and its cache keys, and the emulator's launch
//! ABI, and the launches would gain nothing the driver does not already do (it copies each
//! argument at launch or graph capture). Field types map to the C parameter types one to one:
//! `u64` = a device pointer (any pointee), `i32` = `int`, `f32` = `float`.

use super::device::{args, Gpu};
use super::error::CudaResult;
use super::plan::Dims;

/// Declares a kernel's argument struct and its `launch`, which passes the fields in
/// declaration order (the kernel's parameter order). `launch(<entry point>)` names the kernel
/// (`kernels_every_launched_kernel_is_registered_and_every_kernel_launched` reads it there).
macro_rules! kernel_args {
    ($(
        $(#[$meta:meta])*
        launch($kernel:literal) struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident: $ty:ty ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        pub(super) struct $name {
            $( $(#[$fmeta])* pub(super) $field: $ty, )*
        }

        impl $name {
            /// Launches the kernel on `gpu` with `dims`, these fields as its arguments.
            ///
            /// # Safety
            /// Every device pointer among the fields must address a live buffer large enough
            /// for the launch's accesses (the struct's doc gives the shapes).
            pub(super) unsafe fn launch(&self, gpu: &Gpu, dims: Dims) -> CudaResult<()> {
                // SAFETY: the fields are the kernel's parameters in order, each of the C type's
                // size (module doc); the pointers' extents are the caller's contract.
                unsafe { gpu.launch($kernel, dims, &mut args![$(self.$field),*]) }
            }
        }
    )*};
}

kernel_args! {
    /// `embed_tokens_f32`: tokens [1+K, tok_stride] i64 → out [T, dim] f32 (T ≤ PREFILL_CHUNK),
    /// the semantic row's embedding plus the codebook embeddings, over `scale_div`.
    launch("embed_tokens_f32") struct EmbedTokens {
        tokens: u64,
        tok_stride: i32,
        t: i32,
        /// bf16 [vocab, dim].
        emb: u64,
        /// bf16 [K · codebook_size, dim].
        cb_emb: u64,
        out: u64,
        dim: i32,
        k: i32,
        codebook_size: i32,
        vocab: i32,
        sem_begin: i32,
        sem_end: i32,
        scale_div: f32,
    }

    /// `rmsnorm_f32`: x, out [rows, dim] f32 (rows = the grid), w [dim] bf16.
    launch("rmsnorm_f32") struct RmsNorm {
        x: u64,
        w: u64,
        out: u64,
        dim: i32,
        eps: f32,
    }

    /// `dequantize_i8_bf16`: q [n, k] int8 and scale [n] f32 → w [n, k] bf16; count = n · k.
    launch("dequantize_i8_bf16") struct DequantizeI8 {
        q: u64,
        scale: u64,
        w: u64,
        k: i32,
        count: i32,
    }

    /// `quantize_i8_bf16`: w [N, K] bf16 → q [N, K] int8 and scale [N] f32 (N = the grid).
    launch("quantize_i8_bf16") struct QuantizeI8 {
        w: u64,
        q: u64,
        scale: u64,
        k: i32,
    }

    /// `gemv_bf16`: y[t] = res[t] + W · xn[t], W [N, K] bf16, x [T, K] (row stride x_stride),
    /// y/res [T, N] (y_stride; res 0 = none), norm_w [K] bf16 or 0; K % (8 ks) == 0.
    launch("gemv_bf16") struct GemvBf16 {
        w: u64,
        x: u64,
        x_stride: i32,
        y: u64,
        y_stride: i32,
        res: u64,
        n: i32,
        k: i32,
        t: i32,
        norm_w: u64,
        eps: f32,
        ks: i32,
    }

    /// `gemv_i8`: as [`GemvBf16`] with int8 W and its [N] f32 row scales; K % (16 ks) == 0.
    launch("gemv_i8") struct GemvI8 {
        w: u64,
        scale: u64,
        x: u64,
        x_stride: i32,
        y: u64,
        y_stride: i32,
        res: u64,
        n: i32,
        k: i32,
        t: i32,
        norm_w: u64,
        eps: f32,
        ks: i32,
    }

    /// `gemv_swiglu_bf16`: y = silu(W1 xn) · (W3 xn), W1/W3 [N, K] bf16, xn = rmsnorm(x) ·
    /// norm_w; K % (8 ks) == 0.
    launch("gemv_swiglu_bf16") struct GemvSwigluBf16 {
        w1: u64,
        w3: u64,
        x: u64,
        x_stride: i32,
        y: u64,
        y_stride: i32,
        n: i32,
        k: i32,
        t: i32,
        norm_w: u64,
        eps: f32,
        ks: i32,
    }

    /// `gemv_swiglu_i8`: as [`GemvSwigluBf16`] with int8 W1/W3 and their row scales;
    /// K % (16 ks) == 0.
    launch("gemv_swiglu_i8") struct GemvSwigluI8 {
        w1: u64,
        s1: u64,
        w3: u64,
        s3: u64,
        x: u64,
        x_stride: i32,
        y: u64,
        y_stride: i32,
        n: i32,
        k: i32,
        t: i32,
        norm_w: u64,
        eps: f32,
        ks: i32,
    }

    /// `silu_mul_f32`: out = silu(a) · b, all [n] f32.
    launch("silu_mul_f32") struct SiluMul {
        a: u64,
        b: u64,
        out: u64,
        n: i32,
    }

    /// `cast_bf16_f32`: x [n] f32 → out [n] bf16.
    launch("cast_bf16_f32") struct CastBf16 {
        x: u64,
        out: u64,
        n: i32,
    }

    /// `copy_f32`: dst = src, [n] f32.
    launch("copy_f32") struct CopyF32 {
        src: u64,
        dst: u64,
        n: i32,
    }

    /// `qk_rope_f32`: qk-norm and RoPE of T rows of qkv [T, (nh + 2 nkv) hd] f32 at positions
    /// *pos_ptr + pos_add + t, K and V written to kc/vc [nkv, max_pos, hd] (f32 when kv_f32,
    /// else bf16); rope [max_pos, hd/2, 2] bf16.
    launch("qk_rope_f32") struct QkRope {
        qkv: u64,
        t: i32,
        pos_ptr: u64,
        pos_add: i32,
        q_norm: u64,
        k_norm: u64,
        use_qk_norm: i32,
        rope: u64,
        nh: i32,
        nkv: i32,
        hd: i32,
        eps: f32,
        kc: u64,
        vc: u64,
        max_pos: i32,
        kv_f32: i32,
    }

    /// `attention_f32`: T queries (the q part of the qkv rows, q_stride) over the cache, in
    /// n_split splits merged through part_o/part_ml (nh · T · n_split · (hd | 2) f32) and the
    /// completion counters (nh · T u32, zero between launches); out [T, nh · hd]
    /// (out_stride). With rope ≠ 0 (decode, T = 1) the launch first does the new position's
    /// qk-norm, RoPE and KV write.
    launch("attention_f32") struct Attention {
        q: u64,
        q_stride: i32,
        kc: u64,
        vc: u64,
        kv_f32: i32,
        t: i32,
        pos_ptr: u64,
        pos_add: i32,
        nh: i32,
        nkv: i32,
        hd: i32,
        max_pos: i32,
        scale: f32,
        n_split: i32,
        part_o: u64,
        part_ml: u64,
        counters: u64,
        out: u64,
        out_stride: i32,
        rope: u64,
        q_norm: u64,
        k_norm: u64,
        eps: f32,
    }

    /// `advance_pos`: st->kv_pos += T (the device state, `S1State`).
    launch("advance_pos") struct AdvancePos {
        st: u64,
        t: i32,
    }

    /// `fast_input_f32`: the fast transformer's input at `pos`: the slow hidden state (pos 0)
    /// or fast_emb[*code] (bf16 [codebook_size, dim]), into out [dim] f32.
    launch("fast_input_f32") struct FastInput {
        hidden: u64,
        code: u64,
        pos: i32,
        fast_emb: u64,
        codebook_size: i32,
        out: u64,
        dim: i32,
    }

    /// `sample_f32`: samples logits [n] f32 into frame[slot] (frame [K+1] i64) with the device
    /// state's sampling and the repetition history hist [max_hist, K+1] i64; dynamic shared
    /// memory n_pad · 12 bytes.
    launch("sample_f32") struct Sample {
        logits: u64,
        n: i32,
        slot: i32,
        n_pad: i32,
        st: u64,
        hist: u64,
        max_hist: i32,
        k: i32,
        sem_begin: i32,
        sem_end: i32,
        im_end: i32,
        im_end_index: i32,
        semantic_rows: i32,
        frame: u64,
    }

    /// `frame_finish`: copies the frame [K+1] i64 into hist [max_hist, K+1] (row frame − 1)
    /// and advances the device state's frame counter.
    launch("frame_finish") struct FrameFinish {
        st: u64,
        frame: u64,
        hist: u64,
        max_hist: i32,
        k: i32,
    }
}
