//! The frame loop as gpt-fast-style stages (`prefill`, `decode_frame`, `decode_frames`,
//! `synthesize`), the stop rules, the streaming chunker and cancellation.
//!
//! One frame = one slow step (sampled main token → c0) + `num_codebooks` fast steps (position 0
//! takes the slow hidden state, position k the code c_{k-1} and gives c_k). Sampling follows
//! `docs/bundle-format.md`: frame f = 0 is the prefill frame, slot 0 the slow head, slot k
//! codebook k.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::backend::{Codec, T2sRequest, Text2Semantic};
use crate::bundle::BundleInfo;
use crate::codes::Codes;
use crate::config::SynthParams;
use crate::error::{Error, Result};
use crate::sampling::{self, SamplingParams, REPETITION_WINDOW_FRAMES};
use crate::text::prompt::Prompt;

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

/// Per-request generator state: the backend's KV caches, the repetition history and the RNG
/// position. Drives one utterance frame by frame.
pub struct FrameGenerator {
    req: Box<dyn T2sRequest>,
    info: Arc<BundleInfo>,
    sampling: SamplingParams,
    seed: u64,
    compat: bool,
    max_frames: usize,
    /// Frames decoded after the prefill frame (the repetition history, d = 0, 1, ..).
    history: Vec<Frame>,
    /// Next frame index f (0 = prefill frame).
    frame_index: usize,
    prompt: Option<Prompt>,
    last: Option<Frame>,
    finished: bool,
    /// Head logits of the prefill step, kept for parity checks.
    prefill_logits: Vec<f32>,
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
        Ok(Self {
            req: t2s.start()?,
            info,
            sampling,
            seed: params.seed,
            compat: params.fish_speech_compat,
            max_frames: params.max_frames as usize,
            history: Vec::new(),
            frame_index: 0,
            prompt: Some(prompt),
            last: None,
            finished: false,
            prefill_logits: Vec::new(),
        })
    }

    /// Whether generation has ended (`<|im_end|>` or `max_frames`).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The slow head's logits at the end of the prompt (empty before [`FrameGenerator::prefill`]).
    pub fn prefill_logits(&self) -> &[f32] {
        &self.prefill_logits
    }

    /// Maps a token id to its row in the restricted head; `None` outside the head.
    fn head_index(&self, id: i64) -> Option<usize> {
        let t = &self.info.tokens;
        if id >= i64::from(t.semantic_begin) && id <= i64::from(t.semantic_end) {
            Some((id - i64::from(t.semantic_begin)) as usize)
        } else if id == i64::from(t.im_end) {
            Some(self.info.im_end_index)
        } else {
            None
        }
    }

    /// The window's columns for decoded frame d (fish-speech `decode_n_tokens`): columns 0..16
    /// of a zero-initialised history while d < 16, else d-16..d.
    fn window_column(&self, d: usize, j: usize) -> Option<&Frame> {
        let col = if d < REPETITION_WINDOW_FRAMES { j } else { d - REPETITION_WINDOW_FRAMES + j };
        self.history.get(col)
    }

    /// Penalty indices of slot `slot` (0 = main head, k = codebook k) for decoded frame `d`.
    fn window(&self, d: usize, slot: usize) -> Vec<usize> {
        let k = self.info.model.num_codebooks;
        let zero_col = vec![0i64; k + 1];
        let col = |j: usize| self.window_column(d, j).unwrap_or(&zero_col);
        if slot == 0 {
            if self.compat {
                // fish-speech's `previous_tokens[:, 0]`: the first column's 11 values read as ids.
                col(0).iter().filter_map(|&v| self.head_index(v)).collect()
            } else {
                (0..REPETITION_WINDOW_FRAMES).filter_map(|j| self.head_index(col(j)[0])).collect()
            }
        } else {
            (0..REPETITION_WINDOW_FRAMES)
                .filter_map(|j| usize::try_from(col(j)[slot + 1]).ok())
                .collect()
        }
    }

    /// Samples the frame from the slow output: main token, then the fast codebooks.
    fn sample_frame(&mut self, slow: crate::backend::SlowOutput) -> Result<Frame> {
        let f = self.frame_index;
        let decoded = f.checked_sub(1); // d; None for the prefill frame (no penalty)
        let k_books = self.info.model.num_codebooks;
        let frame_u32 =
            u32::try_from(f).map_err(|_| Error::Internal("frame index overflow".into()))?;

        let mut logits = slow.logits;
        // Only the semantic rows and <|im_end|> may win, whatever else the head holds.
        let keep = |i: usize| i < self.info.semantic_rows || i == self.info.im_end_index;
        for (i, v) in logits.iter_mut().enumerate() {
            if !keep(i) {
                *v = f32::NEG_INFINITY;
            }
        }
        let window = decoded.map(|d| self.window(d, 0)).unwrap_or_default();
        let head = sampling::sample(&mut logits, &window, self.sampling, self.seed, frame_u32, 0);
        let (main_id, c0) = if head == self.info.im_end_index {
            // fish-speech clamps the negative code of a non-semantic token to 0.
            (i64::from(self.info.tokens.im_end), 0i64)
        } else {
            (i64::from(self.info.tokens.semantic_begin) + head as i64, head as i64)
        };
        let mut frame = Vec::with_capacity(k_books + 1);
        frame.push(main_id);
        frame.push(c0);

        self.req.fast_reset()?;
        // Position 0: the slow hidden state; its logits are discarded.
        self.req.fast(&slow.hidden, 0)?;
        let rows = self.info.fast_logit_rows;
        for k in 1..k_books {
            let prev = frame[k];
            let mut logits = self.req.fast(&slow.hidden, prev)?;
            logits.truncate(rows);
            let window = decoded.map(|d| self.window(d, k)).unwrap_or_default();
            let c = sampling::sample(
                &mut logits,
                &window,
                self.sampling,
                self.seed,
                frame_u32,
                k as u32,
            );
            frame.push(c as i64);
        }
        Ok(frame)
    }

    fn finish_frame(&mut self, frame: &Frame) {
        if self.frame_index > 0 {
            self.history.push(frame.clone());
        }
        self.frame_index += 1;
        if frame[0] == i64::from(self.info.tokens.im_end) || self.frame_index >= self.max_frames {
            self.finished = true;
        }
        self.last = Some(frame.clone());
    }

    /// Stage 1: runs the prompt through the slow transformer and samples frame 0.
    pub fn prefill(&mut self) -> Result<Frame> {
        let prompt =
            self.prompt.take().ok_or_else(|| Error::Internal("prefill called twice".into()))?;
        let slow = self.req.slow(&prompt.data, prompt.len)?;
        self.prefill_logits = slow.logits.clone();
        let frame = self.sample_frame(slow)?;
        self.finish_frame(&frame);
        Ok(frame)
    }

    /// Stage 2: feeds the previous frame back and samples the next one. Prefills first if
    /// needed. Returns `None` once generation has finished.
    pub fn decode_frame(&mut self) -> Result<Option<Frame>> {
        if self.finished {
            return Ok(None);
        }
        if self.prompt.is_some() {
            return self.prefill().map(Some);
        }
        let prev =
            self.last.clone().ok_or_else(|| Error::Internal("decode before prefill".into()))?;
        // prev: [1+K] → tokens [1+K, 1]
        let slow = self.req.slow(&prev, 1)?;
        let frame = self.sample_frame(slow)?;
        self.finish_frame(&frame);
        Ok(Some(frame))
    }

    /// Stage 3: decodes up to `n` more frames, checking `cancel` before each. Stops early at the
    /// end of the utterance.
    pub fn decode_frames(&mut self, n: usize, cancel: Option<&CancelToken>) -> Result<Vec<Frame>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            if cancel.is_some_and(CancelToken::is_cancelled) {
                return Err(Error::Cancelled);
            }
            match self.decode_frame()? {
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

/// Runs a generator to the end and returns every sampled frame (including a final
/// `<|im_end|>` frame, if any).
pub fn run_to_end(gen: &mut FrameGenerator, cancel: Option<&CancelToken>) -> Result<Vec<Frame>> {
    let mut frames = Vec::new();
    while !gen.is_finished() {
        frames.extend(gen.decode_frames(1, cancel)?);
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
/// The codec graph takes no position offset, and its positional numerics differ slightly
/// (≈ 3e-4) when the same frames are decoded from another origin. So every frame is decoded from
/// a *canonical* origin: frames are grouped in windows of `max_decode_frames −
/// receptive_field_frames`, and window w is decoded from `w·step − receptive_field_frames` (or
/// 0). One-shot and streamed decodes therefore run the same computation per frame, and since
/// the codec is causal, a decode that stops early gives the same samples as one that goes on:
/// the concatenated stream equals the one-shot audio for any chunk sizes.
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
    let mut out = Vec::with_capacity(end.saturating_sub(start) * fs);
    let mut s = start;
    while s < end {
        let w = s / step;
        let piece_end = ((w + 1) * step).min(end);
        let origin = (w * step).saturating_sub(ctx);
        let mut pcm = Vec::with_capacity((piece_end - origin) * fs);
        // codes [K, piece_end - origin] -> pcm [(piece_end - origin) * fs]
        codec.decode(&codes.slice_frames(origin, piece_end), &mut pcm)?;
        out.extend_from_slice(&pcm[(s - origin) * fs..]);
        s = piece_end;
    }
    Ok(out)
}

/// Stage 4: prompt → frames → codes → PCM in one call.
pub fn synthesize(
    t2s: &dyn Text2Semantic,
    codec: &dyn Codec,
    info: Arc<BundleInfo>,
    prompt: Prompt,
    params: &SynthParams,
    cancel: Option<&CancelToken>,
) -> Result<Vec<f32>> {
    let mut gen = FrameGenerator::new(t2s, info.clone(), prompt, params)?;
    let frames = run_to_end(&mut gen, cancel)?;
    let codes = frames_to_codes(&info, &frames)?;
    decode_range(codec, &info, &codes, 0, codes.frames().0)
}
