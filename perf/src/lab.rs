//! The benchmark topology: two pod namespaces `psb-a` and `psb-b` and a node namespace
//! `psb-node` holding both pods' host-side veths, laid out as podswitch expects pods to be
//! (host-side name and pod MAC from `podswitch_control::naming`, pod side `eth0`,
//! address /32, routes via 169.254.1.1, tx checksum offload off, IPv6 off).
//!
//! Everything lives in namespaces this module makes (prefix `psb-`), and [`destroy`] removes
//! them with every process inside. Nothing in the root namespace is touched.
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use podswitch_control::naming;

use crate::sys::{self, run, run_quiet};

pub const NS_NODE: &str = "psb-node";
pub const NS_A: &str = "psb-a";
pub const NS_B: &str = "psb-b";
pub const ALL_NS: [&str; 3] = [NS_A, NS_B, NS_NODE];
/// Kubernetes namespace of the two benchmark pods.
pub const POD_NAMESPACE: &str = "bench";

#[derive(Debug, Clone)]
pub struct Pod {
    /// Network namespace of the pod.
    pub netns: &'static str,
    /// Pod name (Kubernetes).
    pub name: &'static str,
    pub ip: Ipv4Addr,
    /// Host-side veth in `psb-node`.
    pub host_if: String,
    /// MAC of the pod's eth0.
    pub mac: String,
}

impl Pod {
    fn new(netns: &'static str, name: &'static str, ip: Ipv4Addr) -> Pod {
        Pod {
            netns,
            name,
            ip,
            host_if: naming::pod_interface(POD_NAMESPACE, name),
            mac: naming::mac_string(naming::pod_mac(ip)),
        }
    }
}

pub struct Lab {
    pub a: Pod,
    pub b: Pod,
}

fn sysctl(ns: &str, kv: &str) -> Result<()> {
    run(&["ip", "netns", "exec", ns, "sysctl", "-qw", kv]).map(|_| ())
}

impl Lab {
    pub fn pods() -> (Pod, Pod) {
        (Pod::new(NS_A, "a", Ipv4Addr::new(10, 244, 0, 10)), Pod::new(NS_B, "b", Ipv4Addr::new(10, 244, 0, 11)))
    }

    /// Creates the namespaces and veths (removing leftovers of an earlier run first).
    pub fn create() -> Result<Lab> {
        destroy();
        let (a, b) = Lab::pods();
        for ns in ALL_NS {
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1")?;
            sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1")?;
        }
        for p in [&a, &b] {
            run(&["ip", "-n", NS_NODE, "link", "add", &p.host_if, "type", "veth", "peer", "name", "eth0", "netns", p.netns])?;
            let ns = p.netns;
            run(&["ip", "-n", ns, "link", "set", "eth0", "address", &p.mac])?;
            run(&["ip", "-n", ns, "addr", "add", &format!("{}/32", p.ip), "dev", "eth0"])?;
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"])?;
            run(&["ip", "-n", ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"])?;
            run(&["ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"])?;
            sysctl(NS_NODE, &format!("net.ipv6.conf.{}.disable_ipv6=1", p.host_if))?;
            run(&["ip", "-n", NS_NODE, "link", "set", &p.host_if, "up"])?;
        }
        let lab = Lab { a, b };
        lab.wait_up(Duration::from_secs(5))?;
        Ok(lab)
    }

    fn wait_up(&self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            let node = run(&["ip", "-n", NS_NODE, "-br", "link"])?;
            let up = [&self.a, &self.b].iter().all(|p| {
                node.lines().any(|l| l.starts_with(&format!("{}@", p.host_if)) && l.split_whitespace().nth(1) == Some("UP"))
            });
            if up {
                return Ok(());
            }
            if Instant::now() >= end {
                anyhow::bail!("the benchmark veths did not come up:\n{node}");
            }
            sys::nap(Duration::from_millis(50))?;
        }
    }

    /// MAC of a pod's host-side veth (the pod's gateway MAC when podswitch routes).
    pub fn host_mac(&self, p: &Pod) -> Result<String> {
        Ok(run(&["ip", "netns", "exec", NS_NODE, "cat", &format!("/sys/class/net/{}/address", p.host_if)])?.trim().to_string())
    }

    /// The XDP attachment of a host-side veth: "native", "generic", "offload" or "none".
    pub fn xdp_mode(&self, p: &Pod) -> String {
        let out = run(&["ip", "-n", NS_NODE, "-d", "link", "show", "dev", &p.host_if]).unwrap_or_default();
        let first = out.lines().next().unwrap_or("");
        let detail = out.replace('\n', " ");
        if first.contains("xdpgeneric") || detail.contains("prog/xdpgeneric") {
            "generic".into()
        } else if first.contains("xdpoffload") {
            "offload".into()
        } else if first.contains(" xdp") || detail.contains("prog/xdp ") {
            "native".into()
        } else {
            "none".into()
        }
    }

    /// Detaches any XDP program a forwarder left on the host-side veths; true if one was there.
    pub fn clear_xdp(&self) -> bool {
        let mut left = false;
        for p in [&self.a, &self.b] {
            if self.xdp_mode(p) != "none" {
                left = true;
                for m in ["xdp", "xdpgeneric"] {
                    run_quiet(&["ip", "-n", NS_NODE, "link", "set", "dev", &p.host_if, m, "off"]);
                }
            }
        }
        left
    }

    /// Writes the Pod manifests podswitch reads (status.podIP set).
    pub fn write_manifests(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut y = String::new();
        for p in [&self.a, &self.b] {
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {POD_NAMESPACE}}}\n\
                 spec: {{containers: [{{name: c, image: bench, ports: [{{containerPort: 9, protocol: UDP}}]}}]}}\n\
                 status: {{podIP: {}}}\n",
                p.name, p.ip
            ));
        }
        std::fs::write(dir.join("pods.yaml"), y).with_context(|| format!("writing manifests to {}", dir.display()))
    }
}

fn ns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Ends every process inside our namespaces (SIGTERM, then SIGKILL) and deletes the namespaces.
/// Idempotent; touches only `psb-a`, `psb-b` and `psb-node`.
pub fn destroy() {
    destroy_namespaces(&ALL_NS);
}

/// Ends every process inside the namespaces `all` (SIGTERM, then SIGKILL after 10 s; never this
/// process) and deletes them; namespaces that do not exist are skipped. The benchmarks' shared
/// cleanup (each passes only its own namespaces).
pub fn destroy_namespaces(all: &[&str]) {
    let pids = |ns: &str| -> Vec<u32> {
        if !ns_exists(ns) {
            return Vec::new();
        }
        run(&["ip", "netns", "pids", ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&p| p != std::process::id())
            .collect()
    };
    let mut procs: Vec<u32> = all.iter().flat_map(|ns| pids(ns)).collect();
    if !procs.is_empty() {
        for &p in &procs {
            sys::signal(p, sys::Signal::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            procs.retain(|&p| sys::alive(p));
            if procs.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for &p in &procs {
            sys::signal(p, sys::Signal::SIGKILL);
        }
    }
    for ns in all {
        if ns_exists(ns) {
            run_quiet(&["ip", "netns", "del", ns]);
        }
    }
}
