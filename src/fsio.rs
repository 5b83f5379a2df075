//! Reading files a caller or a bundle names, safely against special files: only regular files
//! are opened (a FIFO would block the open or the read forever, `/dev/zero` would never end), and
//! no read goes past a stated limit.
//!
//! The file type is checked on the path first, then the file is opened without blocking
//! (`O_NONBLOCK` on unix, so a FIFO swapped in meanwhile cannot hang the open) and checked again
//! through the opened handle, which is what is then read.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Why a file could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The operating system's error (missing file, permissions, …).
    Io(io::Error),
    /// Not a regular file: a FIFO, socket, device or directory.
    NotRegular,
    /// Longer than the limit, in bytes (`len` is what the file says, or `limit + 1` when it grew).
    TooLarge {
        /// Bytes the file has (at least).
        len: u64,
    },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotRegular => {
                write!(f, "not a regular file (a FIFO, socket, device or directory)")
            }
            ReadError::TooLarge { len } => write!(f, "{len} bytes is larger than the limit"),
        }
    }
}

/// Opens `path` for reading only when it is a regular file; returns it with its length.
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64), ReadError> {
    if !std::fs::metadata(path).map_err(ReadError::Io)?.is_file() {
        return Err(ReadError::NotRegular);
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Regular files ignore O_NONBLOCK; a FIFO swapped in after the check opens at once
        // instead of waiting for a writer, and is refused below.
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    Ok((file, meta.len()))
}

/// Reads a whole regular file of at most `limit` bytes; never reads more than `limit + 1`.
pub(crate) fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let (file, len) = open_regular(path)?;
    if len > limit {
        return Err(ReadError::TooLarge { len });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { len: bytes.len() as u64 });
    }
    Ok(bytes)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn fsio_refuses_fifo_and_devices_and_bounds_reads() {
        let dir = std::env::temp_dir().join(format!("s1mini-fsio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let st = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(st.success());
        assert!(matches!(read_regular(&fifo, 10), Err(ReadError::NotRegular)));
        assert!(matches!(read_regular(Path::new("/dev/zero"), 10), Err(ReadError::NotRegular)));
        assert!(matches!(read_regular(&dir, 10), Err(ReadError::NotRegular)));
        let f = dir.join("f");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read_regular(&f, 5).unwrap(), b"12345");
        assert!(matches!(read_regular(&f, 4), Err(ReadError::TooLarge { len: 5 })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
