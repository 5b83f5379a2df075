//! ONNX Runtime's optimised graphs, kept between loads so a second load skips reading the
//! bundle's protobuf and rewriting its graphs.
//!
//! On a cache miss the session is created from the bundle's graph as before, with ONNX
//! Runtime asked to save the optimised graph (`optimized_model_filepath`) with its initializers
//! in one external data file, large tensors at page-aligned offsets. On a hit the saved graph
//! is opened with optimisation disabled and the data file memory-mapped. Packed weights are not
//! saved (`session.save_external_prepacked_constant_initializers`): ONNX Runtime 1.31.1 loads
//! saved MatMulNBits packs wrongly (see `open_cached` in the parent module), so MLAS packs the
//! weights again at each load.
//!
//! An entry is `<cache>/onnx/<name>/` with `model.onnx`, `model.onnx.data` and `stamp`, where
//! `<cache>` is the engine's `cache_dir` or the user's cache directory (`~/.cache/s1-mini`).
//! `<name>` is a hash of the source graph's path and the session options, so each graph and
//! option set has one entry, replaced when its source changes. The stamp holds the key, and
//! the identity (size, times, inode) of the two files as they were written; the key is:
//! - the source graph and its external data files (`slow.onnx.data`): path, size, modification
//!   and status-change times, inode, device (the verification stamps' file identity, so any
//!   write to the bundle makes a new key),
//! - the ONNX Runtime library (its build info, path, size and modification time),
//! - the execution provider (CPU only), the graph optimisation level and every session config
//!   entry that shapes the saved graph,
//! - the CPU architecture and the instruction-set features MLAS chooses its kernels and packed
//!   layouts by (AVX2, AVX-512, VNNI, AMX, NEON dot product, ...).
//!
//! Thread counts are not in the key: the saved graph does not depend on them (fast.onnx fp32
//! and int4 saved with 1 and 2 intra-op threads are byte-identical).
//!
//! A stale, damaged or unreadable entry is rebuilt, never an error: a key or file identity that
//! does not match its stamp (any write to an entry file changes its identity), a missing file,
//! or a saved graph ONNX Runtime refuses all mean the source is loaded and saved again. An entry
//! is written into a temporary directory, its files synced, and renamed into place, so a
//! crashed load leaves no half entry behind. What a stamp cannot see is damage without a write
//! (a failing disk), as for the verification stamps. Entries are about as large as the graph
//! files they come from; deleting `<cache>/onnx` clears them.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::verify_cache::{cache_base, file_identity};

// v2: entries no longer hold packed weights (v1 entries of int4/int8 graphs were wrong).
const HEADER: &str = "s1-mini onnx model cache v2";
const MODEL: &str = "model.onnx";
const DATA: &str = "model.onnx.data";
const STAMP: &str = "stamp";

/// Where optimised graphs are kept.
#[derive(Clone, Debug)]
pub(crate) struct ModelCache {
    dir: PathBuf,
    /// The ONNX Runtime library and CPU part of every key.
    runtime: String,
}

/// What to do for one graph: open the cached graph, or open the source and save it.
pub(crate) enum Plan {
    /// A valid entry: open `model` with graph optimisation disabled. If ONNX Runtime refuses
    /// it, call [`ModelCache::discard`] and [`ModelCache::prepare`] again.
    Hit { model: PathBuf, entry: PathBuf },
    /// No usable entry: open the source with [`Save::model`] as the optimised model path and
    /// [`DATA_FILE`] as its external data file, then [`Save::commit`].
    Miss(Save),
}

/// The external data file name of a saved graph, relative to its model file.
pub(crate) const DATA_FILE: &str = DATA;

/// An entry being written.
pub(crate) struct Save {
    tmp: PathBuf,
    entry: PathBuf,
    key: String,
}

impl ModelCache {
    /// The cache in `cache_dir/onnx` (else the user's cache directory), for sessions of the
    /// library loaded from `library`; `None` when there is no cache directory.
    pub(crate) fn new(cache_dir: Option<&Path>, library: &Path, build_info: &str) -> Option<Self> {
        let dir = cache_base(cache_dir)?.join("onnx");
        let lib = library
            .canonicalize()
            .ok()
            .and_then(|p| Some(format!("{} {}", p.display(), file_identity(&p)?)))
            .unwrap_or_else(|| format!("{} (not found)", library.display()));
        let runtime = format!(
            "runtime {build_info}\nlibrary {lib}\ncpu {} {}",
            std::env::consts::ARCH,
            cpu_features()
        );
        Some(Self { dir, runtime })
    }

    /// The plan for `source` opened with `options` (a canonical description of every session
    /// option that shapes the saved graph). `None` when the cache cannot be used for it (the
    /// source cannot be described, or the directory cannot be created): open the source as
    /// if there were no cache.
    pub(crate) fn prepare(&self, source: &Path, options: &str) -> Option<Plan> {
        let source = source.canonicalize().ok()?;
        let key = format!("{}\n{options}\n{}", self.runtime, source_identity(&source)?);
        let name = hex16(&Sha256::digest(format!("{}\n{options}", source.display())));
        let entry = self.dir.join(name);
        if let Some(model) = valid_entry(&entry, &key) {
            return Some(Plan::Hit { model, entry });
        }
        if recently_failed(&failed_marker(&entry), &key) {
            return None;
        }
        // Unique per process and call: engines may be built concurrently.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nonce = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp =
            self.dir.join(format!(".tmp-{}-{}-{nonce}", entry_name(&entry), std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        if let Err(e) = fs::create_dir_all(&tmp) {
            log::debug!("onnx model cache {} not usable: {e}", self.dir.display());
            return None;
        }
        Some(Plan::Miss(Save { tmp, entry, key }))
    }

    /// Removes an entry ONNX Runtime refused (best effort).
    pub(crate) fn discard(&self, entry: &Path) {
        if let Err(e) = fs::remove_dir_all(entry) {
            log::debug!("onnx model cache entry {} not removed: {e}", entry.display());
        }
    }
}

impl Save {
    /// Where ONNX Runtime writes the optimised graph.
    pub(crate) fn model(&self) -> PathBuf {
        self.tmp.join(MODEL)
    }

    /// Seals the entry once the session that saved it was created: syncs the files, stamps
    /// them and renames the directory into place (best effort: a failure only logs, and the
    /// next load tries again).
    pub(crate) fn commit(self) {
        match self.seal() {
            Ok(()) => {
                let _ = fs::remove_file(failed_marker(&self.entry));
            }
            Err(e) => self.failed(&e.to_string()),
        }
    }

    /// Abandons the entry: saving failed (`why`, e.g. a full disk). The same key is not tried
    /// again for [`RETRY_AFTER`], so a disk too small for the entry costs one failed save per
    /// day, not one per load.
    pub(crate) fn failed(&self, why: &str) {
        log::warn!(
            "onnx model cache: {} not saved ({why}); loads optimise it again, next try in a day              (delete {} to retry now)",
            self.entry.display(),
            failed_marker(&self.entry).display()
        );
        let _ = fs::remove_dir_all(&self.tmp);
        let _ = fs::write(failed_marker(&self.entry), &self.key);
    }

    fn seal(&self) -> std::io::Result<()> {
        let mut stamp = format!("{HEADER}\n{}\n", self.key);
        for file in [MODEL, DATA] {
            let p = self.tmp.join(file);
            // A graph with no initializer above the size threshold writes no data file; an
            // empty one keeps the entry's shape fixed.
            if !p.exists() {
                fs::File::create(&p)?;
            }
            fs::File::open(&p)?.sync_all()?;
            let id = file_identity(&p).ok_or_else(|| std::io::Error::other("cannot stat"))?;
            stamp.push_str(&format!("{file} {id}\n"));
        }
        fs::write(self.tmp.join(STAMP), stamp)?;
        fs::File::open(self.tmp.join(STAMP))?.sync_all()?;
        // Another engine may have sealed the same entry meanwhile: a valid one is kept (an
        // engine may be opening it), only a stale or damaged one is replaced. An entry being
        // replaced may be mapped by a running engine: unlinking it keeps that mapping valid
        // (unix); where it cannot be removed, the rename fails and the old entry stays (it is
        // stale, so the next load rebuilds again).
        if valid_entry(&self.entry, &self.key).is_some() {
            return Ok(());
        }
        let _ = fs::remove_dir_all(&self.entry);
        fs::rename(&self.tmp, &self.entry)
    }

    /// The entry's final directory.
    pub(crate) fn entry(&self) -> &Path {
        &self.entry
    }
}

impl Drop for Save {
    /// The temporary directory never outlives the save (sealed, failed or dropped early).
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.tmp);
    }
}

/// How long a failed save of one key stops new attempts.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The marker a failed save of `entry` leaves (it holds the key).
fn failed_marker(entry: &Path) -> PathBuf {
    entry.with_extension("failed")
}

/// Whether saving `key` failed less than [`RETRY_AFTER`] ago.
fn recently_failed(marker: &Path, key: &str) -> bool {
    let young = fs::metadata(marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < RETRY_AFTER);
    young && fs::read_to_string(marker).is_ok_and(|k| k == key)
}

/// The model file of the entry at `entry` if its stamp matches `key` and both files are as
/// they were written.
fn valid_entry(entry: &Path, key: &str) -> Option<PathBuf> {
    let stamp = fs::read_to_string(entry.join(STAMP)).ok()?;
    let mut want = format!("{HEADER}\n{key}\n");
    for file in [MODEL, DATA] {
        want.push_str(&format!("{file} {}\n", file_identity(&entry.join(file))?));
    }
    (stamp == want).then(|| entry.join(MODEL))
}

/// Identity of `source` (canonical) and its external data files: every file beside it whose
/// name starts with the graph's file name and a dot (`slow.onnx.data`), in name order.
fn source_identity(source: &Path) -> Option<String> {
    let name = source.file_name()?.to_str()?;
    let prefix = format!("{name}.");
    let mut files: Vec<PathBuf> = fs::read_dir(source.parent()?)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut out = format!("source {} {}", source.display(), file_identity(source)?);
    for f in files {
        out.push_str(&format!("\ndata {} {}", f.display(), file_identity(&f)?));
    }
    Some(out)
}

fn entry_name(entry: &Path) -> String {
    entry.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn hex16(digest: &[u8]) -> String {
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The instruction-set features MLAS picks its kernels (and so its packed weight layouts) by,
/// as detected on this CPU.
fn cpu_features() -> String {
    let mut on: Vec<&str> = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $( if std::arch::is_x86_feature_detected!($f) { on.push($f); } )* };
        }
        probe!(
            "sse4.1",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512dq",
            "avx512vl",
            "avx512vnni",
            "avx512bf16",
            "avx512fp16",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $( if std::arch::is_aarch64_feature_detected!($f) { on.push($f); } )* };
        }
        probe!("neon", "dotprod", "i8mm", "bf16", "fp16", "sve", "sve2", "sme");
    }
    let mut out = on.join(",");
    // Features std cannot name on stable Rust (AMX, AVX-VNNI-INT8, ...): Linux lists them all.
    if let Some(flags) = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("flags")).map(str::to_owned))
    {
        out.push_str(&format!(" flags {}", hex16(&Sha256::digest(flags))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("s1-model-cache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes an entry as ONNX Runtime would (model + data files), then seals it.
    fn save(cache: &ModelCache, source: &Path, options: &str) {
        let Some(Plan::Miss(s)) = cache.prepare(source, options) else { panic!("expected a miss") };
        fs::write(s.model(), b"graph").unwrap();
        fs::write(s.tmp.join(DATA), b"weights").unwrap();
        s.commit();
    }

    #[test]
    fn entry_hits_until_its_source_options_or_files_change() {
        let d = scratch("key");
        let src = d.join("g.onnx");
        fs::write(&src, b"source").unwrap();
        fs::write(d.join("g.onnx.data"), b"data").unwrap();
        let cache = ModelCache::new(Some(&d.join("cache")), &src, "build 1").unwrap();
        assert!(matches!(cache.prepare(&src, "opt=3"), Some(Plan::Miss(_))));
        save(&cache, &src, "opt=3");
        let Some(Plan::Hit { model, .. }) = cache.prepare(&src, "opt=3") else { panic!("miss") };
        assert_eq!(fs::read(&model).unwrap(), b"graph");
        assert!(matches!(cache.prepare(&src, "opt=1"), Some(Plan::Miss(_))), "other options");
        let other_runtime = ModelCache::new(Some(&d.join("cache")), &src, "build 2").unwrap();
        assert!(matches!(other_runtime.prepare(&src, "opt=3"), Some(Plan::Miss(_))));

        // A write to the source's data file (same size) changes the key.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(d.join("g.onnx.data"), b"DATA").unwrap();
        assert!(matches!(cache.prepare(&src, "opt=3"), Some(Plan::Miss(_))));
        save(&cache, &src, "opt=3");
        assert!(matches!(cache.prepare(&src, "opt=3"), Some(Plan::Hit { .. })));

        // A write to the entry's data file (damage) makes it a miss.
        let Some(Plan::Hit { entry, .. }) = cache.prepare(&src, "opt=3") else { panic!("miss") };
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(entry.join(DATA), b"weightz").unwrap();
        assert!(matches!(cache.prepare(&src, "opt=3"), Some(Plan::Miss(_))));
        // ... and so does a truncated stamp.
        save(&cache, &src, "opt=3");
        fs::write(entry.join(STAMP), HEADER).unwrap();
        assert!(matches!(cache.prepare(&src, "opt=3"), Some(Plan::Miss(_))));
    }

    #[test]
    fn a_failed_save_leaves_no_files_and_is_not_retried_at_once() {
        let d = scratch("failed");
        let src = d.join("g.onnx");
        fs::write(&src, b"source").unwrap();
        let cache = ModelCache::new(Some(&d.join("cache")), &src, "b").unwrap();
        // A plan dropped unused (ONNX Runtime never ran) removes its temporary directory.
        drop(cache.prepare(&src, "o"));
        let Some(Plan::Miss(save)) = cache.prepare(&src, "o") else { panic!("expected a miss") };
        fs::write(save.model(), b"half a graph").unwrap();
        save.failed("disk full");
        drop(save);
        let left: Vec<_> = fs::read_dir(d.join("cache/onnx"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "temporary directories left: {left:?}");
        assert!(cache.prepare(&src, "o").is_none(), "the failed key is not saved again");
        assert!(matches!(cache.prepare(&src, "o2"), Some(Plan::Miss(_))), "another key is");
        // An old marker no longer stops a save.
        let marker = fs::read_dir(d.join("cache/onnx"))
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(".failed"))
            .unwrap()
            .path();
        let old = std::time::SystemTime::now() - RETRY_AFTER - std::time::Duration::from_secs(1);
        fs::File::options().write(true).open(&marker).unwrap().set_modified(old).unwrap();
        assert!(matches!(cache.prepare(&src, "o"), Some(Plan::Miss(_))));
    }

    #[test]
    fn unwritable_cache_is_not_used() {
        let d = scratch("ro");
        let src = d.join("g.onnx");
        fs::write(&src, b"source").unwrap();
        // A file where the cache directory should be.
        fs::write(d.join("cache"), b"not a dir").unwrap();
        let cache = ModelCache::new(Some(&d.join("cache")), &src, "b").unwrap();
        assert!(cache.prepare(&src, "o").is_none());
    }
}
