//! [`Voice`]: a reference voice (its codec codes and transcript) for cloning, and its file format
//! (`docs/voice-format.md`): magic, version, payload length and sha256, then the payload.
//!
//! Every length in a file is checked against the file's actual size before anything is allocated,
//! so a corrupt or truncated file is an [`Error::VoiceInvalid`], never a panic or a huge
//! allocation.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::codes::{Codes, Frames};
use crate::error::{Error, Result};
use crate::fsio;

/// First 8 bytes of a voice file.
pub const VOICE_MAGIC: [u8; 8] = *b"S1VOICE\0";
/// The file format version this library writes and reads.
pub const VOICE_FORMAT_VERSION: u32 = 1;
/// Header bytes before the payload: magic 8, version 4, flags 4, payload length 8, sha256 32.
const HEADER_BYTES: usize = 56;
/// Largest voice file accepted, in bytes (a 190 s reference at 10 codebooks is ≈ 82 KiB).
pub const MAX_VOICE_FILE_BYTES: u64 = 16 << 20;
/// Most codebooks a voice may have.
const MAX_CODEBOOKS: usize = 64;
/// Longest transcript stored, in bytes of UTF-8.
pub const MAX_TRANSCRIPT_BYTES: usize = 1 << 20;

/// A reference voice: what is said in the reference audio and its codec codes
/// (`[num_codebooks, frames]`). Synthesis with voices puts them before the text as fish-speech's
/// `generate_long` does (S1MINI_FACTS §3.2). Cheap to clone; immutable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voice {
    transcript: String,
    codes: Codes,
    fingerprint: [u8; 32],
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::VoiceInvalid { reason: reason.into() }
}

impl Voice {
    /// A voice from codes and their transcript. Checks shape and value ranges only; the engine
    /// checks the codes against its codec ([`crate::Engine::voice_from_codes`]).
    pub fn new(codes: Codes, transcript: &str) -> Result<Voice> {
        if transcript.trim().is_empty() {
            return Err(Error::arg("transcript", "is empty (say what the reference audio says)"));
        }
        if transcript.len() > MAX_TRANSCRIPT_BYTES {
            return Err(Error::arg(
                "transcript",
                format!("{} bytes, at most {MAX_TRANSCRIPT_BYTES}", transcript.len()),
            ));
        }
        if codes.frames().0 == 0 {
            return Err(Error::arg("codes", "no frames"));
        }
        if codes.num_codebooks() > MAX_CODEBOOKS {
            return Err(Error::arg("codes", format!("more than {MAX_CODEBOOKS} codebooks")));
        }
        if let Some(c) = codes.as_slice().iter().find(|&&c| !(0..=i64::from(u16::MAX)).contains(&c))
        {
            return Err(Error::arg("codes", format!("code {c} is outside 0..=65535")));
        }
        let mut v = Voice { transcript: transcript.to_owned(), codes, fingerprint: [0; 32] };
        v.fingerprint = Sha256::digest(v.payload()).into();
        Ok(v)
    }

    /// What is said in the reference audio.
    pub fn transcript(&self) -> &str {
        &self.transcript
    }

    /// The reference audio's codes, `[num_codebooks, frames]`.
    pub fn codes(&self) -> &Codes {
        &self.codes
    }

    /// sha256 of the voice's payload: equal voices have equal fingerprints (the prefix cache key).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The payload: `num_codebooks` u32, `frames` u32, `transcript_len` u32, the transcript's
    /// UTF-8 bytes, then the codes as u16, `[num_codebooks, frames]` row-major; all little-endian.
    fn payload(&self) -> Vec<u8> {
        let k = self.codes.num_codebooks();
        let t = self.codes.frames().0;
        let mut p = Vec::with_capacity(12 + self.transcript.len() + 2 * k * t);
        p.extend_from_slice(&(k as u32).to_le_bytes());
        p.extend_from_slice(&(t as u32).to_le_bytes());
        p.extend_from_slice(&(self.transcript.len() as u32).to_le_bytes());
        p.extend_from_slice(self.transcript.as_bytes());
        for &c in self.codes.as_slice() {
            // Range checked in Voice::new.
            p.extend_from_slice(&(c as u16).to_le_bytes());
        }
        p
    }

    /// The voice file's bytes (`docs/voice-format.md`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = self.payload();
        let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
        out.extend_from_slice(&VOICE_MAGIC);
        out.extend_from_slice(&VOICE_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // flags: none defined
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&payload));
        out.extend_from_slice(&payload);
        out
    }

    /// Parses a voice file's bytes. A wrong magic, version, length or checksum, or a malformed
    /// payload is [`Error::VoiceInvalid`] (or [`Error::VersionMismatch`] for another version).
    pub fn from_bytes(bytes: &[u8]) -> Result<Voice> {
        if bytes.len() < HEADER_BYTES {
            return Err(invalid(format!(
                "{} bytes is shorter than the {HEADER_BYTES}-byte header (truncated, or not a voice file)",
                bytes.len()
            )));
        }
        if bytes.len() as u64 > MAX_VOICE_FILE_BYTES {
            return Err(invalid(format!(
                "{} bytes is larger than the {MAX_VOICE_FILE_BYTES}-byte limit",
                bytes.len()
            )));
        }
        if bytes[..8] != VOICE_MAGIC {
            return Err(invalid("bad magic (not an s1-mini voice file)"));
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let version = u32_at(8);
        if version != VOICE_FORMAT_VERSION {
            return Err(Error::VersionMismatch {
                file: "voice".into(),
                field: "version".into(),
                expected: VOICE_FORMAT_VERSION.to_string(),
                found: version.to_string(),
                hint: "",
            });
        }
        let flags = u32_at(12);
        if flags != 0 {
            return Err(invalid(format!("unknown flags {flags:#x}")));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&bytes[16..24]);
        let payload_len = u64::from_le_bytes(len8);
        let actual = (bytes.len() - HEADER_BYTES) as u64;
        if payload_len != actual {
            return Err(invalid(format!(
                "header says {payload_len} payload bytes, the file has {actual} (truncated or corrupt)"
            )));
        }
        let payload = &bytes[HEADER_BYTES..];
        let digest: [u8; 32] = Sha256::digest(payload).into();
        if digest[..] != bytes[24..56] {
            return Err(invalid("sha256 of the payload does not match the header (corrupt file)"));
        }
        if payload.len() < 12 {
            return Err(invalid("payload shorter than its 12-byte header"));
        }
        let p32 = |i: usize| {
            u32::from_le_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]])
                as usize
        };
        let (k, t, text_len) = (p32(0), p32(4), p32(8));
        if k == 0 || k > MAX_CODEBOOKS {
            return Err(invalid(format!("{k} codebooks (1 to {MAX_CODEBOOKS})")));
        }
        if text_len > MAX_TRANSCRIPT_BYTES {
            return Err(invalid(format!("transcript of {text_len} bytes")));
        }
        // All sizes are small (k ≤ 64, t < 2^32, text ≤ 1 MiB): no overflow in u64.
        let want = 12u64 + text_len as u64 + 2 * k as u64 * t as u64;
        if want != payload.len() as u64 {
            return Err(invalid(format!(
                "payload of {} bytes, its fields need {want}",
                payload.len()
            )));
        }
        let text = std::str::from_utf8(&payload[12..12 + text_len])
            .map_err(|_| invalid("transcript is not valid utf-8"))?;
        let codes: Vec<i64> = payload[12 + text_len..]
            .chunks_exact(2)
            .map(|c| i64::from(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        let codes = Codes::new(k, Frames(t), codes)?;
        Voice::new(codes, text).map_err(|e| invalid(e.to_string()))
    }

    /// Writes the voice file (`docs/voice-format.md`).
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()).map_err(|e| Error::io(path, e))
    }

    /// Reads a voice file: a regular file (a FIFO, device or directory is
    /// [`Error::VoiceInvalid`], never waited on or read), whose size is checked before it is
    /// read and of which at most the limit + 1 bytes are read.
    pub fn load(path: &Path) -> Result<Voice> {
        let bytes = fsio::read_regular(path, MAX_VOICE_FILE_BYTES).map_err(|e| match e {
            fsio::ReadError::Io(e) => Error::io(path, e),
            fsio::ReadError::TooLarge { len } => invalid(format!(
                "{}: {len} bytes is larger than the {MAX_VOICE_FILE_BYTES}-byte limit",
                path.display()
            )),
            other => invalid(format!("{}: {other}", path.display())),
        })?;
        Voice::from_bytes(&bytes).map_err(|e| match e {
            Error::VoiceInvalid { reason } => {
                Error::VoiceInvalid { reason: format!("{}: {reason}", path.display()) }
            }
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice() -> Voice {
        let codes = Codes::new(3, Frames(4), (0..12).map(|i| i * 100).collect()).unwrap();
        Voice::new(codes, "Hello there.").unwrap()
    }

    #[test]
    fn voice_bytes_round_trip_identical() {
        let v = voice();
        let b = v.to_bytes();
        assert_eq!(&b[..8], b"S1VOICE\0");
        let w = Voice::from_bytes(&b).unwrap();
        assert_eq!(v, w);
        assert_eq!(w.to_bytes(), b);
    }

    #[test]
    fn voice_truncated_or_corrupt_is_voice_invalid() {
        let b = voice().to_bytes();
        for n in [0, 7, 55, 56, b.len() - 1] {
            let e = Voice::from_bytes(&b[..n]).unwrap_err();
            assert!(matches!(e, Error::VoiceInvalid { .. }), "{n}: {e}");
        }
        let mut c = b.clone();
        let last = c.len() - 1;
        c[last] ^= 1;
        assert!(Voice::from_bytes(&c).unwrap_err().to_string().contains("sha256"));
        let mut c = b.clone();
        c[0] = b'X';
        assert!(Voice::from_bytes(&c).unwrap_err().to_string().contains("magic"));
        let mut c = b.clone();
        c[8] = 9;
        assert!(matches!(Voice::from_bytes(&c), Err(Error::VersionMismatch { .. })));
        // A huge claimed length is refused before any allocation.
        let mut c = b.clone();
        c[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(Voice::from_bytes(&c), Err(Error::VoiceInvalid { .. })));
        // Fields that disagree with the payload length (checksum recomputed).
        let mut c = b.clone();
        c[HEADER_BYTES + 4..HEADER_BYTES + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let digest: [u8; 32] = Sha256::digest(&c[HEADER_BYTES..]).into();
        c[24..56].copy_from_slice(&digest);
        assert!(Voice::from_bytes(&c).unwrap_err().to_string().contains("fields need"));
    }

    #[test]
    fn voice_new_refuses_empty_transcript_and_bad_codes() {
        let codes = Codes::new(1, Frames(1), vec![70_000]).unwrap();
        assert!(Voice::new(codes, "x").is_err());
        let codes = Codes::new(1, Frames(1), vec![1]).unwrap();
        assert!(Voice::new(codes.clone(), "  ").is_err());
        assert!(Voice::new(codes, "ok").is_ok());
    }
}
