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
use super::{policy, rewrite, Ctx, Verdict};

/// The bytes this path reads and writes: Ethernet, an option-less IPv4 header and a TCP
/// header up to its flags (UDP needs less). As one fixed-size array, every field access is
/// checked at compile time rather than per packet.
const HDR: usize = 54;

#[inline(always)]
fn be16(b: &[u8; HDR], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline(always)]
fn be32(b: &[u8; HDR], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[inline(always)]
fn mac(b: &[u8; HDR], i: usize) -> [u8; 6] {
    [b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5]]
}

#[inline]
/// `hint` is what [`super::warm::burst`] learned of the frame, or [`Hint::NONE`].
pub fn established(buf: &mut [u8], len: usize, in_port: PortId, ctx: &Ctx, hint: Hint) -> Option<Verdict> {
    let len = len.min(buf.len());
    // A UMEM frame is 2 KiB or more, so its first HDR bytes always exist; bytes past `len` are
    // stale and are read only where the lengths checked below cover them. (Shorter buffers,
    // in tests, go the full way.)
    let f: &mut [u8; HDR] = buf.get_mut(..HDR)?.try_into().ok()?;
    if len < 42 || f[12] != 0x08 || f[13] != 0x00 || f[14] != 0x45 {
        return None;
    }
    let total = be16(f, 16) as usize;
    // Not fragmented (MF clear, offset 0; DF may be set), and the lengths hold.
    if be16(f, 20) & 0x3fff != 0 || total < 28 || 14 + total > len {
        return None;
    }
    let proto = f[23];
    let l4_len = total - 20;
    match proto {
        IPPROTO_TCP => {
            // 20 bytes of TCP header are within the frame: f[46] and f[47] are its own.
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
    if mac(f, 0) != port.mac {
        return None;
    }
    let src = be32(f, 26);
    if let Some(g) = &port.source_guard {
        if mac(f, 6) != g.mac || src != u32::from(g.ip) {
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
    // IPv4 header: addresses (if translated) and TTL - 1, one checksum fold.
    let mut ip_sum = Delta::new(be16(f, 24)).word(u16::from_be_bytes([ttl, proto]), u16::from_be_bytes([ttl - 1, proto]));
    f[22] = ttl - 1;
    if nat {
        // The addresses' change, shared by the IPv4 header and the L4 pseudo-header.
        let addresses = Delta::ZERO.u32(key.src, to.src).u32(key.dst, to.dst);
        ip_sum = ip_sum.plus(addresses);
        f[26..30].copy_from_slice(&to.src.to_be_bytes());
        f[30..34].copy_from_slice(&to.dst.to_be_bytes());
        f[34..38].copy_from_slice(&to.ports_word().to_be_bytes());
        let at = if proto == IPPROTO_TCP { 34 + 16 } else { 34 + 6 };
        let change = addresses.u32(key.ports_word(), to.ports_word());
        if let Some(sum) = rewrite::l4_checksum(proto, be16(f, at), change) {
            f[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
    }
    f[24..26].copy_from_slice(&ip_sum.finish().to_be_bytes());
    f[0..6].copy_from_slice(&hop.dst_mac);
    f[6..12].copy_from_slice(&out.mac);
    Some(Verdict::Forward { port: hop.port, len })
}
