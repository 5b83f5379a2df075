//! The crate's one error type and the stable status codes of the C ABI.
//!
//! Every failure in the library is an [`Error`]; [`Error::status`] maps it to a [`Status`], the
//! number the C ABI returns. The mapping is one exhaustive `match` so a new variant cannot be
//! added without choosing its code.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in s1-mini.
///
/// Messages are lowercase without a trailing period; structured fields name the file, field or
/// parameter involved so that a caller can act on them.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // === Caller errors (1-99) ===
    /// A parameter is outside its documented range.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// Name of the parameter (as in `SynthParams`/`EngineConfig` or the CLI).
        name: &'static str,
        /// What is wrong and what range is accepted.
        reason: String,
    },
    /// Input bytes are not valid UTF-8.
    #[error("`{arg}` is not valid utf-8 (first invalid byte at offset {valid_up_to})")]
    InvalidUtf8 {
        /// The argument that is not UTF-8 (`text`, `path`, `config.bundle_dir`, …).
        arg: &'static str,
        /// Number of leading bytes that are valid UTF-8.
        valid_up_to: usize,
    },
    /// A required pointer argument was NULL (C ABI only).
    #[error("`{arg}` is NULL")]
    NullPointer {
        /// Name of the C parameter.
        arg: &'static str,
    },
    /// A caller-provided buffer is too small (C ABI only).
    #[error("buffer too small: {needed} bytes needed, {got} given")]
    BufferTooSmall {
        /// Bytes needed, including the terminating NUL.
        needed: usize,
        /// Bytes the caller gave.
        got: usize,
    },
    /// A handle is not a live object of the expected type: already freed, never issued, or of
    /// another type (C ABI only).
    #[error("`{arg}` is not a live handle (already freed, or not made by this library)")]
    InvalidHandle {
        /// Name of the C parameter.
        arg: &'static str,
    },
    /// The text to synthesise is empty (or only whitespace).
    #[error("text is empty")]
    EmptyText,
    /// The text is longer than the engine accepts in one call.
    #[error("text is too long: {chars} characters, at most {max_chars} are accepted per call")]
    TextTooLong {
        /// Length of the text in Unicode scalar values.
        chars: usize,
        /// Limit in Unicode scalar values.
        max_chars: usize,
    },
    /// The prompt plus the frame budget does not fit into the model's context.
    #[error(
        "prompt too long: {prompt_tokens} prompt tokens + max_frames {max_frames} exceed the \
         context of {context_tokens} tokens (shorten the text or lower max_frames)"
    )]
    PromptTooLong {
        /// Number of prompt positions (tokens) after tokenization.
        prompt_tokens: usize,
        /// Requested frame budget.
        max_frames: u32,
        /// The model's context length (`max_seq_len`).
        context_tokens: usize,
    },

    // === Bundle errors (100-199) ===
    /// The bundle directory or its manifest does not exist.
    #[error("bundle not found: {path} does not exist (export one with tools/export)")]
    BundleNotFound {
        /// Path that was looked for.
        path: PathBuf,
    },
    /// A bundle file is malformed or inconsistent.
    #[error("invalid bundle file {file}, field `{field}`: {reason}")]
    BundleInvalid {
        /// File inside the bundle (e.g. `manifest.json`).
        file: String,
        /// Field or line that is wrong (`-` when the whole file is).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The bundle's format or format version is not the one this engine reads.
    #[error(
        "bundle version mismatch in {file}, field `{field}`: expected {expected}, found {found}{hint}"
    )]
    VersionMismatch {
        /// File that carries the version (`manifest.json`).
        file: String,
        /// Field name (`format` or `format_version`).
        field: String,
        /// What this engine reads.
        expected: String,
        /// What the bundle says.
        found: String,
        /// What to do about it, with a leading `; ` (empty when there is nothing to add).
        hint: &'static str,
    },
    /// A bundle file's size or sha256 does not match the manifest.
    #[error("bundle file {file} is corrupt: {field} expected {expected}, got {got} (re-export or re-copy the bundle)")]
    HashMismatch {
        /// File inside the bundle.
        file: String,
        /// `bytes` or `sha256`.
        field: &'static str,
        /// Value in the manifest.
        expected: String,
        /// Value of the file on disk.
        got: String,
    },
    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// A voice file is malformed, truncated or fails its checksum (`docs/voice-format.md`).
    #[error("invalid voice file: {reason}")]
    VoiceInvalid {
        /// What is wrong.
        reason: String,
    },

    // === Backend errors (200-299) ===
    /// A backend cannot be used on this machine or build.
    #[error("backend {backend} unavailable: {reason}")]
    BackendUnavailable {
        /// Backend name (`onnx-cpu`, `cuda`, ...).
        backend: &'static str,
        /// Why, and how to fix it where we know.
        reason: String,
    },
    /// A backend call failed at run time.
    #[error("backend {backend} failed in {op}: {message}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// Operation (graph name or step).
        op: String,
        /// The library's message.
        message: String,
    },

    // === Flow (300-399), not failures ===
    /// The request was cancelled through its [`crate::CancelToken`].
    #[error("cancelled")]
    Cancelled,

    // === Internal (900) ===
    /// A broken invariant inside s1-mini: a bug, please report it.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Stable status codes of the C ABI (`s1_status`).
///
/// Groups: 0 ok; 1-99 caller; 100-199 bundle; 200-299 backend; 300-399 flow (not failures);
/// 900 internal; 901 panic. Numbers are never reused; retired ones stay as comments.
#[repr(i32)]
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A parameter is out of range.
    InvalidArgument = 1,
    /// A required pointer was NULL (C ABI only).
    NullPointer = 2,
    /// Text is not valid UTF-8.
    InvalidUtf8 = 3,
    /// A caller-provided buffer is too small (C ABI only).
    BufferTooSmall = 4,
    /// The text is empty.
    EmptyText = 5,
    /// The text or prompt does not fit the model's context.
    TextTooLong = 6,
    /// A handle was already freed, never issued, or is of another type (C ABI only).
    InvalidHandle = 7,
    /// Bundle directory or manifest missing.
    BundleNotFound = 100,
    /// Bundle malformed or inconsistent.
    BundleInvalid = 101,
    /// Bundle format version not supported.
    VersionMismatch = 102,
    /// Bundle file size/sha256 mismatch.
    HashMismatch = 103,
    /// File i/o failed.
    Io = 104,
    /// Voice file malformed, truncated or failing its checksum.
    VoiceInvalid = 105,
    /// Backend not available on this machine/build.
    BackendUnavailable = 200,
    /// Out of (device) memory.
    OutOfMemory = 201,
    /// Device error.
    DeviceError = 202,
    /// Backend call failed.
    BackendFailed = 203,
    /// Request cancelled.
    Cancelled = 300,
    /// Stream finished.
    EndOfStream = 301,
    /// Broken invariant (bug).
    Internal = 900,
    /// A panic was caught at the C boundary.
    Panic = 901,
}

impl Status {
    /// The C name of this status, e.g. `S1_STATUS_BUNDLE_INVALID`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "S1_STATUS_OK",
            Status::InvalidArgument => "S1_STATUS_INVALID_ARGUMENT",
            Status::NullPointer => "S1_STATUS_NULL_POINTER",
            Status::InvalidUtf8 => "S1_STATUS_INVALID_UTF8",
            Status::BufferTooSmall => "S1_STATUS_BUFFER_TOO_SMALL",
            Status::EmptyText => "S1_STATUS_EMPTY_TEXT",
            Status::TextTooLong => "S1_STATUS_TEXT_TOO_LONG",
            Status::InvalidHandle => "S1_STATUS_INVALID_HANDLE",
            Status::BundleNotFound => "S1_STATUS_BUNDLE_NOT_FOUND",
            Status::BundleInvalid => "S1_STATUS_BUNDLE_INVALID",
            Status::VersionMismatch => "S1_STATUS_VERSION_MISMATCH",
            Status::HashMismatch => "S1_STATUS_HASH_MISMATCH",
            Status::Io => "S1_STATUS_IO",
            Status::VoiceInvalid => "S1_STATUS_VOICE_INVALID",
            Status::BackendUnavailable => "S1_STATUS_BACKEND_UNAVAILABLE",
            Status::OutOfMemory => "S1_STATUS_OUT_OF_MEMORY",
            Status::DeviceError => "S1_STATUS_DEVICE_ERROR",
            Status::BackendFailed => "S1_STATUS_BACKEND_FAILED",
            Status::Cancelled => "S1_STATUS_CANCELLED",
            Status::EndOfStream => "S1_STATUS_END_OF_STREAM",
            Status::Internal => "S1_STATUS_INTERNAL",
            Status::Panic => "S1_STATUS_PANIC",
        }
    }
}

impl TryFrom<i32> for Status {
    type Error = Error;

    /// Checks a status number that arrives from C (an out-of-range enum would be UB in Rust).
    fn try_from(value: i32) -> Result<Self> {
        Ok(match value {
            0 => Status::Ok,
            1 => Status::InvalidArgument,
            2 => Status::NullPointer,
            3 => Status::InvalidUtf8,
            4 => Status::BufferTooSmall,
            5 => Status::EmptyText,
            6 => Status::TextTooLong,
            7 => Status::InvalidHandle,
            100 => Status::BundleNotFound,
            101 => Status::BundleInvalid,
            102 => Status::VersionMismatch,
            103 => Status::HashMismatch,
            104 => Status::Io,
            105 => Status::VoiceInvalid,
            200 => Status::BackendUnavailable,
            201 => Status::OutOfMemory,
            202 => Status::DeviceError,
            203 => Status::BackendFailed,
            300 => Status::Cancelled,
            301 => Status::EndOfStream,
            900 => Status::Internal,
            901 => Status::Panic,
            other => {
                return Err(Error::InvalidArgument {
                    name: "status",
                    reason: format!("{other} is not an s1_status value"),
                })
            }
        })
    }
}

impl Error {
    /// The C status code of this error. The single place that maps errors to codes.
    pub fn status(&self) -> Status {
        match self {
            Error::InvalidArgument { .. } => Status::InvalidArgument,
            Error::InvalidUtf8 { .. } => Status::InvalidUtf8,
            Error::NullPointer { .. } => Status::NullPointer,
            Error::BufferTooSmall { .. } => Status::BufferTooSmall,
            Error::InvalidHandle { .. } => Status::InvalidHandle,
            Error::EmptyText => Status::EmptyText,
            Error::TextTooLong { .. } => Status::TextTooLong,
            Error::PromptTooLong { .. } => Status::TextTooLong,
            Error::BundleNotFound { .. } => Status::BundleNotFound,
            Error::BundleInvalid { .. } => Status::BundleInvalid,
            Error::VersionMismatch { .. } => Status::VersionMismatch,
            Error::HashMismatch { .. } => Status::HashMismatch,
            Error::Io { .. } => Status::Io,
            Error::VoiceInvalid { .. } => Status::VoiceInvalid,
            Error::BackendUnavailable { .. } => Status::BackendUnavailable,
            Error::Backend { .. } => Status::BackendFailed,
            Error::Cancelled => Status::Cancelled,
            Error::Internal(_) => Status::Internal,
        }
    }

    /// Shorthand for [`Error::BundleInvalid`].
    #[cold]
    pub(crate) fn bundle(file: &str, field: &str, reason: impl Into<String>) -> Self {
        Error::BundleInvalid {
            file: file.to_string(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    #[cold]
    pub(crate) fn arg(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { name, reason: reason.into() }
    }

    /// Shorthand for [`Error::Io`].
    #[cold]
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_roundtrips_through_i32() {
        for s in [
            Status::Ok,
            Status::InvalidArgument,
            Status::EmptyText,
            Status::BundleNotFound,
            Status::HashMismatch,
            Status::BackendUnavailable,
            Status::Cancelled,
            Status::EndOfStream,
            Status::Internal,
            Status::Panic,
        ] {
            assert_eq!(Status::try_from(s as i32).unwrap(), s);
        }
        assert!(Status::try_from(7777).is_err());
    }

    #[test]
    fn status_groups_follow_style_guide() {
        assert_eq!(Status::BundleNotFound as i32, 100);
        assert_eq!(Status::BackendUnavailable as i32, 200);
        assert_eq!(Status::Cancelled as i32, 300);
        assert_eq!(Status::Panic as i32, 901);
        assert_eq!(Error::Cancelled.status(), Status::Cancelled);
        assert_eq!(Status::BundleInvalid.name(), "S1_STATUS_BUNDLE_INVALID");
    }
}
