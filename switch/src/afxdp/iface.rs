//! Facts about a network interface, read from sysfs of the caller's network namespace.
//!
//! Contract: `/sys/class/net` must be the sysfs of the namespace the switch runs in
//! (`ip netns exec` mounts it so); every function names the interface in its error.
//! [`link_addr`] asks the kernel instead (getifaddrs), for the packet sockets that bind or send
//! to an interface.
use std::fs;

use super::AfXdpError;

fn read(ifname: &str, what: &str) -> Result<String, AfXdpError> {
    if ifname.is_empty() || ifname.contains('/') || ifname.len() > 15 {
        return Err(AfXdpError::NoInterface { ifname: ifname.into(), detail: "not a valid interface name".into() });
    }
    fs::read_to_string(format!("/sys/class/net/{ifname}/{what}"))
        .map(|s| s.trim().to_string())
        .map_err(|e| AfXdpError::NoInterface { ifname: ifname.into(), detail: e.to_string() })
}

/// Whether the interface exists in this namespace.
pub fn exists(ifname: &str) -> bool {
    read(ifname, "ifindex").is_ok()
}

pub fn ifindex(ifname: &str) -> Result<i32, AfXdpError> {
    let s = read(ifname, "ifindex")?;
    s.parse().map_err(|_| AfXdpError::NoInterface { ifname: ifname.into(), detail: format!("bad ifindex {s:?}") })
}

pub fn mac(ifname: &str) -> Result<[u8; 6], AfXdpError> {
    let s = read(ifname, "address")?;
    parse_mac(&s).ok_or_else(|| AfXdpError::NoInterface { ifname: ifname.into(), detail: format!("bad MAC {s:?}") })
}

/// The interface's MTU (the largest IP packet it sends).
pub fn mtu(ifname: &str) -> Result<u16, AfXdpError> {
    let s = read(ifname, "mtu")?;
    s.parse().map_err(|_| AfXdpError::NoInterface { ifname: ifname.into(), detail: format!("bad MTU {s:?}") })
}

/// Number of rx queues (`/sys/class/net/IF/queues/rx-*`).
pub fn rx_queues(ifname: &str) -> Result<u32, AfXdpError> {
    let dir = format!("/sys/class/net/{ifname}/queues");
    let rd = fs::read_dir(&dir).map_err(|e| AfXdpError::NoInterface { ifname: ifname.into(), detail: e.to_string() })?;
    Ok(rd.filter_map(std::result::Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count() as u32)
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The link-layer address of `ifname` (index, MAC) as the kernel lists it: what an AF_PACKET
/// socket binds or sends to.
pub fn link_addr(ifname: &str) -> std::io::Result<nix::sys::socket::LinkAddr> {
    let found = nix::ifaddrs::getifaddrs()?
        .filter(|a| a.interface_name == ifname)
        .find_map(|a| a.address.and_then(|s| s.as_link_addr().copied()));
    found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no interface {ifname} in this network namespace")))
}
