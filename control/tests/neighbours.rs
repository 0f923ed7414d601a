//! The neighbour tracker against the kernel: a namespace with a veth pair to a peer namespace,
//! resolved through the kernel's own ARP. Needs root: without it, it prints
//! `SKIPPED: <test> needs root` and passes, or fails when `CI` is set.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use podswitch_control::neighbours::{self, NeighbourConfig, NeighbourSnapshot, NeighbourState, Neighbours, GATEWAY_NEED};

#[path = "../../test-support/needs_root.rs"]
mod needs_root;
#[path = "../../test-support/veth_pair.rs"]
mod veth_pair;

use needs_root::root_or_skip;
use veth_pair::{sh, VethPair};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn mac_of(ns: &str) -> String {
    sh(&["ip", "netns", "exec", ns, "cat", "/sys/class/net/eth0/address"]).trim().to_string()
}

fn mac_string(m: [u8; 6]) -> String {
    podswitch_control::naming::mac_string(m)
}

/// Runs `f` on a thread inside network namespace `ns` (threads it starts are there too).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Waits up to `secs` for `cond` on the tracker's snapshot; returns the snapshot it held for.
fn wait_for(n: &Neighbours, secs: u64, what: &str, cond: impl Fn(&NeighbourSnapshot) -> bool) -> std::sync::Arc<NeighbourSnapshot> {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = n.snapshot();
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < end, "{what}: not within {secs} s; last snapshot {s:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_kernel_resolves_what_the_switch_needs_and_the_switch_cleans_up_after_itself() {
    if !root_or_skip("the_kernel_resolves_what_the_switch_needs_and_the_switch_cleans_up_after_itself") {
        return;
    }
    let pair = VethPair::new("psn", "nb", "10.98.0.1/24", "10.98.0.2/24");
    let (a, b) = (pair.a.clone(), pair.b.clone());
    sh(&["ip", "-n", &a, "route", "add", "default", "via", "10.98.0.2", "dev", "eth0"]);
    // Someone else's static entry: used, never deleted.
    sh(&["ip", "-n", &a, "neigh", "add", "10.98.0.4", "lladdr", "02:00:00:00:00:44", "dev", "eth0", "nud", "permanent"]);
    let peer_mac = mac_of(&b);
    let b2 = b.clone();
    let neigh_a = move || sh(&["ip", "-n", &a, "neigh", "show", "dev", "eth0"]);
    let neigh_a2 = neigh_a.clone();
    in_netns(&pair.a.clone(), move || {
        // The kernel's next hops: on-link, through the gateway, and the default route's gateway.
        let on_link = neighbours::next_hop_for(ip("10.98.0.7")).unwrap();
        assert_eq!((on_link.addr, on_link.via_gateway), (ip("10.98.0.7"), false));
        let eth0 = nix::net::if_::if_nametoindex("eth0").unwrap();
        assert_eq!(on_link.ifindex, eth0);
        let far = neighbours::next_hop_for(ip("198.51.100.1")).unwrap();
        assert_eq!((far.addr, far.via_gateway, far.ifindex), (ip("10.98.0.2"), true, eth0));
        assert!(matches!(neighbours::next_hop_for(ip("127.0.0.1")), Err(neighbours::NeighbourError::NotUnicast { .. })));
        assert_eq!(neighbours::default_gateway("eth0").unwrap(), Some(ip("10.98.0.2")));
        assert!(matches!(neighbours::default_gateway("nosuch0"), Err(neighbours::NeighbourError::NoInterface(_))));

        let n = Neighbours::start(NeighbourConfig { follow_default_gateway: true, ..NeighbourConfig::new("eth0") }).unwrap();
        n.set_needed(BTreeMap::from([
            (ip("10.98.0.3"), BTreeSet::from(["node-x".to_string()])),
            (ip("10.98.0.4"), BTreeSet::from(["node-y".to_string()])),
        ]));
        // The gateway resolves through the kernel, in an entry the switch made (managed).
        let s = wait_for(&n, 5, "the gateway resolves", |s| s.gateway_mac().is_some());
        assert_eq!(s.gateway, Some(ip("10.98.0.2")));
        assert_eq!(mac_string(s.gateway_mac().unwrap()), peer_mac);
        let gw = &s.entries[&ip("10.98.0.2")];
        assert!(gw.created_by_switch && gw.needed_by.contains(GATEWAY_NEED), "{gw:?}");
        let table = neigh_a();
        let line = table.lines().find(|l| l.starts_with("10.98.0.2 ")).unwrap_or_else(|| panic!("no kernel entry:\n{table}"));
        assert!(line.contains("managed"), "{line}");
        // The static entry is used as it is.
        let s = wait_for(&n, 3, "the static entry is read", |s| s.mac(ip("10.98.0.4")).is_some());
        let st = &s.entries[&ip("10.98.0.4")];
        assert_eq!((st.state, st.created_by_switch), (NeighbourState::Permanent, false));
        assert_eq!(mac_string(st.mac.unwrap()), "02:00:00:00:00:44");
        // Nobody answers for 10.98.0.3: failed, and never resolved.
        let s = wait_for(&n, 10, "10.98.0.3 fails", |s| s.entries.get(&ip("10.98.0.3")).is_some_and(|e| e.state == NeighbourState::Failed));
        assert!(!s.entries[&ip("10.98.0.3")].resolved && s.mac(ip("10.98.0.3")).is_none());

        // The peer changes its MAC and speaks (as a replaced router announces itself): the
        // kernel learns the new MAC, and so do the tables, within about a second.
        let new_mac = "02:00:00:00:00:99";
        sh(&["ip", "-n", &b2, "link", "set", "eth0", "address", new_mac]);
        sh(&["ip", "-n", &b2, "neigh", "flush", "dev", "eth0"]);
        sh(&["ip", "netns", "exec", &b2, "ping", "-c", "1", "-W", "2", "10.98.0.1"]);
        let t0 = Instant::now();
        wait_for(&n, 3, "the new MAC reaches the snapshot", |s| s.gateway_mac().map(mac_string).as_deref() == Some(new_mac));
        assert!(t0.elapsed() < Duration::from_millis(1500), "took {:?}", t0.elapsed());

        // No longer needed: the switch's own entry for 10.98.0.3 goes, the static one stays.
        n.set_needed(BTreeMap::from([(ip("10.98.0.4"), BTreeSet::from(["node-y".to_string()]))]));
        let end = Instant::now() + Duration::from_secs(3);
        while neigh_a().lines().any(|l| l.starts_with("10.98.0.3 ")) {
            assert!(Instant::now() < end, "10.98.0.3 not removed:\n{}", neigh_a());
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(n);
    });
    // Stopped: its own entries are gone, the static one stays.
    let table = neigh_a2();
    assert!(!table.lines().any(|l| l.starts_with("10.98.0.2 ") || l.starts_with("10.98.0.3 ")), "left behind:\n{table}");
    assert!(table.lines().any(|l| l.starts_with("10.98.0.4 ") && l.contains("PERMANENT")), "{table}");
}
