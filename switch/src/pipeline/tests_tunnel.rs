//! Scenario tests of the tunnel stage: real frames (etherparse) between a local pod and pods of
//! two other nodes, through [`process`], encapsulated and decapsulated, with every counter.
use std::net::Ipv4Addr;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use super::test_worker::Counted;
use super::*;
use crate::conntrack::KeyHasher;
use crate::tables::overlay::{Overlay, TUNNEL_MAC};
use crate::tables::{NextHop, PortConfig, PortKind, SourceGuard};
use crate::wire::vxlan::{self, Tunnel};
use crate::wire::{checksum, MacAddr};

const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 10);
const A_MAC: [u8; 6] = [0x0a, 0x58, 10, 244, 0, 10];
const PORT_A_MAC: [u8; 6] = [0xee, 0, 0, 0, 0, 1];
const UPLINK_MAC: [u8; 6] = [0xee, 0, 0, 0, 0, 9];
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
/// Node 2 (pods 10.244.1.0/24) and node 3 (10.244.2.0/24) on the underlay.
const NODE2_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 3);
const NODE2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 3];
const NODE3_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 4);
const NODE3_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 4];
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);
const A: PortId = 1;
const UPLINK: PortId = 9;
const TUNNEL: PortId = 7;
const VNI: u32 = 1;

fn tunnel_to(ip: Ipv4Addr, mac: [u8; 6]) -> Tunnel {
    Tunnel { src_mac: MacAddr(UPLINK_MAC), dst_mac: MacAddr(mac), src_ip: NODE_IP, dst_ip: ip, dst_port: vxlan::DEFAULT_PORT, vni: VNI }
}

fn tables() -> Tables {
    let mut t = Tables::new(GW);
    let guard = Some(SourceGuard { mac: A_MAC, ip: A_IP });
    t.set_port(A, Some(PortConfig { name: "x/a".into(), kind: PortKind::Pod, mac: PORT_A_MAC, source_guard: guard }));
    t.set_port(UPLINK, Some(PortConfig { name: "uplink".into(), kind: PortKind::Uplink, mac: UPLINK_MAC, source_guard: None }));
    t.set_port(TUNNEL, Some(PortConfig { name: "tunnel".into(), kind: PortKind::Tunnel, mac: TUNNEL_MAC, source_guard: None }));
    t.routes.insert(u32::from(A_IP), 32, NextHop::direct(A, A_MAC));
    t.routes.insert(0, 0, NextHop::direct(UPLINK, ROUTER_MAC));
    let mut o = Overlay { enabled: true, uplink: UPLINK, tunnel_port: TUNNEL, node_ip: NODE_IP, vni: VNI, inner_mtu: 1450, ..Default::default() };
    let n2 = o.add_tunnel(tunnel_to(NODE2_IP, NODE2_MAC));
    let n3 = o.add_tunnel(tunnel_to(NODE3_IP, NODE3_MAC));
    t.routes.insert(u32::from(Ipv4Addr::new(10, 244, 1, 0)), 24, NextHop { port: TUNNEL, dst_mac: TUNNEL_MAC, tunnel: n2 });
    t.routes.insert(u32::from(Ipv4Addr::new(10, 244, 2, 0)), 24, NextHop { port: TUNNEL, dst_mac: TUNNEL_MAC, tunnel: n3 });
    t.overlay = o;
    // Pods' traffic leaving the cluster (outside 10.244.0.0/16) is masqueraded.
    t.services.snat_ip = Some(NODE_IP);
    t.egress.masquerade = true;
    t.egress.exempt.insert(u32::from(Ipv4Addr::new(10, 244, 0, 0)), 16, ());
    t
}

fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, payload_len: usize, df: bool) -> Vec<u8> {
    udp_ports(src_mac, dst_mac, src, dst, sport, 81, payload_len, df)
}

#[allow(clippy::too_many_arguments)]
fn udp_ports(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload_len: usize, df: bool) -> Vec<u8> {
    // etherparse sets DF; cleared below where asked.
    let b = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src.octets(), dst.octets(), 64);
    let mut v = Vec::new();
    b.udp(sport, dport).write(&mut v, &vec![0x5a; payload_len]).unwrap();
    if !df {
        v[20] &= !0x40;
        v[24..26].copy_from_slice(&[0, 0]);
        let sum = checksum::internet_checksum(&v[14..34]);
        v[24..26].copy_from_slice(&sum.to_be_bytes());
    }
    v
}

/// `inner` as node `from` (underlay address and MAC) sends it to this node.
fn from_node(from: Ipv4Addr, from_mac: [u8; 6], vni: u32, inner: &[u8]) -> Vec<u8> {
    let t = Tunnel { src_mac: MacAddr(from_mac), dst_mac: MacAddr(UPLINK_MAC), src_ip: from, dst_ip: NODE_IP, dst_port: vxlan::DEFAULT_PORT, vni };
    let mut buf = vec![0u8; vxlan::OVERHEAD];
    buf.extend_from_slice(inner);
    t.write_outer(&mut buf, 50001).unwrap();
    buf
}

/// A frame from a pod of node 2 (inner source `src`) to pod a, as node 2's switch sends it.
fn remote_to_a(src: Ipv4Addr, sport: u16) -> Vec<u8> {
    from_node(NODE2_IP, NODE2_MAC, VNI, &udp_frame(TUNNEL_MAC, TUNNEL_MAC, src, A_IP, sport, 16, true))
}

fn run_ct(frame: &[u8], in_port: PortId, t: &Tables, ct: &ConnTable, c: &Counted) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 2048];
    buf[..frame.len()].copy_from_slice(frame);
    let v = c.process(&c.ctx(t, ct, ct.now_ms()), &mut buf, frame.len(), in_port);
    let len = match v {
        Verdict::Forward { len, .. } => len,
        Verdict::Drop(_) => frame.len(),
    };
    buf.truncate(len);
    (v, buf)
}

fn fresh() -> (Tables, ConnTable, Counted) {
    (tables(), ConnTable::new(1024, KeyHasher::new(1)), Counted::new())
}

#[test]
fn a_pod_reaches_a_remote_pod_through_its_nodes_tunnel() {
    let (t, ct, c) = fresh();
    let inner = udp_frame(A_MAC, PORT_A_MAC, A_IP, REMOTE_POD, 40000, 16, true);
    let (v, out) = run_ct(&inner, A, &t, &ct, &c);
    assert_eq!(v, Verdict::Forward { port: UPLINK, len: inner.len() + vxlan::OVERHEAD });
    c.assert(&[], &[("conntrack.created", 1), ("tunnel.encapsulated", 1)]);
    let p = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else { panic!() };
    assert_eq!((eth.source(), eth.destination()), (UPLINK_MAC, NODE2_MAC), "outer MACs: the uplink's, node 2's");
    let Some(NetSlice::Ipv4(ip)) = p.net else { panic!() };
    assert_eq!((ip.header().source_addr(), ip.header().destination_addr()), (NODE_IP, NODE2_IP));
    assert!(ip.header().dont_fragment());
    let Some(TransportSlice::Udp(u)) = p.transport else { panic!() };
    assert_eq!(u.destination_port(), vxlan::DEFAULT_PORT);
    assert!(u.source_port() >= 49152, "outer source port from the flow hash, in 49152-65535");
    // The inner frame: for node 2's tunnel port, TTL decremented, otherwise as sent.
    let inner_out = &out[vxlan::OVERHEAD..];
    assert_eq!(&inner_out[0..6], &TUNNEL_MAC);
    assert_eq!(&inner_out[6..12], &TUNNEL_MAC);
    assert_eq!(inner_out[22], 63);
    assert_eq!(&inner_out[26..34], &inner[26..34], "addresses unchanged: pods talk without NAT");
    // Another flow from the same pod takes another outer source port (RSS spreads tunnels);
    // the same flow keeps its port.
    let ports: std::collections::BTreeSet<u16> = (0..16u16)
        .map(|i| {
            let (_, o) = run_ct(&udp_frame(A_MAC, PORT_A_MAC, A_IP, REMOTE_POD, 41000 + i, 16, true), A, &t, &ct, &c);
            u16::from_be_bytes([o[34], o[35]])
        })
        .collect();
    assert!(ports.len() > 8, "16 flows on {} source ports", ports.len());
    let (_, again) = run_ct(&inner, A, &t, &ct, &c);
    assert_eq!(again[34..36], out[34..36]);
}

#[test]
fn a_tunnel_frame_from_a_node_is_delivered_to_the_local_pod_and_the_reply_goes_back_through_the_tunnel() {
    let (t, ct, c) = fresh();
    let frame = remote_to_a(REMOTE_POD, 5000);
    let (v, out) = run_ct(&frame, UPLINK, &t, &ct, &c);
    let inner_len = frame.len() - vxlan::OVERHEAD;
    assert_eq!(v, Verdict::Forward { port: A, len: inner_len });
    c.assert(&[], &[("tunnel.decapsulated", 1), ("conntrack.created", 1)]);
    assert_eq!(&out[0..6], &A_MAC);
    assert_eq!(&out[6..12], &PORT_A_MAC);
    assert_eq!(&out[26..30], &REMOTE_POD.octets());
    assert_eq!(out[22], 63);
    // a answers: out through node 2's tunnel (the first answer changes the connection's state:
    // the full way, as a known connection).
    let reply = udp_ports(A_MAC, PORT_A_MAC, A_IP, REMOTE_POD, 81, 5000, 16, true);
    let (v, out) = run_ct(&reply, A, &t, &ct, &c);
    assert_eq!(v, Verdict::Forward { port: UPLINK, len: reply.len() + vxlan::OVERHEAD });
    assert_eq!(&out[30..34], &NODE2_IP.octets());
    // Node 2's next packet is decapsulated and, the flow being steady, taken on the fast path
    // (which counts nothing); so is a's next answer.
    let (v, _) = run_ct(&remote_to_a(REMOTE_POD, 5000), UPLINK, &t, &ct, &c);
    assert_eq!(v, Verdict::Forward { port: A, len: inner_len });
    let (v, _) = run_ct(&reply, A, &t, &ct, &c);
    assert_eq!(v, Verdict::Forward { port: UPLINK, len: reply.len() + vxlan::OVERHEAD });
    c.assert(&[], &[("tunnel.decapsulated", 2), ("conntrack.known", 1), ("conntrack.created", 1), ("tunnel.encapsulated", 2)]);
}

#[test]
fn the_sending_node_may_speak_for_itself_and_its_own_pods_only() {
    let (t, ct, c) = fresh();
    // Node 2's own address (masqueraded traffic) is taken.
    let (v, _) = run_ct(&remote_to_a(NODE2_IP, 5001), UPLINK, &t, &ct, &c);
    assert!(matches!(v, Verdict::Forward { port: A, .. }), "{v:?}");
    for spoofed in [
        Ipv4Addr::new(10, 244, 2, 5), // node 3's pod
        NODE3_IP,                     // node 3
        Ipv4Addr::new(10, 244, 0, 11), // a pod of this node
        Ipv4Addr::new(8, 8, 8, 8),    // the world
        GW,
    ] {
        let (v, _) = run_ct(&remote_to_a(spoofed, 5002), UPLINK, &t, &ct, &c);
        assert_eq!(v, Verdict::Drop(DropReason::TunnelSpoofedSource), "inner source {spoofed}");
    }
    c.assert(&[(DropReason::TunnelSpoofedSource, 5)], &[("tunnel.decapsulated", 1), ("conntrack.created", 1)]);
}

#[test]
fn tunnel_frames_from_strangers_with_another_vni_or_broken_headers_are_dropped() {
    let (t, ct, c) = fresh();
    let inner = udp_frame(TUNNEL_MAC, TUNNEL_MAC, REMOTE_POD, A_IP, 5000, 16, true);
    let stranger = from_node(Ipv4Addr::new(172, 18, 0, 99), [2, 0, 0, 0, 0, 99], VNI, &inner);
    assert_eq!(run_ct(&stranger, UPLINK, &t, &ct, &c).0, Verdict::Drop(DropReason::TunnelUnknownPeer));
    let other_vni = from_node(NODE2_IP, NODE2_MAC, 2, &inner);
    assert_eq!(run_ct(&other_vni, UPLINK, &t, &ct, &c).0, Verdict::Drop(DropReason::TunnelBadVni));
    let mut bad_sum = remote_to_a(REMOTE_POD, 5000);
    bad_sum[24] ^= 0xff;
    assert_eq!(run_ct(&bad_sum, UPLINK, &t, &ct, &c).0, Verdict::Drop(DropReason::TunnelMalformed));
    let mut no_vni_flag = remote_to_a(REMOTE_POD, 5000);
    no_vni_flag[42] = 0;
    assert_eq!(run_ct(&no_vni_flag, UPLINK, &t, &ct, &c).0, Verdict::Drop(DropReason::TunnelMalformed));
    let short = remote_to_a(REMOTE_POD, 5000);
    assert_eq!(run_ct(&short[..short.len() - 30], UPLINK, &t, &ct, &c).0, Verdict::Drop(DropReason::TunnelMalformed));
    let mut arp_inside = remote_to_a(REMOTE_POD, 5000);
    arp_inside[vxlan::OVERHEAD + 12..vxlan::OVERHEAD + 14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(run_ct(&arp_inside, UPLINK, &t, &ct, &c).0, Verdict::Drop(DropReason::TunnelMalformed));
    let mut not_my_mac = remote_to_a(REMOTE_POD, 5000);
    not_my_mac[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x77]);
    assert_eq!(run_ct(&not_my_mac, UPLINK, &t, &ct, &c).0, Verdict::Drop(DropReason::DstMacNotSwitch));
    c.assert(
        &[
            (DropReason::DstMacNotSwitch, 1),
            (DropReason::TunnelMalformed, 4),
            (DropReason::TunnelUnknownPeer, 1),
            (DropReason::TunnelBadVni, 1),
        ],
        &[],
    );
}

#[test]
fn a_packet_too_big_for_the_tunnel_is_answered_with_fragmentation_needed_or_dropped_without_df() {
    let (t, ct, c) = fresh();
    // IPv4 length 1451 > 1450.
    let big = udp_frame(A_MAC, PORT_A_MAC, A_IP, REMOTE_POD, 40000, 1451 - 28, true);
    let (v, out) = run_ct(&big, A, &t, &ct, &c);
    let Verdict::Forward { port: A, len } = v else { panic!("{v:?}") };
    assert_eq!(len, 14 + 20 + 8 + 28);
    assert_eq!(&out[0..6], &A_MAC);
    assert_eq!(&out[26..30], &GW.octets(), "from the gateway");
    assert_eq!(&out[30..34], &A_IP.octets());
    assert_eq!((out[34], out[35]), (3, 4), "destination unreachable, fragmentation needed");
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), 1450, "next-hop MTU");
    assert_eq!(checksum::internet_checksum(&out[34..len]), 0);
    // Exactly the MTU passes.
    let fits = udp_frame(A_MAC, PORT_A_MAC, A_IP, REMOTE_POD, 40001, 1450 - 28, true);
    assert!(matches!(run_ct(&fits, A, &t, &ct, &c).0, Verdict::Forward { port: UPLINK, .. }));
    // Without DF: dropped (pods' MTU leaves room; nothing fragments here).
    let no_df = udp_frame(A_MAC, PORT_A_MAC, A_IP, REMOTE_POD, 40002, 1451 - 28, false);
    assert_eq!(run_ct(&no_df, A, &t, &ct, &c).0, Verdict::Drop(DropReason::FragmentationNeeded));
    // An established flow's big packet too (the fast path leaves it to the full one).
    let (v, _) = run_ct(&udp_frame(A_MAC, PORT_A_MAC, A_IP, REMOTE_POD, 40001, 1451 - 28, true), A, &t, &ct, &c);
    assert!(matches!(v, Verdict::Forward { port: A, .. }), "{v:?}");
    c.assert(
        &[(DropReason::FragmentationNeeded, 3)],
        &[("conntrack.known", 1), ("conntrack.created", 3), ("icmp.fragmentation_needed", 2), ("tunnel.encapsulated", 1), ("answered", 2)],
    );
}

#[test]
fn the_gateway_answers_a_remote_pods_ping_through_the_tunnel() {
    let (t, ct, c) = fresh();
    let mut inner = Vec::new();
    PacketBuilder::ethernet2(TUNNEL_MAC, TUNNEL_MAC).ipv4(REMOTE_POD.octets(), GW.octets(), 64).icmpv4_echo_request(7, 1).write(&mut inner, b"ping").unwrap();
    let (v, out) = run_ct(&from_node(NODE2_IP, NODE2_MAC, VNI, &inner), UPLINK, &t, &ct, &c);
    assert_eq!(v, Verdict::Forward { port: UPLINK, len: inner.len() + vxlan::OVERHEAD });
    assert_eq!(&out[30..34], &NODE2_IP.octets(), "back to node 2");
    let reply = &out[vxlan::OVERHEAD..];
    assert_eq!(&reply[26..30], &GW.octets());
    assert_eq!(&reply[30..34], &REMOTE_POD.octets());
    assert_eq!(reply[34], 0, "echo reply");
    c.assert(&[], &[("tunnel.decapsulated", 1), ("icmp.echo_replies", 1), ("tunnel.encapsulated", 1), ("answered", 1)]);
}

#[test]
fn without_an_overlay_a_vxlan_frame_to_the_node_is_just_a_packet() {
    let (mut t, ct, c) = fresh();
    t.overlay.enabled = false;
    // Not taken apart: routed as the UDP packet it is (here: out the default route, the node's
    // address having no route of its own in these tables).
    let (v, _) = run_ct(&remote_to_a(REMOTE_POD, 5000), UPLINK, &t, &ct, &c);
    assert!(matches!(v, Verdict::Forward { port: UPLINK, .. }), "{v:?}");
    c.assert(&[], &[("conntrack.created", 1)]);
}

#[test]
fn a_pods_connection_out_of_the_cluster_is_masqueraded_and_its_reply_comes_back() {
    let (t, ct, c) = fresh();
    let world = Ipv4Addr::new(198, 51, 100, 7);
    let out_frame = udp_ports(A_MAC, PORT_A_MAC, A_IP, world, 40000, 53, 16, true);
    let (v, out) = run_ct(&out_frame, A, &t, &ct, &c);
    assert_eq!(v, Verdict::Forward { port: UPLINK, len: out_frame.len() });
    assert_eq!(&out[0..6], &ROUTER_MAC);
    assert_eq!(&out[26..30], &NODE_IP.octets(), "source: the node's address");
    assert_eq!(&out[30..34], &world.octets());
    let port = u16::from_be_bytes([out[34], out[35]]);
    assert!(masquerade::PORTS.contains(&port), "masquerade port {port}");
    assert!(ip_and_udp_checksums_hold(&out));
    // The answer to the node's address and that port goes back to the pod, untranslated.
    let answer = udp_ports(ROUTER_MAC, UPLINK_MAC, world, NODE_IP, 53, port, 16, true);
    let (v, back) = run_ct(&answer, UPLINK, &t, &ct, &c);
    assert_eq!(v, Verdict::Forward { port: A, len: answer.len() });
    assert_eq!(&back[30..34], &A_IP.octets());
    assert_eq!(u16::from_be_bytes([back[36], back[37]]), 40000);
    assert!(ip_and_udp_checksums_hold(&back));
    // Pods of other nodes are reached with the pod's own address (the first test checks the
    // bytes).
    c.assert(
        &[],
        &[("conntrack.known", 1), ("masquerade.masqueraded", 1), ("masquerade.egress", 1), ("conntrack.created", 1)],
    );
}

fn icmp_echo(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, reply: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut f = Vec::new();
    let b = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src.octets(), dst.octets(), 64);
    match reply {
        false => b.icmpv4_echo_request(id, seq).write(&mut f, b"ping data").unwrap(),
        true => b.icmpv4_echo_reply(id, seq).write(&mut f, b"ping data").unwrap(),
    }
    f
}

/// The IPv4 header and ICMP checksums of `f` hold.
fn ip_and_icmp_checksums_hold(f: &[u8]) -> bool {
    checksum::internet_checksum(&f[14..34]) == 0 && checksum::internet_checksum(&f[34..]) == 0
}

#[test]
fn a_pods_ping_out_of_the_cluster_is_masqueraded_by_identifier_and_its_replies_come_back() {
    let (t, ct, c) = fresh();
    let world = Ipv4Addr::new(198, 51, 100, 7);
    let mut ids = Vec::new();
    for seq in 1..=2u16 {
        let (v, out) = run_ct(&icmp_echo(A_MAC, PORT_A_MAC, A_IP, world, false, 9, seq), A, &t, &ct, &c);
        assert!(matches!(v, Verdict::Forward { port: UPLINK, .. }), "{v:?}");
        assert_eq!(&out[26..30], &NODE_IP.octets(), "source: the node's address");
        assert_eq!(&out[30..34], &world.octets());
        let id = u16::from_be_bytes([out[38], out[39]]);
        assert!(masquerade::PORTS.contains(&id), "identifier {id} in the masquerade range");
        assert_eq!(u16::from_be_bytes([out[40], out[41]]), seq, "sequence kept");
        assert!(ip_and_icmp_checksums_hold(&out), "checksums after the rewrite");
        ids.push(id);
        // The reply to the node's address and that identifier goes back to the pod with its own.
        let (v, back) = run_ct(&icmp_echo(ROUTER_MAC, UPLINK_MAC, world, NODE_IP, true, id, seq), UPLINK, &t, &ct, &c);
        assert!(matches!(v, Verdict::Forward { port: A, .. }), "{v:?}");
        assert_eq!(&back[26..30], &world.octets());
        assert_eq!(&back[30..34], &A_IP.octets());
        assert_eq!(u16::from_be_bytes([back[38], back[39]]), 9, "the pod's own identifier");
        assert!(ip_and_icmp_checksums_hold(&back));
    }
    assert_eq!(ids[0], ids[1], "one ping session, one identifier");
    // Another pod identifier is another session, on another identifier.
    let (_, other) = run_ct(&icmp_echo(A_MAC, PORT_A_MAC, A_IP, world, false, 10, 1), A, &t, &ct, &c);
    assert_ne!(u16::from_be_bytes([other[38], other[39]]), ids[0]);
    // A reply on an identifier nobody was given is not the pod's.
    let (v, stray) = run_ct(&icmp_echo(ROUTER_MAC, UPLINK_MAC, world, NODE_IP, true, 64000, 1), UPLINK, &t, &ct, &c);
    assert!(!matches!(v, Verdict::Forward { port: A, .. }), "{v:?}");
    assert_eq!(&stray[30..34], &NODE_IP.octets(), "{v:?}");
    c.assert(&[], &[("conntrack.known", 3), ("masquerade.masqueraded", 2), ("masquerade.egress", 2), ("conntrack.created", 3)]);
}

fn ip_and_udp_checksums_hold(f: &[u8]) -> bool {
    let p = SlicedPacket::from_ethernet(f).unwrap();
    let Some(NetSlice::Ipv4(ip)) = p.net else { return false };
    let Some(TransportSlice::Udp(u)) = p.transport else { return false };
    let h = ip.header();
    checksum::internet_checksum(&f[14..34]) == 0
        && u.to_header().calc_checksum_ipv4_raw(h.source(), h.destination(), u.payload()).ok() == Some(u.checksum())
}
