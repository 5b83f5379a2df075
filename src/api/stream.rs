//! [`Stream`]: one streamed utterance, pulled chunk by chunk.

use std::sync::Arc;

use crate::api::request::{ProgressFn, Request};
use crate::audio::AudioChunk;
use crate::bundle::BundleInfo;
use crate::codes::Codes;
use crate::config::SynthParams;
use crate::error::{Error, Result};
use crate::generate::{self, CancelToken, CodecStream, FrameGenerator};

/// One streamed utterance. Pull chunks with [`Stream::next_chunk`] from one thread; cancel from
/// any thread through [`Stream::cancel_token`].
pub struct Stream {
    info: Arc<BundleInfo>,
    gen: FrameGenerator,
    params: SynthParams,
    /// Audio frames generated so far (codes columns; the `<|im_end|>` frame is not kept).
    frames: Vec<Vec<i64>>,
    /// Frames already returned as audio.
    emitted: usize,
    /// The codec's streaming state (frames `0..emitted` decoded).
    codec: CodecStream,
    cancel: CancelToken,
    progress: Option<ProgressFn>,
    done: bool,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("emitted_frames", &self.emitted).finish()
    }
}

impl Stream {
    /// A stream of `request` through `gen` (its frame generator) and `codec` (a fresh codec
    /// stream).
    pub(crate) fn new(
        info: Arc<BundleInfo>,
        gen: FrameGenerator,
        request: &Request,
        codec: CodecStream,
    ) -> Stream {
        Stream {
            info,
            gen,
            params: request.params.clone(),
            frames: Vec::new(),
            emitted: 0,
            codec,
            cancel: request.cancel.clone(),
            progress: request.progress.clone(),
            done: false,
        }
    }

    /// A token that cancels this stream from any thread; the next [`Stream::next_chunk`] (or the
    /// one in progress, between frames) returns [`Error::Cancelled`], and so does every later one,
    /// also after the last chunk.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// The next chunk: `first_chunk_frames` frames first, then `chunk_frames` each, the last one
    /// possibly shorter. `Ok(None)` after the last chunk.
    pub fn next_chunk(&mut self) -> Result<Option<AudioChunk>> {
        // Cancelled wins over finished: after a cancel every call says so, as documented.
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if self.done {
            return Ok(None);
        }
        let want = if self.emitted == 0 {
            self.params.first_chunk_frames
        } else {
            self.params.chunk_frames
        };
        let target = self.emitted + want as usize;
        while self.frames.len() < target && !self.gen.is_finished() {
            for f in self.gen.decode_frames(1, &self.cancel)? {
                if generate::is_audio_frame(&self.info, &f) {
                    self.frames.push(f[1..].to_vec());
                }
            }
            if let Some(p) = &self.progress {
                p(self.gen.frames_made());
            }
        }
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let end = self.frames.len().min(target);
        let is_last = self.gen.is_finished() && end == self.frames.len();
        if end == self.emitted {
            // Nothing left (e.g. the utterance ended right after the previous chunk).
            self.done = true;
            return Ok(None);
        }
        let info = &self.info;
        // Only the new frames: the codec stream carries the rest (or keeps them as context).
        let codes = Codes::from_frames(info.model.num_codebooks, &self.frames[self.emitted..end])?;
        let samples = self.codec.push(&codes)?;
        let chunk = AudioChunk {
            samples,
            sample_rate_hz: info.codec.sample_rate_hz,
            first_frame: self.emitted,
            frames: end - self.emitted,
            is_last,
        };
        self.emitted = end;
        if is_last {
            self.done = true;
        }
        Ok(Some(chunk))
    }

    /// The codec's streaming state: whether chunks go through the stateful decoder
    /// ([`CodecStream::is_stateful`]) and how many frames it ran ([`CodecStream::stepped_frames`]).
    pub fn codec_stream(&self) -> &CodecStream {
        &self.codec
    }

    /// Codes of the frames generated so far.
    pub fn codes(&self) -> Result<Codes> {
        Codes::from_frames(self.info.model.num_codebooks, &self.frames)
    }
}
