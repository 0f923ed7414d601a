//! Network namespaces, veth pairs and the commands that build them.
//!
//! Contract:
//! - Links are set up with `ip` (iproute2) and `ethtool`; a failing command is an error naming
//!   the command line and quoting its stderr.
//! - Namespaces are the named ones of `ip netns` (`/run/netns/NAME`).
//! - [`in_netns`] runs a closure on a fresh thread that has entered a namespace with
//!   `setns(CLONE_NEWNET)` (which moves only the calling thread); the rest of the process stays
//!   where it is. Sockets created by the closure belong to that namespace.
//! - [`create_pod`] makes one pod's namespace (its interface comes from the CNI plugin:
//!   [`super::cni_network`]); [`delete_pod`] removes what is left of it (veth pair, namespace).
//! - [`create_external`] builds the `external` host of a one-node lab: namespace `psl-external`,
//!   a veth pair `psw-uplink` (node namespace, the switch's uplink port) / `eth0` (external),
//!   with the addresses, route, offloads and sysctls of [`super::state::ExternalState`].
//! - The uplink is the node's own NIC: its stack has the InternalIP on `psw-uplink` with the
//!   underlay's prefix ([`address_node_uplink`]), so the node's kernel answers ARP for it and
//!   reaches `external` (and the other nodes) directly, switch or no switch; the switch takes
//!   from the uplink only what its filter owns. IPv6 is on (link-local, no DAD) on `psw-uplink`
//!   and on external's `eth0`, so the node's own IPv6 can be seen to pass. The uplink has twice
//!   as many queues as the switch has workers ([`uplink_queues`]), so each worker serves
//!   several of its queues, as on a NIC with more queues than cores.
//! - [`create_underlay`] builds the same for a lab with several nodes, with a shared L2 segment
//!   between: namespace `psl-underlay` holding the bridge `br0`, whose ports are `ext` (peer of
//!   external's `eth0`) and `upN` (peer of node N's `psw-uplink`, N counting from 0 in the
//!   lab's node order).
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use nix::sched::{setns, CloneFlags};

use super::state::{ExternalState, PodState, NETNS_PREFIXES, UNDERLAY_BRIDGE, UNDERLAY_NETNS};

const NETNS_DIR: &str = "/run/netns";

/// Runs `program args...`; returns stdout, or an error quoting the command and its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{program}` (is it installed? iproute2 and ethtool are needed)"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("`{program} {}` failed ({}): {}", args.join(" "), out.status, stderr.trim().replace('\n', " | "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip args...`.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Every namespace the lab may have created (`psl-*`, `psl_*`), sorted.
pub fn lab_namespaces() -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.filter_map(std::result::Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| NETNS_PREFIXES.iter().any(|p| n.starts_with(p)))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Pids of the processes inside namespace `name`.
pub fn pids(name: &str) -> Vec<i32> {
    ip(&["netns", "pids", name])
        .map(|out| out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

pub fn add(name: &str) -> anyhow::Result<()> {
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

pub fn delete(name: &str) -> anyhow::Result<()> {
    if exists(name) {
        ip(&["netns", "del", name])?;
    }
    Ok(())
}

/// Creates the node namespace `netns` (its InternalIP goes on its uplink once that exists:
/// [`address_node_uplink`]). It forwards IPv4, as a Kubernetes node must (kubelet checks it):
/// what the node's kernel DNATs to a pod (portmap's hostPorts) goes on to the switch.
pub fn create_node(netns: &str) -> anyhow::Result<()> {
    add(netns)?;
    sysctl(netns, "net.ipv4.ip_forward", "1")
}

/// Gives the node in `netns` its InternalIP on its uplink `uplink`, with the underlay's prefix
/// length `prefix_len`, as a real node has it on its NIC.
pub fn address_node_uplink(netns: &str, uplink: &str, internal_ip: std::net::Ipv4Addr, prefix_len: u8) -> anyhow::Result<()> {
    ip(&["-n", netns, "addr", "replace", &format!("{internal_ip}/{prefix_len}"), "dev", uplink])?;
    Ok(())
}

/// Moves the InternalIP of the node in `netns` from `old` to `new` (on its uplink).
pub fn set_node_ip(netns: &str, uplink: &str, old: std::net::Ipv4Addr, new: std::net::Ipv4Addr, prefix_len: u8) -> anyhow::Result<()> {
    let _ = ip(&["-n", netns, "addr", "del", &format!("{old}/{prefix_len}"), "dev", uplink]);
    address_node_uplink(netns, uplink, new, prefix_len)
}

/// RX and TX queues of each node's uplink for a switch with `workers` workers: twice as many,
/// so every worker serves several (see the module contract).
pub fn uplink_queues(workers: u32) -> u32 {
    workers.max(1) * 2
}

/// Link-local IPv6 on `ifname` in `netns` without duplicate address detection (usable at once).
fn enable_ipv6(netns: &str, ifname: &str) -> anyhow::Result<()> {
    sysctl(netns, &format!("net.ipv6.conf.{ifname}.accept_dad"), "0")?;
    sysctl(netns, &format!("net.ipv6.conf.{ifname}.disable_ipv6"), "0")
}

/// Builds the `external` host `e` of a one-node lab (see the module contract): its namespace,
/// the veth pair (uplink side in the node namespace `node_netns`, with `queues` RX and TX
/// queues: [`uplink_queues`]), `eth0` with MAC, address and a default route via the node,
/// TX checksum offload off, link-local IPv6 on both sides (off elsewhere in the namespace).
/// On error the caller removes the namespaces (`lab down`).
pub fn create_external(e: &ExternalState, node_netns: &str, queues: u32) -> anyhow::Result<()> {
    let ns = e.netns.as_str();
    let q = queues.max(1).to_string();
    add(ns)?;
    sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
    sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
    ip(&[
        "-n", node_netns, "link", "add", &e.uplink, "numtxqueues", &q, "numrxqueues", &q, "type", "veth", "peer", "name",
        "eth0", "netns", ns, "numtxqueues", &q, "numrxqueues", &q,
    ])?;
    enable_ipv6(node_netns, &e.uplink)?;
    configure_external_eth0(e)?;
    ip(&["-n", node_netns, "link", "set", &e.uplink, "up"])?;
    Ok(())
}

/// `eth0` of the `external` host: MAC, address, up, default route, TX checksum offload off.
fn configure_external_eth0(e: &ExternalState) -> anyhow::Result<()> {
    let ns = e.netns.as_str();
    enable_ipv6(ns, "eth0")?;
    ip(&["-n", ns, "link", "set", "eth0", "address", &e.mac])?;
    ip(&["-n", ns, "addr", "add", &format!("{}/{}", e.ip, e.prefix_len), "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", ns, "route", "add", "default", "via", &e.gateway.to_string(), "dev", "eth0"])?;
    // As on pods: AF_XDP does not complete partial checksums.
    ip(&["netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"])?;
    Ok(())
}

/// Builds the underlay of a lab with several nodes and the `external` host on it (see the
/// module contract): every node namespace of `node_netns` (which exist) gets its uplink `e.uplink`
/// (with `queues` RX and TX queues: [`uplink_queues`]), whose peer `upN` is a port of the
/// bridge, as is `ext`, the peer of external's `eth0`. IPv6 is off in the underlay's own
/// namespace (the bridge carries it) and link-local on the uplinks and external's `eth0`. On
/// error the caller removes the namespaces (`lab down`).
pub fn create_underlay(e: &ExternalState, node_netns: &[String], queues: u32) -> anyhow::Result<()> {
    let u = UNDERLAY_NETNS;
    let q = queues.max(1).to_string();
    add(u)?;
    sysctl(u, "net.ipv6.conf.all.disable_ipv6", "1")?;
    sysctl(u, "net.ipv6.conf.default.disable_ipv6", "1")?;
    ip(&["-n", u, "link", "add", UNDERLAY_BRIDGE, "type", "bridge"])?;
    ip(&["-n", u, "link", "set", UNDERLAY_BRIDGE, "up"])?;
    let ns = e.netns.as_str();
    add(ns)?;
    sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
    sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
    ip(&["-n", u, "link", "add", "ext", "type", "veth", "peer", "name", "eth0", "netns", ns])?;
    ip(&["-n", u, "link", "set", "ext", "master", UNDERLAY_BRIDGE, "up"])?;
    configure_external_eth0(e)?;
    for (i, node) in node_netns.iter().enumerate() {
        plug_into_underlay(e, node, &format!("up{i}"), &q)?;
    }
    Ok(())
}

/// Gives the node namespace `node` its uplink `e.uplink`, whose peer `port` (in the underlay)
/// joins the bridge; `queues` RX and TX queues.
fn plug_into_underlay(e: &ExternalState, node: &str, port: &str, queues: &str) -> anyhow::Result<()> {
    let u = UNDERLAY_NETNS;
    let q = queues;
    ip(&[
        "-n", node, "link", "add", &e.uplink, "numtxqueues", q, "numrxqueues", q, "type", "veth", "peer", "name", port,
        "netns", u, "numtxqueues", q, "numrxqueues", q,
    ])?;
    enable_ipv6(node, &e.uplink)?;
    ip(&["-n", u, "link", "set", port, "master", UNDERLAY_BRIDGE, "up"])?;
    ip(&["-n", node, "link", "set", &e.uplink, "up"])?;
    Ok(())
}

/// Adds a node to a running lab's underlay: the node namespace `node` (which exists) gets its
/// uplink, plugged into the bridge by the first free `upN`, with `queues` queues.
pub fn add_to_underlay(e: &ExternalState, node: &str, queues: u32) -> anyhow::Result<()> {
    let port = (0..)
        .map(|i| format!("up{i}"))
        .find(|p| ip(&["-n", UNDERLAY_NETNS, "link", "show", p]).is_err())
        .expect("a free port name");
    plug_into_underlay(e, node, &port, &queues.max(1).to_string())
}

/// Re-addresses the `external` host from `old` to `new` (a new node InternalIP moves it):
/// MAC, address and default route.
pub fn readdress_external(old: &ExternalState, new: &ExternalState) -> anyhow::Result<()> {
    let ns = new.netns.as_str();
    let _ = ip(&["-n", ns, "route", "del", "default"]);
    let _ = ip(&["-n", ns, "addr", "del", &format!("{}/{}", old.ip, old.prefix_len), "dev", "eth0"]);
    ip(&["-n", ns, "link", "set", "eth0", "address", &new.mac])?;
    ip(&["-n", ns, "addr", "add", &format!("{}/{}", new.ip, new.prefix_len), "dev", "eth0"])?;
    ip(&["-n", ns, "route", "add", "default", "via", &new.gateway.to_string(), "dev", "eth0"])?;
    Ok(())
}

/// Runs `f` on a new thread inside network namespace `name`; returns its result.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let path = netns_path(name);
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(&path)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread inside network namespace {name} panicked"))?
    })
}

/// Moves the calling thread into the network namespace at `path` (for good: use a thread of
/// its own).
pub fn enter(path: &Path) -> anyhow::Result<()> {
    let f = File::open(path).with_context(|| format!("no network namespace {}", path.display()))?;
    setns(&f, CloneFlags::CLONE_NEWNET).with_context(|| format!("cannot enter network namespace {}", path.display()))
}

/// Sets `net.*` sysctl `key` (dotted, e.g. `net.ipv6.conf.all.disable_ipv6`) inside `netns`.
pub fn sysctl(netns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    in_netns(netns, || fs::write(&path, value))?
        .with_context(|| format!("cannot set sysctl {key}={value} in network namespace {netns}"))
}

/// Makes pod `p`'s namespace as a container runtime makes a sandbox's: empty but for `lo` (up),
/// IPv6 off (before any link exists, so that the interface the CNI plugin adds comes up without
/// RS/MLD/DAD noise). Its `eth0` and host-side veth come from the CNI ADD
/// ([`super::cni_network::add_pod`]). On error the caller removes it with [`delete_pod`].
pub fn create_pod(p: &PodState) -> anyhow::Result<()> {
    let ns = p.netns.as_str();
    ip(&["netns", "add", ns])?;
    sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
    sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Removes what is left of pod `p` after its CNI DEL (or when DEL failed): the veth pair and
/// the namespace (processes inside must be stopped first). Deleting the host side first
/// destroys the pair at once, so the interface name is free for a pod created right after.
pub fn delete_pod(p: &PodState) -> anyhow::Result<()> {
    let node = p.node_netns.as_str();
    let host_exists = exists(node) && ip(&["-n", node, "link", "show", "dev", &p.interface]).is_ok();
    if host_exists {
        ip(&["-n", node, "link", "del", "dev", &p.interface])?;
    }
    delete(&p.netns)
}
