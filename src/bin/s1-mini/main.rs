//! `s1-mini` command line: synth, stream, decode, info, bench, voice. Results go to stdout or
//! the output file, progress and messages to stderr (`-q` errors only, `-v` every detail).
//!
//! Every argument that can be checked without the model is checked before the bundle loads, and
//! output files are created before any work starts, so a typo never costs a synthesis.

#![deny(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod ui;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::{ArgAction, Args, Parser, Subcommand};
use s1_mini::audio::{wav_bytes, WavFileWriter};
use s1_mini::bundle::Precision;
use s1_mini::{
    npy, Audio, BackendKind, Codes, Engine, EngineConfig, Error, Frames, Request, Result,
    SynthParams, Voice, WavFormat,
};

use ui::{Ui, Verbosity};

/// Text-to-speech with Fish Audio's OpenAudio S1-mini.
#[derive(Parser)]
#[command(name = "s1-mini", about, disable_version_flag = true, arg_required_else_help = true)]
struct Cli {
    /// Print the version of s1-mini, the ONNX Runtime it finds and the CUDA driver, then exit.
    #[arg(short = 'V', long, action = ArgAction::SetTrue)]
    version: bool,
    /// Say more: why backends were skipped, every streamed chunk.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    verbose: bool,
    /// Print errors only (no progress, no summaries).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Path of libonnxruntime for --version (default: $ORT_DYLIB_PATH, then beside this
    /// executable).
    #[arg(long, requires = "version")]
    version_ort_library: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Synthesise text to a WAV file.
    Synth(SynthArgs),
    /// Synthesise while streaming: chunks are written as they are decoded.
    Stream(StreamArgs),
    /// Decode codes (`.npy`, [10, T] int64, as fish-speech's codec CLI) to a WAV file.
    Decode(DecodeArgs),
    /// Show which backends are available here (and why not, with the fix); with --bundle, the
    /// bundle too.
    Info(InfoArgs),
    /// Measure speed per backend (docs/bench.md): x real time, latency, first chunk, memory.
    Bench(BenchArgs),
    /// Reference voices for cloning (docs/voice-format.md).
    #[command(subcommand)]
    Voice(VoiceCommand),
}

#[derive(Subcommand)]
enum VoiceCommand {
    /// Encode a reference recording (WAV, any rate, mono or stereo) and its transcript into a
    /// voice file.
    Create(Box<VoiceCreateArgs>),
    /// Show a voice file's transcript and length.
    Show(VoiceShowArgs),
}

#[derive(Args)]
struct VoiceCreateArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Reference recording (WAV: 16/24/32-bit PCM or 32-bit float; 10-30 s of clean speech).
    #[arg(long)]
    audio: PathBuf,
    /// What the recording says.
    #[arg(long)]
    text: String,
    /// Voice file to write (e.g. voice.s1v).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct VoiceShowArgs {
    /// Voice file.
    voice: PathBuf,
}

#[derive(Args)]
struct EngineArgs {
    /// Model bundle directory (holds manifest.json).
    #[arg(long)]
    bundle: PathBuf,
    /// Backend: auto, cuda, tensorrt, onnx-cuda, onnx-cpu.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Path of libonnxruntime (default: $ORT_DYLIB_PATH, then beside this executable).
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// Skip the sha256 check of the bundle files (faster start).
    #[arg(long)]
    no_verify: bool,
    /// Do not keep or use ONNX Runtime's optimised CPU graphs between loads (docs/rust-core.md).
    #[arg(long)]
    no_model_cache: bool,
    /// ONNX Runtime intra-op threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// ONNX Runtime session and GPU backend options (docs/gpu-onnx.md).
#[derive(Args)]
struct GpuArgs {
    /// CUDA device ordinal (cuda, tensorrt, onnx-cuda).
    #[arg(long, default_value_t = 0)]
    device_id: u32,
    /// ONNX Runtime inter-op threads (0 = its default).
    #[arg(long, default_value_t = 0)]
    inter_threads: usize,
    /// ONNX Runtime graph optimisation: disable, basic, extended, layout, all.
    #[arg(long, default_value = "layout")]
    graph_optimization: String,
    /// cuDNN convolution algorithm search (onnx-cuda): exhaustive, heuristic, default.
    #[arg(long, default_value = "exhaustive")]
    cudnn_conv_algo_search: String,
    /// Native cuda backend weights: bf16, int8 (layer matrices quantised at load).
    #[arg(long, default_value = "bf16")]
    cuda_weights: String,
    /// TensorRT precision: fp16, int8 (int8 needs --cache-dir and --int8-calibration-file).
    #[arg(long, default_value = "fp16")]
    trt_precision: String,
    /// TensorRT workspace limit in bytes (0 = TensorRT's default).
    #[arg(long, default_value_t = 0)]
    trt_workspace_bytes: u64,
    /// TensorRT profile: cache length (tokens) the kernels are tuned for.
    #[arg(long, default_value_t = 256)]
    trt_opt_tokens: u32,
    /// TensorRT profile: longest prompt in tokens (0 = the model's context).
    #[arg(long, default_value_t = 0)]
    trt_max_tokens: u32,
    /// Cache directory (created if missing): TensorRT engine + timing caches, the bundle files' verification stamps, ONNX Runtime's optimised graphs.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// INT8: file of sample sentences naming the calibration table in --cache-dir.
    #[arg(long)]
    int8_calibration_file: Option<PathBuf>,
}

impl GpuArgs {
    fn apply(&self, c: EngineConfig) -> Result<EngineConfig> {
        let mut c = c
            .with_device_id(self.device_id)
            .with_inter_op_threads(self.inter_threads)
            .with_graph_optimization(self.graph_optimization.parse()?)
            .with_cudnn_conv_algo_search(self.cudnn_conv_algo_search.parse()?)
            .with_cuda_weights(self.cuda_weights.parse()?)
            .with_tensorrt_precision(self.trt_precision.parse()?)
            .with_tensorrt_workspace_bytes(self.trt_workspace_bytes)
            .with_tensorrt_profile(s1_mini::config::PromptProfile {
                opt_tokens: self.trt_opt_tokens,
                max_tokens: self.trt_max_tokens,
            });
        if let Some(d) = &self.cache_dir {
            c = c.with_cache_dir(d);
        }
        if let Some(f) = &self.int8_calibration_file {
            c = c.with_tensorrt_int8_calibration_file(f);
        }
        Ok(c)
    }
}

#[derive(Args)]
struct GenArgs {
    /// Text to speak.
    #[arg(long, conflicts_with = "text_file")]
    text: Option<String>,
    /// File with the text to speak (UTF-8).
    #[arg(long)]
    text_file: Option<PathBuf>,
    /// RNG seed (equal seeds give equal audio).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Temperature in [0, 2]; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Top-p in (0, 1].
    #[arg(long, default_value_t = 0.8)]
    top_p: f32,
    /// Repetition penalty in (0, 2).
    #[arg(long, default_value_t = 1.1)]
    repetition_penalty: f32,
    /// Maximum frames (21.53 per second); default min(1024, what the context leaves).
    #[arg(long)]
    max_frames: Option<u32>,
    /// Reproduce fish-speech exactly (its repetition-penalty bug and bf16 knobs).
    #[arg(long)]
    fish_speech_compat: bool,
    /// Speak in this voice (a file from `s1-mini voice create`); repeat for several references.
    #[arg(long = "voice")]
    voices: Vec<PathBuf>,
    /// Prefill the voices' whole prompt every time instead of reusing its cached prefix.
    #[arg(long)]
    no_prefix_cache: bool,
    /// Output WAV file.
    #[arg(long)]
    out: PathBuf,
    /// Write 32-bit float WAV instead of 16-bit PCM.
    #[arg(long)]
    float: bool,
}

#[derive(Args)]
struct SynthArgs {
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    gen: GenArgs,
    /// Also write the generated codes as .npy ([10, T] int64).
    #[arg(long)]
    codes_out: Option<PathBuf>,
}

#[derive(Args)]
struct StreamArgs {
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    gen: GenArgs,
    /// Frames in the first chunk (latency).
    #[arg(long, default_value_t = 4)]
    first_chunk_frames: u32,
    /// Frames in each later chunk.
    #[arg(long, default_value_t = 16)]
    chunk_frames: u32,
}

#[derive(Args)]
struct DecodeArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Codes file (.npy int64, [10, T] or [1, 10, T]).
    #[arg(long)]
    codes: PathBuf,
    /// Output WAV file.
    #[arg(long)]
    out: PathBuf,
    /// Write 32-bit float WAV instead of 16-bit PCM.
    #[arg(long)]
    float: bool,
}

#[derive(Args)]
struct InfoArgs {
    /// Model bundle directory (optional: without it, only the backends are listed).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Path of libonnxruntime.
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// Skip the sha256 check.
    #[arg(long)]
    no_verify: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["all_backends", "backend"])))]
struct BenchArgs {
    /// Measure every backend (unavailable ones are listed with the reason).
    #[arg(long)]
    all_backends: bool,
    /// Measure one backend: auto, cuda, tensorrt, onnx-cuda, onnx-cpu.
    #[arg(long)]
    backend: Option<String>,
    /// Model bundle directory.
    #[arg(long, default_value = "tests/fixtures/tiny")]
    bundle: PathBuf,
    /// Frames per run (default: 5 s of audio = 108 frames), fixed: <|im_end|> is not sampled.
    /// Combines with --text-file (a long prompt, a few frames: the long-context decode rate).
    #[arg(long)]
    frames: Option<u32>,
    /// Speak this file's text (UTF-8) instead of the built-in sentence.
    #[arg(long)]
    text_file: Option<PathBuf>,
    /// Measured runs per backend (median, min–max).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Excluded warm-up runs per backend.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Write the report as JSON (schema in docs/bench.md).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Let a real model stop at <|im_end|> (max 1024 frames) instead of a fixed frame count.
    #[arg(long, conflicts_with = "frames")]
    free: bool,
    /// Per-stage time per frame (prefill, slow step, fast steps, sampling, codec, other).
    #[arg(long)]
    profile: bool,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Speak in this voice (a file from `s1-mini voice create`); repeat for several references.
    /// First-chunk latency then includes the reference prompt.
    #[arg(long = "voice")]
    voices: Vec<PathBuf>,
    /// With --voice: prefill the voices' whole prompt every run (no prefix cache).
    #[arg(long)]
    no_prefix_cache: bool,
    /// Path of libonnxruntime.
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// Check the bundle's sha256 at load (counted in the load time).
    #[arg(long)]
    verify: bool,
    /// Do not keep or use ONNX Runtime's optimised CPU graphs between loads (both loads then
    /// optimise and pack every graph).
    #[arg(long)]
    no_model_cache: bool,
    /// ONNX Runtime intra-op threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Context sweep: prompt lengths in tokens, comma-separated (e.g. 72,1000,4000); the text is
    /// repeated until its prompt is at least that long. Default: the text as it is.
    #[arg(long, value_delimiter = ',')]
    prompt_tokens: Vec<usize>,
    /// Stream only to the first chunk (default: the whole utterance, timed against one-shot).
    #[arg(long)]
    no_stream: bool,
    /// Concurrency sweep: request counts, comma-separated (e.g. 1,2,4,8); each count decodes
    /// that many requests at once on the engine (one run each, frame loop only).
    #[arg(long, value_delimiter = ',')]
    streams: Vec<usize>,
}

fn config(a: &EngineArgs) -> Result<EngineConfig> {
    let mut c = EngineConfig::new(&a.bundle)
        .with_backend(a.backend.parse::<BackendKind>()?)
        .with_verify_hashes(!a.no_verify)
        .with_optimized_model_cache(!a.no_model_cache)
        .with_intra_op_threads(a.threads);
    if let Some(p) = &a.ort_library {
        c = c.with_ort_library_path(p);
    }
    let c = a.gpu.apply(c)?;
    c.validate()?;
    Ok(c)
}

/// Loads the engine; prints one line naming the backend (and, with `-v`, why others were
/// skipped).
fn load(ui: &Ui, config: EngineConfig) -> Result<Engine> {
    let t = Instant::now();
    let bundle = config.bundle_dir.clone();
    let engine = {
        let _spin = ui.spinner(&format!("loading bundle {}", bundle.display()));
        Engine::new(config)?
    };
    let skipped = engine.skipped_backends();
    let note = if skipped.is_empty() {
        String::new()
    } else if ui.verbose() {
        "; skipped:".into()
    } else {
        let names: Vec<&str> = skipped.iter().map(|s| s.backend.name()).collect();
        format!(" ({} unavailable: -v or `s1-mini info` says why)", names.join(", "))
    };
    ui.say(format!(
        "loaded {} in {:.2} s, backend {}{note}",
        bundle.display(),
        t.elapsed().as_secs_f64(),
        engine.backend()
    ));
    for s in skipped {
        ui.detail(format!("  {}", s.reason));
    }
    Ok(engine)
}

fn read_text_file(f: &Path) -> Result<String> {
    let bytes = std::fs::read(f).map_err(|e| Error::Io { path: f.into(), source: e })?;
    String::from_utf8(bytes).map_err(|e| Error::InvalidUtf8 {
        arg: "--text-file",
        valid_up_to: e.utf8_error().valid_up_to(),
    })
}

fn read_text(g: &GenArgs) -> Result<String> {
    match (&g.text, &g.text_file) {
        (Some(t), _) => Ok(t.clone()),
        (None, Some(f)) => read_text_file(f),
        (None, None) => Err(Error::InvalidArgument {
            name: "text",
            reason: "give --text or --text-file".into(),
        }),
    }
}

fn load_voices(ui: &Ui, paths: &[PathBuf]) -> Result<Vec<Voice>> {
    paths
        .iter()
        .map(|p| {
            let v = Voice::load(p)?;
            ui.detail(format!(
                "voice {}: {} frames, transcript {:?}",
                p.display(),
                v.codes().frames().0,
                v.transcript()
            ));
            Ok(v)
        })
        .collect()
}

/// The sampling parameters of `g`, checked without the model (`max_frames` against the
/// context comes with [`fill_max_frames`]).
fn params(g: &GenArgs) -> Result<SynthParams> {
    let p = SynthParams::default()
        .with_seed(g.seed)
        .with_temperature(g.temperature)
        .with_top_p(g.top_p)
        .with_repetition_penalty(g.repetition_penalty)
        .with_max_frames(g.max_frames.unwrap_or(1))
        .with_fish_speech_compat(g.fish_speech_compat)
        .with_prefix_cache(!g.no_prefix_cache);
    p.validate(u32::MAX)?;
    Ok(p)
}

/// `request` with `--max-frames`, or min(1024, what the context leaves after the prompt).
fn fill_max_frames(engine: &Engine, g: &GenArgs, mut request: Request) -> Result<Request> {
    request.params.max_frames = match g.max_frames {
        Some(m) => m,
        None => engine.context_frames(&request)?.clamp(1, 1024),
    };
    Ok(request)
}

fn wav_format(float: bool) -> WavFormat {
    if float {
        WavFormat::Float32
    } else {
        WavFormat::Pcm16
    }
}

fn report(ui: &Ui, audio_s: f64, wall_s: f64, frames: usize) {
    ui.say(format!(
        "{frames} frames, {audio_s:.2} s of audio in {wall_s:.2} s ({:.2}x real time)",
        if wall_s > 0.0 { audio_s / wall_s } else { 0.0 }
    ));
}

/// An output file created before the work that fills it (so an unwritable path fails at
/// once), removed again if the command fails before writing it.
struct OutFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl OutFile {
    fn create(path: &Path) -> Result<Self> {
        let file =
            std::fs::File::create(path).map_err(|e| Error::Io { path: path.into(), source: e })?;
        Ok(Self { path: path.into(), file: Some(file) })
    }

    fn write(mut self, bytes: &[u8]) -> Result<()> {
        let mut f =
            self.file.take().ok_or_else(|| Error::Internal("output written twice".into()))?;
        f.write_all(bytes).map_err(|e| Error::Io { path: self.path.clone(), source: e })
    }

    /// Keeps the file for a writer that opens it by path itself.
    fn keep(mut self) {
        self.file = None;
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn synth(ui: &Ui, a: &SynthArgs) -> Result<()> {
    let cfg = config(&a.engine)?;
    let p = params(&a.gen)?;
    let text = read_text(&a.gen)?;
    let voices = load_voices(ui, &a.gen.voices)?;
    let out = OutFile::create(&a.gen.out)?;
    let codes_out = a.codes_out.as_deref().map(OutFile::create).transpose()?;
    let engine = load(ui, cfg)?;
    let req = Request::new(text).with_voices(voices).with_params(p);
    let req = fill_max_frames(&engine, &a.gen, req)?;
    let t = Instant::now();
    let frame_rate = engine.info().frame_rate_hz();
    let progress = Arc::new(Mutex::new(ui.frames("generating", req.params.max_frames, frame_rate)));
    let bar = progress.clone();
    let req = req.with_progress(move |n| {
        if let Ok(mut bar) = bar.lock() {
            bar.set(n);
        }
    });
    let codes = engine.generate_codes(&req)?;
    if let Ok(bar) = progress.lock() {
        bar.finish();
    }
    ui.detail(format!(
        "{} frames generated in {:.2} s",
        codes.frames().0,
        t.elapsed().as_secs_f64()
    ));
    let audio = {
        let _spin = ui.spinner(&format!("decoding {} frames", codes.frames().0));
        engine.decode_codes(&codes)?
    };
    report(ui, audio.duration_s(), t.elapsed().as_secs_f64(), codes.frames().0);
    let rate = audio.sample_rate_hz;
    out.write(&wav_bytes(&audio.samples, rate, wav_format(a.gen.float)))?;
    ui.say(format!("wrote {}", a.gen.out.display()));
    if let (Some(f), Some(path)) = (codes_out, &a.codes_out) {
        f.keep();
        npy::write_i64(path, &[codes.num_codebooks(), codes.frames().0], codes.as_slice())?;
        ui.say(format!("wrote {}", path.display()));
    }
    Ok(())
}

/// The stream's output file: created empty up front (a bad path fails before the model loads),
/// then written as a WAV chunk by chunk once the codec's rate is known; playable after every
/// chunk, also when a later one fails.
struct WavStream {
    path: PathBuf,
    format: WavFormat,
    writer: Option<WavFileWriter>,
    rate: u32,
}

impl WavStream {
    fn create(path: &Path, format: WavFormat) -> Result<Self> {
        std::fs::File::create(path).map_err(|e| Error::Io { path: path.into(), source: e })?;
        Ok(Self { path: path.into(), format, writer: None, rate: 0 })
    }

    /// Starts the WAV at the codec's rate.
    fn start(&mut self, rate: u32) -> Result<()> {
        self.writer = Some(WavFileWriter::create(&self.path, rate, self.format)?);
        self.rate = rate;
        Ok(())
    }

    fn append(&mut self, samples: &[f32]) -> Result<()> {
        match &mut self.writer {
            Some(w) => w.append(samples),
            None => Err(Error::Internal("stream output written before its rate was known".into())),
        }
    }

    fn samples(&self) -> usize {
        self.writer.as_ref().map_or(0, WavFileWriter::samples)
    }
}

fn stream(ui: &Ui, a: &StreamArgs) -> Result<()> {
    let cfg = config(&a.engine)?;
    let p = params(&a.gen)?.with_chunk_frames(a.first_chunk_frames, a.chunk_frames);
    p.validate(u32::MAX)?;
    let text = read_text(&a.gen)?;
    let voices = load_voices(ui, &a.gen.voices)?;
    // The codec's rate is known only once the bundle is read.
    let mut out = WavStream::create(&a.gen.out, wav_format(a.gen.float))?;
    let r = stream_into(ui, a, cfg, p, &text, &voices, &mut out);
    if r.is_err() && out.samples() == 0 {
        drop(out);
        let _ = std::fs::remove_file(&a.gen.out);
        return r;
    }
    r?;
    ui.say(format!("wrote {}", a.gen.out.display()));
    Ok(())
}

fn stream_into(
    ui: &Ui,
    a: &StreamArgs,
    cfg: EngineConfig,
    p: SynthParams,
    text: &str,
    voices: &[Voice],
    out: &mut WavStream,
) -> Result<()> {
    let engine = load(ui, cfg)?;
    let req = Request::new(text).with_voices(voices.iter().cloned()).with_params(p);
    let req = fill_max_frames(&engine, &a.gen, req)?;
    let p = &req.params;
    out.start(engine.info().codec.sample_rate_hz)?;
    if !voices.is_empty() && p.prefix_cache {
        // Fill the prefix cache first, so the timing below shows the cached case.
        let t = Instant::now();
        engine.stream(&req)?.next_chunk()?;
        ui.detail(format!(
            "first chunk with an empty prefix cache: {:.1} ms (fills the cache)",
            t.elapsed().as_secs_f64() * 1e3
        ));
    }
    let t = Instant::now();
    let mut s = engine.stream(&req)?;
    let mut progress = ui.frames("streaming", p.max_frames, engine.info().frame_rate_hz());
    let mut frames = 0usize;
    let mut first_ms = None;
    while let Some(chunk) = s.next_chunk()? {
        first_ms.get_or_insert(t.elapsed().as_secs_f64() * 1e3);
        frames += chunk.frames;
        out.append(&chunk.samples)?;
        progress.set(frames);
        ui.detail(format!(
            "  chunk: frames {}..{} at {:.1} ms",
            chunk.first_frame,
            chunk.first_frame + chunk.frames,
            t.elapsed().as_secs_f64() * 1e3
        ));
    }
    progress.finish();
    if let Some(ms) = first_ms {
        ui.say(format!("first chunk after {ms:.1} ms ({} frames)", p.first_chunk_frames));
    }
    report(ui, out.samples() as f64 / f64::from(out.rate), t.elapsed().as_secs_f64(), frames);
    let codec = s.codec_stream();
    if codec.is_stateful() {
        ui.say(format!("codec: stateful step decoder ({} frame-steps)", codec.stepped_frames()));
    } else {
        ui.say("codec: no codec_decode_step graph, each chunk re-decoded its left context");
    }
    Ok(())
}

fn decode(ui: &Ui, a: &DecodeArgs) -> Result<()> {
    let cfg = config(&a.engine)?;
    let arr = npy::read(&a.codes)?;
    let shape = arr.shape.clone();
    let data = arr.into_i64(&a.codes)?;
    let (k, t) = match shape.as_slice() {
        [k, t] | [1, k, t] => (*k, *t),
        other => {
            return Err(Error::InvalidArgument {
                name: "codes",
                reason: format!(
                    "{}: shape {other:?}, expected [10, T] or [1, 10, T]",
                    a.codes.display()
                ),
            })
        }
    };
    let codes = Codes::new(k, Frames(t), data)?;
    let out = OutFile::create(&a.out)?;
    let engine = load(ui, cfg)?;
    let t0 = Instant::now();
    let audio: Audio = {
        let _spin = ui.spinner(&format!("decoding {t} frames"));
        engine.decode_codes(&codes)?
    };
    report(ui, audio.duration_s(), t0.elapsed().as_secs_f64(), t);
    out.write(&wav_bytes(&audio.samples, audio.sample_rate_hz, wav_format(a.float)))?;
    ui.say(format!("wrote {}", a.out.display()));
    Ok(())
}

/// Every backend, available or not, with the reason and the fix; returns whether a GPU backend
/// is available.
fn print_backends(cfg: &EngineConfig) -> bool {
    println!("backends");
    let mut any_gpu_missing = false;
    let mut any_gpu = false;
    for (kind, r) in s1_mini::backend::probe(cfg) {
        match r {
            Ok(()) if kind == BackendKind::OnnxCpu => println!("  {kind:<10} available"),
            // Probing loads the provider and its libraries; the GPU is first used at load.
            Ok(()) => {
                any_gpu = true;
                println!(
                    "  {kind:<10} available (libraries load; device {} is checked when a model \
                     loads)",
                    cfg.device_id
                )
            }
            Err(e) => {
                any_gpu_missing |= kind != BackendKind::OnnxCpu;
                // "reason: fix": the reason names the missing piece, the text after it the fix.
                let text = match &e {
                    Error::BackendUnavailable { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                println!("  {kind:<10} unavailable");
                println!("             {text}");
            }
        }
    }
    if let Some(p) = s1_mini::backend::onnx::loaded_library() {
        println!("onnxruntime {}", p.display());
    }
    if any_gpu_missing {
        println!(
            "troubleshooting: docs/gpu-onnx.md (provider not found, CUDA version mismatch, \
             CPU-only ONNX Runtime build, missing TensorRT 10)"
        );
    }
    any_gpu
}

/// Which bundle precision suits this machine, and whether `precision` (the loaded bundle's) is
/// it.
fn print_precision_advice(gpu: bool, precision: Option<Precision>) {
    let (best, why) = if gpu {
        (
            Precision::Fp16,
            "a GPU backend is available: fp16 graphs (the cuda backend reads bf16 weights)",
        )
    } else {
        (
            Precision::Int8,
            "no GPU backend here: weight-only int8 decodes ~2.5x faster than fp32 at a small \
             measured quality cost; int4 is faster still but its cost must be checked on your \
             checkpoint",
        )
    };
    println!("suggested   {best} bundle ({why}; docs/rust-core.md \"Bundle precision\")");
    if let Some(p) = precision.filter(|&p| p != best) {
        let cmd =
            format!("python -m s1mini_export --checkpoint CKPT --out BUNDLE --precision {best}");
        println!("            this bundle is {p}: export another with `{cmd}`");
    }
    if !gpu {
        println!(
            "            the exact fp32 codec may not keep up with real time on a CPU: \
             `--codec int8` (s1mini_export.quantize) runs it ~2.5x faster, lossy \
             (docs/rust-core.md \"Codec speed (CPU)\")"
        );
    }
}

fn info(a: &InfoArgs) -> Result<()> {
    let dir = a.bundle.clone().unwrap_or_default();
    let mut cfg = a.gpu.apply(EngineConfig::new(&dir).with_verify_hashes(!a.no_verify))?;
    if let Some(p) = &a.ort_library {
        cfg = cfg.with_ort_library_path(p);
    }
    cfg.validate()?;
    let mut precision = None;
    if let Some(dir) = &a.bundle {
        let bundle = s1_mini::bundle::Bundle::load(dir, !a.no_verify)?;
        print_bundle(&bundle.info, a.no_verify);
        precision = Some(bundle.info.precision);
    }
    let gpu = print_backends(&cfg);
    print_precision_advice(gpu, precision);
    Ok(())
}

/// Bytes of slow KV cache per context position (keys and values of every layer).
fn kv_bytes_per_position(i: &s1_mini::BundleInfo, value_bytes: usize) -> usize {
    2 * i.model.n_layer * i.model.n_local_heads * i.model.head_dim * value_bytes
}

fn print_bundle(i: &s1_mini::BundleInfo, no_verify: bool) {
    println!("bundle      {}", i.dir.display());
    println!("exporter    {}", i.exporter);
    match &i.quantization {
        Some(q) => println!(
            "precision   {} (weight-only: layer matrices {}-bit, heads {}-bit, blocks of {}; \
             {} KV cache, {:.1} KiB per position; codec convolutions {}; for onnx-cpu)",
            i.precision,
            q.layer_bits,
            q.head_bits,
            q.block_size,
            q.kv_cache,
            kv_bytes_per_position(i, q.kv_cache.bytes()) as f64 / 1024.0,
            match q.codec_convs {
                s1_mini::bundle::CodecConvs::Fp32 => "fp32 (exact)",
                s1_mini::bundle::CodecConvs::Int8 => "int8 (lossy, --codec int8)",
            }
        ),
        None => println!("precision   {}", i.precision),
    }
    println!(
        "model       dim {} | {} slow layers | {} fast layers | {} codebooks | context {} tokens",
        i.model.dim,
        i.model.n_layer,
        i.model.n_fast_layer,
        i.model.num_codebooks,
        i.model.max_seq_len
    );
    println!(
        "codec       {} Hz, {} samples/frame ({:.2} frames/s), receptive field {} frames",
        i.codec.sample_rate_hz,
        i.codec.frame_samples,
        i.frame_rate_hz(),
        i.codec.receptive_field_frames
    );
    println!("graphs      {}", i.graphs.keys().cloned().collect::<Vec<_>>().join(", "));
    println!("hashes      {}", if no_verify { "not checked" } else { "ok" });
}

/// `--version`: this program, the ONNX Runtime it finds and the CUDA driver (each may be
/// missing; that is said, not an error).
fn version(ort_library: Option<&Path>) {
    println!("s1-mini {} (C ABI s1_mini {})", env!("CARGO_PKG_VERSION"), env!("CARGO_PKG_VERSION"));
    let mut cfg = EngineConfig::default();
    if let Some(p) = ort_library {
        cfg = cfg.with_ort_library_path(p);
    }
    match s1_mini::backend::onnx::runtime_version(&cfg) {
        Ok((path, v)) => println!("onnxruntime {v} ({})", path.display()),
        Err(e) => println!("onnxruntime not found: {}", reason(&e)),
    }
    match s1_mini::backend::cuda::driver_version() {
        Ok(v) => println!("cuda driver {v}"),
        Err(e) => println!("cuda driver none: {}", reason(&e)),
    }
}

fn reason(e: &Error) -> String {
    match e {
        Error::BackendUnavailable { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

fn bench(ui: &Ui, a: &BenchArgs) -> Result<()> {
    use s1_mini::bench;
    let mut cfg = EngineConfig::new(&a.bundle)
        .with_verify_hashes(a.verify)
        .with_optimized_model_cache(!a.no_model_cache)
        .with_intra_op_threads(a.threads);
    if let Some(p) = &a.ort_library {
        cfg = cfg.with_ort_library_path(p);
    }
    cfg.validate()?;
    let mut o = bench::BenchOptions::new(cfg);
    o.backends = match &a.backend {
        Some(b) => vec![b.parse::<BackendKind>()?],
        None => BackendKind::PREFERENCE.to_vec(),
    };
    if let Some(f) = &a.text_file {
        o.text = read_text_file(f)?;
        o.text_from_file = true;
    }
    o.frames = a.frames;
    o.free = a.free;
    o.runs = a.runs;
    o.warmup = a.warmup;
    o.profile = a.profile;
    o.seed = a.seed;
    o.voices = load_voices(ui, &a.voices)?;
    o.prefix_cache = !a.no_prefix_cache;
    o.prompt_tokens = a.prompt_tokens.clone();
    o.stream = !a.no_stream;
    o.streams = a.streams.clone();
    let json = a.json.as_deref().map(OutFile::create).transpose()?;
    let report = bench::run(&o, &mut |line| ui.say(line))?;
    print!("{}", bench::render_text(&report));
    if let (Some(f), Some(path)) = (json, &a.json) {
        f.write(bench::to_json(&report)?.as_bytes())?;
        ui.say(format!("wrote {}", path.display()));
    }
    Ok(())
}

fn voice_create(ui: &Ui, a: &VoiceCreateArgs) -> Result<()> {
    let cfg = config(&a.engine)?;
    let wav = s1_mini::audio::read_wav(&a.audio)?;
    let out = OutFile::create(&a.out)?;
    let engine = load(ui, cfg)?;
    let t = Instant::now();
    let voice = {
        let _spin = ui.spinner(&format!(
            "encoding {} ({:.2} s at {} Hz)",
            a.audio.display(),
            wav.duration_s(),
            wav.sample_rate_hz
        ));
        engine.create_voice(&wav.samples, wav.sample_rate_hz, &a.text)?
    };
    out.write(&voice.to_bytes())?;
    ui.say(format!(
        "wrote {} ({} frames, encoded in {:.2} s)",
        a.out.display(),
        voice.codes().frames().0,
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn voice_show(a: &VoiceShowArgs) -> Result<()> {
    let v = Voice::load(&a.voice)?;
    println!("transcript: {}", v.transcript());
    println!("codebooks: {}", v.codes().num_codebooks());
    println!("frames: {}", v.codes().frames().0);
    let fp: String = v.fingerprint().iter().take(8).map(|b| format!("{b:02x}")).collect();
    println!("fingerprint: {fp}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::new(if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    });
    if cli.version {
        version(cli.version_ort_library.as_deref());
        return ExitCode::SUCCESS;
    }
    let Some(command) = &cli.command else {
        eprintln!("error: no command given (s1-mini --help lists them)");
        return ExitCode::FAILURE;
    };
    let r = match command {
        Command::Synth(a) => synth(&ui, a),
        Command::Stream(a) => stream(&ui, a),
        Command::Decode(a) => decode(&ui, a),
        Command::Info(a) => info(a),
        Command::Bench(a) => bench(&ui, a),
        Command::Voice(VoiceCommand::Create(a)) => voice_create(&ui, a),
        Command::Voice(VoiceCommand::Show(a)) => voice_show(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e} ({})", e.status().name());
            ExitCode::FAILURE
        }
    }
}
