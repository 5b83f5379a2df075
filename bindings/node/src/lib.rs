//! Node.js addon for s1-mini: a thin skin over the Rust API (STYLE.md §21).
//!
//! Blocking work (loading, synthesis, each streamed chunk) runs as napi `AsyncTask`s on the libuv
//! thread pool, never on the JS thread; `resolve` hands PCM to JS as a `Float32Array` that takes
//! over the Rust `Vec` without copying. Errors become JS `Error`s whose `code` is the C status
//! name (`"S1_STATUS_BUNDLE_INVALID"`). `index.js` adds the async iterator on top.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{AbortSignal, AsyncTask, Float32Array};
use napi::{Env, JsError, Task};
use napi_derive::napi;
use s1_mini::{CancelToken, EngineConfig, SynthParams};

/// A JS error whose `code` is the status name and whose message is the error and its causes.
/// Must run on the JS thread (it creates the error object there).
fn js_error(env: &Env, err: &s1_mini::Error) -> napi::Error {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    let e = napi::Error::new(err.status().name().to_owned(), message);
    napi::Error::from(JsError::from(e).into_unknown(*env))
}

/// Options of `Engine.load`; omitted fields take the Rust `EngineConfig` defaults.
#[napi(object)]
pub struct EngineOptions {
    /// Bundle directory (holds manifest.json).
    pub bundle_dir: String,
    /// "auto" (default), "onnx-cpu", "onnx-cuda", "tensorrt" or "cuda".
    pub backend: Option<String>,
    /// Path of libonnxruntime; default: ORT_DYLIB_PATH, then beside the addon.
    pub ort_library_path: Option<String>,
    /// Check each bundle file's sha256 at load (default true).
    pub verify_hashes: Option<bool>,
    /// ONNX Runtime threads per operator; 0 = its default.
    pub intra_op_threads: Option<u32>,
}

/// Options of one synthesis; omitted fields take the Rust `SynthParams` defaults.
#[napi(object)]
pub struct SynthOptions {
    /// Softmax temperature in [0, 2]; 0 = greedy. Default 0.8.
    pub temperature: Option<f64>,
    /// Nucleus mass kept, in (0, 1]. Default 0.8.
    pub top_p: Option<f64>,
    /// Repetition penalty in (0, 2); 1 = none. Default 1.1.
    pub repetition_penalty: Option<f64>,
    /// Maximum length in frames (21.53 per second of audio). Default 1024.
    pub max_frames: Option<u32>,
    /// Sampler seed (an integer below 2^53). Default 0.
    pub seed: Option<i64>,
    /// Reproduce fish-speech exactly (its quirks included). Default false.
    pub fish_speech_compat: Option<bool>,
    /// Frames in the first streamed chunk. Default 4.
    pub first_chunk_frames: Option<u32>,
    /// Frames in each later streamed chunk. Default 16.
    pub chunk_frames: Option<u32>,
    /// Reuse the voices' cached prompt prefix (same audio, faster first chunk). Default true.
    pub prefix_cache: Option<bool>,
    /// Special-token names typed in the text and transcripts ("<|im_end|>", ...) become control
    /// tokens, as fish-speech parses them. Default false (plain text); only for trusted text.
    pub parse_special_tokens: Option<bool>,
}

fn engine_config(o: &EngineOptions) -> Result<EngineConfig, s1_mini::Error> {
    let mut c = EngineConfig::new(PathBuf::from(&o.bundle_dir));
    if let Some(b) = &o.backend {
        c.backend = b.parse()?;
    }
    c.ort_library_path = o.ort_library_path.as_ref().map(PathBuf::from);
    if let Some(v) = o.verify_hashes {
        c.verify_hashes = v;
    }
    if let Some(t) = o.intra_op_threads {
        c.intra_op_threads = t as usize;
    }
    Ok(c)
}

fn synth_params(o: Option<&SynthOptions>) -> Result<SynthParams, s1_mini::Error> {
    let mut p = SynthParams::default();
    let Some(o) = o else { return Ok(p) };
    // JS numbers are f64; the engine's f32 fields take the nearest value (ranges are checked there).
    if let Some(v) = o.temperature {
        p.temperature = v as f32;
    }
    if let Some(v) = o.top_p {
        p.top_p = v as f32;
    }
    if let Some(v) = o.repetition_penalty {
        p.repetition_penalty = v as f32;
    }
    if let Some(v) = o.max_frames {
        p.max_frames = v;
    }
    if let Some(v) = o.seed {
        p.seed = u64::try_from(v).map_err(|_| s1_mini::Error::InvalidArgument {
            name: "seed",
            reason: format!("{v} is negative"),
        })?;
    }
    if let Some(v) = o.fish_speech_compat {
        p.fish_speech_compat = v;
    }
    if let Some(v) = o.first_chunk_frames {
        p.first_chunk_frames = v;
    }
    if let Some(v) = o.chunk_frames {
        p.chunk_frames = v;
    }
    if let Some(v) = o.prefix_cache {
        p.prefix_cache = v;
    }
    if let Some(v) = o.parse_special_tokens {
        p.parse_special_tokens = v;
    }
    Ok(p)
}

/// Loads an engine off the JS thread.
pub struct LoadTask {
    config: Result<EngineConfig, s1_mini::Error>,
}

impl Task for LoadTask {
    type Output = Result<s1_mini::Engine, s1_mini::Error>;
    type JsValue = Engine;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let config = std::mem::replace(&mut self.config, Ok(EngineConfig::default()));
        Ok(config.and_then(s1_mini::Engine::new))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        output.map(|inner| Engine { inner }).map_err(|e| js_error(&env, &e))
    }
}

/// Synthesises one utterance off the JS thread; cancelled through `cancel`.
pub struct SynthTask {
    engine: s1_mini::Engine,
    text: String,
    params: Result<SynthParams, s1_mini::Error>,
    voices: Vec<s1_mini::Voice>,
    cancel: CancelToken,
}

/// Encodes reference audio into a voice off the JS thread.
pub struct CreateVoiceTask {
    engine: s1_mini::Engine,
    audio: Vec<f32>,
    sample_rate_hz: u32,
    transcript: String,
}

impl Task for CreateVoiceTask {
    type Output = Result<s1_mini::Voice, s1_mini::Error>;
    type JsValue = Voice;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        Ok(self.engine.create_voice(&self.audio, self.sample_rate_hz, &self.transcript))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        output.map(|inner| Voice { inner }).map_err(|e| js_error(&env, &e))
    }
}

/// A reference voice (codes + transcript of a recording) for voice cloning: pass it in
/// `synthesize(text, { voices: [voice] })`. Immutable.
#[napi]
pub struct Voice {
    inner: s1_mini::Voice,
}

#[napi]
impl Voice {
    /// Loads a voice file (code "S1_STATUS_VOICE_INVALID" when truncated or corrupt).
    #[napi(factory, catch_unwind)]
    pub fn load(env: Env, path: String) -> napi::Result<Voice> {
        s1_mini::Voice::load(std::path::Path::new(&path))
            .map(|inner| Voice { inner })
            .map_err(|e| js_error(&env, &e))
    }

    /// Writes the voice file (docs/voice-format.md).
    #[napi(catch_unwind)]
    pub fn save(&self, env: Env, path: String) -> napi::Result<()> {
        self.inner.save(std::path::Path::new(&path)).map_err(|e| js_error(&env, &e))
    }

    /// Codec frames of the reference (21.53 per second).
    #[napi(getter, catch_unwind)]
    pub fn frames(&self) -> u32 {
        u32::try_from(self.inner.codes().frames().0).unwrap_or(u32::MAX)
    }

    /// What the reference says.
    #[napi(getter, catch_unwind)]
    pub fn transcript(&self) -> String {
        self.inner.transcript().to_owned()
    }
}

fn voice_list(voices: Option<Vec<&Voice>>) -> Vec<s1_mini::Voice> {
    voices.unwrap_or_default().into_iter().map(|v| v.inner.clone()).collect()
}

impl Task for SynthTask {
    type Output = Result<Vec<f32>, s1_mini::Error>;
    type JsValue = Float32Array;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        // `compute` runs once: the stored params (or their error) can be taken.
        let params = std::mem::replace(&mut self.params, Ok(SynthParams::default()));
        let run = || {
            let params = params?;
            let request = s1_mini::Request::new(std::mem::take(&mut self.text))
                .with_voices(std::mem::take(&mut self.voices))
                .with_params(params)
                .with_cancel(self.cancel.clone());
            Ok(self.engine.synthesize(&request)?.samples)
        };
        Ok(run())
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        output.map(Float32Array::new).map_err(|e| js_error(&env, &e))
    }
}

/// A loaded model. Share one engine; calls may overlap (each runs on the libuv pool).
#[napi]
pub struct Engine {
    inner: s1_mini::Engine,
}

#[napi]
impl Engine {
    /// Loads a bundle off the JS thread: `await Engine.load({ bundleDir })`.
    #[napi(catch_unwind, ts_return_type = "Promise<Engine>")]
    pub fn load(options: EngineOptions) -> AsyncTask<LoadTask> {
        AsyncTask::new(LoadTask { config: engine_config(&options) })
    }

    /// Synthesises `text` to PCM (f32 mono, `sampleRateHz`) off the JS thread. Aborting `signal`
    /// cancels it; the promise then rejects with code "S1_STATUS_CANCELLED".
    #[napi(catch_unwind, ts_return_type = "Promise<Float32Array>")]
    pub fn synthesize(
        &self,
        text: String,
        options: Option<SynthOptions>,
        signal: Option<AbortSignal>,
        voices: Option<Vec<&Voice>>,
    ) -> AsyncTask<SynthTask> {
        let cancel = CancelToken::new();
        if let Some(signal) = &signal {
            let token = cancel.clone();
            signal.on_abort(move || token.cancel());
        }
        let task = SynthTask {
            engine: self.inner.clone(),
            text,
            params: synth_params(options.as_ref()),
            voices: voice_list(voices),
            cancel,
        };
        AsyncTask::with_optional_signal(task, signal)
    }

    /// Starts a stream; pull chunks with `next()` (index.js wraps it as an async iterator).
    #[napi(catch_unwind)]
    pub fn stream_native(
        &self,
        env: Env,
        text: String,
        options: Option<SynthOptions>,
        voices: Option<Vec<&Voice>>,
    ) -> napi::Result<NativeStream> {
        let voices = voice_list(voices);
        let run = || {
            let params = synth_params(options.as_ref())?;
            self.inner.stream(&s1_mini::Request::new(text).with_voices(voices).with_params(params))
        };
        let stream = run().map_err(|e| js_error(&env, &e))?;
        Ok(NativeStream { cancel: stream.cancel_token(), inner: Arc::new(Mutex::new(stream)) })
    }

    /// Encodes reference audio (mono f32 at `sampleRate` Hz, any rate) and its transcript into a
    /// voice, off the JS thread. Rejects with "S1_STATUS_INVALID_ARGUMENT" for no samples,
    /// NaN/Inf samples, an empty transcript or audio longer than the codec encodes (≈ 190 s).
    #[napi(catch_unwind, ts_return_type = "Promise<Voice>")]
    pub fn create_voice(
        &self,
        audio: Float32Array,
        sample_rate: u32,
        transcript: String,
    ) -> AsyncTask<CreateVoiceTask> {
        AsyncTask::new(CreateVoiceTask {
            engine: self.inner.clone(),
            audio: audio.to_vec(),
            sample_rate_hz: sample_rate,
            transcript,
        })
    }

    /// Sample rate of the audio in Hz.
    #[napi(getter, catch_unwind)]
    pub fn sample_rate_hz(&self) -> u32 {
        self.inner.info().codec.sample_rate_hz
    }

    /// The backend in use ("onnx-cpu", ...).
    #[napi(getter, catch_unwind)]
    pub fn backend(&self) -> String {
        self.inner.backend().name().to_owned()
    }
}

/// Computes one chunk off the JS thread.
pub struct NextTask {
    stream: Arc<Mutex<s1_mini::Stream>>,
}

impl Task for NextTask {
    type Output = Result<Option<Vec<f32>>, s1_mini::Error>;
    type JsValue = Option<Float32Array>;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        // Chunks are pulled one at a time (index.js awaits each), so the lock is uncontended;
        // a poisoned lock means an earlier chunk panicked, and the stream is not resumable.
        let Ok(mut stream) = self.stream.lock() else {
            return Ok(Err(s1_mini::Error::Internal("stream poisoned by an earlier panic".into())));
        };
        Ok(stream.next_chunk().map(|c| c.map(|c| c.samples)))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        output.map(|c| c.map(Float32Array::new)).map_err(|e| js_error(&env, &e))
    }
}

/// One streamed utterance (the native half; use `engine.stream()` from index.js).
#[napi]
pub struct NativeStream {
    inner: Arc<Mutex<s1_mini::Stream>>,
    cancel: CancelToken,
}

#[napi]
impl NativeStream {
    /// The next chunk of PCM, or null after the last one. Rejects with code
    /// "S1_STATUS_CANCELLED" once `cancel()` was called.
    #[napi(catch_unwind, ts_return_type = "Promise<Float32Array | null>")]
    pub fn next(&self) -> AsyncTask<NextTask> {
        AsyncTask::new(NextTask { stream: self.inner.clone() })
    }

    /// Stops the stream: a chunk in progress ends after its current frame. Safe at any time.
    #[napi(catch_unwind)]
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// Library version, "MAJOR.MINOR.PATCH".
#[napi(catch_unwind)]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
