//! s1-mini: a runtime for Fish Audio's OpenAudio S1-mini text-to-speech model.
//!
//! Text → prompt → DualAR transformer (frames of 10 codes, 21.53 per second) → codec → PCM
//! f32 mono at 44.1 kHz, in one call ([`Engine::synthesize`]) or streamed in chunks
//! ([`Engine::stream`]); every call takes one [`Request`] (text, voices, parameters, cancel
//! token). The model comes as a bundle directory (`docs/bundle-format.md`).
//!
//! This file only re-exports the public API.

#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

// The documented API: the re-exports below and these modules' public items.
mod api;
pub mod audio;
pub mod bundle;
mod codes;
pub mod config;
pub mod error;
#[allow(unsafe_code)]
pub mod ffi;
mod fsio;
mod verify_cache;
pub mod voice;

// Internals that the CLI, the tests, the fuzz targets and `examples/cuda_check.rs` reach into
// (backend probes, bench, tokenizer, sampling): public for them, hidden from the docs, no
// stability promise. Users need none of them.
#[doc(hidden)]
pub mod backend;
#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod generate;
#[doc(hidden)]
pub mod internal;
#[doc(hidden)]
pub mod npy;
#[doc(hidden)]
pub mod sampling;
#[doc(hidden)]
pub mod text;

pub use api::{Engine, ProgressFn, Request, Stream};
pub use audio::{Audio, AudioChunk, WavFormat};
pub use backend::Skipped;
pub use bundle::BundleInfo;
pub use codes::{Codes, Frames};
pub use config::{BackendKind, EngineConfig, SynthParams};
pub use error::{Error, Result, Status};
pub use generate::{CancelToken, CodecStream, CodecWorker};
pub use voice::Voice;
