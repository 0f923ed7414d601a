//! Topology-aware routing through the 3-node lab (examples/lab-3nodes: node-1..3, pods x/P,
//! y/P, z/P on each, P = a, b, c): zone labels on the lab's Node objects, EndpointSlice hints
//! and `trafficDistribution`, observed with real sockets (`lab probe`).
//!
//! Contract:
//! - As the other lab tests: root (else SKIPPED), one lab per machine ([`labkit::Hold`]), the
//!   lab torn down when the hold drops, also on failure.
//! - Nodes: node-1 in zone-a, node-2 and node-3 in zone-b. Endpoints: x/a (node-1), x/b
//!   (node-2), x/c (node-3). Each client's own node's switch picks the backend, so what a pod
//!   reaches shows what its node chose.
//! - A Service with the same endpoints and no topology spreads over all three (the control:
//!   steering below is the hints', not chance).
use std::collections::BTreeSet;

use serde_json::Value;

mod labkit;
use labkit::{ok, pod_ips, probe, Hold};

const NODES: &str = "\
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {topology.kubernetes.io/zone: zone-a}}
spec: {podCIDR: 10.244.0.0/24, podCIDRs: [10.244.0.0/24]}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}, {type: Hostname, address: node-1}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-2, labels: {topology.kubernetes.io/zone: zone-b}}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24]}
status: {addresses: [{type: InternalIP, address: 172.18.0.3}, {type: Hostname, address: node-2}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-3, labels: {topology.kubernetes.io/zone: zone-b}}
spec: {podCIDR: 10.244.2.0/24, podCIDRs: [10.244.2.0/24]}
status: {addresses: [{type: InternalIP, address: 172.18.0.4}, {type: Hostname, address: node-3}]}
";

/// Services over x/a, x/b, x/c (label app: web): without topology, with each
/// trafficDistribution, and one (`hinted`, no selector) whose EndpointSlice is written later.
fn services() -> String {
    let svc = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: x}}\nspec:\n  selector: {{app: web}}\n{extra}  \
             ports:\n  - {{name: http, port: 80, targetPort: 80, protocol: TCP}}\n---\n"
        )
    };
    [
        svc("spread", ""),
        svc("close", "  trafficDistribution: PreferClose\n"),
        svc("same-zone", "  trafficDistribution: PreferSameZone\n"),
        svc("same-node", "  trafficDistribution: PreferSameNode\n"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: hinted, namespace: x}\nspec:\n  ports:\n  - {name: http, port: 80, protocol: TCP}\n---\n"
            .to_string(),
    ]
    .concat()
}

/// The EndpointSlice of `hinted`: x/a hinted for zone-a, x/b and x/c for zone-b, each also for
/// its node when `nodes`.
fn hinted_slice(ips: &std::collections::BTreeMap<String, String>, nodes: bool) -> String {
    let mut y = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: hinted-1\n  namespace: x\n  labels: \
                 {kubernetes.io/service-name: hinted}\naddressType: IPv4\nports:\n  - {name: http, port: 80, protocol: TCP}\nendpoints:\n"
        .to_string();
    for (p, node, zone) in [("a", "node-1", "zone-a"), ("b", "node-2", "zone-b"), ("c", "node-3", "zone-b")] {
        let for_nodes = if nodes { format!(", forNodes: [{{name: {node}}}]") } else { String::new() };
        y.push_str(&format!(
            "  - addresses: [{}]\n    nodeName: {node}\n    zone: {zone}\n    hints: {{forZones: [{{name: {zone}}}]{for_nodes}}}\n",
            ips[&format!("x/{p}")]
        ));
    }
    y
}

/// The pods that answered `n` probes from `from` to `target` (all must connect).
fn answered(from: &str, target: &str, n: usize) -> BTreeSet<String> {
    let mut args = vec!["--from", from, "--to"];
    args.extend(std::iter::repeat_n(target, n));
    let r: Vec<Value> = probe(&args);
    assert_eq!(r.len(), n, "{r:?}");
    for x in &r {
        assert_eq!(x["result"], "connected", "{from} → {target}: {x}");
    }
    r.iter().map(|x| x["answered_by"].as_str().unwrap_or("?").to_string()).collect()
}

fn set(pods: &[&str]) -> BTreeSet<String> {
    pods.iter().map(|p| (*p).to_string()).collect()
}

#[test]
fn zone_labels_hints_and_traffic_distribution_steer_to_the_same_zone_and_node() {
    let Some(hold) = Hold::new("topology", "zone_labels_hints_and_traffic_distribution_steer", "lab-3nodes") else { return };
    hold.write("00-nodes.yaml", NODES);
    for (file, p) in [("pods-node-1.yaml", "a"), ("pods-node-2.yaml", "b"), ("pods-node-3.yaml", "c")] {
        hold.replace_labels(file, &format!("  name: {p}\n  namespace: x\n  labels:\n"), &[format!("pod: {p}"), "app: web".into()]);
    }
    hold.write("services.yaml", &services());
    ok(&["lab", "up", "--manifests", hold.dir()]);
    let ips = pod_ips();
    hold.write("slices.yaml", &hinted_slice(&ips, false));

    // 24 probes: a spread over three backends misses one with odds of about 3 in 10,000.
    const N: usize = 24;
    // Control: no topology, every endpoint from every node.
    assert_eq!(answered("y/a", "svc/x/spread:80", N), set(&["x/a", "x/b", "x/c"]), "spread from node-1");

    // Zone hints (an EndpointSlice's): node-1 (zone-a) keeps to x/a; node-2 (zone-b) to x/b, x/c.
    assert_eq!(answered("y/a", "svc/x/hinted:80", N), set(&["x/a"]), "hints from node-1");
    assert_eq!(answered("y/b", "svc/x/hinted:80", N), set(&["x/b", "x/c"]), "hints from node-2");

    // trafficDistribution over selector endpoints: the controller's hints, by the nodes' zones.
    for svc in ["close", "same-zone"] {
        let target = format!("svc/x/{svc}:80");
        assert_eq!(answered("z/a", &target, N), set(&["x/a"]), "{svc} from node-1");
        assert_eq!(answered("z/c", &target, N), set(&["x/b", "x/c"]), "{svc} from node-3");
    }
    assert_eq!(answered("z/b", "svc/x/same-node:80", N), set(&["x/b"]), "same-node from node-2");
    assert_eq!(answered("z/c", "svc/x/same-node:80", N), set(&["x/c"]), "same-node from node-3");

    // Node hints on the slice: each node keeps to its own endpoint.
    hold.write("slices.yaml", &hinted_slice(&ips, true));
    assert_eq!(answered("y/b", "svc/x/hinted:80", N), set(&["x/b"]), "node hints from node-2");
    assert_eq!(answered("y/a", "svc/x/hinted:80", N), set(&["x/a"]), "node hints from node-1");

    // A zone label changed live: node-1 joins zone-b, so PreferClose from it takes all three.
    hold.write("00-nodes.yaml", &NODES.replacen("zone: zone-a", "zone: zone-b", 1));
    assert_eq!(answered("z/a", "svc/x/close:80", N), set(&["x/a", "x/b", "x/c"]), "close from node-1 in zone-b");
}
