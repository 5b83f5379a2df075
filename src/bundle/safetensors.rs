//! The header of a safetensors file: 8 bytes of little-endian header length, then a JSON object
//! of tensor name → `{dtype, shape, data_offsets}` (offsets relative to the end of the header),
//! and an optional `__metadata__` entry. The one reader of it in the crate: the native CUDA
//! backend plans its weight arena from it, `bench` counts the weights read per frame.
//!
//! Only the header is read: the `safetensors` crate validates a whole file held in memory,
//! and `llm.safetensors` is 1.7 GB for S1-mini.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Largest header read, in bytes (S1-mini's is 40 KB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// dtype string (`BF16`, `F32`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Byte offset of the data from the start of the file.
    pub file_offset: u64,
    /// Byte length.
    pub bytes: usize,
}

/// A tensor entry as written.
#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// Reads the header of the safetensors file at `path`: tensor name → info, offsets made
/// absolute and checked to lie inside the file. A malformed header is `BundleInvalid` naming
/// the file (and the tensor, when one entry is wrong).
pub fn read_header(path: &Path) -> Result<BTreeMap<String, TensorInfo>> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let io = |e| Error::Io { path: path.to_path_buf(), source: e };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let mut len8 = [0u8; 8];
    f.read_exact(&mut len8).map_err(io)?;
    let hlen = u64::from_le_bytes(len8);
    if hlen > MAX_HEADER_BYTES || 8 + hlen > file_len {
        return Err(Error::bundle(&name, "-", "bad safetensors header length"));
    }
    let mut h = vec![0u8; hlen as usize];
    f.read_exact(&mut h).map_err(io)?;
    // Entries stay JSON values until `__metadata__` (a map of strings, not a tensor) is set
    // aside; each tensor entry is then deserialised on its own, so an error names it.
    let entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&h)
        .map_err(|e| Error::bundle(&name, "-", format!("safetensors header: {e}")))?;
    let data_start = 8 + hlen;
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        if k == "__metadata__" {
            continue;
        }
        let e: Entry = serde_json::from_value(v).map_err(|e| {
            Error::bundle(&name, &k, format!("expected {{dtype, shape, data_offsets}}: {e}"))
        })?;
        let [begin, end] = e.data_offsets;
        let inside = data_start.checked_add(end).is_some_and(|last| last <= file_len);
        let bytes = end.checked_sub(begin).and_then(|b| usize::try_from(b).ok());
        let (Some(bytes), true) = (bytes, inside) else {
            return Err(Error::bundle(&name, &k, "data_offsets outside the file"));
        };
        out.insert(
            k,
            TensorInfo { dtype: e.dtype, shape: e.shape, file_offset: data_start + begin, bytes },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, header: &str, data_bytes: usize) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("s1-st-{}-{name}", std::process::id()));
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data_bytes, 0);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn header_offsets_are_absolute_and_metadata_is_skipped() {
        let h = r#"{"__metadata__": {"format": "pt"},
            "a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
            "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}}"#;
        let path = write("ok", h, 16);
        let t = read_header(&path).unwrap();
        let start = 8 + h.len() as u64;
        assert_eq!(t.len(), 2);
        assert_eq!(
            t["a"],
            TensorInfo { dtype: "BF16".into(), shape: vec![2, 3], file_offset: start, bytes: 12 }
        );
        assert_eq!((t["b"].file_offset, t["b"].bytes), (start + 12, 4));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn malformed_entries_name_the_tensor() {
        for (case, h) in [
            ("shape", r#"{"a": {"dtype": "BF16", "shape": [-1], "data_offsets": [0, 2]}}"#),
            ("outside", r#"{"a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 99]}}"#),
            ("reversed", r#"{"a": {"dtype": "BF16", "shape": [1], "data_offsets": [2, 0]}}"#),
            (
                "huge",
                r#"{"a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 18446744073709551615]}}"#,
            ),
            ("dtype", r#"{"a": {"shape": [1], "data_offsets": [0, 2]}}"#),
        ] {
            let path = write(case, h, 2);
            match read_header(&path) {
                Err(Error::BundleInvalid { field, .. }) => assert_eq!(field, "a", "{case}"),
                other => panic!("{case}: {other:?}"),
            }
            let _ = std::fs::remove_file(path);
        }
        let path = write("json", "{not json}", 0);
        assert!(
            matches!(read_header(&path), Err(Error::BundleInvalid { field, .. }) if field == "-")
        );
        let _ = std::fs::remove_file(path);
    }
}
