//! kube-proxy's endpoint categorization (`CategorizeEndpoints` of pkg/proxy/topology.go, with
//! topology hints): which of a Service port's endpoints serve its internal traffic (ClusterIP,
//! from pods) and which its external traffic (NodePort, LoadBalancer, externalIPs), and what
//! happens when a set is empty.
//!
//! Contract: the cluster set is the ready endpoints available for the topology mode, else
//! (none) the serving and terminating ones, topology ignored; the local set is the ready
//! endpoints of this node, else its serving and terminating ones, topology ignored. The
//! topology mode (kube-proxy's `topologyModeFromHints`, `PreferSameTrafficDistribution` on, as
//! it is by default) looks at the ready endpoints only: when there is one and every one has a
//! node hint and one is hinted for this node, `PreferSameNode` (the endpoints hinted for this
//! node); else when every one has a zone hint and one is hinted for this node's zone (its
//! `topology.kubernetes.io/zone` label; no label matches no hint), `PreferSameZone` (the
//! endpoints hinted for the zone); else none (every endpoint). An empty cluster set rejects; an
//! empty local set drops while other nodes have endpoints, else rejects. Each frontend gets an
//! (internal, external) pair ([`Sets::for_kind`]):
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

/// Where this node is, for topology hints: its name and its zone (`""` without one).
#[derive(Debug, Clone, Copy)]
pub struct Topology<'a> {
    pub node: &'a str,
    pub zone: &'a str,
}

/// Which endpoints the cluster set takes, by their hints (kube-proxy's topology modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopologyMode {
    /// Every endpoint.
    None,
    /// The endpoints hinted for this node's zone.
    PreferSameZone,
    /// The endpoints hinted for this node.
    PreferSameNode,
}

impl TopologyMode {
    /// kube-proxy's `topologyModeFromHints` over the ready endpoints.
    pub fn from_hints(c: &[Candidate], at: Topology) -> Self {
        let (mut any_ready, mut all_node_hints, mut for_node, mut all_zone_hints, mut for_zone) =
            (false, true, false, true, false);
        for e in c.iter().filter(|e| e.ready) {
            any_ready = true;
            let hints = e.hints.as_deref();
            match hints.filter(|h| !h.nodes.is_empty()) {
                None => all_node_hints = false,
                Some(h) => for_node |= h.for_node(at.node),
            }
            match hints.filter(|h| !h.zones.is_empty()) {
                None => all_zone_hints = false,
                Some(h) => for_zone |= h.for_zone(at.zone),
            }
        }
        if !any_ready {
            Self::None
        } else if all_node_hints && for_node {
            Self::PreferSameNode
        } else if all_zone_hints && for_zone {
            Self::PreferSameZone
        } else {
            Self::None
        }
    }

    /// kube-proxy's `availableForTopology`.
    fn admits(self, e: &Candidate, at: Topology) -> bool {
        match self {
            Self::None => true,
            Self::PreferSameNode => e.hints.as_deref().is_some_and(|h| h.for_node(at.node)),
            Self::PreferSameZone => e.hints.as_deref().is_some_and(|h| h.for_zone(at.zone)),
        }
    }
}

/// kube-proxy's `CategorizeEndpoints`: the cluster and local sets.
pub(super) struct Sets {
    cluster: Vec<usize>,
    local: Vec<usize>,
    has_any: bool,
}

impl Sets {
    pub fn categorize(c: &[Candidate], at: Topology) -> Self {
        let pick = |f: &dyn Fn(&Candidate) -> bool| -> Vec<usize> { (0..c.len()).filter(|&i| f(&c[i])).collect() };
        let mode = TopologyMode::from_hints(c, at);
        let mut cluster = pick(&|e| e.ready && mode.admits(e, at));
        if cluster.is_empty() {
            cluster = pick(&|e| e.serving && e.terminating);
        }
        let mut local = pick(&|e| e.local && e.ready);
        if local.is_empty() {
            local = pick(&|e| e.local && e.serving && e.terminating);
        }
        Self { has_any: !cluster.is_empty(), cluster, local }
    }

    /// Whether the port has a usable endpoint anywhere (kube-proxy's `hasAnyEndpoints`).
    #[cfg(test)]
    pub fn has_any(&self) -> bool {
        self.has_any
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
