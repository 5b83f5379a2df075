//! Host-side plan of the GPU weight arena: which safetensors tensor goes where, with which
//! shape, and which rows of the heads are kept. Pure Rust, tested on every host.
//!
//! - `output.weight` is gathered to the restricted head: rows `semantic_begin..=semantic_end`,
//!   then `<|im_end|>` (`[semantic_rows + 1, dim]`), in the order of the slow graph's logits.
//! - `fast_output.weight` keeps its first `fast.logit_rows` rows (the only ones sampled).
//! - Everything else is copied as is (bf16, checkpoint key names, torch `[out, in]` layout).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::bundle::safetensors::TensorInfo;
use crate::bundle::BundleInfo;
use crate::error::{Error, Result};

/// Byte alignment of every tensor in the arena (16-byte vector loads need 16; 256 is what
/// cudaMalloc gives and keeps rows of different tensors in distinct cache lines).
pub const ARENA_ALIGN: usize = 256;

const MANIFEST: &str = "manifest.json";

/// The model numbers the CUDA backend needs, from the loaded bundle ([`ModelConfig::from_bundle`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Slow hidden width.
    pub dim: usize,
    /// Slow layers.
    pub n_layer: usize,
    /// Slow query heads.
    pub n_head: usize,
    /// Slow KV heads.
    pub n_local_heads: usize,
    /// Slow head width.
    pub head_dim: usize,
    /// Slow FFN width.
    pub intermediate_size: usize,
    /// Embedding / full-head rows.
    pub vocab_size: usize,
    /// Context length, in positions.
    pub max_seq_len: usize,
    /// RoPE base θ.
    pub rope_base: f64,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Slow qk-norm.
    pub qk_norm: bool,
    /// Codebook entries (per codebook, in the LLM).
    pub codebook_size: usize,
    /// Codebooks K.
    pub num_codebooks: usize,
    /// Divide audio positions' embeddings by sqrt(K + 1).
    pub scale_codebook_embeddings: bool,
    /// Fast layers.
    pub n_fast_layer: usize,
    /// Fast width (must equal `dim`: `fast_project_in` is the identity).
    pub fast_dim: usize,
    /// Fast query heads.
    pub fast_n_head: usize,
    /// Fast KV heads.
    pub fast_n_local_heads: usize,
    /// Fast head width.
    pub fast_head_dim: usize,
    /// Fast FFN width.
    pub fast_intermediate_size: usize,
    /// Fast qk-norm.
    pub fast_qk_norm: bool,
    /// `<|semantic:0|>` id.
    pub semantic_begin: usize,
    /// `<|semantic:N-1|>` id.
    pub semantic_end: usize,
    /// `<|im_end|>` id.
    pub im_end: usize,
    /// Restricted head rows before `<|im_end|>`.
    pub semantic_rows: usize,
    /// Index of `<|im_end|>` in the restricted head.
    pub im_end_index: usize,
    /// Fast logits sampled per codebook.
    pub fast_logit_rows: usize,
    /// Weights file name inside the bundle.
    pub weights_file: String,
}

impl ModelConfig {
    /// The configuration of a loaded bundle: its checked dimensions, token ids and head rows,
    /// plus what only this backend reads from the manifest's `model` section
    /// ([`BundleInfo::model_args`]), checked here against the kernels' limits.
    pub fn from_bundle(info: &BundleInfo) -> Result<Self> {
        let a = &info.model_args;
        let d = &info.model;
        let count = |v: Option<u64>, key: &str| -> Result<usize> {
            let field = format!("model.{key}");
            let v = v.ok_or_else(|| Error::bundle(MANIFEST, &field, "missing"))?;
            usize::try_from(v).map_err(|_| Error::bundle(MANIFEST, &field, "too large"))
        };
        let number = |v: Option<f64>, key: &str| -> Result<f64> {
            v.ok_or_else(|| Error::bundle(MANIFEST, &format!("model.{key}"), "missing"))
        };
        let t = &info.tokens;
        let cfg = ModelConfig {
            dim: d.dim,
            n_layer: d.n_layer,
            n_head: count(a.n_head, "n_head")?,
            n_local_heads: d.n_local_heads,
            head_dim: d.head_dim,
            intermediate_size: count(a.intermediate_size, "intermediate_size")?,
            vocab_size: count(a.vocab_size, "vocab_size")?,
            max_seq_len: d.max_seq_len,
            rope_base: number(a.rope_base, "rope_base")?,
            norm_eps: number(a.norm_eps, "norm_eps")? as f32,
            qk_norm: a.attention_qk_norm.unwrap_or(false),
            codebook_size: count(a.codebook_size, "codebook_size")?,
            num_codebooks: d.num_codebooks,
            scale_codebook_embeddings: a.scale_codebook_embeddings.unwrap_or(false),
            n_fast_layer: d.n_fast_layer,
            fast_dim: d.fast_dim,
            fast_n_head: count(a.fast_n_head, "fast_n_head")?,
            fast_n_local_heads: d.fast_n_local_heads,
            fast_head_dim: d.fast_head_dim,
            fast_intermediate_size: count(a.fast_intermediate_size, "fast_intermediate_size")?,
            fast_qk_norm: a.fast_attention_qk_norm.unwrap_or(false),
            semantic_begin: t.semantic_begin as usize,
            semantic_end: t.semantic_end as usize,
            im_end: t.im_end as usize,
            semantic_rows: info.semantic_rows,
            im_end_index: info.im_end_index,
            fast_logit_rows: info.fast_logit_rows,
            weights_file: info
                .weights
                .get("llm")
                .cloned()
                .ok_or_else(|| Error::bundle(MANIFEST, "weights.llm", "missing"))?,
        };
        for (k, flag) in [
            ("attention_qkv_bias", a.attention_qkv_bias),
            ("attention_o_bias", a.attention_o_bias),
            ("fast_attention_qkv_bias", a.fast_attention_qkv_bias),
            ("fast_attention_o_bias", a.fast_attention_o_bias),
            ("tie_word_embeddings", a.tie_word_embeddings),
        ] {
            if flag.unwrap_or(false) {
                return Err(unsupported(k, "the CUDA backend implements the S1 layout (false)"));
            }
        }
        cfg.check()?;
        Ok(cfg)
    }

    /// The S1-mini configuration (S1MINI_FACTS.md §1.1, tokens §3.1), for random-weight benchmarks.
    pub fn s1_mini() -> Self {
        ModelConfig {
            dim: 1024,
            n_layer: 28,
            n_head: 16,
            n_local_heads: 8,
            head_dim: 128,
            intermediate_size: 3072,
            vocab_size: 155_776,
            max_seq_len: 8192,
            rope_base: 1_000_000.0,
            norm_eps: 1e-6,
            qk_norm: true,
            codebook_size: 4096,
            num_codebooks: 10,
            scale_codebook_embeddings: true,
            n_fast_layer: 4,
            fast_dim: 1024,
            fast_n_head: 16,
            fast_n_local_heads: 8,
            fast_head_dim: 64,
            fast_intermediate_size: 3072,
            fast_qk_norm: false,
            semantic_begin: 151_658,
            semantic_end: 155_753,
            im_end: 151_647,
            semantic_rows: 4096,
            im_end_index: 4096,
            fast_logit_rows: 1024,
            weights_file: "llm.safetensors".into(),
        }
    }

    /// Rows of the restricted slow head.
    pub fn head_rows(&self) -> usize {
        self.semantic_rows + 1
    }

    /// Width of the fused slow qkv projection.
    pub fn qkv_width(&self) -> usize {
        (self.n_head + 2 * self.n_local_heads) * self.head_dim
    }

    /// Width of the fused fast qkv projection.
    pub fn fast_qkv_width(&self) -> usize {
        (self.fast_n_head + 2 * self.fast_n_local_heads) * self.fast_head_dim
    }

    /// Checks the shape constraints of the kernels (docs/cuda.md "Limits").
    pub fn check(&self) -> Result<()> {
        if self.fast_dim != self.dim {
            return Err(unsupported("fast_dim", "must equal dim (fast_project_in = identity)"));
        }
        if self.semantic_end < self.semantic_begin
            || self.semantic_rows != self.semantic_end - self.semantic_begin + 1
        {
            return Err(unsupported(
                "head.semantic_rows",
                "must be semantic_end - semantic_begin + 1",
            ));
        }
        if self.im_end_index != self.semantic_rows {
            return Err(unsupported("head.im_end_index", "must equal semantic_rows"));
        }
        if self.semantic_end >= self.vocab_size || self.im_end >= self.vocab_size {
            return Err(unsupported("tokens", "ids outside the vocabulary"));
        }
        if self.fast_logit_rows == 0 || self.fast_logit_rows > self.codebook_size {
            return Err(unsupported("fast.logit_rows", "must be in 1..=codebook_size"));
        }
        if self.head_rows() > 8192 {
            return Err(unsupported(
                "head.semantic_rows",
                "the sampling kernel sorts at most 8192 logits",
            ));
        }
        for (name, hd, nh, nkv) in [
            ("head_dim", self.head_dim, self.n_head, self.n_local_heads),
            ("fast_head_dim", self.fast_head_dim, self.fast_n_head, self.fast_n_local_heads),
        ] {
            if hd == 0 || !hd.is_multiple_of(8) || hd > 128 {
                return Err(unsupported(name, "must be a multiple of 8 and at most 128"));
            }
            if nkv == 0 || nh % nkv != 0 {
                return Err(unsupported(name, "query heads must be a multiple of KV heads"));
            }
        }
        // GEMV reads 16-byte rows: every reduction width a multiple of 8 bf16.
        for (name, k) in [
            ("dim", self.dim),
            ("intermediate_size", self.intermediate_size),
            ("fast_intermediate_size", self.fast_intermediate_size),
            ("n_head*head_dim", self.n_head * self.head_dim),
            ("fast_n_head*fast_head_dim", self.fast_n_head * self.fast_head_dim),
        ] {
            if k == 0 || k % 8 != 0 {
                return Err(unsupported(name, "must be a positive multiple of 8"));
            }
        }
        if self.num_codebooks == 0 || self.num_codebooks > 15 {
            return Err(unsupported("num_codebooks", "must be in 1..=15"));
        }
        Ok(())
    }

    /// Whether every GEMV reduction width allows int8 rows (16-byte loads of 16 int8).
    pub fn int8_compatible(&self) -> bool {
        [
            self.dim,
            self.intermediate_size,
            self.fast_intermediate_size,
            self.n_head * self.head_dim,
            self.fast_n_head * self.fast_head_dim,
        ]
        .iter()
        .all(|k| k % 16 == 0)
    }
}

#[cold]
fn unsupported(field: &str, reason: &str) -> Error {
    Error::bundle(MANIFEST, field, format!("not supported by the cuda backend: {reason}"))
}

/// Which rows of the source tensor a placement takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rows {
    /// All rows.
    All,
    /// The first `n` rows.
    First(usize),
    /// Rows `begin..=end`, then row `extra` (the restricted slow head).
    SemanticHead {
        /// First semantic row.
        begin: usize,
        /// Last semantic row.
        end: usize,
        /// `<|im_end|>` row appended.
        extra: usize,
    },
}

/// One weight in the device arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Checkpoint key (`layers.3.attention.wqkv.weight`).
    pub name: String,
    /// Shape on the device (`[rows, cols]` or `[n]`).
    pub shape: Vec<usize>,
    /// Rows taken from the source tensor.
    pub rows: Rows,
    /// Byte offset in the arena (multiple of [`ARENA_ALIGN`]).
    pub offset: usize,
    /// Byte length on the device (bf16).
    pub bytes: usize,
}

impl Placement {
    /// A transformer layer's projection matrix (wqkv, wo, w1, w2, w3 of the slow or fast
    /// stack): what `cuda_weights = int8` quantises. Embeddings, norms and heads stay bf16.
    pub fn is_layer_matrix(&self) -> bool {
        self.shape.len() == 2
            && (self.name.starts_with("layers.") || self.name.starts_with("fast_layers."))
    }
}

/// All weights of the model in one device arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightPlan {
    /// In arena order.
    pub placements: Vec<Placement>,
    /// Arena size in bytes.
    pub arena_bytes: usize,
}

/// The tensors the backend uses: (checkpoint key, expected source shape, rows kept).
pub fn expected_tensors(c: &ModelConfig) -> Vec<(String, Vec<usize>, Rows)> {
    let mut v: Vec<(String, Vec<usize>, Rows)> = Vec::new();
    let mut t = |n: String, s: Vec<usize>| v.push((n, s, Rows::All));
    t("embeddings.weight".into(), vec![c.vocab_size, c.dim]);
    t("codebook_embeddings.weight".into(), vec![c.codebook_size * c.num_codebooks, c.dim]);
    for i in 0..c.n_layer {
        let p = format!("layers.{i}.");
        t(format!("{p}attention_norm.weight"), vec![c.dim]);
        t(format!("{p}attention.wqkv.weight"), vec![c.qkv_width(), c.dim]);
        if c.qk_norm {
            t(format!("{p}attention.q_norm.weight"), vec![c.head_dim]);
            t(format!("{p}attention.k_norm.weight"), vec![c.head_dim]);
        }
        t(format!("{p}attention.wo.weight"), vec![c.dim, c.n_head * c.head_dim]);
        t(format!("{p}ffn_norm.weight"), vec![c.dim]);
        t(format!("{p}feed_forward.w1.weight"), vec![c.intermediate_size, c.dim]);
        t(format!("{p}feed_forward.w3.weight"), vec![c.intermediate_size, c.dim]);
        t(format!("{p}feed_forward.w2.weight"), vec![c.dim, c.intermediate_size]);
    }
    t("norm.weight".into(), vec![c.dim]);
    t("fast_embeddings.weight".into(), vec![c.codebook_size, c.fast_dim]);
    for i in 0..c.n_fast_layer {
        let p = format!("fast_layers.{i}.");
        t(format!("{p}attention_norm.weight"), vec![c.fast_dim]);
        t(format!("{p}attention.wqkv.weight"), vec![c.fast_qkv_width(), c.fast_dim]);
        if c.fast_qk_norm {
            t(format!("{p}attention.q_norm.weight"), vec![c.fast_head_dim]);
            t(format!("{p}attention.k_norm.weight"), vec![c.fast_head_dim]);
        }
        t(format!("{p}attention.wo.weight"), vec![c.fast_dim, c.fast_n_head * c.fast_head_dim]);
        t(format!("{p}ffn_norm.weight"), vec![c.fast_dim]);
        t(format!("{p}feed_forward.w1.weight"), vec![c.fast_intermediate_size, c.fast_dim]);
        t(format!("{p}feed_forward.w3.weight"), vec![c.fast_intermediate_size, c.fast_dim]);
        t(format!("{p}feed_forward.w2.weight"), vec![c.fast_dim, c.fast_intermediate_size]);
    }
    t("fast_norm.weight".into(), vec![c.fast_dim]);
    v.push((
        "output.weight".into(),
        vec![c.vocab_size, c.dim],
        Rows::SemanticHead { begin: c.semantic_begin, end: c.semantic_end, extra: c.im_end },
    ));
    v.push((
        "fast_output.weight".into(),
        vec![c.codebook_size, c.fast_dim],
        Rows::First(c.fast_logit_rows),
    ));
    v
}

fn align(x: usize) -> usize {
    x.div_ceil(ARENA_ALIGN) * ARENA_ALIGN
}

impl WeightPlan {
    /// The plan for `c` without a file (random-weight benchmarks).
    pub fn for_config(c: &ModelConfig) -> Self {
        let mut placements = Vec::new();
        let mut off = 0usize;
        for (name, shape, rows) in expected_tensors(c) {
            let dev_shape = match &rows {
                Rows::All => shape.clone(),
                Rows::First(n) => vec![*n, shape[1]],
                Rows::SemanticHead { begin, end, .. } => vec![end - begin + 2, shape[1]],
            };
            let bytes = dev_shape.iter().product::<usize>() * 2;
            placements.push(Placement { name, shape: dev_shape, rows, offset: off, bytes });
            off = align(off + bytes);
        }
        WeightPlan { placements, arena_bytes: off }
    }

    /// The plan for `c` checked against a safetensors header (names, dtypes, shapes).
    pub fn new(c: &ModelConfig, header: &BTreeMap<String, TensorInfo>) -> Result<Self> {
        let file = c.weights_file.as_str();
        for (name, shape, _) in expected_tensors(c) {
            let t =
                header.get(&name).ok_or_else(|| Error::bundle(file, &name, "tensor missing"))?;
            if t.dtype != "BF16" {
                return Err(Error::bundle(
                    file,
                    &name,
                    format!("dtype {} (expected BF16)", t.dtype),
                ));
            }
            if t.shape != shape {
                return Err(Error::bundle(
                    file,
                    &name,
                    format!("shape {:?} (expected {:?})", t.shape, shape),
                ));
            }
            if t.bytes != shape.iter().product::<usize>() * 2 {
                return Err(Error::bundle(file, &name, "byte length does not match the shape"));
            }
        }
        Ok(Self::for_config(c))
    }

    /// The plan without the placements `drop` selects, the others laid out again in order
    /// (an int8 model's bf16 arena holds no layer matrices).
    pub fn without(&self, drop: impl Fn(&Placement) -> bool) -> Self {
        let mut placements = Vec::new();
        let mut off = 0usize;
        for p in self.placements.iter().filter(|p| !drop(p)) {
            placements.push(Placement { offset: off, ..p.clone() });
            off = align(off + p.bytes);
        }
        WeightPlan { placements, arena_bytes: off }
    }

    /// Placement of a checkpoint key.
    pub fn get(&self, name: &str) -> Option<&Placement> {
        self.placements.iter().find(|p| p.name == name)
    }

    /// Source byte ranges (absolute file offset, length) whose concatenation is the placement's
    /// device bytes, in order.
    pub fn source_ranges(p: &Placement, t: &TensorInfo) -> Vec<(u64, usize)> {
        let cols = t.shape.get(1).copied().unwrap_or(1);
        let row_bytes = cols * 2;
        match &p.rows {
            Rows::All => vec![(t.file_offset, t.bytes)],
            Rows::First(n) => vec![(t.file_offset, n * row_bytes)],
            Rows::SemanticHead { begin, end, extra } => vec![
                (t.file_offset + (begin * row_bytes) as u64, (end - begin + 1) * row_bytes),
                (t.file_offset + (extra * row_bytes) as u64, row_bytes),
            ],
        }
    }
}

/// The bundle's safetensors file, read one placement at a time into the arena's host image (an
/// int8 load quantises each layer matrix on the device without holding the whole bf16 model in
/// device memory).
pub struct TensorFile<'a> {
    file: std::fs::File,
    path: &'a Path,
    header: &'a BTreeMap<String, TensorInfo>,
}

impl<'a> TensorFile<'a> {
    /// Opens `path`, whose tensors `header` describes.
    pub fn open(path: &'a Path, header: &'a BTreeMap<String, TensorInfo>) -> Result<Self> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        Ok(TensorFile { file, path, header })
    }

    /// Fills `out` (exactly `p.bytes` long) with the placement's device bytes.
    pub fn read_into(&mut self, p: &Placement, out: &mut [u8]) -> Result<()> {
        let io = |e| Error::Io { path: self.path.to_path_buf(), source: e };
        let t = self.header.get(&p.name).ok_or_else(|| {
            Error::bundle(&self.path.to_string_lossy(), &p.name, "tensor missing")
        })?;
        if out.len() != p.bytes {
            return Err(Error::bundle(
                &self.path.to_string_lossy(),
                &p.name,
                "placement size does not match",
            ));
        }
        let mut at = 0usize;
        for (off, len) in WeightPlan::source_ranges(p, t) {
            self.file.seek(SeekFrom::Start(off)).map_err(io)?;
            self.file.read_exact(&mut out[at..at + len]).map_err(io)?;
            at += len;
        }
        debug_assert_eq!(at, p.bytes);
        Ok(())
    }
}

/// fish-speech's RoPE table (llama.py L906-925) as bf16 bits, `[len, head_dim/2, 2]` (cos, sin):
/// freqs = 1 / base^(2i/hd) in f32, angle = pos * freq in f32, cos/sin in f32, rounded to bf16.
pub fn rope_table_bf16(base: f64, head_dim: usize, len: usize) -> Vec<u16> {
    let half = head_dim / 2;
    let base = base as f32;
    let freqs: Vec<f32> =
        (0..half).map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32)).collect();
    let mut out = Vec::with_capacity(len * half * 2);
    for pos in 0..len {
        for &f in &freqs {
            let a = pos as f32 * f;
            out.push(bf16_bits(a.cos()));
            out.push(bf16_bits(a.sin()));
        }
    }
    out
}

/// f32 → bf16 bits, round to nearest even (torch's conversion).
pub fn bf16_bits(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    let b = x.to_bits();
    let lsb = (b >> 16) & 1;
    (b.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// bf16 bits → f32.
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::safetensors::read_header;
    use std::path::PathBuf;

    fn tiny() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
    }

    fn tiny_config() -> ModelConfig {
        let info = crate::bundle::Bundle::load(&tiny(), false).unwrap().info;
        ModelConfig::from_bundle(&info).unwrap()
    }

    /// The tiny bundle's config, weights file, its header and the weight plan.
    fn tiny_plan() -> (ModelConfig, PathBuf, BTreeMap<String, TensorInfo>, WeightPlan) {
        let c = tiny_config();
        let path = tiny().join(&c.weights_file);
        let h = read_header(&path).unwrap();
        let plan = WeightPlan::new(&c, &h).unwrap();
        (c, path, h, plan)
    }

    #[test]
    fn layout_tiny_manifest_parses_and_checks() {
        let c = tiny_config();
        assert_eq!((c.dim, c.n_layer, c.head_dim, c.fast_head_dim), (32, 2, 16, 8));
        assert_eq!(c.head_rows(), c.semantic_rows + 1);
        assert_eq!(c.semantic_rows, c.semantic_end - c.semantic_begin + 1);
        assert!(c.qk_norm && !c.fast_qk_norm);
        ModelConfig::s1_mini().check().unwrap();
        assert!(ModelConfig::s1_mini().int8_compatible());
    }

    #[test]
    fn layout_config_comes_from_the_loaded_bundle_and_names_what_it_lacks() {
        let info = crate::bundle::Bundle::load(&tiny(), false).unwrap().info;
        let c = ModelConfig::from_bundle(&info).unwrap();
        assert_eq!((c.dim, c.fast_dim, c.n_layer), (info.model.dim, info.model.fast_dim, 2));
        assert_eq!(c.semantic_begin, info.tokens.semantic_begin as usize);
        assert_eq!(c.weights_file, "llm.safetensors");
        let field_of = |info: &BundleInfo| match ModelConfig::from_bundle(info) {
            Err(Error::BundleInvalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut i = info.clone();
        i.model_args.n_head = None;
        assert_eq!(field_of(&i), "model.n_head");
        let mut i = info.clone();
        i.model_args.tie_word_embeddings = Some(true);
        assert_eq!(field_of(&i), "tie_word_embeddings");
        let mut i = info;
        i.weights.clear();
        assert_eq!(field_of(&i), "weights.llm");
    }

    #[test]
    fn layout_tiny_safetensors_matches_plan() {
        let (c, _, h, plan) = tiny_plan();
        // Every checkpoint tensor is used except none (tiny has no fast_project_in).
        assert_eq!(plan.placements.len(), h.len());
        for p in &plan.placements {
            assert_eq!(p.offset % ARENA_ALIGN, 0);
            assert_eq!(p.bytes, p.shape.iter().product::<usize>() * 2);
        }
        let head = plan.get("output.weight").unwrap();
        assert_eq!(head.shape, vec![c.semantic_rows + 1, c.dim]);
        let fo = plan.get("fast_output.weight").unwrap();
        assert_eq!(fo.shape, vec![c.fast_logit_rows, c.dim]);
        let last = plan.placements.last().unwrap();
        assert!(plan.arena_bytes >= last.offset + last.bytes);
    }

    #[test]
    fn layout_head_rows_are_gathered_semantic_then_im_end() {
        let (c, path, h, plan) = tiny_plan();
        let file = std::fs::read(&path).unwrap();
        let t = &h["output.weight"];
        let row = |r: usize| {
            let s = t.file_offset as usize + r * c.dim * 2;
            &file[s..s + c.dim * 2]
        };
        let head = plan.get("output.weight").unwrap();
        let mut dev = vec![0u8; head.bytes];
        TensorFile::open(&path, &h).unwrap().read_into(head, &mut dev).unwrap();
        let dev_row = |i: usize| &dev[i * c.dim * 2..(i + 1) * c.dim * 2];
        assert_eq!(dev_row(0), row(c.semantic_begin));
        assert_eq!(dev_row(c.semantic_rows - 1), row(c.semantic_end));
        assert_eq!(dev_row(c.im_end_index), row(c.im_end));
    }

    #[test]
    fn layout_wrong_shape_is_bundle_invalid() {
        let c = tiny_config();
        let mut h = read_header(&tiny().join(&c.weights_file)).unwrap();
        h.get_mut("layers.0.attention.wqkv.weight").unwrap().shape = vec![1, 2];
        let e = WeightPlan::new(&c, &h).unwrap_err();
        assert!(matches!(e, Error::BundleInvalid { .. }), "{e}");
        let mut h = read_header(&tiny().join(&c.weights_file)).unwrap();
        h.remove("norm.weight");
        assert!(WeightPlan::new(&c, &h).unwrap_err().to_string().contains("norm.weight"));
    }

    #[test]
    fn layout_unsupported_configs_are_rejected() {
        let mut c = ModelConfig::s1_mini();
        c.head_dim = 256;
        assert!(c.check().is_err());
        let mut c = ModelConfig::s1_mini();
        c.fast_dim = 512;
        assert!(c.check().is_err());
        let mut c = ModelConfig::s1_mini();
        c.dim = 1020;
        assert!(c.check().is_err());
    }

    #[test]
    fn layout_s1_mini_arena_is_about_1_5_gb() {
        // Full weights 1.72 GB minus the 151,680 head rows dropped (≈ 0.31 GB) and 3072 fast rows.
        let plan = WeightPlan::for_config(&ModelConfig::s1_mini());
        let gb = plan.arena_bytes as f64 / 1e9;
        assert!((1.38..1.42).contains(&gb), "{gb}");
    }

    #[test]
    fn layout_int8_resident_arena_drops_the_layer_matrices() {
        let c = ModelConfig::s1_mini();
        let plan = WeightPlan::for_config(&c);
        let resident = plan.without(Placement::is_layer_matrix);
        let matrices = plan.placements.iter().filter(|p| p.is_layer_matrix()).count();
        assert_eq!(matrices, 5 * (c.n_layer + c.n_fast_layer));
        assert_eq!(resident.placements.len(), plan.placements.len() - matrices);
        assert!(resident.get("layers.0.attention.wqkv.weight").is_none());
        assert!(resident.get("layers.0.attention_norm.weight").is_some());
        assert!(resident.get("output.weight").is_some());
        let mut end = 0;
        for p in &resident.placements {
            assert_eq!(p.offset % ARENA_ALIGN, 0);
            assert!(p.offset >= end, "{} overlaps the tensor before it", p.name);
            end = p.offset + p.bytes;
        }
        assert!(resident.arena_bytes >= end);
        // S1-mini: 1.40 GB in all; what stays bf16 is mostly the token embeddings (0.32 GB)
        // and the codebook embeddings (0.08 GB).
        let gb = resident.arena_bytes as f64 / 1e9;
        assert!((0.40..0.44).contains(&gb), "{gb}");
    }

    #[test]
    fn layout_tensor_file_copies_plain_tensors_verbatim_and_checks_sizes() {
        let (_, path, h, plan) = tiny_plan();
        let file = std::fs::read(&path).unwrap();
        let mut f = TensorFile::open(&path, &h).unwrap();
        for p in plan.placements.iter().filter(|p| p.rows == Rows::All) {
            let mut one = vec![0u8; p.bytes];
            f.read_into(p, &mut one).unwrap();
            let fo = h[&p.name].file_offset as usize;
            assert_eq!(one, &file[fo..fo + p.bytes], "{}", p.name);
        }
        let p = &plan.placements[0];
        let mut short = vec![0u8; p.bytes - 2];
        assert!(matches!(f.read_into(p, &mut short), Err(Error::BundleInvalid { .. })));
    }

    #[test]
    fn rope_table_matches_fish_speech_at_known_points() {
        let t = rope_table_bf16(1e6, 128, 4);
        // pos 0: cos 1, sin 0 for every pair.
        assert_eq!(bf16_to_f32(t[0]), 1.0);
        assert_eq!(bf16_to_f32(t[1]), 0.0);
        // pos 1, pair 0: freq 1 → cos(1), sin(1) rounded to bf16.
        let o = 64 * 2;
        assert_eq!(t[o], bf16_bits(1f32.cos()));
        assert_eq!(t[o + 1], bf16_bits(1f32.sin()));
        assert_eq!(t.len(), 4 * 64 * 2);
        assert_eq!(bf16_bits(1.0), 0x3f80);
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80); // tie to even
        assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
    }
}
