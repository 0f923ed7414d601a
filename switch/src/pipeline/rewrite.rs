//! Rewriting a packet on its way out: its addresses and ports (NAT) with incremental checksum
//! updates (RFC 1624) of the IPv4 header checksum, the TCP and UDP checksums (whose
//! pseudo-header covers the addresses), and SCTP's CRC32c, which covers only the SCTP packet
//! and is recomputed; then its MACs and TTL ([`forward_l2`]).
//!
//! Contract: `buf` holds a frame that [`crate::wire::parse_frame`] accepted with its L4 header
//! (`parsed.l4_parsed`); the caller has excluded SCTP fragments. A UDP checksum of 0 ("none")
//! stays 0; a computed 0 is sent as 0xffff. A forwarded frame keeps its length and payload.
use crate::conntrack::FlowKey;
use crate::tables::NextHop;
use crate::wire::checksum::{self, Delta};
use crate::wire::{offsets, EthernetFrame, Icmpv4Packet, Ipv4Packet, MacAddr, ParsedFrame, SctpPacket, TcpPacket, UdpPacket, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

/// Rewrites the packet's 5-tuple to `to` (protocol unchanged).
#[inline]
pub fn to_tuple(buf: &mut [u8], parsed: &ParsedFrame, to: &FlowKey) {
    let l4 = parsed.l4_offset as usize;
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[offsets::IPV4..l4]);
    let (old_src, old_dst) = (u32::from(ip.src_addr()), u32::from(ip.dst_addr()));
    // The addresses' change, which the IPv4 header and the TCP/UDP pseudo-header both cover.
    let addresses = Delta::ZERO.u32(old_src, to.src).u32(old_dst, to.dst);
    ip.set_checksum(Delta::new(ip.checksum()).plus(addresses).finish());
    ip.set_src_addr(to.src_ip());
    ip.set_dst_addr(to.dst_ip());
    if parsed.ip_protocol == IPPROTO_ICMP {
        // ICMP echo: the identifier (bytes 4-5) is its port, held in `sport` both ways; the
        // ICMP checksum covers no pseudo-header, so only the identifier's change enters it.
        let mut icmp = Icmpv4Packet::new_unchecked(&mut buf[l4..]);
        let old_id = icmp.echo_ident();
        icmp.set_echo_ident(to.sport);
        icmp.set_checksum(checksum::update_u16(icmp.checksum(), old_id, to.sport));
        return;
    }
    // TCP, UDP and SCTP all start with the two ports.
    let mut ports = UdpPacket::new_unchecked(&mut buf[l4..l4 + 4]);
    let (old_sport, old_dport) = (ports.src_port(), ports.dst_port());
    ports.set_src_port(to.sport);
    ports.set_dst_port(to.dport);
    let change = addresses.word(old_sport, to.sport).word(old_dport, to.dport);
    match parsed.ip_protocol {
        IPPROTO_TCP => {
            let mut tcp = TcpPacket::new_unchecked(&mut buf[l4..]);
            if let Some(sum) = l4_checksum(IPPROTO_TCP, tcp.checksum(), change) {
                tcp.set_checksum(sum);
            }
        }
        IPPROTO_UDP => {
            let mut udp = UdpPacket::new_unchecked(&mut buf[l4..]);
            if let Some(sum) = l4_checksum(IPPROTO_UDP, udp.checksum(), change) {
                udp.set_checksum(sum);
            }
        }
        IPPROTO_SCTP => {
            // CRC32c over the SCTP packet (no pseudo-header): recomputed for the new ports.
            let end = (l4 + parsed.l4_len as usize).min(buf.len());
            SctpPacket::new_unchecked(&mut buf[l4..end]).fill_checksum();
        }
        _ => {}
    }
}

/// The last rewrite of a forwarded frame: Ethernet addresses for the next hop (from the egress
/// port's MAC), and TTL − 1 with the header checksum updated for the 16-bit word (TTL,
/// protocol). The caller has checked that the TTL is above 1.
#[inline(always)]
pub fn forward_l2(buf: &mut [u8], hop: &NextHop, out_mac: &[u8; 6]) {
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..offsets::L4]);
    eth.set_dst_addr(MacAddr(hop.dst_mac));
    eth.set_src_addr(MacAddr(*out_mac));
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[offsets::IPV4..offsets::L4]);
    let (ttl, proto) = (ip.ttl(), ip.protocol());
    ip.set_ttl(ttl - 1);
    let sum = checksum::update_u16(ip.checksum(), u16::from_be_bytes([ttl, proto]), u16::from_be_bytes([ttl - 1, proto]));
    ip.set_checksum(sum);
}

/// A TCP or UDP checksum `old` after `change` (of the pseudo-header's addresses and of the
/// ports), or None for a UDP datagram sent without checksum (0 stays 0). A UDP sum that comes
/// out 0 is sent as 0xffff (RFC 768). Shared by the full path and the fast path.
#[inline(always)]
pub fn l4_checksum(proto: u8, old: u16, change: Delta) -> Option<u16> {
    if proto == IPPROTO_UDP && old == 0 {
        return None;
    }
    let sum = Delta::new(old).plus(change).finish();
    Some(if proto == IPPROTO_UDP && sum == 0 { 0xffff } else { sum })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{checksum, parse_frame};
    use etherparse::PacketBuilder;
    use std::net::Ipv4Addr;

    fn verify_l4(frame: &[u8]) {
        let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
        let h = ip.header();
        match p.transport.unwrap() {
            etherparse::TransportSlice::Tcp(t) => {
                assert_eq!(t.checksum(), t.to_header().calc_checksum_ipv4(&h.to_header(), t.payload()).unwrap());
            }
            etherparse::TransportSlice::Udp(u) => {
                assert_eq!(u.checksum(), u.to_header().calc_checksum_ipv4(&h.to_header(), u.payload()).unwrap());
            }
            _ => panic!(),
        }
        assert_eq!(checksum::internet_checksum(&frame[14..34]), 0, "IPv4 header checksum");
    }

    #[test]
    fn tcp_and_udp_rewrites_keep_checksums_valid() {
        let to = FlowKey::new(Ipv4Addr::new(172, 18, 0, 2), Ipv4Addr::new(10, 244, 0, 7), 40001, 8080, 6);
        let mut f = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4([10, 244, 0, 3], [10, 96, 0, 10], 64).tcp(5555, 80, 1, 100).syn().write(&mut f, b"hi").unwrap();
        let p = parse_frame(&f).unwrap();
        to_tuple(&mut f, &p, &to);
        verify_l4(&f);
        let q = parse_frame(&f).unwrap();
        assert_eq!((q.src_ip, q.dst_ip, q.src_port, q.dst_port), (to.src_ip(), to.dst_ip(), 40001, 8080));
        let mut u = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4([10, 244, 0, 3], [10, 96, 0, 10], 64).udp(5555, 53).write(&mut u, b"query").unwrap();
        let to = FlowKey { proto: 17, ..to };
        let p = parse_frame(&u).unwrap();
        to_tuple(&mut u, &p, &to);
        verify_l4(&u);
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let mut u = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4([10, 244, 0, 3], [10, 96, 0, 10], 64).udp(5555, 53).write(&mut u, b"q").unwrap();
        u[40..42].fill(0);
        let p = parse_frame(&u).unwrap();
        to_tuple(&mut u, &p, &FlowKey::new(Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8), 1, 2, 17));
        assert_eq!(&u[40..42], &[0, 0]);
    }
}
