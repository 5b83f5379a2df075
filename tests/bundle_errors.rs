//! A broken bundle is a specific error naming the file and field.

mod common;

use std::fs;

use common::*;
use s1_mini::bundle::Bundle;
use s1_mini::{BackendKind, Engine, EngineConfig, Error, Status};

fn edit_manifest(dir: &std::path::Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut m);
    fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

#[test]
fn bundle_tiny_fixture_loads() {
    let b = Bundle::load(&tiny_dir(), true).unwrap();
    assert_eq!(b.info.codec.sample_rate_hz, 44_100);
    assert!(b.info.graphs.contains_key("slow"));
}

#[test]
fn bundle_missing_dir_or_manifest_is_bundle_not_found() {
    let missing = std::env::temp_dir().join("s1mini-no-such-bundle");
    assert!(matches!(Bundle::load(&missing, true), Err(Error::BundleNotFound { .. })));
    let dir = bundle_copy("nomanifest");
    fs::remove_file(dir.join("manifest.json")).unwrap();
    match Bundle::load(&dir, true) {
        Err(e @ Error::BundleNotFound { .. }) => {
            assert_eq!(e.status(), Status::BundleNotFound);
            assert!(e.to_string().contains("manifest.json"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Through the engine too, before any library is needed.
    assert!(matches!(Engine::new(EngineConfig::new(&missing)), Err(Error::BundleNotFound { .. })));
}

#[test]
fn bundle_version_mismatch_is_version_mismatch() {
    let dir = bundle_copy("version");
    edit_manifest(&dir, |m| m["format_version"] = 4.into());
    match Bundle::load(&dir, true) {
        Err(Error::VersionMismatch { field, expected, found, .. }) => {
            assert_eq!(
                (field.as_str(), expected.as_str(), found.as_str()),
                ("format_version", "3", "4")
            );
        }
        other => panic!("{other:?}"),
    }
    // Older bundles (format 2: batch fixed at 1; format 1: KV copied in and out of slow.onnx
    // each step) name the re-export.
    for old in [1u64, 2] {
        edit_manifest(&dir, |m| m["format_version"] = old.into());
        match Bundle::load(&dir, true) {
            Err(e @ Error::VersionMismatch { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&format!("expected 3, found {old}")), "{msg}");
                assert!(msg.contains("python -m s1mini_export --checkpoint"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }
    edit_manifest(&dir, |m| m["format"] = "something-else".into());
    assert!(
        matches!(Bundle::load(&dir, true), Err(Error::VersionMismatch { field, .. }) if field == "format")
    );
}

#[test]
fn bundle_truncated_onnx_is_hash_mismatch_naming_the_file() {
    let dir = bundle_copy("truncated");
    let p = dir.join("slow.onnx");
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    for verify in [true, false] {
        match Bundle::load(&dir, verify) {
            Err(e @ Error::HashMismatch { .. }) => {
                assert_eq!(e.status(), Status::HashMismatch);
                assert!(e.to_string().contains("slow.onnx"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn bundle_corrupt_onnx_is_hash_mismatch_and_without_check_bundle_invalid() {
    let dir = bundle_copy("corrupt");
    let p = dir.join("fast.onnx");
    let mut bytes = fs::read(&p).unwrap();
    // Same length, garbage content: only the sha256 can tell.
    for b in bytes.iter_mut().take(64) {
        *b ^= 0x5a;
    }
    fs::write(&p, &bytes).unwrap();
    match Bundle::load(&dir, true) {
        Err(Error::HashMismatch { file, field, .. }) => {
            assert_eq!((file.as_str(), field), ("fast.onnx", "sha256"))
        }
        other => panic!("{other:?}"),
    }
    // With the check off, ONNX Runtime refuses the graph: still an error naming the file.
    let cfg = EngineConfig::new(&dir)
        .with_verify_hashes(false)
        .with_backend(BackendKind::OnnxCpu)
        .with_ort_library_path(ort_library());
    match Engine::new(cfg) {
        Err(Error::BundleInvalid { file, .. }) => assert_eq!(file, "fast.onnx"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bundle_missing_onnx_is_bundle_invalid_naming_the_file() {
    let dir = bundle_copy("missing");
    fs::remove_file(dir.join("codec_decode.onnx")).unwrap();
    match Bundle::load(&dir, false) {
        Err(e @ Error::BundleInvalid { .. }) => {
            assert!(e.to_string().contains("codec_decode.onnx"), "{e}");
            assert_eq!(e.status(), Status::BundleInvalid);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bundle_wrong_sample_rate_is_bundle_invalid_naming_the_field() {
    let dir = bundle_copy("rate");
    edit_manifest(&dir, |m| m["codec"]["sample_rate_hz"] = 16000.into());
    match Bundle::load(&dir, true) {
        Err(Error::BundleInvalid { file, field, .. }) => {
            assert_eq!((file.as_str(), field.as_str()), ("manifest.json", "codec.sample_rate_hz"))
        }
        other => panic!("{other:?}"),
    }
    edit_manifest(&dir, |m| m["codec"]["sample_rate_hz"] = "44100".into());
    assert!(
        matches!(Bundle::load(&dir, true), Err(Error::BundleInvalid { field, .. }) if field == "codec.sample_rate_hz")
    );
}

#[test]
fn bundle_step_graph_needs_its_state_description() {
    let dir = bundle_copy("step-state");
    let info = Bundle::load(&dir, false).unwrap().info;
    let keys = &info.codec.step_state[0];
    assert_eq!((keys.name.as_str(), keys.input.as_str()), ("keys", "past.keys"));
    assert_eq!(keys.shape, vec![2, 1, 4, 7, 16]);
    edit_manifest(&dir, |m| m["codec"]["step_state"][0]["shape"] = serde_json::json!([2, "x"]));
    assert!(matches!(Bundle::load(&dir, false),
        Err(Error::BundleInvalid { field, .. }) if field == "codec.step_state[0].shape"));
    edit_manifest(&dir, |m| {
        m["codec"].as_object_mut().unwrap().remove("step_state");
    });
    match Bundle::load(&dir, false) {
        Err(Error::BundleInvalid { field, reason, .. }) => {
            assert_eq!(field, "codec.step_state");
            assert!(reason.contains("re-export"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // A state input the graph does not have: refused when the codec opens, naming the input.
    edit_manifest(&dir, |m| {
        m["codec"]["step_state"] = serde_json::json!([{"name": "x", "input": "past.x",
            "output": "present.x", "shape": [1, 2, 3]}]);
    });
    match Engine::new(config(&dir)) {
        Err(Error::BundleInvalid { field, reason, .. }) => {
            assert_eq!(field, "codec.step_state");
            assert!(reason.contains("past.x"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn bundle_missing_field_names_it() {
    let dir = bundle_copy("field");
    edit_manifest(&dir, |m| {
        m["head"].as_object_mut().unwrap().remove("im_end_index");
    });
    assert!(
        matches!(Bundle::load(&dir, false), Err(Error::BundleInvalid { field, .. }) if field == "head.im_end_index")
    );
    fs::write(dir.join("manifest.json"), "{ not json").unwrap();
    assert!(matches!(Bundle::load(&dir, false), Err(Error::BundleInvalid { .. })));
}

#[test]
fn gpu_backends_are_unavailable_with_a_reason_not_a_panic() {
    for kind in [BackendKind::Cuda, BackendKind::TensorRt, BackendKind::OnnxCuda] {
        let cfg = EngineConfig::new(tiny_dir()).with_backend(kind);
        match Engine::new(cfg) {
            Err(e @ Error::BackendUnavailable { .. }) => {
                assert_eq!(e.status(), Status::BackendUnavailable)
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
    // auto falls through to onnx-cpu and reports what it skipped.
    let e = Engine::new(config(&tiny_dir())).unwrap();
    assert_eq!(e.backend(), BackendKind::OnnxCpu);
    assert_eq!(e.skipped_backends().len(), 3);
}

#[test]
fn missing_ort_library_is_backend_unavailable_with_the_fix() {
    let cfg = EngineConfig::new(tiny_dir())
        .with_backend(BackendKind::OnnxCpu)
        .with_ort_library_path("/nonexistent/libonnxruntime.so");
    match Engine::new(cfg) {
        Err(e @ Error::BackendUnavailable { .. }) => {
            assert!(e.to_string().contains("scripts/fetch-ort.sh"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bundle_verified_once_is_not_hashed_again_until_a_file_changes() {
    use s1_mini::bundle::{Verify, VerifyCache};
    let dir = bundle_copy("stamps");
    let stamps = VerifyCache::new(Some(&dir.join("cache"))).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let total: u64 =
        manifest["files"].as_object().unwrap().values().map(|f| f["bytes"].as_u64().unwrap()).sum();
    let first = Bundle::load_with(&dir, Verify::Stamped(stamps.clone())).unwrap();
    assert_eq!(first.hashed_bytes, total, "first load hashes every listed file");
    let second = Bundle::load_with(&dir, Verify::Stamped(stamps.clone())).unwrap();
    assert_eq!(second.hashed_bytes, 0, "unchanged files are not hashed again");
    assert_eq!(Bundle::load(&dir, true).unwrap().hashed_bytes, total, "Full ignores stamps");

    // Same size, other bytes, written after the stamp: hashed again and caught.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let p = dir.join("fast.onnx");
    let mut bytes = fs::read(&p).unwrap();
    bytes[100] ^= 0x01;
    fs::write(&p, &bytes).unwrap();
    match Bundle::load_with(&dir, Verify::Stamped(stamps.clone())) {
        Err(Error::HashMismatch { file, field, .. }) => {
            assert_eq!((file.as_str(), field), ("fast.onnx", "sha256"))
        }
        other => panic!("{other:?}"),
    }
    // And through the engine, whose stamps live in its cache_dir.
    let cfg = EngineConfig::new(&dir)
        .with_backend(BackendKind::OnnxCpu)
        .with_cache_dir(dir.join("cache"))
        .with_ort_library_path(ort_library());
    assert!(matches!(Engine::new(cfg), Err(Error::HashMismatch { .. })));
}
