//! A minimal `.npy` (format 1.0/2.0) reader and writer for little-endian i64/i32/f32/f64 arrays
//! in C order: enough for codes files (`[10, T]` int64, as fish-speech's codec CLI) and the
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
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an .npy file".into());
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes.get(start..start + hlen).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("no descr")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = match dict_value(header, "fortran_order").map(str::trim) {
        Some("False") => false,
        Some("True") => true,
        _ => return Err("no fortran_order".into()),
    };
    let shape_s = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or("no shape")?;
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape {shape_s}")))
        .collect::<std::result::Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let body = &bytes[start + hlen..];
    let need = |size: usize| -> std::result::Result<&[u8], String> {
        body.get(..n * size).ok_or_else(|| format!("data truncated: need {} bytes", n * size))
    };
    let data = match descr {
        "<i8" => NpyData::I64(
            need(8)?
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        "<i4" => NpyData::I64(
            need(4)?
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
                .collect(),
        ),
        "<f4" => NpyData::F32(
            need(4)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                .collect(),
        ),
        "<f8" => NpyData::F32(
            need(8)?
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
        ),
        other => return Err(format!("unsupported dtype {other}")),
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

fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let after = header.split(&format!("'{key}':")).nth(1)?;
    Some(after.split(',').next()?.trim())
}

fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape_s = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    // Pad so that magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64.
    let total = 10 + h.len() + 1;
    h.push_str(&" ".repeat((64 - total % 64) % 64));
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

/// Writes an int64 array.
pub fn write_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<()> {
    let mut out = header("<i8", shape);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).map_err(|e| Error::io(path, e))
}

/// Writes a float32 array.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let mut out = header("<f4", shape);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).map_err(|e| Error::io(path, e))
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
        // fortran_order: [[1, 2, 3], [4, 5, 6]] stored column-major.
        let mut f = header("<i8", &[2, 3]);
        let at = f.windows(5).position(|w| w == b"False").unwrap();
        f[at..at + 5].copy_from_slice(b"True ");
        for v in [1i64, 4, 2, 5, 3, 6] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&p, f).unwrap();
        assert_eq!(read(&p).unwrap().data, NpyData::I64(vec![1, 2, 3, 4, 5, 6]));
        std::fs::write(&p, b"junk").unwrap();
        assert!(read(&p).is_err());
    }
}
