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

/// See the module contract.
pub fn destroy() {
    crate::lab::destroy_namespaces(&ALL_NS);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_drop_chains_hook_both_host_ends() {
        let r = host_drop_rules();
        assert!(r.contains("hook ingress device \"pk-a-h\" priority 0; policy drop;"));
        assert!(r.contains("hook ingress device \"pk-b-h\" priority 0; policy drop;"));
        assert!(r.starts_with("table netdev pk_host_drop {"));
    }
}
