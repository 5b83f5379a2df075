//! The kernels on the CPU, for the tests: every kernel module's CUDA C is compiled by the host's
//! C++ compiler with `emulator.h` in front (a block's threads as fibers; barriers, warp
//! shuffles and shared memory emulated), loaded as a shared library, and driven through the same
//! [`super::device::Gpu`] interface as the GPU (`Gpu::emulated`), so the self-test's kernel checks run in CI. It checks
//! what the kernels compute (indexing, reductions, barriers, the split-attention merge, the
//! sampler), with blocks in shuffled orders and threads in two orders so that missing
//! synchronisation shows; not their speed, and not the GPU's memory model (blocks never run at
//! the same time; programmatic dependent launch and caches are not modelled).

use std::ffi::{c_char, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::CudaError;
use super::kernels::{KernelModule, MODULES};
use super::plan::Dims;

type R<T> = std::result::Result<T, String>;

const HEADER: &str = include_str!("emulator.h");

/// Bytes of each `extern __shared__` array: the largest opt-in (the sampler's 96 KiB) and more.
const DYN_SHARED_BYTES: usize = 128 * 1024;

/// `s1emu_<kernel>(grid x, y, z, block x, args, error buffer, its length)` → 0 or 1.
type Launcher =
    unsafe extern "C" fn(u32, u32, u32, u32, *mut *mut c_void, *mut c_char, usize) -> i32;

/// A kernel module as C++ for the host compiler: `extern __shared__` arrays become globals of
/// [`DYN_SHARED_BYTES`] (registered so that each block starts with them NaN-filled), and every
/// entry point gets an `extern "C"` launcher.
pub(super) fn host_source(name: &str, cuda_source: &str, entries: &[&str]) -> String {
    let mut out = cuda_source.replace("extern __shared__", "extern");
    out.push_str(&format!("\n// ---- emulator definitions for {name} ----\n"));
    for decl in cuda_source.split("extern __shared__").skip(1) {
        let Some((ty_name, _)) = decl.split_once("[];") else { continue };
        let Some((ty, var)) = ty_name.trim().rsplit_once(' ') else { continue };
        out.push_str(&format!(
            "alignas(16) {ty} {var}[{DYN_SHARED_BYTES} / sizeof({ty})];\n\
             static int s1emu_dyn_{var} = s1emu::register_dyn_shared({var}, sizeof({var}));\n"
        ));
    }
    for e in entries {
        out.push_str(&format!(
            "extern \"C\" int s1emu_{e}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, \
             void** args, char* err, size_t err_len) {{\n    \
             return s1emu::launch({e}, gx, gy, gz, bx, args, err, err_len);\n}}\n"
        ));
    }
    out
}

/// The compiled kernels.
pub(super) struct Emulator {
    lib: libloading::Library,
    /// The launcher keeps its state in globals (emulator.h): one launch at a time.
    launching: std::sync::Mutex<()>,
}

/// The emulator of [`MODULES`], compiled once per test process (the tests share it; launches
/// take turns).
pub(super) fn shared() -> std::sync::Arc<Emulator> {
    static EMU: std::sync::OnceLock<std::sync::Arc<Emulator>> = std::sync::OnceLock::new();
    EMU.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("s1-mini-emulator-{}", std::process::id()));
        let emu = Emulator::build(&dir).unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::sync::Arc::new(emu)
    })
    .clone()
}

impl Emulator {
    /// Compiles every module of [`MODULES`] (C++17, `$CXX` or `c++`) into `dir`, one compiler
    /// per module in parallel, and loads the library.
    pub(super) fn build(dir: &Path) -> R<Emulator> {
        let modules: Vec<(String, String, Vec<&str>)> = MODULES
            .iter()
            .map(|m: &KernelModule| (m.name.to_string(), m.source(), m.entries.to_vec()))
            .collect();
        Self::build_modules(dir, &modules)
    }

    /// Compiles `(name, CUDA source, entry points)` modules into `dir` and loads them.
    pub(super) fn build_modules(
        dir: &Path,
        modules: &[(String, String, Vec<&str>)],
    ) -> R<Emulator> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let header = dir.join("emulator.h");
        std::fs::write(&header, HEADER).map_err(|e| format!("{}: {e}", header.display()))?;
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let flags = ["-std=c++17", "-O1", "-fPIC", "-fno-strict-aliasing", "-w"];
        let mut objects: Vec<PathBuf> = Vec::new();
        let mut jobs = Vec::new();
        for (i, (name, src, entries)) in modules.iter().enumerate() {
            let cpp = dir.join(format!("{name}.cpp"));
            let obj = dir.join(format!("{name}.o"));
            std::fs::write(&cpp, host_source(name, src, entries))
                .map_err(|e| format!("{}: {e}", cpp.display()))?;
            // The fiber switch (emulator.h) is defined in the first module only.
            let define_switch = if i == 0 { "-DS1EMU_DEFINE_SWITCH" } else { "-DS1EMU_MODULE" };
            let child = Command::new(&cxx)
                .args(flags)
                .arg(define_switch)
                .arg("-include")
                .arg(&header)
                .arg("-c")
                .arg(&cpp)
                .arg("-o")
                .arg(&obj)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run the C++ compiler `{cxx}` (set CXX): {e}"))?;
            jobs.push((name.clone(), child));
            objects.push(obj);
        }
        for (name, child) in jobs {
            let out = child.wait_with_output().map_err(|e| format!("{cxx}: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{cxx} failed on {name}.cu as C++:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let lib = dir.join("libs1emu.so");
        let out = Command::new(&cxx)
            .arg("-shared")
            .args(&objects)
            .arg("-o")
            .arg(&lib)
            .output()
            .map_err(|e| format!("{cxx}: {e}"))?;
        if !out.status.success() {
            return Err(format!("linking failed:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
        // SAFETY: the library was just built from our sources; its initialisers only register
        // the shared-memory arrays.
        let lib = unsafe { libloading::Library::new(&lib) }
            .map_err(|e| format!("{}: {e}", lib.display()))?;
        Ok(Emulator { lib, launching: std::sync::Mutex::new(()) })
    }
}

impl Emulator {
    /// Runs kernel `name` to completion.
    ///
    /// # Safety
    /// As [`super::device::Gpu::launch`]: `args` match the kernel's signature and address live
    /// (host) buffers large enough for the launch.
    pub(super) unsafe fn launch(
        &self,
        name: &str,
        dims: Dims,
        args: &mut [*mut c_void],
    ) -> Result<(), CudaError> {
        let failed = |reason: String| CudaError::Launch { kernel: name.to_string(), reason };
        if dims.shared_bytes as usize > DYN_SHARED_BYTES {
            return Err(failed(format!("{} bytes of dynamic shared memory", dims.shared_bytes)));
        }
        let symbol = format!("s1emu_{name}\0");
        // SAFETY: every s1emu_* symbol is a launcher of the `Launcher` type (host_source).
        let f: libloading::Symbol<Launcher> = unsafe { self.lib.get(symbol.as_bytes()) }
            .map_err(|e| failed(format!("not in the emulator: {e}")))?;
        let mut err = [0 as c_char; 256];
        let (gx, gy, gz) = dims.grid;
        let _turn = self.launching.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the caller's contract (the arguments match the kernel and address live
        // buffers); `err` outlives the call and its length is passed.
        let rc =
            unsafe { f(gx, gy, gz, dims.block, args.as_mut_ptr(), err.as_mut_ptr(), err.len()) };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: the launcher wrote a NUL-terminated message (snprintf) into `err`.
        let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
        Err(failed(msg.to_string_lossy().into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::device::{args, Gpu};
    use crate::backend::cuda::selftest;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("s1-mini-emulator-{name}-{}", std::process::id()))
    }

    /// Every kernel check of `cuda_check selftest` (bench/gpu_check.sh), on the CPU: the same
    /// random inputs, host models and tolerances; fewer sampler draws (each is a 1024-fiber
    /// block). The cuBLAS GEMM is the GPU's own and is not emulated.
    #[test]
    fn emulator_runs_every_kernel_check_of_the_self_test() {
        let checks = selftest::checks(&Gpu::emulated(shared(), 8), 3);
        let mut failed = Vec::new();
        for c in &checks {
            println!("{:<70} {:.3e} (tolerance {:.1e})", c.name, c.max_rel_err, c.tolerance);
            if !c.passed && !c.name.starts_with("cublas gemm_bf16") {
                failed.push(c.name.clone());
            }
        }
        assert!(failed.is_empty(), "failed on the CPU: {failed:?}");
        // 6 GEMV, SwiGLU, 4 int8, RMSNorm, 2 × (3 RoPE + 3 attention), 2 × 4 × 2 attention with
        // the RoPE prologue, embedding, 4 sampler cases.
        let run = checks.iter().filter(|c| !c.name.starts_with("cublas")).count();
        assert_eq!(run, 45, "kernel checks that ran");
    }

    /// The emulator itself: a block whose threads wait at different barriers is reported as a
    /// deadlock, a thread that returned early does not hold a barrier, and a read of shared
    /// memory without the barrier before it sees the wrong value in one of the two orders.
    #[test]
    fn emulator_reports_deadlocks_and_exposes_missing_barriers() {
        let src = r#"
extern "C" __global__ void mismatched(int* out) {
    if (threadIdx.x < 16) __syncthreads();
    else out[0] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}
extern "C" __global__ void early_exit(int* out) {
    __shared__ int v[64];
    if (threadIdx.x >= 32) return;
    v[threadIdx.x] = (int)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = v[31 - threadIdx.x] + __shfl_xor_sync(0xffffffffu, 0, 1);
}
extern "C" __global__ void racy(int* out) {
    __shared__ int v[64];
    v[threadIdx.x] = (int)threadIdx.x + 1;
    out[threadIdx.x] = v[63 - threadIdx.x];  // no __syncthreads() between the write and the read
}
"#;
        let dir = scratch("self");
        let modules =
            vec![("t".to_string(), src.to_string(), vec!["mismatched", "early_exit", "racy"])];
        let emu = Emulator::build_modules(&dir, &modules).unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_dir_all(&dir);
        let emu = Gpu::emulated(std::sync::Arc::new(emu), 8);
        let out = emu.alloc(64 * 4).unwrap();
        let dims = |block| Dims { grid: (1, 1, 1), block, shared_bytes: 0 };
        let op = out.ptr();
        // SAFETY: each test kernel takes one int* of 64 ints.
        let r = unsafe { emu.launch("mismatched", dims(32), &mut args![op]) };
        assert!(r.as_ref().is_err_and(|e| e.to_string().contains("deadlock")), "{r:?}");
        // SAFETY: as above.
        unsafe { emu.launch("early_exit", dims(64), &mut args![op]) }.unwrap();
        let mut got = [0i32; 64];
        emu.download(&mut got, op).unwrap();
        assert!((0..32).all(|i| got[i] == 31 - i as i32), "{:?}", &got[..32]);
        // SAFETY: as above.
        unsafe { emu.launch("racy", dims(64), &mut args![op]) }.unwrap();
        emu.download(&mut got, op).unwrap();
        let right = (0..64).filter(|&i| got[i] == 64 - i as i32).count();
        assert!(right < 64, "the missing barrier went unnoticed");
    }
}
