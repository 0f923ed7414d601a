//! pktgen end to end across a veth pair between two network namespaces made here (`psg-`
//! prefix, removed on drop): frames sent by one pktgen are received and matched by another
//! (or by the same process in another namespace), with counts, zero loss and sane latency
//! checked. Needs root: without it each test prints `SKIPPED: <test> needs root` and passes, or
//! fails when `CI` is set ([`root_or_skip`]).
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const PKTGEN: &str = env!("CARGO_BIN_EXE_pktgen");

#[path = "../../test-support/needs_root.rs"]
mod needs_root;
use needs_root::root_or_skip;

macro_rules! need_root {
    ($name:expr) => {
        if !root_or_skip($name) {
            return;
        }
    };
}

#[path = "../../test-support/veth_pair.rs"]
mod veth_pair;

/// Two namespaces joined by a veth pair (`eth0` on both sides), 10.98.0.1/24 and 10.98.0.2/24.
fn pair(tag: &str) -> veth_pair::VethPair {
    veth_pair::VethPair::new("psg-it", tag, "10.98.0.1/24", "10.98.0.2/24")
}

fn last_json(stdout: &[u8]) -> Value {
    let s = String::from_utf8_lossy(stdout);
    s.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or_else(|| panic!("no JSON in {s}"))
}

fn check_latency(v: &Value, samples: u64) {
    let l = &v["latency"];
    assert_eq!(l["samples"], samples, "{l}");
    let p50 = l["p50_ns"].as_u64().unwrap();
    let max = l["max_ns"].as_u64().unwrap();
    assert!(p50 > 0 && p50 < 1_000_000_000, "p50 {p50} ns");
    assert!(max >= p50 && max < 10_000_000_000, "max {max} ns");
    assert!(l["min_ns"].as_u64().unwrap() <= p50);
}

const N: u64 = 20_000;

#[test]
fn send_in_one_namespace_receive_in_the_other() {
    need_root!("send_in_one_namespace_receive_in_the_other");
    let p = pair("sr");
    let mut rx = Command::new("ip")
        .args(["netns", "exec", &p.b, PKTGEN, "recv", "-i", "eth0", "--count", &N.to_string(), "--duration", "60s", "--json", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready when it says where it receives.
    let stderr = rx.stderr.take().unwrap();
    let (tx_ready, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("receiving on") {
                let _ = tx_ready.send(());
            }
            eprintln!("recv: {line}");
        }
    });
    ready.recv_timeout(Duration::from_secs(20)).expect("the receiver did not start");
    // The receiver takes every frame of b's eth0, ARP included: b's stack cannot answer for
    // its address, so the sender is given the MAC.
    let mac_b = Command::new("ip").args(["netns", "exec", &p.b, "cat", "/sys/class/net/eth0/address"]).output().unwrap();
    let mac_b = String::from_utf8_lossy(&mac_b.stdout).trim().to_string();
    let out = Command::new("ip")
        .args([
            "netns", "exec", &p.a, PKTGEN, "send", "-i", "eth0", "--dst-ip", "10.98.0.2", "--dst-mac", &mac_b, "--src-port", "2000-2003",
            "--dst-port", "7", "--count", &N.to_string(), "--rate", "20k", "--json", "-q",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "send: {}", String::from_utf8_lossy(&out.stderr));
    let sent = last_json(&out.stdout);
    assert_eq!(sent["tx"]["sent"], N);
    assert_eq!(sent["traffic"]["flows"], 4);
    let out = rx.wait_with_output().unwrap();
    assert!(out.status.success());
    let v = last_json(&out.stdout);
    let r = &v["rx"];
    assert_eq!(r["received"], N, "{r}");
    assert_eq!(r["matched"], N);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["duplicates"], 0);
    assert_eq!(r["bad_time"], 0);
    assert_eq!(v["flows"].as_array().unwrap().len(), 4);
    for f in v["flows"].as_array().unwrap() {
        assert_eq!(f["received"], N / 4);
    }
    check_latency(&v, N);
    assert_eq!(v["rx_port"]["io"], "af_xdp");
}

#[test]
fn one_process_two_namespaces_and_the_kernel_fallback() {
    need_root!("one_process_two_namespaces_and_the_kernel_fallback");
    let p = pair("run");
    for fallback in [None, Some("kernel")] {
        let mut args = vec![
            "run", "--netns", &p.a, "-i", "eth0", "--rx-netns", &p.b, "--rx-iface", "eth0", "--dst-ip", "10.98.0.2", "--count", "20000",
            "--rate", "20k", "--size", "64,128,1518", "--json", "-q",
        ];
        if let Some(f) = fallback {
            args.extend(["--fallback", f]);
        }
        let out = Command::new(PKTGEN).args(&args).output().unwrap();
        assert!(out.status.success(), "{fallback:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v = last_json(&out.stdout);
        assert_eq!(v["tx"]["sent"], 20_000, "{fallback:?}");
        assert_eq!(v["rx"]["received"], 20_000, "{fallback:?}: {}", v["rx"]);
        assert_eq!(v["rx"]["lost"], 0);
        assert_eq!(v["rx"]["loss_basis"], "sent");
        assert_eq!(v["latency"]["kind"], "one-way");
        check_latency(&v, 20_000);
        let io = if fallback.is_some() { "kernel" } else { "af_xdp" };
        assert_eq!(v["tx_port"]["io"], io);
        assert_eq!(v["rx_port"]["io"], io);
    }
    // Nothing was left attached.
    let o = Command::new("ip").args(["-n", &p.b, "-d", "link", "show", "eth0"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout).contains("prog/xdp"), "XDP program left behind");
}

#[test]
fn round_trip_against_the_peer_stack() {
    need_root!("round_trip_against_the_peer_stack");
    let p = pair("rtt");
    let out = Command::new("ip")
        .args([
            "netns", "exec", &p.a, PKTGEN, "run", "-i", "eth0", "--proto", "icmp", "--dst-ip", "10.98.0.2", "--count", "2000", "--rate",
            "2k", "--json", "-q",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = last_json(&out.stdout);
    assert_eq!(v["latency"]["kind"], "round-trip");
    assert_eq!(v["rx"]["received"], 2000, "{}", v["rx"]);
    check_latency(&v, 2000);
    // SYNs to a closed port: the peer's stack answers each with a RST, which carries no stamp
    // and is matched to its SYN in order per flow.
    let out = Command::new("ip")
        .args([
            "netns", "exec", &p.a, PKTGEN, "run", "-i", "eth0", "--proto", "tcp-syn", "--dst-ip", "10.98.0.2", "--dst-port", "9",
            "--src-port", "3000-3003", "--count", "1000", "--rate", "1k", "--json", "-q",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = last_json(&out.stdout);
    assert_eq!(v["rx"]["replies_in_order"], 1000, "{}", v["rx"]);
    assert_eq!(v["rx"]["lost"], 0);
    assert_eq!(v["rx"]["loss_basis"], "requests");
    check_latency(&v, 1000);
}

#[test]
fn af_xdp_failure_is_an_error_not_a_silent_fallback() {
    need_root!("af_xdp_failure_is_an_error_not_a_silent_fallback");
    let p = pair("err");
    // veth has no zero-copy AF_XDP: asking for it must fail, naming the way out.
    let out = Command::new("ip")
        .args(["netns", "exec", &p.a, PKTGEN, "send", "-i", "eth0", "--dst-ip", "10.98.0.2", "--dst-mac", "02:00:00:00:00:02", "--count", "10", "--require-zerocopy"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AF_XDP on eth0 failed") && err.contains("--fallback kernel"), "{err}");
    let out = Command::new("ip")
        .args(["netns", "exec", &p.a, PKTGEN, "send", "-i", "nosuch0", "--dst-ip", "10.98.0.2", "--count", "10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch0 not found"));
}
