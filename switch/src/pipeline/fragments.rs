//! Fragmented datagrams: the later fragments of a datagram follow its first one's verdict and
//! translation, by IP id, without reassembly.
//!
//! Why: only a datagram's first fragment carries the ports that connection tracking, Service
//! translation and NetworkPolicy need. The later ones used to pass unjudged between pods (a
//! way past a policy) and were dropped toward Services (a 3,000-byte UDP datagram through a
//! ClusterIP never arrived).
//!
//! Contract:
//! - [`remember`]: once a first fragment (offset 0, more-fragments set) has passed every stage
//!   (its connection found or admitted by policy, translated), its datagram (source,
//!   destination, protocol, IP id, as sent) is recorded with the addresses it leaves with, in
//!   the connection table under [`FRAGMENT_PROTO`], for [`FRAGMENT_TIMEOUT_MS`] (Linux's
//!   `ipfrag_time`). A full table leaves the datagram unrecorded (its later fragments are then
//!   dropped).
//! - [`follow`]: a later fragment (offset > 0) of a recorded datagram gets the same addresses
//!   (IPv4 header only, checksum updated; it has no L4 header) and goes on to routing. One of
//!   a datagram not recorded (its first fragment denied, dropped, never seen, arrived after it,
//!   or more than 30 s ago) is dropped as [`DropReason::FragmentUnknown`]: no fragment
//!   reaches a pod whose policy the first fragment did not pass.
//! - Later fragments are not reordered or buffered; senders (Linux) send the first fragment
//!   first, and a veth or a switch keeps that order.
//! - The hot path of unfragmented traffic is untouched; this runs only for fragments.
use crate::conntrack::{CtState, Dir, EntryInit, FlowKey};
use crate::counters::Counter;
use crate::drop_reason::DropReason;
use crate::wire::checksum::Delta;
use crate::wire::{offsets, Ipv4Packet, ParsedFrame};

use super::Ctx;

/// Protocol number of fragment records in the connection table (never on the wire: 254 is
/// reserved for experimentation, RFC 3692; 253 is the affinity records').
pub const FRAGMENT_PROTO: u8 = 254;
/// How long a datagram's record waits for its later fragments.
pub const FRAGMENT_TIMEOUT_MS: u32 = 30_000;
/// Set in the record's reply key, so that it can never equal another record's own key.
const REPLY_MARK: u16 = 0x8000;

/// What this stage did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams whose first fragment was recorded.
    pub datagrams: Counter,
    /// Later fragments that followed their datagram.
    pub followed: Counter,
}

/// The record key of the datagram `parsed` belongs to, as sent.
#[inline]
fn datagram_key(buf: &[u8], parsed: &ParsedFrame) -> FlowKey {
    let id = Ipv4Packet::new_unchecked(&buf[offsets::IPV4..]).ident();
    FlowKey { src: u32::from(parsed.src_ip), dst: u32::from(parsed.dst_ip), sport: id, dport: u16::from(parsed.ip_protocol), proto: FRAGMENT_PROTO }
}

/// Whether `parsed` is the first fragment of a fragmented datagram.
#[inline(always)]
pub fn is_first(parsed: &ParsedFrame) -> bool {
    parsed.is_fragment && parsed.fragment_offset == 0
}

/// Records the datagram of first fragment `parsed` (its header as it arrived), whose frame in
/// `buf` now carries the addresses it leaves with.
pub fn remember(buf: &[u8], parsed: &ParsedFrame, ctx: &Ctx) {
    let key = datagram_key(buf, parsed);
    let ip = Ipv4Packet::new_unchecked(&buf[offsets::IPV4..]);
    let out = FlowKey { src: u32::from(ip.src_addr()), dst: u32::from(ip.dst_addr()), dport: key.dport | REPLY_MARK, ..key };
    if ctx.ct.lookup(&key).is_some() {
        return; // the same first fragment again
    }
    let rec = EntryInit {
        orig: key,
        reply: out,
        state: CtState::Fragments,
        flags: 0,
        frontend: 0,
        endpoint: u32::MAX,
        policy_epoch: 0,
        policy_rule: 0,
        verdict: 0,
        timeout_ms: FRAGMENT_TIMEOUT_MS,
    };
    if ctx.ct.insert(&rec, ctx.now).is_ok() {
        ctx.stages.fragments.datagrams.add(1);
    }
}

/// Gives later fragment `parsed` its datagram's addresses, or drops it (see the contract).
pub fn follow(buf: &mut [u8], parsed: &ParsedFrame, ctx: &Ctx) -> Result<(), DropReason> {
    let key = datagram_key(buf, parsed);
    let hit = ctx.ct.lookup(&key).filter(|h| h.dir == Dir::Orig).ok_or(DropReason::FragmentUnknown)?;
    let (src, dst) = (hit.snap.reply.src, hit.snap.reply.dst);
    if (src, dst) != (key.src, key.dst) {
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[offsets::IPV4..]);
        let sum = Delta::new(ip.checksum()).plus(Delta::ZERO.u32(key.src, src).u32(key.dst, dst)).finish();
        ip.set_checksum(sum);
        ip.set_src_addr(src.into());
        ip.set_dst_addr(dst.into());
    }
    ctx.stages.fragments.followed.add(1);
    Ok(())
}
