//! Tokenizer + prompt builder on arbitrary bytes.
//!
//! Input layout: byte 0 picks the chunk length (`max_encode_chars`, 1..=8 or the bundle's
//! 400 000), byte 1 the number of references (0..=3); the rest is split at 0xff bytes into the
//! target text, then per reference its transcript and its codes (each 2 bytes → one code, read
//! as i16 so negative and out-of-range codes occur). Text that is not UTF-8 is also passed
//! through `from_utf8_lossy`, so both the raw-bytes and the text path run.
//!
//! Properties checked: no panic; byte-level BPE is total (every UTF-8 text encodes, since the
//! ranks hold all 256 bytes); every id is a rank or a special token; the prompt has
//! `1 + num_codebooks` rows of equal length, starts with `<|interleave|>` and holds only
//! valid token ids (reference codes outside the codebook are an error, not a bogus token).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use s1_mini::bundle::Bundle;
use s1_mini::text::prompt::{build_prompt, Reference};
use s1_mini::text::tokenizer::Tokenizer;
use s1_mini::{Codes, Frames};

fn bundle() -> &'static Bundle {
    static B: OnceLock<Bundle> = OnceLock::new();
    B.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny");
        Bundle::load(&dir, false).expect("tiny bundle loads")
    })
}

/// The bundle's tokenizer rebuilt with a short chunk length, so chunk cuts land everywhere.
fn chunked(n: usize) -> &'static Tokenizer {
    static T: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    &T.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny");
        let text = std::fs::read_to_string(dir.join("tokenizer.tiktoken")).expect("ranks");
        let ranks = Tokenizer::parse_ranks(&text, "tokenizer.tiktoken").expect("ranks parse");
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
                .expect("manifest json");
        let pattern = m["tokenizer"]["pattern"].as_str().expect("pattern");
        let special = m["tokens"]["special"]
            .as_object()
            .expect("special")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().expect("id") as u32))
            .collect::<std::collections::HashMap<_, _>>();
        (1..=8)
            .map(|n| Tokenizer::new(ranks.clone(), special.clone(), pattern, n).expect("tokenizer"))
            .collect()
    })[n - 1]
}

fn check_ids(ids: &[u32], t: &Tokenizer) {
    let max_special = bundle().info.tokens.semantic_end;
    for &id in ids {
        assert!((id as usize) < t.num_ranks() || id <= max_special, "id {id} out of range");
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let b = bundle();
    let t = match data[0] % 9 {
        0 => &b.tokenizer,
        n => chunked(n as usize),
    };
    let n_refs = (data[1] % 4) as usize;
    // Bit 2 of the second byte: fish-speech's special-token parsing of user text (issue #19.7).
    let parse_special = data[1] & 4 != 0;
    let mut parts = data[2..].split(|&c| c == 0xff);
    let text_bytes = parts.next().unwrap_or(&[]);

    // Raw path: bytes that are UTF-8 must encode.
    if let Ok(text) = std::str::from_utf8(text_bytes) {
        let ids = t.encode(text).expect("byte-level BPE encodes any UTF-8 text");
        check_ids(&ids, t);
    }
    let text = String::from_utf8_lossy(text_bytes);
    let ids = t.encode(&text).expect("byte-level BPE encodes any UTF-8 text");
    check_ids(&ids, t);
    let ids = t.encode_ordinary(&text).expect("byte-level BPE encodes any UTF-8 text");
    check_ids(&ids, t);

    let k = b.info.model.num_codebooks;
    let mut refs = Vec::new();
    for _ in 0..n_refs {
        let rtext = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
        let raw = parts.next().unwrap_or(&[]);
        let vals: Vec<i64> =
            raw.chunks_exact(2).map(|c| i64::from(i16::from_le_bytes([c[0], c[1]]))).collect();
        // Books from the first value (so wrong shapes occur too), frames from the rest.
        let books = if vals.len() % 7 == 3 { k + 1 } else { k };
        let frames = vals.len() / books;
        let mut data_v = vals;
        data_v.truncate(frames * books);
        match Codes::new(books, Frames(frames), data_v) {
            Ok(codes) => refs.push(Reference { text: rtext, codes }),
            Err(_) => return,
        }
    }
    match build_prompt(t, &b.info.tokens, k, &refs, &text, parse_special) {
        Ok(p) => {
            assert_eq!(p.rows, 1 + k);
            assert_eq!(p.data.len(), p.rows * p.len);
            assert_eq!(p.token_ids()[0], i64::from(b.info.tokens.interleave));
            // Every position is a real token id: a rank, a special token or a semantic token.
            let max_id = i64::from(b.info.tokens.semantic_end);
            for &id in p.token_ids() {
                assert!((0..=max_id).contains(&id), "prompt token {id} outside 0..={max_id}");
            }
        }
        Err(e) => {
            // Only the references can be wrong (shape or code range).
            assert!(!refs.is_empty(), "prompt without references failed: {e}");
        }
    }
});
