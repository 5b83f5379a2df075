//! The only place where C pointers become Rust values (rustls `ffi.rs` pattern, STYLE.md §13).
//!
//! Handles are keys into one registry of live objects, in one key space shared by every kind:
//! - engine, stream and voice handles are never addresses: they are ids from one counter shared
//!   by all three kinds, never reused, and always odd, so a freed handle can never alias a later
//!   object and a stale or foreign handle is a lookup miss (`S1_STATUS_INVALID_HANDLE`) instead of
//!   a read of freed memory;
//! - audio buffers are real heap structs the caller reads, so their key is their address, which
//!   is always even (the struct is pointer-aligned): an id can never equal a live audio's key;
//! - an insert never replaces an entry ([`insert_new`]), whatever the keys.
//!
//! Objects in the registry are `Arc`s: a call in flight keeps its object alive even if another
//! thread frees the handle meanwhile.
use std::any::Any;
use std::collections::HashMap;
use std::ffi::{c_char, CStr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::{Error, Status};

/// One live object behind a C handle.
enum Slot {
    Shared(Arc<dyn Any + Send + Sync>),
    Owned(Box<dyn Any + Send + Sync>),
}

fn registry() -> MutexGuard<'static, HashMap<usize, Slot>> {
    static REGISTRY: OnceLock<Mutex<HashMap<usize, Slot>>> = OnceLock::new();
    let m = REGISTRY.get_or_init(|| Mutex::new(HashMap::new()));
    // A panic while the lock was held cannot leave the map half-updated (every update is one
    // insert or remove), so a poisoned lock is safe to keep using.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The next id for an engine, stream or voice handle: odd (so never the address of an audio
/// struct, which is pointer-aligned), starting high so that it never looks like a small integer,
/// never reused; 0 (NULL) is never issued. The 64-bit counter cannot wrap in practice; an id that
/// no longer fits a pointer (32-bit hosts, after 2^28 handles) is an error, never a reuse.
fn next_id() -> Result<usize, Error> {
    let n = next_id_counter().fetch_add(16, Ordering::Relaxed);
    usize::try_from(n | 1)
        .map_err(|_| Error::Internal("out of handle ids (2^28 handles on a 32-bit host)".into()))
}

fn next_id_counter() -> &'static AtomicU64 {
    static NEXT: AtomicU64 = AtomicU64::new(0x51_0000);
    &NEXT
}

/// Inserts a new registry entry; an occupied key is an error and the entry there is kept (by
/// construction of the keys this cannot happen, and if it did it must not replace a live object).
fn insert_new(key: usize, slot: Slot) -> Result<(), Error> {
    match registry().entry(key) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(slot);
            Ok(())
        }
        std::collections::hash_map::Entry::Occupied(_) => {
            Err(Error::Internal(format!("handle {key:#x} is already in use")))
        }
    }
}

/// Test seam: makes the next id at least `n` (ids never go back).
#[cfg(test)]
pub(crate) fn advance_ids_to(n: usize) {
    next_id_counter().fetch_max(n as u64, Ordering::Relaxed);
}

/// Registers a shared object and returns its opaque handle.
pub(crate) fn into_handle<T: Any + Send + Sync, C>(obj: Arc<T>) -> Result<*mut C, Error> {
    let id = next_id()?;
    insert_new(id, Slot::Shared(obj))?;
    Ok(id as *mut C)
}

/// The shared object behind `ptr` in the locked registry `reg`: NULL → `NullPointer`,
/// unknown/freed/other type → `InvalidHandle`. The caller keeps the lock for whatever it does next.
fn shared_in<T: Any + Send + Sync, C>(
    reg: &HashMap<usize, Slot>,
    ptr: *const C,
    what: &'static str,
) -> Result<Arc<T>, Error> {
    if ptr.is_null() {
        return Err(Error::NullPointer { arg: what });
    }
    match reg.get(&(ptr as usize)) {
        Some(Slot::Shared(obj)) => Arc::clone(obj).downcast::<T>().map_err(|_| invalid(what)),
        _ => Err(invalid(what)),
    }
}

/// Looks a handle up: NULL → `NullPointer`, unknown/freed/other type → `InvalidHandle`.
pub(crate) fn handle_ref<T: Any + Send + Sync, C>(
    ptr: *const C,
    what: &'static str,
) -> Result<Arc<T>, Error> {
    shared_in(&registry(), ptr, what)
}

/// Unregisters a handle. NULL is a no-op (free functions are NULL-safe); an unknown handle is an
/// error. The object itself is dropped here, or by the last call still using it.
pub(crate) fn free_handle<T: Any + Send + Sync, C>(
    ptr: *mut C,
    what: &'static str,
) -> Result<(), Error> {
    remove_slot(ptr, what, |slot| matches!(slot, Slot::Shared(obj) if obj.is::<T>()))
}

/// Removes the registry entry of `ptr` when `is_expected` accepts it; NULL is a no-op, anything
/// else is an error and is not touched.
fn remove_slot<C>(
    ptr: *mut C,
    what: &'static str,
    is_expected: impl Fn(&Slot) -> bool,
) -> Result<(), Error> {
    if ptr.is_null() {
        return Ok(());
    }
    let mut reg = registry();
    let key = ptr as usize;
    match reg.get(&key) {
        Some(slot) if is_expected(slot) => {
            let removed = reg.remove(&key);
            // Drop outside the lock: dropping an engine may take a while (sessions, threads).
            drop(reg);
            drop(removed);
            Ok(())
        }
        _ => Err(invalid(what)),
    }
}

/// An object that one call at a time may use (a stream): while a call holds it, other calls that
/// want it, and its free, are refused with `INVALID_ARGUMENT` instead of racing that call.
pub(crate) trait Exclusive {
    /// Set while a call holds the object; only [`handle_acquire`] and [`InUse`] touch it.
    fn in_use(&self) -> &AtomicBool;
}

/// A handle's object held by one call; released when dropped (also on panic).
pub(crate) struct InUse<T: Exclusive>(Arc<T>);

impl<T: Exclusive> std::ops::Deref for InUse<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Exclusive> Drop for InUse<T> {
    fn drop(&mut self) {
        self.0.in_use().store(false, Ordering::Release);
    }
}

#[cold]
fn busy(what: &'static str) -> Error {
    Error::arg(
        what,
        "in use by a call in progress (s1_stream_next or s1_stream_run, on another thread or \
         in this thread's chunk callback); one call at a time per stream",
    )
}

/// Looks a handle up like [`handle_ref`] and marks its object in use for the caller; an object
/// already in use is `InvalidArgument`. Lookup and marking happen under the registry lock, as
/// does [`free_exclusive`]'s check, so a free can never slip between them.
pub(crate) fn handle_acquire<T: Exclusive + Any + Send + Sync, C>(
    ptr: *const C,
    what: &'static str,
) -> Result<InUse<T>, Error> {
    let reg = registry();
    let obj = shared_in::<T, C>(&reg, ptr, what)?;
    if obj.in_use().swap(true, Ordering::Acquire) {
        return Err(busy(what));
    }
    Ok(InUse(obj))
}

/// [`free_handle`] for [`Exclusive`] objects: refused with `InvalidArgument`, touching nothing,
/// while a call holds the object (so no call can be left using, or handing out, freed memory).
pub(crate) fn free_exclusive<T: Exclusive + Any + Send + Sync, C>(
    ptr: *mut C,
    what: &'static str,
) -> Result<(), Error> {
    if ptr.is_null() {
        return Ok(());
    }
    let mut reg = registry();
    let key = ptr as usize;
    match reg.get(&key) {
        Some(Slot::Shared(obj)) => match obj.downcast_ref::<T>() {
            Some(t) if t.in_use().load(Ordering::Acquire) => return Err(busy(what)),
            Some(_) => {}
            None => return Err(invalid(what)),
        },
        _ => return Err(invalid(what)),
    }
    let removed = reg.remove(&key);
    drop(reg);
    drop(removed);
    Ok(())
}

/// Registers a heap struct the caller reads directly; its address is the handle.
pub(crate) fn into_owned_ptr<T: Any + Send + Sync, C>(obj: Box<T>) -> Result<*mut C, Error> {
    let ptr = &*obj as *const T as usize;
    if !ptr.is_multiple_of(2) {
        // Only byte-aligned types could land here; the registry's key split needs even keys.
        return Err(Error::Internal(format!("{ptr:#x} is odd: not a registrable struct")));
    }
    insert_new(ptr, Slot::Owned(obj))?;
    Ok(ptr as *mut C)
}

/// Frees a struct registered by [`into_owned_ptr`]; NULL is a no-op, anything else unknown is an
/// error and is not touched.
pub(crate) fn free_owned_ptr<T: Any + Send + Sync, C>(
    ptr: *mut C,
    what: &'static str,
) -> Result<(), Error> {
    remove_slot(ptr, what, |slot| matches!(slot, Slot::Owned(obj) if obj.is::<T>()))
}

#[cold]
fn invalid(what: &'static str) -> Error {
    Error::InvalidHandle { arg: what }
}

/// Writes `value` through an out-parameter.
///
/// # Safety
/// `out` must be NULL or valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T, what: &'static str) -> Result<(), Error> {
    if out.is_null() {
        return Err(Error::NullPointer { arg: what });
    }
    // SAFETY: non-null, and valid for writes per this function's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// Reads a required NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn utf8_arg<'a>(
    ptr: *const c_char,
    what: &'static str,
) -> Result<&'a str, Error> {
    if ptr.is_null() {
        return Err(Error::NullPointer { arg: what });
    }
    // SAFETY: non-null and NUL-terminated per this function's contract.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str().map_err(|e| Error::InvalidUtf8 { arg: what, valid_up_to: e.valid_up_to() })
}

/// Reads an optional string argument: NULL → `None`.
///
/// # Safety
/// As [`utf8_arg`].
pub(crate) unsafe fn opt_utf8_arg<'a>(
    ptr: *const c_char,
    what: &'static str,
) -> Result<Option<&'a str>, Error> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    unsafe { utf8_arg(ptr, what) }.map(Some)
}

/// `(offset, size)` of each named field of a `#[repr(C)]` struct, for [`options_arg`].
macro_rules! field_spans {
    ($t:ty; $($f:ident),+ $(,)?) => {
        &[$((std::mem::offset_of!($t, $f), $crate::ffi::convert::field_size(|s: &$t| &s.$f))),+]
    };
}
pub(crate) use field_spans;

/// Size of the field a non-capturing accessor returns (used by [`field_spans!`]).
pub(crate) fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    std::mem::size_of::<F>()
}

/// Copies a caller's versioned options struct over `default` (STYLE.md §14).
///
/// Reads `struct_size` (the first `u32`) first and then copies only `struct_size` bytes, so a
/// caller built against an older, shorter struct is never over-read; the fields it does not know
/// keep their defaults. Sizes below `min_size` (the first published layout) or above this
/// library's size (a caller built against a newer header) are rejected, and so is a size that
/// ends inside one of `fields` (`(offset, size)` of every field, from [`field_spans!`]): that
/// would mix the caller's first bytes of the field with the default's last ones. A size at a
/// field's end or in the padding after it is a boundary and accepted.
///
/// # Safety
/// `ptr` must be NULL or point to at least `struct_size` readable bytes, with `struct_size` being
/// its first `u32` field; `T` must be a `#[repr(C)]` plain-data struct whose first field is that
/// `u32`, for which every byte pattern the caller may write is valid (integers, floats, pointers).
pub(crate) unsafe fn options_arg<T: Copy>(
    ptr: *const T,
    default: T,
    min_size: usize,
    fields: &[(usize, usize)],
    what: &'static str,
) -> Result<T, Error> {
    if ptr.is_null() {
        return Err(Error::NullPointer { arg: what });
    }
    // SAFETY: every options struct starts with `uint32_t struct_size` (contract above).
    let size = unsafe { (ptr as *const u32).read_unaligned() } as usize;
    let ours = std::mem::size_of::<T>();
    if size < min_size || size > ours {
        return Err(Error::arg(
            what,
            format!(
                "struct_size is {size}, expected {ours} (fill the struct with the s1_*_default() \
                 function of the header this library was built with)"
            ),
        ));
    }
    if let Some(&(off, len)) = fields.iter().find(|&&(off, len)| off < size && size < off + len) {
        return Err(Error::arg(
            what,
            format!(
                "struct_size {size} ends inside a field (bytes {off}..{}); it must end on a \
                 field boundary (use sizeof of the struct of your header)",
                off + len
            ),
        ));
    }
    let mut out = default;
    // SAFETY: `size <= size_of::<T>()`, both regions are valid for `size` bytes, they do not
    // overlap (`out` is a local), and T is plain data per the contract.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr as *const u8, &mut out as *mut T as *mut u8, size);
    }
    Ok(out)
}

/// Writes a string into a caller's buffer, llama.h style: always NUL-terminated when
/// `buf_size > 0`, full length reported through `out_len`, `BufferTooSmall` when truncated.
///
/// # Safety
/// `buf` must be NULL or valid for `buf_size` byte writes; `out_len` NULL or writable.
pub(crate) unsafe fn write_str_out(
    value: &str,
    buf: *mut c_char,
    buf_size: usize,
    out_len: *mut usize,
) -> Result<(), Error> {
    // Checked before anything is written: a failed call leaves every output untouched.
    if buf_size > 0 && buf.is_null() {
        return Err(Error::NullPointer { arg: "buf" });
    }
    if !out_len.is_null() {
        // SAFETY: non-null and writable per the contract.
        unsafe { out_len.write(value.len()) };
    }
    if buf_size > 0 {
        let n = value.len().min(buf_size - 1);
        // SAFETY: `n + 1 <= buf_size` bytes are written into the caller's buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(value.as_ptr(), buf as *mut u8, n);
            buf.add(n).write(0);
        }
    }
    if value.len() >= buf_size {
        return Err(Error::BufferTooSmall { needed: value.len() + 1, got: buf_size });
    }
    Ok(())
}

/// Converts a C `uint8_t` flag (any non-zero is true).
pub(crate) fn flag(v: u8) -> bool {
    v != 0
}

/// The header's name of each status, NUL-terminated for C.
pub(crate) fn status_name_c(status: Status) -> &'static CStr {
    // One source of names: the Rust API's `Status::name()`. Those are `&'static str` without a
    // NUL, so the C copies are built once, for every number `Status::try_from` accepts (all codes
    // are below 1000 by STYLE.md §12).
    static NAMES: OnceLock<HashMap<i32, std::ffi::CString>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..1000)
            .filter_map(|i| Status::try_from(i).ok())
            .filter_map(|s| std::ffi::CString::new(s.name()).ok().map(|c| (s as i32, c)))
            .collect()
    });
    names.get(&(status as i32)).map(|c| c.as_c_str()).unwrap_or(c"S1_STATUS_UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #19.3, by construction: every id is odd, distinct and increasing, while every
    /// registered struct's key is even; and no insert replaces a live entry.
    #[test]
    fn registry_ids_are_odd_unique_and_never_replace_an_entry() {
        let ids: Vec<usize> = (0..1000).map(|_| next_id().unwrap()).collect();
        assert!(ids.iter().all(|id| !id.is_multiple_of(2)));
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let a = into_owned_ptr::<[u64; 2], u8>(Box::new([1, 2])).unwrap();
        assert!((a as usize).is_multiple_of(2));
        // A second object under a live key is refused and the first one stays.
        let r = insert_new(a as usize, Slot::Shared(Arc::new(3u32)));
        assert!(matches!(r, Err(Error::Internal(_))), "{r:?}");
        assert!(free_handle::<u32, u8>(a, "a").is_err());
        assert!(free_owned_ptr::<[u64; 2], u8>(a, "a").is_ok());
    }
}
