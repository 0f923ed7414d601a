//! The uplink's XDP program in the kernel, rule by rule, across a veth pair between two network
//! namespaces made here (`psw-uf` prefix, removed on drop, also when the test fails): A is the
//! node (10.123.2.1, the program on its `eth0` in the uplink role), B a host on its network. No
//! socket is registered, so what a rule redirects falls back to the kernel: the rule counters say
//! what the program would have given the switch, and the node's own traffic (ICMP, ARP for its
//! address, a port it serves) must match no rule. Needs root: without it the test prints
//! `SKIPPED: <test> needs root` and passes, or fails when `CI` is set.
//!
//! The program is attached by this test binary run again inside A (`ip netns exec`, so that
//! `/sys/class/net` is A's), which reports the counters when told to.
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use switch::afxdp::filter::{OwnedPort, UplinkFilter};
use switch::afxdp::xdp::{XdpAttachment, XdpRole};

#[path = "../../test-support/needs_root.rs"]
mod needs_root;
use needs_root::root_or_skip;

#[path = "../../test-support/veth_pair.rs"]
mod veth_pair;
use veth_pair::{sh, VethPair};

const NODE: Ipv4Addr = Ipv4Addr::new(10, 123, 2, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 123, 2, 2);
/// An address on the link the switch answers ARP for (nobody else has it).
const ARP_TARGET: Ipv4Addr = Ipv4Addr::new(10, 123, 2, 77);
const CHILD_ENV: &str = "PSW_UPLINK_FILTER_CHILD";
const TEST: &str = "the_uplink_program_owns_only_what_its_filter_says";

fn filter() -> UplinkFilter {
    UplinkFilter {
        node_ip: Some(NODE),
        masquerade_ports: (61000, 65535),
        vxlan_port: Some(8472),
        prefixes: [(Ipv4Addr::new(10, 96, 0, 0), 12), (Ipv4Addr::new(10, 244, 0, 0), 24)].into(),
        ports: [OwnedPort { ip: NODE, proto: 17, port: 30080 }].into(),
        arp_targets: [ARP_TARGET].into(),
    }
}

/// Inside A: attach, write the filter, say "ready", wait for a line, print the counters.
fn child() {
    let mut att = XdpAttachment::attach_as("eth0", None, XdpRole::Uplink).expect("attach in the uplink role");
    att.set_filter(&filter()).expect("write the filter");
    assert_eq!(att.filter(), Some(&filter()));
    // Written again unchanged: nothing to do, same contents.
    att.set_filter(&filter()).expect("write the same filter");
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let c = att.rule_counters();
    println!(
        "counters {} {} {} {} {} {} {} {}",
        c.redirected, c.passed, c.owned_prefix, c.owned_port, c.masquerade_port, c.vxlan_port, c.icmp_error, c.arp_request
    );
}

fn python(ns: &str, program: &str) {
    sh(&["ip", "netns", "exec", ns, "python3", "-c", program]);
}

#[test]
fn the_uplink_program_owns_only_what_its_filter_says() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    if !root_or_skip(TEST) {
        return;
    }
    let pair = VethPair::new("psw-uf", "f", &format!("{NODE}/24"), &format!("{PEER}/24"));
    let (a, b) = (pair.a.clone(), pair.b.clone());
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new("ip")
        .args(["netns", "exec", &a])
        .arg(&exe)
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the child ended before it was ready");
    }
    // The node's own traffic: ARP for its address and ICMP echo both ways pass to its kernel.
    sh(&["ip", "netns", "exec", &b, "ping", "-c", "2", "-i", "0.2", "-W", "2", &NODE.to_string()]);
    // The node's own pings: their echo replies are the node's, unless the identifier is in the
    // masquerade range (pods' pings leave with one): then the switch's (and, no socket being
    // registered here, passed all the same).
    sh(&["ip", "netns", "exec", &a, "ping", "-c", "1", "-W", "2", "-e", "1234", &PEER.to_string()]);
    sh(&["ip", "netns", "exec", &a, "ping", "-c", "1", "-W", "2", "-e", "61234", &PEER.to_string()]);
    // B → A: three UDP datagrams to each of: a NodePort, a masquerade port, the VXLAN port, a
    // Service address (routed through A), and a port of the node's own that is none of those.
    sh(&["ip", "-n", &b, "route", "add", "10.96.0.0/12", "via", &NODE.to_string()]);
    python(
        &b,
        &format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for _ in range(3):\n    for a in [('{NODE}', 30080), ('{NODE}', 61001), ('{NODE}', 8472), ('10.96.0.10', 53), \
             ('{NODE}', 5000), ('{NODE}', 30081)]:\n        s.sendto(b'x', a)\n"
        ),
    );
    // A's own connection from a masquerade port: B's port unreachable about it is the switch's.
    python(
        &a,
        &format!(
            "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('{NODE}', 61005))\n\
             s.sendto(b'x', ('{PEER}', 9))\ntime.sleep(0.3)\n\
             t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nt.bind(('{NODE}', 40000))\nt.sendto(b'x', ('{PEER}', 9))\n\
             time.sleep(0.3)\n"
        ),
    );
    // ARP for the switch's address (nobody answers it: ping fails).
    let _ = Command::new("ip").args(["netns", "exec", &b, "ping", "-c", "1", "-W", "1", &ARP_TARGET.to_string()]).output();
    writeln!(c.stdin.take().unwrap(), "done").unwrap();
    line.clear();
    while !line.contains("counters ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the child ended without its counters");
    }
    assert!(c.wait().unwrap().success());
    // libtest may print "test NAME ... " before the child's own output on the same line.
    let counters = &line[line.find("counters ").unwrap()..];
    let n: Vec<u64> = counters.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
    let [redirected, passed, prefix, port, masquerade, vxlan, icmp_error, arp] = n[..] else { panic!("{line}") };
    assert_eq!(redirected, 0, "no socket is registered: {line}");
    assert_eq!((prefix, port, masquerade, vxlan), (3, 3, 4, 3), "prefix, NodePort, masquerade (3 UDP, 1 echo reply), VXLAN: {line}");
    assert_eq!(icmp_error, 1, "only the error about the masquerade port: {line}");
    assert!(arp >= 1, "ARP requests for the switch's address: {line}");
    // Passed: the rules' frames (fallen back) and the node's own (ARP, echoes, 5000, 30081,
    // the error about port 40000, unless rate-limited).
    assert!(passed >= 14 + arp + 3 + 6, "{line}");
    drop(pair);
}
