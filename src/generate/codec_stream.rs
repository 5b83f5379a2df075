//! [`CodecStream`]: codes → PCM chunk by chunk, each chunk costing its own frames.
//!
//! With a codec that has a stateful decoder ([`Codec::start_step`], the bundle's
//! `codec_decode_step` graph), each chunk runs only its new frames, carrying the decoder's state
//! (post_module's window keys/values, every convolution's left context). Without one it falls
//! back to [`decode_range`], which re-decodes `receptive_field_frames` of left context per chunk.
//!
//! Both give the samples of the one-shot decode ([`decode_range`] of `0..n`), including past
//! `max_decode_frames`: the one-shot decode decodes window w (frames `w·step..(w+1)·step`,
//! `step = max_decode_frames − receptive_field_frames`) from its origin
//! `o_w = w·step − receptive_field_frames` at positions 0.. (the codec's RoPE table is
//! absolute). So the stream runs a second, "shadow" decoder from a zero state over frames
//! `o_{w+1}..(w+1)·step` of window w (their samples are dropped) and switches to it at frame
//! `(w+1)·step`: bounded work per chunk (at most twice the chunk for the last
//! `receptive_field_frames` of each window), no stall at the switch.

use std::sync::Arc;

use super::decode_range;
use crate::backend::{Codec, CodecStep};
use crate::bundle::BundleInfo;
use crate::codes::Codes;
use crate::error::{Error, Result};

/// Streaming decode of one utterance's codes, in order. Made by
/// [`crate::Engine::codec_stream`] (and used by [`crate::Stream`]).
pub struct CodecStream {
    codec: Arc<dyn Codec>,
    info: Arc<BundleInfo>,
    mode: Mode,
    /// Frames decoded so far: the next [`CodecStream::push`] starts at this frame.
    next: usize,
    /// Frame-steps run through the stateful decoder (a shadow decoder's included).
    stepped: usize,
    /// Set after an error of the stateful decoder: its state may be half-updated.
    failed: bool,
}

enum Mode {
    Step(Windows),
    /// Every frame so far (`[K]` columns): decode_range's left context.
    Range(Vec<Vec<i64>>),
}

/// The stateful decoders of the current canonical window and, over its last
/// `receptive_field_frames`, of the next one.
struct Windows {
    /// Frames per canonical window (`max_decode_frames − receptive_field_frames`).
    step: usize,
    ctx: usize,
    window: usize,
    primary: Box<dyn CodecStep>,
    shadow: Option<Box<dyn CodecStep>>,
}

impl std::fmt::Debug for CodecStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodecStream")
            .field("stateful", &self.is_stateful())
            .field("frames", &self.next)
            .field("stepped_frames", &self.stepped)
            .finish()
    }
}

impl CodecStream {
    /// A stream at frame 0: stateful when `stateful` is set and the codec has a step decoder
    /// (and the codec's windows allow it: `max_decode_frames > 2 · receptive_field_frames`),
    /// else through [`decode_range`].
    pub fn new(codec: Arc<dyn Codec>, info: Arc<BundleInfo>, stateful: bool) -> Result<Self> {
        let ctx = info.codec.receptive_field_frames;
        let step = info.codec.max_decode_frames.saturating_sub(ctx);
        let primary = if stateful && step > ctx { codec.start_step()? } else { None };
        let mode = match primary {
            Some(primary) => Mode::Step(Windows { step, ctx, window: 0, primary, shadow: None }),
            None => Mode::Range(Vec::new()),
        };
        Ok(Self { codec, info, mode, next: 0, stepped: 0, failed: false })
    }

    /// Whether chunks go through the stateful decoder (else through [`decode_range`]).
    pub fn is_stateful(&self) -> bool {
        matches!(self.mode, Mode::Step(_))
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> usize {
        self.next
    }

    /// Frame-steps run through the stateful decoder so far: every frame once, plus the last
    /// `receptive_field_frames` of each `max_decode_frames − receptive_field_frames` frames once
    /// more (the next window's shadow decoder); 0 on the [`decode_range`] path.
    pub fn stepped_frames(&self) -> usize {
        self.stepped
    }

    /// Decodes the next `codes` (`[K, T]`: frames `frames()..frames() + T` of the utterance) and
    /// returns their `T · frame_samples` samples.
    pub fn push(&mut self, codes: &Codes) -> Result<Vec<f32>> {
        if self.failed {
            return Err(Error::Internal("the codec stream failed earlier".into()));
        }
        let t = codes.frames().0;
        let fs = self.info.codec.frame_samples;
        let base = self.next;
        let pcm = match &mut self.mode {
            Mode::Range(frames) => {
                frames.extend((0..t).map(|f| {
                    (0..codes.num_codebooks()).map(|k| codes.get(k, f)).collect::<Vec<i64>>()
                }));
                let all = Codes::from_frames(codes.num_codebooks(), frames)?;
                decode_range(self.codec.as_ref(), &self.info, &all, base, base + t)?
            }
            Mode::Step(w) => {
                let mut out = Vec::with_capacity(t * fs);
                let r =
                    step_pieces(w, self.codec.as_ref(), codes, base, &mut out, &mut self.stepped);
                if let Err(e) = r {
                    self.failed = true;
                    return Err(e);
                }
                out
            }
        };
        self.next += t;
        Ok(pcm)
    }
}

/// A whole decode (frames `0..n` of `codes`) through the codec's stateful decoder, `chunk` frames
/// per call: the samples of [`decode_range`] of `0..n` (to float rounding, ≤ 1e-5 relative),
/// or `None` when the codec has no step decoder (or its windows are too short for one).
///
/// Faster than one call of the whole-utterance graph on a CPU once the utterance is long: a
/// chunk's activations stay in the cache (measured at the real shapes, fp32, 2 cores: 1.39 vs
/// 1.50 s of CPU per second of audio at 20 s of audio, 1.40 vs 1.42 at 5 s; docs/rust-core.md
/// "Codec speed"), and memory is bounded by the chunk, not the utterance.
pub fn decode_stepped(
    codec: &dyn Codec,
    info: &BundleInfo,
    codes: &Codes,
    chunk: usize,
) -> Result<Option<Vec<f32>>> {
    let ctx = info.codec.receptive_field_frames;
    let step = info.codec.max_decode_frames.saturating_sub(ctx);
    if step <= ctx {
        return Ok(None);
    }
    let Some(primary) = codec.start_step()? else {
        return Ok(None);
    };
    let mut w = Windows { step, ctx, window: 0, primary, shadow: None };
    let n = codes.frames().0;
    let mut out = Vec::with_capacity(n.saturating_mul(info.codec.frame_samples));
    let (mut stepped, mut s) = (0, 0);
    while s < n {
        let e = n.min(s + chunk.max(1));
        step_pieces(&mut w, codec, &codes.slice_frames(s, e), s, &mut out, &mut stepped)?;
        s = e;
    }
    Ok(Some(out))
}

/// Runs frames `base..base + T` (`codes`) through the window decoders, appending the primary's
/// samples to `out`.
fn step_pieces(
    w: &mut Windows,
    codec: &dyn Codec,
    codes: &Codes,
    base: usize,
    out: &mut Vec<f32>,
    stepped: &mut usize,
) -> Result<()> {
    let t = codes.frames().0;
    let mut i = 0;
    while i < t {
        let s = base + i;
        let window = s / w.step;
        if window != w.window {
            // Frame (w + 1)·step: the shadow has decoded o_{w+1}..s from a zero state.
            let shadow =
                w.shadow.take().ok_or_else(|| Error::Internal("codec stream: no shadow".into()))?;
            let origin = (window * w.step).saturating_sub(w.ctx);
            if window != w.window + 1 || shadow.position() != s - origin {
                return Err(Error::Internal(format!(
                    "codec stream: shadow at {} for frame {s} of window {window}",
                    shadow.position()
                )));
            }
            w.primary = shadow;
            w.window = window;
        }
        let window_end = (window + 1) * w.step;
        let shadow_start = window_end - w.ctx; // the next window's origin, >= window * step
        let piece_end = (base + t).min(if s < shadow_start { shadow_start } else { window_end });
        let piece = codes.slice_frames(i, i + piece_end - s);
        w.primary.decode_next(&piece, out)?;
        *stepped += piece_end - s;
        if s >= shadow_start {
            if w.shadow.is_none() {
                w.shadow = Some(codec.start_step()?.ok_or_else(|| {
                    Error::Internal("codec stream: the codec lost its step decoder".into())
                })?);
            }
            if let Some(shadow) = w.shadow.as_mut() {
                shadow.decode_next(&piece, &mut Vec::new())?;
                *stepped += piece_end - s;
            }
        }
        i += piece_end - s;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::bundle::TokenIds;

    const K: usize = 2;

    /// `BundleInfo::for_tests` with K = 2 codebooks of 100 codes, receptive field `ctx` and calls
    /// of at most `max` frames.
    fn info(ctx: usize, max: usize) -> Arc<BundleInfo> {
        let mut i = BundleInfo::for_tests();
        i.model.num_codebooks = K;
        i.tokens = TokenIds { im_end: 1, interleave: 2, semantic_begin: 10, semantic_end: 19 };
        i.codec.codebook_sizes = vec![100, 100];
        i.codec.receptive_field_frames = ctx;
        i.codec.max_decode_frames = max;
        i.codec.max_encode_frames = max;
        Arc::new(i)
    }

    /// A codec whose sample pair per frame is (code 0 of the frame, its position in the call's
    /// decode): streamed samples equal the one-shot ones iff every frame was decoded at its
    /// canonical position. The step decoder checks that positions stay below `max`.
    struct Mock {
        step: bool,
        max: usize,
        steps_started: Mutex<usize>,
        range_frames: Mutex<usize>,
    }
    struct MockStep {
        pos: usize,
        max: usize,
    }
    impl CodecStep for MockStep {
        fn decode_next(&mut self, codes: &Codes, pcm: &mut Vec<f32>) -> Result<()> {
            for f in 0..codes.frames().0 {
                assert!(self.pos < self.max, "position {} past the table", self.pos);
                pcm.push(codes.get(0, f) as f32);
                pcm.push(self.pos as f32);
                self.pos += 1;
            }
            Ok(())
        }
        fn position(&self) -> usize {
            self.pos
        }
    }
    impl Codec for Mock {
        fn name(&self) -> &'static str {
            "mock"
        }
        fn supports_start_frame(&self) -> bool {
            true
        }
        fn decode_at(&self, codes: &Codes, start: usize, pcm: &mut Vec<f32>) -> Result<()> {
            *self.range_frames.lock().unwrap() += codes.frames().0;
            for f in 0..codes.frames().0 {
                assert!(start + f < self.max);
                pcm.push(codes.get(0, f) as f32);
                pcm.push((start + f) as f32);
            }
            Ok(())
        }
        fn encode(&self, _pcm: &[f32]) -> Result<Codes> {
            Err(Error::Internal("no".into()))
        }
        fn start_step(&self) -> Result<Option<Box<dyn CodecStep>>> {
            if !self.step {
                return Ok(None);
            }
            *self.steps_started.lock().unwrap() += 1;
            Ok(Some(Box::new(MockStep { pos: 0, max: self.max })))
        }
    }

    fn mock(step: bool, max: usize) -> Arc<Mock> {
        Arc::new(Mock { step, max, steps_started: Mutex::new(0), range_frames: Mutex::new(0) })
    }

    fn codes(n: usize) -> Codes {
        let cols: Vec<Vec<i64>> = (0..n).map(|f| vec![f as i64, 0]).collect();
        Codes::from_frames(K, &cols).unwrap()
    }

    fn stream(s: &mut CodecStream, all: &Codes, first: usize, rest: usize) -> Vec<f32> {
        let n = all.frames().0;
        let mut out = Vec::new();
        let mut f = 0;
        while f < n {
            let e = n.min(f + if f == 0 { first } else { rest });
            out.extend(s.push(&all.slice_frames(f, e)).unwrap());
            f = e;
        }
        out
    }

    #[test]
    fn stateful_stream_equals_one_shot_across_canonical_windows() {
        // ctx 3, max 10: step 7; windows 0..7 (origin 0), 7..14 (origin 4), 14..21 (origin 11).
        let info = info(3, 10);
        let all = codes(30);
        let codec = mock(true, 10);
        let one_shot = decode_range(codec.as_ref(), &info, &all, 0, 30).unwrap();
        for (first, rest) in [(1, 1), (4, 16), (2, 7), (16, 64), (3, 2)] {
            let c = mock(true, 10);
            let mut s = CodecStream::new(c.clone(), info.clone(), true).unwrap();
            assert!(s.is_stateful());
            assert_eq!(stream(&mut s, &all, first, rest), one_shot, "chunks ({first},{rest})");
            assert_eq!(s.frames(), 30);
            // Every frame once, plus 3 shadow frames before each of the window switches at 7,
            // 14, 21 and 28.
            assert_eq!(s.stepped_frames(), 30 + 4 * 3);
            assert_eq!(*c.steps_started.lock().unwrap(), 5);
            assert_eq!(*c.range_frames.lock().unwrap(), 0, "never the decode_range path");
        }
        // Frame 8 is window 1's frame at position 8 - 4.
        assert_eq!(&one_shot[16..18], &[8.0, 4.0]);
    }

    #[test]
    fn stepped_one_shot_equals_decode_range_across_windows() {
        let info = info(3, 10);
        let all = codes(30);
        let one_shot = decode_range(mock(true, 10).as_ref(), &info, &all, 0, 30).unwrap();
        for chunk in [1, 4, 16, 64] {
            let c = mock(true, 10);
            let got = decode_stepped(c.as_ref(), &info, &all, chunk).unwrap().unwrap();
            assert_eq!(got, one_shot, "chunk {chunk}");
            assert_eq!(*c.range_frames.lock().unwrap(), 0, "never the decode_range path");
        }
        assert!(decode_stepped(mock(false, 10).as_ref(), &info, &all, 16).unwrap().is_none());
        assert!(decode_stepped(mock(true, 10).as_ref(), &self::info(6, 10), &all, 16)
            .unwrap()
            .is_none());
    }

    #[test]
    fn stream_without_step_decoder_falls_back_to_decode_range() {
        let info = info(3, 10);
        let all = codes(20);
        for (stateful, has_step) in [(true, false), (false, true)] {
            let c = mock(has_step, 10);
            let one_shot = decode_range(c.as_ref(), &info, &all, 0, 20).unwrap();
            let mut s = CodecStream::new(c.clone(), info.clone(), stateful).unwrap();
            assert!(!s.is_stateful());
            assert_eq!(stream(&mut s, &all, 2, 5), one_shot);
            assert_eq!(s.stepped_frames(), 0);
            assert_eq!(*c.steps_started.lock().unwrap(), 0);
        }
    }

    #[test]
    fn windows_too_short_for_a_shadow_use_decode_range() {
        // step 4 <= ctx 6: the next window's origin is before this one's start.
        let c = mock(true, 10);
        let s = CodecStream::new(c, info(6, 10), true).unwrap();
        assert!(!s.is_stateful());
    }
}
