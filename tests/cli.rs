//! The `s1-mini` command line on the tiny bundle.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_s1-mini"));
    c.env("ORT_DYLIB_PATH", ort_library());
    c
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "failed: {err}");
    format!("{}{err}", String::from_utf8_lossy(&out.stdout))
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("s1mini-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn wav_f32(p: &Path) -> Vec<f32> {
    s1_mini::audio::read_wav(p).unwrap().samples
}

#[test]
fn cli_synth_codes_out_then_decode_gives_the_same_wav() {
    let bundle = tiny_dir();
    let (wav, npy, wav2) = (tmp("a.wav"), tmp("a.npy"), tmp("b.wav"));
    let log = run_ok(
        cli()
            .args(["synth", "--bundle"])
            .arg(&bundle)
            .args(["--text", "Hello there.", "--seed", "5", "--max-frames", "12", "--out"])
            .arg(&wav)
            .arg("--codes-out")
            .arg(&npy),
    );
    assert!(log.contains("backend onnx-cpu"), "{log}");
    let codes = s1_mini::npy::read(&npy).unwrap();
    assert_eq!(codes.shape[0], 10);
    run_ok(
        cli()
            .args(["decode", "--bundle"])
            .arg(&bundle)
            .arg("--codes")
            .arg(&npy)
            .arg("--out")
            .arg(&wav2),
    );
    assert_eq!(std::fs::read(&wav).unwrap(), std::fs::read(&wav2).unwrap());
}

#[test]
fn cli_stream_writes_the_same_audio_as_synth() {
    let bundle = tiny_dir();
    let (a, b) = (tmp("s1.wav"), tmp("s2.wav"));
    let common = [
        "--text",
        "Streaming from the command line.",
        "--seed",
        "2",
        "--max-frames",
        "20",
        "--float",
    ];
    run_ok(cli().args(["synth", "--bundle"]).arg(&bundle).args(common).arg("--out").arg(&a));
    let log = run_ok(
        cli()
            .args(["stream", "--bundle"])
            .arg(&bundle)
            .args(common)
            .args(["--first-chunk-frames", "2", "--chunk-frames", "5", "--out"])
            .arg(&b),
    );
    assert!(log.contains("first chunk after"), "{log}");
    assert!(log.contains("codec: stateful step decoder"), "{log}");
    let d = max_abs_diff(&wav_f32(&a), &wav_f32(&b));
    assert!(d <= 1e-4, "{d}");
}

#[test]
fn cli_invalid_utf8_text_file_fails_with_status() {
    let f = tmp("bad.txt");
    std::fs::write(&f, b"caf\xe9").unwrap();
    let out = cli()
        .args(["synth", "--bundle"])
        .arg(tiny_dir())
        .arg("--text-file")
        .arg(&f)
        .arg("--out")
        .arg(tmp("bad.wav"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("S1_STATUS_INVALID_UTF8"), "{err}");
}

#[test]
fn cli_info_lists_bundle_and_backends() {
    let out = run_ok(cli().args(["info", "--bundle"]).arg(tiny_dir()));
    assert!(out.contains("44100 Hz"), "{out}");
    assert!(out.contains("onnx-cpu   available"), "{out}");
    assert!(out.contains("cuda") && out.contains("unavailable"), "{out}");
}

#[test]
fn cli_missing_bundle_fails_with_status() {
    let out = cli().args(["info", "--bundle", "/nonexistent/bundle"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("S1_STATUS_BUNDLE_NOT_FOUND"));
}

#[test]
fn cli_voice_create_then_synth_and_stream_with_it() {
    let bundle = tiny_dir();
    let (ref_wav, voice, a, b, c) =
        (tmp("ref.wav"), tmp("v.s1v"), tmp("va.wav"), tmp("vb.wav"), tmp("vc.wav"));
    // 1.5 s of two tones at 16 kHz (resampled to 44.1 kHz by `voice create`).
    let samples: Vec<f32> = (0..24_000)
        .map(|i| 0.3 * (i as f32 * 0.07).sin() + 0.05 * (i as f32 * 0.9).cos())
        .collect();
    let audio = s1_mini::Audio { samples, sample_rate_hz: 16_000 };
    s1_mini::audio::write_wav(&ref_wav, &audio, s1_mini::WavFormat::Pcm16).unwrap();
    let log = run_ok(
        cli()
            .args(["voice", "create", "--bundle"])
            .arg(&bundle)
            .arg("--audio")
            .arg(&ref_wav)
            .args(["--text", "A reference line.", "--out"])
            .arg(&voice),
    );
    assert!(log.contains("33 frames"), "{log}");
    let shown = run_ok(cli().args(["voice", "show"]).arg(&voice));
    assert!(shown.contains("transcript: A reference line."), "{shown}");
    let args = ["--text", "Hello.", "--seed", "4", "--max-frames", "10"];
    run_ok(
        cli()
            .args(["synth", "--bundle"])
            .arg(&bundle)
            .args(args)
            .arg("--voice")
            .arg(&voice)
            .arg("--out")
            .arg(&a),
    );
    run_ok(
        cli()
            .args(["synth", "--bundle"])
            .arg(&bundle)
            .args(args)
            .arg("--voice")
            .arg(&voice)
            .arg("--no-prefix-cache")
            .arg("--out")
            .arg(&b),
    );
    let log = run_ok(
        cli()
            .args(["stream", "--bundle"])
            .arg(&bundle)
            .args(args)
            .arg("--voice")
            .arg(&voice)
            .arg("--out")
            .arg(&c),
    );
    assert!(log.contains("first chunk after"), "{log}");
    assert_eq!(wav_f32(&a), wav_f32(&b), "prefix cache changes nothing");
    // The stream decodes through the stateful step graph: equal to float rounding (~1e-6), so
    // the 16-bit WAVs may differ by one quantisation step where a sample sits on a boundary.
    let (one, streamed) = (wav_f32(&a), wav_f32(&c));
    assert_eq!(one.len(), streamed.len(), "stream equals synth");
    let d = one.iter().zip(&streamed).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(d <= 1.0 / 32768.0 + 1e-7, "stream equals synth: max diff {d}");
    // A corrupt voice file is a clear error.
    std::fs::write(&voice, b"S1VOICE\0garbage").unwrap();
    let out = cli()
        .args(["synth", "--bundle"])
        .arg(&bundle)
        .args(args)
        .arg("--voice")
        .arg(&voice)
        .arg("--out")
        .arg(&a)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("S1_STATUS_VOICE_INVALID"));
}

/// stdout and stderr of a run that must fail, with its status name in stderr.
fn run_err(c: &mut Command, status: &str) -> String {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "succeeded: {err}");
    assert!(err.contains(status), "wanted {status}: {err}");
    err
}

fn synth_cmd(out: &Path) -> Command {
    let mut c = cli();
    c.args(["synth", "--bundle"])
        .arg(tiny_dir())
        .args(["--text", "Hello there.", "--max-frames", "8", "--out"])
        .arg(out);
    c
}

#[test]
fn cli_default_output_names_backend_in_one_line_without_reasons() {
    let out = synth_cmd(&tmp("default.wav")).output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let loaded: Vec<&str> = err.lines().filter(|l| l.contains("backend onnx-cpu")).collect();
    assert_eq!(loaded.len(), 1, "{err}");
    // The reasons (long, with the fix) are for -v and `s1-mini info`.
    assert!(!err.contains("libcuda") && !err.contains("execution provider"), "{err}");
    assert!(err.lines().all(|l| l.len() < 200), "a long line by default: {err}");
    if err.contains("unavailable") {
        assert!(loaded[0].contains("-v or `s1-mini info` says why"), "{err}");
    }
}

#[test]
fn cli_verbose_prints_skip_reasons_and_quiet_prints_nothing() {
    let v = cli()
        .arg("-v")
        .args(["synth", "--bundle"])
        .arg(tiny_dir())
        .args(["--text", "Hello there.", "--max-frames", "8", "--out"])
        .arg(tmp("verbose.wav"))
        .output()
        .unwrap();
    assert!(v.status.success());
    let err = String::from_utf8_lossy(&v.stderr);
    // This build has the cuda backend compiled in and CI has no GPU: cuda is always skipped.
    assert!(err.contains("backend cuda unavailable"), "{err}");

    let q = synth_cmd(&tmp("quiet.wav")).arg("-q").output().unwrap();
    assert!(q.status.success());
    assert_eq!(String::from_utf8_lossy(&q.stderr), "", "-q printed something");
    assert!(tmp("quiet.wav").metadata().unwrap().len() > 44);
}

#[test]
fn cli_bad_argument_fails_before_the_bundle_loads() {
    // A bundle path that does not exist: had the bundle been read first, the error would be
    // BUNDLE_NOT_FOUND, not the argument's.
    let err = run_err(
        cli()
            .args([
                "synth",
                "--bundle",
                "/nonexistent/bundle",
                "--text",
                "Hi",
                "--temperature",
                "5",
            ])
            .arg("--out")
            .arg(tmp("t5.wav")),
        "S1_STATUS_INVALID_ARGUMENT",
    );
    assert!(err.contains("temperature") && !err.contains("loaded"), "{err}");
    assert!(!tmp("t5.wav").exists(), "output created for a refused run");
    for (flag, value) in [("--top-p", "0"), ("--repetition-penalty", "2"), ("--max-frames", "0")] {
        run_err(
            cli()
                .args(["stream", "--bundle", "/nonexistent/bundle", "--text", "Hi", flag, value])
                .arg("--out")
                .arg(tmp("bad-arg.wav")),
            "S1_STATUS_INVALID_ARGUMENT",
        );
    }
}

#[test]
fn cli_unwritable_output_fails_before_generating() {
    for sub in ["synth", "stream"] {
        let err = run_err(
            cli().args([sub, "--bundle"]).arg(tiny_dir()).args([
                "--text",
                "Hi",
                "--out",
                "/nonexistent/dir/x.wav",
            ]),
            "S1_STATUS_IO",
        );
        assert!(err.contains("/nonexistent/dir/x.wav"), "{err}");
        assert!(!err.contains("loaded") && !err.contains("frames"), "{sub} worked first: {err}");
    }
    let err = run_err(
        synth_cmd(&tmp("codes-ok.wav")).args(["--codes-out", "/nonexistent/dir/c.npy"]),
        "S1_STATUS_IO",
    );
    assert!(!err.contains("loaded"), "{err}");
}

#[test]
fn cli_failed_synthesis_leaves_no_output_file() {
    let out = tmp("empty-text.wav");
    let _ = std::fs::remove_file(&out);
    run_err(
        cli()
            .args(["synth", "--bundle"])
            .arg(tiny_dir())
            .args(["--text", "   ", "--out"])
            .arg(&out),
        "S1_STATUS_EMPTY_TEXT",
    );
    assert!(!out.exists(), "an empty output file was left behind");
}

#[test]
fn cli_info_without_bundle_lists_backends() {
    let out = run_ok(cli().arg("info"));
    assert!(out.contains("onnx-cpu   available"), "{out}");
    assert!(out.contains("cuda       unavailable"), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("bundle ")), "{out}");
}

#[test]
fn cli_version_names_library_onnxruntime_and_cuda_driver() {
    let out = run_ok(cli().arg("--version"));
    assert!(out.starts_with(&format!("s1-mini {}", env!("CARGO_PKG_VERSION"))), "{out}");
    let ort = out.lines().find(|l| l.starts_with("onnxruntime ")).unwrap_or_default();
    assert!(ort.contains(", commit ") && ort.as_bytes()[12].is_ascii_digit(), "{out}");
    assert!(out.contains("cuda driver "), "{out}");
    // Without a findable ONNX Runtime it says so instead of failing.
    let none = Command::new(env!("CARGO_BIN_EXE_s1-mini"))
        .arg("--version")
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert!(none.status.success());
    assert!(String::from_utf8_lossy(&none.stdout).contains("onnxruntime not found"));
}

#[test]
fn cli_info_suggests_the_bundle_precision_for_this_machine() {
    // CI has no GPU: the CPU bundle (int8) is the suggestion, and the fp32 fixture is not it.
    let out = run_ok(cli().args(["info", "--bundle"]).arg(tiny_dir()));
    assert!(out.contains("suggested   int8 bundle"), "{out}");
    assert!(out.contains("this bundle is fp32") && out.contains("--precision int8"), "{out}");
}
