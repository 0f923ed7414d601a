//! Fuzz target for `switch::wire::parse_frame`, the parser every received frame goes through.
//!
//! Contract checked on any input: `parse_frame` does not panic; when it accepts a frame, the
//! views it vouches for accept it too, agree with its summary, and none of their getters or
//! checksum routines panic; filling a checksum and verifying it again always succeeds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switch::wire::{
    parse_frame, ArpPacket, EthernetFrame, FrameKind, Icmpv4Packet, Ipv4Packet, ParsedFrame,
    TcpPacket, UdpPacket, ETHERTYPE_ARP, ETHERTYPE_IPV4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = parse_frame(data) else {
        return;
    };
    let eth = EthernetFrame::new_checked(data).expect("parse_frame accepted a short frame");
    assert_eq!(eth.ethertype(), p.ethertype);
    assert_eq!(eth.dst_addr(), p.dst_mac);
    assert_eq!(eth.src_addr(), p.src_mac);
    assert_eq!(usize::from(p.l3_offset), EthernetFrame::<&[u8]>::HEADER_LEN);
    let _ = (p.dst_mac.to_string(), p.src_mac.is_multicast());

    match p.kind {
        FrameKind::Arp => {
            assert_eq!(p.ethertype, ETHERTYPE_ARP);
            check_arp(eth.payload());
        }
        FrameKind::Ipv4 => {
            assert_eq!(p.ethertype, ETHERTYPE_IPV4);
            check_ipv4(data, eth.payload(), &p);
        }
        FrameKind::Other(et) => {
            assert_eq!(et, p.ethertype);
            assert!(et != ETHERTYPE_ARP && et != ETHERTYPE_IPV4);
        }
    }
});

fn check_arp(l3: &[u8]) {
    let arp = ArpPacket::new_checked(l3).expect("ARP accepted by parse_frame");
    let _ = (
        arp.hardware_type(),
        arp.protocol_type(),
        arp.hardware_len(),
        arp.protocol_len(),
        arp.operation(),
        arp.sender_hw_addr(),
        arp.sender_proto_addr(),
        arp.target_hw_addr(),
        arp.target_proto_addr(),
    );
}

fn check_ipv4(frame: &[u8], l3: &[u8], p: &ParsedFrame) {
    let ip = Ipv4Packet::new_checked(l3).expect("IPv4 accepted by parse_frame");
    let _ = (
        ip.version(),
        ip.ihl(),
        ip.dscp(),
        ip.ecn(),
        ip.ident(),
        ip.dont_frag(),
        ip.ttl(),
        ip.checksum(),
        ip.options(),
        ip.header(),
        ip.verify_checksum(),
    );
    assert_eq!(ip.protocol(), p.ip_protocol);
    assert_eq!(ip.src_addr(), p.src_ip);
    assert_eq!(ip.dst_addr(), p.dst_ip);
    assert_eq!(ip.is_fragment(), p.is_fragment);
    assert_eq!(ip.frag_offset(), p.fragment_offset);
    assert_eq!(ip.is_non_first_fragment(), p.fragment_offset != 0);
    assert!(p.is_fragment || !ip.more_frags());
    assert!(usize::from(ip.total_len()) <= l3.len());
    let l4 = ip.payload();
    assert_eq!(frame.get(p.l4_range()), Some(l4));

    // Filling the header checksum always makes it verify.
    let mut copy = l3.to_vec();
    let mut ip_mut = Ipv4Packet::new_checked(&mut copy[..]).expect("same bytes");
    ip_mut.fill_checksum();
    assert!(ip_mut.verify_checksum());

    if !p.l4_parsed {
        assert_eq!((p.src_port, p.dst_port, p.tcp_flags), (0, 0, 0));
        assert_eq!((p.icmp_type, p.icmp_code, p.icmp_id), (0, 0, 0));
        assert!(
            p.fragment_offset != 0
                || ![IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP].contains(&p.ip_protocol)
        );
        return;
    }
    assert_eq!(p.fragment_offset, 0);
    let (src, dst) = (p.src_ip, p.dst_ip);
    match p.ip_protocol {
        IPPROTO_TCP => {
            let tcp = TcpPacket::new_checked(l4).expect("TCP accepted by parse_frame");
            assert_eq!((tcp.src_port(), tcp.dst_port()), (p.src_port, p.dst_port));
            assert_eq!(tcp.flags(), p.tcp_flags);
            let _ = (
                tcp.seq_number(),
                tcp.ack_number(),
                tcp.data_offset(),
                tcp.window(),
                tcp.checksum(),
                tcp.urgent_ptr(),
                tcp.options(),
                tcp.payload(),
                tcp.verify_checksum(src, dst),
            );
            let mut copy = l4.to_vec();
            let mut tcp = TcpPacket::new_checked(&mut copy[..]).expect("same bytes");
            tcp.fill_checksum(src, dst);
            assert!(tcp.verify_checksum(src, dst));
        }
        IPPROTO_UDP => {
            let udp = UdpPacket::new_unchecked(l4);
            assert!(udp.check_header_len().is_ok());
            assert_eq!((udp.src_port(), udp.dst_port()), (p.src_port, p.dst_port));
            let _ = (udp.len(), udp.checksum());
            // A first fragment's UDP length covers the whole datagram, not this fragment.
            match UdpPacket::new_checked(l4) {
                Ok(udp) => {
                    let _ = (udp.payload(), udp.verify_checksum(src, dst));
                    let mut copy = l4.to_vec();
                    let mut udp = UdpPacket::new_checked(&mut copy[..]).expect("same bytes");
                    udp.fill_checksum(src, dst);
                    assert_ne!(udp.checksum(), 0);
                    assert!(udp.verify_checksum(src, dst));
                }
                Err(_) => assert!(p.is_fragment),
            }
        }
        IPPROTO_ICMP => {
            let icmp = Icmpv4Packet::new_checked(l4).expect("ICMP accepted by parse_frame");
            assert_eq!(
                (icmp.msg_type(), icmp.msg_code()),
                (p.icmp_type, p.icmp_code)
            );
            assert_eq!(
                if icmp.is_echo() { icmp.echo_ident() } else { 0 },
                p.icmp_id
            );
            let _ = (
                icmp.checksum(),
                icmp.rest_of_header(),
                icmp.echo_seq_no(),
                icmp.payload(),
                icmp.verify_checksum(),
            );
            let mut copy = l4.to_vec();
            let mut icmp = Icmpv4Packet::new_checked(&mut copy[..]).expect("same bytes");
            icmp.fill_checksum();
            assert!(icmp.verify_checksum());
        }
        other => panic!("l4_parsed for protocol {other}"),
    }
}
