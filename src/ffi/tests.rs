//! Unit tests of the C ABI's own rules (no bundle needed); the C program tests/c/abi_test.c
//! covers the same ground from C, with a bundle.
use std::ffi::{c_char, CStr};
use std::ptr;

use super::engine::*;
use super::log::s1_log_set;
use super::stream::*;
use super::synth::*;
use super::*;

fn last_error() -> String {
    // SAFETY: s1_last_error never returns NULL and the string lives until the next call.
    unsafe { CStr::from_ptr(s1_last_error()) }.to_string_lossy().into_owned()
}

#[test]
fn ffi_guard_catches_panic_as_panic_status() {
    let status = guard(|| panic!("boom"));
    assert_eq!(status, Status::Panic);
    assert!(last_error().contains("boom"), "{}", last_error());
    // The next call resets the message.
    assert_eq!(guard(|| Ok(())), Status::Ok);
    assert_eq!(last_error(), "");
}

#[test]
fn ffi_null_out_params_return_null_pointer() {
    // SAFETY: NULL is part of the contract.
    assert_eq!(unsafe { s1_engine_config_default(ptr::null_mut()) }, Status::NullPointer);
    assert!(last_error().contains("out_config"));
    // SAFETY: NULL is part of the contract.
    assert_eq!(unsafe { s1_synth_params_default(ptr::null_mut()) }, Status::NullPointer);
    let mut engine = ptr::null_mut();
    // SAFETY: NULL config is part of the contract.
    assert_eq!(unsafe { s1_engine_new(ptr::null(), &mut engine) }, Status::NullPointer);
    let mut audio = ptr::null_mut();
    // SAFETY: NULL engine is part of the contract; the text is NUL-terminated.
    let st = unsafe { s1_synthesize(ptr::null(), c"hi".as_ptr(), ptr::null(), &mut audio) };
    assert_eq!(st, Status::NullPointer);
    assert!(audio.is_null());
}

#[test]
fn ffi_freed_or_foreign_handles_return_invalid_handle() {
    let never_issued = 0x1234usize as *mut s1_engine;
    assert_eq!(s1_engine_free(never_issued), Status::InvalidHandle);
    assert_eq!(s1_stream_free(0x5678usize as *mut s1_stream), Status::InvalidHandle);
    let mut local = 0u64;
    assert_eq!(s1_audio_free(&mut local as *mut u64 as *mut s1_audio), Status::InvalidHandle);
    assert_eq!(s1_engine_free(ptr::null_mut()), Status::Ok);
}

#[test]
fn ffi_double_free_of_registered_handle_is_invalid_handle() {
    // A stream-typed object registered directly, as s1_stream_start would.
    let h = convert::into_handle::<u32, s1_stream>(std::sync::Arc::new(5u32)).unwrap();
    // Wrong type: a u32 is not a StreamSlot, so it is neither freed nor usable as a stream.
    assert_eq!(s1_stream_free(h), Status::InvalidHandle);
    assert!(convert::free_handle::<u32, s1_stream>(h, "h").is_ok());
    assert!(matches!(
        convert::free_handle::<u32, s1_stream>(h, "h"),
        Err(crate::Error::InvalidHandle { .. })
    ));
    let a = convert::into_owned_ptr::<Vec<f32>, s1_audio>(Box::new(vec![0.0f32; 4])).unwrap();
    assert!(convert::free_owned_ptr::<Vec<f32>, s1_audio>(a, "a").is_ok());
    assert!(convert::free_owned_ptr::<Vec<f32>, s1_audio>(a, "a").is_err());
}

#[test]
fn ffi_wrong_struct_size_is_invalid_argument() {
    let mut cfg = std::mem::MaybeUninit::<s1_engine_config>::uninit();
    // SAFETY: a writable struct.
    assert_eq!(unsafe { s1_engine_config_default(cfg.as_mut_ptr()) }, Status::Ok);
    // SAFETY: initialised by the call above.
    let mut cfg = unsafe { cfg.assume_init() };
    assert_eq!(cfg.struct_size as usize, std::mem::size_of::<s1_engine_config>());
    cfg.bundle_dir = c"/nonexistent".as_ptr();
    let mut engine = ptr::null_mut();
    for bad in [0u32, 3, cfg.struct_size + 8] {
        cfg.struct_size = bad;
        // SAFETY: cfg is a valid struct; only struct_size lies.
        assert_eq!(unsafe { s1_engine_new(&cfg, &mut engine) }, Status::InvalidArgument);
        assert!(last_error().contains("struct_size"), "{}", last_error());
    }
    assert!(engine.is_null());
}

#[test]
fn ffi_missing_bundle_is_bundle_not_found() {
    let mut cfg = std::mem::MaybeUninit::<s1_engine_config>::uninit();
    // SAFETY: a writable struct.
    unsafe { s1_engine_config_default(cfg.as_mut_ptr()) };
    // SAFETY: initialised by the call above.
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.bundle_dir = c"/nonexistent/s1".as_ptr();
    let mut engine = ptr::null_mut();
    // SAFETY: valid config and out-pointer.
    assert_eq!(unsafe { s1_engine_new(&cfg, &mut engine) }, Status::BundleNotFound);
    assert!(last_error().contains("/nonexistent/s1"));
}

#[test]
fn ffi_invalid_utf8_is_invalid_utf8() {
    let mut cfg = std::mem::MaybeUninit::<s1_engine_config>::uninit();
    // SAFETY: a writable struct.
    unsafe { s1_engine_config_default(cfg.as_mut_ptr()) };
    // SAFETY: initialised by the call above.
    let mut cfg = unsafe { cfg.assume_init() };
    let bad = [0xffu8, 0xfe, 0];
    cfg.bundle_dir = bad.as_ptr() as *const c_char;
    let mut engine = ptr::null_mut();
    // SAFETY: the path is NUL-terminated (but not UTF-8).
    assert_eq!(unsafe { s1_engine_new(&cfg, &mut engine) }, Status::InvalidUtf8);
}

#[test]
fn ffi_status_name_matches_rust_names() {
    for i in -2..1000 {
        // SAFETY: s1_status_name returns a static string.
        let name = unsafe { CStr::from_ptr(s1_status_name(i)) }.to_str().unwrap();
        match Status::try_from(i) {
            Ok(s) => assert_eq!(name, s.name()),
            Err(_) => assert_eq!(name, "S1_STATUS_UNKNOWN"),
        }
    }
}

#[test]
fn ffi_version_matches_header_macros() {
    // SAFETY: static string.
    let v = unsafe { CStr::from_ptr(s1_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    let header = include_str!("../../include/s1_mini.h");
    for (macro_name, want) in [
        ("S1_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("S1_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("S1_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        assert!(
            header.contains(&format!("#define {macro_name} {want}\n")),
            "include/s1_mini.h: {macro_name} != {want} (update cbindgen.toml and regenerate)"
        );
    }
}

#[test]
fn ffi_backends_available_writes_nul_terminated() {
    let mut len = 0usize;
    // SAFETY: NULL buffer with size 0 is part of the contract.
    let st = unsafe { s1_backends_available(ptr::null_mut(), 0, &mut len) };
    assert!(st == Status::BufferTooSmall || (st == Status::Ok && len == 0));
    let mut buf = vec![0 as c_char; len + 1];
    // SAFETY: buf has len + 1 writable bytes.
    // SAFETY: buf has len + 1 writable bytes.
    assert_eq!(unsafe { s1_backends_available(buf.as_mut_ptr(), buf.len(), &mut len) }, Status::Ok);
    // SAFETY: NUL-terminated by the call.
    let s = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
    assert_eq!(s.len(), len);
}

#[test]
fn ffi_stream_calls_on_null_return_null_pointer() {
    let mut chunk = ptr::null();
    // SAFETY: NULL stream is part of the contract.
    assert_eq!(unsafe { s1_stream_next(ptr::null_mut(), &mut chunk) }, Status::NullPointer);
    assert_eq!(s1_stream_cancel(ptr::null_mut()), Status::NullPointer);
    // SAFETY: NULL stream is part of the contract.
    assert_eq!(
        unsafe { s1_stream_run(ptr::null_mut(), None, ptr::null_mut()) },
        Status::NullPointer
    );
}

#[test]
fn ffi_log_set_forwards_log_records_until_unset() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    unsafe extern "C" fn on_log(
        level: i32,
        message: *const c_char,
        user_data: *mut std::ffi::c_void,
    ) {
        // SAFETY: the library passes a NUL-terminated message valid for this call.
        let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
        if level == log::s1_log_level::Info as i32 && text.contains("ffi-log-probe") {
            assert_eq!(user_data as usize, 42);
            SEEN.fetch_add(1, Ordering::SeqCst);
        }
    }
    assert_eq!(s1_log_set(Some(on_log), 42usize as *mut std::ffi::c_void), Status::Ok);
    ::log::info!("ffi-log-probe");
    assert_eq!(s1_log_set(None, ptr::null_mut()), Status::Ok);
    ::log::info!("ffi-log-probe");
    assert_eq!(SEEN.load(Ordering::SeqCst), 1);
}

fn default_engine_config() -> s1_engine_config {
    let mut cfg = std::mem::MaybeUninit::<s1_engine_config>::uninit();
    // SAFETY: a writable struct.
    assert_eq!(unsafe { s1_engine_config_default(cfg.as_mut_ptr()) }, Status::Ok);
    // SAFETY: initialised by the call above.
    unsafe { cfg.assume_init() }
}

#[test]
fn ffi_engine_config_defaults_match_rust() {
    let cfg = default_engine_config();
    let rust = crate::EngineConfig::default();
    assert_eq!(cfg.device_id, rust.device_id);
    assert_eq!(cfg.inter_op_threads as usize, rust.inter_op_threads);
    assert_eq!(cfg.graph_optimization, s1_graph_optimization::Layout as i32);
    assert_eq!(cfg.tensorrt_precision, s1_tensorrt_precision::Fp16 as i32);
    assert_eq!(cfg.cudnn_conv_algo_search, s1_cudnn_conv_algo_search::Exhaustive as i32);
    assert_eq!(cfg.tensorrt_workspace_bytes, 0);
    assert_eq!(cfg.tensorrt_profile_opt_tokens, rust.tensorrt_profile.opt_tokens);
    assert_eq!(cfg.tensorrt_profile_max_tokens, 0);
    assert!(cfg.cache_dir.is_null() && cfg.tensorrt_int8_calibration_file.is_null());
    assert_eq!(cfg.cuda_weights, s1_cuda_weights::Bf16 as i32);
    assert_eq!(cfg.optimized_model_cache, rust.optimized_model_cache as u8);
    assert_eq!(cfg.optimized_model_cache, 1);
}

#[test]
fn ffi_engine_config_out_of_range_enums_are_invalid_argument() {
    let mut engine = ptr::null_mut();
    for (field, set) in [
        ("graph_optimization", (|c: &mut s1_engine_config| c.graph_optimization = 5) as fn(&mut _)),
        ("tensorrt_precision", |c: &mut s1_engine_config| c.tensorrt_precision = -1),
        ("cudnn_conv_algo_search", |c: &mut s1_engine_config| c.cudnn_conv_algo_search = 3),
        ("cuda_weights", |c: &mut s1_engine_config| c.cuda_weights = 2),
    ] {
        let mut cfg = default_engine_config();
        cfg.bundle_dir = c"/nonexistent/s1".as_ptr();
        set(&mut cfg);
        // SAFETY: valid config and out-pointer.
        assert_eq!(unsafe { s1_engine_new(&cfg, &mut engine) }, Status::InvalidArgument);
        assert!(last_error().contains(field), "{}", last_error());
    }
    assert!(engine.is_null());
}

#[test]
fn ffi_engine_config_from_older_header_ignores_new_fields() {
    // A caller built against the first header passes struct_size = the old size; whatever lies
    // beyond it (here: out-of-range values) is never read.
    let mut cfg = default_engine_config();
    cfg.struct_size = std::mem::offset_of!(s1_engine_config, tensorrt_workspace_bytes) as u32;
    cfg.graph_optimization = 99;
    cfg.tensorrt_precision = 99;
    cfg.bundle_dir = c"/nonexistent/s1".as_ptr();
    let mut engine = ptr::null_mut();
    // SAFETY: valid config and out-pointer.
    assert_eq!(unsafe { s1_engine_new(&cfg, &mut engine) }, Status::BundleNotFound);
    // One byte short of the old layout is refused.
    cfg.struct_size = std::mem::offset_of!(s1_engine_config, verify_hashes) as u32;
    // SAFETY: as above.
    assert_eq!(unsafe { s1_engine_new(&cfg, &mut engine) }, Status::InvalidArgument);
}

#[test]
fn ffi_engine_config_from_the_gpu_options_header_ignores_cuda_weights() {
    // The header before `cuda_weights` ended after `tensorrt_int8_calibration_file`.
    let mut cfg = default_engine_config();
    cfg.struct_size = std::mem::offset_of!(s1_engine_config, cuda_weights) as u32;
    cfg.cuda_weights = 99;
    cfg.bundle_dir = c"/nonexistent/s1".as_ptr();
    let mut engine = ptr::null_mut();
    // SAFETY: valid config and out-pointer.
    assert_eq!(unsafe { s1_engine_new(&cfg, &mut engine) }, Status::BundleNotFound);
    cfg.struct_size = std::mem::size_of::<s1_engine_config>() as u32;
    // SAFETY: as above.
    assert_eq!(unsafe { s1_engine_new(&cfg, &mut engine) }, Status::InvalidArgument);
    assert!(last_error().contains("cuda_weights"), "{}", last_error());
}

#[test]
fn ffi_synth_params_from_older_header_has_no_voices() {
    let mut p = std::mem::MaybeUninit::<s1_synth_params>::uninit();
    // SAFETY: writable out-pointer.
    assert_eq!(unsafe { s1_synth_params_default(p.as_mut_ptr()) }, Status::Ok);
    // SAFETY: filled by s1_synth_params_default.
    let mut p = unsafe { p.assume_init() };
    assert!(p.voices.is_null() && p.n_voices == 0 && p.prefix_cache == 1);
    // An old caller's struct ends before `voices`: whatever lies beyond is never read.
    p.struct_size = std::mem::offset_of!(s1_synth_params, voices) as u32;
    p.voices = std::ptr::dangling();
    p.n_voices = 3;
    p.prefix_cache = 0;
    // SAFETY: a valid struct of at least struct_size bytes.
    let (params, voices) = unsafe { params_and_voices_arg(&p) }.unwrap();
    assert!(voices.is_empty());
    assert!(params.prefix_cache);
    // The new layout reads them: a foreign handle is refused, not dereferenced.
    p.struct_size = std::mem::size_of::<s1_synth_params>() as u32;
    let bogus = [16usize as *const super::voice::s1_voice];
    p.voices = bogus.as_ptr();
    p.n_voices = 1;
    // SAFETY: as above; `voices` points to one readable handle value.
    let r = unsafe { params_and_voices_arg(&p) };
    assert!(matches!(r, Err(crate::Error::InvalidHandle { .. })));
    // n_voices with a NULL array.
    p.voices = ptr::null();
    // SAFETY: as above.
    let r = unsafe { params_and_voices_arg(&p) };
    assert!(matches!(r, Err(crate::Error::NullPointer { .. })));
}

#[test]
fn ffi_voice_calls_on_null_return_null_pointer() {
    use super::voice::*;
    let mut v = ptr::null_mut();
    // SAFETY: NULL arguments are the point; out-pointers are valid.
    unsafe {
        assert_eq!(s1_voice_load(ptr::null(), &mut v), Status::NullPointer);
        assert_eq!(s1_voice_save(ptr::null(), c"x".as_ptr()), Status::NullPointer);
        assert_eq!(
            s1_voice_create(ptr::null(), ptr::null(), 0, 1, 44_100, c"x".as_ptr(), &mut v),
            Status::NullPointer
        );
        let mut n = 0usize;
        assert_eq!(s1_voice_frames(ptr::null(), &mut n), Status::NullPointer);
        assert_eq!(s1_voice_load(c"/nonexistent/voice.s1v".as_ptr(), &mut v), Status::Io);
    }
    assert!(v.is_null());
    assert_eq!(s1_voice_free(ptr::null_mut()), Status::Ok);
    assert_eq!(s1_voice_free(64 as *mut s1_voice), Status::InvalidHandle);
}

/// An engine handle on the tiny bundle, or `None` (with `skipped:`) without ONNX Runtime.
fn tiny_engine_handle() -> Option<*mut s1_engine> {
    let Some(ort) = std::env::var_os("ORT_DYLIB_PATH") else {
        println!("skipped: ORT_DYLIB_PATH is not set");
        return None;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny");
    let engine = crate::Engine::new(
        crate::EngineConfig::new(&dir).with_ort_library_path(std::path::PathBuf::from(ort)),
    )
    .unwrap();
    Some(convert::into_handle::<crate::Engine, s1_engine>(std::sync::Arc::new(engine)).unwrap())
}

fn params_first_chunk(frames: u32) -> s1_synth_params {
    let mut p = std::mem::MaybeUninit::<s1_synth_params>::uninit();
    // SAFETY: writable out-pointer.
    assert_eq!(unsafe { s1_synth_params_default(p.as_mut_ptr()) }, Status::Ok);
    // SAFETY: filled by s1_synth_params_default.
    let mut p = unsafe { p.assume_init() };
    p.first_chunk_frames = frames;
    p
}

/// Issue #19.1: `s1_stream_free` from another thread part-way through `s1_stream_next` returned
/// OK, and the `next` then handed back a chunk inside the freed stream (a use-after-free).
#[test]
fn ffi_stream_free_during_next_on_another_thread_is_refused() {
    let Some(engine) = tiny_engine_handle() else { return };
    let p = params_first_chunk(40);
    let mut stream = ptr::null_mut();
    // SAFETY: live engine, NUL-terminated text, valid params and out-pointer.
    let st = unsafe { s1_stream_start(engine, c"Hello there.".as_ptr(), &p, &mut stream) };
    assert_eq!(st, Status::Ok);
    let handle = stream as usize;
    let freed = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = freed.clone();
    super::stream::tests_seam::set_in_next(move || {
        let st =
            std::thread::spawn(move || s1_stream_free(handle as *mut s1_stream)).join().unwrap();
        *seen.lock().unwrap() = Some(st);
    });
    let mut chunk = ptr::null();
    // SAFETY: live stream, writable out-pointer.
    let st = unsafe { s1_stream_next(stream, &mut chunk) };
    assert_eq!(*freed.lock().unwrap(), Some(Status::InvalidArgument));
    assert_eq!(st, Status::Ok);
    // SAFETY: OK means `chunk` points to a chunk owned by the (still live) stream.
    let c = unsafe { &*chunk };
    // SAFETY: the chunk's samples are valid until the next call on the stream.
    let samples = unsafe { std::slice::from_raw_parts(c.samples, c.num_samples) };
    assert!(!samples.is_empty() && samples.iter().all(|s| s.is_finite()));
    assert_eq!(s1_stream_free(stream), Status::Ok);
    assert_eq!(s1_stream_free(stream), Status::InvalidHandle);
    assert_eq!(s1_engine_free(engine), Status::Ok);
}

/// Issue #19.3: audio handles were keyed by address and the other handles by a counter in the
/// same registry, so a new id equal to a live audio's address replaced its entry.
#[test]
fn ffi_handle_ids_never_collide_with_audio_addresses() {
    let a = convert::into_owned_ptr::<Vec<f32>, s1_audio>(Box::new(vec![1.0f32; 4])).unwrap();
    convert::advance_ids_to(a as usize);
    let h = convert::into_handle::<u32, super::voice::s1_voice>(std::sync::Arc::new(7u32)).unwrap();
    assert_ne!(h as usize, a as usize);
    assert!(convert::free_owned_ptr::<Vec<f32>, s1_audio>(a, "a").is_ok());
    assert!(convert::handle_ref::<u32, super::voice::s1_voice>(h, "h").is_ok());
    assert!(convert::free_handle::<u32, super::voice::s1_voice>(h, "h").is_ok());
}

/// Issue #19.7: `parse_special_tokens` is the last field of `s1_synth_params`, default 0; a
/// struct from the 0.2 header (ending before it, its tail padding included) reads as 0.
#[test]
fn ffi_synth_params_parse_special_tokens_defaults_off_and_reads_through() {
    let mut p = params_first_chunk(4);
    assert_eq!(p.parse_special_tokens, 0);
    p.parse_special_tokens = 1;
    // SAFETY: a valid struct of struct_size bytes.
    let (params, _) = unsafe { params_and_voices_arg(&p) }.unwrap();
    assert!(params.parse_special_tokens);
    // The 0.2 struct ended after prefix_cache's tail padding, which the 0.2 library never read.
    let v02 = (std::mem::offset_of!(s1_synth_params, prefix_cache) + 1)
        .next_multiple_of(std::mem::align_of::<s1_synth_params>());
    assert_eq!(v02, std::mem::offset_of!(s1_synth_params, parse_special_tokens));
    p._reserved0 = [0xff; 7];
    p.struct_size = v02 as u32;
    // SAFETY: as above; the field lies beyond struct_size and is never read.
    let (params, _) = unsafe { params_and_voices_arg(&p) }.unwrap();
    assert!(!params.parse_special_tokens);
}

/// Issue #19.8: `s1_backends_available(NULL, n > 0, &len)` wrote `len` while returning
/// NULL_POINTER (outputs must stay untouched on failure).
#[test]
fn ffi_backends_available_null_buf_leaves_out_len_untouched() {
    let mut len = 12345usize;
    // SAFETY: a NULL buffer with a size is the error under test; `len` is writable.
    let st = unsafe { s1_backends_available(ptr::null_mut(), 8, &mut len) };
    assert_eq!(st, Status::NullPointer);
    assert_eq!(len, 12345);
}

/// Issue #19.8: invalid UTF-8 in a path was reported as "text is not valid utf-8"; the message
/// names the argument now.
#[test]
fn ffi_invalid_utf8_path_names_the_argument() {
    let mut cfg = default_engine_config();
    let bad = [b'/', 0xff, 0xfe, 0];
    cfg.bundle_dir = bad.as_ptr() as *const c_char;
    let mut engine = ptr::null_mut();
    // SAFETY: valid config (the path is NUL-terminated, not UTF-8), writable out-pointer.
    assert_eq!(unsafe { s1_engine_new(&cfg, &mut engine) }, Status::InvalidUtf8);
    assert!(last_error().contains("config.bundle_dir"), "{}", last_error());
    assert!(!last_error().contains("text"), "{}", last_error());
    let mut v = ptr::null_mut();
    // SAFETY: NUL-terminated path, writable out-pointer.
    let st = unsafe { super::voice::s1_voice_load(bad.as_ptr() as *const c_char, &mut v) };
    assert_eq!(st, Status::InvalidUtf8);
    assert!(last_error().contains("`path`"), "{}", last_error());
}

/// Issue #19.8: a `struct_size` ending inside a field was accepted, mixing the caller's first
/// bytes of that field with the default's last ones.
#[test]
fn ffi_struct_size_inside_a_field_is_invalid_argument() {
    let mut cfg = default_engine_config();
    cfg.bundle_dir = c"/nonexistent/s1".as_ptr();
    let mut engine = ptr::null_mut();
    let inside = std::mem::offset_of!(s1_engine_config, tensorrt_workspace_bytes) + 4;
    cfg.struct_size = inside as u32;
    // SAFETY: valid config and out-pointer.
    assert_eq!(unsafe { s1_engine_new(&cfg, &mut engine) }, Status::InvalidArgument);
    assert!(last_error().contains("struct_size"), "{}", last_error());
    // Field boundaries (a field's end, or the padding after it) are accepted.
    cfg.struct_size = std::mem::offset_of!(s1_engine_config, inter_op_threads) as u32;
    // SAFETY: as above.
    assert_eq!(unsafe { s1_engine_new(&cfg, &mut engine) }, Status::BundleNotFound);
    let mut p = params_first_chunk(4);
    p.struct_size = (std::mem::offset_of!(s1_synth_params, seed) + 3) as u32;
    // SAFETY: a valid struct of at least struct_size bytes.
    let r = unsafe { params_and_voices_arg(&p) };
    assert!(matches!(r, Err(crate::Error::InvalidArgument { .. })), "{:?}", r.map(|_| ()));
    p.struct_size = (std::mem::offset_of!(s1_synth_params, prefix_cache) + 1) as u32;
    // SAFETY: as above.
    assert!(unsafe { params_and_voices_arg(&p) }.is_ok());
}

/// Issue #19.6: text over the limit (16 characters per context token) is refused before it is
/// tokenized: no merge work at all, however long the single pre-token.
#[test]
fn ffi_text_over_the_limit_is_refused_before_tokenizing() {
    let Some(engine) = tiny_engine_handle() else { return };
    let limit = 16 * 4096; // the tiny bundle's max_seq_len is 4096
    let text = std::ffi::CString::new("ま".repeat(limit + 1)).unwrap();
    let before = crate::text::tokenizer::merge_work_on_this_thread();
    let mut audio = ptr::null_mut();
    // SAFETY: live engine, NUL-terminated text, NULL params, writable out-pointer.
    let st = unsafe { s1_synthesize(engine, text.as_ptr(), ptr::null(), &mut audio) };
    assert_eq!(st, Status::TextTooLong, "{}", last_error());
    assert_eq!(crate::text::tokenizer::merge_work_on_this_thread(), before);
    // At the limit it is tokenized (linear work), then refused: the prompt exceeds the context.
    let text = std::ffi::CString::new("ま".repeat(limit)).unwrap();
    // SAFETY: as above.
    let st = unsafe { s1_synthesize(engine, text.as_ptr(), ptr::null(), &mut audio) };
    assert_eq!(st, Status::TextTooLong, "{}", last_error());
    let work = crate::text::tokenizer::merge_work_on_this_thread() - before;
    assert!(work > 0 && work < 64 * 3 * limit, "{work}");
    assert!(audio.is_null());
    assert_eq!(s1_engine_free(engine), Status::Ok);
}
