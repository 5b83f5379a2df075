//! The C ABI: a thin skin over the Rust API (STYLE.md §10–16, DESIGN.md §5).
//!
//! Nothing here decides anything about speech: every function converts its arguments, calls the
//! Rust API and converts the result back. `cbindgen` turns the doc comments of this module tree into
//! `include/s1_mini.h`, so they are written for C readers.
//!
//! Rules every entry point follows:
//! - it runs inside `guard`, which catches panics, maps `Err` through `Error::status()` and
//!   stores the message for `s1_last_error()` (reset on entry);
//! - pointers are read only through the helpers in `convert`, which turn NULL into
//!   `S1_STATUS_NULL_POINTER` and a freed or foreign handle into `S1_STATUS_INVALID_HANDLE`
//!   (handles are keys into a registry of live objects, never dereferenced, so a double free is
//!   an error and not a crash).
#![allow(non_camel_case_types)]

mod convert;
pub mod engine;
pub mod log;
pub mod stream;
pub mod synth;
pub mod voice;

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::{Error, Status};

thread_local! {
    /// The message of this thread's last failed call; empty after a call that succeeded.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Runs one entry point's body: resets this thread's last error, catches panics (a panic must
/// never unwind into C, C++ or C#), and turns the outcome into a status code.
pub(crate) fn guard(f: impl FnOnce() -> Result<(), Error>) -> Status {
    guard_flow(|| f().map(|()| Status::Ok))
}

/// [`guard`] for entry points that can end in a flow status that is not a failure
/// (`S1_STATUS_END_OF_STREAM`): `Ok(status)` is returned as is, with an empty last error.
pub(crate) fn guard_flow(f: impl FnOnce() -> Result<Status, Error>) -> Status {
    set_last_error(String::new());
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(status)) => status,
        Ok(Err(err)) => {
            let status = err.status();
            set_last_error(error_chain(&err));
            status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_owned());
            set_last_error(format!("internal panic (a bug in s1-mini): {what}"));
            Status::Panic
        }
    }
}

/// `error: cause: cause…`, so the C caller sees why (e.g. the ORT library's own message).
fn error_chain(err: &Error) -> String {
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        // thiserror's `#[error("...: {0}")]` often repeats the cause; skip exact repeats.
        if !msg.ends_with(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = cause.source();
    }
    msg
}

fn set_last_error(msg: String) {
    // Interior NULs would truncate the C string silently; replace them visibly instead.
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|cell| *cell.borrow_mut() = c);
}

/// The message of the last failed `s1_*` call on this thread, in UTF-8; "" when it succeeded.
///
/// Every call resets it on entry, so copy it before making another `s1_*` call. The pointer is
/// owned by the library, never NULL, and valid until the next `s1_*` call on this thread.
#[no_mangle]
pub extern "C" fn s1_last_error() -> *const c_char {
    // No guard: reading the message must not reset it. `with` cannot panic here (the key is
    // never destroyed while the thread calls us), and if it could, returning "" is the fallback.
    LAST_ERROR.try_with(|cell| cell.borrow().as_ptr()).unwrap_or(c"".as_ptr())
}

/// The name of a status code as written in this header, e.g. "S1_STATUS_BUNDLE_INVALID".
///
/// Takes a plain integer so any value is safe to pass: unknown values give "S1_STATUS_UNKNOWN".
/// The string is static and never NULL.
#[no_mangle]
pub extern "C" fn s1_status_name(status: i32) -> *const c_char {
    match Status::try_from(status) {
        Ok(s) => status_cstr(s).as_ptr(),
        Err(_) => c"S1_STATUS_UNKNOWN".as_ptr(),
    }
}

/// The same names as C strings; one table so the C and Rust names cannot drift apart.
fn status_cstr(status: Status) -> &'static CStr {
    convert::status_name_c(status)
}

/// The library version, "MAJOR.MINOR.PATCH" (equal to the `S1_VERSION_*` macros of the header
/// the library was built with). Static, never NULL.
#[no_mangle]
pub extern "C" fn s1_version() -> *const c_char {
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    V.as_ptr()
}

/// Writes the names of the backends usable on this machine, comma-separated in the order
/// `backend = "auto"` tries them (e.g. "onnx-cpu"), into `buf`.
///
/// `buf` receives at most `buf_size` bytes including the terminating NUL and is always
/// NUL-terminated when `buf_size > 0`. `*out_len` (may be NULL) receives the full length without
/// the NUL. Returns `S1_STATUS_BUFFER_TOO_SMALL` (with `*out_len` set, and `buf` holding a
/// truncated copy) when `buf_size <= length`; pass `buf = NULL, buf_size = 0` to query the length.
///
/// # Safety
/// `buf` must be NULL or point to `buf_size` writable bytes; `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn s1_backends_available(
    buf: *mut c_char,
    buf_size: usize,
    out_len: *mut usize,
) -> Status {
    guard(|| {
        // Probed with the default config: ORT found through ORT_DYLIB_PATH or beside the library.
        let names: Vec<&str> = crate::backend::probe(&crate::EngineConfig::default())
            .into_iter()
            .filter(|(_, usable)| usable.is_ok())
            .map(|(kind, _)| kind.name())
            .collect();
        let names = names.join(",");
        // SAFETY: the caller guarantees `buf` points to `buf_size` writable bytes (or is NULL
        // with size 0) and `out_len` is NULL or writable.
        unsafe { convert::write_str_out(&names, buf, buf_size, out_len) }
    })
}

#[cfg(test)]
mod tests;
