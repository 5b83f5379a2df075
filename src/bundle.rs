//! The model bundle (`docs/bundle-format.md`): manifest parsing, version and hash checks.
//!
//! Every number the engine needs comes from `manifest.json`; an error names the file and the
//! field that is wrong.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::text::tokenizer::{TokenId, Tokenizer};
pub use crate::verify_cache::VerifyCache;

/// The `format` string of a bundle manifest.
pub const BUNDLE_FORMAT: &str = "s1-mini-bundle";
/// The manifest `format_version` this engine reads. Version 2: `slow.onnx` takes one cache
/// buffer per layer and updates it in place (version 1 copied the whole cache in and out).
pub const BUNDLE_FORMAT_VERSION: u64 = 2;

/// How to make a bundle this engine reads, quoted in errors about old bundles.
pub const REEXPORT_HINT: &str = "re-export the bundle with this engine's exporter: \
     `PYTHONPATH=tools/export python -m s1mini_export --checkpoint CKPT --out BUNDLE` \
     (docs/bundle-format.md)";

/// [`Error::VersionMismatch`]'s hint for a bundle older than [`BUNDLE_FORMAT_VERSION`].
const OLDER_BUNDLE_HINT: &str = "; this bundle is older than the engine (format 1 copied the \
     whole KV cache in and out of slow.onnx every step): re-export the bundle with this \
     engine's exporter: `PYTHONPATH=tools/export python -m s1mini_export --checkpoint CKPT \
     --out BUNDLE` (docs/bundle-format.md)";
/// Output rate of the S1 codec; the engine's audio is always at this rate.
pub const CODEC_SAMPLE_RATE_HZ: u32 = 44_100;

const MANIFEST: &str = "manifest.json";

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
}

/// Everything about a loaded bundle that callers may want to see.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleInfo {
    /// Bundle directory.
    pub dir: PathBuf,
    /// `precision` (`fp32` or `fp16`).
    pub precision: String,
    /// Exporter name and version, for humans.
    pub exporter: String,
    /// Model dimensions.
    pub model: ModelDims,
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
    /// Graph role (`slow`, `fast`, `codec_decode`, `codec_encode`) → file path.
    pub graphs: BTreeMap<String, PathBuf>,
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

#[derive(Deserialize)]
struct FileEntry {
    sha256: String,
    bytes: u64,
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
        if !manifest_path.is_file() {
            return Err(Error::BundleNotFound { path: manifest_path });
        }
        let text = fs::read(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
        Self::from_manifest(dir, &text, &verify)
    }

    /// Validates manifest bytes as if they were `dir/manifest.json`, reading the files it lists
    /// from `dir` (the entry point of the manifest fuzz target: any bytes give `Ok` or an error,
    /// never a panic).
    pub fn from_manifest_bytes(dir: &Path, manifest: &[u8], verify_hashes: bool) -> Result<Bundle> {
        Self::from_manifest(dir, manifest, if verify_hashes { &Verify::Full } else { &Verify::Off })
    }

    fn from_manifest(dir: &Path, manifest: &[u8], verify: &Verify) -> Result<Bundle> {
        let m: Value = serde_json::from_slice(manifest)
            .map_err(|e| Error::bundle(MANIFEST, "-", format!("not valid json: {e}")))?;

        // Format and version first: a newer bundle's other fields may mean something else.
        let format = str_field(&m, "format")?;
        if format != BUNDLE_FORMAT {
            return Err(Error::VersionMismatch {
                file: MANIFEST.into(),
                field: "format".into(),
                expected: BUNDLE_FORMAT.into(),
                found: format.into(),
                hint: "",
            });
        }
        let version = m.get("format_version").and_then(Value::as_u64).ok_or_else(|| {
            Error::bundle(MANIFEST, "format_version", "missing or not an integer")
        })?;
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

        let precision = str_field(&m, "precision")?.to_string();
        if precision != "fp32" && precision != "fp16" {
            return Err(Error::bundle(
                MANIFEST,
                "precision",
                format!("{precision:?} is not fp32 or fp16"),
            ));
        }
        let exporter = match m.get("exporter") {
            Some(e) => format!(
                "{} {}",
                e.get("name").and_then(Value::as_str).unwrap_or("?"),
                e.get("version").and_then(Value::as_str).unwrap_or("?")
            ),
            None => "unknown".into(),
        };

        let model = ModelDims {
            dim: usize_field(&m, "model.dim")?,
            // fish-speech falls back to `dim` when the config has no fast_dim.
            fast_dim: match m.get("model").and_then(|v| v.get("fast_dim")) {
                Some(_) => usize_field(&m, "model.fast_dim")?,
                None => usize_field(&m, "model.dim")?,
            },
            n_layer: usize_field(&m, "model.n_layer")?,
            n_local_heads: usize_field(&m, "model.n_local_heads")?,
            head_dim: usize_field(&m, "model.head_dim")?,
            n_fast_layer: usize_field(&m, "model.n_fast_layer")?,
            fast_n_local_heads: usize_field(&m, "model.fast_n_local_heads")?,
            fast_head_dim: usize_field(&m, "model.fast_head_dim")?,
            num_codebooks: usize_field(&m, "model.num_codebooks")?,
            max_seq_len: usize_field(&m, "model.max_seq_len")?,
        };
        let tokens = TokenIds {
            im_end: id_field(&m, "tokens.im_end")?,
            interleave: id_field(&m, "tokens.interleave")?,
            semantic_begin: id_field(&m, "tokens.semantic_begin")?,
            semantic_end: id_field(&m, "tokens.semantic_end")?,
        };
        if tokens.semantic_end < tokens.semantic_begin {
            return Err(Error::bundle(
                MANIFEST,
                "tokens.semantic_end",
                "is below tokens.semantic_begin",
            ));
        }
        let semantic_rows = usize_field(&m, "head.semantic_rows")?;
        if semantic_rows != (tokens.semantic_end - tokens.semantic_begin) as usize + 1 {
            return Err(Error::bundle(
                MANIFEST,
                "head.semantic_rows",
                "must equal semantic_end - semantic_begin + 1",
            ));
        }
        let im_end_index = usize_field(&m, "head.im_end_index")?;
        if im_end_index < semantic_rows {
            return Err(Error::bundle(MANIFEST, "head.im_end_index", "overlaps the semantic rows"));
        }
        let fast_logit_rows = usize_field(&m, "fast.logit_rows")?;

        let sample_rate_hz = usize_field(&m, "codec.sample_rate_hz")?;
        if sample_rate_hz != CODEC_SAMPLE_RATE_HZ as usize {
            return Err(Error::bundle(
                MANIFEST,
                "codec.sample_rate_hz",
                format!("{sample_rate_hz} Hz, but the S1 codec runs at {CODEC_SAMPLE_RATE_HZ} Hz"),
            ));
        }
        let codec_books = usize_field(&m, "codec.num_codebooks")?;
        if codec_books != model.num_codebooks {
            return Err(Error::bundle(
                MANIFEST,
                "codec.num_codebooks",
                format!("{codec_books} differs from model.num_codebooks {}", model.num_codebooks),
            ));
        }
        let codebook_sizes: Vec<usize> = lookup(&m, "codec.codebook_sizes")?
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_u64().map(|x| x as usize)).collect())
            .ok_or_else(|| {
                Error::bundle(MANIFEST, "codec.codebook_sizes", "not a list of integers")
            })?;
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
            nonzero(usize_field(&m, "codec.max_decode_frames")?, "codec.max_decode_frames")?;
        let max_encode_frames = match lookup(&m, "codec.max_encode_frames") {
            Ok(_) => {
                nonzero(usize_field(&m, "codec.max_encode_frames")?, "codec.max_encode_frames")?
            }
            Err(_) => max_decode_frames,
        };
        let codec = CodecInfo {
            sample_rate_hz: CODEC_SAMPLE_RATE_HZ,
            frame_samples: nonzero(usize_field(&m, "codec.frame_samples")?, "codec.frame_samples")?,
            codebook_sizes,
            receptive_field_frames: usize_field(&m, "codec.receptive_field_frames")?,
            max_decode_frames,
            max_encode_frames,
        };
        for (field, v) in [
            ("model.n_layer", model.n_layer),
            ("model.num_codebooks", model.num_codebooks),
            ("model.max_seq_len", model.max_seq_len),
            ("model.dim", model.dim),
        ] {
            nonzero(v, field)?;
        }
        // One request's slow KV cache at full context (f32 K and V, [L, 1, H, T, D] each) must
        // be a size this machine can even express: an absurd manifest is refused here, before
        // anything is allocated from its numbers.
        let kv = [model.n_local_heads, model.head_dim, model.max_seq_len, 2, 4]
            .iter()
            .try_fold(model.n_layer, |acc, &x| acc.checked_mul(x));
        if kv.is_none_or(|b| b > isize::MAX as usize) {
            return Err(Error::bundle(
                MANIFEST,
                "model.max_seq_len",
                "the KV cache for this context overflows the address space",
            ));
        }

        // Files: existence and size always (cheap), sha256 when asked.
        let files_v = lookup(&m, "files")?
            .as_object()
            .ok_or_else(|| Error::bundle(MANIFEST, "files", "not an object"))?;
        let mut files = BTreeMap::new();
        let mut hashed_bytes = 0u64;
        for (name, entry) in files_v {
            let field = format!("files.{name}");
            let entry: FileEntry = serde_json::from_value(entry.clone()).map_err(|e| {
                Error::bundle(MANIFEST, &field, format!("expected {{sha256, bytes}}: {e}"))
            })?;
            if name.contains("..") || Path::new(name).is_absolute() {
                return Err(Error::bundle(
                    MANIFEST,
                    &field,
                    "file names must stay inside the bundle",
                ));
            }
            let path = dir.join(name);
            let meta = fs::metadata(&path).map_err(|_| {
                Error::bundle(name, &field, "listed in manifest.json but missing from the bundle")
            })?;
            if meta.len() != entry.bytes {
                return Err(Error::HashMismatch {
                    file: name.clone(),
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
                let got = sha256_file(&path)?;
                hashed_bytes += entry.bytes;
                if !got.eq_ignore_ascii_case(&entry.sha256) {
                    return Err(Error::HashMismatch {
                        file: name.clone(),
                        field: "sha256",
                        expected: entry.sha256.clone(),
                        got,
                    });
                }
                if let Verify::Stamped(stamps) = verify {
                    stamps.record(&path, &entry.sha256);
                }
            }
            files.insert(name.clone(), entry.bytes);
        }

        let mut graphs = BTreeMap::new();
        if let Some(g) = m.get("graphs").and_then(Value::as_object) {
            for (role, file) in g {
                let field = format!("graphs.{role}");
                let file =
                    file.as_str().ok_or_else(|| Error::bundle(MANIFEST, &field, "not a string"))?;
                if !files.contains_key(file) {
                    return Err(Error::bundle(
                        MANIFEST,
                        &field,
                        format!("{file} is not listed in files (missing from the bundle)"),
                    ));
                }
                graphs.insert(role.clone(), dir.join(file));
            }
        }

        let tokenizer = load_tokenizer(dir, &m, &files)?;
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
            exporter,
            model,
            tokens,
            semantic_rows,
            im_end_index,
            fast_logit_rows,
            codec,
            graphs,
            files,
        };
        Ok(Bundle { info, tokenizer, hashed_bytes })
    }
}

fn load_tokenizer(dir: &Path, m: &Value, files: &BTreeMap<String, u64>) -> Result<Tokenizer> {
    let file = str_field(m, "tokenizer.file")?;
    if !files.contains_key(file) {
        return Err(Error::bundle(
            MANIFEST,
            "tokenizer.file",
            format!("{file} is not listed in files"),
        ));
    }
    let pattern = str_field(m, "tokenizer.pattern")?;
    let num_ranks = usize_field(m, "tokenizer.num_ranks")?;
    let max_encode_chars = usize_field(m, "tokenizer.max_encode_chars")?;
    let path = dir.join(file);
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    // Corrupt content is a bundle error naming the file, not an I/O error.
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Error::bundle(file, "-", format!("not UTF-8 (at byte {})", e.valid_up_to()))
    })?;
    let ranks = Tokenizer::parse_ranks(text, file)?;
    if ranks.len() != num_ranks {
        return Err(Error::bundle(
            MANIFEST,
            "tokenizer.num_ranks",
            format!("{num_ranks}, but {file} holds {} ranks", ranks.len()),
        ));
    }
    let special_v = lookup(m, "tokens.special")?
        .as_object()
        .ok_or_else(|| Error::bundle(MANIFEST, "tokens.special", "not an object"))?;
    let mut special = HashMap::with_capacity(special_v.len());
    for (name, id) in special_v {
        let id = id.as_u64().and_then(|v| TokenId::try_from(v).ok()).ok_or_else(|| {
            Error::bundle(MANIFEST, &format!("tokens.special.{name}"), "not a token id")
        })?;
        special.insert(name.clone(), id);
    }
    Tokenizer::new(ranks, special, pattern, max_encode_chars)
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
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

fn lookup<'a>(m: &'a Value, dotted: &str) -> Result<&'a Value> {
    let mut v = m;
    for key in dotted.split('.') {
        v = v.get(key).ok_or_else(|| Error::bundle(MANIFEST, dotted, "missing"))?;
    }
    Ok(v)
}

fn str_field<'a>(m: &'a Value, dotted: &str) -> Result<&'a str> {
    lookup(m, dotted)?.as_str().ok_or_else(|| Error::bundle(MANIFEST, dotted, "not a string"))
}

fn usize_field(m: &Value, dotted: &str) -> Result<usize> {
    let v = lookup(m, dotted)?;
    v.as_u64().map(|x| x as usize).ok_or_else(|| {
        Error::bundle(MANIFEST, dotted, format!("{v} is not a non-negative integer"))
    })
}

fn id_field(m: &Value, dotted: &str) -> Result<TokenId> {
    let v = usize_field(m, dotted)?;
    TokenId::try_from(v).map_err(|_| Error::bundle(MANIFEST, dotted, "token id out of range"))
}

fn nonzero(v: usize, field: &str) -> Result<usize> {
    if v == 0 {
        Err(Error::bundle(MANIFEST, field, "must be > 0"))
    } else {
        Ok(v)
    }
}
