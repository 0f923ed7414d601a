//! kube-proxy's `TestCategorizeEndpoints` (pkg/proxy/topology_test.go of kubernetes/kubernetes,
//! the newest stored copy, commit 6c039d9) as a table: every case, with the same endpoints, node
//! labels, policies and expectations, run through [`Sets::categorize`] and [`Sets::for_kind`].
//! Then cases of node hints (`PreferSameNode`, which that copy of the test predates) written from
//! `topologyModeFromHints` of the newest stored topology.go (commit 008b365).
//!
//! How kube-proxy's results map onto these sets: its `clusterEndpoints` are the members of the
//! sets that are not `local_only`, its `localEndpoints` those of the `local_only` sets, each
//! `None` (nil) when no frontend of the port uses it (the port's frontends are its ClusterIP and,
//! when kube-proxy's case has a `nodePort`, a NodePort); `allEndpoints` is their union (podswitch
//! keeps no such list: every frontend uses its own two sets); `hasAnyEndpoints` is what decides
//! whether an empty local set drops or rejects.
use std::collections::BTreeSet;
use std::sync::Arc;

use switch::tables::services::{FrontendKind, OnEmpty};

use super::derive::Candidate;
use super::model::{ClusterIpSpec, Hints, ServiceModel, ServiceType, TrafficPolicy};
use super::sets::{Sets, Topology};

/// This node's name in every case (kube-proxy's `isLocal` endpoints are on it).
const NODE: &str = "this-node";

/// kube-proxy's `BaseServicePortInfo` fields that the cases set.
#[derive(Default, Clone, Copy)]
struct Svc {
    internal_local: bool,
    external_local: bool,
    node_port: bool,
}

/// kube-proxy's `BaseEndpointInfo` fields that the cases set.
#[derive(Default, Clone)]
struct Ep {
    addr: &'static str,
    zones: &'static [&'static str],
    nodes: &'static [&'static str],
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

struct Case {
    name: &'static str,
    /// `topology.kubernetes.io/zone` of the node; None: no such label.
    zone: Option<&'static str>,
    svc: Svc,
    eps: Vec<Ep>,
    cluster: Option<&'static [&'static str]>,
    local: Option<&'static [&'static str]>,
    /// Only given when both sets are used (as in kube-proxy's table).
    all: Option<&'static [&'static str]>,
    only_remote: bool,
}

fn ep(addr: &'static str, zones: &'static [&'static str], ready: bool) -> Ep {
    Ep { addr, zones, ready, ..Ep::default() }
}

fn local(mut e: Ep) -> Ep {
    e.local = true;
    e
}

fn st(mut e: Ep, serving: bool, terminating: bool) -> Ep {
    e.serving = serving;
    e.terminating = terminating;
    e
}

fn candidate(e: &Ep) -> Candidate {
    let (ip, port) = e.addr.split_once(':').unwrap();
    let names = |l: &[&str]| -> Box<[Arc<str>]> { l.iter().map(|s| Arc::from(*s)).collect() };
    let hints = (!e.zones.is_empty() || !e.nodes.is_empty())
        .then(|| Arc::new(Hints { zones: names(e.zones), nodes: names(e.nodes) }));
    Candidate {
        ip: ip.parse().unwrap(),
        port: port.parse().unwrap(),
        // kube-proxy's `BaseEndpointInfo` leaves serving unset when a case only says ready;
        // its `IsServing` is then false, which only matters with terminating set.
        ready: e.ready,
        serving: e.serving,
        terminating: e.terminating,
        node: Some(Arc::from(if e.local { NODE } else { "other-node" })),
        local: e.local,
        source: Arc::from("test"),
        hints,
    }
}

fn model(s: Svc) -> ServiceModel {
    let policy = |local: bool| if local { TrafficPolicy::Local } else { TrafficPolicy::Cluster };
    ServiceModel {
        namespace: "ns".into(),
        name: "svc".into(),
        key: "ns/svc".into(),
        type_: if s.node_port { ServiceType::NodePort } else { ServiceType::ClusterIP },
        cluster_ip: ClusterIpSpec::Ip("10.96.0.10".parse().unwrap()),
        ports: Vec::new(),
        selector: None,
        external_ips: Vec::new(),
        lb_ips: Vec::new(),
        source_ranges: Vec::new(),
        external_policy: policy(s.external_local),
        internal_policy: policy(s.internal_local),
        affinity_timeout_s: None,
        allocate_lb_node_ports: true,
        publish_not_ready: false,
        traffic_distribution: None,
        needs_health_check: false,
        health_check_node_port: None,
        other_proxy: None,
    }
}

fn set_of(l: &[&str]) -> BTreeSet<String> {
    l.iter().map(|s| (*s).to_string()).collect()
}

fn run(c: &Case) {
    // Endpoints are kept sorted by address by the compiler; so are they here.
    let mut cands: Vec<Candidate> = c.eps.iter().map(candidate).collect();
    cands.sort_by_key(|e| (e.ip, e.port));
    let at = Topology { node: NODE, zone: c.zone.unwrap_or("") };
    let sets = Sets::categorize(&cands, at);
    let svc = model(c.svc);
    let mut kinds = vec![FrontendKind::ClusterIp];
    if c.svc.node_port {
        kinds.push(FrontendKind::NodePort);
    }
    let (mut cluster, mut local): (Option<BTreeSet<String>>, Option<BTreeSet<String>>) = (None, None);
    let mut local_on_empty = None;
    for kind in kinds {
        let (i, e) = sets.for_kind(kind, &svc);
        for s in [i, e] {
            let members: BTreeSet<String> = s.members.iter().map(|&k| format!("{}:{}", cands[k].ip, cands[k].port)).collect();
            let slot = if s.local_only { &mut local } else { &mut cluster };
            if let Some(prev) = slot.as_ref() {
                assert_eq!(*prev, members, "{}: one set per kind", c.name);
            }
            *slot = Some(members);
            if s.local_only {
                local_on_empty = Some(s.on_empty);
            }
        }
    }
    assert_eq!(cluster, c.cluster.map(set_of), "{}: cluster endpoints", c.name);
    assert_eq!(local, c.local.map(set_of), "{}: local endpoints", c.name);
    let union: BTreeSet<String> = cluster.iter().chain(local.iter()).flatten().cloned().collect();
    let expected_all = match (c.cluster, c.local) {
        (Some(x), None) | (None, Some(x)) => set_of(x),
        _ => set_of(c.all.unwrap_or(&[])),
    };
    assert_eq!(union, expected_all, "{}: all endpoints", c.name);
    // hasAnyEndpoints: an empty local set drops while some endpoint exists elsewhere.
    let has_any = !expected_all.is_empty() || c.only_remote;
    if let Some(on_empty) = local_on_empty {
        assert_eq!(on_empty, if has_any { OnEmpty::Drop } else { OnEmpty::Reject }, "{}: hasAnyEndpoints", c.name);
    }
    assert_eq!(sets.has_any(), has_any, "{}: hasAnyEndpoints", c.name);
}

const A: &[&str] = &["zone-a"];
const B: &[&str] = &["zone-b"];
const C: &[&str] = &["zone-c"];
const NONE: &[&str] = &[];

fn upstream_cases() -> Vec<Case> {
    let za = Some("zone-a");
    let d = |name, zone, svc, eps, cluster, local, all| Case { name, zone, svc, eps, cluster, local, all, only_remote: false };
    let plain = Svc::default();
    let four = |last_ready: bool| {
        vec![ep("10.1.2.3:80", A, true), ep("10.1.2.4:80", B, true), ep("10.1.2.5:80", C, true), ep("10.1.2.6:80", A, last_ready)]
    };
    let four_local = || {
        vec![local(ep("10.1.2.3:80", A, true)), local(ep("10.1.2.4:80", B, true)), ep("10.1.2.5:80", C, true), ep("10.1.2.6:80", A, true)]
    };
    let two = |l0: bool, l1: bool| {
        let e0 = ep("10.0.0.0:80", NONE, true);
        let e1 = ep("10.0.0.1:80", NONE, true);
        vec![if l0 { local(e0) } else { e0 }, if l1 { local(e1) } else { e1 }]
    };
    let both: &'static [&'static str] = &["10.0.0.0:80", "10.0.0.1:80"];
    vec![
        d("should use topology since all endpoints have hints, node has a zone label and and there are endpoints for the node's zone",
            za, plain, four(true), Some(&["10.1.2.3:80", "10.1.2.6:80"]), None, None),
        d("externalTrafficPolicy: Local, topology ignored for Local endpoints",
            za, Svc { external_local: true, node_port: true, ..plain }, four_local(),
            Some(&["10.1.2.3:80", "10.1.2.6:80"]), Some(&["10.1.2.3:80", "10.1.2.4:80"]), Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"])),
        d("internalTrafficPolicy: Local, topology ignored for Local endpoints",
            za, Svc { internal_local: true, external_local: false, node_port: true }, four_local(),
            Some(&["10.1.2.3:80", "10.1.2.6:80"]), Some(&["10.1.2.3:80", "10.1.2.4:80"]), Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"])),
        d("empty node labels", None, plain, vec![ep("10.1.2.3:80", A, true)], Some(&["10.1.2.3:80"]), None, None),
        d("empty zone label", Some(""), plain, vec![ep("10.1.2.3:80", A, true)], Some(&["10.1.2.3:80"]), None, None),
        d("node in different zone, no endpoint filtering", Some("zone-b"), plain, vec![ep("10.1.2.3:80", A, true)], Some(&["10.1.2.3:80"]), None, None),
        d("unready endpoint", za, plain, four(false), Some(&["10.1.2.3:80"]), None, None),
        d("only unready endpoints in same zone (should not filter)", za, plain,
            vec![ep("10.1.2.3:80", A, false), ep("10.1.2.4:80", B, true), ep("10.1.2.5:80", C, true), ep("10.1.2.6:80", A, false)],
            Some(&["10.1.2.4:80", "10.1.2.5:80"]), None, None),
        d("missing hints, no filtering applied", za, plain,
            vec![ep("10.1.2.3:80", A, true), ep("10.1.2.4:80", B, true), ep("10.1.2.5:80", NONE, true), ep("10.1.2.6:80", A, true)],
            Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"]), None, None),
        d("multiple hints per endpoint, filtering includes any endpoint with zone included", Some("zone-c"), plain,
            vec![
                ep("10.1.2.3:80", &["zone-a", "zone-b", "zone-c"], true),
                ep("10.1.2.4:80", &["zone-b", "zone-c"], true),
                ep("10.1.2.5:80", &["zone-b", "zone-d"], true),
                ep("10.1.2.6:80", C, true),
            ],
            Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]), None, None),
        d("conflicting topology and localness require merging allEndpoints",
            za, Svc { internal_local: false, external_local: true, node_port: true },
            vec![local(ep("10.0.0.0:80", A, true)), local(ep("10.0.0.1:80", B, true)), ep("10.0.0.2:80", A, true), ep("10.0.0.3:80", B, true)],
            Some(&["10.0.0.0:80", "10.0.0.2:80"]), Some(&["10.0.0.0:80", "10.0.0.1:80"]), Some(&["10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"])),
        d("internalTrafficPolicy: Local, with empty endpoints", None, Svc { internal_local: true, ..plain }, vec![], None, Some(&[]), None),
        Case {
            only_remote: true,
            ..d("internalTrafficPolicy: Local, but all endpoints are remote", None, Svc { internal_local: true, ..plain }, two(false, false), None, Some(&[]), None)
        },
        d("internalTrafficPolicy: Local, all endpoints are local", None, Svc { internal_local: true, ..plain }, two(true, true), None, Some(both), None),
        d("internalTrafficPolicy: Local, some endpoints are local", None, Svc { internal_local: true, ..plain }, two(true, false), None, Some(&["10.0.0.0:80"]), None),
        d("Cluster traffic policy, endpoints not Ready", None, plain,
            vec![ep("10.0.0.0:80", NONE, false), ep("10.0.0.1:80", NONE, false)], Some(&[]), None, None),
        d("Cluster traffic policy, some endpoints are Ready", None, plain,
            vec![ep("10.0.0.0:80", NONE, false), ep("10.0.0.1:80", NONE, true)], Some(&["10.0.0.1:80"]), None, None),
        d("Cluster traffic policy, all endpoints are terminating", None, plain,
            vec![local(st(ep("10.0.0.0:80", NONE, false), true, true)), st(ep("10.0.0.1:80", NONE, false), true, true)],
            Some(both), None, None),
        d("iTP: Local, eTP: Cluster, some endpoints local", None, Svc { internal_local: true, external_local: false, node_port: true },
            two(true, false), Some(both), Some(&["10.0.0.0:80"]), Some(both)),
        d("iTP: Cluster, eTP: Local, some endpoints local", None, Svc { internal_local: false, external_local: true, node_port: true },
            two(true, false), Some(both), Some(&["10.0.0.0:80"]), Some(both)),
        d("iTP: Local, eTP: Local, some endpoints local", None, Svc { internal_local: true, external_local: true, node_port: true },
            two(true, false), Some(both), Some(&["10.0.0.0:80"]), Some(both)),
        d("iTP: Local, eTP: Local, all endpoints remote", None, Svc { internal_local: true, external_local: true, node_port: true },
            two(false, false), Some(both), Some(&[]), Some(both)),
        Case {
            only_remote: true,
            ..d("iTP: Local, eTP: Local, all endpoints remote and terminating", None, Svc { internal_local: true, external_local: true, node_port: true },
                vec![st(ep("10.0.0.0:80", NONE, false), true, true), st(ep("10.0.0.1:80", NONE, false), true, true)],
                Some(both), Some(&[]), Some(both))
        },
        d("iTP: Cluster, eTP: Local, with terminating endpoints", None, Svc { internal_local: false, external_local: true, node_port: true },
            vec![
                ep("10.0.0.0:80", NONE, true),
                local(st(ep("10.0.0.1:80", NONE, false), false, false)),
                local(st(ep("10.0.0.2:80", NONE, false), true, true)),
                st(ep("10.0.0.3:80", NONE, false), true, true),
            ],
            Some(&["10.0.0.0:80"]), Some(&["10.0.0.2:80"]), Some(&["10.0.0.0:80", "10.0.0.2:80"])),
        d("externalTrafficPolicy ignored if not externally accessible", None, Svc { external_local: true, ..plain },
            two(false, true), Some(both), None, Some(both)),
        d("no cluster endpoints for iTP:Local internal-only service", None, Svc { internal_local: true, ..plain },
            two(false, true), None, Some(&["10.0.0.1:80"]), Some(&["10.0.0.1:80"])),
    ]
}

#[test]
fn kube_proxy_categorize_endpoints_cases() {
    let cases = upstream_cases();
    assert_eq!(cases.len(), 26, "every case of the upstream table");
    for c in &cases {
        run(c);
    }
}

/// Node hints, per `topologyModeFromHints` (`PreferSameTrafficDistribution` on, its default).
#[test]
fn node_hints_prefer_this_node_then_fall_back_to_the_zone_then_to_every_endpoint() {
    let za = Some("zone-a");
    let n = |addr, zones, nodes, ready| Ep { addr, zones, nodes, ready, ..Ep::default() };
    let case = |name, zone, eps, cluster: &'static [&'static str]| Case {
        name,
        zone,
        svc: Svc::default(),
        eps,
        cluster: Some(cluster),
        local: None,
        all: None,
        only_remote: false,
    };
    let cases = [
        case("every ready endpoint has a node hint and one is for this node: PreferSameNode", za,
            vec![n("10.0.0.1:80", A, &[NODE], true), n("10.0.0.2:80", A, &["node-2"], true), n("10.0.0.3:80", B, &["node-3"], true)],
            &["10.0.0.1:80"]),
        case("an endpoint hinted for several nodes, this one among them", za,
            vec![n("10.0.0.1:80", A, &["node-2", NODE], true), n("10.0.0.2:80", A, &["node-2"], true)],
            &["10.0.0.1:80"]),
        case("node hints but none for this node: the zone hints decide", za,
            vec![n("10.0.0.1:80", A, &["node-1"], true), n("10.0.0.2:80", A, &["node-2"], true), n("10.0.0.3:80", B, &["node-3"], true)],
            &["10.0.0.1:80", "10.0.0.2:80"]),
        case("a ready endpoint without a node hint: the zone hints decide", za,
            vec![n("10.0.0.1:80", B, &[NODE], true), n("10.0.0.2:80", A, NONE, true)],
            &["10.0.0.2:80"]),
        case("an unready endpoint without hints does not count", za,
            vec![n("10.0.0.1:80", A, &[NODE], true), n("10.0.0.2:80", A, &["node-2"], true), n("10.0.0.3:80", NONE, NONE, false)],
            &["10.0.0.1:80"]),
        case("the endpoint for this node is not ready: the zone hints decide", za,
            vec![n("10.0.0.1:80", A, &[NODE], false), n("10.0.0.2:80", A, &["node-2"], true), n("10.0.0.3:80", B, &["node-3"], true)],
            &["10.0.0.2:80"]),
        case("node hints for other nodes, zone hints for other zones: every endpoint", Some("zone-c"),
            vec![n("10.0.0.1:80", A, &["node-1"], true), n("10.0.0.2:80", B, &["node-2"], true)],
            &["10.0.0.1:80", "10.0.0.2:80"]),
        case("node hints without zone hints, none for this node: every endpoint", za,
            vec![n("10.0.0.1:80", NONE, &["node-1"], true), n("10.0.0.2:80", NONE, &["node-2"], true)],
            &["10.0.0.1:80", "10.0.0.2:80"]),
        case("node hints without zone hints, one for this node, and no zone label", None,
            vec![n("10.0.0.1:80", NONE, &[NODE], true), n("10.0.0.2:80", NONE, &["node-2"], true)],
            &["10.0.0.1:80"]),
    ];
    for c in &cases {
        run(c);
    }
}
