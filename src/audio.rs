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

/// The `hound` spec of a mono WAV file in `format`.
fn wav_spec(sample_rate_hz: u32, format: WavFormat) -> hound::WavSpec {
    let (bits_per_sample, sample_format) = match format {
        WavFormat::Pcm16 => (16, hound::SampleFormat::Int),
        WavFormat::Float32 => (32, hound::SampleFormat::Float),
    };
    hound::WavSpec { channels: 1, sample_rate: sample_rate_hz, bits_per_sample, sample_format }
}

/// Writes one sample in `format` (16-bit PCM: clipped to [-1, 1], scaled by 32767, rounded).
fn write_sample<W: std::io::Write + std::io::Seek>(
    w: &mut hound::WavWriter<W>,
    s: f32,
    format: WavFormat,
) -> hound::Result<()> {
    match format {
        WavFormat::Pcm16 => w.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16),
        WavFormat::Float32 => w.write_sample(s),
    }
}

/// Encodes mono samples as a WAV file in memory (16-bit PCM: a 44-byte header; 32-bit float:
/// `hound`'s WAVE_FORMAT_EXTENSIBLE header).
pub fn wav_bytes(samples: &[f32], sample_rate_hz: u32, format: WavFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    // Writing into memory fails only on sizes past a WAV file's 4 GiB limit.
    let written =
        hound::WavWriter::new(&mut out, wav_spec(sample_rate_hz, format)).and_then(|mut w| {
            for &s in samples {
                write_sample(&mut w, s, format)?;
            }
            w.finalize()
        });
    if let Err(e) = written {
        log::error!("WAV encoding of {} samples failed: {e}", samples.len());
    }
    out.into_inner()
}

/// A mono WAV file written chunk by chunk, playable after every [`WavFileWriter::append`]
/// (the header's sizes are rewritten each time).
pub struct WavFileWriter {
    writer: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    path: std::path::PathBuf,
    format: WavFormat,
}

impl WavFileWriter {
    /// Creates (or truncates) `path` with an empty WAV of `format` at `sample_rate_hz`.
    pub fn create(path: &Path, sample_rate_hz: u32, format: WavFormat) -> Result<WavFileWriter> {
        let writer = hound::WavWriter::create(path, wav_spec(sample_rate_hz, format))
            .map_err(|e| wav_io(path, e))?;
        Ok(WavFileWriter { writer, path: path.into(), format })
    }

    /// Appends `samples` and updates the header, so what was written stays playable.
    pub fn append(&mut self, samples: &[f32]) -> Result<()> {
        for &s in samples {
            write_sample(&mut self.writer, s, self.format).map_err(|e| wav_io(&self.path, e))?;
        }
        self.writer.flush().map_err(|e| wav_io(&self.path, e))
    }

    /// Samples written so far.
    pub fn samples(&self) -> usize {
        self.writer.len() as usize
    }
}

/// A `hound` error on `path`: I/O errors as [`Error::Io`], the rest as an invalid `wav`.
fn wav_io(path: &Path, e: hound::Error) -> Error {
    match e {
        hound::Error::IoError(source) => Error::io(path, source),
        other => Error::arg("wav", format!("{}: {other}", path.display())),
    }
}

/// Writes mono samples to a WAV file.
pub fn write_wav(path: &Path, audio: &Audio, format: WavFormat) -> Result<()> {
    let bytes = wav_bytes(&audio.samples, audio.sample_rate_hz, format);
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&bytes).map_err(|e| Error::io(path, e))
}

/// Reads a WAV file (PCM 8/16/24/32-bit or float 32, plain or WAVE_FORMAT_EXTENSIBLE), mixing
/// channels down to mono. A data chunk cut short (a file still being written, or truncated)
/// gives the whole frames that are there.
pub fn read_wav(path: &Path) -> Result<Audio> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_wav(&bytes).map_err(|why| Error::arg("wav", format!("{}: {why}", path.display())))
}

fn parse_wav(b: &[u8]) -> std::result::Result<Audio, String> {
    let mut r = hound::WavReader::new(std::io::Cursor::new(b)).map_err(|e| e.to_string())?;
    let spec = r.spec();
    if spec.channels == 0 {
        return Err("zero channels".into());
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => r.samples::<f32>().map_while(|s| s.ok()).collect(),
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            r.samples::<i32>()
                .map_while(|s| s.ok())
                .map(|v| (f64::from(v) * scale) as f32)
                .collect()
        }
        (f, bits) => return Err(format!("unsupported sample format {f:?}, {bits} bits")),
    };
    let ch = usize::from(spec.channels);
    let samples = interleaved
        .chunks_exact(ch)
        .map(|fr| fr.iter().sum::<f32>() / f32::from(spec.channels))
        .collect();
    Ok(Audio { samples, sample_rate_hz: spec.sample_rate })
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

    #[test]
    fn wav_truncated_data_gives_whole_frames_and_bad_headers_say_why() {
        let s: Vec<f32> = (0..100).map(|i| i as f32 / 200.0).collect();
        let bytes = wav_bytes(&s, 16_000, WavFormat::Pcm16);
        assert_eq!(bytes.len(), 44 + 200, "16-bit mono: the plain 44-byte header");
        // Cut in the middle of sample 60: samples 0..60 remain.
        let a = parse_wav(&bytes[..44 + 121]).unwrap();
        assert_eq!(a.samples.len(), 60);
        assert!((a.samples[59] - s[59]).abs() < 1e-4);
        let why = parse_wav(&bytes[..30]).unwrap_err();
        assert!(!why.is_empty(), "a cut header is an error with a reason");
        let why = parse_wav(b"RIFX\0\0\0\0WAVE").unwrap_err();
        assert!(why.to_lowercase().contains("riff"), "{why}");
    }

    #[test]
    fn wav_file_writer_is_playable_after_each_append() {
        let dir = std::env::temp_dir().join(format!("s1-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stream.wav");
        let mut w = WavFileWriter::create(&path, 44_100, WavFormat::Float32).unwrap();
        w.append(&[0.25, -0.5]).unwrap();
        assert_eq!(read_wav(&path).unwrap().samples, vec![0.25, -0.5]);
        w.append(&[1.0]).unwrap();
        assert_eq!(w.samples(), 3);
        assert_eq!(read_wav(&path).unwrap().samples, vec![0.25, -0.5, 1.0]);
        drop(w);
        std::fs::remove_dir_all(&dir).unwrap();
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
