//! The uplink's filter: what the XDP program on the uplink redirects to the switch, everything
//! else staying the node's (see the contract of `src/bpf/xsk_redirect.bpf.c`).
//!
//! Contract:
//! - [`UplinkFilter`] is the filter's contents as plain data (the control side computes it
//!   from the tables it publishes); [`FilterMaps::write`] brings the program's maps to it,
//!   changing only the entries that differ from what it wrote last. A failed write leaves the
//!   maps in an unknown state: the next write clears every map and writes all of it again.
//! - [`RuleCounters`] are the program's counters (redirected, passed, and which rule matched).
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use libbpf_rs::{MapCore, MapFlags};
use serde::{Deserialize, Serialize};

/// `filter_config.mode` of the program.
pub(crate) const MODE_ALL: u32 = 0;
pub(crate) const MODE_UPLINK: u32 = 1;

/// A (node address, protocol, port) the switch answers on (a NodePort).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OwnedPort {
    pub ip: Ipv4Addr,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub proto: u8,
    pub port: u16,
}

/// What the uplink's program redirects to the switch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkFilter {
    /// The node address (InternalIP): the masquerade range, the VXLAN port and ICMP errors
    /// apply to it. None: nothing addressed to the node is redirected.
    pub node_ip: Option<Ipv4Addr>,
    /// TCP/UDP/SCTP destination ports (and ICMP echo reply identifiers) on `node_ip` replies
    /// of masqueraded connections come back to (first, last).
    pub masquerade_ports: (u16, u16),
    /// The VXLAN UDP port on `node_ip`; None: no tunnel.
    pub vxlan_port: Option<u16>,
    /// Destinations the switch owns whatever the port: (network, prefix length).
    pub prefixes: BTreeSet<(Ipv4Addr, u8)>,
    /// (address, protocol, port) the switch answers on: the NodePorts.
    pub ports: BTreeSet<OwnedPort>,
    /// Addresses whose ARP requests the switch answers.
    pub arp_targets: BTreeSet<Ipv4Addr>,
}

/// The program's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounters {
    /// Frames redirected to a socket of the switch.
    pub redirected: u64,
    /// Frames passed to the kernel (not the switch's, or no socket on their queue).
    pub passed: u64,
    /// Frames the switch owns, by the rule that matched.
    pub owned_prefix: u64,
    pub owned_port: u64,
    pub masquerade_port: u64,
    pub vxlan_port: u64,
    pub icmp_error: u64,
    pub arp_request: u64,
}

impl RuleCounters {
    /// From the program's per-CPU counter array (index order of the program).
    pub(crate) fn from_array(c: &[u64]) -> Self {
        let at = |i: usize| c.get(i).copied().unwrap_or(0);
        RuleCounters {
            redirected: at(0),
            passed: at(1),
            owned_prefix: at(2),
            owned_port: at(3),
            masquerade_port: at(4),
            vxlan_port: at(5),
            icmp_error: at(6),
            arp_request: at(7),
        }
    }
}

/// Entries of the program's counter array.
pub(crate) const COUNTERS: u32 = 8;

/// Why a filter could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the uplink filter of {ifname} ({what}) failed: {detail}")]
pub struct FilterError {
    pub ifname: String,
    pub what: String,
    pub detail: String,
}

/// The `filter_config` map's value (layout of `struct filter_config`).
pub(crate) fn config_value(mode: u32, f: &UplinkFilter) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[0..4].copy_from_slice(&mode.to_ne_bytes());
    let ip = f.node_ip.map_or([0; 4], |a| a.octets());
    v[4..8].copy_from_slice(&ip);
    v[8..10].copy_from_slice(&f.masquerade_ports.0.to_ne_bytes());
    v[10..12].copy_from_slice(&f.masquerade_ports.1.to_ne_bytes());
    v[12..14].copy_from_slice(&f.vxlan_port.unwrap_or(0).to_ne_bytes());
    v
}

/// `struct prefix_key`: prefix length (host order), address (network order).
fn prefix_key(&(net, len): &(Ipv4Addr, u8)) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0..4].copy_from_slice(&u32::from(len).to_ne_bytes());
    k[4..8].copy_from_slice(&net.octets());
    k
}

/// `struct port_key`: address (network order), port (host order), protocol, padding.
fn port_key(p: &OwnedPort) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0..4].copy_from_slice(&p.ip.octets());
    k[4..6].copy_from_slice(&p.port.to_ne_bytes());
    k[6] = p.proto;
    k
}

/// The program's filter maps on one interface, and what was last written to them.
#[derive(Debug, Default)]
pub(crate) struct FilterMaps {
    /// None: nothing written yet, or a write failed (the maps' contents are unknown).
    written: Option<UplinkFilter>,
}

impl FilterMaps {
    /// What the maps hold, when known.
    pub(crate) fn written(&self) -> Option<&UplinkFilter> {
        self.written.as_ref()
    }

    /// Brings the maps of `object` to `f` (see the module contract).
    pub(crate) fn write(&mut self, object: &libbpf_rs::Object, ifname: &str, f: &UplinkFilter) -> Result<(), FilterError> {
        let previous = self.written.take();
        if previous.as_ref() == Some(f) {
            self.written = previous;
            return Ok(());
        }
        let err = |what: &str, e: libbpf_rs::Error| FilterError { ifname: ifname.into(), what: what.into(), detail: e.to_string() };
        let map = |name: &str| {
            object.maps().find(|m| m.name() == name).ok_or_else(|| FilterError {
                ifname: ifname.into(),
                what: name.into(),
                detail: "map missing from the program".into(),
            })
        };
        let (prefixes, ports, arp) = (map("owned_prefixes")?, map("owned_ports")?, map("arp_targets")?);
        let empty = UplinkFilter::default();
        let old = match &previous {
            Some(p) => p,
            None => {
                // Unknown contents: start from empty maps.
                for m in [&prefixes, &ports, &arp] {
                    let keys: Vec<Vec<u8>> = m.keys().collect();
                    for k in keys {
                        m.delete(&k).map_err(|e| err(&format!("clearing {}", m.name().to_string_lossy()), e))?;
                    }
                }
                &empty
            }
        };
        let one = [1u8];
        // Removals first, so that a full map makes room for what comes.
        for p in old.prefixes.difference(&f.prefixes) {
            prefixes.delete(&prefix_key(p)).map_err(|e| err(&format!("removing prefix {}/{}", p.0, p.1), e))?;
        }
        for p in old.ports.difference(&f.ports) {
            ports.delete(&port_key(p)).map_err(|e| err(&format!("removing port {}:{}/{}", p.ip, p.port, p.proto), e))?;
        }
        for a in old.arp_targets.difference(&f.arp_targets) {
            arp.delete(&a.octets()).map_err(|e| err(&format!("removing ARP target {a}"), e))?;
        }
        for p in f.prefixes.difference(&old.prefixes) {
            prefixes.update(&prefix_key(p), &one, MapFlags::ANY).map_err(|e| err(&format!("adding prefix {}/{}", p.0, p.1), e))?;
        }
        for p in f.ports.difference(&old.ports) {
            ports
                .update(&port_key(p), &one, MapFlags::ANY)
                .map_err(|e| err(&format!("adding port {}:{}/{}", p.ip, p.port, p.proto), e))?;
        }
        for a in f.arp_targets.difference(&old.arp_targets) {
            arp.update(&a.octets(), &one, MapFlags::ANY).map_err(|e| err(&format!("adding ARP target {a}"), e))?;
        }
        map("filter_config")?
            .update(&0u32.to_ne_bytes(), &config_value(MODE_UPLINK, f), MapFlags::ANY)
            .map_err(|e| err("filter_config", e))?;
        self.written = Some(f.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_config_have_the_programs_layout() {
        let k = prefix_key(&(Ipv4Addr::new(10, 96, 0, 0), 12));
        assert_eq!(k, [12u32.to_ne_bytes(), [10, 96, 0, 0]].concat()[..]);
        let p = OwnedPort { ip: Ipv4Addr::new(172, 18, 0, 2), proto: 6, port: 30080 };
        assert_eq!(port_key(&p)[..4], [172, 18, 0, 2]);
        assert_eq!(port_key(&p)[4..6], 30080u16.to_ne_bytes());
        assert_eq!(port_key(&p)[6..], [6, 0]);
        let f = UplinkFilter {
            node_ip: Some(Ipv4Addr::new(172, 18, 0, 2)),
            masquerade_ports: (61000, 65535),
            vxlan_port: Some(8472),
            ..Default::default()
        };
        let v = config_value(MODE_UPLINK, &f);
        assert_eq!(v[..4], 1u32.to_ne_bytes());
        assert_eq!(v[4..8], [172, 18, 0, 2]);
        assert_eq!(v[8..10], 61000u16.to_ne_bytes());
        assert_eq!(v[10..12], 65535u16.to_ne_bytes());
        assert_eq!(v[12..14], 8472u16.to_ne_bytes());
    }

    #[test]
    fn counters_follow_the_programs_indices() {
        let c = RuleCounters::from_array(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!((c.redirected, c.passed, c.owned_prefix, c.arp_request), (1, 2, 3, 8));
    }
}
