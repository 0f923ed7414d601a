//! ICMP errors: they pass only as part of a known connection that policy allows (what
//! netfilter calls RELATED), and errors about translated connections are translated back
//! (RFC 5508 section 6): a port unreachable or fragmentation needed from a backend reaches the
//! client as if the Service address had sent it, quoting the packet the client sent; and the
//! other way round.
//!
//! Contract of [`relate`]: the quoted packet's key (TCP, UDP, SCTP by ports; ICMP echo by
//! identifier; other protocols by addresses), reversed, is looked up in the connection table.
//! No such connection, or a quote too short to name one: dropped as
//! [`DropReason::IcmpErrorUnrelated`] (a forged error cannot reach a pod that policy isolates,
//! nor reset someone else's connection). A connection that policy now denies (judged again
//! after a policy change, as its own packets are): [`DropReason::PolicyDenied`]. Otherwise,
//! if the connection is translated, the outer addresses and the quoted header's addresses
//! and ports are rewritten to the other side's view, with the quoted IP header checksum, the
//! quoted UDP checksum (when quoted and set) and the ICMP checksum fixed, and the error is
//! counted in [`Counters::translated`]; errors about connections that are not translated pass
//! unchanged.
use crate::conntrack::{flags, Dir, FlowKey};
use crate::counters::Counter;
use crate::drop_reason::DropReason;
use crate::wire::checksum;
use crate::wire::{icmpv4, offsets, Icmpv4Packet, Ipv4Packet, ParsedFrame, UdpPacket, IPPROTO_ICMP, IPPROTO_UDP};

use super::{policy, Ctx};

/// What this stage did.
#[derive(Debug, Default)]
pub struct Counters {
    /// ICMP errors rewritten to the other side's view of their connection.
    pub translated: Counter,
}

/// The connection key of the packet an ICMP error quotes, with the offset of the quoted L4
/// header; None when the quote cannot name a connection.
#[inline]
fn quoted_key(buf: &[u8], len: usize, parsed: &ParsedFrame) -> Option<(FlowKey, usize)> {
    let buf = buf.get(..len)?; // the frame, not what the buffer held before it
    let inner = parsed.l4_offset as usize + icmpv4::HEADER_LEN;
    if len < inner + 20 {
        return None;
    }
    let q_ip = Ipv4Packet::new_unchecked(&buf[inner..len]);
    let ihl = q_ip.header_len();
    if q_ip.version() != 4 || ihl < 20 || len < inner + ihl {
        return None;
    }
    let (src, dst, proto) = (u32::from(q_ip.src_addr()), u32::from(q_ip.dst_addr()), q_ip.protocol());
    let il4 = inner + ihl;
    let key = match proto {
        p if FlowKey::has_ports(p) => {
            // The ports are the first four bytes of TCP, UDP and SCTP alike; the quote may hold
            // no more. The UDP view reads them for all three.
            let ports = UdpPacket::new_unchecked(buf.get(il4..il4 + 4)?);
            FlowKey { src, dst, sport: ports.src_port(), dport: ports.dst_port(), proto }
        }
        IPPROTO_ICMP => {
            // An error about an echo (a ping that expired on its way): its identifier.
            let q = buf.get(il4..il4 + icmpv4::HEADER_LEN)?;
            if !matches!(q[0], icmpv4::TYPE_ECHO_REQUEST | icmpv4::TYPE_ECHO_REPLY) {
                return None;
            }
            FlowKey { src, dst, sport: u16::from_be_bytes([q[4], q[5]]), dport: 0, proto }
        }
        _ => FlowKey { src, dst, sport: 0, dport: 0, proto },
    };
    Some((key, il4))
}

/// Lets an ICMP error through if it belongs to a known, allowed connection, translating it
/// in place if that connection is translated (see the module contract).
pub fn relate(buf: &mut [u8], len: usize, parsed: &ParsedFrame, ctx: &Ctx) -> Result<(), DropReason> {
    let (quoted, il4) = quoted_key(buf, len, parsed).ok_or(DropReason::IcmpErrorUnrelated)?;
    let hit = ctx.ct.lookup(&quoted.reverse()).ok_or(DropReason::IcmpErrorUnrelated)?;
    let e = ctx.ct.entry(hit.idx);
    let word = e.state_word();
    policy::check_established(ctx, e, &hit.snap, word.verdict())?;
    // Only connections with ports are ever translated (masquerade and Services need them).
    if word.has(flags::DNAT | flags::SNAT) && FlowKey::has_ports(quoted.proto) {
        translate(buf, len, parsed, ctx, quoted, il4, &hit);
    }
    Ok(())
}

/// Rewrites an error about translated connection `hit` (quoting `quoted`, its L4 header at
/// `il4`) to the other side's view.
fn translate(buf: &mut [u8], len: usize, parsed: &ParsedFrame, ctx: &Ctx, quoted: FlowKey, il4: usize, hit: &crate::conntrack::Hit) {
    let outer_l4 = parsed.l4_offset as usize;
    let inner = outer_l4 + icmpv4::HEADER_LEN;
    let proto = quoted.proto;
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
