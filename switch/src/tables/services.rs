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
//! - `maglev` is the Maglev lookup table over `backends` (entries are indices into it, one
//!   byte each up to 256 backends); its length is a prime. An empty set has an empty table.
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
pub use super::maglev::MaglevTable;

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
    pub maglev: MaglevTable,
    pub on_empty: OnEmpty,
    pub masquerade: bool,
}

impl BackendSet {
    /// The backend for a flow hash, or None for an empty set.
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> Option<&Backend> {
        self.backends.get(self.maglev.slot(flow_hash)?)
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
    /// The Service port's id in its clients' affinity records: [`affinity_id_of`] the name,
    /// made once with the frontend (not per connection).
    pub affinity_id: u32,
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

/// The id of Service port `name` (`namespace/name:port-name`) in its clients' affinity
/// records ([`Frontend::affinity_id`]): FNV-1a of the name, the same in every process (unlike
/// `service_id`, given per process), so that records kept in the connection table's state file
/// still name their Service port after a restart. Two Service ports with the same id, port and
/// protocol would share their clients' records; a record only counts when its backend is in
/// the frontend's set, so that costs stickiness, never a backend of another Service.
pub fn affinity_id_of(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Frontend key -> index in [`ServiceTables::frontends`].
///
/// The keys are kept packed in one word (the address in the byte order it has on the wire,
/// the port, the protocol), so that the dataplane's lookup hashes one word, compares one word,
/// and takes the address from the packet as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontendIndex(FxHashMap<u64, u32>);

impl FrontendIndex {
    pub fn with_capacity(n: usize) -> Self {
        Self(FxHashMap::with_capacity_and_hasher(n, Default::default()))
    }

    #[inline(always)]
    fn pack(ip: Ipv4Addr, port: u16, proto: u8) -> u64 {
        u64::from(u32::from_ne_bytes(ip.octets())) | u64::from(port) << 32 | u64::from(proto) << 48
    }

    fn unpack(k: u64) -> FrontendKey {
        let ip = Ipv4Addr::from((k as u32).to_ne_bytes());
        FrontendKey { ip: u32::from(ip), port: (k >> 32) as u16, proto: (k >> 48) as u8 }
    }

    /// The index of the frontend of (`ip`, `port`, `proto`).
    #[inline(always)]
    pub fn lookup(&self, ip: Ipv4Addr, port: u16, proto: u8) -> Option<u32> {
        self.0.get(&Self::pack(ip, port, proto)).copied()
    }

    pub fn get(&self, k: &FrontendKey) -> Option<u32> {
        self.lookup(Ipv4Addr::from(k.ip), k.port, k.proto)
    }

    /// Indexes `k` to `i`; the index it had before, if any.
    pub fn insert(&mut self, k: FrontendKey, i: u32) -> Option<u32> {
        self.0.insert(Self::pack(Ipv4Addr::from(k.ip), k.port, k.proto), i)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The (key, index) pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (FrontendKey, u32)> + '_ {
        self.0.iter().map(|(&k, &i)| (Self::unpack(k), i))
    }

    /// Bytes the index holds (its slots and their control bytes).
    pub fn heap_bytes(&self) -> usize {
        self.0.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
    }
}
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
        let i = self.by_key.lookup(ip, port, proto)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_finds_a_key_by_the_address_as_a_packet_holds_it() {
        let keys = [
            FrontendKey { ip: u32::from(Ipv4Addr::new(10, 96, 0, 1)), port: 443, proto: 6 },
            FrontendKey { ip: u32::from(Ipv4Addr::new(10, 96, 0, 1)), port: 443, proto: 17 },
            FrontendKey { ip: u32::from(Ipv4Addr::new(1, 96, 0, 10)), port: 443, proto: 6 },
            FrontendKey { ip: u32::from(Ipv4Addr::new(10, 96, 0, 1)), port: 1, proto: 6 },
            FrontendKey { ip: u32::MAX, port: u16::MAX, proto: u8::MAX },
        ];
        let mut index = FrontendIndex::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(index.insert(*k, i as u32), None);
        }
        assert_eq!(index.insert(keys[0], 7), Some(0), "a key indexed again");
        index.insert(keys[0], 0);
        assert_eq!(index.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(index.get(k), Some(i as u32));
            assert_eq!(index.lookup(Ipv4Addr::from(k.ip), k.port, k.proto), Some(i as u32));
        }
        assert_eq!(index.lookup(Ipv4Addr::new(10, 96, 0, 2), 443, 6), None);
        let mut back: Vec<(FrontendKey, u32)> = index.iter().collect();
        back.sort_by_key(|(_, i)| *i);
        assert_eq!(back, keys.iter().enumerate().map(|(i, k)| (*k, i as u32)).collect::<Vec<_>>());
    }
}
