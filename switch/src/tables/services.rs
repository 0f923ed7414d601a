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
use std::net::Ipv4Addr;

use rustc_hash::{FxHashMap, FxHashSet};

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
    pub backends: Vec<Backend>,
    pub maglev: Box<[u16]>,
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
}

#[derive(Debug, Clone, Default)]
pub struct ServiceTables {
    pub frontends: Vec<Frontend>,
    /// Frontend key -> index in `frontends`.
    pub by_key: FxHashMap<FrontendKey, u32>,
    /// Every ClusterIP in force (host order).
    pub cluster_ips: FxHashSet<u32>,
    /// The Service CIDRs (network, prefix length), e.g. 10.96.0.0/12.
    pub service_cidrs: Vec<(u32, u8)>,
    /// The address masqueraded traffic leaves with (the node's InternalIP).
    pub snat_ip: Option<Ipv4Addr>,
}

impl ServiceTables {
    #[inline]
    pub fn frontend(&self, ip: Ipv4Addr, port: u16, proto: u8) -> Option<&Frontend> {
        let i = *self.by_key.get(&FrontendKey { ip: u32::from(ip), port, proto })?;
        self.frontends.get(i as usize)
    }

    #[inline]
    pub fn in_service_cidr(&self, ip: Ipv4Addr) -> bool {
        let a = u32::from(ip);
        self.service_cidrs.iter().any(|&(net, len)| len == 0 || (a ^ net) >> (32 - len as u32) == 0)
    }

    /// Adds a frontend, indexing it.
    pub fn push(&mut self, f: Frontend) {
        if f.kind == FrontendKind::ClusterIp {
            self.cluster_ips.insert(f.key.ip);
        }
        self.by_key.insert(f.key, self.frontends.len() as u32);
        self.frontends.push(f);
    }
}
