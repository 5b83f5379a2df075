//! CUDA C sources of the native backend, embedded at build time (STYLE.md rule 17).
//!
//! Each module is `common.cuh` followed by one `.cu` file, because NVRTC sees no file system.
//! The sources are compiled by NVRTC at engine load for the device's architecture and cached on
//! disk by [`cache_key`] (source hash + arch + NVRTC options).

use sha2::{Digest, Sha256};

const COMMON: &str = include_str!("common.cuh");

/// One NVRTC compilation unit and the `extern "C"` entry points it must export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelModule {
    /// Module name (the `.cu` file stem).
    pub name: &'static str,
    /// The `.cu` file's text (without `common.cuh`).
    pub body: &'static str,
    /// Kernel entry points (`<op>_<dtype>`), each one launcher in the backend.
    pub entries: &'static [&'static str],
}

impl KernelModule {
    /// Full NVRTC source: `common.cuh` + the module body.
    pub fn source(&self) -> String {
        let mut s = String::with_capacity(COMMON.len() + self.body.len() + 64);
        s.push_str(COMMON);
        s.push_str("\n// ---- ");
        s.push_str(self.name);
        s.push_str(".cu ----\n");
        s.push_str(self.body);
        s
    }
}

/// Every kernel module of the backend.
pub const MODULES: &[KernelModule] = &[
    KernelModule {
        name: "embed",
        body: include_str!("embed.cu"),
        entries: &["embed_tokens_f32", "fast_input_f32", "cast_bf16_f32", "copy_f32"],
    },
    KernelModule { name: "rmsnorm", body: include_str!("rmsnorm.cu"), entries: &["rmsnorm_f32"] },
    KernelModule { name: "rope", body: include_str!("rope.cu"), entries: &["qk_rope_f32"] },
    KernelModule {
        name: "gemv",
        body: include_str!("gemv.cu"),
        entries: &[
            "gemv_bf16",
            "gemv_swiglu_bf16",
            "gemv_i8",
            "gemv_swiglu_i8",
            "quantize_i8_bf16",
            "dequantize_i8_bf16",
            "silu_mul_f32",
        ],
    },
    KernelModule {
        name: "attention",
        body: include_str!("attention.cu"),
        entries: &["attention_f32"],
    },
    KernelModule {
        name: "sampling",
        body: include_str!("sampling.cu"),
        entries: &["sample_f32", "frame_finish", "advance_pos"],
    },
];

/// NVRTC options used for every module (besides `--gpu-architecture`). No fast math: the
/// sampling kernel must round like the CPU reference.
pub const NVRTC_OPTIONS: &[&str] = &["--std=c++17", "--fmad=true", "-default-device"];

/// `compute_XY` virtual architecture for a compute capability (PTX is JIT-compiled by the driver).
pub fn arch_for(major: i32, minor: i32) -> String {
    format!("compute_{major}{minor}")
}

/// Disk-cache key of a module's PTX: sha256 over the source, the arch and the options (hex).
pub fn cache_key(module: &KernelModule, arch: &str) -> String {
    let mut h = Sha256::new();
    h.update(module.source().as_bytes());
    h.update([0u8]);
    h.update(arch.as_bytes());
    for o in NVRTC_OPTIONS {
        h.update([0u8]);
        h.update(o.as_bytes());
    }
    let d = h.finalize();
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every entry point of every module, in module order.
pub fn all_entries() -> impl Iterator<Item = (&'static str, &'static str)> {
    MODULES.iter().flat_map(|m| m.entries.iter().map(move |e| (m.name, *e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_every_entry_is_defined_extern_c_in_its_module() {
        for m in MODULES {
            for e in m.entries {
                let needle = format!(" {e}(");
                let found =
                    m.body.lines().any(|l| l.contains("extern \"C\"") && l.contains(&needle))
                        || m.body.contains(&format!("\n{}", &needle[1..]));
                assert!(found, "{}: entry {e} not declared extern \"C\"", m.name);
            }
        }
    }

    /// Kernel names in `launch("name"` calls of a launcher source.
    fn launched(src: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = src;
        while let Some(i) = rest.find("launch(") {
            rest = &rest[i + 7..];
            let t = rest.trim_start();
            if let Some(q) = t.strip_prefix('"') {
                if let Some(end) = q.find('"') {
                    out.push(q[..end].to_string());
                }
            }
        }
        out
    }

    #[test]
    fn kernels_every_launched_kernel_is_registered_and_every_kernel_launched() {
        let launchers = [include_str!("../kernel_args.rs"), include_str!("../selftest.rs")];
        let names: Vec<String> = launchers.iter().flat_map(|s| launched(s)).collect();
        assert!(names.len() > 15, "{names:?}");
        let entries: Vec<&str> = all_entries().map(|(_, e)| e).collect();
        for n in &names {
            assert!(entries.contains(&n.as_str()), "kernel {n} is launched but not in MODULES");
        }
        for m in MODULES {
            for decl in m.body.split("__global__ void").skip(1) {
                let mut d = decl.trim_start();
                if let Some(after) = d.strip_prefix("__launch_bounds__") {
                    d = after.split_once(')').map(|x| x.1).unwrap_or_default().trim_start();
                }
                let name: String =
                    d.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let name = name.as_str();
                assert!(m.entries.contains(&name), "{}: kernel {name} is not registered", m.name);
                assert!(
                    names.iter().any(|x| x == name),
                    "{}: kernel {name} is never launched",
                    m.name
                );
            }
        }
    }

    #[test]
    fn kernels_sources_include_no_files() {
        for m in MODULES {
            assert!(
                !m.body.contains("#include"),
                "{} must not #include (NVRTC has no files)",
                m.name
            );
        }
        assert!(!COMMON.contains("#include"));
    }

    #[test]
    fn kernels_entry_names_are_unique_and_typed() {
        let mut names: Vec<&str> = all_entries().map(|(_, e)| e).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn kernels_cache_key_depends_on_arch_and_source() {
        let a = cache_key(&MODULES[0], "compute_90");
        assert_eq!(a.len(), 64);
        assert_ne!(a, cache_key(&MODULES[0], "compute_80"));
        assert_ne!(a, cache_key(&MODULES[1], "compute_90"));
        assert_eq!(a, cache_key(&MODULES[0], "compute_90"));
        assert_eq!(arch_for(9, 0), "compute_90");
    }
}
