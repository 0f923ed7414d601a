//! One tracked connection: 64 bytes, one cache line, all fields atomic.
//!
//! Contract: the keys and NAT fields are written only while the entry is being created, under
//! a sequence lock (`version` odd while writing), and read through [`Entry::snapshot`], which
//! retries until it reads a consistent copy. The state word, `last_seen` and the policy fields
//! are single atomics that any worker may update in place while the entry lives. Freeing bumps
//! `version`, so a reader that raced with the entry's reuse sees the change and misses.
use std::sync::atomic::{fence, AtomicU32, Ordering::*};

use super::key::FlowKey;
use super::tcp::CtState;

/// Flags in byte 1 of the state word.
pub mod flags {
    /// The reply direction has been seen.
    pub const SEEN_REPLY: u8 = 1 << 0;
    /// Destination translated (a Service frontend).
    pub const DNAT: u8 = 1 << 1;
    /// Source translated (masquerade).
    pub const SNAT: u8 = 1 << 2;
    /// Opened from the uplink (external client).
    pub const FROM_UPLINK: u8 = 1 << 3;
}

/// One read of an entry's state word: state (byte 0), [`flags`] (byte 1), policy verdict
/// (byte 2). Read once, decoded as often as needed, so that the three always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateWord(u32);

impl StateWord {
    /// The connection's state (None: a free or dying slot).
    #[inline(always)]
    pub fn state(self) -> Option<CtState> {
        CtState::from_u8(self.0 as u8)
    }
    /// Whether the state is `s`, without decoding it (the fast path's test).
    #[inline(always)]
    pub fn state_is(self, s: CtState) -> bool {
        self.0 as u8 == s as u8
    }
    /// The [`flags`] byte.
    #[inline(always)]
    pub fn flags(self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// Whether any of `mask` (of [`flags`]) is set.
    #[inline(always)]
    pub fn has(self, mask: u8) -> bool {
        self.flags() & mask != 0
    }
    /// The policy verdict byte (0: not judged).
    #[inline(always)]
    pub fn verdict(self) -> u8 {
        (self.0 >> 16) as u8
    }
}

/// Sentinel state byte of an entry being removed.
pub(crate) const DYING: u8 = 0xff;

#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct Entry {
    pub(crate) version: AtomicU32,
    /// state (byte 0), flags (byte 1), policy verdict (byte 2), spare (byte 3).
    pub(crate) state: AtomicU32,
    pub(crate) last_seen: AtomicU32,
    pub(crate) created: AtomicU32,
    orig_src: AtomicU32,
    orig_dst: AtomicU32,
    orig_ports: AtomicU32,
    proto: AtomicU32,
    reply_src: AtomicU32,
    reply_dst: AtomicU32,
    reply_ports: AtomicU32,
    frontend: AtomicU32,
    endpoint: AtomicU32,
    pub(crate) policy_epoch: AtomicU32,
    pub(crate) policy_rule: AtomicU32,
    /// Idle timeout in ms overriding the state's (0: the state's).
    timeout: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 64);

/// A consistent copy of an entry's immutable fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub orig: FlowKey,
    pub reply: FlowKey,
    /// Frontend index + 1 (0: no Service).
    pub frontend: u32,
    /// Endpoint id of the chosen backend (u32::MAX: none).
    pub endpoint: u32,
    pub created: u32,
}

/// What a new entry starts with.
#[derive(Debug, Clone, Copy)]
pub struct EntryInit {
    pub orig: FlowKey,
    pub reply: FlowKey,
    pub state: CtState,
    pub flags: u8,
    pub frontend: u32,
    pub endpoint: u32,
    pub policy_epoch: u32,
    pub policy_rule: u32,
    pub verdict: u8,
    /// Idle timeout in ms; 0 takes the state's.
    pub timeout_ms: u32,
}

fn unpack(src: u32, dst: u32, ports: u32, proto: u8) -> FlowKey {
    FlowKey { src, dst, sport: (ports >> 16) as u16, dport: ports as u16, proto }
}

/// What a previous process left in an entry, as [`Entry::adopt`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Left {
    /// Free, or being removed (now free).
    Free,
    /// Being written when that process stopped (now free): a connection that never was.
    Incomplete,
    /// A connection, kept.
    Live,
}

impl Entry {
    /// Prepares an entry of a table a previous process left, for this process (no other
    /// thread may touch the table yet). A live connection keeps its keys, translation, state
    /// and times; what named that process's tables goes: its endpoint id and frontend index
    /// (ids are given per process), and its policy verdict's epoch (0, never a live epoch, so
    /// the connection is judged again under this process's policy on its next packet). An
    /// affinity record is kept whole: it names its Service port and backend by values that
    /// mean the same in every process (see `pipeline::load_balance::affinity_key`).
    pub(crate) fn adopt(&self) -> Left {
        let v = self.version.load(Relaxed);
        let st = self.state.load(Relaxed) as u8;
        let free = |version: u32| {
            self.version.store(version, Relaxed);
            self.state.store(0, Relaxed);
        };
        if v & 1 == 1 {
            free(v.wrapping_add(1));
            return Left::Incomplete;
        }
        match st {
            0 => Left::Free,
            DYING => {
                free(v.wrapping_add(2));
                Left::Free
            }
            _ => match CtState::from_u8(st) {
                Some(CtState::Affinity) => Left::Live,
                None => {
                    free(v.wrapping_add(2));
                    Left::Incomplete
                }
                Some(_) => {
                    self.endpoint.store(u32::MAX, Relaxed);
                    self.frontend.store(0, Relaxed);
                    self.policy_epoch.store(0, Relaxed);
                    Left::Live
                }
            },
        }
    }

    /// Sets every field to zero: a free entry (for a table's memory being reset, with no other
    /// thread on it).
    pub(crate) fn clear(&self) {
        for f in [
            &self.version, &self.state, &self.last_seen, &self.created, &self.orig_src, &self.orig_dst, &self.orig_ports,
            &self.proto, &self.reply_src, &self.reply_dst, &self.reply_ports, &self.frontend, &self.endpoint,
            &self.policy_epoch, &self.policy_rule, &self.timeout,
        ] {
            f.store(0, Relaxed);
        }
    }

    /// Writes a free entry's fields (the caller owns it: it came off the free list).
    pub(crate) fn init(&self, e: &EntryInit, now: u32) {
        let v = self.version.load(Relaxed);
        self.version.store(v.wrapping_add(1), Relaxed); // odd: being written
        fence(Release);
        self.orig_src.store(e.orig.src, Relaxed);
        self.orig_dst.store(e.orig.dst, Relaxed);
        self.orig_ports.store(e.orig.ports_word(), Relaxed);
        self.proto.store(e.orig.proto as u32, Relaxed);
        self.reply_src.store(e.reply.src, Relaxed);
        self.reply_dst.store(e.reply.dst, Relaxed);
        self.reply_ports.store(e.reply.ports_word(), Relaxed);
        self.frontend.store(e.frontend, Relaxed);
        self.endpoint.store(e.endpoint, Relaxed);
        self.created.store(now, Relaxed);
        self.last_seen.store(now, Relaxed);
        self.policy_epoch.store(e.policy_epoch, Relaxed);
        self.policy_rule.store(e.policy_rule, Relaxed);
        self.timeout.store(e.timeout_ms, Relaxed);
        self.version.store(v.wrapping_add(2), Release);
        // Live from here on: lookups that find its slots accept it.
        self.state.store(e.state as u32 | (e.flags as u32) << 8 | (e.verdict as u32) << 16, Release);
    }

    /// A consistent copy of the immutable fields, or None if the entry is free or dying.
    #[inline]
    pub fn snapshot(&self) -> Option<Snapshot> {
        for _ in 0..64 {
            let v1 = self.version.load(Acquire);
            if v1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let st = self.state.load(Acquire) as u8;
            let proto = self.proto.load(Relaxed) as u8;
            let s = Snapshot {
                orig: unpack(self.orig_src.load(Relaxed), self.orig_dst.load(Relaxed), self.orig_ports.load(Relaxed), proto),
                reply: unpack(self.reply_src.load(Relaxed), self.reply_dst.load(Relaxed), self.reply_ports.load(Relaxed), proto),
                frontend: self.frontend.load(Relaxed),
                endpoint: self.endpoint.load(Relaxed),
                created: self.created.load(Relaxed),
            };
            fence(Acquire);
            if self.version.load(Relaxed) == v1 {
                return (st != 0 && st != DYING).then_some(s);
            }
        }
        None
    }

    /// If the entry's key in direction `reply` is `k`, the key of the other direction, read
    /// consistently (the fast path's narrower [`Self::snapshot`]: it copies only what it
    /// compares and what it translates to). None if it is not `k`, or free, dying or being
    /// rewritten.
    #[inline(always)]
    pub fn match_key(&self, k: &FlowKey, reply: bool) -> Option<FlowKey> {
        let v1 = self.version.load(Acquire);
        if v1 & 1 == 1 {
            return None;
        }
        let (mine, other) = if reply {
            ((&self.reply_src, &self.reply_dst, &self.reply_ports), (&self.orig_src, &self.orig_dst, &self.orig_ports))
        } else {
            ((&self.orig_src, &self.orig_dst, &self.orig_ports), (&self.reply_src, &self.reply_dst, &self.reply_ports))
        };
        let proto = self.proto.load(Relaxed) as u8;
        if mine.0.load(Relaxed) != k.src || mine.1.load(Relaxed) != k.dst || mine.2.load(Relaxed) != k.ports_word() || proto != k.proto {
            return None;
        }
        let o = unpack(other.0.load(Relaxed), other.1.load(Relaxed), other.2.load(Relaxed), proto);
        let st = self.state.load(Acquire) as u8;
        fence(Acquire);
        (self.version.load(Relaxed) == v1 && st != 0 && st != DYING).then_some(o)
    }

    /// The state, flags and verdict as one consistent read (see [`StateWord`]).
    #[inline]
    pub fn state_word(&self) -> StateWord {
        StateWord(self.state.load(Acquire))
    }

    #[inline]
    pub fn state(&self) -> Option<CtState> {
        self.state_word().state()
    }

    #[inline]
    pub fn flags(&self) -> u8 {
        self.state_word().flags()
    }

    #[inline]
    pub fn verdict(&self) -> u8 {
        self.state_word().verdict()
    }

    /// Moves the state byte from `from` to `to` and ORs `set_flags` in, unless the entry changed
    /// meanwhile (another worker moved it, or it is being freed). Returns whether it applied.
    #[inline]
    pub fn transition(&self, from: CtState, to: CtState, set_flags: u8) -> bool {
        let cur = self.state.load(Acquire);
        if cur as u8 != from as u8 {
            return false;
        }
        let new = (cur & !0xff) | to as u32 | (set_flags as u32) << 8;
        cur == new || self.state.compare_exchange(cur, new, AcqRel, Relaxed).is_ok()
    }

    /// Records a new policy verdict for the entry (after a policy change).
    #[inline]
    pub fn set_verdict(&self, verdict: u8, epoch: u32, rule: u32) {
        let mut cur = self.state.load(Acquire);
        loop {
            let st = cur as u8;
            if st == 0 || st == DYING {
                return;
            }
            let new = (cur & !0x00ff_0000) | (verdict as u32) << 16;
            match self.state.compare_exchange_weak(cur, new, AcqRel, Acquire) {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        self.policy_rule.store(rule, Relaxed);
        self.policy_epoch.store(epoch, Release);
    }

    /// Notes activity; writes only when the stored time is a second old or more, so that busy
    /// flows do not bounce the cache line between workers on every packet.
    #[inline]
    pub fn touch(&self, now: u32) {
        let seen = self.last_seen.load(Relaxed);
        if now.wrapping_sub(seen) >= 1000 {
            self.last_seen.store(now, Relaxed);
        }
    }

    #[inline]
    pub fn last_seen(&self) -> u32 {
        self.last_seen.load(Relaxed)
    }

    /// The entry's own idle timeout in ms, if it has one.
    #[inline]
    pub fn timeout_override(&self) -> Option<u32> {
        let t = self.timeout.load(Relaxed);
        (t != 0).then_some(t)
    }

    #[inline]
    pub fn policy_epoch(&self) -> u32 {
        self.policy_epoch.load(Acquire)
    }

    #[inline]
    pub fn policy_rule(&self) -> u32 {
        self.policy_rule.load(Relaxed)
    }
}
