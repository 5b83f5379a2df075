//! The CUDA transformer: weights on the device, per-request workspaces (KV caches, activations,
//! device state), the slow pass (prefill by cuBLAS GEMMs in chunks, decode by GEMV kernels), the
//! fast steps, on-device sampling, and the decode frame captured as one CUDA graph.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::driver::{sys, CudaGraph};
use parking_lot::Mutex;

use super::device::{args, DevBuf, Gpu, PinnedBuf};
use super::layout::{self, ModelConfig, WeightPlan};
use super::plan::{self, Dims};
use crate::backend::{
    BackendPair, FrameSampling, FrameStep, SlowOutput, StepRow, T2sRequest, Text2Semantic,
};
use crate::bundle::{safetensors, Bundle};
use crate::bundle::{BundleInfo, Precision};
use crate::config::{CudaWeights, EngineConfig};
use crate::error::{Error, Result};
use crate::generate::{self, CancelToken, FrameGenerator, StopRules};
use crate::sampling::SamplingParams;
use crate::text::prompt::Prompt;

use super::BenchResult;

const NAME: &str = "cuda";

fn backend_err(op: &str, msg: impl Into<String>) -> Error {
    Error::Backend { backend: NAME, op: op.to_string(), message: msg.into() }
}

/// A linear layer's weights on the device: bf16 in the weight arena, or int8 with one f32
/// scale per output row (an int8 model keeps no bf16 copy; the cuBLAS prefill dequantises
/// each matrix into a scratch buffer, [`Model::gemm_operand`]).
#[derive(Debug, Clone, Copy)]
enum Lin {
    Bf16(u64),
    I8 { q: u64, scale: u64 },
}

impl Lin {
    /// Launch geometry of a GEMV over this layer ([N, K] weights, T activation rows) and its
    /// `ks` argument: K is split in whole 16-byte weight vectors, 8 bf16 or 16 int8 values.
    fn gemv_launch(self, n: usize, k: usize, t: usize) -> (Dims, i32) {
        let vector = match self {
            Lin::Bf16(_) => 8,
            Lin::I8 { .. } => 16,
        };
        let ks = plan::gemv_split(n, k, vector);
        (plan::gemv(n, ks, k, t), ks as i32)
    }
}

#[derive(Debug, Clone, Copy)]
struct LayerW {
    attn_norm: u64,
    ffn_norm: u64,
    q_norm: u64,
    k_norm: u64,
    wqkv: Lin,
    wo: Lin,
    w1: Lin,
    w2: Lin,
    w3: Lin,
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
    fn for_bundle(config: &EngineConfig, bundle: &Bundle) -> LoadOptions {
        let numerics = match std::env::var("S1_CUDA_NUMERICS").as_deref() {
            Ok("fast") => Numerics::Fast,
            Ok("exact") => Numerics::Exact,
            _ => Numerics::for_precision(bundle.info.precision),
        };
        LoadOptions { int8: config.cuda_weights == CudaWeights::Int8, numerics }
    }
}

/// Shapes of one transformer (slow or fast).
#[derive(Debug, Clone, Copy)]
struct Stack {
    n_head: usize,
    n_kv: usize,
    head_dim: usize,
    inter: usize,
    qk_norm: bool,
    max_pos: usize,
    /// Bytes per KV-cache element: 2 (bf16) or 4 (f32, [`Numerics::Exact`]).
    kv_bytes: usize,
}

impl Stack {
    fn qkv_w(&self) -> usize {
        (self.n_head + 2 * self.n_kv) * self.head_dim
    }
    fn q_w(&self) -> usize {
        self.n_head * self.head_dim
    }
    /// Bytes of one layer's K (or V) cache.
    fn kv_layer_bytes(&self) -> usize {
        self.n_kv * self.max_pos * self.head_dim * self.kv_bytes
    }
}

struct Weights {
    _arena: DevBuf,
    _i8: Option<(DevBuf, DevBuf)>,
    /// bf16 scratch for one layer matrix: an int8 model's prefill GEMM operand (fast
    /// numerics with cuBLAS only).
    dequant: Option<DevBuf>,
    rope_slow: DevBuf,
    rope_fast: DevBuf,
    emb: u64,
    cb_emb: u64,
    norm: u64,
    head: u64,
    fast_emb: u64,
    fast_norm: u64,
    fast_head: u64,
    layers: Vec<LayerW>,
    fast_layers: Vec<LayerW>,
    bytes: usize,
}

/// Device-resident request state (mirrors `S1State` in common.cuh; 16 words).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct DeviceState {
    kv_pos: i32,
    frame: u32,
    seed_lo: u32,
    seed_hi: u32,
    temperature: f32,
    top_p: f32,
    rep_penalty: f32,
    compat: i32,
    ignore_end: i32,
    max_kv: i32,
    pad: [i32; 6],
}

/// Activation buffers and caches of one request.
struct Workspace {
    kv_k: DevBuf,
    kv_v: DevBuf,
    fkv_k: DevBuf,
    fkv_v: DevBuf,
    hist: DevBuf,
    state: DevBuf,
    zero_i32: DevBuf,
    frame: DevBuf,
    tok_in: DevBuf,
    code: DevBuf,
    x: DevBuf,
    h: DevBuf,
    qkv: DevBuf,
    att: DevBuf,
    ffa: DevBuf,
    ffb: DevBuf,
    tmp: DevBuf,
    xb: DevBuf,
    part_o: DevBuf,
    part_ml: DevBuf,
    /// Split-attention completion counters, [n_head, T] u32, zero between launches.
    att_count: DevBuf,
    logits: DevBuf,
    flogits: DevBuf,
    hidden: DevBuf,
    pinned: PinnedBuf,
    graph: Option<CudaGraph>,
}

// SAFETY: a workspace is owned by one request (or the pool) at a time; its CUDA graph and
// buffers are only touched by the thread that owns it, with the context bound on entry.
unsafe impl Send for Workspace {}

struct Model {
    gpu: Gpu,
    cfg: ModelConfig,
    slow: Stack,
    fast: Stack,
    w: Weights,
    slow_splits: usize,
    numerics: Numerics,
    pool: Mutex<Vec<Workspace>>,
    /// Serialises device work of concurrent requests (one stream, one cuBLAS handle, and graph
    /// capture must not see another thread's launches).
    op_lock: Mutex<()>,
}

// SAFETY: the model's device state is read-only after load; launches are issued by whichever
// request thread holds a workspace, each with the context bound, on the model's one stream,
// serialised by `op_lock`.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

/// Builds the engine: open the device, load weights, quantise when asked, capture the frame
/// graph of a first workspace. Panics in the driver wrappers are caught.
pub(super) fn build(config: &EngineConfig, bundle: &Bundle) -> Result<BackendPair> {
    let cfg = ModelConfig::from_bundle(&bundle.info)?;
    let weights_path = bundle.info.dir.join(&cfg.weights_file);
    if !weights_path.is_file() {
        return Err(Error::BackendUnavailable {
            backend: NAME,
            reason: format!("the bundle has no {} (export it with the llm part)", cfg.weights_file),
        });
    }
    let header = safetensors::read_header(&weights_path)?;
    let plan = WeightPlan::new(&cfg, &header)?;
    let opts = LoadOptions::for_bundle(config, bundle);
    let source = WeightSource::File { path: weights_path, header };
    let model = catch_unwind(AssertUnwindSafe(|| Model::open(config, cfg, &plan, source, opts)))
        .unwrap_or_else(|_| Err(backend_err("load", "panic in the CUDA driver wrappers")))?;
    let t2s: Arc<dyn Text2Semantic> = Arc::new(CudaT2s { model: Arc::new(model) });
    Ok((t2s, None))
}

/// Where weights come from.
pub(super) enum WeightSource {
    /// The bundle's safetensors file.
    File {
        path: std::path::PathBuf,
        header: std::collections::BTreeMap<String, safetensors::TensorInfo>,
    },
    /// Random bf16 values (benchmarks of the real shapes without a checkpoint).
    Random { seed: u64 },
}

fn unavailable_or(e: String) -> Error {
    Error::BackendUnavailable { backend: NAME, reason: e }
}

impl Model {
    /// Opens the device of `config` and loads the model on it.
    fn open(
        config: &EngineConfig,
        cfg: ModelConfig,
        plan: &WeightPlan,
        src: WeightSource,
        opts: LoadOptions,
    ) -> Result<Model> {
        let gpu = Gpu::open(config).map_err(unavailable_or)?;
        Model::load(gpu, cfg, plan, src, opts)
    }

    /// Loads the weights onto `gpu` and captures the first workspace's frame graph.
    fn load(
        gpu: Gpu,
        cfg: ModelConfig,
        plan: &WeightPlan,
        src: WeightSource,
        opts: LoadOptions,
    ) -> Result<Model> {
        let kv_bytes = if opts.numerics == Numerics::Exact { 4 } else { 2 };
        let slow = Stack {
            n_head: cfg.n_head,
            n_kv: cfg.n_local_heads,
            head_dim: cfg.head_dim,
            inter: cfg.intermediate_size,
            qk_norm: cfg.qk_norm,
            max_pos: cfg.max_seq_len,
            kv_bytes,
        };
        let fast = Stack {
            n_head: cfg.fast_n_head,
            n_kv: cfg.fast_n_local_heads,
            head_dim: cfg.fast_head_dim,
            inter: cfg.fast_intermediate_size,
            qk_norm: cfg.fast_qk_norm,
            max_pos: cfg.num_codebooks,
            kv_bytes,
        };
        if opts.int8 && !cfg.int8_compatible() {
            return Err(Error::arg(
                "cuda_weights",
                "int8 needs every reduction width of the model to be a multiple of 16",
            ));
        }
        // An int8 model's cuBLAS prefill reads each matrix dequantised into one scratch buffer.
        let keep_scratch = opts.int8 && opts.numerics == Numerics::Fast && gpu.has_blas();
        let w = load_weights(&gpu, &cfg, plan, src, opts.int8, keep_scratch)
            .map_err(|e| backend_err("load weights", e))?;
        let slow_splits = plan::attention_splits(cfg.max_seq_len, cfg.n_head, gpu.sm_count);
        let model = Model {
            gpu,
            cfg,
            slow,
            fast,
            w,
            slow_splits,
            numerics: opts.numerics,
            pool: Mutex::new(Vec::new()),
            op_lock: Mutex::new(()),
        };
        // Capture the frame graph now (never lazily on the first request).
        let ws = model.new_workspace().map_err(|e| backend_err("workspace", e))?;
        model.pool.lock().push(ws);
        Ok(model)
    }

    fn bind(&self) -> Result<()> {
        self.gpu.bind().map_err(|e| backend_err("bind", e))
    }

    fn new_workspace(&self) -> std::result::Result<Workspace, String> {
        let g = &self.gpu;
        let c = &self.cfg;
        let (s, f) = (&self.slow, &self.fast);
        let tmax = plan::PREFILL_CHUNK;
        let k1 = c.num_codebooks + 1;
        let f32s = |n: usize| g.alloc_zeroed(n * 4);
        let widest = c.dim.max(s.inter).max(s.q_w()).max(s.qkv_w()).max(f.qkv_w()).max(f.inter);
        let part_rows = (s.n_head * tmax).max(s.n_head * self.slow_splits).max(f.n_head);
        let mut ws = Workspace {
            kv_k: g.alloc_zeroed(c.n_layer * s.kv_layer_bytes())?,
            kv_v: g.alloc_zeroed(c.n_layer * s.kv_layer_bytes())?,
            fkv_k: g.alloc_zeroed(c.n_fast_layer * f.kv_layer_bytes())?,
            fkv_v: g.alloc_zeroed(c.n_fast_layer * f.kv_layer_bytes())?,
            att_count: g.alloc_zeroed(s.n_head.max(f.n_head) * tmax * 4)?,
            hist: g.alloc_zeroed(c.max_seq_len * k1 * 8)?,
            state: g.alloc_zeroed(std::mem::size_of::<DeviceState>())?,
            zero_i32: g.alloc_zeroed(4)?,
            frame: g.alloc_zeroed(k1 * 8)?,
            tok_in: g.alloc_zeroed(k1 * tmax * 8)?,
            code: g.alloc_zeroed(8)?,
            x: f32s(tmax * c.dim)?,
            h: f32s(tmax * c.dim)?,
            qkv: f32s(tmax * s.qkv_w().max(f.qkv_w()))?,
            att: f32s(tmax * s.q_w().max(f.q_w()))?,
            ffa: f32s(tmax * s.inter.max(f.inter))?,
            ffb: f32s(tmax * s.inter.max(f.inter))?,
            tmp: f32s(tmax * c.dim)?,
            xb: g.alloc_zeroed(tmax * widest * 2)?,
            part_o: f32s(part_rows * s.head_dim.max(f.head_dim))?,
            part_ml: f32s(part_rows * 2)?,
            logits: f32s(c.head_rows())?,
            flogits: f32s(c.fast_logit_rows)?,
            hidden: f32s(c.dim)?,
            pinned: g.alloc_pinned(k1 * 8)?,
            graph: None,
        };
        g.sync()?;
        ws.graph = self.capture_frame(&ws)?;
        Ok(ws)
    }

    /// Nodes of the captured frame graph, as the driver counts them.
    fn graph_nodes(&self) -> std::result::Result<usize, String> {
        let pool = self.pool.lock();
        let g = pool.first().and_then(|ws| ws.graph.as_ref()).ok_or("no captured graph")?;
        let mut n = 0usize;
        // SAFETY: cuGraphGetNodes with a null array only writes the count; the graph is live.
        unsafe { sys::cuGraphGetNodes(g.cu_graph(), std::ptr::null_mut(), &mut n) }
            .result()
            .map_err(|e| format!("cuGraphGetNodes: {e:?}"))?;
        Ok(n)
    }

    fn take_workspace(&self) -> std::result::Result<Workspace, String> {
        if let Some(ws) = self.pool.lock().pop() {
            return Ok(ws);
        }
        self.new_workspace()
    }

    // ---- launchers (one per kernel; each restates the .cu signature) ----

    fn embed(
        &self,
        ws: &Workspace,
        tokens: u64,
        tok_stride: usize,
        t: usize,
    ) -> std::result::Result<(), String> {
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

    fn rmsnorm(&self, x: u64, w: u64, out: u64, rows: usize) -> std::result::Result<(), String> {
        let (dim, eps) = (self.cfg.dim as i32, self.cfg.norm_eps);
        // SAFETY: rmsnorm_f32(const float* x, const bf16* w, float* out, int dim, float eps);
        // x/out hold [rows, dim] f32, w [dim] bf16.
        unsafe {
            self.gpu.launch("rmsnorm_f32", plan::per_row(rows), &mut args![x, w, out, dim, eps])
        }
    }

    /// Whether a T-row product goes through cuBLAS (prefill) rather than the GEMV kernels.
    fn uses_blas(&self, w: Lin, t: usize) -> bool {
        t > 1
            && self.numerics == Numerics::Fast
            && self.gpu.has_blas()
            && (matches!(w, Lin::Bf16(_)) || self.w.dequant.is_some())
    }

    /// The bf16 [n, k] matrix cuBLAS reads for `w`: the arena's, or for an int8 layer the
    /// scratch refilled with its dequantisation (stream order keeps the previous GEMM's reads
    /// before the refill).
    fn gemm_operand(&self, w: Lin, n: usize, k: usize) -> std::result::Result<u64, String> {
        match w {
            Lin::Bf16(p) => Ok(p),
            Lin::I8 { q, scale } => {
                let scratch = self.w.dequant.as_ref().ok_or("no dequantisation scratch")?;
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
    fn linear(
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
    ) -> std::result::Result<(), String> {
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
    fn swiglu(
        &self,
        ws: &Workspace,
        l: &LayerW,
        norm: u64,
        x: u64,
        y: u64,
        n: usize,
        k: usize,
        t: usize,
    ) -> std::result::Result<(), String> {
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
            _ => Err("w1 and w3 must have the same weight type".into()),
        }
    }

    fn cast_bf16(&self, x: u64, out: u64, n: usize) -> std::result::Result<(), String> {
        let nn = n as i32;
        // SAFETY: cast_bf16_f32(const float* x, bf16* out, int n); out sized for the widest input.
        unsafe { self.gpu.launch("cast_bf16_f32", plan::elementwise(n), &mut args![x, out, nn]) }
    }

    fn copy(&self, src: u64, dst: u64, n: usize) -> std::result::Result<(), String> {
        let nn = n as i32;
        // SAFETY: copy_f32(const float* src, float* dst, int n).
        unsafe { self.gpu.launch("copy_f32", plan::elementwise(n), &mut args![src, dst, nn]) }
    }

    #[allow(clippy::too_many_arguments)]
    fn rope(
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
    ) -> std::result::Result<(), String> {
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
    fn attention(
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
    ) -> std::result::Result<(), String> {
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

    /// Layers of one stack over T rows of ws.x; KV at positions *pos_ptr + pos_add + t.
    #[allow(clippy::too_many_arguments)]
    fn layers(
        &self,
        ws: &Workspace,
        fast: bool,
        t: usize,
        pos_ptr: u64,
        pos_add: usize,
        splits: usize,
    ) -> std::result::Result<(), String> {
        let (st, layers, rope, kk, vv) = if fast {
            (&self.fast, &self.w.fast_layers, self.w.rope_fast.ptr(), &ws.fkv_k, &ws.fkv_v)
        } else {
            (&self.slow, &self.w.layers, self.w.rope_slow.ptr(), &ws.kv_k, &ws.kv_v)
        };
        let dim = self.cfg.dim;
        let layer_bytes = st.kv_layer_bytes();
        for (i, l) in layers.iter().enumerate() {
            let (kc, vc) = (kk.at(i * layer_bytes), vv.at(i * layer_bytes));
            let (x, qkv, att, ffa) = (ws.x.ptr(), ws.qkv.ptr(), ws.att.ptr(), ws.ffa.ptr());
            self.linear(ws, l.wqkv, Some(l.attn_norm), x, qkv, st.qkv_w(), dim, t, false)?;
            if t == 1 {
                // Decode: RoPE and the KV write happen in the attention launch.
                let fused = Some((l, rope));
                self.attention(ws, st, t, pos_ptr, pos_add, kc, vc, splits, fused)?;
            } else {
                self.rope(st, l, qkv, t, pos_ptr, pos_add, rope, kc, vc)?;
                self.attention(ws, st, t, pos_ptr, pos_add, kc, vc, splits, None)?;
            }
            self.linear(ws, l.wo, None, att, x, dim, st.q_w(), t, true)?;
            self.swiglu(ws, l, l.ffn_norm, x, ffa, st.inter, dim, t)?;
            self.linear(ws, l.w2, None, ffa, x, dim, st.inter, t, true)?;
        }
        Ok(())
    }

    /// Slow pass over T ≤ PREFILL_CHUNK positions at kv_pos: logits + hidden of the last row,
    /// then kv_pos += T.
    fn slow_pass(
        &self,
        ws: &Workspace,
        tokens: u64,
        tok_stride: usize,
        t: usize,
    ) -> std::result::Result<(), String> {
        let c = &self.cfg;
        let pos_ptr = ws.state.ptr(); // S1State.kv_pos is the first word
        let splits = if t == 1 { self.slow_splits } else { 1 };
        self.embed(ws, tokens, tok_stride, t)?;
        self.layers(ws, false, t, pos_ptr, 0, splits)?;
        let last = ws.x.at((t - 1) * c.dim * 4);
        self.copy(last, ws.hidden.ptr(), c.dim)?;
        let (head, norm, logits) = (Lin::Bf16(self.w.head), Some(self.w.norm), ws.logits.ptr());
        self.linear(ws, head, norm, last, logits, c.head_rows(), c.dim, 1, false)?;
        let (stp, tt) = (ws.state.ptr(), t as i32);
        // SAFETY: advance_pos(S1State* st, int T).
        unsafe {
            self.gpu.launch(
                "advance_pos",
                Dims { grid: (1, 1, 1), block: 1, shared_bytes: 0 },
                &mut args![stp, tt],
            )
        }
    }

    /// One fast step at static position `pos`: input (hidden or fast_emb[*code]), layers,
    /// logits into ws.flogits when pos > 0.
    fn fast_step(&self, ws: &Workspace, pos: usize, code: u64) -> std::result::Result<(), String> {
        let c = &self.cfg;
        let (hid, p, fe, cbs, out, dim) = (
            ws.hidden.ptr(),
            pos as i32,
            self.w.fast_emb,
            c.codebook_size as i32,
            ws.x.ptr(),
            c.dim as i32,
        );
        // SAFETY: fast_input_f32(const float* hidden, const i64* code, int pos,
        // const bf16* fast_emb, int codebook_size, float* out, int dim).
        unsafe {
            self.gpu.launch(
                "fast_input_f32",
                Dims { grid: (1, 1, 1), block: 256, shared_bytes: 0 },
                &mut args![hid, code, p, fe, cbs, out, dim],
            )?
        };
        self.layers(ws, true, 1, ws.zero_i32.ptr(), pos, 1)?;
        let (head, norm) = (Lin::Bf16(self.w.fast_head), Some(self.w.fast_norm));
        let (x, logits) = (ws.x.ptr(), ws.flogits.ptr());
        self.linear(ws, head, norm, x, logits, c.fast_logit_rows, c.dim, 1, false)
    }

    fn sample(&self, ws: &Workspace, slot: usize) -> std::result::Result<(), String> {
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

    /// Samples the slow head, runs the K fast positions with their samplings, finishes the frame.
    fn fast_and_sample(&self, ws: &Workspace) -> std::result::Result<(), String> {
        let k = self.cfg.num_codebooks;
        self.sample(ws, 0)?;
        for pos in 0..k {
            // Position pos >= 1 embeds frame[pos] = c_{pos-1}.
            self.fast_step(ws, pos, ws.frame.at(pos * 8))?;
            if pos > 0 {
                self.sample(ws, pos)?;
            }
        }
        let (st, fr, hist, mh, kk) =
            (ws.state.ptr(), ws.frame.ptr(), ws.hist.ptr(), self.cfg.max_seq_len as i32, k as i32);
        // SAFETY: frame_finish(S1State* st, const i64* frame, i64* hist, int max_hist, int K).
        unsafe {
            self.gpu.launch(
                "frame_finish",
                Dims { grid: (1, 1, 1), block: 32, shared_bytes: 0 },
                &mut args![st, fr, hist, mh, kk],
            )
        }
    }

    /// One decode frame: slow step on ws.frame (the previous frame), samplings, fast steps;
    /// everything position-dependent reads the device state, so the same launches serve every
    /// frame.
    fn frame(&self, ws: &Workspace) -> std::result::Result<(), String> {
        self.slow_pass(ws, ws.frame.ptr(), 1, 1)?;
        self.fast_and_sample(ws)
    }

    /// The decode frame as one graph (`None` on the kernel emulator, which launches
    /// [`Model::frame`] directly).
    fn capture_frame(&self, ws: &Workspace) -> std::result::Result<Option<CudaGraph>, String> {
        self.gpu.capture(|| self.frame(ws))
    }
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
    fn reader(&self) -> std::result::Result<TensorReader<'_>, String> {
        Ok(match self {
            WeightSource::File { path, header } => TensorReader::File(
                layout::TensorFile::open(path, header).map_err(|e| e.to_string())?,
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
    fn read(&mut self, p: &layout::Placement, out: &mut [u8]) -> std::result::Result<(), String> {
        match self {
            TensorReader::File(f) => f.read_into(p, out).map_err(|e| e.to_string()),
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
fn load_weights(
    gpu: &Gpu,
    cfg: &ModelConfig,
    plan: &WeightPlan,
    src: WeightSource,
    int8: bool,
    keep_scratch: bool,
) -> std::result::Result<Weights, String> {
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
            let (w, q, s, kk) = (st.ptr(), qb.at(qo), sb.at(so), p.shape[1] as i32);
            // SAFETY: quantize_i8_bf16(const bf16* W, int8* q, float* scale, int K), grid N:
            // W [N, K] bf16 in the staging buffer, q [N, K] int8 and scale [N] f32 in the int8
            // arenas. The next upload into the staging buffer is stream-ordered after it.
            unsafe {
                gpu.launch("quantize_i8_bf16", plan::per_row(p.shape[0]), &mut args![w, q, s, kk])?
            };
        } else if let Some(r) = resident.get(&p.name) {
            reader.read(p, &mut img[r.offset..r.offset + r.bytes])?;
        }
    }
    gpu.upload(arena.ptr(), &img)?;
    drop(img);
    let at = |name: &str| -> std::result::Result<u64, String> {
        resident
            .get(name)
            .map(|p| arena.at(p.offset))
            .ok_or_else(|| format!("{name} not in the weight plan"))
    };
    let lin = |name: String| -> std::result::Result<Lin, String> {
        if let (Some((qb, sb)), Some(&(qo, so))) = (&i8_bufs, i8_at.get(&name)) {
            return Ok(Lin::I8 { q: qb.at(qo), scale: sb.at(so) });
        }
        at(&name).map(Lin::Bf16)
    };
    let dequant = if keep_scratch { staging } else { None };
    let scratch_bytes = dequant.as_ref().map_or(0, DevBuf::bytes);
    let layer = |prefix: String, qk: bool| -> std::result::Result<LayerW, String> {
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
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let fast_layers = (0..cfg.n_fast_layer)
        .map(|i| layer(format!("fast_layers.{i}."), cfg.fast_qk_norm))
        .collect::<std::result::Result<Vec<_>, _>>()?;
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

/// The [`Text2Semantic`] of the CUDA backend.
pub(super) struct CudaT2s {
    model: Arc<Model>,
}

impl Text2Semantic for CudaT2s {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self) -> Result<Box<dyn T2sRequest>> {
        Ok(Box::new(self.start_cuda()?))
    }

    /// Frames are made on the device (slow step, fast steps, sampling in one graph replay):
    /// the request is its own [`FrameStep`], no host sampling.
    fn start_frames(
        &self,
        _info: Arc<BundleInfo>,
        _positions: usize,
    ) -> Result<Box<dyn FrameStep>> {
        Ok(Box::new(self.start_cuda()?))
    }
}

impl CudaT2s {
    fn start_cuda(&self) -> Result<CudaRequest> {
        let m = &self.model;
        let _g = m.op_lock.lock();
        m.bind()?;
        let ws = m.take_workspace().map_err(|e| backend_err("start", e))?;
        let mut r = CudaRequest {
            model: m.clone(),
            ws: Some(ws),
            kv_len: 0,
            fast_pos: 0,
            frame: 0,
            written: None,
        };
        r.reset().map_err(|e| backend_err("start", e))?;
        Ok(r)
    }
}

/// One request: a workspace from the pool, returned on drop.
pub(super) struct CudaRequest {
    model: Arc<Model>,
    ws: Option<Workspace>,
    kv_len: usize,
    fast_pos: usize,
    frame: u32,
    /// The sampling last written to the device state (the frame graph reads it there).
    written: Option<FrameSampling>,
}

impl Drop for CudaRequest {
    fn drop(&mut self) {
        if let Some(ws) = self.ws.take() {
            let _g = self.model.op_lock.lock();
            if self.model.bind().is_ok() && self.model.gpu.sync().is_ok() {
                self.model.pool.lock().push(ws);
            }
        }
    }
}

impl CudaRequest {
    fn ws(&self) -> std::result::Result<&Workspace, String> {
        self.ws.as_ref().ok_or_else(|| "request has no workspace".to_string())
    }

    /// Empties the caches and the history, and writes the device state.
    fn reset(&mut self) -> std::result::Result<(), String> {
        let m = self.model.clone();
        let ws = self.ws()?;
        m.gpu.memset0(ws.hist.ptr(), ws.hist.bytes())?;
        m.gpu.memset0(ws.frame.ptr(), ws.frame.bytes())?;
        self.kv_len = 0;
        self.fast_pos = 0;
        self.frame = 0;
        self.written = None;
        self.write_state(
            SamplingParams { temperature: 0.0, top_p: 1.0, repetition_penalty: 1.0 },
            0,
            false,
            false,
        )
    }

    fn write_state(
        &self,
        p: SamplingParams,
        seed: u64,
        compat: bool,
        ignore_end: bool,
    ) -> std::result::Result<(), String> {
        let m = &self.model;
        let st = DeviceState {
            kv_pos: self.kv_len as i32,
            frame: self.frame,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            temperature: p.temperature,
            top_p: p.top_p,
            rep_penalty: p.repetition_penalty,
            compat: i32::from(compat),
            ignore_end: i32::from(ignore_end),
            max_kv: m.cfg.max_seq_len as i32,
            pad: [0; 6],
        };
        let words: [u32; 16] = [
            st.kv_pos as u32,
            st.frame,
            st.seed_lo,
            st.seed_hi,
            st.temperature.to_bits(),
            st.top_p.to_bits(),
            st.rep_penalty.to_bits(),
            st.compat as u32,
            st.ignore_end as u32,
            st.max_kv as u32,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        m.gpu.upload(self.ws()?.state.ptr(), &words)
    }

    /// The next frame on the device: frame 0 from the prefill's logits (eager launches), every
    /// later one by one replay of the captured frame graph. The only host sync is the copy of
    /// the frame's 1+K codes (needed for the stop rule and streaming).
    fn next_device_frame(&mut self, s: &FrameSampling) -> Result<Vec<i64>> {
        let m = self.model.clone();
        let _g = m.op_lock.lock();
        m.bind()?;
        if self.kv_len == 0 {
            return Err(Error::Internal("device frame before the prompt".into()));
        }
        if self.written != Some(*s) {
            self.write_state(s.params, s.seed, s.fish_speech_compat, s.ignore_end)
                .map_err(|e| backend_err("state", e))?;
            self.written = Some(*s);
        }
        // The device advances its own counters; these mirror them (an error part-way leaves
        // the request unusable, as any failed device call does).
        let (mut kv_len, frame) = (self.kv_len, self.frame);
        let ws = self.ws().map_err(|e| backend_err("frame", e))?;
        if frame == 0 {
            m.fast_and_sample(ws).map_err(|e| backend_err("first frame", e))?;
        } else {
            if kv_len >= m.cfg.max_seq_len {
                return Err(Error::arg("max_frames", "the model's context is full"));
            }
            match &ws.graph {
                Some(g) => {
                    g.launch().map_err(|e| backend_err("cuGraphLaunch", format!("{e:?}")))?
                }
                None => m.frame(ws).map_err(|e| backend_err("frame", e))?,
            }
            kv_len += 1;
        }
        let k1 = m.cfg.num_codebooks + 1;
        m.gpu
            .download_async(&ws.pinned, ws.frame.ptr(), k1 * 8)
            .map_err(|e| backend_err("frame copy", e))?;
        m.gpu.sync().map_err(|e| backend_err("frame", e))?;
        let out = ws.pinned.as_i64()[..k1].to_vec();
        self.kv_len = kv_len;
        self.frame = frame + 1;
        Ok(out)
    }

    /// Uploads `tokens` ([1+K, t] row-major) chunk by chunk and runs the slow passes.
    fn slow_upload(&mut self, tokens: &[i64], t: usize) -> Result<()> {
        let m = self.model.clone();
        let k1 = m.cfg.num_codebooks + 1;
        if tokens.len() != k1 * t || t == 0 {
            return Err(Error::arg(
                "tokens",
                format!("expected [{k1}, {t}] ids, got {}", tokens.len()),
            ));
        }
        if self.kv_len + t > m.cfg.max_seq_len {
            return Err(Error::arg("tokens", "prompt exceeds the model's context"));
        }
        let mut start = 0;
        while start < t {
            let tc = (t - start).min(plan::PREFILL_CHUNK);
            let mut chunk = Vec::with_capacity(k1 * tc);
            for r in 0..k1 {
                chunk.extend_from_slice(&tokens[r * t + start..r * t + start + tc]);
            }
            let ws = self.ws().map_err(|e| backend_err("slow", e))?;
            m.gpu.upload(ws.tok_in.ptr(), &chunk).map_err(|e| backend_err("slow upload", e))?;
            m.slow_pass(ws, ws.tok_in.ptr(), tc, tc).map_err(|e| backend_err("slow", e))?;
            self.kv_len += tc;
            start += tc;
        }
        Ok(())
    }
}

impl T2sRequest for CudaRequest {
    fn slow(&mut self, tokens: &[i64], t: usize) -> Result<SlowOutput> {
        let model = self.model.clone();
        let _g = model.op_lock.lock();
        model.bind()?;
        self.slow_upload(tokens, t)?;
        let m = self.model.clone();
        let ws = self.ws().map_err(|e| backend_err("slow", e))?;
        let mut logits = vec![0f32; m.cfg.head_rows()];
        let mut hidden = vec![0f32; m.cfg.dim];
        m.gpu.download(&mut logits, ws.logits.ptr()).map_err(|e| backend_err("slow logits", e))?;
        m.gpu.download(&mut hidden, ws.hidden.ptr()).map_err(|e| backend_err("slow hidden", e))?;
        Ok(SlowOutput { logits, hidden })
    }

    fn fast_reset(&mut self) -> Result<()> {
        self.fast_pos = 0;
        Ok(())
    }

    fn fast(&mut self, hidden: &[f32], code: i64) -> Result<Vec<f32>> {
        let m = self.model.clone();
        let _g = m.op_lock.lock();
        m.bind()?;
        if self.fast_pos >= m.cfg.num_codebooks {
            return Err(Error::Internal("more fast steps than codebooks in one frame".into()));
        }
        if hidden.len() != m.cfg.dim {
            return Err(Error::arg("hidden", format!("expected {} values", m.cfg.dim)));
        }
        let ws = self.ws().map_err(|e| backend_err("fast", e))?;
        if self.fast_pos == 0 {
            m.gpu.upload(ws.hidden.ptr(), hidden).map_err(|e| backend_err("fast upload", e))?;
        }
        m.gpu.upload(ws.code.ptr(), &[code]).map_err(|e| backend_err("fast upload", e))?;
        m.fast_step(ws, self.fast_pos, ws.code.ptr()).map_err(|e| backend_err("fast", e))?;
        let mut logits = vec![0f32; m.cfg.fast_logit_rows];
        m.gpu.download(&mut logits, ws.flogits.ptr()).map_err(|e| backend_err("fast logits", e))?;
        self.fast_pos += 1;
        Ok(logits)
    }

    fn kv_len(&self) -> usize {
        self.kv_len
    }
}

impl FrameStep for CudaRequest {
    fn prefill(&mut self, tokens: &[i64], t: usize) -> Result<Vec<f32>> {
        let m = self.model.clone();
        let _g = m.op_lock.lock();
        m.bind()?;
        self.slow_upload(tokens, t)?;
        let ws = self.ws().map_err(|e| backend_err("slow", e))?;
        let mut logits = vec![0f32; m.cfg.head_rows()];
        m.gpu.download(&mut logits, ws.logits.ptr()).map_err(|e| backend_err("slow logits", e))?;
        Ok(logits)
    }

    fn step(&mut self, rows: &mut [StepRow<'_>]) -> Result<()> {
        // One request per workspace: a batch of one (rows beyond it would need a batched
        // frame graph, measured on a GPU first).
        let [row] = rows else {
            return Err(Error::Internal(format!("cuda steps one request, got {}", rows.len())));
        };
        let t0 = row.profile.as_ref().map(|_| std::time::Instant::now());
        row.out = self.next_device_frame(row.sampling)?;
        if let (Some(p), Some(t0)) = (row.profile.as_deref_mut(), t0) {
            p.slow += t0.elapsed(); // the whole frame, fast steps and sampling included
        }
        Ok(())
    }
}

/// Benchmarks the real shapes with random weights (no checkpoint): `frames` decoded frames after
/// a `prompt_len` prefill. Returns (frames/s, first-frame ms, weight bytes, device name).
#[allow(clippy::too_many_arguments)]
pub(super) fn bench_random(
    config: &EngineConfig,
    cfg: ModelConfig,
    prompt_len: usize,
    frames: usize,
    int8: bool,
) -> Result<BenchResult> {
    let plan = WeightPlan::for_config(&cfg);
    let model = catch_unwind(AssertUnwindSafe(|| {
        let opts = LoadOptions { int8, numerics: Numerics::Fast };
        Model::open(config, cfg.clone(), &plan, WeightSource::Random { seed: 42 }, opts)
    }))
    .unwrap_or_else(|_| Err(backend_err("load", "panic in the CUDA driver wrappers")))?;
    let model = Arc::new(model);
    let t2s = CudaT2s { model: model.clone() };
    let k1 = cfg.num_codebooks + 1;
    let mut prompt = vec![0i64; k1 * prompt_len];
    for (i, v) in prompt.iter_mut().take(prompt_len).enumerate() {
        *v = (i * 7919 % 150_000) as i64;
    }
    let s = FrameSampling {
        params: SamplingParams { temperature: 0.8, top_p: 0.8, repetition_penalty: 1.1 },
        seed: 1234,
        fish_speech_compat: false,
        ignore_end: true,
    };
    let run = |n: usize| -> Result<(f64, f64, usize)> {
        let step: Box<dyn FrameStep> = Box::new(t2s.start_cuda()?);
        let prompt = Prompt { rows: k1, len: prompt_len, data: prompt.clone() };
        let stop = StopRules { end_token: cfg.im_end as i64, max_frames: n };
        let mut gen = FrameGenerator::from_step(step, prompt, s, stop);
        let never = CancelToken::new();
        let t0 = std::time::Instant::now();
        let mut first_ms = 0.0;
        let out = generate::run_to_end(&mut gen, &never, &mut |count| {
            if count == 1 {
                first_ms = t0.elapsed().as_secs_f64() * 1e3;
            }
        })?;
        let total = t0.elapsed().as_secs_f64();
        Ok((total, first_ms, out.len()))
    };
    run(8)?; // warm-up
    let (total, first_ms, n) = run(frames + 1)?;
    let decode_s = total - first_ms / 1e3;
    let (free, total_mem) = cudarc::driver::result::mem_get_info()
        .map_err(|e| backend_err("mem info", format!("{e:?}")))?;
    Ok(BenchResult {
        device: model.gpu.info.name.clone(),
        frames_per_s: (n.saturating_sub(1)) as f64 / decode_s,
        first_frame_ms: first_ms,
        weight_bytes: model.w.bytes,
        used_device_bytes: total_mem - free,
        frames: n,
        graph_nodes: model.graph_nodes().map_err(|e| backend_err("graph", e))?,
        pdl: model.gpu.pdl,
    })
}

/// The whole backend on the kernel emulator (`emulator.rs`): the tiny bundle's model loaded by
/// [`Model::load`], prefill and decode frames through the same launches the frame graph
/// records, against fish-speech's golden outputs. What the GPU runs differently: the graph
/// itself (replayed there, launched directly here), cuBLAS (a host loop here), rounding.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::emulator;
    use std::path::PathBuf;

    /// Frames compared per run (each frame is ten samplings of 1024 emulated threads).
    const FRAMES: usize = 6;

    fn tiny() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
    }

    fn golden(name: &str) -> PathBuf {
        tiny().join("golden").join(name)
    }

    fn json(name: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(golden(name)).unwrap()).unwrap()
    }

    fn tiny_on_emulator(int8: bool, numerics: Numerics) -> CudaT2s {
        let dir = tiny();
        let cfg = ModelConfig::from_bundle(&Bundle::load(&dir, false).unwrap().info).unwrap();
        let path = dir.join(&cfg.weights_file);
        let header = safetensors::read_header(&path).unwrap();
        let plan = WeightPlan::new(&cfg, &header).unwrap();
        let gpu = Gpu::emulated(emulator::shared(), 4);
        let src = WeightSource::File { path, header };
        let model = Model::load(gpu, cfg, &plan, src, LoadOptions { int8, numerics }).unwrap();
        CudaT2s { model: Arc::new(model) }
    }

    /// fish-speech's prompt token ids, [1+K, T] row-major, and T.
    fn golden_prompt() -> (Vec<i64>, usize) {
        let v = json("prompt_text.json");
        let rows = v["ids"].as_array().unwrap();
        let t = rows[0].as_array().unwrap().len();
        let ids =
            rows.iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()));
        (ids.collect(), t)
    }

    fn golden_frames(name: &str) -> Vec<Vec<i64>> {
        let path = golden(name);
        let a = crate::npy::read(&path).unwrap();
        let cols = a.shape[1];
        a.into_i64(&path).unwrap().chunks(cols).map(<[i64]>::to_vec).collect()
    }

    fn prefill_logits(t2s: &CudaT2s) -> Vec<f32> {
        let (ids, t) = golden_prompt();
        FrameStep::prefill(&mut t2s.start_cuda().unwrap(), &ids, t).unwrap()
    }

    /// The self-test's measure (NaN or a length mismatch gives infinity), against f32 values.
    fn max_rel(a: &[f32], b: &[f32]) -> f64 {
        crate::backend::cuda::selftest::rel_err(
            a,
            &b.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn emulated_backend_reproduces_fish_speech_prefill_and_frames() {
        let t2s = tiny_on_emulator(false, Numerics::Exact);
        let want = crate::npy::read(&golden("prefill_logits.npy")).unwrap().into_f32();
        let e = max_rel(&prefill_logits(&t2s), &want);
        assert!(e < 1e-4, "prefill logits: max relative error {e:.3e}");
        println!("prefill logits vs fish-speech: {e:.3e}");
        let (ids, t) = golden_prompt();
        let params = json("params.json");
        // fish-speech's greedy (top-p 1e-6, compat mode) and the seeded sampler, as the engine
        // sets them up (generate.rs).
        for (name, compat) in [("greedy", true), ("sampled", false)] {
            let p = &params[name];
            let mut sp = SamplingParams {
                temperature: p["temperature"].as_f64().unwrap() as f32,
                top_p: p["top_p"].as_f64().unwrap() as f32,
                repetition_penalty: p["repetition_penalty"].as_f64().unwrap() as f32,
            };
            if compat {
                sp = sp.rounded_to_bf16();
            }
            let s = FrameSampling {
                params: sp,
                seed: p["seed"].as_u64().unwrap_or(crate::SynthParams::default().seed),
                fish_speech_compat: compat,
                ignore_end: false,
            };
            // The engine's frame loop over the device step, as `FrameGenerator::new` sets it up.
            let step: Box<dyn FrameStep> = Box::new(t2s.start_cuda().unwrap());
            let prompt = Prompt { rows: ids.len() / t, len: t, data: ids.clone() };
            let stop = StopRules { end_token: t2s.model.cfg.im_end as i64, max_frames: FRAMES };
            let mut gen = FrameGenerator::from_step(step, prompt, s, stop);
            let never = CancelToken::new();
            let frames = generate::run_to_end(&mut gen, &never, &mut |_| {}).unwrap();
            assert_eq!(frames, golden_frames(&format!("{name}_frames.npy"))[..FRAMES], "{name}");
        }
    }

    /// Issue #14 item 4: the backend's own prefill (chunked uploads, attention over thousands
    /// of keys in several splits) and decode at a long prompt, against onnx-cpu on the same
    /// prompt (which matches fish-speech, golden tests): the prefill logits within 1e-4 and 4
    /// greedy frames identical. The prompt is ~1,000 tokens (`S1_EMULATOR_PROMPT_TOKENS`, up to
    /// 4,000, the tiny model's context nearly full): the emulated prefill costs O(prompt²) host
    /// work, ~10 CPU-minutes at 4,000 tokens (docs/cuda.md, "Long prompts on the emulator").
    #[test]
    fn emulated_backend_matches_onnx_cpu_at_a_long_prompt() {
        use crate::generate::{run_to_end, FrameGenerator};
        let engine = crate::Engine::new(crate::EngineConfig::new(tiny())).unwrap();
        let context = engine.info().model.max_seq_len;
        let tokens: usize = std::env::var("S1_EMULATOR_PROMPT_TOKENS")
            .map_or(1_000, |v| v.parse().expect("S1_EMULATOR_PROMPT_TOKENS: a number"));
        assert!((500..=context - 16).contains(&tokens), "S1_EMULATOR_PROMPT_TOKENS {tokens}");
        // 22 tokens a sentence on the tiny tokenizer.
        let sentence = "A long voice reference and a paragraph of text. ";
        let mut text = sentence.to_string();
        let mut prompt = engine.prompt(&crate::Request::new(text.as_str())).unwrap();
        while prompt.len < tokens {
            text.push_str(sentence);
            prompt = engine.prompt(&crate::Request::new(text.as_str())).unwrap();
        }
        assert!(prompt.len + 4 <= context, "prompt {} tokens", prompt.len);
        let params =
            crate::SynthParams { max_frames: 4, ..crate::SynthParams::default().with_seed(3) };
        let bundle = Bundle::load(&tiny(), false).unwrap();
        let (onnx, _) =
            crate::backend::onnx::build_cpu(&EngineConfig::new(tiny()), &bundle).unwrap();
        let info = Arc::new(bundle.info.clone());
        let cuda = tiny_on_emulator(false, Numerics::Exact);
        // One whole frame loop each (the emulator makes its frames on the "device", onnx-cpu on
        // the host): fish-speech's greedy decoding, so every frame is a pure function of the
        // logits. One run only: the emulated prefill costs O(prompt²) host work.
        let run = |t2s: &dyn Text2Semantic| {
            let p = crate::SynthParams { fish_speech_compat: true, top_p: 1e-6, ..params.clone() };
            let mut g = FrameGenerator::new(t2s, info.clone(), prompt.clone(), &p)
                .unwrap()
                .ignoring_end(true);
            let frames = run_to_end(&mut g, &crate::CancelToken::new(), &mut |_| {}).unwrap();
            (g.prefill_logits().to_vec(), frames)
        };
        let (want_logits, want_frames) = run(onnx.as_ref());
        let (logits, frames) = run(&cuda);
        let e = max_rel(&logits, &want_logits);
        assert!(e < 1e-4, "prefill logits at {} tokens: {e:.3e}", prompt.len);
        println!("prefill logits at {} tokens, emulator vs onnx-cpu: {e:.3e}", prompt.len);
        assert_eq!(want_frames.len(), 4);
        assert_eq!(frames, want_frames);
    }

    #[test]
    fn emulated_fast_numerics_and_int8_prefill_paths_agree() {
        let want = crate::npy::read(&golden("prefill_logits.npy")).unwrap().into_f32();
        // bf16 KV caches and the (host-emulated) cuBLAS prefill with bf16 activations.
        let fast = prefill_logits(&tiny_on_emulator(false, Numerics::Fast));
        let e = max_rel(&fast, &want);
        assert!((1e-6..2e-2).contains(&e), "fast numerics vs fish-speech: {e:.3e}");
        // int8: the GEMV prefill (f32 activations) and the cuBLAS prefill on matrices
        // dequantised by dequantize_i8_bf16 (bf16 activations) see the same int8 weights.
        let gemv = prefill_logits(&tiny_on_emulator(true, Numerics::Exact));
        let blas = prefill_logits(&tiny_on_emulator(true, Numerics::Fast));
        let e = max_rel(&blas, &gemv);
        assert!((1e-6..5e-2).contains(&e), "int8 prefill, cuBLAS vs GEMV: {e:.3e}");
        let q = max_rel(&gemv, &want);
        assert!((1e-4..0.2).contains(&q), "int8 vs fish-speech's bf16-free logits: {q:.3e}");
        println!(
            "fast numerics {:.3e}, int8 cuBLAS vs GEMV {e:.3e}, int8 vs fp32 {q:.3e}",
            max_rel(&fast, &want)
        );
    }
}
