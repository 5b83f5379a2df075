//! `s1_synthesize`: text in, one buffer of PCM out.
use std::ffi::c_char;

use super::convert::{self, flag};
use super::engine::s1_engine;
use super::guard;
use super::voice::{s1_voice, voices_arg};
use crate::{Engine, Error, Request, Status, SynthParams, Voice};

/// Options for one synthesis. Fill it with `s1_synth_params_default()`, then change fields.
/// Passing NULL where a `const s1_synth_params *` is taken means "the defaults".
#[repr(C)]
#[derive(Clone, Copy)]
pub struct s1_synth_params {
    /// Size of this struct in bytes, set by `s1_synth_params_default()`.
    pub struct_size: u32,
    /// Softmax temperature, in [0, 2]; 0 = greedy. Default 0.8.
    pub temperature: f32,
    /// Nucleus mass kept, in (0, 1]. Default 0.8.
    pub top_p: f32,
    /// Repetition penalty over a 16-frame window, in (0, 2); 1 = none. Default 1.1.
    pub repetition_penalty: f32,
    /// Maximum audio length in frames (21.53 frames per second of audio), at least 1; generation
    /// stops earlier at end-of-speech. Default 1024 (about 47.6 s).
    pub max_frames: u32,
    /// Frames in the first streamed chunk (small = earlier first audio), at least 1. Default 4.
    pub first_chunk_frames: u32,
    /// Frames in each later streamed chunk, at least 1. Default 16.
    pub chunk_frames: u32,
    /// Seed of the sampler's random generator; equal seeds, text and params give equal audio.
    /// Default 0.
    pub seed: u64,
    /// 1 = reproduce fish-speech exactly (its repetition-penalty bug and bf16 rounding included),
    /// 0 = fixed behaviour. Default 0.
    pub fish_speech_compat: u8,
    /// Reference voices to speak in (from `s1_voice_create`/`s1_voice_load`), in prompt order;
    /// NULL with `n_voices` = 0 (the default) for the model's own voice. The voices must stay
    /// alive until the call (or stream start) returns. Added in 0.2; older structs read as none.
    pub voices: *const *const s1_voice,
    /// Number of entries in `voices`, 0 to 64. Default 0.
    pub n_voices: usize,
    /// 1 = reuse the voices' cached prompt prefix (computed once per engine and voice list;
    /// faster first audio), 0 = prefill the whole prompt every time. Same audio either way.
    /// Default 1.
    pub prefix_cache: u8,
    /// Reserved; `s1_synth_params_default()` sets it to 0. It keeps the fields below past the end
    /// of the 0.2 struct (whose `struct_size` included this tail padding), so bytes an older
    /// caller left there are never read as them.
    pub _reserved0: [u8; 7],
    /// 1 = special-token names typed in the text and in the voices' transcripts
    /// ("<|im_end|>", "<|semantic:N|>", ...) become those control tokens, as fish-speech parses
    /// them; 0 (the default) = they are plain text, so user text cannot end the utterance or
    /// forge audio tokens. Set 1 only for trusted text. Added in 0.3; older structs read as 0.
    pub parse_special_tokens: u8,
}

/// Size of the first published layout (before `voices`).
const PARAMS_V1_SIZE: usize = std::mem::offset_of!(s1_synth_params, voices);

impl s1_synth_params {
    fn from_rust(p: &SynthParams) -> Self {
        s1_synth_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            temperature: p.temperature,
            top_p: p.top_p,
            repetition_penalty: p.repetition_penalty,
            max_frames: p.max_frames,
            first_chunk_frames: p.first_chunk_frames,
            chunk_frames: p.chunk_frames,
            seed: p.seed,
            fish_speech_compat: p.fish_speech_compat as u8,
            voices: std::ptr::null(),
            n_voices: 0,
            prefix_cache: p.prefix_cache as u8,
            _reserved0: [0; 7],
            parse_special_tokens: p.parse_special_tokens as u8,
        }
    }

    fn to_rust(self) -> SynthParams {
        SynthParams {
            temperature: self.temperature,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            max_frames: self.max_frames,
            seed: self.seed,
            fish_speech_compat: flag(self.fish_speech_compat),
            first_chunk_frames: self.first_chunk_frames,
            chunk_frames: self.chunk_frames,
            prefix_cache: flag(self.prefix_cache),
            parse_special_tokens: flag(self.parse_special_tokens),
        }
    }
}

/// Reads an optional params pointer with its voices: NULL = defaults, no voices.
///
/// # Safety
/// `params` must be NULL or point to an `s1_synth_params` filled by `s1_synth_params_default()`;
/// its `voices` NULL or valid for `n_voices` reads of voice handles.
pub(crate) unsafe fn params_and_voices_arg(
    params: *const s1_synth_params,
) -> Result<(SynthParams, Vec<Voice>), Error> {
    let defaults = SynthParams::default();
    if params.is_null() {
        return Ok((defaults, Vec::new()));
    }
    // SAFETY: forwarded contract.
    let c = unsafe {
        convert::options_arg(
            params,
            s1_synth_params::from_rust(&defaults),
            PARAMS_V1_SIZE,
            convert::field_spans!(s1_synth_params;
                struct_size, temperature, top_p, repetition_penalty, max_frames,
                first_chunk_frames, chunk_frames, seed, fish_speech_compat, voices, n_voices,
                prefix_cache, _reserved0, parse_special_tokens),
            "params",
        )
    }?;
    // SAFETY: forwarded contract.
    let voices = unsafe { voices_arg(c.voices, c.n_voices) }?;
    Ok((c.to_rust(), voices))
}

/// Fills `*out_params` with the defaults (the Rust API's `SynthParams::default()`), including
/// `struct_size`. Returns `S1_STATUS_NULL_POINTER` when `out_params` is NULL.
///
/// # Safety
/// `out_params` must be NULL or point to a writable `s1_synth_params`.
#[no_mangle]
pub unsafe extern "C" fn s1_synth_params_default(out_params: *mut s1_synth_params) -> Status {
    guard(|| {
        let p = s1_synth_params::from_rust(&SynthParams::default());
        // SAFETY: the caller passes NULL or a writable s1_synth_params.
        unsafe { convert::write_out(out_params, p, "out_params") }
    })
}

/// PCM audio produced by `s1_synthesize`, owned by the library; release with `s1_audio_free`.
/// Read the fields; do not change them.
#[repr(C)]
pub struct s1_audio {
    /// `num_samples` samples, f32 mono, nominal range [-1, 1].
    pub samples: *const f32,
    /// Number of samples (not bytes).
    pub num_samples: usize,
    /// Sample rate in Hz (44100 for S1-mini).
    pub sample_rate_hz: u32,
}

/// What the registry owns: the public struct first, then the buffer it points into.
#[repr(C)]
struct AudioBox {
    public: s1_audio,
    samples: Vec<f32>,
}

// SAFETY: `public.samples` points into `samples`, which the box owns and never mutates; nothing
// is shared with another owner, so moving or sharing the box across threads is sound.
unsafe impl Send for AudioBox {}
// SAFETY: as above; the box is immutable after construction.
unsafe impl Sync for AudioBox {}

/// Synthesises `text` (UTF-8, NUL-terminated) and stores the whole PCM buffer in `*out_audio`.
///
/// Blocks until the audio is complete. `params` may be NULL (defaults). Safe to call from several
/// threads on one engine. Release the result with `s1_audio_free`.
///
/// Not cancellable: it runs until end-of-speech or `max_frames`. For synthesis that can be
/// stopped, use a stream (`s1_stream_start`, then `s1_stream_run` or `s1_stream_next`, with
/// `s1_stream_cancel` from any thread).
///
/// # Safety
/// `engine` must be NULL or a handle from `s1_engine_new`; `text` NULL or NUL-terminated;
/// `params` NULL or filled by `s1_synth_params_default()`; `out_audio` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn s1_synthesize(
    engine: *const s1_engine,
    text: *const c_char,
    params: *const s1_synth_params,
    out_audio: *mut *mut s1_audio,
) -> Status {
    guard(|| {
        let engine = convert::handle_ref::<Engine, s1_engine>(engine, "engine")?;
        // SAFETY: forwarded contract.
        let text = unsafe { convert::utf8_arg(text, "text") }?;
        // SAFETY: forwarded contract.
        let (params, voices) = unsafe { params_and_voices_arg(params) }?;
        if out_audio.is_null() {
            return Err(Error::NullPointer { arg: "out_audio" });
        }
        let audio =
            engine.synthesize(&Request::new(text).with_voices(voices).with_params(params))?;
        let mut b = Box::new(AudioBox {
            public: s1_audio {
                samples: std::ptr::null(),
                num_samples: audio.samples.len(),
                sample_rate_hz: audio.sample_rate_hz,
            },
            samples: audio.samples,
        });
        b.public.samples = b.samples.as_ptr();
        let ptr = convert::into_owned_ptr::<AudioBox, s1_audio>(b)?;
        // SAFETY: checked non-null above; writable per contract.
        unsafe { convert::write_out(out_audio, ptr, "out_audio") }
    })
}

/// Releases audio from `s1_synthesize`. NULL is a no-op; a pointer that is not live audio
/// (already freed, or never returned by this library) returns `S1_STATUS_INVALID_HANDLE` and is
/// not touched.
#[no_mangle]
pub extern "C" fn s1_audio_free(audio: *mut s1_audio) -> Status {
    guard(|| convert::free_owned_ptr::<AudioBox, s1_audio>(audio, "audio"))
}
