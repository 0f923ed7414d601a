//! Memory for the dataplane's large shared tables: on the heap (gone with the process), or in a
//! file mapped shared (kept across a restart or a crash, for the next process to adopt).
//!
//! Contract:
//! - A [`TableMemory<T>`] is a fixed-length array of `T` that dereferences to `&[T]` with no
//!   branch and no indirection beyond a slice's (the per-packet cost of a `Box<[T]>`).
//! - `T` must be [`PlainAtomic`]: built only of atomics of plain integers, so every bit pattern
//!   is a valid value, all-zero bytes is its default, and sharing it between threads or
//!   processes needs nothing but the atomics' own orderings.
//! - [`StateFile::open`] creates or opens a file, takes an exclusive `flock` on it (a second
//!   process asking for the same file is refused after waiting 5 s for the holder to exit: two
//!   switches must never share one table),
//!   reserves its whole length on the filesystem (`posix_fallocate`: a full tmpfs is an error at
//!   start, never a SIGBUS later) and maps it shared with every page mapped at once
//!   (`MAP_POPULATE`: no page fault on a worker's first touch of a bucket or an entry). Arrays carved out of it
//!   ([`StateFile::array`]) keep the mapping alive; the lock is held while any of them lives.
//! - Nothing here decides what the bytes mean: the connection table
//!   ([`crate::conntrack::state_file`]) owns the layout, its header and its adoption.
//!
//! The system calls and the slice over mapped memory need `unsafe`, so this lives in the
//! project's `unsafe` layer, beside the UMEM (itself memory shared with the kernel).
use std::fs::{File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

/// Types whose every bit pattern is a valid value and whose all-zero bytes are the default:
/// plain integers behind atomics, `repr(C)`, no pointers, no `Drop`.
///
/// # Safety
/// Implement only for `repr(C)` types made solely of `AtomicU8/16/32/64` (and arrays or
/// padding integers of them), with `Default` being all zero bytes.
pub unsafe trait PlainAtomic: Sync + Send {}

// SAFETY: a single atomic integer: any bits are a value, zero is its default.
unsafe impl PlainAtomic for AtomicU64 {}
// SAFETY: as above.
unsafe impl PlainAtomic for AtomicU32 {}
// SAFETY: `repr(C, align(64))`, sixteen `AtomicU32`s (asserted 64 bytes where it is defined);
// its default is all zeros (a free entry).
unsafe impl PlainAtomic for crate::conntrack::Entry {}
// SAFETY: `repr(C, align(64))`, one `AtomicU32`, one `u32` of padding never read and seven
// `AtomicU64`s; its default is all zeros (an empty bucket).
unsafe impl PlainAtomic for crate::conntrack::table::Bucket {}

/// Why a state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("creating the directory of {path}: {source}")]
    Directory { path: PathBuf, source: io::Error },
    #[error("opening {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("the state file {path} is held by another process (another podswitch runs with it; give each switch its own --state-file)")]
    Locked { path: PathBuf },
    #[error("reserving {bytes} bytes for {path}: {source} (is the filesystem full?)")]
    Reserve { path: PathBuf, bytes: u64, source: io::Error },
    #[error("mapping {path}: {source}")]
    Map { path: PathBuf, source: io::Error },
}

/// A file mapped shared, locked for this process.
#[derive(Debug)]
pub struct StateFile {
    addr: NonNull<u8>,
    len: usize,
    path: PathBuf,
    /// Whether the file had this length before (false: made or grown now, so zero bytes).
    existed: bool,
    /// Whether the file lives on a memory filesystem (tmpfs, hugetlbfs): else every change of
    /// the tables is also written back to a disk.
    in_memory: bool,
    _file: File,
}

// SAFETY: the mapping is plain memory; what is read or written through it goes through
// `PlainAtomic` arrays (atomics), which are safe to share between threads.
unsafe impl Send for StateFile {}
// SAFETY: as above.
unsafe impl Sync for StateFile {}

/// How long [`StateFile::open`] waits for a holder to let go: a predecessor that is exiting
/// (its main thread is gone, its other threads still close their files) holds the lock for a
/// moment after a supervisor sees it stopped.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

const TMPFS_MAGIC: i64 = 0x0102_1994;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

impl StateFile {
    /// Opens (creating if needed) `path` with exactly `len` bytes, locked and mapped. A file of
    /// another length is resized (and then counts as new: `existed` is false).
    pub fn open(path: &Path, len: usize) -> Result<Self, StateFileError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StateFileError::Directory { path: path.into(), source })?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| StateFileError::Open { path: path.into(), source })?;
        let fd = file.as_raw_fd();
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        while unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(StateFileError::Open { path: path.into(), source: err });
            }
            if std::time::Instant::now() >= deadline {
                return Err(StateFileError::Locked { path: path.into() });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let old_len = file.metadata().map_err(|source| StateFileError::Open { path: path.into(), source })?.len();
        let existed = old_len == len as u64;
        if !existed {
            // A file of another layout's length holds nothing this one can read: start from
            // zero bytes (truncate, then grow).
            file.set_len(0).map_err(|source| StateFileError::Reserve { path: path.into(), bytes: len as u64, source })?;
        }
        // SAFETY: posix_fallocate on an owned descriptor; no memory is involved.
        let rc = unsafe { libc::posix_fallocate(fd, 0, len as libc::off_t) };
        if rc != 0 {
            return Err(StateFileError::Reserve { path: path.into(), bytes: len as u64, source: io::Error::from_raw_os_error(rc) });
        }
        // SAFETY: `fs` is written by the kernel; fstatfs on an owned descriptor.
        let in_memory = unsafe {
            let mut fs: libc::statfs = std::mem::zeroed();
            libc::fstatfs(fd, &raw mut fs) == 0 && matches!(fs.f_type as i64, TMPFS_MAGIC | HUGETLBFS_MAGIC)
        };
        // SAFETY: a new shared mapping of `len` bytes of a file that has (at least) that length
        // (reserved just above); the kernel picks the address. Nothing aliases it yet.
        let addr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_POPULATE, fd, 0)
        };
        if addr == libc::MAP_FAILED {
            return Err(StateFileError::Map { path: path.into(), source: io::Error::last_os_error() });
        }
        let addr = NonNull::new(addr.cast::<u8>()).expect("mmap never returns null on success");
        Ok(Self { addr, len, path: path.into(), existed, in_memory, _file: file })
    }

    /// Whether the file held exactly this length before (else its bytes are all zero now).
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// Whether the file is on tmpfs or hugetlbfs.
    pub fn in_memory(&self) -> bool {
        self.in_memory
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `n` values of `T` at byte `offset` of the file, sharing its mapping.
    ///
    /// # Panics
    /// If the array does not lie inside the file or `offset` is not aligned for `T`: a layout
    /// error of the caller, found by its first test.
    pub fn array<T: PlainAtomic>(self: &Arc<Self>, offset: usize, n: usize) -> TableMemory<T> {
        let bytes = n.checked_mul(std::mem::size_of::<T>()).expect("array size overflows");
        assert!(offset.checked_add(bytes).is_some_and(|end| end <= self.len), "array outside the state file");
        assert!(offset.is_multiple_of(std::mem::align_of::<T>()), "array offset not aligned for its type");
        // SAFETY: inside the mapping (checked above), which is page-aligned, so `offset` aligned
        // for T gives an aligned pointer; non-null as the mapping is.
        let ptr = unsafe { NonNull::new_unchecked(self.addr.as_ptr().add(offset).cast::<T>()) };
        TableMemory { ptr, len: n, owner: Owner::Mapped(Arc::clone(self)), _t: PhantomData }
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        // SAFETY: unmaps what `open` mapped; every array holds an `Arc` of this file, so none
        // is alive any more.
        unsafe {
            libc::munmap(self.addr.as_ptr().cast(), self.len);
        }
    }
}

#[derive(Debug)]
enum Owner {
    /// Allocated by [`TableMemory::heap`]; freed on drop.
    Heap,
    Mapped(#[allow(dead_code)] Arc<StateFile>),
}

/// A fixed-length array of `T` on the heap or in a [`StateFile`].
#[derive(Debug)]
pub struct TableMemory<T: PlainAtomic> {
    ptr: NonNull<T>,
    len: usize,
    owner: Owner,
    _t: PhantomData<T>,
}

// SAFETY: `T: PlainAtomic` is `Send + Sync` and the array is only handed out as `&[T]`.
unsafe impl<T: PlainAtomic> Send for TableMemory<T> {}
// SAFETY: as above.
unsafe impl<T: PlainAtomic> Sync for TableMemory<T> {}

impl<T: PlainAtomic + Default> TableMemory<T> {
    /// `n` default values on the heap, advised to be backed by 2 MiB pages
    /// ([`super::hugepages`]) before they are written; and whether the advice was taken.
    pub fn heap(n: usize) -> (Self, bool) {
        let mut v: Vec<T> = Vec::with_capacity(n);
        let huge = super::hugepages::advise(v.spare_capacity_mut());
        v.extend((0..n).map(|_| T::default()));
        let len = v.len();
        let raw = Box::into_raw(v.into_boxed_slice());
        // SAFETY: from a Box, never null (an empty box is a dangling, non-null pointer).
        let ptr = unsafe { NonNull::new_unchecked(raw.cast::<T>()) };
        (Self { ptr, len, owner: Owner::Heap, _t: PhantomData }, huge)
    }
}

impl<T: PlainAtomic> std::ops::Deref for TableMemory<T> {
    type Target = [T];

    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` and `len` describe memory this value keeps alive (its own heap box, or a
        // mapping held through `owner`), aligned and initialised: heap values were constructed,
        // and every bit pattern of mapped bytes is a valid `T` (`PlainAtomic`). Only shared
        // references are made; mutation goes through the atomics.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: PlainAtomic> Drop for TableMemory<T> {
    fn drop(&mut self) {
        if matches!(self.owner, Owner::Heap) {
            // SAFETY: made by `Box::into_raw` of a boxed slice of exactly this length in `heap`,
            // and dropped once, here.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("podswitch-table-memory-{}-{name}", std::process::id()))
    }

    #[test]
    fn heap_arrays_start_at_default_and_are_freed() {
        let (a, _huge) = TableMemory::<AtomicU64>::heap(1000);
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|x| x.load(Relaxed) == 0));
        a[999].store(7, Relaxed);
        assert_eq!(a[999].load(Relaxed), 7);
        let (empty, _) = TableMemory::<AtomicU64>::heap(0);
        assert!(empty.is_empty());
    }

    #[test]
    fn a_state_file_keeps_its_values_for_the_next_opener_and_refuses_a_second_holder() {
        let path = temp_path("keep");
        let _ = std::fs::remove_file(&path);
        {
            let f = Arc::new(StateFile::open(&path, 8192).expect("open"));
            assert!(!f.existed(), "made now");
            let a = f.array::<AtomicU64>(4096, 16);
            a[3].store(0xdead_beef, Relaxed);
            assert!(matches!(StateFile::open(&path, 8192), Err(StateFileError::Locked { .. })), "locked while held");
        }
        let f = Arc::new(StateFile::open(&path, 8192).expect("reopen after the holder went"));
        assert!(f.existed());
        assert_eq!(f.array::<AtomicU64>(4096, 16)[3].load(Relaxed), 0xdead_beef, "the value outlived its mapping");
        drop(f);
        // Another length: another layout, so nothing of the old bytes is read.
        let f = Arc::new(StateFile::open(&path, 16384).expect("resize"));
        assert!(!f.existed());
        assert_eq!(f.array::<AtomicU64>(4096, 16)[3].load(Relaxed), 0);
        drop(f);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    #[should_panic(expected = "outside the state file")]
    fn an_array_past_the_end_is_a_layout_error() {
        let path = temp_path("past");
        let f = Arc::new(StateFile::open(&path, 4096).expect("open"));
        let _ = std::fs::remove_file(&path);
        let _ = f.array::<AtomicU64>(4000, 16);
    }
}
