//! GPU checks of the native CUDA backend, run by `bench/gpu_check.sh` on a GPU host
//! (`cargo build --release --features cuda --example cuda_check`).
//!
//!   cuda_check parity BUNDLE       greedy frames cuda == onnx-cpu, logits max relative error,
//!                                  on-device sampler == CPU sampler (same seed)
//!   cuda_check bench [--int8] [PROMPT_LEN] [FRAMES]
//!                                  S1-mini shapes, random weights, frame graph replays
//!
//! Exit status 0 = every check passed. Prints one `RESULT key=value` line per figure.

use std::path::PathBuf;
use std::process::ExitCode;

use s1_mini::backend::{self, cuda};
use s1_mini::bundle::Bundle;
use s1_mini::sampling::SamplingParams;
use s1_mini::{BackendKind, EngineConfig, SynthParams};

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

fn parity(dir: PathBuf) -> Result<bool, String> {
    let mut ok = true;
    let bundle = Bundle::load(&dir, false).map_err(|e| e.to_string())?;
    let cfg = |k| EngineConfig::new(&dir).with_backend(k);
    // 1. logits and hidden after the prompt, and every fast step of the first frame.
    let (ids, t) = prompt_ids(&dir)?;
    let cpu = backend::select(&cfg(BackendKind::OnnxCpu), &bundle).map_err(|e| e.to_string())?;
    let gpu = backend::select(&cfg(BackendKind::Cuda), &bundle).map_err(|e| e.to_string())?;
    let (mut rc, mut rg) =
        (cpu.t2s.start().map_err(|e| e.to_string())?, gpu.t2s.start().map_err(|e| e.to_string())?);
    let (oc, og) = (
        rc.slow(&ids, t).map_err(|e| e.to_string())?,
        rg.slow(&ids, t).map_err(|e| e.to_string())?,
    );
    let el = max_rel(&og.logits, &oc.logits);
    let eh = max_rel(&og.hidden, &oc.hidden);
    println!("RESULT prefill_logits_max_rel_err={el:.3e}");
    println!("RESULT prefill_hidden_max_rel_err={eh:.3e}");
    let argmax = |v: &[f32]| s1_mini::sampling::argmax(v);
    if argmax(&og.logits) != argmax(&oc.logits) {
        println!("FAIL prefill argmax differs");
        ok = false;
    }
    rc.fast_reset().map_err(|e| e.to_string())?;
    rg.fast_reset().map_err(|e| e.to_string())?;
    let mut ef = 0f64;
    let mut code = 0i64;
    for _pos in 0..bundle.info.model.num_codebooks {
        let lc = rc.fast(&oc.hidden, code).map_err(|e| e.to_string())?;
        let lg = rg.fast(&oc.hidden, code).map_err(|e| e.to_string())?;
        ef = ef.max(max_rel(&lg, &lc));
        code = argmax(&lc) as i64;
    }
    println!("RESULT fast_logits_max_rel_err={ef:.3e}");
    // 2. greedy frames through the engine's frame loop (CPU sampling on GPU logits).
    let greedy = SynthParams::default()
        .with_temperature(0.0)
        .with_fish_speech_compat(true)
        .with_max_frames(30);
    let e_cpu = s1_mini::Engine::new(cfg(BackendKind::OnnxCpu)).map_err(|e| e.to_string())?;
    let e_gpu = s1_mini::Engine::new(cfg(BackendKind::Cuda)).map_err(|e| e.to_string())?;
    let text = bundle_text(&dir)?;
    let (fc, _) = e_cpu.generate_frames(&text, &greedy).map_err(|e| e.to_string())?;
    let (fg, _) = e_gpu.generate_frames(&text, &greedy).map_err(|e| e.to_string())?;
    let same = fc == fg;
    println!("RESULT greedy_frames_identical={same} ({} frames)", fc.len());
    ok &= same;
    // 3. the on-device sampler against the CPU sampler, same seed (default mode, sampled).
    let sp = SamplingParams { temperature: 0.8, top_p: 0.8, repetition_penalty: 1.1 };
    let sampled = SynthParams::default()
        .with_temperature(sp.temperature)
        .with_top_p(sp.top_p)
        .with_repetition_penalty(sp.repetition_penalty)
        .with_seed(1234)
        .with_max_frames(30);
    let (fs, _) = e_cpu.generate_frames(&text, &sampled).map_err(|e| e.to_string())?;
    let fd = cuda::generate_on_device(
        &cfg(BackendKind::Cuda),
        &bundle,
        &ids,
        t,
        31,
        sp,
        1234,
        false,
        false,
    )
    .map_err(|e| e.to_string())?;
    let agree = fs.iter().zip(&fd).take_while(|(a, b)| a == b).count();
    println!(
        "RESULT device_sampler_frames_agreeing={agree}/{} (cpu {} frames)",
        fd.len(),
        fs.len()
    );
    let gd = cuda::generate_on_device(
        &cfg(BackendKind::Cuda),
        &bundle,
        &ids,
        t,
        31,
        SamplingParams { temperature: 0.0, ..sp },
        0,
        true,
        false,
    )
    .map_err(|e| e.to_string())?;
    let n = gd.len().min(fc.len());
    let gsame = n > 0 && gd[..n] == fc[..n];
    println!(
        "RESULT device_greedy_frames_identical={gsame} (first {n} frames; device {}, cpu {})",
        gd.len(),
        fc.len()
    );
    ok &= gsame;
    Ok(ok)
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
    let r = cuda::bench_random(&EngineConfig::new("."), cfg, prompt, frames, int8)
        .map_err(|e| e.to_string())?;
    let tag = if int8 { "int8" } else { "bf16" };
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("parity") => parity(PathBuf::from(
            args.get(1).cloned().unwrap_or_else(|| "tests/fixtures/tiny".into()),
        )),
        Some("bench") => bench(&args[1..]),
        _ => Err("usage: cuda_check parity BUNDLE | bench [--int8] [PROMPT_LEN] [FRAMES]".into()),
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
