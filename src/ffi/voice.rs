//! `s1_voice_*`: reference voices (codes + transcript) for voice cloning, made from PCM, saved to
//! and loaded from voice files (`docs/voice-format.md`), passed to synthesis through
//! `s1_synth_params.voices`.
use std::ffi::c_char;
use std::path::Path;
use std::sync::Arc;

use super::convert;
use super::engine::s1_engine;
use super::guard;
use crate::{audio, Engine, Error, Status, Voice};

/// A reference voice: the codec codes of a reference recording and its transcript. Opaque and
/// immutable.
///
/// Thread safety: a voice may be shared by any number of threads and used by concurrent
/// syntheses. Created by `s1_voice_create` or `s1_voice_load`, released by `s1_voice_free`.
pub struct s1_voice {
    _private: [u8; 0],
}

/// Makes a voice from reference audio and its transcript; `*out_voice` receives it.
///
/// `samples`: `num_frames × channels` f32 samples, interleaved when `channels` > 1 (mixed down
/// to mono), nominal range [-1, 1], at `sample_rate_hz` (8000 to 384000, checked before anything is computed; resampled to the codec's
/// 44100 Hz with a windowed-sinc filter). `transcript`: UTF-8, NUL-terminated, what the audio
/// says. 10–30 s of clean speech is typical. Errors (`S1_STATUS_INVALID_ARGUMENT`, with the
/// reason in `s1_last_error()`): no samples, a NaN or infinite sample, an empty transcript, or
/// audio longer than the codec encodes in one call (about 190 s for S1-mini; never truncated
/// silently). Blocks while the codec encodes. Release the voice with `s1_voice_free`.
///
/// # Safety
/// `engine` must be NULL or a handle from `s1_engine_new`; `samples` NULL or valid for
/// `num_frames × channels` reads; `transcript` NULL or NUL-terminated; `out_voice` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn s1_voice_create(
    engine: *const s1_engine,
    samples: *const f32,
    num_frames: usize,
    channels: u32,
    sample_rate_hz: u32,
    transcript: *const c_char,
    out_voice: *mut *mut s1_voice,
) -> Status {
    guard(|| {
        let engine = convert::handle_ref::<Engine, s1_engine>(engine, "engine")?;
        // SAFETY: forwarded contract.
        let transcript = unsafe { convert::utf8_arg(transcript, "transcript") }?;
        if out_voice.is_null() {
            return Err(Error::NullPointer { arg: "out_voice" });
        }
        let n = num_frames
            .checked_mul(channels as usize)
            .ok_or_else(|| Error::arg("num_frames", "num_frames × channels overflows"))?;
        let pcm: &[f32] = if n == 0 {
            &[]
        } else if samples.is_null() {
            return Err(Error::NullPointer { arg: "samples" });
        } else {
            // SAFETY: non-null and valid for n reads per contract.
            unsafe { std::slice::from_raw_parts(samples, n) }
        };
        let mono = audio::downmix(pcm, channels as usize)?;
        let voice = engine.create_voice(&mono, sample_rate_hz, transcript)?;
        let handle = convert::into_handle::<Voice, s1_voice>(Arc::new(voice))?;
        // SAFETY: checked non-null above; writable per contract.
        unsafe { convert::write_out(out_voice, handle, "out_voice") }
    })
}

/// Loads a voice file written by `s1_voice_save` (or the Rust, C++, C# or Node APIs);
/// `*out_voice` receives it. A truncated, corrupt or foreign file, one over 16 MiB, or a path
/// that is not a regular file (a FIFO, device or directory: never waited on or read) is
/// `S1_STATUS_VOICE_INVALID`,
/// another format version `S1_STATUS_VERSION_MISMATCH`, a missing file `S1_STATUS_IO`. The codes
/// are checked against the engine when the voice is used. Release with `s1_voice_free`.
///
/// # Safety
/// `path` must be NULL or NUL-terminated UTF-8; `out_voice` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn s1_voice_load(
    path: *const c_char,
    out_voice: *mut *mut s1_voice,
) -> Status {
    guard(|| {
        // SAFETY: forwarded contract.
        let path = unsafe { convert::utf8_arg(path, "path") }?;
        if out_voice.is_null() {
            return Err(Error::NullPointer { arg: "out_voice" });
        }
        let voice = Voice::load(Path::new(path))?;
        let handle = convert::into_handle::<Voice, s1_voice>(Arc::new(voice))?;
        // SAFETY: checked non-null above; writable per contract.
        unsafe { convert::write_out(out_voice, handle, "out_voice") }
    })
}

/// Writes `voice` to the file `path` (UTF-8, NUL-terminated), replacing it.
///
/// # Safety
/// `voice` must be NULL or a handle from `s1_voice_create`/`s1_voice_load`; `path` NULL or
/// NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn s1_voice_save(voice: *const s1_voice, path: *const c_char) -> Status {
    guard(|| {
        let voice = convert::handle_ref::<Voice, s1_voice>(voice, "voice")?;
        // SAFETY: forwarded contract.
        let path = unsafe { convert::utf8_arg(path, "path") }?;
        voice.save(Path::new(path))
    })
}

/// Writes the number of codec frames of `voice` (21.53 per second of reference audio) to
/// `*out_frames`.
///
/// # Safety
/// `voice` must be NULL or a voice handle; `out_frames` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn s1_voice_frames(voice: *const s1_voice, out_frames: *mut usize) -> Status {
    guard(|| {
        let voice = convert::handle_ref::<Voice, s1_voice>(voice, "voice")?;
        // SAFETY: forwarded contract.
        unsafe { convert::write_out(out_frames, voice.codes().frames().0, "out_frames") }
    })
}

/// Releases a voice. NULL is a no-op; a handle that is not a live voice returns
/// `S1_STATUS_INVALID_HANDLE`. Syntheses already running with it keep it alive until they end.
#[no_mangle]
pub extern "C" fn s1_voice_free(voice: *mut s1_voice) -> Status {
    guard(|| convert::free_handle::<Voice, s1_voice>(voice, "voice"))
}

/// Reads `n` voice handles (NULL array with n = 0 is none).
///
/// # Safety
/// `voices` must be NULL or valid for `n` reads of handles.
pub(crate) unsafe fn voices_arg(
    voices: *const *const s1_voice,
    n: usize,
) -> Result<Vec<Voice>, Error> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if voices.is_null() {
        return Err(Error::NullPointer { arg: "params.voices" });
    }
    const MAX_VOICES: usize = 64;
    if n > MAX_VOICES {
        return Err(Error::arg("n_voices", format!("{n}; at most {MAX_VOICES}")));
    }
    // SAFETY: non-null and valid for n reads per contract.
    let handles = unsafe { std::slice::from_raw_parts(voices, n) };
    handles
        .iter()
        .map(|&h| {
            convert::handle_ref::<Voice, s1_voice>(h, "params.voices[i]").map(|v| (*v).clone())
        })
        .collect()
}
