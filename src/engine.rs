//! [`Engine`]: a loaded bundle plus its backend, shared by any number of concurrent requests,
//! and [`Stream`]: one streamed utterance.

use std::sync::Arc;

use crate::audio::{Audio, AudioChunk};
use crate::backend::{self, Codec, KvSnapshot, Skipped, Text2Semantic};
use crate::bundle::{Bundle, BundleInfo, Verify, VerifyCache};
use crate::codes::Codes;
use crate::config::{BackendKind, EngineConfig, SynthParams};
use crate::error::{Error, Result};
use crate::generate::{self, CancelToken, CodecStream, CodecWorker, Frame, FrameGenerator};
use crate::text::prompt::{build_prefix, build_prompt, Prompt, Reference};
use crate::voice::Voice;

/// Longest accepted text per call, in characters per context position: no natural text averages
/// more than a few characters per token, so longer input cannot fit and is refused before
/// tokenization.
const MAX_TEXT_CHARS_PER_CONTEXT_TOKEN: usize = 16;

/// Voice prefixes kept per engine (each holds the slow KV of its prefix: for S1-mini in fp32,
/// ≈ 224 KiB per position, so ≈ 145 MiB for a 30 s reference); the least recently used goes.
const PREFIX_CACHE_ENTRIES: usize = 4;

/// Cached prompt prefixes: key = sha256 of the voices' fingerprints in order.
type PrefixCache = parking_lot::Mutex<Vec<([u8; 32], Arc<KvSnapshot>)>>;

struct Inner {
    prefix_cache: PrefixCache,
    /// Set once the backend failed to copy its KV cache: no more prefix prefills.
    prefix_unsupported: std::sync::atomic::AtomicBool,
    bundle: Bundle,
    info: Arc<BundleInfo>,
    kind: BackendKind,
    t2s: Arc<dyn Text2Semantic>,
    codec: Option<Arc<dyn Codec>>,
    skipped: Vec<Skipped>,
}

/// A loaded model. `Send + Sync`: share one engine (it is cheap to clone, an `Arc` inside)
/// between threads; each call keeps its own state.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("bundle", &self.inner.info.dir)
            .field("backend", &self.inner.kind)
            .finish()
    }
}

impl Engine {
    /// Loads the bundle (checking its manifest and, unless disabled, every file's sha256) and
    /// starts the configured backend.
    ///
    /// ```no_run
    /// use s1_mini::{Engine, EngineConfig, SynthParams};
    /// let engine = Engine::new(EngineConfig::new("tests/fixtures/tiny"))?;
    /// let audio = engine.synthesize("Hello.", &SynthParams::default().with_seed(1))?;
    /// println!("{} samples at {} Hz", audio.samples.len(), audio.sample_rate_hz);
    /// # Ok::<(), s1_mini::Error>(())
    /// ```
    pub fn new(config: EngineConfig) -> Result<Engine> {
        let verify = match (config.verify_hashes, VerifyCache::new(config.cache_dir.as_deref())) {
            (false, _) => Verify::Off,
            (true, Some(stamps)) => Verify::Stamped(stamps),
            (true, None) => Verify::Full,
        };
        let bundle = Bundle::load_with(&config.bundle_dir, verify)?;
        let sel = backend::select(&config, &bundle)?;
        let info = Arc::new(bundle.info.clone());
        Ok(Engine {
            inner: Arc::new(Inner {
                prefix_cache: PrefixCache::default(),
                prefix_unsupported: std::sync::atomic::AtomicBool::new(false),
                bundle,
                info,
                kind: sel.kind,
                t2s: sel.t2s,
                codec: sel.codec,
                skipped: sel.skipped,
            }),
        })
    }

    /// Facts about the loaded bundle.
    pub fn info(&self) -> &BundleInfo {
        &self.inner.info
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        self.inner.kind
    }

    /// Backends `auto` tried first and why they were skipped.
    pub fn skipped_backends(&self) -> &[Skipped] {
        &self.inner.skipped
    }

    /// Largest `max_frames` the context leaves for `text` (context − prompt length).
    pub fn context_frames(&self, text: &str) -> Result<u32> {
        let prompt = self.inner.prompt(text, &[], false)?;
        let left = self.inner.info.model.max_seq_len.saturating_sub(prompt.len);
        Ok(u32::try_from(left).unwrap_or(u32::MAX))
    }

    /// The prompt the engine feeds the model for `text` (`[1+K, T]` ids), with the default
    /// [`SynthParams::parse_special_tokens`] (off: special-token names in `text` are plain text).
    pub fn prompt(&self, text: &str) -> Result<Prompt> {
        self.inner.prompt(text, &[], false)
    }

    /// The prompt for `text` spoken after `references` (transcript + codes of each reference
    /// voice), as fish-speech's `generate_long` builds it (special-token names plain text, as
    /// [`Engine::prompt`]).
    pub fn prompt_with_references(&self, references: &[Reference], text: &str) -> Result<Prompt> {
        self.inner.prompt(text, references, false)
    }

    /// The prompt a synthesis of `text` in `voices` with `params` feeds the model (only
    /// [`SynthParams::parse_special_tokens`] of `params` changes it).
    pub fn prompt_with_params(
        &self,
        voices: &[Voice],
        text: &str,
        params: &SynthParams,
    ) -> Result<Prompt> {
        self.inner.prompt(text, &Inner::references(voices), params.parse_special_tokens)
    }

    /// Text → speech in one call (PCM f32 mono at [`Audio::sample_rate_hz`]).
    pub fn synthesize(&self, text: &str, params: &SynthParams) -> Result<Audio> {
        let codes = self.inner.generate_codes(text, params, None)?;
        self.decode_codes(&codes)
    }

    /// [`Engine::synthesize`] for text given as bytes; invalid UTF-8 is [`Error::InvalidUtf8`].
    pub fn synthesize_bytes(&self, text: &[u8], params: &SynthParams) -> Result<Audio> {
        let text = std::str::from_utf8(text)
            .map_err(|e| Error::InvalidUtf8 { arg: "text", valid_up_to: e.valid_up_to() })?;
        self.synthesize(text, params)
    }

    /// Text → codec codes (`[num_codebooks, frames]`), without decoding audio.
    pub fn generate_codes(&self, text: &str, params: &SynthParams) -> Result<Codes> {
        self.inner.generate_codes(text, params, None)
    }

    /// Like [`Engine::generate_codes`], stopping with [`Error::Cancelled`] when `cancel` fires.
    pub fn generate_codes_cancellable(
        &self,
        text: &str,
        params: &SynthParams,
        cancel: &CancelToken,
    ) -> Result<Codes> {
        self.inner.generate_codes(text, params, Some(cancel))
    }

    /// Every sampled frame `[main token id, c0..]`, including a final `<|im_end|>` frame, plus
    /// the prefill logits: the raw material of the parity tests.
    pub fn generate_frames(
        &self,
        text: &str,
        params: &SynthParams,
    ) -> Result<(Vec<Frame>, Vec<f32>)> {
        let mut gen = self.inner.generator(text, params)?;
        let frames = generate::run_to_end(&mut gen, None)?;
        Ok((frames, gen.prefill_logits().to_vec()))
    }

    /// A frame generator for `text` spoken in `voices` (for `bench`).
    pub(crate) fn generator_with_voices(
        &self,
        text: &str,
        voices: &[Voice],
        params: &SynthParams,
    ) -> Result<FrameGenerator> {
        self.inner.generator_with(text, voices, params)
    }

    /// The prompt for `text` spoken in `voices` (as [`Engine::prompt_with_references`]).
    pub fn prompt_with_voices(&self, voices: &[Voice], text: &str) -> Result<Prompt> {
        self.prompt_with_references(&Inner::references(voices), text)
    }

    /// The codec, or the bundle error saying it has none (for `bench`).
    pub(crate) fn codec(&self) -> Result<Arc<dyn Codec>> {
        self.inner.codec().cloned()
    }

    /// The bundle facts, shared (for `bench`).
    pub(crate) fn info_arc(&self) -> Arc<BundleInfo> {
        self.inner.info.clone()
    }

    /// Codes → PCM (like fish-speech's codec CLI).
    pub fn decode_codes(&self, codes: &Codes) -> Result<Audio> {
        let codec = self.inner.codec()?;
        let info = &self.inner.info;
        Engine::check_codes_with(info, codes, "codes")?;
        let samples = generate::decode_all(codec.as_ref(), info, codes)?;
        Ok(Audio { samples, sample_rate_hz: info.codec.sample_rate_hz })
    }

    /// PCM (mono, at the codec's rate, 44.1 kHz) → codes, for voice references. Same checks as
    /// [`Engine::encode_pcm`].
    pub fn encode_audio(&self, pcm: &[f32]) -> Result<Codes> {
        self.encode_pcm(pcm, self.inner.info.codec.sample_rate_hz)
    }

    /// Mono PCM at any rate → codes `[num_codebooks, ceil(S' / frame_samples)]` through the
    /// bundle's `codec_encode` graph (fish-speech `DAC.encode`), where S' is the length after
    /// resampling to the codec's rate ([`crate::audio::resample`]; none when the rates match).
    ///
    /// Refused with [`Error::InvalidArgument`]: no samples, a NaN or infinite sample, a rate
    /// outside 8 000..=384 000 Hz, or audio longer than the codec encodes in one call
    /// (`codec.max_encode_frames`: ≈ 190 s for S1-mini, ≈ 5.9 s for the tiny test codec) —
    /// longer audio is never truncated silently; trim it (10–30 s is what cloning needs).
    pub fn encode_pcm(&self, samples: &[f32], sample_rate_hz: u32) -> Result<Codes> {
        crate::audio::check_pcm(samples, sample_rate_hz)?;
        let c = &self.inner.info.codec;
        let out_len = (samples.len() as u128 * u128::from(c.sample_rate_hz))
            .div_ceil(u128::from(sample_rate_hz));
        let frames = out_len.div_ceil(c.frame_samples as u128);
        if frames > c.max_encode_frames as u128 {
            let max_s =
                c.max_encode_frames as f64 * c.frame_samples as f64 / f64::from(c.sample_rate_hz);
            return Err(Error::arg(
                "audio",
                format!(
                    "{:.1} s of audio is longer than the codec encodes in one call ({max_s:.1} s =                      {} frames); trim the reference (10-30 s is enough for a voice)",
                    samples.len() as f64 / f64::from(sample_rate_hz),
                    c.max_encode_frames
                ),
            ));
        }
        let codec = self.inner.codec()?;
        let pcm = crate::audio::resample(samples, sample_rate_hz, c.sample_rate_hz)?;
        codec.encode(&pcm)
    }

    /// A voice from reference audio (mono PCM at `sample_rate_hz`; see [`Engine::encode_pcm`]
    /// for the limits) and its transcript. Mix stereo down first ([`crate::audio::downmix`]).
    ///
    /// ```no_run
    /// use s1_mini::{audio, Engine, EngineConfig, SynthParams};
    /// let engine = Engine::new(EngineConfig::new("tests/fixtures/tiny"))?;
    /// let wav = audio::read_wav("ref.wav".as_ref())?; // any rate, channels mixed down
    /// let voice = engine.create_voice(&wav.samples, wav.sample_rate_hz, "What the reference says.")?;
    /// voice.save("ref.s1v".as_ref())?;
    /// let audio = engine.synthesize_with_voices("Hello.", &[voice], &SynthParams::default())?;
    /// # Ok::<(), s1_mini::Error>(())
    /// ```
    pub fn create_voice(
        &self,
        audio: &[f32],
        sample_rate_hz: u32,
        transcript: &str,
    ) -> Result<Voice> {
        if transcript.trim().is_empty() {
            return Err(Error::arg("transcript", "is empty (say what the reference audio says)"));
        }
        let codes = self.encode_pcm(audio, sample_rate_hz)?;
        Voice::new(codes, transcript)
    }

    /// A voice from codes already encoded (e.g. fish-speech's `.npy` codes) and their transcript;
    /// the codes are checked against this engine's codec.
    pub fn voice_from_codes(&self, codes: Codes, transcript: &str) -> Result<Voice> {
        self.check_voice_codes(&codes)?;
        Voice::new(codes, transcript)
    }

    fn check_voice_codes(&self, codes: &Codes) -> Result<()> {
        Engine::check_codes_with(&self.inner.info, codes, "voice")
    }

    /// Codes the codec can decode: this model's codebook count and every code inside its
    /// codebook. `name` is the argument the error names.
    fn check_codes_with(info: &BundleInfo, codes: &Codes, name: &'static str) -> Result<()> {
        if codes.num_codebooks() != info.model.num_codebooks {
            return Err(Error::arg(
                name,
                format!(
                    "{} codebooks, this model has {} (made for another model?)",
                    codes.num_codebooks(),
                    info.model.num_codebooks
                ),
            ));
        }
        for k in 0..codes.num_codebooks() {
            let size = info.codec.codebook_sizes[k] as i64;
            for f in 0..codes.frames().0 {
                let c = codes.get(k, f);
                if !(0..size).contains(&c) {
                    return Err(Error::arg(
                        name,
                        format!("code {c} at codebook {k}, frame {f} is outside 0..{size}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// [`Engine::synthesize`] in the voice(s) of `voices`: their transcripts and codes go before
    /// the text as fish-speech's `generate_long` builds the prompt. With
    /// [`SynthParams::prefix_cache`] the voices' prompt prefix is prefilled once per engine.
    pub fn synthesize_with_voices(
        &self,
        text: &str,
        voices: &[Voice],
        params: &SynthParams,
    ) -> Result<Audio> {
        let mut gen = self.inner.generator_with(text, voices, params)?;
        let frames = generate::run_to_end(&mut gen, None)?;
        let codes = generate::frames_to_codes(&self.inner.info, &frames)?;
        self.decode_codes(&codes)
    }

    /// [`Engine::generate_codes_cancellable`] with voices.
    pub fn generate_codes_with_voices_cancellable(
        &self,
        text: &str,
        voices: &[Voice],
        params: &SynthParams,
        cancel: &CancelToken,
    ) -> Result<Codes> {
        self.generate_codes_with_progress(text, voices, params, Some(cancel), &mut |_| {})
    }

    /// Text → codes in the voice(s) of `voices` (none: the model's own), calling `on_frame` with
    /// the number of frames generated so far after each frame (for progress output) and
    /// stopping with [`Error::Cancelled`] when `cancel` fires.
    pub fn generate_codes_with_progress(
        &self,
        text: &str,
        voices: &[Voice],
        params: &SynthParams,
        cancel: Option<&CancelToken>,
        on_frame: &mut dyn FnMut(usize),
    ) -> Result<Codes> {
        let mut gen = self.inner.generator_with(text, voices, params)?;
        let frames = generate::run_to_end_with(&mut gen, cancel, on_frame)?;
        generate::frames_to_codes(&self.inner.info, &frames)
    }

    /// [`Engine::generate_frames`] with voices (parity tests).
    pub fn generate_frames_with_voices(
        &self,
        text: &str,
        voices: &[Voice],
        params: &SynthParams,
    ) -> Result<(Vec<Frame>, Vec<f32>)> {
        let mut gen = self.inner.generator_with(text, voices, params)?;
        let frames = generate::run_to_end(&mut gen, None)?;
        Ok((frames, gen.prefill_logits().to_vec()))
    }

    /// [`Engine::stream`] with voices.
    pub fn stream_with_voices(
        &self,
        text: &str,
        voices: &[Voice],
        params: &SynthParams,
    ) -> Result<Stream> {
        let codec = CodecStream::new(self.inner.codec()?.clone(), self.inner.info.clone(), true)?;
        let gen = self.inner.generator_with(text, voices, params)?;
        Ok(Stream {
            inner: self.inner.clone(),
            gen,
            params: params.clone(),
            frames: Vec::new(),
            emitted: 0,
            codec: CodecWorker::spawn(codec)?,
            in_flight: None,
            cancel: CancelToken::new(),
            done: false,
        })
    }

    /// A streaming decoder of codes (frames fed in order, chunk by chunk), as [`Stream`] uses:
    /// through the bundle's stateful `codec_decode_step` graph when it has one and `stateful`
    /// is set (each chunk costs its own frames), else through re-decoded left context
    /// (`stateful = false` forces that path, for comparisons). Both give the samples of
    /// [`Engine::decode_codes`]. Codes are not checked here: use codes the model made, or check
    /// them with [`Engine::decode_codes`]' rules first.
    pub fn codec_stream(&self, stateful: bool) -> Result<CodecStream> {
        CodecStream::new(self.inner.codec()?.clone(), self.inner.info.clone(), stateful)
    }

    /// Drops every cached voice prefix (they are rebuilt on next use).
    pub fn clear_prefix_cache(&self) {
        self.inner.prefix_cache.lock().clear();
    }

    /// Starts a streamed synthesis: audio comes in chunks while frames are generated. The
    /// stream holds the engine's internals and may outlive this handle.
    pub fn stream(&self, text: &str, params: &SynthParams) -> Result<Stream> {
        self.stream_with_voices(text, &[], params)
    }
}

impl Inner {
    fn codec(&self) -> Result<&Arc<dyn Codec>> {
        self.codec.as_ref().ok_or_else(|| {
            Error::bundle(
                "manifest.json",
                "graphs.codec_decode",
                "this bundle has no codec decoder",
            )
        })
    }

    /// Checks `text` (empty, too long: before anything is tokenized), then builds its prompt.
    fn prompt(
        &self,
        text: &str,
        references: &[Reference],
        parse_special_tokens: bool,
    ) -> Result<Prompt> {
        if text.trim().is_empty() {
            return Err(Error::EmptyText);
        }
        let max_chars = self.info.model.max_seq_len * MAX_TEXT_CHARS_PER_CONTEXT_TOKEN;
        // Count lazily: stop as soon as the limit is passed.
        if text.len() > max_chars {
            let chars = text.chars().count();
            if chars > max_chars {
                return Err(Error::TextTooLong { chars, max_chars });
            }
        }
        build_prompt(
            &self.bundle.tokenizer,
            &self.info.tokens,
            self.info.model.num_codebooks,
            references,
            text,
            parse_special_tokens,
        )
    }

    fn generator(&self, text: &str, params: &SynthParams) -> Result<FrameGenerator> {
        self.generator_with(text, &[], params)
    }

    fn references(voices: &[Voice]) -> Vec<Reference> {
        voices
            .iter()
            .map(|v| Reference { text: v.transcript().to_owned(), codes: v.codes().clone() })
            .collect()
    }

    fn generator_with(
        &self,
        text: &str,
        voices: &[Voice],
        params: &SynthParams,
    ) -> Result<FrameGenerator> {
        params.validate(u32::try_from(self.info.model.max_seq_len).unwrap_or(u32::MAX))?;
        let parse = params.parse_special_tokens;
        if voices.is_empty() {
            let prompt = self.prompt(text, &[], parse)?;
            return FrameGenerator::new(self.t2s.as_ref(), self.info.clone(), prompt, params);
        }
        for v in voices {
            Engine::check_codes_with(&self.info, v.codes(), "voice")?;
        }
        let refs = Inner::references(voices);
        let prompt = self.prompt(text, &refs, parse)?;
        let gen =
            FrameGenerator::new(self.t2s.as_ref(), self.info.clone(), prompt.clone(), params)?;
        if !params.prefix_cache {
            return Ok(gen);
        }
        Ok(match self.prefix(voices, &refs, &prompt, parse)? {
            Some(prefix) => gen.with_prefix(prefix),
            None => gen,
        })
    }

    /// The cached slow KV of the voices' prompt prefix, computed on first use. `None` when the
    /// backend cannot copy its KV cache (then the whole prompt is prefilled).
    fn prefix(
        &self,
        voices: &[Voice],
        refs: &[Reference],
        prompt: &Prompt,
        parse_special_tokens: bool,
    ) -> Result<Option<Arc<KvSnapshot>>> {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        // The transcripts tokenize differently with and without special-token parsing.
        sha2::Digest::update(&mut h, [u8::from(parse_special_tokens)]);
        for v in voices {
            sha2::Digest::update(&mut h, v.fingerprint());
        }
        let key: [u8; 32] = sha2::Digest::finalize(h).into();
        if self.prefix_unsupported.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        {
            let mut cache = self.prefix_cache.lock();
            if let Some(pos) = cache.iter().position(|(k, _)| *k == key) {
                let entry = cache.remove(pos);
                let snap = entry.1.clone();
                cache.push(entry); // most recently used last
                return Ok(Some(snap));
            }
        }
        let i = &self.info;
        let prefix = build_prefix(
            &self.bundle.tokenizer,
            &i.tokens,
            i.model.num_codebooks,
            refs,
            parse_special_tokens,
        )?;
        if !prompt.starts_with(&prefix) || prefix.len >= prompt.len {
            return Err(Error::Internal("voice prefix differs from the prompt's start".into()));
        }
        let mut req = self.t2s.start_with_capacity(prefix.len)?;
        req.slow(&prefix.data, prefix.len)?;
        let snap = match req.snapshot_kv() {
            Ok(s) => Arc::new(s),
            // No copy of this backend's cache (or not of this one, e.g. device-resident): the
            // whole prompt is prefilled instead, with the same result.
            Err(e) => {
                log::debug!("prefix cache off for {}: {e}", self.t2s.name());
                self.prefix_unsupported.store(true, std::sync::atomic::Ordering::Relaxed);
                return Ok(None);
            }
        };
        let mut cache = self.prefix_cache.lock();
        cache.retain(|(k, _)| *k != key);
        cache.push((key, snap.clone()));
        while cache.len() > PREFIX_CACHE_ENTRIES {
            cache.remove(0);
        }
        Ok(Some(snap))
    }

    fn generate_codes(
        &self,
        text: &str,
        params: &SynthParams,
        cancel: Option<&CancelToken>,
    ) -> Result<Codes> {
        let mut gen = self.generator(text, params)?;
        let frames = generate::run_to_end(&mut gen, cancel)?;
        generate::frames_to_codes(&self.info, &frames)
    }
}

/// One streamed utterance. Pull chunks with [`Stream::next_chunk`] from one thread; cancel from
/// any thread through [`Stream::cancel_token`].
pub struct Stream {
    inner: Arc<Inner>,
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
                    generate_frame(
                        &mut self.gen,
                        &mut self.frames,
                        &self.inner.info,
                        &self.cancel,
                    )?;
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
        let (gen, frames, info, cancel) =
            (&mut self.gen, &mut self.frames, &self.inner.info, &self.cancel);
        let samples = self.codec.wait_while(|| {
            if frames.len() >= next_target || gen.is_finished() {
                return Ok(false);
            }
            generate_frame(gen, frames, info, cancel)?;
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
            sample_rate_hz: self.inner.info.codec.sample_rate_hz,
            first_frame: chunk.start,
            frames: chunk.end - chunk.start,
            is_last,
        }))
    }

    /// Hands frames `emitted..end` to the codec worker.
    fn submit(&mut self, end: usize) -> Result<InFlight> {
        let info = &self.inner.info;
        // Only the new frames: the codec stream carries the rest (or keeps them as context).
        let codes = Codes::from_frames(info.model.num_codebooks, &self.frames[self.emitted..end])?;
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
        Codes::from_frames(self.inner.info.model.num_codebooks, &self.frames)
    }
}

/// Generates one frame (or finishes the utterance) and keeps its codes if it is audio.
fn generate_frame(
    gen: &mut FrameGenerator,
    frames: &mut Vec<Vec<i64>>,
    info: &BundleInfo,
    cancel: &CancelToken,
) -> Result<()> {
    for f in gen.decode_frames(1, Some(cancel))? {
        if generate::is_audio_frame(info, &f) {
            frames.push(f[1..].to_vec());
        }
    }
    Ok(())
}
