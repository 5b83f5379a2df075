//! `s1_stream`: audio in frame-granular chunks, pulled (`s1_stream_next`) or pushed
//! (`s1_stream_run` with a callback), cancellable from any thread.
use std::ffi::{c_char, c_void};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::convert;
use super::engine::s1_engine;
use super::synth::{params_and_voices_arg, s1_synth_params};
use super::{guard, guard_flow};
use crate::{CancelToken, Engine, Error, Request, Status, Stream};

/// One synthesis in progress. Opaque.
///
/// Thread safety: one call at a time. While `s1_stream_next` or `s1_stream_run` runs on a stream
/// (callbacks included), `s1_stream_next`, `s1_stream_run` and `s1_stream_free` on it from any
/// other thread, or from inside the chunk callback, return `S1_STATUS_INVALID_ARGUMENT` and
/// change nothing (the free is refused, not deferred). `s1_stream_cancel` may be called from any
/// thread at any time, the callback included.
pub struct s1_stream {
    _private: [u8; 0],
}

/// A chunk of streamed audio. Owned by the stream: valid until the next `s1_stream_next`,
/// `s1_stream_run` or `s1_stream_free` on the same stream (in a callback: until it returns).
#[repr(C)]
pub struct s1_chunk {
    /// `num_samples` samples, f32 mono, nominal range [-1, 1].
    pub samples: *const f32,
    /// Number of samples (not bytes); a multiple of the codec's samples per frame.
    pub num_samples: usize,
    /// Sample rate in Hz (44100 for S1-mini).
    pub sample_rate_hz: u32,
    /// Index of this chunk's first frame in the whole utterance (0 for the first chunk).
    pub first_frame: u32,
}

/// Called by `s1_stream_run` for every chunk, on the thread that called `s1_stream_run`.
/// Return 0 to continue, non-zero to cancel (`s1_stream_run` then returns `S1_STATUS_CANCELLED`).
/// Must not throw or unwind (C++ exceptions, longjmp): catch everything inside.
pub type s1_chunk_callback =
    Option<unsafe extern "C" fn(chunk: *const s1_chunk, user_data: *mut c_void) -> i32>;

/// What the registry holds for one stream. The cancel token sits outside the mutex so that
/// `s1_stream_cancel` never waits for a chunk in progress.
pub(crate) struct StreamSlot {
    cancel: CancelToken,
    /// Set while `s1_stream_next` or `s1_stream_run` holds the stream ([`convert::InUse`]);
    /// other next/run/free calls are refused meanwhile.
    in_use: AtomicBool,
    state: Mutex<StreamState>,
}

impl convert::Exclusive for StreamSlot {
    fn in_use(&self) -> &AtomicBool {
        &self.in_use
    }
}

struct StreamState {
    stream: Stream,
    /// The samples of the chunk last handed out; `chunk.samples` points into it.
    samples: Vec<f32>,
    chunk: s1_chunk,
}

// SAFETY: `chunk.samples` points into `samples`, owned by the same struct and only touched under
// the mutex; the raw pointer is the only non-Send/Sync field.
unsafe impl Send for StreamState {}

impl StreamSlot {
    /// Pulls the next chunk; `Ok(None)` at the end of the utterance. The caller holds the
    /// stream ([`convert::handle_acquire`]), so the lock is never contended; the pointer stays
    /// valid until the next call on the stream or its free, which the hold keeps out meanwhile.
    fn next(&self) -> Result<Option<*const s1_chunk>, Error> {
        let Ok(mut state) = self.state.lock() else {
            // A panic inside an earlier call may have left the stream mid-chunk; refuse it.
            return Err(Error::arg("stream", "unusable after an internal panic; free it"));
        };
        #[cfg(test)]
        tests_seam::run_in_next();
        let state = &mut *state;
        match state.stream.next_chunk()? {
            None => Ok(None),
            Some(chunk) => {
                state.samples = chunk.samples;
                state.chunk = s1_chunk {
                    samples: state.samples.as_ptr(),
                    num_samples: state.samples.len(),
                    sample_rate_hz: chunk.sample_rate_hz,
                    first_frame: chunk.first_frame as u32,
                };
                Ok(Some(&state.chunk as *const s1_chunk))
            }
        }
    }
}

/// Starts synthesising `text` and stores a stream in `*out_stream`; no audio is computed until
/// the first `s1_stream_next` / `s1_stream_run`.
///
/// `params` may be NULL (defaults). The stream keeps the engine alive. Release it with
/// `s1_stream_free` (also when it was cancelled or failed).
///
/// # Safety
/// `engine` must be NULL or a handle from `s1_engine_new`; `text` NULL or NUL-terminated;
/// `params` NULL or filled by `s1_synth_params_default()`; `out_stream` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn s1_stream_start(
    engine: *const s1_engine,
    text: *const c_char,
    params: *const s1_synth_params,
    out_stream: *mut *mut s1_stream,
) -> Status {
    guard(|| {
        let engine = convert::handle_ref::<Engine, s1_engine>(engine, "engine")?;
        // SAFETY: forwarded contract.
        let text = unsafe { convert::utf8_arg(text, "text") }?;
        // SAFETY: forwarded contract.
        let (params, voices) = unsafe { params_and_voices_arg(params) }?;
        if out_stream.is_null() {
            return Err(Error::NullPointer { arg: "out_stream" });
        }
        let stream = engine.stream(&Request::new(text).with_voices(voices).with_params(params))?;
        let slot = StreamSlot {
            cancel: stream.cancel_token(),
            in_use: AtomicBool::new(false),
            state: Mutex::new(StreamState {
                stream,
                samples: Vec::new(),
                chunk: s1_chunk {
                    samples: std::ptr::null(),
                    num_samples: 0,
                    sample_rate_hz: 0,
                    first_frame: 0,
                },
            }),
        };
        let handle = convert::into_handle::<StreamSlot, s1_stream>(Arc::new(slot))?;
        // SAFETY: checked non-null above; writable per contract.
        unsafe { convert::write_out(out_stream, handle, "out_stream") }
    })
}

/// Computes the next chunk and stores a pointer to it in `*out_chunk` (pull streaming).
///
/// Returns `S1_STATUS_OK` with a chunk, `S1_STATUS_END_OF_STREAM` (and `*out_chunk` = NULL)
/// after the last chunk, `S1_STATUS_CANCELLED` once `s1_stream_cancel` was called, or an error.
/// Blocks for the chunk's frames (first chunk: prompt processing too). The chunk is owned by the
/// stream and valid until the next call on this stream.
///
/// # Safety
/// `stream` must be NULL or a handle from `s1_stream_start`; `out_chunk` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn s1_stream_next(
    stream: *mut s1_stream,
    out_chunk: *mut *const s1_chunk,
) -> Status {
    guard_flow(|| {
        // Held until this call returns: a free or another call from elsewhere is refused.
        let slot = convert::handle_acquire::<StreamSlot, s1_stream>(stream, "stream")?;
        if out_chunk.is_null() {
            return Err(Error::NullPointer { arg: "out_chunk" });
        }
        let (chunk, status) = match slot.next()? {
            Some(chunk) => (chunk, Status::Ok),
            None => (std::ptr::null(), Status::EndOfStream),
        };
        // SAFETY: checked non-null above; writable per contract.
        unsafe { convert::write_out(out_chunk, chunk, "out_chunk") }?;
        Ok(status)
    })
}

/// Runs the stream to its end, calling `callback(chunk, user_data)` for each chunk on this
/// thread (push streaming). Returns `S1_STATUS_OK` after the last chunk, `S1_STATUS_CANCELLED`
/// when the callback returned non-zero or `s1_stream_cancel` was called, or an error.
///
/// The stream is in use for the whole call, callbacks included: `s1_stream_next`,
/// `s1_stream_run` and `s1_stream_free` on it, from another thread or from inside the callback,
/// return `S1_STATUS_INVALID_ARGUMENT` and change nothing. `s1_stream_cancel` works from
/// anywhere, the callback included.
///
/// # Safety
/// `stream` must be NULL or a handle from `s1_stream_start`; `callback` must follow the
/// `s1_chunk_callback` rules; `user_data` is passed through untouched.
#[no_mangle]
pub unsafe extern "C" fn s1_stream_run(
    stream: *mut s1_stream,
    callback: s1_chunk_callback,
    user_data: *mut c_void,
) -> Status {
    guard(|| {
        let Some(callback) = callback else {
            return Err(Error::NullPointer { arg: "callback" });
        };
        // Held for the whole run, callbacks included: next/run/free from another thread or
        // from inside the callback are refused, so the chunk the callback reads stays valid.
        let slot = convert::handle_acquire::<StreamSlot, s1_stream>(stream, "stream")?;
        while let Some(chunk) = slot.next()? {
            // SAFETY: `chunk` points into the slot, which this call holds until it returns; the
            // callback's contract is the caller's.
            if unsafe { callback(chunk, user_data) } != 0 {
                slot.cancel.cancel();
                return Err(Error::Cancelled);
            }
        }
        Ok(())
    })
}

/// Asks the stream to stop. Safe from any thread (the chunk callback included), at any time, any
/// number of times; returns at once. Every later `s1_stream_next` / `s1_stream_run` returns
/// `S1_STATUS_CANCELLED`, also after the last chunk was delivered. Still free the stream with
/// `s1_stream_free`.
///
/// What is cancellable: the frame loop checks before every frame, and the prompt's prefill (in the
/// first `s1_stream_next`) before every chunk of 512 prompt positions, so a call in progress
/// returns `S1_STATUS_CANCELLED` after at most one more frame or prefill chunk. What is not: a
/// chunk's codec decode runs to completion once started; a cancel during it takes effect right
/// after (a chunk already decoded is still returned, and the next call is `S1_STATUS_CANCELLED`).
#[no_mangle]
pub extern "C" fn s1_stream_cancel(stream: *mut s1_stream) -> Status {
    guard(|| {
        let slot = convert::handle_ref::<StreamSlot, s1_stream>(stream, "stream")?;
        slot.cancel.cancel();
        Ok(())
    })
}

/// Releases a stream. NULL is a no-op; a handle that is not a live stream returns
/// `S1_STATUS_INVALID_HANDLE` and touches nothing. Chunks from the stream become invalid.
///
/// While `s1_stream_next` or `s1_stream_run` is running on the stream (on another thread, or
/// this free is made from its chunk callback), the free is refused with
/// `S1_STATUS_INVALID_ARGUMENT` and changes nothing: the stream stays live and that call returns
/// normally. To stop a stream that another thread is using, call `s1_stream_cancel`, let that
/// call return, then free it.
#[no_mangle]
pub extern "C" fn s1_stream_free(stream: *mut s1_stream) -> Status {
    guard(|| convert::free_exclusive::<StreamSlot, s1_stream>(stream, "stream"))
}

/// Test seam: code run inside `s1_stream_next` while the stream is in use (after it was taken,
/// before the chunk is computed), on the calling thread only.
#[cfg(test)]
pub(crate) mod tests_seam {
    use std::cell::RefCell;

    thread_local! {
        static IN_NEXT: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
    }

    /// Runs `f` once, inside the next `s1_stream_next` made on this thread.
    pub(crate) fn set_in_next(f: impl FnOnce() + 'static) {
        IN_NEXT.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    pub(super) fn run_in_next() {
        if let Some(f) = IN_NEXT.with(|h| h.borrow_mut().take()) {
            f();
        }
    }
}
