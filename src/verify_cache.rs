//! Remembers which bundle files were verified, so an unchanged file is not hashed again.
//!
//! Hashing a real bundle (about 4 GB) costs several seconds at every load. After a file's
//! sha256 matched the manifest, a stamp records the file's identity: its canonical path, size,
//! modification and status-change times and (on unix) inode and device. A later load skips the
//! hash only if all of these are unchanged and the manifest still expects the stamped sha256.
//! Any write to the file changes its status-change time (ctime), which no user can set back, so
//! a file changed or damaged by a write is hashed again and caught. What a stamp cannot see is
//! damage without a write (a failing disk); `verify_hashes` with no cache hashes every time.
//!
//! Stamps are small text files in `<cache_dir>/verified/` (the engine's `cache_dir`, else the
//! user's cache directory); a stamp that cannot be read or written is ignored, never an error.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const HEADER: &str = "s1-mini verified v1";

/// A directory of verification stamps.
#[derive(Clone, Debug)]
pub struct VerifyCache {
    dir: PathBuf,
}

impl VerifyCache {
    /// Stamps in `cache_dir/verified`, or in the user's cache directory
    /// (`$XDG_CACHE_HOME/s1-mini`, `~/.cache/s1-mini`, `~/Library/Caches/s1-mini` on macOS,
    /// `%LOCALAPPDATA%\s1-mini` on Windows) when `cache_dir` is `None`; `None` when there is
    /// no such directory to use.
    pub fn new(cache_dir: Option<&Path>) -> Option<Self> {
        Some(Self { dir: cache_base(cache_dir)?.join("verified") })
    }

    /// Whether `path` was verified to hash to `sha256` and has not changed since.
    pub fn is_verified(&self, path: &Path, sha256: &str) -> bool {
        self.stamp(path, sha256)
            .is_some_and(|(p, want)| fs::read_to_string(p).is_ok_and(|got| got == want))
    }

    /// Records that `path` hashed to `sha256` (best effort: failures are only logged).
    pub fn record(&self, path: &Path, sha256: &str) {
        let Some((p, text)) = self.stamp(path, sha256) else {
            return;
        };
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let r = fs::create_dir_all(&self.dir)
            .and_then(|()| fs::write(&tmp, text))
            .and_then(|()| fs::rename(&tmp, &p));
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            log::debug!("verification stamp {} not written: {e}", p.display());
        }
    }

    /// Where `path`'s stamp lives and what it says for the file as it is now; `None` if the
    /// file cannot be described.
    fn stamp(&self, path: &Path, sha256: &str) -> Option<(PathBuf, String)> {
        let canonical = path.canonicalize().ok()?;
        let key = Sha256::digest(canonical.to_string_lossy().as_bytes());
        let name: String = key.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Some((self.dir.join(format!("{name}.stamp")), stamp_text(&canonical, sha256)?))
    }
}

/// The stamp for the file at `canonical` as it is now, or `None` if it cannot be described.
fn stamp_text(canonical: &Path, sha256: &str) -> Option<String> {
    Some(format!(
        "{HEADER}\n{}\n{}\n{}\n",
        canonical.display(),
        file_identity(canonical)?,
        sha256.to_ascii_lowercase()
    ))
}

/// The identity of the regular file at `path` as it is now: size, modification time and (unix)
/// status-change time, inode and device, or `None` if it cannot be described. Any write to the
/// file changes it. The path itself is not part of it (callers add it where it matters), so a
/// file keeps its identity when its directory is renamed.
pub(crate) fn file_identity(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
    Some(format!("{} {modified} {}", meta.len(), identity(&meta)))
}

/// The s1-mini directory of the user's cache (`$XDG_CACHE_HOME/s1-mini`, `~/.cache/s1-mini`,
/// `~/Library/Caches/s1-mini` on macOS, `%LOCALAPPDATA%\s1-mini` on Windows), or `cache_dir`
/// when one is configured; `None` when there is no such directory to use.
pub(crate) fn cache_base(cache_dir: Option<&Path>) -> Option<PathBuf> {
    match cache_dir {
        Some(d) => Some(d.to_path_buf()),
        None => Some(user_cache_dir()?.join("s1-mini")),
    }
}

#[cfg(unix)]
fn identity(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}.{} {} {}", meta.ctime(), meta.ctime_nsec(), meta.ino(), meta.dev())
}

#[cfg(not(unix))]
fn identity(meta: &fs::Metadata) -> String {
    let created = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{created}")
}

fn user_cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if cfg!(windows) {
        return env("LOCALAPPDATA");
    }
    if cfg!(target_os = "macos") {
        return env("HOME").map(|h| h.join("Library").join("Caches"));
    }
    env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("s1-verify-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn stamp_matches_until_the_file_or_the_expected_hash_changes() {
        let d = scratch("change");
        let f = d.join("w.bin");
        fs::write(&f, b"abcd").unwrap();
        let c = VerifyCache::new(Some(&d.join("cache"))).unwrap();
        assert!(!c.is_verified(&f, "00ff"));
        c.record(&f, "00FF");
        assert!(c.is_verified(&f, "00ff"));
        assert!(!c.is_verified(&f, "00fe"), "another expected hash must not match");
        // Same size, new bytes: ctime (and mtime) move, so the stamp no longer matches.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&f, b"abce").unwrap();
        assert!(!c.is_verified(&f, "00ff"));
    }

    #[test]
    fn stamp_is_per_path_and_garbage_stamps_do_not_match() {
        let d = scratch("path");
        let (a, b) = (d.join("a"), d.join("b"));
        fs::write(&a, b"x").unwrap();
        fs::write(&b, b"x").unwrap();
        let c = VerifyCache::new(Some(&d.join("cache"))).unwrap();
        c.record(&a, "11");
        assert!(c.is_verified(&a, "11") && !c.is_verified(&b, "11"));
        fs::write(c.stamp(&a, "11").unwrap().0, "junk").unwrap();
        assert!(!c.is_verified(&a, "11"));
    }

    #[test]
    fn unwritable_cache_is_ignored() {
        let d = scratch("ro");
        let f = d.join("f");
        fs::write(&f, b"x").unwrap();
        // A file where the cache directory should be: recording fails quietly.
        fs::write(d.join("cache"), b"not a dir").unwrap();
        let c = VerifyCache::new(Some(&d.join("cache"))).unwrap();
        c.record(&f, "11");
        assert!(!c.is_verified(&f, "11"));
    }
}
