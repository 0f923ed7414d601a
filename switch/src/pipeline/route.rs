//! Routing: the next hop of a packet by its destination as translated, and whether its TTL
//! lets it be forwarded.
//!
//! Contract: [`next_hop`] reads the destination from the frame (after the connection stages
//! rewrote it): broadcast, multicast or unspecified addresses are dropped, as are addresses
//! without a route and routes to a port the tables do not hold (yet). [`ttl_allows_forwarding`]
//! is false when the TTL would reach 0 ([`super::icmp::time_exceeded`] answers then).
use std::net::Ipv4Addr;

use crate::drop_reason::DropReason;
use crate::tables::{NextHop, Tables};
use crate::wire::{offsets, Ipv4Packet};

/// Where a packet goes: the route's next hop and the egress port's own MAC (the new source).
#[derive(Debug, Clone, Copy)]
pub struct Hop<'t> {
    pub next: &'t NextHop,
    pub out_mac: &'t [u8; 6],
}

#[inline(always)]
pub fn next_hop<'t>(tables: &'t Tables, buf: &[u8]) -> Result<Hop<'t>, DropReason> {
    let dst = Ipv4Packet::new_unchecked(&buf[offsets::IPV4..]).dst_addr();
    if !is_unicast(dst) {
        return Err(DropReason::DstNotUnicast);
    }
    let next = tables.route(dst).ok_or(DropReason::NoRoute)?;
    let out = tables.port(next.port).ok_or(DropReason::EgressPortNotReady)?;
    Ok(Hop { next, out_mac: &out.mac })
}

/// Whether the packet's TTL is above 1 (it may be decremented and forwarded).
#[inline(always)]
pub fn ttl_allows_forwarding(buf: &[u8]) -> bool {
    Ipv4Packet::new_unchecked(&buf[offsets::IPV4..]).ttl() > 1
}

/// Unicast: not broadcast, multicast or unspecified. Shared with the fast path.
#[inline(always)]
pub fn is_unicast(a: Ipv4Addr) -> bool {
    !(a.is_broadcast() || a.is_multicast() || a.is_unspecified())
}
