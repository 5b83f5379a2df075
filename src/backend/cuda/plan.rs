//! Launch geometry of every kernel and the plan of one decode frame (the CUDA graph's nodes).
//! Pure host arithmetic, shared by the launchers (engine.rs) and tested on every host.

use super::layout::ModelConfig;

/// Grid, block and dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Blocks (x, y, z).
    pub grid: (u32, u32, u32),
    /// Threads per block (x only; all kernels are 1-D blocks).
    pub block: u32,
    /// Dynamic shared memory, in bytes.
    pub shared_bytes: u32,
}

fn u(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

const fn d1(grid: u32, block: u32) -> Dims {
    Dims { grid: (grid, 1, 1), block, shared_bytes: 0 }
}

/// Output rows per GEMV block (8 warps, one row each).
pub const GEMV_ROWS_PER_BLOCK: usize = 8;
/// Threads of the sampling kernel.
pub const SAMPLE_THREADS: usize = 1024;
/// Warps per attention block.
pub const ATTENTION_THREADS: u32 = 128;
/// Keys per split that make a split worth a block.
pub const ATTENTION_KEYS_PER_SPLIT: usize = 256;
/// Prefill positions per chunk (bounds the activation buffers).
pub const PREFILL_CHUNK: usize = 256;

/// Warps in flight that a GEMV aims for (≈ 32 per SM on a 132-SM Hopper).
pub const GEMV_TARGET_WARPS: usize = 4096;

/// K parts per GEMV row (`ks`, a power of two ≤ 8): enough warps for `n` rows to keep the
/// memory system busy, with every part a whole number of `chunk`-element weight vectors
/// (8 for bf16, 16 for int8).
pub fn gemv_split(n: usize, k: usize, chunk: usize) -> usize {
    let mut ks = 1;
    while ks < GEMV_ROWS_PER_BLOCK && n * ks < GEMV_TARGET_WARPS && k.is_multiple_of(2 * ks * chunk)
    {
        ks *= 2;
    }
    ks
}

/// Activation rows of one GEMV pass (`GEMV_TT` in gemv.cu).
pub const GEMV_ROWS_PER_PASS: usize = 4;

/// Dynamic shared memory the GEMV kernels may be given (opted in at load): one pass of
/// S1-mini's widest input, 4 rows × 3072 f32 = 48 KiB, plus room.
pub const GEMV_MAX_SHARED_BYTES: usize = 64 * 1024;

/// `gemv_*`: N output rows, `ks` warps per row (8 / ks rows per block), K inputs, T rows:
/// the block stages one pass of activations (min(T, 4) × K f32) in shared memory.
pub fn gemv(n: usize, ks: usize, k: usize, t: usize) -> Dims {
    Dims {
        grid: (u(n.div_ceil(GEMV_ROWS_PER_BLOCK / ks)), 1, 1),
        block: 256,
        shared_bytes: u(t.clamp(1, GEMV_ROWS_PER_PASS) * k * 4),
    }
}

/// `rmsnorm_f32`, `quantize_i8_bf16`: one block per row.
pub fn per_row(rows: usize) -> Dims {
    d1(u(rows), 256)
}

/// `embed_tokens_f32`: T rows × dim values, one thread each.
pub fn embed(t: usize, dim: usize) -> Dims {
    Dims { grid: (u(t), u(dim.div_ceil(256)), 1), block: 256, shared_bytes: 0 }
}

/// `qk_rope_f32`: T rows × (nh + 2 nkv) heads, hd/2 lanes rounded up to a warp.
pub fn qk_rope(t: usize, nh: usize, nkv: usize, hd: usize) -> Dims {
    let lanes = (hd / 2).div_ceil(32) * 32;
    Dims { grid: (u(t), u(nh + 2 * nkv), 1), block: u(lanes), shared_bytes: 0 }
}

/// Attention splits for a graph whose KV length is only known on the device: enough blocks to
/// cover the SMs twice at the longest context, and at least 256 keys per split there.
pub fn attention_splits(max_len: usize, n_head: usize, sm_count: usize) -> usize {
    let by_len = max_len.div_ceil(ATTENTION_KEYS_PER_SPLIT).max(1);
    let by_sms = (2 * sm_count).div_ceil(n_head.max(1)).max(1);
    by_len.min(by_sms).clamp(1, 64)
}

/// `attention_f32`: heads × T × splits.
pub fn attention(nh: usize, t: usize, splits: usize) -> Dims {
    Dims { grid: (u(nh), u(t), u(splits)), block: ATTENTION_THREADS, shared_bytes: 0 }
}

/// Padded sort width of the sampling kernel for n logits: a power of two ≥ max(n, 1024).
pub fn sample_pad(n: usize) -> usize {
    n.max(SAMPLE_THREADS).next_power_of_two()
}

/// `sample_f32` over n logits: one block, 12 bytes of dynamic shared memory per padded slot.
pub fn sample(n: usize) -> Dims {
    Dims { grid: (1, 1, 1), block: u(SAMPLE_THREADS), shared_bytes: u(sample_pad(n) * 12) }
}

/// Grid-stride element-wise kernels.
pub fn elementwise(n: usize) -> Dims {
    d1(u(n.div_ceil(256).clamp(1, 1024)), 256)
}

/// One node of the decode-frame graph, in launch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// Slow embedding of the previous frame (`embed_tokens_f32`).
    Embed,
    /// A bf16 or int8 GEMV (`gemv_*`), with the fused RMSNorm prologue and residual or not.
    Gemv,
    /// Fused w1/w3 + SwiGLU (`gemv_swiglu_*`).
    Swiglu,
    /// qk-norm, RoPE and the KV write of the new position, then attention (`attention_f32`
    /// with its RoPE prologue; split-K with the merge in its last block).
    Attention,
    /// kv_pos += 1 (`advance_pos`).
    Advance,
    /// Fast input (`fast_input_f32`).
    FastInput,
    /// Copy of the slow hidden state (`copy_f32`).
    Copy,
    /// One sampling (`sample_f32`).
    Sample,
    /// History + frame counter (`frame_finish`).
    Finish,
}

/// One transformer layer of a decode step.
fn layer_nodes(out: &mut Vec<Node>) {
    out.extend([
        Node::Gemv,      // attention_norm + wqkv
        Node::Attention, // qk-norm + RoPE + KV write + attention
        Node::Gemv,      // wo (+ residual)
        Node::Swiglu,    // ffn_norm + w1/w3 + SwiGLU
        Node::Gemv,      // w2 (+ residual)
    ]);
}

/// The slow half of a decode frame: embed, layers, hidden copy, norm + head, advance.
pub fn slow_step_nodes(c: &ModelConfig) -> Vec<Node> {
    let mut v = vec![Node::Embed];
    for _ in 0..c.n_layer {
        layer_nodes(&mut v);
    }
    v.extend([Node::Copy, Node::Gemv, Node::Advance]);
    v
}

/// The sampling half: slow-head sampling, K fast positions (position 0's logits unused), one
/// sampling per codebook 1..K, then `frame_finish`.
pub fn fast_and_sample_nodes(c: &ModelConfig) -> Vec<Node> {
    let mut v = vec![Node::Sample];
    for pos in 0..c.num_codebooks {
        v.push(Node::FastInput);
        for _ in 0..c.n_fast_layer {
            layer_nodes(&mut v);
        }
        if pos > 0 {
            v.extend([Node::Gemv, Node::Sample]); // fast_norm + fast head, sampling
        }
    }
    v.push(Node::Finish);
    v
}

/// Every node of one decode frame (the captured graph).
pub fn frame_nodes(c: &ModelConfig) -> Vec<Node> {
    let mut v = slow_step_nodes(c);
    v.extend(fast_and_sample_nodes(c));
    v
}

/// Bytes of weights one decode frame reads (the bandwidth floor's numerator): every slow layer,
/// the restricted head, the K fast passes (fast head only at positions ≥ 1), the embedding rows.
pub fn weight_bytes_per_frame(c: &ModelConfig, bytes_per_weight: f64) -> f64 {
    let slow_layer =
        c.qkv_width() * c.dim + c.dim * c.n_head * c.head_dim + 3 * c.dim * c.intermediate_size;
    let fast_layer = c.fast_qkv_width() * c.dim
        + c.dim * c.fast_n_head * c.fast_head_dim
        + 3 * c.dim * c.fast_intermediate_size;
    let params = c.n_layer * slow_layer
        + c.head_rows() * c.dim
        + c.num_codebooks * c.n_fast_layer * fast_layer
        + (c.num_codebooks - 1) * c.fast_logit_rows * c.dim;
    params as f64 * bytes_per_weight
}

/// Device memory of one request's state, in bytes: slow and fast KV caches (bf16) and the
/// frame history (i64).
pub fn request_bytes(c: &ModelConfig) -> usize {
    let slow_kv = 2 * c.n_layer * c.n_local_heads * c.max_seq_len * c.head_dim * 2;
    let fast_kv = 2 * c.n_fast_layer * c.fast_n_local_heads * c.num_codebooks * c.fast_head_dim * 2;
    let hist = c.max_seq_len * (c.num_codebooks + 1) * 8;
    slow_kv + fast_kv + hist
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_gemv_covers_every_row() {
        for n in [1, 7, 8, 9, 4097, 3072] {
            for ks in [1, 2, 4, 8] {
                let rows = GEMV_ROWS_PER_BLOCK / ks;
                let d = gemv(n, ks, 1024, 7);
                assert_eq!(d.shared_bytes as usize, 4 * 1024 * 4);
                assert!(d.grid.0 as usize * rows >= n);
                assert!((d.grid.0 as usize - 1) * rows < n);
                assert_eq!(d.block as usize, GEMV_ROWS_PER_BLOCK * 32);
            }
        }
    }

    #[test]
    fn plan_gemv_shared_memory_fits_the_opt_in() {
        let c = ModelConfig::s1_mini();
        for k in [c.dim, c.intermediate_size, c.n_head * c.head_dim, c.fast_intermediate_size] {
            for t in [1, 3, 4, 256] {
                assert!(gemv(1024, 1, k, t).shared_bytes as usize <= GEMV_MAX_SHARED_BYTES);
            }
        }
        assert_eq!(gemv(1024, 1, 3072, 1).shared_bytes, 3072 * 4);
    }

    #[test]
    fn plan_gemv_split_fills_small_gemvs_with_whole_vectors() {
        assert_eq!(gemv_split(4097, 1024, 8), 1); // slow head
        assert_eq!(gemv_split(4096, 1024, 8), 1); // slow wqkv
        assert_eq!(gemv_split(3072, 1024, 8), 2); // w1/w3
        assert_eq!(gemv_split(1024, 3072, 8), 4); // w2
        assert_eq!(gemv_split(1024, 2048, 8), 4); // slow wo
        assert_eq!(gemv_split(2048, 1024, 8), 2); // fast wqkv
        assert_eq!(gemv_split(64, 1024, 8), 8);
        assert_eq!(gemv_split(64, 24, 8), 1); // 24 = 3 vectors: no even split
        assert_eq!(gemv_split(64, 32, 16), 2); // two 16-weight int8 vectors
        for (n, k, c) in [(100, 1024, 8), (1024, 3072, 16), (7, 48, 8), (5, 64, 16)] {
            let ks = gemv_split(n, k, c);
            assert_eq!(k % (ks * c), 0, "{n} {k} {c}");
            assert!(ks.is_power_of_two() && ks <= GEMV_ROWS_PER_BLOCK);
        }
    }

    #[test]
    fn plan_rope_block_is_whole_warps() {
        assert_eq!(qk_rope(1, 16, 8, 128).block, 64);
        assert_eq!(qk_rope(3, 16, 8, 64).block, 32);
        assert_eq!(qk_rope(1, 4, 2, 8).block, 32); // tiny fast head: 4 pairs, a whole warp
        assert_eq!(qk_rope(5, 16, 8, 128).grid, (5, 32, 1));
    }

    #[test]
    fn plan_attention_splits_fill_the_gpu_only_when_long() {
        assert_eq!(attention_splits(10, 16, 132), 1); // fast transformer
        assert_eq!(attention_splits(8192, 16, 132), 17);
        assert_eq!(attention_splits(4096, 16, 132), 16);
        assert_eq!(attention_splits(300, 16, 132), 2);
    }

    #[test]
    fn plan_sample_pad_and_shared_memory() {
        assert_eq!(sample_pad(4097), 8192);
        assert_eq!(sample_pad(1024), 1024);
        assert_eq!(sample_pad(10), 1024);
        assert_eq!(sample(4097).shared_bytes, 8192 * 12); // 96 KiB: needs the opt-in attribute
        assert!(sample(4097).shared_bytes <= 227 * 1024); // sm_90 per-block limit
        assert!(sample(4097).shared_bytes <= 163 * 1024); // sm_80 per-block limit
    }

    #[test]
    fn plan_frame_graph_node_counts_for_s1_mini() {
        let c = ModelConfig::s1_mini();
        let slow = slow_step_nodes(&c);
        // Per layer: norm + wqkv, RoPE + attention, wo, norm + w1/w3, w2.
        assert_eq!(slow.len(), 1 + 28 * 5 + 3);
        let fast = fast_and_sample_nodes(&c);
        let samples = fast.iter().filter(|n| **n == Node::Sample).count();
        assert_eq!(samples, 10); // slow head + codebooks 1..9
        assert_eq!(fast.iter().filter(|n| **n == Node::FastInput).count(), 10);
        assert_eq!(fast.len(), 1 + 10 * (1 + 4 * 5) + 9 * 2 + 1);
        assert_eq!(frame_nodes(&c).len(), slow.len() + fast.len());
        assert_eq!(frame_nodes(&c).len(), 374);
    }

    #[test]
    fn plan_bandwidth_floor_matches_design_estimate() {
        // DESIGN.md §6: ≈ 1.9 GB of weight reads per frame, ≈ 0.6 ms on an H100.
        let gb = weight_bytes_per_frame(&ModelConfig::s1_mini(), 2.0) / 1e9;
        assert!((1.8..2.0).contains(&gb), "{gb}");
        let kv = request_bytes(&ModelConfig::s1_mini()) as f64 / (1 << 20) as f64;
        assert!((896.0..900.0).contains(&kv), "{kv}"); // 896 MiB KV + history
    }
}
