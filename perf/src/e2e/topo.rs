//! The e2e topology: namespaces `pse-a` and `pse-b` (pods ns0/a and ns0/b), `pse-x` (a client
//! outside the cluster) and `pse-node` (the node), made by the benchmark and removed by
//! [`destroy`] with every process inside.
//!
//! - Pods: `eth0` with MAC `0a:58:`+IP, address /32, default route via 169.254.1.1, TX checksum
//!   offload off, IPv6 off; the host side in `pse-node` named as podswitch names it
//!   (`ps` + SHA-1(`ns0.a`)). One queue per veth, so that every frame of every path lands on
//!   queue 0, where pktgen and the forwarders read.
//! - External: `eth0` 172.18.0.100/24 in `pse-x`, its peer `pse-uplink` in `pse-node` (the
//!   switch's uplink port).
//! - The node's kernel, configured as a kube-proxy node is (used when no XDP forwarder holds
//!   the veths): the InternalIP on `lo`, IPv4 forwarding, /32 routes to the pods over their
//!   veths, the node network over `pse-uplink`, static neighbours (the receivers are AF_XDP
//!   sockets that answer no ARP), and RPS steering the receive processing of the ingress veths
//!   to the forwarding core, so that the kernel forwards on the same core the switch and OVS
//!   poll on (without it the whole path would run in softirq on the generator's core).
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use podswitch_control::naming;

use super::objects::{EXTERNAL_IP, NODE_IP, NODE_PREFIX, POD_A_IP, POD_B_IP, POD_NS};
use crate::sys::{self, run, run_quiet};

pub const NS_NODE: &str = "pse-node";
pub const NS_A: &str = "pse-a";
pub const NS_B: &str = "pse-b";
pub const NS_X: &str = "pse-x";
pub const ALL_NS: [&str; 4] = [NS_A, NS_B, NS_X, NS_NODE];
pub const UPLINK: &str = "pse-uplink";

/// One end host: its namespace, eth0 address and MAC, and the peer interface in `pse-node`.
#[derive(Debug, Clone)]
pub struct Host {
    pub netns: &'static str,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub node_if: String,
}

/// The MAC podswitch expects of a pod (and the lab gives `external`): `0a:58` + the IP.
fn mac_of(ip: Ipv4Addr) -> String {
    naming::mac_string(naming::pod_mac(ip))
}

pub struct Topo {
    pub a: Host,
    pub b: Host,
    pub x: Host,
}

fn sysctl(ns: &str, kv: &str) -> Result<()> {
    run(&["ip", "netns", "exec", ns, "sysctl", "-qw", kv]).map(|_| ())
}

fn write_sys(ns: &str, path: &str, value: &str) -> Result<()> {
    run(&["ip", "netns", "exec", ns, "sh", "-c", &format!("echo {value} > {path}")]).map(|_| ())
}

impl Topo {
    pub fn hosts() -> Topo {
        let pod = |netns, name, ip| Host { netns, ip, mac: mac_of(ip), node_if: naming::pod_interface(POD_NS, name) };
        Topo {
            a: pod(NS_A, "a", POD_A_IP),
            b: pod(NS_B, "b", POD_B_IP),
            x: Host { netns: NS_X, ip: EXTERNAL_IP, mac: mac_of(EXTERNAL_IP), node_if: UPLINK.to_string() },
        }
    }

    /// Creates namespaces, veths and the node's kernel configuration; `fwd_core` gets the RPS
    /// work of the ingress veths.
    pub fn create(fwd_core: usize) -> Result<Topo> {
        destroy();
        let t = Topo::hosts();
        for ns in ALL_NS {
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1")?;
            sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1")?;
        }
        for h in [&t.a, &t.b, &t.x] {
            run(&[
                "ip", "-n", NS_NODE, "link", "add", &h.node_if, "numtxqueues", "1", "numrxqueues", "1", "type", "veth", "peer", "name", "eth0",
                "netns", h.netns, "numtxqueues", "1", "numrxqueues", "1",
            ])?;
            let ns = h.netns;
            run(&["ip", "-n", ns, "link", "set", "eth0", "address", &h.mac])?;
            if h.netns == NS_X {
                run(&["ip", "-n", ns, "addr", "add", &format!("{}/{NODE_PREFIX}", h.ip), "dev", "eth0"])?;
                run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
                run(&["ip", "-n", ns, "route", "add", "default", "via", &NODE_IP.to_string(), "dev", "eth0"])?;
            } else {
                run(&["ip", "-n", ns, "addr", "add", &format!("{}/32", h.ip), "dev", "eth0"])?;
                run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
                run(&["ip", "-n", ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"])?;
                run(&["ip", "-n", ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"])?;
            }
            run(&["ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"])?;
            sysctl(NS_NODE, &format!("net.ipv6.conf.{}.disable_ipv6=1", h.node_if))?;
            run(&["ip", "-n", NS_NODE, "link", "set", &h.node_if, "up"])?;
        }
        // The node's kernel as a kube-proxy node: forwarding, routes, neighbours, RPS.
        run(&["ip", "-n", NS_NODE, "addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"])?;
        sysctl(NS_NODE, "net.ipv4.ip_forward=1")?;
        sysctl(NS_NODE, "net.ipv4.conf.all.rp_filter=0")?;
        sysctl(NS_NODE, "net.ipv4.conf.default.rp_filter=0")?;
        let net = Ipv4Addr::from(u32::from(NODE_IP) & !((1u32 << (32 - NODE_PREFIX)) - 1));
        run(&["ip", "-n", NS_NODE, "route", "add", &format!("{net}/{NODE_PREFIX}"), "dev", UPLINK, "src", &NODE_IP.to_string()])?;
        for h in [&t.a, &t.b] {
            run(&["ip", "-n", NS_NODE, "route", "add", &format!("{}/32", h.ip), "dev", &h.node_if, "src", &NODE_IP.to_string()])?;
        }
        for h in [&t.a, &t.b, &t.x] {
            sysctl(NS_NODE, &format!("net.ipv4.conf.{}.rp_filter=0", h.node_if))?;
            run(&["ip", "-n", NS_NODE, "neigh", "replace", &h.ip.to_string(), "lladdr", &h.mac, "dev", &h.node_if, "nud", "permanent"])?;
        }
        let mask = format!("{:x}", 1u64 << fwd_core);
        for h in [&t.a, &t.x] {
            write_sys(NS_NODE, &format!("/sys/class/net/{}/queues/rx-0/rps_cpus", h.node_if), &mask)?;
        }
        t.wait_up(Duration::from_secs(5))?;
        Ok(t)
    }

    fn wait_up(&self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            let node = run(&["ip", "-n", NS_NODE, "-br", "link"])?;
            let up = [&self.a, &self.b, &self.x].iter().all(|h| {
                node.lines().any(|l| l.starts_with(&format!("{}@", h.node_if)) && l.split_whitespace().nth(1) == Some("UP"))
            });
            if up {
                return Ok(());
            }
            if Instant::now() >= end {
                bail!("the benchmark veths did not come up:\n{node}");
            }
            sys::nap(Duration::from_millis(50))?;
        }
    }

    /// MAC of an interface in `pse-node` (a pod's gateway MAC is its host-side veth's).
    pub fn node_mac(&self, ifname: &str) -> Result<String> {
        Ok(run(&["ip", "netns", "exec", NS_NODE, "cat", &format!("/sys/class/net/{ifname}/address")])?.trim().to_string())
    }

    /// Detaches XDP programs a forwarder left on the node-side veths; true if there was one.
    pub fn clear_xdp(&self) -> bool {
        let mut left = false;
        for h in [&self.a, &self.b, &self.x] {
            let out = run(&["ip", "-n", NS_NODE, "link", "show", "dev", &h.node_if]).unwrap_or_default();
            if out.contains(" xdp") || out.contains("prog/xdp") {
                left = true;
                for m in ["xdp", "xdpgeneric"] {
                    run_quiet(&["ip", "-n", NS_NODE, "link", "set", "dev", &h.node_if, m, "off"]);
                }
            }
        }
        left
    }
}

/// Ends every process inside the benchmark's namespaces (SIGTERM, then SIGKILL) and deletes
/// them. Idempotent; touches only `pse-*`.
pub fn destroy() {
    crate::lab::destroy_namespaces(&ALL_NS);
}
