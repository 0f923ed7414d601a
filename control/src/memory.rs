//! The agent's memory by table, for `show status` and `/metrics`.
//!
//! Contract:
//! - [`MemoryByTable::of`] estimates the bytes of each table from what it holds: the
//!   objects kept from the sources ([`crate::manifests::footprint`], totalled by the views as
//!   they change), the Service frontends and their backends, the Maglev lookup tables, the
//!   policy tables, the routes and the connection-tracking table (allocated whole at start).
//!   A list shared by several entries (a backend list, a Maglev table, a rule's peers) is
//!   counted once. Inline sizes and heap by length or capacity; the allocator's own overhead is
//!   not counted, nor the compilers' caches between views: `resident_bytes` (the process's
//!   resident memory) is the whole.
//! - It walks the published tables (one pass over the frontends and the policy's pods): a
//!   few milliseconds at 50,000 Services, on the thread that asks (never the apply loop's,
//!   never a worker's).
use std::collections::HashSet;
use std::mem::size_of;

use serde::{Deserialize, Serialize};
use switch::tables::policy::{Peer, PodPolicy, Rule};
use switch::tables::services::{Backend, Frontend};
use switch::tables::Tables;

/// Bytes per table (see the module contract).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryByTable {
    /// The Kubernetes objects kept (reduced), with their keys' bookkeeping.
    pub objects_bytes: u64,
    /// Service frontends, their backend lists and lookup indexes.
    pub services_bytes: u64,
    /// The Maglev lookup tables of the backend lists.
    pub maglev_bytes: u64,
    /// Identities, per-pod rules and their peers.
    pub policy_bytes: u64,
    pub routes_bytes: u64,
    /// The connection-tracking table (entries, buckets, free list), allocated at start.
    pub conntrack_bytes: u64,
    /// The process's resident memory (`VmRSS`), and its peak (`VmHWM`); `None` where
    /// /proc/self/status cannot be read.
    pub resident_bytes: Option<u64>,
    pub peak_resident_bytes: Option<u64>,
}

impl MemoryByTable {
    /// The tables `t`, the objects' bytes (`objects`, e.g. the sum of a view's
    /// [`crate::manifests::Manifests::footprint`]) and a connection table of `conntrack` bytes.
    pub fn of(t: &Tables, objects: u64, conntrack: u64) -> Self {
        let (services, maglev) = services(t);
        let (resident, peak) = resident();
        MemoryByTable {
            objects_bytes: objects,
            services_bytes: services,
            maglev_bytes: maglev,
            policy_bytes: policy(t),
            routes_bytes: t.routes.heap_bytes() as u64,
            conntrack_bytes: conntrack,
            resident_bytes: resident,
            peak_resident_bytes: peak,
        }
    }

    /// The bytes of a connection table `ct` (allocated whole at start).
    pub fn conntrack_of(ct: &switch::conntrack::ConnTable) -> u64 {
        (ct.capacity() as f64 * ct.bytes_per_entry()) as u64
    }

    /// (table, bytes) for each table, as `/metrics` labels them.
    pub fn by_table(&self) -> [(&'static str, u64); 6] {
        [
            ("objects", self.objects_bytes),
            ("services", self.services_bytes),
            ("maglev", self.maglev_bytes),
            ("policy", self.policy_bytes),
            ("routes", self.routes_bytes),
            ("conntrack", self.conntrack_bytes),
        ]
    }
}

/// An `Arc`'s counts.
const ARC: usize = 16;

/// (frontends with backends and indexes, Maglev tables).
fn services(t: &Tables) -> (u64, u64) {
    let s = &t.services;
    let (mut lists, mut tables) = (HashSet::new(), HashSet::new());
    let (mut bytes, mut maglev) = (0usize, 0usize);
    for f in s.frontends.iter() {
        bytes += ARC + size_of::<Frontend>() + f.name.capacity() + f.source_ranges.capacity() * size_of::<(u32, u8)>();
        for set in [&f.internal, &f.external] {
            if lists.insert(set.backends.as_ptr() as usize) && !set.backends.is_empty() {
                bytes += ARC + set.backends.len() * size_of::<Backend>();
            }
            if tables.insert(set.maglev.as_ptr() as usize) && !set.maglev.is_empty() {
                maglev += ARC + set.maglev.entry_bytes();
            }
        }
    }
    // Hash tables: a slot per entry at 7/8 load at most, plus a control byte.
    bytes += s.by_key.heap_bytes() + s.cluster_ips.capacity() * (size_of::<u32>() + 1);
    (bytes as u64, maglev as u64)
}

fn policy(t: &Tables) -> u64 {
    let p = &t.policy;
    let mut peers = HashSet::new();
    let mut bytes = p.identities.capacity() * (size_of::<(u32, u32)>() + 1);
    bytes += p.pods.capacity() * (size_of::<(u32, PodPolicy)>() + 1);
    for pod in p.pods.values() {
        for rule in pod.ingress.iter().chain(&pod.egress) {
            bytes += size_of::<Rule>() + rule.ports.capacity() * size_of_val_of(&rule.ports);
            if peers.insert(rule.peers.as_ptr() as usize) {
                bytes += ARC + rule.peers.len() * size_of::<Peer>();
                for peer in rule.peers.iter() {
                    bytes += match peer {
                        Peer::Identities(ids) => ids.len() * size_of::<u32>(),
                        Peer::IpBlock { except, .. } => except.capacity() * size_of::<(u32, u8)>(),
                        _ => 0,
                    };
                }
            }
        }
    }
    bytes += p.policy_names.values().map(|n| size_of::<(u32, String)>() + 1 + n.capacity()).sum::<usize>();
    bytes as u64
}

fn size_of_val_of<T>(_: &[T]) -> usize {
    size_of::<T>()
}

/// `VmRSS` and `VmHWM` of this process, in bytes.
pub fn resident() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return (None, None) };
    let field = |name: &str| -> Option<u64> {
        let rest = status.lines().find_map(|l| l.strip_prefix(name))?;
        Some(rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok()? * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_tables_take_little_and_the_process_has_a_resident_size() {
        let t = Tables::new(std::net::Ipv4Addr::new(169, 254, 1, 1));
        let m = MemoryByTable::of(&t, 1000, 2000);
        assert_eq!((m.objects_bytes, m.conntrack_bytes, m.services_bytes, m.maglev_bytes), (1000, 2000, 0, 0));
        assert!(m.resident_bytes.is_some_and(|r| r > 0) && m.peak_resident_bytes >= m.resident_bytes, "{m:?}");
        assert_eq!(m.by_table()[0], ("objects", 1000));
    }
}
