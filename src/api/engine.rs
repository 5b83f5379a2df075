//! [`Engine`]: a loaded bundle plus its backend, shared by any number of concurrent requests;
//! each call takes a [`Request`].

use std::sync::Arc;

use crate::api::request::Request;
use crate::api::stream::Stream;
use crate::audio::Audio;
use crate::backend::{self, Codec, KvSnapshot, Skipped, Text2Semantic};
use crate::bundle::{Bundle, BundleInfo, Verify, VerifyCache};
use crate::codes::Codes;
use crate::config::{BackendKind, EngineConfig};
use crate::error::{Error, Result};
use crate::generate::{self, CodecStream, Frame, FrameGenerator};
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
    /// use s1_mini::{Engine, EngineConfig, Request, SynthParams};
    /// let engine = Engine::new(EngineConfig::new("tests/fixtures/tiny"))?;
    /// let request = Request::new("Hello.").with_params(SynthParams::default().with_seed(1));
    /// let audio = engine.synthesize(&request)?;
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

    /// The backend's batching counters (`internal::batch_stats`).
    pub(crate) fn t2s_batch_stats(&self) -> Option<crate::backend::BatchStats> {
        self.inner.t2s.batch_stats()
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

    /// Text → speech in one call (PCM f32 mono at [`Audio::sample_rate_hz`]). Cancelled through
    /// [`Request::cancel`] between frames and before the codec runs.
    pub fn synthesize(&self, request: &Request) -> Result<Audio> {
        let codes = self.generate_codes(request)?;
        if request.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        self.decode_codes(&codes)
    }

    /// Text → codec codes (`[num_codebooks, frames]`), without decoding audio.
    pub fn generate_codes(&self, request: &Request) -> Result<Codes> {
        let frames = self.inner.run(request)?.0;
        generate::frames_to_codes(&self.inner.info, &frames)
    }

    /// Starts a streamed synthesis: audio comes in chunks while frames are generated
    /// (`first_chunk_frames` of [`crate::SynthParams`] first, then `chunk_frames` each). The
    /// stream holds the engine's internals and may outlive this handle; it is cancelled through
    /// the request's token ([`Stream::cancel_token`] is a clone of it).
    pub fn stream(&self, request: &Request) -> Result<Stream> {
        let codec = CodecStream::new(self.inner.codec()?.clone(), self.inner.info.clone(), true)?;
        let gen = self.inner.generator(request)?;
        Stream::new(self.inner.info.clone(), gen, request, codec)
    }

    /// The prompt the engine feeds the model for `request` (`[1+K, T]` ids): its voices'
    /// transcripts and codes, then its text (of the parameters, only
    /// [`crate::SynthParams::parse_special_tokens`] changes it).
    pub fn prompt(&self, request: &Request) -> Result<Prompt> {
        self.inner.prompt(
            &request.text,
            &Inner::references(&request.voices),
            request.params.parse_special_tokens,
        )
    }

    /// Largest [`crate::SynthParams::max_frames`] the context leaves for `request` (context −
    /// prompt length).
    pub fn context_frames(&self, request: &Request) -> Result<u32> {
        let prompt = self.prompt(request)?;
        let left = self.inner.info.model.max_seq_len.saturating_sub(prompt.len);
        Ok(u32::try_from(left).unwrap_or(u32::MAX))
    }

    /// Codes → PCM (like fish-speech's codec CLI).
    pub fn decode_codes(&self, codes: &Codes) -> Result<Audio> {
        let codec = self.inner.codec()?;
        let info = &self.inner.info;
        Engine::check_codes_with(info, codes, "codes")?;
        let samples = generate::decode_all(codec.as_ref(), info, codes)?;
        Ok(Audio { samples, sample_rate_hz: info.codec.sample_rate_hz })
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
                    "{:.1} s of audio is longer than the codec encodes in one call \
                     ({max_s:.1} s = {} frames); trim the reference \
                     (10-30 s is enough for a voice)",
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
    /// use s1_mini::{audio, Engine, EngineConfig, Request};
    /// let engine = Engine::new(EngineConfig::new("tests/fixtures/tiny"))?;
    /// let wav = audio::read_wav("ref.wav".as_ref())?; // any rate, channels mixed down
    /// let transcript = "What the reference says.";
    /// let voice = engine.create_voice(&wav.samples, wav.sample_rate_hz, transcript)?;
    /// voice.save("ref.s1v".as_ref())?;
    /// let audio = engine.synthesize(&Request::new("Hello.").with_voices([voice]))?;
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
        Engine::check_codes_with(&self.inner.info, &codes, "voice")?;
        Voice::new(codes, transcript)
    }

    /// Drops every cached voice prefix (they are rebuilt on next use).
    pub fn clear_prefix_cache(&self) {
        self.inner.prefix_cache.lock().clear();
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

    /// Every sampled frame of `request` and the prefill logits (see [`crate::internal`]).
    pub(crate) fn frames(&self, request: &Request) -> Result<(Vec<Frame>, Vec<f32>)> {
        self.inner.run(request)
    }

    /// A frame generator for `request` (for `bench`).
    pub(crate) fn generator(&self, request: &Request) -> Result<FrameGenerator> {
        self.inner.generator(request)
    }

    /// The codec, or the bundle error saying it has none (for `bench`).
    pub(crate) fn codec(&self) -> Result<Arc<dyn Codec>> {
        self.inner.codec().cloned()
    }

    /// The bundle facts, shared (for `bench`).
    pub(crate) fn info_arc(&self) -> Arc<BundleInfo> {
        self.inner.info.clone()
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

    fn references(voices: &[Voice]) -> Vec<Reference> {
        voices
            .iter()
            .map(|v| Reference { text: v.transcript().to_owned(), codes: v.codes().clone() })
            .collect()
    }

    /// A frame generator for `request`: parameters checked, prompt built, the voices' cached
    /// prefix attached when [`crate::SynthParams::prefix_cache`] allows.
    fn generator(&self, request: &Request) -> Result<FrameGenerator> {
        let params = &request.params;
        params.validate(u32::try_from(self.info.model.max_seq_len).unwrap_or(u32::MAX))?;
        let parse = params.parse_special_tokens;
        let voices = &request.voices;
        for v in voices {
            Engine::check_codes_with(&self.info, v.codes(), "voice")?;
        }
        let refs = Inner::references(voices);
        let prompt = self.prompt(&request.text, &refs, parse)?;
        let gen =
            FrameGenerator::new(self.t2s.as_ref(), self.info.clone(), prompt.clone(), params)?
                .ignoring_end(request.ignore_end);
        if voices.is_empty() || !params.prefix_cache {
            return Ok(gen);
        }
        Ok(match self.prefix(voices, &refs, &prompt, parse)? {
            Some(prefix) => gen.with_prefix(prefix),
            None => gen,
        })
    }

    /// Runs `request` to its end: every sampled frame (including a final `<|im_end|>` frame)
    /// and the prefill logits. Cancellable; reports progress after each frame.
    fn run(&self, request: &Request) -> Result<(Vec<Frame>, Vec<f32>)> {
        let mut gen = self.generator(request)?;
        let progress = request.progress.as_deref();
        let frames = generate::run_to_end(&mut gen, &request.cancel, &mut |n| {
            if let Some(p) = progress {
                p(n);
            }
        })?;
        Ok((frames, gen.prefill_logits().to_vec()))
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
}
