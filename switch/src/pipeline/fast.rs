//! The fast path for packets of established connections: the common case, done in one pass
//! over fixed offsets, without building a full parse.
//!
//! Contract: [`established`] either returns the verdict the full pipeline ([`super::slow`])
//! would return for this frame, having made the same changes to the frame and to the
//! connection, or returns `None` having changed nothing, and the full pipeline runs. It takes
//! only what is unambiguous and steady: an option-less, unfragmented IPv4 TCP or UDP frame,
//! addressed to the port's MAC, from the port's own pod (anti-spoofing), with a valid header
//! checksum and TTL > 1, that belongs to a tracked connection in a steady state (established
//! TCP without SYN, FIN or RST; answered UDP) judged under the current policy epoch and
//! allowed, and whose translated destination has a route. Everything else (ARP, ICMP, new
//! connections, state changes, malformed frames, drops of any kind) goes the full way, so each
//! drop keeps its precise reason. A differential test checks that both paths agree.
use crate::conntrack::{flags, CtState, Dir, FlowKey};
use crate::tables::PortId;
use crate::wire::checksum::{self, Delta};
use crate::wire::tcp_flags::{FIN, RST, SYN};
use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};

use super::warm::Hint;
use super::{policy, Ctx, Verdict};

#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline(always)]
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[inline]
/// `hint` is what [`super::warm::burst`] learned of the frame, or [`Hint::NONE`].
pub fn established(buf: &mut [u8], len: usize, in_port: PortId, ctx: &Ctx, hint: Hint) -> Option<Verdict> {
    let len = len.min(buf.len());
    if len < 42 || buf[12] != 0x08 || buf[13] != 0x00 || buf[14] != 0x45 {
        return None;
    }
    let f = &buf[..len];
    let total = be16(f, 16) as usize;
    // Not fragmented (MF clear, offset 0; DF may be set), and the lengths hold.
    if be16(f, 20) & 0x3fff != 0 || total < 28 || 14 + total > len {
        return None;
    }
    let proto = f[23];
    let l4_len = total - 20;
    match proto {
        IPPROTO_TCP => {
            if l4_len < 20 || ((f[46] >> 4) as usize) < 5 || ((f[46] >> 4) as usize) * 4 > l4_len {
                return None;
            }
            if f[47] & (SYN | FIN | RST) != 0 {
                return None; // state changes go the full way
            }
        }
        IPPROTO_UDP => {
            let ulen = be16(f, 38) as usize;
            if !(8..=l4_len).contains(&ulen) {
                return None;
            }
        }
        _ => return None,
    }
    let tables = ctx.tables;
    let port = tables.port(in_port)?;
    if f[0..6] != port.mac {
        return None;
    }
    let src = be32(f, 26);
    if let Some(g) = &port.source_guard {
        if f[6..12] != g.mac || src != u32::from(g.ip) {
            return None;
        }
    }
    let ttl = f[22];
    let dst = be32(f, 30);
    if ttl <= 1 || dst == u32::from(tables.gateway_ip) {
        return None;
    }
    let hdr: &[u8; 20] = f[14..34].try_into().ok()?;
    if checksum::ipv4_header_checksum(hdr) != 0 {
        return None;
    }
    let key = FlowKey { src, dst, sport: be16(f, 34), dport: be16(f, 36), proto };
    let h = if hint.hash != Hint::NONE.hash { hint.hash } else { ctx.ct.hash(&key) };
    let (idx, dir, other) = ctx.ct.lookup_other(&key, h, hint.slot)?;
    let e = ctx.ct.entry(idx);
    let word = e.state_word();
    let state = CtState::from_u8(word as u8)?;
    let entry_flags = (word >> 8) as u8;
    let steady = state == CtState::TcpEstablished || state == CtState::UdpReplied;
    if !steady
        || (dir == Dir::Reply && entry_flags & flags::SEEN_REPLY == 0)
        || e.policy_epoch() != tables.policy.epoch
        || (word >> 16) as u8 != policy::VERDICT_ALLOW
    {
        return None;
    }
    // Where it goes: the translated tuple, then its route.
    let nat = entry_flags & (flags::DNAT | flags::SNAT) != 0;
    // The other direction's key, reversed: this packet as it leaves.
    let to = if nat { other.reverse() } else { key };
    let to_dst = std::net::Ipv4Addr::from(to.dst);
    if to_dst.is_broadcast() || to_dst.is_multicast() || to_dst.is_unspecified() {
        return None;
    }
    let hop = *tables.route(to_dst)?;
    let out = tables.port(hop.port)?;
    // Committed: from here the frame and the entry change exactly as the full path would.
    e.touch(ctx.now);
    let l4 = 34;
    // IPv4 header: addresses (if translated) and TTL - 1, one checksum fold.
    let mut ip_sum = Delta::new(be16(buf, 24)).word(u16::from_be_bytes([ttl, proto]), u16::from_be_bytes([ttl - 1, proto]));
    buf[22] = ttl - 1;
    if nat {
        ip_sum = ip_sum.u32(key.src, to.src).u32(key.dst, to.dst);
        buf[26..30].copy_from_slice(&to.src.to_be_bytes());
        buf[30..34].copy_from_slice(&to.dst.to_be_bytes());
        buf[l4..l4 + 2].copy_from_slice(&to.sport.to_be_bytes());
        buf[l4 + 2..l4 + 4].copy_from_slice(&to.dport.to_be_bytes());
        let at = if proto == IPPROTO_TCP { l4 + 16 } else { l4 + 6 };
        let old = be16(buf, at);
        if !(proto == IPPROTO_UDP && old == 0) {
            let mut s = Delta::new(old)
                .u32(key.src, to.src)
                .u32(key.dst, to.dst)
                .word(key.sport, to.sport)
                .word(key.dport, to.dport)
                .finish();
            if proto == IPPROTO_UDP && s == 0 {
                s = 0xffff;
            }
            buf[at..at + 2].copy_from_slice(&s.to_be_bytes());
        }
    }
    buf[24..26].copy_from_slice(&ip_sum.finish().to_be_bytes());
    buf[0..6].copy_from_slice(&hop.dst_mac);
    buf[6..12].copy_from_slice(&out.mac);
    Some(Verdict::Forward { port: hop.port, len })
}
