//! The GPU build of ONNX Runtime (onnxruntime-gpu 1.31.1, `scripts/fetch-ort-gpu.sh`) on a
//! machine without the CUDA libraries: the CUDA and TensorRT providers are compiled in, their
//! registration fails while loading the provider library, and the error names the missing
//! library with the fix (and for `tensorrt`, whether libnvinfer.so.10 exists). `auto` skips
//! both and runs on `onnx-cpu` with the same library.
//!
//! Needs `S1_TEST_ORT_GPU_DYLIB` (the GPU libonnxruntime path); without it, or on a machine where
//! the CUDA libraries do load, the tests print `skipped: <reason>` and return. A separate test
//! binary because a process loads one ONNX Runtime.
//!
//!     S1_TEST_ORT_GPU_DYLIB=$(scripts/fetch-ort-gpu.sh) cargo test --test gpu_ort_without_cuda

mod common;

use std::path::PathBuf;

use common::tiny_dir;
use s1_mini::{BackendKind, Engine, EngineConfig, Error, Request};

fn gpu_library() -> Option<PathBuf> {
    std::env::var_os("S1_TEST_ORT_GPU_DYLIB").map(PathBuf::from).filter(|p| p.is_file())
}

fn config(lib: &PathBuf) -> EngineConfig {
    EngineConfig::new(tiny_dir()).with_ort_library_path(lib).with_verify_hashes(false)
}

/// The reason of an explicit GPU backend's failure, or `None` (skip) when it loaded.
fn reason(lib: &PathBuf, kind: BackendKind) -> Option<String> {
    match Engine::new(config(lib).with_backend(kind)) {
        Ok(_) => None,
        Err(Error::BackendUnavailable { backend, reason }) => {
            assert_eq!(backend, kind.name());
            Some(reason)
        }
        Err(other) => panic!("{kind}: expected BackendUnavailable, got {other}"),
    }
}

#[test]
fn gpu_ort_without_cuda_libraries_names_the_missing_library() {
    let Some(lib) = gpu_library() else {
        println!("skipped: S1_TEST_ORT_GPU_DYLIB is not set (scripts/fetch-ort-gpu.sh)");
        return;
    };
    let Some(cuda) = reason(&lib, BackendKind::OnnxCuda) else {
        println!("skipped: onnx-cuda started here (CUDA libraries present)");
        return;
    };
    println!("onnx-cuda: {cuda}");
    // The provider library exists, so the reason is a CUDA dependency, not "no provider".
    assert!(!cuda.contains("has no CUDA execution provider"), "{cuda}");
    assert!(cuda.contains(".so."), "names a library: {cuda}");
    assert!(cuda.contains("LD_LIBRARY_PATH"), "says how to fix it: {cuda}");

    let trt =
        reason(&lib, BackendKind::TensorRt).expect("tensorrt cannot start where onnx-cuda cannot");
    println!("tensorrt: {trt}");
    assert!(trt.contains("libnvinfer.so.10"), "says whether TensorRT 10 is there: {trt}");

    // auto: both skipped with those reasons, onnx-cpu from the same (GPU) library.
    let engine = Engine::new(config(&lib)).unwrap();
    assert_eq!(engine.backend(), BackendKind::OnnxCpu);
    let skipped: Vec<BackendKind> = engine.skipped_backends().iter().map(|s| s.backend).collect();
    assert!(skipped.ends_with(&[BackendKind::TensorRt, BackendKind::OnnxCuda]), "{skipped:?}");
    let audio = engine
        .synthesize(
            &Request::new("Hi.").with_params(s1_mini::SynthParams::default().with_max_frames(4)),
        )
        .unwrap();
    assert!(!audio.samples.is_empty());
}

#[test]
fn gpu_ort_probe_reports_each_gpu_backend() {
    let Some(lib) = gpu_library() else {
        println!("skipped: S1_TEST_ORT_GPU_DYLIB is not set (scripts/fetch-ort-gpu.sh)");
        return;
    };
    for (kind, r) in s1_mini::backend::probe(&config(&lib)) {
        match (kind, r) {
            (BackendKind::OnnxCpu, r) => assert!(r.is_ok(), "{r:?}"),
            (BackendKind::OnnxCuda | BackendKind::TensorRt, Ok(())) => {
                println!("skipped: {kind} registers here (CUDA libraries present)");
            }
            (BackendKind::OnnxCuda | BackendKind::TensorRt, Err(e)) => {
                let e = e.to_string();
                assert!(e.contains(kind.name()) && e.contains(".so."), "{e}");
            }
            _ => {}
        }
    }
}
