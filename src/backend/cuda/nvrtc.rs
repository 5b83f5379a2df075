//! NVRTC: finding the library and compiling the kernel modules to PTX, with a disk cache.
//!
//! NVRTC is opened at run time by cudarc (`libnvrtc.so.13`). Where it is not on the loader path,
//! `S1_NVRTC_PATH` names its directory (or the library file): the library is opened from there
//! first, so that cudarc's by-name lookup finds the already loaded copy.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::error::CudaError;
use super::kernels::{self, KernelModule};

/// Environment variable naming NVRTC's directory or library file.
pub const NVRTC_PATH_ENV: &str = "S1_NVRTC_PATH";

static PRELOADED: OnceLock<Result<Vec<PathBuf>, String>> = OnceLock::new();

/// Candidate library files in a directory given by [`NVRTC_PATH_ENV`], builtins first (libnvrtc
/// opens them by name at compile time).
fn candidates(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for p in &names {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if n.starts_with("libnvrtc-builtins.so") {
                out.push(p.clone());
            }
        }
        for p in &names {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if n.starts_with("libnvrtc.so") {
                out.push(p.clone());
            }
        }
    }
    out
}

/// Opens NVRTC from [`NVRTC_PATH_ENV`] if set (once per process) and checks that cudarc can find
/// it. Returns a reason ([`CudaError::Unavailable`]) when NVRTC is not available.
pub(crate) fn ensure_nvrtc() -> Result<(), CudaError> {
    let pre = PRELOADED.get_or_init(|| {
        let Some(p) = std::env::var_os(NVRTC_PATH_ENV) else { return Ok(Vec::new()) };
        let p = PathBuf::from(p);
        let files = if p.is_dir() { candidates(&p) } else { vec![p.clone()] };
        if !files.iter().any(|f| f.to_string_lossy().contains("libnvrtc.so")) {
            return Err(format!("{NVRTC_PATH_ENV}={} holds no libnvrtc.so*", p.display()));
        }
        for f in &files {
            // SAFETY: loading NVRTC runs its initialisers, which have no preconditions; the
            // handle is leaked on purpose so the library stays mapped for the process lifetime
            // (cudarc resolves its symbols by soname later).
            match unsafe { libloading::Library::new(f) } {
                Ok(lib) => std::mem::forget(lib),
                Err(e) => return Err(format!("cannot open {}: {e}", f.display())),
            }
        }
        Ok(files)
    });
    pre.as_ref().map(|_| ()).map_err(|e| CudaError::Unavailable(e.clone()))?;
    // SAFETY: only tries to dlopen the library names cudarc knows; no other effect.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaError::Unavailable(format!(
            "NVRTC (libnvrtc.so.13) not found: install the CUDA toolkit or the `nvidia-cuda-nvrtc` \
             wheel, or set {NVRTC_PATH_ENV} to its lib directory (scripts/fetch-nvrtc.sh)"
        )))
    }
}

/// Compiles one module to PTX for `arch` (`compute_90`). Panics inside cudarc are caught.
pub(crate) fn compile(module: &KernelModule, arch: &str) -> Result<String, CudaError> {
    ensure_nvrtc()?;
    let src = module.source();
    // cudarc's CompileOptions wants a &'static str arch.
    let arch_static: &'static str = match arch {
        "compute_80" => "compute_80",
        "compute_86" => "compute_86",
        "compute_87" => "compute_87",
        "compute_89" => "compute_89",
        "compute_90" => "compute_90",
        "compute_100" => "compute_100",
        "compute_120" => "compute_120",
        other => {
            return Err(CudaError::Unavailable(format!(
                "unsupported GPU architecture {other} (needs sm_80 or newer)"
            )))
        }
    };
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(arch_static),
        options: kernels::NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect(),
        name: Some(format!("{}.cu", module.name)),
        ..Default::default()
    };
    let r = std::panic::catch_unwind(|| cudarc::nvrtc::compile_ptx_with_opts(src, opts));
    match r {
        Ok(Ok(ptx)) => Ok(ptx.to_src()),
        Ok(Err(cudarc::nvrtc::CompileError::CompileError { log, .. })) => Err(CudaError::Compile(
            format!("NVRTC failed on {}.cu for {arch}:\n{}", module.name, log.to_string_lossy()),
        )),
        Ok(Err(e)) => {
            Err(CudaError::Compile(format!("NVRTC failed on {}.cu for {arch}: {e}", module.name)))
        }
        Err(_) => {
            Err(CudaError::Compile(format!("NVRTC panicked while compiling {}.cu", module.name)))
        }
    }
}

/// PTX of `module` for `arch`, from `cache_dir/<key>.ptx` when present, else compiled and stored
/// there (best effort: a cache that cannot be written is skipped).
pub(crate) fn compile_cached(
    module: &KernelModule,
    arch: &str,
    cache_dir: Option<&Path>,
) -> Result<String, CudaError> {
    let path = cache_dir
        .map(|d| d.join(format!("{}-{}.ptx", module.name, kernels::cache_key(module, arch))));
    if let Some(p) = &path {
        if let Ok(s) = std::fs::read_to_string(p) {
            if s.contains(".entry") {
                return Ok(s);
            }
        }
    }
    let ptx = compile(module, arch)?;
    if let Some(p) = &path {
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let tmp = p.with_extension("ptx.tmp");
        if std::fs::write(&tmp, &ptx).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
    Ok(ptx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC for the tests: S1_NVRTC_PATH, else vendor/nvrtc/lib (scripts/fetch-nvrtc.sh).
    fn nvrtc_for_tests() {
        if std::env::var_os(NVRTC_PATH_ENV).is_none() {
            let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/nvrtc/lib");
            if d.is_dir() {
                std::env::set_var(NVRTC_PATH_ENV, d);
            }
        }
        if let Err(e) = ensure_nvrtc() {
            panic!(
                "kernel compile test needs NVRTC and found none: {e}\n\
                 run `scripts/fetch-nvrtc.sh` (PyPI wheel nvidia-cuda-nvrtc) or set {NVRTC_PATH_ENV}"
            );
        }
    }

    #[test]
    fn kernels_every_module_compiles_with_nvrtc_for_sm90_and_sm80() {
        nvrtc_for_tests();
        for arch in ["compute_90", "compute_80"] {
            for m in kernels::MODULES {
                let ptx = compile(m, arch).unwrap_or_else(|e| panic!("{e}"));
                for e in m.entries {
                    assert!(
                        ptx.contains(&format!(".entry {e}(")),
                        "{}.cu ({arch}): entry {e} missing from PTX",
                        m.name
                    );
                }
                // Register arrays must stay in registers: no local-memory stack frames.
                assert!(!ptx.contains(".local"), "{}.cu ({arch}) uses local memory", m.name);
            }
        }
    }

    /// The PTX text of each `.entry` (NVRTC inlines every device function into its kernel).
    fn entry_bodies(ptx: &str) -> Vec<(String, String)> {
        ptx.split(".entry ")
            .skip(1)
            .map(|b| {
                let name: String =
                    b.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                (name, b.to_string())
            })
            .collect()
    }

    /// Programmatic dependent launch is only sound if every kernel waits for its predecessor
    /// before it writes global memory or reads anything but weights (common.cuh, pdl_enter):
    /// in the sm_90 PTX of every kernel, `griddepcontrol.wait` comes before the first global
    /// store or atomic, and only the GEMVs load before it, through the read-only path
    /// (`ld.global.nc`: their weights, by __ldg). The sm_80 PTX must not contain the instruction at all.
    #[test]
    fn kernels_every_kernel_waits_before_it_writes() {
        nvrtc_for_tests();
        let mut kernels = 0;
        for m in kernels::MODULES {
            let ptx = compile(m, "compute_90").unwrap_or_else(|e| panic!("{e}"));
            for (name, body) in entry_bodies(&ptx) {
                kernels += 1;
                let wait = body
                    .find("griddepcontrol.wait")
                    .unwrap_or_else(|| panic!("{name}: no griddepcontrol.wait"));
                assert!(body.contains("griddepcontrol.launch_dependents"), "{name}: no trigger");
                let before = &body[..wait];
                for op in ["\tst.global", "\tatom.", "\tred.", "\tld.volatile"] {
                    assert!(!before.contains(op), "{name}: `{op}` before griddepcontrol.wait");
                }
                // Only the GEMVs prefetch (their weights, through __ldg); no other kernel reads
                // global memory before it waits.
                for line in before.lines().filter(|l| l.contains("ld.global")) {
                    assert!(
                        name.starts_with("gemv_") && line.contains("ld.global.nc"),
                        "{name}: a load that is not a weight prefetch before the wait: {line}"
                    );
                }
            }
            let ptx80 = compile(m, "compute_80").unwrap_or_else(|e| panic!("{e}"));
            assert!(!ptx80.contains("griddepcontrol"), "{}.cu: griddepcontrol on sm_80", m.name);
        }
        let entries: usize = kernels::MODULES.iter().map(|m| m.entries.len()).sum();
        assert_eq!(kernels, entries, "every registered kernel was checked");
    }

    #[test]
    fn kernels_ptx_cache_round_trips() {
        nvrtc_for_tests();
        let dir = std::env::temp_dir().join(format!("s1-ptx-cache-{}", std::process::id()));
        let m = &kernels::MODULES[0];
        let a = compile_cached(m, "compute_90", Some(&dir)).unwrap();
        let b = compile_cached(m, "compute_90", Some(&dir)).unwrap();
        assert_eq!(a, b);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kernels_unknown_arch_is_an_error() {
        assert!(compile(&kernels::MODULES[0], "compute_35").is_err());
    }
}
