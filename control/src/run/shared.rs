//! What the apply side shares with the readers (`show`, `/metrics`, the verdict log collector).
//!
//! Contract: the apply side ([`super::apply::Switch`]) owns its state exclusively and, after
//! every view it applies or refuses, publishes a read-only [`Snapshot`] by swapping one pointer;
//! readers load the snapshot they need without any lock. The dataplane is shared as it is: its
//! counters are atomics, and its port map is locked only for the moment a reader reads it, not
//! while a port is attached or detached. So a reader never waits for a Service or policy
//! compile nor for a port change, and the apply side never waits for a reader. The verdict
//! log's history has a lock of its own, shared by the collector and `show flows` only.
//! A reader that waits for a change ([`Shared::wait_for_change`]: `wait_port`) is woken by the
//! apply side after each publication; the apply side only bumps a counter to wake it.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use switch::dataplane::Dataplane;
use switch::tables::PortId;

use super::flows::FlowHistory;
use crate::compile::Uplink;
use crate::kube_source::StatusHandle;
use crate::model::NodeInfo;
use crate::neighbours::NeighbourReader;
use crate::policy::CompiledPolicy;
use crate::services::CompiledServices;

/// The apply side's state as readers see it, published whole after every apply.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub node: NodeInfo,
    /// The manifest directory (empty with the API source).
    pub dir: PathBuf,
    pub applied_digest: String,
    /// Bytes of the objects of the view applied ([`crate::manifests::Manifests::footprint`]).
    pub objects_bytes: u64,
    /// Version of the tables last published.
    pub tables_version: u64,
    pub ports_wanted: usize,
    /// The attached ports: their id and key (`node`, `uplink`, `namespace/name`).
    pub port_keys: BTreeMap<PortId, String>,
    /// Ports waiting for their interface, with why.
    pub pending: BTreeMap<String, String>,
    /// Other nodes the pod network has no route to yet.
    pub unreachable_nodes: Vec<String>,
    pub problems: Vec<String>,
    pub ignored_kinds: Vec<String>,
    pub last_error: Option<String>,
    /// Views applied, views refused, and the last apply's duration and end.
    pub syncs: u64,
    pub sync_errors: u64,
    pub last_sync: Option<(Duration, SystemTime)>,
    /// The Services and NetworkPolicies as last compiled (shared with the apply side).
    pub services: Option<Arc<CompiledServices>>,
    pub policy: Option<Arc<CompiledPolicy>>,
    /// Pod names by IP, for the verdict log (shared until the pods change).
    pub pod_names: Arc<BTreeMap<u32, String>>,
    /// The uplink with the gateway MAC the tables use, and whether that MAC was given
    /// (`--uplink-gateway-mac`) rather than resolved.
    pub uplink: Option<Uplink>,
    pub gateway_given: bool,
}

impl Snapshot {
    /// Before the first apply.
    pub fn empty(node: NodeInfo, dir: PathBuf) -> Self {
        Self {
            node,
            dir,
            applied_digest: String::new(),
            objects_bytes: 0,
            tables_version: 0,
            ports_wanted: 0,
            port_keys: BTreeMap::new(),
            pending: BTreeMap::new(),
            unreachable_nodes: Vec::new(),
            problems: Vec::new(),
            ignored_kinds: Vec::new(),
            last_error: None,
            syncs: 0,
            sync_errors: 0,
            last_sync: None,
            services: None,
            policy: None,
            pod_names: Arc::default(),
            uplink: None,
            gateway_given: false,
        }
    }
}

/// The handle every thread of `podswitch run` holds.
pub(crate) struct Shared {
    snapshot: ArcSwap<Snapshot>,
    dp: Dataplane,
    flows: Mutex<FlowHistory>,
    /// The API source's status, when the objects come from the Kubernetes API.
    pub kube: Option<StatusHandle>,
    /// The uplink's next hops as the kernel resolves them, when there is an uplink.
    pub neighbours: Option<NeighbourReader>,
    /// The L2 announcer's status, with `--l2-announce` (set once at start).
    l2: std::sync::OnceLock<crate::l2announce::L2StatusHandle>,
    pub started: Instant,
    /// Publications (tables or snapshot) so far, and the readers waiting for the next one.
    changes: Mutex<u64>,
    changed: Condvar,
}

impl Shared {
    /// Records the L2 announcer's status handle (at start; later calls change nothing).
    pub fn set_l2(&self, handle: Option<crate::l2announce::L2StatusHandle>) {
        if let Some(h) = handle {
            let _ = self.l2.set(h);
        }
    }

    /// The L2 announcer's status, with `--l2-announce`.
    pub fn l2_status(&self) -> Option<crate::l2announce::L2Status> {
        self.l2.get().map(crate::l2announce::L2StatusHandle::status)
    }

    pub fn new(dp: Dataplane, snapshot: Snapshot, kube: Option<StatusHandle>, neighbours: Option<NeighbourReader>) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            dp,
            flows: Mutex::new(FlowHistory::default()),
            kube,
            neighbours,
            l2: std::sync::OnceLock::new(),
            started: Instant::now(),
            changes: Mutex::new(0),
            changed: Condvar::new(),
        }
    }

    /// The snapshot last published.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn publish(&self, s: Snapshot) {
        self.snapshot.store(Arc::new(s));
        self.changed_now();
    }

    /// Wakes the readers waiting for a change (after tables or a snapshot were published).
    pub fn changed_now(&self) {
        *self.changes.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }

    /// Publications so far (what [`Self::wait_for_change`] compares with).
    pub fn changes(&self) -> u64 {
        *self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until there were more than `seen` publications, or until `deadline`.
    pub fn wait_for_change(&self, seen: u64, deadline: Instant) {
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        while *changes <= seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            changes = self.changed.wait_timeout(changes, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// The dataplane: counters, tables, ports. Readers never wait for a port change (see
    /// [`Dataplane`]'s contract).
    pub fn dp(&self) -> &Dataplane {
        &self.dp
    }

    pub fn flows(&self) -> MutexGuard<'_, FlowHistory> {
        self.flows.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
