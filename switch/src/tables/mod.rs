//! The tables the workers read, as one immutable snapshot ([`Tables`]): ports, routes
//! ([`routes`]), Services with their Maglev tables ([`services`], [`maglev`]), NetworkPolicy
//! ([`policy`]), the gateway address and the addresses answered for on uplinks.
//!
//! Contract: the control side builds a whole new [`Tables`] and publishes it
//! ([`crate::dataplane::Dataplane::publish`], an `ArcSwap` store); each worker loads the current
//! snapshot once per burst, lock-free, and never sees a half-built table. Every packet of a
//! burst is judged against the same snapshot. Nothing here knows Kubernetes types: the control
//! side has already decided every Kubernetes semantic. The connection table is not part of the
//! snapshot: it is state the workers write ([`crate::conntrack`]).
//!
//! [`lpm`] (with [`flatmap`]) keeps the route prefixes for listing and removal; the per-packet
//! lookup is [`routes::Routes`]'s array walk.
pub mod chunked;
pub mod egress;
pub mod flatmap;
pub mod lpm;
pub mod maglev;
pub mod overlay;
pub mod policy;
pub mod routes;
pub mod services;

use std::net::Ipv4Addr;

pub use lpm::{AddressFamily, LpmTable, V4};

/// Index of a port in [`Tables::ports`] and in each worker's socket array.
pub type PortId = u16;

/// The most ports one switch instance holds.
pub const MAX_PORTS: usize = 4096;

/// What is on the other side of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A pod's veth: anti-spoofing applies.
    Pod,
    /// The node's own network stack (kubelet and other agents reach pods through it).
    Host,
    /// The node's link to the rest of the network.
    Uplink,
    /// Not a device: the VXLAN tunnels to the other nodes ([`overlay`]). Frames decapsulated
    /// from the uplink come in on it; frames routed to it are encapsulated and leave by the
    /// uplink.
    Tunnel,
}

/// The only source a pod port accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceGuard {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    pub name: String,
    pub kind: PortKind,
    /// The switch's own MAC on this port: the pods' gateway MAC.
    pub mac: [u8; 6],
    /// For pod ports: the pod's MAC and IP; frames from other sources are dropped.
    pub source_guard: Option<SourceGuard>,
}

/// Where a route sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub port: PortId,
    pub dst_mac: [u8; 6],
    /// 0: the frame leaves `port` as it is; `i + 1`: `port` is the tunnel port and the frame
    /// is encapsulated in tunnel `i` of [`overlay::Overlay::tunnels`].
    pub tunnel: u16,
}

impl NextHop {
    /// A hop out of a device port to `dst_mac`.
    pub const fn direct(port: PortId, dst_mac: [u8; 6]) -> Self {
        Self { port, dst_mac, tunnel: 0 }
    }
}

/// One consistent view of the switch's tables.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Increases with every publish; `show` reports it.
    pub version: u64,
    /// The pods' default gateway, answered (ARP, ICMP echo) on every port.
    pub gateway_ip: Ipv4Addr,
    pub ports: Vec<Option<PortConfig>>,
    pub routes: routes::Routes,
    pub services: services::ServiceTables,
    pub policy: policy::PolicyTables,
    /// Addresses the switch answers ARP for on uplink ports. Not the node's own addresses: the
    /// uplink stays the node's and its kernel answers for those (the uplink's filter passes
    /// their ARP to the kernel, and redirects requests for these addresses to the switch).
    pub uplink_arp: Vec<Ipv4Addr>,
    /// The tunnels to the other nodes (empty without `--pod-network vxlan`).
    pub overlay: overlay::Overlay,
    /// Which pod traffic leaves the cluster masqueraded.
    pub egress: egress::EgressMasquerade,
}

impl Tables {
    pub fn new(gateway_ip: Ipv4Addr) -> Self {
        Self { version: 0, gateway_ip, ports: Vec::new(), routes: routes::Routes::new(), services: Default::default(), policy: Default::default(), uplink_arp: Vec::new(), overlay: Default::default(), egress: Default::default() }
    }

    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortConfig> {
        self.ports.get(id as usize).and_then(|p| p.as_ref())
    }

    /// Sets port `id`, growing the array as needed.
    pub fn set_port(&mut self, id: PortId, cfg: Option<PortConfig>) {
        let i = id as usize;
        if self.ports.len() <= i {
            self.ports.resize(i + 1, None);
        }
        self.ports[i] = cfg;
    }

    #[inline]
    pub fn route(&self, dst: Ipv4Addr) -> Option<&NextHop> {
        self.routes.lookup(u32::from(dst))
    }
}
