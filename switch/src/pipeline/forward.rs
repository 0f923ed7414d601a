//! IPv4 forwarding: header checksum, local delivery to the gateway address, route lookup,
//! TTL, MAC rewrite and TTL decrement with an incremental checksum update (RFC 1624).
//!
//! Contract: a forwarded frame keeps its length and payload; only the Ethernet addresses, the
//! TTL and the IPv4 header checksum change. Packets whose TTL would reach 0 are answered with
//! ICMP time exceeded from the gateway address and counted as `ttl_exceeded`.
use std::net::Ipv4Addr;

use crate::drop_reason::DropReason;
use crate::tables::{PortConfig, PortId};
use crate::wire::{checksum, ParsedFrame};

use super::{icmp, nat, Ctx, Verdict};

const IP: usize = 14;

#[inline]
pub fn ipv4(
    buf: &mut [u8],
    len: usize,
    parsed: &ParsedFrame,
    in_port: PortId,
    port: &PortConfig,
    ctx: &Ctx,
) -> Verdict {
    let tables = ctx.tables;
    let ihl = ((buf[IP] & 0x0f) as usize) * 4;
    let header_ok = match <&[u8; 20]>::try_from(&buf[IP..IP + 20]) {
        Ok(h) if ihl == 20 => checksum::ipv4_header_checksum(h) == 0,
        _ => checksum::internet_checksum(&buf[IP..IP + ihl]) == 0,
    };
    if !header_ok {
        return Verdict::Drop(DropReason::BadIpChecksum);
    }
    if parsed.dst_ip == tables.gateway_ip {
        return icmp::answer_echo(buf, len, parsed, in_port, port);
    }
    if let Err(v) = nat::track(buf, len, parsed, in_port, port, ctx) {
        return v;
    }
    // Route by the destination as translated.
    let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&buf[IP + 16..IP + 20]).expect("IPv4 header"));
    if !is_unicast(dst) {
        return Verdict::Drop(DropReason::DstNotUnicast);
    }
    let Some(hop) = tables.route(dst) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let Some(out) = tables.port(hop.port) else {
        return Verdict::Drop(DropReason::EgressPortNotReady);
    };
    let ttl = buf[IP + 8];
    if ttl <= 1 {
        ctx.drops.count(DropReason::TtlExceeded);
        return icmp::time_exceeded(buf, len, parsed, in_port, port, tables);
    }
    buf[0..6].copy_from_slice(&hop.dst_mac);
    buf[6..12].copy_from_slice(&out.mac);
    decrement_ttl(buf);
    Verdict::Forward { port: hop.port, len }
}

/// TTL - 1, with the header checksum updated for the 16-bit word (TTL, protocol).
#[inline(always)]
fn decrement_ttl(buf: &mut [u8]) {
    let old_word = u16::from_be_bytes([buf[IP + 8], buf[IP + 9]]);
    buf[IP + 8] -= 1;
    let new_word = u16::from_be_bytes([buf[IP + 8], buf[IP + 9]]);
    let old_sum = u16::from_be_bytes([buf[IP + 10], buf[IP + 11]]);
    let new_sum = checksum::update_u16(old_sum, old_word, new_word);
    buf[IP + 10..IP + 12].copy_from_slice(&new_sum.to_be_bytes());
}

#[inline(always)]
fn is_unicast(a: Ipv4Addr) -> bool {
    !(a.is_broadcast() || a.is_multicast() || a.is_unspecified())
}
