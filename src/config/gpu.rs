//! Options of the ONNX Runtime sessions and the GPU backends (`onnx-cuda`, `tensorrt`), their
//! names in configs and the CLI, and their validation. Defaults live in `EngineConfig::default()`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// ONNX Runtime graph optimisation level (`GraphOptimizationLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GraphOptimization {
    /// No graph rewrites (`ORT_DISABLE_ALL`).
    Disable,
    /// Redundant-node removal, constant folding (`ORT_ENABLE_BASIC`).
    Basic,
    /// Plus operator fusions (`ORT_ENABLE_EXTENDED`).
    Extended,
    /// Plus layout optimisations (`ORT_ENABLE_LAYOUT`); the default, as before this option existed.
    #[default]
    Layout,
    /// Everything ONNX Runtime has (`ORT_ENABLE_ALL`).
    All,
}

/// Precision of the TensorRT engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TensorRtPrecision {
    /// fp16 kernels where TensorRT finds them faster (`trt_fp16_enable`). The default.
    #[default]
    Fp16,
    /// int8 kernels with fp16 fallback (`trt_int8_enable` + `trt_fp16_enable`); needs a
    /// calibration table in the cache directory (see `docs/gpu-onnx.md`).
    Int8,
}

/// Weight type of the native `cuda` backend's transformer layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CudaWeights {
    /// The bundle's bf16 weights as they are. The default.
    #[default]
    Bf16,
    /// Every layer matrix quantised at load to int8 with one f32 scale per output row (the
    /// embeddings, norms and heads stay bf16). On an H200 it was slower than bf16 (docs/cuda.md).
    Int8,
}

/// How cuDNN picks convolution algorithms in the CUDA execution provider
/// (`cudnn_conv_algo_search`). Only the codec has convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CudnnConvAlgoSearch {
    /// Benchmark every algorithm on first use (slow first call, fastest after). ORT's default.
    #[default]
    Exhaustive,
    /// cuDNN's heuristics, no benchmarking.
    Heuristic,
    /// `CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM`, no search (least memory).
    Default,
}

/// TensorRT optimisation profile of the slow transformer, in prompt tokens (positions).
///
/// ONNX Runtime 1.31's TensorRT execution provider builds every profile it is given but runs
/// profile 0 only (microsoft/onnxruntime PR #31624 adds switching), so prefill and decode share
/// one profile: `tokens` T ∈ [1, `max_tokens`] with opt 1 (decode, one token per call, is the hot
/// path) and `past_*` P ∈ [0, context − 1] with opt `opt_tokens`. There is no separate minimum:
/// decode fixes it at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PromptProfile {
    /// Cache length (prompt plus frames so far) TensorRT tunes its kernels for, in
    /// 1 ..= `max_tokens`. Default 256.
    pub opt_tokens: u32,
    /// Longest prompt, ≤ the model's context (`max_seq_len`); 0 = the model's context.
    /// Default 0. Longer prompts fail at run time with TensorRT's error.
    pub max_tokens: u32,
}

impl Default for PromptProfile {
    fn default() -> Self {
        Self { opt_tokens: 256, max_tokens: 0 }
    }
}

impl PromptProfile {
    /// `(opt, max)` with `max_tokens = 0` resolved to `context_tokens` and `opt` clamped into
    /// `1 ..= context − 1`; errors name `tensorrt_profile` and say what is wrong.
    pub fn resolve(&self, context_tokens: usize) -> Result<(usize, usize)> {
        let max = if self.max_tokens == 0 { context_tokens } else { self.max_tokens as usize };
        if context_tokens < 2 {
            return Err(Error::arg(
                "tensorrt_profile",
                format!("the model's context of {context_tokens} tokens is too short"),
            ));
        }
        if max > context_tokens {
            return Err(Error::arg(
                "tensorrt_profile",
                format!("max_tokens {max} exceeds the model's context of {context_tokens} tokens"),
            ));
        }
        if self.opt_tokens == 0 {
            return Err(Error::arg("tensorrt_profile", "opt_tokens must be at least 1"));
        }
        Ok(((self.opt_tokens as usize).clamp(1, context_tokens - 1), max))
    }
}

macro_rules! named_enum {
    ($ty:ident, $param:literal, $($variant:ident => $name:literal),+ $(,)?) => {
        impl $ty {
            /// Every value, in documentation order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name used in configs, the CLI and the C ABI.
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(Error::arg(
                        $param,
                        format!(
                            "unknown value {other:?}; one of {}",
                            [$($name),+].join(", ")
                        ),
                    )),
                }
            }
        }
    };
}

named_enum!(GraphOptimization, "graph_optimization",
    Disable => "disable", Basic => "basic", Extended => "extended", Layout => "layout", All => "all");
named_enum!(TensorRtPrecision, "tensorrt_precision", Fp16 => "fp16", Int8 => "int8");
named_enum!(CudaWeights, "cuda_weights", Bf16 => "bf16", Int8 => "int8");
named_enum!(CudnnConvAlgoSearch, "cudnn_conv_algo_search",
    Exhaustive => "exhaustive", Heuristic => "heuristic", Default => "default");

/// A path that ONNX Runtime receives as an option string: it must be UTF-8 without NUL.
pub(crate) fn option_path<'a>(name: &'static str, p: &'a Path) -> Result<&'a str> {
    let s = p.to_str().ok_or_else(|| {
        Error::arg(
            name,
            format!("{} is not valid UTF-8 (ONNX Runtime takes UTF-8 paths)", p.display()),
        )
    })?;
    if s.is_empty() || s.contains('\0') {
        return Err(Error::arg(name, "must be a non-empty path without NUL bytes"));
    }
    Ok(s)
}

/// Creates `dir` (and parents) if missing and checks that files can be written in it, by
/// creating and removing a probe file. Errors name `cache_dir`.
pub fn prepare_cache_dir(dir: &Path) -> Result<PathBuf> {
    option_path("cache_dir", dir)?;
    if dir.exists() && !dir.is_dir() {
        return Err(Error::arg(
            "cache_dir",
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::arg("cache_dir", format!("cannot create {}: {e}", dir.display())))?;
    let probe = dir.join(format!(".s1-mini-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"s1-mini").map_err(|e| {
        Error::arg(
            "cache_dir",
            format!(
                "{} is not writable ({e}); TensorRT writes its engine and timing caches there",
                dir.display()
            ),
        )
    })?;
    // A leftover probe file is harmless; the directory was writable.
    let _ = std::fs::remove_file(&probe);
    // ONNX Runtime resolves relative cache paths against its own working directory: give it an
    // absolute one.
    dir.canonicalize().map_err(|e| Error::io(dir, e))
}

/// Checks a file of sample sentences for int8 calibration: readable UTF-8 with at least one
/// non-empty line. Returns the sentences.
pub fn read_calibration_sentences(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::arg("tensorrt_int8_calibration_file", format!("cannot read {}: {e}", path.display()))
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::arg(
            "tensorrt_int8_calibration_file",
            format!(
                "{} is not UTF-8 (first invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let lines: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    if lines.is_empty() {
        return Err(Error::arg(
            "tensorrt_int8_calibration_file",
            format!("{} has no sentences (one per line)", path.display()),
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_enums_roundtrip_and_reject_unknown() {
        for g in GraphOptimization::ALL {
            assert_eq!(g.name().parse::<GraphOptimization>().unwrap(), *g);
        }
        for p in TensorRtPrecision::ALL {
            assert_eq!(p.name().parse::<TensorRtPrecision>().unwrap(), *p);
        }
        for c in CudnnConvAlgoSearch::ALL {
            assert_eq!(c.name().parse::<CudnnConvAlgoSearch>().unwrap(), *c);
        }
        for w in CudaWeights::ALL {
            assert_eq!(w.name().parse::<CudaWeights>().unwrap(), *w);
        }
        assert!(matches!(
            "int4".parse::<CudaWeights>(),
            Err(Error::InvalidArgument { name: "cuda_weights", .. })
        ));
        match "fp8".parse::<TensorRtPrecision>() {
            Err(Error::InvalidArgument { name, reason }) => {
                assert_eq!(name, "tensorrt_precision");
                assert!(reason.contains("fp16, int8"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!("ALL".parse::<GraphOptimization>().is_err());
        assert!("fast".parse::<CudnnConvAlgoSearch>().is_err());
    }

    #[test]
    fn prompt_profile_resolves_and_validates() {
        assert_eq!(PromptProfile::default().resolve(8192).unwrap(), (256, 8192));
        assert_eq!(PromptProfile::default().resolve(64).unwrap(), (63, 64));
        let p = PromptProfile { opt_tokens: 100, max_tokens: 512 };
        assert_eq!(p.resolve(8192).unwrap(), (100, 512));
        for (bad, needle) in [
            (PromptProfile { opt_tokens: 0, max_tokens: 0 }, "opt_tokens"),
            (PromptProfile { opt_tokens: 1, max_tokens: 9000 }, "exceeds"),
        ] {
            match bad.resolve(8192) {
                Err(Error::InvalidArgument { name, reason }) => {
                    assert_eq!(name, "tensorrt_profile");
                    assert!(reason.contains(needle), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn calibration_file_must_hold_sentences() {
        let dir = std::env::temp_dir().join(format!("s1-calib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s.txt");
        std::fs::write(&f, "Hello there.\n\n  General Kenobi.  \n").unwrap();
        assert_eq!(read_calibration_sentences(&f).unwrap(), ["Hello there.", "General Kenobi."]);
        std::fs::write(&f, "\n  \n").unwrap();
        assert!(read_calibration_sentences(&f).is_err());
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        assert!(read_calibration_sentences(&f).is_err());
        assert!(read_calibration_sentences(&dir.join("missing.txt")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
