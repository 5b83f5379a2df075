//! Continuous batching on onnx-cpu (src/backend/onnx/batch.rs): concurrent requests on one
//! engine decode as one batch, join it at their prefill frame and leave when they stop, and
//! each one's codes are exactly those it gets alone (seeded sampling per request, rows computed
//! independently).

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::*;
use s1_mini::internal::{batch_stats, ignore_end};
use s1_mini::{CancelToken, Codes, Engine, Error, Request, SynthParams};

const TEXTS: [&str; 4] =
    ["Hello world!", "A second voice speaks.", "Three.", "The fourth request is the longest one."];

/// Request i: its own text, seed and length (so rows leave at different frames, and the longer
/// ones make the slot pool grow after others joined).
fn request(i: usize) -> Request {
    let frames = [10u32, 60, 25, 40][i % 4];
    ignore_end(
        Request::new(TEXTS[i % 4])
            .with_params(SynthParams::default().with_seed(7 + i as u64).with_max_frames(frames)),
    )
}

/// Long enough to be still decoding when the others finish (the tiny context is 4,096).
const MAX_FRAMES: u32 = 3000;

fn alone(engine: &Engine, n: usize) -> Vec<Codes> {
    (0..n).map(|i| engine.generate_codes(&request(i)).unwrap()).collect()
}

#[test]
fn concurrent_requests_batch_and_decode_the_same_codes_as_alone() {
    batch_equals_alone(&tiny_engine());
}

#[test]
fn an_fp16_cache_batch_decodes_the_same_codes_as_alone() {
    // int4 with an fp16 KV cache: the batch pool holds fp16 buffers and onnx-cpu's own
    // attention kernel runs every row at its own position (src/backend/onnx/attention.rs).
    let dir = quantized("int4");
    let engine = Engine::new(config(&dir)).unwrap();
    let q = engine.info().quantization.clone().unwrap();
    assert_eq!(q.kv_cache, s1_mini::bundle::KvCache::Fp16);
    batch_equals_alone(&engine);
}

fn batch_equals_alone(engine: &Engine) {
    let want = alone(engine, 4);
    let before = batch_stats(engine).expect("onnx-cpu batches");
    assert_eq!(before.max_rows, 1, "requests one after another run alone");

    for round in 0..2 {
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (e, b) = (engine.clone(), barrier.clone());
                thread::spawn(move || {
                    b.wait();
                    e.generate_codes(&request(i)).unwrap()
                })
            })
            .collect();
        for (i, (h, want)) in handles.into_iter().zip(&want).enumerate() {
            assert_eq!(&h.join().unwrap(), want, "round {round}, request {i}");
        }
    }
    let stats = batch_stats(engine).unwrap();
    assert!(stats.max_rows >= 2, "no step had two rows: {stats:?}");
    let steps = stats.steps - before.steps;
    let rows = stats.rows - before.rows;
    // Alone, 2 rounds x (10 + 60 + 25 + 40) frames take as many steps; batched, fewer.
    assert_eq!(rows, 2 * 135, "{stats:?}");
    assert!(steps < rows, "{steps} steps for {rows} rows: {stats:?}");
}

#[test]
fn a_stream_a_cancelled_request_and_a_batch_mate_keep_their_results() {
    let engine = tiny_engine();
    let want = alone(&engine, 2);
    let whole_stream: Vec<f32> = {
        let mut s = engine.stream(&request(1)).unwrap();
        let mut pcm = Vec::new();
        while let Some(c) = s.next_chunk().unwrap() {
            pcm.extend_from_slice(&c.samples);
        }
        pcm
    };

    let cancel = CancelToken::new();
    let doomed = {
        let (e, c) = (engine.clone(), cancel.clone());
        thread::spawn(move || {
            let r = Request::new("This one is cancelled while others decode.")
                .with_params(SynthParams::default().with_seed(1).with_max_frames(MAX_FRAMES))
                .with_cancel(c);
            e.generate_codes(&ignore_end(r))
        })
    };
    let mate = {
        let e = engine.clone();
        thread::spawn(move || e.generate_codes(&request(0)).unwrap())
    };
    let streamed = {
        let e = engine.clone();
        thread::spawn(move || {
            let mut s = e.stream(&request(1)).unwrap();
            let mut pcm = Vec::new();
            while let Some(c) = s.next_chunk().unwrap() {
                pcm.extend_from_slice(&c.samples);
            }
            pcm
        })
    };
    assert_eq!(mate.join().unwrap(), want[0]);
    let pcm = streamed.join().unwrap();
    cancel.cancel();
    assert!(matches!(doomed.join().unwrap(), Err(Error::Cancelled)));
    assert_eq!(pcm.len(), whole_stream.len());
    assert!(max_abs_diff(&pcm, &whole_stream) == 0.0, "a batched stream's PCM changed");
    // After everyone left, a request runs alone again (one row per step), with its own codes.
    let after = batch_stats(&engine).unwrap();
    assert_eq!(engine.generate_codes(&request(1)).unwrap(), want[1]);
    let end = batch_stats(&engine).unwrap();
    assert_eq!((end.steps - after.steps, end.rows - after.rows), (60, 60));
}
