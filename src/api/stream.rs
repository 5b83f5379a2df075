//! [`Stream`]: one streamed utterance, pulled chunk by chunk.

use std::sync::Arc;

use crate::api::request::{ProgressFn, Request};
use crate::audio::AudioChunk;
use crate::bundle::BundleInfo;
use crate::codes::Codes;
use crate::config::SynthParams;
use crate::error::{Error, Result};
use crate::generate::{self, CancelToken, CodecStream, CodecWorker, FrameGenerator};

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
    /// The codec's streaming state on its own thread (frames `0..emitted` decoded, and the
    /// chunk in flight).
    codec: CodecWorker,
    /// The chunk submitted to the codec and not returned yet: frames `start..end`.
    in_flight: Option<InFlight>,
    cancel: CancelToken,
    progress: Option<ProgressFn>,
    done: bool,
}

/// Frames `start..end`, submitted to the codec worker.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    start: usize,
    end: usize,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("emitted_frames", &self.emitted).finish()
    }
}

impl Stream {
    /// A stream of `request` through `gen` (its frame generator) and `codec` (a fresh codec
    /// stream, moved to a worker thread).
    pub(crate) fn new(
        info: Arc<BundleInfo>,
        gen: FrameGenerator,
        request: &Request,
        codec: CodecStream,
    ) -> Result<Stream> {
        Ok(Stream {
            info,
            gen,
            params: request.params.clone(),
            frames: Vec::new(),
            emitted: 0,
            codec: CodecWorker::spawn(codec)?,
            in_flight: None,
            cancel: request.cancel.clone(),
            progress: request.progress.clone(),
            done: false,
        })
    }

    /// A token that cancels this stream from any thread; the next [`Stream::next_chunk`] (or the
    /// one in progress, between frames) returns [`Error::Cancelled`], and so does every later one,
    /// also after the last chunk.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// The next chunk: `first_chunk_frames` frames first, then `chunk_frames` each, the last one
    /// possibly shorter. `Ok(None)` after the last chunk.
    ///
    /// The codec decodes on its own thread: while it decodes this chunk, this call generates
    /// the next chunk's frames (checking between frames whether the samples are ready), and a
    /// chunk whose frames are all there when this call returns is decoded while the caller
    /// plays this one.
    pub fn next_chunk(&mut self) -> Result<Option<AudioChunk>> {
        // Cancelled wins over finished: after a cancel every call says so, as documented.
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if self.done {
            return Ok(None);
        }
        let chunk = match self.in_flight {
            Some(c) => c,
            None => {
                let want = if self.emitted == 0 {
                    self.params.first_chunk_frames
                } else {
                    self.params.chunk_frames
                };
                let target = self.emitted + want as usize;
                while self.frames.len() < target && !self.gen.is_finished() {
                    self.generate_frame()?;
                }
                if self.cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                let end = self.frames.len().min(target);
                if end == self.emitted {
                    // Nothing left (e.g. the utterance ended right after the previous chunk).
                    self.done = true;
                    return Ok(None);
                }
                self.submit(end)?
            }
        };
        // While the codec decodes, generate (at most) the next chunk's frames.
        let next_target = chunk.end + self.params.chunk_frames as usize;
        let (mut frames, codec) = self.parts();
        let samples = codec.wait_while(|| {
            if frames.frames.len() >= next_target || frames.gen.is_finished() {
                return Ok(false);
            }
            frames.generate()?;
            Ok(true)
        })?;
        self.in_flight = None;
        self.emitted = chunk.end;
        let is_last = self.gen.is_finished() && chunk.end == self.frames.len();
        if is_last {
            self.done = true;
        } else if self.frames.len() >= next_target
            || (self.gen.is_finished() && self.frames.len() > chunk.end)
        {
            self.submit(self.frames.len().min(next_target))?;
        }
        Ok(Some(AudioChunk {
            samples,
            sample_rate_hz: self.info.codec.sample_rate_hz,
            first_frame: chunk.start,
            frames: chunk.end - chunk.start,
            is_last,
        }))
    }

    /// Generates one frame (or finishes the utterance).
    fn generate_frame(&mut self) -> Result<()> {
        self.parts().0.generate()
    }

    /// The frame-making parts and the codec worker, borrowed apart.
    fn parts(&mut self) -> (FrameSource<'_>, &mut CodecWorker) {
        let source = FrameSource {
            gen: &mut self.gen,
            frames: &mut self.frames,
            info: &self.info,
            cancel: &self.cancel,
            progress: self.progress.as_ref(),
        };
        (source, &mut self.codec)
    }

    /// Hands frames `emitted..end` to the codec worker.
    fn submit(&mut self, end: usize) -> Result<InFlight> {
        // Only the new frames: the codec stream carries the rest (or keeps them as context).
        let codes =
            Codes::from_frames(self.info.model.num_codebooks, &self.frames[self.emitted..end])?;
        self.codec.submit(codes)?;
        let c = InFlight { start: self.emitted, end };
        self.in_flight = Some(c);
        Ok(c)
    }

    /// The codec's streaming state (on its worker thread): whether chunks go through the
    /// stateful decoder ([`CodecWorker::is_stateful`]) and how many frames it ran
    /// ([`CodecWorker::stepped_frames`]).
    pub fn codec_stream(&self) -> &CodecWorker {
        &self.codec
    }

    /// Codes of the frames generated so far.
    pub fn codes(&self) -> Result<Codes> {
        Codes::from_frames(self.info.model.num_codebooks, &self.frames)
    }
}

/// The parts of a [`Stream`] that make frames, borrowed apart from its codec worker so that
/// frames are generated while the worker decodes.
struct FrameSource<'a> {
    gen: &'a mut FrameGenerator,
    frames: &'a mut Vec<Vec<i64>>,
    info: &'a BundleInfo,
    cancel: &'a CancelToken,
    progress: Option<&'a ProgressFn>,
}

impl FrameSource<'_> {
    /// Generates one frame (or finishes the utterance), keeps its codes if it is audio and
    /// reports progress.
    fn generate(&mut self) -> Result<()> {
        for f in self.gen.decode_frames(1, self.cancel)? {
            if generate::is_audio_frame(self.info, &f) {
                self.frames.push(f[1..].to_vec());
            }
        }
        if let Some(p) = self.progress {
            p(self.gen.frames_made());
        }
        Ok(())
    }
}
