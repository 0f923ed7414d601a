//! NetworkPolicy scenarios through [`process`]: verdicts at setup on the translated
//! destination, replies riding on their connection's verdict, re-judgement after a policy
//! change, and the verdict log.
use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use super::test_worker::Counted;
use super::*;
use crate::conntrack::KeyHasher;
use crate::drop_reason::DropReason;
use crate::flowlog::Decider;
use crate::tables::policy::{Peer, PodPolicy, PortRange, Rule};
use crate::tables::{NextHop, PortConfig, PortKind, SourceGuard};
use crate::wire::tcp_flags;

const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const A: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 10);
const B: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
const C: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 12);

fn mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

fn base() -> Tables {
    let mut t = Tables::new(GW);
    for (i, ip) in [A, B, C].iter().enumerate() {
        let id = i as PortId + 1;
        t.set_port(id, Some(PortConfig { name: format!("p{id}"), kind: PortKind::Pod, mac: [0xee, 0, 0, 0, 0, id as u8], source_guard: Some(SourceGuard { mac: mac(*ip), ip: *ip }) }));
        t.routes.insert(u32::from(*ip), 32, NextHop::direct(id, mac(*ip)));
        std::sync::Arc::make_mut(&mut t.policy.identities).insert(u32::from(*ip), 100 + i as u32);
    }
    t
}

/// B accepts TCP/80 from A's identity only (policy 7, rule 0).
fn b_isolated(epoch: u32) -> Tables {
    let mut t = base();
    t.policy.epoch = epoch;
    let from_a = [100].into_iter().collect();
    std::sync::Arc::make_mut(&mut t.policy.pods).insert(
        u32::from(B),
        PodPolicy {
            ingress_isolated: true,
            egress_isolated: false,
            ingress: vec![Rule { policy: 7, index: 0, peers: vec![Peer::Identities(from_a)].into(), ports: vec![PortRange { proto: 6, port: 80, end_port: 80 }] }],
            egress: vec![],
        },
    );
    t
}

fn port_of(ip: Ipv4Addr) -> PortId {
    [A, B, C].iter().position(|p| *p == ip).unwrap() as PortId + 1
}

fn seg(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let id = port_of(src);
    let mut t = PacketBuilder::ethernet2(mac(src), [0xee, 0, 0, 0, 0, id as u8]).ipv4(src.octets(), dst.octets(), 64).tcp(sport, dport, 1, 1000);
    if flags & tcp_flags::SYN != 0 {
        t = t.syn();
    }
    if flags & tcp_flags::ACK != 0 {
        t = t.ack(1);
    }
    let mut v = Vec::new();
    t.write(&mut v, &[]).unwrap();
    v
}

fn send(t: &Tables, ct: &ConnTable, c: &Counted, frame: &[u8]) -> Verdict {
    let mut buf = vec![0u8; 2048];
    buf[..frame.len()].copy_from_slice(frame);
    let in_port = port_of(Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]));
    c.process(&c.ctx(t, ct, ct.now_ms()), &mut buf, frame.len(), in_port)
}

#[test]
fn ingress_isolation_allows_only_what_a_rule_allows_and_denies_silently() {
    let (t, ct, c) = (b_isolated(1), ConnTable::new(64, KeyHasher::new(1)), Counted::new());
    assert!(matches!(send(&t, &ct, &c, &seg(A, B, 1000, 80, tcp_flags::SYN)), Verdict::Forward { port: 2, .. }));
    assert_eq!(send(&t, &ct, &c, &seg(C, B, 1000, 80, tcp_flags::SYN)), Verdict::Drop(DropReason::PolicyDenied), "C not allowed");
    assert_eq!(send(&t, &ct, &c, &seg(A, B, 1001, 81, tcp_flags::SYN)), Verdict::Drop(DropReason::PolicyDenied), "port 81 not allowed");
    // B is not isolated for egress, C not at all: B -> C and C -> A pass.
    assert!(matches!(send(&t, &ct, &c, &seg(B, C, 1000, 81, tcp_flags::SYN)), Verdict::Forward { .. }));
    assert!(matches!(send(&t, &ct, &c, &seg(C, A, 1000, 81, tcp_flags::SYN)), Verdict::Forward { .. }));
    // The reply of the allowed connection passes without being judged (B -> A:1000 would be
    // allowed anyway; the point is that the entry's verdict covers it).
    assert!(matches!(send(&t, &ct, &c, &seg(B, A, 80, 1000, tcp_flags::SYN | tcp_flags::ACK)), Verdict::Forward { port: 1, .. }));
    let mut log = Vec::new();
    c.flows.drain(&mut log);
    assert_eq!(log.len(), 5, "one record per new connection: {log:?}");
    assert!(log[0].allowed && log[0].decider == Decider::Rule { policy: 7, index: 0, ingress: true });
    assert!(!log[1].allowed && log[1].decider == Decider::DefaultDenyIngress);
    assert_eq!(log[3].decider, Decider::NotIsolated);
    assert_eq!(ct.live(), 3, "denied connections are not tracked");
    c.assert(&[(DropReason::PolicyDenied, 2)], &[("conntrack.known", 1), ("conntrack.created", 3)]);
    assert_eq!((c.policy.get(7), c.policy.get(8)), (1, 0), "connections allowed by policy 7");
}

#[test]
fn the_flow_log_says_which_direction_allowed() {
    // A may send TCP/81 to C only (policy 8, egress rule 0); B is isolated as above.
    let mut t = b_isolated(1);
    let to_c = [102].into_iter().collect();
    std::sync::Arc::make_mut(&mut t.policy.pods).insert(
        u32::from(A),
        PodPolicy {
            ingress_isolated: false,
            egress_isolated: true,
            ingress: vec![],
            egress: vec![Rule { policy: 8, index: 0, peers: vec![Peer::Identities(to_c)].into(), ports: vec![PortRange { proto: 6, port: 81, end_port: 81 }] }],
        },
    );
    let (ct, c) = (ConnTable::new(64, KeyHasher::new(4)), Counted::new());
    assert!(matches!(send(&t, &ct, &c, &seg(A, C, 1000, 81, tcp_flags::SYN)), Verdict::Forward { port: 3, .. }));
    assert_eq!(send(&t, &ct, &c, &seg(A, B, 1000, 80, tcp_flags::SYN)), Verdict::Drop(DropReason::PolicyDenied), "A's egress");
    let mut log = Vec::new();
    c.flows.drain(&mut log);
    assert_eq!(log[0].decider, Decider::Rule { policy: 8, index: 0, ingress: false }, "A's egress rule decided");
    assert_eq!(log[1].decider, Decider::DefaultDenyEgress);
    c.assert(&[(DropReason::PolicyDenied, 1)], &[("conntrack.created", 1)]);
    assert_eq!((c.policy.get(7), c.policy.get(8)), (0, 1));
}

#[test]
fn a_policy_change_cuts_established_connections_on_their_next_packet() {
    let (ct, c) = (ConnTable::new(64, KeyHasher::new(2)), Counted::new());
    let open = base(); // epoch 0, nobody isolated
    assert!(matches!(send(&open, &ct, &c, &seg(C, B, 2000, 80, tcp_flags::SYN)), Verdict::Forward { .. }));
    assert!(matches!(send(&open, &ct, &c, &seg(C, B, 2000, 80, tcp_flags::ACK)), Verdict::Forward { .. }));
    // B becomes isolated (epoch 1): the established C -> B connection is judged again and cut,
    // in both directions.
    let closed = b_isolated(1);
    assert_eq!(send(&closed, &ct, &c, &seg(C, B, 2000, 80, tcp_flags::ACK)), Verdict::Drop(DropReason::PolicyDenied));
    assert_eq!(send(&closed, &ct, &c, &seg(B, C, 80, 2000, tcp_flags::ACK)), Verdict::Drop(DropReason::PolicyDenied));
    let mut log = Vec::new();
    c.flows.drain(&mut log);
    assert!(log.iter().any(|r| r.rejudged && !r.allowed), "{log:?}");
    // The policy goes away again (epoch 2): the connection flows again.
    let mut reopened = base();
    reopened.policy.epoch = 2;
    assert!(matches!(send(&reopened, &ct, &c, &seg(C, B, 2000, 80, tcp_flags::ACK)), Verdict::Forward { .. }));
    // Judged again once per policy change (epoch 1, then 2), not per packet.
    c.assert(&[(DropReason::PolicyDenied, 2)], &[("conntrack.known", 2), ("policy.rejudged", 2), ("conntrack.created", 1)]);
}

#[test]
fn a_pod_reaching_itself_is_never_denied() {
    let (t, ct, c) = (b_isolated(1), ConnTable::new(64, KeyHasher::new(3)), Counted::new());
    // B to B: what a Service hairpin looks like to policy once translated.
    let ctx = c.ctx(&t, &ct, ct.now_ms());
    let d = super::policy::judge_new(&ctx, B, 3000, u32::from(B), 81, u32::from(B), 81, 6);
    assert!(d.allowed());
    let mut log = Vec::new();
    c.flows.drain(&mut log);
    assert_eq!(log[0].decider, Decider::SelfAccess);
}

/// An IPv4 packet of protocol `proto` with `payload` from `src` to `dst`, from `src`'s port.
fn raw_ip(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let id = port_of(src);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac(src), [0xee, 0, 0, 0, 0, id as u8])
        .ipv4(src.octets(), dst.octets(), 64)
        .write(&mut v, etherparse::IpNumber(proto), payload)
        .unwrap();
    v
}

fn echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, request: bool) -> Vec<u8> {
    let p = PacketBuilder::ethernet2(mac(src), [0xee, 0, 0, 0, 0, port_of(src) as u8]).ipv4(src.octets(), dst.octets(), 64);
    let p = if request { p.icmpv4_echo_request(id, 1) } else { p.icmpv4_echo_reply(id, 1) };
    let mut v = Vec::new();
    p.write(&mut v, b"ping").unwrap();
    v
}

/// An ICMP destination-unreachable (port) from `src` to `dst` quoting `quoted` (a frame: its IP
/// header and 8 bytes are quoted).
fn unreachable_about(src: Ipv4Addr, dst: Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac(src), [0xee, 0, 0, 0, 0, port_of(src) as u8])
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port))
        .write(&mut v, &quoted[14..14 + 28])
        .unwrap();
    v
}

/// B isolated for ingress with one rule: from A, `ports` (empty: every port and protocol).
fn b_accepts_a(ports: Vec<PortRange>) -> Tables {
    let mut t = base();
    t.policy.epoch = 1;
    std::sync::Arc::make_mut(&mut t.policy.pods).insert(
        u32::from(B),
        PodPolicy {
            ingress_isolated: true,
            egress_isolated: false,
            ingress: vec![Rule { policy: 9, index: 0, peers: vec![Peer::Identities([100].into_iter().collect())].into(), ports }],
            egress: vec![],
        },
    );
    t
}

#[test]
fn protocols_without_ports_are_judged_a_port_rule_does_not_allow_them_a_portless_rule_does() {
    const GRE: u8 = 47;
    let gre = raw_ip(A, B, GRE, &[0, 0, 0x08, 0x00, 1, 2, 3, 4]);
    let ping = echo(A, B, 77, true);
    let timestamp = {
        let mut f = echo(A, B, 78, true);
        f[34] = 13; // ICMP timestamp request: neither echo nor error
        f
    };
    // Default deny for ingress (no rule): nothing of it passes.
    let deny_all = b_accepts_a(vec![]);
    let deny_all = {
        let mut t = deny_all;
        std::sync::Arc::make_mut(&mut t.policy.pods).get_mut(&u32::from(B)).unwrap().ingress.clear();
        t
    };
    // A port rule (TCP/80): no other protocol passes.
    let port_rule = b_accepts_a(vec![PortRange { proto: 6, port: 80, end_port: 80 }]);
    for (what, t) in [("default deny", &deny_all), ("a TCP port rule", &port_rule)] {
        let (ct, c) = (ConnTable::new(64, KeyHasher::new(1)), Counted::new());
        for (name, f) in [("GRE", &gre), ("echo", &ping), ("timestamp", &timestamp)] {
            assert_eq!(send(t, &ct, &c, f), Verdict::Drop(DropReason::PolicyDenied), "{name} under {what}");
        }
        assert_eq!(ct.live(), 0);
    }
    // A rule without ports: every protocol from A, and the answers ride on the connection.
    let (t, ct, c) = (b_accepts_a(vec![]), ConnTable::new(64, KeyHasher::new(1)), Counted::new());
    assert!(matches!(send(&t, &ct, &c, &gre), Verdict::Forward { port: 2, .. }));
    assert!(matches!(send(&t, &ct, &c, &raw_ip(B, A, GRE, &[0, 0, 0x08, 0x00, 9, 9, 9, 9])), Verdict::Forward { port: 1, .. }), "GRE answer");
    assert!(matches!(send(&t, &ct, &c, &ping), Verdict::Forward { port: 2, .. }));
    assert!(matches!(send(&t, &ct, &c, &echo(B, A, 77, false)), Verdict::Forward { port: 1, .. }), "echo reply");
    assert!(matches!(send(&t, &ct, &c, &timestamp), Verdict::Forward { port: 2, .. }));
    // C is not in the rule: denied, whatever the protocol.
    assert_eq!(send(&t, &ct, &c, &raw_ip(C, B, GRE, &[0; 8])), Verdict::Drop(DropReason::PolicyDenied));
    assert_eq!(send(&t, &ct, &c, &echo(C, B, 5, true)), Verdict::Drop(DropReason::PolicyDenied));
    assert_eq!(ct.live(), 3, "GRE, echo and timestamp tracked");
}

#[test]
fn icmp_errors_pass_only_for_an_allowed_connection() {
    let (t, ct, c) = (b_isolated(1), ConnTable::new(64, KeyHasher::new(1)), Counted::new());
    // A -> B:80 allowed; B's stack answers with an error about it: passes to A.
    let syn = seg(A, B, 1000, 80, tcp_flags::SYN);
    assert!(matches!(send(&t, &ct, &c, &syn), Verdict::Forward { port: 2, .. }));
    assert!(matches!(send(&t, &ct, &c, &unreachable_about(B, A, &syn)), Verdict::Forward { port: 1, .. }));
    // A router-like error from C about that connection is RELATED too (as netfilter has it).
    assert!(matches!(send(&t, &ct, &c, &unreachable_about(C, A, &syn)), Verdict::Forward { port: 1, .. }));
    // C -> B:80 was denied (never tracked): an error about it, or about a made-up flow, cannot
    // reach B through its isolation.
    let denied = seg(C, B, 2000, 80, tcp_flags::SYN);
    assert_eq!(send(&t, &ct, &c, &denied), Verdict::Drop(DropReason::PolicyDenied));
    assert_eq!(send(&t, &ct, &c, &unreachable_about(C, B, &seg(B, C, 80, 2000, tcp_flags::SYN))), Verdict::Drop(DropReason::IcmpErrorUnrelated));
    assert_eq!(send(&t, &ct, &c, &unreachable_about(C, B, &seg(B, A, 5, 6, 0))), Verdict::Drop(DropReason::IcmpErrorUnrelated));
    // After a policy change that denies A -> B:80, errors about the connection stop too.
    let now_denied = b_accepts_a(vec![PortRange { proto: 6, port: 443, end_port: 443 }]);
    let now_denied = {
        let mut t = now_denied;
        t.policy.epoch = 2;
        t
    };
    assert_eq!(send(&now_denied, &ct, &c, &unreachable_about(B, A, &syn)), Verdict::Drop(DropReason::PolicyDenied));
}

#[test]
fn later_fragments_cannot_slip_past_a_policy() {
    let (t, ct, c) = (b_isolated(1), ConnTable::new(64, KeyHasher::new(1)), Counted::new());
    // C -> B is denied: neither the first fragment nor the later one (by itself, forged or not)
    // reaches B. A -> B:80/TCP is allowed, and its fragments follow.
    let frags = |src: Ipv4Addr, id: u16| {
        let whole = seg(src, B, 3000, 80, tcp_flags::SYN);
        let mut with_data = whole.clone();
        with_data.extend_from_slice(&[7u8; 64]);
        let head = &with_data[..34];
        let piece = |data: &[u8], units: u16, more: bool| {
            let mut f = head.to_vec();
            f.extend_from_slice(data);
            let mut ip = crate::wire::Ipv4Packet::new_unchecked(&mut f[14..]);
            ip.set_total_len((20 + data.len()) as u16);
            ip.set_ident(id);
            f[20..22].copy_from_slice(&u16::to_be_bytes(if more { 0x2000 } else { 0 } | units));
            crate::wire::Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
            f
        };
        (piece(&with_data[34..34 + 40], 0, true), piece(&with_data[34 + 40..], 5, false))
    };
    let (c1, c2) = frags(C, 11);
    assert_eq!(send(&t, &ct, &c, &c1), Verdict::Drop(DropReason::PolicyDenied));
    assert_eq!(send(&t, &ct, &c, &c2), Verdict::Drop(DropReason::FragmentUnknown), "after a denied first fragment");
    let (_, forged) = frags(C, 12);
    assert_eq!(send(&t, &ct, &c, &forged), Verdict::Drop(DropReason::FragmentUnknown), "never seen");
    let (a1, a2) = frags(A, 13);
    assert!(matches!(send(&t, &ct, &c, &a1), Verdict::Forward { port: 2, .. }));
    assert!(matches!(send(&t, &ct, &c, &a2), Verdict::Forward { port: 2, .. }));
}
