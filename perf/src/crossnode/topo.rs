//! The crossnode topology: two nodes on one underlay, one pod on each, in namespaces the
//! benchmark makes and [`destroy`] removes with every process inside (prefix `psx-`).
//!
//! - Nodes `node-1` and `node-2`: namespaces `psx-node-1` and `psx-node-2`. Their uplinks, both
//!   named `psx-uplink`, are the two ends of one veth pair: the underlay is a direct L2 link
//!   (one queue each way). Each uplink holds its node's InternalIP/24 in the kernel (172.19.0.11
//!   and .12), with a fixed MAC, and a permanent neighbour entry for the other node's InternalIP
//!   (the node's kernel, and the switch that reads the kernel's neighbour table, need no ARP
//!   round first). IPv4 forwarding on, reverse-path filter off, IPv6 off.
//! - Pod CIDRs 10.244.1.0/24 (node-1) and 10.244.2.0/24 (node-2). Pod `bench/a` (10.244.1.10,
//!   namespace `psx-a`) on node-1 sends, pod `bench/b` (10.244.2.10, `psx-b`) on node-2
//!   receives. Each pod is built as `podswitch lab` builds pods: `eth0` with MAC `0a:58:`+IP,
//!   address /32, default route via 169.254.1.1 (here a permanent neighbour entry for it: the
//!   pod's host-side veth's MAC, where both the switch and the kernel take the pod's frames), TX
//!   checksum offload off, IPv6 off; the host side in the node's namespace named as podswitch
//!   names it (`ps` + SHA-1(`bench.a`)), one queue.
//! - RPS steers the receive processing of every node-side interface (the uplinks and the pods'
//!   host-side veths) to the forwarding core, so that the kernel forwards (both nodes) on the
//!   core where the switches' workers poll; without it the kernel's whole path would run in
//!   softirq on the generator's core.
//! - The pods' MTU is set per setup ([`Topo::set_pod_mtu`]): 1450 under VXLAN, 1500 routed.
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use podswitch_control::naming;

use crate::sys::{self, run, run_quiet};

pub const NS_A: &str = "psx-a";
pub const NS_B: &str = "psx-b";
pub const NS_NODE_1: &str = "psx-node-1";
pub const NS_NODE_2: &str = "psx-node-2";
pub const ALL_NS: [&str; 4] = [NS_A, NS_B, NS_NODE_1, NS_NODE_2];
/// Each node's uplink (the two ends of the underlay's veth pair).
pub const UPLINK: &str = "psx-uplink";
/// Kubernetes namespace of the two pods.
pub const POD_NAMESPACE: &str = "bench";
/// Prefix length of the underlay subnet.
pub const UNDERLAY_PREFIX: u8 = 24;

/// One node.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: &'static str,
    pub netns: &'static str,
    pub internal_ip: Ipv4Addr,
    /// The node's pod CIDR, `a.b.c.0/24`.
    pub pod_cidr: &'static str,
    /// The pod CIDR's first address (flannel gives it to the node's `flannel.1`).
    pub pod_net: Ipv4Addr,
    pub uplink_mac: &'static str,
    /// MAC of the node's `flannel.1` in the kernel VXLAN setup.
    pub vtep_mac: &'static str,
}

/// One pod.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: &'static str,
    pub netns: &'static str,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// Host-side veth, in its node's namespace.
    pub host_if: String,
}

pub struct Topo {
    pub nodes: [Node; 2],
    /// Pod a (on node 0, the sender) and pod b (on node 1, the receiver).
    pub a: Pod,
    pub b: Pod,
}

fn sysctl(ns: &str, kv: &str) -> Result<()> {
    run(&["ip", "netns", "exec", ns, "sysctl", "-qw", kv]).map(|_| ())
}

fn write_sys(ns: &str, path: &str, value: &str) -> Result<()> {
    run(&["ip", "netns", "exec", ns, "sh", "-c", &format!("echo {value} > {path}")]).map(|_| ())
}

impl Topo {
    /// The nodes and pods, without creating anything.
    pub fn plan() -> Topo {
        let node = |name, netns, last: u8, pod_cidr, third: u8, uplink_mac, vtep_mac| Node {
            name,
            netns,
            internal_ip: Ipv4Addr::new(172, 19, 0, last),
            pod_cidr,
            pod_net: Ipv4Addr::new(10, 244, third, 0),
            uplink_mac,
            vtep_mac,
        };
        let pod = |name, netns, ip: Ipv4Addr| Pod {
            name,
            netns,
            ip,
            mac: naming::mac_string(naming::pod_mac(ip)),
            host_if: naming::pod_interface(POD_NAMESPACE, name),
        };
        Topo {
            nodes: [
                node("node-1", NS_NODE_1, 11, "10.244.1.0/24", 1, "02:50:58:00:00:01", "0e:50:58:00:00:01"),
                node("node-2", NS_NODE_2, 12, "10.244.2.0/24", 2, "02:50:58:00:00:02", "0e:50:58:00:00:02"),
            ],
            a: pod("a", NS_A, Ipv4Addr::new(10, 244, 1, 10)),
            b: pod("b", NS_B, Ipv4Addr::new(10, 244, 2, 10)),
        }
    }

    /// The pods with the node each is on.
    pub fn pods(&self) -> [(&Pod, &Node); 2] {
        [(&self.a, &self.nodes[0]), (&self.b, &self.nodes[1])]
    }

    /// Creates namespaces, the underlay, the pods and the nodes' base configuration (see the
    /// module contract); `fwd_core` gets the RPS work of the node-side interfaces.
    pub fn create(fwd_core: usize) -> Result<Topo> {
        destroy();
        let t = Topo::plan();
        for ns in ALL_NS {
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1")?;
            sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1")?;
        }
        let [n1, n2] = &t.nodes;
        run(&[
            "ip", "-n", n1.netns, "link", "add", UPLINK, "numtxqueues", "1", "numrxqueues", "1", "type", "veth", "peer", "name", UPLINK,
            "netns", n2.netns, "numtxqueues", "1", "numrxqueues", "1",
        ])?;
        for (n, other) in [(n1, n2), (n2, n1)] {
            let ns = n.netns;
            sysctl(ns, "net.ipv4.ip_forward=1")?;
            sysctl(ns, "net.ipv4.conf.all.rp_filter=0")?;
            sysctl(ns, "net.ipv4.conf.default.rp_filter=0")?;
            run(&["ip", "-n", ns, "link", "set", UPLINK, "address", n.uplink_mac])?;
            run(&["ip", "-n", ns, "addr", "add", &format!("{}/{UNDERLAY_PREFIX}", n.internal_ip), "dev", UPLINK])?;
            run(&["ip", "-n", ns, "link", "set", UPLINK, "up"])?;
            run(&["ip", "-n", ns, "neigh", "replace", &other.internal_ip.to_string(), "lladdr", other.uplink_mac, "dev", UPLINK, "nud", "permanent"])?;
        }
        for (p, n) in t.pods() {
            run(&[
                "ip", "-n", n.netns, "link", "add", &p.host_if, "numtxqueues", "1", "numrxqueues", "1", "type", "veth", "peer", "name", "eth0",
                "netns", p.netns, "numtxqueues", "1", "numrxqueues", "1",
            ])?;
            let ns = p.netns;
            run(&["ip", "-n", ns, "link", "set", "eth0", "address", &p.mac])?;
            run(&["ip", "-n", ns, "addr", "add", &format!("{}/32", p.ip), "dev", "eth0"])?;
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
            let gw = naming::GATEWAY_IP.to_string();
            run(&["ip", "-n", ns, "route", "add", &gw, "dev", "eth0", "scope", "link"])?;
            run(&["ip", "-n", ns, "route", "add", "default", "via", &gw, "dev", "eth0"])?;
            run(&["ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"])?;
            sysctl(n.netns, &format!("net.ipv6.conf.{}.disable_ipv6=1", p.host_if))?;
            run(&["ip", "-n", n.netns, "link", "set", &p.host_if, "up"])?;
            let host_mac = t.host_mac(p, n)?;
            run(&["ip", "-n", ns, "neigh", "replace", &gw, "lladdr", &host_mac, "dev", "eth0", "nud", "permanent"])?;
        }
        let mask = format!("{:x}", 1u64 << fwd_core);
        for (p, n) in t.pods() {
            write_sys(n.netns, &format!("/sys/class/net/{}/queues/rx-0/rps_cpus", p.host_if), &mask)?;
        }
        for n in &t.nodes {
            write_sys(n.netns, &format!("/sys/class/net/{UPLINK}/queues/rx-0/rps_cpus"), &mask)?;
        }
        t.wait_up(Duration::from_secs(5))?;
        Ok(t)
    }

    fn wait_up(&self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            let mut up = true;
            let mut seen = String::new();
            for n in &self.nodes {
                let links = run(&["ip", "-n", n.netns, "-br", "link"])?;
                let want: Vec<String> = std::iter::once(UPLINK.to_string())
                    .chain(self.pods().iter().filter(|(_, pn)| pn.name == n.name).map(|(p, _)| p.host_if.clone()))
                    .collect();
                up &= want.iter().all(|w| links.lines().any(|l| l.starts_with(&format!("{w}@")) && l.split_whitespace().nth(1) == Some("UP")));
                seen.push_str(&links);
            }
            if up {
                return Ok(());
            }
            if Instant::now() >= end {
                bail!("the benchmark's links did not come up:\n{seen}");
            }
            sys::nap(Duration::from_millis(50))?;
        }
    }

    /// MAC of pod `p`'s host-side veth (its gateway MAC) on node `n`.
    pub fn host_mac(&self, p: &Pod, n: &Node) -> Result<String> {
        Ok(run(&["ip", "netns", "exec", n.netns, "cat", &format!("/sys/class/net/{}/address", p.host_if)])?.trim().to_string())
    }

    /// Sets the MTU of both pods' veths (both ends).
    pub fn set_pod_mtu(&self, mtu: u16) -> Result<()> {
        let m = mtu.to_string();
        for (p, n) in self.pods() {
            run(&["ip", "-n", n.netns, "link", "set", "dev", &p.host_if, "mtu", &m])?;
            run(&["ip", "-n", p.netns, "link", "set", "dev", "eth0", "mtu", &m])?;
        }
        Ok(())
    }

    /// Detaches XDP programs a forwarder left on node-side interfaces; true if there was one.
    pub fn clear_xdp(&self) -> bool {
        let mut left = false;
        let ifs: Vec<(&str, String)> =
            self.nodes.iter().map(|n| (n.netns, UPLINK.to_string())).chain(self.pods().iter().map(|(p, n)| (n.netns, p.host_if.clone()))).collect();
        for (ns, ifname) in ifs {
            let out = run(&["ip", "-n", ns, "link", "show", "dev", &ifname]).unwrap_or_default();
            if out.contains(" xdp") || out.contains("prog/xdp") {
                left = true;
                for m in ["xdp", "xdpgeneric"] {
                    run_quiet(&["ip", "-n", ns, "link", "set", "dev", &ifname, m, "off"]);
                }
            }
        }
        left
    }
}

/// Ends every process inside the benchmark's namespaces (SIGTERM, then SIGKILL) and deletes
/// them. Idempotent; touches only `psx-*`.
pub fn destroy() {
    crate::lab::destroy_namespaces(&ALL_NS);
}
