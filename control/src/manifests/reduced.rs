//! The objects podswitch keeps, reduced on arrival to what its compilers read.
//!
//! Contract:
//! - [`Pod`] and [`EndpointSlice`] (the kinds a cluster has most of: 150,000 pods, 500,000
//!   endpoints) are read straight from the API's JSON (a watch event, a list page) or a
//!   manifest into these types, which have only the fields the compilers read, under the same
//!   names and paths as k8s-openapi's (`pod.status.phase`, `slice.endpoints[i].node_name`), so
//!   code that reads them reads either. Every other field of the object is skipped while
//!   reading: the full object is never built. A k8s-openapi `Pod` took 2,176 bytes before any
//!   string or list, its one container 2,120 more; these take a tenth of that.
//! - Repeated strings are shared: an endpoint's and a pod's node name is one `Arc<str>` per
//!   node ([`intern_node`]), not a string per object. A pod's labels are one shared map per
//!   distinct set ([`intern_labels`]): the pods of a ReplicaSet (or a DaemonSet) carry the
//!   same labels, `pod-template-hash` included, so a cluster of 150,000 pods has a few
//!   thousand sets; a map took ~700 bytes per pod (a B-tree node of 11 slots for two or three
//!   labels), now 8. The set is shared whole, not label by label, because the compilers read
//!   labels as a `BTreeMap<String, String>` (selectors, identities); [`crate::model::PodInfo`]
//!   shares the same map. For this a pod's labels are at `pod.labels`, not
//!   `pod.metadata.labels` (always `None` in a reduced pod).
//! - The other kinds keep their k8s-openapi types (a few per Service or namespace).
//! - Every kind is reduced by [`Reduce::reduce`] before it is stored (the API source's watches,
//!   the manifest reader, the stores filled by hand): metadata keeps name, generateName,
//!   namespace, labels, resourceVersion and deletionTimestamp (what the compilers, keys and
//!   digests read) and uid (the object's identity, for whoever debugs); annotations,
//!   managedFields, ownerReferences, finalizers and the rest go; a pod keeps only its `Ready` condition (or, without one, one other: a
//!   pod with conditions but no Ready one is not ready, one without any is).
//! - What the compilers make of a reduced object equals what they make of the full one: the
//!   test `reduced_objects_compile_to_the_tables_of_full_objects` (tests/reduced_objects.rs)
//!   holds that.
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};
use smallvec::SmallVec;

/// What is kept of an object; see the module contract.
pub trait Reduce {
    /// Drops what the compilers do not read (on top of what the type leaves out).
    fn reduce(&mut self);
}

/// Keeps of `meta` what keys, digests and compilers read.
pub fn reduce_meta(meta: &mut ObjectMeta) {
    let ObjectMeta { name, generate_name, namespace, labels, resource_version, deletion_timestamp, uid, .. } = std::mem::take(meta);
    *meta = ObjectMeta { name, generate_name, namespace, labels, resource_version, deletion_timestamp, uid, ..ObjectMeta::default() };
}

macro_rules! reduce_meta_only {
    ($($ty:ty),*) => {$(
        impl Reduce for $ty {
            fn reduce(&mut self) {
                reduce_meta(&mut self.metadata);
            }
        }
    )*};
}
reduce_meta_only!(
    k8s_openapi::api::core::v1::Namespace,
    k8s_openapi::api::core::v1::Node,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::networking::v1::NetworkPolicy,
    k8s_openapi::api::networking::v1::ServiceCIDR
);

impl Reduce for EndpointSlice {
    fn reduce(&mut self) {
        reduce_meta(&mut self.metadata);
        // A slice made in code, not read (tests): its labels move as a read one's do.
        if let Some(labels) = self.metadata.labels.take() {
            self.labels = SliceLabels::from(labels);
        }
    }
}

impl Reduce for Pod {
    fn reduce(&mut self) {
        reduce_meta(&mut self.metadata);
        // A pod made in code, not read (tests): its labels are shared as a read one's are.
        if let Some(labels) = self.metadata.labels.take() {
            self.labels = intern_labels(labels);
        }
        // Read: whether there are conditions at all, and whether one is Ready and True.
        if let Some(conditions) = self.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            if conditions.iter().any(|c| c.type_ == "Ready") {
                conditions.retain(|c| c.type_ == "Ready");
            } else {
                conditions.truncate(1);
            }
        }
    }
}

/// The one shared copy of a node name (there are a few thousand at most, each named by every
/// pod and endpoint on it), or of a zone name (endpoint hints). Names stay for the life of
/// the process.
pub fn intern_node(name: &str) -> Arc<str> {
    static NAMES: Mutex<Option<HashSet<Arc<str>>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(n) = names.get(name) {
        return Arc::clone(n);
    }
    let n: Arc<str> = Arc::from(name);
    names.insert(Arc::clone(&n));
    n
}

/// Labels as the compilers read them.
pub type Labels = BTreeMap<String, String>;

/// The one shared copy of a set of labels. Sets no object holds any more are let go now and
/// then: when the table has doubled since it was last swept.
pub fn intern_labels(labels: Labels) -> Arc<Labels> {
    static SETS: Mutex<Option<HashSet<Arc<Labels>>>> = Mutex::new(None);
    static SWEEP_AT: AtomicUsize = AtomicUsize::new(1024);
    let mut sets = SETS.lock().unwrap_or_else(PoisonError::into_inner);
    let sets = sets.get_or_insert_with(HashSet::new);
    if let Some(l) = sets.get(&labels) {
        return Arc::clone(l);
    }
    if sets.len() >= SWEEP_AT.load(Ordering::Relaxed) {
        sets.retain(|l| Arc::strong_count(l) > 1);
        SWEEP_AT.store((2 * sets.len()).max(1024), Ordering::Relaxed);
    }
    let l = Arc::new(labels);
    sets.insert(Arc::clone(&l));
    l
}

fn interned_node<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
    Ok(Option::<std::borrow::Cow<'de, str>>::deserialize(d)?.map(|n| intern_node(&n)))
}

macro_rules! resource {
    ($ty:ident, $group:literal, $version:literal, $api_version:literal, $plural:literal, $list:literal) => {
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = $api_version;
            const GROUP: &'static str = $group;
            const KIND: &'static str = stringify!($ty);
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }
        impl k8s_openapi::ListableResource for $ty {
            const LIST_KIND: &'static str = $list;
        }
        impl k8s_openapi::Metadata for $ty {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A v1 Pod as podswitch keeps it: its labels are at `labels` (shared, see the module
/// contract), `metadata.labels` is `None`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "PodAsSent")]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub labels: Arc<Labels>,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}

/// A Pod as the API sends it (what is read of it), before its labels are shared.
#[derive(Deserialize)]
struct PodAsSent {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: Option<PodSpec>,
    status: Option<PodStatus>,
}

impl From<PodAsSent> for Pod {
    fn from(p: PodAsSent) -> Pod {
        let PodAsSent { mut metadata, spec, status } = p;
        let labels = intern_labels(metadata.labels.take().unwrap_or_default());
        Pod { metadata, labels, spec, status }
    }
}

resource!(Pod, "", "v1", "v1", "pods", "PodList");

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default, deserialize_with = "interned_node")]
    pub node_name: Option<Arc<str>>,
    pub host_network: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    pub ports: Option<Vec<ContainerPort>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub container_port: i32,
    pub name: Option<String>,
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIP>>,
    pub conditions: Option<Vec<PodCondition>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PodIP {
    #[serde(default)]
    pub ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PodCondition {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub status: String,
}

/// A discovery.k8s.io/v1 EndpointSlice as podswitch keeps it: its labels are at `labels`
/// (a sorted list), `metadata.labels` is `None`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "SliceAsSent")]
pub struct EndpointSlice {
    pub metadata: ObjectMeta,
    pub labels: SliceLabels,
    pub address_type: String,
    pub endpoints: Vec<Endpoint>,
    pub ports: Option<Vec<k8s_openapi::api::discovery::v1::EndpointPort>>,
}

/// An EndpointSlice as the API sends it (what is read of it), before its labels are moved.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SliceAsSent {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    address_type: String,
    #[serde(default)]
    endpoints: Vec<Endpoint>,
    ports: Option<Vec<k8s_openapi::api::discovery::v1::EndpointPort>>,
}

impl From<SliceAsSent> for EndpointSlice {
    fn from(s: SliceAsSent) -> EndpointSlice {
        let SliceAsSent { mut metadata, address_type, endpoints, ports } = s;
        let labels = metadata.labels.take().map(SliceLabels::from).unwrap_or_default();
        EndpointSlice { metadata, labels, address_type, endpoints, ports }
    }
}

/// A slice's labels as a list sorted by key. Each slice has its own (the Service's name is
/// one of them, so sharing them as a pod's are shared would not share anything), and a
/// `BTreeMap` took a node of 544 bytes for its one to three labels (50,000 slices: 27 MB);
/// a list takes what its labels take.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SliceLabels(Box<[(String, String)]>);

impl SliceLabels {
    pub fn get(&self, key: &str) -> Option<&String> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(String, String)> {
        self.0.iter()
    }
}

impl From<Labels> for SliceLabels {
    fn from(l: Labels) -> SliceLabels {
        SliceLabels(l.into_iter().collect())
    }
}
resource!(EndpointSlice, "discovery.k8s.io", "v1", "discovery.k8s.io/v1", "endpointslices", "EndpointSliceList");

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Inline when there is one (always, today: the API keeps one address per endpoint; IPv4
    /// and IPv6 have slices of their own), which saves a block per endpoint.
    #[serde(default)]
    pub addresses: SmallVec<[String; 1]>,
    pub conditions: Option<k8s_openapi::api::discovery::v1::EndpointConditions>,
    #[serde(default, deserialize_with = "interned_node")]
    pub node_name: Option<Arc<str>>,
    /// The three fields below are boxed: an endpoint is kept 500,000 times in a cluster of
    /// 50,000 Services, and inline they took 144 of its 192 bytes whether set or not (a
    /// `targetRef`, which most endpoints have, then costs a block of its own instead).
    pub deprecated_topology: Option<Box<BTreeMap<String, String>>>,
    pub target_ref: Option<Box<ObjectReference>>,
    /// `forZones` and `forNodes` (topology-aware routing, `trafficDistribution`).
    pub hints: Option<Box<EndpointHints>>,
}

/// An endpoint's `hints`: the zone and node names are shared ([`intern_node`]; a cluster has
/// a few zones, named by most of its endpoints).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointHints {
    pub for_zones: Option<Vec<ForName>>,
    pub for_nodes: Option<Vec<ForName>>,
}

/// One entry of `forZones` or `forNodes`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ForName {
    #[serde(deserialize_with = "interned_name")]
    pub name: Arc<str>,
}

fn interned_name<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    Ok(intern_node(&std::borrow::Cow::<'de, str>::deserialize(d)?))
}

/// What is read of an endpoint's `targetRef`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ObjectReference {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_read_into_its_reduced_form_and_the_rest_is_skipped() {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "x", "labels": {"app": "a"}, "resourceVersion": "7",
                         "annotations": {"big": "..."}, "uid": "u", "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "o"}]},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}],
                     "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP", "hostPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
                       "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
                       "containerStatuses": [{"name": "c", "ready": true}]},
        });
        let mut p: Pod = serde_json::from_value(json).unwrap();
        p.reduce();
        assert_eq!(p.metadata.labels, None);
        assert_eq!(*p.labels, Labels::from([("app".to_string(), "a".to_string())]));
        assert_eq!(p.metadata.annotations, None);
        assert_eq!(p.metadata.uid.as_deref(), Some("u"));
        assert_eq!(p.metadata.owner_references, None);
        assert_eq!(p.metadata.resource_version.as_deref(), Some("7"));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert_eq!(spec.containers[0].ports.as_ref().unwrap()[0], ContainerPort { container_port: 80, name: Some("http".into()), protocol: Some("TCP".into()) });
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.conditions.as_ref().unwrap(), &[PodCondition { type_: "Ready".into(), status: "True".into() }]);
    }

    #[test]
    fn a_pod_with_conditions_but_no_ready_one_keeps_one() {
        let read = |conditions: serde_json::Value| {
            let mut p: Pod = serde_json::from_value(serde_json::json!({"status": {"conditions": conditions}})).unwrap();
            p.reduce();
            p.status.unwrap().conditions.unwrap().into_iter().map(|c| c.type_).collect::<Vec<_>>()
        };
        assert_eq!(read(serde_json::json!([{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"}])), ["PodScheduled"]);
        assert_eq!(read(serde_json::json!([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}])), ["Ready"]);
        assert!(read(serde_json::json!([])).is_empty());
    }

    #[test]
    fn node_names_are_shared() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "node-shared"}, {"addresses": ["10.0.0.2"], "nodeName": "node-shared"}],
        }))
        .unwrap();
        let (a, b) = (slice.endpoints[0].node_name.clone().unwrap(), slice.endpoints[1].node_name.clone().unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &intern_node("node-shared")));
    }

    #[test]
    fn hints_are_kept_with_shared_names() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "hints": {"forZones": [{"name": "zone-shared"}], "forNodes": [{"name": "node-h"}]}},
                {"addresses": ["10.0.0.2"], "hints": {"forZones": [{"name": "zone-shared"}]}},
                {"addresses": ["10.0.0.3"]},
            ],
        }))
        .unwrap();
        let zone = |i: usize| slice.endpoints[i].hints.as_ref().unwrap().for_zones.as_ref().unwrap()[0].name.clone();
        assert!(Arc::ptr_eq(&zone(0), &zone(1)));
        assert_eq!(&*slice.endpoints[0].hints.as_ref().unwrap().for_nodes.as_ref().unwrap()[0].name, "node-h");
        assert_eq!(slice.endpoints[1].hints.as_ref().unwrap().for_nodes, None);
        assert_eq!(slice.endpoints[2].hints, None);
    }

    #[test]
    fn pods_with_the_same_labels_share_them() {
        let pod = |name: &str, labels: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}})).unwrap()
        };
        let (a, b) = (pod("a", serde_json::json!({"app": "shared-x", "tier": "t"})), pod("b", serde_json::json!({"tier": "t", "app": "shared-x"})));
        assert!(Arc::ptr_eq(&a.labels, &b.labels));
        let c = pod("c", serde_json::json!({"app": "shared-y"}));
        assert!(!Arc::ptr_eq(&a.labels, &c.labels));
        assert_eq!(c.labels["app"], "shared-y");
    }
}
