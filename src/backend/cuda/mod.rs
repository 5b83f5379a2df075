//! Native CUDA backend (cudarc): bf16 weights on the GPU, NVRTC-compiled kernels, cuBLAS
//! prefill, the whole decode frame (slow step, fast steps, samplings) as one CUDA graph.
//!
//! Host-side planning (weight layout, launch geometry, graph plan) is plain Rust and is tested
//! on every host; the device code is behind the `cuda` feature. Without it, [`build`] and
//! [`environment`] return [`Error::BackendUnavailable`] (candle's stub pattern), and with it they
//! never panic when libcuda is absent: the library is probed before any context is created.

pub mod kernels;
pub mod layout;
pub mod plan;

#[cfg(feature = "cuda-base")]
mod device;
#[cfg(feature = "cuda-base")]
mod engine;
#[cfg(feature = "cuda-base")]
pub mod nvrtc;

use crate::bundle::Bundle;
use crate::config::EngineConfig;
use crate::error::{Error, Result};

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

fn unavailable(reason: impl Into<String>) -> Error {
    Error::BackendUnavailable { backend: "cuda", reason: reason.into() }
}

/// Whether the CUDA backend can start here (driver, device, arch >= sm_80, NVRTC), without
/// loading a model.
pub fn environment(config: &EngineConfig) -> Result<DeviceInfo> {
    #[cfg(feature = "cuda-base")]
    {
        device::probe(config).map_err(unavailable)
    }
    #[cfg(not(feature = "cuda-base"))]
    {
        let _ = config;
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
