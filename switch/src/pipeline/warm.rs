//! Warming the connection table for a burst before processing it (VPP's lesson: a node that
//! handles a vector of packets overlaps their cache misses).
//!
//! Contract: [`burst`] reads frames only; for each IPv4 TCP/UDP/SCTP frame it computes the flow
//! key from fixed offsets (no validation: a malformed frame only wastes one load), and touches
//! the key's bucket and then its entry, all packets' buckets first. Processing afterwards finds
//! them in cache. It never changes what [`super::process`] decides.
use crate::conntrack::{ConnTable, FlowKey};
use crate::wire::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

/// The most frames warmed at once (a worker's burst).
pub const MAX: usize = 64;

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

/// Warms the table for up to [`MAX`] frames, given by `frame(i)` for `i < n`.
#[inline]
pub fn burst<'a>(ct: &ConnTable, n: usize, mut frame: impl FnMut(usize) -> &'a [u8]) {
    let n = n.min(MAX);
    let mut hashes = [0u64; MAX];
    let mut have = [false; MAX];
    for i in 0..n {
        if let Some(k) = quick_key(frame(i)) {
            let h = ct.hash(&k);
            ct.warm_bucket(h);
            hashes[i] = h;
            have[i] = true;
        }
    }
    for i in 0..n {
        if have[i] {
            ct.warm_entry(hashes[i]);
        }
    }
}
