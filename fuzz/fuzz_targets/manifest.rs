//! Manifest / bundle parsing from arbitrary bytes.
//!
//! The bytes stand in for `manifest.json` of the tiny bundle's directory, so file names the
//! manifest lists can exist (the seed corpus is the real manifest; mutations reach the deep
//! checks: token ids, codec sizes, tokenizer pattern, file sizes). Hashes are not verified (one
//! sha256 of 7 MB per input would make the target 100× slower; hash checks are covered by
//! tests/faults.rs). Property: any bytes give `Ok` or an `Error`, never a panic, and an error's
//! status is one of the bundle statuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s1_mini::bundle::Bundle;
use s1_mini::Status;

fuzz_target!(|data: &[u8]| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny");
    if let Err(e) = Bundle::from_manifest_bytes(&dir, data, false) {
        let s = e.status();
        assert!(
            matches!(
                s,
                Status::BundleInvalid | Status::VersionMismatch | Status::HashMismatch | Status::Io
            ),
            "unexpected status {s:?} for {e}"
        );
    }
});
