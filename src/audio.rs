//! PCM buffers and WAV files (16-bit PCM and 32-bit float, mono).

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Mono PCM audio: f32 samples, nominal range [-1, 1].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Audio {
    /// Samples, f32 mono, nominal [-1, 1].
    pub samples: Vec<f32>,
    /// Sample rate in Hz (44 100 for S1).
    pub sample_rate_hz: u32,
}

impl Audio {
    /// Duration in seconds.
    pub fn duration_s(&self) -> f64 {
        if self.sample_rate_hz == 0 {
            0.0
        } else {
            self.samples.len() as f64 / f64::from(self.sample_rate_hz)
        }
    }
}

/// One streamed piece of audio. Concatenating every chunk's samples gives the one-shot audio.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AudioChunk {
    /// Samples, f32 mono, nominal [-1, 1].
    pub samples: Vec<f32>,
    /// Sample rate in Hz.
    pub sample_rate_hz: u32,
    /// Index of the first frame of this chunk in the utterance.
    pub first_frame: usize,
    /// Frames in this chunk.
    pub frames: usize,
    /// `true` on the last chunk of the utterance.
    pub is_last: bool,
}

/// Sample format of a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WavFormat {
    /// 16-bit signed integer PCM (clipped to [-1, 1]).
    #[default]
    Pcm16,
    /// 32-bit IEEE float.
    Float32,
}

/// Encodes mono samples as a WAV file in memory.
pub fn wav_bytes(samples: &[f32], sample_rate_hz: u32, format: WavFormat) -> Vec<u8> {
    let (tag, bits): (u16, u16) = match format {
        WavFormat::Pcm16 => (1, 16),
        WavFormat::Float32 => (3, 32),
    };
    let block_align = bits / 8;
    let data_len = samples.len() as u32 * u32::from(block_align);
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate_hz.to_le_bytes());
    out.extend_from_slice(&(sample_rate_hz * u32::from(block_align)).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &s in samples {
        match format {
            WavFormat::Pcm16 => {
                let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
                out.extend_from_slice(&v.to_le_bytes());
            }
            WavFormat::Float32 => out.extend_from_slice(&s.to_le_bytes()),
        }
    }
    out
}

/// Writes mono samples to a WAV file.
pub fn write_wav(path: &Path, audio: &Audio, format: WavFormat) -> Result<()> {
    let bytes = wav_bytes(&audio.samples, audio.sample_rate_hz, format);
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&bytes).map_err(|e| Error::io(path, e))
}

/// Reads a WAV file (PCM 16/24/32-bit or float 32), mixing channels down to mono.
pub fn read_wav(path: &Path) -> Result<Audio> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_wav(&bytes).map_err(|why| Error::arg("wav", format!("{}: {why}", path.display())))
}

fn parse_wav(b: &[u8]) -> std::result::Result<Audio, String> {
    if b.len() < 12 || &b[..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let u16_at = |i: usize| b.get(i..i + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |i: usize| b.get(i..i + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    let mut pos = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let len = u32_at(pos + 4).ok_or("truncated chunk")? as usize;
        let body = pos + 8;
        if id == b"fmt " {
            let tag = u16_at(body).ok_or("truncated fmt")?;
            let ch = u16_at(body + 2).ok_or("truncated fmt")?;
            let rate = u32_at(body + 4).ok_or("truncated fmt")?;
            let bits = u16_at(body + 14).ok_or("truncated fmt")?;
            // WAVE_FORMAT_EXTENSIBLE: the sub-format tag sits at offset 24 of the fmt body.
            let tag = if tag == 0xFFFE { u16_at(body + 24).ok_or("truncated fmt")? } else { tag };
            fmt = Some((tag, ch, rate, bits));
        } else if id == b"data" {
            let (tag, ch, rate, bits) = fmt.ok_or("data before fmt")?;
            if ch == 0 {
                return Err("zero channels".into());
            }
            let data = b.get(body..(body + len).min(b.len())).ok_or("truncated data")?;
            let width = usize::from(bits / 8);
            let decode = |s: &[u8]| -> std::result::Result<f32, String> {
                Ok(match (tag, bits) {
                    (1, 16) => f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0,
                    (1, 24) => {
                        (i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8) as f32 / 8_388_608.0
                    }
                    (1, 32) => {
                        i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f32 / 2_147_483_648.0
                    }
                    (3, 32) => f32::from_le_bytes([s[0], s[1], s[2], s[3]]),
                    _ => return Err(format!("unsupported sample format tag {tag}, {bits} bits")),
                })
            };
            let frame = width * usize::from(ch);
            let mut samples = Vec::with_capacity(data.len() / frame.max(1));
            for fr in data.chunks_exact(frame.max(1)) {
                let mut acc = 0.0f32;
                for c in fr.chunks_exact(width.max(1)) {
                    acc += decode(c)?;
                }
                samples.push(acc / f32::from(ch));
            }
            return Ok(Audio { samples, sample_rate_hz: rate });
        }
        pos = body + len + (len & 1);
    }
    Err("no data chunk".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_roundtrips_float_and_pcm16() {
        let s = vec![0.0, 0.5, -0.5, 1.0, -1.0];
        let a = parse_wav(&wav_bytes(&s, 44_100, WavFormat::Float32)).unwrap();
        assert_eq!(a.samples, s);
        assert_eq!(a.sample_rate_hz, 44_100);
        let a = parse_wav(&wav_bytes(&s, 22_050, WavFormat::Pcm16)).unwrap();
        for (x, y) in a.samples.iter().zip(&s) {
            assert!((x - y).abs() < 1e-4);
        }
        assert!(parse_wav(b"nope").is_err());
    }
}
