//! Execution providers of the GPU flavours (`onnx-cuda`, `tensorrt`): option translation from
//! [`EngineConfig`], TensorRT profiles and caches, registration with `error_on_failure`, and the
//! translation of ONNX Runtime's failures into reasons with fixes.
//!
//! Everything here except [`register`] and [`probe`] is host-side string work and unit-tested on
//! CPU; the registration itself can only succeed on a machine with the onnxruntime-gpu libraries.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::{self, ArbitrarilyConfigurableExecutionProvider, ExecutionProvider};
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::bundle::{BundleInfo, ModelDims};
use crate::config::{
    option_path, prepare_cache_dir, read_calibration_sentences, BackendKind, CudnnConvAlgoSearch,
    EngineConfig, PromptProfile, TensorRtPrecision,
};
use crate::error::{Error, Result};

/// Which execution providers a session gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// CPU execution provider only.
    Cpu,
    /// CUDA execution provider (CPU for what CUDA lacks).
    Cuda,
    /// TensorRT, then CUDA for what TensorRT does not take, then CPU.
    TensorRt,
}

impl Flavor {
    pub(crate) fn kind(self) -> BackendKind {
        match self {
            Flavor::Cpu => BackendKind::OnnxCpu,
            Flavor::Cuda => BackendKind::OnnxCuda,
            Flavor::TensorRt => BackendKind::TensorRt,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        self.kind().name()
    }

    pub(crate) fn is_gpu(self) -> bool {
        self != Flavor::Cpu
    }
}

/// Provider options as ONNX Runtime's string keys and values, in registration order.
pub(crate) type EpOptions = Vec<(&'static str, String)>;

/// Where to get the GPU build of ONNX Runtime; quoted in "not compiled in" reasons.
pub(crate) const GPU_WHEEL_HINT: &str =
    "install the onnxruntime-gpu wheel (CUDA 13; `pip download onnxruntime-gpu==1.31.1 --no-deps`, \
     the library is onnxruntime/capi/libonnxruntime.so.1.31.1 beside \
     libonnxruntime_providers_cuda.so / _tensorrt.so / _shared.so) and point ORT_DYLIB_PATH or \
     ort_library_path at it";

/// CUDA execution provider options (`OrtCUDAProviderOptionsV2` keys).
pub(crate) fn cuda_options(c: &EngineConfig) -> EpOptions {
    let search = match c.cudnn_conv_algo_search {
        CudnnConvAlgoSearch::Exhaustive => "EXHAUSTIVE",
        CudnnConvAlgoSearch::Heuristic => "HEURISTIC",
        CudnnConvAlgoSearch::Default => "DEFAULT",
    };
    vec![
        ("device_id", c.device_id.to_string()),
        ("cudnn_conv_algo_search", search.to_string()),
        // Inputs and outputs are copied on the compute stream, so a bound output read right
        // after `run_binding` is complete.
        ("do_copy_in_default_stream", "1".to_string()),
    ]
}

/// TensorRT profile shapes of one graph, in ONNX Runtime's `name:d0xd1x...` list format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProfileShapes {
    pub min: String,
    pub opt: String,
    pub max: String,
}

fn shape_list(entries: &[(&str, &[usize])]) -> String {
    entries
        .iter()
        .map(|(name, dims)| {
            let d: Vec<String> = dims.iter().map(|x| x.to_string()).collect();
            format!("{name}:{}", d.join("x"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One profile for `slow.onnx`, shared by prefill and decode (see [`PromptProfile`]):
/// `tokens` [1, 1+K, T] with T ∈ [1, max] (opt 1: decode), `past_keys`/`past_values`
/// [L, 1, H, P, D] with P ∈ [0, context − 1] (opt `opt_tokens`).
pub(crate) fn slow_profile(d: &ModelDims, p: &PromptProfile) -> Result<ProfileShapes> {
    let (opt, max) = p.resolve(d.max_seq_len)?;
    let rows = 1 + d.num_codebooks;
    let kv = |len: usize| [d.n_layer, 1, d.n_local_heads, len, d.head_dim];
    let make = |t: usize, past: usize| {
        let kv = kv(past);
        shape_list(&[("tokens", &[1, rows, t]), ("past_keys", &kv), ("past_values", &kv)])
    };
    Ok(ProfileShapes { min: make(1, 0), opt: make(1, opt), max: make(max, d.max_seq_len - 1) })
}

/// The profile of `fast.onnx`: `past_*` [Lf, 1, Hf, P, Df] with P ∈ [0, K − 1] (one frame).
pub(crate) fn fast_profile(d: &ModelDims) -> ProfileShapes {
    let kv = |len: usize| [d.n_fast_layer, 1, d.fast_n_local_heads, len, d.fast_head_dim];
    let make = |past: usize| {
        let kv = kv(past);
        shape_list(&[
            ("hidden", &[1, d.fast_dim]),
            ("code", &[1]),
            ("past_keys", &kv),
            ("past_values", &kv),
        ])
    };
    let last = d.num_codebooks.saturating_sub(1);
    ProfileShapes { min: make(0), opt: make(last / 2), max: make(last) }
}

/// The profile of `codec_decode.onnx`: `codes` [1, K, T], T ∈ [1, max_decode_frames], opt = a
/// streamed chunk plus the receptive field (what the frame loop decodes most).
pub(crate) fn codec_profile(info: &BundleInfo) -> ProfileShapes {
    let k = info.model.num_codebooks;
    let max = info.codec.max_decode_frames.max(1);
    let opt = (16 + info.codec.receptive_field_frames).clamp(1, max);
    let make = |t: usize| shape_list(&[("codes", &[1, k, t])]);
    ProfileShapes { min: make(1), opt: make(opt), max: make(max) }
}

/// TensorRT's caches for one engine: where, under which prefix, and the int8 table's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrtCache {
    /// Absolute, writable directory (engine + timing caches, calibration table).
    pub dir: PathBuf,
    /// Engine file prefix: graph role, precision and the bundle's identity, so that another
    /// bundle at the same path never reuses a stale engine.
    pub prefix: String,
}

/// Identity of a bundle for cache names: sha256 of its manifest (which lists every file's
/// sha256), first 16 hex digits.
pub(crate) fn bundle_id(info: &BundleInfo) -> Result<String> {
    let path = info.dir.join("manifest.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok(hex16(&bytes))
}

fn hex16(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Name of the int8 calibration table of graph `role` (`slow` or `fast`) of the bundle with id
/// `bundle` ([`bundle_id`]) for a file of sample sentences, looked up in the cache dir:
/// `int8-calibration-<role>-<bundle id>-<sentences>.flatbuffers`, `<sentences>` = first 16 hex
/// of sha256 of the sentences joined by `"\n"`. The table's keys are tensor names, and the two
/// graphs share some (`/Add_output_0`), as do an fp32 and an fp16 export with different meanings
/// (`Cast_3`): hence one table per graph and bundle. `tools/export/s1mini_export/calibrate.py`
/// writes both under these names.
pub(crate) fn calibration_table_name(role: &str, bundle: &str, sentences: &[String]) -> String {
    let sentences = hex16(sentences.join("\n").as_bytes());
    format!("int8-calibration-{role}-{bundle}-{sentences}.flatbuffers")
}

/// `path` as one shell word: as is when it holds only safe characters, else single-quoted.
fn shell_word(path: &Path) -> String {
    let s = path.display().to_string();
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+,:=@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command, run from the s1-mini checkout, that writes the int8 tables of `bundle` for the
/// sentences in `sentences` into `cache_dir` (absolute paths where they resolve).
fn calibrate_command(bundle: &Path, sentences: &Path, cache_dir: &Path) -> String {
    let abs = |p: &Path| shell_word(&p.canonicalize().unwrap_or_else(|_| p.to_path_buf()));
    format!(
        "PYTHONPATH=tools/export .venv/bin/python -m s1mini_export.calibrate --bundle {} \
         --sentences {} --cache-dir {}",
        abs(bundle),
        abs(sentences),
        abs(cache_dir)
    )
}

/// The int8 calibration table of graph `role` for `config` and the bundle `info`, checked to
/// exist in `cache_dir`; returns its file name. A missing table is an error that gives the
/// command producing it (see `docs/gpu-onnx.md`).
pub(crate) fn calibration_table(
    config: &EngineConfig,
    info: &BundleInfo,
    cache_dir: &Path,
    role: &str,
) -> Result<String> {
    let file = config.tensorrt_int8_calibration_file.as_deref().ok_or_else(|| {
        Error::arg("tensorrt_int8_calibration_file", "int8 needs a file of sample sentences")
    })?;
    let sentences = read_calibration_sentences(file)?;
    let name = calibration_table_name(role, &bundle_id(info)?, &sentences);
    let path = cache_dir.join(&name);
    if !path.is_file() {
        return Err(Error::BackendUnavailable {
            backend: "tensorrt",
            reason: format!(
                "int8 calibration table {} (graph {role} of this bundle, {} sentences of {}) \
                 does not exist; write it and the other graph's with this command, run from the \
                 s1-mini checkout: {}; or use tensorrt_precision fp16 (docs/gpu-onnx.md)",
                path.display(),
                sentences.len(),
                file.display(),
                calibrate_command(&info.dir, file, cache_dir)
            ),
        });
    }
    Ok(name)
}

/// TensorRT execution provider options for one graph (`OrtTensorRTProviderOptionsV2` keys).
/// `int8_table` is the calibration table's file name inside `cache.dir`.
pub(crate) fn tensorrt_options(
    c: &EngineConfig,
    cache: Option<&TrtCache>,
    int8_table: Option<&str>,
    profile: Option<&ProfileShapes>,
) -> Result<EpOptions> {
    let mut o: EpOptions = vec![("device_id", c.device_id.to_string())];
    // fp16 in both modes: int8 falls back to fp16 (not fp32) for layers without int8 kernels.
    o.push(("trt_fp16_enable", "1".into()));
    // RMSNorm/LayerNorm in fp32: fp16 reductions over 1024 channels lose too much.
    o.push(("trt_layer_norm_fp32_fallback", "1".into()));
    if c.tensorrt_precision == TensorRtPrecision::Int8 {
        let table = int8_table.ok_or_else(|| {
            Error::Internal("tensorrt int8 options without a calibration table".into())
        })?;
        o.push(("trt_int8_enable", "1".into()));
        o.push(("trt_int8_calibration_table_name", table.to_string()));
        o.push(("trt_int8_use_native_calibration_table", "0".into()));
    }
    if c.tensorrt_workspace_bytes > 0 {
        o.push(("trt_max_workspace_size", c.tensorrt_workspace_bytes.to_string()));
    }
    if let Some(cache) = cache {
        let dir = option_path("cache_dir", &cache.dir)?.to_string();
        o.push(("trt_engine_cache_enable", "1".into()));
        o.push(("trt_engine_cache_path", dir.clone()));
        o.push(("trt_engine_cache_prefix", cache.prefix.clone()));
        o.push(("trt_timing_cache_enable", "1".into()));
        o.push(("trt_timing_cache_path", dir));
    }
    if let Some(p) = profile {
        o.push(("trt_profile_min_shapes", p.min.clone()));
        o.push(("trt_profile_opt_shapes", p.opt.clone()));
        o.push(("trt_profile_max_shapes", p.max.clone()));
    }
    Ok(o)
}

/// Cache settings for `role` (`slow`, `fast`, `codec_decode`, ...), or `None` without a
/// cache dir. Creates the directory.
pub(crate) fn trt_cache(
    config: &EngineConfig,
    info: &BundleInfo,
    role: &str,
) -> Result<Option<TrtCache>> {
    let Some(dir) = &config.cache_dir else { return Ok(None) };
    let dir = prepare_cache_dir(dir)?;
    let prefix = format!("s1-{role}-{}-{}", config.tensorrt_precision.name(), bundle_id(info)?);
    Ok(Some(TrtCache { dir, prefix }))
}

/// Engine files in `cache.dir` that ONNX Runtime wrote for `cache.prefix`.
pub(crate) fn cached_engines(cache: &TrtCache) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(&cache.dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with(&cache.prefix) && n.ends_with(".engine"))
        .collect();
    found.sort();
    found
}

/// Whether this ONNX Runtime library was compiled with the flavour's provider.
pub(crate) fn compiled_in(flavor: Flavor) -> Result<bool> {
    let r = match flavor {
        Flavor::Cpu => return Ok(true),
        Flavor::Cuda => ep::CUDA::is_available(),
        Flavor::TensorRt => ep::TensorRT::is_available(),
    };
    r.map_err(|e| Error::Backend {
        backend: flavor.name(),
        op: "GetAvailableProviders".into(),
        message: e.to_string(),
    })
}

fn provider_name(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Cpu => "CPU",
        Flavor::Cuda => "CUDA",
        Flavor::TensorRt => "TensorRT",
    }
}

/// The "not compiled in" reason, with its fix.
pub(crate) fn not_compiled_in(flavor: Flavor, library: &Path) -> Error {
    Error::BackendUnavailable {
        backend: flavor.name(),
        reason: format!(
            "this libonnxruntime ({}) has no {} execution provider (a CPU-only build, e.g. the \
             `onnxruntime` wheel): {GPU_WHEEL_HINT}",
            library.display(),
            provider_name(flavor)
        ),
    }
}

fn lib_regex() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    // A literal pattern, so it compiles; `None` would only disable library extraction.
    RE.get_or_init(|| {
        Regex::new(r"((?:lib)?[A-Za-z0-9_+\-]+(?:\.so(?:\.[0-9]+)*|\.dll|\.dylib))").ok()
    })
    .as_ref()
}

/// The library a dynamic-loader message says is missing: the one right before
/// "cannot open shared object file" (Linux) or the last one named (elsewhere).
pub(crate) fn missing_library(message: &str) -> Option<String> {
    let re = lib_regex()?;
    if let Some(pos) = message.find(": cannot open shared object file") {
        if let Some(m) = re.find_iter(&message[..pos]).last() {
            return Some(m.as_str().to_string());
        }
    }
    if message.contains("LoadLibrary") || message.contains("Failed to load library") {
        return re.find_iter(message).last().map(|m| m.as_str().to_string());
    }
    None
}

/// What to install for a missing library.
fn library_fix(lib: &str) -> String {
    let l = lib.to_ascii_lowercase();
    if l.contains("nvinfer") || l.contains("nvonnxparser") {
        format!(
            "TensorRT 10 is not installed or not on the library path ({lib}): install TensorRT 10 \
             for CUDA 13 (NVIDIA's tar/deb packages, or the `tensorrt-cu13-libs` wheel) and add \
             its lib directory to LD_LIBRARY_PATH (PATH on Windows)"
        )
    } else if l.contains("cudnn") {
        format!(
            "cuDNN 9 for CUDA 13 is missing ({lib}): install it (e.g. the `nvidia-cudnn-cu13` \
             wheel) and add its lib directory to LD_LIBRARY_PATH"
        )
    } else if l.starts_with("libcuda.so") || l == "nvcuda.dll" {
        format!("no NVIDIA driver ({lib} not found): install the NVIDIA driver (≥ 580 for CUDA 13)")
    } else if l.contains("onnxruntime_providers") {
        format!(
            "{lib} is not beside libonnxruntime: use the complete onnxruntime-gpu wheel \
             (its capi/ directory holds all provider libraries)"
        )
    } else if ["cublas", "cudart", "cufft", "curand", "nvrtc", "nvjitlink", "cusparse"]
        .iter()
        .any(|k| l.contains(k))
    {
        format!(
            "a CUDA 13 runtime library is missing ({lib}): install the CUDA 13 toolkit or the \
             `nvidia-*-cu13` wheels (cuda-runtime, cublas, cufft, curand, cuda-nvrtc) and add \
             their lib directories to LD_LIBRARY_PATH; a CUDA 12 install does not provide .so.13"
        )
    } else {
        format!("{lib} could not be loaded: install it or add its directory to LD_LIBRARY_PATH")
    }
}

/// Library file name of TensorRT 10 on this platform.
pub(crate) const NVINFER: &str =
    if cfg!(target_os = "windows") { "nvinfer_10.dll" } else { "libnvinfer.so.10" };

/// Directories the dynamic loader searches that we can list: `LD_LIBRARY_PATH` (`PATH` on
/// Windows), the loaded ONNX Runtime's directory, and the usual system and CUDA directories.
pub(crate) fn library_search_dirs() -> Vec<PathBuf> {
    let var = if cfg!(target_os = "windows") { "PATH" } else { "LD_LIBRARY_PATH" };
    let mut dirs: Vec<PathBuf> =
        std::env::var_os(var).map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
    if let Some(dir) = super::loaded_library().as_deref().and_then(Path::parent) {
        dirs.push(dir.to_path_buf());
    }
    for d in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
        "/usr/local/cuda/lib64",
        "/usr/local/tensorrt/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// Whether TensorRT 10 can be found, as a sentence: where, or that it is missing and the fix.
/// Looks in `dirs` and in the loader cache (`/etc/ld.so.cache` names every cached library).
pub(crate) fn tensorrt_presence(dirs: &[PathBuf]) -> String {
    if let Some(d) = dirs.iter().find(|d| d.join(NVINFER).is_file()) {
        return format!("TensorRT 10 is present ({})", d.join(NVINFER).display());
    }
    let cached = std::fs::read("/etc/ld.so.cache")
        .map(|b| b.windows(NVINFER.len()).any(|w| w == NVINFER.as_bytes()))
        .unwrap_or(false);
    if cached {
        return format!("TensorRT 10 is present ({NVINFER} is in the ld.so cache)");
    }
    format!(
        "TensorRT 10 is missing too ({NVINFER} is not on {} or in the ld.so cache): install \
         TensorRT 10 for CUDA 13 and add its lib directory to the library path",
        if cfg!(target_os = "windows") { "PATH" } else { "LD_LIBRARY_PATH, beside libonnxruntime" }
    )
}

/// Turns an ONNX Runtime failure of a GPU flavour (registration or session creation) into a
/// reason with a fix, or `None` when the message is not about the machine (then it is the
/// graph's fault, reported as such by the caller).
pub(crate) fn explain_device_failure(
    flavor: Flavor,
    device_id: u32,
    message: &str,
) -> Option<String> {
    let m = message.to_ascii_lowercase();
    let why = if let Some(lib) = missing_library(message) {
        let mut why = library_fix(&lib);
        // The loader stops at the first missing library; say whether TensorRT itself is there.
        if flavor == Flavor::TensorRt && !lib.contains("nvinfer") {
            why.push_str("; ");
            why.push_str(&tensorrt_presence(&library_search_dirs()));
        }
        why
    } else if m.contains("driver version is insufficient")
        || m.contains("insufficient_driver")
        || m.contains("cudaerrorinsufficientdriver")
    {
        "CUDA version mismatch: the NVIDIA driver is older than the CUDA 13 runtime that \
         onnxruntime-gpu 1.31 is built for; update the driver (≥ 580) or use an onnxruntime-gpu \
         build for your CUDA version"
            .to_string()
    } else if m.contains("no cuda-capable device") || m.contains("cudaerrornodevice") {
        "no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)".to_string()
    } else if m.contains("invalid device ordinal") || m.contains("cudaerrorinvaliddevice") {
        format!("device_id {device_id} does not exist on this machine (check nvidia-smi)")
    } else if m.contains("out of memory") || m.contains("cudaerrormemoryallocation") {
        format!("device {device_id} is out of memory")
    } else if m.contains("not enabled in this build") || m.contains("not supported in this build") {
        format!(
            "this libonnxruntime has no {} execution provider: {GPU_WHEEL_HINT}",
            provider_name(flavor)
        )
    } else {
        return None;
    };
    Some(format!("{why} [onnx runtime: {}]", message.trim()))
}

/// Registers the flavour's providers on `builder` with `error_on_failure`, so a provider that
/// cannot load is an error and never a silent CPU fallback.
pub(crate) fn register(
    builder: SessionBuilder,
    config: &EngineConfig,
    flavor: Flavor,
    trt: Option<EpOptions>,
) -> std::result::Result<SessionBuilder, String> {
    let mut eps = Vec::new();
    if flavor == Flavor::TensorRt {
        let mut t = ep::TensorRT::default();
        for (k, v) in trt.unwrap_or_default() {
            t = t.with_arbitrary_config(k, v);
        }
        eps.push(t.build().error_on_failure());
    }
    if flavor.is_gpu() {
        let mut c = ep::CUDA::default();
        for (k, v) in cuda_options(config) {
            c = c.with_arbitrary_config(k, v);
        }
        eps.push(c.build().error_on_failure());
    }
    if eps.is_empty() {
        return Ok(builder);
    }
    builder.with_execution_providers(eps).map_err(|e| e.to_string())
}

/// Whether the flavour can start here, without loading a model: the library is found, the
/// provider is compiled in, and registering it (which loads the provider library and its CUDA /
/// cuDNN / TensorRT dependencies) succeeds. The device itself is first touched when a session
/// is created.
pub(crate) fn probe(
    env: &Environment,
    library: &Path,
    config: &EngineConfig,
    flavor: Flavor,
) -> Result<()> {
    if !compiled_in(flavor)? {
        return Err(not_compiled_in(flavor, library));
    }
    let builder = Session::builder(env).map_err(|e| Error::Backend {
        backend: flavor.name(),
        op: "session builder".into(),
        message: e.to_string(),
    })?;
    // Registration needs no profile or cache: the same libraries load either way.
    register(builder, config, flavor, None).map(|_| ()).map_err(|message| {
        Error::BackendUnavailable {
            backend: flavor.name(),
            reason: explain_device_failure(flavor, config.device_id, &message)
                .unwrap_or_else(|| format!("registering the execution provider failed: {message}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> ModelDims {
        ModelDims::s1_mini_for_tests()
    }

    #[test]
    fn cuda_options_translate_config() {
        let c = EngineConfig::default()
            .with_device_id(3)
            .with_cudnn_conv_algo_search(CudnnConvAlgoSearch::Heuristic);
        let o = cuda_options(&c);
        assert!(o.contains(&("device_id", "3".into())));
        assert!(o.contains(&("cudnn_conv_algo_search", "HEURISTIC".into())));
        let d = cuda_options(&EngineConfig::default());
        assert!(d.contains(&("cudnn_conv_algo_search", "EXHAUSTIVE".into())));
        let c = EngineConfig::default().with_cudnn_conv_algo_search(CudnnConvAlgoSearch::Default);
        assert!(cuda_options(&c).contains(&("cudnn_conv_algo_search", "DEFAULT".into())));
    }

    #[test]
    fn slow_profile_covers_prefill_and_decode() {
        let p = slow_profile(&dims(), &PromptProfile::default()).unwrap();
        assert_eq!(p.min, "tokens:1x11x1,past_keys:28x1x8x0x128,past_values:28x1x8x0x128");
        assert_eq!(p.opt, "tokens:1x11x1,past_keys:28x1x8x256x128,past_values:28x1x8x256x128");
        assert_eq!(p.max, "tokens:1x11x8192,past_keys:28x1x8x8191x128,past_values:28x1x8x8191x128");
        let p = slow_profile(&dims(), &PromptProfile { opt_tokens: 64, max_tokens: 512 }).unwrap();
        assert!(p.max.starts_with("tokens:1x11x512,"), "{}", p.max);
        assert!(slow_profile(&dims(), &PromptProfile { opt_tokens: 64, max_tokens: 9000 }).is_err());
    }

    #[test]
    fn fast_profile_spans_one_frame() {
        let p = fast_profile(&dims());
        assert_eq!(p.min, "hidden:1x1024,code:1,past_keys:4x1x8x0x128,past_values:4x1x8x0x128");
        assert!(p.max.ends_with("past_values:4x1x8x9x128"), "{}", p.max);
    }

    #[test]
    fn tensorrt_options_fp16_cache_and_profile() {
        let c = EngineConfig::default().with_device_id(1).with_tensorrt_workspace_bytes(1 << 30);
        let cache =
            TrtCache { dir: PathBuf::from("/tmp/cache"), prefix: "s1-slow-fp16-abc".into() };
        let prof = slow_profile(&dims(), &PromptProfile::default()).unwrap();
        let o = tensorrt_options(&c, Some(&cache), None, Some(&prof)).unwrap();
        let get = |k: &str| o.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("device_id"), Some("1"));
        assert_eq!(get("trt_fp16_enable"), Some("1"));
        assert_eq!(get("trt_int8_enable"), None);
        assert_eq!(get("trt_max_workspace_size"), Some("1073741824"));
        assert_eq!(get("trt_engine_cache_enable"), Some("1"));
        assert_eq!(get("trt_engine_cache_path"), Some("/tmp/cache"));
        assert_eq!(get("trt_engine_cache_prefix"), Some("s1-slow-fp16-abc"));
        assert_eq!(get("trt_timing_cache_enable"), Some("1"));
        assert_eq!(get("trt_timing_cache_path"), Some("/tmp/cache"));
        assert_eq!(get("trt_profile_min_shapes"), Some(prof.min.as_str()));
        assert_eq!(get("trt_profile_max_shapes"), Some(prof.max.as_str()));
        // No cache dir: no cache keys; workspace 0: TensorRT's default.
        let o = tensorrt_options(&EngineConfig::default(), None, None, None).unwrap();
        assert!(o.iter().all(|(k, _)| !k.contains("cache") && *k != "trt_max_workspace_size"));
    }

    #[test]
    fn tensorrt_options_int8_names_the_table() {
        let c = EngineConfig::default().with_tensorrt_precision(TensorRtPrecision::Int8);
        let o = tensorrt_options(&c, None, Some("int8-calibration-x.flatbuffers"), None).unwrap();
        assert!(o.contains(&("trt_int8_enable", "1".into())));
        assert!(o.contains(&("trt_fp16_enable", "1".into())));
        assert!(o.contains(&(
            "trt_int8_calibration_table_name",
            "int8-calibration-x.flatbuffers".into()
        )));
        assert!(o.contains(&("trt_int8_use_native_calibration_table", "0".into())));
        assert!(tensorrt_options(&c, None, None, None).is_err());
    }

    #[test]
    fn calibration_table_name_depends_on_role_bundle_and_sentences() {
        let a = calibration_table_name("slow", "0123456789abcdef", &["Hello.".into()]);
        assert_ne!(a, calibration_table_name("slow", "0123456789abcdef", &["Hello!".into()]));
        assert_ne!(a, calibration_table_name("fast", "0123456789abcdef", &["Hello.".into()]));
        assert_ne!(a, calibration_table_name("slow", "fedcba9876543210", &["Hello.".into()]));
        assert!(a.starts_with("int8-calibration-slow-0123456789abcdef-"), "{a}");
        assert!(a.ends_with(".flatbuffers"), "{a}");
        assert_eq!(a.len(), "int8-calibration-slow-".len() + 16 + 1 + 16 + ".flatbuffers".len());
    }

    /// The same file and names as tools/export/tests/test_calibrate.py
    /// (`test_table_names_match_the_engine`): the Python calibrator reads sentences and names
    /// tables exactly as the engine does (Rust's trim strips U+3000 and U+00A0 but not U+001F).
    #[test]
    fn calibration_table_names_match_the_python_calibrator() {
        let dir = std::env::temp_dir().join(format!("s1-calib-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sentences.txt");
        let text = "  Hello there.\r\n\n\u{3000}General Kenobi.\u{a0}\n\u{1f}x\u{1f}\n\t\n";
        std::fs::write(&file, text).unwrap();
        let sentences = read_calibration_sentences(&file).unwrap();
        assert_eq!(sentences, ["Hello there.", "General Kenobi.", "\u{1f}x\u{1f}"]);
        let bundle = "0123456789abcdef";
        assert_eq!(
            calibration_table_name("slow", bundle, &sentences),
            "int8-calibration-slow-0123456789abcdef-f0a00020040baf51.flatbuffers"
        );
        assert_eq!(
            calibration_table_name("fast", bundle, &sentences),
            "int8-calibration-fast-0123456789abcdef-f0a00020040baf51.flatbuffers"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn calibration_table_is_looked_up_per_graph_and_bundle() {
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny");
        let info = crate::bundle::Bundle::load(&tiny, false).unwrap().info;
        let dir = std::env::temp_dir().join(format!("s1-calib-lookup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sentences.txt");
        std::fs::write(&file, "Hello.\n").unwrap();
        let config = EngineConfig::new(&tiny)
            .with_tensorrt_precision(TensorRtPrecision::Int8)
            .with_tensorrt_int8_calibration_file(&file);
        match calibration_table(&config, &info, &dir, "slow") {
            Err(Error::BackendUnavailable { reason, .. }) => {
                assert!(reason.contains(&calibrate_command(&tiny, &file, &dir)), "{reason}");
                assert!(reason.contains("(graph slow of this bundle, 1 sentences of"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let name = calibration_table_name("slow", &bundle_id(&info).unwrap(), &["Hello.".into()]);
        std::fs::write(dir.join(&name), b"table").unwrap();
        assert_eq!(calibration_table(&config, &info, &dir, "slow").unwrap(), name);
        assert!(calibration_table(&config, &info, &dir, "fast").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_calibration_table_gives_the_calibrate_command() {
        let dir = std::env::temp_dir().join(format!("s1-calib-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sentences = dir.join("my sentences.txt");
        std::fs::write(&sentences, "Hello.\n").unwrap();
        let cmd = calibrate_command(Path::new("/nonexistent/bundle"), &sentences, &dir);
        let abs = dir.canonicalize().unwrap();
        assert!(cmd.starts_with(
            "PYTHONPATH=tools/export .venv/bin/python -m s1mini_export.calibrate --bundle \
             /nonexistent/bundle --sentences '"
        ));
        assert!(cmd.contains(&format!("'{}/my sentences.txt'", abs.display())), "{cmd}");
        assert!(cmd.ends_with(&format!("--cache-dir {}", abs.display())), "{cmd}");
        assert_eq!(shell_word(Path::new("it's")), r"'it'\''s'");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_library_is_named() {
        let msg = "Failed to load library libonnxruntime_providers_tensorrt.so with error: \
                   libnvinfer.so.10: cannot open shared object file: No such file or directory";
        assert_eq!(missing_library(msg).as_deref(), Some("libnvinfer.so.10"));
        let msg = "Failed to load library libonnxruntime_providers_cuda.so with error: \
                   libcublasLt.so.13: cannot open shared object file: No such file or directory";
        assert_eq!(missing_library(msg).as_deref(), Some("libcublasLt.so.13"));
        assert_eq!(
            missing_library("LoadLibrary failed with error 126 for cudnn64_9.dll").as_deref(),
            Some("cudnn64_9.dll")
        );
        assert_eq!(missing_library("some graph error"), None);
    }

    #[test]
    fn device_failures_get_a_fix() {
        let trt = "Failed to load library libonnxruntime_providers_tensorrt.so with error: \
                   libnvinfer.so.10: cannot open shared object file: No such file or directory";
        let r = explain_device_failure(Flavor::TensorRt, 0, trt).unwrap();
        assert!(r.contains("TensorRT 10") && r.contains("libnvinfer.so.10"), "{r}");
        let r = explain_device_failure(
            Flavor::Cuda,
            0,
            "CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version",
        )
        .unwrap();
        assert!(r.contains("CUDA version mismatch"), "{r}");
        let r = explain_device_failure(Flavor::Cuda, 7, "CUDA failure 101: invalid device ordinal")
            .unwrap();
        assert!(r.contains("device_id 7"), "{r}");
        let r = explain_device_failure(
            Flavor::Cuda,
            0,
            "libcudnn.so.9: cannot open shared object file",
        )
        .unwrap();
        assert!(r.contains("cuDNN 9"), "{r}");
        assert!(explain_device_failure(Flavor::Cuda, 0, "Node (MatMul_3) type mismatch").is_none());
        // TensorRT registration stopped at a CUDA library: the reason also says whether
        // libnvinfer.so.10 exists.
        let msg = "Failed to load library libonnxruntime_providers_tensorrt.so with error: \
                   libcublas.so.13: cannot open shared object file: No such file or directory";
        let r = explain_device_failure(Flavor::TensorRt, 0, msg).unwrap();
        assert!(r.contains("libcublas.so.13") && r.contains(NVINFER), "{r}");
    }

    #[test]
    fn tensorrt_presence_finds_libnvinfer_in_a_directory() {
        let dir = std::env::temp_dir().join(format!("s1-nvinfer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = tensorrt_presence(std::slice::from_ref(&dir));
        if !missing.contains("present") {
            assert!(missing.contains("missing") && missing.contains(NVINFER), "{missing}");
        }
        std::fs::write(dir.join(NVINFER), b"").unwrap();
        let found = tensorrt_presence(std::slice::from_ref(&dir));
        assert!(found.contains("present") && found.contains(&dir.display().to_string()), "{found}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod cpu_ort_tests {
    use super::*;

    /// With the CPU-only library, registering the GPU providers (bypassing the compiled-in
    /// check) must fail loudly (`error_on_failure`), never fall back to the CPU in silence.
    #[test]
    fn registration_on_cpu_only_ort_fails_loudly() {
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            println!("skipped: ORT_DYLIB_PATH is not set");
            return;
        }
        let config = EngineConfig::default();
        let env = super::super::environment(&config).unwrap();
        for flavor in [Flavor::Cuda, Flavor::TensorRt] {
            if compiled_in(flavor).unwrap() {
                println!("skipped: this ONNX Runtime has the {} provider", flavor.name());
                continue;
            }
            let b = Session::builder(&env).unwrap();
            let trt = (flavor == Flavor::TensorRt)
                .then(|| tensorrt_options(&config, None, None, None).unwrap());
            let msg = match register(b, &config, flavor, trt) {
                Ok(_) => panic!("{}: registration succeeded on a CPU-only library", flavor.name()),
                Err(m) => m,
            };
            println!("{}: {msg}", flavor.name());
            let reason = explain_device_failure(flavor, 0, &msg).unwrap();
            assert!(reason.contains("has no") && reason.contains("onnxruntime-gpu"), "{reason}");
        }
    }
}
