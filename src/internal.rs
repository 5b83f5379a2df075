//! Test and benchmark hooks: **not API**. Hidden from the docs, no stability promise; the
//! parity tests, `examples/` and `s1-mini bench` use them to see what the model sampled.

use crate::api::{Engine, Request};
pub use crate::backend::BatchStats;
use crate::error::Result;
pub use crate::generate::Frame;

/// `request` that never samples `<|im_end|>`: generation runs exactly `max_frames` frames,
/// every one audio (random weights never stop on their own, a real model stops wherever it
/// likes). Costs nothing per frame.
pub fn ignore_end(mut request: Request) -> Request {
    request.ignore_end = true;
    request
}

/// Every sampled frame of `request` (`[main token id, c0..]`, including a final `<|im_end|>`
/// frame) and the slow head's logits at the end of the prompt: the raw material of the
/// parity tests.
pub fn generate_frames(engine: &Engine, request: &Request) -> Result<(Vec<Frame>, Vec<f32>)> {
    engine.frames(request)
}

/// How the engine's backend batched concurrent requests so far (`None`: it steps each request
/// alone): the batching tests and `bench --streams`.
pub fn batch_stats(engine: &Engine) -> Option<BatchStats> {
    engine.t2s_batch_stats()
}

/// The CUDA engine's benchmark on random weights (`cuda_check bench`).
pub mod cuda {
    pub use crate::backend::cuda::bench::{bench_random, BenchResult};
}
