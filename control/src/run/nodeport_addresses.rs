//! `--nodeport-addresses`: which of the node's addresses serve NodePorts, as kube-proxy's flag
//! of that name.
//!
//! Contract: the flag is a comma-separated list of IPv4 CIDRs and/or the word `primary`
//! (default: `primary`, kube-proxy's default in nftables mode). `primary` is the node's
//! InternalIP; a CIDR selects every IPv4 address of this node's interfaces inside it (read
//! with `getifaddrs(3)` at start; the switch's own interfaces and link-local addresses are not
//! the node's). [`NodePortAddresses::resolve`] gives whether the InternalIP serves and the other
//! addresses that do; a CIDR that selects nothing is reported (a NodePort nowhere is a
//! misconfiguration worth a line), as kube-proxy warns.
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddress {
    Primary,
    Cidr(Ipv4Net),
}

impl FromStr for NodePortAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "primary" {
            return Ok(Self::Primary);
        }
        if s.contains(':') {
            return Err(format!("{s:?}: IPv6 CIDRs are not served yet (IPv4 only)"));
        }
        s.parse::<Ipv4Net>().map(Self::Cidr).map_err(|e| format!("{s:?} is neither `primary` nor an IPv4 CIDR ({e})"))
    }
}

/// What the flag resolves to on this node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodePortAddresses {
    /// The InternalIP serves NodePorts.
    pub internal_ip: bool,
    /// Other addresses of the node that serve them.
    pub extra: Vec<Ipv4Addr>,
    /// CIDRs that selected no address of the node.
    pub unmatched: Vec<Ipv4Net>,
}

impl NodePortAddresses {
    /// Resolves `flag` against the node's InternalIP and its interface addresses `local`.
    pub fn resolve(flag: &[NodePortAddress], internal_ip: Ipv4Addr, local: &[Ipv4Addr]) -> Self {
        let mut out = Self::default();
        for a in flag {
            match a {
                NodePortAddress::Primary => out.internal_ip = true,
                NodePortAddress::Cidr(net) => {
                    let mut any = false;
                    for ip in local.iter().chain(std::iter::once(&internal_ip)).filter(|ip| net.contains(*ip)) {
                        any = true;
                        if *ip == internal_ip {
                            out.internal_ip = true;
                        } else if !out.extra.contains(ip) {
                            out.extra.push(*ip);
                        }
                    }
                    if !any {
                        out.unmatched.push(*net);
                    }
                }
            }
        }
        out
    }
}

/// Resolves `flag` on this node now (its interfaces' addresses, [`local_addresses`]); says in
/// the log which CIDRs select nothing.
pub fn resolve_here(flag: &[NodePortAddress], internal_ip: Ipv4Addr) -> NodePortAddresses {
    let r = NodePortAddresses::resolve(flag, internal_ip, &local_addresses());
    for net in &r.unmatched {
        tracing::warn!("--nodeport-addresses {net}: no address of this node is in it; it serves no NodePort");
    }
    r
}

/// The IPv4 addresses of this namespace's interfaces, but loopback, link-local and the
/// switch's own (`psw-*`).
pub fn local_addresses() -> Vec<Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut out: Vec<Ipv4Addr> = addrs
        .filter(|a| !a.interface_name.starts_with("psw-"))
        .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(nix::sys::socket::SockaddrIn::ip)))
        .filter(|ip| !ip.is_loopback() && !ip.is_link_local())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn primary_cidrs_and_what_they_select() {
        let local = [ip("172.18.0.2"), ip("10.0.5.7"), ip("192.168.9.1")];
        let primary = NodePortAddresses::resolve(&["primary".parse().unwrap()], ip("172.18.0.2"), &local);
        assert_eq!(primary, NodePortAddresses { internal_ip: true, extra: vec![], unmatched: vec![] });
        let flag: Vec<NodePortAddress> = ["10.0.0.0/8", "192.168.9.0/24", "203.0.113.0/24"].iter().map(|s| s.parse().unwrap()).collect();
        let r = NodePortAddresses::resolve(&flag, ip("172.18.0.2"), &local);
        assert!(!r.internal_ip, "the InternalIP is in none of the CIDRs: it does not serve");
        assert_eq!(r.extra, [ip("10.0.5.7"), ip("192.168.9.1")]);
        assert_eq!(r.unmatched, ["203.0.113.0/24".parse::<Ipv4Net>().unwrap()]);
        let both = NodePortAddresses::resolve(&["primary".parse().unwrap(), "0.0.0.0/0".parse().unwrap()], ip("172.18.0.2"), &local);
        assert!(both.internal_ip);
        assert_eq!(both.extra, [ip("10.0.5.7"), ip("192.168.9.1")]);
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        assert!("10.0.0.0/33".parse::<NodePortAddress>().unwrap_err().contains("neither `primary`"));
        assert!("fd00::/64".parse::<NodePortAddress>().unwrap_err().contains("IPv6"));
        assert!("prim".parse::<NodePortAddress>().is_err());
    }
}
