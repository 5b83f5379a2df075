//! Shared helpers of the integration tests: the tiny fixture bundle and the ONNX Runtime library.
//!
//! The fixture `tests/fixtures/tiny/` is made by `tools/export/make_golden.py` (its README gives
//! the command). Tests that run graphs need libonnxruntime through `ORT_DYLIB_PATH`; without it
//! they fail (never skip) with the command that fetches it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use s1_mini::{Engine, EngineConfig};

/// The tiny bundle (override with `S1_MINI_TINY_BUNDLE` to test another export).
pub fn tiny_dir() -> PathBuf {
    match std::env::var_os("S1_MINI_TINY_BUNDLE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny"),
    }
}

pub fn golden(name: &str) -> PathBuf {
    tiny_dir().join("golden").join(name)
}

/// Path of libonnxruntime from `ORT_DYLIB_PATH`; panics with the fix when it is missing.
pub fn ort_library() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from) {
        Some(p) if p.is_file() => p,
        other => panic!(
            "libonnxruntime not found (ORT_DYLIB_PATH={other:?}): run `export ORT_DYLIB_PATH=$(scripts/fetch-ort.sh)` \
             from the repository root, then rerun the tests"
        ),
    }
}

pub fn config(dir: &Path) -> EngineConfig {
    EngineConfig::new(dir).with_ort_library_path(ort_library())
}

/// An engine on the tiny bundle (hash check on, as by default).
pub fn tiny_engine() -> Engine {
    Engine::new(config(&tiny_dir())).expect("tiny engine")
}

/// An engine on the tiny bundle created through the C ABI (`s1_engine_new` with the defaults of
/// `s1_engine_config_default`, this bundle and library); `verify_hashes` as given.
pub fn c_tiny_engine(verify_hashes: bool) -> *mut s1_mini::ffi::engine::s1_engine {
    use s1_mini::ffi::engine::{s1_engine_config_default, s1_engine_new};
    use s1_mini::Status;
    use std::ffi::CString;
    let dir = CString::new(tiny_dir().to_string_lossy().into_owned()).unwrap();
    let ort = CString::new(ort_library().to_string_lossy().into_owned()).unwrap();
    let mut cfg = std::mem::MaybeUninit::uninit();
    // SAFETY: writable struct.
    assert_eq!(unsafe { s1_engine_config_default(cfg.as_mut_ptr()) }, Status::Ok);
    // SAFETY: initialised above.
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.bundle_dir = dir.as_ptr();
    cfg.ort_library_path = ort.as_ptr();
    cfg.verify_hashes = u8::from(verify_hashes);
    let mut engine = std::ptr::null_mut();
    // SAFETY: valid config (its strings outlive the call) and out pointer.
    assert_eq!(unsafe { s1_engine_new(&cfg, &mut engine) }, Status::Ok);
    engine
}

/// A golden reference's `codes` (a JSON array of K rows of frame values) as [`s1_mini::Codes`].
pub fn json_codes(rows: &serde_json::Value) -> s1_mini::Codes {
    let rows: Vec<Vec<i64>> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect())
        .collect();
    s1_mini::Codes::new(rows.len(), s1_mini::Frames(rows[0].len()), rows.concat()).unwrap()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read json")).expect("parse json")
}

/// A fresh copy of the tiny bundle (without golden/) in a temp dir, to break on purpose.
pub fn bundle_copy(tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("s1mini-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(tiny_dir()).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    dst
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The tiny fixture quantised to `precision` (int8 | int4, fp16 KV cache: the quantiser's
/// defaults) by the exporter's quantiser (`python -m s1mini_export.quantize`, from the
/// project's .venv, which scripts/setup-python.sh creates), made once per test process.
#[allow(dead_code)]
pub fn quantized(precision: &str) -> PathBuf {
    quantized_as(precision, &["--precision", precision])
}

/// The tiny fixture quantised to int4 with the codec's decoder convolutions int8
/// (`--codec int8`, lossy), made once per test process.
#[allow(dead_code)]
pub fn quantized_codec_int8() -> PathBuf {
    quantized_as("int4-codec-int8", &["--precision", "int4", "--codec", "int8"])
}

/// The tiny fixture through `python -m s1mini_export.quantize ARGS` into a temp dir `name`.
fn quantized_as(name: &str, args: &[&str]) -> PathBuf {
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let root = MADE.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("s1mini-quantized-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    });
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = root.join(name);
    if !out.exists() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = repo.join(".venv/bin/python");
        assert!(python.exists(), "{} missing: run scripts/setup-python.sh", python.display());
        let st = std::process::Command::new(python)
            .env("PYTHONPATH", repo.join("tools/export"))
            .args(["-m", "s1mini_export.quantize"])
            .args(args)
            .arg("--bundle")
            .arg(tiny_dir())
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "quantiser failed for {name}");
    }
    out
}
