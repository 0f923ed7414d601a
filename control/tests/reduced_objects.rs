//! The objects podswitch keeps are reduced on arrival (`manifests::reduced`): Pods and
//! EndpointSlices into types of their read fields only, every object's metadata trimmed, a
//! pod's conditions to its Ready one. This holds the tables compiled from the reduced objects
//! to those compiled from the full objects: every object is read once as the manifest source
//! reads it (reduced) and once into k8s-openapi's full types, carried over field by field
//! (typed, so a field the reduced types would read under a wrong name shows) and kept whole
//! (all metadata, all conditions). The objects are the examples' (Services, policies, the
//! 9-pod lab) made to look as the API server sends them: managedFields, annotations, owner
//! references, container images, env and probes, every pod condition (some pods not Ready,
//! some with conditions but no Ready one), container statuses, endpoint hints (which steer:
//! the node has a zone label) and zones, `trafficDistribution`, Nodes tainted for deletion or
//! being deleted (what `/healthz` reads); the lab's pods get the
//! addresses the lab would give them.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use podswitch_control::manifests::{self, reduced, Manifests};
use podswitch_control::model;
use podswitch_control::policy::{compile_policy, PolicyInputs, PolicyState};
use podswitch_control::services::{self, compile_services, ServiceInputs, ServiceState};
use serde_json::{json, Value};

/// The examples' objects, as JSON documents.
fn documents(dirs: &[&str]) -> Vec<Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let opts = serde_saphyr::options! { strict_booleans: true, leading_zero_numbers_as_strings: true, underscored_numbers_as_strings: true };
    let mut out = Vec::new();
    for d in dirs {
        for f in manifests::manifest_files(&root.join(d)).unwrap() {
            let text = std::fs::read_to_string(&f).unwrap();
            out.extend(serde_saphyr::from_multiple_with_options::<Value>(&text, opts.clone()).unwrap().into_iter().filter(|v| !v.is_null()));
        }
    }
    out
}

/// What an API server adds to an object; `i` varies it from object to object.
fn as_sent(mut v: Value, i: usize) -> Value {
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    let meta = v["metadata"].as_object_mut().unwrap();
    meta.insert("uid".into(), json!(format!("0000-{i}")));
    meta.insert("creationTimestamp".into(), json!("2026-12-01T00:00:00Z"));
    meta.insert("generation".into(), json!(3));
    meta.insert("annotations".into(), json!({"kubectl.kubernetes.io/last-applied-configuration": "{\"a\": 1}", "note": format!("n{i}")}));
    meta.insert("ownerReferences".into(), json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]));
    meta.insert("finalizers".into(), json!(["example.com/keep"]));
    meta.insert("managedFields".into(), json!([{"manager": "kubectl", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]));
    match kind.as_str() {
        "Pod" => {
            let spec = v["spec"].as_object_mut().unwrap();
            for c in spec.get_mut("containers").and_then(Value::as_array_mut).into_iter().flatten() {
                let c = c.as_object_mut().unwrap();
                c.insert("env".into(), json!([{"name": "A", "value": "1"}]));
                c.insert("resources".into(), json!({"requests": {"cpu": "10m"}}));
                c.insert("readinessProbe".into(), json!({"httpGet": {"path": "/", "port": 80}}));
                c.insert("imagePullPolicy".into(), json!("IfNotPresent"));
            }
            spec.insert("serviceAccountName".into(), json!("default"));
            spec.insert("volumes".into(), json!([{"name": "v", "emptyDir": {}}]));
            let status = v.as_object_mut().unwrap().entry("status").or_insert_with(|| json!({}));
            let status = status.as_object_mut().unwrap();
            status.insert("hostIP".into(), json!("172.18.0.2"));
            // The lab's pods get their addresses from the lab: give them one.
            status.entry("podIP").or_insert_with(|| json!(format!("10.244.0.{}", 100 + i)));
            status.insert("qosClass".into(), json!("Burstable"));
            status.insert("containerStatuses".into(), json!([{"name": "c", "ready": true, "restartCount": 0, "image": "i", "imageID": "x"}]));
            // Conditions as the kubelet writes them, in three shapes: Ready, not Ready, and
            // (every fifth pod) conditions without a Ready one; pods whose example says
            // something about conditions keep theirs.
            if !status.contains_key("conditions") {
                let ready = if i % 3 == 1 { "False" } else { "True" };
                let mut conds = vec![json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-01T00:00:00Z"}), json!({"type": "Initialized", "status": "True"})];
                if i % 5 != 4 {
                    conds.push(json!({"type": "ContainersReady", "status": ready}));
                    conds.push(json!({"type": "Ready", "status": ready, "lastProbeTime": null}));
                }
                status.insert("conditions".into(), Value::Array(conds));
            }
        }
        "EndpointSlice" => {
            for (j, e) in v.get_mut("endpoints").and_then(Value::as_array_mut).into_iter().flatten().enumerate() {
                let e = e.as_object_mut().unwrap();
                // Hints that steer (the node is in zone-a): half the endpoints for zone-a, the
                // others for zone-b, some for a node too.
                e.insert("zone".into(), json!("zone-a"));
                let zone = if j % 2 == 0 { "zone-a" } else { "zone-b" };
                e.insert("hints".into(), json!({"forZones": [{"name": zone}], "forNodes": [{"name": format!("node-{j}")}]}));
                e.insert("hostname".into(), json!(format!("h{j}")));
                if let Some(r) = e.get_mut("targetRef").and_then(Value::as_object_mut) {
                    r.insert("uid".into(), json!("u"));
                    r.insert("resourceVersion".into(), json!("9"));
                }
            }
        }
        "Node" => {
            // The zone, so that the endpoints' hints steer.
            let labels = v["metadata"].as_object_mut().unwrap().entry("labels").or_insert_with(|| json!({}));
            labels.as_object_mut().unwrap().insert("topology.kubernetes.io/zone".into(), json!("zone-a"));
            // What /healthz reads: the Cluster Autoscaler's taint, or a deletion under way.
            if i % 2 == 1 {
                v["metadata"].as_object_mut().unwrap().insert("deletionTimestamp".into(), json!("2026-12-01T00:00:00Z"));
            } else {
                let spec = v.as_object_mut().unwrap().entry("spec").or_insert_with(|| json!({}));
                spec.as_object_mut().unwrap().insert(
                    "taints".into(),
                    json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}, {"key": "ToBeDeletedByClusterAutoscaler", "value": "1764547200", "effect": "NoSchedule"}]),
                );
            }
        }
        "Service" => {
            let spec = v["spec"].as_object_mut().unwrap();
            spec.insert("sessionAffinityConfig".into(), json!(null));
            spec.insert("ipFamilies".into(), json!(["IPv4"]));
            spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
            spec.insert("internalTrafficPolicy".into(), spec.get("internalTrafficPolicy").cloned().unwrap_or(json!("Cluster")));
            spec.insert("trafficDistribution".into(), json!(["PreferClose", "PreferSameZone", "PreferSameNode"][i % 3]));
        }
        _ => {}
    }
    v
}

/// The objects read into k8s-openapi's full types and kept whole, carried into the types the
/// compilers read field by field.
fn full_view(docs: &[Value]) -> Manifests {
    let mut m = Manifests::default();
    for v in docs {
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        let key = format!("{ns}/{name}");
        let with_ns = |mut meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            meta.namespace = Some(ns.clone());
            meta
        };
        match v["kind"].as_str().unwrap() {
            "Pod" => {
                let full: core::Pod = serde_json::from_value(v.clone()).unwrap();
                let mut metadata = with_ns(full.metadata);
                let labels = Arc::new(metadata.labels.take().unwrap_or_default());
                let spec = full.spec.map(|s| reduced::PodSpec {
                    containers: s
                        .containers
                        .into_iter()
                        .map(|c| reduced::Container {
                            name: c.name,
                            ports: c.ports.map(|ps| {
                                ps.into_iter()
                                    .map(|p| reduced::ContainerPort { container_port: p.container_port, name: p.name, protocol: p.protocol })
                                    .collect()
                            }),
                        })
                        .collect(),
                    node_name: s.node_name.as_deref().map(Arc::from),
                    host_network: s.host_network,
                });
                let status = full.status.map(|s| reduced::PodStatus {
                    phase: s.phase,
                    pod_ip: s.pod_ip,
                    pod_ips: s.pod_ips.map(|ips| ips.into_iter().map(|i| reduced::PodIP { ip: i.ip }).collect()),
                    conditions: s.conditions.map(|cs| cs.into_iter().map(|c| reduced::PodCondition { type_: c.type_, status: c.status }).collect()),
                });
                m.pods.insert(key, Arc::new(reduced::Pod { metadata, labels, spec, status }));
            }
            "EndpointSlice" => {
                let full: discovery::EndpointSlice = serde_json::from_value(v.clone()).unwrap();
                let endpoints = full
                    .endpoints
                    .into_iter()
                    .map(|e| reduced::Endpoint {
                        addresses: e.addresses.into(),
                        conditions: e.conditions,
                        node_name: e.node_name.as_deref().map(Arc::from),
                        deprecated_topology: e.deprecated_topology.map(Box::new),
                        target_ref: e.target_ref.map(|r| Box::new(reduced::ObjectReference { kind: r.kind, name: r.name, namespace: r.namespace })),
                        hints: e.hints.map(|h| {
                            let names = |l: Vec<String>| l.into_iter().map(|n| reduced::ForName { name: Arc::from(n) }).collect();
                            Box::new(reduced::EndpointHints {
                                for_zones: h.for_zones.map(|z| names(z.into_iter().map(|z| z.name).collect())),
                                for_nodes: h.for_nodes.map(|n| names(n.into_iter().map(|n| n.name).collect())),
                            })
                        }),
                    })
                    .collect();
                let mut metadata = with_ns(full.metadata);
                let labels = metadata.labels.take().map(reduced::SliceLabels::from).unwrap_or_default();
                let s = reduced::EndpointSlice { metadata, labels, address_type: full.address_type, endpoints, ports: full.ports };
                m.endpoint_slices.insert(key, Arc::new(s));
            }
            "Service" => {
                let mut s: core::Service = serde_json::from_value(v.clone()).unwrap();
                s.metadata = with_ns(s.metadata);
                m.services.insert(key, Arc::new(s));
            }
            "NetworkPolicy" => {
                let mut p: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(v.clone()).unwrap();
                p.metadata = with_ns(p.metadata);
                m.network_policies.insert(key, Arc::new(p));
            }
            "Namespace" => {
                m.namespaces.insert(name, Arc::new(serde_json::from_value(v.clone()).unwrap()));
            }
            "Node" => {
                m.nodes.insert(name, Arc::new(serde_json::from_value(v.clone()).unwrap()));
            }
            other => panic!("the examples have no {other}"),
        }
    }
    m
}

/// Everything the compilers make of a view, as text: ports of this node, Service tables and
/// views, policy tables and views, and their problems.
fn compiled(m: &Manifests) -> BTreeMap<&'static str, String> {
    let node = model::node_info(m, None).unwrap();
    let (pods, pod_problems) = services::all_pods(m);
    let local = model::local_pods(m, &node).unwrap();
    let s = compile_services(&ServiceInputs { manifests: m, node: &node, all_pods: &pods }, &mut ServiceState::default());
    let p = compile_policy(&PolicyInputs { manifests: m, node: &node, all_pods: &pods }, &mut PolicyState::default());
    let views: Vec<_> = s.views.iter().map(|v| serde_json::to_string(&**v).unwrap()).collect();
    BTreeMap::from([
        ("pods", format!("{pods:?} {pod_problems:?}")),
        ("local pods", format!("{local:?}")),
        ("service tables", format!("{:?}", s.tables)),
        ("service views", views.join("\n")),
        ("service problems", format!("{:?}", s.problems)),
        ("service health checks", format!("{:?} {:?}", s.health_checks, s.ignored)),
        ("nodes eligible for load balancers", format!("{:?}", m.nodes.iter().map(|(k, n)| (k, podswitch_control::health::node_eligible(n))).collect::<Vec<_>>())),
        ("policy tables", format!("{:?}", p.tables)),
        ("policy views", serde_json::to_string(&p.views).unwrap()),
        ("policy problems", format!("{:?}", p.problems)),
    ])
}

#[test]
fn reduced_objects_compile_to_the_tables_of_full_objects() {
    for dirs in [&["examples/services"][..], &["examples/lab-9pods", "examples/policies"][..]] {
        let docs: Vec<Value> = documents(dirs).into_iter().enumerate().map(|(i, v)| as_sent(v, i)).collect();
        let text: String = docs.iter().map(|d| format!("{d}\n---\n")).collect();
        let mut reduced_view = Manifests::default();
        manifests::add_documents(&mut reduced_view, Path::new("sent.yaml"), &text).unwrap();
        assert!(reduced_view.ignored.is_empty(), "{:?}", reduced_view.ignored);
        let full = full_view(&docs);
        // The reduced view did lose something (else this compares nothing).
        let any_pod = reduced_view.pods.values().next().unwrap();
        assert!(any_pod.metadata.annotations.is_none() && full.pods.values().next().unwrap().metadata.annotations.is_some());
        assert!(!reduced_view.pods.is_empty() && reduced_view.pods.len() == full.pods.len(), "{dirs:?}");
        let (a, b) = (compiled(&reduced_view), compiled(&full));
        for (what, text) in &a {
            let other = &b[what];
            if text != other {
                let at = text.bytes().zip(other.bytes()).position(|(x, y)| x != y).unwrap_or(text.len().min(other.len()));
                let around = |t: &str| t.get(at.saturating_sub(200)..(at + 200).min(t.len())).unwrap_or_default().to_string();
                panic!("{dirs:?}: {what} differ at byte {at}:\nreduced: ...{}...\nfull:    ...{}...", around(text), around(other));
            }
        }
        // Not vacuous: a Node (examples/services has one) is tainted or being deleted, and is
        // not eligible.
        if !reduced_view.nodes.is_empty() {
            assert!(a["nodes eligible for load balancers"].contains("false"), "{dirs:?}: {}", a["nodes eligible for load balancers"]);
        }
        // Not vacuous: the Services have backends, the policies isolate pods.
        let expected = if dirs[0] == "examples/services" { ("service tables", "Backend {") } else { ("policy tables", "ingress_isolated: true") };
        assert!(a[expected.0].contains(expected.1), "{dirs:?}: {}", a[expected.0]);
    }
}
