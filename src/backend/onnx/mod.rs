//! ONNX Runtime backend over the bundle's graphs: `onnx-cpu` (CPU execution provider, below),
//! and the GPU flavours `onnx-cuda` and `tensorrt` (execution providers in `ep`, the
//! device-resident transformer in `device`).
//!
//! Sessions are shared by every request; ort's `Session::run` takes `&mut self`, so each
//! session sits behind a mutex (ONNX Runtime itself parallelises inside an operator with
//! `intra_op_threads`). Per-request state (KV caches) lives in `OnnxRequest` (a prompt, and
//! the GPU flavours' whole requests) or in a slot of the CPU batch pool (`batch.rs`: concurrent
//! requests' frames decode as one batch), so requests never see each other's caches.
//!
//! The ONNX Runtime library is loaded at run time (`load-dynamic`), found from
//! [`EngineConfig::ort_library_path`], then `ORT_DYLIB_PATH`, then beside the library that holds
//! this code (libs1_mini, the Node addon; Linux only, see `own_directory`), then beside the
//! executable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use once_cell::sync::OnceCell;
use ort::environment::Environment;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorRef};
use parking_lot::Mutex;

use super::{BackendPair, Codec, SlowOutput, T2sRequest, Text2Semantic};
use crate::bundle::{Bundle, BundleInfo, KvCache, ModelDims, Precision};
use crate::codes::{Codes, Frames};
use crate::config::{EngineConfig, GraphOptimization, TensorRtPrecision};
use crate::error::{Error, Result};

// The fp16-cache attention kernel: SIMD intrinsics and parallel writes to one output.
#[allow(unsafe_code)]
mod attention;
mod batch;
mod codec;
pub(crate) mod device;
pub(crate) mod ep;
pub(crate) mod kv;
pub(crate) mod model_cache;
// The codec's Snake kernel: target-feature dispatch and parallel writes to one output.
#[allow(unsafe_code)]
mod snake;
// The kernels' output buffer shared by their parallel tasks.
#[allow(unsafe_code)]
mod shared_out;

use codec::{open_codec, OnnxCodec, SessionOpener};
use device::{DeviceShared, DeviceT2s, Float};
pub(crate) use ep::Flavor;
use model_cache::{ModelCache, Plan};

const NAME: &str = "onnx-cpu";

/// How to get the library, quoted in every "not found" error.
const FETCH_HINT: &str =
    "run scripts/fetch-ort.sh (it downloads the pinned onnxruntime wheel from \
     PyPI and prints the library path), then set ORT_DYLIB_PATH to that path, or set \
     EngineConfig::ort_library_path / --ort-library, or put libonnxruntime beside libs1_mini or \
     the executable";

/// The process-wide ONNX Runtime environment. ort loads one library per process; the first
/// successful load wins.
static ENVIRONMENT: OnceCell<(Environment, PathBuf)> = OnceCell::new();

fn ort_err(op: impl Into<String>) -> impl FnOnce(ort::Error) -> Error {
    let op = op.into();
    move |e| Error::Backend { backend: NAME, op, message: e.to_string() }
}

fn codec_err(backend: &'static str, op: &'static str) -> impl FnOnce(ort::Error) -> Error {
    move |e| Error::Backend { backend, op: op.into(), message: e.to_string() }
}

fn unavailable(reason: String) -> Error {
    Error::BackendUnavailable { backend: NAME, reason }
}

/// Library file names ONNX Runtime ships under, for the look-up beside the executable.
fn library_file_ok(name: &str) -> bool {
    if cfg!(target_os = "windows") {
        name.eq_ignore_ascii_case("onnxruntime.dll")
    } else if cfg!(target_os = "macos") {
        name.starts_with("libonnxruntime") && name.ends_with(".dylib")
    } else {
        name == "libonnxruntime.so" || name.starts_with("libonnxruntime.so.")
    }
}

/// Finds the ONNX Runtime library: config, then `ORT_DYLIB_PATH`, then beside the library that
/// holds this code, then beside the executable.
pub fn find_library(config: &EngineConfig) -> Result<PathBuf> {
    if let Some(p) = &config.ort_library_path {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(unavailable(format!(
                "ort_library_path {} is not a file; {FETCH_HINT}",
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(unavailable(format!("ORT_DYLIB_PATH={} is not a file; {FETCH_HINT}", p.display())))
        };
    }
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    for dir in [own_directory(), exe_dir].into_iter().flatten() {
        if let Some(p) = library_in(&dir) {
            return Ok(p);
        }
    }
    Err(unavailable(format!("libonnxruntime not found; {FETCH_HINT}")))
}

/// The ONNX Runtime library in `dir`, if any (the first name in sort order: `libonnxruntime.so`
/// before `libonnxruntime.so.1.31.1`, which is usually the same file).
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(library_file_ok))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Directory of the file this code was loaded from: `libs1_mini.so`, the Node addon
/// (`s1-mini.linux-x64-gnu.node`), or the executable when the crate is linked statically. Packages
/// put ONNX Runtime there, so no environment variable is needed (docs/packaging.md).
///
/// Linux reads the mapping of this function's address from `/proc/self/maps` (no `unsafe`, no
/// `dladdr`); other systems return `None` and rely on the executable's directory.
fn own_directory() -> Option<PathBuf> {
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return None;
    }
    let addr = own_directory as fn() -> Option<PathBuf> as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    mapped_file(&maps, addr)?.parent().map(Path::to_path_buf)
}

/// The file mapped at `addr` in a `/proc/<pid>/maps` listing
/// (`start-end perms offset dev inode path`, addresses in hex).
fn mapped_file(maps: &str, addr: usize) -> Option<PathBuf> {
    maps.lines().find_map(|line| {
        let mut fields = line.splitn(6, ' ');
        let (start, end) = fields.next()?.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        let path = fields.nth(4)?.trim_start();
        if !(start..end).contains(&addr) || !path.starts_with('/') {
            return None;
        }
        Some(PathBuf::from(path.strip_suffix(" (deleted)").unwrap_or(path)))
    })
}

/// Loads ONNX Runtime once per process and returns its environment.
pub fn environment(config: &EngineConfig) -> Result<Environment> {
    if let Some((env, loaded)) = ENVIRONMENT.get() {
        // An explicit path is still checked: a typo must not pass because another engine in
        // this process loaded the library first. One process holds one ONNX Runtime.
        if config.ort_library_path.is_some() {
            let wanted = find_library(config)?;
            let wanted = wanted.canonicalize().map_err(|e| Error::io(&wanted, e))?;
            if &wanted != loaded {
                return Err(unavailable(format!(
                    "this process already loaded ONNX Runtime from {}; it cannot load {} as well",
                    loaded.display(),
                    wanted.display()
                )));
            }
        }
        return Ok(env.clone());
    }
    let path = find_library(config)?;
    // An absolute path keeps ort from resolving it against the executable's directory.
    let path = path.canonicalize().map_err(|e| Error::io(&path, e))?;
    let (env, _) = ENVIRONMENT.get_or_try_init(|| {
        let builder = ort::init_from(&path).map_err(|e| {
            unavailable(format!("cannot load {}: {e}; {FETCH_HINT}", path.display()))
        })?;
        let env = builder
            .with_name("s1-mini")
            .build()
            .map_err(|e| unavailable(format!("cannot start ONNX Runtime: {e}")))?;
        // Warnings (e.g. about codec_decode's overridable `start_frame` initializer) are noise
        // for library users; errors still come back as values.
        env.set_log_level(ort::logging::LogLevel::Error);
        Ok::<_, Error>((env, path.clone()))
    })?;
    Ok(env.clone())
}

/// Loads ONNX Runtime as an engine would (config, then `ORT_DYLIB_PATH`, then beside the
/// executable) and returns the library's path and version (e.g. "1.31.1, commit 6af1a93").
pub fn runtime_version(config: &EngineConfig) -> Result<(PathBuf, String)> {
    environment(config)?;
    let path = loaded_library().unwrap_or_default();
    // The C API's version string is not exposed by `ort`; release libraries carry it in their
    // file name (libonnxruntime.so.1.31.1, libonnxruntime.1.31.1.dylib), and the build info
    // names the commit ("ORT Build Info: git-branch=..., git-commit-id=6af1a93, ...").
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let from_name = name
        .trim_start_matches("libonnxruntime")
        .trim_start_matches("onnxruntime")
        .trim_start_matches(".so")
        .trim_end_matches(".dylib")
        .trim_end_matches(".dll")
        .trim_matches('.')
        .to_owned();
    let commit = ort::info()
        .split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|w| w.strip_prefix("git-commit-id="))
        .unwrap_or("unknown")
        .to_owned();
    let version = if from_name.is_empty() {
        format!("(version not in the file name), commit {commit}")
    } else {
        format!("{from_name}, commit {commit}")
    };
    Ok((path, version))
}

/// Path of the library the process loaded, if any.
pub fn loaded_library() -> Option<PathBuf> {
    ENVIRONMENT.get().map(|(_, p)| p.clone())
}

fn optimization_level(level: GraphOptimization) -> GraphOptimizationLevel {
    match level {
        GraphOptimization::Disable => GraphOptimizationLevel::Disable,
        GraphOptimization::Basic => GraphOptimizationLevel::Level1,
        GraphOptimization::Extended => GraphOptimizationLevel::Level2,
        GraphOptimization::Layout => GraphOptimizationLevel::Level3,
        GraphOptimization::All => GraphOptimizationLevel::All,
    }
}

/// Session config entries of every session (key, value). They are part of the model cache key.
const CONFIG_ENTRIES: [(&str, &str); 1] = [
    // Packing the MatMul weights for MLAS is most of a real bundle's load when nothing is
    // cached (slow.onnx: 6.5 s serial, 4.1 s in parallel on 2 cores); decode is 20% slower
    // without packed weights.
    ("session.prepack.enable_parallel", "1"),
];

fn open_session(
    env: &Environment,
    config: &EngineConfig,
    path: &Path,
    flavor: Flavor,
    trt: Option<ep::EpOptions>,
) -> Result<Session> {
    open_session_with(env, config, path, flavor, trt, OwnKernels::None)
}

/// A codec graph's session: on the CPU with onnx-cpu's Snake kernel (snake.rs), which graphs
/// exported before it never call.
fn open_codec_session(
    env: &Environment,
    config: &EngineConfig,
    path: &Path,
    flavor: Flavor,
) -> Result<Session> {
    let kernels = if flavor == Flavor::Cpu { OwnKernels::Snake } else { OwnKernels::None };
    open_session_with(env, config, path, flavor, None, kernels)
}

/// onnx-cpu's own kernels that a session registers as custom operators; ONNX Runtime looks
/// those up before its own, so the graphs stay ones any ONNX Runtime runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OwnKernels {
    /// ONNX Runtime's kernels only.
    None,
    /// `com.microsoft.GroupQueryAttention` over an fp16 KV cache (attention.rs): slow graphs
    /// of fp16-cache bundles.
    Fp16Attention,
    /// `ai.s1mini.Snake` (snake.rs): codec graphs.
    Snake,
}

impl OwnKernels {
    fn domain(self) -> Option<Result<ort::operator::OperatorDomain>> {
        match self {
            OwnKernels::None => None,
            OwnKernels::Fp16Attention => Some(attention::operators()),
            OwnKernels::Snake => Some(snake::operators()),
        }
    }

    /// The model cache's record of them: an optimised graph saved with a custom kernel's node
    /// only loads where that kernel is registered.
    fn cache_tag(self) -> &'static str {
        match self {
            OwnKernels::None => "",
            OwnKernels::Fp16Attention => "\nops s1mini-fp16-attention",
            OwnKernels::Snake => "\nops s1mini-snake",
        }
    }
}

/// [`open_session`] with onnx-cpu's own `kernels` registered.
fn open_session_with(
    env: &Environment,
    config: &EngineConfig,
    path: &Path,
    flavor: Flavor,
    trt: Option<ep::EpOptions>,
    kernels: OwnKernels,
) -> Result<Session> {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("graph").to_string();
    // On a GPU flavour, a failure that is about the machine (library, driver, device, memory)
    // makes the backend unavailable; anything else is the graph's fault.
    let invalid = |e: String| match flavor.is_gpu() {
        true => match ep::explain_device_failure(flavor, config.device_id, &e) {
            Some(reason) => Error::BackendUnavailable { backend: flavor.name(), reason },
            None => Error::bundle(
                &file,
                "-",
                format!("onnx runtime ({}) cannot load it: {e}", flavor.name()),
            ),
        },
        false => Error::bundle(&file, "-", format!("onnx runtime cannot load it: {e}")),
    };
    let builder = |level: GraphOptimizationLevel| -> Result<SessionBuilder> {
        let mut b = Session::builder(env)
            .map_err(|e| invalid(e.to_string()))?
            .with_optimization_level(level)
            .map_err(|e| invalid(e.to_string()))?;
        if config.intra_op_threads > 0 {
            b = b
                .with_intra_threads(config.intra_op_threads)
                .map_err(|e| invalid(e.to_string()))?;
        }
        if config.inter_op_threads > 0 {
            b = b
                .with_inter_threads(config.inter_op_threads)
                .map_err(|e| invalid(e.to_string()))?;
        }
        // The frame loop is many short, strictly sequential calls (1 slow + 10 fast per
        // frame). Spinning pool threads then compete with the calling thread (and with
        // concurrent requests) for the cores: on the 2-core CI machine the tiny bundle ran 3x
        // slower with spinning on.
        b = b.with_intra_op_spinning(false).map_err(|e| invalid(e.to_string()))?;
        for (k, v) in CONFIG_ENTRIES {
            b = b.with_config_entry(k, v).map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(domain) = kernels.domain() {
            b = b.with_operators(domain?).map_err(|e| invalid(e.to_string()))?;
        }
        if flavor.is_gpu() {
            b = ep::register(b, config, flavor, trt.clone()).map_err(|message| {
                Error::BackendUnavailable {
                    backend: flavor.name(),
                    reason: ep::explain_device_failure(flavor, config.device_id, &message)
                        .unwrap_or_else(|| {
                            format!("registering the execution provider failed: {message}")
                        }),
                }
            })?;
        }
        Ok(b)
    };
    let level = optimization_level(config.graph_optimization);
    // The cache holds CPU graphs only: a GPU provider's optimised graph may hold fused nodes
    // of that provider, and TensorRT keeps its own engine cache.
    if flavor == Flavor::Cpu && config.optimized_model_cache {
        let cache = ModelCache::new(
            config.cache_dir.as_deref(),
            &loaded_library().unwrap_or_default(),
            ort::info(),
        );
        if let Some(cache) = cache {
            let options = format!(
                "ep cpu\ngraph_optimization {:?}\nconfig {}{}",
                config.graph_optimization,
                CONFIG_ENTRIES.map(|(k, v)| format!("{k}={v}")).join(" "),
                kernels.cache_tag()
            );
            if let Some(session) = open_cached(&cache, path, &options, level, &builder) {
                return Ok(session);
            }
        }
    }
    builder(level)?.commit_from_file(path).map_err(|e| invalid(e.to_string()))
}

/// `source` through the optimised-model cache ([`model_cache`]): the saved graph when a valid
/// entry exists (opened with optimisation off), else the source opened with `level` and saved.
/// `None` when neither worked (the caller then opens the source without the cache, which
/// reports the source's own error if it has one).
fn open_cached(
    cache: &ModelCache,
    source: &Path,
    options: &str,
    level: GraphOptimizationLevel,
    builder: &dyn Fn(GraphOptimizationLevel) -> Result<SessionBuilder>,
) -> Option<Session> {
    let plan = match cache.prepare(source, options) {
        Some(Plan::Hit { model, entry }) => {
            let opened = builder(GraphOptimizationLevel::Disable).and_then(|mut b| {
                b.commit_from_file(&model).map_err(|e| Error::Internal(e.to_string()))
            });
            match opened {
                Ok(session) => {
                    log::debug!(
                        "model cache: {} opened from {}",
                        source.display(),
                        model.display()
                    );
                    return Some(session);
                }
                Err(e) => {
                    log::warn!(
                        "cached optimised graph {} refused ({e}); rebuilding it from {}",
                        model.display(),
                        source.display()
                    );
                    cache.discard(&entry);
                    cache.prepare(source, options)
                }
            }
        }
        other => other,
    };
    let Some(Plan::Miss(save)) = plan else {
        return None;
    };
    let save_entries = [
        ("session.optimized_model_external_initializers_file_name", model_cache::DATA_FILE),
        // Tensors of 1 KiB and more go to the data file (ONNX Runtime aligns those above 1 MiB
        // to 4 KiB, so they are memory-mapped at the next load).
        ("session.optimized_model_external_initializers_min_size_in_bytes", "1024"),
        // Not `session.save_external_prepacked_constant_initializers`: in ONNX Runtime 1.31.1 a
        // graph saved with its packed MatMulNBits weights computes wrong numbers when loaded
        // (tiny int4 fast.onnx: logits off by 2.9 where they reach 1.9; tests/quantized.rs
        // catches it), so weights are packed again at each load.
    ];
    let opened = builder(level).and_then(|b| {
        let ort = |e: ort::Error<SessionBuilder>| Error::Internal(e.to_string());
        let mut b = b.with_optimized_model_path(save.model()).map_err(ort)?;
        for (k, v) in save_entries {
            b = b.with_config_entry(k, v).map_err(ort)?;
        }
        b.commit_from_file(source).map_err(|e| Error::Internal(e.to_string()))
    });
    match opened {
        Ok(session) => {
            log::debug!(
                "model cache: {} optimised and saved to {}",
                source.display(),
                save.entry().display()
            );
            save.commit();
            Some(session)
        }
        Err(e) => {
            save.failed(&e.to_string());
            None
        }
    }
}

/// Builds the CPU backend for `bundle`: the transformer, and the codec when the bundle has one.
pub fn build_cpu(config: &EngineConfig, bundle: &Bundle) -> Result<BackendPair> {
    let info = &bundle.info;
    // int8 / int4 bundles are fp32 graphs whose weight matrices are MatMulNBits.
    if !matches!(info.precision, Precision::Fp32 | Precision::Int8 | Precision::Int4) {
        return Err(unavailable(format!(
            "onnx-cpu runs fp32, int8 and int4 bundles, this one is {} (export with \
             --precision int4, or fp32)",
            info.precision
        )));
    }
    let env = environment(config)?;
    let (slow_path, fast_path) = (info.graph("slow")?, info.graph("fast")?);
    let (env2, config2) = (env.clone(), config.clone());
    let open_encoder: SessionOpener =
        Box::new(move |p| open_codec_session(&env2, &config2, p, Flavor::Cpu));
    // One-shot decodes run through the step graph (generate::decode_all), so the whole-utterance
    // decoder is opened only if something asks for it (a bundle without a step graph, or a
    // comparison through re-decoded context).
    let (env3, config3) = (env.clone(), config.clone());
    let open_decoder: SessionOpener =
        Box::new(move |p| open_codec_session(&env3, &config3, p, Flavor::Cpu));
    // The slow graph is most of the load, and much of its session creation runs on one thread
    // (ONNX Runtime's graph set-up before packing): it opens on its own thread while this one
    // opens the others, which on 2 cores cuts a real bundle's load by the smaller share.
    // An fp16 cache: onnx-cpu's own attention kernel replaces ONNX Runtime's (attention.rs).
    let kv_cache = info.quantization.as_ref().map_or(KvCache::Fp32, |q| q.kv_cache);
    let kernels = match kv_cache {
        KvCache::Fp16 => OwnKernels::Fp16Attention,
        KvCache::Fp32 => OwnKernels::None,
    };
    let (slow, rest) = std::thread::scope(|scope| {
        let slow =
            scope.spawn(|| open_session_with(&env, config, slow_path, Flavor::Cpu, None, kernels));
        let rest = open_session(&env, config, fast_path, Flavor::Cpu, None).and_then(|fast| {
            let codec = open_codec(
                info,
                NAME,
                Float::F32,
                true,
                |_, p| open_codec_session(&env, config, p, Flavor::Cpu),
                open_encoder,
                Some(open_decoder),
            )?;
            Ok((fast, codec))
        });
        let slow = slow
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("opening slow.onnx panicked".into())));
        (slow, rest)
    });
    let slow = slow?;
    check_in_place_graph(&slow)?;
    let (fast, codec) = rest?;
    let t2s = Arc::new(OnnxT2s::new(slow, fast, info)?);
    Ok((t2s, codec.map(|c| Arc::new(c) as Arc<dyn Codec>)))
}

/// Refuses a `slow.onnx` without the format-2 inputs (per-layer cache buffers), whatever its
/// manifest says.
fn check_in_place_graph(slow: &Session) -> Result<()> {
    if kv::is_in_place_graph(slow) {
        return Ok(());
    }
    Err(Error::bundle(
        "slow.onnx",
        "-",
        format!(
            "not a format-{} slow graph (no past_sequence_length / past_key_0 inputs: the KV \
             cache would be copied every step); {}",
            crate::bundle::BUNDLE_FORMAT_VERSION,
            crate::bundle::REEXPORT_HINT
        ),
    ))
}

/// Only the codec of `bundle` on `flavor` (for the native CUDA backend, whose transformer is
/// its own): onnx-cpu needs an fp32 bundle, the GPU flavours take fp32 or fp16. Warmed up by
/// a one-frame decode. `None` when the bundle has no codec graphs.
pub(crate) fn build_codec(
    config: &EngineConfig,
    bundle: &Bundle,
    flavor: Flavor,
) -> Result<Option<Arc<dyn Codec>>> {
    let info = &bundle.info;
    if !info.graphs.contains_key("codec_decode") {
        return Ok(None);
    }
    let float = match (flavor, info.precision) {
        // The codec of an int8 / int4 bundle is the fp32 export's.
        (_, Precision::Fp32 | Precision::Int8 | Precision::Int4) => Float::F32,
        (Flavor::Cuda | Flavor::TensorRt, Precision::Fp16) => Float::F16,
        (_, other) => {
            return Err(unavailable(format!(
                "{} cannot run the codec of a {other} bundle",
                flavor.name()
            )))
        }
    };
    let env = environment(config).map_err(|e| renamed(e, flavor))?;
    if flavor != Flavor::Cpu && !ep::compiled_in(flavor)? {
        return Err(ep::not_compiled_in(flavor, &loaded_library().unwrap_or_default()));
    }
    let (env2, config2) = (env.clone(), config.clone());
    let open_encoder: SessionOpener =
        Box::new(move |p| open_codec_session(&env2, &config2, p, flavor));
    let codec = open_codec(
        info,
        flavor.name(),
        float,
        true,
        |_, p| open_codec_session(&env, config, p, flavor),
        open_encoder,
        None,
    )?;
    if let Some(c) = &codec {
        warm_up_codec(c, info).map_err(|e| Error::BackendUnavailable {
            backend: flavor.name(),
            reason: format!("the codec warm-up on device {} failed: {e}", config.device_id),
        })?;
    }
    Ok(codec.map(|c| Arc::new(c) as Arc<dyn Codec>))
}

/// The backend name in errors raised before the flavour is known (library loading).
fn renamed(e: Error, flavor: Flavor) -> Error {
    match e {
        Error::BackendUnavailable { reason, .. } => {
            Error::BackendUnavailable { backend: flavor.name(), reason }
        }
        other => other,
    }
}

/// Whether `flavor` can start here without loading a model (for `info` and `auto`): library
/// found, provider compiled in, provider library and its CUDA/cuDNN/TensorRT dependencies
/// loadable. The GPU itself is first used when a model loads.
pub(crate) fn probe(config: &EngineConfig, flavor: Flavor) -> Result<()> {
    let env = environment(config).map_err(|e| renamed(e, flavor))?;
    if !flavor.is_gpu() {
        return Ok(());
    }
    let library = loaded_library().unwrap_or_default();
    ep::probe(&env, &library, config, flavor)
}

/// A TensorRT engine cache to check after warm-up: graph role, cache, whether an engine was
/// already there before the session was built.
type CacheWatch = (String, ep::TrtCache, bool);

/// TensorRT provider options for one graph role (`None` for `onnx-cuda`), logging whether a
/// cached engine will be reused. Returns the options and the cache to check after warm-up.
fn trt_options_for(
    config: &EngineConfig,
    info: &BundleInfo,
    flavor: Flavor,
    role: &str,
    profile: Option<ep::ProfileShapes>,
) -> Result<(Option<ep::EpOptions>, Option<CacheWatch>)> {
    if flavor != Flavor::TensorRt {
        return Ok((None, None));
    }
    let cache = ep::trt_cache(config, info, role)?;
    // int8 covers the transformer; the codec (convolutions, audio quality) stays fp16.
    let int8 = config.tensorrt_precision == TensorRtPrecision::Int8 && role != "codec_decode";
    let table = match (&cache, int8) {
        (Some(c), true) => Some(ep::calibration_table(config, info, &c.dir, role)?),
        (None, true) => {
            return Err(Error::arg("cache_dir", "tensorrt_precision int8 needs cache_dir"));
        }
        (_, false) => None,
    };
    let mut cfg = config.clone();
    if !int8 {
        cfg.tensorrt_precision = TensorRtPrecision::Fp16;
    }
    let options = ep::tensorrt_options(&cfg, cache.as_ref(), table.as_deref(), profile.as_ref())?;
    let watch = match cache {
        Some(c) => {
            let found = ep::cached_engines(&c);
            if found.is_empty() {
                log::info!(
                    "tensorrt: no cached engine for {role} in {} (prefix {}); building one, which \
                     takes minutes; it is cached for the next start",
                    c.dir.display(),
                    c.prefix
                );
            } else {
                log::info!(
                    "tensorrt: reusing cached engine(s) for {role} from {}: {}",
                    c.dir.display(),
                    found.join(", ")
                );
            }
            Some((role.to_string(), c, !found.is_empty()))
        }
        None => {
            log::warn!(
                "tensorrt: no cache_dir set, so the {role} engine is rebuilt at every start \
                 (set cache_dir to keep it)"
            );
            None
        }
    };
    Ok((Some(options), watch))
}

/// Builds a GPU flavour (`onnx-cuda` or `tensorrt`) for `bundle`: sessions built once and
/// shared, the transformer with device-resident KV caches (IO binding), the codec on the same
/// provider, and a warm-up run of every graph before the engine is handed out.
///
/// NOT RUN on a GPU yet (see `docs/gpu-onnx.md`); on a CPU-only ONNX Runtime it returns
/// `BackendUnavailable` before touching any graph.
pub(crate) fn build_gpu(
    config: &EngineConfig,
    bundle: &Bundle,
    flavor: Flavor,
) -> Result<BackendPair> {
    let name = flavor.name();
    let info = &bundle.info;
    let float = match info.precision {
        Precision::Fp32 => Float::F32,
        Precision::Fp16 => Float::F16,
        other => {
            return Err(Error::BackendUnavailable {
                backend: name,
                reason: format!(
                    "bundle precision \"{other}\" is for the CPU (onnx-cpu); GPUs take fp32 or \
                     fp16 bundles (python -m s1mini_export --precision fp16)"
                ),
            })
        }
    };
    let env = environment(config).map_err(|e| renamed(e, flavor))?;
    let library = loaded_library().unwrap_or_default();
    if !ep::compiled_in(flavor)? {
        return Err(ep::not_compiled_in(flavor, &library));
    }
    if flavor == Flavor::TensorRt {
        // Refused before any engine build (minutes): TensorRT has no GroupQueryAttention.
        return Err(Error::BackendUnavailable {
            backend: name,
            reason: format!(
                "bundle format {}'s slow.onnx updates its KV cache in place with \
                 com.microsoft.GroupQueryAttention, which TensorRT does not run; use onnx-cuda",
                crate::bundle::BUNDLE_FORMAT_VERSION
            ),
        });
    }
    if float == Float::F32 {
        // CUDA's GroupQueryAttention kernel is fp16/bf16 only: ONNX Runtime would run the
        // attention on the CPU and copy every layer's cache between host and device each step.
        return Err(Error::BackendUnavailable {
            backend: name,
            reason: format!(
                "bundle format {}'s slow.onnx runs its attention (GroupQueryAttention) on CUDA at \
                 fp16 only; export the bundle with --precision fp16 for {name} (fp32 bundles are \
                 for onnx-cpu)",
                crate::bundle::BUNDLE_FORMAT_VERSION
            ),
        });
    }
    let t0 = std::time::Instant::now();
    let mut watches = Vec::new();
    let mut open = |role: &str, path: &Path, profile: Option<ep::ProfileShapes>| {
        let (trt, watch) = trt_options_for(config, info, flavor, role, profile)?;
        watches.extend(watch);
        open_session(&env, config, path, flavor, trt)
    };
    let slow_profile = match flavor {
        Flavor::TensorRt => Some(ep::slow_profile(&info.model, &config.tensorrt_profile)?),
        _ => None,
    };
    let fast_profile = (flavor == Flavor::TensorRt).then(|| ep::fast_profile(&info.model));
    let slow = open("slow", info.graph("slow")?, slow_profile)?;
    check_in_place_graph(&slow)?;
    let fast = open("fast", info.graph("fast")?, fast_profile)?;
    let (encoder_trt, watch) = trt_options_for(config, info, flavor, "codec_encode", None)?;
    let (env2, config2) = (env.clone(), config.clone());
    let open_encoder: SessionOpener =
        Box::new(move |p| open_session(&env2, &config2, p, flavor, encoder_trt.clone()));
    // TensorRT: no optimisation profiles are written for the step graph's state inputs, so
    // streaming there re-decodes left context through codec_decode (decode_range).
    let codec = open_codec(
        info,
        name,
        float,
        flavor != Flavor::TensorRt,
        |role, p| {
            let profile = (flavor == Flavor::TensorRt && role == "codec_decode")
                .then(|| ep::codec_profile(info));
            open(role, p, profile)
        },
        open_encoder,
        None,
    )?
    .map(Arc::new);
    watches.extend(watch);
    let (device, host) = DeviceShared::memory_infos(config.device_id)?;
    let t2s = Arc::new(DeviceT2s {
        shared: Arc::new(DeviceShared {
            name,
            slow: Mutex::new(slow),
            fast: Mutex::new(fast),
            dims: info.model.clone(),
            head_rows: info.im_end_index.max(info.semantic_rows) + 1,
            fast_rows: info.fast_logit_rows,
            float,
            device,
            host,
        }),
    });
    warm_up(t2s.as_ref(), codec.as_deref(), info).map_err(|e| Error::BackendUnavailable {
        backend: name,
        reason: format!("the warm-up run on device {} failed: {e}", config.device_id),
    })?;
    for (role, cache, had) in watches {
        if !had && !ep::cached_engines(&cache).is_empty() {
            log::info!("tensorrt: built and cached the {role} engine in {}", cache.dir.display());
        }
    }
    log::info!("{name}: sessions built and warmed up in {:.1} s", t0.elapsed().as_secs_f64());
    let codec: Option<Arc<dyn Codec>> = match codec {
        Some(c) => Some(c),
        None => None,
    };
    Ok((t2s, codec))
}

/// One prefill of a single position, two fast steps and a one-frame codec decode: builds
/// TensorRT engines that were not built at session creation, lets cuDNN pick its algorithms and
/// grows the memory arenas, so the first request is not the slow one.
fn warm_up(t2s: &dyn Text2Semantic, codec: Option<&OnnxCodec>, info: &BundleInfo) -> Result<()> {
    let rows = 1 + info.model.num_codebooks;
    let mut req = t2s.start()?;
    // Token id 0 with codes 0: any valid ids do; only shapes and kernels matter here.
    let out = req.slow(&vec![0i64; rows], 1)?;
    req.fast_reset()?;
    req.fast(&out.hidden, 0)?;
    req.fast(&out.hidden, 0)?;
    if let Some(c) = codec {
        warm_up_codec(c, info)?;
    }
    Ok(())
}

/// A one-frame decode through each codec decode graph.
fn warm_up_codec(codec: &OnnxCodec, info: &BundleInfo) -> Result<()> {
    let codes = Codes::new(info.model.num_codebooks, Frames(1), vec![0; info.model.num_codebooks])?;
    codec.decode_at(&codes, 0, &mut Vec::new())?;
    if let Some(mut step) = codec.start_step()? {
        step.decode_next(&codes, &mut Vec::new())?;
    }
    Ok(())
}

struct T2sShared {
    slow: Mutex<Session>,
    fast: Mutex<Session>,
    dims: ModelDims,
    head_rows: usize,
    fast_rows: usize,
    /// Element type of slow.onnx's cache buffers.
    cache: Float,
}

/// The DualAR transformer on ONNX Runtime's CPU provider.
struct OnnxT2s {
    shared: Arc<T2sShared>,
    /// Concurrent requests' frames decode as one batch (`batch.rs`).
    batcher: Arc<batch::Batcher>,
}

impl Text2Semantic for OnnxT2s {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self) -> Result<Box<dyn T2sRequest>> {
        self.start_with_capacity(kv::DEFAULT_CAPACITY)
    }

    fn start_with_capacity(&self, positions: usize) -> Result<Box<dyn T2sRequest>> {
        Ok(Box::new(self.request(positions)?))
    }

    fn start_frames(
        &self,
        _info: Arc<BundleInfo>,
        positions: usize,
    ) -> Result<Box<dyn super::FrameStep>> {
        let req = self.request(positions)?;
        Ok(Box::new(batch::Batched::new(self.batcher.clone(), req, positions)))
    }

    fn batch_stats(&self) -> Option<super::BatchStats> {
        Some(self.batcher.stats())
    }
}

impl OnnxT2s {
    /// The transformer over its two sessions, with the batcher of its concurrent requests.
    fn new(slow: Session, fast: Session, info: &BundleInfo) -> Result<OnnxT2s> {
        let cache = kv::cache_float(&slow)?;
        let shared = Arc::new(T2sShared {
            cache,
            slow: Mutex::new(slow),
            fast: Mutex::new(fast),
            dims: info.model.clone(),
            head_rows: info.im_end_index.max(info.semantic_rows) + 1,
            fast_rows: info.fast_logit_rows,
        });
        let batcher = Arc::new(batch::Batcher::new(shared.clone(), Arc::new(info.clone()))?);
        Ok(OnnxT2s { shared, batcher })
    }

    fn request(&self, positions: usize) -> Result<OnnxRequest> {
        self.request_in(positions, true)
    }

    /// `host`: whether the cache is read and written in place (host memory); `false` (tests)
    /// stages every copy through a second host tensor, as for device memory.
    fn request_in(&self, positions: usize, host: bool) -> Result<OnnxRequest> {
        let d = &self.shared.dims;
        // fast past KV at P = 0: [Lf, 1, Hf, 0, Df] f32, no data.
        let fast_shape = [d.n_fast_layer, 1, d.fast_n_local_heads, 0, d.fast_head_dim];
        let out_mem = host_memory()?;
        let slow = kv::SlowKv::new(
            NAME,
            &self.shared.slow.lock(),
            Allocator::default(),
            host,
            &out_mem,
            self.shared.cache,
            d,
            positions,
        )?;
        Ok(OnnxRequest {
            shared: self.shared.clone(),
            slow,
            fast_k: empty(fast_shape)?,
            fast_v: empty(fast_shape)?,
            fast_shape,
        })
    }
}

/// Host memory for the outputs the sampler reads.
fn host_memory() -> Result<MemoryInfo<'static>> {
    MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::Default)
        .map_err(ort_err("memory info"))
}

/// One request's caches: the slow cache in per-layer buffers that ONNX Runtime updates in place
/// ([`kv::SlowKv`]); the fast cache (≤ num_codebooks positions) as ONNX Runtime values, each
/// `present_*` output fed back as the next `past_*` input.
struct OnnxRequest {
    shared: Arc<T2sShared>,
    slow: kv::SlowKv,
    fast_k: DynValue,
    fast_v: DynValue,
    fast_shape: [usize; 5],
}

#[cfg(test)]
impl OnnxRequest {
    fn slow_kv(&mut self) -> &mut kv::SlowKv {
        &mut self.slow
    }
}

/// A KV tensor with no positions yet: `[layers, 1, heads, 0, head_dim]` f32.
fn empty(shape: [usize; 5]) -> Result<DynValue> {
    Tensor::<f32>::from_array((shape, Vec::<f32>::new()))
        .map(|t| t.into_dyn())
        .map_err(ort_err("empty kv"))
}

fn extract_f32(
    outputs: &ort::session::SessionOutputs<'_>,
    name: &str,
    op: &str,
) -> Result<Vec<f32>> {
    let v = outputs.get(name).ok_or_else(|| Error::Backend {
        backend: NAME,
        op: op.into(),
        message: format!("graph has no output `{name}`"),
    })?;
    let (_, data) = v.try_extract_tensor::<f32>().map_err(ort_err(format!("{op}: {name}")))?;
    Ok(data.to_vec())
}

fn take(outputs: &mut ort::session::SessionOutputs<'_>, name: &str, op: &str) -> Result<DynValue> {
    outputs.remove(name).ok_or_else(|| Error::Backend {
        backend: NAME,
        op: op.into(),
        message: format!("graph has no output `{name}`"),
    })
}

/// Checks a slow call's output sizes against the manifest.
pub(crate) fn check_slow_sizes(
    backend: &'static str,
    out: &kv::SlowRun,
    head_rows: usize,
    fast_dim: usize,
) -> Result<()> {
    if out.logits.len() != head_rows || out.hidden.len() != fast_dim {
        return Err(Error::Backend {
            backend,
            op: "slow".into(),
            message: format!(
                "logits/hidden have {}/{} values, the manifest says {head_rows}/{fast_dim}",
                out.logits.len(),
                out.hidden.len(),
            ),
        });
    }
    Ok(())
}

impl T2sRequest for OnnxRequest {
    fn slow(&mut self, tokens: &[i64], t: usize) -> Result<SlowOutput> {
        // tokens [1+K, t] -> logits [head_rows], hidden [fast_dim]; the cache is written in place
        let out = self.slow.run(&mut self.shared.slow.lock(), tokens, t)?;
        check_slow_sizes(NAME, &out, self.shared.head_rows, self.shared.dims.fast_dim)?;
        Ok(SlowOutput { logits: out.logits, hidden: out.hidden })
    }

    fn fast_reset(&mut self) -> Result<()> {
        self.fast_k = empty(self.fast_shape)?;
        self.fast_v = empty(self.fast_shape)?;
        Ok(())
    }

    fn fast(&mut self, hidden: &[f32], code: i64) -> Result<Vec<f32>> {
        // hidden [1, dim] f32, code [1] i64, past_* [Lf, 1, Hf, P, Df] -> logits [1, logit_rows]
        let hidden = TensorRef::from_array_view(([1usize, hidden.len()], hidden))
            .map_err(ort_err("fast"))?;
        let code = [code];
        let code = TensorRef::from_array_view(([1usize], &code[..])).map_err(ort_err("fast"))?;
        let mut session = self.shared.fast.lock();
        let mut out = session
            .run(ort::inputs![
                "hidden" => hidden,
                "code" => code,
                "past_keys" => &self.fast_k,
                "past_values" => &self.fast_v,
            ])
            .map_err(ort_err("fast"))?;
        let logits = extract_f32(&out, "logits", "fast")?;
        let k = take(&mut out, "present_keys", "fast")?;
        let v = take(&mut out, "present_values", "fast")?;
        drop(out);
        drop(session);
        if logits.len() != self.shared.fast_rows {
            return Err(Error::Backend {
                backend: NAME,
                op: "fast".into(),
                message: format!(
                    "{} logits, the manifest says {}",
                    logits.len(),
                    self.shared.fast_rows
                ),
            });
        }
        self.fast_k = k;
        self.fast_v = v;
        Ok(logits)
    }

    fn kv_len(&self) -> usize {
        self.slow.len()
    }

    fn snapshot_kv(&self) -> Result<super::KvSnapshot> {
        let prefix = self.slow.prefix()?;
        Ok(super::KvSnapshot {
            backend: NAME,
            len: prefix.len,
            bytes: prefix.bytes(),
            data: Box::new(prefix),
        })
    }

    fn restore_kv(&mut self, snapshot: &super::KvSnapshot) -> Result<()> {
        let Some(prefix) =
            snapshot.data.downcast_ref::<kv::KvPrefix>().filter(|_| snapshot.backend == NAME)
        else {
            return Err(Error::Internal(format!(
                "a {} KV snapshot given to {NAME}",
                snapshot.backend
            )));
        };
        self.slow.restore(prefix)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn tiny_t2s() -> (OnnxT2s, Bundle) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny");
        let ort = std::env::var_os("ORT_DYLIB_PATH")
            .expect("ORT_DYLIB_PATH: run `export ORT_DYLIB_PATH=$(scripts/fetch-ort.sh)`");
        let config = EngineConfig::new(&dir).with_ort_library_path(ort);
        let bundle = Bundle::load(&dir, false).unwrap();
        let info = &bundle.info;
        let env = environment(&config).unwrap();
        let open = |role: &str| {
            open_session(&env, &config, info.graph(role).unwrap(), Flavor::Cpu, None).unwrap()
        };
        (OnnxT2s::new(open("slow"), open("fast"), info).unwrap(), bundle)
    }

    /// The tiny fixture quantised to int4 with an fp16 KV cache by the exporter's quantiser
    /// (the project's .venv, scripts/setup-python.sh), made once per test process.
    fn tiny_fp16_cache() -> PathBuf {
        static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        MADE.get_or_init(|| {
            let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let out = std::env::temp_dir().join(format!("s1mini-fp16kv-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&out);
            let python = repo.join(".venv/bin/python");
            assert!(python.exists(), "{} missing: run scripts/setup-python.sh", python.display());
            let st = std::process::Command::new(python)
                .env("PYTHONPATH", repo.join("tools/export"))
                .args(["-m", "s1mini_export.quantize", "--precision", "int4", "--kv-cache"])
                .args(["fp16", "--bundle"])
                .arg(repo.join("tests/fixtures/tiny"))
                .arg("--out")
                .arg(&out)
                .status()
                .unwrap();
            assert!(st.success(), "quantiser failed");
            out
        })
        .clone()
    }

    #[test]
    fn fp16_cache_kernel_computes_what_onnx_runtime_does() {
        // The same fp16-cache slow graph with ONNX Runtime's GroupQueryAttention and with
        // ours: a prompt in chunks of 7 (the prompt path, chunks after the first with a past),
        // then decode steps (the one-position path), logits compared at each step.
        let dir = tiny_fp16_cache();
        let ort = std::env::var_os("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH");
        let config = EngineConfig::new(&dir).with_ort_library_path(ort);
        let bundle = Bundle::load(&dir, false).unwrap();
        let info = &bundle.info;
        assert_eq!(info.quantization.as_ref().unwrap().kv_cache, KvCache::Fp16);
        let env = environment(&config).unwrap();
        let path = info.graph("slow").unwrap();
        let mut sessions = [
            open_session(&env, &config, path, Flavor::Cpu, None).unwrap(),
            open_session_with(&env, &config, path, Flavor::Cpu, None, OwnKernels::Fp16Attention)
                .unwrap(),
        ];
        assert_eq!(kv::cache_float(&sessions[0]).unwrap(), Float::F16);
        let d = &info.model;
        let rows = 1 + d.num_codebooks;
        let mem = host_memory().unwrap();
        let mut logits: [Vec<Vec<f32>>; 2] = [Vec::new(), Vec::new()];
        let mut calls = [0; 2];
        for ((s, out), calls) in sessions.iter_mut().zip(logits.iter_mut()).zip(&mut calls) {
            let before = attention::CALLS.load(Ordering::SeqCst);
            let mut kv =
                kv::SlowKv::new(NAME, s, Allocator::default(), true, &mem, Float::F16, d, 64)
                    .unwrap();
            kv.set_chunk(7);
            out.push(kv.run(s, &text_prompt(rows, 23), 23).unwrap().logits);
            for step in 0..6 {
                let mut tok = vec![0i64; rows];
                tok[0] = 5 + step;
                out.push(kv.run(s, &tok, 1).unwrap().logits);
            }
            *calls = attention::CALLS.load(Ordering::SeqCst) - before;
        }
        // 4 prompt chunks + 6 steps, one call per layer, in our session only.
        assert_eq!(calls, [0, 10 * d.n_layer], "kernel calls per session");
        for (step, (a, b)) in logits[0].iter().zip(&logits[1]).enumerate() {
            let (mut num, mut den) = (0f64, 0f64);
            for (x, y) in a.iter().zip(b) {
                num += f64::from(x - y).powi(2);
                den += f64::from(*x).powi(2);
            }
            let rel = (num / den).sqrt();
            println!("step {step}: logits rel RMSE {rel:.2e}");
            assert!(rel < 2e-3, "step {step}: ours vs ONNX Runtime's, rel RMSE {rel}");
        }
    }

    #[test]
    fn snake_kernel_decodes_what_onnx_runtime_does() {
        // The tiny fixture's whole-utterance codec graph (29 ai.s1mini.Snake nodes, the
        // exporter's snake.py), run once with ONNX Runtime inlining the function body and once
        // with onnx-cpu's kernel: the same PCM to float rounding, the kernel in ours only.
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny");
        let ort = std::env::var_os("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH");
        let config = EngineConfig::new(&dir).with_ort_library_path(ort);
        let bundle = Bundle::load(&dir, false).unwrap();
        let info = &bundle.info;
        let env = environment(&config).unwrap();
        let path = info.graph("codec_decode").unwrap();
        let mut sessions = [
            open_session(&env, &config, path, Flavor::Cpu, None).unwrap(),
            open_codec_session(&env, &config, path, Flavor::Cpu).unwrap(),
        ];
        let (k, t) = (info.codec.codebook_sizes.len(), 9);
        let codes: Vec<i64> = (0..k * t).map(|i| (i * 37 % 1000) as i64).collect();
        let mut pcm: [Vec<f32>; 2] = [Vec::new(), Vec::new()];
        let mut calls = [0; 2];
        for ((s, out), calls) in sessions.iter_mut().zip(&mut pcm).zip(&mut calls) {
            let before = snake::CALLS.load(Ordering::SeqCst);
            let input = Tensor::from_array(([1, k, t], codes.clone())).unwrap();
            let outputs = s.run(ort::inputs!["codes" => input]).unwrap();
            *out = outputs[0].try_extract_tensor::<f32>().unwrap().1.to_vec();
            *calls = snake::CALLS.load(Ordering::SeqCst) - before;
        }
        assert_eq!(calls, [0, 29], "kernel calls per session");
        assert_eq!(pcm[0].len(), t * info.codec.frame_samples);
        let peak = pcm[0].iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = pcm[0].iter().zip(&pcm[1]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("Snake kernel vs ONNX Runtime: max |PCM diff| {worst:.2e} of peak {peak:.2e}");
        assert!(peak > 0.0 && worst <= 1e-5 * peak, "max |diff| {worst} vs peak {peak}");
    }

    /// A text prompt `[1+K, t]`: ids 1.. (mod 1000) in row 0, no codes.
    fn text_prompt(rows: usize, t: usize) -> Vec<i64> {
        let mut p = vec![0i64; rows * t];
        for (i, v) in p.iter_mut().take(t).enumerate() {
            *v = (i % 1000) as i64 + 1;
        }
        p
    }

    fn argmax(v: &[f32]) -> usize {
        v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
    }

    /// Greedy frames after `prompt` (semantic head argmax, fast argmax), with the prefill logits.
    fn greedy(
        req: &mut OnnxRequest,
        info: &BundleInfo,
        prompt: &[i64],
        t: usize,
        frames: usize,
    ) -> (Vec<f32>, Vec<Vec<i64>>) {
        let k = info.model.num_codebooks;
        let first = req.slow(prompt, t).unwrap();
        let mut out = first.clone();
        let mut all = Vec::new();
        for _ in 0..frames {
            let head = argmax(&out.logits[..info.semantic_rows]);
            let mut frame = vec![i64::from(info.tokens.semantic_begin) + head as i64, head as i64];
            req.fast_reset().unwrap();
            req.fast(&out.hidden, 0).unwrap();
            for kk in 1..k {
                let l = req.fast(&out.hidden, frame[kk]).unwrap();
                frame.push(argmax(&l[..info.fast_logit_rows]) as i64);
            }
            out = req.slow(&frame, 1).unwrap();
            all.push(frame);
        }
        (first.logits, all)
    }

    fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-12f32, |m, x| m.max(x.abs()));
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
    }

    #[test]
    fn slow_cache_is_written_in_place_while_decoding() {
        // The buffers bound at the start are the ones ONNX Runtime writes, call after call:
        // same address, same capacity, present output = the bound buffer (no copy, no growth).
        let (t2s, bundle) = tiny_t2s();
        let info = &bundle.info;
        let rows = 1 + info.model.num_codebooks;
        let t = 40;
        let mut req = t2s.request(t + 12).unwrap();
        let addr = req.slow_kv().buffer_address();
        // A sentinel in the last (never filled here) position of every buffer survives only if
        // the kernel wrote the bound buffers in place: its unshared path zeroes present first.
        req.slow_kv().poke_unfilled(12345.0);
        let (_, frames) = greedy(&mut req, info, &text_prompt(rows, t), t, 11);
        assert_eq!(frames.len(), 11);
        let kv = req.slow_kv();
        assert_eq!(kv.len(), t + 11);
        assert_eq!(kv.capacity(), t + 12, "the cache never grew");
        assert_eq!(kv.buffer_address(), addr, "the cache never moved");
        assert!(kv.aliased(), "present_key_0 was the bound buffer");
        let n = 2 * info.model.n_layer;
        assert_eq!(
            kv.peek_unfilled(),
            vec![12345.0; n],
            "every layer's cache was updated in place"
        );
    }

    #[test]
    fn chunked_prefill_equals_one_shot_prefill() {
        // A 1,200-position prompt: the default 512-position chunks, 97-position chunks and one
        // call give the same prefill logits (within the golden tolerance) and the same greedy
        // frames.
        let (t2s, bundle) = tiny_t2s();
        let info = &bundle.info;
        let rows = 1 + info.model.num_codebooks;
        let t = 1200;
        let prompt = text_prompt(rows, t);
        let run = |chunk: Option<usize>| {
            let mut req = t2s.request(t + 8).unwrap();
            if let Some(c) = chunk {
                req.slow_kv().set_chunk(c);
            }
            greedy(&mut req, info, &prompt, t, 8)
        };
        let (one_logits, one_frames) = run(Some(usize::MAX));
        for chunk in [None, Some(97)] {
            let (logits, frames) = run(chunk);
            let d = rel_diff(&logits, &one_logits);
            assert!(d < 1e-5, "chunk {chunk:?}: prefill logits differ by {d}");
            assert_eq!(frames, one_frames, "chunk {chunk:?}");
        }
    }

    #[test]
    fn staged_copies_for_device_memory_equal_direct_ones() {
        // The copy path the GPU flavours take (ort copy_into through a host tensor) for growth,
        // snapshot and restore, run here on host memory: same frames, same snapshot bytes.
        let (t2s, bundle) = tiny_t2s();
        let info = &bundle.info;
        let rows = 1 + info.model.num_codebooks;
        let t = 24;
        let prompt = text_prompt(rows, t);
        let mut direct = t2s.request_in(3, true).unwrap();
        let mut staged = t2s.request_in(3, false).unwrap();
        let (dl, df) = greedy(&mut direct, info, &prompt, t, 5);
        let (sl, sf) = greedy(&mut staged, info, &prompt, t, 5);
        assert_eq!((sl, sf), (dl, df));
        let (a, b) = (direct.snapshot_kv().unwrap(), staged.snapshot_kv().unwrap());
        let data = |s: &crate::backend::KvSnapshot| match &s
            .data
            .downcast_ref::<kv::KvPrefix>()
            .unwrap()
            .data
        {
            kv::PrefixData::F32(v) => v.clone(),
            kv::PrefixData::F16(_) => panic!("fp16"),
        };
        assert_eq!((a.len, data(&a)), (b.len, data(&b)));
        let mut restored = t2s.request_in(2, false).unwrap();
        restored.restore_kv(&b).unwrap();
        assert_eq!(data(&restored.snapshot_kv().unwrap()), data(&a));
    }

    #[test]
    fn cache_grows_and_snapshots_restore_into_any_capacity() {
        // A request started too small grows (copying its prefix once); a snapshot restored into
        // a request of another capacity continues exactly like the original.
        let (t2s, bundle) = tiny_t2s();
        let info = &bundle.info;
        let rows = 1 + info.model.num_codebooks;
        let t = 30;
        let prompt = text_prompt(rows, t);
        let mut big = t2s.request(t + 6).unwrap();
        let (want_logits, want) = greedy(&mut big, info, &prompt, t, 6);
        let mut small = t2s.request(4).unwrap();
        let (logits, frames) = greedy(&mut small, info, &prompt, t, 6);
        assert!(small.slow_kv().capacity() >= t + 6);
        assert!(rel_diff(&logits, &want_logits) < 1e-6);
        assert_eq!(frames, want);
        // Snapshot the first 20 positions, restore into a 2-position request, finish the prompt.
        let mut head = t2s.request(20).unwrap();
        head.slow(&text_prompt(rows, 20), 20).unwrap();
        let snap = head.snapshot_kv().unwrap();
        assert_eq!((snap.len, snap.bytes), (20, 2 * info.model.n_layer * 2 * 20 * 16 * 4));
        let mut rest = t2s.request(2).unwrap();
        rest.restore_kv(&snap).unwrap();
        assert_eq!(rest.kv_len(), 20);
        let tail: Vec<i64> =
            (0..rows).flat_map(|r| prompt[r * t + 20..(r + 1) * t].to_vec()).collect();
        let (logits, frames) = greedy(&mut rest, info, &tail, t - 20, 6);
        assert!(rel_diff(&logits, &want_logits) < 1e-5);
        assert_eq!(frames, want);
    }

    #[test]
    fn codec_encoder_and_whole_decoder_sessions_open_on_first_use_only() {
        let ort = std::env::var_os("ORT_DYLIB_PATH")
            .expect("ORT_DYLIB_PATH: run `export ORT_DYLIB_PATH=$(scripts/fetch-ort.sh)`");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny");
        let config = EngineConfig::new(&dir).with_ort_library_path(ort);
        let bundle = Bundle::load(&dir, false).unwrap();
        let env = environment(&config).unwrap();
        let counting = |count: &Arc<AtomicUsize>| -> SessionOpener {
            let (env, config, count) = (env.clone(), config.clone(), count.clone());
            Box::new(move |p| {
                count.fetch_add(1, Ordering::SeqCst);
                open_session(&env, &config, p, Flavor::Cpu, None)
            })
        };
        let (encoder, decoder) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let codec = open_codec(
            &bundle.info,
            NAME,
            Float::F32,
            true,
            |_, p| open_session(&env, &config, p, Flavor::Cpu, None),
            counting(&encoder),
            Some(counting(&decoder)),
        )
        .unwrap()
        .unwrap();
        let opened = |c: &Arc<AtomicUsize>| c.load(Ordering::SeqCst);
        assert_eq!((opened(&encoder), opened(&decoder)), (0, 0), "opened at load");
        let pcm = vec![0.01f32; 4096];
        let a = codec.encode(&pcm).unwrap();
        let b = codec.encode(&pcm).unwrap();
        assert_eq!(opened(&encoder), 1, "encoder opened once, then reused");
        assert_eq!(a, b);
        assert_eq!(a.frames(), Frames(2));
        // One-shot decodes go through the step graph: the whole-utterance decoder stays closed
        // until something decodes through it, and then gives the same samples.
        let codes = Codes::new(10, Frames(6), (0..60).map(|i| (i * 37) % 1024).collect()).unwrap();
        let stepped = crate::generate::decode_all(&codec, &bundle.info, &codes).unwrap();
        assert_eq!(opened(&decoder), 0, "whole decoder opened by a stepped decode");
        // Asking whether it takes a start frame opens it (the answer is in its inputs).
        let _ = codec.supports_start_frame();
        assert_eq!(opened(&decoder), 1, "whole decoder not opened by supports_start_frame");
        let mut whole = Vec::new();
        codec.decode_at(&codes, 0, &mut whole).unwrap();
        codec.decode_at(&codes, 0, &mut Vec::new()).unwrap();
        assert_eq!(opened(&decoder), 1, "whole decoder opened once, then reused");
        let scale = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = whole.iter().zip(&stepped).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-5 * scale, "stepped vs whole: {worst} of {scale}");
    }

    #[test]
    fn mapped_file_finds_the_mapping_that_holds_the_address() {
        let maps = "\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 123   /usr/bin/node
7f0000000000-7f0000100000 r-xp 00010000 08:01 456   /opt/app/node_modules/s1-mini-linux-x64-gnu/s1-mini.linux-x64-gnu.node
7f0000100000-7f0000200000 rw-p 00000000 00:00 0
7f0000200000-7f0000300000 r-xp 00000000 08:01 789   /tmp/old lib/libs1_mini.so (deleted)
";
        let got = |a| mapped_file(maps, a);
        assert_eq!(
            got(0x7f0000000010),
            Some(PathBuf::from(
                "/opt/app/node_modules/s1-mini-linux-x64-gnu/s1-mini.linux-x64-gnu.node"
            ))
        );
        assert_eq!(got(0x7f0000150000), None, "anonymous mapping");
        assert_eq!(got(0x7f0000200000), Some(PathBuf::from("/tmp/old lib/libs1_mini.so")));
        assert_eq!(got(0x7f0000300000), None, "end is exclusive");
        assert_eq!(got(0x10), None);
    }

    #[test]
    fn own_directory_is_the_test_executables_directory_on_linux() {
        // The test binary links the rlib statically, so this code lives in the executable.
        let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
        let dir = own_directory();
        if cfg!(target_os = "linux") {
            assert_eq!(dir.unwrap().canonicalize().unwrap(), exe.parent().unwrap());
        } else {
            assert_eq!(dir, None);
        }
    }

    #[test]
    fn library_in_picks_the_onnxruntime_file_only() {
        let dir = std::env::temp_dir().join(format!("s1-mini-ort-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(library_in(&dir), None);
        std::fs::write(dir.join("libonnxruntime_providers_shared.so"), b"").unwrap();
        std::fs::write(dir.join("onnxruntime.txt"), b"").unwrap();
        assert_eq!(library_in(&dir), None);
        let name = if cfg!(windows) {
            "onnxruntime.dll"
        } else if cfg!(target_os = "macos") {
            "libonnxruntime.1.31.1.dylib"
        } else {
            "libonnxruntime.so.1.31.1"
        };
        std::fs::write(dir.join(name), b"").unwrap();
        assert_eq!(library_in(&dir), Some(dir.join(name)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
