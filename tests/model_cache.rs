//! The optimised-model cache of onnx-cpu (src/backend/onnx/model_cache.rs) on the tiny bundle:
//! engines whose graphs come from the cache give the outputs of engines without it, and a
//! damaged entry or a changed source graph is rebuilt, not served.
//!
//! Which path a load took is read from the library's log (`s1_log_set`): "model cache: <graph>
//! opened from <entry>" for a hit, "optimised and saved to" for a miss. Each test has its own
//! cache directory, so messages of tests running concurrently are told apart by that path.

mod common;

use std::ffi::{c_char, c_void, CStr};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use common::{config, max_abs_diff, tiny_dir};
use s1_mini::config::BackendKind;
use s1_mini::{Engine, Request, SynthParams};

/// Tolerance of logits and PCM between the cached and the uncached graphs (max abs difference,
/// relative to max(1, |value|) for logits). The cached graph is the same optimised graph, so
/// the numbers are expected to be identical; the tolerance only allows for a different kernel
/// order ONNX Runtime might choose, far below what a wrong weight would change.
const TOL: f32 = 1e-5;

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

unsafe extern "C" fn collect(_level: i32, message: *const c_char, _user_data: *mut c_void) {
    // SAFETY: the library passes a NUL-terminated string valid during the call.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
    if let Ok(mut log) = LOG.lock() {
        log.push(text);
    }
}

fn start_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        assert_eq!(
            s1_mini::ffi::log::s1_log_set(Some(collect), std::ptr::null_mut()),
            s1_mini::Status::Ok
        );
    });
}

/// Log lines that mention `dir` and `what`.
fn logged(dir: &Path, what: &str) -> usize {
    let dir = dir.display().to_string();
    LOG.lock().unwrap().iter().filter(|m| m.contains(&dir) && m.contains(what)).count()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("s1-model-cache-it-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn engine(bundle: &Path, cache: &Path, on: bool) -> Engine {
    Engine::new(
        config(bundle)
            .with_backend(BackendKind::OnnxCpu)
            .with_verify_hashes(false)
            .with_cache_dir(cache)
            .with_optimized_model_cache(on),
    )
    .unwrap()
}

/// What the engine computes: prefill logits and sampled frames (slow + fast graphs), one-shot
/// and streamed PCM (codec_decode_step), and the codes decoded through re-decoded context
/// (codec_decode, which onnx-cpu opens on this first use).
struct Outputs {
    logits: Vec<f32>,
    frames: Vec<Vec<i64>>,
    pcm: Vec<f32>,
    streamed: Vec<f32>,
    redecoded: Vec<f32>,
}

fn outputs(e: &Engine) -> Outputs {
    let text = "A cached graph must not change a single code.";
    let p = SynthParams::default().with_seed(7).with_max_frames(12);
    let req = s1_mini::internal::ignore_end(Request::new(text).with_params(p));
    let (frames, logits) = s1_mini::internal::generate_frames(e, &req).unwrap();
    let pcm = e.synthesize(&req).unwrap().samples;
    let mut stream = e.stream(&req).unwrap();
    let mut streamed = Vec::new();
    while let Some(c) = stream.next_chunk().unwrap() {
        streamed.extend(c.samples);
    }
    let redecoded = e.codec_stream(false).unwrap().push(&stream.codes().unwrap()).unwrap();
    Outputs { logits, frames, pcm, streamed, redecoded }
}

fn assert_same(got: &Outputs, want: &Outputs, what: &str) {
    assert_eq!(got.frames, want.frames, "{what}: frames");
    assert_eq!(got.logits.len(), want.logits.len(), "{what}: logits length");
    for (i, (g, w)) in got.logits.iter().zip(&want.logits).enumerate() {
        assert!((g - w).abs() <= TOL * w.abs().max(1.0), "{what}: logits[{i}] {g} vs {w}");
    }
    for (name, g, w) in [
        ("pcm", &got.pcm, &want.pcm),
        ("streamed", &got.streamed, &want.streamed),
        ("redecoded", &got.redecoded, &want.redecoded),
    ] {
        assert_eq!(g.len(), w.len(), "{what}: {name} length");
        let d = max_abs_diff(g, w);
        assert!(d <= TOL, "{what}: {name} max abs diff {d}");
    }
}

/// The cache's entry directories (each holds model.onnx, model.onnx.data and stamp).
fn entries(cache: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(cache.join("onnx"))
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.join("stamp").is_file());
    v.sort();
    v
}

/// The graphs an onnx-cpu engine has opened after [`outputs`]: slow, fast, the step decoder at
/// load, the whole-utterance decoder at its first use (the encoder only for voice creation).
const LOADED_GRAPHS: usize = 4;

#[test]
fn cached_graphs_give_the_outputs_of_uncached_ones() {
    start_log();
    let d = scratch("same");
    let (off, on) = (d.join("off"), d.join("on"));
    let want = outputs(&engine(&tiny_dir(), &off, false));
    assert!(entries(&off).is_empty(), "cache off writes nothing");

    // First load: every graph is optimised from the bundle and saved.
    let first = outputs(&engine(&tiny_dir(), &on, true));
    assert_eq!(entries(&on).len(), LOADED_GRAPHS);
    assert_eq!(logged(&on, "optimised and saved to"), LOADED_GRAPHS);
    assert_same(&first, &want, "saving load");

    // Second load: every graph comes from the cache, and nothing is rewritten.
    let stamps: Vec<String> =
        entries(&on).iter().map(|e| fs::read_to_string(e.join("stamp")).unwrap()).collect();
    let second = outputs(&engine(&tiny_dir(), &on, true));
    assert_eq!(logged(&on, "opened from"), LOADED_GRAPHS);
    assert_eq!(logged(&on, "optimised and saved to"), LOADED_GRAPHS, "no entry rebuilt");
    let after: Vec<String> =
        entries(&on).iter().map(|e| fs::read_to_string(e.join("stamp")).unwrap()).collect();
    assert_eq!(stamps, after);
    assert_same(&second, &want, "cached load");
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn damaged_cache_entries_are_rebuilt_and_outputs_stay_right() {
    start_log();
    let d = scratch("damage");
    let cache = d.join("cache");
    let want = outputs(&engine(&tiny_dir(), &d.join("off"), false));
    outputs(&engine(&tiny_dir(), &cache, true));
    let found = entries(&cache);
    assert_eq!(found.len(), LOADED_GRAPHS);
    // Damage every entry a different way: garbage weights of the same size, a truncated data
    // file, a garbage graph, a missing stamp.
    let data = found[0].join("model.onnx.data");
    let len = fs::metadata(&data).unwrap().len() as usize;
    fs::write(&data, vec![0x5a_u8; len]).unwrap();
    let data = found[1].join("model.onnx.data");
    let bytes = fs::read(&data).unwrap();
    fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    fs::write(found[2].join("model.onnx"), b"not a graph").unwrap();
    fs::remove_file(found[3].join("stamp")).unwrap();

    let got = outputs(&engine(&tiny_dir(), &cache, true));
    assert_same(&got, &want, "after damage");
    assert_eq!(logged(&cache, "optimised and saved to"), 2 * LOADED_GRAPHS, "all rebuilt");
    assert_eq!(logged(&cache, "opened from"), 0, "nothing damaged was served");
    // The rebuilt entries serve the next load.
    let again = outputs(&engine(&tiny_dir(), &cache, true));
    assert_eq!(logged(&cache, "opened from"), LOADED_GRAPHS);
    assert_same(&again, &want, "after rebuild");
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_changed_source_graph_is_not_served_from_the_cache() {
    start_log();
    let d = scratch("source");
    let bundle = d.join("bundle");
    fs::create_dir_all(&bundle).unwrap();
    for e in fs::read_dir(tiny_dir()).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), bundle.join(e.file_name())).unwrap();
        }
    }
    let cache = d.join("cache");
    outputs(&engine(&bundle, &cache, true));
    assert_eq!(logged(&cache, "optimised and saved to"), LOADED_GRAPHS);
    // Rewrite fast.onnx (same bytes: only its identity changes, as with any write).
    std::thread::sleep(std::time::Duration::from_millis(20));
    let fast = bundle.join("fast.onnx");
    fs::write(&fast, fs::read(&fast).unwrap()).unwrap();
    let want = outputs(&engine(&bundle, &d.join("off"), false));
    let got = outputs(&engine(&bundle, &cache, true));
    assert_eq!(logged(&cache, "fast.onnx optimised and saved to"), 2, "fast.onnx rebuilt");
    assert_eq!(logged(&cache, "opened from"), LOADED_GRAPHS - 1, "the others served");
    assert_same(&got, &want, "changed source");
    let _ = fs::remove_dir_all(&d);
}
