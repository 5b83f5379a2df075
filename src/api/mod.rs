//! The Rust API: [`Engine`] (a loaded model), [`Request`] (one utterance), [`Stream`] (one
//! utterance pulled in chunks).

mod engine;
mod request;
mod stream;

pub use engine::Engine;
pub use request::{ProgressFn, Request};
pub use stream::Stream;
