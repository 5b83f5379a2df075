//! `manifest.json` as written (`docs/bundle-format.md`), deserialised by serde: the types of its
//! values and nothing else. `bundle.rs` checks the values (presence, ranges, agreement between
//! fields) and builds [`BundleInfo`](super::BundleInfo) from them.
//!
//! Every checked leaf is an `Option` and every section defaults to empty, so that a missing key
//! is reported by the checks under its dotted name (`head.im_end_index: missing`) rather than
//! as serde's "missing field" at its parent; a value of the wrong type is reported by [`parse`]
//! at the path serde was reading.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_path_to_error::Segment;

use super::{StepStateTensor, MANIFEST};
use crate::error::{Error, Result};
use crate::text::tokenizer::TokenId;

/// The keys read before all others: a bundle of another format or version may mean something
/// else by the rest, so those are checked only once these match.
#[derive(Deserialize)]
pub(super) struct Header {
    pub format: Option<String>,
    pub format_version: Option<u64>,
}

/// The whole manifest (keys this engine does not read are ignored).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Manifest {
    pub precision: Option<String>,
    pub exporter: Option<Exporter>,
    pub model: ModelArgs,
    pub tokens: Tokens,
    pub tokenizer: TokenizerSection,
    pub head: Head,
    pub fast: Fast,
    /// `null` when the bundle was exported without a codec.
    pub codec: Option<CodecSection>,
    pub quantization: QuantizationSection,
    pub graphs: BTreeMap<String, String>,
    pub weights: BTreeMap<String, String>,
    pub files: Option<BTreeMap<String, FileEntry>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Exporter {
    pub name: Option<String>,
    pub version: Option<String>,
}

/// The manifest's `model` section as written: fish-speech's `DualARModelArgs` with its
/// fallbacks resolved by the exporter. Unchecked; the dimensions the engine sizes buffers from
/// are range-checked into [`BundleInfo::model`](super::BundleInfo::model), the others are
/// checked by the backend that reads them (the native CUDA backend, `backend/cuda/layout.rs`).
/// `None` where the manifest leaves a key out.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ModelArgs {
    /// Slow hidden width (checked: [`ModelDims::dim`](super::ModelDims::dim)).
    pub dim: Option<u64>,
    /// Fast hidden width; absent means `dim` (checked: `ModelDims::fast_dim`).
    pub fast_dim: Option<u64>,
    /// Slow layers (checked: `ModelDims::n_layer`).
    pub n_layer: Option<u64>,
    /// Slow KV heads (checked: `ModelDims::n_local_heads`).
    pub n_local_heads: Option<u64>,
    /// Slow head width (checked: `ModelDims::head_dim`).
    pub head_dim: Option<u64>,
    /// Fast layers (checked: `ModelDims::n_fast_layer`).
    pub n_fast_layer: Option<u64>,
    /// Fast KV heads (checked: `ModelDims::fast_n_local_heads`).
    pub fast_n_local_heads: Option<u64>,
    /// Fast head width (checked: `ModelDims::fast_head_dim`).
    pub fast_head_dim: Option<u64>,
    /// Codebooks per frame (checked: `ModelDims::num_codebooks`).
    pub num_codebooks: Option<u64>,
    /// Context length in tokens (checked: `ModelDims::max_seq_len`).
    pub max_seq_len: Option<u64>,
    /// Slow query heads.
    pub n_head: Option<u64>,
    /// Slow FFN width.
    pub intermediate_size: Option<u64>,
    /// Rows of the token embedding and the full slow head.
    pub vocab_size: Option<u64>,
    /// RoPE base θ.
    pub rope_base: Option<f64>,
    /// RMSNorm epsilon.
    pub norm_eps: Option<f64>,
    /// Slow attention normalises q and k.
    pub attention_qk_norm: Option<bool>,
    /// Slow qkv projection has a bias.
    pub attention_qkv_bias: Option<bool>,
    /// Slow output projection has a bias.
    pub attention_o_bias: Option<bool>,
    /// The slow head shares the token embedding's weights.
    pub tie_word_embeddings: Option<bool>,
    /// Entries per codebook in the LLM's codebook embeddings.
    pub codebook_size: Option<u64>,
    /// Audio positions' embeddings are divided by sqrt(K + 1).
    pub scale_codebook_embeddings: Option<bool>,
    /// Fast query heads.
    pub fast_n_head: Option<u64>,
    /// Fast FFN width.
    pub fast_intermediate_size: Option<u64>,
    /// Fast attention normalises q and k.
    pub fast_attention_qk_norm: Option<bool>,
    /// Fast qkv projection has a bias.
    pub fast_attention_qkv_bias: Option<bool>,
    /// Fast output projection has a bias.
    pub fast_attention_o_bias: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Tokens {
    pub im_end: Option<u64>,
    pub interleave: Option<u64>,
    pub semantic_begin: Option<u64>,
    pub semantic_end: Option<u64>,
    pub special: Option<HashMap<String, TokenId>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct TokenizerSection {
    pub file: Option<String>,
    pub pattern: Option<String>,
    pub num_ranks: Option<u64>,
    pub max_encode_chars: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Head {
    pub semantic_rows: Option<u64>,
    pub im_end_index: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Fast {
    pub logit_rows: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CodecSection {
    pub sample_rate_hz: Option<u64>,
    pub frame_samples: Option<u64>,
    pub num_codebooks: Option<u64>,
    pub codebook_sizes: Option<Vec<u64>>,
    pub receptive_field_frames: Option<u64>,
    pub max_decode_frames: Option<u64>,
    pub max_encode_frames: Option<u64>,
    pub step_state: Option<Vec<StepStateTensor>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct QuantizationSection {
    pub layer_bits: Option<u64>,
    pub head_bits: Option<u64>,
    pub block_size: Option<u64>,
    pub matrix_bytes: MatrixBytes,
    /// "fp16" or "fp32"; absent in bundles written before the option (fp32).
    pub kv_cache: Option<String>,
    /// The codec decoder's quantisation; absent: fp32 (codec_int8.py).
    pub codec: Option<CodecQuantizationSection>,
}

/// `quantization.codec`: only the field the engine reads; the rest documents the export.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CodecQuantizationSection {
    /// "int8".
    pub convolutions: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct MatrixBytes {
    pub slow: Option<u64>,
    pub fast: Option<u64>,
}

/// One entry of `files`: both keys are required.
#[derive(Deserialize)]
pub(super) struct FileEntry {
    pub sha256: String,
    pub bytes: u64,
}

/// Deserialises manifest bytes as `T`. Invalid JSON is `BundleInvalid` on the whole file
/// (field `-`); a value of the wrong type is `BundleInvalid` naming its dotted key
/// (`codec.sample_rate_hz`), the index of a list element in the reason rather than the field,
/// so that the field is always a key of the manifest.
pub(super) fn parse<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(type_error)?;
    // Trailing bytes after the document make the whole file invalid, as serde_json::from_slice.
    de.end().map_err(|e| Error::bundle(MANIFEST, "-", format!("not valid json: {e}")))?;
    Ok(value)
}

#[cold]
fn type_error(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return Error::bundle(MANIFEST, "-", format!("not valid json: {inner}"));
    }
    let mut segments: Vec<&Segment> = e.path().iter().collect();
    let item = match segments.last() {
        Some(Segment::Seq { index }) => {
            let index = *index;
            segments.pop();
            Some(index)
        }
        _ => None,
    };
    let mut field = String::new();
    for s in segments {
        match s {
            Segment::Seq { index } => field.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
            }
            Segment::Unknown => field.push_str(if field.is_empty() { "?" } else { ".?" }),
        }
    }
    if field.is_empty() {
        field.push('-');
    }
    let reason = match item {
        Some(i) => format!("item {i}: {inner}"),
        None => inner.to_string(),
    };
    Error::bundle(MANIFEST, &field, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(json: &str) -> (String, String) {
        match parse::<Manifest>(json.as_bytes()) {
            Err(Error::BundleInvalid { file, field, reason }) => {
                assert_eq!(file, MANIFEST);
                (field, reason)
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("{json}: parsed"),
        }
    }

    #[test]
    fn missing_keys_and_sections_parse_as_none() {
        let m: Manifest = parse(br#"{"head": {"semantic_rows": 4}, "codec": null}"#).unwrap();
        assert_eq!((m.head.semantic_rows, m.head.im_end_index), (Some(4), None));
        assert!(m.codec.is_none() && m.files.is_none() && m.model.dim.is_none());
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_dotted_key() {
        let (field, reason) = field_of(r#"{"codec": {"sample_rate_hz": "44100"}}"#);
        assert_eq!(field, "codec.sample_rate_hz");
        assert!(reason.contains("expected u64"), "{reason}");
        // A list element: the key is the field, the index is in the reason.
        let (field, reason) = field_of(
            r#"{"codec": {"step_state": [{"name": "k", "input": "past.k", "output": "present.k",
                "shape": [2, "x"]}]}}"#,
        );
        assert_eq!(field, "codec.step_state[0].shape");
        assert!(reason.starts_with("item 1: "), "{reason}");
        // A required key of a list entry.
        let (field, reason) = field_of(r#"{"files": {"a.onnx": {"sha256": "00"}}}"#);
        assert_eq!(field, "files.a.onnx");
        assert!(reason.contains("missing field `bytes`"), "{reason}");
        let (field, _) = field_of(r#"{"tokens": {"special": {"<|x|>": -1}}}"#);
        assert_eq!(field, "tokens.special.<|x|>");
    }

    #[test]
    fn invalid_json_is_the_whole_file() {
        for bad in ["{ not json", r#"{"format": "s1-mini-bundle"} trailing"#, ""] {
            let (field, reason) = field_of(bad);
            assert_eq!(field, "-");
            assert!(reason.starts_with("not valid json"), "{reason}");
        }
        let (field, _) = field_of("[1, 2]");
        assert_eq!(field, "-");
    }
}
