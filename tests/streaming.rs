//! Streaming equals one-shot, concurrency equals single-threaded, cancellation from another thread.

mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use common::*;
use s1_mini::{Error, Request, SynthParams};

const TEXT: &str = "Hello world! Streaming test.";
/// With seed 0 the tiny model runs past 1024 frames on this text without `<|im_end|>`, so a
/// cancel always lands while generation is still going.
const LONG_TEXT: &str = "Hello world.";

fn params(seed: u64) -> SynthParams {
    SynthParams::default().with_seed(seed).with_max_frames(40)
}

#[test]
fn stream_concatenation_equals_one_shot_for_several_chunk_sizes() {
    let engine = tiny_engine();
    let one_shot = engine.synthesize(&Request::new(TEXT).with_params(params(7))).unwrap();
    assert!(!one_shot.samples.is_empty());
    for (first, rest) in [(1, 1), (4, 16), (2, 7)] {
        let mut s = engine
            .stream(&Request::new(TEXT).with_params(params(7).with_chunk_frames(first, rest)))
            .unwrap();
        let mut pcm = Vec::new();
        let mut chunks = Vec::new();
        while let Some(c) = s.next_chunk().unwrap() {
            assert_eq!(c.samples.len(), c.frames * engine.info().codec.frame_samples);
            chunks.push((c.first_frame, c.frames, c.is_last));
            pcm.extend_from_slice(&c.samples);
        }
        assert!(s.next_chunk().unwrap().is_none(), "stays finished");
        assert_eq!(chunks[0].1, first as usize, "first chunk size");
        if chunks.len() > 2 {
            assert_eq!(chunks[1].1, rest as usize, "later chunk size");
        }
        assert!(chunks.last().unwrap().2, "last chunk flagged");
        let d = max_abs_diff(&pcm, &one_shot.samples);
        assert!(d <= 1e-4, "chunks ({first},{rest}): max abs diff {d}");
    }
}

#[test]
fn stream_longer_than_receptive_field_equals_one_shot() {
    // More frames than the tiny codec's receptive field, so chunks decode with a cut context.
    let engine = tiny_engine();
    let rf = engine.info().codec.receptive_field_frames as u32;
    let p = params(3).with_max_frames(rf * 2 + 5).with_chunk_frames(3, 5);
    let one_shot = engine.synthesize(&Request::new(TEXT).with_params(p.clone())).unwrap();
    let mut s = engine.stream(&Request::new(TEXT).with_params(p.clone())).unwrap();
    let mut pcm = Vec::new();
    while let Some(c) = s.next_chunk().unwrap() {
        pcm.extend_from_slice(&c.samples);
    }
    let d = max_abs_diff(&pcm, &one_shot.samples);
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn stream_outlives_engine_handle() {
    let engine = tiny_engine();
    let mut s = engine.stream(&Request::new(TEXT).with_params(params(1))).unwrap();
    drop(engine);
    assert!(s.next_chunk().unwrap().is_some());
}

#[test]
fn eight_threads_with_seeds_equal_single_threaded_runs() {
    let engine = Arc::new(tiny_engine());
    let seeds: Vec<u64> = (0..8).map(|i| 100 + i).collect();
    let single: Vec<_> = seeds
        .iter()
        .map(|&s| engine.generate_codes(&Request::new(TEXT).with_params(params(s))).unwrap())
        .collect();
    let handles: Vec<_> = seeds
        .iter()
        .map(|&s| {
            let e = engine.clone();
            thread::spawn(move || {
                e.generate_codes(&Request::new(TEXT).with_params(params(s))).unwrap()
            })
        })
        .collect();
    for (h, want) in handles.into_iter().zip(&single) {
        assert_eq!(&h.join().unwrap(), want);
    }
    // Different seeds give different codes (the RNG is really per request).
    assert_ne!(single[0], single[1]);
}

#[test]
fn cancel_from_another_thread_stops_stream() {
    let engine = tiny_engine();
    let mut s = engine
        .stream(
            &Request::new(TEXT)
                .with_params(SynthParams::default().with_max_frames(3000).with_chunk_frames(1, 1)),
        )
        .unwrap();
    let token = s.cancel_token();
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let mut n = 0usize;
        loop {
            match s.next_chunk() {
                Ok(Some(_)) => {
                    n += 1;
                    let _ = tx.send(n);
                }
                Ok(None) => return Ok(n),
                Err(e) => return Err((e, n)),
            }
        }
    });
    // Wait for audio to flow, then cancel from this thread.
    rx.recv().unwrap();
    token.cancel();
    match worker.join().unwrap() {
        Err((Error::Cancelled, n)) => assert!(n < 3000),
        other => panic!("expected Cancelled, got {other:?}"),
    }
}

#[test]
fn cancel_token_stops_generate_codes() {
    let engine = Arc::new(tiny_engine());
    let token = s1_mini::CancelToken::new();
    let (e, t) = (engine.clone(), token.clone());
    let h = thread::spawn(move || {
        e.generate_codes(
            &Request::new(LONG_TEXT)
                .with_params(SynthParams::default().with_max_frames(3000))
                .with_cancel(t.clone()),
        )
    });
    thread::sleep(std::time::Duration::from_millis(100));
    token.cancel();
    assert!(matches!(h.join().unwrap(), Err(Error::Cancelled)));
}

fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    let peak = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    max_abs_diff(got, want) / peak
}

#[test]
fn stream_through_step_graph_equals_one_shot_within_1e5_relative() {
    let engine = tiny_engine();
    assert!(engine.info().graphs.contains_key("codec_decode_step"), "fixture has the step graph");
    let p = params(11).with_max_frames(60);
    let one_shot = engine.synthesize(&Request::new(TEXT).with_params(p.clone())).unwrap();
    let frames = one_shot.samples.len() / engine.info().codec.frame_samples;
    assert!(frames > 24, "longer than the tiny codec's receptive field ({frames} frames)");
    for (first, rest) in [(1, 1), (4, 16), (2, 7), (16, 64)] {
        let mut s = engine
            .stream(&Request::new(TEXT).with_params(p.clone().with_chunk_frames(first, rest)))
            .unwrap();
        let mut pcm = Vec::new();
        while let Some(c) = s.next_chunk().unwrap() {
            pcm.extend_from_slice(&c.samples);
        }
        let d = rel_diff(&pcm, &one_shot.samples);
        println!("chunks ({first},{rest}): {frames} frames, max rel diff {d:.3e}");
        assert!(d <= 1e-5, "chunks ({first},{rest}): max rel diff {d}");
        // Every frame went through the step graph exactly once: no re-decoded context, no
        // silent fallback to decode_range.
        assert!(s.codec_stream().is_stateful());
        assert_eq!(s.codec_stream().frames(), frames);
        assert_eq!(s.codec_stream().stepped_frames(), frames);
    }
}

/// `n` frames of deterministic codes inside the tiny codec's codebooks.
fn test_codes(engine: &s1_mini::Engine, n: usize) -> s1_mini::Codes {
    let sizes = &engine.info().codec.codebook_sizes;
    let cols: Vec<Vec<i64>> = (0..n)
        .map(|f| {
            sizes.iter().enumerate().map(|(k, &s)| ((f * 7919 + k * 104_729) % s) as i64).collect()
        })
        .collect();
    s1_mini::Codes::from_frames(sizes.len(), &cols).unwrap()
}

#[test]
fn codec_stream_past_max_decode_frames_equals_one_shot() {
    // The tiny codec's RoPE table is 512 frames (receptive field 24): the one-shot decode of 600
    // frames decodes 0..488 and then 488..600 from frame 464; the stream switches to a shadow
    // decoder started at frame 464.
    let engine = tiny_engine();
    let c = engine.info().codec.clone();
    assert_eq!((c.max_decode_frames, c.receptive_field_frames), (512, 24));
    let n = 600;
    let codes = test_codes(&engine, n);
    let one_shot = engine.decode_codes(&codes).unwrap().samples;
    for (stateful, first, rest) in [(true, 4, 16), (true, 16, 64), (false, 16, 64)] {
        let mut s = engine.codec_stream(stateful).unwrap();
        assert_eq!(s.is_stateful(), stateful);
        let mut pcm = Vec::new();
        let mut f = 0;
        while f < n {
            let e = n.min(f + if f == 0 { first } else { rest });
            pcm.extend(s.push(&codes.slice_frames(f, e)).unwrap());
            f = e;
        }
        let d = rel_diff(&pcm, &one_shot);
        println!("stateful {stateful}, chunks ({first},{rest}): max rel diff {d:.3e}");
        assert!(d <= 1e-5, "stateful {stateful} ({first},{rest}): max rel diff {d}");
        assert_eq!(s.stepped_frames(), if stateful { n + 24 } else { 0 });
    }
}

#[test]
fn bundle_without_step_graph_streams_through_decode_range() {
    // A bundle exported before the step graph (or with --parts leaving it out).
    let dir = bundle_copy("no-step");
    let mpath = dir.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    m["graphs"].as_object_mut().unwrap().remove("codec_decode_step");
    m["files"].as_object_mut().unwrap().remove("codec_decode_step.onnx");
    m["codec"].as_object_mut().unwrap().remove("step_state");
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    std::fs::remove_file(dir.join("codec_decode_step.onnx")).unwrap();
    let engine = s1_mini::Engine::new(config(&dir)).unwrap();
    let p = params(11).with_max_frames(30).with_chunk_frames(2, 7);
    let one_shot = engine.synthesize(&Request::new(TEXT).with_params(p.clone())).unwrap();
    let mut s = engine.stream(&Request::new(TEXT).with_params(p.clone())).unwrap();
    let mut pcm = Vec::new();
    while let Some(c) = s.next_chunk().unwrap() {
        pcm.extend_from_slice(&c.samples);
    }
    assert!(!s.codec_stream().is_stateful());
    assert_eq!(s.codec_stream().stepped_frames(), 0);
    assert!(rel_diff(&pcm, &one_shot.samples) <= 1e-5);
    let _ = std::fs::remove_dir_all(dir);
}
