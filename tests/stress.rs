//! Concurrency stress (issue #9): 16 threads × a fixed mix of synthesize / stream / cancel /
//! C ABI / voice (shared prefix cache) calls on one engine. No deadlock (a watchdog fails the test if the workload does not
//! finish in time), and every seeded result equals the single-threaded run of the same request.
//!
//! Figures (docs/guarantees.md): THREADS × ITERATIONS = 16 × 6 = 96 requests, each thread cycling
//! through the six operations, so every operation runs 16 times concurrently with the others.

mod common;

use std::ffi::CString;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use s1_mini::ffi::engine::{s1_engine, s1_engine_free};
use s1_mini::ffi::synth::{s1_audio_free, s1_synthesize};
use s1_mini::generate::Frame;
use s1_mini::{CancelToken, Codes, Engine, Error, Request, Status, SynthParams, Voice};

const THREADS: usize = 16;
const ITERATIONS: usize = 6;
/// The whole workload must end within this; on 2 shared cores it takes a few seconds.
const WATCHDOG: Duration = Duration::from_secs(240);
const TEXTS: [&str; 3] = ["Hello world!", "Stress test, sixteen threads.", "One engine."];
const SEEDS: [u64; 4] = [3, 11, 29, 71];

fn params(seed: u64) -> SynthParams {
    SynthParams::default().with_seed(seed).with_max_frames(12).with_chunk_frames(2, 3)
}

/// What one request produced, for comparison with the single-threaded reference.
#[derive(Debug)]
enum Outcome {
    Audio(Vec<f32>),
    Codes(Codes),
    Cancelled,
    /// Frames of a synthesis with the voice set `.0` (prefix cache on).
    VoiceFrames(usize, Vec<Frame>),
}

/// Voice sets used by the voice requests: [a], [b], [a, b] (cache entries filled concurrently).
fn voice_sets(engine: &Engine, r: &Reference) -> Vec<Vec<Voice>> {
    let a = engine.voice_from_codes(r.codes[0][0].clone(), TEXTS[0]).unwrap();
    let b = engine.voice_from_codes(r.codes[1][1].clone(), TEXTS[1]).unwrap();
    vec![vec![a.clone()], vec![b.clone()], vec![a, b]]
}

struct Reference {
    audio: Vec<Vec<Vec<f32>>>, // [text][seed]
    codes: Vec<Vec<Codes>>,
}

fn reference(engine: &Engine) -> Reference {
    let mut audio = Vec::new();
    let mut codes = Vec::new();
    for t in TEXTS {
        audio.push(
            SEEDS
                .iter()
                .map(|&s| {
                    engine.synthesize(&Request::new(t).with_params(params(s))).unwrap().samples
                })
                .collect(),
        );
        codes.push(
            SEEDS
                .iter()
                .map(|&s| engine.generate_codes(&Request::new(t).with_params(params(s))).unwrap())
                .collect(),
        );
    }
    Reference { audio, codes }
}

struct Handle(*mut s1_engine);
// SAFETY: C engine handles are registry keys, shareable across threads (header contract).
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

fn c_engine() -> Handle {
    Handle(c_tiny_engine(false))
}

fn c_synthesize(h: &Handle, text: &str, p: &SynthParams) -> Vec<f32> {
    let text = CString::new(text).unwrap();
    let mut cp = std::mem::MaybeUninit::uninit();
    // SAFETY: writable struct.
    assert_eq!(
        unsafe { s1_mini::ffi::synth::s1_synth_params_default(cp.as_mut_ptr()) },
        Status::Ok
    );
    // SAFETY: initialised above.
    let mut cp = unsafe { cp.assume_init() };
    cp.seed = p.seed;
    cp.max_frames = p.max_frames;
    let mut audio = std::ptr::null_mut();
    // SAFETY: live handle, NUL-terminated text, filled params, writable out pointer.
    assert_eq!(unsafe { s1_synthesize(h.0, text.as_ptr(), &cp, &mut audio) }, Status::Ok);
    // SAFETY: live audio until freed below.
    let a = unsafe { &*audio };
    // SAFETY: num_samples valid samples.
    let v = unsafe { std::slice::from_raw_parts(a.samples, a.num_samples) }.to_vec();
    assert_eq!(s1_audio_free(audio), Status::Ok);
    v
}

/// One request: thread `t`, iteration `i`. Returns (text, seed, outcome).
fn request(
    engine: &Engine,
    c: &Handle,
    voices: &[Vec<Voice>],
    t: usize,
    i: usize,
) -> (usize, usize, Outcome) {
    let ti = (t + i) % TEXTS.len();
    let si = (t * 7 + i) % SEEDS.len();
    let (text, p) = (TEXTS[ti], params(SEEDS[si]));
    let outcome = match (t + i) % 6 {
        0 => Outcome::Audio(
            engine.synthesize(&Request::new(text).with_params(p.clone())).unwrap().samples,
        ),
        1 => {
            let mut s = engine.stream(&Request::new(text).with_params(p.clone())).unwrap();
            let mut pcm = Vec::new();
            while let Some(chunk) = s.next_chunk().unwrap() {
                pcm.extend(chunk.samples);
            }
            Outcome::Audio(pcm)
        }
        2 => {
            // Cancel from another thread after the first chunk: Cancelled, or the end if the
            // utterance finished first.
            let mut s = engine
                .stream(&Request::new(text).with_params(p.clone().with_chunk_frames(1, 1)))
                .unwrap();
            let token = s.cancel_token();
            let first = s.next_chunk().unwrap();
            assert!(first.is_some());
            thread::spawn(move || token.cancel()).join().unwrap();
            match s.next_chunk() {
                Err(Error::Cancelled) => Outcome::Cancelled,
                Ok(None) => Outcome::Cancelled,
                other => panic!("after cancel: {other:?}"),
            }
        }
        3 => {
            // A token cancelled before or during generation, or never (i odd).
            let token = CancelToken::new();
            if i.is_multiple_of(2) {
                let t2 = token.clone();
                thread::spawn(move || t2.cancel());
            }
            match engine.generate_codes(
                &Request::new(text).with_params(p.clone()).with_cancel(token.clone()),
            ) {
                Ok(codes) => Outcome::Codes(codes),
                Err(Error::Cancelled) => Outcome::Cancelled,
                Err(e) => panic!("{e}"),
            }
        }
        4 => Outcome::Audio(c_synthesize(c, text, &p)),
        _ => {
            let vs = (t + 2 * i) % voices.len();
            let (frames, _) = s1_mini::internal::generate_frames(
                engine,
                &Request::new(text).with_voices(voices[vs].iter().cloned()).with_params(p.clone()),
            )
            .unwrap();
            Outcome::VoiceFrames(vs, frames)
        }
    };
    (ti, si, outcome)
}

#[test]
fn sixteen_threads_mixed_requests_no_deadlock_and_equal_single_threaded() {
    let engine = Engine::new(config(&tiny_dir()).with_intra_op_threads(1)).unwrap();
    let want = reference(&engine);
    let voices = Arc::new(voice_sets(&engine, &want));
    let c = Arc::new(c_engine());
    let (tx, rx) = mpsc::channel();
    let e2 = engine.clone();
    let c2 = c.clone();
    let v2 = voices.clone();
    thread::spawn(move || {
        let start = Arc::new(Barrier::new(THREADS));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (e, c, v, start) = (e2.clone(), c2.clone(), v2.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    (0..ITERATIONS).map(|i| request(&e, &c, &v, t, i)).collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        let _ = tx.send(results);
    });
    let results = rx.recv_timeout(WATCHDOG).unwrap_or_else(|_| {
        panic!("deadlock or livelock: {THREADS} threads × {ITERATIONS} requests not done in {WATCHDOG:?}")
    });
    let mut counts = [0usize; 4];
    for r in results {
        let r = r.unwrap_or_else(|p| std::panic::resume_unwind(p));
        for (ti, si, outcome) in r {
            match outcome {
                Outcome::Audio(a) => {
                    // Streaming equals one-shot to 1e-4 (docs/rust-core.md); threads add nothing.
                    assert!(max_abs_diff(&a, &want.audio[ti][si]) <= 1e-4, "text {ti} seed {si}");
                    counts[0] += 1;
                }
                Outcome::Codes(codes) => {
                    assert_eq!(codes, want.codes[ti][si], "text {ti} seed {si}");
                    counts[1] += 1;
                }
                Outcome::Cancelled => counts[2] += 1,
                Outcome::VoiceFrames(vs, frames) => {
                    // Against an uncached single-threaded run: the prefix cache, filled by
                    // racing threads, changes nothing.
                    let p = params(SEEDS[si]).with_prefix_cache(false);
                    let (want_frames, _) = s1_mini::internal::generate_frames(
                        &engine,
                        &Request::new(TEXTS[ti])
                            .with_voices(voices[vs].iter().cloned())
                            .with_params(p.clone()),
                    )
                    .unwrap();
                    assert_eq!(frames, want_frames, "voices {vs} text {ti} seed {si}");
                    counts[3] += 1;
                }
            }
        }
    }
    assert_eq!(counts.iter().sum::<usize>(), THREADS * ITERATIONS);
    assert!(counts[0] >= THREADS * ITERATIONS / 3 && counts[3] == 16, "{counts:?}");
    eprintln!("stress: {THREADS} threads × {ITERATIONS}: audio/codes/cancelled/voice = {counts:?}");
    let c = Arc::try_unwrap(c).ok().unwrap();
    assert_eq!(s1_engine_free(c.0), Status::Ok);
}
