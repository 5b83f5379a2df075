//! The model bundle (`docs/bundle-format.md`): manifest parsing, version and hash checks.
//!
//! Every number the engine needs comes from `manifest.json`; an error names the file and the
//! field that is wrong.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fsio;
use crate::text::tokenizer::{TokenId, Tokenizer};
pub use crate::verify_cache::VerifyCache;

mod manifest;
pub mod safetensors;

use manifest::Manifest;
pub use manifest::ModelArgs;

/// The `format` string of a bundle manifest.
pub const BUNDLE_FORMAT: &str = "s1-mini-bundle";
/// The manifest `format_version` this engine reads. Version 3: `slow.onnx` and `fast.onnx`
/// take a batch dimension with each row at its own position (concurrent requests decode as one
/// batch); version 2 fixed the batch at 1; version 1 copied the whole KV cache in and out.
pub const BUNDLE_FORMAT_VERSION: u64 = 3;

/// How to make a bundle this engine reads, quoted in errors about old bundles.
pub const REEXPORT_HINT: &str = "re-export the bundle with this engine's exporter: \
     `PYTHONPATH=tools/export python -m s1mini_export --checkpoint CKPT --out BUNDLE` \
     (docs/bundle-format.md)";

/// [`Error::VersionMismatch`]'s hint for a bundle older than [`BUNDLE_FORMAT_VERSION`].
const OLDER_BUNDLE_HINT: &str = "; this bundle is older than the engine (format 2 graphs decode \
     one request at a time, format 1 copied the whole KV cache in and out of slow.onnx every \
     step): re-export the bundle with this \
     engine's exporter: `PYTHONPATH=tools/export python -m s1mini_export --checkpoint CKPT \
     --out BUNDLE` (docs/bundle-format.md)";
/// Output rate of the S1 codec; the engine's audio is always at this rate.
pub const CODEC_SAMPLE_RATE_HZ: u32 = 44_100;

const MANIFEST: &str = "manifest.json";
/// Largest manifest read, in bytes (the tiny bundle's is 60 KB).
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

// Bounds of the manifest's numbers (`bounded`): far above any S1 bundle, far below overflow.
/// Hidden sizes and head dims.
const MAX_DIM: usize = 1 << 16;
/// Transformer layers (slow or fast).
const MAX_LAYERS: usize = 1 << 10;
/// KV heads (slow or fast).
const MAX_HEADS: usize = 1 << 10;
/// Codebooks per frame (voice files allow at most 64 too).
const MAX_CODEBOOKS: usize = 64;
/// Context length in tokens.
const MAX_SEQ_LEN: usize = 1 << 20;
/// Entries of one codebook (voice files store codes as u16).
const MAX_CODEBOOK_SIZE: usize = 1 << 16;
/// Rows of the slow head (`head.im_end_index`).
const MAX_HEAD_ROWS: usize = 1 << 24;
/// Token ids (the embedding table's rows).
const MAX_TOKEN_ID: usize = 1 << 24;
/// PCM samples per codec frame (S1: 2048).
const MAX_FRAME_SAMPLES: usize = 1 << 16;
/// Frames in one codec call (S1-mini: 4096 decode, 8192 encode).
const MAX_CODEC_FRAMES: usize = 1 << 20;
/// Code points per tokenizer chunk (fish-speech: 400 000).
const MAX_ENCODE_CHARS: usize = 1 << 30;

/// Special token ids the engine uses (from the manifest's `tokens`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIds {
    /// `<|im_end|>`: end of an utterance; generation stops when the head picks it.
    pub im_end: TokenId,
    /// `<|interleave|>`: first prompt token.
    pub interleave: TokenId,
    /// `<|semantic:0|>`.
    pub semantic_begin: TokenId,
    /// `<|semantic:N-1|>`.
    pub semantic_end: TokenId,
}

/// Model dimensions the backends need (from the manifest's `model`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDims {
    /// Hidden size of the slow transformer.
    pub dim: usize,
    /// Hidden size of the fast transformer (width of the slow graph's `hidden` output).
    pub fast_dim: usize,
    /// Slow layers L.
    pub n_layer: usize,
    /// Slow KV heads H.
    pub n_local_heads: usize,
    /// Slow head dim D.
    pub head_dim: usize,
    /// Fast layers Lf.
    pub n_fast_layer: usize,
    /// Fast KV heads Hf.
    pub fast_n_local_heads: usize,
    /// Fast head dim Df.
    pub fast_head_dim: usize,
    /// Codebooks per frame K.
    pub num_codebooks: usize,
    /// Context length in tokens (`max_seq_len`).
    pub max_seq_len: usize,
}

#[cfg(test)]
impl ModelDims {
    /// S1-mini's slow transformer and context (the fast head dim set to 128): the dims the
    /// ONNX GPU-path unit tests share.
    pub(crate) fn s1_mini_for_tests() -> ModelDims {
        ModelDims {
            dim: 1024,
            fast_dim: 1024,
            n_layer: 28,
            n_local_heads: 8,
            head_dim: 128,
            n_fast_layer: 4,
            fast_n_local_heads: 8,
            fast_head_dim: 128,
            num_codebooks: 10,
            max_seq_len: 8192,
        }
    }
}

#[cfg(test)]
impl BundleInfo {
    /// A small bundle for unit tests with mock backends: 3 codebooks, semantic tokens
    /// 100..=109 (head rows 0..10), `<|im_end|>` 50 (head row 10), context 64, codec frames of
    /// 2 samples, receptive field 2, calls of at most 8 frames.
    pub(crate) fn for_tests() -> BundleInfo {
        BundleInfo {
            dir: ".".into(),
            precision: Precision::Fp32,
            quantization: None,
            exporter: "test".into(),
            model: ModelDims {
                dim: 4,
                fast_dim: 4,
                n_layer: 1,
                n_local_heads: 1,
                head_dim: 4,
                n_fast_layer: 1,
                fast_n_local_heads: 1,
                fast_head_dim: 4,
                num_codebooks: 3,
                max_seq_len: 64,
            },
            model_args: ModelArgs::default(),
            tokens: TokenIds { im_end: 50, interleave: 60, semantic_begin: 100, semantic_end: 109 },
            semantic_rows: 10,
            im_end_index: 10,
            fast_logit_rows: 8,
            codec: CodecInfo {
                sample_rate_hz: 44_100,
                frame_samples: 2,
                codebook_sizes: vec![10, 8, 8],
                receptive_field_frames: 2,
                max_decode_frames: 8,
                max_encode_frames: 8,
                step_state: Vec::new(),
            },
            graphs: BTreeMap::new(),
            weights: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }
}

/// Codec rates and limits (from the manifest's `codec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecInfo {
    /// Output sample rate, Hz.
    pub sample_rate_hz: u32,
    /// PCM samples per frame.
    pub frame_samples: usize,
    /// Size of each codebook.
    pub codebook_sizes: Vec<usize>,
    /// Left context, in frames, that makes chunked decode equal the one-shot decode.
    pub receptive_field_frames: usize,
    /// Longest decode in one call, in frames.
    pub max_decode_frames: usize,
    /// Longest encode in one call, in frames (the encoder's RoPE tables; `codec.max_encode_frames`,
    /// optional: bundles without it use `max_decode_frames`).
    pub max_encode_frames: usize,
    /// The carried state of the `codec_decode_step` graph (`codec.step_state`, in the graph's
    /// input order); empty when the bundle has no step graph.
    pub step_state: Vec<StepStateTensor>,
}

/// One state tensor of the stateful codec decoder (`codec.step_state[i]`): fed as `input`,
/// returned as `output` (the next call's `input`), all zeros at the start of a decode.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StepStateTensor {
    /// Name (`keys`, `values`, or the module path of a convolution).
    pub name: String,
    /// Graph input (`past.<name>`).
    pub input: String,
    /// Graph output (`present.<name>`).
    pub output: String,
    /// Shape, fixed (the graphs' float type).
    pub shape: Vec<usize>,
}

/// Elements in one state tensor above which a manifest is refused (1 GiB of f32).
const MAX_STEP_STATE_ELEMENTS: usize = 1 << 28;

/// The checked `codec.step_state` (`list`, as written); `has_graph`: the bundle lists
/// `graphs.codec_decode_step`, which cannot run without it.
fn step_state(list: Option<Vec<StepStateTensor>>, has_graph: bool) -> Result<Vec<StepStateTensor>> {
    const FIELD: &str = "codec.step_state";
    let list = match list {
        Some(list) => list,
        None if has_graph => {
            return Err(Error::bundle(
                MANIFEST,
                FIELD,
                "missing (graphs.codec_decode_step needs it); re-export the bundle",
            ))
        }
        None => return Ok(Vec::new()),
    };
    if list.is_empty() && has_graph {
        return Err(Error::bundle(MANIFEST, FIELD, "empty"));
    }
    for (i, t) in list.iter().enumerate() {
        let elements = t.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if t.shape.is_empty() || elements.is_none_or(|n| n == 0 || n > MAX_STEP_STATE_ELEMENTS) {
            return Err(Error::bundle(
                MANIFEST,
                &format!("{FIELD}[{i}].shape"),
                format!("{:?} is empty or too large", t.shape),
            ));
        }
    }
    Ok(list)
}

/// Weight-only quantisation of a CPU bundle's transformer graphs (manifest `quantization`, with
/// `precision` `int8` or `int4`; `tools/export/s1mini_export/quantize.py`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantization {
    /// Bits per weight of the layer matrices (wqkv, wo, w1, w3, w2): 8 or 4.
    pub layer_bits: u32,
    /// Bits per weight of the two output heads: 8 or 4.
    pub head_bits: u32,
    /// Weights per fp32 scale, along the input dimension.
    pub block_size: usize,
    /// Bytes of quantised matrices (packed weights + scales) in slow.onnx.
    pub slow_matrix_bytes: u64,
    /// Bytes of quantised matrices (packed weights + scales) in fast.onnx.
    pub fast_matrix_bytes: u64,
    /// Element type of slow.onnx's KV cache buffers.
    pub kv_cache: KvCache,
    /// Arithmetic of the codec decoder's block convolutions.
    pub codec_convs: CodecConvs,
}

/// Arithmetic of an int8 / int4 bundle's codec decoder convolutions (manifest
/// `quantization.codec.convolutions`; tools/export/s1mini_export/codec_int8.py).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecConvs {
    /// The fp32 export's codec: exact (PCM within 1e-5 of fish-speech's).
    Fp32,
    /// The decoder blocks' convolutions int8 (QDQ, ONNX Runtime's QLinearConv): lossy, opt-in
    /// (`--codec int8`), for CPUs that cannot run the fp32 codec in real time.
    Int8,
}

/// Element type of a CPU bundle's slow KV cache (manifest `quantization.kv_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCache {
    /// 4 bytes a value: what fp32 bundles and older int8 / int4 bundles hold.
    Fp32,
    /// 2 bytes a value: half the bytes a decode step reads at long contexts; onnx-cpu runs its
    /// attention with its own kernel (docs/rust-core.md "fp16 KV cache").
    Fp16,
}

impl KvCache {
    /// Bytes per cached value.
    pub fn bytes(self) -> usize {
        match self {
            KvCache::Fp32 => 4,
            KvCache::Fp16 => 2,
        }
    }
}

impl std::fmt::Display for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvCache::Fp32 => "fp32",
            KvCache::Fp16 => "fp16",
        })
    }
}

/// Number format of a bundle's transformer graphs and weights (manifest `precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// fp32 graphs (CPU; the cuda backend reads its bf16 weights with exact numerics).
    Fp32,
    /// fp16 graphs (GPU execution providers; cuda with bf16 caches).
    Fp16,
    /// Weight-only int8 fp32 graphs for the CPU (see [`BundleInfo::quantization`]).
    Int8,
    /// Weight-only int4 fp32 graphs for the CPU (see [`BundleInfo::quantization`]).
    Int4,
}

impl Precision {
    /// The manifest spelling: `fp32`, `fp16`, `int8`, `int4`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
        }
    }

    /// The precision spelt `s` in a manifest, if any.
    pub fn parse(s: &str) -> Option<Precision> {
        [Precision::Fp32, Precision::Fp16, Precision::Int8, Precision::Int4]
            .into_iter()
            .find(|p| p.as_str() == s)
    }

    /// Bits per quantised layer weight (`int8`: 8, `int4`: 4); `None` for float bundles.
    pub fn quantized_bits(self) -> Option<u32> {
        match self {
            Precision::Fp32 | Precision::Fp16 => None,
            Precision::Int8 => Some(8),
            Precision::Int4 => Some(4),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything about a loaded bundle that callers may want to see.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleInfo {
    /// Bundle directory.
    pub dir: PathBuf,
    /// `precision`: `fp32`, `fp16`, or `int8` / `int4` (weight-only quantised fp32 graphs for
    /// the CPU, see [`BundleInfo::quantization`]).
    pub precision: Precision,
    /// How the transformer's weights are quantised (`int8` / `int4` bundles only).
    pub quantization: Option<Quantization>,
    /// Exporter name and version, for humans.
    pub exporter: String,
    /// Model dimensions.
    pub model: ModelDims,
    /// The manifest's whole `model` section as written (what the native CUDA backend needs
    /// beyond [`BundleInfo::model`]: query heads, FFN widths, RoPE base, norm epsilon, flags).
    pub model_args: ModelArgs,
    /// Special token ids.
    pub tokens: TokenIds,
    /// Rows of the slow head's logits that are semantic tokens.
    pub semantic_rows: usize,
    /// Index of `<|im_end|>` in the slow head's logits.
    pub im_end_index: usize,
    /// Fast-head logits used per codebook.
    pub fast_logit_rows: usize,
    /// Codec facts.
    pub codec: CodecInfo,
    /// Graph role (`slow`, `fast`, `codec_decode`, `codec_encode`, `codec_decode_step`) → file
    /// path.
    pub graphs: BTreeMap<String, PathBuf>,
    /// Weights role (`llm`: the bf16 checkpoint the native CUDA backend loads) → file name, as
    /// listed (manifest `weights`; int8 / int4 bundles list none).
    pub weights: BTreeMap<String, String>,
    /// File name → size in bytes, as listed.
    pub files: BTreeMap<String, u64>,
}

impl BundleInfo {
    /// Frames per second of audio (sample rate / frame samples).
    pub fn frame_rate_hz(&self) -> f64 {
        f64::from(self.codec.sample_rate_hz) / self.codec.frame_samples as f64
    }

    /// Path of a graph by role, or an error naming the missing role.
    pub fn graph(&self, role: &str) -> Result<&Path> {
        self.graphs.get(role).map(PathBuf::as_path).ok_or_else(|| {
            Error::bundle(MANIFEST, &format!("graphs.{role}"), "graph not in this bundle")
        })
    }
}

/// A validated bundle: its facts plus the tokenizer.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Facts from the manifest.
    pub info: BundleInfo,
    /// The text tokenizer.
    pub tokenizer: Tokenizer,
    /// Bytes read to check sha256 hashes at load: 0 when verification was off or every file's
    /// [`VerifyCache`] stamp was still valid.
    pub hashed_bytes: u64,
}

/// How [`Bundle::load_with`] checks the files' sha256 hashes (their sizes are always checked).
#[derive(Debug, Clone)]
pub enum Verify {
    /// No hashing.
    Off,
    /// Every file hashed at every load.
    Full,
    /// Files hashed unless a stamp shows they were verified and have not changed since; new
    /// verifications are stamped.
    Stamped(VerifyCache),
}

impl Bundle {
    /// Reads and validates the bundle in `dir`; with `verify_hashes`, checks every file's sha256.
    pub fn load(dir: &Path, verify_hashes: bool) -> Result<Bundle> {
        Self::load_with(dir, if verify_hashes { Verify::Full } else { Verify::Off })
    }

    /// Reads and validates the bundle in `dir`, checking hashes as `verify` says.
    pub fn load_with(dir: &Path, verify: Verify) -> Result<Bundle> {
        let manifest_path = dir.join(MANIFEST);
        if !dir.is_dir() {
            return Err(Error::BundleNotFound { path: dir.to_path_buf() });
        }
        if !manifest_path.exists() {
            return Err(Error::BundleNotFound { path: manifest_path });
        }
        let text = read_bundle_file(&manifest_path, MANIFEST, MAX_MANIFEST_BYTES)?;
        Self::from_manifest(dir, &text, &verify)
    }

    /// Validates manifest bytes as if they were `dir/manifest.json`, reading the files it lists
    /// from `dir` (the entry point of the manifest fuzz target: any bytes give `Ok` or an error,
    /// never a panic).
    pub fn from_manifest_bytes(dir: &Path, manifest: &[u8], verify_hashes: bool) -> Result<Bundle> {
        Self::from_manifest(dir, manifest, if verify_hashes { &Verify::Full } else { &Verify::Off })
    }

    fn from_manifest(dir: &Path, manifest: &[u8], verify: &Verify) -> Result<Bundle> {
        // Format and version first: a newer bundle's other fields may mean something else.
        check_format(&manifest::parse(manifest)?)?;
        let m: Manifest = manifest::parse(manifest)?;

        let spelt = need(m.precision, "precision")?;
        let precision = Precision::parse(&spelt).ok_or_else(|| {
            Error::bundle(
                MANIFEST,
                "precision",
                format!("{spelt:?} is not fp32, fp16, int8 or int4"),
            )
        })?;
        let quantization = match precision.quantized_bits() {
            None => None,
            Some(bits) => Some(quantization(&m.quantization, precision, bits)?),
        };
        let exporter = match &m.exporter {
            Some(e) => format!(
                "{} {}",
                e.name.as_deref().unwrap_or("?"),
                e.version.as_deref().unwrap_or("?")
            ),
            None => "unknown".into(),
        };

        // Every number is range-checked here, before anything is sized from it: bounds that
        // real S1 bundles are far inside of (S1-mini: dim 1024, 28 layers, 8 KV heads of 128,
        // context 8192, 10 codebooks of 4096/1024), so products of them cannot overflow.
        let a = &m.model;
        let model = ModelDims {
            dim: bounded(a.dim, "model.dim", 1, MAX_DIM)?,
            // fish-speech falls back to `dim` when the config has no fast_dim.
            fast_dim: match a.fast_dim {
                Some(_) => bounded(a.fast_dim, "model.fast_dim", 1, MAX_DIM)?,
                None => bounded(a.dim, "model.dim", 1, MAX_DIM)?,
            },
            n_layer: bounded(a.n_layer, "model.n_layer", 1, MAX_LAYERS)?,
            n_local_heads: bounded(a.n_local_heads, "model.n_local_heads", 1, MAX_HEADS)?,
            head_dim: bounded(a.head_dim, "model.head_dim", 1, MAX_DIM)?,
            n_fast_layer: bounded(a.n_fast_layer, "model.n_fast_layer", 1, MAX_LAYERS)?,
            fast_n_local_heads: bounded(
                a.fast_n_local_heads,
                "model.fast_n_local_heads",
                1,
                MAX_HEADS,
            )?,
            fast_head_dim: bounded(a.fast_head_dim, "model.fast_head_dim", 1, MAX_DIM)?,
            num_codebooks: bounded(a.num_codebooks, "model.num_codebooks", 1, MAX_CODEBOOKS)?,
            max_seq_len: bounded(a.max_seq_len, "model.max_seq_len", 1, MAX_SEQ_LEN)?,
        };
        let t = &m.tokens;
        let tokens = TokenIds {
            im_end: id_field(t.im_end, "tokens.im_end")?,
            interleave: id_field(t.interleave, "tokens.interleave")?,
            semantic_begin: id_field(t.semantic_begin, "tokens.semantic_begin")?,
            semantic_end: id_field(t.semantic_end, "tokens.semantic_end")?,
        };
        if tokens.semantic_end < tokens.semantic_begin {
            return Err(Error::bundle(
                MANIFEST,
                "tokens.semantic_end",
                "is below tokens.semantic_begin",
            ));
        }
        let semantic_rows =
            bounded(m.head.semantic_rows, "head.semantic_rows", 1, MAX_CODEBOOK_SIZE)?;
        if semantic_rows != (tokens.semantic_end - tokens.semantic_begin) as usize + 1 {
            return Err(Error::bundle(
                MANIFEST,
                "head.semantic_rows",
                "must equal semantic_end - semantic_begin + 1",
            ));
        }
        let im_end_index = bounded(m.head.im_end_index, "head.im_end_index", 0, MAX_HEAD_ROWS)?;
        if im_end_index < semantic_rows {
            return Err(Error::bundle(MANIFEST, "head.im_end_index", "overlaps the semantic rows"));
        }
        let fast_logit_rows = bounded(m.fast.logit_rows, "fast.logit_rows", 1, MAX_CODEBOOK_SIZE)?;

        // A bundle exported without a codec (`"codec": null`) has none of its keys.
        let c = m.codec.unwrap_or_default();
        let sample_rate_hz = need(c.sample_rate_hz, "codec.sample_rate_hz")?;
        if sample_rate_hz != u64::from(CODEC_SAMPLE_RATE_HZ) {
            return Err(Error::bundle(
                MANIFEST,
                "codec.sample_rate_hz",
                format!("{sample_rate_hz} Hz, but the S1 codec runs at {CODEC_SAMPLE_RATE_HZ} Hz"),
            ));
        }
        let codec_books = need(c.num_codebooks, "codec.num_codebooks")?;
        if codec_books != model.num_codebooks as u64 {
            return Err(Error::bundle(
                MANIFEST,
                "codec.num_codebooks",
                format!("{codec_books} differs from model.num_codebooks {}", model.num_codebooks),
            ));
        }
        let codebook_sizes: Vec<usize> = need(c.codebook_sizes, "codec.codebook_sizes")?
            .into_iter()
            .map(|s| {
                usize::try_from(s).ok().filter(|s| (1..=MAX_CODEBOOK_SIZE).contains(s)).ok_or_else(
                    || {
                        Error::bundle(
                            MANIFEST,
                            "codec.codebook_sizes",
                            format!("{s} is outside 1..={MAX_CODEBOOK_SIZE}"),
                        )
                    },
                )
            })
            .collect::<Result<_>>()?;
        if codebook_sizes.len() != model.num_codebooks {
            return Err(Error::bundle(
                MANIFEST,
                "codec.codebook_sizes",
                "length differs from num_codebooks",
            ));
        }
        if codebook_sizes.first().copied() != Some(semantic_rows) {
            return Err(Error::bundle(
                MANIFEST,
                "codec.codebook_sizes",
                "first size differs from head.semantic_rows",
            ));
        }
        if codebook_sizes.iter().skip(1).any(|&s| s > fast_logit_rows) {
            return Err(Error::bundle(
                MANIFEST,
                "fast.logit_rows",
                "smaller than a residual codebook",
            ));
        }
        let max_decode_frames =
            bounded(c.max_decode_frames, "codec.max_decode_frames", 1, MAX_CODEC_FRAMES)?;
        let max_encode_frames = match c.max_encode_frames {
            Some(_) => {
                bounded(c.max_encode_frames, "codec.max_encode_frames", 1, MAX_CODEC_FRAMES)?
            }
            None => max_decode_frames,
        };
        let frame_samples = bounded(c.frame_samples, "codec.frame_samples", 1, MAX_FRAME_SAMPLES)?;
        // The decode window must hold more than its left context, or no frame is ever new.
        let receptive_field_frames = bounded(
            c.receptive_field_frames,
            "codec.receptive_field_frames",
            0,
            max_decode_frames - 1,
        )?;
        let codec = CodecInfo {
            sample_rate_hz: CODEC_SAMPLE_RATE_HZ,
            frame_samples,
            codebook_sizes,
            receptive_field_frames,
            max_decode_frames,
            max_encode_frames,
            step_state: step_state(c.step_state, m.graphs.contains_key("codec_decode_step"))?,
        };
        // One request's slow KV cache at full context (f32 K and V, [L, 1, H, T, D] each) must
        // be a size this machine can even express: an absurd manifest is refused here, before
        // anything is allocated from its numbers.
        let kv = [model.n_local_heads, model.head_dim, model.max_seq_len, 2, 4]
            .iter()
            .try_fold(model.n_layer, |acc, &x| acc.checked_mul(x));
        // (Within the bounds above this cannot overflow on 64-bit hosts; 32-bit ones can.)
        if kv.is_none_or(|b| b > isize::MAX as usize) {
            return Err(Error::bundle(
                MANIFEST,
                "model.max_seq_len",
                "the KV cache for this context overflows the address space",
            ));
        }

        // Files: existence and size always (cheap), sha256 when asked.
        let mut files = BTreeMap::new();
        let mut hashed_bytes = 0u64;
        for (name, entry) in need(m.files, "files")? {
            let field = format!("files.{name}");
            if name.contains("..") || Path::new(&name).is_absolute() {
                return Err(Error::bundle(
                    MANIFEST,
                    &field,
                    "file names must stay inside the bundle",
                ));
            }
            let path = dir.join(&name);
            let meta = fs::metadata(&path).map_err(|_| {
                Error::bundle(&name, &field, "listed in manifest.json but missing from the bundle")
            })?;
            // A FIFO would block every reader (ours, ONNX Runtime's) forever and a device would
            // never end: only regular files are part of a bundle.
            if !meta.is_file() {
                return Err(Error::bundle(&name, &field, fsio::ReadError::NotRegular.to_string()));
            }
            if meta.len() != entry.bytes {
                return Err(Error::HashMismatch {
                    file: name,
                    field: "bytes",
                    expected: entry.bytes.to_string(),
                    got: meta.len().to_string(),
                });
            }
            let hash = match verify {
                Verify::Off => false,
                Verify::Full => true,
                Verify::Stamped(stamps) => !stamps.is_verified(&path, &entry.sha256),
            };
            if hash {
                let got = sha256_regular_file(&path, &name, entry.bytes)?;
                hashed_bytes += entry.bytes;
                if !got.eq_ignore_ascii_case(&entry.sha256) {
                    return Err(Error::HashMismatch {
                        file: name,
                        field: "sha256",
                        expected: entry.sha256,
                        got,
                    });
                }
                if let Verify::Stamped(stamps) = verify {
                    stamps.record(&path, &entry.sha256);
                }
            }
            files.insert(name, entry.bytes);
        }

        let mut graphs = BTreeMap::new();
        for (role, file) in &m.graphs {
            if !files.contains_key(file) {
                return Err(Error::bundle(
                    MANIFEST,
                    &format!("graphs.{role}"),
                    format!("{file} is not listed in files (missing from the bundle)"),
                ));
            }
            graphs.insert(role.clone(), dir.join(file));
        }

        let tokenizer = load_tokenizer(dir, m.tokenizer, m.tokens.special, &files)?;
        for (name, id) in [
            ("<|im_end|>", tokens.im_end),
            ("<|interleave|>", tokens.interleave),
            ("<|semantic:0|>", tokens.semantic_begin),
        ] {
            if tokenizer.special_id(name) != Some(id) {
                return Err(Error::bundle(
                    MANIFEST,
                    "tokens.special",
                    format!("{name} does not map to {id}"),
                ));
            }
        }

        let info = BundleInfo {
            dir: dir.to_path_buf(),
            precision,
            quantization,
            exporter,
            model,
            model_args: m.model,
            tokens,
            semantic_rows,
            im_end_index,
            fast_logit_rows,
            codec,
            graphs,
            weights: m.weights,
            files,
        };
        Ok(Bundle { info, tokenizer, hashed_bytes })
    }
}

/// Checks the manifest's `format` and `format_version` against this engine's.
fn check_format(h: &manifest::Header) -> Result<()> {
    let format = h.format.as_deref().ok_or_else(|| Error::bundle(MANIFEST, "format", "missing"))?;
    if format != BUNDLE_FORMAT {
        return Err(Error::VersionMismatch {
            file: MANIFEST.into(),
            field: "format".into(),
            expected: BUNDLE_FORMAT.into(),
            found: format.into(),
            hint: "",
        });
    }
    let version = need(h.format_version, "format_version")?;
    if version != BUNDLE_FORMAT_VERSION {
        return Err(Error::VersionMismatch {
            file: MANIFEST.into(),
            field: "format_version".into(),
            expected: BUNDLE_FORMAT_VERSION.to_string(),
            found: version.to_string(),
            hint: if version < BUNDLE_FORMAT_VERSION {
                OLDER_BUNDLE_HINT
            } else {
                "; this bundle is newer than the engine: update the engine"
            },
        });
    }
    Ok(())
}

/// The manifest's `quantization` section of an `int8` / `int4` bundle.
fn quantization(
    q: &manifest::QuantizationSection,
    precision: Precision,
    want: u32,
) -> Result<Quantization> {
    let bits = |v: Option<u64>, field: &str| -> Result<u32> {
        match need(v, field)? {
            b @ (4 | 8) => Ok(b as u32),
            b => Err(Error::bundle(MANIFEST, field, format!("{b} bits (expected 4 or 8)"))),
        }
    };
    let q = Quantization {
        layer_bits: bits(q.layer_bits, "quantization.layer_bits")?,
        head_bits: bits(q.head_bits, "quantization.head_bits")?,
        block_size: bounded(q.block_size, "quantization.block_size", 1, MAX_DIM)?,
        slow_matrix_bytes: need(q.matrix_bytes.slow, "quantization.matrix_bytes.slow")?,
        fast_matrix_bytes: need(q.matrix_bytes.fast, "quantization.matrix_bytes.fast")?,
        kv_cache: one_of(
            q.kv_cache.as_deref(),
            "quantization.kv_cache",
            &[("fp32", KvCache::Fp32), ("fp16", KvCache::Fp16)],
        )?,
        codec_convs: one_of(
            q.codec.as_ref().and_then(|c| c.convolutions.as_deref()),
            "quantization.codec.convolutions",
            &[("fp32", CodecConvs::Fp32), ("int8", CodecConvs::Int8)],
        )?,
    };
    if q.layer_bits != want {
        return Err(Error::bundle(
            MANIFEST,
            "quantization.layer_bits",
            format!("{} bits in a {precision} bundle", q.layer_bits),
        ));
    }
    Ok(q)
}

/// The manifest string `value` of `field` as one of `choices` (name, value); absent: the first,
/// which is what bundles written before the field meant.
fn one_of<T: Copy>(value: Option<&str>, field: &str, choices: &[(&str, T)]) -> Result<T> {
    let Some(value) = value else {
        return Ok(choices[0].1);
    };
    match choices.iter().find(|(name, _)| *name == value) {
        Some(&(_, v)) => Ok(v),
        None => {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            Err(Error::bundle(
                MANIFEST,
                field,
                format!("{value:?} (expected {})", names.join(" or ")),
            ))
        }
    }
}

/// The tokenizer of `t` (the manifest's `tokenizer` section) with the special tokens `special`
/// (`tokens.special`); its file must be one of `files` (name → checked size).
fn load_tokenizer(
    dir: &Path,
    t: manifest::TokenizerSection,
    special: Option<HashMap<String, TokenId>>,
    files: &BTreeMap<String, u64>,
) -> Result<Tokenizer> {
    let file = need(t.file, "tokenizer.file")?;
    let Some(&size) = files.get(&file) else {
        return Err(Error::bundle(
            MANIFEST,
            "tokenizer.file",
            format!("{file} is not listed in files"),
        ));
    };
    let pattern = need(t.pattern, "tokenizer.pattern")?;
    let num_ranks = need(t.num_ranks, "tokenizer.num_ranks")?;
    let max_encode_chars =
        bounded(t.max_encode_chars, "tokenizer.max_encode_chars", 1, MAX_ENCODE_CHARS)?;
    let path = dir.join(&file);
    // The size was checked against files.<file>.bytes above; never read more than that.
    let bytes = read_bundle_file(&path, &file, size)?;
    // Corrupt content is a bundle error naming the file, not an I/O error.
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Error::bundle(&file, "-", format!("not UTF-8 (at byte {})", e.valid_up_to()))
    })?;
    let ranks = Tokenizer::parse_ranks(text, &file)?;
    if ranks.len() as u64 != num_ranks {
        return Err(Error::bundle(
            MANIFEST,
            "tokenizer.num_ranks",
            format!("{num_ranks}, but {file} holds {} ranks", ranks.len()),
        ));
    }
    let special = need(special, "tokens.special")?;
    if special.contains_key("") {
        // An empty name matches at every position: the tokenizer would never advance.
        return Err(Error::bundle(MANIFEST, "tokens.special", "a special token has an empty name"));
    }
    Tokenizer::new(ranks, special, &pattern, max_encode_chars)
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    sha256_reader(f, path)
}

fn sha256_reader(mut f: impl Read, path: &Path) -> Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Hex sha256 of the bundle file `name` at `path`: a regular file, of which at most
/// `bytes + 1` bytes are read (a file that grew is a size mismatch, not an endless read).
fn sha256_regular_file(path: &Path, name: &str, bytes: u64) -> Result<String> {
    let (f, _) = fsio::open_regular(path).map_err(|e| bundle_read_error(e, path, name))?;
    let mut counted = CountingReader { inner: f.take(bytes.saturating_add(1)), n: 0 };
    let digest = sha256_reader(&mut counted, path)?;
    if counted.n != bytes {
        return Err(Error::HashMismatch {
            file: name.to_owned(),
            field: "bytes",
            expected: bytes.to_string(),
            got: if counted.n > bytes {
                format!("more than {bytes}")
            } else {
                counted.n.to_string()
            },
        });
    }
    Ok(digest)
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Reads the bundle file `name` (a regular file of at most `limit` bytes).
fn read_bundle_file(path: &Path, name: &str, limit: u64) -> Result<Vec<u8>> {
    fsio::read_regular(path, limit).map_err(|e| bundle_read_error(e, path, name))
}

fn bundle_read_error(e: fsio::ReadError, path: &Path, name: &str) -> Error {
    match e {
        fsio::ReadError::Io(e) => Error::io(path, e),
        other => Error::bundle(name, "-", other.to_string()),
    }
}

/// The value of a key the engine needs; `BundleInvalid` naming it when the manifest has none.
fn need<T>(v: Option<T>, dotted: &str) -> Result<T> {
    v.ok_or_else(|| Error::bundle(MANIFEST, dotted, "missing"))
}

fn id_field(v: Option<u64>, dotted: &str) -> Result<TokenId> {
    let v = bounded(v, dotted, 0, MAX_TOKEN_ID)?;
    TokenId::try_from(v).map_err(|_| Error::bundle(MANIFEST, dotted, "token id out of range"))
}

/// An integer key in `lo..=hi`; anything else is `BundleInvalid` naming the key.
fn bounded(v: Option<u64>, dotted: &str, lo: usize, hi: usize) -> Result<usize> {
    let n = need(v, dotted)?;
    match usize::try_from(n) {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(Error::bundle(MANIFEST, dotted, format!("{n} is outside {lo}..={hi}"))),
    }
}
