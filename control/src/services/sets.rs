//! kube-proxy's endpoint categorization (`CategorizeEndpoints`, without topology hints): which
//! of a Service port's endpoints serve its internal traffic (ClusterIP, from pods) and which its
//! external traffic (NodePort, LoadBalancer, externalIPs), and what happens when a set is empty.
//!
//! Contract: the cluster set is the ready endpoints, else (none ready) the serving and
//! terminating ones; the local set is the same over this node's endpoints. An empty cluster set
//! rejects; an empty local set drops while other nodes have endpoints, else rejects. Each
//! frontend gets an (internal, external) pair ([`Sets::for_kind`]):
//!
//! | frontend            | policy                          | internal        | external              |
//! |---------------------|---------------------------------|-----------------|-----------------------|
//! | ClusterIP           | `internalTrafficPolicy: Local`  | local           | local, masqueraded    |
//! | ClusterIP           | `Cluster`                       | cluster         | cluster, masqueraded  |
//! | NodePort, LB, extIP | `externalTrafficPolicy: Local`  | cluster         | local (client kept)   |
//! | NodePort, LB, extIP | `Cluster`                       | cluster, masq.  | cluster, masqueraded  |
use switch::tables::services::{Backend, FrontendKind, OnEmpty};

use super::derive::Candidate;
use super::model::{ServiceModel, TrafficPolicy};

/// The endpoints one set uses, as indices into the candidates.
#[derive(Debug, Clone)]
pub(super) struct SetChoice<'a> {
    pub members: &'a [usize],
    pub on_empty: OnEmpty,
    pub masquerade: bool,
    pub local_only: bool,
}

impl SetChoice<'_> {
    /// The set's backends: its members of `cands`, with their endpoint ids (`ids[i]` is
    /// `cands[i]`'s).
    pub fn backends<'c>(&'c self, cands: &'c [Candidate], ids: &'c [u32]) -> impl Iterator<Item = Backend> + 'c {
        self.members.iter().map(|&i| Backend { ip: cands[i].ip, port: cands[i].port, endpoint_id: ids[i], local: cands[i].local })
    }
}

/// kube-proxy's `CategorizeEndpoints` (no topology hints): the cluster and local sets.
pub(super) struct Sets {
    cluster: Vec<usize>,
    local: Vec<usize>,
    has_any: bool,
}

impl Sets {
    pub fn categorize(c: &[Candidate]) -> Self {
        let pick = |f: &dyn Fn(&Candidate) -> bool| -> Vec<usize> { (0..c.len()).filter(|&i| f(&c[i])).collect() };
        let mut cluster = pick(&|e| e.ready);
        if cluster.is_empty() {
            cluster = pick(&|e| e.serving && e.terminating);
        }
        let mut local = pick(&|e| e.local && e.ready);
        if local.is_empty() {
            local = pick(&|e| e.local && e.serving && e.terminating);
        }
        Self { has_any: !cluster.is_empty(), cluster, local }
    }

    fn cluster(&self, masquerade: bool) -> SetChoice<'_> {
        SetChoice { members: &self.cluster, on_empty: OnEmpty::Reject, masquerade, local_only: false }
    }

    fn local(&self, masquerade: bool) -> SetChoice<'_> {
        SetChoice {
            members: &self.local,
            on_empty: if self.has_any { OnEmpty::Drop } else { OnEmpty::Reject },
            masquerade,
            local_only: true,
        }
    }

    /// (internal, external) sets of a frontend of `kind`.
    pub fn for_kind(&self, kind: FrontendKind, svc: &ServiceModel) -> (SetChoice<'_>, SetChoice<'_>) {
        match kind {
            FrontendKind::ClusterIp => match svc.internal_policy {
                TrafficPolicy::Local => (self.local(false), self.local(true)),
                TrafficPolicy::Cluster => (self.cluster(false), self.cluster(true)),
            },
            _ => match svc.external_policy {
                TrafficPolicy::Local => (self.cluster(false), self.local(false)),
                TrafficPolicy::Cluster => (self.cluster(true), self.cluster(true)),
            },
        }
    }
}
