//! Voice file parsing (`Voice::from_bytes`, the body of `Voice::load` / `s1_voice_load`) on
//! arbitrary bytes.
//!
//! Byte 0 is a mode: when odd, the harness rewrites the header's payload length and sha256 to
//! match the rest, so mutations reach the payload parser instead of stopping at the checksum
//! (both paths are fuzzed). Properties: no panic; a parsed voice re-serialises to exactly the
//! input (the format is canonical), parses back equal, and has ≥ 1 frame and a non-empty
//! transcript; it is then used as a prompt reference, where codes outside the model's semantic
//! range must be an error, not a bogus token.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use s1_mini::bundle::Bundle;
use s1_mini::text::prompt::{build_prompt, Reference};
use s1_mini::Voice;
use sha2::{Digest, Sha256};

fn bundle() -> &'static Bundle {
    static B: OnceLock<Bundle> = OnceLock::new();
    B.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny");
        Bundle::load(&dir, false).expect("tiny bundle loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= 56 {
        let payload_len = (bytes.len() - 56) as u64;
        bytes[16..24].copy_from_slice(&payload_len.to_le_bytes());
        let digest = Sha256::digest(&bytes[56..]);
        bytes[24..56].copy_from_slice(&digest);
    }
    let Ok(voice) = Voice::from_bytes(&bytes) else { return };
    assert_eq!(voice.to_bytes(), bytes, "voice files are canonical");
    assert_eq!(Voice::from_bytes(&voice.to_bytes()).expect("round trip"), voice);
    assert!(voice.codes().frames().0 > 0 && !voice.transcript().trim().is_empty());
    let b = bundle();
    let k = b.info.model.num_codebooks;
    let r = Reference { text: voice.transcript().to_owned(), codes: voice.codes().clone() };
    if let Ok(p) = build_prompt(&b.tokenizer, &b.info.tokens, k, &[r], "Hello.", false) {
        let max_id = i64::from(b.info.tokens.semantic_end);
        assert!(p.token_ids().iter().all(|id| (0..=max_id).contains(id)));
    }
});
