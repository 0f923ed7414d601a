//! The node's own port on the switch: a veth pair `psw-host` (the node's stack) and
//! `psw-host-sw` (attached to the switch), with a route to the pod CIDR through the gateway.
//!
//! Contract: [`ensure`] makes the pair exist with the queues the workers need, gives the stack
//! side a fixed MAC (`0a:58` + the node IP), turns its TX checksum offload off (frames cross
//! AF_XDP, which does not complete partial checksums), and routes the pod CIDR and the Service
//! CIDRs to 169.254.1.1 over it; [`reroute`] follows a change of the ranges routed (Service
//! ranges, other nodes' pod CIDRs) and [`renode`] one of this node's own pod CIDR or
//! InternalIP. [`remove`] deletes the pair (and with it the routes). Commands run in
//! the caller's network namespace; each failure names the command and its stderr. The node's
//! addresses are read with `getifaddrs(3)`.
use std::net::Ipv4Addr;
use std::process::Command;

use crate::model::NodeInfo;
use crate::naming::{self, HOST_STACK_IF, HOST_SWITCH_IF};

#[derive(Debug, thiserror::Error)]
pub enum HostPortError {
    #[error("cannot run `{command}`: {error}")]
    Spawn { command: String, error: std::io::Error },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

fn run(args: &[&str]) -> Result<(), HostPortError> {
    let command = || args.join(" ");
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|error| HostPortError::Spawn { command: command(), error })?;
    if !out.status.success() {
        return Err(HostPortError::Failed { command: command(), stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(())
}

fn queues(ifname: &str) -> Option<u32> {
    let rd = std::fs::read_dir(format!("/sys/class/net/{ifname}/queues")).ok()?;
    Some(rd.filter_map(std::result::Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count() as u32)
}

/// Whether `ip` is an address of some interface of this namespace.
fn is_local_address(ip: Ipv4Addr) -> bool {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return false };
    addrs.filter_map(|a| a.address).any(|a| a.as_sockaddr_in().is_some_and(|sin| sin.ip() == ip))
}

/// Creates or fixes the host port pair; returns the stack side's MAC.
pub fn ensure(node: &NodeInfo, workers: u32, service_cidrs: &[ipnet::Ipv4Net]) -> Result<[u8; 6], HostPortError> {
    if queues(HOST_SWITCH_IF).is_some_and(|q| q < workers) {
        run(&["ip", "link", "del", HOST_STACK_IF])?;
    }
    if queues(HOST_SWITCH_IF).is_none() {
        let n = workers.to_string();
        run(&[
            "ip", "link", "add", HOST_STACK_IF, "numtxqueues", &n, "numrxqueues", &n, "type", "veth", "peer", "name",
            HOST_SWITCH_IF, "numtxqueues", &n, "numrxqueues", &n,
        ])?;
    }
    let mac = naming::pod_mac(node.internal_ip);
    run(&["ip", "link", "set", HOST_STACK_IF, "address", &naming::mac_string(mac)])?;
    for ifname in [HOST_STACK_IF, HOST_SWITCH_IF] {
        // IPv6 is not forwarded yet; keep its neighbour discovery off the switch.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"), "1");
        run(&["ip", "link", "set", ifname, "up"])?;
    }
    run(&["ethtool", "-K", HOST_STACK_IF, "tx", "off"])?;
    // The pods, and the Services (so that the node's agents reach ClusterIPs too).
    route_to_switch(node, &node.pod_cidr.to_string())?;
    for cidr in service_cidrs {
        route_to_switch(node, &cidr.to_string())?;
    }
    Ok(mac)
}

/// Routes `cidr` to the gateway over the host port (from the node address where the stack has
/// it).
fn route_to_switch(node: &NodeInfo, cidr: &str) -> Result<(), HostPortError> {
    let gw = naming::GATEWAY_IP.to_string();
    let src = node.internal_ip.to_string();
    let mut route = vec!["ip", "route", "replace", cidr, "via", &gw, "dev", HOST_STACK_IF, "onlink"];
    if is_local_address(node.internal_ip) {
        route.extend(["src", &src]);
    }
    run(&route)
}

/// Ranges routed to the switch changed (the Service ranges from ServiceCIDR objects, the other
/// nodes' pod CIDRs): routes for the new ones, none for the ones that went.
pub fn reroute(node: &NodeInfo, old: &[ipnet::Ipv4Net], new: &[ipnet::Ipv4Net]) -> Result<(), HostPortError> {
    for cidr in new {
        route_to_switch(node, &cidr.to_string())?;
    }
    for cidr in old.iter().filter(|c| !new.contains(c)) {
        run(&["ip", "route", "del", &cidr.to_string(), "dev", HOST_STACK_IF])?;
    }
    Ok(())
}

/// This node's own pod CIDR or InternalIP changed (`old` → `new`): the stack side takes the new
/// InternalIP's MAC (returned), the new pod CIDR is routed to the switch and the old one no
/// longer, and every range in `routed` (the Service ranges, the other nodes' pod CIDRs) is
/// routed again from the new address. Routes with the old address as their source may already
/// be gone: the kernel drops them with the address.
pub fn renode(old: &NodeInfo, new: &NodeInfo, routed: &[ipnet::Ipv4Net]) -> Result<[u8; 6], HostPortError> {
    let mac = naming::pod_mac(new.internal_ip);
    run(&["ip", "link", "set", HOST_STACK_IF, "address", &naming::mac_string(mac)])?;
    route_to_switch(new, &new.pod_cidr.to_string())?;
    if old.pod_cidr != new.pod_cidr && !routed.contains(&old.pod_cidr) {
        // Already gone when the kernel dropped it with the old address.
        let _ = run(&["ip", "route", "del", &old.pod_cidr.to_string(), "dev", HOST_STACK_IF]);
    }
    for cidr in routed {
        route_to_switch(new, &cidr.to_string())?;
    }
    Ok(mac)
}

/// Deletes the pair; the route goes with it.
pub fn remove() {
    let _ = run(&["ip", "link", "del", HOST_STACK_IF]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_a_local_address_and_a_documentation_address_is_not() {
        assert!(is_local_address(Ipv4Addr::LOCALHOST));
        assert!(!is_local_address(Ipv4Addr::new(192, 0, 2, 77)));
    }

    #[test]
    fn a_failing_command_names_itself_and_its_stderr() {
        let e = run(&["ip", "link", "show", "dev", "psw-no-such-if"]).unwrap_err();
        assert!(matches!(&e, HostPortError::Failed { command, .. } if command == "ip link show dev psw-no-such-if"), "{e}");
        let e = run(&["psw-no-such-command"]).unwrap_err();
        assert!(e.to_string().starts_with("cannot run `psw-no-such-command`"), "{e}");
    }
}
