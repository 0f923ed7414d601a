//! The fast path for packets of established connections: the common case, done in one pass
//! over fixed offsets, without building a full parse.
//!
//! Contract: [`established`] either returns the verdict the full pipeline ([`super::slow`])
//! would return for this frame, having made the same changes to the frame and to the
//! connection, or returns `None` having changed nothing, and the full pipeline runs. It takes
//! only what is unambiguous and steady: an option-less, unfragmented IPv4 TCP or UDP frame,
//! addressed to the port's MAC, from the port's own pod (anti-spoofing), with a valid header
//! checksum and TTL > 1, that belongs to a tracked connection in a steady state (established
//! TCP without SYN, FIN or RST; answered UDP; unanswered UDP in its original direction, which
//! changes nothing but the idle time) judged under the current policy epoch and
//! allowed, and whose translated destination has a route. Everything else (ARP, ICMP, new
//! connections, state changes, malformed frames, drops of any kind) goes the full way, so each
//! drop keeps its precise reason. A differential test checks that both paths agree.
use crate::conntrack::{flags, CtState, Dir, FlowKey};
use crate::tables::PortId;
use crate::wire::checksum::{self, Delta};
use crate::wire::offsets::*;
use crate::wire::tcp_flags::{FIN, RST, SYN};
use crate::wire::{ethernet, ipv4, tcp, udp, ETHERTYPE_IPV4, IPPROTO_TCP, IPPROTO_UDP};

use super::warm::Hint;
use super::{policy, rewrite, route, Ctx, Verdict};

/// The bytes this path reads and writes: Ethernet, an option-less IPv4 header and a minimal
/// TCP header (UDP needs less), at the fixed offsets of [`crate::wire::offsets`]. As one
/// fixed-size array, every field access is checked at compile time rather than per packet.
const HDR: usize = TCP_END;
/// Option-less IPv4 header length.
const IPV4_HDR: usize = ipv4::MIN_HEADER_LEN;

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

#[inline(always)]
fn put<const N: usize>(b: &mut [u8; HDR], at: usize, v: &[u8; N]) {
    b[at..at + N].copy_from_slice(v);
}

/// `hint` is what [`super::warm::burst`] learned of the frame, or [`Hint::NONE`]. Always
/// inlined: into the pipeline's entry, and apart into the tunnel stage's, so that the common
/// path pays no call.
#[inline(always)]
pub fn established(buf: &mut [u8], len: usize, in_port: PortId, ctx: &Ctx, hint: Hint) -> Option<Verdict> {
    let len = len.min(buf.len());
    // A UMEM frame is 2 KiB or more, so its first HDR bytes always exist; bytes past `len` are
    // stale and are read only where the lengths checked below cover them. (Shorter buffers,
    // in tests, go the full way.)
    let f: &mut [u8; HDR] = buf.get_mut(..HDR)?.try_into().ok()?;
    if len < UDP_END || be16(f, ETHERTYPE) != ETHERTYPE_IPV4 || f[IPV4_VER_IHL] != VER_IHL_NO_OPTIONS {
        return None;
    }
    let total = be16(f, IPV4_TOTAL_LEN) as usize;
    // Not fragmented (MF clear, offset 0; DF may be set), and the lengths hold.
    if be16(f, IPV4_FLAGS_FRAG) & FRAGMENT_BITS != 0 || total < IPV4_HDR + udp::HEADER_LEN || ethernet::HEADER_LEN + total > len {
        return None;
    }
    let proto = f[IPV4_PROTOCOL];
    let l4_len = total - IPV4_HDR;
    match proto {
        IPPROTO_TCP => {
            // A minimal TCP header is within the frame: the data offset and flags are its own.
            let data_offset = (f[TCP_DATA_OFFSET] >> 4) as usize;
            if l4_len < tcp::MIN_HEADER_LEN || data_offset < 5 || data_offset * 4 > l4_len {
                return None;
            }
            if f[TCP_FLAGS] & (SYN | FIN | RST) != 0 {
                return None; // state changes go the full way
            }
        }
        IPPROTO_UDP => {
            let ulen = be16(f, UDP_LEN) as usize;
            if !(udp::HEADER_LEN..=l4_len).contains(&ulen) {
                return None;
            }
        }
        _ => return None,
    }
    let tables = ctx.tables;
    let port = tables.port(in_port)?;
    if mac(f, ETH_DST) != port.mac {
        return None;
    }
    let src = be32(f, IPV4_SRC);
    if let Some(g) = &port.source_guard {
        if mac(f, ETH_SRC) != g.mac || src != u32::from(g.ip) {
            return None;
        }
    }
    let ttl = f[IPV4_TTL];
    let dst = be32(f, IPV4_DST);
    if ttl <= 1 || dst == u32::from(tables.gateway_ip) {
        return None;
    }
    let hdr: &[u8; IPV4_HDR] = f[IPV4..L4].try_into().ok()?;
    if checksum::ipv4_header_checksum(hdr) != 0 {
        return None;
    }
    let key = FlowKey { src, dst, sport: be16(f, L4_SRC_PORT), dport: be16(f, L4_DST_PORT), proto };
    let h = if hint.hash != Hint::NONE.hash { hint.hash } else { ctx.ct.hash(&key) };
    let (idx, dir, other) = ctx.ct.lookup_other(&key, h, hint.slot)?;
    let e = ctx.ct.entry(idx);
    let word = e.state_word();
    // An unanswered UDP flow's packets in its own direction change nothing but its idle time
    // (one-way streams: telemetry, logs, a load test's generator). The state byte is compared,
    // not decoded: decoding it costs a few instructions per packet as the states grow.
    let steady = word.state_is(CtState::TcpEstablished)
        || word.state_is(CtState::UdpReplied)
        || (word.state_is(CtState::UdpUnreplied) && dir == Dir::Orig);
    if !steady
        || (dir == Dir::Reply && !word.has(flags::SEEN_REPLY))
        || e.policy_epoch() != tables.policy.epoch
        || word.verdict() != policy::VERDICT_ALLOW
    {
        return None;
    }
    // Where it goes: the translated tuple, then its route.
    let nat = word.has(flags::DNAT | flags::SNAT);
    // The other direction's key, reversed: this packet as it leaves.
    let to = if nat { other.reverse() } else { key };
    if !route::is_unicast(to.dst_ip()) {
        return None;
    }
    let hop = *tables.route(to.dst_ip())?;
    if hop.tunnel != 0 && total > usize::from(tables.overlay.inner_mtu) {
        return None; // too big for its tunnel: the full way answers
    }
    let out = tables.port(hop.port)?;
    // Committed: from here the frame and the entry change exactly as the full path would.
    e.touch(ctx.now);
    // IPv4 header: addresses (if translated) and TTL - 1, one checksum fold.
    let mut ip_sum = Delta::new(be16(f, IPV4_CHECKSUM)).word(u16::from_be_bytes([ttl, proto]), u16::from_be_bytes([ttl - 1, proto]));
    f[IPV4_TTL] = ttl - 1;
    if nat {
        // The addresses' change, shared by the IPv4 header and the L4 pseudo-header.
        let addresses = Delta::ZERO.u32(key.src, to.src).u32(key.dst, to.dst);
        ip_sum = ip_sum.plus(addresses);
        put(f, IPV4_SRC, &to.src.to_be_bytes());
        put(f, IPV4_DST, &to.dst.to_be_bytes());
        put(f, L4_SRC_PORT, &to.ports_word().to_be_bytes());
        let at = if proto == IPPROTO_TCP { TCP_CHECKSUM } else { UDP_CHECKSUM };
        let change = addresses.u32(key.ports_word(), to.ports_word());
        if let Some(sum) = rewrite::l4_checksum(proto, be16(f, at), change) {
            put(f, at, &sum.to_be_bytes());
        }
    }
    put(f, IPV4_CHECKSUM, &ip_sum.finish().to_be_bytes());
    put(f, ETH_DST, &hop.dst_mac);
    put(f, ETH_SRC, &out.mac);
    Some(Verdict::Forward { port: hop.port, len })
}
