//! Two network namespaces joined by a veth pair, for tests that need real sockets between two
//! stacks: `eth0` on both sides with the addresses given, IPv6 off, TX checksum offload off
//! (frames cross AF_XDP or raw sockets, which do not complete partial checksums), both ends
//! up before `new` returns. The namespaces (named `PREFIX<pid>-TAG-a` and `-b`) and every
//! process in them are removed on drop, also when the test fails. Needs root.
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs a command; panics with its stderr when it fails; returns its stdout.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// See the module doc.
pub struct VethPair {
    pub a: String,
    pub b: String,
}

impl VethPair {
    /// `a_cidr`, `b_cidr`: the addresses of `eth0` in A and in B (`10.98.0.1/24`).
    pub fn new(prefix: &str, tag: &str, a_cidr: &str, b_cidr: &str) -> VethPair {
        let pid = std::process::id();
        let p = VethPair { a: format!("{prefix}{pid}-{tag}-a"), b: format!("{prefix}{pid}-{tag}-b") };
        p.cleanup();
        for ns in [&p.a, &p.b] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        }
        sh(&["ip", "-n", &p.a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &p.b]);
        for (ns, ip) in [(&p.a, a_cidr), (&p.b, b_cidr)] {
            sh(&["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"]);
            sh(&["ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let o = Command::new("ip").args(["-n", &p.b, "-br", "link", "show", "eth0"]).output().unwrap();
            if String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1) == Some("UP") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn cleanup(&self) {
        for ns in [&self.a, &self.b] {
            if std::path::Path::new("/run/netns").join(ns).exists() {
                if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).status();
                    }
                }
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        self.cleanup();
    }
}
