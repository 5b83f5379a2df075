//! `s1-mini bench` on the tiny bundle: the report's shape and sanity, and argument errors.
//! Speed itself is never asserted (STYLE rule 25).

mod common;

use std::process::{Command, Output};

use common::*;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_s1-mini"))
        .env("ORT_DYLIB_PATH", ort_library())
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

fn tmp_json(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("s1mini-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(format!("{tag}.json"))
}

fn positive(v: &serde_json::Value, path: &str) -> f64 {
    let mut x = v;
    for k in path.split('.') {
        x = &x[k];
    }
    let f = x.as_f64().unwrap_or_else(|| panic!("{path} is not a number: {x}"));
    assert!(f.is_finite() && f > 0.0, "{path} = {f}");
    f
}

#[test]
fn bench_tiny_json_has_schema_fields_and_sane_values() {
    let json = tmp_json("tiny");
    let bundle = tiny_dir();
    let out = bench(&[
        "--backend",
        "onnx-cpu",
        "--bundle",
        bundle.to_str().unwrap(),
        "--frames",
        "4",
        "--runs",
        "1",
        "--profile",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("onnx-cpu") && text.contains("fixed"), "{text}");

    let r = read_json(&json);
    assert_eq!(r["schema_version"], 1);
    assert!(r["host"]["logical_cpus"].as_u64().unwrap() >= 1);
    let w = &r["workload"];
    assert_eq!(w["frames"], 4);
    assert_eq!(w["fixed_frames"], true);
    assert_eq!(w["runs"], 1);
    assert!(w["prompt_tokens"].as_u64().unwrap() > 0);

    let res = r["results"].as_array().unwrap();
    assert_eq!(res.len(), 1);
    let b = &res[0];
    assert_eq!(b["backend"], "onnx-cpu");
    // A fixed count: exactly 4 frames, all of them audio.
    assert_eq!(b["frames"]["median"], 4.0);
    let audio_s = positive(b, "audio_s.median");
    let rate = w["frame_rate_hz"].as_f64().unwrap();
    assert!((audio_s - 4.0 / rate).abs() < 1e-3, "{audio_s}");
    for f in [
        "load_s",
        "synth_ms.median",
        "x_real_time.median",
        "latency_5s_ms.median",
        "first_chunk_ms.median",
        "prefill_ms.median",
        "frames_per_s.median",
        "codec_ms.median",
        "achieved_gb_per_s.median",
        "weight_bytes_per_frame",
        "memory.peak_bytes",
    ] {
        positive(b, f);
    }
    for s in ["synth_ms", "frames_per_s", "first_chunk_ms"] {
        let st = &b[s];
        let (lo, mid, hi) = (st["min"].as_f64(), st["median"].as_f64(), st["max"].as_f64());
        assert!(lo <= mid && mid <= hi, "{s}: {st}");
    }
    // 4 frames is not 5 s of audio: the latency figure says it is extrapolated.
    assert_eq!(b["latency_5s_estimated"], true);
    assert_eq!(b["memory"]["kind"], "rss");
    // The synthesis includes the frames and the codec.
    assert!(positive(b, "synth_ms.median") >= positive(b, "codec_ms.median"));
    for f in ["slow_ms_per_frame", "fast_ms_per_frame", "sampling_ms_per_frame"] {
        positive(&b["profile"], &format!("{f}.median"));
    }
    assert!(b["profile"]["other_ms_per_frame"]["median"].as_f64().unwrap() >= 0.0);
    // The GPU backends of this build are listed with a reason, not measured.
    assert!(r["unavailable"].is_array());
}

#[test]
fn bench_all_backends_lists_unavailable_with_reason() {
    let json = tmp_json("all");
    let bundle = tiny_dir();
    let out = bench(&[
        "--all-backends",
        "--bundle",
        bundle.to_str().unwrap(),
        "--frames",
        "2",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = read_json(&json);
    let ran: Vec<&str> =
        r["results"].as_array().unwrap().iter().map(|b| b["backend"].as_str().unwrap()).collect();
    let skipped = r["unavailable"].as_array().unwrap();
    assert!(ran.contains(&"onnx-cpu"), "{ran:?}");
    // Every concrete backend is either measured or listed with its reason.
    for name in ["cuda", "tensorrt", "onnx-cuda", "onnx-cpu"] {
        let listed = skipped
            .iter()
            .any(|u| u["backend"] == name && !u["reason"].as_str().unwrap_or("").trim().is_empty());
        assert!(ran.contains(&name) || listed, "{name}: {r}");
    }
}

#[test]
fn bench_bad_arguments_fail_with_a_message() {
    let bundle = tiny_dir();
    let b = bundle.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--bundle", b], "--all-backends"),
        (&["--backend", "onnx-cpu", "--all-backends", "--bundle", b], "cannot be used with"),
        (&["--backend", "gpu", "--bundle", b], "unknown backend"),
        (&["--backend", "onnx-cpu", "--bundle", b, "--runs", "0"], "runs"),
        (&["--backend", "onnx-cpu", "--bundle", b, "--frames", "0"], "frames"),
        (
            &["--backend", "onnx-cpu", "--bundle", b, "--frames", "4", "--free"],
            "cannot be used with",
        ),
        (&["--backend", "onnx-cpu", "--bundle", b, "--frames", "99999"], "context"),
        (&["--backend", "onnx-cpu", "--bundle", b, "--streams", "0"], "streams"),
        (&["--backend", "onnx-cpu", "--bundle", "/nonexistent/bundle"], "error"),
    ];
    for (args, want) in cases {
        let out = bench(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn bench_context_sweep_and_streaming_row_in_the_json() {
    let json = tmp_json("sweep");
    let bundle = tiny_dir();
    let out = bench(&[
        "--backend",
        "onnx-cpu",
        "--bundle",
        bundle.to_str().unwrap(),
        "--frames",
        "24",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--prompt-tokens",
        "100,400",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = read_json(&json);
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "one result per prompt length");
    let tokens: Vec<u64> = results.iter().map(|b| b["prompt_tokens"].as_u64().unwrap()).collect();
    assert!(tokens[0] >= 100 && tokens[1] >= 400 && tokens[1] > tokens[0], "{tokens:?}");
    for b in results {
        positive(b, "stream_ms.median");
        positive(b, "stream_over_synth.median");
        let arrivals: Vec<f64> = b["stream_chunk_arrival_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        // 24 frames in chunks of 4, then 16: 4 + 16 + 4, in order.
        assert_eq!(arrivals.len(), 3, "{arrivals:?}");
        assert!(arrivals[0] > 0.0 && arrivals.windows(2).all(|w| w[1] >= w[0]), "{arrivals:?}");
    }
    // A length the context cannot hold is refused, naming the option.
    let out = bench(&["--backend", "onnx-cpu", "--prompt-tokens", "999999", "--frames", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prompt_tokens"));
}

#[test]
fn bench_concurrency_sweep_in_the_json() {
    let json = tmp_json("streams");
    let bundle = tiny_dir();
    let out = bench(&[
        "--backend",
        "onnx-cpu",
        "--bundle",
        bundle.to_str().unwrap(),
        "--frames",
        "30",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--no-stream",
        "--streams",
        "1,3",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = read_json(&json);
    let sweep = r["results"][0]["concurrency"].as_array().unwrap();
    let counts: Vec<u64> = sweep.iter().map(|c| c["streams"].as_u64().unwrap()).collect();
    assert_eq!(counts, [1, 3]);
    for c in sweep {
        positive(c, "aggregate_frames_per_s");
        positive(c, "per_stream_frames_per_s.median");
        positive(c, "speedup_over_one");
        // The first request's frames do not depend on what it was batched with.
        assert_eq!(c["same_frames_as_alone"], true, "{c}");
        let rows = positive(c, "mean_batch_rows");
        let n = c["streams"].as_f64().unwrap();
        assert!((1.0..=n).contains(&rows), "{rows} rows per step with {n} streams");
    }
    assert_eq!(sweep[0]["mean_batch_rows"], 1.0, "one stream runs alone");
}
