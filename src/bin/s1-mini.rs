//! `s1-mini` command line: synth, stream, decode, info. Progress goes to stderr.

#![deny(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use s1_mini::audio::{wav_bytes, write_wav};
use s1_mini::{
    npy, Audio, BackendKind, Codes, Engine, EngineConfig, Error, Frames, Result, SynthParams,
    Voice, WavFormat,
};

/// Text-to-speech with Fish Audio's OpenAudio S1-mini.
#[derive(Parser)]
#[command(name = "s1-mini", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Synthesise text to a WAV file.
    Synth(SynthArgs),
    /// Synthesise while streaming: chunks are written as they are decoded.
    Stream(StreamArgs),
    /// Decode codes (`.npy`, [10, T] int64, as fish-speech's codec CLI) to a WAV file.
    Decode(DecodeArgs),
    /// Show the bundle and which backends are available (and why not).
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
    /// Directory for TensorRT engine + timing caches (created if missing).
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
    /// Model bundle directory.
    #[arg(long)]
    bundle: PathBuf,
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
    #[arg(long, conflicts_with = "text_file")]
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
    /// ONNX Runtime intra-op threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn config(a: &EngineArgs) -> Result<EngineConfig> {
    let mut c = EngineConfig::new(&a.bundle)
        .with_backend(a.backend.parse::<BackendKind>()?)
        .with_verify_hashes(!a.no_verify)
        .with_intra_op_threads(a.threads);
    if let Some(p) = &a.ort_library {
        c = c.with_ort_library_path(p);
    }
    a.gpu.apply(c)
}

fn load(a: &EngineArgs) -> Result<Engine> {
    let t = Instant::now();
    eprintln!("loading bundle {} ...", a.bundle.display());
    let engine = Engine::new(config(a)?)?;
    for s in engine.skipped_backends() {
        eprintln!("  skipped {}: {}", s.backend, s.reason);
    }
    eprintln!("loaded in {:.2} s, backend {}", t.elapsed().as_secs_f64(), engine.backend());
    Ok(engine)
}

fn read_text_file(f: &Path) -> Result<String> {
    let bytes = std::fs::read(f).map_err(|e| Error::Io { path: f.into(), source: e })?;
    String::from_utf8(bytes)
        .map_err(|e| Error::InvalidUtf8 { valid_up_to: e.utf8_error().valid_up_to() })
}

fn read_text(g: &GenArgs) -> Result<String> {
    let bytes = match (&g.text, &g.text_file) {
        (Some(t), _) => return Ok(t.clone()),
        (None, Some(f)) => {
            std::fs::read(f).map_err(|e| Error::Io { path: f.clone(), source: e })?
        }
        (None, None) => {
            return Err(Error::InvalidArgument {
                name: "text",
                reason: "give --text or --text-file".into(),
            })
        }
    };
    String::from_utf8(bytes)
        .map_err(|e| Error::InvalidUtf8 { valid_up_to: e.utf8_error().valid_up_to() })
}

fn load_voices(paths: &[PathBuf]) -> Result<Vec<Voice>> {
    paths
        .iter()
        .map(|p| {
            let v = Voice::load(p)?;
            eprintln!(
                "voice {}: {} frames, transcript {:?}",
                p.display(),
                v.codes().frames().0,
                v.transcript()
            );
            Ok(v)
        })
        .collect()
}

fn params(engine: &Engine, g: &GenArgs, text: &str, voices: &[Voice]) -> Result<SynthParams> {
    let max_frames = match g.max_frames {
        Some(m) => m,
        None => {
            let prompt = engine.prompt_with_voices(voices, text)?.len;
            let left = engine.info().model.max_seq_len.saturating_sub(prompt);
            u32::try_from(left).unwrap_or(u32::MAX).clamp(1, 1024)
        }
    };
    Ok(SynthParams::default()
        .with_seed(g.seed)
        .with_temperature(g.temperature)
        .with_top_p(g.top_p)
        .with_repetition_penalty(g.repetition_penalty)
        .with_max_frames(max_frames)
        .with_fish_speech_compat(g.fish_speech_compat)
        .with_prefix_cache(!g.no_prefix_cache))
}

fn wav_format(float: bool) -> WavFormat {
    if float {
        WavFormat::Float32
    } else {
        WavFormat::Pcm16
    }
}

fn report(audio_s: f64, wall_s: f64, frames: usize) {
    eprintln!(
        "{frames} frames, {audio_s:.2} s of audio in {wall_s:.2} s ({:.2}x real time)",
        if wall_s > 0.0 { audio_s / wall_s } else { 0.0 }
    );
}

fn synth(a: &SynthArgs) -> Result<()> {
    let engine = load(&a.engine)?;
    let text = read_text(&a.gen)?;
    let voices = load_voices(&a.gen.voices)?;
    let p = params(&engine, &a.gen, &text, &voices)?;
    eprintln!("generating (max {} frames) ...", p.max_frames);
    let t = Instant::now();
    let codes = if voices.is_empty() {
        engine.generate_codes(&text, &p)?
    } else {
        let (frames, _) = engine.generate_frames_with_voices(&text, &voices, &p)?;
        s1_mini::generate::frames_to_codes(engine.info(), &frames)?
    };
    eprintln!(
        "{} frames generated in {:.2} s; decoding ...",
        codes.frames().0,
        t.elapsed().as_secs_f64()
    );
    let audio = engine.decode_codes(&codes)?;
    report(audio.duration_s(), t.elapsed().as_secs_f64(), codes.frames().0);
    write_wav(&a.gen.out, &audio, wav_format(a.gen.float))?;
    eprintln!("wrote {}", a.gen.out.display());
    if let Some(path) = &a.codes_out {
        npy::write_i64(path, &[codes.num_codebooks(), codes.frames().0], codes.as_slice())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// A WAV file written chunk by chunk; the header's sizes are patched at the end.
struct WavStream {
    file: std::fs::File,
    path: PathBuf,
    format: WavFormat,
    samples: usize,
    rate: u32,
}

impl WavStream {
    fn create(path: &Path, rate: u32, format: WavFormat) -> Result<Self> {
        let mut file =
            std::fs::File::create(path).map_err(|e| Error::Io { path: path.into(), source: e })?;
        file.write_all(&wav_bytes(&[], rate, format))
            .map_err(|e| Error::Io { path: path.into(), source: e })?;
        Ok(Self { file, path: path.into(), format, samples: 0, rate })
    }

    fn append(&mut self, samples: &[f32]) -> Result<()> {
        let bytes = wav_bytes(samples, self.rate, self.format);
        self.file
            .write_all(&bytes[44..])
            .map_err(|e| Error::Io { path: self.path.clone(), source: e })?;
        self.file.flush().map_err(|e| Error::Io { path: self.path.clone(), source: e })?;
        self.samples += samples.len();
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        let header = wav_bytes(&vec![0.0; self.samples], self.rate, self.format);
        let io = |e| Error::Io { path: self.path.clone(), source: e };
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.file
            .write_all(&header[..44])
            .map_err(|e| Error::Io { path: self.path.clone(), source: e })?;
        Ok(())
    }
}

fn stream(a: &StreamArgs) -> Result<()> {
    let engine = load(&a.engine)?;
    let text = read_text(&a.gen)?;
    let voices = load_voices(&a.gen.voices)?;
    let p = params(&engine, &a.gen, &text, &voices)?
        .with_chunk_frames(a.first_chunk_frames, a.chunk_frames);
    let rate = engine.info().codec.sample_rate_hz;
    let mut out = WavStream::create(&a.gen.out, rate, wav_format(a.gen.float))?;
    if !voices.is_empty() && p.prefix_cache {
        // Fill the prefix cache first, so the timing below shows the cached case.
        let t = Instant::now();
        engine.stream_with_voices(&text, &voices, &p)?.next_chunk()?;
        eprintln!(
            "first chunk with an empty prefix cache: {:.1} ms (fills the cache)",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    let mut s = engine.stream_with_voices(&text, &voices, &p)?;
    let mut frames = 0usize;
    let mut first = true;
    while let Some(chunk) = s.next_chunk()? {
        if first {
            eprintln!(
                "first chunk after {:.1} ms ({} frames)",
                t.elapsed().as_secs_f64() * 1e3,
                chunk.frames
            );
            first = false;
        }
        frames += chunk.frames;
        out.append(&chunk.samples)?;
        eprintln!("  chunk: frames {}..{}", chunk.first_frame, chunk.first_frame + chunk.frames);
    }
    let audio_s = out.samples as f64 / f64::from(rate);
    out.finish()?;
    report(audio_s, t.elapsed().as_secs_f64(), frames);
    let codec = s.codec_stream();
    if codec.is_stateful() {
        eprintln!("codec: stateful step decoder ({} frame-steps)", codec.stepped_frames());
    } else {
        eprintln!("codec: no codec_decode_step graph, each chunk re-decoded its left context");
    }
    eprintln!("wrote {}", a.gen.out.display());
    Ok(())
}

fn decode(a: &DecodeArgs) -> Result<()> {
    let engine = load(&a.engine)?;
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
    let t0 = Instant::now();
    let audio: Audio = engine.decode_codes(&codes)?;
    report(audio.duration_s(), t0.elapsed().as_secs_f64(), t);
    write_wav(&a.out, &audio, wav_format(a.float))?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn info(a: &InfoArgs) -> Result<()> {
    let mut cfg = a.gpu.apply(EngineConfig::new(&a.bundle).with_verify_hashes(!a.no_verify))?;
    if let Some(p) = &a.ort_library {
        cfg = cfg.with_ort_library_path(p);
    }
    cfg.validate()?;
    let bundle = s1_mini::bundle::Bundle::load(&a.bundle, !a.no_verify)?;
    let i = &bundle.info;
    println!("bundle      {}", i.dir.display());
    println!("exporter    {}", i.exporter);
    println!("precision   {}", i.precision);
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
    println!("hashes      {}", if a.no_verify { "not checked" } else { "ok" });
    println!("backends");
    let mut any_gpu_missing = false;
    for (kind, r) in s1_mini::backend::probe(&cfg) {
        match r {
            Ok(()) if kind == BackendKind::OnnxCpu => println!("  {kind:<10} available"),
            // Probing loads the provider and its libraries; the GPU is first used at load.
            Ok(()) => println!(
                "  {kind:<10} available (libraries load; device {} is checked when a model loads)",
                cfg.device_id
            ),
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
    Ok(())
}

fn bench(a: &BenchArgs) -> Result<()> {
    use s1_mini::bench;
    let mut cfg =
        EngineConfig::new(&a.bundle).with_verify_hashes(a.verify).with_intra_op_threads(a.threads);
    if let Some(p) = &a.ort_library {
        cfg = cfg.with_ort_library_path(p);
    }
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
    o.voices = load_voices(&a.voices)?;
    o.prefix_cache = !a.no_prefix_cache;
    let report = bench::run(&o, &mut |line| eprintln!("{line}"))?;
    print!("{}", bench::render_text(&report));
    if let Some(path) = &a.json {
        std::fs::write(path, bench::to_json(&report)?)
            .map_err(|e| Error::Io { path: path.clone(), source: e })?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn voice_create(a: &VoiceCreateArgs) -> Result<()> {
    let engine = load(&a.engine)?;
    let wav = s1_mini::audio::read_wav(&a.audio)?;
    eprintln!(
        "{}: {:.2} s at {} Hz; encoding ...",
        a.audio.display(),
        wav.duration_s(),
        wav.sample_rate_hz
    );
    let t = Instant::now();
    let voice = engine.create_voice(&wav.samples, wav.sample_rate_hz, &a.text)?;
    voice.save(&a.out)?;
    eprintln!(
        "wrote {} ({} frames, encoded in {:.2} s)",
        a.out.display(),
        voice.codes().frames().0,
        t.elapsed().as_secs_f64()
    );
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
    let r = match &cli.command {
        Command::Synth(a) => synth(a),
        Command::Stream(a) => stream(a),
        Command::Decode(a) => decode(a),
        Command::Info(a) => info(a),
        Command::Bench(a) => bench(a),
        Command::Voice(VoiceCommand::Create(a)) => voice_create(a),
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
