//! The model's weights on the device: the linear-layer kinds (bf16, int8 with row scales), the
//! per-layer pointer sets, the numerics mode, and loading (from the bundle's safetensors or
//! random values for benchmarks), quantising to int8 on the device when asked.

use super::device::{DevBuf, Gpu};
use super::error::{CudaError, CudaResult};
use super::kernel_args::QuantizeI8;
use super::layout::{self, ModelConfig, WeightPlan};
use super::plan::{self, Dims};
use crate::bundle::{Bundle, Precision};
use crate::config::{CudaWeights, EngineConfig};

/// A linear layer's weights on the device: bf16 in the weight arena, or int8 with one f32
/// scale per output row (an int8 model keeps no bf16 copy; the cuBLAS prefill dequantises
/// each matrix into a scratch buffer, [`Model::gemm_operand`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Lin {
    Bf16(u64),
    I8 { q: u64, scale: u64 },
}

impl Lin {
    /// Launch geometry of a GEMV over this layer ([N, K] weights, T activation rows) and its
    /// `ks` argument: K is split in whole 16-byte weight vectors, 8 bf16 or 16 int8 values.
    pub(super) fn gemv_launch(self, n: usize, k: usize, t: usize) -> (Dims, i32) {
        let vector = match self {
            Lin::Bf16(_) => 8,
            Lin::I8 { .. } => 16,
        };
        let ks = plan::gemv_split(n, k, vector);
        (plan::gemv(n, ks, k, t), ks as i32)
    }
}

/// One transformer layer's weights: device addresses of its norms (bf16 [dim] or [head_dim])
/// and its linear layers (0 for a q/k norm the model does not have).
#[derive(Debug, Clone, Copy)]
pub(super) struct LayerW {
    pub(super) attn_norm: u64,
    pub(super) ffn_norm: u64,
    pub(super) q_norm: u64,
    pub(super) k_norm: u64,
    pub(super) wqkv: Lin,
    pub(super) wo: Lin,
    pub(super) w1: Lin,
    pub(super) w2: Lin,
    pub(super) w3: Lin,
}

/// How the transformer rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Numerics {
    /// fp32 bundles: f32 KV caches and the prefill through the GEMV kernels in f32, so the
    /// numbers follow the onnx-cpu backend's fp32 graphs (≈ 1e-6) and greedy frames agree.
    Exact,
    /// fp16 bundles and benchmarks: bf16 KV caches (fish-speech's own cache type, half the
    /// memory) and the prefill through cuBLAS with bf16 activations.
    Fast,
}

impl Numerics {
    /// The mode for a bundle of `precision` (`fp32`, `fp16`).
    pub(super) fn for_precision(precision: Precision) -> Numerics {
        if precision == Precision::Fp32 {
            Numerics::Exact
        } else {
            Numerics::Fast
        }
    }
}

/// What [`Model::load`] does besides loading: weight-only int8, and the rounding mode.
#[derive(Debug, Clone, Copy)]
pub(super) struct LoadOptions {
    /// Quantise every layer matrix to int8 with per-row scales.
    pub int8: bool,
    /// KV-cache type and prefill path.
    pub numerics: Numerics,
}

impl LoadOptions {
    /// The options for a bundle: [`EngineConfig::cuda_weights`], and the numerics of the
    /// bundle's precision unless `S1_CUDA_NUMERICS=fast|exact` overrides them (a diagnostic: it
    /// runs an fp32 bundle through the bf16-cache path that fp16 bundles take).
    pub(super) fn for_bundle(config: &EngineConfig, bundle: &Bundle) -> LoadOptions {
        let numerics = match std::env::var("S1_CUDA_NUMERICS").as_deref() {
            Ok("fast") => Numerics::Fast,
            Ok("exact") => Numerics::Exact,
            _ => Numerics::for_precision(bundle.info.precision),
        };
        LoadOptions { int8: config.cuda_weights == CudaWeights::Int8, numerics }
    }
}

/// Every weight on the device: the arenas that own them and the addresses the launchers read.
pub(super) struct Weights {
    _arena: DevBuf,
    _i8: Option<(DevBuf, DevBuf)>,
    /// bf16 scratch for one layer matrix: an int8 model's prefill GEMM operand (fast
    /// numerics with cuBLAS only).
    pub(super) dequant: Option<DevBuf>,
    pub(super) rope_slow: DevBuf,
    pub(super) rope_fast: DevBuf,
    pub(super) emb: u64,
    pub(super) cb_emb: u64,
    pub(super) norm: u64,
    pub(super) head: u64,
    pub(super) fast_emb: u64,
    pub(super) fast_norm: u64,
    pub(super) fast_head: u64,
    pub(super) layers: Vec<LayerW>,
    pub(super) fast_layers: Vec<LayerW>,
    pub(super) bytes: usize,
}

/// Where weights come from.
pub(super) enum WeightSource {
    /// The bundle's safetensors file.
    File {
        path: std::path::PathBuf,
        header: std::collections::BTreeMap<String, crate::bundle::safetensors::TensorInfo>,
    },
    /// Random bf16 values (benchmarks of the real shapes without a checkpoint).
    Random { seed: u64 },
}

/// xorshift64 bf16 values for benchmarks without a checkpoint, drawn tensor after tensor in
/// plan order (the same values whether or not the layer matrices are quantised).
struct RandomWeights(u64);

impl RandomWeights {
    fn fill(&mut self, p: &layout::Placement, out: &mut [u8]) {
        // Small values keep activations finite through 28 layers (norm weights ≈ 1).
        let one_d = p.shape.len() == 1;
        for v in out.chunks_exact_mut(2) {
            let s = &mut self.0;
            *s ^= *s << 13;
            *s ^= *s >> 7;
            *s ^= *s << 17;
            let u = ((*s >> 40) as f32) / (1u64 << 24) as f32 - 0.5;
            let b = layout::bf16_bits(if one_d { 1.0 + 0.1 * u } else { 0.06 * u });
            v.copy_from_slice(&b.to_le_bytes());
        }
    }
}

impl WeightSource {
    fn reader(&self) -> CudaResult<TensorReader<'_>> {
        Ok(match self {
            WeightSource::File { path, header } => TensorReader::File(
                layout::TensorFile::open(path, header)
                    .map_err(|e| CudaError::Weights(e.to_string()))?,
            ),
            WeightSource::Random { seed } => TensorReader::Random(RandomWeights(seed | 1)),
        })
    }
}

/// An open [`WeightSource`], read placement by placement in plan order.
enum TensorReader<'a> {
    File(layout::TensorFile<'a>),
    Random(RandomWeights),
}

impl TensorReader<'_> {
    /// Fills `out` (exactly `p.bytes` long) with the placement's bf16 device bytes.
    fn read(&mut self, p: &layout::Placement, out: &mut [u8]) -> CudaResult<()> {
        match self {
            TensorReader::File(f) => {
                f.read_into(p, out).map_err(|e| CudaError::Weights(e.to_string()))
            }
            TensorReader::Random(r) => {
                r.fill(p, out);
                Ok(())
            }
        }
    }
}

/// Loads the weights: everything bf16 into one arena, or with `int8` the layer matrices
/// quantised one at a time through a bf16 staging buffer (kept as the prefill's dequantisation
/// scratch when `keep_scratch`) and the rest into a smaller bf16 arena.
pub(super) fn load_weights(
    gpu: &Gpu,
    cfg: &ModelConfig,
    plan: &WeightPlan,
    src: WeightSource,
    int8: bool,
    keep_scratch: bool,
) -> CudaResult<Weights> {
    let quantised = |p: &layout::Placement| int8 && p.is_layer_matrix();
    let resident = plan.without(quantised);
    let arena = gpu.alloc(resident.arena_bytes)?;
    // int8 arenas: values [n, k] and scales [n] per quantised matrix, 256-byte aligned.
    let mut i8_at = std::collections::HashMap::new();
    let (mut i8_bytes, mut s_bytes, mut staging_bytes) = (0usize, 0usize, 0usize);
    for p in plan.placements.iter().filter(|p| quantised(p)) {
        let (n, k) = (p.shape[0], p.shape[1]);
        i8_at.insert(p.name.clone(), (i8_bytes, s_bytes));
        i8_bytes += (n * k).div_ceil(256) * 256;
        s_bytes += (n * 4).div_ceil(256) * 256;
        staging_bytes = staging_bytes.max(p.bytes);
    }
    let i8_bufs = if int8 { Some((gpu.alloc(i8_bytes)?, gpu.alloc(s_bytes)?)) } else { None };
    let staging = if int8 { Some(gpu.alloc(staging_bytes)?) } else { None };

    let mut reader = src.reader()?;
    let mut img = vec![0u8; resident.arena_bytes];
    let mut one = Vec::new();
    for p in &plan.placements {
        if let (Some((qb, sb)), Some(st), Some(&(qo, so))) =
            (&i8_bufs, &staging, i8_at.get(&p.name))
        {
            one.resize(p.bytes, 0);
            reader.read(p, &mut one)?;
            gpu.upload(st.ptr(), &one)?;
            let a =
                QuantizeI8 { w: st.ptr(), q: qb.at(qo), scale: sb.at(so), k: p.shape[1] as i32 };
            // SAFETY: grid N: W [N, K] bf16 in the staging buffer, q [N, K] int8 and scale [N]
            // f32 in the int8 arenas. The next upload into the staging buffer is stream-ordered
            // after it.
            unsafe { a.launch(gpu, plan::per_row(p.shape[0]))? };
        } else if let Some(r) = resident.get(&p.name) {
            reader.read(p, &mut img[r.offset..r.offset + r.bytes])?;
        }
    }
    gpu.upload(arena.ptr(), &img)?;
    drop(img);
    let at = |name: &str| -> CudaResult<u64> {
        resident
            .get(name)
            .map(|p| arena.at(p.offset))
            .ok_or_else(|| CudaError::invariant(format!("{name} not in the weight plan")))
    };
    let lin = |name: String| -> CudaResult<Lin> {
        if let (Some((qb, sb)), Some(&(qo, so))) = (&i8_bufs, i8_at.get(&name)) {
            return Ok(Lin::I8 { q: qb.at(qo), scale: sb.at(so) });
        }
        at(&name).map(Lin::Bf16)
    };
    let dequant = if keep_scratch { staging } else { None };
    let scratch_bytes = dequant.as_ref().map_or(0, DevBuf::bytes);
    let layer = |prefix: String, qk: bool| -> CudaResult<LayerW> {
        Ok(LayerW {
            attn_norm: at(&format!("{prefix}attention_norm.weight"))?,
            ffn_norm: at(&format!("{prefix}ffn_norm.weight"))?,
            q_norm: if qk { at(&format!("{prefix}attention.q_norm.weight"))? } else { 0 },
            k_norm: if qk { at(&format!("{prefix}attention.k_norm.weight"))? } else { 0 },
            wqkv: lin(format!("{prefix}attention.wqkv.weight"))?,
            wo: lin(format!("{prefix}attention.wo.weight"))?,
            w1: lin(format!("{prefix}feed_forward.w1.weight"))?,
            w2: lin(format!("{prefix}feed_forward.w2.weight"))?,
            w3: lin(format!("{prefix}feed_forward.w3.weight"))?,
        })
    };
    let layers = (0..cfg.n_layer)
        .map(|i| layer(format!("layers.{i}."), cfg.qk_norm))
        .collect::<CudaResult<Vec<_>>>()?;
    let fast_layers = (0..cfg.n_fast_layer)
        .map(|i| layer(format!("fast_layers.{i}."), cfg.fast_qk_norm))
        .collect::<CudaResult<Vec<_>>>()?;
    let rs = layout::rope_table_bf16(cfg.rope_base, cfg.head_dim, cfg.max_seq_len);
    let rope_slow = gpu.alloc(rs.len() * 2)?;
    gpu.upload(rope_slow.ptr(), &rs)?;
    let rf = layout::rope_table_bf16(cfg.rope_base, cfg.fast_head_dim, cfg.num_codebooks);
    let rope_fast = gpu.alloc(rf.len() * 2)?;
    gpu.upload(rope_fast.ptr(), &rf)?;
    Ok(Weights {
        emb: at("embeddings.weight")?,
        cb_emb: at("codebook_embeddings.weight")?,
        norm: at("norm.weight")?,
        head: at("output.weight")?,
        fast_emb: at("fast_embeddings.weight")?,
        fast_norm: at("fast_norm.weight")?,
        fast_head: at("fast_output.weight")?,
        layers,
        fast_layers,
        bytes: resident.arena_bytes + i8_bytes + s_bytes + scratch_bytes,
        _i8: i8_bufs,
        dequant,
        _arena: arena,
        rope_slow,
        rope_fast,
    })
}
