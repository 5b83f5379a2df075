//! Native CUDA backend (cudarc): bf16 weights on the GPU, NVRTC-compiled kernels, cuBLAS
//! prefill, the whole decode frame (slow step, fast steps, samplings) as one CUDA graph.
//!
//! Host-side planning (weight layout, launch geometry, graph plan) is plain Rust and is tested
//! on every host; the device code is behind the `cuda` feature. Without it, [`build`] and
//! [`environment`] return [`Error::BackendUnavailable`](crate::Error::BackendUnavailable)
//! (candle's stub pattern), and with it they never panic when libcuda is absent: the library is
//! probed before any context is created.

pub(crate) mod bench;
pub mod kernels;
pub mod layout;
pub mod plan;

#[cfg(feature = "cuda-base")]
mod device;
#[cfg(feature = "cuda-base")]
mod engine;
#[cfg(feature = "cuda-base")]
mod error;
#[cfg(feature = "cuda-base")]
mod kernel_args;
#[cfg(feature = "cuda-base")]
mod launch;
#[cfg(feature = "cuda-base")]
pub mod nvrtc;
#[cfg(feature = "cuda-base")]
mod request;
#[cfg(feature = "cuda-base")]
mod selftest;
#[cfg(feature = "cuda-base")]
mod step;
#[cfg(feature = "cuda-base")]
mod weights;
// The kernels compiled for the CPU, so that the self-test's checks run in CI.
#[cfg(all(test, feature = "cuda-base"))]
mod emulator;

use crate::bundle::Bundle;
use crate::config::EngineConfig;
#[cfg(not(feature = "cuda-base"))]
use crate::error::Error;
use crate::error::Result;

use super::BackendPair;

/// What [`environment`] found: the device the backend would use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device name as the driver reports it.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Total device memory, in bytes.
    pub total_memory_bytes: usize,
}

/// One kernel check of [`kernel_selftest`].
#[derive(Debug, Clone)]
pub struct KernelCheck {
    /// Kernel and case.
    pub name: String,
    /// max |gpu - reference| / max |reference| (or a count, where the name says so).
    pub max_rel_err: f64,
    /// Largest value that passes.
    pub tolerance: f64,
    /// `max_rel_err <= tolerance`.
    pub passed: bool,
}

/// Runs every kernel once on random inputs and compares it with an f64 host reference (needs a
/// GPU; see `cuda_check selftest`).
pub fn kernel_selftest(config: &EngineConfig) -> Result<Vec<KernelCheck>> {
    #[cfg(feature = "cuda-base")]
    {
        selftest::run(config).map_err(error::CudaError::into_unavailable)
    }
    #[cfg(not(feature = "cuda-base"))]
    {
        let _ = config;
        Err(unavailable("this build has no CUDA support (built without the `cuda` feature)"))
    }
}

/// Device memory in use on card `device_id`, in bytes (total − free, every process), or `None`
/// without a driver or device. For `s1-mini bench`'s memory figure.
pub fn device_memory_in_use(device_id: u32) -> Option<u64> {
    #[cfg(feature = "cuda-base")]
    {
        device::memory_in_use(device_id as usize)
    }
    #[cfg(not(feature = "cuda-base"))]
    {
        let _ = device_id;
        None
    }
}

#[cfg(not(feature = "cuda-base"))]
fn unavailable(reason: impl Into<String>) -> Error {
    Error::BackendUnavailable { backend: "cuda", reason: reason.into() }
}

/// Whether the CUDA backend can start here (driver, device, arch >= sm_80, NVRTC), without
/// loading a model.
pub fn environment(config: &EngineConfig) -> Result<DeviceInfo> {
    #[cfg(feature = "cuda-base")]
    {
        device::probe(config).map_err(error::CudaError::into_unavailable)
    }
    #[cfg(not(feature = "cuda-base"))]
    {
        let _ = config;
        Err(unavailable("this build has no CUDA support (built without the `cuda` feature)"))
    }
}

/// The CUDA version the installed NVIDIA driver supports (e.g. "13.0"), or why there is none.
pub fn driver_version() -> Result<String> {
    #[cfg(feature = "cuda-base")]
    {
        device::driver_version().map_err(error::CudaError::into_unavailable)
    }
    #[cfg(not(feature = "cuda-base"))]
    {
        Err(unavailable("this build has no CUDA support (built without the `cuda` feature)"))
    }
}

/// Builds the CUDA transformer for `bundle`. The codec stays on the ONNX backend (see
/// docs/cuda.md), so the pair's codec is `None` and the caller adds one.
pub fn build(config: &EngineConfig, bundle: &Bundle) -> Result<BackendPair> {
    #[cfg(feature = "cuda-base")]
    {
        engine::build(config, bundle)
    }
    #[cfg(not(feature = "cuda-base"))]
    {
        let _ = (config, bundle);
        Err(unavailable("this build has no CUDA support (built without the `cuda` feature)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendKind;
    use crate::error::Error;
    use std::path::PathBuf;

    fn tiny() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
    }

    fn has_driver() -> bool {
        #[cfg(feature = "cuda-base")]
        {
            device::libcuda_present()
        }
        #[cfg(not(feature = "cuda-base"))]
        {
            false
        }
    }

    #[test]
    fn cuda_without_driver_is_backend_unavailable_with_reason() {
        if has_driver() {
            println!("skipped: this host has a CUDA driver");
            return;
        }
        let e = environment(&EngineConfig::new(tiny())).unwrap_err();
        match &e {
            Error::BackendUnavailable { backend, reason } => {
                assert_eq!(*backend, "cuda");
                assert!(reason.contains("libcuda") || reason.contains("feature"), "{reason}");
            }
            other => panic!("expected BackendUnavailable, got {other}"),
        }
        let bundle = Bundle::load(&tiny(), false).unwrap();
        let e = build(&EngineConfig::new(tiny()), &bundle).err().unwrap();
        assert!(matches!(e, Error::BackendUnavailable { backend: "cuda", .. }), "{e}");
        let e = bench::bench_random(
            &EngineConfig::new(tiny()),
            layout::ModelConfig::s1_mini(),
            8,
            8,
            false,
        )
        .unwrap_err();
        assert!(matches!(e, Error::BackendUnavailable { .. }), "{e}");
        assert_eq!(device_memory_in_use(0), None);
    }

    #[test]
    fn cuda_probe_reports_the_reason_and_auto_moves_on() {
        if has_driver() {
            println!("skipped: this host has a CUDA driver");
            return;
        }
        let config = EngineConfig::new(tiny());
        let probes = crate::backend::probe(&config);
        let (_, r) = probes.iter().find(|(k, _)| *k == BackendKind::Cuda).unwrap();
        assert!(matches!(r, Err(Error::BackendUnavailable { backend: "cuda", .. })));
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            println!("skipped: ORT_DYLIB_PATH is not set (auto needs onnx-cpu to land on)");
            return;
        }
        let bundle = Bundle::load(&tiny(), false).unwrap();
        let sel = crate::backend::select(&config, &bundle).unwrap();
        assert_ne!(sel.kind, BackendKind::Cuda);
        let skipped = sel.skipped.iter().find(|s| s.backend == BackendKind::Cuda).unwrap();
        assert!(skipped.reason.contains("cuda"), "{}", skipped.reason);
    }
}
