//! `s1_engine`: a loaded model bundle on one backend.
use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::Arc;

use super::convert::{self, flag};
use super::guard;
use crate::{Engine, EngineConfig, Status};

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
}

/// Size of the first published `s1_engine_config`; smaller `struct_size` values are rejected.
const CONFIG_V1_SIZE: usize = std::mem::size_of::<s1_engine_config>();

impl s1_engine_config {
    fn from_rust(c: &EngineConfig) -> Self {
        s1_engine_config {
            struct_size: std::mem::size_of::<Self>() as u32,
            intra_op_threads: c.intra_op_threads as u32,
            bundle_dir: std::ptr::null(),
            backend: std::ptr::null(),
            ort_library_path: std::ptr::null(),
            verify_hashes: c.verify_hashes as u8,
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
                "config",
            )
        }?;
        // SAFETY: the strings are NULL or NUL-terminated and live for this call (contract).
        let bundle_dir = unsafe { convert::utf8_arg(c.bundle_dir, "config.bundle_dir") }?;
        let backend = unsafe { convert::opt_utf8_arg(c.backend, "config.backend") }?;
        let ort = unsafe { convert::opt_utf8_arg(c.ort_library_path, "config.ort_library_path") }?;
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
        rc.intra_op_threads = c.intra_op_threads as usize;
        let engine = Engine::new(rc)?;
        let handle = convert::into_handle::<Engine, s1_engine>(Arc::new(engine));
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
