//! ICMP errors about translated connections, translated back (RFC 5508 section 6): a port
//! unreachable or fragmentation needed from a backend reaches the client as if the Service
//! address had sent it, quoting the packet the client sent; and the other way round.
//!
//! Contract: the quoted packet's key, reversed, is looked up in the connection table. If it
//! belongs to a translated connection, the outer addresses and the quoted header's addresses
//! and ports are rewritten to the other side's view, with the quoted IP header checksum, the
//! quoted UDP checksum (when quoted and set) and the ICMP checksum fixed. Errors about
//! connections that are not translated pass unchanged; errors quoting nothing we know pass too
//! (routing decides).
use crate::conntrack::{flags, ConnTable, Dir, FlowKey};
use crate::wire::{checksum, ParsedFrame, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

const IP: usize = 14;

/// Translates an ICMP error in place if it concerns a translated connection.
pub fn translate(buf: &mut [u8], len: usize, parsed: &ParsedFrame, ct: &ConnTable) {
    let outer_l4 = parsed.l4_offset as usize;
    let inner = outer_l4 + 8;
    if len < inner + 20 || buf[inner] >> 4 != 4 {
        return;
    }
    let ihl = ((buf[inner] & 0x0f) as usize) * 4;
    let proto = buf[inner + 9];
    if ihl < 20 || len < inner + ihl + 4 || !matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        return;
    }
    let g32 = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let g16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let il4 = inner + ihl;
    let quoted = FlowKey { src: g32(buf, inner + 12), dst: g32(buf, inner + 16), sport: g16(buf, il4), dport: g16(buf, il4 + 2), proto };
    let Some(hit) = ct.lookup(&quoted.reverse()) else { return };
    if ct.entry(hit.idx).flags() & (flags::DNAT | flags::SNAT) == 0 {
        return;
    }
    // The quoted packet travelled in the other direction than the one its reverse matched.
    let (q, outer_src, outer_dst) = match hit.dir {
        Dir::Reply => (hit.snap.orig, hit.snap.orig.dst, hit.snap.orig.src),
        Dir::Orig => (hit.snap.reply, hit.snap.reply.dst, hit.snap.reply.src),
    };
    // Quoted IPv4 header: addresses, then its checksum in full (it may be truncated data we
    // never verified, so do not trust an incremental update).
    buf[inner + 12..inner + 16].copy_from_slice(&q.src.to_be_bytes());
    buf[inner + 16..inner + 20].copy_from_slice(&q.dst.to_be_bytes());
    buf[inner + 10..inner + 12].fill(0);
    let s = checksum::internet_checksum(&buf[inner..inner + ihl]);
    buf[inner + 10..inner + 12].copy_from_slice(&s.to_be_bytes());
    // Quoted ports, and the quoted UDP checksum when it is within the quote and set.
    let (old_sport, old_dport) = (quoted.sport, quoted.dport);
    buf[il4..il4 + 2].copy_from_slice(&q.sport.to_be_bytes());
    buf[il4 + 2..il4 + 4].copy_from_slice(&q.dport.to_be_bytes());
    if proto == IPPROTO_UDP && len >= il4 + 8 {
        let mut sum = g16(buf, il4 + 6);
        if sum != 0 {
            sum = checksum::update_u32(sum, quoted.src, q.src);
            sum = checksum::update_u32(sum, quoted.dst, q.dst);
            sum = checksum::update_u16(sum, old_sport, q.sport);
            sum = checksum::update_u16(sum, old_dport, q.dport);
            buf[il4 + 6..il4 + 8].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
        }
    }
    // Outer IPv4 addresses with an incremental header checksum update.
    let (old_src, old_dst) = (g32(buf, IP + 12), g32(buf, IP + 16));
    let mut ip_sum = g16(buf, IP + 10);
    ip_sum = checksum::update_u32(ip_sum, old_src, outer_src);
    ip_sum = checksum::update_u32(ip_sum, old_dst, outer_dst);
    buf[IP + 12..IP + 16].copy_from_slice(&outer_src.to_be_bytes());
    buf[IP + 16..IP + 20].copy_from_slice(&outer_dst.to_be_bytes());
    buf[IP + 10..IP + 12].copy_from_slice(&ip_sum.to_be_bytes());
    // ICMP checksum over the whole message, recomputed.
    let end = (outer_l4 + parsed.l4_len as usize).min(len);
    buf[outer_l4 + 2..outer_l4 + 4].fill(0);
    let s = checksum::internet_checksum(&buf[outer_l4..end]);
    buf[outer_l4 + 2..outer_l4 + 4].copy_from_slice(&s.to_be_bytes());
    let _ = IPPROTO_ICMP;
}
