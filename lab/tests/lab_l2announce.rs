//! Integration test of L2 announcements (issue #14 part 9), on the 3-node lab
//! (examples/lab-3nodes: node-1..3 with InternalIPs 172.18.0.2-4 on the underlay 172.18.0.0/24,
//! `external` at 172.18.0.100; pods x/a on node-1, x/b on node-2, x/c on node-3), brought up
//! with `lab up --l2-announce`.
//!
//! Contract:
//! - As the other lab tests: root (else SKIPPED), one lab per machine ([`labkit::Hold`]), the
//!   lab torn down when the hold drops.
//! - Two LoadBalancer Services get ingress IPs on the underlay, which `external` reaches by
//!   ARP alone (no route): `local` (172.18.0.200, `externalTrafficPolicy: Local`, endpoints x/a
//!   on node-1 and x/c on node-3) and `cluster` (172.18.0.201, `Cluster`, endpoint x/b).
//! - Each address is announced by exactly one node: its Lease names it, that node's
//!   `show status` says `announced_here`, no other node's does, and `external`'s ARP entry for
//!   the address is that node's uplink MAC. Only node-1 and node-3 compete for `local` (node-2
//!   has no local endpoint); a real TCP connection from `external` is answered by the
//!   holder's own pod.
//! - Failover: the holder of 172.18.0.200 is killed (SIGKILL, as a crash: it releases
//!   nothing); the other node takes the address within 10 s (Lease 5 s + retry 1 s + margin),
//!   `external`'s ARP entry moves to it (gratuitous ARP) and connections are answered by its pod.
//!   The killed node's switch started again does not take the address back; the new holder
//!   stopped normally (SIGTERM) releases it and the first takes it back within 4 s.
use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;

mod labkit;
use labkit::{ok, pod_ips, probe, Hold};

/// (node, its network namespace).
const NODES: [(&str, &str); 3] = [("node-1", "psl-node"), ("node-2", "psl-node-node-2"), ("node-3", "psl-node-node-3")];
const LOCAL_IP: &str = "172.18.0.200";
const CLUSTER_IP_LB: &str = "172.18.0.201";

fn services(a_ip: &str, c_ip: &str) -> String {
    format!(
        "\
apiVersion: v1
kind: Service
metadata: {{name: local, namespace: x}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.80
  externalTrafficPolicy: Local
  healthCheckNodePort: 32180
  ports:
  - {{name: http, port: 80, targetPort: 80, nodePort: 30980, protocol: TCP}}
status: {{loadBalancer: {{ingress: [{{ip: {LOCAL_IP}}}]}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: local-1
  namespace: x
  labels: {{kubernetes.io/service-name: local}}
addressType: IPv4
ports: [{{name: http, port: 80, protocol: TCP}}]
endpoints:
- {{addresses: [{a_ip}], nodeName: node-1, conditions: {{ready: true}}}}
- {{addresses: [{c_ip}], nodeName: node-3, conditions: {{ready: true}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: cluster, namespace: x}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.81
  selector: {{pod: b}}
  ports:
  - {{name: http, port: 80, targetPort: 80, nodePort: 30981, protocol: TCP}}
status: {{loadBalancer: {{ingress: [{{ip: {CLUSTER_IP_LB}}}]}}}}
"
    )
}

fn lease_holder(ip: &str) -> Option<String> {
    let path = format!("/run/podswitch/lab/leases/podswitch-l2-{}.json", ip.replace('.', "-"));
    let v: Value = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
    v["spec"]["holderIdentity"].as_str().filter(|h| !h.is_empty()).map(str::to_string)
}

/// The nodes whose `show status` says they announce `ip`, and those that compete for it.
fn announcers(ip: &str, running: &[&str]) -> (Vec<String>, Vec<String>) {
    let (mut here, mut offered) = (Vec::new(), Vec::new());
    for node in running {
        let s: Value = serde_json::from_str(&ok(&["show", "status", "--node", node, "--json"])).unwrap();
        let l2 = &s["l2_announcements"];
        assert!(l2.is_object(), "{node}: no l2_announcements in {s}");
        assert!(l2["error"].is_null(), "{node}: {l2}");
        for a in l2["addresses"].as_array().unwrap() {
            if a["address"] == ip {
                offered.push(node.to_string());
                if a["announced_here"] == true {
                    here.push(node.to_string());
                }
            }
        }
    }
    (here, offered)
}

fn uplink_mac(netns: &str) -> String {
    let out = labkit::sh("ip", &["-n", netns, "-j", "link", "show", "psw-uplink"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

fn netns_of(node: &str) -> &'static str {
    NODES.iter().find(|(n, _)| *n == node).unwrap().1
}

/// The MAC `external` has for `ip`, if any.
fn external_arp(ip: &str) -> Option<String> {
    let out = labkit::sh("ip", &["-n", "psl-external", "-j", "neigh", "show", ip]);
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v.get(0).and_then(|e| e["lladdr"].as_str()).map(str::to_string)
}

/// A TCP connection from `external` to `ip:80`: the pod that answered, if one did.
fn answered_by(ip: &str) -> Option<String> {
    let r = probe(&["--from", "external", "--timeout-ms", "700", "--to", &format!("{ip}:80")]);
    (r[0]["result"] == "connected").then(|| r[0]["answered_by"].as_str().unwrap_or("?").to_string())
}

/// Waits (up to `limit`) until exactly one node announces `ip` and it is the Lease's holder;
/// returns it and how long that took.
fn wait_single_announcer(ip: &str, running: &[&str], limit: Duration) -> (String, Duration) {
    let t0 = Instant::now();
    loop {
        let (here, _) = announcers(ip, running);
        let holder = lease_holder(ip);
        if here.len() == 1 && holder.as_deref() == Some(here[0].as_str()) {
            return (here[0].clone(), t0.elapsed());
        }
        assert!(t0.elapsed() < limit, "{ip}: announced by {here:?}, Lease holder {holder:?} after {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (up to `limit`) until `external` reaches `ip` through `node`: its ARP entry is that
/// node's uplink MAC and a connection is answered by `pod`.
fn wait_reached_through(ip: &str, node: &str, pod: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mac = uplink_mac(netns_of(node));
    loop {
        let by = answered_by(ip);
        let arp = external_arp(ip);
        if by.as_deref() == Some(pod) && arp.as_deref() == Some(mac.as_str()) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "{ip}: answered by {by:?}, external's ARP entry {arp:?}, want {pod} through {node} ({mac})");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn local_pod(node: &str) -> &'static str {
    match node {
        "node-1" => "x/a",
        "node-3" => "x/c",
        other => panic!("{other} has no local endpoint of x/local and must not announce it"),
    }
}

#[test]
fn an_announced_address_answers_from_one_node_and_moves_when_that_switch_stops() {
    let Some(hold) = Hold::new("l2", "an_announced_address_answers_from_one_node", "lab-3nodes") else { return };
    ok(&["lab", "up", "--manifests", hold.dir(), "--l2-announce"]);
    let ips = pod_ips();
    hold.write("services.yaml", &services(&ips["x/a"], &ips["x/c"]));
    let all = ["node-1", "node-2", "node-3"];

    // One announcer per address; only nodes with a local endpoint compete for `local`.
    let (first, _) = wait_single_announcer(LOCAL_IP, &all, Duration::from_secs(15));
    let (_, offered) = announcers(LOCAL_IP, &all);
    assert_eq!(offered, ["node-1", "node-3"], "competing for {LOCAL_IP}");
    let (cluster_holder, _) = wait_single_announcer(CLUSTER_IP_LB, &all, Duration::from_secs(15));
    let (_, offered) = announcers(CLUSTER_IP_LB, &all);
    assert_eq!(offered, all, "competing for {CLUSTER_IP_LB}");
    // external reaches both by ARP: the holder's MAC, the holder's own pod for `local`.
    wait_reached_through(LOCAL_IP, &first, local_pod(&first), Duration::from_secs(5));
    wait_reached_through(CLUSTER_IP_LB, &cluster_holder, "x/b", Duration::from_secs(5));
    // Nobody else answers: with the entry flushed, the one answer is the holder's again.
    labkit::sh("ip", &["-n", "psl-external", "neigh", "flush", "dev", "eth0"]);
    wait_reached_through(LOCAL_IP, &first, local_pod(&first), Duration::from_secs(5));

    // The holder's switch crashes: the other node takes over once its Lease runs out.
    let second = if first == "node-1" { "node-3" } else { "node-1" };
    ok(&["lab", "switch", "stop", "--node", &first, "--kill"]);
    let t0 = Instant::now();
    let survivors: Vec<&str> = all.iter().copied().filter(|n| *n != first).collect();
    let (holder, _) = wait_single_announcer(LOCAL_IP, &survivors, Duration::from_secs(10));
    assert_eq!(holder, second);
    wait_reached_through(LOCAL_IP, second, local_pod(second), Duration::from_secs(10) - t0.elapsed().min(Duration::from_secs(9)));
    let failover = t0.elapsed();
    assert!(failover < Duration::from_secs(10), "failover took {failover:?}");
    eprintln!("failover after a crash: {failover:?}");

    // The crashed switch comes back: it does not take the address back while the other holds it.
    ok(&["lab", "switch", "start", "--node", &first]);
    std::thread::sleep(Duration::from_secs(3));
    let (here, _) = announcers(LOCAL_IP, &all);
    assert_eq!(here, [second], "the restarted node took the address back");
    assert_eq!(lease_holder(LOCAL_IP).as_deref(), Some(second));

    // The holder stops normally: it releases the Lease and the first node takes it at once.
    ok(&["lab", "switch", "stop", "--node", second]);
    let t0 = Instant::now();
    let survivors: Vec<&str> = all.iter().copied().filter(|n| *n != second).collect();
    let (holder, _) = wait_single_announcer(LOCAL_IP, &survivors, Duration::from_secs(4));
    assert_eq!(holder, first);
    wait_reached_through(LOCAL_IP, &first, local_pod(&first), Duration::from_secs(4));
    eprintln!("takeover after a release: {:?}", t0.elapsed());
    ok(&["lab", "switch", "start", "--node", second]);
}
