//! Endpoints of a Service port, from its EndpointSlices or, for a Service with a selector and no
//! EndpointSlice in the manifests, derived from the pods as the EndpointSlice controller would.
//!
//! Contract:
//! - Manifest slices: kube-proxy's reading. A slice port belongs to a Service port when name
//!   and protocol are equal (an unnamed slice port matches an unnamed Service port); the slice
//!   gives the endpoint port number. The Service's `targetPort` is not consulted: resolving it
//!   is the job of whoever wrote the slice.
//! - Derived endpoints (the controller's rules): every pod of the Service's namespace whose
//!   labels hold all of the selector's, that has an IP and is not in phase Succeeded or Failed.
//!   `serving` = the pod is Ready, `terminating` = deletionTimestamp set, `ready` = serving and
//!   not terminating (always true under `publishNotReadyAddresses`). A pod whose object has no
//!   `status.conditions` at all counts as Ready: the manifest source (and the lab) have no
//!   kubelet to write them. A named `targetPort` is resolved per pod against its containerPorts
//!   (name and protocol); a pod that does not declare it is skipped for that port.
//! - Hints: a slice endpoint's `hints` as written. Derived endpoints get the hints the
//!   EndpointSlice controller writes for the Service's `trafficDistribution` (its `trafficdist`
//!   heuristic): with `PreferClose`, `PreferSameZone` or `PreferSameNode`, every ready endpoint
//!   is hinted for the zone of its node (the Node's `topology.kubernetes.io/zone` label, when
//!   the view has the Node and the label is not empty) and, with `PreferSameNode`, for its node;
//!   otherwise none is hinted.
//! - An endpoint is local when its node is this node; a pod without `spec.nodeName` is on this
//!   node (manifest source convention); a slice endpoint without nodeName is not local.
//! - The same address and port listed twice (overlapping slices) counts once: the first in
//!   slice-name order, unless a later copy is ready and the first is not.
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::manifests::kinds::Pod;

use super::model::{Hints, PortSpec, ServiceModel, SliceModel, TargetPort, TrafficDistribution, ZONE_LABEL};
use crate::manifests::Manifests;
use crate::model::{NodeInfo, PodInfo};

/// One endpoint of one Service port, whatever its conditions. Its conditions, node and source
/// are serialized as part of the [`super::EndpointView`] that shows it (the address is shown
/// there as `ip:port` text).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Candidate {
    #[serde(skip)]
    pub ip: Ipv4Addr,
    #[serde(skip)]
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<Arc<str>>,
    pub local: bool,
    /// Where it comes from: `EndpointSlice ns/name` (with `, pod ns/name` when it says) or
    /// `pod ns/name` (shared by the endpoints of a slice and the views that show them).
    pub source: Arc<str>,
    /// Topology hints (see the module contract), shared with the endpoints that have the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hints: Option<Arc<Hints>>,
}

/// The most endpoints one Service port uses (Maglev entries are 16-bit indices).
pub const MAX_BACKENDS: usize = u16::MAX as usize;

/// The endpoints of `port` and where they come from (`endpointslices`, `selector` or `none`):
/// the Service's EndpointSlices when it has any, else the pods its selector picks (`pods`,
/// `None` without a selector). Past [`MAX_BACKENDS`] the rest are left out, with a problem.
pub fn endpoints(
    svc: &ServiceModel,
    port: &PortSpec,
    slices: &[&SliceModel],
    pods: Option<&[&PodInfo]>,
    manifests: &Manifests,
    node: &NodeInfo,
    problems: &mut Vec<String>,
) -> (Vec<Candidate>, &'static str) {
    let (mut cands, from) = if !slices.is_empty() {
        (from_slices(svc, port, slices, node, problems), "endpointslices")
    } else if let Some(pods) = pods {
        (from_selector(svc, port, pods, manifests, node, problems), "selector")
    } else {
        (Vec::new(), "none")
    };
    if cands.len() > MAX_BACKENDS {
        problems.push(format!(
            "Service {}: port {} has {} endpoints; only the first {MAX_BACKENDS} are used",
            svc.key,
            port.label(),
            cands.len()
        ));
        cands.truncate(MAX_BACKENDS);
    }
    (cands, from)
}

/// Endpoints of `port` from the Service's manifest slices (`slices` are the Service's, in name
/// order). Pushes a problem when no slice lists the port.
pub fn from_slices(
    svc: &ServiceModel,
    port: &PortSpec,
    slices: &[&SliceModel],
    node: &NodeInfo,
    problems: &mut Vec<String>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut matched = false;
    for s in slices {
        let Some(sp) = s.ports.iter().find(|p| p.name == port.name && p.proto == port.proto) else { continue };
        matched = true;
        let plain: Arc<str> = Arc::from(["EndpointSlice ", s.key.as_str()].concat());
        for e in &s.endpoints {
            let source = match &e.pod {
                Some(p) => Arc::from(format!("{plain}, pod {p}")),
                None => plain.clone(),
            };
            out.push(Candidate {
                ip: e.ip,
                port: sp.port,
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
                local: e.node.as_deref() == Some(node.name.as_str()),
                node: e.node.clone(),
                source,
                hints: e.hints.clone(),
            });
        }
    }
    if !matched {
        let names: Vec<&str> = slices.iter().map(|s| s.key.as_str()).collect();
        problems.push(format!(
            "Service {}: port {} ({}) is listed by none of its EndpointSlices ({}) under name {:?} and protocol {}; it has no endpoints",
            svc.key,
            port.label(),
            if port.name.is_empty() { "unnamed" } else { port.name.as_str() },
            names.join(", "),
            port.name,
            port.proto.as_str().to_ascii_uppercase()
        ));
    }
    dedupe(out)
}

/// What the EndpointSlice controller reads of a pod's object: None when it leaves the pod out
/// (phase Succeeded or Failed), else (Ready, terminating).
pub fn pod_status(obj: Option<&Pod>) -> Option<(bool, bool)> {
    let status = obj.and_then(|p| p.status.as_ref());
    if matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
        return None;
    }
    let pod_ready = match status.and_then(|s| s.conditions.as_ref()).filter(|c| !c.is_empty()) {
        None => true,
        Some(conds) => conds.iter().any(|c| c.type_ == "Ready" && c.status == "True"),
    };
    let terminating = obj.is_some_and(|p| p.metadata.deletion_timestamp.is_some());
    Some((pod_ready, terminating))
}

/// The endpoint conditions the EndpointSlice controller gives a pod, or None when it leaves
/// the pod out. `obj` is the pod's object when the manifests hold it.
pub fn pod_conditions(obj: Option<&Pod>, publish_not_ready: bool) -> Option<(bool, bool, bool)> {
    let (pod_ready, terminating) = pod_status(obj)?;
    let ready = publish_not_ready || (pod_ready && !terminating);
    Some((ready, pod_ready, terminating))
}

/// Pods by namespace and label, so that a selector is matched against the pods that carry the
/// rarest of its labels instead of against every pod.
pub struct PodIndex<'a> {
    pods: &'a [PodInfo],
    /// namespace -> (label key, value) -> indices into `pods`, ascending.
    by_label: HashMap<&'a str, HashMap<(&'a str, &'a str), Vec<u32>>>,
}

impl<'a> PodIndex<'a> {
    pub fn new(pods: &'a [PodInfo]) -> Self {
        let mut by_label: HashMap<&str, HashMap<(&str, &str), Vec<u32>>> = HashMap::new();
        for (i, p) in pods.iter().enumerate() {
            let ns = by_label.entry(p.namespace.as_str()).or_default();
            for (k, v) in p.labels.iter() {
                ns.entry((k.as_str(), v.as_str())).or_default().push(i as u32);
            }
        }
        Self { pods, by_label }
    }

    /// The pods of `namespace` whose labels hold all of `selector`'s, in the order of the pod
    /// list. An empty selector selects nothing (a Service without one has no derived endpoints).
    pub fn select(&self, namespace: &str, selector: &BTreeMap<String, String>) -> Vec<&'a PodInfo> {
        let Some(ns) = self.by_label.get(namespace) else { return Vec::new() };
        let mut lists = Vec::with_capacity(selector.len());
        for (k, v) in selector {
            match ns.get(&(k.as_str(), v.as_str())) {
                Some(l) => lists.push(l),
                None => return Vec::new(),
            }
        }
        let Some(shortest) = lists.iter().min_by_key(|l| l.len()) else { return Vec::new() };
        shortest
            .iter()
            .map(|&i| &self.pods[i as usize])
            .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            .collect()
    }
}

/// Endpoints of `port` derived from the pods `svc`'s selector matches, among `pods` (any list
/// that holds them, e.g. [`PodIndex::select`]'s).
pub fn from_selector(
    svc: &ServiceModel,
    port: &PortSpec,
    pods: &[&PodInfo],
    manifests: &Manifests,
    node: &NodeInfo,
    problems: &mut Vec<String>,
) -> Vec<Candidate> {
    let Some(selector) = &svc.selector else { return Vec::new() };
    let mut out = Vec::new();
    let mut hinter = Hinter::new(svc.traffic_distribution, manifests);
    for p in pods {
        if p.namespace != svc.namespace || !selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)) {
            continue;
        }
        let Some(ip) = p.ip else { continue };
        let key = p.key();
        let Some((ready, serving, terminating)) = pod_conditions(manifests.pods.get(&key).map(|p| &**p), svc.publish_not_ready)
        else {
            continue;
        };
        let target = match &port.target {
            TargetPort::Number(n) => *n,
            TargetPort::Name(name) => {
                match p.ports.iter().find(|c| c.name.as_deref() == Some(name.as_str()) && c.protocol == port.proto) {
                    Some(c) => c.port,
                    None => {
                        problems.push(format!(
                            "Service {}: port {} has targetPort {name:?} that pod {key} does not declare{}; endpoint skipped",
                            svc.key,
                            port.label(),
                            if p.ports.iter().any(|c| c.name.as_deref() == Some(name.as_str())) {
                                format!(" for {}", port.proto.as_str().to_ascii_uppercase())
                            } else {
                                String::new()
                            }
                        ));
                        continue;
                    }
                }
            }
        };
        let local = p.node_name.as_deref().is_none_or(|n| n == node.name);
        let node_name = p.node_name.as_deref().unwrap_or(node.name.as_str());
        out.push(Candidate {
            ip,
            port: target,
            ready,
            serving,
            terminating,
            node: Some(Arc::from(node_name)),
            local,
            source: Arc::from(format!("pod {key}")),
            hints: if ready { hinter.hints(node_name) } else { None },
        });
    }
    dedupe(out)
}

/// The hints the EndpointSlice controller gives a ready endpoint on a node, for one Service
/// (see the module contract); one shared copy per node.
struct Hinter<'a> {
    distribution: Option<TrafficDistribution>,
    manifests: &'a Manifests,
    /// Node name -> its endpoints' hints.
    made: Vec<(String, Option<Arc<Hints>>)>,
}

impl<'a> Hinter<'a> {
    fn new(distribution: Option<TrafficDistribution>, manifests: &'a Manifests) -> Self {
        Self { distribution, manifests, made: Vec::new() }
    }

    fn hints(&mut self, node: &str) -> Option<Arc<Hints>> {
        let distribution = self.distribution?;
        if let Some((_, h)) = self.made.iter().find(|(n, _)| n == node) {
            return h.clone();
        }
        let zone = self
            .manifests
            .nodes
            .get(node)
            .and_then(|n| n.metadata.labels.as_ref())
            .and_then(|l| l.get(ZONE_LABEL))
            .filter(|z| !z.is_empty());
        let zones: Box<[Arc<str>]> = zone.map(|z| Arc::from(z.as_str())).into_iter().collect();
        let nodes: Box<[Arc<str>]> =
            if distribution == TrafficDistribution::PreferSameNode { Box::new([Arc::from(node)]) } else { Box::new([]) };
        let h = (!zones.is_empty() || !nodes.is_empty()).then(|| Arc::new(Hints { zones, nodes }));
        self.made.push((node.to_string(), h.clone()));
        h
    }
}

/// One candidate per (address, port), sorted by them: the first in list order, unless a later
/// copy is ready and it is not.
fn dedupe(mut list: Vec<Candidate>) -> Vec<Candidate> {
    // A stable sort keeps the copies of one (address, port) in list order.
    list.sort_by_key(|c| (c.ip, c.port));
    let mut out: Vec<Candidate> = Vec::with_capacity(list.len());
    for c in list {
        match out.last_mut() {
            Some(last) if (last.ip, last.port) == (c.ip, c.port) => {
                if !last.ready && c.ready {
                    *last = c;
                }
            }
            _ => out.push(c),
        }
    }
    out
}
