//! Integration tests of a `podswitch lab` with several nodes (examples/lab-3nodes: node-1..3 with
//! InternalIPs 172.18.0.2-4, pod CIDRs 10.244.0-2.0/24, pods x/P, y/P, z/P on each, P = a, b, c).
//!
//! Contract:
//! - As the other lab tests: root (else SKIPPED), one lab per machine ([`labkit::Hold`]), the
//!   lab torn down when the hold drops.
//! - They check what the lab builds per node (its namespace, its own switch with its own control
//!   socket, its pods' veths), pod → pod on the same node through that node's switch (TCP and
//!   UDP), `external` → each node's InternalIP over the underlay, `lab exec NODENAME`, a pod
//!   added live for node-2, and that `lab down` leaves no namespace. Pod → pod across nodes is
//!   not checked: cross-node forwarding is the switch's (VXLAN/routed modes), not the lab's.
use std::fs;
use std::process::Command;

use serde_json::Value;

mod labkit;
use labkit::{describe, lab_namespaces, ok, probe, state, text, Hold};

/// (node, its namespace, its InternalIP, its pod CIDR, the pod name its pods have).
const NODES: [(&str, &str, &str, &str, &str); 3] = [
    ("node-1", "psl-node", "172.18.0.2", "10.244.0.0/24", "a"),
    ("node-2", "psl-node-node-2", "172.18.0.3", "10.244.1.0/24", "b"),
    ("node-3", "psl-node-node-3", "172.18.0.4", "10.244.2.0/24", "c"),
];

fn up(hold: &Hold) -> String {
    ok(&["lab", "up", "--manifests", hold.dir()])
}

#[test]
fn three_nodes_each_run_their_own_switch_and_forward_between_their_pods() {
    let Some(hold) = Hold::new("nodes", "three_nodes_each_run_their_own_switch", "lab-3nodes") else { return };
    let out = up(&hold);
    assert!(out.contains("node node-2 (pod CIDR 10.244.1.0/24, InternalIP 172.18.0.3, network namespace psl-node-node-2"), "{out}");

    // `lab status --json`: every node with its data; the first node's fields as before.
    let status: Value = serde_json::from_str(&ok(&["lab", "status", "--json"])).unwrap();
    let nodes = status["nodes"].as_array().unwrap_or_else(|| panic!("no nodes array: {status}"));
    assert_eq!(nodes.len(), 3, "{status}");
    for (n, (name, netns, ip, cidr, _)) in nodes.iter().zip(NODES) {
        assert_eq!(n["name"], name, "{n}");
        assert_eq!(n["netns"], netns, "{n}");
        assert_eq!(n["internal_ip"], ip, "{n}");
        assert_eq!(n["pod_cidr"], cidr, "{n}");
        assert_eq!(n["switch_running"], true, "{n}");
        assert_eq!(n["in_sync"], true, "{n}");
        let socket = n["control_socket"].as_str().unwrap();
        if name == "node-1" {
            assert_eq!(socket, "/run/podswitch/podswitch.sock");
        } else {
            assert_eq!(socket, format!("/run/podswitch/lab-nodes/{name}.sock"));
        }
    }
    assert_eq!(status["node"]["name"], "node-1", "{status}");
    assert_eq!(status["switch"]["control_socket"], "/run/podswitch/podswitch.sock", "{status}");
    assert_eq!(status["underlay"], "psl-underlay", "{status}");
    let pids: Vec<i64> = nodes.iter().map(|n| n["switch_pid"].as_i64().unwrap()).collect();
    assert!(pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2], "one switch per node: {pids:?}");

    // Each node's namespace exists and its own switch answers on its socket, with its name.
    let namespaces = lab_namespaces();
    for (name, netns, ip, cidr, pod) in NODES {
        assert!(namespaces.contains(&netns.to_string()), "{namespaces:?}");
        let s: Value = serde_json::from_str(&ok(&["show", "status", "--node", name, "--json"])).unwrap();
        assert_eq!((s["node"].as_str(), s["internal_ip"].as_str(), s["pod_cidr"].as_str()), (Some(name), Some(ip), Some(cidr)), "{s}");
        // The node's pods and only those: three pod ports, all attached.
        assert_eq!(s["ports_attached"], s["ports_wanted"], "{s}");
        let st = state();
        for ns in ["x", "y", "z"] {
            let p = &st["pods"][format!("{ns}/{pod}")];
            assert_eq!(p["node"], name, "{p}");
            assert_eq!(p["node_netns"], netns, "{p}");
        }
    }
    // `show` without flags is the first node's switch.
    let s: Value = serde_json::from_str(&ok(&["show", "status", "--json"])).unwrap();
    assert_eq!(s["node"], "node-1", "{s}");

    // `lab exec node-2` runs in node-2's namespace: its uplink and its pods' veths, not node-1's.
    let links = ok(&["lab", "exec", "node-2", "--", "ip", "-o", "link"]);
    let st = state();
    let iface = |key: &str| st["pods"][key]["interface"].as_str().unwrap().to_string();
    assert!(links.contains("psw-uplink"), "{links}");
    for ns in ["x", "y", "z"] {
        assert!(links.contains(&iface(&format!("{ns}/b"))), "{links}");
        assert!(!links.contains(&iface(&format!("{ns}/a"))), "{links}");
    }
    let links = ok(&["lab", "exec", "node", "--", "ip", "-o", "link"]);
    assert!(links.contains(&iface("x/a")) && !links.contains(&iface("x/b")), "`node` is the first node: {links}");

    // Pod → pod on the same node, through that node's switch, TCP and UDP, on every node.
    for (name, _, _, _, pod) in NODES {
        let from: Vec<String> = ["x", "y", "z"].iter().map(|ns| format!("{ns}/{pod}")).collect();
        let mut args: Vec<String> = vec!["--from".into()];
        args.extend(from.iter().cloned());
        args.push("--to".into());
        for ns in ["x", "y", "z"] {
            args.push(format!("pod/{ns}/{pod}:80"));
            args.push(format!("pod/{ns}/{pod}:81/udp"));
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = probe(&a);
        assert_eq!(r.len(), 18, "{r:?}");
        for x in &r {
            let to = x["to"].as_str().unwrap();
            let want = to.trim_start_matches("pod/").split(':').next().unwrap();
            assert_eq!(x["result"], "connected", "{name}: {x}");
            assert_eq!(x["answered_by"], want, "{name}: {x}");
            // The server saw the client's own pod address (no translation on the way).
            let from_ip = st["pods"][x["from"].as_str().unwrap()]["ip"].as_str().unwrap();
            assert!(x["seen_client"].as_str().unwrap().starts_with(&format!("{from_ip}:")), "{name}: {x}");
        }
    }

    // `external` reaches every node's InternalIP over the underlay: the node's own stack has it
    // on its uplink and answers ARP and the echo itself (the switch's filter passes them).
    for (name, _, ip, _, _) in NODES {
        let o = labkit::podswitch(&["lab", "exec", "external", "--", "ping", "-c", "2", "-i", "0.2", "-W", "2", ip]);
        assert!(o.status.success(), "external → {name} ({ip}): {}", describe(&o));
        let neigh = ok(&["lab", "exec", "external", "--", "ip", "neigh", "show", ip]);
        let mac = ok(&["lab", "exec", name, "--", "cat", "/sys/class/net/psw-uplink/address"]);
        assert!(neigh.contains(mac.trim()), "{ip} resolved to {neigh}, {name}'s uplink is {mac}");
    }
    // A probe from a node by name runs in that node's stack.
    let r = probe(&["--from", "node-3", "--to", "pod/x/c:80"]);
    assert_eq!(r[0]["result"], "connected", "{r:?}");
    assert!(r[0]["seen_client"].as_str().unwrap().starts_with("172.18.0.4:"), "{r:?}");

    // `lab switch stop|start` stops and starts every node's switch; the node stacks keep
    // reaching the underlay on their uplinks throughout.
    let out = ok(&["lab", "switch", "stop"]);
    for (name, ..) in NODES {
        assert!(out.contains(&format!("stopped the switch of node {name} (pid")), "{out}");
    }
    let o = labkit::podswitch(&["show", "status", "--node", "node-3"]);
    assert!(!o.status.success(), "node-3's switch still answers: {}", describe(&o));
    let o = labkit::podswitch(&["lab", "exec", "external", "--", "ping", "-c", "1", "-W", "2", "172.18.0.4"]);
    assert!(o.status.success(), "external → node-3 with its switch stopped: {}", describe(&o));
    let out = ok(&["lab", "switch", "start"]);
    assert_eq!(out.matches("; it is in sync").count(), 3, "{out}");
    let s: Value = serde_json::from_str(&ok(&["show", "status", "--node", "node-3", "--json"])).unwrap();
    assert_eq!(s["node"], "node-3", "{s}");
    let o = labkit::podswitch(&["lab", "exec", "external", "--", "ping", "-c", "1", "-W", "2", "172.18.0.4"]);
    assert!(o.status.success(), "external → node-3 after a restart: {}", describe(&o));
    let r = probe(&["--from", "x/c", "--to", "pod/y/c:80", "pod/y/c:81/udp"]);
    assert!(r.iter().all(|x| x["result"] == "connected"), "{r:?}");

    drop(hold);
    assert_eq!(lab_namespaces(), Vec::<String>::new(), "lab down left namespaces");
    assert!(!std::path::Path::new("/run/podswitch/lab-nodes").exists());
}

#[test]
fn a_pod_added_live_for_node_2_is_wired_on_node_2() {
    let Some(hold) = Hold::new("nodes", "a_pod_added_live_for_node_2", "lab-3nodes") else { return };
    up(&hold);
    hold.write(
        "pod-x-d.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: d, namespace: x, labels: {pod: d}}\nspec:\n  nodeName: node-2\n  \
         containers:\n  - name: c\n    image: i\n    ports:\n    - {containerPort: 80, protocol: TCP}\n    \
         - {containerPort: 81, protocol: UDP}\n",
    );
    // The probe waits until the lab and every switch have applied the edit.
    let r = probe(&["--from", "x/b", "y/b", "--to", "pod/x/d:80", "pod/x/d:81/udp"]);
    assert!(r.iter().all(|x| x["result"] == "connected" && x["answered_by"] == "x/d"), "{r:?}");
    let st = state();
    let d = &st["pods"]["x/d"];
    assert_eq!((d["node"].as_str(), d["node_netns"].as_str()), (Some("node-2"), Some("psl-node-node-2")), "{d}");
    assert!(d["ip"].as_str().unwrap().starts_with("10.244.1."), "{d}");
    let iface = d["interface"].as_str().unwrap();
    let o = Command::new("ip").args(["-n", "psl-node-node-2", "link", "show", "dev", iface]).output().unwrap();
    assert!(o.status.success(), "{iface} is not in node-2's namespace: {}", text(&o.stderr));
    let o = Command::new("ip").args(["-n", "psl-node", "link", "show", "dev", iface]).output().unwrap();
    assert!(!o.status.success(), "{iface} is in node-1's namespace too");
    // Node-2's switch wired it; node-1's knows it as another node's pod.
    let ports = ok(&["show", "ports", "--node", "node-2", "--json"]);
    assert!(ports.contains(iface), "{ports}");
    let ports = ok(&["show", "ports", "--json"]);
    assert!(!ports.contains(iface), "{ports}");
    // Removing it removes it from node-2.
    fs::remove_file(hold.dir.join("pod-x-d.yaml")).unwrap();
    let r = probe(&["--from", "x/b", "--to", "pod/x/b:80"]);
    assert_eq!(r[0]["result"], "connected", "{r:?}");
    assert!(state()["pods"].get("x/d").is_none());
    let o = Command::new("ip").args(["-n", "psl-node-node-2", "link", "show", "dev", iface]).output().unwrap();
    assert!(!o.status.success(), "{iface} is left in node-2's namespace");
    // A Node added while the lab runs is refused (it needs `lab down` and `lab up`); the lab
    // keeps running as it was.
    hold.write(
        "node-4.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-4}\nspec: {podCIDR: 10.244.3.0/24}\n\
         status: {addresses: [{type: InternalIP, address: 172.18.0.5}]}\n",
    );
    let mut refused = String::new();
    for _ in 0..100 {
        let o = labkit::podswitch(&["lab", "probe", "--json", "--from", "x/b", "--to", "pod/y/b:80"]);
        refused = text(&o.stderr);
        if !o.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(refused.contains("the lab's nodes are node-1, node-2, node-3 but the manifests now have node-1, node-2, node-3, node-4: adding or removing Nodes needs"), "{refused}");
    assert!(!lab_namespaces().iter().any(|n| n.contains("node-4")));
    fs::remove_file(hold.dir.join("node-4.yaml")).unwrap();
    let r = probe(&["--from", "x/b", "--to", "pod/y/b:80"]);
    assert_eq!(r[0]["result"], "connected", "{r:?}");
}

#[test]
fn nodes_outside_the_first_nodes_network_are_refused_and_nothing_is_left() {
    let Some(hold) = Hold::new("nodes", "nodes_outside_the_first_nodes_network", "lab-3nodes") else { return };
    let nodes = fs::read_to_string(hold.dir.join("00-nodes.yaml")).unwrap();
    hold.write("00-nodes.yaml", &nodes.replace("address: 172.18.0.4", "address: 172.19.0.4"));
    let o = labkit::podswitch(&["lab", "up", "--manifests", hold.dir()]);
    assert!(!o.status.success(), "{}", describe(&o));
    let err = text(&o.stderr);
    assert!(err.contains("Node node-3's InternalIP 172.19.0.4 is not in 172.18.0.0/24"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(lab_namespaces(), Vec::<String>::new());
    // --node-name still builds one node of several.
    hold.write("00-nodes.yaml", &nodes);
    let out = ok(&["lab", "up", "--manifests", hold.dir(), "--node-name", "node-2"]);
    assert!(out.contains("lab up: node node-2 (pod CIDR 10.244.1.0/24, InternalIP 172.18.0.3, network namespace psl-node)"), "{out}");
    let status: Value = serde_json::from_str(&ok(&["lab", "status", "--json"])).unwrap();
    assert_eq!(status["nodes"].as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(status["underlay"], Value::Null, "{status}");
}
