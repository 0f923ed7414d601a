//! The pod network's tunnels: VXLAN (RFC 7348) over the uplink to the other nodes of the
//! cluster, as `podswitch run --pod-network vxlan` builds them.
//!
//! Contract: [`Overlay`] is what the pipeline's tunnel stage ([`crate::pipeline::tunnel`])
//! reads. When `enabled`:
//! - a frame that arrives on `uplink` as IPv4/UDP to `node_ip` and `udp_port` is a tunnel
//!   frame; it is taken only from a known node (`peers`: its underlay address → its tunnel),
//!   with `vni`, and its inner frame comes in on `tunnel_port`, a port of [`super::Tables`] of
//!   kind [`super::PortKind::Tunnel`] with the MAC [`TUNNEL_MAC`] and no device behind it;
//! - a frame routed to `tunnel_port` (a [`super::NextHop`] whose `tunnel` is `i + 1`) leaves
//!   by `uplink` inside `tunnels[i]`'s outer headers; an inner IPv4 packet longer than
//!   `inner_mtu` is not sent (fragmentation-needed, or a drop without DF).
//!
//! When not `enabled` (the default: no uplink, or `--pod-network routed`) nothing here is read.
//! The control side builds the whole value with the rest of the tables.
use std::net::Ipv4Addr;

use super::flatmap::FlatMap;
use super::PortId;
use crate::wire::vxlan::{self, Tunnel};

/// The inner frames' MAC at both ends of every tunnel: the tunnel port's MAC on every node, so
/// that what one node sends is addressed to the tunnel port of the one that receives it.
pub const TUNNEL_MAC: [u8; 6] = [0x02, 0x70, 0x73, 0x77, 0x74, 0x6e];

/// The tunnels of one node (see the module contract).
#[derive(Debug, Clone)]
pub struct Overlay {
    pub enabled: bool,
    /// The uplink port the tunnels run over.
    pub uplink: PortId,
    /// The tunnel's port id in [`super::Tables::ports`] (no device has it).
    pub tunnel_port: PortId,
    /// This node's underlay address: the tunnels' local end.
    pub node_ip: Ipv4Addr,
    /// The UDP port tunnel frames are sent to and taken on.
    pub udp_port: u16,
    pub vni: u32,
    /// The longest inner IPv4 packet a tunnel carries: the uplink's MTU minus
    /// [`vxlan::OVERHEAD`] (the outer IP, UDP and VXLAN headers, 36 bytes, and the inner
    /// Ethernet header, 14, all go inside the uplink's MTU).
    pub inner_mtu: u16,
    /// One per remote node, with its outer headers but for lengths and source port.
    pub tunnels: Vec<Tunnel>,
    /// A remote node's underlay address → its tunnel's index + 1.
    pub peers: FlatMap<u32, u16>,
}

impl Default for Overlay {
    fn default() -> Self {
        Self {
            enabled: false,
            uplink: PortId::MAX,
            tunnel_port: PortId::MAX,
            node_ip: Ipv4Addr::UNSPECIFIED,
            udp_port: vxlan::DEFAULT_PORT,
            vni: 1,
            inner_mtu: 1500 - 50,
            tunnels: Vec::new(),
            peers: FlatMap::default(),
        }
    }
}

impl Overlay {
    /// The largest inner IPv4 packet for an uplink MTU (IPv4 packet size) of `uplink_mtu`.
    pub fn inner_mtu_for(uplink_mtu: u16) -> u16 {
        uplink_mtu.saturating_sub(vxlan::OVERHEAD as u16)
    }

    /// Adds the tunnel to a remote node; returns its index + 1 for the node's routes.
    pub fn add_tunnel(&mut self, t: Tunnel) -> u16 {
        self.tunnels.push(t);
        let id = self.tunnels.len() as u16;
        self.peers.insert(u32::from(t.dst_ip), id);
        id
    }

    /// The tunnel `NextHop::tunnel` names (`id` = index + 1).
    #[inline(always)]
    pub fn tunnel(&self, id: u16) -> Option<&Tunnel> {
        self.tunnels.get(usize::from(id).checked_sub(1)?)
    }

    /// The tunnel (index + 1) of the remote node whose underlay address is `ip`.
    #[inline(always)]
    pub fn peer(&self, ip: u32) -> Option<u16> {
        self.peers.get(&ip).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;

    #[test]
    fn inner_mtu_leaves_room_for_the_outer_headers() {
        assert_eq!(Overlay::inner_mtu_for(1500), 1450);
        assert_eq!(Overlay::inner_mtu_for(9000), 8950);
        assert_eq!(Overlay::inner_mtu_for(20), 0);
    }

    #[test]
    fn tunnels_are_found_by_id_and_by_peer_address() {
        let mut o = Overlay::default();
        let t = |ip: [u8; 4]| Tunnel {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, ip[3]]),
            src_ip: Ipv4Addr::new(172, 18, 0, 2),
            dst_ip: Ipv4Addr::from(ip),
            dst_port: 8472,
            vni: 1,
        };
        let a = o.add_tunnel(t([172, 18, 0, 3]));
        let b = o.add_tunnel(t([172, 18, 0, 4]));
        assert_eq!((a, b), (1, 2));
        assert_eq!(o.tunnel(b).unwrap().dst_ip, Ipv4Addr::new(172, 18, 0, 4));
        assert!(o.tunnel(0).is_none() && o.tunnel(3).is_none());
        assert_eq!(o.peer(u32::from(Ipv4Addr::new(172, 18, 0, 3))), Some(1));
        assert_eq!(o.peer(u32::from(Ipv4Addr::new(172, 18, 0, 9))), None);
    }
}
