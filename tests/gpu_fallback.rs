//! GPU backend selection on a CPU-only machine: with the CPU-only onnxruntime wheel
//! (`scripts/fetch-ort.sh`), registering the CUDA or TensorRT execution provider fails, so an
//! explicit `onnx-cuda` / `tensorrt` is `BackendUnavailable` with the reason and the fix, and
//! `auto` logs each skip and lands on `onnx-cpu`. Also: option validation, cache dir handling.
//!
//! On a machine with the onnxruntime-gpu libraries these expectations do not hold; the tests
//! then print `skipped: <reason>` and return (STYLE.md §22).

mod common;

use std::path::PathBuf;
use std::sync::Mutex;

use common::{config, tiny_dir};
use s1_mini::config::{CudnnConvAlgoSearch, GraphOptimization, PromptProfile, TensorRtPrecision};
use s1_mini::{BackendKind, Engine, EngineConfig, Error, Status};

/// Log records of this test binary (the `log` facade has one global logger per process).
static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        RECORDS.lock().unwrap().push(format!("{} {}", r.level(), r.args()));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static LOGGER: Capture = Capture;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// `Some(reason)` when this ONNX Runtime has GPU providers, so the CPU-only expectations below
/// do not apply.
fn gpu_ort_reason() -> Option<String> {
    let probe = s1_mini::backend::probe(&config(&tiny_dir()));
    probe
        .iter()
        .find(|(k, r)| matches!(k, BackendKind::OnnxCuda | BackendKind::TensorRt) && r.is_ok())
        .map(|(k, _)| {
            format!("this ONNX Runtime can register {k}; the CPU-only expectations do not apply")
        })
}

fn unavailable(kind: BackendKind) -> (String, Status) {
    let err = Engine::new(config(&tiny_dir()).with_backend(kind)).unwrap_err();
    let status = err.status();
    match err {
        Error::BackendUnavailable { backend, reason } => {
            assert_eq!(backend, kind.name());
            (reason, status)
        }
        other => panic!("{kind}: expected BackendUnavailable, got {other:?}"),
    }
}

#[test]
fn explicit_onnx_cuda_on_cpu_ort_is_unavailable_with_fix() {
    if let Some(r) = gpu_ort_reason() {
        println!("skipped: {r}");
        return;
    }
    let (reason, status) = unavailable(BackendKind::OnnxCuda);
    assert_eq!(status, Status::BackendUnavailable);
    assert!(reason.contains("has no CUDA execution provider"), "{reason}");
    assert!(reason.contains("onnxruntime-gpu"), "{reason}");
    assert!(reason.contains("CUDA 13"), "{reason}");
}

#[test]
fn explicit_tensorrt_on_cpu_ort_is_unavailable_with_fix() {
    if let Some(r) = gpu_ort_reason() {
        println!("skipped: {r}");
        return;
    }
    let (reason, status) = unavailable(BackendKind::TensorRt);
    assert_eq!(status, Status::BackendUnavailable);
    assert!(reason.contains("has no TensorRT execution provider"), "{reason}");
    assert!(reason.contains("onnxruntime-gpu"), "{reason}");
}

#[test]
fn auto_on_cpu_ort_skips_gpu_backends_in_order_and_logs() {
    if let Some(r) = gpu_ort_reason() {
        println!("skipped: {r}");
        return;
    }
    capture_logs();
    let engine = Engine::new(config(&tiny_dir())).unwrap();
    assert_eq!(engine.backend(), BackendKind::OnnxCpu);
    let skipped: Vec<BackendKind> = engine.skipped_backends().iter().map(|s| s.backend).collect();
    // The native cuda backend may exist in this build (feature `cuda`); without a GPU it is
    // skipped too. Whatever is skipped, the order is auto's.
    assert!(
        skipped.ends_with(&[BackendKind::TensorRt, BackendKind::OnnxCuda]),
        "skipped {skipped:?}"
    );
    assert_eq!(skipped.first(), Some(&BackendKind::Cuda), "skipped {skipped:?}");
    for s in engine.skipped_backends() {
        assert!(!s.reason.is_empty());
    }
    let trt = &engine.skipped_backends()[skipped.len() - 2];
    assert!(trt.reason.contains("TensorRT execution provider"), "{}", trt.reason);
    let logs = RECORDS.lock().unwrap().clone();
    for kind in ["cuda", "tensorrt", "onnx-cuda"] {
        let needle = format!("auto: skipped {kind}:");
        assert!(logs.iter().any(|l| l.contains(&needle)), "no `{needle}` in {logs:#?}");
    }
    assert!(logs.iter().any(|l| l.contains("backend onnx-cpu selected")), "{logs:#?}");
}

#[test]
fn probe_reports_every_backend_with_reason() {
    if let Some(r) = gpu_ort_reason() {
        println!("skipped: {r}");
        return;
    }
    let probe = s1_mini::backend::probe(&config(&tiny_dir()));
    let kinds: Vec<BackendKind> = probe.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, BackendKind::PREFERENCE);
    for (kind, r) in &probe {
        match kind {
            BackendKind::OnnxCpu => assert!(r.is_ok(), "{r:?}"),
            BackendKind::OnnxCuda | BackendKind::TensorRt => {
                let e = r.as_ref().unwrap_err().to_string();
                assert!(e.contains(kind.name()) && e.contains("onnxruntime-gpu"), "{e}");
            }
            _ => {}
        }
    }
}

#[test]
fn probe_without_library_names_the_gpu_backend() {
    let c = EngineConfig::new(tiny_dir()).with_ort_library_path("/nonexistent/libonnxruntime.so");
    for (kind, r) in s1_mini::backend::probe(&c) {
        if kind == BackendKind::Cuda {
            continue;
        }
        match r {
            Err(Error::BackendUnavailable { backend, reason }) => {
                assert_eq!(backend, kind.name());
                assert!(reason.contains("fetch-ort.sh"), "{reason}");
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
}

fn invalid(c: EngineConfig) -> (&'static str, String) {
    let err = Engine::new(c).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "{err}");
    match err {
        Error::InvalidArgument { name, reason } => (name, reason),
        other => panic!("{other:?}"),
    }
}

#[test]
fn engine_config_validation_names_the_option() {
    let base = || config(&tiny_dir()).with_backend(BackendKind::OnnxCpu);
    let cases: Vec<(EngineConfig, &str)> = vec![
        (base().with_device_id(u32::MAX), "device_id"),
        (base().with_intra_op_threads(100_000), "intra_op_threads"),
        (base().with_inter_op_threads(100_000), "inter_op_threads"),
        (base().with_tensorrt_workspace_bytes(4096), "tensorrt_workspace_bytes"),
        (base().with_tensorrt_precision(TensorRtPrecision::Int8), "tensorrt_int8_calibration_file"),
        (
            base()
                .with_tensorrt_precision(TensorRtPrecision::Int8)
                .with_tensorrt_int8_calibration_file("sentences.txt"),
            "cache_dir",
        ),
        (
            base().with_tensorrt_int8_calibration_file("sentences.txt"),
            "tensorrt_int8_calibration_file",
        ),
        (
            base().with_tensorrt_profile(PromptProfile { opt_tokens: 0, max_tokens: 0 }),
            "tensorrt_profile",
        ),
    ];
    for (c, want) in cases {
        let (name, reason) = invalid(c);
        assert_eq!(name, want, "{reason}");
        assert!(!reason.is_empty());
    }
}

#[test]
fn every_option_value_runs_on_cpu() {
    // The session options the CPU path uses (optimisation level, threads) take every value;
    // the GPU-only ones are accepted and ignored by onnx-cpu.
    for level in GraphOptimization::ALL {
        let c = config(&tiny_dir())
            .with_backend(BackendKind::OnnxCpu)
            .with_verify_hashes(false)
            .with_graph_optimization(*level)
            .with_inter_op_threads(2)
            .with_intra_op_threads(1)
            .with_device_id(1)
            .with_cudnn_conv_algo_search(CudnnConvAlgoSearch::Heuristic)
            .with_tensorrt_workspace_bytes(1 << 30);
        let e = Engine::new(c).unwrap_or_else(|e| panic!("{level}: {e}"));
        assert_eq!(e.backend(), BackendKind::OnnxCpu);
    }
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("s1mini-gpu-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn cache_dir_is_created_when_missing() {
    let root = scratch("cache-new");
    let dir = root.join("a/b/trt-cache");
    let c = config(&tiny_dir()).with_backend(BackendKind::OnnxCpu).with_cache_dir(&dir);
    Engine::new(c).unwrap();
    assert!(dir.is_dir());
    // The write probe was removed; what is left are the bundle files' verification stamps and
    // ONNX Runtime's optimised graphs.
    let mut names: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["onnx", "verified"]);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn cache_dir_that_cannot_be_created_is_an_error() {
    let root = scratch("cache-file");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    for dir in [file.clone(), file.join("sub")] {
        let c = config(&tiny_dir()).with_cache_dir(&dir);
        let (name, reason) = invalid(c);
        assert_eq!(name, "cache_dir");
        assert!(reason.contains(&file.display().to_string()), "{reason}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[cfg(unix)]
#[test]
fn cache_dir_without_write_permission_is_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("cache-ro");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    // root writes anyway: then there is nothing to test here.
    if std::fs::write(dir.join("probe"), b"x").is_ok() {
        println!("skipped: running with permission to write into read-only directories (root)");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    }
    let (name, reason) = invalid(config(&tiny_dir()).with_cache_dir(&dir));
    assert_eq!(name, "cache_dir");
    assert!(reason.contains("not writable"), "{reason}");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
