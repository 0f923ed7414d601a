//! The incremental compiler against a compile of everything and against the original one-pass
//! compiler ([`super::reference`]), over random sequences of edits: each view is compiled by
//! all of them, each with its own state, and every result and every state must be equal.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::reference::{self, RefState};
use super::*;
use crate::manifests::{add_documents, Manifests};

use fastrand::Rng;

/// True in `percent` of the calls.
fn chance(rng: &mut Rng, percent: u64) -> bool {
    rng.u64(..100) < percent
}

const NAMESPACES: [&str; 2] = ["a", "b"];
const PODS_PER_NS: usize = 6;
const SERVICES_PER_NS: usize = 5;

/// One object as a list of knobs, each an index into its choices: an edit turns one knob (so
/// that a change of any single field is seen alone) or all of them.
#[derive(Clone)]
struct Knobs(Vec<usize>);

impl Knobs {
    fn random(rng: &mut Rng, sizes: &[usize]) -> Self {
        Self(sizes.iter().map(|&n| rng.usize(..n)).collect())
    }
    fn turn(&mut self, rng: &mut Rng, sizes: &[usize]) {
        if chance(rng, 30) {
            *self = Self::random(rng, sizes);
        } else {
            let i = rng.usize(..sizes.len());
            self.0[i] = rng.usize(..sizes[i]);
        }
    }
}

/// The objects of a view by key: (namespace, number, knobs).
#[derive(Default, Clone)]
struct World {
    pods: BTreeMap<String, (usize, usize, Knobs)>,
    services: BTreeMap<String, (usize, usize, Knobs)>,
    /// (namespace, Service number, slice number, knobs).
    slices: BTreeMap<String, (usize, usize, usize, Knobs)>,
    node: &'static str,
    /// Zone label of node-1 and node-2: none, zone-a, zone-b.
    zones: [usize; 2],
}

const POD_KNOBS: [usize; 9] = [4, 2, 7, 3, 3, 10, 5, 4, 2];

fn pod_yaml(k: &Knobs, ns: usize, i: usize) -> String {
    let k = &k.0;
    let app = ["web", "web", "db", "x"][k[0]];
    let tier = ["", ", tier: t1"][k[1]];
    let deleting = if k[2] == 0 { ", deletionTimestamp: \"2024-01-01T00:00:00Z\"" } else { "" };
    let node = ["nodeName: node-1, ", "nodeName: node-2, ", ""][k[3]];
    let ports = [
        "[{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]",
        "[{name: http, containerPort: 9090}]",
        "[{name: other, containerPort: 7000}]",
    ][k[4]];
    // Now and then two pods share an address (hostNetwork pods share the node's), or a pod has none.
    let ip = match k[5] {
        0 => String::new(),
        1 => "podIP: 10.244.9.9, ".to_string(),
        _ => format!("podIP: 10.244.{ns}.{}, ", i + 2),
    };
    let phase = ["Running", "Running", "Running", "Succeeded", "Pending"][k[6]];
    let conditions = [
        "",
        ", conditions: [{type: Ready, status: \"False\"}]",
        ", conditions: [{type: Ready, status: \"True\"}]",
        ", conditions: [{type: Ready, status: \"True\"}]",
    ][k[7]];
    let annotation = ["", ", annotations: {note: x}"][k[8]];
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: {}, labels: {{app: {app}{tier}}}{deleting}{annotation}}}\n\
         spec: {{{node}containers: [{{name: c, image: i, ports: {ports}}}]}}\nstatus: {{{ip}phase: {phase}{conditions}}}\n",
        NAMESPACES[ns]
    )
}

const SVC_KNOBS: [usize; 17] = [5, 10, 5, 4, 6, 6, 2, 4, 5, 5, 7, 7, 2, 3, 4, 2, 6];

fn service_yaml(k: &Knobs, ns: usize, i: usize) -> String {
    let k = &k.0;
    let type_ = ["ClusterIP", "ClusterIP", "NodePort", "LoadBalancer", "ExternalName"][k[0]];
    let mut spec = vec![format!("type: {type_}")];
    if type_ == "ExternalName" {
        spec.push("externalName: example.com".into());
    }
    // A few fixed addresses so that Services fight over them; an invalid one now and then.
    match k[1] {
        0 | 1 => spec.push("clusterIP: 10.96.0.3".into()),
        2 => spec.push("clusterIP: 10.96.0.4".into()),
        3 if type_ == "ClusterIP" => spec.push("clusterIP: None".into()),
        4 => spec.push("clusterIP: 10.97.0.1".into()),
        _ => {}
    }
    match k[2] {
        0 => {}
        1 => spec.push("selector: {app: db}".into()),
        2 => spec.push("selector: {app: web, tier: t1}".into()),
        _ => spec.push("selector: {app: web}".into()),
    }
    let np = |c: usize| [", nodePort: 30001", ", nodePort: 30002", "", "", "", ""][c];
    let ports = match k[3] {
        0 => vec![format!("{{name: http, port: 80, targetPort: http{}}}", np(k[4]))],
        1 => vec![
            format!("{{name: http, port: 80, targetPort: 8080{}}}", np(k[4])),
            format!("{{name: dns, port: 53, protocol: UDP, targetPort: dns{}}}", np(k[5])),
        ],
        2 => vec![format!("{{port: {}, targetPort: 8080{}}}", [80, 81][k[6]], np(k[4]))],
        _ => vec![
            format!("{{name: {}, port: 80, targetPort: 8080}}", ["http", "web"][k[6]]),
            format!("{{name: dns, port: 53, protocol: UDP, targetPort: 53{}}}", np(k[5])),
        ],
    };
    spec.push(format!("ports: [{}]", ports.join(", ")));
    if let Some(ip) = ["1.2.3.4", "1.2.3.5", "172.18.0.2"].get(k[7]) {
        spec.push(format!("externalIPs: [{ip}]"));
    }
    if k[8] == 0 {
        spec.push("externalTrafficPolicy: Local".into());
        if k[4] != 5 {
            spec.push(format!("healthCheckNodePort: 3200{}", k[4]));
        }
    }
    if k[9] == 0 {
        spec.push("internalTrafficPolicy: Local".into());
    }
    match k[10] {
        0 => spec.push("sessionAffinity: ClientIP".into()),
        1 => spec.push("sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}".into()),
        _ => {}
    }
    if k[11] == 0 {
        spec.push("publishNotReadyAddresses: true".into());
    }
    if k[12] == 0 {
        spec.push("allocateLoadBalancerNodePorts: false".into());
    }
    if k[13] == 0 {
        spec.push("loadBalancerSourceRanges: [10.0.0.0/8]".into());
    }
    let status = match k[14] {
        0 | 1 => format!("status: {{loadBalancer: {{ingress: [{{ip: {}}}]}}}}\n", ["5.5.5.5", "1.2.3.4"][k[14]]),
        2 => "status: {loadBalancer: {ingress: [{ip: 5.5.5.6, ipMode: Proxy}]}}\n".into(),
        _ => String::new(),
    };
    if let Some(td) = ["PreferClose", "PreferSameZone", "PreferSameNode"].get(k[16]) {
        spec.push(format!("trafficDistribution: {td}"));
    }
    let annotation = ["", ", annotations: {note: x}"][k[15]];
    // Now and then another proxy's.
    let label = if k[10] == 3 { ", labels: {service.kubernetes.io/service-proxy-name: other}" } else { "" };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: {}{annotation}{label}}}\nspec: {{{}}}\n{status}",
        NAMESPACES[ns],
        spec.join(", ")
    )
}

/// Knobs of a slice: ports, owner, endpoint count, then (address, ready, serving, terminating,
/// node) of each of 3 endpoints, then the endpoints' hints.
const SLICE_KNOBS: [usize; 19] = [4, 10, 4, 7, 3, 3, 4, 3, 7, 3, 3, 4, 3, 7, 3, 3, 4, 3, 5];

/// Topology hints of endpoint `e` of a slice, by the slice's hints knob.
fn hints(knob: usize, e: usize) -> &'static str {
    match knob {
        1 => ", hints: {forZones: [{name: zone-a}]}",
        2 => [", hints: {forZones: [{name: zone-a}]}", ", hints: {forZones: [{name: zone-b}]}", ""][e],
        3 => [
            ", hints: {forZones: [{name: zone-a}], forNodes: [{name: node-1}]}",
            ", hints: {forZones: [{name: zone-b}], forNodes: [{name: node-2}]}",
            ", hints: {forZones: [{name: zone-a}, {name: zone-b}], forNodes: [{name: node-2}]}",
        ][e],
        _ => "",
    }
}

fn slice_yaml(k: &Knobs, ns: usize, svc: usize, n: usize) -> String {
    let k = &k.0;
    let port = [
        "[{name: http, port: 8080, protocol: TCP}]",
        "[{name: http, port: 8080, protocol: TCP}, {name: dns, port: 53, protocol: UDP}]",
        "[{port: 8080}]",
        "[{name: web, port: 9000}]",
    ][k[0]];
    // Now and then a slice names another Service.
    let owner = if k[1] == 0 { (svc + 1) % SERVICES_PER_NS } else { svc };
    let b = |c: usize| ["true", "true", "false"][c];
    let eps: Vec<String> = (0..k[2].min(3))
        .map(|i| {
            let e = &k[3 + i * 5..8 + i * 5];
            format!(
                "{{addresses: [\"10.244.{ns}.{}\"], conditions: {{ready: {}, serving: {}, terminating: {}}}{}{}}}",
                e[0] + 2,
                b(e[1]),
                b(e[2]),
                ["false", "true", "false", "false"][e[3]],
                [", nodeName: node-1", ", nodeName: node-2", ""][e[4]],
                hints(k[18], i)
            )
        })
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{svc}-{n}, namespace: {}, labels: {{kubernetes.io/service-name: s{owner}}}}}\n\
         addressType: IPv4\nports: {port}\nendpoints: [{}]\n",
        NAMESPACES[ns],
        eps.join(", ")
    )
}

impl World {
    fn edit(&mut self, rng: &mut Rng) {
        let ns = rng.usize(..NAMESPACES.len());
        match rng.usize(..12) {
            0..=2 => {
                let i = rng.usize(..SERVICES_PER_NS);
                let key = format!("{}/s{i}", NAMESPACES[ns]);
                let remove = chance(rng, 15);
                match self.services.get_mut(&key) {
                    Some(_) if remove => drop(self.services.remove(&key)),
                    Some((_, _, k)) => k.turn(rng, &SVC_KNOBS),
                    None => drop(self.services.insert(key, (ns, i, Knobs::random(rng, &SVC_KNOBS)))),
                }
            }
            3..=6 => {
                let (svc, n) = (rng.usize(..SERVICES_PER_NS), rng.usize(..2));
                let key = format!("{}/s{svc}-{n}", NAMESPACES[ns]);
                let remove = chance(rng, 20);
                match self.slices.get_mut(&key) {
                    Some(_) if remove => drop(self.slices.remove(&key)),
                    Some((_, _, _, k)) => k.turn(rng, &SLICE_KNOBS),
                    None => drop(self.slices.insert(key, (ns, svc, n, Knobs::random(rng, &SLICE_KNOBS)))),
                }
            }
            7..=10 => {
                let i = rng.usize(..PODS_PER_NS);
                let key = format!("{}/p{i}", NAMESPACES[ns]);
                let remove = chance(rng, 10);
                match self.pods.get_mut(&key) {
                    Some(_) if remove => drop(self.pods.remove(&key)),
                    Some((_, _, k)) => k.turn(rng, &POD_KNOBS),
                    None => drop(self.pods.insert(key, (ns, i, Knobs::random(rng, &POD_KNOBS)))),
                }
            }
            _ => {
                if chance(rng, 20) {
                    self.node = if self.node == "node-1" { "node-2" } else { "node-1" };
                }
                if chance(rng, 30) {
                    self.zones[rng.usize(..2)] = rng.usize(..3);
                }
            }
        }
    }

    /// The view; with `versions`, every object carries a resourceVersion that changes with it.
    fn manifests(&self, versions: bool) -> Manifests {
        let docs = self
            .pods
            .values()
            .map(|(ns, i, k)| pod_yaml(k, *ns, *i))
            .chain(self.services.values().map(|(ns, i, k)| service_yaml(k, *ns, *i)))
            .chain(self.slices.values().map(|(ns, s, n, k)| slice_yaml(k, *ns, *s, *n)))
            .chain(self.zones.iter().enumerate().map(|(i, z)| {
                let labels = ["", ", labels: {topology.kubernetes.io/zone: zone-a}", ", labels: {topology.kubernetes.io/zone: zone-b}"][*z];
                format!("apiVersion: v1\nkind: Node\nmetadata: {{name: node-{}{labels}}}\n", i + 1)
            }));
        let mut text = String::new();
        for doc in docs {
            let doc = if versions {
                let mut h = fingerprint::FpHasher::default();
                std::hash::Hash::hash(&doc, &mut h);
                doc.replacen("metadata: {", &format!("metadata: {{resourceVersion: \"{:x}\", ", h.fp() as u64), 1)
            } else {
                doc
            };
            text += &doc;
            text += "---\n";
        }
        let mut m = Manifests::default();
        add_documents(&mut m, Path::new("world.yaml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        m
    }

    fn node(&self) -> NodeInfo {
        NodeInfo { name: self.node.into(), pod_cidr: "10.244.0.0/16".parse().unwrap(), internal_ip: "172.18.0.2".parse().unwrap() }
    }
}

fn same_tables(a: &ServiceTables, b: &ServiceTables, what: &str) {
    assert_eq!(a.frontends.len(), b.frontends.len(), "{what}: frontends");
    for (x, y) in a.frontends.iter().zip(b.frontends.iter()) {
        assert_eq!(**x, **y, "{what}: frontend");
    }
    assert_eq!(*a.by_key, *b.by_key, "{what}: key index");
    assert_eq!(*a.cluster_ips, *b.cluster_ips, "{what}: ClusterIPs");
    assert_eq!(a.service_cidrs, b.service_cidrs, "{what}: Service CIDRs");
    assert_eq!(a.snat_ip, b.snat_ip, "{what}: SNAT address");
}

fn same(a: &CompiledServices, sa: &ServiceState, b: &CompiledServices, sb: &ServiceState, what: &str) {
    assert_eq!(a.problems, b.problems, "{what}: problems");
    assert_eq!(a.views, b.views, "{what}: views");
    assert_eq!(a.health_checks, b.health_checks, "{what}: health checks");
    assert_eq!(a.ignored, b.ignored, "{what}: Services left to another proxy");
    same_tables(&a.tables, &b.tables, what);
    assert_eq!(sa.removed_endpoints(), sb.removed_endpoints(), "{what}: removed endpoints");
    assert_eq!(sa.cluster_ips, sb.cluster_ips, "{what}: ClusterIP allocations");
    assert_eq!(sa.node_ports, sb.node_ports, "{what}: NodePort allocations");
    assert_eq!(sa.service_ids, sb.service_ids, "{what}: Service ids");
    assert_eq!(sa.next_service_id, sb.next_service_id, "{what}: next Service id");
    assert_eq!(sa.next_endpoint_id, sb.next_endpoint_id, "{what}: next endpoint id");
    assert_eq!(sa.cache.endpoint_ids(), sb.cache.endpoint_ids(), "{what}: endpoint ids");
}

fn same_as_reference(a: &CompiledServices, sa: &ServiceState, r: &CompiledServices, sr: &RefState, what: &str) {
    assert_eq!(a.problems, r.problems, "{what}: problems");
    assert_eq!(a.views, r.views, "{what}: views");
    same_tables(&a.tables, &r.tables, what);
    assert_eq!(sa.removed_endpoints(), sr.removed.as_slice(), "{what}: removed endpoints");
    assert_eq!(sa.cluster_ips, sr.cluster_ips, "{what}: ClusterIP allocations");
    assert_eq!(sa.node_ports, sr.node_ports, "{what}: NodePort allocations");
    assert_eq!(sa.service_ids, sr.service_ids, "{what}: Service ids");
    assert_eq!(sa.next_endpoint_id, sr.next_endpoint_id, "{what}: next endpoint id");
    assert_eq!(sa.cache.endpoint_ids(), sr.endpoint_ids, "{what}: endpoint ids");
}

fn run(seed: u64, steps: usize, config: ServiceConfig) -> (usize, usize) {
    let mut rng = Rng::with_seed(seed);
    let mut w = World { node: "node-1", ..Default::default() };
    let mut inc = ServiceState::new(config.clone());
    let mut inc_rv = ServiceState::new(config.clone()).with_resource_versions(true);
    // Fed views that list what changed since the previous one (now and then not).
    let mut inc_cs = ServiceState::new(config.clone()).with_resource_versions(true);
    let mut previous: Option<Manifests> = None;
    let mut full = ServiceState::new(config.clone());
    let mut refs = RefState::new(config);
    let (mut frontends, mut problems) = (0, 0);
    for step in 0..steps {
        for _ in 0..=rng.usize(..3) {
            w.edit(&mut rng);
        }
        let m = w.manifests(false);
        let mv = w.manifests(true);
        let mut mc = mv.clone();
        mc.digest = format!("view {step}");
        if let Some(p) = previous.as_ref().filter(|_| !chance(&mut rng, 10)) {
            mc.changes = Some(crate::manifests::Changes::between(p, &mc));
        }
        let node = w.node();
        let (pods, _) = all_pods(&m);
        let (pods_v, _) = all_pods(&mv);
        let inp = ServiceInputs { manifests: &m, node: &node, all_pods: &pods };
        let a = compile_services(&inp, &mut inc);
        let b = compile_services_full(&inp, &mut full);
        let r = reference::compile_services(&inp, &mut refs);
        let v = compile_services(&ServiceInputs { manifests: &mv, node: &node, all_pods: &pods_v }, &mut inc_rv);
        let c = compile_services(&ServiceInputs { manifests: &mc, node: &node, all_pods: &pods_v }, &mut inc_cs);
        let what = format!("seed {seed} step {step}");
        same(&c, &inc_cs, &a, &inc, &format!("{what}, incremental by changed keys vs incremental"));
        same(&a, &inc, &b, &full, &format!("{what}, incremental vs full"));
        same_as_reference(&b, &full, &r, &refs, &format!("{what}, full vs reference"));
        same(&v, &inc_rv, &a, &inc, &format!("{what}, incremental by resourceVersion vs incremental"));
        // The same view again changes nothing.
        if chance(&mut rng, 10) {
            let again = compile_services(&inp, &mut inc);
            assert!(inc.removed_endpoints().is_empty(), "{what}: same view again");
            assert_eq!(again.views, a.views, "{what}: same view again");
            assert!(again.tables.frontends.ptr_eq(&a.tables.frontends), "{what}: same view again shares the tables");
            compile_services_full(&inp, &mut full);
            reference::compile_services(&inp, &mut refs);
            compile_services(&ServiceInputs { manifests: &mv, node: &node, all_pods: &pods_v }, &mut inc_rv);
            // Again with no change listed.
            let mut again = mc.clone();
            again.changes = Some(crate::manifests::Changes { since: mc.digest.clone(), ..Default::default() });
            again.digest = format!("view {step} again");
            let c2 = compile_services(&ServiceInputs { manifests: &again, node: &node, all_pods: &pods_v }, &mut inc_cs);
            assert!(inc_cs.removed_endpoints().is_empty(), "{what}: same view again, by changed keys");
            assert!(c2.tables.frontends.ptr_eq(&c.tables.frontends), "{what}: same view again, by changed keys");
            mc = again;
        }
        previous = Some(mc);
        frontends += a.tables.frontends.len();
        problems += a.problems.len();
    }
    (frontends, problems)
}

#[test]
fn incremental_equals_full_and_reference_over_random_edits() {
    for seed in 1..=6u64 {
        let (frontends, problems) = run(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 250, ServiceConfig::default());
        assert!(frontends > 1000 && problems > 100, "the edits exercise little: {frontends} frontends, {problems} problems");
    }
}

#[test]
fn incremental_equals_full_and_reference_with_scarce_addresses_and_ports() {
    // 14 ClusterIPs and 5 NodePorts: allocations run out, conflict and move.
    let config = ServiceConfig {
        service_cidrs: vec!["10.96.0.0/28".parse().unwrap()],
        node_port_range: 30000..=30004,
        extra_node_ips: vec!["192.168.1.2".parse().unwrap()],
        internal_ip_serves_node_ports: true,
    };
    for seed in 1..=6u64 {
        run(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) + 7, 250, config.clone());
    }
}

#[test]
fn step_4_on_several_threads_gives_what_one_thread_gives() {
    // Every compile's step 4 on 3 threads, however few Services it compiles (a full sync of
    // 1,024 or more takes that path), against the one-pass reference compiler.
    compile::FORCE_THREADS.set(Some(3));
    for seed in 1..=3u64 {
        run(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) + 3, 150, ServiceConfig::default());
    }
    compile::FORCE_THREADS.set(None);
}

fn simple_slice(svc: usize, shift: usize) -> String {
    let eps: Vec<String> =
        (0..3).map(|k| format!("{{addresses: [\"10.244.0.{}\"], nodeName: node-1}}", 2 + (svc + k + shift) % 200)).collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{svc}, namespace: x, labels: {{kubernetes.io/service-name: s{svc}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n---\n",
        eps.join(", ")
    )
}

#[test]
fn an_endpoint_change_replaces_one_services_frontends_and_shares_the_rest() {
    let mut text = String::new();
    for s in 0..50 {
        text += &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s{s}, namespace: x}}\nspec: {{ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\n");
        text += &simple_slice(s, 0);
    }
    let mut m = Manifests::default();
    add_documents(&mut m, Path::new("t.yaml"), &text).unwrap();
    let node = World { node: "node-1", ..Default::default() }.node();
    let mut state = ServiceState::default();
    let c0 = compile_services(&ServiceInputs { manifests: &m, node: &node, all_pods: &[] }, &mut state);
    let mut one = Manifests::default();
    add_documents(&mut one, Path::new("c.yaml"), &simple_slice(7, 1)).unwrap();
    m.endpoint_slices.extend(one.objects.endpoint_slices);
    let c1 = compile_services(&ServiceInputs { manifests: &m, node: &node, all_pods: &[] }, &mut state);
    assert!(Arc::ptr_eq(&c0.tables.by_key, &c1.tables.by_key), "the key index is shared");
    assert!(Arc::ptr_eq(&c0.tables.cluster_ips, &c1.tables.cluster_ips));
    let i = c1.tables.by_key.get(&c1.tables.frontends.iter().find(|f| f.name == "x/s7:http").unwrap().key).unwrap() as usize;
    for (j, (a, b)) in c0.tables.frontends.iter().zip(c1.tables.frontends.iter()).enumerate() {
        assert_eq!(Arc::ptr_eq(a, b), j != i, "frontend {j}");
    }
    // Identical sets share one backend list and one Maglev table.
    let f = &c1.tables.frontends[i];
    assert!(Arc::ptr_eq(&f.internal.backends, &f.external.backends));
    assert!(f.internal.maglev.ptr_eq(&f.external.maglev));
    // The endpoint that left is reported; the one that stayed keeps its id.
    assert_eq!(state.removed_endpoints().len(), 1);
    assert_eq!(
        c0.tables.frontends[i].internal.backends[1].endpoint_id,
        c1.tables.frontends[i].internal.backends[0].endpoint_id
    );
}
