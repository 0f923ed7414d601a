//! Tests of the Service compiler, with fixtures written as manifests.
use std::net::Ipv4Addr;
use std::path::Path;

use switch::tables::maglev;
use switch::tables::services::{BackendSet, Frontend, FrontendKind, OnEmpty};

use super::*;
use crate::manifests::{add_documents, Manifests};

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const NODE_IP: &str = "172.18.0.2";

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-1".into(),
        pod_cidr: "10.244.0.0/24".parse().unwrap(),
        internal_ip: NODE_IP.parse().unwrap(),
    }
}

fn load(yaml: &str) -> Manifests {
    let mut m = Manifests::default();
    add_documents(&mut m, Path::new("test.yaml"), yaml).unwrap();
    m
}

fn compile_in(state: &mut ServiceState, yaml: &str) -> CompiledServices {
    let m = load(yaml);
    let (pods, problems) = all_pods(&m);
    assert!(problems.is_empty(), "{problems:?}");
    let n = node();
    compile_services(&ServiceInputs { manifests: &m, node: &n, all_pods: &pods }, state)
}

fn compile(yaml: &str) -> CompiledServices {
    compile_in(&mut ServiceState::default(), yaml)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn fe<'a>(c: &'a CompiledServices, addr: &str, port: u16, proto: u8) -> &'a Frontend {
    c.tables.frontend(ip(addr), port, proto).unwrap_or_else(|| {
        let all: Vec<String> = c.views.iter().map(|v| v.frontend.clone()).collect();
        panic!("no frontend {addr}:{port}/{proto} among {all:?}; problems {:?}", c.problems)
    })
}

fn addrs(s: &BackendSet) -> Vec<String> {
    s.backends.iter().map(|b| format!("{}:{}", b.ip, b.port)).collect()
}

fn has_problem(c: &CompiledServices, needle: &str) -> bool {
    c.problems.iter().any(|p| p.contains(needle))
}

#[allow(clippy::too_many_arguments)]
/// A pod in flow-style YAML. `node` "" leaves spec.nodeName unset; `meta` and `status` are
/// extra flow-map entries (", key: value").
fn pod(ns: &str, name: &str, labels: &str, ip: &str, node: &str, ports: &str, meta: &str, status: &str) -> String {
    let node = if node.is_empty() { String::new() } else { format!("nodeName: {node}, ") };
    let ip = if ip.is_empty() { String::new() } else { format!("podIP: {ip}") };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}{meta}}}\n\
         spec: {{{node}containers: [{{name: c, image: i, ports: {ports}}}]}}\nstatus: {{{ip}{status}}}\n---\n"
    )
}

/// Lab-like pod: label `pod: NAME`, serving 80 and 81 on TCP and UDP under names like the lab's.
fn lab_pod(ns: &str, name: &str, ip: &str, node: &str) -> String {
    pod(
        ns,
        name,
        &format!("{{pod: {name}, app: web}}"),
        ip,
        node,
        "[{name: http, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]",
        "",
        "",
    )
}

fn service(ns: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n")
}

/// An EndpointSlice of Service `svc`; `endpoints` is a flow sequence.
fn slice(ns: &str, name: &str, svc: &str, ports: &str, endpoints: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}, namespace: {ns}, labels: {{kubernetes.io/service-name: {svc}}}}}\n\
         addressType: IPv4\nports: {ports}\nendpoints: {endpoints}\n---\n"
    )
}

const WEB: &str = "{selector: {app: web}, clusterIP: 10.96.0.20, ports: [{name: http, port: 80, targetPort: http}]}";

// ---------------------------------------------------------------------------------------------
// Frontends and tables

#[test]
fn cluster_ip_service_over_selected_pods() {
    let yaml = [
        service("x", "web", WEB),
        lab_pod("x", "a", "10.244.0.10", ""),
        lab_pod("x", "b", "10.244.0.11", "node-1"),
        lab_pod("x", "c", "10.244.1.12", "node-2"),
    ]
    .concat();
    let c = compile(&yaml);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.tables.frontends.len(), 1);
    let f = fe(&c, "10.96.0.20", 80, TCP);
    assert_eq!(f.name, "x/web:http");
    assert_eq!(f.kind, FrontendKind::ClusterIp);
    assert_eq!(addrs(&f.internal), ["10.244.0.10:80", "10.244.0.11:80", "10.244.1.12:80"]);
    assert_eq!(f.internal.backends.iter().map(|b| b.local).collect::<Vec<_>>(), [true, true, false]);
    assert_eq!(addrs(&f.external), addrs(&f.internal));
    assert!(!f.internal.masquerade && f.external.masquerade);
    assert_eq!((f.internal.on_empty, f.affinity_timeout_s), (OnEmpty::Reject, None));
    assert_eq!(f.internal.maglev.len(), maglev::table_size(3));
    for h in 0..1000u64 {
        assert!(f.internal.pick(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)).is_some());
    }
    assert!(c.tables.cluster_ips.contains(&u32::from(ip("10.96.0.20"))));
    assert_eq!(c.tables.service_cidrs, vec![(u32::from(ip("10.96.0.0")), 12)]);
    assert_eq!(c.tables.snat_ip, Some(ip(NODE_IP)));
    assert!(c.tables.in_service_cidr(ip("10.96.200.1")));
}

#[test]
fn maglev_tables_are_built_over_ip_port_names() {
    let yaml =
        [service("x", "web", WEB), lab_pod("x", "a", "10.244.0.10", ""), lab_pod("x", "b", "10.244.0.11", "")].concat();
    let c = compile(&yaml);
    let f = fe(&c, "10.96.0.20", 80, TCP);
    let names: Vec<String> = addrs(&f.internal);
    assert_eq!(f.internal.maglev.entries(), maglev::build(&names).to_vec());
    let empty = compile(&service("x", "web", WEB));
    let f = fe(&empty, "10.96.0.20", 80, TCP);
    assert!(f.internal.backends.is_empty() && f.internal.maglev.is_empty());
    assert_eq!((f.internal.on_empty, f.external.on_empty), (OnEmpty::Reject, OnEmpty::Reject));
}

#[test]
fn several_ports_and_protocols() {
    let spec = "{selector: {app: web}, clusterIP: 10.96.0.30, ports: [\
                {name: http, port: 80, targetPort: 80}, \
                {name: dns, port: 53, protocol: UDP, targetPort: dns}, \
                {name: sig, port: 2905, protocol: SCTP}]}";
    let c = compile(&[service("x", "multi", spec), lab_pod("x", "a", "10.244.0.10", "")].concat());
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(addrs(&fe(&c, "10.96.0.30", 80, TCP).internal), ["10.244.0.10:80"]);
    assert_eq!(addrs(&fe(&c, "10.96.0.30", 53, UDP).internal), ["10.244.0.10:53"]);
    assert_eq!(addrs(&fe(&c, "10.96.0.30", 2905, SCTP).internal), ["10.244.0.10:2905"]);
    assert!(c.tables.frontend(ip("10.96.0.30"), 53, TCP).is_none());
    assert_eq!(fe(&c, "10.96.0.30", 53, UDP).name, "x/multi:dns");
    // The three frontends share the Service id.
    let ids: BTreeSet<u32> = c.tables.frontends.iter().map(|f| f.service_id).collect();
    assert_eq!(ids.len(), 1);
}

#[test]
fn nodeport_loadbalancer_and_external_ip_frontends() {
    let lb = "apiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: x}\n\
              spec: {type: LoadBalancer, selector: {app: web}, clusterIP: 10.96.0.40, externalIPs: [192.0.2.50],\n\
              loadBalancerSourceRanges: [192.0.2.0/25, ' 198.51.100.7/24 '],\n\
              ports: [{name: http, port: 80, targetPort: http, nodePort: 30080}]}\n\
              status: {loadBalancer: {ingress: [{ip: 192.0.2.10}, {hostname: lb.example}, {ip: 192.0.2.11, ipMode: Proxy}]}}\n---\n";
    let c = compile(&[lb.to_string(), lab_pod("x", "a", "10.244.0.10", "")].concat());
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let kinds: Vec<(FrontendKind, String)> = c.views.iter().map(|v| (v.kind, v.frontend.clone())).collect();
    assert_eq!(
        kinds,
        [
            (FrontendKind::ClusterIp, "10.96.0.40:80/tcp".to_string()),
            (FrontendKind::NodePort, format!("{NODE_IP}:30080/tcp")),
            (FrontendKind::LoadBalancer, "192.0.2.10:80/tcp".to_string()),
            (FrontendKind::ExternalIp, "192.0.2.50:80/tcp".to_string()),
        ]
    );
    let lbf = fe(&c, "192.0.2.10", 80, TCP);
    assert_eq!(lbf.source_ranges, vec![(u32::from(ip("192.0.2.0")), 25), (u32::from(ip("198.51.100.0")), 24)]);
    assert!(lbf.source_allowed(ip("192.0.2.100")) && !lbf.source_allowed(ip("192.0.2.200")));
    assert!(fe(&c, NODE_IP, 30080, TCP).source_ranges.is_empty());
    assert!(fe(&c, "192.0.2.50", 80, TCP).source_ranges.is_empty());
    for f in &c.tables.frontends {
        assert_eq!(addrs(&f.external), ["10.244.0.10:80"], "{}", f.name);
    }
    // No LoadBalancer frontend for ipMode Proxy.
    assert!(c.tables.frontend(ip("192.0.2.11"), 80, TCP).is_none());
}

#[test]
fn extra_node_ips_serve_node_ports() {
    let mut state = ServiceState::new(ServiceConfig { extra_node_ips: vec![ip("192.168.1.2")], ..Default::default() });
    let spec = "{type: NodePort, clusterIP: 10.96.0.41, ports: [{port: 80, nodePort: 30081}]}";
    let c = compile_in(&mut state, &service("x", "np", spec));
    fe(&c, NODE_IP, 30081, TCP);
    fe(&c, "192.168.1.2", 30081, TCP);
    // --nodeport-addresses without the InternalIP: only the other address serves.
    let mut state = ServiceState::new(ServiceConfig {
        extra_node_ips: vec![ip("192.168.1.2")],
        internal_ip_serves_node_ports: false,
        ..Default::default()
    });
    let c = compile_in(&mut state, &service("x", "np", spec));
    fe(&c, "192.168.1.2", 30081, TCP);
    assert!(c.tables.frontends.iter().all(|f| !(f.key.ip == u32::from(ip(NODE_IP)) && f.key.port == 30081)), "not on the InternalIP");
    fe(&c, "10.96.0.41", 80, TCP);
}

#[test]
fn load_balancer_without_node_ports() {
    let spec = "{type: LoadBalancer, allocateLoadBalancerNodePorts: false, clusterIP: 10.96.0.42, \
                ports: [{name: a, port: 80}, {name: b, port: 81, nodePort: 30181}]}";
    let c = compile(&service("x", "lb", spec));
    let np: Vec<&str> =
        c.views.iter().filter(|v| v.kind == FrontendKind::NodePort).map(|v| v.frontend.as_str()).collect();
    assert_eq!(np, [format!("{NODE_IP}:30181/tcp")]);
    // With allocation (the default) both ports get one.
    let spec = "{type: LoadBalancer, clusterIP: 10.96.0.42, ports: [{name: a, port: 80}, {name: b, port: 81, nodePort: 30181}]}";
    let c = compile(&service("x", "lb", spec));
    assert_eq!(c.views.iter().filter(|v| v.kind == FrontendKind::NodePort).count(), 2);
}

#[test]
fn external_ips_on_a_cluster_ip_service_follow_external_traffic_policy() {
    let spec = "{selector: {app: web}, clusterIP: 10.96.0.43, externalIPs: [192.0.2.60, '2001:db8::1'], \
                externalTrafficPolicy: Local, ports: [{port: 80}]}";
    let c = compile(&[service("x", "eip", spec), lab_pod("x", "r", "10.244.1.5", "node-2")].concat());
    let f = fe(&c, "192.0.2.60", 80, TCP);
    assert_eq!(f.kind, FrontendKind::ExternalIp);
    assert!(f.external.backends.is_empty());
    assert_eq!(f.external.on_empty, OnEmpty::Drop);
    assert_eq!(c.tables.frontends.len(), 2, "the IPv6 external IP is skipped");
}

#[test]
fn headless_external_name_and_ipv6_only_get_no_frontends() {
    let yaml = [
        service("x", "headless", "{clusterIP: None, selector: {app: web}, ports: [{port: 80}]}"),
        service("x", "ext", "{type: ExternalName, externalName: example.com, ports: [{port: 80}]}"),
        service("x", "v6", "{clusterIP: 'fd00::10', clusterIPs: ['fd00::10'], ports: [{port: 80}]}"),
        service("x", "v6fam", "{ipFamilies: [IPv6], ports: [{port: 80}]}"),
        lab_pod("x", "a", "10.244.0.10", ""),
    ]
    .concat();
    let c = compile(&yaml);
    assert!(c.tables.frontends.is_empty(), "{:?}", c.views);
    assert!(c.tables.cluster_ips.is_empty());
    assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
    assert!(has_problem(&c, "Service x/v6 is IPv6-only"));
}

/// A Service (and EndpointSlice) with `metadata.labels` `labels`.
fn labelled(kind_yaml: &str, labels: &str) -> String {
    kind_yaml.replacen("namespace: x}", &format!("namespace: x, labels: {labels}}}"), 1)
}

#[test]
fn services_labelled_for_another_proxy_are_left_alone() {
    let web = |name: &str, ip: &str| service("x", name, &format!("{{selector: {{app: web}}, clusterIP: {ip}, ports: [{{port: 80}}]}}"));
    let yaml = [
        labelled(&web("other", "10.96.0.30"), "{service.kubernetes.io/service-proxy-name: cilium}"),
        labelled(&web("empty", "10.96.0.31"), "{service.kubernetes.io/service-proxy-name: ''}"),
        labelled(&web("hl", "10.96.0.32"), "{service.kubernetes.io/headless: ''}"),
        web("mine", "10.96.0.33"),
        // A slice left to another proxy gives no endpoints, even to a Service of ours.
        service("x", "sliced", "{clusterIP: 10.96.0.34, ports: [{port: 80}]}"),
        slice("x", "sliced-a", "sliced", "[{port: 80}]", "[{addresses: [10.244.0.10]}]").replacen(
            "labels: {kubernetes.io/service-name: sliced}",
            "labels: {kubernetes.io/service-name: sliced, service.kubernetes.io/headless: ''}",
            1,
        ),
        lab_pod("x", "a", "10.244.0.10", ""),
    ]
    .concat();
    let c = compile(&yaml);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let fronts: Vec<&str> = c.views.iter().map(|v| v.service.as_str()).collect();
    assert_eq!(fronts, ["x/mine", "x/sliced"], "{:?}", c.views);
    assert!(c.tables.frontend(ip("10.96.0.30"), 80, TCP).is_none());
    assert!(fe(&c, "10.96.0.34", 80, TCP).internal.backends.is_empty());
    assert_eq!(
        c.ignored,
        [
            "Service x/empty (label service.kubernetes.io/service-proxy-name: another proxy's)",
            "Service x/hl (label service.kubernetes.io/headless: another proxy's)",
            "Service x/other (label service.kubernetes.io/service-proxy-name: another proxy's)",
        ]
    );
    // The label taken off: served, and no longer listed (the incremental compile sees it).
    let mut st = ServiceState::default();
    compile_in(&mut st, &yaml);
    let c = compile_in(&mut st, &yaml.replace(", labels: {service.kubernetes.io/service-proxy-name: cilium}", ""));
    fe(&c, "10.96.0.30", 80, TCP);
    assert_eq!(c.ignored.len(), 2, "{:?}", c.ignored);
    // An ExternalName or headless Service gets nothing either (and is no other proxy's).
    let c = compile(&[service("x", "hl", "{clusterIP: None, selector: {app: web}, ports: [{port: 80}]}"), service("x", "en", "{type: ExternalName, externalName: a.example, ports: [{port: 80}]}")].concat());
    assert!(c.tables.frontends.is_empty() && c.ignored.is_empty(), "{:?}", c.views);
}

#[test]
fn health_checks_of_local_load_balancers_count_local_ready_endpoints_by_address() {
    let lb = |name: &str, extra: &str| {
        service("x", name, &format!("{{type: LoadBalancer, selector: {{app: web}}, ports: [{{name: http, port: 80, targetPort: http}}, {{name: dns, port: 53, targetPort: dns, protocol: UDP}}]{extra}}}"))
    };
    let yaml = [
        lb("local", ", externalTrafficPolicy: Local, healthCheckNodePort: 32000"),
        lb("cluster", ", healthCheckNodePort: 32001"),
        lb("noport", ", externalTrafficPolicy: Local"),
        service("x", "np", "{type: NodePort, externalTrafficPolicy: Local, healthCheckNodePort: 32002, selector: {app: web}, ports: [{port: 80}]}"),
        lab_pod("x", "a", "10.244.0.10", "node-1"),
        lab_pod("x", "b", "10.244.0.11", "node-1"),
        lab_pod("x", "c", "10.244.1.12", "node-2"),
        pod("x", "d", "{app: web}", "10.244.0.13", "node-1", "[{name: http, containerPort: 80}]", "", ", conditions: [{type: Ready, status: 'False'}]"),
    ]
    .concat();
    // Two local ready pods serve both ports: two endpoints, not four; the remote one and the
    // unready local one do not count. Only LoadBalancer with Local gets one. Without a
    // healthCheckNodePort, one is allocated from the NodePort range (upper band first, after
    // the Service's own NodePorts), and kept.
    let mut st = ServiceState::default();
    let c = compile_in(&mut st, &yaml);
    assert!(!has_problem(&c, "healthCheckNodePort"), "{:?}", c.problems);
    let allocated = st.allocated_health_check_port("x/noport").expect("allocated");
    assert!((30086..=32767).contains(&allocated), "{allocated}");
    let noport_nps: Vec<u16> = c.views.iter().filter(|v| v.service == "x/noport" && v.kind == FrontendKind::NodePort).map(|v| v.port).collect();
    assert!(!noport_nps.is_empty() && !noport_nps.contains(&allocated), "{noport_nps:?} {allocated}");
    assert_eq!(
        c.health_checks,
        [
            HealthCheck { namespace: "x".into(), name: "local".into(), port: 32000, local_endpoints: 2 },
            HealthCheck { namespace: "x".into(), name: "noport".into(), port: allocated, local_endpoints: 2 },
        ]
    );
    let again = compile_in(&mut st, &yaml.replace("node-2", "node-4"));
    assert_eq!(again.health_checks[1].port, allocated, "an allocation stays");
    assert_eq!(st.allocated_health_check_port("x/local"), None, "asked for: nothing allocated");
    // The local pods go: 0, still served (503 at the HTTP side).
    let c = compile(&yaml.replace("node-1", "node-3"));
    assert_eq!(c.health_checks.len(), 2);
    assert_eq!(c.health_checks[0].local_endpoints, 0);
    // Incrementally: the policy changes to Cluster, the health check goes.
    let mut st = ServiceState::default();
    assert_eq!(compile_in(&mut st, &yaml).health_checks.len(), 2);
    let c = compile_in(&mut st, &yaml.replace("externalTrafficPolicy: Local, healthCheckNodePort: 32000", "healthCheckNodePort: 32000"));
    assert_eq!(c.health_checks.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["noport"]);
}

#[test]
fn dual_stack_service_uses_its_ipv4_cluster_ip() {
    let spec =
        "{clusterIP: 'fd00::20', clusterIPs: ['fd00::20', 10.96.0.21], ipFamilies: [IPv6, IPv4], ports: [{port: 80}]}";
    let c = compile(&service("x", "ds", spec));
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    fe(&c, "10.96.0.21", 80, TCP);
    let spec = "{clusterIP: 10.96.0.22, clusterIPs: [10.96.0.23], ports: [{port: 80}]}";
    let c = compile(&service("x", "bad", spec));
    assert!(c.tables.frontends.is_empty() && has_problem(&c, "is not the first of clusterIPs"), "{:?}", c.problems);
}

// ---------------------------------------------------------------------------------------------
// Malformed input

#[test]
fn malformed_services_are_skipped_with_a_sentence() {
    // (spec, problem expected, frontends left)
    let cases: &[(&str, &str, usize)] = &[
        ("{type: Weird, ports: [{port: 80}]}", "type \"Weird\" is not", 0),
        ("{clusterIP: 10.96.0.0, ports: [{port: 80}]}", "not a usable address", 0),
        ("{clusterIP: banana, ports: [{port: 80}]}", "clusterIP \"banana\" is not an IP", 0),
        ("{clusterIP: 10.96.0.50, externalIPs: [300.1.1.1], ports: [{port: 80}]}", "externalIPs entry", 0),
        ("{clusterIP: 10.96.0.50, externalTrafficPolicy: Sideways, ports: [{port: 80}]}", "externalTrafficPolicy", 0),
        ("{clusterIP: 10.96.0.50, internalTrafficPolicy: local, ports: [{port: 80}]}", "internalTrafficPolicy", 0),
        ("{clusterIP: 10.96.0.50, sessionAffinity: Cookie, ports: [{port: 80}]}", "sessionAffinity", 0),
        (
            "{clusterIP: 10.96.0.50, sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}, ports: [{port: 80}]}",
            "timeoutSeconds 0",
            0,
        ),
        ("{clusterIP: 10.96.0.50, clusterIPs: [10.96.0.50, 10.96.0.51], ports: [{port: 80}]}", "more than one IPv4", 0),
        ("{type: NodePort, clusterIP: None, ports: [{port: 80}]}", "headless", 0),
        // Port-level problems drop only the port.
        ("{clusterIP: 10.96.0.50, ports: [{name: a, port: 70000}, {name: b, port: 81}]}", "port \"a\" has port 70000", 1),
        ("{clusterIP: 10.96.0.50, ports: [{name: a, port: 80, protocol: ICMP}, {name: b, port: 81}]}", "ICMP", 1),
        ("{clusterIP: 10.96.0.50, ports: [{name: a, port: 80}, {name: a, port: 81}]}", "repeats the port name \"a\"", 1),
        ("{clusterIP: 10.96.0.50, ports: [{port: 80}, {port: 81}]}", "repeats the port name \"\"", 1),
        ("{clusterIP: 10.96.0.50, ports: [{name: a, port: 80}, {name: b, port: 80}]}", "repeats port 80/TCP", 1),
        ("{clusterIP: 10.96.0.50, ports: [{name: A_b, port: 80}, {name: b, port: 81}]}", "not a DNS label", 1),
        ("{clusterIP: 10.96.0.50, ports: [{name: a, port: 80, targetPort: '8080'}, {name: b, port: 81}]}", "neither a number", 1),
        ("{clusterIP: 10.96.0.50, ports: [{name: a, port: 80, targetPort: 99999}, {name: b, port: 81}]}", "targetPort 99999", 1),
        (
            "{type: NodePort, clusterIP: 10.96.0.50, ports: [{name: a, port: 80, nodePort: 8080}, {name: b, port: 81, nodePort: 30001}]}",
            "nodePort 8080, outside the NodePort range 30000-32767",
            2, // b: ClusterIP + NodePort
        ),
        // Warnings that keep the Service.
        ("{clusterIP: 10.112.0.1, ports: [{port: 80}]}", "not a usable address of the Service CIDR (10.96.0.0/12); proxied all the same", 1),
        ("{clusterIP: 10.96.0.50, ports: [{port: 80, nodePort: 30001}]}", "type is ClusterIP; nodePort ignored", 1),
        ("{clusterIP: 10.96.0.50, loadBalancerSourceRanges: [10.0.0.0/8], ports: [{port: 80}]}", "only apply to type LoadBalancer", 1),
    ];
    for (spec, problem, left) in cases {
        let c = compile(&service("x", "s", spec));
        assert!(has_problem(&c, problem), "{spec}: want {problem:?} in {:?}", c.problems);
        assert!(c.problems.iter().all(|p| p.starts_with("Service x/s")), "{spec}: {:?}", c.problems);
        assert_eq!(c.tables.frontends.len(), *left, "{spec}: {:?}", c.views);
    }
}

#[test]
fn bad_source_ranges_skip_the_service() {
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: x}\n\
               spec: {type: LoadBalancer, clusterIP: 10.96.0.44, loadBalancerSourceRanges: [192.0.2.0/33], ports: [{port: 80}]}\n\
               status: {loadBalancer: {ingress: [{ip: 192.0.2.10}]}}\n---\n";
    let good = service("x", "ok", "{clusterIP: 10.96.0.45, ports: [{port: 80}]}");
    for (yaml, range) in
        [("192.0.2.0/33", "192.0.2.0/33"), ("192.0.2.1", "192.0.2.1"), ("nonsense", "nonsense"), ("''", "")]
    {
        let c = compile(&[bad.replace("192.0.2.0/33", yaml), good.clone()].concat());
        assert!(
            has_problem(
                &c,
                &format!("Service x/lb: loadBalancerSourceRanges entry {range:?} is not a CIDR; Service skipped")
            ),
            "{range}: {:?}",
            c.problems
        );
        assert_eq!(c.tables.frontends.len(), 1, "only x/ok is left");
        fe(&c, "10.96.0.45", 80, TCP);
    }
    // IPv6 ranges are skipped (an IPv4 proxy does not use them), host bits cleared.
    let c = compile(&bad.replace("192.0.2.0/33", "'2001:db8::/32', 192.0.2.77/24"));
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(fe(&c, "192.0.2.10", 80, TCP).source_ranges, vec![(u32::from(ip("192.0.2.0")), 24)]);
}

#[test]
fn malformed_endpoint_slices_drop_what_is_bad() {
    let yaml = [
        service("x", "s", "{clusterIP: 10.96.0.46, ports: [{name: http, port: 80}]}"),
        slice(
            "x",
            "s-1",
            "s",
            "[{name: http, port: 8080}, {name: http, port: 8081}, {name: x, protocol: ICMP, port: 1}, {name: y}]",
            "[{addresses: [10.244.0.10]}, {addresses: ['fd00::1']}, {addresses: [nope]}, {addresses: []}]",
        ),
    ]
    .concat();
    let c = compile(&yaml);
    assert_eq!(addrs(&fe(&c, "10.96.0.46", 80, TCP).internal), ["10.244.0.10:8080"]);
    for p in [
        "port \"http\" repeats",
        "ICMP",
        "\"y\" has no port number",
        "\"fd00::1\" is not an IPv4",
        "endpoint #4 has no address",
    ] {
        assert!(has_problem(&c, p), "{p}: {:?}", c.problems);
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints and conditions

/// Endpoint conditions in flow YAML: None leaves the condition unset.
fn conds(ready: Option<bool>, serving: Option<bool>, terminating: Option<bool>) -> String {
    let mut parts = Vec::new();
    for (k, v) in [("ready", ready), ("serving", serving), ("terminating", terminating)] {
        if let Some(v) = v {
            parts.push(format!("{k}: {v}"));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

type Cond = (Option<bool>, Option<bool>, Option<bool>);

/// Addresses of the cluster set of a Service whose slice lists one endpoint per condition
/// triple, 10.244.0.1, .2, ...
fn usable(endpoints: &[Cond]) -> Vec<String> {
    let eps: Vec<String> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (r, s, t))| format!("{{addresses: [10.244.0.{}], conditions: {}}}", i + 1, conds(*r, *s, *t)))
        .collect();
    let yaml = [
        service("x", "s", "{clusterIP: 10.96.0.60, ports: [{name: http, port: 80}]}"),
        slice("x", "s-1", "s", "[{name: http, port: 8080}]", &format!("[{}]", eps.join(", "))),
    ]
    .concat();
    let c = compile(&yaml);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let f = fe(&c, "10.96.0.60", 80, TCP);
    assert_eq!(addrs(&f.internal), addrs(&f.external));
    f.internal.backends.iter().map(|b| b.ip.octets()[3].to_string()).collect()
}

#[test]
fn endpoint_conditions_nil_and_set() {
    let (t, f, n) = (Some(true), Some(false), None);
    // (endpoints, indices (1-based) used)
    let cases: &[(&[Cond], &[&str])] = &[
        (&[(n, n, n)], &["1"]),                 // all nil: ready
        (&[(t, n, n)], &["1"]),                 // ready
        (&[(f, n, n), (t, n, n)], &["2"]),      // not ready beside a ready one
        (&[(f, n, n)], &[]),                    // not ready, not terminating: never
        (&[(t, f, n)], &["1"]),                 // ready wins whatever serving says
        (&[(t, n, t), (n, n, n)], &["1", "2"]), // ready and terminating (publishNotReadyAddresses) is ready
        // Fallback: no ready endpoint at all -> serving and terminating ones.
        (&[(f, t, t), (f, n, n)], &["1"]),
        (&[(f, n, t)], &["1"]),            // serving nil reads true
        (&[(f, f, t)], &[]),               // never serving=false
        (&[(f, t, f)], &[]),               // serving but not terminating: not a fallback
        (&[(f, t, t), (t, n, n)], &["2"]), // a ready one hides the terminating ones
        (&[(f, t, t), (f, t, t), (f, f, t)], &["1", "2"]),
        (&[], &[]),
    ];
    for (eps, want) in cases {
        assert_eq!(usable(eps), *want, "{eps:?}");
    }
}

#[test]
fn named_target_port_resolved_per_pod() {
    let yaml = [
        service(
            "x",
            "s",
            "{selector: {app: web}, clusterIP: 10.96.0.61, ports: [{name: web, port: 80, targetPort: http}]}",
        ),
        pod("x", "a", "{app: web}", "10.244.0.10", "", "[{name: http, containerPort: 8080}]", "", ""),
        pod("x", "b", "{app: web}", "10.244.0.11", "", "[{name: http, containerPort: 9090}]", "", ""),
        pod("x", "c", "{app: web}", "10.244.0.12", "", "[{name: other, containerPort: 80}]", "", ""),
        pod("x", "d", "{app: web}", "10.244.0.13", "", "[{name: http, containerPort: 80, protocol: UDP}]", "", ""),
    ]
    .concat();
    let c = compile(&yaml);
    assert_eq!(addrs(&fe(&c, "10.96.0.61", 80, TCP).internal), ["10.244.0.10:8080", "10.244.0.11:9090"]);
    assert!(
        c.problems.contains(
            &"Service x/s: port 80/TCP has targetPort \"http\" that pod x/c does not declare; endpoint skipped"
                .to_string()
        ),
        "{:?}",
        c.problems
    );
    assert!(has_problem(&c, "that pod x/d does not declare for TCP; endpoint skipped"), "{:?}", c.problems);
    assert_eq!(c.problems.len(), 2);
}

#[test]
fn numeric_and_unset_target_ports() {
    let spec = "{selector: {app: web}, clusterIP: 10.96.0.62, ports: [{name: a, port: 80, targetPort: 8080}, \
                {name: b, port: 81}, {name: c, port: 82, targetPort: 0}]}";
    let c = compile(&[service("x", "s", spec), lab_pod("x", "a", "10.244.0.10", "")].concat());
    assert_eq!(addrs(&fe(&c, "10.96.0.62", 80, TCP).internal), ["10.244.0.10:8080"]);
    assert_eq!(addrs(&fe(&c, "10.96.0.62", 81, TCP).internal), ["10.244.0.10:81"]);
    assert_eq!(addrs(&fe(&c, "10.96.0.62", 82, TCP).internal), ["10.244.0.10:82"]);
}

#[test]
fn endpoint_slices_match_ports_by_name_and_protocol() {
    let spec = "{clusterIP: 10.96.0.63, selector: {app: web}, ports: [{name: http, port: 80, targetPort: web}, \
                {name: dns, port: 53, protocol: UDP}]}";
    let yaml = [
        service("x", "s", spec),
        // Two slices give `http` different numbers: each endpoint uses its slice's.
        slice("x", "s-a", "s", "[{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]", "[{addresses: [10.244.0.10]}]"),
        slice("x", "s-b", "s", "[{name: http, port: 9090}]", "[{addresses: [10.244.0.11]}]"),
        // Not IPv4, other namespace, no label: none of them count.
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-v6, namespace: x, labels: {kubernetes.io/service-name: s}}\n\
         addressType: IPv6\nports: [{name: http, port: 80}]\nendpoints: [{addresses: ['fd00::1']}]\n---\n"
            .to_string(),
        slice("y", "s-c", "s", "[{name: http, port: 7070}]", "[{addresses: [10.244.0.12]}]"),
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-d, namespace: x}\n\
         addressType: IPv4\nports: [{name: http, port: 6060}]\nendpoints: [{addresses: [10.244.0.13]}]\n---\n"
            .to_string(),
        // Slices win over the selector: this pod is not used.
        lab_pod("x", "a", "10.244.0.99", ""),
    ]
    .concat();
    let c = compile(&yaml);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(addrs(&fe(&c, "10.96.0.63", 80, TCP).internal), ["10.244.0.10:8080", "10.244.0.11:9090"]);
    assert_eq!(addrs(&fe(&c, "10.96.0.63", 53, UDP).internal), ["10.244.0.10:5353"]);
    assert_eq!(c.views[0].endpoints_from, "endpointslices");
}

#[test]
fn unnamed_ports_match_and_missing_ports_are_reported() {
    let yaml = [
        service("x", "one", "{clusterIP: 10.96.0.64, ports: [{port: 80}]}"),
        slice("x", "one-1", "one", "[{port: 8080}]", "[{addresses: [10.244.0.10]}]"),
        service("x", "two", "{clusterIP: 10.96.0.65, ports: [{name: http, port: 80}, {name: grpc, port: 81}]}"),
        slice(
            "x",
            "two-1",
            "two",
            "[{name: http, port: 8080}, {name: grpc, port: 8081, protocol: UDP}]",
            "[{addresses: [10.244.0.10]}]",
        ),
    ]
    .concat();
    let c = compile(&yaml);
    assert_eq!(addrs(&fe(&c, "10.96.0.64", 80, TCP).internal), ["10.244.0.10:8080"]);
    assert_eq!(addrs(&fe(&c, "10.96.0.65", 80, TCP).internal), ["10.244.0.10:8080"]);
    assert!(fe(&c, "10.96.0.65", 81, TCP).internal.backends.is_empty());
    assert_eq!(
        c.problems,
        ["Service x/two: port 81/TCP (grpc) is listed by none of its EndpointSlices (x/two-1) under name \"grpc\" and protocol TCP; it has no endpoints"]
    );
}

#[test]
fn overlapping_slices_count_an_endpoint_once_preferring_ready() {
    let yaml = [
        service("x", "s", "{clusterIP: 10.96.0.66, ports: [{port: 80}]}"),
        slice(
            "x",
            "s-1",
            "s",
            "[{port: 8080}]",
            "[{addresses: [10.244.0.10], conditions: {ready: false}}, {addresses: [10.244.0.11]}]",
        ),
        slice(
            "x",
            "s-2",
            "s",
            "[{port: 8080}]",
            "[{addresses: [10.244.0.10], conditions: {ready: true}}, {addresses: [10.244.0.11]}]",
        ),
    ]
    .concat();
    let c = compile(&yaml);
    let f = fe(&c, "10.96.0.66", 80, TCP);
    assert_eq!(addrs(&f.internal), ["10.244.0.10:8080", "10.244.0.11:8080"]);
    assert_eq!(c.views[0].endpoints.len(), 2);
    assert!(c.views[0].endpoints[0].endpoint.source.starts_with("EndpointSlice x/s-2"));
}

#[test]
fn locality_of_slice_endpoints() {
    let eps = "[{addresses: [10.244.0.10], nodeName: node-1}, \
               {addresses: [10.244.0.11], deprecatedTopology: {kubernetes.io/hostname: node-1}}, \
               {addresses: [10.244.0.12], nodeName: node-2}, {addresses: [10.244.0.13]}]";
    let yaml = [
        service("x", "s", "{clusterIP: 10.96.0.67, internalTrafficPolicy: Local, ports: [{port: 80}]}"),
        slice("x", "s-1", "s", "[{port: 80}]", eps),
    ]
    .concat();
    let c = compile(&yaml);
    assert_eq!(addrs(&fe(&c, "10.96.0.67", 80, TCP).internal), ["10.244.0.10:80", "10.244.0.11:80"]);
    let nodes: Vec<Option<&str>> = c.views[0].endpoints.iter().map(|e| e.endpoint.node.as_deref()).collect();
    assert_eq!(nodes, [Some("node-1"), Some("node-1"), Some("node-2"), None]);
}

// ---------------------------------------------------------------------------------------------
// Derived endpoints

#[test]
fn derived_endpoints_follow_the_endpointslice_controller() {
    let ready_false = ", conditions: [{type: Ready, status: 'False'}]";
    let ready_true = ", conditions: [{type: Ready, status: 'True'}, {type: PodScheduled, status: 'True'}]";
    let only_scheduled = ", conditions: [{type: PodScheduled, status: 'True'}]";
    let deleting = ", deletionTimestamp: '2024-01-01T00:00:00Z'";
    let ports = "[{name: http, containerPort: 80}]";
    let yaml = [
        service(
            "x",
            "s",
            "{selector: {app: web}, clusterIP: 10.96.0.70, ports: [{name: http, port: 80, targetPort: http}]}",
        ),
        pod("x", "no-conditions", "{app: web}", "10.244.0.10", "", ports, "", ""),
        pod("x", "ready", "{app: web, extra: yes}", "10.244.0.11", "node-1", ports, "", ready_true),
        pod("x", "not-ready", "{app: web}", "10.244.0.12", "", ports, "", ready_false),
        pod("x", "scheduled-only", "{app: web}", "10.244.0.13", "", ports, "", only_scheduled),
        pod("x", "terminating", "{app: web}", "10.244.0.14", "", ports, deleting, ""),
        pod("x", "done", "{app: web}", "10.244.0.15", "", ports, "", ", phase: Succeeded"),
        pod("x", "no-ip", "{app: web}", "", "", ports, "", ""),
        pod("x", "other-labels", "{app: db}", "10.244.0.16", "", ports, "", ""),
        pod("y", "other-namespace", "{app: web}", "10.244.0.17", "", ports, "", ""),
        pod("x", "remote", "{app: web}", "10.244.1.18", "node-2", ports, "", ""),
    ]
    .concat();
    let c = compile(&yaml);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let v = &c.views[0];
    assert_eq!(v.endpoints_from, "selector");
    let listed: Vec<(&str, bool, bool, bool, bool)> =
        v.endpoints.iter().map(|e| &e.endpoint).map(|e| (&*e.source, e.ready, e.serving, e.terminating, e.local)).collect();
    assert_eq!(
        listed,
        [
            ("pod x/no-conditions", true, true, false, true),
            ("pod x/ready", true, true, false, true),
            ("pod x/not-ready", false, false, false, true),
            ("pod x/scheduled-only", false, false, false, true),
            ("pod x/terminating", false, true, true, true),
            ("pod x/remote", true, true, false, false),
        ]
    );
    assert_eq!(addrs(&fe(&c, "10.96.0.70", 80, TCP).internal), ["10.244.0.10:80", "10.244.0.11:80", "10.244.1.18:80"]);
}

#[test]
fn terminating_pods_serve_only_when_nothing_is_ready() {
    let deleting = ", deletionTimestamp: '2024-01-01T00:00:00Z'";
    let not_ready = ", conditions: [{type: Ready, status: 'False'}]";
    let ports = "[{containerPort: 80}]";
    let svc = service("x", "s", "{selector: {app: web}, clusterIP: 10.96.0.71, ports: [{port: 80}]}");
    let yaml = [
        svc.clone(),
        pod("x", "old", "{app: web}", "10.244.0.10", "", ports, deleting, ""),
        pod("x", "old-unready", "{app: web}", "10.244.0.11", "", ports, deleting, not_ready),
    ]
    .concat();
    let c = compile(&yaml);
    assert_eq!(addrs(&fe(&c, "10.96.0.71", 80, TCP).internal), ["10.244.0.10:80"]);
    let c = compile(&[yaml, pod("x", "new", "{app: web}", "10.244.0.12", "", ports, "", "")].concat());
    assert_eq!(addrs(&fe(&c, "10.96.0.71", 80, TCP).internal), ["10.244.0.12:80"]);
}

#[test]
fn publish_not_ready_addresses_marks_every_pod_ready() {
    let not_ready = ", conditions: [{type: Ready, status: 'False'}]";
    let yaml = [
        service(
            "x",
            "s",
            "{selector: {app: web}, clusterIP: 10.96.0.72, publishNotReadyAddresses: true, ports: [{port: 80}]}",
        ),
        pod("x", "a", "{app: web}", "10.244.0.10", "", "[]", "", not_ready),
        pod("x", "b", "{app: web}", "10.244.0.11", "", "[]", "", ""),
    ]
    .concat();
    let c = compile(&yaml);
    assert_eq!(addrs(&fe(&c, "10.96.0.72", 80, TCP).internal), ["10.244.0.10:80", "10.244.0.11:80"]);
}

#[test]
fn services_without_selector_or_slices_have_no_endpoints() {
    let yaml = [
        service("x", "s", "{clusterIP: 10.96.0.73, ports: [{port: 80}]}"),
        service("x", "e", "{clusterIP: 10.96.0.74, selector: {}, ports: [{port: 80}]}"),
        lab_pod("x", "a", "10.244.0.10", ""),
    ]
    .concat();
    let c = compile(&yaml);
    for a in ["10.96.0.73", "10.96.0.74"] {
        let f = fe(&c, a, 80, TCP);
        assert!(f.internal.backends.is_empty() && f.internal.on_empty == OnEmpty::Reject);
    }
    assert!(c.views.iter().all(|v| v.endpoints_from == "none"));
}

// ---------------------------------------------------------------------------------------------
// Traffic policies

const LOCAL_AND_REMOTE: &str =
    "[{addresses: [10.244.0.10], nodeName: node-1}, {addresses: [10.244.1.10], nodeName: node-2}]";
const REMOTE_ONLY: &str = "[{addresses: [10.244.1.10], nodeName: node-2}]";

fn policy_case(policies: &str, endpoints: &str) -> CompiledServices {
    let spec = format!(
        "{{type: NodePort, clusterIP: 10.96.0.80, externalIPs: [192.0.2.80], {policies} ports: [{{port: 80, nodePort: 30080}}]}}"
    );
    let yaml = [service("x", "s", &spec), slice("x", "s-1", "s", "[{port: 8080}]", endpoints)].concat();
    let c = compile(&yaml);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    c
}

#[test]
fn external_traffic_policy_cluster_masquerades_all_endpoints() {
    let c = policy_case("", LOCAL_AND_REMOTE);
    for (a, p) in [(NODE_IP, 30080), ("192.0.2.80", 80)] {
        let f = fe(&c, a, p, TCP);
        assert_eq!(addrs(&f.external), ["10.244.0.10:8080", "10.244.1.10:8080"]);
        assert!(f.external.masquerade && f.internal.masquerade);
        assert_eq!(addrs(&f.internal), addrs(&f.external));
    }
}

#[test]
fn external_traffic_policy_local() {
    // Local endpoints: only they serve external traffic, source preserved.
    let c = policy_case("externalTrafficPolicy: Local,", LOCAL_AND_REMOTE);
    for (a, p) in [(NODE_IP, 30080), ("192.0.2.80", 80)] {
        let f = fe(&c, a, p, TCP);
        assert_eq!(addrs(&f.external), ["10.244.0.10:8080"]);
        assert!(!f.external.masquerade);
        // Pods and the node reaching this address use every endpoint, not masqueraded.
        assert_eq!(addrs(&f.internal), ["10.244.0.10:8080", "10.244.1.10:8080"]);
        assert!(!f.internal.masquerade);
    }
    // The ClusterIP is not affected by externalTrafficPolicy.
    let f = fe(&c, "10.96.0.80", 80, TCP);
    assert_eq!(addrs(&f.internal).len(), 2);
    assert_eq!(addrs(&f.external).len(), 2);
    // Endpoints elsewhere only: drop.
    let c = policy_case("externalTrafficPolicy: Local,", REMOTE_ONLY);
    let f = fe(&c, NODE_IP, 30080, TCP);
    assert!(f.external.backends.is_empty());
    assert_eq!(f.external.on_empty, OnEmpty::Drop);
    assert_eq!(addrs(&f.internal), ["10.244.1.10:8080"]);
    // No endpoints at all: reject.
    let c = policy_case("externalTrafficPolicy: Local,", "[]");
    let f = fe(&c, NODE_IP, 30080, TCP);
    assert_eq!((f.external.on_empty, f.internal.on_empty), (OnEmpty::Reject, OnEmpty::Reject));
    // Only unusable endpoints count as none.
    let c = policy_case(
        "externalTrafficPolicy: Local,",
        "[{addresses: [10.244.1.10], nodeName: node-2, conditions: {ready: false}}]",
    );
    assert_eq!(fe(&c, NODE_IP, 30080, TCP).external.on_empty, OnEmpty::Reject);
}

#[test]
fn local_set_falls_back_to_local_terminating_endpoints() {
    // kube-proxy: a node with no local ready endpoint but a local serving+terminating one uses
    // it for Local traffic even while endpoints elsewhere are ready.
    let eps =
        "[{addresses: [10.244.0.10], nodeName: node-1, conditions: {ready: false, serving: true, terminating: true}}, \
               {addresses: [10.244.1.10], nodeName: node-2}]";
    let c = policy_case("externalTrafficPolicy: Local,", eps);
    let f = fe(&c, NODE_IP, 30080, TCP);
    assert_eq!(addrs(&f.external), ["10.244.0.10:8080"]);
    assert_eq!(addrs(&f.internal), ["10.244.1.10:8080"]);
}

#[test]
fn internal_traffic_policy_local() {
    let c = policy_case("internalTrafficPolicy: Local,", LOCAL_AND_REMOTE);
    let f = fe(&c, "10.96.0.80", 80, TCP);
    assert_eq!(addrs(&f.internal), ["10.244.0.10:8080"]);
    assert!(!f.internal.masquerade);
    assert_eq!(addrs(&f.external), ["10.244.0.10:8080"]);
    assert!(f.external.masquerade);
    // NodePort and external IPs keep every endpoint.
    assert_eq!(addrs(&fe(&c, NODE_IP, 30080, TCP).internal).len(), 2);
    assert_eq!(addrs(&fe(&c, "192.0.2.80", 80, TCP).external).len(), 2);
    let c = policy_case("internalTrafficPolicy: Local,", REMOTE_ONLY);
    let f = fe(&c, "10.96.0.80", 80, TCP);
    assert!(f.internal.backends.is_empty());
    assert_eq!((f.internal.on_empty, f.external.on_empty), (OnEmpty::Drop, OnEmpty::Drop));
    let c = policy_case("internalTrafficPolicy: Local,", "[]");
    assert_eq!(fe(&c, "10.96.0.80", 80, TCP).internal.on_empty, OnEmpty::Reject);
}

#[test]
fn session_affinity() {
    let cases: &[(&str, Option<u32>)] = &[
        ("", None),
        ("sessionAffinity: None,", None),
        ("sessionAffinity: ClientIP,", Some(10_800)),
        ("sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {}},", Some(10_800)),
        ("sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}},", Some(60)),
        ("sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 86400}},", Some(86_400)),
    ];
    for (extra, want) in cases {
        let c = policy_case(extra, LOCAL_AND_REMOTE);
        assert!(c.tables.frontends.iter().all(|f| f.affinity_timeout_s == *want), "{extra}");
        assert!(c.views.iter().all(|v| v.affinity_timeout_s == *want), "{extra}");
    }
}

// ---------------------------------------------------------------------------------------------
// Allocation

fn svc_ip(c: &CompiledServices, name: &str) -> Ipv4Addr {
    c.views.iter().find(|v| v.service == name && v.kind == FrontendKind::ClusterIp).map(|v| v.ip).expect(name)
}

fn svc_node_port(c: &CompiledServices, name: &str, port: u16) -> u16 {
    let v = c
        .views
        .iter()
        .find(|v| v.service == name && v.kind == FrontendKind::NodePort && v.name.ends_with(&format!(":p{port}")));
    v.map_or_else(|| panic!("{name} p{port}: {:?}", c.views), |v| v.port)
}

#[test]
fn cluster_ips_are_allocated_from_the_dynamic_band_and_stay() {
    let mut state = ServiceState::default();
    let b = service("x", "b", "{ports: [{port: 80}]}");
    let d = service("x", "d", "{ports: [{port: 80}]}");
    let c = compile_in(&mut state, &[b.clone(), d.clone()].concat());
    assert_eq!((svc_ip(&c, "x/b"), svc_ip(&c, "x/d")), (ip("10.96.1.0"), ip("10.96.1.1")));
    assert_eq!(state.allocated_cluster_ip("x/b"), Some(ip("10.96.1.0")));
    // A Service that sorts first does not renumber the others; a hand-set IP is never handed out.
    let a = service("x", "a", "{ports: [{port: 80}]}");
    let e = service("x", "e", "{clusterIP: 10.96.1.3, ports: [{port: 80}]}");
    let f = service("x", "f", "{ports: [{port: 80}]}");
    let c = compile_in(&mut state, &[a.clone(), b.clone(), d.clone(), e.clone(), f.clone()].concat());
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let got: Vec<Ipv4Addr> = ["x/a", "x/b", "x/d", "x/e", "x/f"].iter().map(|s| svc_ip(&c, s)).collect();
    assert_eq!(got, [ip("10.96.1.2"), ip("10.96.1.0"), ip("10.96.1.1"), ip("10.96.1.3"), ip("10.96.1.4")]);
    // Recompiling the same view changes nothing.
    let again = compile_in(&mut state, &[a.clone(), b.clone(), d.clone(), e.clone(), f.clone()].concat());
    assert_eq!(again.views, c.views);
    // A removed Service frees its address, which goes to the next Service that needs one.
    let c = compile_in(&mut state, &[a.clone(), d.clone(), e.clone(), f.clone()].concat());
    assert_eq!(svc_ip(&c, "x/d"), ip("10.96.1.1"));
    assert_eq!(state.allocated_cluster_ip("x/b"), None);
    let g = service("x", "g", "{ports: [{port: 80}]}");
    let c = compile_in(&mut state, &[a, d, e, f, g].concat());
    assert_eq!(svc_ip(&c, "x/g"), ip("10.96.1.0"));
}

#[test]
fn a_hand_set_cluster_ip_takes_an_allocated_one_over() {
    let mut state = ServiceState::default();
    let b = service("x", "b", "{ports: [{port: 80}]}");
    compile_in(&mut state, &b);
    assert_eq!(state.allocated_cluster_ip("x/b"), Some(ip("10.96.1.0")));
    let c = compile_in(&mut state, &[b, service("x", "c", "{clusterIP: 10.96.1.0, ports: [{port: 80}]}")].concat());
    assert_eq!(svc_ip(&c, "x/c"), ip("10.96.1.0"));
    assert_eq!(svc_ip(&c, "x/b"), ip("10.96.1.1"));
    assert!(has_problem(
        &c,
        "Service x/b: its allocated ClusterIP 10.96.1.0 is now Service x/c's clusterIP; allocated 10.96.1.1 instead"
    ));
}

#[test]
fn service_cidr_is_a_parameter() {
    let mut state = ServiceState::new(ServiceConfig {
        service_cidrs: vec!["10.100.0.0/24".parse().unwrap()],
        ..Default::default()
    });
    let c = compile_in(&mut state, &service("x", "a", "{ports: [{port: 80}]}"));
    assert_eq!(svc_ip(&c, "x/a"), ip("10.100.0.16"));
    assert_eq!(c.tables.service_cidrs, vec![(u32::from(ip("10.100.0.0")), 24)]);
    let c = compile_in(&mut state, &service("x", "b", "{clusterIP: 10.96.0.10, ports: [{port: 80}]}"));
    assert!(has_problem(&c, "not a usable address of the Service CIDR (10.100.0.0/24); proxied all the same"));
    // Outside the ranges this switch knows, the API server's choice is proxied all the same.
    assert_eq!(svc_ip(&c, "x/b"), ip("10.96.0.10"));
    assert!(c.tables.cluster_ips.contains(&u32::from(ip("10.96.0.10"))));
    // The dataplane knows it for a Service address by the ranges: a /32 of its own.
    assert_eq!(c.tables.service_cidrs, vec![(u32::from(ip("10.100.0.0")), 24), (u32::from(ip("10.96.0.10")), 32)]);
    // Exhaustion is a problem, not a panic.
    let mut state = ServiceState::new(ServiceConfig {
        service_cidrs: vec!["10.100.0.0/30".parse().unwrap()],
        ..Default::default()
    });
    let yaml: String = (0..3).map(|i| service("x", &format!("s{i}"), "{ports: [{port: 80}]}")).collect();
    let c = compile_in(&mut state, &yaml);
    assert_eq!(c.tables.frontends.len(), 2);
    assert!(has_problem(&c, "Service x/s2: the Service CIDR has no free ClusterIP; Service skipped"));
}

#[test]
fn node_ports_are_allocated_and_stay() {
    let mut state = ServiceState::default();
    let np = |name: &str, extra: &str| {
        service(
            "x",
            name,
            &format!("{{type: NodePort, ports: [{{name: p80, port: 80{extra}}}, {{name: p81, port: 81}}]}}"),
        )
    };
    let b = np("b", "");
    let c = compile_in(&mut state, &b);
    assert_eq!((svc_node_port(&c, "x/b", 80), svc_node_port(&c, "x/b", 81)), (30086, 30087));
    let a = np("a", ", nodePort: 30088");
    let d = np("d", "");
    let c = compile_in(&mut state, &[a.clone(), b.clone(), d.clone()].concat());
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!((svc_node_port(&c, "x/a", 80), svc_node_port(&c, "x/a", 81)), (30088, 30089));
    assert_eq!((svc_node_port(&c, "x/b", 80), svc_node_port(&c, "x/b", 81)), (30086, 30087));
    assert_eq!((svc_node_port(&c, "x/d", 80), svc_node_port(&c, "x/d", 81)), (30090, 30091));
    assert_eq!(state.allocated_node_port("x/d", 81), Some(30091));
    // Switching to ClusterIP releases them.
    let c = compile_in(
        &mut state,
        &[a, service("x", "b", "{ports: [{name: p80, port: 80}, {name: p81, port: 81}]}"), d].concat(),
    );
    assert!(c.views.iter().all(|v| v.service != "x/b" || v.kind == FrontendKind::ClusterIp));
    assert_eq!(state.allocated_node_port("x/b", 80), None);
}

#[test]
fn ports_with_one_number_share_a_node_port() {
    let spec = "{type: NodePort, clusterIP: 10.96.0.90, ports: [{name: dns-tcp, port: 53}, {name: dns-udp, port: 53, protocol: UDP}]}";
    let c = compile(&service("x", "dns", spec));
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    fe(&c, NODE_IP, 30086, TCP);
    fe(&c, NODE_IP, 30086, UDP);
    let spec = "{type: NodePort, clusterIP: 10.96.0.90, ports: [{name: dns-tcp, port: 53}, {name: dns-udp, port: 53, protocol: UDP, nodePort: 30053}]}";
    let c = compile(&service("x", "dns", spec));
    fe(&c, NODE_IP, 30053, TCP);
    fe(&c, NODE_IP, 30053, UDP);
}

#[test]
fn conflicts_skip_the_later_service() {
    let yaml = [
        service("x", "a", "{clusterIP: 10.96.0.10, ports: [{port: 80}]}"),
        service("x", "b", "{clusterIP: 10.96.0.10, ports: [{port: 81}]}"),
        service("y", "c", "{type: NodePort, clusterIP: 10.96.0.11, ports: [{port: 80, nodePort: 30000}]}"),
        // Another Service may not take the number, whatever the protocol (one allocator).
        service(
            "y",
            "d",
            "{type: NodePort, clusterIP: 10.96.0.12, ports: [{port: 53, protocol: UDP, nodePort: 30000}]}",
        ),
        // Same externalIP and port twice: the later frontend alone is skipped.
        service("z", "e", "{clusterIP: 10.96.0.13, externalIPs: [192.0.2.1], ports: [{port: 80}]}"),
        service("z", "f", "{clusterIP: 10.96.0.14, externalIPs: [192.0.2.1], ports: [{port: 80}]}"),
    ]
    .concat();
    let c = compile(&yaml);
    assert!(
        has_problem(&c, "Service x/b: clusterIP 10.96.0.10 is already Service x/a's; Service skipped"),
        "{:?}",
        c.problems
    );
    assert!(
        has_problem(&c, "Service y/d: nodePort 30000 is already Service y/c's; Service skipped"),
        "{:?}",
        c.problems
    );
    assert!(
        has_problem(&c, "Service z/f: 192.0.2.1:80/TCP is already a frontend of z/e; this one skipped"),
        "{:?}",
        c.problems
    );
    assert_eq!(c.problems.len(), 3);
    assert!(c.tables.frontend(ip("10.96.0.10"), 81, TCP).is_none());
    assert!(c.tables.frontend(ip("10.96.0.12"), 53, UDP).is_none());
    assert_eq!(fe(&c, "192.0.2.1", 80, TCP).name, "z/e");
    fe(&c, "10.96.0.14", 80, TCP);
}

// ---------------------------------------------------------------------------------------------
// Ids

#[test]
fn service_ids_are_stable_and_never_reused() {
    let mut state = ServiceState::default();
    let a = service("x", "a", "{clusterIP: 10.96.0.10, ports: [{port: 80}]}");
    let b = service("x", "b", "{clusterIP: 10.96.0.11, ports: [{port: 80}]}");
    let c0 = compile_in(&mut state, &[a.clone(), b.clone()].concat());
    let id_b = fe(&c0, "10.96.0.11", 80, TCP).service_id;
    let c1 = compile_in(&mut state, &[service("w", "new", "{ports: [{port: 80}]}"), a.clone(), b.clone()].concat());
    assert_eq!(fe(&c1, "10.96.0.11", 80, TCP).service_id, id_b);
    let id_a = fe(&c1, "10.96.0.10", 80, TCP).service_id;
    compile_in(&mut state, &b);
    let c3 = compile_in(&mut state, &[a, b].concat());
    let new_a = fe(&c3, "10.96.0.10", 80, TCP).service_id;
    assert!(new_a != id_a && new_a != id_b, "a re-created Service gets a fresh id");
}

fn ids_by_address(c: &CompiledServices) -> BTreeMap<String, u32> {
    c.views
        .iter()
        .flat_map(|v| v.endpoints.iter().map(|e| (format!("{} {}", v.name, e.address()), e.endpoint_id)))
        .collect()
}

#[test]
fn endpoint_ids_are_stable_and_removed_ones_are_listed() {
    let mut state = ServiceState::default();
    let svc = service("x", "s", "{selector: {app: web}, clusterIP: 10.96.0.10, ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]}");
    let a = lab_pod("x", "a", "10.244.0.10", "");
    let b = lab_pod("x", "b", "10.244.0.11", "");
    let c0 = compile_in(&mut state, &[svc.clone(), a.clone(), b.clone()].concat());
    assert!(state.removed_endpoints().is_empty());
    let ids0 = ids_by_address(&c0);
    assert_eq!(ids0.len(), 4);
    assert_eq!(ids0.values().collect::<BTreeSet<_>>().len(), 4, "one id per Service port and endpoint");
    // b goes: its two ids are reported, a's stay.
    let c1 = compile_in(&mut state, &[svc.clone(), a.clone()].concat());
    let ids1 = ids_by_address(&c1);
    for (k, id) in &ids1 {
        assert_eq!(ids0[k], *id, "{k}");
    }
    let want: Vec<u32> = vec![ids0["x/s:dns 10.244.0.11:53"], ids0["x/s:http 10.244.0.11:80"]];
    let mut got = state.removed_endpoints().to_vec();
    got.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got, want_sorted);
    assert_eq!(removed_endpoints(&c0, &c1), want_sorted);
    // Nothing changes: nothing removed.
    compile_in(&mut state, &[svc.clone(), a.clone()].concat());
    assert!(state.removed_endpoints().is_empty());
    // b comes back with new ids.
    let c2 = compile_in(&mut state, &[svc.clone(), a.clone(), b.clone()].concat());
    let ids2 = ids_by_address(&c2);
    assert!(!want.contains(&ids2["x/s:http 10.244.0.11:80"]));
    // a turns not ready: out of every set (reported) but listed, so it keeps its id.
    let a_unready = pod(
        "x",
        "a",
        "{pod: a, app: web}",
        "10.244.0.10",
        "",
        "[{name: http, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]",
        "",
        ", conditions: [{type: Ready, status: 'False'}]",
    );
    let c3 = compile_in(&mut state, &[svc.clone(), a_unready, b.clone()].concat());
    let mut removed = state.removed_endpoints().to_vec();
    removed.sort();
    let mut want = vec![ids2["x/s:http 10.244.0.10:80"], ids2["x/s:dns 10.244.0.10:53"]];
    want.sort();
    assert_eq!(removed, want);
    assert_eq!(ids_by_address(&c3), ids2);
    let c4 = compile_in(&mut state, &[svc, a, b].concat());
    assert_eq!(ids_by_address(&c4), ids2);
    assert!(state.removed_endpoints().is_empty());
}

#[test]
fn a_removed_service_reports_its_endpoints() {
    let mut state = ServiceState::default();
    let yaml = [service("x", "web", WEB), lab_pod("x", "a", "10.244.0.10", "")].concat();
    let c0 = compile_in(&mut state, &yaml);
    let id = c0.tables.frontends[0].internal.backends[0].endpoint_id;
    compile_in(&mut state, &lab_pod("x", "a", "10.244.0.10", ""));
    assert_eq!(state.removed_endpoints(), [id]);
    // The same endpoint behind two Services has two ids: one can go while the other stays.
    let two = [
        service("x", "web", WEB),
        service(
            "x",
            "web2",
            "{selector: {app: web}, clusterIP: 10.96.0.21, ports: [{name: http, port: 80, targetPort: http}]}",
        ),
        lab_pod("x", "a", "10.244.0.10", ""),
    ]
    .concat();
    let c = compile_in(&mut state, &two);
    let ids: BTreeSet<u32> = c.endpoint_ids();
    assert_eq!(ids.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Views

#[test]
fn views_describe_each_frontend() {
    let spec = "{type: NodePort, selector: {app: web}, clusterIP: 10.96.0.20, externalTrafficPolicy: Local, \
                ports: [{name: http, port: 80, targetPort: http, nodePort: 30080}]}";
    let yaml =
        [service("x", "web", spec), lab_pod("x", "a", "10.244.0.10", ""), lab_pod("x", "b", "10.244.1.11", "node-2")]
            .concat();
    let c = compile(&yaml);
    assert_eq!(c.views.len(), c.tables.frontends.len());
    let np = c.views.iter().find(|v| v.kind == FrontendKind::NodePort).unwrap();
    assert_eq!(np.frontend, format!("{NODE_IP}:30080/tcp"));
    assert_eq!((np.service_type, np.external_traffic_policy), (ServiceType::NodePort, TrafficPolicy::Local));
    assert_eq!(np.target_port, "http");
    let used: Vec<(String, bool, bool)> =
        np.endpoints.iter().map(|e| (e.address().as_str().to_owned(), e.internal, e.external)).collect();
    assert_eq!(used, [("10.244.0.10:80".to_owned(), true, true), ("10.244.1.11:80".to_owned(), true, false)]);
    assert!(np.external.local_only && !np.internal.local_only);
    let json = serde_json::to_value(&c.views).unwrap();
    assert_eq!(json[1]["kind"], "nodeport");
    assert_eq!(json[1]["external"]["on_empty"], "drop");
    assert_eq!(json[1]["external_traffic_policy"], "Local");
    assert_eq!(json[1]["endpoints"][0]["node"], "node-1");
    assert_eq!(json[1]["endpoints"][0]["address"], "10.244.0.10:80", "the address is written from the endpoint's");
    assert_eq!(json[0]["protocol"], "tcp");
}

#[test]
fn service_ranges_come_from_service_cidr_objects_else_from_the_flag() {
    let configured: Vec<Ipv4Net> = vec!["10.96.0.0/12".parse().unwrap()];
    assert_eq!(service_ranges(&load(""), &configured), configured);
    let m = load(
        "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\n\
         spec: {cidrs: [10.96.0.0/12, 'fd00:10:96::/112']}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: extra}\n\
         spec: {cidrs: [10.200.0.1/16, 10.96.0.0/12]}\n",
    );
    let want: Vec<Ipv4Net> = vec!["10.200.0.0/16".parse().unwrap(), "10.96.0.0/12".parse().unwrap()];
    assert_eq!(service_ranges(&m, &configured), want, "IPv4 ones, in name order, each once, as networks");
    // A new range is a full compile with the allocations and ids kept.
    let mut state = ServiceState::default();
    let yaml = service("x", "a", "{clusterIP: 10.200.0.10, ports: [{port: 80}]}");
    let c = compile_in(&mut state, &yaml);
    assert!(has_problem(&c, "proxied all the same"));
    let id = state.service_id("x/a");
    assert!(state.set_service_cidrs(want.clone()));
    assert!(!state.set_service_cidrs(want.clone()));
    let c = compile_services_full(&ServiceInputs { manifests: &load(&yaml), node: &node(), all_pods: &[] }, &mut state);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.tables.service_cidrs, vec![(u32::from(ip("10.200.0.0")), 16), (u32::from(ip("10.96.0.0")), 12)]);
    assert_eq!(state.service_id("x/a"), id);
}

#[test]
fn udp_flows_are_flushed_when_their_endpoint_stops_serving_not_when_it_terminates() {
    // kube-proxy (pkg/proxy/conntrack/cleanup.go): UDP entries go when their endpoint stops
    // serving. A terminating endpoint that still serves is chosen for no new flow while others
    // are ready, but its flows go on.
    let svc = service("x", "dns", "{clusterIP: 10.96.0.53, ports: [{name: dns, port: 53, protocol: UDP}]}");
    let eps = |a_conds: &str| {
        slice(
            "x",
            "dns-1",
            "dns",
            "[{name: dns, port: 5353, protocol: UDP}]",
            &format!("[{{addresses: [10.244.0.10]{a_conds}}}, {{addresses: [10.244.0.11]}}]"),
        )
    };
    let mut state = ServiceState::default();
    let c0 = compile_in(&mut state, &[svc.clone(), eps("")].concat());
    let id_a = ids_by_address(&c0)["x/dns:dns 10.244.0.10:5353"];
    // a terminates but still serves: out of the set, flows kept.
    let c1 = compile_in(
        &mut state,
        &[svc.clone(), eps(", conditions: {ready: false, serving: true, terminating: true}")].concat(),
    );
    assert_eq!(addrs(&fe(&c1, "10.96.0.53", 53, UDP).internal), ["10.244.0.11:5353"]);
    assert!(state.removed_endpoints().is_empty(), "a serving endpoint keeps its flows");
    // a stops serving: its flows go.
    compile_in(
        &mut state,
        &[svc.clone(), eps(", conditions: {ready: false, serving: false, terminating: true}")].concat(),
    );
    assert_eq!(state.removed_endpoints(), [id_a]);
    // Same rule when the endpoint is simply removed after terminating.
    compile_in(&mut state, &[svc.clone(), eps(", conditions: {ready: false, serving: true, terminating: true}")].concat());
    assert!(state.removed_endpoints().is_empty());
    let id_a2 = ids_by_address(&compile_in(&mut state, &[svc.clone(), eps("")].concat()))["x/dns:dns 10.244.0.10:5353"];
    assert_eq!(id_a2, id_a, "still listed all along: same id");
    compile_in(&mut state, &[svc, slice("x", "dns-1", "dns", "[{name: dns, port: 5353, protocol: UDP}]", "[{addresses: [10.244.0.11]}]")].concat());
    assert_eq!(state.removed_endpoints(), [id_a]);
}

// ---------------------------------------------------------------------------------------------
// loadBalancerSourceRanges and topology

#[test]
fn source_ranges_that_hold_the_node_also_admit_the_load_balancer_ips() {
    let lb = |ranges: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: lb, namespace: x}}\n\
             spec: {{type: LoadBalancer, selector: {{app: web}}, clusterIP: 10.96.0.40, loadBalancerSourceRanges: [{ranges}],\n\
             ports: [{{name: http, port: 80, targetPort: http}}]}}\n\
             status: {{loadBalancer: {{ingress: [{{ip: 192.0.2.10}}, {{ip: 192.0.2.12}}]}}}}\n---\n"
        )
    };
    // kube-proxy's allowFromNode: a node that routes an LB IP to itself sends from it.
    let c = compile(&lb("172.18.0.0/24"));
    let f = fe(&c, "192.0.2.10", 80, TCP);
    assert_eq!(
        f.source_ranges,
        vec![(u32::from(ip("172.18.0.0")), 24), (u32::from(ip("192.0.2.10")), 32), (u32::from(ip("192.0.2.12")), 32)]
    );
    assert!(f.source_allowed(ip("192.0.2.12")) && f.source_allowed(ip(NODE_IP)) && !f.source_allowed(ip("192.0.2.11")));
    let c = compile(&lb("198.51.100.0/24"));
    assert_eq!(fe(&c, "192.0.2.12", 80, TCP).source_ranges, vec![(u32::from(ip("198.51.100.0")), 24)]);
}

fn zone_node(name: &str, zone: &str) -> String {
    let labels = if zone.is_empty() { String::new() } else { format!(", labels: {{topology.kubernetes.io/zone: {zone}}}") };
    format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}{labels}}}\n---\n")
}

#[test]
fn slice_hints_steer_the_cluster_set_to_this_nodes_zone_and_node() {
    let svc = service("x", "web", "{clusterIP: 10.96.0.20, type: NodePort, ports: [{name: http, port: 80, nodePort: 30080}]}");
    let eps = |hints: [&str; 3]| {
        let e = |i: usize, node: &str| {
            format!("{{addresses: [10.244.{i}.10], nodeName: {node}{}}}", if hints[i].is_empty() { String::new() } else { format!(", hints: {}", hints[i]) })
        };
        slice("x", "web-1", "web", "[{name: http, port: 8080}]", &format!("[{}, {}, {}]", e(0, "node-1"), e(1, "node-2"), e(2, "node-3")))
    };
    let all = ["10.244.0.10:8080", "10.244.1.10:8080", "10.244.2.10:8080"];
    let zones = "{forZones: [{name: zone-a}]}";
    let zone_b = "{forZones: [{name: zone-b}]}";
    let cases: [(&str, [&str; 3], &str, &[&str]); 6] = [
        ("zone hints, node in zone-b", [zones, zone_b, zone_b], "zone-b", &all[1..]),
        ("zone hints, node in zone-a", [zones, zone_b, zone_b], "zone-a", &all[..1]),
        ("zone hints, node without a zone", [zones, zone_b, zone_b], "", &all),
        ("one endpoint without hints", [zones, "", zone_b], "zone-b", &all),
        (
            "node hints for every endpoint, one for this node",
            [
                "{forZones: [{name: zone-a}], forNodes: [{name: node-1}]}",
                "{forZones: [{name: zone-b}], forNodes: [{name: node-2}]}",
                "{forZones: [{name: zone-b}], forNodes: [{name: node-3}]}",
            ],
            "zone-b",
            &all[..1],
        ),
        (
            "node hints for other nodes: the zone decides",
            [
                "{forZones: [{name: zone-a}], forNodes: [{name: node-9}]}",
                "{forZones: [{name: zone-b}], forNodes: [{name: node-2}]}",
                "{forZones: [{name: zone-b}], forNodes: [{name: node-3}]}",
            ],
            "zone-b",
            &all[1..],
        ),
    ];
    for (what, hints, zone, want) in cases {
        let c = compile(&[svc.clone(), eps(hints), zone_node("node-1", zone)].concat());
        assert!(c.problems.is_empty(), "{what}: {:?}", c.problems);
        for f in &c.tables.frontends {
            assert_eq!(addrs(&f.internal), want, "{what}: {} internal", f.name);
            assert_eq!(addrs(&f.external), want, "{what}: {} external", f.name);
        }
    }
}

#[test]
fn traffic_distribution_hints_selector_endpoints_as_the_endpointslice_controller() {
    let svc = |td: &str| service("x", "web", &format!("{{selector: {{app: web}}, clusterIP: 10.96.0.20, ports: [{{name: http, port: 80, targetPort: http}}]{td}}}"));
    let pods = [lab_pod("x", "a", "10.244.0.10", "node-1"), lab_pod("x", "b", "10.244.1.10", "node-2"), lab_pod("x", "c", "10.244.2.10", "node-3")].concat();
    let nodes = |z1: &str, z2: &str, z3: &str| [zone_node("node-1", z1), zone_node("node-2", z2), zone_node("node-3", z3)].concat();
    let all = ["10.244.0.10:80", "10.244.1.10:80", "10.244.2.10:80"];
    let cases: [(&str, &str, String, &[&str]); 7] = [
        ("no trafficDistribution", "", nodes("zone-a", "zone-a", "zone-b"), &all),
        ("PreferClose", ", trafficDistribution: PreferClose", nodes("zone-a", "zone-a", "zone-b"), &all[..2]),
        ("PreferSameZone", ", trafficDistribution: PreferSameZone", nodes("zone-b", "zone-a", "zone-b"), &["10.244.0.10:80", "10.244.2.10:80"]),
        ("PreferSameNode", ", trafficDistribution: PreferSameNode", nodes("zone-a", "zone-a", "zone-b"), &all[..1]),
        ("PreferSameNode without zones", ", trafficDistribution: PreferSameNode", nodes("", "", ""), &all[..1]),
        ("PreferClose, a node without a zone", ", trafficDistribution: PreferClose", nodes("zone-a", "", "zone-a"), &all),
        ("PreferClose, this node without a zone", ", trafficDistribution: PreferClose", nodes("", "zone-a", "zone-a"), &all),
    ];
    for (what, td, nodes, want) in cases {
        let c = compile(&[svc(td), pods.clone(), nodes].concat());
        assert!(c.problems.is_empty(), "{what}: {:?}", c.problems);
        assert_eq!(addrs(&fe(&c, "10.96.0.20", 80, TCP).internal), want, "{what}");
    }
    let c = compile(&[svc(", trafficDistribution: Nearby"), pods].concat());
    assert!(has_problem(&c, "trafficDistribution \"Nearby\" is not PreferClose"), "{:?}", c.problems);
    assert_eq!(addrs(&fe(&c, "10.96.0.20", 80, TCP).internal), all);
}

#[test]
fn a_zone_label_change_recompiles_the_services_it_steers() {
    let svc = service("x", "web", "{selector: {app: web}, clusterIP: 10.96.0.20, trafficDistribution: PreferClose, ports: [{name: http, port: 80, targetPort: http}]}");
    let pods = [lab_pod("x", "a", "10.244.0.10", "node-1"), lab_pod("x", "b", "10.244.1.10", "node-2")].concat();
    let mut state = ServiceState::default();
    let c = compile_in(&mut state, &[svc.clone(), pods.clone(), zone_node("node-1", "zone-a"), zone_node("node-2", "zone-b")].concat());
    assert_eq!(addrs(&fe(&c, "10.96.0.20", 80, TCP).internal), ["10.244.0.10:80"]);
    // The other node moves into this node's zone: its endpoint joins.
    let c = compile_in(&mut state, &[svc.clone(), pods.clone(), zone_node("node-1", "zone-a"), zone_node("node-2", "zone-a")].concat());
    assert_eq!(addrs(&fe(&c, "10.96.0.20", 80, TCP).internal), ["10.244.0.10:80", "10.244.1.10:80"]);
    // And back.
    let c = compile_in(&mut state, &[svc.clone(), pods.clone(), zone_node("node-1", "zone-a"), zone_node("node-2", "zone-b")].concat());
    assert_eq!(addrs(&fe(&c, "10.96.0.20", 80, TCP).internal), ["10.244.0.10:80"]);
    // This node loses its zone: its endpoint has no hint, so none is followed.
    let c = compile_in(&mut state, &[svc, pods, zone_node("node-1", ""), zone_node("node-2", "zone-b")].concat());
    assert_eq!(addrs(&fe(&c, "10.96.0.20", 80, TCP).internal), ["10.244.0.10:80", "10.244.1.10:80"]);
}
