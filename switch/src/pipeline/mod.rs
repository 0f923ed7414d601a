//! What the switch does with one frame.
//!
//! Contract: [`process`] takes a received frame (the whole buffer of its UMEM frame, and its
//! length), the port it came in on and the tables in force, and returns where the (possibly
//! rewritten) frame goes, or why it is dropped. It never allocates, locks or panics, whatever
//! the bytes. Stages, in order:
//! 1. parse and validate headers ([`crate::wire::parse_frame`]);
//! 2. the destination MAC must be the port's (the gateway MAC) or broadcast;
//! 3. anti-spoofing on pod ports ([`antispoof`]): source MAC, and source IP or ARP sender;
//! 4. ARP requests for the gateway are answered on the same port ([`arp`]);
//! 5. IPv4: header checksum, the gateway's own address ([`icmp`] answers echo), connection
//!    tracking and Service translation ([`nat`]), then the route lookup by the (translated)
//!    destination, TTL (ICMP time exceeded), MAC rewrite and TTL decrement ([`forward`]).
pub mod antispoof;
pub mod arp;
pub mod fast;
pub mod forward;
pub mod icmp;
pub mod icmp_nat;
pub mod nat;
pub mod policy;
pub mod reject;
pub mod rewrite;
pub mod warm;

use crate::conntrack::ConnTable;
use crate::counters::DropCounters;
use crate::drop_reason::DropReason;
use crate::tables::{PortId, Tables};
use crate::wire::{parse_frame, FrameKind, WireError};

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the frame (with its new length) on `port`.
    Forward { port: PortId, len: usize },
    Drop(DropReason),
}

const BROADCAST: [u8; 6] = [0xff; 6];

impl From<WireError> for DropReason {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => DropReason::Truncated,
            WireError::BadIpVersion => DropReason::BadIpVersion,
            WireError::BadIhl => DropReason::BadIhl,
            WireError::BadTotalLength => DropReason::BadIpTotalLength,
            WireError::BadArp => DropReason::BadArp,
            WireError::BadL4Length => DropReason::BadL4Length,
            WireError::BadTcpDataOffset => DropReason::BadTcpDataOffset,
        }
    }
}

/// What the pipeline reads besides the frame: the tables in force, the shared connection
/// table, the time, and the worker's counters for packets that are answered rather than
/// forwarded (TTL exceeded).
pub struct Ctx<'a> {
    pub tables: &'a Tables,
    pub ct: &'a ConnTable,
    /// The connection table's clock ([`ConnTable::now_ms`]), read once per burst.
    pub now: u32,
    pub drops: &'a DropCounters,
    /// The worker's verdict log.
    pub flows: &'a crate::flowlog::FlowRing,
    pub policy_counters: &'a crate::counters::PolicyCounters,
}

/// Runs the pipeline on one frame; see the module contract. `buf` is the frame's whole data
/// area (replies may be longer than the frame), `len` its received length.
#[inline]
pub fn process(buf: &mut [u8], len: usize, in_port: PortId, ctx: &Ctx) -> Verdict {
    process_hinted(buf, len, in_port, ctx, warm::Hint::NONE)
}

/// [`process`] with what [`warm::burst`] learned of the frame (or [`warm::Hint::NONE`]); the
/// verdict is the same whatever the hint.
#[inline]
pub fn process_hinted(buf: &mut [u8], len: usize, in_port: PortId, ctx: &Ctx, hint: warm::Hint) -> Verdict {
    match fast::established(buf, len, in_port, ctx, hint) {
        Some(v) => v,
        None => slow(buf, len, in_port, ctx),
    }
}

/// The full pipeline (see the module contract); [`process`] comes here for everything the
/// fast path ([`fast`]) does not take.
#[inline(never)]
pub fn slow(buf: &mut [u8], len: usize, in_port: PortId, ctx: &Ctx) -> Verdict {
    let tables = ctx.tables;
    let len = len.min(buf.len());
    let parsed = match parse_frame(&buf[..len]) {
        Ok(p) => p,
        Err(e) => return Verdict::Drop(e.into()),
    };
    let Some(port) = tables.port(in_port) else {
        return Verdict::Drop(DropReason::UnknownIngressPort);
    };
    let dst_mac: [u8; 6] = buf[0..6].try_into().expect("parsed frames hold an Ethernet header");
    if dst_mac != port.mac && dst_mac != BROADCAST {
        return Verdict::Drop(DropReason::DstMacNotSwitch);
    }
    if let Err(r) = antispoof::check_mac(buf, port) {
        return Verdict::Drop(r);
    }
    match parsed.kind {
        FrameKind::Arp => arp::answer(buf, len, in_port, port, tables),
        FrameKind::Ipv4 => {
            if let Err(r) = antispoof::check_ipv4(&parsed, port) {
                return Verdict::Drop(r);
            }
            if dst_mac == BROADCAST {
                return Verdict::Drop(DropReason::DstNotUnicast);
            }
            forward::ipv4(buf, len, &parsed, in_port, port, ctx)
        }
        FrameKind::Other(_) => Verdict::Drop(DropReason::UnsupportedEthertype),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_services;
#[cfg(test)]
mod tests_policy;
