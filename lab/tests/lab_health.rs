//! Integration tests of kube-proxy's health checks and of the Services left to another proxy
//! (issue #14 parts 1-2), on the 3-node lab (examples/lab-3nodes: node-1..3 with InternalIPs
//! 172.18.0.2-4, pods x/b, y/b, z/b on node-2).
//!
//! Contract:
//! - As the other lab tests: root (else SKIPPED), one lab per machine ([`labkit::Hold`]), the
//!   lab torn down when the hold drops.
//! - A real HTTP client (`curl` in `external`, over the underlay) asks every node: the
//!   `healthCheckNodePort` of a LoadBalancer Service with `externalTrafficPolicy: Local` whose
//!   only endpoint is on node-2 answers 200 with `localEndpoints: 1` there and 503 with
//!   `localEndpoints: 0` on the others; `/healthz` on port 10256 answers 200, then 503 on the
//!   node that gets the taint `ToBeDeletedByClusterAutoscaler` (its `/livez` stays 200, the
//!   other nodes' `/healthz` too), then 200 again when the taint goes.
//! - A Service labelled `service.kubernetes.io/service-proxy-name` is not served (its
//!   ClusterIP does not answer) and is listed among the ignored objects of `show status`.
//! - A health check port held by another socket on a node is a problem of `show status` there
//!   (the other nodes serve it), and is served once free.
use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;

mod labkit;
use labkit::{describe, ok, probe, Hold};

const NODES: [(&str, &str); 3] = [("node-1", "172.18.0.2"), ("node-2", "172.18.0.3"), ("node-3", "172.18.0.4")];

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: lb-local, namespace: x}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.70
  externalTrafficPolicy: Local
  healthCheckNodePort: 32100
  selector: {pod: b}
  ports:
  - {name: http, port: 80, targetPort: 80, nodePort: 30970, protocol: TCP}
  - {name: dns, port: 81, targetPort: 81, nodePort: 30971, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata:
  name: elsewhere
  namespace: x
  labels: {service.kubernetes.io/service-proxy-name: other-proxy}
spec:
  clusterIP: 10.96.0.71
  selector: {pod: b}
  ports:
  - {name: http, port: 80, targetPort: 80, protocol: TCP}
";

/// `curl -i` from `external`: (status, head as sent, body).
fn get(url: &str) -> (u16, String, String) {
    let o = labkit::podswitch(&["lab", "exec", "external", "--", "curl", "-sS", "-i", "--max-time", "3", url]);
    assert!(o.status.success(), "curl {url}: {}", describe(&o));
    let out = labkit::text(&o.stdout).replace("\r\n", "\n");
    let (head, body) = out.split_once("\n\n").unwrap_or_else(|| panic!("curl {url}: no head/body: {out}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("curl {url}: {head}"));
    (status, format!("{head}\n"), body.to_string())
}

/// Polls `url` until it answers `status` (10 s at most); returns the last answer.
fn wait_for(url: &str, status: u16) -> (u16, String, String) {
    let t0 = Instant::now();
    loop {
        let a = get(url);
        if a.0 == status || t0.elapsed() > Duration::from_secs(10) {
            return a;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn health_checks_answer_as_kube_proxys_and_labelled_services_are_left_alone() {
    let Some(hold) = Hold::new("health", "health_checks_answer_as_kube_proxys", "lab-3nodes") else { return };
    hold.write("services.yaml", SERVICES);
    ok(&["lab", "up", "--manifests", hold.dir()]);

    // The Service's health check: node-2 has its endpoint (x/b), the others none.
    for (node, ip) in NODES {
        let (status, head, body) = get(&format!("http://{ip}:32100/"));
        let want = if node == "node-2" { (200, 1) } else { (503, 0) };
        assert_eq!(status, want.0, "{node}: {head}\n{body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{node}: {e}: {body}"));
        assert_eq!(v["service"]["namespace"], "x", "{body}");
        assert_eq!(v["service"]["name"], "lb-local", "{body}");
        assert_eq!(v["localEndpoints"], want.1, "{node}: {body}");
        assert_eq!(v["serviceProxyHealthy"], true, "{node}: {body}");
        // Header names as kube-proxy (Go) writes them.
        assert!(head.contains("\nContent-Type: application/json\n"), "{head}");
        assert!(head.contains("\nX-Content-Type-Options: nosniff\n"), "{head}");
        assert!(head.contains(&format!("\nX-Load-Balancing-Endpoint-Weight: {}\n", want.1)), "{head}");
    }
    // Any path answers the same.
    assert_eq!(get("http://172.18.0.3:32100/healthz").0, 200);

    // The proxy's own health on every node.
    for (node, ip) in NODES {
        let (status, _, body) = get(&format!("http://{ip}:10256/healthz"));
        assert_eq!(status, 200, "{node}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((v["healthy"].as_bool(), v["nodeEligible"].as_bool()), (Some(true), Some(true)), "{node}: {body}");
        assert!(v["lastUpdated"].is_string() && v["currentTime"].is_string(), "{body}");
        let (status, _, body) = get(&format!("http://{ip}:10256/livez"));
        assert_eq!(status, 200, "{node}: {body}");
        assert!(serde_json::from_str::<Value>(&body).unwrap().get("nodeEligible").is_none(), "{body}");
    }
    assert_eq!(get("http://172.18.0.2:10256/other").0, 404);

    // The Cluster Autoscaler taints node-1 for deletion: its /healthz turns 503, /livez stays.
    let nodes = fs::read_to_string(hold.dir.join("00-nodes.yaml")).unwrap();
    let tainted = nodes.replacen(
        "spec:\n  podCIDR: 10.244.0.0/24\n",
        "spec:\n  taints:\n    - {key: ToBeDeletedByClusterAutoscaler, value: \"1700000000\", effect: NoSchedule}\n  podCIDR: 10.244.0.0/24\n",
        1,
    );
    assert_ne!(tainted, nodes);
    hold.write("00-nodes.yaml", &tainted);
    let (status, _, body) = wait_for("http://172.18.0.2:10256/healthz", 503);
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["healthy"].as_bool(), v["nodeEligible"].as_bool()), (Some(true), Some(false)), "{body}");
    assert_eq!(get("http://172.18.0.2:10256/livez").0, 200);
    assert_eq!(get("http://172.18.0.3:10256/healthz").0, 200, "node-2 is not tainted");
    // The taint goes: 200 again.
    hold.write("00-nodes.yaml", &nodes);
    assert_eq!(wait_for("http://172.18.0.2:10256/healthz", 200).0, 200);

    // The endpoint goes: node-2's health check turns 503; the Service goes: its port closes.
    let services = SERVICES.replace("selector: {pod: b}\n  ports:\n  - {name: http, port: 80, targetPort: 80, nodePort: 30970", "selector: {pod: none}\n  ports:\n  - {name: http, port: 80, targetPort: 80, nodePort: 30970");
    hold.write("services.yaml", &services);
    let (status, _, body) = wait_for("http://172.18.0.3:32100/", 503);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"localEndpoints\": 0"), "{body}");
    fs::remove_file(hold.dir.join("services.yaml")).unwrap();
    let t0 = Instant::now();
    loop {
        let o = labkit::podswitch(&["lab", "exec", "external", "--", "curl", "-sS", "--max-time", "2", "http://172.18.0.3:32100/"]);
        if !o.status.success() {
            break; // refused: nothing listens any more
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the health check port stayed open: {}", describe(&o));
        std::thread::sleep(Duration::from_millis(200));
    }
    hold.write("services.yaml", SERVICES);

    // The Service left to another proxy: no frontend, listed as ignored on every node.
    let r = probe(&["--from", "x/a", "--timeout-ms", "700", "--to", "10.96.0.71:80"]);
    assert_ne!(r[0]["result"], "connected", "{r:?}");
    let r = probe(&["--from", "x/a", "--to", "10.96.0.70:80"]);
    assert_eq!(r[0]["result"], "connected", "the other Service is served: {r:?}");
    for (node, _) in NODES {
        let s: Value = serde_json::from_str(&ok(&["show", "status", "--node", node, "--json"])).unwrap();
        let ignored = s["ignored_objects"].to_string();
        assert!(ignored.contains("x/elsewhere") && ignored.contains("service.kubernetes.io/service-proxy-name"), "{node}: {s}");
        let svcs = ok(&["show", "services", "--node", node, "--json"]);
        assert!(!svcs.contains("x/elsewhere"), "{node}: {svcs}");
    }

    // A health check port something else holds on node-1: reported there (log and `show
    // status`), served by the other nodes, and served by node-1 once free.
    let squatter = labkit::in_netns("psl-node", || std::net::TcpListener::bind("0.0.0.0:32101").unwrap());
    hold.write("busy.yaml", BUSY);
    let t0 = Instant::now();
    loop {
        let s: Value = serde_json::from_str(&ok(&["show", "status", "--node", "node-1", "--json"])).unwrap();
        if s["problems"].to_string().contains("Service x/busy: cannot serve its health check on port 32101") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the busy port is not reported: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(wait_for("http://172.18.0.3:32101/", 200).0, 200);
    drop(squatter);
    let t0 = Instant::now();
    loop {
        let o = labkit::podswitch(&["lab", "exec", "external", "--", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "http://172.18.0.2:32101/"]);
        if labkit::text(&o.stdout).trim() == "503" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "node-1 did not bind the freed port: {}", describe(&o));
        std::thread::sleep(Duration::from_millis(300));
    }
    let s: Value = serde_json::from_str(&ok(&["show", "status", "--node", "node-1", "--json"])).unwrap();
    assert!(!s["problems"].to_string().contains("32101"), "{s}");
}

const BUSY: &str = "\
apiVersion: v1
kind: Service
metadata: {name: busy, namespace: x}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.72
  externalTrafficPolicy: Local
  healthCheckNodePort: 32101
  selector: {pod: b}
  ports:
  - {name: http, port: 80, targetPort: 80, nodePort: 30972, protocol: TCP}
";
