//! Bad input gives a specific error, never a panic.

mod common;

use common::*;
use s1_mini::{Codes, Error, Frames, Request, Status, SynthParams};

fn p() -> SynthParams {
    SynthParams::default().with_max_frames(8)
}

#[test]
fn empty_text_is_empty_text() {
    let e = tiny_engine();
    assert!(matches!(e.synthesize(&Request::new("").with_params(p())), Err(Error::EmptyText)));
    assert!(matches!(
        e.synthesize(&Request::new(" \n\t ").with_params(p())),
        Err(Error::EmptyText)
    ));
    assert!(matches!(e.stream(&Request::new("").with_params(p())), Err(Error::EmptyText)));
    assert_eq!(Error::EmptyText.status(), Status::EmptyText);
}

#[test]
fn one_megabyte_text_is_text_too_long() {
    let e = tiny_engine();
    let text = "a".repeat(1 << 20);
    match e.synthesize(&Request::new(&text).with_params(p())) {
        Err(err @ Error::TextTooLong { chars, .. }) => {
            assert_eq!(chars, 1 << 20);
            assert_eq!(err.status(), Status::TextTooLong);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_utf8_bytes_are_invalid_utf8() {
    match Request::from_utf8(b"ok \xff\xfe bad") {
        Err(err @ Error::InvalidUtf8 { arg: "text", valid_up_to: 3 }) => {
            assert_eq!(err.status(), Status::InvalidUtf8)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn prompt_longer_than_context_minus_frame_budget_is_prompt_too_long() {
    let e = tiny_engine();
    let ctx = e.info().model.max_seq_len;
    // The tiny tokenizer is byte-level for most text: about one token per character.
    let text = "word ".repeat(ctx / 5);
    let budget = e.context_frames(&Request::new(&text)).unwrap();
    match e.synthesize(
        &Request::new(&text).with_params(SynthParams::default().with_max_frames(budget + 1)),
    ) {
        Err(Error::PromptTooLong { prompt_tokens, max_frames, context_tokens }) => {
            assert_eq!(context_tokens, ctx);
            assert_eq!(max_frames, budget + 1);
            assert!(prompt_tokens + max_frames as usize > ctx);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn out_of_range_params_are_invalid_argument_naming_the_parameter() {
    let e = tiny_engine();
    for (params, name) in [
        (p().with_temperature(2.5), "temperature"),
        (p().with_top_p(0.0), "top_p"),
        (p().with_repetition_penalty(0.0), "repetition_penalty"),
        (p().with_max_frames(0), "max_frames"),
        (p().with_max_frames(u32::MAX), "max_frames"),
        (p().with_chunk_frames(1, 0), "chunk_frames"),
    ] {
        match e.synthesize(&Request::new("hello").with_params(params.clone())) {
            Err(Error::InvalidArgument { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn codes_out_of_range_or_wrong_shape_are_invalid_argument() {
    let e = tiny_engine();
    let k = e.info().model.num_codebooks;
    let big = Codes::new(k, Frames(1), vec![1 << 20; k]).unwrap();
    assert!(matches!(e.decode_codes(&big), Err(Error::InvalidArgument { name: "codes", .. })));
    let neg = Codes::new(k, Frames(1), vec![-1; k]).unwrap();
    assert!(matches!(e.decode_codes(&neg), Err(Error::InvalidArgument { .. })));
    let few = Codes::new(3, Frames(1), vec![0; 3]).unwrap();
    assert!(matches!(e.decode_codes(&few), Err(Error::InvalidArgument { .. })));
    assert!(Codes::new(k, Frames(2), vec![0; 3]).is_err());
}

#[test]
fn synthesis_produces_audio_at_the_codec_rate() {
    let e = tiny_engine();
    let a = e
        .synthesize(
            &Request::new("Hello.")
                .with_params(SynthParams::default().with_max_frames(5).with_seed(9)),
        )
        .unwrap();
    assert_eq!(a.sample_rate_hz, 44_100);
    assert!(a.samples.len() <= 5 * e.info().codec.frame_samples);
    assert!(a.samples.iter().all(|s| s.is_finite()));
}
