//! The CUDA backend's own error (candle's `cuda_backend/error.rs` pattern): what failed below
//! the engine (a driver call, cuBLAS, NVRTC, a launch, host-side setup), lifted into the crate's
//! one [`Error`] where the backend hands a result to the rest of s1-mini.

use cudarc::driver::result::DriverError;

use crate::error::Error;

/// The backend's results below the crate boundary.
pub(super) type CudaResult<T> = std::result::Result<T, CudaError>;

/// The backend's name in [`Error::BackendUnavailable`] and [`Error::Backend`].
pub(super) const BACKEND: &str = "cuda";

/// A failure inside the CUDA backend. Each message is the text the backend reported before it
/// had this type (the driver's code by its `CUresult` name, the call that returned it).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CudaError {
    // === This host cannot run the backend ===
    /// No driver library, no device, an architecture below sm_80, no NVRTC, a panic while
    /// opening the driver: the backend is unavailable here.
    #[error("{0}")]
    Unavailable(String),

    // === Run-time failures ===
    /// A driver call failed; `call` names it (`cuMemAlloc(4096 bytes)`, `launch gemv_bf16`).
    #[error("{call}: {result:?}")]
    Driver {
        /// The driver call (and what it was for).
        call: String,
        /// The driver's status, printed by its `CUresult` name.
        result: DriverError,
    },
    /// A cuBLAS call returned a status other than success.
    #[error("{call}: {status}")]
    Blas {
        /// The cuBLAS function.
        call: &'static str,
        /// Its `cublasStatus_t`, by name.
        status: String,
    },
    /// NVRTC rejected a kernel module (or panicked compiling it); the message names the module,
    /// the architecture and carries NVRTC's log.
    #[error("{0}")]
    Compile(String),
    /// A kernel launch failed before reaching the driver (the emulator's checks, in tests).
    #[cfg(test)]
    #[error("{kernel}: {reason}")]
    Launch {
        /// Kernel entry point.
        kernel: String,
        /// What went wrong.
        reason: String,
    },
    /// A kernel the launch names was not loaded from the compiled modules.
    #[error("kernel {0} not loaded")]
    MissingKernel(String),
    /// Reading the weights failed (the crate error of the safetensors reader, as text).
    #[error("{0}")]
    Weights(String),
    /// Host memory for emulated device buffers (tests).
    #[cfg(test)]
    #[error("{0}")]
    Host(String),
    /// A broken invariant of the backend's own bookkeeping (no workspace, no captured graph).
    #[error("{0}")]
    Invariant(String),
}

impl CudaError {
    /// Shorthand for a failed driver call.
    #[cold]
    pub(super) fn driver(call: impl Into<String>, result: DriverError) -> Self {
        CudaError::Driver { call: call.into(), result }
    }

    /// Shorthand for [`CudaError::Invariant`].
    #[cold]
    pub(super) fn invariant(what: impl Into<String>) -> Self {
        CudaError::Invariant(what.into())
    }

    /// This error as the reason the backend cannot start ([`Error::BackendUnavailable`]),
    /// whatever its kind: opening the device, probing it and the self-test report any failure
    /// that way.
    #[cold]
    pub(super) fn into_unavailable(self) -> Error {
        Error::BackendUnavailable { backend: BACKEND, reason: self.to_string() }
    }

    /// This error as a failed backend call in operation `op` ([`Error::Backend`]).
    #[cold]
    pub(super) fn during(self, op: &str) -> Error {
        Error::Backend { backend: BACKEND, op: op.to_string(), message: self.to_string() }
    }

    /// The operation [`From`] names when the call site gives none.
    fn kind(&self) -> &'static str {
        match self {
            CudaError::Unavailable(_) => "probe",
            CudaError::Driver { .. } => "driver",
            CudaError::Blas { .. } => "cublas",
            CudaError::Compile(_) => "nvrtc",
            #[cfg(test)]
            CudaError::Launch { .. } => "launch",
            CudaError::MissingKernel(_) => "launch",
            CudaError::Weights(_) => "load weights",
            #[cfg(test)]
            CudaError::Host(_) => "host memory",
            CudaError::Invariant(_) => "state",
        }
    }
}

impl From<CudaError> for Error {
    /// [`CudaError::Unavailable`] → [`Error::BackendUnavailable`] (C status
    /// `S1_STATUS_BACKEND_UNAVAILABLE`); every other kind → [`Error::Backend`]
    /// (`S1_STATUS_BACKEND_FAILED`), as the backend mapped its string errors before.
    #[cold]
    fn from(e: CudaError) -> Self {
        match e {
            CudaError::Unavailable(reason) => {
                Error::BackendUnavailable { backend: BACKEND, reason }
            }
            other => {
                let op = other.kind();
                other.during(op)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    // A `Driver` error is not formatted here: its message asks libcuda for the code's
    // description (cuGetErrorString), and CI hosts have no driver.
    #[test]
    fn cuda_error_keeps_the_message_and_the_status() {
        let e =
            CudaError::Blas { call: "cublasGemmEx", status: "CUBLAS_STATUS_NOT_SUPPORTED".into() };
        assert_eq!(e.to_string(), "cublasGemmEx: CUBLAS_STATUS_NOT_SUPPORTED");
        let lifted = Error::from(e);
        assert_eq!(lifted.status(), Status::BackendFailed);
        assert_eq!(
            lifted.to_string(),
            "backend cuda failed in cublas: cublasGemmEx: CUBLAS_STATUS_NOT_SUPPORTED"
        );
        let e = Error::from(CudaError::Unavailable("no CUDA device is visible".into()));
        assert_eq!(e.status(), Status::BackendUnavailable);
        assert_eq!(e.to_string(), "backend cuda unavailable: no CUDA device is visible");
        let e = CudaError::invariant("no captured graph").during("graph");
        assert_eq!(e.status(), Status::BackendFailed);
        assert_eq!(e.to_string(), "backend cuda failed in graph: no captured graph");
        let e = CudaError::MissingKernel("gemv_bf16".into()).into_unavailable();
        assert_eq!(e.to_string(), "backend cuda unavailable: kernel gemv_bf16 not loaded");
    }
}
