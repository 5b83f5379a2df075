//! `cuda_check bench` (bench/gpu_check.sh): the CUDA engine on the real shapes with random
//! weights, for `s1-mini bench`-style reports on a GPU host. Not API: reached through
//! `s1_mini::internal::cuda`.

#[cfg(feature = "cuda-base")]
use std::panic::{catch_unwind, AssertUnwindSafe};
#[cfg(feature = "cuda-base")]
use std::sync::Arc;

#[cfg(feature = "cuda-base")]
use super::engine::{backend_err, CudaT2s, Model};
use super::layout;
#[cfg(feature = "cuda-base")]
use super::layout::{ModelConfig, WeightPlan};
#[cfg(feature = "cuda-base")]
use super::weights::{LoadOptions, Numerics, WeightSource};
#[cfg(feature = "cuda-base")]
use crate::backend::{FrameSampling, FrameStep};
use crate::config::EngineConfig;
use crate::error::Result;
#[cfg(feature = "cuda-base")]
use crate::generate::{self, CancelToken, FrameGenerator, StopRules};
#[cfg(feature = "cuda-base")]
use crate::sampling::SamplingParams;
#[cfg(feature = "cuda-base")]
use crate::text::prompt::Prompt;

/// What [`bench_random`] measured.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Device name.
    pub device: String,
    /// Decoded frames per second (graph replays incl. the per-frame code copy).
    pub frames_per_s: f64,
    /// Prefill + first frame, ms.
    pub first_frame_ms: f64,
    /// Weight bytes on the device.
    pub weight_bytes: usize,
    /// Device memory in use at the end (all processes).
    pub used_device_bytes: usize,
    /// Frames produced (incl. the prefill frame).
    pub frames: usize,
    /// Kernel nodes in one frame graph.
    pub graph_nodes: usize,
    /// Whether the kernels were launched with programmatic dependent launch (`S1_CUDA_PDL=1`).
    pub pdl: bool,
}

/// Benchmarks the real shapes with random weights generated at load (no checkpoint needed):
/// a `prompt_len` prefill, then `frames` decoded frames through the captured frame graph with
/// GPU sampling (temperature 0.8, top-p 0.8, penalty 1.1, `<|im_end|>` ignored). `int8` =
/// weight-only int8 layers. For `s1-mini bench`-style reports on a GPU host.
pub fn bench_random(
    config: &EngineConfig,
    model: layout::ModelConfig,
    prompt_len: usize,
    frames: usize,
    int8: bool,
) -> Result<BenchResult> {
    #[cfg(feature = "cuda-base")]
    {
        run(config, model, prompt_len, frames, int8)
    }
    #[cfg(not(feature = "cuda-base"))]
    {
        let _ = (config, model, prompt_len, frames, int8);
        Err(super::unavailable("this build has no CUDA support (built without the `cuda` feature)"))
    }
}

#[cfg(feature = "cuda-base")]
/// Benchmarks the real shapes with random weights (no checkpoint): `frames` decoded frames after
/// a `prompt_len` prefill, through the backend's own frame loop.
fn run(
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
