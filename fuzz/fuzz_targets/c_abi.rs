//! The C ABI entry points with arbitrary parameters: struct_size values, option fields, NULL,
//! stale and garbage handles, NULL out-parameters, text that is not UTF-8, callbacks that cancel,
//! voices (created from PCM of any bits, loaded from files of any bytes, passed in
//! `s1_synth_params.voices` as live, stale or garbage handles).
//!
//! The input is a little program: each op byte picks a call and the next bytes its arguments.
//! Handles come from a pool holding live handles, freed ones (stale) and garbage integers;
//! handles are registry keys that the library never dereferences, so passing garbage is within
//! the header's contract. Pointers to structs always point at a real buffer of the struct's
//! size (the contract: the caller owns that memory), whatever `struct_size` says.
//!
//! One engine on the tiny bundle is loaded once (needs ORT_DYLIB_PATH). To keep an input to
//! milliseconds, a `max_frames` that the engine would accept is cut to 0..8 (values above the
//! context still reach validation unchanged); `s1_engine_new` loads the real bundle only when
//! the input asks for it.
//!
//! Properties: no panic escapes (a PANIC status is a failure too), every status is a known
//! code, `s1_last_error()` is empty exactly when the call returned OK/END_OF_STREAM, and
//! out-parameters are written only on success.
#![no_main]

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use s1_mini::ffi::engine::*;
use s1_mini::ffi::stream::*;
use s1_mini::ffi::synth::*;
use s1_mini::ffi::voice::*;
use s1_mini::ffi::{s1_backends_available, s1_last_error, s1_status_name, s1_version};
use s1_mini::Status;

fn tiny() -> CString {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny");
    CString::new(dir.to_string_lossy().into_owned()).expect("path")
}

struct EnginePtr(*mut s1_engine);
// SAFETY: an engine handle is a registry key, usable from any thread.
unsafe impl Send for EnginePtr {}
// SAFETY: as above.
unsafe impl Sync for EnginePtr {}

fn engine() -> *mut s1_engine {
    static E: OnceLock<EnginePtr> = OnceLock::new();
    E.get_or_init(|| {
        let dir = tiny();
        let mut cfg = std::mem::MaybeUninit::<s1_engine_config>::uninit();
        // SAFETY: writable struct.
        assert_eq!(unsafe { s1_engine_config_default(cfg.as_mut_ptr()) }, Status::Ok);
        // SAFETY: initialised above.
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.bundle_dir = dir.as_ptr();
        cfg.verify_hashes = 0;
        cfg.intra_op_threads = 1;
        let mut e = std::ptr::null_mut();
        // SAFETY: valid config and out pointer.
        let st = unsafe { s1_engine_new(&cfg, &mut e) };
        assert_eq!(st, Status::Ok, "tiny engine: {}", last_error());
        EnginePtr(e)
    })
    .0
}

fn last_error() -> String {
    // SAFETY: never NULL, valid until the next call on this thread.
    unsafe { CStr::from_ptr(s1_last_error()) }.to_string_lossy().into_owned()
}

fn check(st: Status) -> Status {
    assert_ne!(st, Status::Panic, "panic crossed into the guard: {}", last_error());
    assert!(Status::try_from(st as i32).is_ok());
    let msg = last_error();
    match st {
        Status::Ok | Status::EndOfStream => assert!(msg.is_empty(), "{st:?} with message {msg}"),
        _ => assert!(!msg.is_empty(), "{st:?} without a message"),
    }
    st
}

struct In<'a>(&'a [u8]);
impl In<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.u8() as usize).min(max).min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    /// NUL-terminated copy of some input bytes (interior NULs dropped; may be invalid UTF-8).
    fn cstring(&mut self) -> CString {
        let mut v = self.bytes(64);
        v.retain(|&c| c != 0);
        CString::new(v).unwrap_or_default()
    }
}

/// A handle of type T: NULL, the live one, a stale (freed) one, or a garbage integer.
fn pick<T>(inp: &mut In, live: *mut T, stale: &[usize]) -> *mut T {
    match inp.u8() % 5 {
        0 => std::ptr::null_mut(),
        1 | 2 => live,
        3 => stale.get(inp.u8() as usize % stale.len().max(1)).copied().unwrap_or(8) as *mut T,
        _ => (inp.u64() as usize) as *mut T,
    }
}

/// Voice handles for `s1_synth_params.voices`: live, stale, garbage or NULL entries. Longer than
/// the 64 the library accepts, so an `n_voices` above the limit still points at real memory.
fn voice_list(inp: &mut In, live: &[*mut s1_voice], stale: &[usize]) -> Vec<*const s1_voice> {
    (0..72)
        .map(|_| pick(inp, live.last().copied().unwrap_or(std::ptr::null_mut()), stale) as *const _)
        .collect()
}

fn params(inp: &mut In, list: &[*const s1_voice]) -> Option<s1_synth_params> {
    if inp.u8().is_multiple_of(4) {
        return None; // NULL = defaults
    }
    let mut p = std::mem::MaybeUninit::<s1_synth_params>::uninit();
    // SAFETY: writable struct.
    assert_eq!(unsafe { s1_synth_params_default(p.as_mut_ptr()) }, Status::Ok);
    // SAFETY: initialised above.
    let mut p = unsafe { p.assume_init() };
    let mask = inp.u8();
    if mask & 1 != 0 {
        p.struct_size = inp.u32() % 64;
    }
    if mask & 2 != 0 {
        p.temperature = f32::from_bits(inp.u32());
    }
    if mask & 4 != 0 {
        p.top_p = f32::from_bits(inp.u32());
    }
    if mask & 8 != 0 {
        p.repetition_penalty = f32::from_bits(inp.u32());
    }
    p.max_frames = inp.u32();
    if p.max_frames <= 4096 {
        p.max_frames %= 8;
    }
    if mask & 16 != 0 {
        p.first_chunk_frames = inp.u32() % 4;
        p.chunk_frames = inp.u32() % 6;
    }
    if mask & 32 != 0 {
        p.seed = inp.u64();
    }
    if mask & 64 != 0 {
        p.fish_speech_compat = inp.u8();
    }
    if mask & 128 != 0 {
        p.n_voices = inp.u8() as usize % 70;
        p.voices = if inp.u8().is_multiple_of(8) { std::ptr::null() } else { list.as_ptr() };
        p.prefix_cache = inp.u8();
        p.parse_special_tokens = inp.u8();
    }
    Some(p)
}

unsafe extern "C" fn on_chunk(chunk: *const s1_chunk, user_data: *mut c_void) -> i32 {
    // SAFETY: the library passes a valid chunk; user_data is our u8 budget.
    let (c, budget) = unsafe { (&*chunk, &mut *(user_data as *mut u8)) };
    assert!(c.num_samples == 0 || !c.samples.is_null());
    // SAFETY: valid for num_samples per the header.
    let s = unsafe { std::slice::from_raw_parts(c.samples, c.num_samples) };
    assert!(s.iter().all(|x| x.is_finite()));
    if *budget == 0 {
        return 1;
    }
    *budget -= 1;
    0
}

fuzz_target!(|data: &[u8]| {
    let mut inp = In(data);
    let eng = engine();
    let mut stale: Vec<usize> = Vec::new();
    let mut streams: Vec<*mut s1_stream> = Vec::new();
    let mut voices: Vec<*mut s1_voice> = Vec::new();
    for _ in 0..8 {
        if inp.0.is_empty() {
            break;
        }
        match inp.u8() % 16 {
            0 => {
                let s = s1_status_name(inp.u32() as i32);
                // SAFETY: static, never NULL.
                assert!(!unsafe { CStr::from_ptr(s) }.to_bytes().is_empty());
                // SAFETY: static, never NULL.
                assert!(!unsafe { CStr::from_ptr(s1_version()) }.to_bytes().is_empty());
            }
            1 => {
                let mut buf = [0 as c_char; 32];
                let size = inp.u8() as usize % 40;
                let mut len = usize::MAX;
                let (b, size) =
                    if size > 32 { (std::ptr::null_mut(), size) } else { (buf.as_mut_ptr(), size) };
                // SAFETY: buf holds 32 bytes ≥ size, or is NULL.
                let st = check(unsafe { s1_backends_available(b, size, &mut len) });
                assert!(matches!(st, Status::Ok | Status::BufferTooSmall | Status::NullPointer));
            }
            2 => {
                // s1_engine_new with arbitrary config fields.
                let mut cfg = std::mem::MaybeUninit::<s1_engine_config>::uninit();
                // SAFETY: writable struct.
                assert_eq!(unsafe { s1_engine_config_default(cfg.as_mut_ptr()) }, Status::Ok);
                // SAFETY: initialised above.
                let mut cfg = unsafe { cfg.assume_init() };
                let dir = match inp.u8() % 4 {
                    0 => tiny(),
                    1 => c"/nonexistent/bundle".to_owned(),
                    _ => inp.cstring(),
                };
                let backend = inp.cstring();
                let ort = inp.cstring();
                let mask = inp.u8();
                if mask & 1 != 0 {
                    cfg.struct_size = inp.u32() % 64;
                }
                cfg.bundle_dir = if mask & 2 != 0 { std::ptr::null() } else { dir.as_ptr() };
                if mask & 4 != 0 {
                    cfg.backend = backend.as_ptr();
                }
                if mask & 8 != 0 {
                    cfg.ort_library_path = ort.as_ptr();
                }
                if mask & 16 != 0 {
                    cfg.intra_op_threads = inp.u32();
                } else {
                    cfg.intra_op_threads = 1;
                }
                cfg.verify_hashes = inp.u8() & (mask >> 5);
                let mut out = 0x5151usize as *mut s1_engine;
                let out_p = if mask & 64 != 0 { std::ptr::null_mut() } else { &mut out as *mut _ };
                let cfg_p = if mask & 128 != 0 { std::ptr::null() } else { &cfg as *const _ };
                // SAFETY: cfg is a real struct of the right size; strings live for the call.
                let st = check(unsafe { s1_engine_new(cfg_p, out_p) });
                if st == Status::Ok {
                    assert_eq!(check(s1_engine_free(out)), Status::Ok);
                    stale.push(out as usize);
                } else {
                    assert_eq!(out as usize, 0x5151, "out written on failure");
                }
            }
            3 | 4 => {
                let e = pick(&mut inp, eng, &stale);
                let text = inp.cstring();
                let list = voice_list(&mut inp, &voices, &stale);
                let p = params(&mut inp, &list);
                let pp = p.as_ref().map_or(std::ptr::null(), |p| p as *const _);
                let mut audio: *mut s1_audio = std::ptr::null_mut();
                let out = if inp.u8().is_multiple_of(8) {
                    std::ptr::null_mut()
                } else {
                    &mut audio as *mut _
                };
                // SAFETY: valid text, params buffer and out pointer (or NULL).
                let st = check(unsafe { s1_synthesize(e, text.as_ptr(), pp, out) });
                if st == Status::Ok {
                    // SAFETY: live audio from the library.
                    let a = unsafe { &*audio };
                    assert_eq!(a.sample_rate_hz, 44_100);
                    assert_eq!(check(s1_audio_free(audio)), Status::Ok);
                    stale.push(audio as usize);
                    assert_eq!(check(s1_audio_free(audio)), Status::InvalidHandle);
                } else {
                    assert!(audio.is_null());
                }
            }
            5 => {
                let e = pick(&mut inp, eng, &stale);
                let text = inp.cstring();
                let list = voice_list(&mut inp, &voices, &stale);
                let p = params(&mut inp, &list);
                let pp = p.as_ref().map_or(std::ptr::null(), |p| p as *const _);
                let mut s: *mut s1_stream = std::ptr::null_mut();
                // SAFETY: as for s1_synthesize.
                if check(unsafe { s1_stream_start(e, text.as_ptr(), pp, &mut s) }) == Status::Ok {
                    streams.push(s);
                }
            }
            6 => {
                let s =
                    pick(&mut inp, streams.last().copied().unwrap_or(std::ptr::null_mut()), &stale);
                let mut chunk: *const s1_chunk = std::ptr::null();
                let out = if inp.u8().is_multiple_of(8) {
                    std::ptr::null_mut()
                } else {
                    &mut chunk as *mut _
                };
                // SAFETY: out pointer valid or NULL.
                let st = check(unsafe { s1_stream_next(s, out) });
                if st == Status::Ok {
                    // SAFETY: valid until the next call on the stream.
                    let c = unsafe { &*chunk };
                    assert!(c.num_samples > 0 && !c.samples.is_null());
                }
            }
            7 => {
                let s =
                    pick(&mut inp, streams.last().copied().unwrap_or(std::ptr::null_mut()), &stale);
                let mut budget = inp.u8() % 3;
                let cb: s1_chunk_callback =
                    if inp.u8().is_multiple_of(6) { None } else { Some(on_chunk) };
                // SAFETY: the callback follows the rules; user_data outlives the call.
                check(unsafe { s1_stream_run(s, cb, &mut budget as *mut u8 as *mut c_void) });
            }
            8 => {
                let s =
                    pick(&mut inp, streams.last().copied().unwrap_or(std::ptr::null_mut()), &stale);
                check(s1_stream_cancel(s));
            }
            9 => {
                let s =
                    pick(&mut inp, streams.last().copied().unwrap_or(std::ptr::null_mut()), &stale);
                if check(s1_stream_free(s)) == Status::Ok && !s.is_null() {
                    streams.retain(|&x| x != s);
                    stale.push(s as usize);
                }
            }
            10 => {
                // Garbage and stale pointers to the free functions (never the shared engine).
                let v = inp.u64() as usize;
                let junk = if inp.u8().is_multiple_of(2) {
                    v
                } else {
                    stale.first().copied().unwrap_or(v)
                };
                if junk != eng as usize {
                    check(s1_audio_free(junk as *mut s1_audio));
                    check(s1_stream_free(junk as *mut s1_stream));
                    check(s1_engine_free(junk as *mut s1_engine));
                }
            }
            12 => {
                // s1_voice_create: PCM of any bits (NaN, inf, huge), channels and rate.
                let e = pick(&mut inp, eng, &stale);
                let channels = inp.u8() as u32 % 4;
                let rate = match inp.u8() % 4 {
                    0 => 44_100,
                    1 => 16_000,
                    _ => inp.u32(),
                };
                let n = (inp.u8() as usize * 16).min(2048);
                let samples: Vec<f32> = (0..n * channels.max(1) as usize)
                    .map(|i| match inp.u8() {
                        0 => f32::from_bits(inp.u32()),
                        b => ((i as f32) * f32::from(b) * 0.001).sin(),
                    })
                    .collect();
                let transcript = inp.cstring();
                let sp =
                    if inp.u8().is_multiple_of(8) { std::ptr::null() } else { samples.as_ptr() };
                let mut v: *mut s1_voice = std::ptr::null_mut();
                // SAFETY: samples holds n × max(channels, 1) floats (or NULL); text and out valid.
                let st = check(unsafe {
                    s1_voice_create(e, sp, n, channels, rate, transcript.as_ptr(), &mut v)
                });
                if st == Status::Ok {
                    voices.push(v);
                } else {
                    assert!(v.is_null());
                }
            }
            13 => {
                // s1_voice_load of a file holding input bytes (or a missing path, or NULL).
                let bytes = inp.bytes(255);
                let path = std::env::temp_dir().join(format!("s1fuzz-{}.s1v", std::process::id()));
                std::fs::write(&path, &bytes).expect("temp file");
                let cpath = match inp.u8() % 4 {
                    0 => c"/nonexistent/voice.s1v".to_owned(),
                    _ => CString::new(path.to_string_lossy().into_owned()).expect("path"),
                };
                let mut v: *mut s1_voice = std::ptr::null_mut();
                // SAFETY: valid path and out pointer.
                if check(unsafe { s1_voice_load(cpath.as_ptr(), &mut v) }) == Status::Ok {
                    voices.push(v);
                }
            }
            14 => {
                let v =
                    pick(&mut inp, voices.last().copied().unwrap_or(std::ptr::null_mut()), &stale);
                let mut frames = usize::MAX;
                // SAFETY: writable out pointer.
                if check(unsafe { s1_voice_frames(v, &mut frames) }) == Status::Ok {
                    assert!(frames > 0);
                    let path = std::env::temp_dir()
                        .join(format!("s1fuzz-save-{}.s1v", std::process::id()));
                    let cpath = CString::new(path.to_string_lossy().into_owned()).expect("path");
                    // SAFETY: live voice, valid path.
                    assert_eq!(check(unsafe { s1_voice_save(v, cpath.as_ptr()) }), Status::Ok);
                }
            }
            15 => {
                let v =
                    pick(&mut inp, voices.last().copied().unwrap_or(std::ptr::null_mut()), &stale);
                if check(s1_voice_free(v)) == Status::Ok && !v.is_null() {
                    voices.retain(|&x| x != v);
                    stale.push(v as usize);
                }
            }
            _ => {
                // The engine handle as a stream and vice versa: wrong type is INVALID_HANDLE.
                assert_eq!(check(s1_stream_cancel(eng as *mut s1_stream)), Status::InvalidHandle);
                assert_eq!(check(s1_audio_free(eng as *mut s1_audio)), Status::InvalidHandle);
            }
        }
    }
    for v in voices {
        assert!(matches!(check(s1_voice_free(v)), Status::Ok | Status::InvalidHandle));
    }
    for s in streams {
        // INVALID_HANDLE when op 10's garbage happened to hit this live stream id.
        assert!(matches!(check(s1_stream_free(s)), Status::Ok | Status::InvalidHandle));
    }
});
