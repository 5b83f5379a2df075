//! Voices on the tiny bundle: codec encode parity with fish-speech's DAC.encode, resampled and
//! stereo input, the voice file round trip, synthesis with a voice against fish-speech's
//! generate on the ContentSequence prompt, the prefix cache, and the input limits.

mod common;

use common::*;
use s1_mini::{audio, npy, Codes, Error, Frames, Request, SynthParams, Voice};

fn golden_i64(name: &str) -> (Vec<usize>, Vec<i64>) {
    let path = golden(name);
    let a = npy::read(&path).unwrap();
    let shape = a.shape.clone();
    (shape, a.into_i64(&path).unwrap())
}

fn encode_signal() -> Vec<f32> {
    npy::read(&golden("encode_pcm.npy")).unwrap().into_f32()
}

#[test]
fn encode_matches_fish_speech_dac_encode_exactly() {
    let engine = tiny_engine();
    let (shape, want) = golden_i64("encode_codes.npy");
    let codes = engine.encode_pcm(&encode_signal(), 44_100).unwrap();
    assert_eq!(codes.num_codebooks(), shape[0]);
    assert_eq!(codes.frames().0, shape[1]);
    assert_eq!(codes.as_slice(), &want[..]);
}

#[test]
fn encode_resamples_and_downmixes_any_input() {
    let engine = tiny_engine();
    let x = encode_signal();
    // 44.1 kHz → 22.05 kHz → stereo → back through create_voice's resampler: same frame count.
    let half = audio::resample(&x, 44_100, 22_050).unwrap();
    let stereo: Vec<f32> = half.iter().flat_map(|&s| [s, s]).collect();
    let mono = audio::downmix(&stereo, 2).unwrap();
    assert_eq!(mono, half);
    let codes = engine.encode_pcm(&mono, 22_050).unwrap();
    assert_eq!(codes.frames().0, 20);
    // A WAV file at 48 kHz, stereo.
    let dir = std::env::temp_dir().join(format!("s1mini-voice-wav-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav48 = audio::resample(&x, 44_100, 48_000).unwrap();
    let path = dir.join("ref48.wav");
    audio::write_wav(
        &path,
        &audio::Audio { samples: wav48, sample_rate_hz: 48_000 },
        audio::WavFormat::Float32,
    )
    .unwrap();
    let wav = audio::read_wav(&path).unwrap();
    let v = engine.create_voice(&wav.samples, wav.sample_rate_hz, "A reference.").unwrap();
    assert_eq!(v.codes().frames().0, 20);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn encode_bad_input_is_a_clear_error() {
    let engine = tiny_engine();
    let msg = |r: Result<Codes, Error>| match r {
        Err(e @ Error::InvalidArgument { .. }) => e.to_string(),
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert!(msg(engine.encode_pcm(&[], 44_100)).contains("no samples"));
    let mut x = vec![0.1f32; 1000];
    x[17] = f32::NAN;
    assert!(msg(engine.encode_pcm(&x, 44_100)).contains("sample 17 is NaN"));
    x[17] = f32::INFINITY;
    assert!(msg(engine.encode_pcm(&x, 44_100)).contains("sample 17 is inf"));
    assert!(msg(engine.encode_pcm(&[0.0; 10], 0)).contains("sample_rate_hz"));
    // 10 minutes at 16 kHz: refused before any work (the tiny codec encodes ≈ 5.9 s).
    let ten_min = vec![0.0f32; 16_000 * 600];
    let m = msg(engine.encode_pcm(&ten_min, 16_000));
    assert!(m.contains("600.0 s of audio is longer than the codec encodes"), "{m}");
    let max = engine.info().codec.max_encode_frames;
    assert_eq!(max, 128);
    // Exactly the limit passes; one sample more does not.
    let fs = engine.info().codec.frame_samples;
    assert_eq!(engine.encode_pcm(&vec![0.01; max * fs], 44_100).unwrap().frames().0, max);
    assert!(engine.encode_pcm(&vec![0.01; max * fs + 1], 44_100).is_err());
    let e = engine.create_voice(&[0.0; 100], 44_100, " ").unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { name: "transcript", .. }));
}

#[test]
fn voice_save_load_round_trip_identical() {
    let engine = tiny_engine();
    let v = engine.create_voice(&encode_signal(), 44_100, "The reference text.").unwrap();
    let path = std::env::temp_dir().join(format!("s1mini-voice-{}.s1v", std::process::id()));
    v.save(&path).unwrap();
    let w = Voice::load(&path).unwrap();
    assert_eq!(v, w);
    assert_eq!(std::fs::read(&path).unwrap(), w.to_bytes());
    // Truncated and corrupt files.
    let bytes = v.to_bytes();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let e = Voice::load(&path).unwrap_err();
    assert_eq!(e.status(), s1_mini::Status::VoiceInvalid);
    assert!(e.to_string().contains("truncated"), "{e}");
    let mut bad = bytes.clone();
    bad[70] ^= 0x40;
    std::fs::write(&path, &bad).unwrap();
    assert!(Voice::load(&path).unwrap_err().to_string().contains("sha256"));
    std::fs::write(&path, b"RIFF....WAVEfmt ").unwrap();
    assert!(matches!(Voice::load(&path), Err(Error::VoiceInvalid { .. })));
    let _ = std::fs::remove_file(&path);
}

fn golden_voice(engine: &s1_mini::Engine) -> Voice {
    let g = read_json(&golden("prompt_ref1.json"));
    let r = &g["references"][0];
    engine.voice_from_codes(json_codes(&r["codes"]), r["text"].as_str().unwrap()).unwrap()
}

fn greedy_ref1_params() -> SynthParams {
    let params = read_json(&golden("params.json"));
    let g = &params["greedy_ref1"];
    SynthParams::default()
        .with_temperature(g["temperature"].as_f64().unwrap() as f32)
        .with_top_p(g["top_p"].as_f64().unwrap() as f32)
        .with_repetition_penalty(g["repetition_penalty"].as_f64().unwrap() as f32)
        .with_max_frames(params["max_new_tokens"].as_u64().unwrap() as u32)
        .with_fish_speech_compat(true)
}

#[test]
fn voice_synthesis_matches_fish_speech_generate_with_reference() {
    let engine = tiny_engine();
    let voice = golden_voice(&engine);
    let text = read_json(&golden("params.json"))["text"].as_str().unwrap().to_string();
    let (shape, want) = golden_i64("greedy_ref1_frames.npy");
    let want: Vec<Vec<i64>> = want.chunks(shape[1]).map(|c| c.to_vec()).collect();
    for cache in [false, true, true] {
        let p = greedy_ref1_params().with_prefix_cache(cache);
        let (frames, _) = s1_mini::internal::generate_frames(
            &engine,
            &Request::new(&text).with_voices([voice.clone()]).with_params(p.clone()),
        )
        .unwrap();
        assert_eq!(frames, want, "prefix_cache {cache}");
    }
}

#[test]
fn prefix_cached_synthesis_equals_uncached() {
    let engine = tiny_engine();
    let v1 = golden_voice(&engine);
    let v2 = engine.create_voice(&encode_signal(), 44_100, "第二段参考音频。").unwrap();
    for voices in [vec![v1.clone()], vec![v1, v2]] {
        let p = SynthParams::default().with_seed(7).with_max_frames(20);
        let (a, la) = s1_mini::internal::generate_frames(
            &engine,
            &Request::new("Cached or not.")
                .with_voices(voices.iter().cloned())
                .with_params(p.clone().with_prefix_cache(false)),
        )
        .unwrap();
        // Twice cached: the first call fills the cache, the second reuses it.
        for _ in 0..2 {
            let (b, lb) = s1_mini::internal::generate_frames(
                &engine,
                &Request::new("Cached or not.")
                    .with_voices(voices.iter().cloned())
                    .with_params(p.clone()),
            )
            .unwrap();
            assert_eq!(a, b);
            let d = la.iter().zip(&lb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(d <= 1e-4, "prefill logits differ by {d}");
        }
    }
    // Streams use it too, and equal the one-shot audio.
    let v = golden_voice(&engine);
    let p = SynthParams::default().with_seed(3).with_max_frames(12);
    let one = engine
        .synthesize(&Request::new("Streamed.").with_voices([v.clone()]).with_params(p.clone()))
        .unwrap();
    let mut s =
        engine.stream(&Request::new("Streamed.").with_voices([v]).with_params(p.clone())).unwrap();
    let mut pcm = Vec::new();
    while let Some(c) = s.next_chunk().unwrap() {
        pcm.extend(c.samples);
    }
    // Through the stateful step graph: equal to float rounding, not bitwise.
    assert_eq!(pcm.len(), one.samples.len());
    let peak = one.samples.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let d = pcm.iter().zip(&one.samples).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(d <= 1e-5 * peak, "stream vs one-shot: max diff {d}, peak {peak}");
}

#[test]
fn voice_for_another_model_is_refused() {
    let engine = tiny_engine();
    let codes = Codes::new(3, Frames(2), vec![0; 6]).unwrap();
    let v = Voice::new(codes, "x").unwrap();
    let e = engine
        .synthesize(&Request::new("Hi.").with_voices([v]).with_params(SynthParams::default()))
        .unwrap_err();
    assert!(e.to_string().contains("codebooks"), "{e}");
    let codes = Codes::new(10, Frames(1), vec![5000; 10]).unwrap();
    assert!(engine.voice_from_codes(codes, "x").is_err());
}
