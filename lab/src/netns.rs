//! Network namespaces, veth pairs and the commands that build them.
//!
//! Contract:
//! - Links are set up with `ip` (iproute2) and `ethtool`; a failing command is an error naming
//!   the command line and quoting its stderr.
//! - Namespaces are the named ones of `ip netns` (`/run/netns/NAME`).
//! - [`in_netns`] runs a closure on a fresh thread that has entered a namespace with
//!   `setns(CLONE_NEWNET)` (which moves only the calling thread); the rest of the process stays
//!   where it is. Sockets created by the closure belong to that namespace.
//! - [`create_pod`] / [`delete_pod`] build and remove one pod's namespace and veth pair as the
//!   lab's interface specifies (see [`super`]).
//! - [`create_external`] builds the `external` host: namespace `psl-external`, a veth pair
//!   `psw-uplink` (node namespace, the switch's uplink port) / `eth0` (external), with the
//!   addresses, route, offloads and sysctls of [`super::state::ExternalState`].
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use nix::sched::{setns, CloneFlags};

use super::state::{ExternalState, PodState, NETNS_PREFIXES, NODE_NETNS};
use podswitch_control::naming;

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

/// Creates the node namespace, its loopback holding the node's InternalIP/32 (the node's own
/// stack has its address, as a real node has it on its NIC; this kernel has no dummy links).
pub fn create_node(internal_ip: std::net::Ipv4Addr) -> anyhow::Result<()> {
    add(NODE_NETNS)?;
    ip(&["-n", NODE_NETNS, "addr", "add", &format!("{internal_ip}/32"), "dev", "lo"])?;
    Ok(())
}

/// Moves the node's InternalIP from `old` to `new`.
pub fn set_node_ip(old: std::net::Ipv4Addr, new: std::net::Ipv4Addr) -> anyhow::Result<()> {
    let _ = ip(&["-n", NODE_NETNS, "addr", "del", &format!("{old}/32"), "dev", "lo"]);
    ip(&["-n", NODE_NETNS, "addr", "add", &format!("{new}/32"), "dev", "lo"])?;
    Ok(())
}

/// Builds the `external` host `e` (see the module contract): its namespace, the veth pair
/// (uplink side in the node namespace, with `queues` RX and TX queues: one per switch worker),
/// `eth0` with MAC, address and a default route via the node, TX checksum offload off, IPv6
/// off on both sides. On error the caller removes the namespaces (`lab down`).
pub fn create_external(e: &ExternalState, queues: u32) -> anyhow::Result<()> {
    let ns = e.netns.as_str();
    let q = queues.max(1).to_string();
    add(ns)?;
    sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
    sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
    ip(&[
        "-n", NODE_NETNS, "link", "add", &e.uplink, "numtxqueues", &q, "numrxqueues", &q, "type", "veth", "peer", "name",
        "eth0", "netns", ns, "numtxqueues", &q, "numrxqueues", &q,
    ])?;
    sysctl(NODE_NETNS, &format!("net.ipv6.conf.{}.disable_ipv6", e.uplink), "1")?;
    ip(&["-n", ns, "link", "set", "eth0", "address", &e.mac])?;
    ip(&["-n", ns, "addr", "add", &format!("{}/{}", e.ip, e.prefix_len), "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", ns, "route", "add", "default", "via", &e.gateway.to_string(), "dev", "eth0"])?;
    // As on pods: AF_XDP does not complete partial checksums.
    ip(&["netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"])?;
    ip(&["-n", NODE_NETNS, "link", "set", &e.uplink, "up"])?;
    Ok(())
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

/// Builds pod `p`: its namespace, the veth pair (host side in the node namespace), addresses,
/// routes, offloads and sysctls. On error the caller removes what was made with [`delete_pod`].
pub fn create_pod(p: &PodState) -> anyhow::Result<()> {
    let ns = p.netns.as_str();
    let host = p.interface.as_str();
    let cidr = format!("{}/32", p.ip);
    let gw = naming::GATEWAY_IP.to_string();
    ip(&["netns", "add", ns])?;
    // Before any link exists, so that eth0 comes up without IPv6 (no RS/MLD/DAD noise).
    sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
    sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
    ip(&["-n", NODE_NETNS, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
    sysctl(NODE_NETNS, &format!("net.ipv6.conf.{host}.disable_ipv6"), "1")?;
    ip(&["-n", ns, "link", "set", "eth0", "address", &p.mac])?;
    ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", ns, "route", "add", &gw, "dev", "eth0", "scope", "link"])?;
    ip(&["-n", ns, "route", "add", "default", "via", &gw, "dev", "eth0"])?;
    // veth leaves TCP/UDP checksums to offload; frames read through AF_XDP would carry partial
    // checksums and TCP across the switch would stall.
    ip(&["netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"])?;
    ip(&["-n", NODE_NETNS, "link", "set", host, "up"])?;
    Ok(())
}

/// Removes pod `p`'s veth pair and namespace (processes inside must be stopped first).
/// Deleting the host side first destroys the pair at once, so the interface name is free
/// for a pod created right after.
pub fn delete_pod(p: &PodState) -> anyhow::Result<()> {
    let host_exists = exists(NODE_NETNS) && ip(&["-n", NODE_NETNS, "link", "show", "dev", &p.interface]).is_ok();
    if host_exists {
        ip(&["-n", NODE_NETNS, "link", "del", "dev", &p.interface])?;
    }
    delete(&p.netns)
}
