//! `.npy` arrays through `npyz`: i64/i32/f32/f64 (widened to i64 or narrowed to f32, C or
//! Fortran order), enough for codes files (`[10, T]` int64, as fish-speech's codec CLI) and the
//! golden fixtures.

use std::path::Path;

use crate::error::{Error, Result};

/// Element data of an `.npy` array.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `<i8`, `<i4` (widened).
    I64(Vec<i64>),
    /// `<f4`, `<f8` (narrowed).
    F32(Vec<f32>),
}

/// An array read from `.npy`.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values in C order.
    pub data: NpyData,
}

impl NpyArray {
    /// Values as i64 (floats are an error).
    pub fn into_i64(self, path: &Path) -> Result<Vec<i64>> {
        match self.data {
            NpyData::I64(v) => Ok(v),
            NpyData::F32(_) => Err(bad(path, "expected an integer array")),
        }
    }

    /// Values as f32 (integers are converted).
    pub fn into_f32(self) -> Vec<f32> {
        match self.data {
            NpyData::F32(v) => v,
            NpyData::I64(v) => v.into_iter().map(|x| x as f32).collect(),
        }
    }
}

fn bad(path: &Path, why: &str) -> Error {
    Error::arg("npy", format!("{}: {why}", path.display()))
}

/// Reads an `.npy` file.
pub fn read(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|why| bad(path, &why))
}

fn parse(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    let file = npyz::NpyFile::new(bytes).map_err(|e| format!("not an .npy file ({e})"))?;
    let shape = file
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d} is too large")))
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    let fortran = file.order() == npyz::Order::Fortran;
    let npyz::DType::Plain(ty) = file.dtype() else {
        return Err("structured or array dtypes are not supported".into());
    };
    let n = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or("shape too large")?;
    // The element count against the bytes present, before anything is allocated.
    let size = usize::try_from(ty.size_field()).unwrap_or(usize::MAX);
    let have = bytes.len().saturating_sub(data_offset(bytes));
    if n.checked_mul(size).is_none_or(|need| need > have) {
        return Err(format!("data truncated: need {} bytes", n.saturating_mul(size)));
    }
    let truncated = |e: std::io::Error| format!("data truncated or unreadable: {e}");
    use npyz::TypeChar::{Float, Int};
    let data = match (ty.type_char(), ty.size_field()) {
        (Int, 8) => NpyData::I64(file.into_vec::<i64>().map_err(truncated)?),
        (Int, 4) => NpyData::I64(
            file.into_vec::<i32>().map_err(truncated)?.into_iter().map(i64::from).collect(),
        ),
        (Float, 4) => NpyData::F32(file.into_vec::<f32>().map_err(truncated)?),
        (Float, 8) => NpyData::F32(
            file.into_vec::<f64>().map_err(truncated)?.into_iter().map(|v| v as f32).collect(),
        ),
        _ => return Err(format!("unsupported dtype {ty}")),
    };
    let data = if fortran {
        match data {
            NpyData::I64(v) => NpyData::I64(fortran_to_c(&v, &shape)),
            NpyData::F32(v) => NpyData::F32(fortran_to_c(&v, &shape)),
        }
    } else {
        data
    };
    Ok(NpyArray { shape, data })
}

/// Where the data starts: magic (6), version (2), header length (2 bytes in version 1, 4 in
/// later versions), header. Only called once `npyz` has accepted the preamble.
fn data_offset(bytes: &[u8]) -> usize {
    let at = |i: usize| usize::from(bytes.get(i).copied().unwrap_or(0));
    match bytes.get(6) {
        Some(1) => 10 + (at(8) | at(9) << 8),
        _ => 12 + (at(8) | at(9) << 8 | at(10) << 16 | at(11) << 24),
    }
}

/// Reorders column-major (Fortran) data into row-major (C) order.
fn fortran_to_c<T: Copy>(v: &[T], shape: &[usize]) -> Vec<T> {
    let n = v.len();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        // Fortran offset of the C-order multi-index `idx`.
        let mut off = 0usize;
        let mut stride = 1usize;
        for (i, &d) in idx.iter().zip(shape) {
            off += i * stride;
            stride *= d;
        }
        out.push(v[off]);
        // Advance idx in C order (last axis fastest).
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    out
}

/// Writes `data` (C order) as an `.npy` array of `shape`.
fn write<T: npyz::Serialize + npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[usize],
    data: &[T],
) -> Result<()> {
    use npyz::WriterBuilder;
    let mut out = Vec::new();
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let written = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(&mut out)
        .begin_nd()
        .and_then(|mut w| {
            w.extend(data.iter().copied())?;
            w.finish()
        });
    written.map_err(|e| Error::io(path, e))?;
    std::fs::write(path, out).map_err(|e| Error::io(path, e))
}

/// Writes an int64 array.
pub fn write_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<()> {
    write(path, shape, data)
}

/// Writes a float32 array.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write(path, shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_i64_roundtrips() {
        let dir = std::env::temp_dir().join(format!("s1npy{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        write_i64(&p, &[2, 3], &[1, 2, 3, 4, 5, -6]).unwrap();
        let a = read(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, NpyData::I64(vec![1, 2, 3, 4, 5, -6]));
        write_f32(&p, &[3], &[0.5, 1.0, -2.0]).unwrap();
        assert_eq!(read(&p).unwrap().into_f32(), vec![0.5, 1.0, -2.0]);
        // fortran_order: [[1, 2, 3], [4, 5, 6]] stored column-major (numpy's own header).
        let h = "{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3), }";
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        let pad = 64 - (10 + h.len() + 1) % 64;
        f.extend_from_slice(&((h.len() + pad + 1) as u16).to_le_bytes());
        f.extend_from_slice(h.as_bytes());
        f.extend(std::iter::repeat_n(b' ', pad));
        f.push(b'\n');
        let body_at = f.len();
        for v in [1i64, 4, 2, 5, 3, 6] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&p, &f).unwrap();
        assert_eq!(read(&p).unwrap().data, NpyData::I64(vec![1, 2, 3, 4, 5, 6]));
        // A body cut short is an error that says so, not a short array.
        std::fs::write(&p, &f[..body_at + 20]).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        std::fs::write(&p, b"junk").unwrap();
        assert!(read(&p).is_err());
    }
}
