//! `s1_engine`: a loaded model bundle on one backend.
use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::Arc;

use super::convert::{self, flag};
use super::guard;
use crate::config::{
    CudaWeights, CudnnConvAlgoSearch, GraphOptimization, PromptProfile, TensorRtPrecision,
};
use crate::{Engine, EngineConfig, Error, Status};

/// A loaded model bundle on one backend. Opaque.
///
/// Thread safety: an engine may be shared by any number of threads; calls on it are safe to make
/// concurrently. Created by `s1_engine_new`, released by `s1_engine_free`.
pub struct s1_engine {
    _private: [u8; 0],
}

/// Options for `s1_engine_new`. Fill it with `s1_engine_config_default()`, then change fields.
///
/// Strings are NUL-terminated UTF-8, borrowed only for the duration of `s1_engine_new`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct s1_engine_config {
    /// Size of this struct in bytes, set by `s1_engine_config_default()`; lets newer libraries
    /// accept structs from older headers.
    pub struct_size: u32,
    /// Number of CPU threads for one operator; 0 = the backend's default.
    pub intra_op_threads: u32,
    /// Path of the model bundle directory (holding manifest.json). Required.
    pub bundle_dir: *const c_char,
    /// Backend name: "auto" (default, fastest available), "onnx-cpu", "onnx-cuda", "tensorrt",
    /// "cuda". NULL = "auto". `s1_backends_available()` lists those usable here.
    pub backend: *const c_char,
    /// Path of libonnxruntime (.so/.dylib/.dll); NULL = the ORT_DYLIB_PATH environment variable,
    /// then the directory of this library.
    pub ort_library_path: *const c_char,
    /// 1 = check every bundle file's sha256 against the manifest at load (slower start), 0 = no.
    pub verify_hashes: u8,
    // ---- Added after the first layout: callers built with an older header leave these at
    // ---- their defaults (struct_size tells the library where their struct ends).
    /// TensorRT builder workspace limit in bytes; 0 = TensorRT's default (the device's memory).
    /// Non-zero values below 1 MiB are refused (the unit is bytes).
    pub tensorrt_workspace_bytes: u64,
    /// ONNX Runtime threads running independent operators in parallel; 0 = its default.
    pub inter_op_threads: u32,
    /// CUDA device ordinal for the "cuda", "tensorrt" and "onnx-cuda" backends (0 = first GPU).
    pub device_id: u32,
    /// ONNX Runtime graph optimisation level: an `s1_graph_optimization` value
    /// (default `S1_GRAPH_OPTIMIZATION_LAYOUT`).
    pub graph_optimization: i32,
    /// TensorRT engine precision: an `s1_tensorrt_precision` value (default
    /// `S1_TENSORRT_PRECISION_FP16`). INT8 needs `cache_dir` and
    /// `tensorrt_int8_calibration_file` (docs/gpu-onnx.md).
    pub tensorrt_precision: i32,
    /// cuDNN convolution algorithm search of "onnx-cuda": an `s1_cudnn_conv_algo_search` value
    /// (default `S1_CUDNN_CONV_ALGO_SEARCH_EXHAUSTIVE`).
    pub cudnn_conv_algo_search: i32,
    /// TensorRT profile: cache length (prompt + frames so far, in tokens) the kernels are tuned
    /// for; default 256.
    pub tensorrt_profile_opt_tokens: u32,
    /// TensorRT profile: longest prompt in tokens; 0 = the model's context (default).
    pub tensorrt_profile_max_tokens: u32,
    /// Directory for TensorRT's engine and timing caches (created if missing; an error if not
    /// writable). NULL = no caches: engines are rebuilt at every start (minutes).
    pub cache_dir: *const c_char,
    /// INT8 only: file of sample sentences (UTF-8, one per line) naming the calibration table
    /// in `cache_dir`. NULL = none (required with INT8, refused with FP16).
    pub tensorrt_int8_calibration_file: *const c_char,
    /// Weight type of the native "cuda" backend's transformer layers: an `s1_cuda_weights`
    /// value (default `S1_CUDA_WEIGHTS_BF16`).
    pub cuda_weights: i32,
    /// 1 = keep ONNX Runtime's optimised CPU graphs between loads (in `cache_dir/onnx`, else
    /// the user's cache directory, e.g. `~/.cache/s1-mini/onnx`), so a second load of the same
    /// bundle skips parsing and optimising its graphs (default); 0 = at every load. Entries
    /// take about the size of the bundle's graph files on disk; a stale or damaged entry is
    /// rebuilt.
    pub optimized_model_cache: u8,
}

/// Graph optimisation level of the ONNX Runtime sessions (`s1_engine_config.graph_optimization`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum s1_graph_optimization {
    /// No graph rewrites.
    Disable = 0,
    /// Constant folding, redundant node removal.
    Basic = 1,
    /// Plus operator fusions.
    Extended = 2,
    /// Plus layout optimisations (the default).
    Layout = 3,
    /// Every optimisation ONNX Runtime has.
    All = 4,
}

/// Precision of TensorRT engines (`s1_engine_config.tensorrt_precision`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum s1_tensorrt_precision {
    /// FP16 (the default).
    Fp16 = 0,
    /// INT8 with FP16 fallback; needs a calibration table (docs/gpu-onnx.md).
    Int8 = 1,
}

/// Weight type of the native CUDA backend (`s1_engine_config.cuda_weights`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum s1_cuda_weights {
    /// The bundle's bf16 weights (the default).
    Bf16 = 0,
    /// Layer matrices quantised to int8 at load, one scale per output row.
    Int8 = 1,
}

/// cuDNN convolution algorithm search (`s1_engine_config.cudnn_conv_algo_search`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum s1_cudnn_conv_algo_search {
    /// Benchmark every algorithm on first use (the default).
    Exhaustive = 0,
    /// cuDNN's heuristics.
    Heuristic = 1,
    /// The implicit-precomputed-GEMM algorithm, no search.
    Default = 2,
}

/// Size of the first published `s1_engine_config` (up to `verify_hashes`, padded); smaller
/// `struct_size` values are rejected. The fields added later start at this offset on every
/// platform: the first of them is 8-byte aligned, past the old struct's tail padding.
const CONFIG_V1_SIZE: usize = std::mem::offset_of!(s1_engine_config, tensorrt_workspace_bytes);

fn graph_optimization_c(v: GraphOptimization) -> i32 {
    (match v {
        GraphOptimization::Disable => s1_graph_optimization::Disable,
        GraphOptimization::Basic => s1_graph_optimization::Basic,
        GraphOptimization::Extended => s1_graph_optimization::Extended,
        GraphOptimization::Layout => s1_graph_optimization::Layout,
        GraphOptimization::All => s1_graph_optimization::All,
    }) as i32
}

fn graph_optimization_rust(v: i32) -> Result<GraphOptimization, Error> {
    Ok(match v {
        0 => GraphOptimization::Disable,
        1 => GraphOptimization::Basic,
        2 => GraphOptimization::Extended,
        3 => GraphOptimization::Layout,
        4 => GraphOptimization::All,
        other => {
            return Err(Error::arg(
                "config.graph_optimization",
                format!("{other} is not an s1_graph_optimization value (0..=4)"),
            ))
        }
    })
}

fn precision_c(v: TensorRtPrecision) -> i32 {
    (match v {
        TensorRtPrecision::Fp16 => s1_tensorrt_precision::Fp16,
        TensorRtPrecision::Int8 => s1_tensorrt_precision::Int8,
    }) as i32
}

fn precision_rust(v: i32) -> Result<TensorRtPrecision, Error> {
    match v {
        0 => Ok(TensorRtPrecision::Fp16),
        1 => Ok(TensorRtPrecision::Int8),
        other => Err(Error::arg(
            "config.tensorrt_precision",
            format!("{other} is not an s1_tensorrt_precision value (0 = FP16, 1 = INT8)"),
        )),
    }
}

fn conv_search_c(v: CudnnConvAlgoSearch) -> i32 {
    (match v {
        CudnnConvAlgoSearch::Exhaustive => s1_cudnn_conv_algo_search::Exhaustive,
        CudnnConvAlgoSearch::Heuristic => s1_cudnn_conv_algo_search::Heuristic,
        CudnnConvAlgoSearch::Default => s1_cudnn_conv_algo_search::Default,
    }) as i32
}

fn conv_search_rust(v: i32) -> Result<CudnnConvAlgoSearch, Error> {
    match v {
        0 => Ok(CudnnConvAlgoSearch::Exhaustive),
        1 => Ok(CudnnConvAlgoSearch::Heuristic),
        2 => Ok(CudnnConvAlgoSearch::Default),
        other => Err(Error::arg(
            "config.cudnn_conv_algo_search",
            format!("{other} is not an s1_cudnn_conv_algo_search value (0..=2)"),
        )),
    }
}

fn cuda_weights_c(v: CudaWeights) -> i32 {
    (match v {
        CudaWeights::Bf16 => s1_cuda_weights::Bf16,
        CudaWeights::Int8 => s1_cuda_weights::Int8,
    }) as i32
}

fn cuda_weights_rust(v: i32) -> Result<CudaWeights, Error> {
    match v {
        0 => Ok(CudaWeights::Bf16),
        1 => Ok(CudaWeights::Int8),
        other => Err(Error::arg(
            "config.cuda_weights",
            format!("{other} is not an s1_cuda_weights value (0 = BF16, 1 = INT8)"),
        )),
    }
}

impl s1_engine_config {
    fn from_rust(c: &EngineConfig) -> Self {
        s1_engine_config {
            struct_size: std::mem::size_of::<Self>() as u32,
            intra_op_threads: c.intra_op_threads as u32,
            bundle_dir: std::ptr::null(),
            backend: std::ptr::null(),
            ort_library_path: std::ptr::null(),
            verify_hashes: c.verify_hashes as u8,
            tensorrt_workspace_bytes: c.tensorrt_workspace_bytes,
            inter_op_threads: u32::try_from(c.inter_op_threads).unwrap_or(u32::MAX),
            device_id: c.device_id,
            graph_optimization: graph_optimization_c(c.graph_optimization),
            tensorrt_precision: precision_c(c.tensorrt_precision),
            cudnn_conv_algo_search: conv_search_c(c.cudnn_conv_algo_search),
            tensorrt_profile_opt_tokens: c.tensorrt_profile.opt_tokens,
            tensorrt_profile_max_tokens: c.tensorrt_profile.max_tokens,
            cache_dir: std::ptr::null(),
            tensorrt_int8_calibration_file: std::ptr::null(),
            cuda_weights: cuda_weights_c(c.cuda_weights),
            optimized_model_cache: c.optimized_model_cache as u8,
        }
    }
}

/// Fills `*out_config` with the defaults (the Rust API's `EngineConfig::default()`), including
/// `struct_size`. Returns `S1_STATUS_NULL_POINTER` when `out_config` is NULL.
///
/// # Safety
/// `out_config` must be NULL or point to a writable `s1_engine_config`.
#[no_mangle]
pub unsafe extern "C" fn s1_engine_config_default(out_config: *mut s1_engine_config) -> Status {
    guard(|| {
        let c = s1_engine_config::from_rust(&EngineConfig::default());
        // SAFETY: the caller passes NULL or a writable s1_engine_config.
        unsafe { convert::write_out(out_config, c, "out_config") }
    })
}

/// Loads the bundle named by `config` and creates an engine; `*out_engine` receives it.
///
/// Blocks while the model loads (seconds for real bundles). On failure `*out_engine` is left
/// unchanged and `s1_last_error()` says why (e.g. which file is missing, or why a backend is
/// unusable). Release the engine with `s1_engine_free`.
///
/// # Safety
/// `config` must be NULL or point to an `s1_engine_config` filled by
/// `s1_engine_config_default()`; `out_engine` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn s1_engine_new(
    config: *const s1_engine_config,
    out_engine: *mut *mut s1_engine,
) -> Status {
    guard(|| {
        let defaults = EngineConfig::default();
        // SAFETY: forwarded contract of this function.
        let c = unsafe {
            convert::options_arg(
                config,
                s1_engine_config::from_rust(&defaults),
                CONFIG_V1_SIZE,
                convert::field_spans!(s1_engine_config;
                    struct_size, intra_op_threads, bundle_dir, backend, ort_library_path,
                    verify_hashes, tensorrt_workspace_bytes, inter_op_threads, device_id,
                    graph_optimization, tensorrt_precision, cudnn_conv_algo_search,
                    tensorrt_profile_opt_tokens, tensorrt_profile_max_tokens, cache_dir,
                    tensorrt_int8_calibration_file, cuda_weights, optimized_model_cache),
                "config",
            )
        }?;
        // SAFETY: the strings are NULL or NUL-terminated and live for this call (contract).
        let bundle_dir = unsafe { convert::utf8_arg(c.bundle_dir, "config.bundle_dir") }?;
        let backend = unsafe { convert::opt_utf8_arg(c.backend, "config.backend") }?;
        let ort = unsafe { convert::opt_utf8_arg(c.ort_library_path, "config.ort_library_path") }?;
        let cache_dir = unsafe { convert::opt_utf8_arg(c.cache_dir, "config.cache_dir") }?;
        let calibration = unsafe {
            convert::opt_utf8_arg(
                c.tensorrt_int8_calibration_file,
                "config.tensorrt_int8_calibration_file",
            )
        }?;
        if out_engine.is_null() {
            return Err(crate::Error::NullPointer { arg: "out_engine" });
        }
        let mut rc = defaults;
        rc.bundle_dir = PathBuf::from(bundle_dir);
        if let Some(b) = backend {
            rc.backend = b.parse()?;
        }
        rc.ort_library_path = ort.map(PathBuf::from);
        rc.verify_hashes = flag(c.verify_hashes);
        rc.optimized_model_cache = flag(c.optimized_model_cache);
        rc.intra_op_threads = c.intra_op_threads as usize;
        rc.inter_op_threads = c.inter_op_threads as usize;
        rc.device_id = c.device_id;
        rc.graph_optimization = graph_optimization_rust(c.graph_optimization)?;
        rc.tensorrt_precision = precision_rust(c.tensorrt_precision)?;
        rc.cudnn_conv_algo_search = conv_search_rust(c.cudnn_conv_algo_search)?;
        rc.cuda_weights = cuda_weights_rust(c.cuda_weights)?;
        rc.tensorrt_workspace_bytes = c.tensorrt_workspace_bytes;
        rc.tensorrt_profile = PromptProfile {
            opt_tokens: c.tensorrt_profile_opt_tokens,
            max_tokens: c.tensorrt_profile_max_tokens,
        };
        rc.cache_dir = cache_dir.map(PathBuf::from);
        rc.tensorrt_int8_calibration_file = calibration.map(PathBuf::from);
        let engine = Engine::new(rc)?;
        let handle = convert::into_handle::<Engine, s1_engine>(Arc::new(engine))?;
        // SAFETY: checked non-null above; writable per contract.
        unsafe { convert::write_out(out_engine, handle, "out_engine") }
    })
}

/// Releases an engine. NULL is a no-op; a handle that is not a live engine (already freed, or of
/// another type) returns `S1_STATUS_INVALID_HANDLE` and touches nothing.
///
/// Streams started from the engine stay usable: each holds its own reference, and the model is
/// unloaded when the last of them is freed. A call already running on another thread with this
/// engine finishes normally; calls made after the free get `S1_STATUS_INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn s1_engine_free(engine: *mut s1_engine) -> Status {
    guard(|| convert::free_handle::<Engine, s1_engine>(engine, "engine"))
}
