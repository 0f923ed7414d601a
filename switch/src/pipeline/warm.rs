//! Warming the connection table for a burst before processing it (VPP's lesson: a node that
//! handles a vector of packets overlaps their cache misses).
//!
//! Contract: [`burst`] reads frames only; for each IPv4 TCP/UDP/SCTP frame it computes the flow
//! key from fixed offsets (no validation: a malformed frame only wastes a prefetch), hashes it,
//! and prefetches the key's bucket and then its entry, all packets' buckets first. Processing
//! afterwards finds them in cache. It returns what it learned ([`Hints`]: the hash, and the
//! slot whose entry it touched) so that the fast path neither hashes the same key again nor
//! scans the bucket again when that entry is the one. A hint is only ever a hint: the fast
//! path compares whole keys under the entry's version, so a hint that does not belong to the
//! frame's key can only cost a miss (the scan, or the full pipeline, then decides), never a
//! wrong connection. It never changes what [`super::process`] decides.
use crate::conntrack::{ConnTable, FlowKey};
use crate::wire::offsets::{ETHERTYPE, IPV4_DST, IPV4_PROTOCOL, IPV4_SRC, IPV4_VER_IHL, L4_DST_PORT, L4_SRC_PORT, VER_IHL_NO_OPTIONS};
use crate::wire::{ETHERTYPE_IPV4, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

/// The most frames warmed at once (a worker's burst).
pub const MAX: usize = 64;

/// What the warm-up learned of one frame: its key's hash and the first slot of its home
/// bucket that carries the hash's tag (an entry that may be the frame's connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// The key's hash; [`Hint::NONE`]'s 0 means unknown (a real hash of 0 is merely not used).
    pub hash: u64,
    /// The slot's value ([`ConnTable::warm_entry`]); 0: none seen.
    pub slot: u64,
}

impl Hint {
    /// Nothing known: the fast path hashes and scans itself.
    pub const NONE: Hint = Hint { hash: 0, slot: 0 };
}

/// The hints of a burst's frames.
pub struct Hints(pub [Hint; MAX]);

impl Hints {
    #[inline(always)]
    pub fn get(&self, i: usize) -> Hint {
        self.0.get(i).copied().unwrap_or(Hint::NONE)
    }
}

/// The flow key of an option-less IPv4 TCP/UDP/SCTP frame, read at the fixed offsets of
/// [`crate::wire::offsets`].
#[inline(always)]
pub fn quick_key(f: &[u8]) -> Option<FlowKey> {
    let f: &[u8; KEY_END] = f.get(..KEY_END)?.try_into().ok()?;
    if u16::from_be_bytes([f[ETHERTYPE], f[ETHERTYPE + 1]]) != ETHERTYPE_IPV4 || f[IPV4_VER_IHL] != VER_IHL_NO_OPTIONS {
        return None;
    }
    let proto = f[IPV4_PROTOCOL];
    if !matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        return None;
    }
    let be32 = |at: usize| u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
    let be16 = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    Some(FlowKey { src: be32(IPV4_SRC), dst: be32(IPV4_DST), sport: be16(L4_SRC_PORT), dport: be16(L4_DST_PORT), proto })
}

/// The end of the bytes [`quick_key`] reads: the two ports.
const KEY_END: usize = L4_DST_PORT + 2;

/// Warms the table for up to [`MAX`] frames, whose quick keys `key_of(i)` gives for `i < n`
/// (see [`quick_key`]); returns what it learned of each.
#[inline]
pub fn burst(ct: &ConnTable, n: usize, mut key_of: impl FnMut(usize) -> Option<FlowKey>) -> Hints {
    let n = n.min(MAX);
    let mut hints = Hints([Hint::NONE; MAX]);
    for i in 0..n {
        if let Some(k) = key_of(i) {
            let h = ct.hash(&k);
            ct.warm_bucket(h);
            hints.0[i].hash = h;
        }
    }
    for hint in &mut hints.0[..n] {
        if hint.hash != 0 {
            hint.slot = ct.warm_entry(hint.hash);
        }
    }
    hints
}
