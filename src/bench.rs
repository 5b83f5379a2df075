//! `s1-mini bench`: the speed of each backend, measured the same way for all of them.
//!
//! For each backend: load time (twice: first and second load), then per prompt length of the
//! context sweep ([`BenchOptions::prompt_tokens`]) `warmup` excluded runs and `runs` measured
//! runs. A run is one one-shot synthesis (prompt → frames → codes → PCM, timed per stage)
//! followed by the same utterance streamed (time to first audio, to every chunk, and in all;
//! [`BenchOptions::stream`]). Figures are the median
//! of the runs with min and max. Random weights never emit `<|im_end|>` on purpose, so the frame
//! count is fixed ([`crate::internal::ignore_end`]) unless [`BenchOptions::free`] lets a real model
//! stop. The JSON report ([`BenchReport`], schema [`SCHEMA_VERSION`]) is documented in
//! `docs/bench.md`. Speed is measured here, never by a test (STYLE rule 25).

use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use crate::api::{Engine, Request};
use crate::bundle::{safetensors, BundleInfo, Precision};
use crate::config::{BackendKind, EngineConfig, SynthParams};
use crate::error::{Error, Result};
use crate::generate::{self, StageTimes};
use crate::voice::Voice;

/// Version of the JSON report. Bumped when a field changes meaning or disappears; new fields may
/// be added without a bump.
pub const SCHEMA_VERSION: u32 = 1;
/// Most concurrent requests `--streams` starts.
pub const MAX_STREAMS: usize = 64;

/// Most repetitions of the text [`BenchOptions::prompt_tokens`] builds a prompt from.
const MAX_TEXT_REPEATS: usize = 10_000;

/// Seconds of audio the default frame count stands for (and the latency figure is about).
pub const DEFAULT_AUDIO_S: f64 = 5.0;

/// Text spoken when no text file is given (its prompt length sets the prefill cost).
pub const DEFAULT_TEXT: &str = "The quick brown fox jumps over the lazy dog, and then it runs \
     back home to tell everyone what happened.";

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Engine settings (bundle, library, threads, hash check); `backend` is set per backend.
    pub config: EngineConfig,
    /// Backends to measure, in order. `auto` measures what `auto` picks.
    pub backends: Vec<BackendKind>,
    /// Text to speak.
    pub text: String,
    /// Whether `text` came from a file (for the report).
    pub text_from_file: bool,
    /// Frames per run; `None` = the frames of [`DEFAULT_AUDIO_S`] (108 for S1-mini). With
    /// `free`, the upper limit (`None` = min(1024, context)).
    pub frames: Option<u32>,
    /// Let the model stop at `<|im_end|>` (real weights); else exactly `frames` frames.
    pub free: bool,
    /// Measured runs, ≥ 1.
    pub runs: u32,
    /// Excluded warm-up runs before them.
    pub warmup: u32,
    /// Measure per-stage times ([`StageTimes`]).
    pub profile: bool,
    /// Sampling seed (the same for every run, so every run does the same work).
    pub seed: u64,
    /// Frames of the first streamed chunk (time to first audio).
    pub first_chunk_frames: u32,
    /// Reference voices the runs speak in (`--voice`); their codes and transcripts lengthen the
    /// prompt (fish-speech's reference prompt). Default none.
    pub voices: Vec<Voice>,
    /// With voices: reuse the voices' cached prompt prefix ([`SynthParams::prefix_cache`]); the
    /// warm-up run fills the cache, so measured runs are the cached case. Default `true`.
    pub prefix_cache: bool,
    /// Context sweep: prompt lengths in tokens to measure, each by repeating the text until its
    /// prompt is at least that long (one result per backend and length). Empty (the default):
    /// the text as it is.
    pub prompt_tokens: Vec<usize>,
    /// Stream the whole utterance after each one-shot run (wall time vs one-shot, time to each
    /// chunk); `false` streams only to the first chunk. Default `true`.
    pub stream: bool,
    /// Concurrency sweep (`--streams 1,2,4,8`): for each count, that many requests of the same
    /// workload (each its own seed) decode at once on the engine, one run per count after the
    /// regular runs. Empty (the default): no sweep.
    pub streams: Vec<usize>,
}

impl BenchOptions {
    /// Defaults for `bundle_dir`: onnx-cpu, default text, 5 s of audio, 3 runs after 1 warm-up.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            backends: vec![BackendKind::OnnxCpu],
            text: DEFAULT_TEXT.into(),
            text_from_file: false,
            frames: None,
            free: false,
            runs: 3,
            warmup: 1,
            profile: false,
            seed: 0,
            first_chunk_frames: SynthParams::default().first_chunk_frames,
            voices: Vec::new(),
            prefix_cache: true,
            prompt_tokens: Vec::new(),
            stream: true,
            streams: Vec::new(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.backends.is_empty() {
            return Err(Error::arg("backend", "give --backend NAME or --all-backends"));
        }
        if self.runs == 0 {
            return Err(Error::arg("runs", "must be at least 1"));
        }
        if self.frames == Some(0) {
            return Err(Error::arg("frames", "must be at least 1"));
        }
        if self.first_chunk_frames == 0 {
            return Err(Error::arg("first_chunk_frames", "must be at least 1"));
        }
        if self.streams.iter().any(|&n| n == 0 || n > MAX_STREAMS) {
            return Err(Error::arg("streams", format!("each count must be 1..={MAX_STREAMS}")));
        }
        Ok(())
    }
}

/// Median, minimum and maximum over the measured runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    /// Median (the mean of the middle two for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Stat {
    /// Statistics of `values` (all zero when empty).
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self { median: 0.0, min: 0.0, max: 0.0 };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Self { median, min: v[0], max: v[n - 1] }
    }

    fn scaled(self, k: f64) -> Self {
        let (a, b) = (self.min * k, self.max * k);
        Self { median: self.median * k, min: a.min(b), max: a.max(b) }
    }
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    /// `model name` from /proc/cpuinfo (`null` where there is none).
    pub cpu_model: Option<String>,
    /// Logical CPUs this process may use.
    pub logical_cpus: usize,
    /// `std::env::consts::OS` / `ARCH`.
    pub os: String,
    /// Seconds since 1970-01-01 UTC when the report was made.
    pub unix_time_s: u64,
}

/// What each run generated.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    /// Characters of text.
    pub text_chars: usize,
    /// Whether the text came from `--text-file` (else the built-in sentence).
    pub text_from_file: bool,
    /// Prompt length, tokens (prefill size).
    pub prompt_tokens: usize,
    /// `true`: exactly `frames` frames per run, `<|im_end|>` never sampled; `false` (`--free`):
    /// the model stops where it likes, at most `frames`.
    pub fixed_frames: bool,
    /// Frames per run (fixed) or the limit (free).
    pub frames: u32,
    /// Audio frames per second of the bundle's codec (21.53 for S1-mini).
    pub frame_rate_hz: f64,
    /// Measured runs per backend.
    pub runs: u32,
    /// Excluded warm-up runs per backend.
    pub warmup_runs: u32,
    /// Frames of the first streamed chunk.
    pub first_chunk_frames: u32,
    /// Sampling seed.
    pub seed: u64,
    /// Reference voices in the prompt and their frames in total (0 = none).
    pub voices: usize,
    /// Frames of reference audio in the prompt.
    pub voice_frames: usize,
    /// Whether the voices' prompt prefix came from the prefix cache.
    pub prefix_cache: bool,
}

/// Per-stage time of the one-shot runs (`--profile`), medians over the runs.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// The prefill frame (prompt through the slow transformer + frame 0's fast steps), ms.
    pub prefill_ms: Stat,
    /// Per decoded frame: the slow-transformer call, ms.
    pub slow_ms_per_frame: Stat,
    /// Per decoded frame: all fast-transformer calls (`num_codebooks` of them), ms.
    pub fast_ms_per_frame: Stat,
    /// Per decoded frame: logit masking, repetition windows, sampling, ms.
    pub sampling_ms_per_frame: Stat,
    /// Per decoded frame: everything else in the frame loop (bookkeeping, copies), ms.
    pub other_ms_per_frame: Stat,
    /// Codec decode per audio frame, ms.
    pub codec_ms_per_frame: Stat,
}

/// Peak memory of a backend.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// What was measured: `rss` (process peak resident set, VmHWM, reset before loading the
    /// backend where Linux allows) or `device` (GPU memory).
    pub kind: &'static str,
    /// Bytes; `null` where this build cannot measure it.
    pub peak_bytes: Option<u64>,
    /// Whether the process peak was reset before this backend loaded (`rss` only; if not, it
    /// includes whatever ran before in this process).
    pub reset: bool,
}

/// Figures of one backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendResult {
    /// Backend name (`onnx-cpu`, ...).
    pub backend: String,
    /// Prompt length of these runs, tokens (the context sweep's point).
    pub prompt_tokens: usize,
    /// `Engine::new` wall time (bundle check + sessions), seconds; one measurement.
    pub load_s: f64,
    /// A second `Engine::new` of the same bundle and backend right after the first was dropped,
    /// seconds: what a user's next start costs (verification stamps valid, files in the OS
    /// page cache). The runs use this engine.
    pub reload_s: f64,
    /// Frames generated per run (the `<|im_end|>` frame included when free).
    pub frames: Stat,
    /// Audio per run, seconds.
    pub audio_s: Stat,
    /// One-shot synthesis wall time (prompt → PCM), ms.
    pub synth_ms: Stat,
    /// Audio seconds per wall second of the one-shot synthesis.
    pub x_real_time: Stat,
    /// Wall time to synthesise [`DEFAULT_AUDIO_S`] of audio, ms: the one-shot time when a run is
    /// exactly that long, else `prefill + frames_5s × decode time per frame + codec time scaled
    /// to frames_5s` (see `latency_5s_estimated`).
    pub latency_5s_ms: Stat,
    /// Whether `latency_5s_ms` is extrapolated from runs of another length.
    pub latency_5s_estimated: bool,
    /// Streaming: from the call to the first audio chunk (`first_chunk_frames` frames), ms.
    pub first_chunk_ms: Stat,
    /// The whole utterance streamed (default chunk sizes), from the call to the last chunk, ms;
    /// `null` with `stream` off.
    pub stream_ms: Option<Stat>,
    /// `stream_ms / synth_ms`: what streaming costs over the one-shot synthesis.
    pub stream_over_synth: Option<Stat>,
    /// Longest wait between two chunks of the stream, ms (a stall would show here).
    pub stream_max_gap_ms: Option<Stat>,
    /// Arrival of every chunk of the last measured run's stream, ms from the call.
    pub stream_chunk_arrival_ms: Vec<f64>,
    /// Prefill frame (prompt → frame 0), ms.
    pub prefill_ms: Stat,
    /// Frames after the prefill frame per second of their wall time (the decode rate; the
    /// figure comparable with `bench/torch_reference.py`'s `frames_per_s`).
    pub frames_per_s: Stat,
    /// Codec decode of the whole utterance, ms.
    pub codec_ms: Stat,
    /// Weights read per decoded frame, bytes (`null` without `llm.safetensors`): slow layers +
    /// restricted head once, fast layers + fast head `num_codebooks` times, at the bundle's
    /// precision. Embedding rows and KV caches are not counted.
    pub weight_bytes_per_frame: Option<u64>,
    /// `weight_bytes_per_frame × frames_per_s`, GB/s (10^9 bytes).
    pub achieved_gb_per_s: Option<Stat>,
    /// Peak memory.
    pub memory: Memory,
    /// Per-stage times (`--profile` only).
    pub profile: Option<Profile>,
    /// The concurrency sweep (`--streams`), one entry per count; empty without it.
    pub concurrency: Vec<Concurrency>,
}

/// `n` requests decoding at once on one engine (`--streams`): one run of the workload each,
/// frame loop only (prompt → frames, no codec), started together.
#[derive(Debug, Clone, Serialize)]
pub struct Concurrency {
    /// Concurrent requests.
    pub streams: usize,
    /// Frames made by all requests per second of the whole run's wall time (from the common
    /// start to the last request's end, prefills included).
    pub aggregate_frames_per_s: f64,
    /// `aggregate_frames_per_s` over the one-request figure of the same sweep (the 1-stream
    /// entry, when the sweep has one).
    pub speedup_over_one: Option<f64>,
    /// Each request's own decode rate: frames after its prefill frame per second of their wall
    /// time; over the requests.
    pub per_stream_frames_per_s: Stat,
    /// Each request's prompt → prefill frame, ms (its time to the first frame).
    pub prefill_ms: Stat,
    /// Rows per decode step of a batching backend (`rows / steps` over this run); `null` for a
    /// backend that steps each request alone.
    pub mean_batch_rows: Option<f64>,
    /// Whether the first request (the workload's seed) made exactly the frames it made in the
    /// sweep's 1-stream run, alone (`null` without a 1-stream entry before this one).
    pub same_frames_as_alone: Option<bool>,
    /// The first request's frames (compared across counts; not in the JSON).
    #[serde(skip)]
    pub first_frames: Vec<crate::generate::Frame>,
}

/// A backend that could not run, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unavailable {
    /// Backend name.
    pub backend: String,
    /// The reason (the error message).
    pub reason: String,
}

/// The whole report (`--json FILE` writes it).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// s1-mini version.
    pub s1_mini_version: &'static str,
    /// Where it ran.
    pub host: HostInfo,
    /// Bundle directory.
    pub bundle: String,
    /// Bundle precision (`fp32`, `fp16`).
    pub precision: String,
    /// ONNX Runtime intra-op threads asked for (0 = one per core).
    pub intra_op_threads: usize,
    /// What each run generated.
    pub workload: Workload,
    /// One entry per backend that ran.
    pub results: Vec<BackendResult>,
    /// Backends that could not run here, with the reason.
    pub unavailable: Vec<Unavailable>,
}

impl Workload {
    fn of(opts: &BenchOptions, info: &BundleInfo, prompt_tokens: usize, frames: u32) -> Self {
        Workload {
            text_chars: opts.text.chars().count(),
            text_from_file: opts.text_from_file,
            prompt_tokens,
            fixed_frames: !opts.free,
            frames,
            frame_rate_hz: info.frame_rate_hz(),
            runs: opts.runs,
            warmup_runs: opts.warmup,
            first_chunk_frames: opts.first_chunk_frames,
            seed: opts.seed,
            voices: opts.voices.len(),
            voice_frames: opts.voices.iter().map(|v| v.codes().frames().0).sum(),
            prefix_cache: opts.prefix_cache && !opts.voices.is_empty(),
        }
    }
}

/// Frames of `seconds` of audio at the bundle's frame rate (108 for 5 s of S1-mini).
pub fn frames_for_seconds(info: &BundleInfo, seconds: f64) -> u32 {
    (seconds * info.frame_rate_hz()).round().max(1.0) as u32
}

/// Runs the benchmark. Progress goes to `progress` (the CLI passes stderr).
pub fn run(opts: &BenchOptions, progress: &mut dyn FnMut(&str)) -> Result<BenchReport> {
    opts.validate()?;
    let bundle = crate::bundle::Bundle::load(&opts.config.bundle_dir, false)?;
    let info = bundle.info;
    let frames_5s = frames_for_seconds(&info, DEFAULT_AUDIO_S);
    let mut results = Vec::new();
    let mut unavailable = Vec::new();
    let mut workload = None;
    for &kind in &opts.backends {
        let reset = reset_peak_rss();
        let t = Instant::now();
        let engine = match Engine::new(opts.config.clone().with_backend(kind)) {
            Ok(e) => e,
            Err(e @ Error::BackendUnavailable { .. }) => {
                progress(&format!("{kind}: unavailable: {e}"));
                unavailable
                    .push(Unavailable { backend: kind.name().into(), reason: e.to_string() });
                continue;
            }
            Err(e) => return Err(e),
        };
        let load_s = t.elapsed().as_secs_f64();
        drop(engine);
        let t = Instant::now();
        let engine = Engine::new(opts.config.clone().with_backend(kind))?;
        let reload_s = t.elapsed().as_secs_f64();
        for s in engine.skipped_backends() {
            if !unavailable.iter().any(|u: &Unavailable| u.backend == s.backend.name()) {
                unavailable.push(Unavailable {
                    backend: s.backend.name().into(),
                    reason: s.reason.clone(),
                });
            }
        }
        let texts = sweep_texts(&engine, &opts.voices, &opts.text, &opts.prompt_tokens)?;
        for (text, prompt_tokens) in &texts {
            let prompt_tokens = *prompt_tokens;
            let context = u32::try_from(info.model.max_seq_len.saturating_sub(prompt_tokens))
                .unwrap_or(u32::MAX);
            let frames = match (opts.frames, opts.free) {
                (Some(f), _) => f,
                (None, false) => frames_5s,
                (None, true) => context.clamp(1, 1024),
            };
            if frames > context {
                return Err(Error::arg(
                    "frames",
                    format!("{frames} frames do not fit the context after a {prompt_tokens}-token prompt (at most {context})"),
                ));
            }
            workload.get_or_insert_with(|| Workload::of(opts, &info, prompt_tokens, frames));
            let params = SynthParams::default()
                .with_seed(opts.seed)
                .with_max_frames(frames)
                .with_prefix_cache(opts.prefix_cache)
                .with_chunk_frames(opts.first_chunk_frames, SynthParams::default().chunk_frames);
            let mut request =
                Request::new(text).with_voices(opts.voices.iter().cloned()).with_params(params);
            request.ignore_end = !opts.free;
            let name = engine.backend().name();
            progress(&format!(
                "{name}: loaded in {load_s:.2} s (again: {reload_s:.2} s); prompt {prompt_tokens} tokens: {} warm-up + {} runs of {frames} frames",
                opts.warmup, opts.runs
            ));
            let mut runs = Vec::new();
            for i in 0..opts.warmup + opts.runs {
                let r = one_run(&engine, &request, opts.profile, opts.stream)?;
                let (tag, n) =
                    if i < opts.warmup { ("warm-up", i + 1) } else { ("run", i + 1 - opts.warmup) };
                progress(&format!(
                    "{name}: {tag} {n}: {} frames, {:.1} frames/s, first chunk {:.0} ms",
                    r.frames,
                    r.frames_per_s(),
                    r.first_chunk_ms
                ));
                if i >= opts.warmup {
                    runs.push(r);
                }
            }
            let weight_bytes = weight_bytes_per_frame(&info);
            let memory = peak_memory(engine.backend(), opts.config.device_id, reset);
            let loads = (load_s, reload_s);
            let mut r =
                summarise(name, loads, &runs, frames_5s, weight_bytes, memory, opts.profile);
            r.prompt_tokens = prompt_tokens;
            for &n in &opts.streams {
                let c = concurrent_run(&engine, &request, n)?;
                progress(&format!(
                    "{name}: {n} concurrent: {:.2} frames/s in all, {:.2} per stream",
                    c.aggregate_frames_per_s, c.per_stream_frames_per_s.median
                ));
                r.concurrency.push(c);
            }
            let one =
                r.concurrency.iter().find(|c| c.streams == 1).map(|c| c.aggregate_frames_per_s);
            let alone =
                r.concurrency.iter().find(|c| c.streams == 1).map(|c| c.first_frames.clone());
            for c in &mut r.concurrency {
                c.speedup_over_one = one.filter(|&o| o > 0.0).map(|o| c.aggregate_frames_per_s / o);
                c.same_frames_as_alone = alone.as_ref().map(|a| *a == c.first_frames);
            }
            results.push(r);
        }
    }
    // No backend ran: the workload as asked for.
    let workload =
        workload.unwrap_or_else(|| Workload::of(opts, &info, 0, opts.frames.unwrap_or(frames_5s)));
    Ok(BenchReport {
        schema_version: SCHEMA_VERSION,
        s1_mini_version: env!("CARGO_PKG_VERSION"),
        host: host_info(),
        bundle: opts.config.bundle_dir.display().to_string(),
        precision: info.precision.to_string(),
        intra_op_threads: opts.config.intra_op_threads,
        workload,
        results,
        unavailable,
    })
}

/// Raw timings of one run.
struct RunTimes {
    frames: usize,
    audio_frames: usize,
    audio_s: f64,
    synth_ms: f64,
    prefill_ms: f64,
    decode_ms: f64,
    codec_ms: f64,
    first_chunk_ms: f64,
    /// The whole stream, ms (`None`: streamed to the first chunk only).
    stream_ms: Option<f64>,
    /// Arrival of each chunk, ms from the stream call.
    arrivals: Vec<f64>,
    stages: Option<StageTimes>,
}

impl RunTimes {
    fn max_gap_ms(&self) -> f64 {
        self.arrivals.windows(2).map(|w| w[1] - w[0]).fold(self.first_chunk_ms, f64::max)
    }
}

impl RunTimes {
    fn frames_per_s(&self) -> f64 {
        let decoded = self.frames.saturating_sub(1) as f64;
        if self.decode_ms > 0.0 {
            decoded / (self.decode_ms / 1e3)
        } else {
            0.0
        }
    }
}

/// The texts of the context sweep with their prompt lengths: `text` repeated until its prompt
/// (with `voices`) is at least each of `targets` tokens long; `text` itself when `targets` is
/// empty.
fn sweep_texts(
    engine: &Engine,
    voices: &[Voice],
    text: &str,
    targets: &[usize],
) -> Result<Vec<(String, usize)>> {
    let len = |t: &str| {
        engine.prompt(&Request::new(t).with_voices(voices.iter().cloned())).map(|p| p.len)
    };
    if targets.is_empty() {
        return Ok(vec![(text.to_owned(), len(text)?)]);
    }
    let context = engine.info().model.max_seq_len;
    let mut out = Vec::new();
    for &target in targets {
        if target >= context {
            return Err(Error::arg(
                "prompt_tokens",
                format!("{target} tokens leave no room in the model's {context}-token context"),
            ));
        }
        let mut t = text.to_owned();
        let mut n = len(&t)?;
        let mut repeats = 1;
        while n < target && repeats < MAX_TEXT_REPEATS {
            t.push(' ');
            t.push_str(text);
            repeats += 1;
            n = len(&t)?;
        }
        out.push((t, n));
    }
    Ok(out)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// One one-shot synthesis, timed per stage, then the same utterance streamed (to its end with
/// `stream`, else to its first chunk).
fn one_run(engine: &Engine, request: &Request, profile: bool, stream: bool) -> Result<RunTimes> {
    let info = engine.info_arc();
    let codec = engine.codec()?;
    let t_all = Instant::now();
    let mut gen = engine.generator(request)?;
    if profile {
        gen.enable_profile();
    }
    let t = Instant::now();
    let mut frames = Vec::with_capacity(request.params.max_frames as usize);
    frames.extend(gen.decode_frame(&request.cancel)?);
    let prefill_ms = ms(t);
    let t = Instant::now();
    while let Some(f) = gen.decode_frame(&request.cancel)? {
        frames.push(f);
    }
    let decode_ms = ms(t);
    let codes = generate::frames_to_codes(&info, &frames)?;
    let audio_frames = codes.frames().0;
    let t = Instant::now();
    let pcm = generate::decode_all(codec.as_ref(), &info, &codes)?;
    let codec_ms = ms(t);
    let synth_ms = ms(t_all);
    let audio_s = pcm.len() as f64 / f64::from(info.codec.sample_rate_hz);
    // The one-shot request (and its KV cache) ends before the stream's starts, so the peak
    // memory is one request's, as in use.
    let stages = gen.profile().cloned();
    drop(gen);

    let t = Instant::now();
    let mut s = engine.stream(request)?;
    s.next_chunk()?;
    let first_chunk_ms = ms(t);
    let mut arrivals = vec![first_chunk_ms];
    if stream {
        while s.next_chunk()?.is_some() {
            arrivals.push(ms(t));
        }
    }
    drop(s);
    let stream_ms = stream.then(|| ms(t));

    Ok(RunTimes {
        frames: frames.len(),
        audio_frames,
        audio_s,
        synth_ms,
        prefill_ms,
        decode_ms,
        codec_ms,
        first_chunk_ms,
        stream_ms,
        arrivals,
        stages,
    })
}

/// `n` copies of `request` (seeds `seed..seed+n`) through the frame loop at once, each on its
/// own thread, released together.
fn concurrent_run(engine: &Engine, request: &Request, n: usize) -> Result<Concurrency> {
    let before = crate::internal::batch_stats(engine);
    let start = std::sync::Barrier::new(n);
    let t0 = std::sync::OnceLock::new();
    let runs: Vec<Result<StreamRun>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (start, t0) = (&start, &t0);
                let mut req = request.clone();
                req.params =
                    req.params.clone().with_seed(request.params.seed.wrapping_add(i as u64));
                scope.spawn(move || -> Result<StreamRun> {
                    let mut gen = engine.generator(&req)?;
                    start.wait();
                    t0.get_or_init(Instant::now);
                    let t = Instant::now();
                    let mut made = Vec::with_capacity(req.params.max_frames as usize);
                    made.extend(gen.decode_frame(&req.cancel)?);
                    let prefill_ms = ms(t);
                    let t = Instant::now();
                    while let Some(f) = gen.decode_frame(&req.cancel)? {
                        made.push(f);
                    }
                    Ok(StreamRun {
                        prefill_ms,
                        decode_ms: ms(t),
                        end: Instant::now(),
                        frames: made,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Err(Error::Internal("a bench stream panicked".into())))
            })
            .collect()
    });
    let runs = runs.into_iter().collect::<Result<Vec<_>>>()?;
    let t0 = t0.get().copied().unwrap_or_else(Instant::now);
    let wall = runs.iter().map(|r| r.end.duration_since(t0).as_secs_f64()).fold(0.0, f64::max);
    let frames: usize = runs.iter().map(|r| r.frames.len()).sum();
    let after = crate::internal::batch_stats(engine);
    let mean_batch_rows = before.zip(after).and_then(|(b, a)| {
        let steps = a.steps.saturating_sub(b.steps);
        (steps > 0).then(|| a.rows.saturating_sub(b.rows) as f64 / steps as f64)
    });
    let per_stream: Vec<f64> = runs
        .iter()
        .map(|r| {
            let decoded = r.frames.len().saturating_sub(1) as f64;
            if r.decode_ms > 0.0 {
                decoded / (r.decode_ms / 1e3)
            } else {
                0.0
            }
        })
        .collect();
    Ok(Concurrency {
        streams: n,
        aggregate_frames_per_s: if wall > 0.0 { frames as f64 / wall } else { 0.0 },
        speedup_over_one: None,
        per_stream_frames_per_s: Stat::of(&per_stream),
        prefill_ms: Stat::of(&runs.iter().map(|r| r.prefill_ms).collect::<Vec<_>>()),
        mean_batch_rows,
        same_frames_as_alone: None,
        first_frames: runs.into_iter().next().map(|r| r.frames).unwrap_or_default(),
    })
}

/// One request of a concurrency run.
struct StreamRun {
    /// Prompt → prefill frame, ms.
    prefill_ms: f64,
    /// The frames after the prefill frame, ms.
    decode_ms: f64,
    /// When its last frame came.
    end: Instant,
    /// Every frame it made.
    frames: Vec<crate::generate::Frame>,
}

fn summarise(
    name: &str,
    (load_s, reload_s): (f64, f64),
    runs: &[RunTimes],
    frames_5s: u32,
    weight_bytes: Option<u64>,
    memory: Memory,
    profile: bool,
) -> BackendResult {
    let stat = |f: &dyn Fn(&RunTimes) -> f64| Stat::of(&runs.iter().map(f).collect::<Vec<_>>());
    let n5 = f64::from(frames_5s);
    let exact = runs.iter().all(|r| r.audio_frames == frames_5s as usize);
    let latency = if exact {
        stat(&|r| r.synth_ms)
    } else {
        stat(&|r| {
            let per_frame = r.decode_ms / r.frames.saturating_sub(1).max(1) as f64;
            let codec = r.codec_ms / r.audio_frames.max(1) as f64;
            r.prefill_ms + (n5 - 1.0).max(0.0) * per_frame + n5 * codec
        })
    };
    let fps = stat(&|r| r.frames_per_s());
    let streamed = !runs.is_empty() && runs.iter().all(|r| r.stream_ms.is_some());
    let per_frame = |d: &dyn Fn(&StageTimes) -> std::time::Duration| {
        stat(&|r| {
            r.stages
                .as_ref()
                .map_or(0.0, |s| d(s).as_secs_f64() * 1e3 / s.decoded_frames.max(1) as f64)
        })
    };
    let prof = profile.then(|| Profile {
        prefill_ms: stat(&|r| r.stages.as_ref().map_or(0.0, |s| s.prefill.as_secs_f64() * 1e3)),
        slow_ms_per_frame: per_frame(&|s| s.slow),
        fast_ms_per_frame: per_frame(&|s| s.fast),
        sampling_ms_per_frame: per_frame(&|s| s.sampling),
        other_ms_per_frame: per_frame(&StageTimes::other),
        codec_ms_per_frame: stat(&|r| r.codec_ms / r.audio_frames.max(1) as f64),
    });
    BackendResult {
        backend: name.into(),
        load_s,
        reload_s,
        frames: stat(&|r| r.frames as f64),
        audio_s: stat(&|r| r.audio_s),
        synth_ms: stat(&|r| r.synth_ms),
        x_real_time: stat(&|r| if r.synth_ms > 0.0 { r.audio_s / (r.synth_ms / 1e3) } else { 0.0 }),
        latency_5s_ms: latency,
        latency_5s_estimated: !exact,
        first_chunk_ms: stat(&|r| r.first_chunk_ms),
        prompt_tokens: 0,
        stream_ms: streamed.then(|| stat(&|r| r.stream_ms.unwrap_or(0.0))),
        stream_over_synth: streamed.then(|| {
            stat(&|r| r.stream_ms.unwrap_or(0.0) / if r.synth_ms > 0.0 { r.synth_ms } else { 1.0 })
        }),
        stream_max_gap_ms: streamed.then(|| stat(&RunTimes::max_gap_ms)),
        stream_chunk_arrival_ms: runs.last().map(|r| r.arrivals.clone()).unwrap_or_default(),
        prefill_ms: stat(&|r| r.prefill_ms),
        frames_per_s: fps,
        codec_ms: stat(&|r| r.codec_ms),
        weight_bytes_per_frame: weight_bytes,
        achieved_gb_per_s: weight_bytes.map(|b| fps.scaled(b as f64 / 1e9)),
        memory,
        profile: prof,
        concurrency: Vec::new(),
    }
}

/// Weights read per decoded frame, from the header of the bundle's `weights.llm`
/// (`llm.safetensors`: shapes under checkpoint names): `layers.*` + `norm` + the restricted
/// head (semantic rows + `<|im_end|>`) once, `fast_layers.*` + `fast_norm` + `fast_output`'s
/// first `fast_logit_rows` rows once per codebook, at the bundle precision; for int8 / int4
/// bundles the quantised matrices' bytes (weights and scales) as the manifest records them.
/// `None` when the bundle lists no `llm` weights or the file is missing or unreadable.
pub fn weight_bytes_per_frame(info: &BundleInfo) -> Option<u64> {
    if let Some(q) = &info.quantization {
        // The quantiser counted the bytes of each graph's quantised matrices (weights + scales).
        return Some(q.slow_matrix_bytes + q.fast_matrix_bytes * info.model.num_codebooks as u64);
    }
    let header = safetensors::read_header(&info.dir.join(info.weights.get("llm")?)).ok()?;
    let elem: u64 = if info.precision == Precision::Fp32 { 4 } else { 2 };
    let (mut slow, mut fast) = (0u64, 0u64);
    for (name, t) in &header {
        let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
        let numel: u64 = shape.iter().product();
        let rows = shape.first().copied().unwrap_or(0);
        let cols = shape.get(1).copied().unwrap_or(1);
        if name.starts_with("layers.") || name == "norm.weight" {
            slow += numel;
        } else if name == "output.weight" {
            slow += (info.semantic_rows as u64 + 1).min(rows) * cols;
        } else if name.starts_with("fast_layers.") || name == "fast_norm.weight" {
            fast += numel;
        } else if name == "fast_output.weight" {
            fast += (info.fast_logit_rows as u64).min(rows) * cols;
        }
    }
    Some((slow + fast * info.model.num_codebooks as u64) * elem)
}

/// Resets the process's peak RSS (`VmHWM`) through `/proc/self/clear_refs`; `false` where that
/// is not possible (not Linux, or not allowed).
fn reset_peak_rss() -> bool {
    cfg!(target_os = "linux") && std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `VmHWM` of this process, bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Memory of `kind`: the peak RSS for the CPU backend; for the GPU backends the device memory in
/// use on card `device_id` after the runs (the driver keeps no per-process peak, and the figure
/// counts every process on the card), `null` where the driver cannot be asked.
fn peak_memory(kind: BackendKind, device_id: u32, reset: bool) -> Memory {
    match kind {
        BackendKind::OnnxCpu | BackendKind::Auto => {
            Memory { kind: "rss", peak_bytes: peak_rss_bytes(), reset }
        }
        BackendKind::Cuda | BackendKind::TensorRt | BackendKind::OnnxCuda => Memory {
            kind: "device",
            peak_bytes: crate::backend::cuda::device_memory_in_use(device_id),
            reset: false,
        },
    }
}

fn host_info() -> HostInfo {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    HostInfo {
        cpu_model,
        logical_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        os: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        unix_time_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

fn range(s: Stat, digits: usize) -> String {
    format!("{:.d$} [{:.d$}–{:.d$}]", s.median, s.min, s.max, d = digits)
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / f64::from(1 << 20))
}

/// The report as text (what the CLI prints).
pub fn render_text(r: &BenchReport) -> String {
    let mut o = String::new();
    let w = &r.workload;
    let _ = writeln!(
        o,
        "s1-mini bench (schema {}) | bundle {} ({}) | {} | {} logical CPUs | ORT intra-op threads {}",
        r.schema_version,
        r.bundle,
        r.precision,
        r.host.cpu_model.as_deref().unwrap_or("unknown CPU"),
        r.host.logical_cpus,
        if r.intra_op_threads == 0 { "default".into() } else { r.intra_op_threads.to_string() }
    );
    let audio = f64::from(w.frames) / w.frame_rate_hz;
    if w.fixed_frames {
        let _ = writeln!(
            o,
            "workload: {} frames per run, fixed (= {audio:.2} s of audio; <|im_end|> is not sampled, \
             random weights never stop; --free lets a real model stop), prompt {} tokens",
            w.frames, w.prompt_tokens
        );
    } else {
        let _ = writeln!(
            o,
            "workload: free (the model stops at <|im_end|>, at most {} frames), prompt {} tokens",
            w.frames, w.prompt_tokens
        );
    }
    if w.voices > 0 {
        let _ = writeln!(
            o,
            "voices: {} ({} reference frames in the prompt), prefix cache {}",
            w.voices,
            w.voice_frames,
            if w.prefix_cache { "on" } else { "off" }
        );
    }
    let _ =
        writeln!(o, "{} measured runs after {} warm-up; median [min–max]", w.runs, w.warmup_runs);
    for b in &r.results {
        let _ = writeln!(o, "\n{}, prompt {} tokens", b.backend, b.prompt_tokens);
        let _ = writeln!(o, "  x real time           {} x", range(b.x_real_time, 2));
        let _ = writeln!(
            o,
            "  latency, {DEFAULT_AUDIO_S:.0} s audio   {} ms{}",
            range(b.latency_5s_ms, 0),
            if b.latency_5s_estimated { " (extrapolated)" } else { "" }
        );
        let _ = writeln!(
            o,
            "  first audio chunk     {} ms ({} frames, streaming)",
            range(b.first_chunk_ms, 0),
            w.first_chunk_frames
        );
        if let (Some(st), Some(ratio), Some(gap)) =
            (b.stream_ms, b.stream_over_synth, b.stream_max_gap_ms)
        {
            let _ = writeln!(
                o,
                "  streamed whole        {} ms = {} x one-shot; longest wait between chunks {} ms",
                range(st, 0),
                range(ratio, 2),
                range(gap, 0)
            );
        }
        let _ = writeln!(o, "  load                  {:.2} s, again {:.2} s", b.load_s, b.reload_s);
        let mem = match (b.memory.kind, b.memory.peak_bytes) {
            (k, Some(p)) => format!("{} ({k})", mib(p)),
            (k, None) => format!("not measured ({k} memory has no query in this build)"),
        };
        let _ = writeln!(o, "  peak memory           {mem}");
        let _ = writeln!(o, "  frames/s (decode)     {}", range(b.frames_per_s, 2));
        match (b.weight_bytes_per_frame, b.achieved_gb_per_s) {
            (Some(wb), Some(gb)) => {
                let _ = writeln!(
                    o,
                    "  achieved bandwidth    {} GB/s ({:.3} GB of weights per frame)",
                    range(gb, 2),
                    wb as f64 / 1e9
                );
            }
            _ => {
                let _ = writeln!(o, "  achieved bandwidth    unknown (no llm.safetensors)");
            }
        }
        let _ = writeln!(o, "  prefill frame         {} ms", range(b.prefill_ms, 1));
        let _ = writeln!(
            o,
            "  codec decode          {} ms ({:.2} s of audio)",
            range(b.codec_ms, 1),
            b.audio_s.median
        );
        if !b.concurrency.is_empty() {
            let _ = writeln!(
                o,
                "  concurrent requests (one run each, frame loop only):\n    streams  frames/s in all  x one stream  per-stream frames/s  prefill frame ms  rows/step  same frames as alone"
            );
            for c in &b.concurrency {
                let _ = writeln!(
                    o,
                    "    {:>7}  {:>15.2}  {:>12}  {:>19}  {:>16}  {:>9}  {}",
                    c.streams,
                    c.aggregate_frames_per_s,
                    c.speedup_over_one.map_or("-".into(), |x| format!("{x:.2}")),
                    range(c.per_stream_frames_per_s, 2),
                    range(c.prefill_ms, 0),
                    c.mean_batch_rows.map_or("-".into(), |x| format!("{x:.2}")),
                    match c.same_frames_as_alone {
                        Some(true) => "yes",
                        Some(false) => "NO",
                        None => "-",
                    },
                );
            }
        }
        if let Some(p) = &b.profile {
            let _ = writeln!(o, "  profile, ms per decoded frame (median [min–max]):");
            let _ = writeln!(o, "    slow step           {}", range(p.slow_ms_per_frame, 3));
            let _ = writeln!(o, "    fast steps          {}", range(p.fast_ms_per_frame, 3));
            let _ = writeln!(o, "    sampling            {}", range(p.sampling_ms_per_frame, 3));
            let _ = writeln!(o, "    other/copies        {}", range(p.other_ms_per_frame, 3));
            let _ = writeln!(o, "    codec (per frame)   {}", range(p.codec_ms_per_frame, 3));
            let _ = writeln!(o, "    prefill frame       {} ms once", range(p.prefill_ms, 1));
        }
    }
    if !r.unavailable.is_empty() {
        let _ = writeln!(o, "\nunavailable");
        for u in &r.unavailable {
            let _ = writeln!(o, "  {:<10} {}", u.backend, u.reason);
        }
    }
    o
}

/// The report as pretty JSON.
pub fn to_json(r: &BenchReport) -> Result<String> {
    serde_json::to_string_pretty(r).map_err(|e| Error::Internal(format!("bench json: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_median_min_max() {
        let s = Stat::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stat::of(&[1.0, 2.0, 4.0, 3.0]).median, 2.5);
        assert_eq!(Stat::of(&[]).median, 0.0);
    }

    #[test]
    fn bench_options_zero_runs_is_invalid_argument() {
        let mut o = BenchOptions::new(EngineConfig::new("tests/fixtures/tiny"));
        o.runs = 0;
        assert!(matches!(o.validate(), Err(Error::InvalidArgument { name: "runs", .. })));
        o.runs = 1;
        o.frames = Some(0);
        assert!(matches!(o.validate(), Err(Error::InvalidArgument { name: "frames", .. })));
    }

    #[test]
    fn peak_rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap_or(0) > 0);
        }
    }
}
