//! Service tables: frontends (VIP, port, protocol) and the backends the control side chose for
//! them, with every Kubernetes semantic decided at compile time so the dataplane only applies it.
//!
//! Contract:
//! - A [`Frontend`] has two [`BackendSet`]s: `internal` for traffic from pods and the node's own
//!   stack, `external` for traffic from the uplink. The compiler fills them with the usable
//!   endpoints (ready ones; serving+terminating when none is ready; never serving=false),
//!   restricted to this node's endpoints under a `Local` traffic policy.
//! - An empty set answers as its `on_empty` says: `Reject` (TCP RST / ICMP port unreachable,
//!   a Service with no endpoints) or `Drop` (a `Local` policy with no local endpoint).
//! - `masquerade` says whether the client's address is replaced by the node's (`snat_ip`):
//!   external traffic under `externalTrafficPolicy: Cluster`. Hairpin (a pod reaching itself
//!   through a Service) is masqueraded by the dataplane whatever the set says.
//! - `maglev` is the Maglev lookup table over `backends` (entries are indices into it); its
//!   length is a prime. An empty set has an empty table.
//! - An address inside `service_cidrs` that is no ClusterIP is dropped; a ClusterIP on a port or
//!   protocol no frontend has is rejected.
//! - Sharing: every part that can be large is behind an `Arc` and never mutated once published
//!   (frontends, backend lists, Maglev tables, the key index, the ClusterIP set), so cloning a
//!   [`ServiceTables`] costs a few reference counts, and a new version that changes one Service
//!   shares everything else with the previous one (identical backend sets share one list and
//!   one Maglev table). The dataplane's cost is one hash lookup per new connection
//!   ([`ServiceTables::lookup`]); established connections never read these tables.
use std::net::Ipv4Addr;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

pub use super::chunked::ChunkedList;

/// Key of a frontend: destination address (host order), port, IP protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    pub ip: u32,
    pub port: u16,
    pub proto: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrontendKind {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalIp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEmpty {
    Reject,
    Drop,
}

/// One endpoint (pod address and target port) of a frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Stable id of the endpoint address across table versions (conntrack entries carry it, so
    /// the UDP entries of a removed endpoint can be flushed).
    pub endpoint_id: u32,
    /// The endpoint runs on this node.
    pub local: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSet {
    /// Shared by every set (of any frontend) with the same backends.
    pub backends: Arc<[Backend]>,
    /// Shared by every set with the same backend addresses.
    pub maglev: Arc<[u16]>,
    pub on_empty: OnEmpty,
    pub masquerade: bool,
}

impl BackendSet {
    /// The backend for a flow hash, or None for an empty set.
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> Option<&Backend> {
        if self.maglev.is_empty() {
            return None;
        }
        let slot = self.maglev[(flow_hash % self.maglev.len() as u64) as usize];
        self.backends.get(slot as usize)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// `namespace/name:port-name` of the Service port, for show and logs.
    pub name: String,
    /// Index of the Service (stable across table versions while the Service exists).
    pub service_id: u32,
    /// The Service port (`spec.ports[].port`) this frontend serves. With `service_id` and the
    /// protocol it names the Service port, which every frontend of it (ClusterIP, NodePorts,
    /// LoadBalancer and external IPs) shares: session affinity is kept per Service port.
    pub service_port: u16,
    pub kind: FrontendKind,
    pub key: FrontendKey,
    pub internal: BackendSet,
    pub external: BackendSet,
    /// `sessionAffinity: ClientIP` timeout.
    pub affinity_timeout_s: Option<u32>,
    /// LoadBalancer `loadBalancerSourceRanges` as (network, prefix length); empty means any.
    pub source_ranges: Vec<(u32, u8)>,
}

impl Frontend {
    /// Whether `src` may use this frontend (LoadBalancer source ranges).
    #[inline]
    pub fn source_allowed(&self, src: Ipv4Addr) -> bool {
        let s = u32::from(src);
        self.source_ranges.is_empty()
            || self.source_ranges.iter().any(|&(net, len)| len == 0 || (s ^ net) >> (32 - len as u32) == 0)
    }

    /// The Service port's id in its clients' affinity records: FNV-1a of [`Self::name`], the
    /// same in every process (unlike `service_id`, given per process), so that records kept in
    /// the connection table's state file still name their Service port after a restart. Two
    /// Service ports with the same id, port and protocol would share their clients' records;
    /// a record only counts when its backend is in the frontend's set, so that costs
    /// stickiness, never a backend of another Service.
    pub fn affinity_id(&self) -> u32 {
        self.name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
    }
}

/// Frontend key -> index in [`ServiceTables::frontends`].
pub type FrontendIndex = FxHashMap<FrontendKey, u32>;
/// A set of IPv4 addresses (host order).
pub type AddressSet = FxHashSet<u32>;

#[derive(Debug, Clone, Default)]
pub struct ServiceTables {
    /// Shared with other versions, chunk by chunk; [`Frontend`]s are never mutated once
    /// published.
    pub frontends: ChunkedList<Frontend>,
    /// Frontend key -> index in `frontends` (rebuilt only when the set of keys changes).
    pub by_key: Arc<FrontendIndex>,
    /// Every ClusterIP in force (host order).
    pub cluster_ips: Arc<AddressSet>,
    /// The Service CIDRs (network, prefix length), e.g. 10.96.0.0/12, and a /32 for every
    /// ClusterIP outside them: every Service address is inside one.
    pub service_cidrs: Vec<(u32, u8)>,
    /// The address masqueraded traffic leaves with (the node's InternalIP).
    pub snat_ip: Option<Ipv4Addr>,
}

impl ServiceTables {
    /// The frontend of (`ip`, `port`, `proto`) with its index in `frontends`: one hash lookup.
    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr, port: u16, proto: u8) -> Option<(u32, &Frontend)> {
        let i = *self.by_key.get(&FrontendKey { ip: u32::from(ip), port, proto })?;
        self.frontends.get(i as usize).map(|f| (i, &**f))
    }

    #[inline]
    pub fn frontend(&self, ip: Ipv4Addr, port: u16, proto: u8) -> Option<&Frontend> {
        self.lookup(ip, port, proto).map(|(_, f)| f)
    }

    #[inline]
    pub fn in_service_cidr(&self, ip: Ipv4Addr) -> bool {
        let a = u32::from(ip);
        self.service_cidrs.iter().any(|&(net, len)| len == 0 || (a ^ net) >> (32 - len as u32) == 0)
    }

    /// Adds a frontend, indexing it (copies the frontend list: for tests and small tables; use
    /// [`ServiceTables::extend`] to add many).
    pub fn push(&mut self, f: Frontend) {
        self.extend([f]);
    }

    /// Adds frontends, indexing them (a key added again is indexed to its last frontend).
    pub fn extend(&mut self, fs: impl IntoIterator<Item = Frontend>) {
        let mut list: Vec<Arc<Frontend>> = self.frontends.iter().cloned().collect();
        let by_key = Arc::make_mut(&mut self.by_key);
        let cluster_ips = Arc::make_mut(&mut self.cluster_ips);
        for f in fs {
            if f.kind == FrontendKind::ClusterIp {
                cluster_ips.insert(f.key.ip);
            }
            by_key.insert(f.key, list.len() as u32);
            list.push(Arc::new(f));
        }
        self.frontends = list.into_iter().collect();
    }
}
