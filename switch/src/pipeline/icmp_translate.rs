//! ICMP errors about translated connections, translated back (RFC 5508 section 6): a port
//! unreachable or fragmentation needed from a backend reaches the client as if the Service
//! address had sent it, quoting the packet the client sent; and the other way round.
//!
//! Contract: the quoted packet's key, reversed, is looked up in the connection table. If it
//! belongs to a translated connection, the outer addresses and the quoted header's addresses
//! and ports are rewritten to the other side's view, with the quoted IP header checksum, the
//! quoted UDP checksum (when quoted and set) and the ICMP checksum fixed, and the error is
//! counted in [`Counters::translated`]. Errors about connections that are not translated pass
//! unchanged; errors quoting nothing we know pass too (routing decides).
use crate::conntrack::{flags, Dir, FlowKey};
use crate::counters::Counter;
use crate::wire::checksum;
use crate::wire::{icmpv4, offsets, Icmpv4Packet, Ipv4Packet, ParsedFrame, UdpPacket, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

use super::Ctx;

/// What this stage did.
#[derive(Debug, Default)]
pub struct Counters {
    /// ICMP errors rewritten to the other side's view of their connection.
    pub translated: Counter,
}

/// Translates an ICMP error in place if it concerns a translated connection.
pub fn translate(buf: &mut [u8], len: usize, parsed: &ParsedFrame, ctx: &Ctx) {
    let outer_l4 = parsed.l4_offset as usize;
    let inner = outer_l4 + icmpv4::HEADER_LEN;
    if len < inner + 20 {
        return;
    }
    let q_ip = Ipv4Packet::new_unchecked(&buf[inner..len]);
    let ihl = q_ip.header_len();
    let proto = q_ip.protocol();
    if q_ip.version() != 4 || ihl < 20 || len < inner + ihl + 4 || !matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        return;
    }
    let il4 = inner + ihl;
    // The ports are the first four bytes of TCP, UDP and SCTP alike; the quote may hold no more.
    // The UDP view reads them for all three (only its port fields are touched here).
    let ports = UdpPacket::new_unchecked(&buf[il4..il4 + 4]);
    let quoted = FlowKey {
        src: u32::from(q_ip.src_addr()),
        dst: u32::from(q_ip.dst_addr()),
        sport: ports.src_port(),
        dport: ports.dst_port(),
        proto,
    };
    let Some(hit) = ctx.ct.lookup(&quoted.reverse()) else { return };
    if !ctx.ct.entry(hit.idx).state_word().has(flags::DNAT | flags::SNAT) {
        return;
    }
    // The quoted packet travelled in the other direction than the one its reverse matched.
    let (q, outer_src, outer_dst) = match hit.dir {
        Dir::Reply => (hit.snap.orig, hit.snap.orig.dst, hit.snap.orig.src),
        Dir::Orig => (hit.snap.reply, hit.snap.reply.dst, hit.snap.reply.src),
    };
    // Quoted IPv4 header: addresses, then its checksum in full (it may be truncated data we
    // never verified, so do not trust an incremental update).
    let mut q_ip = Ipv4Packet::new_unchecked(&mut buf[inner..len]);
    q_ip.set_src_addr(q.src_ip());
    q_ip.set_dst_addr(q.dst_ip());
    q_ip.fill_checksum();
    // Quoted ports, and the quoted UDP checksum when it is within the quote and set.
    let mut ports = UdpPacket::new_unchecked(&mut buf[il4..il4 + 4]);
    ports.set_src_port(q.sport);
    ports.set_dst_port(q.dport);
    if proto == IPPROTO_UDP && len >= il4 + 8 {
        let mut udp = UdpPacket::new_unchecked(&mut buf[il4..il4 + 8]);
        let mut sum = udp.checksum();
        if sum != 0 {
            sum = checksum::update_u32(sum, quoted.src, q.src);
            sum = checksum::update_u32(sum, quoted.dst, q.dst);
            sum = checksum::update_u16(sum, quoted.sport, q.sport);
            sum = checksum::update_u16(sum, quoted.dport, q.dport);
            udp.set_checksum(if sum == 0 { 0xffff } else { sum });
        }
    }
    // Outer IPv4 addresses with an incremental header checksum update.
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[offsets::IPV4..len]);
    let (old_src, old_dst) = (u32::from(ip.src_addr()), u32::from(ip.dst_addr()));
    let mut ip_sum = ip.checksum();
    ip_sum = checksum::update_u32(ip_sum, old_src, outer_src);
    ip_sum = checksum::update_u32(ip_sum, old_dst, outer_dst);
    ip.set_src_addr(outer_src.into());
    ip.set_dst_addr(outer_dst.into());
    ip.set_checksum(ip_sum);
    // ICMP checksum over the whole message, recomputed.
    let end = (outer_l4 + parsed.l4_len as usize).min(len);
    Icmpv4Packet::new_unchecked(&mut buf[outer_l4..end]).fill_checksum();
    ctx.stages.icmp_translate.translated.add(1);
}
