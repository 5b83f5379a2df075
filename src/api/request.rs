//! [`Request`]: everything one utterance needs (text, voices, sampling parameters, a cancel
//! token). The [`crate::Engine`] method that takes it picks the output: PCM
//! ([`crate::Engine::synthesize`]), codes ([`crate::Engine::generate_codes`]) or a stream of
//! audio chunks ([`crate::Engine::stream`]).

use std::sync::Arc;

use crate::config::SynthParams;
use crate::error::{Error, Result};
use crate::generate::CancelToken;
use crate::voice::Voice;

/// Called after each generated frame with the number of frames so far (progress output).
pub type ProgressFn = Arc<dyn Fn(usize) + Send + Sync>;

/// One utterance to generate. Cheap to clone (the voices' codes are copied, a few KiB each);
/// clones share the cancel token.
///
/// ```no_run
/// use s1_mini::{Engine, EngineConfig, Request, SynthParams};
/// let engine = Engine::new(EngineConfig::new("tests/fixtures/tiny"))?;
/// let req = Request::new("Hello.").with_params(SynthParams::default().with_seed(1));
/// let cancel = req.cancel_token(); // cancel.cancel() from any thread stops it
/// let audio = engine.synthesize(&req)?;
/// # Ok::<(), s1_mini::Error>(())
/// ```
#[derive(Clone)]
pub struct Request {
    /// The text to speak (UTF-8; checked by the engine: not empty, not longer than the context).
    pub text: String,
    /// Reference voices to speak in, in prompt order; empty = the model's own voice.
    pub voices: Vec<Voice>,
    /// Sampling, length and streaming parameters.
    pub params: SynthParams,
    /// Stops the request with [`Error::Cancelled`] before its next frame (or prompt chunk) when
    /// fired, from any thread.
    pub cancel: CancelToken,
    /// Called after each frame with the frames generated so far.
    pub progress: Option<ProgressFn>,
    /// Never sample `<|im_end|>` (benchmarks and parity tests: exactly `max_frames` frames);
    /// set through [`crate::internal::ignore_end`], not part of the API.
    pub(crate) ignore_end: bool,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("text_bytes", &self.text.len())
            .field("voices", &self.voices.len())
            .field("params", &self.params)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish()
    }
}

impl Request {
    /// A request for `text` in the model's own voice with default parameters.
    pub fn new(text: impl Into<String>) -> Request {
        Request {
            text: text.into(),
            voices: Vec::new(),
            params: SynthParams::default(),
            cancel: CancelToken::new(),
            progress: None,
            ignore_end: false,
        }
    }

    /// A request for text given as bytes; invalid UTF-8 is [`Error::InvalidUtf8`].
    pub fn from_utf8(text: &[u8]) -> Result<Request> {
        let text = std::str::from_utf8(text)
            .map_err(|e| Error::InvalidUtf8 { arg: "text", valid_up_to: e.valid_up_to() })?;
        Ok(Request::new(text))
    }

    /// Sets [`Request::params`].
    #[must_use]
    pub fn with_params(mut self, params: SynthParams) -> Request {
        self.params = params;
        self
    }

    /// Sets [`Request::voices`].
    #[must_use]
    pub fn with_voices(mut self, voices: impl IntoIterator<Item = Voice>) -> Request {
        self.voices = voices.into_iter().collect();
        self
    }

    /// Sets [`Request::cancel`] (e.g. one token shared by several requests).
    #[must_use]
    pub fn with_cancel(mut self, cancel: CancelToken) -> Request {
        self.cancel = cancel;
        self
    }

    /// Sets [`Request::progress`].
    #[must_use]
    pub fn with_progress(mut self, progress: impl Fn(usize) + Send + Sync + 'static) -> Request {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// A clone of the request's cancel token.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_clones_share_the_cancel_token() {
        let a = Request::new("hi");
        let b = a.clone();
        a.cancel_token().cancel();
        assert!(b.cancel.is_cancelled());
    }

    #[test]
    fn request_from_invalid_utf8_names_the_offset() {
        match Request::from_utf8(b"ab\xffcd") {
            Err(Error::InvalidUtf8 { arg, valid_up_to }) => {
                assert_eq!((arg, valid_up_to), ("text", 2))
            }
            other => panic!("{other:?}"),
        }
    }
}
