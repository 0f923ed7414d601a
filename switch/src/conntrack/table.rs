//! The connection table shared by all workers: fixed capacity, lock-free.
//!
//! Layout (the memory per connection is [`ConnTable::bytes_per_entry`]):
//! - `entries`: one 64-byte [`Entry`] per connection, allocated from a lock-free free list.
//! - `buckets`: 64-byte buckets of 7 slots; each connection has two slots, one under the hash
//!   of its original key and one under its reply key. A slot packs (32-bit hash tag, entry
//!   index, direction) into one `AtomicU64`, inserted and removed by compare-and-swap. A key
//!   lives in its home bucket or, when that is full, in one of the next `MAX_PROBE - 1`
//!   buckets; the home bucket counts such overflows so that lookups only look further when
//!   something overflowed from there.
//!
//! Contract:
//! - [`ConnTable::lookup`] and [`ConnTable::insert`] never block and never allocate; a full
//!   table (no free entry, or no free slot in reach) refuses new connections with
//!   [`InsertError`] while existing ones go on.
//! - Removal ([`ConnTable::remove`]) is done by the control side (the reaper, flushes); it
//!   unlinks the slots first, then frees the entry, bumping its version so that a worker that
//!   found it just before misses.
//! - Two workers may race to create the same flow; both entries then exist and lookups return
//!   the first. The reaper expires the other. This costs memory, never correctness of NAT:
//!   backends are picked by a deterministic hash.
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::Instant;

use crossbeam::queue::ArrayQueue;

use crate::afxdp::prefetch;
use crate::afxdp::table_memory::TableMemory;

use super::entry::{Entry, EntryInit, Snapshot, DYING};
use super::key::{FlowKey, KeyHasher};

const SLOTS: usize = 7;
const MAX_PROBE: usize = 16;
/// Buckets are sized so that slots are at most this full (percent) at capacity.
const MAX_LOAD_PCT: usize = 55;

#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct Bucket {
    /// Keys whose home is this bucket stored in a later one.
    overflow: AtomicU32,
    _pad: u32,
    slots: [AtomicU64; SLOTS],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

impl Bucket {
    /// Empties the bucket (for a table's memory being reset or relinked, with no other thread
    /// on it).
    pub(crate) fn clear(&self) {
        self.overflow.store(0, Relaxed);
        self.slots.iter().for_each(|s| s.store(0, Relaxed));
    }
}

/// Which direction of its connection a packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// The direction that opened the connection.
    Orig,
    Reply,
}

/// A lookup hit: the entry, the packet's direction, and a copy of the entry's keys.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    pub idx: u32,
    pub dir: Dir,
    pub snap: Snapshot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// No free entry: the table is at capacity.
    Full,
    /// No free slot within reach of a key's home bucket.
    NoSlot,
}

/// Counters of table events, written by whoever causes them (relaxed atomic adds; they are
/// off the per-packet path: one per new connection or removal).
#[derive(Debug, Default)]
pub struct TableCounters {
    pub inserted: AtomicU64,
    pub insert_failed_full: AtomicU64,
    pub insert_failed_slot: AtomicU64,
    pub removed: AtomicU64,
}

pub struct ConnTable {
    entries: TableMemory<Entry>,
    buckets: TableMemory<Bucket>,
    free: ArrayQueue<u32>,
    hasher: KeyHasher,
    epoch: Instant,
    pub counters: TableCounters,
    huge_pages: bool,
}

/// Buckets of a table of `capacity` connections (each has two slots, at most
/// [`MAX_LOAD_PCT`] percent of all slots in use).
pub(crate) fn bucket_count(capacity: u32) -> usize {
    (2 * capacity.max(1) as usize * 100).div_ceil(SLOTS * MAX_LOAD_PCT).max(MAX_PROBE)
}

impl std::fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable").field("capacity", &self.capacity()).field("live", &self.live()).finish()
    }
}

#[inline(always)]
fn pack(tag: u32, idx: u32, dir: Dir) -> u64 {
    ((tag as u64) << 32) | ((idx as u64) << 1) | (dir == Dir::Reply) as u64
}

/// A slot's entry index and direction (the inverse of [`pack`] but for the tag).
#[inline(always)]
fn unpack(v: u64) -> (usize, Dir) {
    let idx = ((v as u32) >> 1) as usize & 0x7fff_ffff;
    (idx, if v & 1 == 1 { Dir::Reply } else { Dir::Orig })
}

#[inline(always)]
fn tag_of(h: u64) -> u32 {
    // Never 0, so that a slot with a tag is never mistaken for an empty one.
    ((h >> 32) as u32) | 1
}

impl ConnTable {
    /// A table for `capacity` connections.
    /// A table for `capacity` connections, in process memory (gone with the process; a table
    /// that outlives it: [`super::state_file`]).
    pub fn new(capacity: u32, hasher: KeyHasher) -> Self {
        let capacity = capacity.max(1);
        let (entries, huge_entries) = TableMemory::heap(capacity as usize);
        let (buckets, huge_buckets) = TableMemory::heap(bucket_count(capacity));
        let free = ArrayQueue::new(capacity as usize);
        for i in 0..capacity {
            let _ = free.push(i);
        }
        let huge_pages = huge_entries && huge_buckets;
        Self { entries, buckets, free, hasher, epoch: Instant::now(), counters: TableCounters::default(), huge_pages }
    }

    /// A table over `entries` and `buckets` whose live entries are already linked; the free
    /// list gets every free entry. For [`super::state_file`], which prepares the memory.
    pub(crate) fn over(entries: TableMemory<Entry>, buckets: TableMemory<Bucket>, hasher: KeyHasher, epoch: Instant) -> Self {
        let free = ArrayQueue::new(entries.len().max(1));
        for (i, e) in entries.iter().enumerate() {
            if e.state.load(Relaxed) == 0 {
                let _ = free.push(i as u32);
            }
        }
        Self { entries, buckets, free, hasher, epoch, counters: TableCounters::default(), huge_pages: false }
    }

    /// Links entry `idx` (live, its slots not in the table) under both its keys, as
    /// [`Self::insert`] does; on failure the entry is left unlinked (the caller frees it).
    pub(crate) fn relink(&self, idx: u32) -> Result<(), InsertError> {
        let snap = self.entries[idx as usize].snapshot().ok_or(InsertError::NoSlot)?;
        self.link(&snap.orig, idx, Dir::Orig)?;
        if snap.reply != snap.orig {
            if let Err(err) = self.link(&snap.reply, idx, Dir::Reply) {
                self.unlink(&snap.orig, idx, Dir::Orig);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Frees an entry that holds no slot (adoption's drop of one it cannot keep).
    pub(crate) fn free_unlinked(&self, idx: u32) {
        self.release(idx);
    }

    /// Whether the kernel took the advice to back the entries and buckets with 2 MiB pages
    /// ([`crate::afxdp::hugepages`]); false for tables smaller than a few huge pages, or when
    /// transparent huge pages are off (`/sys/kernel/mm/transparent_hugepage/enabled`).
    pub fn huge_pages(&self) -> bool {
        self.huge_pages
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Connections in the table now.
    pub fn live(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// Bytes of table per connection at capacity (entries, buckets and the free list).
    pub fn bytes_per_entry(&self) -> f64 {
        let bytes = std::mem::size_of_val(&*self.entries) + std::mem::size_of_val(&*self.buckets) + self.entries.len() * 4;
        bytes as f64 / self.entries.len() as f64
    }

    /// Milliseconds since the table was made: the clock of `last_seen` and timeouts.
    #[inline]
    pub fn now_ms(&self) -> u32 {
        self.ms_at(Instant::now())
    }

    /// The table's clock at `now` (a worker reads the clock once per round and shares it).
    #[inline]
    pub fn ms_at(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_millis() as u32
    }

    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    #[inline]
    pub fn entry(&self, idx: u32) -> &Entry {
        &self.entries[idx as usize]
    }

    #[inline(always)]
    fn home(&self, h: u64) -> usize {
        // Multiply-shift range reduction: any bucket count, no modulo.
        (((h as u128) * (self.buckets.len() as u128)) >> 64) as usize
    }

    /// Starts fetching the home bucket of hash `h`, for a burst's packets before any of them
    /// is processed: a prefetch ([`crate::afxdp::prefetch`]) issued for many packets in a row,
    /// so the CPU overlaps their cache misses instead of taking them one after another.
    #[inline(always)]
    pub fn warm_bucket(&self, h: u64) {
        if let Some(b) = self.buckets.get(self.home(h)) {
            prefetch::read(b);
        }
    }

    /// Second step after [`Self::warm_bucket`]: starts fetching the entry of the first slot in
    /// the (now cached) home bucket that carries `h`'s tag, and returns that slot's value (0:
    /// none), a hint for [`Self::lookup_other`].
    #[inline(always)]
    pub fn warm_entry(&self, h: u64) -> u64 {
        let tag = tag_of(h);
        for slot in &self.buckets[self.home(h)].slots {
            let v = slot.load(Relaxed);
            if (v >> 32) as u32 == tag {
                if let Some(e) = self.entries.get(unpack(v).0) {
                    prefetch::read(e);
                }
                return v;
            }
        }
        0
    }

    #[inline]
    pub fn hash(&self, k: &FlowKey) -> u64 {
        self.hasher.hash(k)
    }

    /// Finds the connection a packet with key `k` (hash `h`) belongs to.
    #[inline]
    pub fn lookup_hashed(&self, k: &FlowKey, h: u64) -> Option<Hit> {
        self.probe(h, |v| self.hit_at(v, k))
    }

    /// The hit of slot value `v` if its entry's key in the slot's direction is `k`.
    #[inline(always)]
    fn hit_at(&self, v: u64, k: &FlowKey) -> Option<Hit> {
        let (idx, dir) = unpack(v);
        let snap = self.entries.get(idx)?.snapshot()?;
        let want = if dir == Dir::Orig { &snap.orig } else { &snap.reply };
        (want == k).then_some(Hit { idx: idx as u32, dir, snap })
    }

    /// The first `matching(slot)` that is Some, over the slots carrying `h`'s tag in `h`'s home
    /// bucket, and in the next ones when something overflowed from home: every lookup's walk.
    #[inline(always)]
    fn probe<T>(&self, h: u64, mut matching: impl FnMut(u64) -> Option<T>) -> Option<T> {
        let tag = tag_of(h);
        let home = self.home(h);
        let n = self.buckets.len();
        let mut b = home;
        for probe in 0..MAX_PROBE {
            for slot in &self.buckets[b].slots {
                let v = slot.load(Acquire);
                if (v >> 32) as u32 == tag {
                    if let Some(hit) = matching(v) {
                        return Some(hit);
                    }
                }
            }
            if probe == 0 && self.buckets[home].overflow.load(Acquire) == 0 {
                return None;
            }
            b = if b + 1 == n { 0 } else { b + 1 };
        }
        None
    }

    /// [`Self::lookup_hashed`] for the fast path: the entry, the direction, and the key of the
    /// other direction only (no full snapshot).
    ///
    /// `slot_hint` is a slot value [`Self::warm_entry`] returned for `h` (0: none): its entry is
    /// tried first. It is checked like any slot (the whole key, under the entry's version), so a
    /// stale hint only costs the scan.
    #[inline(always)]
    pub fn lookup_other(&self, k: &FlowKey, h: u64, slot_hint: u64) -> Option<(u32, Dir, FlowKey)> {
        let tag = tag_of(h);
        if slot_hint != 0 && (slot_hint >> 32) as u32 == tag {
            if let Some(hit) = self.match_slot(k, slot_hint) {
                return Some(hit);
            }
        }
        self.scan_other(k, h)
    }

    /// If slot value `v`'s entry holds `k` in the slot's direction: the entry, the direction
    /// and the other direction's key.
    #[inline(always)]
    fn match_slot(&self, k: &FlowKey, v: u64) -> Option<(u32, Dir, FlowKey)> {
        let (idx, dir) = unpack(v);
        let other = self.entries.get(idx)?.match_key(k, dir == Dir::Reply)?;
        Some((idx as u32, dir, other))
    }

    /// [`Self::lookup_other`] without a usable hint: scans the home bucket (and the next ones
    /// if something overflowed from it). Out of line: the hint is right for nearly every packet.
    #[inline(never)]
    fn scan_other(&self, k: &FlowKey, h: u64) -> Option<(u32, Dir, FlowKey)> {
        self.probe(h, |v| self.match_slot(k, v))
    }

    #[inline]
    pub fn lookup(&self, k: &FlowKey) -> Option<Hit> {
        self.lookup_hashed(k, self.hash(k))
    }

    /// The home bucket of `k` and the slot value naming entry `idx` in direction `dir`.
    fn placement(&self, k: &FlowKey, idx: u32, dir: Dir) -> (usize, u64) {
        let h = self.hash(k);
        (self.home(h), pack(tag_of(h), idx, dir))
    }

    /// The probe walk of [`Self::link`] and [`Self::unlink`]: replaces `from` by `to` in the
    /// first slot holding `from` among the `MAX_PROBE` buckets from `home`, and returns how
    /// many buckets past home that slot was. `before_bucket(probe)` runs before each bucket.
    fn swap_slot(&self, home: usize, from: u64, to: u64, mut before_bucket: impl FnMut(usize)) -> Option<usize> {
        let n = self.buckets.len();
        for probe in 0..MAX_PROBE {
            before_bucket(probe);
            for slot in &self.buckets[(home + probe) % n].slots {
                if slot.load(Relaxed) == from && slot.compare_exchange(from, to, AcqRel, Relaxed).is_ok() {
                    return Some(probe);
                }
            }
        }
        None
    }

    fn link(&self, k: &FlowKey, idx: u32, dir: Dir) -> Result<(), InsertError> {
        let (home, value) = self.placement(k, idx, dir);
        let overflow = &self.buckets[home].overflow;
        let announce = |probe| {
            if probe == 1 {
                // Announce before publishing, so lookups look past home from now on.
                overflow.fetch_add(1, AcqRel);
            }
        };
        if self.swap_slot(home, 0, value, announce).is_some() {
            return Ok(());
        }
        overflow.fetch_sub(1, AcqRel);
        Err(InsertError::NoSlot)
    }

    fn unlink(&self, k: &FlowKey, idx: u32, dir: Dir) {
        let (home, value) = self.placement(k, idx, dir);
        if self.swap_slot(home, value, 0, |_| {}).is_some_and(|probe| probe > 0) {
            self.buckets[home].overflow.fetch_sub(1, AcqRel);
        }
    }

    /// Adds a connection; returns its entry index.
    pub fn insert(&self, init: &EntryInit, now: u32) -> Result<u32, InsertError> {
        let Some(idx) = self.free.pop() else {
            self.counters.insert_failed_full.fetch_add(1, Relaxed);
            return Err(InsertError::Full);
        };
        let e = &self.entries[idx as usize];
        e.init(init, now);
        if let Err(err) = self.link(&init.orig, idx, Dir::Orig) {
            self.release(idx);
            self.counters.insert_failed_slot.fetch_add(1, Relaxed);
            return Err(err);
        }
        if init.reply != init.orig {
            if let Err(err) = self.link(&init.reply, idx, Dir::Reply) {
                self.unlink(&init.orig, idx, Dir::Orig);
                self.release(idx);
                self.counters.insert_failed_slot.fetch_add(1, Relaxed);
                return Err(err);
            }
        }
        self.counters.inserted.fetch_add(1, Relaxed);
        Ok(idx)
    }

    /// Marks an entry free and returns it to the free list (its slots must be gone).
    fn release(&self, idx: u32) {
        let e = &self.entries[idx as usize];
        e.state.store(DYING as u32, Release);
        // Two steps keep the version even and make racing readers' snapshots mismatch.
        e.version.fetch_add(2, AcqRel);
        e.state.store(0, Release);
        let _ = self.free.push(idx);
    }

    /// Removes a live connection. Returns false if it was not live (already removed, or being
    /// removed by someone else).
    pub fn remove(&self, idx: u32) -> bool {
        let e = &self.entries[idx as usize];
        let cur = e.state.load(Acquire);
        let st = cur as u8;
        if st == 0 || st == DYING {
            return false;
        }
        let Some(snap) = e.snapshot() else { return false };
        if e.state.compare_exchange(cur, (cur & !0xff) | DYING as u32, AcqRel, Relaxed).is_err() {
            return false;
        }
        self.unlink(&snap.orig, idx, Dir::Orig);
        if snap.reply != snap.orig {
            self.unlink(&snap.reply, idx, Dir::Reply);
        }
        self.release(idx);
        self.counters.removed.fetch_add(1, Relaxed);
        true
    }

    /// Calls `f` for every live entry in index range `range` (for the reaper and `show`).
    pub fn for_each_live(&self, range: std::ops::Range<usize>, mut f: impl FnMut(u32, &Entry, Snapshot)) {
        let end = range.end.min(self.entries.len());
        for i in range.start.min(end)..end {
            let e = &self.entries[i];
            let st = e.state.load(Relaxed) as u8;
            if st == 0 || st == DYING {
                continue;
            }
            if let Some(s) = e.snapshot() {
                f(i as u32, e, s);
            }
        }
    }
}
