//! The pod network between nodes: the routes to the other nodes' pods and, in `vxlan` mode,
//! the tunnels they go through (`podswitch run --pod-network vxlan|routed`).
//!
//! Contract: [`add_routes`] is a pure function that adds to a port part of the tables
//! ([`PortTables`]) what the other nodes ([`RemoteNode`]) need, given the uplink as attached and
//! a resolver that says the MAC of the next hop towards an underlay address (the node itself
//! when on-link, else the gateway: the caller's neighbour table). Without an attached uplink it
//! adds nothing. Per remote node:
//! - `vxlan`: one tunnel (outer headers from this node's InternalIP and the uplink's MAC to the
//!   node's InternalIP and next-hop MAC, the configured UDP port and VNI); its pod CIDRs and
//!   its InternalIP/32 route into it (through the tunnel port, [`TUNNEL_PORT_ID`], which no
//!   device has). The InternalIP goes through the tunnel too, so that what a pod sends to
//!   another node's own stack, and the replies of connections that node masqueraded, stay in
//!   the pod network. The tunnel port and the overlay are set up even with no remote node,
//!   so that tunnel frames from strangers are counted as such.
//! - `routed`: its pod CIDRs and InternalIP/32 route out of the uplink to the next-hop MAC,
//!   unencapsulated.
//!
//! A node whose next hop is not resolved (yet) gets no routes (its pods are `no_route` until
//! then) and a sentence. The inner MTU is the uplink's MTU less the VXLAN overhead.
//!
//! With an attached uplink, pods' traffic leaving the cluster is masqueraded
//! ([`switch::tables::egress`]): everything but this node's and every other node's pod CIDRs
//! (whether reachable yet or not), this node's InternalIP and the `non_masquerade` prefixes.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use switch::tables::overlay::{Overlay, TUNNEL_MAC};
use switch::tables::{NextHop, PortConfig, PortId, PortKind};
use switch::wire::vxlan::{Tunnel, DEFAULT_PORT, MAX_VNI};
use switch::wire::MacAddr;

use crate::compile::PortTables;
use crate::model::NodeInfo;
use crate::nodes::RemoteNode;

/// The tunnel port's id: no device is attached under it (device ids start after it).
pub const TUNNEL_PORT_ID: PortId = 1;

/// How pods reach the pods of other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum PodNetwork {
    /// VXLAN (RFC 7348) to each node's InternalIP.
    Vxlan { udp_port: u16, vni: u32 },
    /// Plain routing: the underlay carries pod addresses.
    Routed,
}

impl Default for PodNetwork {
    fn default() -> Self {
        PodNetwork::Vxlan { udp_port: DEFAULT_PORT, vni: 1 }
    }
}

/// Why a pod network configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodNetworkError {
    #[error("--vxlan-vni {0} is outside 0-{MAX_VNI} (24 bits)")]
    Vni(u32),
    #[error("--vxlan-port 0 is not a port")]
    Port,
}

impl PodNetwork {
    /// Checks the VXLAN parameters.
    pub fn validate(self) -> Result<Self, PodNetworkError> {
        match self {
            PodNetwork::Vxlan { vni, .. } if vni > MAX_VNI => Err(PodNetworkError::Vni(vni)),
            PodNetwork::Vxlan { udp_port: 0, .. } => Err(PodNetworkError::Port),
            p => Ok(p),
        }
    }

    /// The MTU pods must have for their packets to cross an uplink of MTU `uplink_mtu`: less
    /// the VXLAN header in vxlan mode (the CNI plugin's default MTU).
    pub fn pod_mtu(self, uplink_mtu: u16) -> u16 {
        match self {
            PodNetwork::Vxlan { .. } => uplink_mtu.saturating_sub(switch::wire::vxlan::OVERHEAD as u16),
            PodNetwork::Routed => uplink_mtu,
        }
    }

    /// The UDP port tunnel frames come in on (none in routed mode).
    pub fn vxlan_port(self) -> Option<u16> {
        match self {
            PodNetwork::Vxlan { udp_port, .. } => Some(udp_port),
            PodNetwork::Routed => None,
        }
    }
}

/// The uplink as attached: its port id, its MAC and its MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachedUplink {
    pub id: PortId,
    pub mac: [u8; 6],
    pub mtu: u16,
}

/// A node left without routes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreached {
    pub node: String,
    pub why: String,
}

/// Adds the pod network's routes (and tunnels) to `ports`; see the module contract. Returns
/// the nodes left without routes.
#[allow(clippy::too_many_arguments)]
pub fn add_routes(
    ports: &mut PortTables,
    node: &NodeInfo,
    mode: PodNetwork,
    uplink: Option<AttachedUplink>,
    remote: &[RemoteNode],
    non_masquerade: &[Ipv4Net],
    next_hop_mac: &dyn Fn(Ipv4Addr) -> Option<[u8; 6]>,
) -> Vec<Unreached> {
    let Some(up) = uplink else { return Vec::new() };
    let mut unreached = Vec::new();
    let exempt = &mut ports.egress.exempt;
    let cidrs = std::iter::once(node.pod_cidr).chain(remote.iter().flat_map(|r| r.pod_cidrs.iter().copied())).chain(non_masquerade.iter().copied());
    for c in cidrs {
        exempt.insert(u32::from(c.network()), c.prefix_len(), ());
    }
    exempt.insert(u32::from(node.internal_ip), 32, ());
    ports.egress.masquerade = true;
    if let PodNetwork::Vxlan { udp_port, vni } = mode {
        let id = usize::from(TUNNEL_PORT_ID);
        if ports.ports.len() <= id {
            ports.ports.resize(id + 1, None);
        }
        ports.ports[id] = Some(PortConfig { name: "tunnel".into(), kind: PortKind::Tunnel, mac: TUNNEL_MAC, source_guard: None });
        ports.overlay = Overlay {
            enabled: true,
            uplink: up.id,
            tunnel_port: TUNNEL_PORT_ID,
            node_ip: node.internal_ip,
            udp_port,
            vni,
            inner_mtu: Overlay::inner_mtu_for(up.mtu),
            ..Default::default()
        };
    }
    for r in remote {
        let Some(mac) = next_hop_mac(r.internal_ip) else {
            unreached.push(Unreached {
                node: r.name.clone(),
                why: format!(
                    "Node {}: the next hop to {} is not resolved (yet); its pods ({}) are not reachable until it is",
                    r.name,
                    r.internal_ip,
                    r.pod_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ),
            });
            continue;
        };
        let hop = match mode {
            PodNetwork::Vxlan { udp_port, vni } => {
                let tunnel = ports.overlay.add_tunnel(Tunnel {
                    src_mac: MacAddr(up.mac),
                    dst_mac: MacAddr(mac),
                    src_ip: node.internal_ip,
                    dst_ip: r.internal_ip,
                    dst_port: udp_port,
                    vni,
                });
                NextHop { port: TUNNEL_PORT_ID, dst_mac: TUNNEL_MAC, tunnel }
            }
            PodNetwork::Routed => NextHop::direct(up.id, mac),
        };
        for c in &r.pod_cidrs {
            ports.routes.insert(u32::from(c.network()), c.prefix_len(), hop);
        }
        ports.routes.insert(u32::from(r.internal_ip), 32, hop);
    }
    unreached
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DEFAULT_INTERNAL_IP;

    fn node() -> NodeInfo {
        NodeInfo { name: "n1".into(), pod_cidr: "10.244.0.0/24".parse().unwrap(), internal_ip: DEFAULT_INTERNAL_IP }
    }

    fn remote(name: &str, cidr: &str, ip: [u8; 4]) -> RemoteNode {
        RemoteNode { name: name.into(), pod_cidrs: vec![cidr.parse().unwrap()], internal_ip: Ipv4Addr::from(ip) }
    }

    const UP: AttachedUplink = AttachedUplink { id: 3, mac: [2, 0, 0, 0, 0, 3], mtu: 1500 };

    fn resolve(ip: Ipv4Addr) -> Option<[u8; 6]> {
        let o = ip.octets();
        (o[3] != 99).then_some([2, 0, 0, 0, 1, o[3]])
    }

    #[test]
    fn vxlan_routes_each_nodes_pods_and_address_into_its_tunnel() {
        let mut p = PortTables::default();
        let nodes = [remote("n2", "10.244.1.0/24", [172, 18, 0, 3]), remote("n3", "10.244.2.0/24", [172, 18, 0, 4])];
        let problems = add_routes(&mut p, &node(), PodNetwork::default(), Some(UP), &nodes, &[], &resolve);
        assert!(problems.is_empty(), "{problems:?}");
        let o = &p.overlay;
        assert!(o.enabled);
        assert_eq!((o.uplink, o.tunnel_port, o.node_ip, o.udp_port, o.vni, o.inner_mtu), (3, TUNNEL_PORT_ID, DEFAULT_INTERNAL_IP, 8472, 1, 1450));
        let hop = *p.routes.lookup(u32::from(Ipv4Addr::new(10, 244, 2, 9))).unwrap();
        assert_eq!(hop, NextHop { port: TUNNEL_PORT_ID, dst_mac: TUNNEL_MAC, tunnel: 2 });
        let t = o.tunnel(hop.tunnel).unwrap();
        assert_eq!((t.dst_ip, t.dst_mac.0, t.src_mac.0, t.src_ip), (Ipv4Addr::new(172, 18, 0, 4), [2, 0, 0, 0, 1, 4], UP.mac, DEFAULT_INTERNAL_IP));
        assert_eq!(p.routes.lookup(u32::from(Ipv4Addr::new(172, 18, 0, 3))).unwrap().tunnel, 1, "the node's address too");
        assert_eq!(o.peer(u32::from(Ipv4Addr::new(172, 18, 0, 3))), Some(1));
        assert_eq!(p.ports[usize::from(TUNNEL_PORT_ID)].as_ref().unwrap().kind, PortKind::Tunnel);
    }

    #[test]
    fn routed_mode_sends_each_nodes_pods_to_its_mac_on_the_uplink() {
        let mut p = PortTables::default();
        let nodes = [remote("n2", "10.244.1.0/24", [172, 18, 0, 3])];
        add_routes(&mut p, &node(), PodNetwork::Routed, Some(UP), &nodes, &[], &resolve);
        assert!(!p.overlay.enabled);
        assert_eq!(*p.routes.lookup(u32::from(Ipv4Addr::new(10, 244, 1, 200))).unwrap(), NextHop::direct(3, [2, 0, 0, 0, 1, 3]));
        assert!(p.ports.get(usize::from(TUNNEL_PORT_ID)).is_none_or(Option::is_none));
    }

    #[test]
    fn an_unresolved_node_gets_no_route_and_a_sentence_and_no_uplink_means_nothing() {
        let mut p = PortTables::default();
        let nodes = [remote("n9", "10.244.9.0/24", [172, 18, 0, 99]), remote("n2", "10.244.1.0/24", [172, 18, 0, 3])];
        let problems = add_routes(&mut p, &node(), PodNetwork::default(), Some(UP), &nodes, &[], &resolve);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].node == "n9" && problems[0].why.contains("n9") && problems[0].why.contains("172.18.0.99"), "{problems:?}");
        assert!(p.routes.lookup(u32::from(Ipv4Addr::new(10, 244, 9, 1))).is_none());
        assert!(p.routes.lookup(u32::from(Ipv4Addr::new(10, 244, 1, 1))).is_some());
        let mut none = PortTables::default();
        assert!(add_routes(&mut none, &node(), PodNetwork::default(), None, &nodes, &[], &resolve).is_empty());
        assert!(!none.overlay.enabled && none.routes.is_empty() && !none.egress.masquerade);
    }

    #[test]
    fn pods_leaving_the_cluster_are_masqueraded_but_not_towards_pods_the_node_or_exempt_ranges() {
        let mut p = PortTables::default();
        // n9 is unresolved: its pods are still pods, never masqueraded.
        let nodes = [remote("n2", "10.244.1.0/24", [172, 18, 0, 3]), remote("n9", "10.244.9.0/24", [172, 18, 0, 99])];
        add_routes(&mut p, &node(), PodNetwork::Routed, Some(UP), &nodes, &["192.168.0.0/16".parse().unwrap()], &resolve);
        let e = &p.egress;
        for (dst, masq) in [
            ([10, 244, 0, 5], false),
            ([10, 244, 1, 5], false),
            ([10, 244, 9, 5], false),
            ([192, 168, 3, 3], false),
            ([172, 18, 0, 3], true), // another node's own address
            ([8, 8, 8, 8], true),
        ] {
            assert_eq!(e.applies_to(u32::from(Ipv4Addr::from(dst))), masq, "{dst:?}");
        }
        assert!(!e.applies_to(u32::from(DEFAULT_INTERNAL_IP)));
    }

    #[test]
    fn vxlan_parameters_are_checked() {
        assert_eq!(PodNetwork::Vxlan { udp_port: 4789, vni: 1 << 24 }.validate(), Err(PodNetworkError::Vni(1 << 24)));
        assert_eq!(PodNetwork::Vxlan { udp_port: 0, vni: 1 }.validate(), Err(PodNetworkError::Port));
        assert!(PodNetwork::Vxlan { udp_port: 4789, vni: (1 << 24) - 1 }.validate().is_ok());
    }
}
