//! Scenario tests: real frames (built with etherparse) through [`process`], no kernel.
use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use super::test_worker::Counted;
use super::*;
use crate::conntrack::KeyHasher;
use crate::tables::{NextHop, PortConfig, PortKind, SourceGuard};
use crate::wire::checksum;

const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 10);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const A_MAC: [u8; 6] = [0x0a, 0x58, 10, 244, 0, 10];
const B_MAC: [u8; 6] = [0x0a, 0x58, 10, 244, 0, 11];
const PORT_A_MAC: [u8; 6] = [0xee, 0, 0, 0, 0, 1];
const PORT_B_MAC: [u8; 6] = [0xee, 0, 0, 0, 0, 2];
const HOST_PORT_MAC: [u8; 6] = [0xee, 0, 0, 0, 0, 3];
const NODE_MAC: [u8; 6] = [0x0a, 0x58, 172, 18, 0, 2];

fn tables() -> Tables {
    let mut t = Tables::new(GW);
    t.set_port(0, Some(PortConfig { name: "node".into(), kind: PortKind::Host, mac: HOST_PORT_MAC, source_guard: None }));
    t.set_port(
        1,
        Some(PortConfig { name: "x/a".into(), kind: PortKind::Pod, mac: PORT_A_MAC, source_guard: Some(SourceGuard { mac: A_MAC, ip: A_IP }) }),
    );
    t.set_port(
        2,
        Some(PortConfig { name: "x/b".into(), kind: PortKind::Pod, mac: PORT_B_MAC, source_guard: Some(SourceGuard { mac: B_MAC, ip: B_IP }) }),
    );
    t.routes.insert(u32::from(A_IP), 32, NextHop::direct(1, A_MAC));
    t.routes.insert(u32::from(B_IP), 32, NextHop::direct(2, B_MAC));
    t.routes.insert(u32::from(NODE_IP), 32, NextHop::direct(0, NODE_MAC));
    t
}

fn udp(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src.octets(), dst.octets(), ttl).udp(40000, 81);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn arp(op: u16, sender_mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip.octets());
    f.resize(60, 0); // Ethernet minimum, padded
    f
}

/// Runs `frame` through the pipeline in a 2 KiB buffer, as a UMEM frame would hold it, with a
/// fresh connection table and fresh counters.
fn run(frame: &[u8], in_port: PortId, t: &Tables) -> (Verdict, Vec<u8>, Counted) {
    let ct = ConnTable::new(1024, KeyHasher::new(1));
    run_ct(frame, in_port, t, &ct)
}

/// [`run`] with a given connection table (for scenarios over several packets).
fn run_ct(frame: &[u8], in_port: PortId, t: &Tables, ct: &ConnTable) -> (Verdict, Vec<u8>, Counted) {
    let mut buf = vec![0u8; 2048];
    buf[..frame.len()].copy_from_slice(frame);
    let c = Counted::new();
    let v = c.process(&c.ctx(t, ct, ct.now_ms()), &mut buf, frame.len(), in_port);
    let len = match v {
        Verdict::Forward { len, .. } => len,
        Verdict::Drop(_) => frame.len(),
    };
    buf.truncate(len);
    (v, buf, c)
}

/// Asserts that `frame` is dropped for `reason` and that this is all the counters say.
#[track_caller]
fn dropped(frame: &[u8], in_port: PortId, t: &Tables, reason: DropReason, stages: &[(&str, u64)]) {
    let (v, _, c) = run(frame, in_port, t);
    assert_eq!(v, Verdict::Drop(reason));
    c.assert(&[(reason, 1)], stages);
}

fn ip_header_ok(frame: &[u8]) -> bool {
    let ihl = ((frame[14] & 0xf) as usize) * 4;
    checksum::internet_checksum(&frame[14..14 + ihl]) == 0
}

#[test]
fn arp_request_for_the_gateway_is_answered_in_place() {
    let t = tables();
    let (v, out, c) = run(&arp(1, A_MAC, A_IP, GW), 1, &t);
    assert_eq!(v, Verdict::Forward { port: 1, len: 60 });
    c.assert(&[], &[("arp.replies", 1), ("answered", 1)]);
    assert_eq!(&out[0..6], &A_MAC);
    assert_eq!(&out[6..12], &PORT_A_MAC);
    assert_eq!(&out[20..22], &[0, 2], "operation reply");
    assert_eq!(&out[22..28], &PORT_A_MAC, "sender MAC is the port's");
    assert_eq!(&out[28..32], &GW.octets());
    assert_eq!(&out[32..38], &A_MAC);
    assert_eq!(&out[38..42], &A_IP.octets());
}

#[test]
fn arp_edges() {
    let t = tables();
    dropped(&arp(1, A_MAC, B_IP, GW), 1, &t, DropReason::SpoofedSourceIp, &[]); // claiming B's IP
    dropped(&arp(1, A_MAC, A_IP, B_IP), 1, &t, DropReason::ArpNotForGateway, &[]);
    dropped(&arp(2, A_MAC, A_IP, GW), 1, &t, DropReason::ArpNotRequest, &[]);
    let mut spoofed_mac = arp(1, B_MAC, A_IP, GW);
    spoofed_mac[6..12].copy_from_slice(&A_MAC); // Ethernet source right, ARP sender wrong
    dropped(&spoofed_mac, 1, &t, DropReason::SpoofedSourceIp, &[]);
    // The host port answers too, with its own MAC.
    let (v, out, c) = run(&arp(1, NODE_MAC, NODE_IP, GW), 0, &t);
    assert_eq!(v, Verdict::Forward { port: 0, len: 60 });
    c.assert(&[], &[("arp.replies", 1), ("answered", 1)]);
    assert_eq!(&out[22..28], &HOST_PORT_MAC);
}

#[test]
fn pod_to_pod_is_routed_with_rewritten_macs_and_ttl() {
    let t = tables();
    let frame = udp(A_MAC, PORT_A_MAC, A_IP, B_IP, 64, b"hello");
    let (v, out, c) = run(&frame, 1, &t);
    assert_eq!(v, Verdict::Forward { port: 2, len: frame.len() });
    c.assert(&[], &[("conntrack.created", 1)]);
    assert_eq!(&out[0..6], &B_MAC);
    assert_eq!(&out[6..12], &PORT_B_MAC);
    assert_eq!(out[22], 63, "TTL decremented");
    assert!(ip_header_ok(&out), "incremental checksum update is right");
    assert_eq!(&out[14 + 20..], &frame[14 + 20..], "L4 untouched");
    assert_eq!(&out[14 + 12..14 + 20], &frame[14 + 12..14 + 20], "addresses untouched");
}

#[test]
fn node_reaches_pods_and_pods_reach_the_node() {
    let t = tables();
    let (v, out, _) = run(&udp(NODE_MAC, HOST_PORT_MAC, NODE_IP, A_IP, 64, b"x"), 0, &t);
    assert_eq!(v, Verdict::Forward { port: 1, len: out.len() });
    let (v, out, _) = run(&udp(A_MAC, PORT_A_MAC, A_IP, NODE_IP, 64, b"x"), 1, &t);
    assert_eq!(v, Verdict::Forward { port: 0, len: out.len() });
    assert_eq!(&out[0..6], &NODE_MAC);
}

#[test]
fn spoofed_sources_are_dropped() {
    let t = tables();
    let ip_spoof = udp(A_MAC, PORT_A_MAC, B_IP, NODE_IP, 64, b"x");
    dropped(&ip_spoof, 1, &t, DropReason::SpoofedSourceIp, &[]);
    let mac_spoof = udp(B_MAC, PORT_A_MAC, A_IP, NODE_IP, 64, b"x");
    dropped(&mac_spoof, 1, &t, DropReason::SpoofedSourceMac, &[]);
    // An unknown address (not a pod at all) from a pod port.
    let outsider = udp(A_MAC, PORT_A_MAC, Ipv4Addr::new(10, 244, 0, 99), B_IP, 64, b"x");
    dropped(&outsider, 1, &t, DropReason::SpoofedSourceIp, &[]);
    // The host port is trusted like the kernel's own interfaces.
    let from_host = udp(NODE_MAC, HOST_PORT_MAC, Ipv4Addr::new(172, 18, 0, 3), B_IP, 64, b"x");
    assert!(matches!(run(&from_host, 0, &t).0, Verdict::Forward { port: 2, .. }));
}

#[test]
fn ttl_expiry_is_answered_with_time_exceeded() {
    let t = tables();
    let frame = udp(A_MAC, PORT_A_MAC, A_IP, B_IP, 1, b"0123456789abcdef");
    let (v, out, c) = run(&frame, 1, &t);
    let quote_len = 20 + 8;
    assert_eq!(v, Verdict::Forward { port: 1, len: 14 + 20 + 8 + quote_len });
    // The frame is counted once as TTL-exceeded, and its answer as sent.
    c.assert(&[(DropReason::TtlExceeded, 1)], &[("conntrack.created", 1), ("icmp.time_exceeded", 1), ("answered", 1)]);
    assert_eq!(&out[0..6], &A_MAC);
    assert_eq!(&out[6..12], &PORT_A_MAC);
    assert!(ip_header_ok(&out));
    assert_eq!(&out[14 + 12..14 + 16], &GW.octets(), "from the gateway");
    assert_eq!(&out[14 + 16..14 + 20], &A_IP.octets(), "to the sender");
    assert_eq!(out[14 + 9], 1, "ICMP");
    assert_eq!((out[34], out[35]), (11, 0), "time exceeded in transit");
    assert_eq!(checksum::internet_checksum(&out[34..]), 0, "ICMP checksum");
    assert_eq!(&out[42..], &frame[14..14 + quote_len], "quotes header + 8 bytes");
    // No error about an ICMP error.
    let mut icmp_err = Vec::new();
    PacketBuilder::ethernet2(A_MAC, PORT_A_MAC)
        .ipv4(A_IP.octets(), B_IP.octets(), 1)
        .icmpv4(etherparse::Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit))
        .write(&mut icmp_err, &[0; 28])
        .unwrap();
    // It quotes no connection: dropped before its TTL is looked at, counted once, no answer.
    dropped(&icmp_err, 1, &t, DropReason::IcmpErrorUnrelated, &[]);
}

#[test]
fn echo_to_the_gateway_is_answered() {
    let t = tables();
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(A_MAC, PORT_A_MAC).ipv4(A_IP.octets(), GW.octets(), 64).icmpv4_echo_request(7, 1).write(&mut ping, b"ping").unwrap();
    let (v, out, c) = run(&ping, 1, &t);
    assert_eq!(v, Verdict::Forward { port: 1, len: ping.len() });
    c.assert(&[], &[("icmp.echo_replies", 1), ("answered", 1)]);
    assert_eq!(&out[26..30], &GW.octets());
    assert_eq!(&out[30..34], &A_IP.octets());
    assert_eq!(out[34], 0, "echo reply");
    assert!(ip_header_ok(&out));
    assert_eq!(checksum::internet_checksum(&out[34..]), 0);
    let udp_to_gw = udp(A_MAC, PORT_A_MAC, A_IP, GW, 64, b"x");
    dropped(&udp_to_gw, 1, &t, DropReason::LocalNotHandled, &[]);
}

#[test]
fn malformed_and_unwanted_frames_have_their_reasons() {
    let t = tables();
    let good = udp(A_MAC, PORT_A_MAC, A_IP, B_IP, 64, b"hello");
    dropped(&good[..10], 1, &t, DropReason::Truncated, &[]);
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    dropped(&bad_version, 1, &t, DropReason::BadIpVersion, &[]);
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    dropped(&bad_ihl, 1, &t, DropReason::BadIhl, &[]);
    let mut bad_len = good.clone();
    bad_len[16..18].copy_from_slice(&10u16.to_be_bytes());
    dropped(&bad_len, 1, &t, DropReason::BadIpTotalLength, &[]);
    bad_len[16..18].copy_from_slice(&2000u16.to_be_bytes());
    dropped(&bad_len, 1, &t, DropReason::Truncated, &[]); // "claims more than the frame holds"
    let mut bad_sum = good.clone();
    bad_sum[24] ^= 0xff;
    dropped(&bad_sum, 1, &t, DropReason::BadIpChecksum, &[]);
    let mut v6 = good.clone();
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    dropped(&v6, 1, &t, DropReason::UnsupportedEthertype, &[]);
    let other_mac = udp(A_MAC, [2, 2, 2, 2, 2, 2], A_IP, B_IP, 64, b"x");
    dropped(&other_mac, 1, &t, DropReason::DstMacNotSwitch, &[]);
    let bcast = udp(A_MAC, PORT_A_MAC, A_IP, Ipv4Addr::BROADCAST, 64, b"x");
    // Tracked first, then refused by routing (the entry expires unused).
    dropped(&bcast, 1, &t, DropReason::DstNotUnicast, &[("conntrack.created", 1)]);
    let nowhere = udp(A_MAC, PORT_A_MAC, A_IP, Ipv4Addr::new(10, 244, 0, 77), 64, b"x");
    dropped(&nowhere, 1, &t, DropReason::NoRoute, &[("conntrack.created", 1)]);
    dropped(&good, 9, &t, DropReason::UnknownIngressPort, &[]);
}

#[test]
fn random_bytes_never_panic() {
    let t = tables();
    let template = udp(A_MAC, PORT_A_MAC, A_IP, B_IP, 64, b"hello world, hello world");
    let mut rng = fastrand::Rng::with_seed(0x9e3779b97f4a7c15);
    let mut next = move || rng.u64(..);
    for _ in 0..200_000 {
        let mut f = template.clone();
        let len = (next() % (f.len() as u64 + 1)) as usize;
        for _ in 0..(next() % 6) {
            let i = (next() % f.len() as u64) as usize;
            f[i] = next() as u8;
        }
        if next() % 4 == 0 {
            f[12..14].copy_from_slice(&[0x08, 0x06]);
        }
        let _ = run(&f[..len], (next() % 4) as PortId, &t);
    }
}
