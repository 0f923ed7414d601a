//! Integration tests of the pod network across nodes (issue #11): the 3-node lab
//! (examples/lab-3nodes: node-1..3 with InternalIPs 172.18.0.2-4 on the underlay, pod CIDRs
//! 10.244.0-2.0/24, pods x/P, y/P, z/P on each, P = a, b, c), in both `--pod-network` modes.
//!
//! Contract:
//! - As the other lab tests: root (else SKIPPED), one lab per machine ([`labkit::Hold`]), the
//!   lab torn down when the hold drops.
//! - Every pod reaches every pod of every node with real sockets, TCP and UDP, and the server
//!   sees the client's own pod address (no NAT between pods), in `vxlan` and in `routed` mode.
//! - In `vxlan` mode: routes to the other nodes go through their tunnels (`show routes`), and a
//!   packet too big for the tunnel (a pod with MTU 1500, DF set) is answered with ICMP
//!   fragmentation-needed carrying the tunnel's MTU, which the pod's kernel then uses.
//! - A pod reaches a server on the underlay outside the cluster (`external`), which sees the
//!   pod's node's InternalIP (masqueraded), and the answer comes back to the pod; its pings
//!   (ICMP echo, masqueraded by identifier) are answered too.
//! - A node's own pod CIDR and InternalIP change while its switch runs (the Node registered
//!   again with a new address): the same switch process applies it, and its pods, its
//!   masquerade, its NodePorts and its node's own access to pods and Services follow.
use std::process::{Child, Command, Stdio};

use serde_json::Value;

mod labkit;
use labkit::{describe, ok, pod_ips, probe, Hold};

/// Pods by node: node-1 has x/a, y/a, z/a; node-2 the `b`s; node-3 the `c`s.
const NODES: [(&str, &str, &str); 3] = [("node-1", "172.18.0.2", "a"), ("node-2", "172.18.0.3", "b"), ("node-3", "172.18.0.4", "c")];
const EXTERNAL_IP: &str = "172.18.0.100";

fn all_pods() -> Vec<String> {
    let mut out = Vec::new();
    for (_, _, p) in NODES {
        for ns in ["x", "y", "z"] {
            out.push(format!("{ns}/{p}"));
        }
    }
    out
}

/// Every pod → every pod, TCP :80 and UDP :81: all connected, answered by the target, which saw
/// the client's own address.
fn full_matrix(mode: &str) {
    let pods = all_pods();
    let ips = pod_ips();
    let mut args: Vec<String> = vec!["--from".into()];
    args.extend(pods.iter().cloned());
    args.push("--to".into());
    for p in &pods {
        args.push(format!("pod/{p}:80"));
        args.push(format!("pod/{p}:81/udp"));
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = probe(&a);
    assert_eq!(r.len(), 9 * 18, "{mode}: {} results", r.len());
    let mut failures = Vec::new();
    for x in &r {
        let to = x["to"].as_str().unwrap();
        let want = to.trim_start_matches("pod/").split(':').next().unwrap();
        let from_ip = &ips[x["from"].as_str().unwrap()];
        let seen_ok = x["seen_client"].as_str().is_some_and(|s| s.starts_with(&format!("{from_ip}:")));
        if x["result"] != "connected" || x["answered_by"] != want || !seen_ok {
            failures.push(x.to_string());
        }
    }
    assert!(failures.is_empty(), "{mode}: {} of {} pairs failed:\n{}", failures.len(), r.len(), failures.join("\n"));
}

/// A pod server on `external` (the underlay, outside the cluster), killed on drop.
struct ExternalServer(Child);

impl ExternalServer {
    fn start() -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", "psl-external", labkit::LAB_BIN, "serve", "--pod", "world/external", "--tcp", "9000", "--udp", "9001"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the external server");
        std::thread::sleep(std::time::Duration::from_millis(300));
        Self(child)
    }
}

impl Drop for ExternalServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Each node's pods reach `external` masqueraded to their node's InternalIP, and get answers.
fn pods_reach_the_world_masqueraded(mode: &str) {
    let _server = ExternalServer::start();
    for (node, internal_ip, p) in NODES {
        let from = format!("x/{p}");
        let r = probe(&["--from", &from, "--to", &format!("{EXTERNAL_IP}:9000"), &format!("{EXTERNAL_IP}:9001/udp")]);
        for x in &r {
            assert_eq!(x["result"], "connected", "{mode}: {from} on {node} → external: {x}");
            assert_eq!(x["answered_by"], "world/external", "{mode}: {x}");
            let seen = x["seen_client"].as_str().unwrap();
            assert!(seen.starts_with(&format!("{internal_ip}:")), "{mode}: external saw {seen}, not {node}'s InternalIP {internal_ip}");
        }
    }
    // ICMP echo too, by identifier: `external` has no route to any pod, so only a ping
    // masqueraded to the node's address is answered.
    let routes = labkit::sh("ip", &["-n", "psl-external", "route", "show"]);
    assert!(!routes.contains("10.244."), "{mode}: external must not route to pods for this check: {routes}");
    for (node, _, p) in NODES {
        let from = format!("x/{p}");
        let o = labkit::podswitch(&["lab", "exec", &from, "--", "ping", "-c", "3", "-i", "0.2", "-W", "2", EXTERNAL_IP]);
        assert!(o.status.success(), "{mode}: ping {from} on {node} → external: {}", describe(&o));
    }
}

#[test]
fn vxlan_every_pod_reaches_every_pod_on_every_node() {
    let Some(hold) = Hold::new("crossnode", "vxlan_every_pod_reaches_every_pod", "lab-3nodes") else { return };
    ok(&["lab", "up", "--manifests", hold.dir(), "--pod-network", "vxlan"]);
    full_matrix("vxlan");

    // node-1's routes to the other nodes' pods and addresses go through their tunnels.
    let routes: Value = serde_json::from_str(&ok(&["show", "routes", "--json"])).unwrap();
    let tunnel_of = |prefix: &str| {
        routes["routes"].as_array().unwrap().iter().find(|r| r["prefix"] == prefix).map(|r| r["tunnel"]["remote"].clone())
    };
    assert_eq!(tunnel_of("10.244.1.0/24"), Some(Value::from("172.18.0.3")), "{routes}");
    assert_eq!(tunnel_of("10.244.2.0/24"), Some(Value::from("172.18.0.4")), "{routes}");
    assert_eq!(tunnel_of("172.18.0.4/32"), Some(Value::from("172.18.0.4")), "{routes}");

    // A pod whose MTU is 1500 sends a 1500-byte packet with DF across the tunnel: answered
    // with fragmentation-needed (MTU 1450) from the gateway; its kernel learns the path MTU.
    let st = labkit::state();
    let iface = st["pods"]["x/a"]["interface"].as_str().unwrap().to_string();
    ok(&["lab", "exec", "node-1", "--", "ip", "link", "set", &iface, "mtu", "1500"]);
    ok(&["lab", "exec", "x/a", "--", "ip", "link", "set", "eth0", "mtu", "1500"]);
    let target = pod_ips()["x/b"].clone();
    let o = labkit::podswitch(&["lab", "exec", "x/a", "--", "ping", "-M", "do", "-s", "1472", "-c", "1", "-W", "2", &target]);
    let out = describe(&o);
    assert!(out.contains("mtu = 1450") || out.contains("mtu=1450"), "no fragmentation-needed with MTU 1450: {out}");
    let route = ok(&["lab", "exec", "x/a", "--", "ip", "route", "get", &target]);
    assert!(route.contains("mtu 1450"), "the pod's kernel did not learn the path MTU: {route}");
    let o = labkit::podswitch(&["lab", "exec", "x/a", "--", "ping", "-M", "do", "-s", "1422", "-c", "1", "-W", "2", &target]);
    assert!(o.status.success(), "a packet that fits the tunnel: {}", describe(&o));
    let stats: Value = serde_json::from_str(&ok(&["show", "stats", "--json"])).unwrap();
    let fragn = stats["drops"].as_array().unwrap().iter().find(|d| d["reason"] == "fragmentation_needed").map(|d| d["count"].as_u64().unwrap());
    assert!(fragn.unwrap_or(0) >= 1, "{stats}");

    pods_reach_the_world_masqueraded("vxlan");
}

#[test]
fn routed_every_pod_reaches_every_pod_on_every_node() {
    let Some(hold) = Hold::new("crossnode", "routed_every_pod_reaches_every_pod", "lab-3nodes") else { return };
    ok(&["lab", "up", "--manifests", hold.dir(), "--pod-network", "routed"]);
    full_matrix("routed");
    // No tunnels: node-2's pods are reached at node-2's MAC on the uplink.
    let routes: Value = serde_json::from_str(&ok(&["show", "routes", "--json"])).unwrap();
    let r = routes["routes"].as_array().unwrap().iter().find(|r| r["prefix"] == "10.244.1.0/24").cloned().unwrap_or_default();
    assert_eq!(r["port"], "uplink", "{routes}");
    assert!(r.get("tunnel").is_none(), "{r}");
    let mac = ok(&["lab", "exec", "node-2", "--", "cat", "/sys/class/net/psw-uplink/address"]);
    assert_eq!(r["dst_mac"], mac.trim(), "{r}");
    pods_reach_the_world_masqueraded("routed");
}

/// Services whose endpoints are on node-2 only, a NetworkPolicy on node-2's pod, reached from
/// the other nodes' pods and from `external` through each node.
const SERVICES_AND_POLICY: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web-b, namespace: x}
spec:
  selector: {pod: b}
  ports:
  - {name: http, port: 80, targetPort: 80, protocol: TCP}
  - {name: dns, port: 81, targetPort: 81, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: np-cluster, namespace: x}
spec:
  type: NodePort
  externalTrafficPolicy: Cluster
  selector: {pod: b}
  ports:
  - {name: http, port: 80, targetPort: 80, nodePort: 30080, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata: {name: np-local, namespace: x}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {pod: b}
  ports:
  - {name: http, port: 80, targetPort: 80, nodePort: 30081, protocol: TCP}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-only-from-a, namespace: y}
spec:
  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: a}}
";

#[test]
fn services_and_network_policy_work_across_nodes() {
    let Some(hold) = Hold::new("crossnode", "services_and_network_policy_work_across_nodes", "lab-3nodes") else { return };
    hold.write("services.yaml", SERVICES_AND_POLICY);
    ok(&["lab", "up", "--manifests", hold.dir()]);
    let ips = pod_ips();

    // Pod → ClusterIP → a pod on another node: the server sees the client pod's own address.
    let r = probe(&["--from", "x/a", "z/c", "--to", "svc/x/web-b:80", "svc/x/web-b:81/udp"]);
    assert_eq!(r.len(), 4, "{r:?}");
    for x in &r {
        assert_eq!(x["result"], "connected", "{x}");
        assert_eq!(x["answered_by"], "x/b", "{x}");
        let from_ip = &ips[x["from"].as_str().unwrap()];
        assert!(x["seen_client"].as_str().unwrap().starts_with(&format!("{from_ip}:")), "source kept: {x}");
    }

    // NodePort from outside, externalTrafficPolicy Cluster, through every node: the endpoint
    // (on node-2) sees the address of the node the client went through (masqueraded, so the
    // reply returns through that node).
    for (node, ip, _) in NODES {
        let r = probe(&["--from", "external", "--to", &format!("{ip}:30080")]);
        assert_eq!(r[0]["result"], "connected", "eTP Cluster via {node}: {r:?}");
        assert_eq!(r[0]["answered_by"], "x/b", "{r:?}");
        assert!(r[0]["seen_client"].as_str().unwrap().starts_with(&format!("{ip}:")), "eTP Cluster via {node}: {r:?}");
    }
    // externalTrafficPolicy Local: node-2 (which has the endpoint) keeps the client's address;
    // the other nodes have no local endpoint and drop.
    let r = probe(&["--from", "external", "--to", "172.18.0.3:30081"]);
    assert_eq!(r[0]["result"], "connected", "{r:?}");
    assert!(r[0]["seen_client"].as_str().unwrap().starts_with(&format!("{EXTERNAL_IP}:")), "eTP Local keeps the client: {r:?}");
    let r = probe(&["--from", "external", "--timeout-ms", "700", "--to", "172.18.0.2:30081", "172.18.0.4:30081"]);
    assert!(r.iter().all(|x| x["result"] == "timeout"), "eTP Local without a local endpoint: {r:?}");

    // NetworkPolicy: y/c (node-3) admits only pods labelled pod=a of its namespace (y/a, on
    // node-1); y/b (node-2) and x/a (another namespace) are refused, across nodes too.
    let r = probe(&["--from", "y/a", "y/b", "x/a", "--timeout-ms", "700", "--to", "pod/y/c:80", "pod/y/c:81/udp"]);
    for x in &r {
        let want = if x["from"] == "y/a" { "connected" } else { "timeout" };
        assert_eq!(x["result"], want, "{x}");
    }
    // Egress from y/c is not restricted.
    let r = probe(&["--from", "y/c", "--to", "pod/y/b:80", "pod/x/a:81/udp"]);
    assert!(r.iter().all(|x| x["result"] == "connected"), "{r:?}");
    // The refusals were counted as policy drops (by the sending node's switch or y/c's).
    let denied: u64 = NODES
        .iter()
        .map(|(node, ..)| {
            let s: Value = serde_json::from_str(&ok(&["show", "stats", "--node", node, "--json"])).unwrap();
            s["drops"].as_array().unwrap().iter().filter(|d| d["reason"] == "policy_denied").map(|d| d["count"].as_u64().unwrap()).sum::<u64>()
        })
        .sum();
    assert!(denied >= 4, "policy_denied counted {denied} times for 4 refused probes (and their retries)");
}

const NODE_4: &str = "\
apiVersion: v1
kind: Node
metadata: {name: node-4}
spec: {podCIDR: 10.244.3.0/24, podCIDRs: [10.244.3.0/24]}
status: {addresses: [{type: InternalIP, address: 172.18.0.5}]}
";

const POD_ON_NODE_4: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: x, labels: {pod: d}}
spec:
  nodeName: node-4
  containers:
  - name: c
    image: i
    ports:
    - {containerPort: 80, protocol: TCP}
    - {containerPort: 81, protocol: UDP}
";

#[test]
fn a_node_added_and_removed_while_traffic_runs() {
    let Some(hold) = Hold::new("crossnode", "a_node_added_and_removed_while_traffic_runs", "lab-3nodes") else { return };
    ok(&["lab", "up", "--manifests", hold.dir()]);
    let ips = pod_ips();
    // Traffic between node-1 and node-2 for the whole test: 5 pings a second.
    let ping = Command::new(labkit::podswitch_bin())
        .args(["lab", "exec", "x/a", "--", "ping", "-n", "-q", "-i", "0.2", "-w", "40", &ips["x/b"]])
        .env_remove("PODSWITCH_LAB_NO_SWITCH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));

    // node-4 joins with a pod: every node reaches it, it reaches every node.
    hold.write("node-4.yaml", NODE_4);
    hold.write("pod-x-d.yaml", POD_ON_NODE_4);
    let r = probe(&["--from", "x/a", "y/b", "z/c", "--to", "pod/x/d:80", "pod/x/d:81/udp"]);
    assert!(r.iter().all(|x| x["result"] == "connected" && x["answered_by"] == "x/d"), "{r:?}");
    let r = probe(&["--from", "x/d", "--to", "pod/x/a:80", "pod/y/b:81/udp", "pod/z/c:80"]);
    assert!(r.iter().all(|x| x["result"] == "connected"), "{r:?}");
    let s: Value = serde_json::from_str(&ok(&["show", "status", "--node", "node-4", "--json"])).unwrap();
    assert_eq!(s["node"], "node-4", "{s}");
    let routes = ok(&["show", "routes", "--json"]);
    assert!(routes.contains("10.244.3.0/24"), "node-1 has no route to node-4's pods: {routes}");

    // node-4 leaves (its pod first, as a drain would): its namespace and switch go, the other
    // nodes drop its routes, and nothing else is disturbed.
    std::fs::remove_file(hold.dir.join("pod-x-d.yaml")).unwrap();
    let r = probe(&["--from", "x/a", "--to", "pod/x/b:80"]);
    assert_eq!(r[0]["result"], "connected", "{r:?}");
    std::fs::remove_file(hold.dir.join("node-4.yaml")).unwrap();
    let r = probe(&["--from", "y/b", "--to", "pod/z/c:80"]);
    assert_eq!(r[0]["result"], "connected", "{r:?}");
    assert!(!labkit::lab_namespaces().iter().any(|n| n.contains("node-4")), "{:?}", labkit::lab_namespaces());
    let mut routes = String::new();
    for _ in 0..50 {
        routes = ok(&["show", "routes", "--json"]);
        if !routes.contains("10.244.3.0/24") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!routes.contains("10.244.3.0/24"), "node-1 still routes node-4's pods: {routes}");

    // The traffic that ran through all of it lost nothing.
    let out = ping.wait_with_output().unwrap();
    let text = labkit::text(&out.stdout);
    assert!(text.contains(" 0% packet loss"), "pings between node-1 and node-2 were lost while node-4 came and went: {text}");
}

/// `00-nodes.yaml` of examples/lab-3nodes with node-2 registered again: pod CIDR
/// 10.244.5.0/24 (was 10.244.1.0/24), InternalIP 172.18.0.13 (was 172.18.0.3).
fn nodes_with_node_2_moved() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/lab-3nodes/00-nodes.yaml")).unwrap();
    assert!(text.contains("10.244.1.0/24") && text.contains("172.18.0.3\n"), "examples/lab-3nodes changed: {text}");
    text.replace("10.244.1.0/24", "10.244.5.0/24").replace("172.18.0.3\n", "172.18.0.13\n")
}

#[test]
fn a_nodes_own_pod_cidr_and_internal_ip_change_while_its_switch_runs() {
    let Some(hold) = Hold::new("crossnode", "a_nodes_own_pod_cidr_and_internal_ip_change", "lab-3nodes") else { return };
    hold.write("services.yaml", SERVICES_AND_POLICY);
    ok(&["lab", "up", "--manifests", hold.dir()]);
    let r = probe(&["--from", "external", "--to", "172.18.0.3:30080"]);
    assert_eq!(r[0]["result"], "connected", "before the change: {r:?}");
    let status = |node: &str| -> Value { serde_json::from_str(&ok(&["show", "status", "--node", node, "--json"])).unwrap() };
    let before = status("node-2");
    let t0 = std::time::Instant::now();

    hold.write("00-nodes.yaml", &nodes_with_node_2_moved());
    // The probe waits until the lab and every switch have applied the edit; the lab gives
    // node-2's pods addresses in the new pod CIDR.
    let r = probe(&["--from", "x/a", "--to", "pod/x/b:80"]);
    assert_eq!(r[0]["result"], "connected", "{r:?}");
    let ips = pod_ips();
    for p in ["x/b", "y/b", "z/b"] {
        assert!(ips[p].starts_with("10.244.5."), "{p} has {} after node-2's pod CIDR became 10.244.5.0/24", ips[p]);
    }

    // The same switch process took it in, without a refusal.
    let after = status("node-2");
    assert_eq!((after["pod_cidr"].as_str(), after["internal_ip"].as_str()), (Some("10.244.5.0/24"), Some("172.18.0.13")), "{after}");
    assert!(after["last_error"].is_null(), "{after}");
    let lived = after["uptime_s"].as_u64().unwrap();
    assert!(
        lived + 1 >= before["uptime_s"].as_u64().unwrap() + t0.elapsed().as_secs(),
        "node-2's switch was restarted: uptime {lived} s, {} s before the change plus {} s since",
        before["uptime_s"],
        t0.elapsed().as_secs()
    );

    // Pods across nodes, both ways, both protocols, without NAT.
    let r = probe(&["--from", "x/a", "z/c", "--to", "pod/x/b:80", "pod/y/b:81/udp"]);
    let r2 = probe(&["--from", "x/b", "--to", "pod/x/a:80", "pod/z/c:81/udp", "pod/y/b:80"]);
    for x in r.iter().chain(&r2) {
        let from_ip = &ips[x["from"].as_str().unwrap()];
        assert_eq!(x["result"], "connected", "{x}");
        assert!(x["seen_client"].as_str().unwrap().starts_with(&format!("{from_ip}:")), "source kept: {x}");
    }
    // The other nodes route the new pod CIDR to the new address, and the old one nowhere.
    let routes: Value = serde_json::from_str(&ok(&["show", "routes", "--node", "node-3", "--json"])).unwrap();
    let list = routes["routes"].as_array().unwrap();
    assert!(list.iter().any(|r| r["prefix"] == "10.244.5.0/24"), "{routes}");
    assert!(!list.iter().any(|r| r["prefix"] == "10.244.1.0/24"), "{routes}");

    // Masquerade to the world uses the new address.
    let _server = ExternalServer::start();
    let r = probe(&["--from", "x/b", "--to", &format!("{EXTERNAL_IP}:9000"), &format!("{EXTERNAL_IP}:9001/udp")]);
    for x in &r {
        assert_eq!(x["result"], "connected", "{x}");
        assert!(x["seen_client"].as_str().unwrap().starts_with("172.18.0.13:"), "masqueraded to the old address? {x}");
    }

    // NodePorts: on the new address (eTP Cluster masquerades to it, eTP Local keeps the
    // client), no longer on the old one.
    let r = probe(&["--from", "external", "--to", "172.18.0.13:30080", "172.18.0.13:30081"]);
    assert!(r.iter().all(|x| x["result"] == "connected" && x["answered_by"] == "x/b"), "{r:?}");
    assert!(r[0]["seen_client"].as_str().unwrap().starts_with("172.18.0.13:"), "{r:?}");
    assert!(r[1]["seen_client"].as_str().unwrap().starts_with(&format!("{EXTERNAL_IP}:")), "{r:?}");
    let r = probe(&["--from", "external", "--timeout-ms", "700", "--to", "172.18.0.3:30080"]);
    assert_eq!(r[0]["result"], "timeout", "the old address still serves NodePorts: {r:?}");

    // The node's own stack reaches its pods and its Services through the host port, from the
    // new address.
    let r = probe(&["--from", "node-2", "--to", "pod/x/b:80", "svc/x/web-b:80"]);
    for x in &r {
        assert_eq!(x["result"], "connected", "{x}");
        assert!(x["seen_client"].as_str().unwrap().starts_with("172.18.0.13:"), "{x}");
    }
}
