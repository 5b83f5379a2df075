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

/// Lowest input sample rate accepted for reference audio, Hz. Below it the resampler's output
/// (and work) per input sample grows without bound: 1 Hz made one second of audio cost 41 s and
/// 1.4 GB (issue #19.6), and no real recording is that slow.
pub const MIN_INPUT_SAMPLE_RATE_HZ: u32 = 8_000;
/// Highest input sample rate accepted for reference audio, Hz.
pub const MAX_INPUT_SAMPLE_RATE_HZ: u32 = 384_000;

/// Mixes interleaved `channels`-channel PCM down to mono (the mean of each frame's channels).
/// `samples.len()` must be a multiple of `channels` (1..=64).
pub fn downmix(samples: &[f32], channels: usize) -> Result<Vec<f32>> {
    if channels == 0 || channels > 64 {
        return Err(Error::arg("channels", format!("{channels}; 1 to 64 channels are accepted")));
    }
    if !samples.len().is_multiple_of(channels) {
        return Err(Error::arg(
            "samples",
            format!(
                "{} samples are not a whole number of {channels}-channel frames",
                samples.len()
            ),
        ));
    }
    if channels == 1 {
        return Ok(samples.to_vec());
    }
    let n = channels as f32;
    Ok(samples.chunks_exact(channels).map(|fr| fr.iter().sum::<f32>() / n).collect())
}

/// Checks reference PCM before encoding: at least one sample, every sample finite, and a sample
/// rate in [`MIN_INPUT_SAMPLE_RATE_HZ`]..=[`MAX_INPUT_SAMPLE_RATE_HZ`].
pub fn check_pcm(samples: &[f32], sample_rate_hz: u32) -> Result<()> {
    if !(MIN_INPUT_SAMPLE_RATE_HZ..=MAX_INPUT_SAMPLE_RATE_HZ).contains(&sample_rate_hz) {
        return Err(Error::arg(
            "sample_rate_hz",
            format!(
                "{sample_rate_hz} Hz; {MIN_INPUT_SAMPLE_RATE_HZ} to {MAX_INPUT_SAMPLE_RATE_HZ} Hz \
                 is accepted"
            ),
        ));
    }
    if samples.is_empty() {
        return Err(Error::arg("audio", "no samples (the reference audio is empty)"));
    }
    if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
        return Err(Error::arg(
            "audio",
            format!("sample {i} is {} (NaN and infinite samples are refused)", samples[i]),
        ));
    }
    Ok(())
}

/// Resampler settings (rubato 0.16 `SincFixedIn`): a 256-tap Blackman-Harris² windowed sinc with
/// its cut-off at 0.95 × the lower Nyquist frequency, 256× oversampled table, cubic
/// interpolation between table points. Stop-band attenuation is well over 100 dB; the pass band is
/// flat to 0.95 × the lower Nyquist frequency (≈ 20.9 kHz for 44.1 kHz). The output is aligned
/// with the input to within one output sample (≤ 23 µs at 44.1 kHz).
const SINC_LEN: usize = 256;
const SINC_CUTOFF: f32 = 0.95;
const SINC_OVERSAMPLING: usize = 256;
/// Input samples per resampler call.
const RESAMPLE_CHUNK: usize = 4096;

/// Resamples mono PCM from `from_hz` to `to_hz` with a windowed-sinc filter (see the constants
/// above). Output length = ceil(len · to_hz / from_hz). Equal rates return the input unchanged.
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>> {
    use rubato::{
        Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction,
    };
    if from_hz == 0 || to_hz == 0 {
        return Err(Error::arg("sample_rate_hz", "sample rates must be > 0"));
    }
    if from_hz == to_hz || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let ratio = f64::from(to_hz) / f64::from(from_hz);
    let want = (samples.len() as u128 * u128::from(to_hz)).div_ceil(u128::from(from_hz)) as usize;
    let params = SincInterpolationParameters {
        sinc_len: SINC_LEN,
        f_cutoff: SINC_CUTOFF,
        oversampling_factor: SINC_OVERSAMPLING,
        interpolation: SincInterpolationType::Cubic,
        window: WindowFunction::BlackmanHarris2,
    };
    let resample_err = |e: &dyn std::fmt::Display| Error::arg("audio", format!("resampling: {e}"));
    let mut rs = SincFixedIn::<f32>::new(ratio, 1.0, params, RESAMPLE_CHUNK, 1)
        .map_err(|e| resample_err(&e))?;
    // rubato 0.16's SincFixedIn output is already aligned except for a shift of (ratio − 1)
    // output samples (measured with a Gaussian pulse); drop its whole part, so the output is
    // aligned with the input to within one output sample.
    let delay = if ratio > 1.0 { (ratio - 1.0).round() as usize } else { 0 };
    let mut out: Vec<f32> = Vec::with_capacity(want + delay + rs.output_frames_max());
    let mut chunks = samples.chunks_exact(RESAMPLE_CHUNK);
    for chunk in chunks.by_ref() {
        let y = rs.process(&[chunk], None).map_err(|e| resample_err(&e))?;
        out.extend_from_slice(&y[0]);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let y = rs.process_partial(Some(&[rest]), None).map_err(|e| resample_err(&e))?;
        out.extend_from_slice(&y[0]);
    }
    // Flush the filter's tail (zeros in) until the delayed output covers every input sample.
    let mut guard = 0;
    while out.len() < delay + want {
        let y = rs.process_partial::<&[f32]>(None, None).map_err(|e| resample_err(&e))?;
        if y[0].is_empty() || guard > 64 {
            break;
        }
        out.extend_from_slice(&y[0]);
        guard += 1;
    }
    let mut y: Vec<f32> = out.into_iter().skip(delay).take(want).collect();
    y.resize(want, 0.0);
    Ok(y)
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

    fn tone(rate: u32, hz: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin() as f32)
            .collect()
    }

    /// Centre of mass of a resampled 2 ms Gaussian pulse, against where it should be.
    fn pulse_centroid(from: u32, to: u32, n: usize) -> (f64, f64, usize) {
        let c = (n / 2) as f64;
        let sig = 0.002 * f64::from(from);
        let x: Vec<f32> =
            (0..n).map(|i| (-((i as f64 - c) / sig).powi(2) / 2.0).exp() as f32).collect();
        let y = resample(&x, from, to).unwrap();
        let (m0, m1) = y
            .iter()
            .enumerate()
            .fold((0.0, 0.0), |(a, b), (i, &v)| (a + f64::from(v), b + f64::from(v) * i as f64));
        (m1 / m0, c * f64::from(to) / f64::from(from), y.len())
    }

    #[test]
    fn resample_keeps_timing_and_length() {
        for (from, to, n) in [
            (22_050, 44_100, 22_050),
            (48_000, 44_100, 48_000),
            (16_000, 44_100, 5_000),
            (44_100, 16_000, 44_100),
            (96_000, 44_100, 9_601),
        ] {
            let (got, want, len) = pulse_centroid(from, to, n);
            assert!((got - want).abs() <= 1.0, "{from}->{to}: centre {got}, want {want}");
            assert_eq!(len as u64, (n as u64 * u64::from(to)).div_ceil(u64::from(from)));
        }
        let x = tone(22_050, 1000.0, 22_050);
        assert_eq!(resample(&x, 44_100, 44_100).unwrap(), x);
        // A 1 kHz tone keeps its amplitude (pass band).
        let y = resample(&x, 22_050, 44_100).unwrap();
        let peak = y[2000..42_000].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!((peak - 1.0).abs() < 1e-2, "peak {peak}");
    }

    #[test]
    fn resample_removes_content_above_the_new_nyquist() {
        // 20 kHz at 48 kHz → 16 kHz (Nyquist 8 kHz): filtered out.
        let y = resample(&tone(48_000, 20_000.0, 48_000), 48_000, 16_000).unwrap();
        let peak = y[500..15_500].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(peak < 1e-3, "alias peak {peak}");
    }

    #[test]
    fn downmix_and_checks_refuse_bad_input() {
        assert_eq!(downmix(&[1.0, 0.0, 0.5, 0.5], 2).unwrap(), vec![0.5, 0.5]);
        assert!(downmix(&[1.0, 0.0, 0.5], 2).is_err());
        assert!(downmix(&[1.0], 0).is_err());
        assert!(check_pcm(&[], 44_100).unwrap_err().to_string().contains("no samples"));
        assert!(check_pcm(&[0.0, f32::NAN], 44_100).unwrap_err().to_string().contains("NaN"));
        assert!(check_pcm(&[f32::INFINITY], 44_100).is_err());
        assert!(check_pcm(&[0.0], 0).is_err());
        assert!(check_pcm(&[0.0], 44_100).is_ok());
    }
}
