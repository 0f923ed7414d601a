//! The namespaces of `bench portkinds`: pods `pk-a` (10.77.0.1/24) and `pk-b` (10.77.0.2/24),
//! each with an `eth0` at default offloads (no `ethtool -K`), and a node namespace `pk-node`
//! for the veths' host ends (`pk-a-h`, `pk-b-h`) and the bridge `pk-br0`. Prefix `pk-`: no
//! name the lab, the other benchmarks or tests use.
//!
//! Contract: [`namespaces`] makes the three empty namespaces (removing leftovers first);
//! [`veths`] joins each pod to the node namespace by a veth pair; [`bridge`] puts both host
//! ends in one bridge (the kernel baseline); [`host_drop`] keeps the node namespace's stack
//! from taking the frames an AF_PACKET forwarder also takes; [`address_pods`] sets the pods'
//! addresses on their `eth0` (veth or tap) and waits until a ping crosses. [`destroy`] removes
//! the namespaces with everything in them (idempotent); tap devices die with their descriptor
//! or their namespace. Nothing outside the `pk-` namespaces is touched.
use std::time::Duration;

use anyhow::{bail, Result};

use crate::sys::{self, run};

pub const NS_A: &str = "pk-a";
pub const NS_B: &str = "pk-b";
pub const NS_NODE: &str = "pk-node";
pub const ALL_NS: [&str; 3] = [NS_A, NS_B, NS_NODE];
pub const HOST_A: &str = "pk-a-h";
pub const HOST_B: &str = "pk-b-h";
pub const BRIDGE: &str = "pk-br0";
pub const IP_A: &str = "10.77.0.1";
pub const IP_B: &str = "10.77.0.2";

/// How the node namespace's own stack is kept from processing what the AF_PACKET socket took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostDrop {
    /// An nftables `netdev` ingress chain with policy drop on each host end: runs after the
    /// packet taps, before the IP stack (tc's matchall/gact are not built into this kernel).
    Nft,
    /// Nothing beyond the defaults: no address and IPv4 forwarding off in the node namespace,
    /// so the IP stack looks the frame up and drops it.
    Stack,
}

fn sysctl(ns: &str, kv: &str) -> Result<()> {
    run(&["ip", "netns", "exec", ns, "sysctl", "-qw", kv]).map(|_| ())
}

/// See the module contract.
pub fn namespaces() -> Result<()> {
    destroy();
    for ns in ALL_NS {
        run(&["ip", "netns", "add", ns])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1")?;
        sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1")?;
    }
    sysctl(NS_NODE, "net.ipv4.ip_forward=0")?;
    Ok(())
}

/// See the module contract.
pub fn veths() -> Result<()> {
    for (host, pod) in [(HOST_A, NS_A), (HOST_B, NS_B)] {
        run(&["ip", "-n", NS_NODE, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod])?;
        run(&["ip", "-n", NS_NODE, "link", "set", host, "up"])?;
    }
    Ok(())
}

/// See the module contract.
pub fn bridge() -> Result<()> {
    run(&["ip", "-n", NS_NODE, "link", "add", BRIDGE, "type", "bridge"])?;
    for host in [HOST_A, HOST_B] {
        run(&["ip", "-n", NS_NODE, "link", "set", host, "master", BRIDGE])?;
    }
    run(&["ip", "-n", NS_NODE, "link", "set", BRIDGE, "up"])?;
    Ok(())
}

/// The nftables ruleset of [`HostDrop::Nft`].
pub fn host_drop_rules() -> String {
    let mut r = String::from("table netdev pk_host_drop {\n");
    for (i, host) in [HOST_A, HOST_B].iter().enumerate() {
        r.push_str(&format!("  chain in{i} {{ type filter hook ingress device \"{host}\" priority 0; policy drop; }}\n"));
    }
    r.push_str("}\n");
    r
}

/// See the module contract.
pub fn host_drop(how: HostDrop, workdir: &std::path::Path) -> Result<()> {
    match how {
        HostDrop::Stack => Ok(()),
        HostDrop::Nft => {
            let f = workdir.join("host-drop.nft");
            std::fs::write(&f, host_drop_rules())?;
            run(&["ip", "netns", "exec", NS_NODE, "nft", "-f", &f.display().to_string()]).map(|_| ())
        }
    }
}

/// See the module contract.
pub fn address_pods() -> Result<()> {
    for (ns, ip) in [(NS_A, IP_A), (NS_B, IP_B)] {
        run(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
    }
    for _ in 0..20 {
        if run(&["ip", "netns", "exec", NS_A, "ping", "-c", "1", "-W", "1", IP_B]).is_ok() {
            return Ok(());
        }
        sys::nap(Duration::from_millis(250))?;
    }
    bail!("pod a cannot ping pod b ({IP_B})")
}

/// The pod's `eth0` offloads that matter here, as `ethtool -k` shows them:
/// `tx-checksumming on, tcp-segmentation-offload on, ...`.
pub fn offloads(ns: &str) -> String {
    let out = run(&["ip", "netns", "exec", ns, "ethtool", "-k", "eth0"]).unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| ["tx-checksumming", "tcp-segmentation-offload", "generic-segmentation-offload", "generic-receive-offload"].contains(&k.trim()))
        .map(|(k, v)| format!("{} {}", k.trim(), v.split_whitespace().next().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A counter of a pod's `eth0` (`rx_packets`, `rx_bytes`, ...).
pub fn eth0_counter(ns: &str, name: &str) -> Option<u64> {
    sys::ns_read_u64(ns, &format!("/sys/class/net/eth0/statistics/{name}")).ok()
}

/// The TCP counters of `ns` that tell how a stream lost or reordered frames, as `nstat -asz`
/// prints them (absolute since the namespace was made: each turn's namespaces are new).
pub const TCP_COUNTERS: [&str; 10] = [
    "TcpRetransSegs",
    "TcpExtTCPDSACKRecv",
    "TcpExtTCPSACKReorder",
    "TcpExtTCPFastRetrans",
    "TcpExtTCPLossProbes",
    "TcpExtTCPTimeouts",
    "TcpExtTCPSpuriousRtxHostQueues",
    "TcpExtTCPOFOQueue",
    "TcpInCsumErrors",
    "TcpInErrs",
];

/// [`TCP_COUNTERS`] of namespace `ns` (those nstat does not print are left out).
pub fn tcp_counters(ns: &str) -> std::collections::BTreeMap<String, u64> {
    let out = run(&["ip", "netns", "exec", ns, "nstat", "-asz"]).unwrap_or_default();
    parse_nstat(&out)
}

fn parse_nstat(out: &str) -> std::collections::BTreeMap<String, u64> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (k, v) = (w.next()?, w.next()?.parse().ok()?);
            TCP_COUNTERS.contains(&k).then(|| (k.to_string(), v))
        })
        .collect()
}

/// Every non-zero drop counter of the interfaces in the three namespaces
/// (`NS/IFNAME rx_dropped` or `tx_dropped`, from `ip -s -j link`), since they were made.
pub fn link_drops() -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for ns in ALL_NS {
        let out = run(&["ip", "-n", ns, "-s", "-j", "link", "show"]).unwrap_or_default();
        m.extend(parse_link_drops(ns, &out));
    }
    m
}

fn parse_link_drops(ns: &str, json: &str) -> Vec<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        let name = link["ifname"].as_str().unwrap_or("?");
        for dir in ["rx", "tx"] {
            let n = link["stats64"][dir]["dropped"].as_u64().unwrap_or(0);
            if n > 0 {
                out.push((format!("{ns}/{name} {dir}_dropped"), n));
            }
        }
    }
    out
}

/// See the module contract.
pub fn destroy() {
    crate::lab::destroy_namespaces(&ALL_NS);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_drops_name_namespace_interface_and_direction() {
        let j = r#"[{"ifname":"lo","stats64":{"rx":{"dropped":0},"tx":{"dropped":0}}},{"ifname":"eth0","stats64":{"rx":{"dropped":7},"tx":{"dropped":0}}}]"#;
        assert_eq!(parse_link_drops("pk-b", j), [("pk-b/eth0 rx_dropped".to_string(), 7)]);
        assert!(parse_link_drops("pk-b", "not json").is_empty());
    }

    #[test]
    fn nstat_counters_are_picked() {
        let m = parse_nstat("#kernel\nTcpRetransSegs                  12                 0.0\nTcpExtTCPOFOQueue 3 0.0\nIpInReceives 99 0.0\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m["TcpRetransSegs"], 12);
        assert_eq!(m["TcpExtTCPOFOQueue"], 3);
    }

    #[test]
    fn host_drop_chains_hook_both_host_ends() {
        let r = host_drop_rules();
        assert!(r.contains("hook ingress device \"pk-a-h\" priority 0; policy drop;"));
        assert!(r.contains("hook ingress device \"pk-b-h\" priority 0; policy drop;"));
        assert!(r.starts_with("table netdev pk_host_drop {"));
    }
}
