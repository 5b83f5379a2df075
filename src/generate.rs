//! The one frame loop, as gpt-fast-style stages (`prefill`, `decode_frame`, `decode_frames`,
//! `run_to_end`), the stop rules ([`StopRules`]) and cancellation. Every backend is driven
//! through the same step trait ([`FrameStep`]); host sampling is its adapter
//! (`backend/host.rs`).
//!
//! One frame = one slow step (sampled main token → c0) + `num_codebooks` fast steps (position 0
//! takes the slow hidden state, position k the code c_{k-1} and gives c_k). Sampling follows
//! `docs/bundle-format.md`: frame f = 0 is the prefill frame, slot 0 the slow head, slot k
//! codebook k.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Codec, FrameSampling, FrameStep, KvSnapshot, StepRow, Text2Semantic};
use crate::bundle::BundleInfo;
use crate::codes::Codes;
use crate::config::SynthParams;
use crate::error::{Error, Result};
use crate::sampling::SamplingParams;
use crate::text::prompt::Prompt;

mod codec_stream;
mod codec_worker;
pub use codec_stream::{decode_stepped, CodecStream};
pub use codec_worker::CodecWorker;

/// Frames per call when a one-shot decode runs through the stateful decoder ([`decode_all`]):
/// 16 measured faster than 64 and than the whole utterance at once (docs/rust-core.md "Codec
/// speed").
pub const ONE_SHOT_CHUNK_FRAMES: usize = 16;

/// Cancels a request from any thread. Cheap to clone; all clones share one flag.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, not-cancelled token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the request to stop; it returns [`Error::Cancelled`] before its next frame.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One generated frame: `[main token id, c0, .., c_{K-1}]`.
pub type Frame = Vec<i64>;

/// Where a generator's time went (`s1-mini bench --profile`). Off by default: a generator
/// without [`FrameGenerator::enable_profile`] reads no clock. Durations are wall time on the
/// calling thread; a backend call includes its input/output copies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// The whole prefill frame: the prompt through the slow transformer, then frame 0's fast
    /// steps and sampling.
    pub prefill: Duration,
    /// Slow-transformer calls of the decoded frames (one per frame); on a backend that makes
    /// whole frames on its device (`cuda`), the whole frame, fast steps and sampling included.
    pub slow: Duration,
    /// Fast-transformer calls of the decoded frames (reset + `num_codebooks` steps per frame).
    pub fast: Duration,
    /// Logit masking, repetition windows and sampling of the decoded frames.
    pub sampling: Duration,
    /// Wall time of the decoded frames (after the prefill frame), all stages and the rest.
    pub decode_total: Duration,
    /// Frames decoded after the prefill frame.
    pub decoded_frames: usize,
}

impl StageTimes {
    /// Decode time not in `slow`, `fast` or `sampling` (frame bookkeeping, copies).
    pub fn other(&self) -> Duration {
        self.decode_total.saturating_sub(self.slow + self.fast + self.sampling)
    }
}

/// The stop rules, in one place: after which frame a request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRules {
    /// The main token that ends the utterance (`<|im_end|>`); its frame is the last, and its
    /// codes are dropped.
    pub end_token: i64,
    /// Most frames sampled, the prefill frame and the end frame included.
    pub max_frames: usize,
}

impl StopRules {
    /// Whether generation ends after `frame`, the `frames_made`-th frame sampled.
    pub fn stops_after(&self, frame: &[i64], frames_made: usize) -> bool {
        frame.first() == Some(&self.end_token) || frames_made >= self.max_frames
    }
}

/// The frame loop of one request: its backend step object (KV caches), the repetition
/// history, the RNG position and the stop rules. Drives one utterance frame by frame; every
/// backend comes through the same [`FrameStep`].
pub struct FrameGenerator {
    step: Box<dyn FrameStep>,
    sampling: FrameSampling,
    stop: StopRules,
    /// Frames decoded after the prefill frame (the repetition history, d = 0, 1, ..).
    history: Vec<Frame>,
    /// Next frame index f (0 = prefill frame).
    frame_index: usize,
    prompt: Option<Prompt>,
    last: Option<Frame>,
    finished: bool,
    /// Head logits of the prefill step, kept for parity checks.
    prefill_logits: Vec<f32>,
    /// Stage timings; `None` = not measured (no clock reads).
    profile: Option<Box<StageTimes>>,
    /// Cached keys/values of the prompt's first positions (a voice prefix), if any.
    prefix: Option<Arc<KvSnapshot>>,
}

impl FrameGenerator {
    /// Starts a generator for `prompt` (checked against the context) with `params`.
    pub fn new(
        t2s: &dyn Text2Semantic,
        info: Arc<BundleInfo>,
        prompt: Prompt,
        params: &SynthParams,
    ) -> Result<Self> {
        let context = info.model.max_seq_len;
        if prompt.len + params.max_frames as usize > context {
            return Err(Error::PromptTooLong {
                prompt_tokens: prompt.len,
                max_frames: params.max_frames,
                context_tokens: context,
            });
        }
        let mut sampling = SamplingParams {
            temperature: params.temperature,
            top_p: params.top_p,
            repetition_penalty: params.repetition_penalty,
        };
        if params.fish_speech_compat {
            sampling = sampling.rounded_to_bf16();
        }
        let stop = StopRules {
            end_token: i64::from(info.tokens.im_end),
            max_frames: params.max_frames as usize,
        };
        // The cache holds the prompt and every frame: no growth, no copy while decoding.
        let step = t2s.start_frames(info, prompt.len + params.max_frames as usize)?;
        let sampling = FrameSampling {
            params: sampling,
            seed: params.seed,
            fish_speech_compat: params.fish_speech_compat,
            ignore_end: false,
        };
        Ok(Self::from_step(step, prompt, sampling, stop))
    }

    /// A generator over a backend's step object, with the prompt, sampling and stop rules
    /// already decided (benchmarks without a bundle; [`FrameGenerator::new`] otherwise).
    pub(crate) fn from_step(
        step: Box<dyn FrameStep>,
        prompt: Prompt,
        sampling: FrameSampling,
        stop: StopRules,
    ) -> Self {
        Self {
            step,
            sampling,
            stop,
            history: Vec::new(),
            frame_index: 0,
            prompt: Some(prompt),
            last: None,
            finished: false,
            prefill_logits: Vec::new(),
            profile: None,
            prefix: None,
        }
    }

    /// Prefills from `prefix`, the cached keys/values of the prompt's first `prefix.len`
    /// positions (made by the same backend from the same positions): only the rest of the prompt
    /// goes through the slow transformer. Ignored if the prompt is not longer than the prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: Arc<KvSnapshot>) -> Self {
        if self.prompt.as_ref().is_some_and(|p| p.len > prefix.len) {
            self.prefix = Some(prefix);
        }
        self
    }

    /// Never samples `<|im_end|>` when `ignore_end` is set (benchmarks and parity tests: exactly
    /// `max_frames` frames, every one audio).
    #[must_use]
    pub(crate) fn ignoring_end(mut self, ignore_end: bool) -> Self {
        self.sampling.ignore_end = ignore_end;
        self
    }

    /// Frames sampled so far, the prefill frame included.
    pub fn frames_made(&self) -> usize {
        self.frame_index
    }

    /// Starts measuring [`StageTimes`] (benchmarks). Without it no clock is read.
    pub fn enable_profile(&mut self) {
        self.profile = Some(Box::default());
    }

    /// The stage timings so far, if [`FrameGenerator::enable_profile`] was called.
    pub fn profile(&self) -> Option<&StageTimes> {
        self.profile.as_deref()
    }

    /// Whether generation has ended (see [`StopRules`]).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The slow head's logits at the end of the prompt (empty before the prefill frame).
    pub fn prefill_logits(&self) -> &[f32] {
        &self.prefill_logits
    }

    /// Makes frame `frame_index` through the backend's step (a batch of this one request).
    fn step_frame(&mut self) -> Result<Frame> {
        // The prefill frame is timed as a whole (`StageTimes::prefill`), not per stage.
        let profile = match self.frame_index {
            0 => None,
            _ => self.profile.as_deref_mut(),
        };
        let mut rows = [StepRow {
            frame: self.frame_index,
            prev: self.last.as_deref(),
            history: &self.history,
            sampling: &self.sampling,
            profile,
            out: Vec::new(),
        }];
        self.step.step(&mut rows)?;
        let [row] = rows;
        Ok(row.out)
    }

    /// Records `frame` and applies the stop rules.
    fn finish_frame(&mut self, frame: &Frame) {
        if self.frame_index > 0 {
            self.history.push(frame.clone());
        }
        self.frame_index += 1;
        if self.stop.stops_after(frame, self.frame_index) {
            self.finished = true;
        }
        self.last = Some(frame.clone());
    }

    /// Stage 1: runs the prompt through the slow transformer and samples frame 0, checking
    /// `cancel` before each chunk of [`PREFILL_CANCEL_CHUNK`] prompt positions: a long prompt
    /// can be cancelled part-way.
    pub fn prefill(&mut self, cancel: &CancelToken) -> Result<Frame> {
        let prompt =
            self.prompt.take().ok_or_else(|| Error::Internal("prefill called twice".into()))?;
        let t0 = self.profile.as_ref().map(|_| Instant::now());
        // prompt [1+K, T]: positions start.. go to kv positions start.. (after a cached prefix,
        // start = prefix.len).
        let start = match self.prefix.take() {
            Some(prefix) => {
                self.step.restore_kv(&prefix)?;
                prefix.len
            }
            None => 0,
        };
        let mut logits = None;
        let mut at = start;
        while at < prompt.len {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let end = (at + PREFILL_CANCEL_CHUNK).min(prompt.len);
            let chunk = prompt.columns(at, end);
            logits = Some(self.step.prefill(&chunk.data, chunk.len)?);
            at = end;
        }
        self.prefill_logits =
            logits.ok_or_else(|| Error::Internal("no prompt positions to prefill".into()))?;
        let frame = self.step_frame()?;
        self.finish_frame(&frame);
        if let (Some(p), Some(t0)) = (self.profile.as_deref_mut(), t0) {
            p.prefill += t0.elapsed();
        }
        Ok(frame)
    }

    /// Stage 2: the next frame: the prefill frame first (see [`FrameGenerator::prefill`]), then
    /// the previous frame fed back. Returns [`Error::Cancelled`] when `cancel` fired before the
    /// frame, `None` once generation has finished.
    pub fn decode_frame(&mut self, cancel: &CancelToken) -> Result<Option<Frame>> {
        if self.finished {
            return Ok(None);
        }
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if self.prompt.is_some() {
            return self.prefill(cancel).map(Some);
        }
        let t0 = self.profile.as_ref().map(|_| Instant::now());
        let frame = self.step_frame()?;
        self.finish_frame(&frame);
        if let (Some(p), Some(t0)) = (self.profile.as_deref_mut(), t0) {
            p.decode_total += t0.elapsed();
            p.decoded_frames += 1;
        }
        Ok(Some(frame))
    }

    /// Stage 3: decodes up to `n` more frames, checking `cancel` before each. Stops early at the
    /// end of the utterance.
    pub fn decode_frames(&mut self, n: usize, cancel: &CancelToken) -> Result<Vec<Frame>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            match self.decode_frame(cancel)? {
                Some(f) => out.push(f),
                None => break,
            }
        }
        Ok(out)
    }
}

/// Whether a frame is audio (not the `<|im_end|>` frame, whose codes are dropped).
pub fn is_audio_frame(info: &BundleInfo, frame: &Frame) -> bool {
    frame[0] != i64::from(info.tokens.im_end)
}

/// Prompt positions per slow call of the prefill, so that a cancel is seen between chunks (the
/// backends chunk further for memory: onnx 512, cuda its plan's chunk).
pub const PREFILL_CANCEL_CHUNK: usize = 512;

/// Runs a generator to the end and returns every sampled frame (including a final
/// `<|im_end|>` frame, if any), calling `on_frame` with the number of frames so far after each.
pub fn run_to_end(
    gen: &mut FrameGenerator,
    cancel: &CancelToken,
    on_frame: &mut dyn FnMut(usize),
) -> Result<Vec<Frame>> {
    let mut frames = Vec::new();
    while let Some(f) = gen.decode_frame(cancel)? {
        frames.push(f);
        on_frame(frames.len());
    }
    Ok(frames)
}

/// Codes of the audio frames, `[K, n]`.
pub fn frames_to_codes(info: &BundleInfo, frames: &[Frame]) -> Result<Codes> {
    let cols: Vec<Vec<i64>> =
        frames.iter().filter(|f| is_audio_frame(info, f)).map(|f| f[1..].to_vec()).collect();
    Codes::from_frames(info.model.num_codebooks, &cols)
}

/// Decodes frames `start..end` of `codes`, giving their samples only.
///
/// The codec's positional tables are absolute and bf16-rounded, so the same frames decoded from
/// another origin differ by ≈ 3e-4. To make one-shot and streamed decodes identical, every frame
/// is decoded at the position it has in a *canonical* decode: frames are grouped in windows of
/// `step = max_decode_frames − receptive_field_frames`, and window w is decoded as if the call
/// began at `origin_w = w·step − receptive_field_frames` (or 0).
/// - If the codec takes `start_frame`, a piece `s..e` of window w is decoded from
///   `max(origin_w, s − receptive_field_frames)` with the matching `start_frame`: bounded work per
///   chunk, exact because the codec is causal with that receptive field.
/// - Otherwise it is decoded from `origin_w` itself (exact, but each chunk re-decodes its window).
pub fn decode_range(
    codec: &dyn Codec,
    info: &BundleInfo,
    codes: &Codes,
    start: usize,
    end: usize,
) -> Result<Vec<f32>> {
    let fs = info.codec.frame_samples;
    let ctx = info.codec.receptive_field_frames;
    let step = info.codec.max_decode_frames.saturating_sub(ctx).max(1);
    let end = end.min(codes.frames().0);
    // Bounded by the manifest checks (frames and frame_samples), checked anyway.
    let samples = |frames: usize| {
        frames
            .checked_mul(fs)
            .ok_or_else(|| Error::Internal(format!("{frames} frames of {fs} samples overflow")))
    };
    let mut out = Vec::with_capacity(samples(end.saturating_sub(start))?);
    let mut s = start;
    while s < end {
        let w = s / step;
        let piece_end = ((w + 1) * step).min(end);
        let origin = (w * step).saturating_sub(ctx);
        let from =
            if codec.supports_start_frame() { s.saturating_sub(ctx).max(origin) } else { origin };
        let mut pcm = Vec::with_capacity(samples(piece_end - from)?);
        // codes [K, piece_end - from] at positions from - origin.. -> pcm [(piece_end - from) * fs]
        codec.decode_at(&codes.slice_frames(from, piece_end), from - origin, &mut pcm)?;
        let tail = pcm.get(samples(s - from)?..).ok_or_else(|| {
            Error::Internal(format!(
                "codec returned {} samples for {} frames",
                pcm.len(),
                piece_end - from
            ))
        })?;
        out.extend_from_slice(tail);
        s = piece_end;
    }
    Ok(out)
}

/// A whole decode of `codes`: through the stateful decoder in chunks of
/// [`ONE_SHOT_CHUNK_FRAMES`] when the codec has one ([`decode_stepped`]), else [`decode_range`]
/// of all frames. Both give the same samples to float rounding (≤ 1e-5 relative).
pub fn decode_all(codec: &dyn Codec, info: &BundleInfo, codes: &Codes) -> Result<Vec<f32>> {
    match decode_stepped(codec, info, codes, ONE_SHOT_CHUNK_FRAMES)? {
        Some(pcm) => Ok(pcm),
        None => decode_range(codec, info, codes, 0, codes.frames().0),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::backend::{SlowOutput, T2sRequest};

    const K: usize = 3;
    const SEM_BEGIN: u32 = 100;
    const SEM_ROWS: usize = 10;
    const IM_END: u32 = 50;

    /// `BundleInfo::for_tests`: K = 3 codebooks, semantic rows 100..110, <|im_end|> = 50.
    fn info() -> Arc<BundleInfo> {
        Arc::new(BundleInfo::for_tests())
    }

    /// Slow head: a scripted winner per call (head index); one extra row (index 11) that is
    /// always the largest but outside semantic + im_end. Fast head: code = position.
    struct Mock {
        script: Vec<usize>,
    }
    struct MockReq {
        script: Vec<usize>,
        calls: usize,
        fast_pos: usize,
        kv: usize,
    }
    impl Text2Semantic for Mock {
        fn name(&self) -> &'static str {
            "mock"
        }
        fn start(&self) -> Result<Box<dyn T2sRequest>> {
            Ok(Box::new(MockReq { script: self.script.clone(), calls: 0, fast_pos: 0, kv: 0 }))
        }
    }
    impl T2sRequest for MockReq {
        fn slow(&mut self, _tokens: &[i64], t: usize) -> Result<SlowOutput> {
            let mut logits = vec![0.0f32; SEM_ROWS + 2];
            let win = self.script[self.calls.min(self.script.len() - 1)];
            logits[win] = 5.0;
            logits[SEM_ROWS + 1] = 100.0; // outside the allowed rows: must never win
            self.calls += 1;
            self.kv += t;
            Ok(SlowOutput { logits, hidden: vec![0.0; 4] })
        }
        fn fast_reset(&mut self) -> Result<()> {
            self.fast_pos = 0;
            Ok(())
        }
        fn fast(&mut self, _hidden: &[f32], _code: i64) -> Result<Vec<f32>> {
            let mut l = vec![0.0f32; 8];
            l[self.fast_pos % 8] = 5.0;
            self.fast_pos += 1;
            Ok(l)
        }
        fn kv_len(&self) -> usize {
            self.kv
        }
    }

    fn prompt() -> Prompt {
        Prompt { rows: K + 1, len: 2, data: vec![0; (K + 1) * 2] }
    }

    fn greedy(max_frames: u32) -> SynthParams {
        SynthParams::default()
            .with_temperature(0.0)
            .with_repetition_penalty(1.0)
            .with_max_frames(max_frames)
    }

    /// Records each slow call's length; cancels `token` after the first call when asked.
    struct Cancelling {
        token: CancelToken,
        cancel_after_first: bool,
        calls: Arc<Mutex<Vec<usize>>>,
    }
    struct CancellingReq {
        inner: MockReq,
        token: CancelToken,
        cancel_after_first: bool,
        calls: Arc<Mutex<Vec<usize>>>,
    }
    impl Text2Semantic for Cancelling {
        fn name(&self) -> &'static str {
            "cancelling"
        }
        fn start(&self) -> Result<Box<dyn T2sRequest>> {
            Ok(Box::new(CancellingReq {
                inner: MockReq { script: vec![3], calls: 0, fast_pos: 0, kv: 0 },
                token: self.token.clone(),
                cancel_after_first: self.cancel_after_first,
                calls: self.calls.clone(),
            }))
        }
    }
    impl T2sRequest for CancellingReq {
        fn slow(&mut self, tokens: &[i64], t: usize) -> Result<SlowOutput> {
            self.calls.lock().unwrap().push(t);
            if self.cancel_after_first {
                self.token.cancel();
            }
            self.inner.slow(tokens, t)
        }
        fn fast_reset(&mut self) -> Result<()> {
            self.inner.fast_reset()
        }
        fn fast(&mut self, hidden: &[f32], code: i64) -> Result<Vec<f32>> {
            self.inner.fast(hidden, code)
        }
        fn kv_len(&self) -> usize {
            self.inner.kv_len()
        }
    }

    #[test]
    fn generate_long_prefill_is_chunked_and_cancellable_between_chunks() {
        let mut i = (*info()).clone();
        i.model.max_seq_len = 4096;
        let long = Prompt { rows: K + 1, len: 1300, data: vec![0; (K + 1) * 1300] };
        for cancel_after_first in [false, true] {
            let t2s = Cancelling {
                token: CancelToken::new(),
                cancel_after_first,
                calls: Arc::new(Mutex::new(Vec::new())),
            };
            let mut g =
                FrameGenerator::new(&t2s, Arc::new(i.clone()), long.clone(), &greedy(2)).unwrap();
            let r = g.decode_frames(2, &t2s.token);
            let calls = t2s.calls.lock().unwrap().clone();
            if cancel_after_first {
                assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
                assert_eq!(calls, [PREFILL_CANCEL_CHUNK], "stopped after the first chunk");
            } else {
                assert_eq!(r.unwrap().len(), 2);
                // 512 + 512 + 276 prompt positions, then one decode step.
                assert_eq!(calls, [512, 512, 276, 1]);
            }
        }
    }

    #[test]
    fn generate_stops_at_im_end_and_drops_its_codes() {
        let mock = Mock { script: vec![3, 4, 5, SEM_ROWS] };
        let mut g = FrameGenerator::new(&mock, info(), prompt(), &greedy(20)).unwrap();
        let frames = run_to_end(&mut g, &CancelToken::new(), &mut |_| {}).unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0], vec![103, 3, 1, 2]);
        assert_eq!(frames[3][0], i64::from(IM_END));
        assert_eq!(frames[3][1], 0, "im_end gives c0 = 0");
        let codes = frames_to_codes(&info(), &frames).unwrap();
        assert_eq!(codes.frames().0, 3);
        assert!(g.decode_frame(&CancelToken::new()).unwrap().is_none());
    }

    #[test]
    fn generate_ignore_end_runs_exactly_max_frames_of_audio() {
        let mock = Mock { script: vec![3, SEM_ROWS] }; // im_end wins from frame 1 on
        let mut g =
            FrameGenerator::new(&mock, info(), prompt(), &greedy(6)).unwrap().ignoring_end(true);
        let frames = run_to_end(&mut g, &CancelToken::new(), &mut |_| {}).unwrap();
        assert_eq!(frames.len(), 6);
        assert!(frames.iter().all(|f| is_audio_frame(&info(), f)));
        assert_eq!(frames_to_codes(&info(), &frames).unwrap().frames().0, 6);
    }

    #[test]
    fn generate_profile_counts_decoded_frames_only_when_enabled() {
        let mock = Mock { script: vec![1] };
        let mut g = FrameGenerator::new(&mock, info(), prompt(), &greedy(5)).unwrap();
        assert!(g.profile().is_none());
        g.enable_profile();
        run_to_end(&mut g, &CancelToken::new(), &mut |_| {}).unwrap();
        let p = g.profile().unwrap();
        assert_eq!(p.decoded_frames, 4, "the prefill frame is counted apart");
        assert!(p.decode_total >= p.slow + p.fast + p.sampling);
        let mut plain = FrameGenerator::new(&mock, info(), prompt(), &greedy(5)).unwrap();
        run_to_end(&mut plain, &CancelToken::new(), &mut |_| {}).unwrap();
        assert!(plain.profile().is_none());
    }

    #[test]
    fn generate_stops_at_max_frames() {
        let mock = Mock { script: vec![1] };
        let mut g = FrameGenerator::new(&mock, info(), prompt(), &greedy(5)).unwrap();
        assert_eq!(run_to_end(&mut g, &CancelToken::new(), &mut |_| {}).unwrap().len(), 5);
    }

    #[test]
    fn generate_logits_outside_head_never_win() {
        let mock = Mock { script: vec![7] };
        for params in [greedy(3), SynthParams::default().with_max_frames(3).with_seed(5)] {
            let mut g = FrameGenerator::new(&mock, info(), prompt(), &params).unwrap();
            for f in run_to_end(&mut g, &CancelToken::new(), &mut |_| {}).unwrap() {
                let id = f[0];
                assert!(
                    id == i64::from(IM_END)
                        || (i64::from(SEM_BEGIN)..i64::from(SEM_BEGIN) + 10).contains(&id)
                );
            }
        }
    }

    #[test]
    fn generate_prompt_over_context_is_prompt_too_long() {
        let mock = Mock { script: vec![1] };
        let r = FrameGenerator::new(&mock, info(), prompt(), &greedy(63));
        assert!(matches!(
            r,
            Err(Error::PromptTooLong { prompt_tokens: 2, max_frames: 63, context_tokens: 64 })
        ));
    }

    #[test]
    fn penalty_compat_mode_rounds_knobs_to_bf16() {
        let mock = Mock { script: vec![1] };
        let g = FrameGenerator::new(
            &mock,
            info(),
            prompt(),
            &SynthParams::default().with_fish_speech_compat(true).with_max_frames(4),
        )
        .unwrap();
        assert_eq!(g.sampling.params.temperature, 0.80078125);
        assert_eq!(g.sampling.params.repetition_penalty, 1.1015625);
    }

    struct MockCodec {
        calls: Mutex<Vec<(usize, usize)>>,
        start_frame: bool,
    }
    impl Codec for MockCodec {
        fn name(&self) -> &'static str {
            "mock"
        }
        fn supports_start_frame(&self) -> bool {
            self.start_frame
        }
        fn decode_at(&self, codes: &Codes, start_frame: usize, pcm: &mut Vec<f32>) -> Result<()> {
            assert!(start_frame == 0 || self.start_frame);
            self.calls.lock().unwrap().push((codes.get(0, 0) as usize, codes.frames().0));
            // Two samples per frame: the frame's code 0 and its position (absolute with
            // start_frame).
            for f in 0..codes.frames().0 {
                pcm.push(codes.get(0, f) as f32);
                pcm.push((start_frame + f) as f32);
            }
            Ok(())
        }
        fn encode(&self, _pcm: &[f32]) -> Result<Codes> {
            Err(Error::Internal("no".into()))
        }
    }

    #[test]
    fn decode_range_uses_canonical_origins() {
        // step = max_decode 8 - ctx 2 = 6: window 0 = frames 0..6 from 0, window 1 = 6..12 from 4.
        let cols: Vec<Vec<i64>> = (0..14).map(|f| vec![f, 0, 0]).collect();
        let codes = Codes::from_frames(K, &cols).unwrap();
        let codec = MockCodec { calls: Mutex::new(Vec::new()), start_frame: false };
        let one = decode_range(&codec, &info(), &codes, 0, 14).unwrap();
        let mut pieces = Vec::new();
        for (s, e) in [(0, 1), (1, 5), (5, 9), (9, 14)] {
            pieces.extend(decode_range(&codec, &info(), &codes, s, e).unwrap());
        }
        assert_eq!(pieces, one);
        // Frame 7 is decoded at position 3 of a call starting at frame 4 in both.
        assert_eq!(&one[14..16], &[7.0, 3.0]);
        assert!(codec.calls.lock().unwrap().iter().all(|&(_, n)| n <= 8));
    }

    #[test]
    fn decode_range_with_start_frame_decodes_only_the_receptive_field() {
        let cols: Vec<Vec<i64>> = (0..14).map(|f| vec![f, 0, 0]).collect();
        let codes = Codes::from_frames(K, &cols).unwrap();
        let plain = MockCodec { calls: Mutex::new(Vec::new()), start_frame: false };
        let one = decode_range(&plain, &info(), &codes, 0, 14).unwrap();
        let codec = MockCodec { calls: Mutex::new(Vec::new()), start_frame: true };
        let mut pieces = Vec::new();
        for (s, e) in [(0, 1), (1, 5), (5, 9), (9, 14)] {
            pieces.extend(decode_range(&codec, &info(), &codes, s, e).unwrap());
        }
        assert_eq!(pieces, one, "same positions as the canonical decode");
        // Piece 9..12 starts at frame 7 (ctx 2), not at its window origin 4.
        assert!(codec.calls.lock().unwrap().contains(&(7, 5)));
    }

    #[test]
    fn cancel_token_is_shared_between_clones() {
        let t = CancelToken::new();
        let u = t.clone();
        assert!(!u.is_cancelled());
        t.cancel();
        assert!(u.is_cancelled());
        fn send_sync<T: Send + Sync>() {}
        send_sync::<CancelToken>();
        send_sync::<crate::Engine>();
        fn send<T: Send>() {}
        send::<crate::Stream>();
    }
}
