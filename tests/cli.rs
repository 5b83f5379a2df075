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
