//! `s1_log_set`: the library's `log` records, forwarded to a C callback.
use std::ffi::{c_char, c_void, CString};
use std::sync::{OnceLock, RwLock};

use super::guard;
use crate::Status;

/// Severity of a log message (the `level` argument of `s1_log_callback`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum s1_log_level {
    /// Something failed; the call reporting it returns an error too.
    Error = 1,
    /// Something is degraded but works (e.g. a backend skipped, a slower path taken).
    Warn = 2,
    /// Milestones: bundle loaded, backend chosen.
    Info = 3,
    /// Details for debugging.
    Debug = 4,
}

/// Receives one log message: `message` is NUL-terminated UTF-8, valid only during the call.
/// May run on any thread that calls into the library, concurrently; must not throw or unwind.
pub type s1_log_callback =
    Option<unsafe extern "C" fn(level: i32, message: *const c_char, user_data: *mut c_void)>;

#[derive(Clone, Copy)]
struct Sink {
    callback: unsafe extern "C" fn(i32, *const c_char, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: the callback and user_data are the caller's; `s1_log_set` documents that the callback
// may run on any thread, so the caller vouches for user_data being usable from any thread.
unsafe impl Send for Sink {}
// SAFETY: as above.
unsafe impl Sync for Sink {}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Debug
    }

    fn log(&self, record: &log::Record<'_>) {
        let sink = match SINK.read() {
            Ok(g) => *g,
            Err(poisoned) => *poisoned.into_inner(),
        };
        let Some(sink) = sink else { return };
        let level = match record.level() {
            log::Level::Error => s1_log_level::Error,
            log::Level::Warn => s1_log_level::Warn,
            log::Level::Info => s1_log_level::Info,
            log::Level::Debug | log::Level::Trace => s1_log_level::Debug,
        };
        let text = format!("{}: {}", record.target(), record.args());
        let Ok(c) = CString::new(text.replace('\0', "\\0")) else { return };
        // SAFETY: the callback's contract (s1_log_callback) is the caller's; `c` outlives the call.
        unsafe { (sink.callback)(level as i32, c.as_ptr(), sink.user_data) };
    }

    fn flush(&self) {}
}

/// Sends the library's log messages to `callback` (with `user_data`), or stops logging when
/// `callback` is NULL. By default nothing is logged.
///
/// Process-global: it replaces the previous callback for all engines and threads. Safe to call
/// from any thread; a message being delivered on another thread may still reach the previous
/// callback just after this returns, so keep its `user_data` alive a little longer. The library
/// installs its logger into the Rust `log` facade once; if the host process (another Rust
/// library) installed one first, returns `S1_STATUS_INVALID_ARGUMENT` and logs nothing.
#[no_mangle]
pub extern "C" fn s1_log_set(callback: s1_log_callback, user_data: *mut c_void) -> Status {
    guard(|| {
        static INSTALLED: OnceLock<bool> = OnceLock::new();
        let ok = *INSTALLED.get_or_init(|| {
            static BRIDGE: Bridge = Bridge;
            let ok = log::set_logger(&BRIDGE).is_ok();
            if ok {
                log::set_max_level(log::LevelFilter::Debug);
            }
            ok
        });
        let sink = callback.map(|callback| Sink { callback, user_data });
        match SINK.write() {
            Ok(mut g) => *g = sink,
            Err(poisoned) => *poisoned.into_inner() = sink,
        }
        if ok {
            Ok(())
        } else {
            Err(crate::Error::arg(
                "callback",
                "another logger is installed in this process's Rust `log` facade",
            ))
        }
    })
}
