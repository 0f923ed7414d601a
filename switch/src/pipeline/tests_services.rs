//! Service scenarios through [`process`] with a connection table: DNAT and reverse NAT,
//! REJECT and DROP verdicts, hairpin, affinity, traffic policies, masquerade, ICMP errors.
use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use super::test_worker::Counted;
use super::*;
use crate::conntrack::{KeyHasher, Timeouts};
use crate::drop_reason::DropReason;
use crate::tables::maglev;
use crate::tables::services::{affinity_id_of, Backend, BackendSet, Frontend, FrontendKey, FrontendKind, OnEmpty, ServiceTables};
use crate::tables::{NextHop, PortConfig, PortKind, SourceGuard};
use crate::wire::{checksum, parse_frame, tcp_flags};

const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
/// A ClusterIP outside the Service CIDR the switch was given (the API server's ranges may be
/// wider): still a Service address.
const OUTSIDE_VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const PODS: [Ipv4Addr; 3] = [Ipv4Addr::new(10, 244, 0, 10), Ipv4Addr::new(10, 244, 0, 11), Ipv4Addr::new(10, 244, 0, 12)];
const UPLINK: PortId = 9;

fn pod_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

fn port_mac(id: PortId) -> [u8; 6] {
    [0xee, 0, 0, 0, 0, id as u8]
}

fn set(backends: &[Ipv4Addr], on_empty: OnEmpty, masquerade: bool) -> BackendSet {
    let backends: Vec<Backend> =
        backends.iter().enumerate().map(|(i, ip)| Backend { ip: *ip, port: 8080, endpoint_id: i as u32 + 100, local: true }).collect();
    let names: Vec<String> = backends.iter().map(|b| format!("{}:{}", b.ip, b.port)).collect();
    BackendSet { maglev: maglev::build_table(&names), backends: backends.into(), on_empty, masquerade }
}

fn frontend(ip: Ipv4Addr, port: u16, proto: u8, kind: FrontendKind, internal: BackendSet, external: BackendSet) -> Frontend {
    Frontend {
        name: format!("x/svc:{port}"),
        affinity_id: affinity_id_of(&format!("x/svc:{port}")),
        service_id: 1,
        service_port: port,
        kind,
        key: FrontendKey { ip: u32::from(ip), port, proto },
        internal,
        external,
        affinity_timeout_s: None,
        source_ranges: vec![],
    }
}

fn tables() -> Tables {
    let mut t = Tables::new(GW);
    t.set_port(0, Some(PortConfig { name: "node".into(), kind: PortKind::Host, mac: port_mac(0), source_guard: None }));
    for (i, ip) in PODS.iter().enumerate() {
        let id = i as PortId + 1;
        t.set_port(
            id,
            Some(PortConfig { name: format!("x/{i}"), kind: PortKind::Pod, mac: port_mac(id), source_guard: Some(SourceGuard { mac: pod_mac(*ip), ip: *ip }) }),
        );
        t.routes.insert(u32::from(*ip), 32, NextHop::direct(id, pod_mac(*ip)));
    }
    t.set_port(UPLINK, Some(PortConfig { name: "uplink".into(), kind: PortKind::Uplink, mac: port_mac(UPLINK), source_guard: None }));
    t.routes.insert(u32::from(NODE_IP), 32, NextHop::direct(0, [0x0a, 0x58, 172, 18, 0, 2]));
    t.routes.insert(u32::from(CLIENT), 32, NextHop::direct(UPLINK, [2, 0, 0, 0, 0, 0x50]));
    // The compiler lists a ClusterIP outside the configured range as a /32 of its own.
    let service_cidrs = vec![(u32::from(Ipv4Addr::new(10, 96, 0, 0)), 16), (u32::from(OUTSIDE_VIP), 32)];
    let mut s = ServiceTables { service_cidrs, snat_ip: Some(NODE_IP), ..Default::default() };
    let all = set(&PODS, OnEmpty::Reject, false);
    s.push(frontend(VIP, 80, 6, FrontendKind::ClusterIp, all.clone(), BackendSet { masquerade: true, ..all.clone() }));
    s.push(frontend(VIP, 53, 17, FrontendKind::ClusterIp, all.clone(), BackendSet { masquerade: true, ..all.clone() }));
    s.push(frontend(EMPTY_VIP, 80, 6, FrontendKind::ClusterIp, set(&[], OnEmpty::Reject, false), set(&[], OnEmpty::Reject, true)));
    s.push(frontend(EMPTY_VIP, 53, 17, FrontendKind::ClusterIp, set(&[], OnEmpty::Reject, false), set(&[], OnEmpty::Reject, true)));
    s.push(frontend(OUTSIDE_VIP, 80, 6, FrontendKind::ClusterIp, all.clone(), BackendSet { masquerade: true, ..all.clone() }));
    s.push(frontend(VIP, 3868, 132, FrontendKind::ClusterIp, all.clone(), BackendSet { masquerade: true, ..all.clone() }));
    // NodePort 30080: eTP Cluster (masquerade); 30081: eTP Local with no local endpoint.
    s.push(frontend(NODE_IP, 30080, 6, FrontendKind::NodePort, all.clone(), BackendSet { masquerade: true, ..all.clone() }));
    s.push(frontend(NODE_IP, 30081, 6, FrontendKind::NodePort, all.clone(), set(&[], OnEmpty::Drop, false)));
    // NodePort 30082: eTP Local, local endpoints, source preserved.
    s.push(frontend(NODE_IP, 30082, 6, FrontendKind::NodePort, all.clone(), all.clone()));
    let mut sticky = frontend(VIP, 443, 6, FrontendKind::ClusterIp, all.clone(), all.clone());
    sticky.affinity_timeout_s = Some(10800);
    s.push(sticky.clone());
    // The same Service port's NodePort: it shares the ClusterIP's affinity.
    let mut sticky_np = frontend(NODE_IP, 30443, 6, FrontendKind::NodePort, all.clone(), BackendSet { masquerade: true, ..all });
    sticky_np.affinity_timeout_s = Some(10800);
    sticky_np.service_port = 443;
    // One Service port: one name and affinity id, as the compiler gives.
    (sticky_np.name, sticky_np.affinity_id) = (sticky.name.clone(), sticky.affinity_id);
    s.push(sticky_np);
    t.services = s;
    t
}

struct Scenario {
    t: Tables,
    ct: ConnTable,
    c: Counted,
}

impl Scenario {
    fn new() -> Self {
        Self::with_table(ConnTable::new(4096, KeyHasher::new(11)))
    }

    fn with_table(ct: ConnTable) -> Self {
        Self { t: tables(), ct, c: Counted::new() }
    }

    /// One frame through the pipeline, counted as the worker counts it in `self.c`.
    fn send(&self, frame: &[u8], in_port: PortId) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; 2048];
        buf[..frame.len()].copy_from_slice(frame);
        let v = self.c.process(&self.c.ctx(&self.t, &self.ct, self.ct.now_ms()), &mut buf, frame.len(), in_port);
        let len = match v {
            Verdict::Forward { len, .. } => len,
            Verdict::Drop(_) => frame.len(),
        };
        buf.truncate(len);
        (v, buf)
    }
}

fn pod_port(ip: Ipv4Addr) -> PortId {
    PODS.iter().position(|p| *p == ip).unwrap() as PortId + 1
}

fn tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8, in_port: PortId) -> Vec<u8> {
    let src_mac = if in_port == UPLINK { [2, 0, 0, 0, 0, 0x50] } else { pod_mac(src) };
    let b = PacketBuilder::ethernet2(src_mac, port_mac(in_port)).ipv4(src.octets(), dst.octets(), 64);
    let mut t = b.tcp(sport, dport, 1000, 64000);
    if flags & tcp_flags::SYN != 0 {
        t = t.syn();
    }
    if flags & tcp_flags::ACK != 0 {
        t = t.ack(5000);
    }
    if flags & tcp_flags::RST != 0 {
        t = t.rst();
    }
    let mut v = Vec::new();
    t.write(&mut v, &[]).unwrap();
    v
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, in_port: PortId) -> Vec<u8> {
    let src_mac = if in_port == UPLINK { [2, 0, 0, 0, 0, 0x50] } else { pod_mac(src) };
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, port_mac(in_port)).ipv4(src.octets(), dst.octets(), 64).udp(sport, dport).write(&mut v, b"dns?").unwrap();
    v
}

/// An SCTP packet (common header and an INIT chunk) with a valid CRC32c.
fn sctp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, in_port: PortId) -> Vec<u8> {
    sctp_chunk(src, dst, sport, dport, in_port, crate::wire::sctp::chunk::INIT)
}

/// An SCTP packet whose one chunk has type `chunk_type` (an INIT's body), with a valid CRC32c.
fn sctp_chunk(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, in_port: PortId, chunk_type: u8) -> Vec<u8> {
    let src_mac = if in_port == UPLINK { [2, 0, 0, 0, 0, 0x50] } else { pod_mac(src) };
    let mut chunk = vec![0u8; 12];
    chunk.extend_from_slice(&[chunk_type, 0, 0, 20, 0x12, 0x34, 0x56, 0x78, 0, 1, 0, 0, 0, 10, 0, 10, 0, 0, 0, 1]);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, port_mac(in_port))
        .ipv4(src.octets(), dst.octets(), 64)
        .write(&mut v, etherparse::IpNumber(132), &chunk)
        .unwrap();
    let mut p = crate::wire::SctpPacket::new_unchecked(&mut v[34..]);
    p.set_src_port(sport);
    p.set_dst_port(dport);
    p.fill_checksum();
    v
}

fn sctp_checksum_ok(frame: &[u8]) -> bool {
    let l4 = parse_frame(frame).unwrap().l4_offset as usize;
    crate::wire::SctpPacket::new_unchecked(&frame[l4..]).verify_checksum()
}

fn tuple(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let p = super::parse::frame(frame).unwrap(); // SCTP's ports too
    (p.src_ip, p.src_port, p.dst_ip, p.dst_port)
}

fn checksums_ok(frame: &[u8]) {
    let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!("not IPv4") };
    assert_eq!(checksum::internet_checksum(&frame[14..14 + ip.header().slice().len()]), 0, "IPv4 header checksum");
    let h = ip.header().to_header();
    match p.transport {
        Some(etherparse::TransportSlice::Tcp(t)) => assert_eq!(t.checksum(), t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap(), "TCP"),
        Some(etherparse::TransportSlice::Udp(u)) => assert_eq!(u.checksum(), u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(), "UDP"),
        _ => {}
    }
}

#[test]
fn cluster_ip_is_translated_both_ways_and_keeps_the_pod_source() {
    let s = Scenario::new();
    let client = PODS[0];
    // A flow that does not hairpin (that one is masqueraded; tested below).
    let (csport, v, out) = (40000..41000)
        .map(|p| {
            let (v, out) = s.send(&tcp(client, VIP, p, 80, tcp_flags::SYN, 1), 1);
            (p, v, out)
        })
        .find(|(_, _, out)| tuple(out).2 != client)
        .unwrap();
    let (src, sport, backend, bport) = tuple(&out);
    assert_eq!((src, sport, bport), (client, csport, 8080), "source kept, port translated");
    assert!(PODS.contains(&backend));
    assert_eq!(v, Verdict::Forward { port: pod_port(backend), len: out.len() });
    assert_eq!(&out[0..6], &pod_mac(backend));
    checksums_ok(&out);
    // The same flow again lands on the same backend.
    let (_, again) = s.send(&tcp(client, VIP, csport, 80, tcp_flags::ACK, 1), 1);
    assert_eq!(tuple(&again).2, backend);
    // The backend's answer comes back from the Service address.
    let (v, back) = s.send(&tcp(backend, client, 8080, csport, tcp_flags::SYN | tcp_flags::ACK, pod_port(backend)), pod_port(backend));
    assert_eq!(tuple(&back), (VIP, 80, client, csport));
    assert_eq!(v, Verdict::Forward { port: 1, len: back.len() });
    checksums_ok(&back);
    // Every source port tried before `csport` hairpinned (masqueraded); `csport` did not.
    let tries = u64::from(csport - 40000) + 1;
    s.c.assert(
        &[],
        &[("conntrack.known", 2), ("load_balance.maglev_picks", tries), ("masquerade.masqueraded", tries - 1), ("conntrack.created", tries)],
    );
}

#[test]
fn flows_spread_over_backends() {
    let s = Scenario::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut hairpins = 0;
    for sport in 0..60 {
        let (_, out) = s.send(&tcp(PODS[1], VIP, 20000 + sport, 80, tcp_flags::SYN, 2), 2);
        seen.insert(tuple(&out).2);
        hairpins += u64::from(tuple(&out).2 == PODS[1]);
    }
    assert_eq!(seen.len(), 3, "60 flows used {seen:?}");
    s.c.assert(&[], &[("load_balance.maglev_picks", 60), ("masquerade.masqueraded", hairpins), ("conntrack.created", 60)]);
}

#[test]
fn no_endpoints_rejects_tcp_with_rst_and_udp_with_port_unreachable() {
    let s = Scenario::new();
    let syn = tcp(PODS[0], EMPTY_VIP, 40000, 80, tcp_flags::SYN, 1);
    let (v, out) = s.send(&syn, 1);
    assert_eq!(v, Verdict::Forward { port: 1, len: 54 });
    let p = parse_frame(&out).unwrap();
    assert_eq!((p.src_ip, p.src_port, p.dst_ip, p.dst_port), (EMPTY_VIP, 80, PODS[0], 40000));
    assert_eq!(p.tcp_flags, tcp_flags::RST | tcp_flags::ACK);
    assert_eq!(u32::from_be_bytes(out[42..46].try_into().unwrap()), 1001, "acknowledges the SYN");
    assert_eq!(&out[0..6], &pod_mac(PODS[0]));
    checksums_ok(&out);
    let (v, out) = s.send(&udp(PODS[0], EMPTY_VIP, 5353, 53, 1), 1);
    assert!(matches!(v, Verdict::Forward { port: 1, .. }));
    let p = parse_frame(&out).unwrap();
    assert_eq!((p.src_ip, p.dst_ip, p.icmp_type, p.icmp_code), (EMPTY_VIP, PODS[0], 3, 3));
    assert_eq!(checksum::internet_checksum(&out[34..]), 0);
    assert_eq!(s.ct.live(), 0, "rejected flows are not tracked");
    s.c.assert(&[], &[("reject.tcp_resets", 1), ("reject.port_unreachables", 1), ("answered", 2)]);
}

#[test]
fn unexposed_port_rejects_and_unallocated_address_drops() {
    let s = Scenario::new();
    let (v, out) = s.send(&tcp(PODS[0], VIP, 40000, 81, tcp_flags::SYN, 1), 1);
    assert!(matches!(v, Verdict::Forward { port: 1, .. }));
    assert_eq!(parse_frame(&out).unwrap().tcp_flags & tcp_flags::RST, tcp_flags::RST);
    // UDP/80 is not exposed either (only TCP/80 is).
    let (v, out) = s.send(&udp(PODS[0], VIP, 5353, 80, 1), 1);
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(parse_frame(&out).unwrap().icmp_type, 3);
    let (v, _) = s.send(&tcp(PODS[0], Ipv4Addr::new(10, 96, 7, 7), 40000, 80, tcp_flags::SYN, 1), 1);
    assert_eq!(v, Verdict::Drop(DropReason::ServiceIpUnallocated));
    s.c.assert(&[(DropReason::ServiceIpUnallocated, 1)], &[("reject.tcp_resets", 1), ("reject.port_unreachables", 1), ("answered", 2)]);
}

#[test]
fn a_cluster_ip_outside_the_service_cidr_is_served_and_rejects_its_unexposed_ports() {
    let s = Scenario::new();
    let (v, out) = s.send(&tcp(PODS[0], OUTSIDE_VIP, 40000, 80, tcp_flags::SYN, 1), 1);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    let (_, _, dst, dport) = tuple(&out);
    assert!(PODS.contains(&dst) && dport == 8080, "{dst}:{dport}");
    // Not forwarded towards the uplink as an outside address: answered like any ClusterIP.
    let (v, out) = s.send(&tcp(PODS[0], OUTSIDE_VIP, 40001, 81, tcp_flags::SYN, 1), 1);
    assert!(matches!(v, Verdict::Forward { port: 1, .. }), "{v:?}");
    assert_eq!(parse_frame(&out).unwrap().tcp_flags & tcp_flags::RST, tcp_flags::RST);
    let hairpin = u64::from(dst == PODS[0]);
    s.c.assert(
        &[],
        &[("load_balance.maglev_picks", 1), ("reject.tcp_resets", 1), ("masquerade.masqueraded", hairpin), ("conntrack.created", 1), ("answered", 1)],
    );
}

#[test]
fn sctp_shorter_than_its_common_header_is_truncated() {
    let s = Scenario::new();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(pod_mac(PODS[0]), port_mac(1))
        .ipv4(PODS[0].octets(), VIP.octets(), 64)
        .write(&mut v, etherparse::IpNumber(132), &[0x9c, 0x40, 0x0f, 0x1c, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    let (verdict, _) = s.send(&v, 1);
    assert_eq!(verdict, Verdict::Drop(DropReason::Truncated));
}

#[test]
fn sctp_to_a_service_is_translated_both_ways_with_its_crc32c_recomputed() {
    let s = Scenario::new();
    let (v, out) = s.send(&sctp(PODS[0], VIP, 40000, 3868, 1), 1);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    let (src, sport, backend, dport) = tuple(&out);
    assert!(PODS.contains(&backend) && dport == 8080, "{backend}:{dport}");
    assert!(sctp_checksum_ok(&out), "CRC32c after DNAT");
    checksums_ok(&out);
    // The backend's answer comes back from the Service's address and port.
    let back_port = PODS.iter().position(|p| *p == backend).unwrap() as PortId + 1;
    let (v, back) = s.send(&sctp(backend, src, 8080, sport, back_port), back_port);
    assert!(matches!(v, Verdict::Forward { port: 1, .. }), "{v:?}");
    assert_eq!(tuple(&back), (VIP, 3868, PODS[0], 40000));
    assert!(sctp_checksum_ok(&back), "CRC32c after reverse NAT");
    assert_eq!(s.ct.live(), 1, "one association tracked");
}

#[test]
fn an_sctp_association_through_a_service_is_tracked_through_its_states() {
    use crate::wire::sctp::chunk;
    let s = Scenario::new();
    let state = || {
        let mut names = Vec::new();
        s.ct.for_each_live(0..s.ct.capacity(), |_, e, _| names.push(e.state().map(crate::conntrack::CtState::name)));
        assert_eq!(names.len(), 1, "one association");
        names[0].unwrap()
    };
    let (_, out) = s.send(&sctp_chunk(PODS[0], VIP, 40001, 3868, 1, chunk::INIT), 1);
    let (src, sport, backend, _) = tuple(&out);
    let back_port = pod_port(backend);
    assert_eq!(state(), "COOKIE_WAIT");
    let steps = [
        (true, chunk::INIT_ACK, "COOKIE_WAIT"),
        (false, chunk::COOKIE_ECHO, "COOKIE_ECHOED"),
        (true, chunk::COOKIE_ACK, "ESTABLISHED"),
        (false, chunk::DATA, "ESTABLISHED"),
        (true, chunk::SHUTDOWN, "SHUTDOWN"),
        (false, chunk::SHUTDOWN_ACK, "SHUTDOWN"),
        (true, chunk::SHUTDOWN_COMPLETE, "CLOSED"),
    ];
    for (reply, c, want) in steps {
        let (v, _) = if reply {
            s.send(&sctp_chunk(backend, src, 8080, sport, back_port, c), back_port)
        } else {
            s.send(&sctp_chunk(PODS[0], VIP, 40001, 3868, 1, c), 1)
        };
        assert!(matches!(v, Verdict::Forward { .. }), "chunk {c}: {v:?}");
        assert_eq!(state(), want, "after chunk {c} (reply: {reply})");
    }
}

#[test]
fn hairpin_is_masqueraded_to_the_node_address() {
    let s = Scenario::new();
    // Find a source port whose flow lands on the client itself.
    let client = PODS[2];
    let (sport, out) = (1000..2000)
        .map(|p| (p, s.send(&tcp(client, VIP, p, 80, tcp_flags::SYN, 3), 3).1))
        .find(|(_, out)| tuple(out).2 == client)
        .expect("some flow hairpins");
    let (src, nat_port, dst, _) = tuple(&out);
    assert_eq!((src, dst), (NODE_IP, client), "masqueraded to the node");
    checksums_ok(&out);
    // The pod answers the node address; the switch turns it back into the Service's answer.
    let (v, back) = s.send(&tcp(client, NODE_IP, 8080, nat_port, tcp_flags::SYN | tcp_flags::ACK, 3), 3);
    assert_eq!(tuple(&back), (VIP, 80, client, sport));
    assert_eq!(v, Verdict::Forward { port: 3, len: back.len() });
    // Source ports before `sport` went to other backends (not masqueraded).
    let tries = u64::from(sport - 1000) + 1;
    s.c.assert(
        &[],
        &[("conntrack.known", 1), ("load_balance.maglev_picks", tries), ("masquerade.masqueraded", 1), ("conntrack.created", tries)],
    );
}

#[test]
fn client_ip_affinity_sticks_across_connections() {
    let s = Scenario::new();
    let mut backends = std::collections::BTreeSet::new();
    for sport in 0..15 {
        let (_, out) = s.send(&tcp(PODS[0], VIP, 30000 + sport * 13, 443, tcp_flags::SYN, 1), 1);
        backends.insert(tuple(&out).2);
    }
    assert_eq!(backends.len(), 1, "15 connections went to {backends:?}");
    // One Maglev pick, then the affinity record; masqueraded only if the client reaches itself.
    let masqueraded = if backends.contains(&PODS[0]) { 15 } else { 0 };
    let mut expected = vec![("load_balance.maglev_picks", 1), ("load_balance.affinity_hits", 14)];
    if masqueraded != 0 {
        expected.push(("masquerade.masqueraded", masqueraded));
    }
    expected.push(("conntrack.created", 15));
    s.c.assert(&[], &expected);
}

#[test]
fn client_ip_affinity_is_shared_by_the_frontends_of_one_service_port() {
    // kube-proxy keeps affinity per Service port: a client that reached a backend through the
    // ClusterIP gets the same one through the port's NodePort (and the other way round).
    let s = Scenario::new();
    for (i, &client) in PODS.iter().enumerate() {
        let sport = 31000 + i as u16 * 7;
        let (_, first) = s.send(&tcp(client, VIP, sport, 443, tcp_flags::SYN, pod_port(client)), pod_port(client));
        let chosen = tuple(&first).2;
        for k in 1..4u16 {
            let (_, out) = s.send(&tcp(client, NODE_IP, sport + k, 30443, tcp_flags::SYN, pod_port(client)), pod_port(client));
            assert_eq!(tuple(&out).2, chosen, "client {client} through the NodePort");
            let (_, out) = s.send(&tcp(client, VIP, sport + 100 + k, 443, tcp_flags::SYN, pod_port(client)), pod_port(client));
            assert_eq!(tuple(&out).2, chosen, "client {client} back through the ClusterIP");
        }
    }
    let stage = |name: &str| s.c.stages().into_iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| v);
    assert_eq!(stage("load_balance.maglev_picks"), PODS.len() as u64, "one pick per client, then its record for every frontend");
    assert_eq!(stage("load_balance.affinity_hits"), PODS.len() as u64 * 6);
}

#[test]
fn external_traffic_policies() {
    let s = Scenario::new();
    // Cluster: masqueraded to the node address.
    let (v, out) = s.send(&tcp(CLIENT, NODE_IP, 50000, 30080, tcp_flags::SYN, UPLINK), UPLINK);
    let (src, nat_port, backend, _) = tuple(&out);
    assert_eq!(src, NODE_IP);
    assert!(matches!(v, Verdict::Forward { .. }));
    // Its answer goes back out the uplink from the node's NodePort.
    let (v, back) = s.send(&tcp(backend, NODE_IP, 8080, nat_port, tcp_flags::SYN | tcp_flags::ACK, pod_port(backend)), pod_port(backend));
    assert_eq!(tuple(&back), (NODE_IP, 30080, CLIENT, 50000));
    assert_eq!(v, Verdict::Forward { port: UPLINK, len: back.len() });
    // Local with no local endpoint: dropped.
    let (v, _) = s.send(&tcp(CLIENT, NODE_IP, 50001, 30081, tcp_flags::SYN, UPLINK), UPLINK);
    assert_eq!(v, Verdict::Drop(DropReason::NoLocalEndpoint));
    // Local with local endpoints: the client's address is preserved.
    let (_, out) = s.send(&tcp(CLIENT, NODE_IP, 50002, 30082, tcp_flags::SYN, UPLINK), UPLINK);
    assert_eq!(tuple(&out).0, CLIENT);
    // From a pod, the NodePort uses the internal set (no drop).
    let (v, from_pod) = s.send(&tcp(PODS[0], NODE_IP, 50003, 30081, tcp_flags::SYN, 1), 1);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    // Masqueraded: the Cluster policy's connection, and the pod's if it reached itself.
    let hairpin = u64::from(tuple(&from_pod).0 == NODE_IP);
    s.c.assert(
        &[(DropReason::NoLocalEndpoint, 1)],
        &[("conntrack.known", 1), ("load_balance.maglev_picks", 3), ("masquerade.masqueraded", 1 + hairpin), ("conntrack.created", 3)],
    );
}

#[test]
fn load_balancer_source_ranges_apply_to_every_source() {
    let mut s = Scenario::new();
    let lb_ip = Ipv4Addr::new(192, 0, 2, 10);
    let all = set(&PODS, OnEmpty::Reject, false);
    let mut lb = frontend(lb_ip, 80, 6, FrontendKind::LoadBalancer, all.clone(), BackendSet { masquerade: true, ..all });
    // The range holds PODS[0] and the uplink's client, not PODS[1] nor the node.
    lb.source_ranges = vec![(u32::from(PODS[0]), 32), (u32::from(CLIENT) & 0xffff_ff00, 24)];
    s.t.services.push(lb);
    let (v, _) = s.send(&tcp(CLIENT, lb_ip, 40000, 80, tcp_flags::SYN, UPLINK), UPLINK);
    assert!(matches!(v, Verdict::Forward { .. }), "uplink, inside: {v:?}");
    let (v, _) = s.send(&tcp(PODS[0], lb_ip, 40001, 80, tcp_flags::SYN, 1), 1);
    assert!(matches!(v, Verdict::Forward { .. }), "pod inside: {v:?}");
    let (v, _) = s.send(&tcp(PODS[1], lb_ip, 40002, 80, tcp_flags::SYN, 2), 2);
    assert_eq!(v, Verdict::Drop(DropReason::LbSourceDenied), "pod outside");
    let (v, _) = s.send(&tcp(NODE_IP, lb_ip, 40004, 80, tcp_flags::SYN, 0), 0);
    assert_eq!(v, Verdict::Drop(DropReason::LbSourceDenied), "the node's own stack, outside");
    // The other frontends of the Service (its ClusterIP) know no source ranges.
    let (v, _) = s.send(&tcp(PODS[1], VIP, 40005, 80, tcp_flags::SYN, 2), 2);
    assert!(matches!(v, Verdict::Forward { .. }), "ClusterIP: {v:?}");
}

#[test]
fn port_unreachable_from_a_backend_reaches_the_client_from_the_service_address() {
    let s = Scenario::new();
    let (_, out) = s.send(&udp(PODS[0], VIP, 5353, 53, 1), 1);
    let backend = tuple(&out).2;
    if backend == PODS[0] {
        return; // hairpin case covered elsewhere
    }
    // The backend's kernel answers with port unreachable quoting what it received.
    let mut icmp = Vec::new();
    PacketBuilder::ethernet2(pod_mac(backend), port_mac(pod_port(backend)))
        .ipv4(backend.octets(), PODS[0].octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port))
        .write(&mut icmp, &out[14..])
        .unwrap();
    let (v, back) = s.send(&icmp, pod_port(backend));
    assert_eq!(v, Verdict::Forward { port: 1, len: back.len() });
    let p = parse_frame(&back).unwrap();
    assert_eq!((p.src_ip, p.dst_ip, p.icmp_type), (VIP, PODS[0], 3));
    // The quote shows the datagram as the client sent it.
    let q = &back[42..];
    assert_eq!(&q[12..16], &PODS[0].octets());
    assert_eq!(&q[16..20], &VIP.octets());
    assert_eq!(u16::from_be_bytes([q[22], q[23]]), 53);
    assert_eq!(checksum::internet_checksum(&q[..20]), 0, "quoted header checksum");
    assert_eq!(checksum::internet_checksum(&back[34..]), 0, "ICMP checksum");
    assert_eq!(checksum::internet_checksum(&back[14..34]), 0, "outer header checksum");
    s.c.assert(&[], &[("icmp_translate.translated", 1), ("load_balance.maglev_picks", 1), ("conntrack.created", 1)]);
}

#[test]
fn a_full_table_refuses_new_flows_but_established_ones_go_on() {
    let s = Scenario::with_table(ConnTable::new(2, KeyHasher::new(3)));
    let (_, first) = s.send(&tcp(PODS[0], VIP, 1, 80, tcp_flags::SYN, 1), 1);
    s.send(&tcp(PODS[0], PODS[1], 2, 80, tcp_flags::SYN, 1), 1);
    let (v, _) = s.send(&tcp(PODS[0], VIP, 3, 80, tcp_flags::SYN, 1), 1);
    assert_eq!(v, Verdict::Drop(DropReason::ConntrackFull));
    let (v, again) = s.send(&tcp(PODS[0], VIP, 1, 80, tcp_flags::ACK, 1), 1);
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(tuple(&again).2, tuple(&first).2);
    // The refused SYN had its backend chosen before the table refused it.
    let mut expected = vec![("conntrack.known", 1), ("load_balance.maglev_picks", 2)];
    if tuple(&first).0 == NODE_IP {
        expected.push(("masquerade.masqueraded", 1 + u64::from(tuple(&first).2 == PODS[0])));
    }
    expected.push(("conntrack.created", 2));
    s.c.assert(&[(DropReason::ConntrackFull, 1)], &expected);
}

#[test]
fn udp_flush_of_a_removed_endpoint_lets_the_flow_choose_again() {
    let s = Scenario::new();
    let (_, out) = s.send(&udp(PODS[0], VIP, 6000, 53, 1), 1);
    let backend = tuple(&out).2;
    let endpoint = 100 + PODS.iter().position(|p| *p == backend).unwrap() as u32;
    assert_eq!(crate::conntrack::reaper::flush_udp_endpoints(&s.ct, &[endpoint]), 1);
    assert_eq!(s.ct.live(), 0);
    let _ = Timeouts::default();
    let mut expected = vec![("load_balance.maglev_picks", 1)];
    if backend == PODS[0] {
        expected.push(("masquerade.masqueraded", 1)); // hairpin
    }
    expected.push(("conntrack.created", 1));
    s.c.assert(&[], &expected);
}

#[test]
fn lone_rst_to_a_service_is_invalid_and_untracked_between_pods() {
    let s = Scenario::new();
    let (v, _) = s.send(&tcp(PODS[0], VIP, 1, 80, tcp_flags::RST, 1), 1);
    assert_eq!(v, Verdict::Drop(DropReason::CtInvalid));
    let (v, _) = s.send(&tcp(PODS[0], PODS[1], 1, 80, tcp_flags::RST, 1), 1);
    assert!(matches!(v, Verdict::Forward { port: 2, .. }));
    assert_eq!(s.ct.live(), 0);
    s.c.assert(&[(DropReason::CtInvalid, 1)], &[("conntrack.untracked", 1)]);
}

#[test]
fn the_uplink_answers_arp_for_the_node_address_and_pod_ports_do_not() {
    let mut s = Scenario::new();
    s.t.uplink_arp = vec![NODE_IP];
    let arp = |sender_mac: [u8; 6], sender_ip: Ipv4Addr| {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&sender_mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&sender_mac);
        f.extend_from_slice(&sender_ip.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&NODE_IP.octets());
        f.resize(60, 0);
        f
    };
    let (v, out) = s.send(&arp([2, 0, 0, 0, 0, 0x50], CLIENT), UPLINK);
    assert_eq!(v, Verdict::Forward { port: UPLINK, len: 60 });
    assert_eq!(&out[22..28], &port_mac(UPLINK));
    assert_eq!(&out[28..32], &NODE_IP.octets());
    let (v, _) = s.send(&arp(pod_mac(PODS[0]), PODS[0]), 1);
    assert_eq!(v, Verdict::Drop(DropReason::ArpNotForGateway));
    s.c.assert(&[(DropReason::ArpNotForGateway, 1)], &[("arp.replies", 1), ("answered", 1)]);
}

/// The fast path must decide exactly as the full pipeline: the same frames, through `process`
/// (fast path first) on one connection table and through `slow` alone on an identical one,
/// give the same verdicts and the same bytes, including mutated frames.
#[test]
fn fast_path_and_full_pipeline_agree() {
    let t = tables();
    let (ct_a, ct_b) = (ConnTable::new(4096, KeyHasher::new(77)), ConnTable::new(4096, KeyHasher::new(77)));
    // Each side's counters: both must count the same drops.
    let (c_a, c_b) = (Counted::new(), Counted::new());
    let run = |frame: &[u8], in_port: PortId, fast: bool, ct: &ConnTable| -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; 2048];
        buf[..frame.len()].copy_from_slice(frame);
        let c = if fast { &c_a } else { &c_b };
        let ctx = c.ctx(&t, ct, 1000);
        let v = if fast {
            // The fast side takes the hint a worker's warm-up gives (every third frame: a
            // hint for another key, which must not change anything either).
            let len = frame.len();
            let hint = if len.is_multiple_of(3) {
                // A hint for another key, whose slot names a real entry of another flow.
                let other = super::warm::quick_key(&buf[..len]).map(|mut k| {
                    k.sport ^= 1;
                    k
                });
                let real = super::warm::burst(ct, 1, |_| other).get(0);
                super::warm::Hint { hash: 0x1234_5678_9abc_def1, slot: real.slot }
            } else if len % 3 == 1 {
                // The right hash with a slot of some other entry.
                let mut h = super::warm::burst(ct, 1, |_| super::warm::quick_key(&buf[..len])).get(0);
                h.slot = h.slot.wrapping_add(2);
                h
            } else {
                super::warm::burst(ct, 1, |_| super::warm::quick_key(&buf[..len])).get(0)
            };
            super::process_hinted(&mut buf, len, in_port, &ctx, hint)
        } else {
            slow(&mut buf, frame.len(), in_port, &ctx)
        };
        if let Verdict::Drop(r) = v {
            c.drops.count(r);
        }
        (v, buf)
    };
    let both = |frame: &[u8], in_port: PortId| {
        let (va, ba) = run(frame, in_port, true, &ct_a);
        let (vb, bb) = run(frame, in_port, false, &ct_b);
        assert_eq!(va, vb, "verdicts differ for {frame:02x?}");
        assert_eq!(ba, bb, "bytes differ for {frame:02x?}");
        (va, ba)
    };
    // Open connections (client pods to the ClusterIP, TCP and UDP) and complete them.
    let mut established = Vec::new();
    for (i, client) in PODS.iter().enumerate() {
        for sport in 0..20u16 {
            let p = 30000 + sport * 7 + i as u16;
            let (_, out) = both(&tcp(*client, VIP, p, 80, tcp_flags::SYN, pod_port(*client)), pod_port(*client));
            let (_, _, backend, _) = tuple(&out);
            let (nat_src, nat_sport) = (tuple(&out).0, tuple(&out).1);
            both(&tcp(backend, nat_src, 8080, nat_sport, tcp_flags::SYN | tcp_flags::ACK, pod_port(backend)), pod_port(backend));
            let ack = tcp(*client, VIP, p, 80, tcp_flags::ACK, pod_port(*client));
            both(&ack, pod_port(*client));
            established.push((ack, pod_port(*client)));
            established.push((tcp(backend, nat_src, 8080, nat_sport, tcp_flags::ACK, pod_port(backend)), pod_port(backend)));
            let (_, uout) = both(&udp(*client, VIP, p, 53, pod_port(*client)), pod_port(*client));
            let (us, usp, ub, _) = tuple(&uout);
            let _ = (us, usp);
            both(&udp(ub, tuple(&uout).0, 8080, tuple(&uout).1, pod_port(ub)), pod_port(ub));
            established.push((udp(*client, VIP, p, 53, pod_port(*client)), pod_port(*client)));
        }
    }
    // Established packets, intact and mutated in every way a byte flip can.
    let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.u64(..);
    let mut fast_taken = 0;
    for round in 0..20_000 {
        let (frame, port) = &established[(next() % established.len() as u64) as usize];
        let mut f = frame.clone();
        if round % 2 == 0 {
            // How often the fast path takes an intact packet (its only side effect, `touch`,
            // writes nothing at this clock, so the tables stay identical).
            let mut probe = vec![0u8; 2048];
            probe[..f.len()].copy_from_slice(&f);
            let probe_counters = Counted::new();
            let ctx = probe_counters.ctx(&t, &ct_a, 1000);
            fast_taken += fast::established(&mut probe, f.len(), *port, &ctx, super::warm::Hint::NONE).is_some() as u32;
        }
        if round % 2 == 1 {
            let i = (next() % f.len() as u64) as usize;
            f[i] ^= 1 << (next() % 8);
        }
        let in_port = if round % 97 == 0 { (next() % 10) as PortId } else { *port };
        let len = if round % 89 == 0 { (next() % f.len() as u64) as usize } else { f.len() };
        both(&f[..len], in_port);
    }
    assert!(fast_taken > 8_000, "the fast path took only {fast_taken} of 10,000 intact packets");
    // Both ways count the same drops and the same answers and connections; only how many
    // known-connection packets took the full path differs (all of them on the slow side).
    assert_eq!(c_a.drops(), c_b.drops());
    assert!(!c_a.drops().is_empty(), "the mutations exercised some drops");
    let without_known = |c: &Counted| c.stages().into_iter().filter(|(n, _)| *n != "conntrack.known").collect::<Vec<_>>();
    assert_eq!(without_known(&c_a), without_known(&c_b));
}

#[test]
fn two_flows_that_would_translate_to_one_tuple_stay_apart() {
    let s = Scenario::new();
    let client = PODS[0];
    // A flow through the Service to some backend other than the client...
    let (sport, out) = (1000..2000)
        .map(|p| (p, s.send(&udp(client, VIP, p, 53, 1), 1).1))
        .find(|(_, out)| tuple(out).2 != client)
        .unwrap();
    let backend = tuple(&out).2;
    assert_eq!(tuple(&out).1, sport);
    // ...and a direct flow from the same source port to that backend's port: same reply tuple.
    let (v, direct) = {
        let (v, d) = s.send(&udp(client, backend, sport, 8080, 1), 1);
        (v, d)
    };
    assert!(matches!(v, Verdict::Forward { .. }));
    let (src, new_sport, dst, dport) = tuple(&direct);
    assert_eq!((src, dst, dport), (client, backend, 8080));
    assert_ne!(new_sport, sport, "the second flow's source port was remapped");
    // Answers to each reach the client from the address it talked to.
    let (_, a1) = s.send(&udp(backend, client, 8080, sport, pod_port(backend)), pod_port(backend));
    assert_eq!(tuple(&a1), (VIP, 53, client, sport));
    let (_, a2) = s.send(&udp(backend, client, 8080, new_sport, pod_port(backend)), pod_port(backend));
    assert_eq!(tuple(&a2), (backend, 8080, client, sport));
    checksums_ok(&a2);
    // Ports tried before `sport` hairpinned (masqueraded); the direct flow clashed.
    let tries = u64::from(sport - 1000) + 1;
    let mut expected = vec![("conntrack.known", 2), ("load_balance.maglev_picks", tries)];
    if tries > 1 {
        expected.push(("masquerade.masqueraded", tries - 1));
    }
    expected.extend([("masquerade.clashes", 1), ("conntrack.created", tries + 1)]);
    s.c.assert(&[], &expected);
}

/// A UDP datagram of `len` payload bytes (`k`-th byte `k as u8`) from `src`:`sport` to
/// `dst`:`dport`, with IP id `id`, split into two fragments: the first holds the UDP header and
/// 24 payload bytes (offset 0, more fragments), the second the rest (offset 4 × 8 bytes).
fn udp_fragments(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, id: u16, len: usize, in_port: PortId) -> (Vec<u8>, Vec<u8>) {
    let src_mac = if in_port == UPLINK { [2, 0, 0, 0, 0, 0x50] } else { pod_mac(src) };
    let payload: Vec<u8> = (0..len).map(|k| k as u8).collect();
    let mut whole = Vec::new();
    PacketBuilder::ethernet2(src_mac, port_mac(in_port)).ipv4(src.octets(), dst.octets(), 64).udp(sport, dport).write(&mut whole, &payload).unwrap();
    let (head, l4) = (&whole[..34], &whole[34..]);
    let piece = |data: &[u8], offset_units: u16, more: bool| {
        let mut f = head.to_vec();
        f.extend_from_slice(data);
        let mut ip = crate::wire::Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_total_len((20 + data.len()) as u16);
        ip.set_ident(id);
        let flags_offset = if more { 0x2000 } else { 0 } | offset_units;
        f[14 + 6..14 + 8].copy_from_slice(&u16::to_be_bytes(flags_offset));
        crate::wire::Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
        f
    };
    (piece(&l4[..32], 0, true), piece(&l4[32..], 4, false))
}

fn ip_addrs(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let ip = crate::wire::Ipv4Packet::new_unchecked(&frame[14..]);
    assert_eq!(checksum::internet_checksum(&frame[14..34]), 0, "IPv4 header checksum");
    (ip.src_addr(), ip.dst_addr())
}

#[test]
fn fragmented_datagrams_through_a_service_follow_their_first_fragment_both_ways() {
    let s = Scenario::new();
    // Client -> ClusterIP: the first fragment is translated, the second follows by IP id.
    let (first, second) = udp_fragments(PODS[0], VIP, 7000, 53, 0x4242, 100, 1);
    let (v, out1) = s.send(&first, 1);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    let (_, _, backend, dport) = tuple(&out1);
    assert!(PODS.contains(&backend) && dport == 8080);
    let (v, out2) = s.send(&second, 1);
    let Verdict::Forward { port, .. } = v else { panic!("second fragment: {v:?}") };
    assert_eq!(port, pod_port(backend));
    assert_eq!(ip_addrs(&out2).1, backend, "the later fragment goes to the same backend");
    assert_eq!(&out2[34..], &second[34..], "its payload untouched");
    // Reassembled, the datagram's UDP checksum holds (the first fragment's was updated).
    let mut whole = out1[34..].to_vec();
    whole.extend_from_slice(&out2[34..]);
    let src = ip_addrs(&out1).0;
    let pseudo_sum = {
        let mut p = Vec::new();
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&backend.octets());
        p.extend_from_slice(&[0, 17]);
        p.extend_from_slice(&(whole.len() as u16).to_be_bytes());
        p.extend_from_slice(&whole);
        checksum::internet_checksum(&p)
    };
    assert_eq!(pseudo_sum, 0, "UDP checksum of the reassembled, translated datagram");
    // Backend -> client, fragmented too: both come from the Service address.
    let bport = pod_port(backend);
    let (r1, r2) = udp_fragments(backend, src, 8080, 7000, 0x0707, 100, bport);
    let (_, back1) = s.send(&r1, bport);
    let (v, back2) = s.send(&r2, bport);
    assert!(matches!(v, Verdict::Forward { port: 1, .. }), "{v:?}");
    assert_eq!(ip_addrs(&back1), (VIP, PODS[0]));
    assert_eq!(ip_addrs(&back2), (VIP, PODS[0]));
    // A later fragment of a datagram never seen: dropped.
    let (_, stray) = udp_fragments(PODS[1], VIP, 7001, 53, 0x9999, 100, 2);
    assert_eq!(s.send(&stray, 2).0, Verdict::Drop(DropReason::FragmentUnknown));
    let stage = |name: &str| s.c.stages().into_iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| v);
    assert_eq!((stage("fragments.datagrams"), stage("fragments.followed")), (2, 2));
}
