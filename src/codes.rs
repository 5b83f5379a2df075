//! Codec codes: `[num_codebooks × frames]` integers, one column per frame (21.53 per second).

use crate::error::{Error, Result};

/// A number of codec frames (one frame = `frame_samples` PCM samples, 46.44 ms for S1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Frames(pub usize);

/// Codec codes, `[num_codebooks, frames]` row-major int64, as fish-speech's codec CLI stores them
/// in `.npy` files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Codes {
    num_codebooks: usize,
    frames: usize,
    data: Vec<i64>,
}

impl Codes {
    /// Wraps `[num_codebooks, frames]` row-major data.
    pub fn new(num_codebooks: usize, frames: Frames, data: Vec<i64>) -> Result<Self> {
        // checked_mul: a frame count from a file must not wrap around to a matching length.
        if num_codebooks == 0 || num_codebooks.checked_mul(frames.0) != Some(data.len()) {
            return Err(Error::arg(
                "codes",
                format!("{} values do not fill [{num_codebooks}, {}]", data.len(), frames.0),
            ));
        }
        Ok(Self { num_codebooks, frames: frames.0, data })
    }

    /// Builds codes from frame columns (each `num_codebooks` long).
    pub fn from_frames(num_codebooks: usize, columns: &[Vec<i64>]) -> Result<Self> {
        let frames = columns.len();
        let mut data = vec![0i64; num_codebooks * frames];
        for (f, col) in columns.iter().enumerate() {
            if col.len() != num_codebooks {
                return Err(Error::arg("codes", format!("frame {f} has {} codes", col.len())));
            }
            for (k, &c) in col.iter().enumerate() {
                data[k * frames + f] = c;
            }
        }
        Ok(Self { num_codebooks, frames, data })
    }

    /// Number of codebooks (rows).
    pub fn num_codebooks(&self) -> usize {
        self.num_codebooks
    }

    /// Number of frames (columns).
    pub fn frames(&self) -> Frames {
        Frames(self.frames)
    }

    /// The code of codebook `k` at frame `f` (caller keeps indices in range).
    pub fn get(&self, k: usize, f: usize) -> i64 {
        self.data[k * self.frames + f]
    }

    /// `[num_codebooks, frames]` row-major.
    pub fn as_slice(&self) -> &[i64] {
        &self.data
    }

    /// Frames `start..end` as new codes (clamped to the available frames).
    pub fn slice_frames(&self, start: usize, end: usize) -> Codes {
        let end = end.min(self.frames);
        let start = start.min(end);
        let n = end - start;
        let mut data = Vec::with_capacity(self.num_codebooks * n);
        for k in 0..self.num_codebooks {
            data.extend_from_slice(&self.data[k * self.frames + start..k * self.frames + end]);
        }
        Codes { num_codebooks: self.num_codebooks, frames: n, data }
    }
}
