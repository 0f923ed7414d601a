//! Warming the connection table for a burst before processing it (VPP's lesson: a node that
//! handles a vector of packets overlaps their cache misses).
//!
//! Contract: [`burst`] reads frames only; for each IPv4 TCP/UDP/SCTP frame it computes the flow
//! key from fixed offsets (no validation: a malformed frame only wastes one load), hashes it,
//! and touches the key's bucket and then its entry, all packets' buckets first. Processing
//! afterwards finds them in cache. It returns the hashes ([`Hints`]) so that the fast path does
//! not hash the same key again. A hint is only ever a hint: the fast path's lookup compares
//! whole keys, so a hint that does not belong to the frame's key can only cost a miss (and the
//! full pipeline then decides), never a wrong connection. It never changes what
//! [`super::process`] decides.
use crate::conntrack::{ConnTable, FlowKey};
use crate::wire::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

/// The most frames warmed at once (a worker's burst).
pub const MAX: usize = 64;

/// Per frame of a burst, the connection-table hash of its quick key; [`NO_HINT`] where none.
pub struct Hints(pub [u64; MAX]);

/// "No hash known": the fast path hashes the key itself.
pub const NO_HINT: u64 = 0;

impl Hints {
    #[inline(always)]
    pub fn get(&self, i: usize) -> u64 {
        self.0.get(i).copied().unwrap_or(NO_HINT)
    }
}

/// The flow key of an option-less IPv4 TCP/UDP/SCTP frame, read at fixed offsets.
#[inline(always)]
pub fn quick_key(f: &[u8]) -> Option<FlowKey> {
    if f.len() < 38 || f[12] != 0x08 || f[13] != 0x00 || f[14] != 0x45 {
        return None;
    }
    let proto = f[23];
    if !matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        return None;
    }
    Some(FlowKey {
        src: u32::from_be_bytes([f[26], f[27], f[28], f[29]]),
        dst: u32::from_be_bytes([f[30], f[31], f[32], f[33]]),
        sport: u16::from_be_bytes([f[34], f[35]]),
        dport: u16::from_be_bytes([f[36], f[37]]),
        proto,
    })
}

/// Warms the table for up to [`MAX`] frames, whose quick keys `key_of(i)` gives for `i < n`
/// (see [`quick_key`]); returns their hashes.
#[inline]
pub fn burst(ct: &ConnTable, n: usize, mut key_of: impl FnMut(usize) -> Option<FlowKey>) -> Hints {
    let n = n.min(MAX);
    let mut hints = Hints([NO_HINT; MAX]);
    for i in 0..n {
        if let Some(k) = key_of(i) {
            // A real hash of 0 is merely not used as a hint.
            let h = ct.hash(&k);
            ct.warm_bucket(h);
            hints.0[i] = h;
        }
    }
    for &h in &hints.0[..n] {
        if h != NO_HINT {
            ct.warm_entry(h);
        }
    }
    hints
}
