//! What the uplink's XDP program redirects to the switch, computed from the tables in force.
//!
//! Contract: [`compute`] gives the filter for the tables `t` of node `node` (see
//! `switch::afxdp::filter` for how the program applies it):
//! - owned prefixes: the node's pod CIDR, the Service ranges (`t.services.service_cidrs`, which
//!   hold a /32 for every ClusterIP outside them) and a /32 for every other Service address
//!   (LoadBalancer ingress, externalIPs) not inside one of those;
//! - owned ports: every NodePort frontend, and every Service frontend on a node address
//!   (an externalIP that is the node's): (address, protocol, port), never the whole address, so
//!   the node's own traffic on that address stays the node's;
//! - on the InternalIP: the masquerade port range ([`switch::pipeline::masquerade::PORTS`]) and
//!   the VXLAN port of [`UplinkConfig`];
//! - ARP targets: the addresses the switch answers ARP for on the uplink (`t.uplink_arp`) that
//!   are not node addresses (the kernel answers for those).
//!
//! [`FilterCache`] computes it again only when what it reads changed (the frontend keys, the
//! Service ranges, the ARP set), so a publish that changes endpoints only costs nothing here.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use switch::afxdp::filter::{OwnedPort, UplinkFilter};
use switch::tables::services::{FrontendIndex, FrontendKind};
use switch::tables::Tables;

use crate::model::NodeInfo;

/// What the filter takes from the switch's configuration rather than the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkConfig {
    /// The VXLAN UDP port on the node address; None: no tunnel traffic is redirected.
    pub vxlan_port: Option<u16>,
    /// Node addresses besides the InternalIP (they serve NodePorts too).
    pub extra_node_ips: Vec<Ipv4Addr>,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self { vxlan_port: Some(switch::wire::vxlan::DEFAULT_PORT), extra_node_ips: Vec::new() }
    }
}

fn covered(prefixes: &BTreeSet<(Ipv4Addr, u8)>, ip: Ipv4Addr) -> bool {
    let a = u32::from(ip);
    prefixes.iter().any(|&(net, len)| len == 0 || (a ^ u32::from(net)) >> (32 - u32::from(len)) == 0)
}

/// The filter for tables `t` (see the module contract).
pub fn compute(node: &NodeInfo, t: &Tables, cfg: &UplinkConfig) -> UplinkFilter {
    let node_ips: Vec<Ipv4Addr> = std::iter::once(node.internal_ip).chain(cfg.extra_node_ips.iter().copied()).collect();
    let mut prefixes: BTreeSet<(Ipv4Addr, u8)> = BTreeSet::new();
    prefixes.insert((node.pod_cidr.network(), node.pod_cidr.prefix_len()));
    for &(net, len) in &t.services.service_cidrs {
        prefixes.insert((Ipv4Addr::from(net), len));
    }
    // A range that holds a node address would take the node's own traffic: never redirect it.
    prefixes.retain(|&(net, len)| !node_ips.iter().any(|ip| covered(&BTreeSet::from([(net, len)]), *ip)));
    let mut ports = BTreeSet::new();
    let mut extra = BTreeSet::new();
    for f in t.services.frontends.iter() {
        let ip = Ipv4Addr::from(f.key.ip);
        if f.kind == FrontendKind::NodePort || node_ips.contains(&ip) {
            ports.insert(OwnedPort { ip, proto: f.key.proto, port: f.key.port });
        } else if !covered(&prefixes, ip) {
            extra.insert((ip, 32));
        }
    }
    prefixes.extend(extra);
    let arp_targets = t.uplink_arp.iter().copied().filter(|a| !node_ips.contains(a)).collect();
    UplinkFilter {
        node_ip: Some(node.internal_ip),
        masquerade_ports: (*switch::pipeline::masquerade::PORTS.start(), *switch::pipeline::masquerade::PORTS.end()),
        vxlan_port: cfg.vxlan_port,
        prefixes,
        ports,
        arp_targets,
    }
}

/// What a filter was computed from: the frontend keys' index, the Service ranges, the ARP set.
type Inputs = (Arc<FrontendIndex>, Vec<(u32, u8)>, Vec<Ipv4Addr>);

/// The last filter computed and what it was computed from.
#[derive(Debug, Default)]
pub struct FilterCache {
    from: Option<Inputs>,
    filter: UplinkFilter,
}

impl FilterCache {
    /// The filter for `t`; computed again only when the frontend keys (the index is rebuilt,
    /// as a new `Arc`, only when they change), the Service ranges or the ARP set changed.
    pub fn get(&mut self, node: &NodeInfo, t: &Tables, cfg: &UplinkConfig) -> &UplinkFilter {
        let same = self.from.as_ref().is_some_and(|(keys, cidrs, arp)| {
            Arc::ptr_eq(keys, &t.services.by_key) && *cidrs == t.services.service_cidrs && *arp == t.uplink_arp
        });
        if !same {
            self.filter = compute(node, t, cfg);
            self.from = Some((Arc::clone(&t.services.by_key), t.services.service_cidrs.clone(), t.uplink_arp.clone()));
        }
        &self.filter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::tables::services::{BackendSet, Frontend, FrontendKey, OnEmpty};

    const NODE: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);

    fn node() -> NodeInfo {
        NodeInfo { name: "node-1".into(), pod_cidr: "10.244.0.0/24".parse().unwrap(), internal_ip: NODE }
    }

    fn frontend(kind: FrontendKind, ip: Ipv4Addr, port: u16, proto: u8) -> Frontend {
        let empty = BackendSet { backends: Arc::from([]), maglev: switch::tables::maglev::MaglevTable::default(), on_empty: OnEmpty::Reject, masquerade: false };
        Frontend {
            name: format!("x/s:{port}"),
            affinity_id: switch::tables::services::affinity_id_of(&format!("x/s:{port}")),
            service_id: 1,
            service_port: port,
            kind,
            key: FrontendKey { ip: u32::from(ip), port, proto },
            internal: empty.clone(),
            external: empty,
            affinity_timeout_s: None,
            source_ranges: Vec::new(),
        }
    }

    fn tables() -> Tables {
        let mut t = Tables::new(Ipv4Addr::new(169, 254, 1, 1));
        t.services.service_cidrs = vec![(u32::from(Ipv4Addr::new(10, 96, 0, 0)), 12), (u32::from(Ipv4Addr::new(192, 168, 7, 7)), 32)];
        t.services.snat_ip = Some(NODE);
        t.services.extend([
            frontend(FrontendKind::ClusterIp, Ipv4Addr::new(10, 96, 0, 10), 53, 17),
            frontend(FrontendKind::ClusterIp, Ipv4Addr::new(192, 168, 7, 7), 80, 6),
            frontend(FrontendKind::NodePort, NODE, 30080, 6),
            frontend(FrontendKind::NodePort, NODE, 30053, 17),
            frontend(FrontendKind::LoadBalancer, Ipv4Addr::new(203, 0, 113, 9), 443, 6),
            frontend(FrontendKind::ExternalIp, Ipv4Addr::new(198, 51, 100, 4), 8080, 132),
            // An externalIP that is the node's own address: its port only, never the address.
            frontend(FrontendKind::ExternalIp, NODE, 8443, 6),
        ]);
        t.uplink_arp = vec![NODE, Ipv4Addr::new(203, 0, 113, 9)];
        t
    }

    #[test]
    fn the_filter_owns_pods_service_addresses_node_ports_and_the_masquerade_range_and_never_the_node_address() {
        let f = compute(&node(), &tables(), &UplinkConfig::default());
        assert_eq!(f.node_ip, Some(NODE));
        assert_eq!(f.masquerade_ports, (61000, 65535));
        assert_eq!(f.vxlan_port, Some(8472));
        let p = |a: [u8; 4], l: u8| (Ipv4Addr::from(a), l);
        assert_eq!(
            f.prefixes,
            BTreeSet::from([
                p([10, 96, 0, 0], 12),
                p([10, 244, 0, 0], 24),
                p([192, 168, 7, 7], 32),
                p([198, 51, 100, 4], 32),
                p([203, 0, 113, 9], 32),
            ]),
            "the ClusterIPs are inside the ranges; LoadBalancer and externalIP addresses are /32s"
        );
        assert_eq!(
            f.ports,
            BTreeSet::from([
                OwnedPort { ip: NODE, proto: 6, port: 8443 },
                OwnedPort { ip: NODE, proto: 6, port: 30080 },
                OwnedPort { ip: NODE, proto: 17, port: 30053 },
            ])
        );
        assert_eq!(f.arp_targets, BTreeSet::from([Ipv4Addr::new(203, 0, 113, 9)]), "the kernel answers ARP for the node");
    }

    #[test]
    fn a_service_range_holding_the_node_address_is_not_owned_and_extra_node_addresses_only_by_port() {
        let mut t = tables();
        t.services.service_cidrs.push((u32::from(Ipv4Addr::new(172, 18, 0, 0)), 16));
        let extra = Ipv4Addr::new(172, 19, 0, 2);
        t.services.push(frontend(FrontendKind::NodePort, extra, 30080, 6));
        let cfg = UplinkConfig { vxlan_port: None, extra_node_ips: vec![extra] };
        let f = compute(&node(), &t, &cfg);
        assert!(!f.prefixes.contains(&(Ipv4Addr::new(172, 18, 0, 0), 16)));
        assert!(f.ports.contains(&OwnedPort { ip: extra, proto: 6, port: 30080 }));
        assert!(!f.prefixes.iter().any(|&(n, _)| n == extra));
        assert_eq!(f.vxlan_port, None);
    }

    #[test]
    fn the_cache_computes_again_only_when_what_it_reads_changed() {
        let mut cache = FilterCache::default();
        let mut t = tables();
        let first = cache.get(&node(), &t, &UplinkConfig::default()).clone();
        // Same keys (same index), same ranges: the cached filter, even if the tables' version moved.
        t.version += 1;
        assert_eq!(*cache.get(&node(), &t, &UplinkConfig::default()), first);
        t.services.push(frontend(FrontendKind::NodePort, NODE, 30099, 6));
        assert!(cache.get(&node(), &t, &UplinkConfig::default()).ports.contains(&OwnedPort { ip: NODE, proto: 6, port: 30099 }));
        t.uplink_arp.push(Ipv4Addr::new(198, 51, 100, 77));
        assert!(cache.get(&node(), &t, &UplinkConfig::default()).arp_targets.contains(&Ipv4Addr::new(198, 51, 100, 77)));
    }
}
