//! One-pass validation and summary of a received Ethernet frame.
//!
//! Contract of [`parse_frame`]: it never panics and never allocates, whatever the bytes. It
//! returns `Ok` when the frame is
//! - Ethernet with an ethertype other than ARP and IPv4 ([`FrameKind::Other`]: nothing past the
//!   Ethernet header is looked at; the caller decides whether to drop it);
//! - a valid Ethernet/IPv4 ARP packet ([`FrameKind::Arp`]), see [`ArpPacket::new_checked`];
//! - a valid IPv4 packet ([`FrameKind::Ipv4`]), see [`Ipv4Packet::new_checked`] (the header
//!   checksum is not verified here), whose TCP, UDP or ICMP header, when present, is valid too.
//!   For other IP protocols and for non-first fragments, the L4 fields stay zero. The first
//!   fragment of a fragmented datagram must hold the whole L4 header; its UDP length field is
//!   not compared with the fragment.
//!
//! Everything else is an `Err` with the first problem found, which the dataplane counts as a
//! drop reason. L4 checksums are not verified (veth frames may carry partial checksums).

use std::net::Ipv4Addr;

use super::ethernet::{EthernetFrame, MacAddr, HEADER_LEN as ETHERNET_HEADER_LEN};
use super::{
    ArpPacket, Icmpv4Packet, Ipv4Packet, TcpPacket, UdpPacket, WireError, ETHERTYPE_ARP,
    ETHERTYPE_IPV4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};

/// What the frame carries, by ethertype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Ethernet/IPv4 ARP, validated.
    Arp,
    /// IPv4, validated with its L4 header.
    Ipv4,
    /// Any other ethertype (IPv6, VLAN-tagged, LLDP, ...), not looked into.
    Other(u16),
}

/// The key fields and offsets of a validated frame.
///
/// Offsets are from the start of the frame. Fields that do not apply are zero. Every offset and
/// length fits in `u16`: an IPv4 header is at most 60 bytes and an IPv4 packet at most 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedFrame {
    pub kind: FrameKind,
    pub ethertype: u16,
    pub dst_mac: MacAddr,
    pub src_mac: MacAddr,
    /// Start of the ARP or IPv4 header: always 14.
    pub l3_offset: u16,
    /// IPv4: end of the IPv4 header (start of the L4 header or of the fragment's data).
    /// Zero for ARP and other ethertypes.
    pub l4_offset: u16,
    /// IPv4: bytes from `l4_offset` to the IPv4 total length (Ethernet padding excluded).
    pub l4_len: u16,
    /// IPv4 protocol number (zero for ARP and others).
    pub ip_protocol: u8,
    /// IPv4 source address (unspecified for ARP and others).
    pub src_ip: Ipv4Addr,
    /// IPv4 destination address (unspecified for ARP and others).
    pub dst_ip: Ipv4Addr,
    /// IPv4 packet that is a fragment (first or not).
    pub is_fragment: bool,
    /// IPv4 fragment offset in bytes: non-zero for non-first fragments, which carry no L4
    /// header.
    pub fragment_offset: u16,
    /// A TCP, UDP or ICMP header was validated and the L4 fields below are filled.
    pub l4_parsed: bool,
    /// TCP or UDP source port.
    pub src_port: u16,
    /// TCP or UDP destination port.
    pub dst_port: u16,
    /// TCP flag byte (see [`tcp_flags`](super::tcp_flags)).
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// ICMP echo request/reply identifier.
    pub icmp_id: u16,
    /// Type of the first chunk of an SCTP packet (see [`sctp::chunk`](super::sctp::chunk));
    /// 0 (DATA) when not SCTP or when the packet has no chunk.
    pub sctp_chunk: u8,
}

impl ParsedFrame {
    /// The fields of a frame with nothing beyond its Ethernet header parsed.
    #[inline]
    fn ethernet_only(ethertype: u16, dst_mac: MacAddr, src_mac: MacAddr) -> Self {
        ParsedFrame {
            kind: FrameKind::Other(ethertype),
            ethertype,
            dst_mac,
            src_mac,
            l3_offset: ETHERNET_HEADER_LEN as u16,
            l4_offset: 0,
            l4_len: 0,
            ip_protocol: 0,
            src_ip: Ipv4Addr::UNSPECIFIED,
            dst_ip: Ipv4Addr::UNSPECIFIED,
            is_fragment: false,
            fragment_offset: 0,
            l4_parsed: false,
            src_port: 0,
            dst_port: 0,
            tcp_flags: 0,
            icmp_type: 0,
            icmp_code: 0,
            icmp_id: 0,
            sctp_chunk: 0,
        }
    }

    /// Byte range of the IPv4 payload in the frame (empty for ARP and others).
    #[inline]
    pub fn l4_range(&self) -> core::ops::Range<usize> {
        let start = usize::from(self.l4_offset);
        start..start + usize::from(self.l4_len)
    }
}

/// Validates a received frame and returns its summary; see the module doc.
#[inline(always)]
pub fn parse_frame(buf: &[u8]) -> Result<ParsedFrame, WireError> {
    let eth = EthernetFrame::new_checked(buf)?;
    let ethertype = eth.ethertype();
    let mut p = ParsedFrame::ethernet_only(ethertype, eth.dst_addr(), eth.src_addr());
    match ethertype {
        ETHERTYPE_ARP => {
            ArpPacket::new_checked(eth.payload())?;
            p.kind = FrameKind::Arp;
        }
        ETHERTYPE_IPV4 => parse_ipv4(eth.payload(), &mut p)?,
        _ => {}
    }
    Ok(p)
}

#[inline(always)]
fn parse_ipv4(l3: &[u8], p: &mut ParsedFrame) -> Result<(), WireError> {
    let ip = Ipv4Packet::new_checked(l3)?;
    let l4 = ip.payload();
    p.kind = FrameKind::Ipv4;
    p.ip_protocol = ip.protocol();
    p.src_ip = ip.src_addr();
    p.dst_ip = ip.dst_addr();
    p.is_fragment = ip.is_fragment();
    p.fragment_offset = ip.frag_offset();
    // Both fit: header_len <= 60, and l4.len() <= total_len <= 65535.
    p.l4_offset = (ETHERNET_HEADER_LEN + ip.header_len()) as u16;
    p.l4_len = l4.len() as u16;
    if ip.is_non_first_fragment() {
        return Ok(());
    }
    match p.ip_protocol {
        IPPROTO_TCP => {
            let tcp = TcpPacket::new_checked(l4)?;
            p.src_port = tcp.src_port();
            p.dst_port = tcp.dst_port();
            p.tcp_flags = tcp.flags();
            p.l4_parsed = true;
        }
        IPPROTO_UDP => {
            let udp = UdpPacket::new_unchecked(l4);
            if ip.more_frags() {
                // First fragment: the length field covers the whole datagram.
                udp.check_header_len()?;
            } else {
                udp.check()?;
            }
            p.src_port = udp.src_port();
            p.dst_port = udp.dst_port();
            p.l4_parsed = true;
        }
        IPPROTO_ICMP => {
            let icmp = Icmpv4Packet::new_checked(l4)?;
            p.icmp_type = icmp.msg_type();
            p.icmp_code = icmp.msg_code();
            if icmp.is_echo() {
                p.icmp_id = icmp.echo_ident();
            }
            p.l4_parsed = true;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{tcp_flags, ETHERTYPE_IPV6, IPPROTO_SCTP};

    const MAC1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const MAC2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const IP1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const IP2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// Broadcast ARP request "who-has 10.0.0.2 tell 10.0.0.1", padded to 60 bytes.
    const ARP_FRAME: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x01, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02, //
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    /// 02::01 -> 02::02, 10.0.0.1:12345 -> 10.0.0.2:53 UDP "hello" (IP csum 0x0a84, UDP 0x7791).
    const UDP_FRAME: [u8; 47] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, //
        0x45, 0x00, 0x00, 0x21, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x0a, 0x84, //
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, //
        0x30, 0x39, 0x00, 0x35, 0x00, 0x0d, 0x77, 0x91, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
    ];

    /// TCP SYN 10.0.0.1:40000 -> 10.0.0.2:80 with 20 option bytes (IP csum 0x67ca, TCP 0x1db8).
    const TCP_FRAME: [u8; 74] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, //
        0x45, 0x00, 0x00, 0x3c, 0xbe, 0xef, 0x40, 0x00, 0x40, 0x06, 0x67, 0xca, //
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, //
        0x9c, 0x40, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00, //
        0xa0, 0x02, 0xfa, 0xf0, 0x1d, 0xb8, 0x00, 0x00, //
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    /// ICMP echo request id 0x1234 seq 1, 16 data bytes (IP csum 0x26ce, ICMP 0x2d0a).
    const ICMP_FRAME: [u8; 58] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, //
        0x45, 0x00, 0x00, 0x2c, 0x00, 0x01, 0x40, 0x00, 0x40, 0x01, 0x26, 0xce, //
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, //
        0x08, 0x00, 0x2d, 0x0a, 0x12, 0x34, 0x00, 0x01, //
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e,
        0x1f,
    ];

    fn with_ip_fixup(frame: &[u8], f: impl FnOnce(&mut Ipv4Packet<&mut [u8]>)) -> Vec<u8> {
        let mut v = frame.to_vec();
        let mut ip = Ipv4Packet::new_unchecked(&mut v[14..]);
        f(&mut ip);
        ip.fill_checksum();
        v
    }

    #[test]
    fn arp_request() {
        let p = parse_frame(&ARP_FRAME).unwrap();
        assert_eq!(p.kind, FrameKind::Arp);
        assert_eq!(p.ethertype, ETHERTYPE_ARP);
        assert_eq!(p.dst_mac, MacAddr::BROADCAST);
        assert_eq!(p.src_mac, MAC1);
        assert_eq!(p.l3_offset, 14);
        assert_eq!((p.l4_offset, p.l4_len, p.ip_protocol), (0, 0, 0));
        assert_eq!(
            (p.src_ip, p.dst_ip),
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
        );
        assert!(!p.l4_parsed);
        // Without padding too.
        assert_eq!(parse_frame(&ARP_FRAME[..42]).unwrap().kind, FrameKind::Arp);
    }

    #[test]
    fn udp() {
        let p = parse_frame(&UDP_FRAME).unwrap();
        assert_eq!(p.kind, FrameKind::Ipv4);
        assert_eq!((p.dst_mac, p.src_mac), (MAC2, MAC1));
        assert_eq!((p.l3_offset, p.l4_offset, p.l4_len), (14, 34, 13));
        assert_eq!(p.ip_protocol, IPPROTO_UDP);
        assert_eq!((p.src_ip, p.dst_ip), (IP1, IP2));
        assert_eq!((p.src_port, p.dst_port), (12345, 53));
        assert!(p.l4_parsed && !p.is_fragment);
        assert_eq!((p.tcp_flags, p.icmp_type, p.icmp_id), (0, 0, 0));
        assert_eq!(&UDP_FRAME[p.l4_range()], &UDP_FRAME[34..]);
        let ip = Ipv4Packet::new_checked(&UDP_FRAME[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert!(UdpPacket::new_checked(ip.payload())
            .unwrap()
            .verify_checksum(IP1, IP2));
    }

    #[test]
    fn udp_with_ethernet_padding() {
        let mut buf = [0u8; 60];
        buf[..47].copy_from_slice(&UDP_FRAME);
        let p = parse_frame(&buf).unwrap();
        assert_eq!(p.l4_len, 13);
        assert_eq!(p.l4_range(), 34..47);
    }

    #[test]
    fn tcp_syn() {
        let p = parse_frame(&TCP_FRAME).unwrap();
        assert_eq!(p.kind, FrameKind::Ipv4);
        assert_eq!(p.ip_protocol, IPPROTO_TCP);
        assert_eq!((p.l4_offset, p.l4_len), (34, 40));
        assert_eq!((p.src_port, p.dst_port), (40000, 80));
        assert_eq!(p.tcp_flags, tcp_flags::SYN);
        assert!(p.l4_parsed);
        let ip = Ipv4Packet::new_checked(&TCP_FRAME[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert!(TcpPacket::new_checked(ip.payload())
            .unwrap()
            .verify_checksum(IP1, IP2));
    }

    #[test]
    fn icmp_echo() {
        let p = parse_frame(&ICMP_FRAME).unwrap();
        assert_eq!(p.ip_protocol, IPPROTO_ICMP);
        assert_eq!((p.icmp_type, p.icmp_code, p.icmp_id), (8, 0, 0x1234));
        assert_eq!((p.src_port, p.dst_port), (0, 0));
        assert_eq!(p.l4_len, 24);
        let ip = Ipv4Packet::new_checked(&ICMP_FRAME[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert!(Icmpv4Packet::new_checked(ip.payload())
            .unwrap()
            .verify_checksum());
    }

    #[test]
    fn icmp_error_has_no_id() {
        let mut v = ICMP_FRAME.to_vec();
        v[34] = 3; // destination unreachable
        v[35] = 1;
        let p = parse_frame(&v).unwrap();
        assert_eq!((p.icmp_type, p.icmp_code, p.icmp_id), (3, 1, 0));
    }

    #[test]
    fn other_ethertypes_are_reported() {
        for et in [ETHERTYPE_IPV6, 0x8100, 0x88cc, 0x0042] {
            let mut v = UDP_FRAME.to_vec();
            v[12..14].copy_from_slice(&et.to_be_bytes());
            let p = parse_frame(&v).unwrap();
            assert_eq!(p.kind, FrameKind::Other(et));
            assert_eq!(p.ethertype, et);
            assert_eq!(p.src_ip, Ipv4Addr::UNSPECIFIED);
            // Nothing past Ethernet is looked at.
            assert_eq!(parse_frame(&v[..14]).unwrap().kind, FrameKind::Other(et));
        }
    }

    #[test]
    fn other_ip_protocol_is_ok_without_l4() {
        let v = with_ip_fixup(&UDP_FRAME, |ip| ip.set_protocol(IPPROTO_SCTP));
        let p = parse_frame(&v).unwrap();
        assert_eq!(p.ip_protocol, IPPROTO_SCTP);
        assert!(!p.l4_parsed);
        assert_eq!(
            (p.src_port, p.dst_port, p.l4_offset, p.l4_len),
            (0, 0, 34, 13)
        );
    }

    #[test]
    fn non_first_fragment_has_no_l4() {
        // Offset 8 bytes: the "UDP header" bytes are data, even garbage ones.
        let mut v = with_ip_fixup(&UDP_FRAME, |ip| ip.set_frag_offset(8));
        v[38] = 0; // would be a bad UDP length
        v[39] = 0;
        let p = parse_frame(&v).unwrap();
        assert!(p.is_fragment && !p.l4_parsed);
        assert_eq!(p.fragment_offset, 8);
        assert_eq!((p.src_port, p.dst_port), (0, 0));
        assert_eq!((p.src_ip, p.dst_ip, p.ip_protocol), (IP1, IP2, IPPROTO_UDP));
    }

    #[test]
    fn first_fragment_has_ports() {
        // UDP length 1000 but only 13 bytes in this fragment.
        let mut v = with_ip_fixup(&UDP_FRAME, |ip| {
            ip.set_dont_frag(false);
            ip.set_more_frags(true);
        });
        v[38..40].copy_from_slice(&1000u16.to_be_bytes());
        let p = parse_frame(&v).unwrap();
        assert!(p.is_fragment && p.l4_parsed);
        assert_eq!(p.fragment_offset, 0);
        assert_eq!((p.src_port, p.dst_port), (12345, 53));
        // Without MF the same length field is an error.
        v[20] = 0x40;
        assert_eq!(parse_frame(&v).unwrap_err(), WireError::BadL4Length);
        // A first fragment too short for a TCP header is refused.
        let v = with_ip_fixup(&TCP_FRAME[..44], |ip| {
            ip.set_total_len(30);
            ip.set_more_frags(true);
        });
        assert_eq!(parse_frame(&v).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn malformed_l3_and_l4() {
        let mut v = UDP_FRAME.to_vec();
        v[14] = 0x65;
        assert_eq!(parse_frame(&v).unwrap_err(), WireError::BadIpVersion);
        let mut v = UDP_FRAME.to_vec();
        v[14] = 0x44;
        assert_eq!(parse_frame(&v).unwrap_err(), WireError::BadIhl);
        let mut v = UDP_FRAME.to_vec();
        v[16..18].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(parse_frame(&v).unwrap_err(), WireError::BadTotalLength);
        let mut v = UDP_FRAME.to_vec();
        v[38..40].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(parse_frame(&v).unwrap_err(), WireError::BadL4Length);
        let mut v = TCP_FRAME.to_vec();
        v[46] = 0x40;
        assert_eq!(parse_frame(&v).unwrap_err(), WireError::BadTcpDataOffset);
        let mut v = ARP_FRAME.to_vec();
        v[15] = 6;
        assert_eq!(parse_frame(&v).unwrap_err(), WireError::BadArp);
        // ICMP with fewer than 8 bytes of message.
        let v = with_ip_fixup(&ICMP_FRAME, |ip| ip.set_total_len(27));
        assert_eq!(parse_frame(&v).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn truncated_at_every_length() {
        let frames: [&[u8]; 4] = [&ARP_FRAME[..42], &UDP_FRAME, &TCP_FRAME, &ICMP_FRAME];
        for frame in frames {
            for len in 0..frame.len() {
                // Short of Ethernet, of the ARP/IPv4 header, of the total length or of the L4
                // header: always Truncated.
                let r = parse_frame(&frame[..len]);
                assert_eq!(r.map(|p| p.kind), Err(WireError::Truncated), "len {len}");
            }
            assert!(parse_frame(frame).is_ok());
        }
    }

    // --- Randomised checks: no panic, and agreement with etherparse ---


    /// How a cross-checked frame ended, to show the random test reached every path.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    enum Outcome {
        NotIpv4,
        BothErr,
        Exempt,
        Fragment,
        L4Compared,
        NoL4,
    }

    /// Checks one frame against etherparse where both define the result.
    fn cross_check(buf: &[u8]) -> Outcome {
        let ours = parse_frame(buf);
        let theirs = etherparse::SlicedPacket::from_ethernet(buf);
        if buf.len() < 14 {
            assert_eq!(ours, Err(WireError::Truncated));
            assert!(theirs.is_err());
            return Outcome::NotIpv4;
        }
        let ethertype = u16::from_be_bytes([buf[12], buf[13]]);
        if ethertype != ETHERTYPE_IPV4 {
            // etherparse 0.16 does not parse ARP; it does parse VLAN and IPv6, which we leave
            // to the caller.
            if ethertype != ETHERTYPE_ARP {
                assert_eq!(ours.unwrap().kind, FrameKind::Other(ethertype));
            }
            return Outcome::NotIpv4;
        }
        let ip = &buf[14..];
        // etherparse parses IPsec AH (51) as an IPv4 extension header; we do not.
        if ip.len() >= 10 && ip[9] == 51 {
            return Outcome::Exempt;
        }
        let ours_fragment = ip.len() >= 8 && (u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff) != 0;
        let (ours, theirs) = match (ours, theirs) {
            (Ok(o), Ok(t)) => (o, t),
            (Err(_), Err(_)) => return Outcome::BothErr,
            (Err(WireError::BadL4Length), Ok(t)) if matches!(t.transport, Some(etherparse::TransportSlice::Udp(ref u)) if u.length() == 0) =>
            {
                // UDP length 0 (IPv6 jumbogram convention) is accepted by etherparse only.
                return Outcome::Exempt;
            }
            // We also check the L4 header of first fragments.
            (Err(_), Ok(_)) if ours_fragment => return Outcome::Exempt,
            // etherparse checks the length of ICMP timestamp messages (types 13, 14); we read
            // only the 8-byte header of any ICMP type.
            (Ok(o), Err(_)) if o.ip_protocol == IPPROTO_ICMP && matches!(o.icmp_type, 13 | 14) => {
                return Outcome::Exempt;
            }
            (o, t) => panic!("disagree on {buf:02x?}: ours {o:?}, etherparse {t:?}"),
        };
        let Some(etherparse::NetSlice::Ipv4(ip4)) = &theirs.net else {
            panic!("etherparse found no IPv4 in {buf:02x?}");
        };
        let h = ip4.header();
        assert_eq!(ours.src_ip, h.source_addr());
        assert_eq!(ours.dst_ip, h.destination_addr());
        assert_eq!(ours.ip_protocol, h.protocol().0);
        assert_eq!(usize::from(ours.l4_len), ip4.payload().payload.len());
        assert_eq!(ours.is_fragment, h.is_fragmenting_payload());
        if ours.is_fragment {
            return Outcome::Fragment;
        }
        match &theirs.transport {
            Some(etherparse::TransportSlice::Tcp(t)) => {
                assert!(ours.l4_parsed);
                assert_eq!(
                    (ours.src_port, ours.dst_port),
                    (t.source_port(), t.destination_port())
                );
                assert_eq!(ours.tcp_flags, buf[usize::from(ours.l4_offset) + 13]);
                assert_eq!(t.syn(), ours.tcp_flags & tcp_flags::SYN != 0);
                Outcome::L4Compared
            }
            Some(etherparse::TransportSlice::Udp(u)) => {
                assert!(ours.l4_parsed);
                assert_eq!(
                    (ours.src_port, ours.dst_port),
                    (u.source_port(), u.destination_port())
                );
                Outcome::L4Compared
            }
            Some(etherparse::TransportSlice::Icmpv4(i)) => {
                assert!(ours.l4_parsed);
                assert_eq!((ours.icmp_type, ours.icmp_code), (i.type_u8(), i.code_u8()));
                Outcome::L4Compared
            }
            // etherparse also parses ICMPv6 (58) over IPv4; for us it is an unparsed protocol.
            Some(etherparse::TransportSlice::Icmpv6(_)) | None => {
                assert!(!ours.l4_parsed);
                assert_eq!((ours.src_port, ours.dst_port), (0, 0));
                Outcome::NoL4
            }
        }
    }

    #[test]
    fn goldens_agree_with_etherparse() {
        for frame in [&UDP_FRAME[..], &TCP_FRAME[..], &ICMP_FRAME[..]] {
            let theirs = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
            assert!(theirs.transport.is_some());
            assert_eq!(cross_check(frame), Outcome::L4Compared);
        }
    }

    #[test]
    fn mutated_frames_never_panic_and_agree_with_etherparse() {
        let goldens: [&[u8]; 4] = [&ARP_FRAME, &UDP_FRAME, &TCP_FRAME, &ICMP_FRAME];
        let mut rng = fastrand::Rng::with_seed(0x5eed_1234_abcd_ef01);
        let mut buf = [0u8; 128];
        let mut seen = std::collections::HashMap::new();
        for round in 0..200_000 {
            let g = goldens[round % goldens.len()];
            let mut len = g.len();
            buf[..len].copy_from_slice(g);
            // Flip 1 to 4 bytes, mostly in the headers (where the parser looks).
            for _ in 0..=rng.usize(..4) {
                let at = if rng.u64(..) & 3 == 0 {
                    rng.usize(..len)
                } else {
                    12 + rng.usize(..40)
                };
                buf[at.min(len - 1)] = rng.u64(..) as u8;
            }
            // Sometimes cut the frame or extend it with trailing bytes.
            match rng.usize(..8) {
                0 => len = rng.usize(..=len),
                1 => len = (len + rng.usize(..32)).min(buf.len()),
                _ => {}
            }
            *seen.entry(cross_check(&buf[..len])).or_insert(0u32) += 1;
        }
        // Every compared path was taken often enough to mean something (exemptions are rare).
        for outcome in [
            Outcome::NotIpv4,
            Outcome::BothErr,
            Outcome::Fragment,
            Outcome::L4Compared,
            Outcome::NoL4,
        ] {
            let n = seen.get(&outcome).copied().unwrap_or(0);
            assert!(n >= 100, "{outcome:?} seen {n} times: {seen:?}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut buf = [0u8; 100];
        for _ in 0..100_000 {
            let len = rng.usize(..=buf.len());
            for b in &mut buf[..len] {
                *b = rng.u64(..) as u8;
            }
            // Steer half of them into the IPv4 path.
            if len >= 15 && rng.u64(..) & 1 == 0 {
                buf[12] = 0x08;
                buf[13] = 0x00;
                buf[14] = 0x45;
            }
            let _ = parse_frame(&buf[..len]);
        }
    }
}
