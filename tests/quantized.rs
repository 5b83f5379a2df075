//! Weight-only int8 / int4 bundles on onnx-cpu. The quantised tiny bundles are made here by the
//! exporter's quantiser (`python -m s1mini_export.quantize`, from the project's .venv, which
//! scripts/setup-python.sh creates), from the committed fp32 fixture.

mod common;

use common::*;
use s1_mini::{BackendKind, Engine, Error, Request, SynthParams};

fn rel_rmse(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        num += f64::from(x - y).powi(2);
        den += f64::from(*x).powi(2);
    }
    (num / den).sqrt()
}

#[test]
fn quantized_bundles_run_on_onnx_cpu_close_to_fp32() {
    let text = "Hello there, general.";
    let p = SynthParams::default().with_temperature(0.0).with_max_frames(12);
    let req = s1_mini::internal::ignore_end(Request::new(text).with_params(p));
    let fp32 = Engine::new(config(&tiny_dir()).with_backend(BackendKind::OnnxCpu)).unwrap();
    let (ref_frames, ref_logits) = s1_mini::internal::generate_frames(&fp32, &req).unwrap();
    for (precision, bound) in [("int8", 0.03), ("int4", 0.25)] {
        let dir = quantized(precision);
        let e = Engine::new(config(&dir).with_backend(BackendKind::OnnxCpu)).unwrap();
        assert_eq!(e.info().precision.as_str(), precision);
        let q = e.info().quantization.clone().unwrap();
        assert_eq!((q.layer_bits, q.head_bits), (if precision == "int8" { 8 } else { 4 }, 8));
        let (frames, logits) = s1_mini::internal::generate_frames(&e, &req).unwrap();
        let rel = rel_rmse(&ref_logits, &logits);
        assert!(rel > 0.0 && rel < bound, "{precision}: prefill logits rel RMSE {rel}");
        assert_eq!(frames.len(), ref_frames.len());
        // Codes in range: the quantised graphs still give a valid frame every step.
        let audio = e.synthesize(&req).unwrap();
        assert_eq!(audio.samples.len(), 12 * e.info().codec.frame_samples);
        assert!(audio.samples.iter().all(|x| x.is_finite()));
    }
}

/// Signal-to-noise ratio of `got` against `reference`, in dB.
fn snr_db(reference: &[f32], got: &[f32]) -> f64 {
    10.0 * (1.0 / rel_rmse(reference, got).powi(2)).log10()
}

#[test]
fn an_int8_codec_decodes_close_to_the_fp32_one_one_shot_and_streamed() {
    // tools/export/tests/test_quantize.py measures the same bundle through Python's ONNX
    // Runtime (21.8 dB on these codes); here the engine's path: the step graph in chunks with
    // onnx-cpu's Snake kernel, one-shot and streamed.
    let path = golden("codec_codes.npy");
    let a = s1_mini::npy::read(&path).unwrap();
    let (k, t) = (a.shape[a.shape.len() - 2], a.shape[a.shape.len() - 1]);
    let codes = s1_mini::Codes::new(k, s1_mini::Frames(t), a.into_i64(&path).unwrap()).unwrap();
    let fp32 = Engine::new(config(&tiny_dir()).with_backend(BackendKind::OnnxCpu)).unwrap();
    let reference = fp32.decode_codes(&codes).unwrap().samples;
    let e =
        Engine::new(config(&quantized_codec_int8()).with_backend(BackendKind::OnnxCpu)).unwrap();
    let q = e.info().quantization.clone().unwrap();
    assert_eq!(q.codec_convs, s1_mini::bundle::CodecConvs::Int8);
    let one_shot = e.decode_codes(&codes).unwrap().samples;
    let snr = snr_db(&reference, &one_shot);
    println!("int8 codec vs fp32 (engine, golden codes): SNR {snr:.1} dB");
    assert!((18.0..80.0).contains(&snr), "SNR {snr} dB");
    let mut stream = e.codec_stream(true).unwrap();
    let mut streamed = Vec::new();
    for start in (0..t).step_by(5) {
        let end = (start + 5).min(t);
        streamed.extend(stream.push(&codes.slice_frames(start, end)).unwrap());
    }
    let d = max_abs_diff(&one_shot, &streamed);
    assert!(d <= 1e-5, "streamed vs one-shot through the int8 codec: max |diff| {d}");
}

#[test]
fn quantized_bundle_weight_bytes_are_the_quantised_matrices() {
    let fp32 = s1_mini::bundle::Bundle::load(&tiny_dir(), false).unwrap().info;
    let int4 = s1_mini::bundle::Bundle::load(&quantized("int4"), true).unwrap().info;
    let int8 = s1_mini::bundle::Bundle::load(&quantized("int8"), true).unwrap().info;
    let (f, q4, q8) = (
        s1_mini::bench::weight_bytes_per_frame(&fp32).unwrap(),
        s1_mini::bench::weight_bytes_per_frame(&int4).unwrap(),
        s1_mini::bench::weight_bytes_per_frame(&int8).unwrap(),
    );
    // fp32: 4 bytes a weight; int8: 1 + 4/32 (scales); int4: 0.5 + 4/32, heads at 8 bits.
    assert!(q8 * 3 < f && q4 < q8, "fp32 {f}, int8 {q8}, int4 {q4}");
}

#[test]
fn quantized_bundle_is_refused_by_gpu_backends_with_the_reason() {
    let dir = quantized("int4");
    for kind in [BackendKind::Cuda, BackendKind::OnnxCuda, BackendKind::TensorRt] {
        match Engine::new(config(&dir).with_backend(kind)) {
            Err(Error::BackendUnavailable { reason, .. }) => {
                // Either the machine has no such backend, or it names the bundle's precision.
                assert!(!reason.is_empty(), "{kind}");
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
    // auto on a CPU-only machine lands on onnx-cpu.
    let e = Engine::new(config(&dir)).unwrap();
    assert_eq!(e.backend(), BackendKind::OnnxCpu);
}

#[test]
fn quantized_graphs_from_the_model_cache_compute_what_the_bundle_does() {
    // ONNX Runtime 1.31.1 loads saved MatMulNBits packs wrongly; the cache must not keep them.
    let text = "Hello there, general.";
    let p = SynthParams::default().with_temperature(0.0).with_max_frames(4);
    let req = s1_mini::internal::ignore_end(Request::new(text).with_params(p));
    let dir = quantized("int4");
    let cache = std::env::temp_dir().join(format!("s1-quantized-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let load = |on: bool| {
        let c = config(&dir)
            .with_backend(BackendKind::OnnxCpu)
            .with_cache_dir(&cache)
            .with_optimized_model_cache(on);
        s1_mini::internal::generate_frames(&Engine::new(c).unwrap(), &req).unwrap()
    };
    let want = load(false);
    for round in ["saving", "cached"] {
        let (frames, logits) = load(true);
        assert_eq!(frames, want.0, "{round}");
        let rel = rel_rmse(&want.1, &logits);
        assert!(rel <= 1e-6, "{round}: logits rel RMSE {rel}");
    }
    let _ = std::fs::remove_dir_all(&cache);
}
