//! Engine and synthesis configuration: the documented defaults live here and nowhere else.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

mod gpu;
pub(crate) use gpu::option_path;
pub use gpu::{
    prepare_cache_dir, read_calibration_sentences, CudaWeights, CudnnConvAlgoSearch,
    GraphOptimization, PromptProfile, TensorRtPrecision,
};

/// Which backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendKind {
    /// The fastest available: cuda → tensorrt → onnx-cuda → onnx-cpu.
    #[default]
    Auto,
    /// Native CUDA kernels (not built yet).
    Cuda,
    /// ONNX Runtime with the TensorRT execution provider (not built yet).
    TensorRt,
    /// ONNX Runtime with the CUDA execution provider (not built yet).
    OnnxCuda,
    /// ONNX Runtime on the CPU.
    OnnxCpu,
}

impl BackendKind {
    /// Every concrete backend, in `auto`'s order of preference.
    pub const PREFERENCE: [BackendKind; 4] =
        [BackendKind::Cuda, BackendKind::TensorRt, BackendKind::OnnxCuda, BackendKind::OnnxCpu];

    /// The name used in configs, the CLI and error messages (`onnx-cpu`, ...).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Cuda => "cuda",
            BackendKind::TensorRt => "tensorrt",
            BackendKind::OnnxCuda => "onnx-cuda",
            BackendKind::OnnxCpu => "onnx-cpu",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => BackendKind::Auto,
            "cuda" => BackendKind::Cuda,
            "tensorrt" => BackendKind::TensorRt,
            "onnx-cuda" => BackendKind::OnnxCuda,
            "onnx-cpu" => BackendKind::OnnxCpu,
            other => {
                return Err(Error::arg(
                    "backend",
                    format!(
                    "unknown backend {other:?}; one of auto, cuda, tensorrt, onnx-cuda, onnx-cpu"
                ),
                ))
            }
        })
    }
}

/// How an [`crate::Engine`] is built. Cheap to clone.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Directory of the model bundle (holds `manifest.json`). Default: `.` (set it).
    pub bundle_dir: PathBuf,
    /// Backend to use. Default: [`BackendKind::Auto`].
    pub backend: BackendKind,
    /// Path of `libonnxruntime.so` (or `.dll`/`.dylib`). `None` = `ORT_DYLIB_PATH`, then the
    /// directory of the running executable or library. Default: `None`.
    pub ort_library_path: Option<PathBuf>,
    /// Check each bundle file's size and sha256 against the manifest at load time. Default: `true`.
    /// A file whose hash matched once is stamped (in `cache_dir/verified`, else the user's cache
    /// directory, e.g. `~/.cache/s1-mini/verified`) and not hashed again while its size, times
    /// and inode are unchanged; any write to it changes them, so a changed file is hashed and
    /// caught. Turning it off skips the hashes (seconds for a real model at a first load).
    pub verify_hashes: bool,
    /// Threads ONNX Runtime uses inside one operator; 0 = ONNX Runtime's default (one per core).
    pub intra_op_threads: usize,
    /// Threads ONNX Runtime uses to run independent operators in parallel, 0 ..= 1024;
    /// 0 = ONNX Runtime's default. Sessions run sequentially, so this matters little. Default 0.
    pub inter_op_threads: usize,
    /// ONNX Runtime graph optimisation level of every session. Default
    /// [`GraphOptimization::Layout`].
    pub graph_optimization: GraphOptimization,
    /// CUDA device ordinal for `cuda`, `tensorrt` and `onnx-cuda`, 0 ..= 2^31 − 1. Default 0.
    pub device_id: u32,
    /// cuDNN convolution algorithm search of the CUDA execution provider (`onnx-cuda`).
    /// Default [`CudnnConvAlgoSearch::Exhaustive`].
    pub cudnn_conv_algo_search: CudnnConvAlgoSearch,
    /// Weight type of the native `cuda` backend's transformer layers. Default
    /// [`CudaWeights::Bf16`].
    pub cuda_weights: CudaWeights,
    /// Precision of the TensorRT engines (`tensorrt`). Default [`TensorRtPrecision::Fp16`].
    pub tensorrt_precision: TensorRtPrecision,
    /// TensorRT builder workspace limit, in bytes; 0 = TensorRT's default (the device's memory).
    /// Non-zero values below 1 MiB are refused (a unit mistake). Default 0.
    pub tensorrt_workspace_bytes: u64,
    /// TensorRT optimisation profile of the slow transformer (prompt lengths; decode calls are
    /// one token). Default opt 256, max = the model's context.
    pub tensorrt_profile: PromptProfile,
    /// File of sample sentences (UTF-8, one per line) that, with the bundle, names the int8
    /// calibration tables `int8-calibration-{slow,fast}-<bundle id>-<sentences hash>.flatbuffers`
    /// in [`EngineConfig::cache_dir`], written by `python -m s1mini_export.calibrate`
    /// (`docs/gpu-onnx.md`). Required with [`TensorRtPrecision::Int8`], refused otherwise.
    /// Default `None`.
    pub tensorrt_int8_calibration_file: Option<PathBuf>,
    /// Directory for TensorRT's engine cache and timing cache (and the int8 calibration table)
    /// and for the bundle files' verification stamps (`verified/`) and ONNX Runtime's optimised
    /// graphs (`onnx/`, [`EngineConfig::optimized_model_cache`]); created if missing, and an
    /// error if it cannot be written. `None` = no caches: TensorRT
    /// rebuilds its engines (minutes for S1-mini) at every start. Default `None`.
    pub cache_dir: Option<PathBuf>,
    /// Keep ONNX Runtime's optimised CPU graphs between loads (`cache_dir/onnx`, else the
    /// user's cache directory, e.g. `~/.cache/s1-mini/onnx`), so a second load of the same
    /// bundle skips parsing and optimising the bundle's graphs (weights are still packed at
    /// each load). An entry is keyed by the graph file's identity, the ONNX Runtime library,
    /// the options and the CPU's instruction set; a stale or damaged entry is rebuilt. Entries
    /// take about the size of the bundle's graph files on disk; delete the directory to clear
    /// them. `onnx-cpu` and the codec on the CPU only. Default `true`.
    pub optimized_model_cache: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            bundle_dir: PathBuf::from("."),
            backend: BackendKind::Auto,
            ort_library_path: None,
            verify_hashes: true,
            intra_op_threads: 0,
            inter_op_threads: 0,
            graph_optimization: GraphOptimization::Layout,
            device_id: 0,
            cudnn_conv_algo_search: CudnnConvAlgoSearch::Exhaustive,
            cuda_weights: CudaWeights::Bf16,
            tensorrt_precision: TensorRtPrecision::Fp16,
            tensorrt_workspace_bytes: 0,
            tensorrt_profile: PromptProfile::default(),
            tensorrt_int8_calibration_file: None,
            cache_dir: None,
            optimized_model_cache: true,
        }
    }
}

impl EngineConfig {
    /// Default configuration for the bundle in `bundle_dir`.
    pub fn new(bundle_dir: impl Into<PathBuf>) -> Self {
        Self { bundle_dir: bundle_dir.into(), ..Self::default() }
    }

    /// Sets [`EngineConfig::bundle_dir`].
    #[must_use]
    pub fn with_bundle_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bundle_dir = dir.into();
        self
    }

    /// Sets [`EngineConfig::backend`].
    #[must_use]
    pub fn with_backend(mut self, backend: BackendKind) -> Self {
        self.backend = backend;
        self
    }

    /// Sets [`EngineConfig::ort_library_path`].
    #[must_use]
    pub fn with_ort_library_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.ort_library_path = Some(path.into());
        self
    }

    /// Sets [`EngineConfig::verify_hashes`].
    #[must_use]
    pub fn with_verify_hashes(mut self, verify: bool) -> Self {
        self.verify_hashes = verify;
        self
    }

    /// Sets [`EngineConfig::intra_op_threads`].
    #[must_use]
    pub fn with_intra_op_threads(mut self, threads: usize) -> Self {
        self.intra_op_threads = threads;
        self
    }

    /// Sets [`EngineConfig::inter_op_threads`].
    #[must_use]
    pub fn with_inter_op_threads(mut self, threads: usize) -> Self {
        self.inter_op_threads = threads;
        self
    }

    /// Sets [`EngineConfig::graph_optimization`].
    #[must_use]
    pub fn with_graph_optimization(mut self, level: GraphOptimization) -> Self {
        self.graph_optimization = level;
        self
    }

    /// Sets [`EngineConfig::device_id`].
    #[must_use]
    pub fn with_device_id(mut self, device_id: u32) -> Self {
        self.device_id = device_id;
        self
    }

    /// Sets [`EngineConfig::cudnn_conv_algo_search`].
    #[must_use]
    pub fn with_cudnn_conv_algo_search(mut self, search: CudnnConvAlgoSearch) -> Self {
        self.cudnn_conv_algo_search = search;
        self
    }

    /// Sets [`EngineConfig::tensorrt_precision`].
    #[must_use]
    pub fn with_tensorrt_precision(mut self, precision: TensorRtPrecision) -> Self {
        self.tensorrt_precision = precision;
        self
    }

    /// Sets [`EngineConfig::cuda_weights`].
    #[must_use]
    pub fn with_cuda_weights(mut self, weights: CudaWeights) -> Self {
        self.cuda_weights = weights;
        self
    }

    /// Sets [`EngineConfig::tensorrt_workspace_bytes`].
    #[must_use]
    pub fn with_tensorrt_workspace_bytes(mut self, bytes: u64) -> Self {
        self.tensorrt_workspace_bytes = bytes;
        self
    }

    /// Sets [`EngineConfig::tensorrt_profile`].
    #[must_use]
    pub fn with_tensorrt_profile(mut self, profile: PromptProfile) -> Self {
        self.tensorrt_profile = profile;
        self
    }

    /// Sets [`EngineConfig::tensorrt_int8_calibration_file`].
    #[must_use]
    pub fn with_tensorrt_int8_calibration_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tensorrt_int8_calibration_file = Some(path.into());
        self
    }

    /// Sets [`EngineConfig::optimized_model_cache`].
    #[must_use]
    pub fn with_optimized_model_cache(mut self, on: bool) -> Self {
        self.optimized_model_cache = on;
        self
    }

    /// Sets [`EngineConfig::cache_dir`].
    #[must_use]
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Checks every option that needs no bundle and no file system; the errors name the
    /// option. [`crate::Engine::new`] calls it (through the backend selection) before anything
    /// is loaded. Profiles are checked against the model's context when the bundle is read, and
    /// `cache_dir` is created and probed for writing then.
    pub fn validate(&self) -> Result<()> {
        const MAX_THREADS: usize = 1024;
        if self.intra_op_threads > MAX_THREADS {
            return Err(Error::arg(
                "intra_op_threads",
                format!("{} is above {MAX_THREADS} (0 = one per core)", self.intra_op_threads),
            ));
        }
        if self.inter_op_threads > MAX_THREADS {
            return Err(Error::arg(
                "inter_op_threads",
                format!(
                    "{} is above {MAX_THREADS} (0 = ONNX Runtime's default)",
                    self.inter_op_threads
                ),
            ));
        }
        if i32::try_from(self.device_id).is_err() {
            return Err(Error::arg(
                "device_id",
                format!("{} is not a CUDA device ordinal (0 ..= 2147483647)", self.device_id),
            ));
        }
        if self.tensorrt_workspace_bytes != 0 && self.tensorrt_workspace_bytes < (1 << 20) {
            return Err(Error::arg(
                "tensorrt_workspace_bytes",
                format!(
                    "{} bytes is below 1 MiB; the unit is bytes (0 = TensorRT's default)",
                    self.tensorrt_workspace_bytes
                ),
            ));
        }
        if usize::try_from(self.tensorrt_workspace_bytes).is_err() {
            return Err(Error::arg(
                "tensorrt_workspace_bytes",
                "does not fit this platform's size_t",
            ));
        }
        if self.tensorrt_profile.opt_tokens == 0 {
            return Err(Error::arg("tensorrt_profile", "opt_tokens must be at least 1"));
        }
        if let Some(dir) = &self.cache_dir {
            option_path("cache_dir", dir)?;
        }
        match (self.tensorrt_precision, &self.tensorrt_int8_calibration_file) {
            (TensorRtPrecision::Int8, None) => {
                return Err(Error::arg(
                    "tensorrt_int8_calibration_file",
                    "tensorrt_precision int8 needs a file of sample sentences (one per line) that \
                     names its calibration table",
                ))
            }
            (TensorRtPrecision::Int8, Some(_)) if self.cache_dir.is_none() => {
                return Err(Error::arg(
                    "cache_dir",
                    "tensorrt_precision int8 needs cache_dir: the calibration table is read from it",
                ))
            }
            (TensorRtPrecision::Fp16, Some(_)) => {
                return Err(Error::arg(
                    "tensorrt_int8_calibration_file",
                    "is set but tensorrt_precision is fp16 (set tensorrt_precision to int8, or \
                     leave the file unset)",
                ))
            }
            _ => {}
        }
        Ok(())
    }
}

/// Per-call synthesis parameters. Defaults are fish-speech's CLI/API defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthParams {
    /// Softmax temperature, in [0, 2]. 0 = greedy (argmax of the penalised logits). Default 0.8.
    pub temperature: f32,
    /// Nucleus mass kept, computed on the un-tempered softmax, in (0, 1]. Default 0.8.
    pub top_p: f32,
    /// Repetition penalty over a 16-frame window, in (0, 2). 1 = none. Default 1.1.
    pub repetition_penalty: f32,
    /// Maximum number of sampled frames (21.53 per second of audio), 1 ..= the model context
    /// minus the prompt. Generation stops earlier at `<|im_end|>`. Default 1024 (≈ 47.6 s).
    pub max_frames: u32,
    /// Seed of the counter-based Philox RNG; equal seeds give equal audio on every backend.
    /// Default 0.
    pub seed: u64,
    /// Reproduce fish-speech exactly, including its main-token repetition-penalty bug and the
    /// bf16 rounding of temperature/top_p/penalty. Default `false` (bug fixed).
    pub fish_speech_compat: bool,
    /// Frames in the first streamed chunk (small, for latency), ≥ 1. Default 4 (≈ 186 ms).
    pub first_chunk_frames: u32,
    /// Frames in each later streamed chunk, ≥ 1. Default 16 (≈ 743 ms).
    pub chunk_frames: u32,
    /// With voices: reuse the cached keys/values of the voices' prompt prefix
    /// (`<|interleave|>` + reference parts), computed once per engine and voice list, and
    /// prefill only the rest. Same frames as without (logits differ by float rounding, < 1e-4).
    /// Default `true`.
    pub prefix_cache: bool,
    /// Whether special-token names typed in the text and in voice transcripts (`<|im_end|>`,
    /// `<|semantic:N|>`, `<|interleave|>`, …) become those control tokens, as fish-speech parses
    /// them. Default `false`: they are plain text, so user text cannot end the utterance early
    /// or forge semantic tokens. Only for trusted text that means to use them.
    pub parse_special_tokens: bool,
}

impl Default for SynthParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.8,
            repetition_penalty: 1.1,
            max_frames: 1024,
            seed: 0,
            fish_speech_compat: false,
            first_chunk_frames: 4,
            chunk_frames: 16,
            prefix_cache: true,
            parse_special_tokens: false,
        }
    }
}

impl SynthParams {
    /// Sets [`SynthParams::parse_special_tokens`].
    #[must_use]
    pub fn with_parse_special_tokens(mut self, v: bool) -> Self {
        self.parse_special_tokens = v;
        self
    }

    /// Sets [`SynthParams::prefix_cache`].
    #[must_use]
    pub fn with_prefix_cache(mut self, v: bool) -> Self {
        self.prefix_cache = v;
        self
    }

    /// Sets [`SynthParams::temperature`].
    #[must_use]
    pub fn with_temperature(mut self, v: f32) -> Self {
        self.temperature = v;
        self
    }

    /// Sets [`SynthParams::top_p`].
    #[must_use]
    pub fn with_top_p(mut self, v: f32) -> Self {
        self.top_p = v;
        self
    }

    /// Sets [`SynthParams::repetition_penalty`].
    #[must_use]
    pub fn with_repetition_penalty(mut self, v: f32) -> Self {
        self.repetition_penalty = v;
        self
    }

    /// Sets [`SynthParams::max_frames`].
    #[must_use]
    pub fn with_max_frames(mut self, v: u32) -> Self {
        self.max_frames = v;
        self
    }

    /// Sets [`SynthParams::seed`].
    #[must_use]
    pub fn with_seed(mut self, v: u64) -> Self {
        self.seed = v;
        self
    }

    /// Sets [`SynthParams::fish_speech_compat`].
    #[must_use]
    pub fn with_fish_speech_compat(mut self, v: bool) -> Self {
        self.fish_speech_compat = v;
        self
    }

    /// Sets [`SynthParams::first_chunk_frames`] and [`SynthParams::chunk_frames`].
    #[must_use]
    pub fn with_chunk_frames(mut self, first: u32, rest: u32) -> Self {
        self.first_chunk_frames = first;
        self.chunk_frames = rest;
        self
    }

    /// Checks every range; `context_frames` is the largest `max_frames` the model allows.
    pub fn validate(&self, context_frames: u32) -> Result<()> {
        if !(0.0..=2.0).contains(&self.temperature) {
            return Err(Error::arg(
                "temperature",
                format!("{} is outside [0, 2] (0 = greedy)", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::arg("top_p", format!("{} is outside (0, 1]", self.top_p)));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty < 2.0) {
            return Err(Error::arg(
                "repetition_penalty",
                format!("{} is outside (0, 2) (1 = no penalty)", self.repetition_penalty),
            ));
        }
        if self.max_frames == 0 || self.max_frames > context_frames {
            return Err(Error::arg(
                "max_frames",
                format!(
                    "{} is outside 1..={context_frames} (the model's context)",
                    self.max_frames
                ),
            ));
        }
        if self.first_chunk_frames == 0 {
            return Err(Error::arg("first_chunk_frames", "must be at least 1"));
        }
        if self.chunk_frames == 0 {
            return Err(Error::arg("chunk_frames", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synth_params_defaults_are_fish_speech_cli() {
        let p = SynthParams::default();
        assert_eq!(
            (p.temperature, p.top_p, p.repetition_penalty, p.max_frames),
            (0.8, 0.8, 1.1, 1024)
        );
        assert!(p.validate(8192).is_ok());
    }

    #[test]
    fn synth_params_out_of_range_names_parameter() {
        let cases = [
            (SynthParams::default().with_temperature(-0.1), "temperature"),
            (SynthParams::default().with_temperature(f32::NAN), "temperature"),
            (SynthParams::default().with_top_p(0.0), "top_p"),
            (SynthParams::default().with_top_p(1.5), "top_p"),
            (SynthParams::default().with_repetition_penalty(2.0), "repetition_penalty"),
            (SynthParams::default().with_max_frames(0), "max_frames"),
            (SynthParams::default().with_max_frames(9000), "max_frames"),
            (SynthParams::default().with_chunk_frames(0, 4), "first_chunk_frames"),
        ];
        for (p, want) in cases {
            match p.validate(8192) {
                Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, want),
                other => panic!("{want}: {other:?}"),
            }
        }
        assert!(SynthParams::default().with_temperature(0.0).validate(8192).is_ok());
    }

    #[test]
    fn backend_kind_parses_names() {
        for k in [BackendKind::Auto, BackendKind::Cuda, BackendKind::OnnxCpu, BackendKind::TensorRt]
        {
            assert_eq!(k.name().parse::<BackendKind>().unwrap(), k);
        }
        assert!("gpu".parse::<BackendKind>().is_err());
    }
}
