//! Backends behind object-safe traits: [`Text2Semantic`] (slow + fast transformer) whose
//! requests the frame loop drives through one step trait, [`FrameStep`], and [`Codec`]
//! (codes ↔ PCM). The frame loop and its stop rules stay outside (`generate.rs`); host sampling
//! is one adapter (`host.rs`) over `sampling.rs`, so every backend draws the same tokens.

use std::sync::Arc;

use crate::bundle::{Bundle, BundleInfo};
use crate::codes::Codes;
use crate::config::{BackendKind, EngineConfig};
use crate::error::{Error, Result};

// The only module besides ffi/ allowed `unsafe` (STYLE.md rule 6): raw CUDA driver calls.
#[allow(unsafe_code)]
pub mod cuda;
pub mod host;
pub mod onnx;

/// Outputs of one slow-transformer call, at its last position.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowOutput {
    /// Restricted head logits: `[semantic_rows + 1]` (semantic 0.., then `<|im_end|>`).
    pub logits: Vec<f32>,
    /// Pre-final-norm hidden state: `[dim]`.
    pub hidden: Vec<f32>,
}

/// The DualAR transformer of a backend; shared by all requests (Send + Sync).
pub trait Text2Semantic: Send + Sync {
    /// Backend name (`onnx-cpu`, ...).
    fn name(&self) -> &'static str;
    /// Starts a request with empty KV caches.
    fn start(&self) -> Result<Box<dyn T2sRequest>>;
    /// Starts a request whose slow KV cache holds `positions` positions (prompt + frames) from
    /// the start, so it never grows or copies while decoding. Backends with a fixed cache
    /// ignore the hint (the default).
    fn start_with_capacity(&self, positions: usize) -> Result<Box<dyn T2sRequest>> {
        let _ = positions;
        self.start()
    }
    /// Starts a request for the frame loop, with room for `positions` positions: by default
    /// [`Text2Semantic::start_with_capacity`] behind the host-sampling adapter; backends that
    /// make frames on their device return their own [`FrameStep`].
    fn start_frames(&self, info: Arc<BundleInfo>, positions: usize) -> Result<Box<dyn FrameStep>> {
        Ok(Box::new(host::HostSampled::new(self.start_with_capacity(positions)?, info)))
    }
    /// How concurrent requests were batched so far; `None` for a backend that steps each
    /// request alone (the default).
    fn batch_stats(&self) -> Option<BatchStats> {
        None
    }
}

/// Counters of a batching backend ([`Text2Semantic::batch_stats`]), since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Decode steps run (one slow call and the fast calls for every row in it).
    pub steps: u64,
    /// Request rows made in those steps (frames).
    pub rows: u64,
    /// Most rows in one step.
    pub max_rows: usize,
}

/// Per-request state of the DualAR transformer (KV caches). One thread at a time.
pub trait T2sRequest: Send {
    /// Runs the slow transformer on `tokens` (`[1+K, t]` i64 row-major) at positions
    /// `kv_len()..kv_len()+t` and appends their keys/values to the cache.
    fn slow(&mut self, tokens: &[i64], t: usize) -> Result<SlowOutput>;
    /// Empties the fast transformer's cache (start of a frame).
    fn fast_reset(&mut self) -> Result<()>;
    /// One fast step at position = steps since [`T2sRequest::fast_reset`]: position 0 takes
    /// `hidden` (`[dim]`), later positions the previous codebook's `code`.
    /// Returns `[fast.logit_rows]` logits.
    fn fast(&mut self, hidden: &[f32], code: i64) -> Result<Vec<f32>>;
    /// Positions in the slow KV cache.
    fn kv_len(&self) -> usize;
    /// A copy of the slow KV cache (positions `0..kv_len()`), to start other requests from
    /// (the voice prefix cache). Backends without it return [`Error::BackendUnavailable`] and
    /// the engine prefills the whole prompt instead.
    fn snapshot_kv(&self) -> Result<KvSnapshot> {
        Err(Error::BackendUnavailable {
            backend: "prefix-cache",
            reason: "this backend cannot copy its KV cache".into(),
        })
    }
    /// Replaces the slow KV cache by `snapshot` (from [`T2sRequest::snapshot_kv`] of the same
    /// backend); the next [`T2sRequest::slow`] continues at position `snapshot.len`.
    fn restore_kv(&mut self, snapshot: &KvSnapshot) -> Result<()> {
        let _ = snapshot;
        Err(Error::BackendUnavailable {
            backend: "prefix-cache",
            reason: "this backend cannot restore a KV cache".into(),
        })
    }
}

/// How a request samples its frames ([`StepRow::sampling`]); the same for every frame of a
/// request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameSampling {
    /// Temperature, top-p and repetition penalty (already bf16-rounded in compat mode).
    pub params: crate::sampling::SamplingParams,
    /// RNG seed.
    pub seed: u64,
    /// fish-speech's main-token repetition window (`SynthParams::fish_speech_compat`).
    pub fish_speech_compat: bool,
    /// `<|im_end|>` is never sampled (benchmarks: [`crate::internal::ignore_end`]).
    pub ignore_end: bool,
}

/// One request's row of a decode step: what it needs to make its next frame, and the frame.
pub struct StepRow<'a> {
    /// Frame index f of the frame to make (0 = the prefill frame, sampled from the prompt's
    /// last position).
    pub frame: usize,
    /// The previous frame `[main id, c0, .., c(K-1)]`, fed back through the slow transformer;
    /// `None` for the prefill frame.
    pub prev: Option<&'a [i64]>,
    /// Frames decoded after the prefill frame so far, oldest first (the repetition history).
    pub history: &'a [Vec<i64>],
    /// Sampling of this request.
    pub sampling: &'a FrameSampling,
    /// Stage timings to add to (`None`: not measured, read no clock).
    pub profile: Option<&'a mut crate::generate::StageTimes>,
    /// Out: the frame made, `[main id, c0, .., c(K-1)]`.
    pub out: Vec<i64>,
}

/// The step every backend implements, the only thing the frame loop (`generate.rs`) calls:
/// prefill a request's prompt, then make the next frame of each row of a batch. Backends that
/// make whole frames on their device (slow step, fast steps, sampling: `cuda`) implement it
/// directly; backends that compute logits implement [`T2sRequest`] and come through the one
/// adapter [`host::HostSampled`], which samples on the CPU. Both draw the same tokens
/// (`sampling.rs`).
///
/// A step object holds the state (KV caches) of the requests it steps. The frame loop hands
/// each request's step object its own row (`rows.len() == 1`); a batching backend (onnx-cpu,
/// `onnx/batch.rs`) gathers the rows of concurrent requests behind this call and makes them in
/// one graph call per stage, so the frame loop and its stop rules stay one per request.
pub trait FrameStep: Send {
    /// Runs prompt positions `tokens` (`[1+K, t]` i64 row-major) through the slow transformer
    /// after those already prefilled, and returns the restricted head logits of the last one
    /// (`[semantic_rows + 1]`, for parity checks). The prefill frame is made by the next
    /// [`FrameStep::step`].
    fn prefill(&mut self, tokens: &[i64], t: usize) -> Result<Vec<f32>>;
    /// Makes the next frame of every row into [`StepRow::out`].
    fn step(&mut self, rows: &mut [StepRow<'_>]) -> Result<()>;
    /// Replaces the slow KV cache by `snapshot` (a voice prefix, from
    /// [`T2sRequest::snapshot_kv`] of the same backend); the next [`FrameStep::prefill`]
    /// continues at position `snapshot.len`.
    fn restore_kv(&mut self, snapshot: &KvSnapshot) -> Result<()> {
        let _ = snapshot;
        Err(Error::BackendUnavailable {
            backend: "prefix-cache",
            reason: "this backend cannot restore a KV cache".into(),
        })
    }
}

/// A copy of a slow KV cache: positions `0..len`, in a backend-specific layout.
pub struct KvSnapshot {
    /// Backend that made it (only that backend can restore it).
    pub backend: &'static str,
    /// Positions held.
    pub len: usize,
    /// Bytes held (for the cache's accounting and logs).
    pub bytes: usize,
    /// The backend's data.
    pub data: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for KvSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvSnapshot")
            .field("backend", &self.backend)
            .field("len", &self.len)
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// The codec of a backend; shared by all requests (Send + Sync).
pub trait Codec: Send + Sync {
    /// Backend name.
    fn name(&self) -> &'static str;
    /// Decodes `codes` (`[K, T]`) and appends `T · frame_samples` f32 samples to `pcm`.
    fn decode(&self, codes: &Codes, pcm: &mut Vec<f32>) -> Result<()> {
        self.decode_at(codes, 0, pcm)
    }
    /// Whether [`Codec::decode_at`] accepts a non-zero `start_frame`.
    fn supports_start_frame(&self) -> bool {
        false
    }
    /// Decodes `codes` as if `codes[:, 0]` were frame `start_frame` of a decode that began at
    /// frame 0 (the codec's positional tables are absolute). `start_frame + T` must not exceed
    /// `max_decode_frames`. Without [`Codec::supports_start_frame`], only 0 is accepted.
    fn decode_at(&self, codes: &Codes, start_frame: usize, pcm: &mut Vec<f32>) -> Result<()>;
    /// Encodes mono 44.1 kHz PCM to codes (`[K, ceil(S / frame_samples)]`).
    fn encode(&self, pcm: &[f32]) -> Result<Codes>;
    /// A stateful decoder at frame 0 with an all-zero state (the `codec_decode_step` graph), or
    /// `None` (the default) when this codec has none: then streaming re-decodes left context
    /// through [`Codec::decode_at`].
    fn start_step(&self) -> Result<Option<Box<dyn CodecStep>>> {
        Ok(None)
    }
}

/// One decode carried chunk by chunk (from [`Codec::start_step`]): the codec's state (window
/// keys/values, convolution left context) lives here, so each call costs its own frames only.
pub trait CodecStep: Send {
    /// Decodes the next `codes` (`[K, T]`, T ≥ 1) at positions `position()..position() + T` of
    /// this decode and appends their `T · frame_samples` samples to `pcm`. The position must
    /// stay within `max_decode_frames`. After an error the state is unchanged.
    fn decode_next(&mut self, codes: &Codes, pcm: &mut Vec<f32>) -> Result<()>;
    /// Frames decoded so far (the position of the next frame).
    fn position(&self) -> usize;
}

/// A backend's transformer and (when the bundle has one) codec.
pub type BackendPair = (Arc<dyn Text2Semantic>, Option<Arc<dyn Codec>>);

/// A backend that was not chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The backend.
    pub backend: BackendKind,
    /// Why it was not used.
    pub reason: String,
}

/// The backend [`select`] chose.
pub struct Selection {
    /// Which one.
    pub kind: BackendKind,
    /// Its transformer.
    pub t2s: Arc<dyn Text2Semantic>,
    /// Its codec (`None` when the bundle has no `codec_decode` graph).
    pub codec: Option<Arc<dyn Codec>>,
    /// Backends tried before it (for `auto`) and why they were skipped.
    pub skipped: Vec<Skipped>,
}

/// Why a GPU backend cannot run in this build. These are stubs with the real names, so callers
/// need no `cfg`: they return an error value, never panic.
fn stub_reason(kind: BackendKind) -> Option<&'static str> {
    match kind {
        BackendKind::Auto
        | BackendKind::Cuda
        | BackendKind::TensorRt
        | BackendKind::OnnxCuda
        | BackendKind::OnnxCpu => None,
    }
}

/// The ONNX Runtime flavour behind a backend kind, if it is one.
fn onnx_flavor(kind: BackendKind) -> Option<onnx::Flavor> {
    match kind {
        BackendKind::OnnxCpu => Some(onnx::Flavor::Cpu),
        BackendKind::OnnxCuda => Some(onnx::Flavor::Cuda),
        BackendKind::TensorRt => Some(onnx::Flavor::TensorRt),
        BackendKind::Auto | BackendKind::Cuda => None,
    }
}

/// Builds one concrete backend.
fn build(kind: BackendKind, config: &EngineConfig, bundle: &Bundle) -> Result<BackendPair> {
    if let Some(reason) = stub_reason(kind) {
        return Err(Error::BackendUnavailable { backend: kind.name(), reason: reason.into() });
    }
    if kind == BackendKind::Cuda && bundle.info.quantization.is_some() {
        return Err(Error::BackendUnavailable {
            backend: kind.name(),
            reason: format!(
                "a {} bundle is for the CPU (onnx-cpu) and has no bf16 weights; the cuda backend \
                 takes an fp16 or fp32 bundle (and quantises itself: cuda_weights = int8)",
                bundle.info.precision
            ),
        });
    }
    if kind == BackendKind::Cuda {
        // The transformer on the native backend; the codec on ONNX Runtime, on the GPU through
        // the CUDA execution provider when that starts, else on the CPU (fp32 bundles only).
        let (t2s, _) = cuda::build(config, bundle)?;
        let codec = match onnx::build_codec(config, bundle, onnx::Flavor::Cuda) {
            Ok(c) => c,
            Err(Error::BackendUnavailable { reason, .. }) => {
                log::info!("cuda: codec on the CPU (onnx-cuda: {reason})");
                onnx::build_codec(config, bundle, onnx::Flavor::Cpu).map_err(|e| match e {
                    Error::BackendUnavailable { reason: cpu, .. } => Error::BackendUnavailable {
                        backend: "cuda",
                        reason: format!("no codec: onnx-cuda: {reason}; onnx-cpu: {cpu}"),
                    },
                    other => other,
                })?
            }
            Err(e) => return Err(e),
        };
        return Ok((t2s, codec));
    }
    match onnx_flavor(kind) {
        Some(onnx::Flavor::Cpu) => onnx::build_cpu(config, bundle),
        Some(flavor) => onnx::build_gpu(config, bundle, flavor),
        None => Err(Error::Internal(format!("no builder for backend {kind}"))),
    }
}

/// Whether each concrete backend could start here, without loading a model (for `info`).
pub fn probe(config: &EngineConfig) -> Vec<(BackendKind, Result<()>)> {
    BackendKind::PREFERENCE
        .iter()
        .map(|&kind| {
            let r = match (stub_reason(kind), onnx_flavor(kind)) {
                (Some(reason), _) => {
                    Err(Error::BackendUnavailable { backend: kind.name(), reason: reason.into() })
                }
                (None, Some(flavor)) => onnx::probe(config, flavor),
                (None, None) if kind == BackendKind::Cuda => cuda::environment(config).map(|_| ()),
                (None, None) => Err(Error::Internal(format!("no probe for backend {kind}"))),
            };
            (kind, r)
        })
        .collect()
}

/// Builds the backend `config.backend` names; `auto` takes the first that works in
/// cuda → tensorrt → onnx-cuda → onnx-cpu order and reports the others in `skipped`.
///
/// Every option is validated first ([`EngineConfig::validate`]), and a configured `cache_dir`
/// is created and checked for writing whichever backend is chosen (a wrong path is an error,
/// not a skip). Each skip under `auto` is logged (`log` target `s1_mini::backend`) with its
/// reason, and so is the choice.
pub fn select(config: &EngineConfig, bundle: &Bundle) -> Result<Selection> {
    config.validate()?;
    if let Some(dir) = &config.cache_dir {
        crate::config::prepare_cache_dir(dir)?;
    }
    let candidates: Vec<BackendKind> = match config.backend {
        BackendKind::Auto => BackendKind::PREFERENCE.to_vec(),
        k => vec![k],
    };
    let mut skipped = Vec::new();
    let mut last_err = None;
    for kind in candidates {
        match build(kind, config, bundle) {
            Ok((t2s, codec)) => {
                log::info!("backend {kind} selected (backend = {})", config.backend);
                return Ok(Selection { kind, t2s, codec, skipped });
            }
            // Only "not available" moves on to the next backend; a broken bundle is reported.
            Err(e @ Error::BackendUnavailable { .. }) if config.backend == BackendKind::Auto => {
                log::info!("auto: skipped {kind}: {e}");
                skipped.push(Skipped { backend: kind, reason: e.to_string() });
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| Error::Internal("no backend candidates".into())))
}
