//! The table assembler: from the node, its pods and the compiled Services and NetworkPolicies
//! to the switch's [`Tables`].
//!
//! Contract: pure functions, the only place that makes a [`Tables`].
//! - [`desired_ports`] says which ports the switch should have (the node's host port, the
//!   uplink, one per local pod with an IP) and lists what cannot be wired, as sentences.
//! - [`PortTables::build`] makes the port part (port configs, routes, the uplink's ARP
//!   addresses) for the ports actually attached. A pod whose port is not attached has no route,
//!   so nothing is sent toward a socket that is not there. The caller keeps it and builds it
//!   again only when the desired or attached ports change.
//! - [`assemble`] puts a port part, compiled Services and compiled NetworkPolicies together
//!   under a version; it shares the compiled parts, copies the port configs and builds the
//!   route table anew from the port part's routes. A route table is 320 KiB whatever it holds
//!   and [`Tables`] owns its own: a new zeroed one with the few port routes inserted costs
//!   less than a copy, which also reads the 320 KiB (`podswitch-perf sync` under callgrind
//!   with a 2 MiB L2: the same instructions, about 4,400 fewer L2 read misses per publish).
//!   Sharing it would need `Tables` to hold it behind an `Arc`.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use switch::tables::egress::EgressMasquerade;
use switch::tables::overlay::Overlay;
use switch::tables::policy::PolicyTables;
use switch::tables::routes::Routes;
use switch::tables::services::ServiceTables;
use switch::tables::{NextHop, PortConfig, PortId, PortKind, SourceGuard, Tables};

use crate::model::{NodeInfo, PodInfo};
use crate::naming;

/// Key of the node's host port in [`desired_ports`].
pub const HOST_KEY: &str = "node";
/// Key of the uplink port.
pub const UPLINK_KEY: &str = "uplink";

/// The node's link to the rest of the network, as the operator configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub ifname: String,
    /// MAC of the next hop behind the uplink (the router, or in the lab the `external` host):
    /// everything without a more specific route goes there. `None` while it is not known
    /// (not given and not yet resolved by the kernel, `crate::neighbours`): then there is no
    /// default route, and such traffic is dropped as `no_route`.
    pub gateway_mac: Option<[u8; 6]>,
    /// How pods reach other nodes' pods over it.
    pub pod_network: crate::pod_network::PodNetwork,
    /// Its MTU (IPv4 packet size), read at start.
    pub mtu: u16,
    /// Destinations pods reach with their own address besides the cluster's pod CIDRs
    /// (`--non-masquerade-cidr`).
    pub non_masquerade: Vec<ipnet::Ipv4Net>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPort {
    /// `node` or `namespace/name`.
    pub key: String,
    pub ifname: String,
    pub kind: PortKind,
    /// Pod ports: the pod's IP (and MAC from it).
    pub pod_ip: Option<Ipv4Addr>,
}

/// A port the dataplane has attached: its id and the switch-side MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    pub id: PortId,
    pub mac: [u8; 6],
}

/// The ports this node needs, and the pods that cannot be wired (with why).
pub fn desired_ports(node: &NodeInfo, pods: &[PodInfo], uplink: Option<&Uplink>) -> (Vec<DesiredPort>, Vec<String>) {
    let mut out = vec![DesiredPort {
        key: HOST_KEY.into(),
        ifname: naming::HOST_SWITCH_IF.into(),
        kind: PortKind::Host,
        pod_ip: None,
    }];
    if let Some(u) = uplink {
        out.push(DesiredPort { key: UPLINK_KEY.into(), ifname: u.ifname.clone(), kind: PortKind::Uplink, pod_ip: None });
    }
    let mut problems = Vec::new();
    let mut by_ip: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for p in pods {
        let key = p.key();
        let Some(ip) = p.ip else {
            problems.push(format!("pod {key} has no status.podIP yet"));
            continue;
        };
        if ip == node.internal_ip || ip == naming::GATEWAY_IP {
            problems.push(format!("pod {key} has IP {ip}, which belongs to the node or the gateway"));
            continue;
        }
        if let Some(other) = by_ip.insert(ip, key.clone()) {
            problems.push(format!("pods {other} and {key} both have IP {ip}; neither is wired"));
            out.retain(|d| d.key != other);
            continue;
        }
        out.push(DesiredPort { key, ifname: p.interface(), kind: PortKind::Pod, pod_ip: Some(ip) });
    }
    // A duplicate IP disqualifies every pod that has it.
    let dup_ips: Vec<Ipv4Addr> = {
        let mut count: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        for p in pods.iter().filter_map(|p| p.ip) {
            *count.entry(p).or_default() += 1;
        }
        count.into_iter().filter(|(_, n)| *n > 1).map(|(ip, _)| ip).collect()
    };
    out.retain(|d| d.pod_ip.is_none_or(|ip| !dup_ips.contains(&ip)));
    (out, problems)
}

/// The port part of the tables: what the desired and attached ports make, and the pod
/// network's routes and tunnels ([`crate::pod_network::add_routes`]).
#[derive(Debug, Clone, Default)]
pub struct PortTables {
    pub ports: Vec<Option<PortConfig>>,
    pub routes: Routes,
    pub uplink_arp: Vec<Ipv4Addr>,
    pub overlay: Overlay,
    pub egress: EgressMasquerade,
}

impl PortTables {
    /// The port part for the desired ports that are attached.
    pub fn build(
        node: &NodeInfo,
        desired: &[DesiredPort],
        attached: &BTreeMap<String, Attached>,
        host_stack_mac: [u8; 6],
        uplink: Option<&Uplink>,
    ) -> Self {
        let mut t = Tables::new(naming::GATEWAY_IP);
        for d in desired {
            let Some(a) = attached.get(&d.key) else { continue };
            let guard = d.pod_ip.map(|ip| SourceGuard { mac: naming::pod_mac(ip), ip });
            t.set_port(a.id, Some(PortConfig { name: d.key.clone(), kind: d.kind, mac: a.mac, source_guard: guard }));
            match (d.kind, d.pod_ip) {
                (PortKind::Pod, Some(ip)) => {
                    t.routes.insert(u32::from(ip), 32, NextHop::direct(a.id, naming::pod_mac(ip)));
                }
                (PortKind::Host, _) => {
                    t.routes.insert(u32::from(node.internal_ip), 32, NextHop::direct(a.id, host_stack_mac));
                }
                (PortKind::Uplink, _) => {
                    if let Some(gateway_mac) = uplink.and_then(|u| u.gateway_mac) {
                        // Whatever is not a pod of this node or the node itself leaves by the uplink.
                        t.routes.insert(0, 0, NextHop::direct(a.id, gateway_mac));
                    }
                }
                _ => {}
            }
        }
        // The node's own addresses are the kernel's to answer ARP for: the uplink stays the
        // node's (its filter passes those requests to the kernel).
        Self { ports: t.ports, routes: t.routes, uplink_arp: Vec::new(), overlay: Overlay::default(), egress: EgressMasquerade::default() }
    }
}

/// The compiled parts the tables are made of.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// The version the tables get (increase it with every publish).
    pub version: u64,
    pub ports: &'a PortTables,
    pub services: &'a ServiceTables,
    pub policy: &'a PolicyTables,
}

/// The tables made of `parts`.
pub fn assemble(parts: Parts<'_>) -> Tables {
    // A literal rather than `Tables::new` and assignments: that would make a second route table.
    let mut routes = Routes::new();
    for (prefix, len, hop) in parts.ports.routes.entries() {
        routes.insert(prefix, len, *hop);
    }
    Tables {
        version: parts.version,
        gateway_ip: naming::GATEWAY_IP,
        ports: parts.ports.ports.clone(),
        routes,
        services: parts.services.clone(),
        policy: parts.policy.clone(),
        uplink_arp: parts.ports.uplink_arp.clone(),
        overlay: parts.ports.overlay.clone(),
        egress: parts.ports.egress.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DEFAULT_INTERNAL_IP;

    fn pod(ns: &str, name: &str, ip: Option<&str>) -> PodInfo {
        PodInfo::for_test(ns, name, ip)
    }

    fn node() -> NodeInfo {
        NodeInfo { name: "n".into(), pod_cidr: "10.244.0.0/24".parse().unwrap(), internal_ip: DEFAULT_INTERNAL_IP }
    }

    #[test]
    fn pods_without_ip_or_with_duplicate_ips_are_not_wired() {
        let pods = vec![
            pod("x", "a", Some("10.244.0.10")),
            pod("x", "b", None),
            pod("y", "a", Some("10.244.0.20")),
            pod("y", "b", Some("10.244.0.20")),
        ];
        let (d, problems) = desired_ports(&node(), &pods, None);
        let keys: Vec<_> = d.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, vec!["node", "x/a"]);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn only_attached_ports_get_routes_and_guards() {
        let pods = vec![pod("x", "a", Some("10.244.0.10")), pod("x", "b", Some("10.244.0.11"))];
        let (d, _) = desired_ports(&node(), &pods, None);
        let mut attached = BTreeMap::new();
        attached.insert("node".to_string(), Attached { id: 0, mac: [2, 0, 0, 0, 0, 1] });
        attached.insert("x/a".to_string(), Attached { id: 1, mac: [2, 0, 0, 0, 0, 2] });
        let ports = PortTables::build(&node(), &d, &attached, [2, 0, 0, 0, 0, 9], None);
        let t = assemble(Parts { version: 7, ports: &ports, services: &Default::default(), policy: &Default::default() });
        assert_eq!(t.version, 7);
        let a = t.route("10.244.0.10".parse().unwrap()).unwrap();
        assert_eq!((a.port, a.dst_mac), (1, naming::pod_mac("10.244.0.10".parse().unwrap())));
        assert!(t.route("10.244.0.11".parse().unwrap()).is_none());
        assert_eq!(t.route(DEFAULT_INTERNAL_IP).unwrap().dst_mac, [2, 0, 0, 0, 0, 9]);
        assert_eq!(t.port(1).unwrap().source_guard.unwrap().ip, "10.244.0.10".parse::<Ipv4Addr>().unwrap());
        assert!(t.port(0).unwrap().source_guard.is_none());
        assert_eq!(t.routes, ports.routes);
    }

    #[test]
    fn assembled_routes_are_the_port_parts_routes() {
        let pods = vec![pod("x", "a", Some("10.244.0.10")), pod("x", "b", Some("10.244.1.11"))];
        let mut uplink = Uplink { ifname: "eth0".into(), gateway_mac: Some([2, 0, 0, 0, 0, 0xfe]), pod_network: Default::default(), mtu: 1500, non_masquerade: Vec::new() };
        let (d, _) = desired_ports(&node(), &pods, Some(&uplink));
        let attached: BTreeMap<String, Attached> = d
            .iter()
            .enumerate()
            .map(|(i, d)| (d.key.clone(), Attached { id: i as PortId, mac: [2, 0, 0, 0, 1, i as u8] }))
            .collect();
        let ports = PortTables::build(&node(), &d, &attached, [2, 0, 0, 0, 0, 9], Some(&uplink));
        let t = assemble(Parts { version: 1, ports: &ports, services: &Default::default(), policy: &Default::default() });
        assert_eq!(t.routes.len(), 4, "{:?}", t.routes);
        assert_eq!(t.routes, ports.routes);
        assert_eq!(t.route("10.244.1.11".parse().unwrap()).unwrap().port, 3);
        assert_eq!(Some(t.route("1.1.1.1".parse().unwrap()).unwrap().dst_mac), uplink.gateway_mac);
        // The gateway's MAC not known (yet): no default route.
        uplink.gateway_mac = None;
        let ports = PortTables::build(&node(), &d, &attached, [2, 0, 0, 0, 0, 9], Some(&uplink));
        assert_eq!(ports.routes.len(), 3, "{:?}", ports.routes);
        assert!(ports.routes.entries().iter().all(|(_, len, _)| *len > 0));
    }
}
