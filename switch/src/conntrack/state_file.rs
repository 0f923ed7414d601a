//! The connection table in a state file: connections that outlive the process, adopted by the
//! next one after a restart, an upgrade or a crash.
//!
//! Layout of the file (all of it mapped shared, [`crate::afxdp::table_memory::StateFile`]):
//! - a 4 KiB header of 64-bit words ([`word`]): magic, layout version, entry and bucket sizes,
//!   capacity, bucket count, the hash seed, the table clock's epoch (`CLOCK_MONOTONIC`
//!   nanoseconds at the table's millisecond 0), the kernel's boot id, the generation (how many
//!   processes have run this table), and a seal written last;
//! - the entries ([`Entry`], 64 bytes each), then the buckets.
//!
//! Contract of [`open`]:
//! - A file whose header is sealed and matches this build's layout, capacity and boot is
//!   adopted: every live connection keeps its keys, translation (DNAT, masquerade port), state
//!   and times, under the same hash seed and clock, so a packet of an established connection is
//!   handled after the restart exactly as before it; client affinity records are kept too.
//!   Entries caught half-written or half-removed are freed; the slots are rebuilt from the entries, so a crash in the middle of an insert or a removal
//!   leaves nothing dangling. Each dropped entry is counted in [`Adoption`].
//! - Any other file (new, another layout or capacity, another boot, unsealed) starts an empty
//!   table with a new seed, and [`Adoption::fresh`] says why: nothing is read from it.
//! - Adopted connections are judged again under the new process's policy on their next packet
//!   (see [`Entry::adopt`]).
//! - The caller must not share the table with workers until `open` returns.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::afxdp::table_memory::{StateFile, StateFileError, TableMemory};

use super::entry::{Entry, Left};
use super::key::KeyHasher;
use super::table::{bucket_count, Bucket, ConnTable};

/// This build's layout of the file; a file of another version starts fresh.
pub const LAYOUT_VERSION: u64 = 1;
const MAGIC: u64 = u64::from_le_bytes(*b"PSWCTAB\x01");
const HEADER_BYTES: usize = 4096;
const HEADER_WORDS: usize = HEADER_BYTES / 8;

/// Indices of the header's words.
mod word {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 1;
    pub const SIZES: usize = 2;
    pub const CAPACITY: usize = 3;
    pub const BUCKETS: usize = 4;
    pub const SEED: usize = 5;
    pub const EPOCH_NS: usize = 6;
    pub const BOOT_ID: [usize; 2] = [7, 8];
    pub const GENERATION: usize = 9;
    /// 1 once every other word is written.
    pub const SEALED: usize = 10;
}

/// Why a state file's contents were not adopted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fresh {
    /// There was no file.
    NewFile,
    /// The file has another size: another capacity or layout.
    OtherSize,
    /// Written by a build with another layout (magic, version or type sizes).
    OtherLayout,
    /// Made for another capacity (`--conntrack-capacity` changed).
    OtherCapacity,
    /// Written before the machine last booted (its clock and addresses mean nothing now).
    OtherBoot,
    /// Its writer stopped before finishing the header.
    Unsealed,
}

impl std::fmt::Display for Fresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fresh::NewFile => "no state file yet",
            Fresh::OtherSize => "the state file has another size (another --conntrack-capacity or layout)",
            Fresh::OtherLayout => "the state file was written by a build with another table layout",
            Fresh::OtherCapacity => "the state file holds a table of another capacity (--conntrack-capacity changed)",
            Fresh::OtherBoot => "the state file is from before the last boot",
            Fresh::Unsealed => "the state file's writer stopped before finishing its header",
        })
    }
}

/// What [`open`] found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    pub path: PathBuf,
    /// Processes that have run this table, this one included (1: a fresh table).
    pub generation: u64,
    /// Connections (and client affinity records) taken over from the previous process.
    pub adopted: u64,
    /// Entries the previous process was writing when it stopped (freed).
    pub incomplete: u64,
    /// Connections dropped because their keys found no free slot.
    pub no_slot: u64,
    /// Why nothing was adopted (None: the file was adopted).
    pub fresh: Option<Fresh>,
    /// Whether the file is on a memory filesystem (tmpfs, hugetlbfs); else its pages are also
    /// written back to a disk.
    pub in_memory: bool,
}

/// Why a state file cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    File(#[from] StateFileError),
    #[error("reading the kernel's clock: {0}")]
    Clock(nix::Error),
}

/// Bytes of the file for a table of `capacity` connections.
pub fn file_len(capacity: u32) -> usize {
    let capacity = capacity.max(1);
    let len = HEADER_BYTES + capacity as usize * size_of::<Entry>() + bucket_count(capacity) * size_of::<Bucket>();
    // Whole 2 MiB pages, so that the file can live on hugetlbfs.
    len.next_multiple_of(2 << 20)
}

fn monotonic_ns() -> Result<u64, StateError> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_err(StateError::Clock)?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// The kernel's boot id as two words (zeros where it cannot be read: then only the clock
/// check below guards against a file from another boot).
fn boot_id() -> [u64; 2] {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let hex: String = text.chars().filter(char::is_ascii_hexdigit).collect();
    let half = |r: std::ops::Range<usize>| hex.get(r).and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0);
    [half(0..16), half(16..32)]
}

fn sizes_word() -> u64 {
    size_of::<Entry>() as u64 | (size_of::<Bucket>() as u64) << 32
}

/// Opens the table of `capacity` connections kept in `path` (creating it), adopting what a
/// previous process left there when it can (see the module contract).
pub fn open(path: &Path, capacity: u32) -> Result<(ConnTable, Adoption), StateError> {
    let capacity = capacity.max(1);
    let had_file = path.exists();
    let file = Arc::new(StateFile::open(path, file_len(capacity))?);
    let header = file.array::<AtomicU64>(0, HEADER_WORDS);
    let n_buckets = bucket_count(capacity);
    let entries: TableMemory<Entry> = file.array(HEADER_BYTES, capacity as usize);
    let buckets: TableMemory<Bucket> = file.array(HEADER_BYTES + capacity as usize * size_of::<Entry>(), n_buckets);
    let now_ns = monotonic_ns()?;
    let boot = boot_id();
    let h = |w: usize| header[w].load(Relaxed);
    let fresh = if !had_file {
        Some(Fresh::NewFile)
    } else if !file.existed() {
        Some(Fresh::OtherSize)
    } else if h(word::SEALED) != 1 {
        Some(Fresh::Unsealed)
    } else if h(word::MAGIC) != MAGIC || h(word::VERSION) != LAYOUT_VERSION || h(word::SIZES) != sizes_word() {
        Some(Fresh::OtherLayout)
    } else if h(word::CAPACITY) != u64::from(capacity) || h(word::BUCKETS) != n_buckets as u64 {
        Some(Fresh::OtherCapacity)
    } else if [h(word::BOOT_ID[0]), h(word::BOOT_ID[1])] != boot || h(word::EPOCH_NS) > now_ns {
        Some(Fresh::OtherBoot)
    } else {
        None
    };
    let mut adoption = Adoption {
        path: path.into(),
        generation: 1,
        adopted: 0,
        incomplete: 0,
        no_slot: 0,
        fresh: fresh.clone(),
        in_memory: file.in_memory(),
    };
    header[word::SEALED].store(0, Relaxed);
    let table = if fresh.is_some() {
        if file.existed() {
            // Same size, unusable contents: clear them (a resized file is zero already).
            header.iter().for_each(|w| w.store(0, Relaxed));
            entries.iter().for_each(Entry::clear);
            buckets.iter().for_each(Bucket::clear);
        }
        let seed = KeyHasher::random_seed();
        for (w, v) in [
            (word::MAGIC, MAGIC),
            (word::VERSION, LAYOUT_VERSION),
            (word::SIZES, sizes_word()),
            (word::CAPACITY, u64::from(capacity)),
            (word::BUCKETS, n_buckets as u64),
            (word::SEED, seed),
            (word::EPOCH_NS, now_ns),
            (word::BOOT_ID[0], boot[0]),
            (word::BOOT_ID[1], boot[1]),
            (word::GENERATION, 1),
        ] {
            header[w].store(v, Relaxed);
        }
        ConnTable::over(entries, buckets, KeyHasher::new(seed), Instant::now())
    } else {
        let mut live = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match e.adopt() {
                Left::Free => {}
                Left::Incomplete => adoption.incomplete += 1,
                Left::Live => live.push(i as u32),
            }
        }
        buckets.iter().for_each(Bucket::clear);
        let age = Duration::from_nanos(now_ns - h(word::EPOCH_NS));
        let epoch = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        let table = ConnTable::over(entries, buckets, KeyHasher::new(h(word::SEED)), epoch);
        for idx in live {
            if table.relink(idx).is_ok() {
                adoption.adopted += 1;
            } else {
                table.free_unlinked(idx);
                adoption.no_slot += 1;
            }
        }
        adoption.generation = h(word::GENERATION) + 1;
        header[word::GENERATION].store(adoption.generation, Relaxed);
        table
    };
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    header[word::SEALED].store(1, Relaxed);
    Ok((table, adoption))
}

/// Removes the state file at `path` (`--cleanup`, `lab down`): the next process starts fresh.
/// A file that is not there is not an error.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::conntrack::{flags, CtState, EntryInit, FlowKey};
    use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};

    /// A state file path of this test alone, removed when dropped.
    struct TempState(PathBuf);

    impl TempState {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("podswitch-ct-state-{}-{name}", std::process::id()));
            let _ = std::fs::remove_file(&p);
            Self(p)
        }
    }

    impl Drop for TempState {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn conn(i: u32, proto: u8, state: CtState, fl: u8) -> EntryInit {
        let orig = FlowKey::new(Ipv4Addr::from(0x0af4_0000 + i), Ipv4Addr::new(10, 96, 0, 10), 40000 + i as u16, 80, proto);
        let reply = FlowKey { src: u32::from(Ipv4Addr::new(10, 244, 1, 5)), dst: orig.src, sport: 8080, dport: orig.sport, proto };
        EntryInit { orig, reply, state, flags: fl, frontend: 3, endpoint: 17, policy_epoch: 9, policy_rule: 4, verdict: 1, timeout_ms: 0 }
    }

    #[test]
    fn a_new_process_adopts_every_connection_with_its_translation_state_and_clock() {
        let f = TempState::new("adopt");
        let tcp = conn(1, IPPROTO_TCP, CtState::TcpEstablished, flags::DNAT | flags::SEEN_REPLY);
        let udp = conn(2, IPPROTO_UDP, CtState::UdpReplied, flags::DNAT | flags::SNAT | flags::SEEN_REPLY);
        let aff = EntryInit { state: CtState::Affinity, ..conn(3, 253, CtState::Affinity, 0) };
        let (seen_ms, hash_before) = {
            let (t, a) = open(&f.0, 1000).unwrap();
            assert_eq!((a.generation, a.fresh.clone()), (1, Some(Fresh::NewFile)));
            t.insert(&tcp, t.now_ms()).unwrap();
            t.insert(&udp, t.now_ms()).unwrap();
            t.insert(&aff, t.now_ms()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            (t.now_ms(), t.hash(&tcp.orig))
        };
        let (t, a) = open(&f.0, 1000).unwrap();
        assert_eq!(a.fresh, None, "{a:?}");
        assert_eq!((a.generation, a.adopted, a.incomplete, a.no_slot), (2, 3, 0, 0));
        assert_eq!(t.live(), 3);
        assert_eq!(t.hash(&tcp.orig), hash_before, "same seed");
        assert!(t.now_ms() >= seen_ms, "the table's clock went on, not back to 0");
        for init in [&tcp, &udp] {
            let o = t.lookup(&init.orig).expect("original direction found");
            let r = t.lookup(&init.reply).expect("reply direction found");
            assert_eq!((o.idx, o.snap.reply, r.snap.orig), (r.idx, init.reply, init.orig));
            let e = t.entry(o.idx);
            assert_eq!((e.state(), e.flags()), (Some(init.state), init.flags));
            assert_eq!(e.policy_epoch(), 0, "judged again under the new policy");
            assert_eq!((o.snap.endpoint, o.snap.frontend), (u32::MAX, 0), "the old process's ids are not kept");
        }
        let a = t.lookup(&aff.orig).expect("the affinity record is kept");
        assert_eq!((a.snap.endpoint, t.entry(a.idx).policy_rule()), (aff.endpoint, aff.policy_rule), "with its backend");
        // The freed entries are usable again: the table fills to its capacity.
        for i in 10..1007 {
            t.insert(&conn(i, IPPROTO_UDP, CtState::UdpUnreplied, 0), 0).unwrap();
        }
        assert_eq!(t.live(), 1000);
    }

    #[test]
    fn half_written_and_half_removed_entries_are_freed_and_counted() {
        let f = TempState::new("half");
        {
            let (t, _) = open(&f.0, 64).unwrap();
            let a = t.insert(&conn(1, IPPROTO_TCP, CtState::TcpEstablished, 0), 0).unwrap();
            let b = t.insert(&conn(2, IPPROTO_TCP, CtState::TcpEstablished, 0), 0).unwrap();
            t.insert(&conn(3, IPPROTO_TCP, CtState::TcpEstablished, 0), 0).unwrap();
            // As if the process died inside `init` of `a` and inside `remove` of `b`.
            t.entry(a).version.fetch_add(1, Relaxed);
            t.entry(b).state.store(u32::from(super::super::entry::DYING), Relaxed);
        }
        let (t, a) = open(&f.0, 64).unwrap();
        assert_eq!((a.adopted, a.incomplete), (1, 1));
        assert_eq!(t.live(), 1);
        assert!(t.lookup(&conn(3, IPPROTO_TCP, CtState::TcpEstablished, 0).orig).is_some());
        assert!(t.lookup(&conn(1, IPPROTO_TCP, CtState::TcpEstablished, 0).orig).is_none());
    }

    #[test]
    fn another_capacity_layout_or_an_unsealed_header_starts_empty_and_says_why() {
        let f = TempState::new("fresh");
        let fill = |cap: u32| {
            let (t, _) = open(&f.0, cap).unwrap();
            t.insert(&conn(1, IPPROTO_TCP, CtState::TcpEstablished, 0), 0).unwrap();
        };
        fill(100);
        let (t, a) = open(&f.0, 5000).unwrap();
        assert_eq!((a.fresh, t.live()), (Some(Fresh::OtherCapacity), 0), "same file size, another capacity");
        drop(t);
        fill(100);
        let (t, a) = open(&f.0, 50_000).unwrap();
        assert_eq!((a.fresh, t.live()), (Some(Fresh::OtherSize), 0));
        drop(t);
        fill(100);
        // Another layout version: same size, contents not read.
        {
            let file = Arc::new(StateFile::open(&f.0, file_len(100)).unwrap());
            file.array::<AtomicU64>(0, HEADER_WORDS)[word::VERSION].store(LAYOUT_VERSION + 1, Relaxed);
        }
        let (t, a) = open(&f.0, 100).unwrap();
        assert_eq!((a.fresh, t.live(), a.generation), (Some(Fresh::OtherLayout), 0, 1));
        assert!(t.lookup(&conn(1, IPPROTO_TCP, CtState::TcpEstablished, 0).orig).is_none(), "nothing of the old contents found");
        drop(t);
        fill(100);
        {
            let file = Arc::new(StateFile::open(&f.0, file_len(100)).unwrap());
            file.array::<AtomicU64>(0, HEADER_WORDS)[word::SEALED].store(0, Relaxed);
        }
        let (t, a) = open(&f.0, 100).unwrap();
        assert_eq!((a.fresh, t.live()), (Some(Fresh::Unsealed), 0));
        drop(t);
        fill(100);
        {
            let file = Arc::new(StateFile::open(&f.0, file_len(100)).unwrap());
            file.array::<AtomicU64>(0, HEADER_WORDS)[word::BOOT_ID[0]].fetch_xor(1, Relaxed);
        }
        let (t, a) = open(&f.0, 100).unwrap();
        assert_eq!((a.fresh, t.live()), (Some(Fresh::OtherBoot), 0));
    }

    #[test]
    fn a_second_process_cannot_open_a_held_table() {
        let f = TempState::new("held");
        let (_t, _) = open(&f.0, 64).unwrap();
        assert!(matches!(open(&f.0, 64), Err(StateError::File(StateFileError::Locked { .. }))));
    }
}
