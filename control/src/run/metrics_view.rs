//! What `/metrics` reports, read from the published snapshot and the dataplane's counters.
//!
//! Contract: called on the metrics server's thread for every scrape; it loads the snapshot
//! (no lock) and reads the dataplane's counters under its shared lock, so a scrape never
//! waits for an apply's compile, nor an apply for a scrape.
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use switch::dataplane::Dataplane;

use super::shared::Shared;
use crate::memory::MemoryByTable;
use crate::metrics::{self, MetricsSnapshot};

/// The snapshot of one scrape.
pub(crate) fn snapshot(shared: &Shared) -> MetricsSnapshot {
    let s = shared.snapshot();
    let dp = shared.dp();
    let t = dp.tables();
    let ct = dp.conntrack();
    let key_of: &BTreeMap<_, String> = &s.port_keys;
    MetricsSnapshot {
        ports: dp
            .reports()
            .into_iter()
            .map(|r| metrics::PortMetrics {
                port: key_of.get(&r.id).cloned().unwrap_or_else(|| r.name.clone()),
                interface: r.name,
                totals: r.totals,
                kernel_lost: r.kernel.lost(),
            })
            .collect(),
        workers: workers(dp),
        drops: dp.drops().into_iter().map(|(r, n)| (r.name().to_string(), n)).collect(),
        // `answered` is the sum of the answer counters: left out so that a sum over the
        // family counts nothing twice.
        stages: dp.stage_counters().into_iter().filter(|(name, _)| *name != "answered").map(|(name, n)| (name.to_string(), n)).collect(),
        conntrack: metrics::ConntrackMetrics {
            entries: ct.live() as u64,
            capacity: ct.capacity() as u64,
            insert_failures: ct.counters.insert_failed_full.load(Relaxed) + ct.counters.insert_failed_slot.load(Relaxed),
        },
        tables: metrics::TableSizes {
            routes: t.routes.len() as u64,
            frontends: t.services.frontends.len() as u64,
            backends: t.services.frontends.iter().map(|f| (f.internal.backends.len() + f.external.backends.len()) as u64).sum(),
            policy_pods: t.policy.pods.len() as u64,
        },
        sync: metrics::SyncMetrics {
            last_duration_seconds: s.last_sync.map(|(d, _)| d.as_secs_f64()),
            last_timestamp_seconds: s.last_sync.and_then(|(_, at)| at.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()),
            syncs: s.syncs,
            manifest_errors: s.sync_errors,
            api_errors: shared.kube.as_ref().map_or(0, crate::kube_source::StatusHandle::errors),
            api_connected: shared.kube.as_ref().map(|k| k.status().connected),
        },
        memory: s.last_sync.is_some().then(|| MemoryByTable::of(&t, s.objects_bytes, MemoryByTable::conntrack_of(ct))),
        l2_announced: shared.l2_status().map(|l2| l2.addresses.iter().map(|a| (a.address.to_string(), a.announced_here)).collect()),
    }
}

/// Per-worker packet, byte and drop counters and poll statistics for `/metrics`.
pub(crate) fn workers(dp: &Dataplane) -> Vec<metrics::WorkerMetrics> {
    let polls = dp.worker_polls();
    dp.worker_reports()
        .into_iter()
        .map(|w| metrics::WorkerMetrics {
            worker: w.worker,
            core: w.core,
            rx_packets: w.totals.rx_packets,
            rx_bytes: w.totals.rx_bytes,
            tx_packets: w.totals.tx_packets,
            tx_bytes: w.totals.tx_bytes,
            drops: w.drops.into_iter().map(|(r, n)| (r.name().to_string(), n)).collect(),
            poll: polls.get(w.worker).map(|p| p.totals).unwrap_or_default(),
        })
        .collect()
}
