//! GPU checks of the native CUDA backend, run by `bench/gpu_check.sh` on a GPU host
//! (`cargo build --release --features cuda --example cuda_check`).
//!
//!   cuda_check parity BUNDLE       logits max relative error vs onnx-cpu (exact and fast
//!                                  mode), greedy and seeded frames cuda == onnx-cpu
//!   cuda_check selftest            every kernel vs an f64 host reference on random inputs
//!   cuda_check ort-parity BUNDLE   the same logits and greedy checks for onnx-cuda vs onnx-cpu
//!   cuda_check t2s-bench BUNDLE BACKEND [WORDS] [FRAMES]
//!                                  transformer frames/s of any backend through the engine
//!   cuda_check bench [--int8] [PROMPT_LEN] [FRAMES]
//!                                  S1-mini shapes, random weights, frame graph replays
//!
//! Exit status 0 = every check passed. Prints one `RESULT key=value` line per figure.

use std::path::PathBuf;
use std::process::ExitCode;

use s1_mini::backend::{self, cuda};
use s1_mini::bundle::Bundle;
use s1_mini::{BackendKind, EngineConfig, Request, SynthParams};

fn prompt_ids(bundle: &std::path::Path) -> Result<(Vec<i64>, usize), String> {
    let p = bundle.join("golden/prompt_text.json");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?)
            .map_err(|e| e.to_string())?;
    let rows = v["ids"].as_array().ok_or("ids missing")?;
    let t = rows.first().and_then(|r| r.as_array()).map(|r| r.len()).ok_or("empty ids")?;
    let mut out = Vec::with_capacity(rows.len() * t);
    for r in rows {
        for x in r.as_array().ok_or("bad row")? {
            out.push(x.as_i64().ok_or("bad id")?);
        }
    }
    Ok((out, t))
}

fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs())).max(1e-6);
    a.iter().zip(b).fold(0f64, |m, (&x, &y)| m.max((f64::from(x) - f64::from(y)).abs())) / scale
}

/// Runs one step of the parity check; an error fails the step and the next one still runs.
fn step(ok: &mut bool, name: &str, f: impl FnOnce() -> Result<bool, String>) {
    match f() {
        Ok(true) => {}
        Ok(false) => {
            println!("FAIL {name}");
            *ok = false;
        }
        Err(e) => {
            println!("FAIL {name}: {e}");
            *ok = false;
        }
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Prefill, then `decode` single-token slow steps and the fast steps of the first frame, on
/// the CPU and the GPU side by side (the GPU fed the CPU's greedy choices, so errors do not
/// compound). Prints the max relative errors; passes if every argmax agrees.
fn logits_parity(
    dir: &std::path::Path,
    bundle: &Bundle,
    kind: BackendKind,
    label: &str,
) -> Result<bool, String> {
    let cfg = |k| EngineConfig::new(dir).with_backend(k);
    let (ids, t) = prompt_ids(dir)?;
    let cpu = backend::select(&cfg(BackendKind::OnnxCpu), bundle).map_err(err)?;
    let gpu = backend::select(&cfg(kind), bundle).map_err(err)?;
    if gpu.kind != kind {
        return Err(format!("{kind:?} did not start: {:?}", gpu.skipped));
    }
    let (mut rc, mut rg) = (cpu.t2s.start().map_err(err)?, gpu.t2s.start().map_err(err)?);
    let (oc, og) = (rc.slow(&ids, t).map_err(err)?, rg.slow(&ids, t).map_err(err)?);
    let mut ok = true;
    let argmax = |v: &[f32]| s1_mini::sampling::argmax(v);
    println!("RESULT {label}prefill_logits_max_rel_err={:.3e}", max_rel(&og.logits, &oc.logits));
    println!("RESULT {label}prefill_hidden_max_rel_err={:.3e}", max_rel(&og.hidden, &oc.hidden));
    if argmax(&og.logits) != argmax(&oc.logits) {
        println!("FAIL {label}prefill argmax differs");
        ok = false;
    }
    let k = bundle.info.model.num_codebooks;
    let mut hidden = oc.hidden.clone();
    let mut main = argmax(&oc.logits);
    let (mut ef, mut es) = (0f64, 0f64);
    for frame in 0..4 {
        rc.fast_reset().map_err(err)?;
        rg.fast_reset().map_err(err)?;
        let mut codes = vec![main as i64];
        let mut code = main as i64;
        for _pos in 0..k {
            let lc = rc.fast(&hidden, code).map_err(err)?;
            let lg = rg.fast(&hidden, code).map_err(err)?;
            ef = ef.max(max_rel(&lg, &lc));
            if argmax(&lc) != argmax(&lg) {
                ok = false;
            }
            code = argmax(&lc) as i64;
            codes.push(code);
        }
        codes.pop();
        if frame == 3 {
            break;
        }
        // The next slow step's tokens: [1+K, 1] = (main id, c0..c(K-1)).
        let mut step = vec![i64::from(bundle.info.tokens.semantic_begin) + main as i64];
        step.extend_from_slice(&codes[..k]);
        let (sc, sg) = (rc.slow(&step, 1).map_err(err)?, rg.slow(&step, 1).map_err(err)?);
        es = es.max(max_rel(&sg.logits, &sc.logits)).max(max_rel(&sg.hidden, &sc.hidden));
        if argmax(&sc.logits) != argmax(&sg.logits) {
            ok = false;
        }
        hidden = sc.hidden;
        main = argmax(&sc.logits);
    }
    println!("RESULT {label}fast_logits_max_rel_err={ef:.3e} (4 frames)");
    println!("RESULT {label}decode_step_max_rel_err={es:.3e} (3 single-token slow steps)");
    Ok(ok)
}

/// An int8 model's prefill both ways, fast numerics: through cuBLAS on the dequantised
/// matrices (`dequantize_i8_bf16`, bf16 activations) and through the int8 GEMV kernels (f32
/// activations, `S1_CUDA_NO_CUBLAS=1`). They differ by bf16 rounding only.
fn int8_prefill_paths(dir: &std::path::Path, bundle: &Bundle) -> Result<bool, String> {
    let (ids, t) = prompt_ids(dir)?;
    let cfg = EngineConfig::new(dir)
        .with_backend(BackendKind::Cuda)
        .with_cuda_weights(s1_mini::config::CudaWeights::Int8);
    let logits = || -> Result<Vec<f32>, String> {
        let sel = backend::select(&cfg, bundle).map_err(err)?;
        if sel.kind != BackendKind::Cuda {
            return Err(format!("cuda did not start: {:?}", sel.skipped));
        }
        let mut r = sel.t2s.start().map_err(err)?;
        Ok(r.slow(&ids, t).map_err(err)?.logits)
    };
    std::env::set_var("S1_CUDA_NUMERICS", "fast");
    let blas = logits();
    std::env::set_var("S1_CUDA_NO_CUBLAS", "1");
    let gemv = logits();
    std::env::remove_var("S1_CUDA_NO_CUBLAS");
    std::env::remove_var("S1_CUDA_NUMERICS");
    let (blas, gemv) = (blas?, gemv?);
    let e = max_rel(&blas, &gemv);
    let same_argmax = s1_mini::sampling::argmax(&blas) == s1_mini::sampling::argmax(&gemv);
    println!("RESULT int8_prefill_cublas_vs_gemv_max_rel_err={e:.3e} argmax_equal={same_argmax}");
    Ok(e < 5e-2 && same_argmax)
}

fn first_diff(a: &[Vec<i64>], b: &[Vec<i64>]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("first difference at frame {i}: {:?} vs {:?}", a[i], b[i]),
        None if a.len() != b.len() => format!("lengths {} vs {}", a.len(), b.len()),
        None => "identical".into(),
    }
}

fn parity(dir: PathBuf) -> Result<bool, String> {
    let mut ok = true;
    let bundle = Bundle::load(&dir, false).map_err(err)?;
    // 1. logits of the prefill, of single-token slow steps (split-K attention) and of every fast
    //    step, against ORT CPU: exact mode (an fp32 bundle: f32 KV caches) must agree to f32
    //    rounding; fast mode (bf16 KV caches, cuBLAS prefill: what fp16 bundles run) is reported.
    step(&mut ok, "logits parity (exact)", || logits_parity(&dir, &bundle, BackendKind::Cuda, ""));
    std::env::set_var("S1_CUDA_NUMERICS", "fast");
    let fast_mode = logits_parity(&dir, &bundle, BackendKind::Cuda, "fast_mode_");
    if let Err(e) = &fast_mode {
        println!("FAIL logits parity (fast mode): {e}");
        ok = false;
    }
    std::env::remove_var("S1_CUDA_NUMERICS");
    step(&mut ok, "int8 prefill: cuBLAS on dequantised weights vs int8 GEMV", || {
        int8_prefill_paths(&dir, &bundle)
    });
    let text = bundle_text(&dir)?;
    // 2. greedy and seeded sampled frames through the engine (the cuda backend makes whole frames
    //    on the device: frame graph, GPU sampling) against the onnx-cpu engine.
    let runs = [("greedy", greedy_params()), ("sampled", sampled_params())];
    let mut cpu = Vec::new();
    for (_, params) in &runs {
        cpu.push(frames_on(&dir, BackendKind::OnnxCpu, &text, params)?);
    }
    for ((label, params), fc) in runs.iter().zip(&cpu) {
        step(&mut ok, &format!("{label} frames through the engine"), || {
            let fg = frames_on(&dir, BackendKind::Cuda, &text, params)?;
            println!(
                "RESULT {label}_frames_identical={} ({}/{} frames agree; {})",
                *fc == fg,
                agreeing(fc, &fg),
                fc.len(),
                first_diff(fc, &fg)
            );
            Ok(*fc == fg)
        });
    }
    // 3. the same in fast mode, reported only (bf16 rounding may flip a near-tie).
    std::env::set_var("S1_CUDA_NUMERICS", "fast");
    for ((label, params), fc) in runs.iter().zip(&cpu) {
        match frames_on(&dir, BackendKind::Cuda, &text, params) {
            Ok(fg) => println!(
                "RESULT fast_mode_{label}_frames_agreeing={}/{}",
                agreeing(fc, &fg),
                fc.len()
            ),
            Err(e) => {
                println!("FAIL fast mode {label} frames: {e}");
                ok = false;
            }
        }
    }
    std::env::remove_var("S1_CUDA_NUMERICS");
    Ok(ok)
}

/// Greedy, fish-speech compat, 30 frames (the golden files' setting).
fn greedy_params() -> SynthParams {
    SynthParams::default().with_temperature(0.0).with_fish_speech_compat(true).with_max_frames(30)
}

/// fish-speech's default sampling with seed 1234, 30 frames.
fn sampled_params() -> SynthParams {
    SynthParams::default()
        .with_temperature(0.8)
        .with_top_p(0.8)
        .with_repetition_penalty(1.1)
        .with_seed(1234)
        .with_max_frames(30)
}

/// The frames of `text` through an engine on `kind`.
fn frames_on(
    dir: &std::path::Path,
    kind: BackendKind,
    text: &str,
    params: &SynthParams,
) -> Result<Vec<Vec<i64>>, String> {
    let engine = s1_mini::Engine::new(EngineConfig::new(dir).with_backend(kind)).map_err(err)?;
    Ok(s1_mini::internal::generate_frames(&engine, &Request::new(text).with_params(params.clone()))
        .map_err(err)?
        .0)
}

/// Frames equal from the start.
fn agreeing(a: &[Vec<i64>], b: &[Vec<i64>]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// onnx-cuda against onnx-cpu on a bundle: logits of prefill, decode and fast steps, then
/// greedy frames through the engine.
fn ort_parity(dir: PathBuf) -> Result<bool, String> {
    let mut ok = true;
    let bundle = Bundle::load(&dir, false).map_err(err)?;
    step(&mut ok, "onnx-cuda logits parity", || {
        logits_parity(&dir, &bundle, BackendKind::OnnxCuda, "onnx_cuda_")
    });
    let text = bundle_text(&dir)?;
    step(&mut ok, "onnx-cuda greedy frames", || {
        let fc = frames_on(&dir, BackendKind::OnnxCpu, &text, &greedy_params())?;
        let fg = frames_on(&dir, BackendKind::OnnxCuda, &text, &greedy_params())?;
        println!(
            "RESULT onnx_cuda_greedy_frames_identical={} ({} frames; {})",
            fc == fg,
            fc.len(),
            first_diff(&fc, &fg)
        );
        Ok(fc == fg)
    });
    // The codec on the GPU (CUDA execution provider) against onnx-cpu, on the same codes: the
    // onnx-cuda engine's codec, and the cuda engine's (which opens only the codec sessions).
    step(&mut ok, "codec on the GPU: PCM vs onnx-cpu", || {
        let engine = |k| s1_mini::Engine::new(EngineConfig::new(&dir).with_backend(k)).map_err(err);
        let cpu = engine(BackendKind::OnnxCpu)?;
        let codes =
            cpu.generate_codes(&Request::new(text).with_params(greedy_params())).map_err(err)?;
        let want = cpu.decode_codes(&codes).map_err(err)?.samples;
        let mut pass = true;
        for (label, kind) in [("onnx_cuda", BackendKind::OnnxCuda), ("cuda", BackendKind::Cuda)] {
            let got = engine(kind)?.decode_codes(&codes).map_err(err)?.samples;
            let e = if got.len() == want.len() { max_rel(&got, &want) } else { f64::INFINITY };
            println!(
                "RESULT {label}_codec_pcm_max_rel_err={e:.3e} ({} samples vs {})",
                got.len(),
                want.len()
            );
            pass &= e < 1e-2;
        }
        Ok(pass)
    });
    Ok(ok)
}

/// Transformer-only speed of any backend through the engine's frame loop (no codec, so it
/// works on LLM-only bundles): one request of 1 frame and one of `frames` + 1 frames, sampled
/// (0.8 / 0.8 / 1.1), `<|im_end|>` ignored. frames/s = frames / (t(frames+1) - t(1)).
fn t2s_bench(args: &[String]) -> Result<bool, String> {
    let dir = PathBuf::from(args.first().ok_or("t2s-bench BUNDLE BACKEND [WORDS] [FRAMES]")?);
    let kind: BackendKind = args.get(1).ok_or("backend missing")?.parse().map_err(err)?;
    let words: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(40);
    let frames: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(200);
    let t_load = std::time::Instant::now();
    let engine = s1_mini::Engine::new(EngineConfig::new(&dir).with_backend(kind)).map_err(err)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let text = vec!["speech"; words].join(" ");
    let params = |n| {
        SynthParams::default()
            .with_temperature(0.8)
            .with_top_p(0.8)
            .with_repetition_penalty(1.1)
            .with_seed(7)
            .with_max_frames(n)
    };
    let time = |n: usize| -> Result<(f64, usize), String> {
        let t0 = std::time::Instant::now();
        let (f, _) = s1_mini::internal::generate_frames(
            &engine,
            &s1_mini::internal::ignore_end(
                Request::new(text.as_str()).with_params(params(n as u32)),
            ),
        )
        .map_err(err)?;
        Ok((t0.elapsed().as_secs_f64(), f.len()))
    };
    time(4)?; // warm-up
    let (t1, _) = time(1)?;
    let (tn, n) = time(frames + 1)?;
    let fps = (n.saturating_sub(1)) as f64 / (tn - t1);
    let tag = format!("{kind}").replace('-', "_");
    println!("RESULT t2s_{tag}_load_s={load_s:.2}");
    println!("RESULT t2s_{tag}_prefill_plus_first_frame_ms={:.2} ({words} words)", t1 * 1e3);
    println!("RESULT t2s_{tag}_frames_per_s={fps:.1} ({n} frames)");
    println!("RESULT t2s_{tag}_x_real_time={:.2}", fps / 21.533);
    Ok(true)
}

fn bundle_text(dir: &std::path::Path) -> Result<String, String> {
    let p = dir.join("golden/params.json");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    v["text"].as_str().map(str::to_string).ok_or_else(|| "params.json has no text".into())
}

fn bench(args: &[String]) -> Result<bool, String> {
    let int8 = args.iter().any(|a| a == "--int8");
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let prompt = nums.first().copied().unwrap_or(256);
    let frames = nums.get(1).copied().unwrap_or(500);
    let cfg = cuda::layout::ModelConfig::s1_mini();
    let floor = cuda::plan::weight_bytes_per_frame(&cfg, if int8 { 1.0 } else { 2.0 });
    let r =
        s1_mini::internal::cuda::bench_random(&EngineConfig::new("."), cfg, prompt, frames, int8)
            .map_err(|e| e.to_string())?;
    let tag = format!("{}{}", if int8 { "int8" } else { "bf16" }, if r.pdl { "_pdl" } else { "" });
    println!("RESULT device={}", r.device);
    println!("RESULT {tag}_frames_per_s={:.1}", r.frames_per_s);
    println!("RESULT {tag}_x_real_time={:.2}", r.frames_per_s / 21.533);
    println!("RESULT {tag}_prefill{prompt}_plus_first_frame_ms={:.2}", r.first_frame_ms);
    println!("RESULT {tag}_weight_bytes={}", r.weight_bytes);
    println!("RESULT {tag}_device_bytes_in_use={}", r.used_device_bytes);
    println!("RESULT {tag}_achieved_GB_per_s={:.0}", floor * r.frames_per_s / 1e9);
    println!("RESULT graph_nodes_per_frame={}", r.graph_nodes);
    Ok(true)
}

fn selftest() -> Result<bool, String> {
    let checks = cuda::kernel_selftest(&EngineConfig::new(".")).map_err(|e| e.to_string())?;
    let mut ok = true;
    for c in &checks {
        let tag = if c.passed { "ok  " } else { "FAIL" };
        println!("{tag} {:<70} err={:.3e} tol={:.1e}", c.name, c.max_rel_err, c.tolerance);
        ok &= c.passed;
    }
    let passed = checks.iter().filter(|c| c.passed).count();
    println!("RESULT kernel_selftest_passed={passed}/{}", checks.len());
    Ok(ok)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("parity") => parity(PathBuf::from(
            args.get(1).cloned().unwrap_or_else(|| "tests/fixtures/tiny".into()),
        )),
        Some("bench") => bench(&args[1..]),
        Some("selftest") => selftest(),
        Some("ort-parity") => ort_parity(PathBuf::from(
            args.get(1).cloned().unwrap_or_else(|| "tests/fixtures/tiny".into()),
        )),
        Some("t2s-bench") => t2s_bench(&args[1..]),
        _ => Err("usage: cuda_check selftest | parity BUNDLE | ort-parity BUNDLE | t2s-bench BUNDLE BACKEND [WORDS] [FRAMES] | bench [--int8] [PROMPT_LEN] [FRAMES]".into()),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("cuda_check: a check failed");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("cuda_check: {e}");
            ExitCode::from(2)
        }
    }
}
