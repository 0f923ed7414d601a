//! Integration tests of Services through `podswitch lab`: real sockets in the lab's pods and
//! its `external` host, through the switch (the kube-proxy replacement), against the built
//! binary.
//!
//! Contract (as in `lab.rs`, sharing nothing mutable with it):
//! - They need root (they create network namespaces); otherwise each prints
//!   `SKIPPED: <test> needs root` to stderr and passes, or fails when `CI` is set
//!   ([`labkit::root_or_skip`]).
//! - One lab per machine: every test holds a [`labkit::Hold`] (this binary's mutex and the
//!   machine's flock), starts with `lab down` (a lab left over is removed) and tears its lab
//!   down when the hold drops, also when it fails.
//! - Each test writes its own manifest directory: a copy of `examples/lab-9pods` with labels
//!   edited and Services / EndpointSlices added, brings the lab up with its switch, and
//!   observes with `lab probe --json` (which waits until the lab and the switch have applied
//!   the directory) or, where a fixed source port matters, with sockets of its own in a pod.
//! - Service addresses: ClusterIPs in 10.96.0.0/12, load balancer and external IPs in
//!   192.0.2.0/24; the node is 172.18.0.2 and `external` 172.18.0.100.
//! - Client addresses are compared by host: a switch may remap a client's source port (to
//!   keep two flows apart that would otherwise translate to one tuple) but not its address,
//!   unless it masquerades.
//! - On a failed delivery the message carries the switch's drop counters and the kernel's
//!   (failed XDP redirects, veth drops), so a loss can be told from a misdirected packet.
use std::collections::BTreeSet;
use std::fs;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod labkit;
use labkit::{describe, ok, pod_ips, podswitch, probe, sh, text, Hold, Lab};

const NODE_IP: &str = "172.18.0.2";
const EXTERNAL_IP: &str = "172.18.0.100";

impl Lab {
    /// None (after printing SKIPPED) unless root; `examples/lab-9pods` is copied into a fresh
    /// directory.
    fn new(test: &str) -> Option<Lab> {
        Hold::new("svc", test, "lab-9pods").map(Lab)
    }

    /// Brings the lab up with its switch.
    fn up(&self) -> String {
        ok(&["lab", "up", "--manifests", self.dir()])
    }

    /// Sets the labels of pod `ns/name` (in `pods-NS.yaml` of lab-9pods) to `pod: NAME` plus
    /// `extra` (`"app: web"`, ...).
    fn set_labels(&self, ns: &str, name: &str, extra: &[&str]) {
        let mut labels = vec![format!("pod: {name}")];
        labels.extend(extra.iter().map(std::string::ToString::to_string));
        self.replace_labels(&format!("pods-{ns}.yaml"), &format!("  name: {name}\n  namespace: {ns}\n  labels:\n"), &labels);
    }
}

/// One probe from `from` to `to`, waiting `timeout_ms` at most.
fn probe1(from: &str, to: &str, timeout_ms: u64) -> Value {
    let ms = timeout_ms.to_string();
    let mut r = probe(&["--from", from, "--to", to, "--timeout-ms", &ms]);
    assert_eq!(r.len(), 1, "{r:?}");
    r.remove(0)
}

fn host(addr: &Value) -> String {
    let a = addr.as_str().unwrap_or_else(|| panic!("not an address: {addr}"));
    a.rsplit_once(':').unwrap().0.to_string()
}

fn show(r: &[Value]) -> String {
    r.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// A Service of namespace x; `spec` is the YAML of its spec, indented by 2.
fn service(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: x\nspec:\n{spec}---\n")
}

/// An endpoint of an EndpointSlice: address, (ready, serving, terminating), node.
struct Ep<'a> {
    ip: &'a str,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: &'a str,
}

/// An EndpointSlice of Service x/`svc` with one TCP port named `http` (80) and `endpoints`.
fn endpoint_slice(name: &str, svc: &str, endpoints: &[Ep]) -> String {
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: x\n  labels:\n    \
         kubernetes.io/service-name: {svc}\n    endpointslice.kubernetes.io/managed-by: test.podswitch\n\
         addressType: IPv4\nports:\n  - {{name: http, port: 80, protocol: TCP}}\nendpoints:\n"
    );
    for e in endpoints {
        y.push_str(&format!(
            "  - addresses: [{}]\n    conditions: {{ready: {}, serving: {}, terminating: {}}}\n    nodeName: {}\n",
            e.ip, e.ready, e.serving, e.terminating, e.node
        ));
    }
    y.push_str("---\n");
    y
}

/// What the switch counted, for failure messages: drops by reason and the ports' counters.
fn switch_counters() -> String {
    let o = podswitch(&["show", "stats", "--json"]);
    let Ok(v) = serde_json::from_slice::<Value>(&o.stdout) else { return format!("(no stats: {})", describe(&o)) };
    let drops: Vec<String> = v["drops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["count"].as_u64().unwrap_or(0) > 0)
        .map(|d| format!("{}={}", d["reason"].as_str().unwrap_or("?"), d["count"]))
        .collect();
    // Kernel-side losses the switch cannot count: XDP redirects that failed (an AF_XDP ring
    // full or a fill ring empty) and drops at the veths.
    let mut kernel = Vec::new();
    let links = Command::new("ip").args(["-n", "psl-node", "-o", "link"]).output().map(|o| text(&o.stdout));
    for line in links.unwrap_or_default().lines() {
        let Some(ifname) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n).to_string()) else { continue };
        let stats = Command::new("ip").args(["netns", "exec", "psl-node", "ethtool", "-S", &ifname]).output();
        for l in stats.map(|o| text(&o.stdout)).unwrap_or_default().lines() {
            let Some((k, n)) = l.trim().split_once(": ") else { continue };
            if (k.contains("drop") || k.contains("err") || k.contains("full")) && n.trim() != "0" {
                kernel.push(format!("{ifname}:{k}={}", n.trim()));
            }
        }
    }
    let links = Command::new("ip").args(["-n", "psl-node", "-s", "-j", "link"]).output();
    let links: Value = links.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or(Value::Null);
    for l in links.as_array().into_iter().flatten() {
        for dir in ["rx", "tx"] {
            let n = l["stats64"][dir]["dropped"].as_u64().unwrap_or(0);
            if n > 0 {
                kernel.push(format!("{}:{dir}_dropped={n}", l["ifname"].as_str().unwrap_or("?")));
            }
        }
    }
    format!("switch drops: [{}]; kernel: [{}]; ports: {}", drops.join(", "), kernel.join(", "), v["ports"])
}

/// The pods that answered `results` (all must have connected).
fn answered_by(results: &[Value]) -> BTreeSet<String> {
    for r in results {
        assert_eq!(r["result"], "connected", "{}\n{}", show(results), switch_counters());
    }
    results.iter().map(|r| r["answered_by"].as_str().unwrap_or("(no answer)").to_string()).collect()
}

/// `n` copies of `target`, as `--to` values (probed at once, each from its own socket).
fn times(target: &str, n: usize) -> Vec<&str> {
    vec![target; n]
}

// ---- 0. The `external` host ----

#[test]
fn external_host_is_built_shown_used_and_removed() {
    let Some(lab) = Lab::new("external_host_is_built_shown_used_and_removed") else { return };
    let out = lab.up();
    assert!(out.contains("external: 172.18.0.100/24 on eth0 in psl-external"), "{out}");
    let addr = sh("ip", &["-n", "psl-external", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 172.18.0.100/24 ") && addr.contains("0a:58:ac:12:00:64"), "{addr}");
    // Link-local IPv6 on external's eth0 and the node's uplink: the node's own IPv6 passes.
    assert!(addr.contains("state UP") && addr.contains("inet6 fe80::"), "{addr}");
    let routes = sh("ip", &["-n", "psl-external", "route"]);
    assert!(routes.contains("default via 172.18.0.2 dev eth0"), "{routes}");
    assert!(sh("ip", &["-n", "psl-external", "link", "show", "lo"]).contains("UP"));
    let k = sh("ip", &["netns", "exec", "psl-external", "ethtool", "-k", "eth0"]);
    assert!(k.contains("tx-checksumming: off"), "{k}");
    let uplink = sh("ip", &["-n", "psl-node", "-d", "link", "show", "dev", "psw-uplink"]);
    // Twice as many queues as the one worker: it serves both.
    assert!(uplink.contains("state UP") && uplink.contains("numtxqueues 2 numrxqueues 2"), "{uplink}");
    let node_addr = sh("ip", &["-n", "psl-node", "addr", "show", "dev", "psw-uplink"]);
    assert!(node_addr.contains("inet 172.18.0.2/24"), "the InternalIP is on the uplink: {node_addr}");
    let v6 = sh("ip", &["netns", "exec", "psl-node", "cat", "/proc/sys/net/ipv6/conf/psw-uplink/disable_ipv6"]);
    assert_eq!(v6.trim(), "0");
    // The switch runs with the uplink, and shows it as a port.
    let ports = ok(&["show", "ports", "--json"]);
    assert!(ports.contains("\"psw-uplink\""), "{ports}");
    let status: Value = serde_json::from_str(&ok(&["lab", "status", "--json"])).unwrap();
    assert_eq!(status["external"]["ip"], EXTERNAL_IP, "{status}");
    assert_eq!(status["external"]["mac"], "0a:58:ac:12:00:64", "{status}");
    assert_eq!(status["external"]["uplink"], "psw-uplink", "{status}");
    assert_eq!(status["external"]["present"], true, "{status}");
    assert!(ok(&["lab", "status"]).contains("external: 172.18.0.100/24 (MAC 0a:58:ac:12:00:64)"));
    let out = ok(&["lab", "exec", "external", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(out.contains("172.18.0.100/24"), "{out}");
    // From outside, pods are reached through the uplink and see the client's own address.
    let r = probe(&["--from", "external", "--to", "pod/x/a:80", "pod/z/c:81/udp"]);
    for p in &r {
        assert_eq!(p["result"], "connected", "{}", show(&r));
        assert_eq!(p["seen_client"], p["source"], "{}", show(&r));
        assert_eq!(host(&p["source"]), EXTERNAL_IP, "{}", show(&r));
    }
    let down = ok(&["lab", "down"]);
    assert!(down.contains("psl-external"), "{down}");
    assert!(!Path::new("/run/netns/psl-external").exists());
}

#[test]
fn external_address_taken_by_the_node_fails_in_one_line() {
    let Some(lab) = Lab::new("external_address_taken_by_the_node_fails_in_one_line") else { return };
    lab.write(
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.244.0.0/24}\n\
         status: {addresses: [{type: InternalIP, address: 172.18.0.100}]}\n",
    );
    let o = podswitch(&["lab", "up", "--manifests", lab.dir()]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = text(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("InternalIP 172.18.0.100 is the address the lab gives its `external` host"), "{err}");
    assert!(!Path::new("/run/podswitch/lab").exists() && !Path::new("/run/netns/psl-node").exists());
}

// ---- 1. ClusterIP ----

#[test]
fn clusterip_tcp_and_udp_reach_the_selected_pods_and_keep_the_source() {
    let test = "clusterip_tcp_and_udp_reach_the_selected_pods_and_keep_the_source";
    let Some(lab) = Lab::new(test) else { return };
    lab.set_labels("x", "a", &["app: web"]);
    lab.set_labels("x", "b", &["app: web"]);
    lab.set_labels("x", "c", &["app: db"]);
    let selector = "  selector: {app: web}\n";
    lab.write(
        "svc.yaml",
        &[
            service(
                "web",
                &format!(
                    "  clusterIP: 10.96.0.10\n{selector}  ports:\n  - {{name: tcp, port: 80, targetPort: 80}}\n  \
                     - {{name: udp, port: 81, protocol: UDP, targetPort: 81}}\n"
                ),
            ),
            // No clusterIP in the manifest: the switch allocates one; probe asks the switch.
            service("web-auto", &format!("{selector}  ports:\n  - {{name: tcp, port: 8080, targetPort: 80}}\n")),
        ]
        .concat(),
    );
    lab.up();
    let ips = pod_ips();
    for from in ["y/a", "x/c"] {
        let mut to = times("svc/x/web:80", 20);
        to.extend(times("svc/x/web:81/udp", 20));
        to.extend(times("svc/x/web-auto:8080", 20));
        let mut args = vec!["--from", from, "--to"];
        args.extend(to);
        let r = probe(&args);
        assert_eq!(r.len(), 60);
        answered_by(&r);
        for chunk in r.chunks(20) {
            let by = answered_by(chunk);
            let want: BTreeSet<String> = ["x/a".to_string(), "x/b".to_string()].into();
            assert_eq!(by, want, "from {from}: both selected pods answer, no other does:\n{}", show(chunk));
        }
        for p in &r {
            // Pod -> ClusterIP keeps the source: the backend sees the client pod's own address.
            assert_eq!(host(&p["seen_client"]), ips[from], "{p}");
            assert_eq!(host(&p["source"]), ips[from], "{p}");
        }
        assert!(r[..40].iter().all(|p| p["address"].as_str().unwrap().starts_with("10.96.0.10:")), "{}", show(&r));
        let auto = r[40]["address"].as_str().unwrap();
        assert!(auto.starts_with("10.96.") && auto.ends_with(":8080") && !auto.starts_with("10.96.0.10:"), "{auto}");
    }
}

// ---- 2. Hairpin ----

#[test]
fn hairpin_a_pod_reaches_itself_through_its_service_seen_from_the_node() {
    let Some(lab) = Lab::new("hairpin_a_pod_reaches_itself_through_its_service_seen_from_the_node") else { return };
    lab.write(
        "svc.yaml",
        &service(
            "self",
            "  clusterIP: 10.96.0.11\n  selector: {pod: a}\n  ports:\n  - {name: tcp, port: 80, targetPort: 80}\n  \
             - {name: udp, port: 81, protocol: UDP, targetPort: 81}\n",
        ),
    );
    lab.up();
    let ips = pod_ips();
    let r = probe(&["--from", "x/a", "x/b", "--to", "svc/x/self:80", "svc/x/self:81/udp"]);
    assert_eq!(r.len(), 4);
    assert_eq!(answered_by(&r), BTreeSet::from(["x/a".to_string()]), "{}", show(&r));
    for p in &r {
        if p["from"] == "x/a" {
            // Its own Service brings x/a back to itself: masqueraded to the node address, or
            // the reply would go from x/a to x/a without the switch.
            assert_eq!(host(&p["seen_client"]), NODE_IP, "hairpin: {p}");
        } else {
            assert_eq!(host(&p["seen_client"]), ips["x/b"], "not a hairpin, the source stays: {p}");
        }
    }
}

// ---- 3. Session affinity ----

#[test]
fn client_ip_affinity_keeps_one_backend_without_it_connections_spread() {
    let Some(lab) = Lab::new("client_ip_affinity_keeps_one_backend_without_it_connections_spread") else { return };
    for p in ["a", "b", "c"] {
        lab.set_labels("x", p, &["app: web"]);
    }
    let ports = "  selector: {app: web}\n  ports:\n  - {name: tcp, port: 80, targetPort: 80}\n";
    lab.write(
        "svc.yaml",
        &[
            service("sticky", &format!("  clusterIP: 10.96.0.12\n  sessionAffinity: ClientIP\n{ports}")),
            service("spread", &format!("  clusterIP: 10.96.0.13\n{ports}")),
        ]
        .concat(),
    );
    lab.up();
    let consecutive = |target: &str| -> Vec<Value> { (0..15).map(|_| probe1("y/a", target, 1000)).collect() };
    let sticky = consecutive("svc/x/sticky:80");
    let by = answered_by(&sticky);
    assert_eq!(by.len(), 1, "with ClientIP affinity 15 connections land on one backend, got {by:?}:\n{}", show(&sticky));
    assert!(sticky.windows(2).all(|w| w[0]["source"] != w[1]["source"]), "each connection is a new one");
    let spread = consecutive("svc/x/spread:80");
    let by = answered_by(&spread);
    assert!(by.len() > 1, "without affinity 15 connections spread over the backends, got {by:?}:\n{}", show(&spread));
    assert!(by.iter().all(|b| ["x/a", "x/b", "x/c"].contains(&b.as_str())), "{by:?}");
}

// ---- 4. REJECT and DROP ----

#[test]
fn no_endpoints_and_unexposed_ports_are_refused_unallocated_addresses_time_out() {
    let Some(lab) = Lab::new("no_endpoints_and_unexposed_ports_are_refused_unallocated_addresses_time_out") else {
        return;
    };
    lab.write(
        "svc.yaml",
        &[
            service(
                "empty",
                "  clusterIP: 10.96.0.14\n  selector: {app: nothing}\n  ports:\n  - {name: tcp, port: 80, targetPort: 80}\n  \
                 - {name: udp, port: 81, protocol: UDP, targetPort: 81}\n",
            ),
            service("web", "  clusterIP: 10.96.0.10\n  selector: {pod: a}\n  ports:\n  - {name: tcp, port: 80, targetPort: 80}\n"),
        ]
        .concat(),
    );
    lab.up();
    let r = probe(&[
        "--from",
        "y/a",
        "--timeout-ms",
        "700",
        "--to",
        "svc/x/empty:80",
        "svc/x/empty:81/udp",
        "10.96.0.10:81",
        "10.96.0.10:80/udp",
        "10.96.0.10:80",
        "10.96.77.77:80",
        "10.96.77.77:81/udp",
    ]);
    let result = |i: usize| r[i]["result"].as_str().unwrap().to_string();
    assert_eq!(result(0), "refused", "no endpoints, TCP: {}", show(&r));
    assert_eq!(result(1), "refused", "no endpoints, UDP: {}", show(&r));
    assert_eq!(result(2), "refused", "a port the Service does not expose: {}", show(&r));
    assert_eq!(result(3), "refused", "a protocol the Service does not expose: {}", show(&r));
    assert_eq!(result(4), "connected", "the exposed port: {}", show(&r));
    assert_eq!(result(5), "timeout", "an unallocated Service address is dropped: {}", show(&r));
    assert_eq!(result(6), "timeout", "an unallocated Service address is dropped: {}", show(&r));
}

// ---- 5. Terminating endpoints ----

#[test]
fn serving_terminating_endpoints_serve_only_when_none_is_ready() {
    let Some(lab) = Lab::new("serving_terminating_endpoints_serve_only_when_none_is_ready") else { return };
    let svc = service("drain", "  clusterIP: 10.96.0.15\n  ports:\n  - {name: http, port: 80, protocol: TCP}\n");
    lab.write("svc.yaml", &svc);
    lab.up();
    let ips = pod_ips();
    let ep = |pod: &str, ready: bool, serving: bool, terminating: bool| Ep {
        ip: ips[pod].as_str(),
        ready,
        serving,
        terminating,
        node: "node-1",
    };
    let check = |what: &str, want: &[&str]| {
        let mut args = vec!["--from", "y/a", "--to"];
        args.extend(times("svc/x/drain:80", 12));
        let r = probe(&args);
        let want: BTreeSet<String> = want.iter().map(std::string::ToString::to_string).collect();
        assert_eq!(answered_by(&r), want, "{what}:\n{}", show(&r));
    };
    // No endpoint is ready: the serving+terminating one answers, the one no longer serving never.
    lab.write(
        "svc.yaml",
        &format!(
            "{svc}{}",
            endpoint_slice("drain-1", "drain", &[ep("x/a", false, true, true), ep("x/b", false, false, true)])
        ),
    );
    check("only serving+terminating (x/a) and not serving (x/b)", &["x/a"]);
    // One ready endpoint: only it answers.
    lab.write(
        "svc.yaml",
        &format!(
            "{svc}{}",
            endpoint_slice(
                "drain-1",
                "drain",
                &[ep("x/a", false, true, true), ep("x/b", false, false, true), ep("x/c", true, true, false)]
            )
        ),
    );
    check("a ready endpoint (x/c) besides serving+terminating x/a", &["x/c"]);
    // Only endpoints that stopped serving: nobody answers; the Service has no usable endpoint.
    lab.write("svc.yaml", &format!("{svc}{}", endpoint_slice("drain-1", "drain", &[ep("x/b", false, false, true)])));
    let r = probe1("y/a", "svc/x/drain:80", 700);
    assert_eq!(r["result"], "refused", "{r}");
}

// ---- 6. Traffic policies ----

#[test]
fn local_traffic_policies_with_remote_endpoints_drop_and_etp_decides_the_source() {
    let Some(lab) = Lab::new("local_traffic_policies_with_remote_endpoints_drop_and_etp_decides_the_source") else {
        return;
    };
    lab.set_labels("x", "a", &["app: web"]);
    lab.set_labels("x", "b", &["app: web"]);
    let port = "  ports:\n  - {name: http, port: 80, protocol: TCP}\n";
    let services = [
        service("itp-local-remote", &format!("  clusterIP: 10.96.0.16\n  internalTrafficPolicy: Local\n{port}")),
        service(
            "etp-local-remote",
            &format!("  type: NodePort\n  clusterIP: 10.96.0.17\n  externalTrafficPolicy: Local\n{port}"),
        ),
        service(
            "etp-cluster",
            "  type: NodePort\n  clusterIP: 10.96.0.18\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 80}\n",
        ),
        service(
            "etp-local",
            "  type: NodePort\n  clusterIP: 10.96.0.19\n  externalTrafficPolicy: Local\n  selector: {app: web}\n  ports:\n  \
             - {name: http, port: 80, targetPort: 80}\n",
        ),
    ]
    .concat();
    lab.write("svc.yaml", &services);
    lab.up();
    let ips = pod_ips();
    // Real lab pods, claimed to run on another node.
    let remote = |pod: &str| Ep { ip: ips[pod].as_str(), ready: true, serving: true, terminating: false, node: "node-2" };
    lab.write(
        "svc.yaml",
        &format!(
            "{services}{}{}",
            endpoint_slice("itp-1", "itp-local-remote", &[remote("x/a"), remote("x/b")]),
            endpoint_slice("etp-1", "etp-local-remote", &[remote("x/a"), remote("x/b")])
        ),
    );
    let r = probe1("y/a", "svc/x/itp-local-remote:80", 700);
    assert_eq!(r["result"], "timeout", "iTP Local, endpoints only on node-2: dropped from a pod: {r}");
    let r = probe(&[
        "--from",
        "external",
        "--timeout-ms",
        "700",
        "--to",
        "nodeport/x/etp-local-remote:80",
        "nodeport/x/etp-cluster:80",
        "nodeport/x/etp-local:80",
    ]);
    assert_eq!(r[0]["result"], "timeout", "eTP Local, endpoints only on node-2: dropped from outside: {}", show(&r));
    for p in &r {
        let a = p["address"].as_str().unwrap();
        let np: u16 = a.strip_prefix(&format!("{NODE_IP}:")).unwrap_or_else(|| panic!("{p}")).parse().unwrap();
        assert!((30000..=32767).contains(&np), "an allocated NodePort: {p}");
    }
    let cluster = &r[1];
    assert_eq!(cluster["result"], "connected", "{}", show(&r));
    assert!(["x/a", "x/b"].contains(&cluster["answered_by"].as_str().unwrap()), "{cluster}");
    assert_eq!(host(&cluster["seen_client"]), NODE_IP, "eTP Cluster masquerades to the node address: {cluster}");
    let local = &r[2];
    assert_eq!(local["result"], "connected", "{}", show(&r));
    assert_eq!(host(&local["seen_client"]), EXTERNAL_IP, "eTP Local keeps the client's address: {local}");
}

// ---- 7. From outside the cluster ----

#[test]
fn nodeport_loadbalancer_and_external_ips_from_outside_with_source_ranges() {
    let Some(lab) = Lab::new("nodeport_loadbalancer_and_external_ips_from_outside_with_source_ranges") else { return };
    lab.set_labels("x", "a", &["app: web"]);
    lab.set_labels("x", "b", &["app: web"]);
    let ports = "  selector: {app: web}\n  ports:\n  - {name: tcp, port: 80, targetPort: 80}\n  \
                 - {name: udp, port: 81, protocol: UDP, targetPort: 81}\n";
    let lb = |name: &str, cluster_ip: &str, ingress: &str, ranges: &str| {
        format!(
            "{}status:\n  loadBalancer:\n    ingress:\n    - ip: {ingress}\n---\n",
            service(
                name,
                &format!("  type: LoadBalancer\n  clusterIP: {cluster_ip}\n  loadBalancerSourceRanges: [{ranges}]\n{ports}")
            )
            .trim_end_matches("---\n")
        )
    };
    let fixed = [
        service("np", &format!("  type: NodePort\n  clusterIP: 10.96.0.21\n{ports}")),
        service("ext", &format!("  clusterIP: 10.96.0.22\n  externalIPs: [192.0.2.20]\n{ports}")),
        lb("lb", "10.96.0.23", "192.0.2.10", "172.18.0.0/24, 192.0.2.0/24"),
    ]
    .concat();
    lab.write("svc.yaml", &format!("{fixed}{}", lb("lb-denied", "10.96.0.24", "192.0.2.11", "198.51.100.0/24")));
    lab.up();
    let targets = [
        "nodeport/x/np:80",
        "nodeport/x/np:81/udp",
        "nodeport/x/lb:80",
        "lb/x/lb:80",
        "lb/x/lb:81/udp",
        "192.0.2.20:80",
        "192.0.2.20:81/udp",
        "lb/x/lb-denied:80",
        "lb/x/lb-denied:81/udp",
    ];
    let mut args = vec!["--from", "external", "--timeout-ms", "700", "--to"];
    args.extend(targets);
    let r = probe(&args);
    let mut bad = Vec::new();
    for p in &r {
        let denied = p["to"].as_str().unwrap().contains("lb-denied");
        let good = if denied {
            p["result"] == "timeout"
        } else {
            // eTP Cluster: masqueraded to the node address.
            p["result"] == "connected"
                && ["x/a", "x/b"].contains(&p["answered_by"].as_str().unwrap_or(""))
                && host(&p["seen_client"]) == NODE_IP
        };
        if !good {
            bad.push(p.to_string());
        }
    }
    assert!(bad.is_empty(), "wrong:\n{}\nall:\n{}", bad.join("\n"), show(&r));
    assert_eq!(r[3]["address"], "192.0.2.10:80", "{}", show(&r));
    assert_eq!(r[7]["address"], "192.0.2.11:80", "{}", show(&r));
    // Two Service ports, two NodePorts.
    assert_ne!(r[0]["address"], r[1]["address"], "{}", show(&r));
    // Source ranges that include the client let it in.
    lab.write(
        "svc.yaml",
        &format!("{fixed}{}", lb("lb-denied", "10.96.0.24", "192.0.2.11", "198.51.100.0/24, 172.18.0.100/32")),
    );
    let r = probe(&["--from", "external", "--to", "lb/x/lb-denied:80", "lb/x/lb-denied:81/udp"]);
    assert!(r.iter().all(|p| p["result"] == "connected" && host(&p["seen_client"]) == NODE_IP), "{}", show(&r));
}

/// Drops the switch counted for `reason`.
fn drops_for(reason: &str) -> u64 {
    let v: Value = serde_json::from_str(&ok(&["show", "stats", "--json"])).unwrap();
    v["drops"].as_array().unwrap().iter().filter(|d| d["reason"] == reason).map(|d| d["count"].as_u64().unwrap_or(0)).sum()
}

#[test]
fn load_balancer_source_ranges_refuse_pods_outside_them() {
    let Some(lab) = Lab::new("load_balancer_source_ranges_refuse_pods_outside_them") else { return };
    lab.set_labels("x", "a", &["app: web"]);
    lab.set_labels("x", "b", &["app: web"]);
    let lb = |ranges: &str| {
        service(
            "lb-pods",
            &format!(
                "  type: LoadBalancer\n  clusterIP: 10.96.0.25\n  loadBalancerSourceRanges: [{ranges}]\n  selector: {{app: web}}\n  \
                 ports:\n  - {{name: tcp, port: 80, targetPort: 80}}\n  - {{name: udp, port: 81, protocol: UDP, targetPort: 81}}\n"
            ),
        )
        .replacen("---\n", "status:\n  loadBalancer:\n    ingress:\n    - ip: 192.0.2.12\n---\n", 1)
    };
    // No pod is inside 198.51.100.0/24 yet: the lab gives addresses at `up`.
    lab.write("svc.yaml", &lb("198.51.100.0/24"));
    lab.up();
    let ips = pod_ips();
    // x/c inside (its /32), y/a and z/b outside; the ClusterIP of the same Service knows no ranges.
    lab.write("svc.yaml", &lb(&format!("198.51.100.0/24, {}/32", ips["x/c"])));
    let before = drops_for("lb_source_denied");
    let r = probe(&["--from", "x/c", "y/a", "z/b", "--timeout-ms", "700", "--to", "lb/x/lb-pods:80", "lb/x/lb-pods:81/udp", "svc/x/lb-pods:80"]);
    assert_eq!(r.len(), 9, "{}", show(&r));
    for p in &r {
        let inside = p["from"] == "x/c" || p["to"].as_str().unwrap().starts_with("svc/");
        if inside {
            assert_eq!(p["result"], "connected", "{p}\n{}", switch_counters());
            assert!(["x/a", "x/b"].contains(&p["answered_by"].as_str().unwrap_or("")), "{p}");
            // eTP Cluster masquerades what goes to the LoadBalancer IP, not to the ClusterIP.
            let want = if p["to"].as_str().unwrap().starts_with("svc/") { ips[p["from"].as_str().unwrap()].as_str() } else { NODE_IP };
            assert_eq!(host(&p["seen_client"]), want, "{p}");
        } else {
            assert_eq!(p["result"], "timeout", "outside the ranges: {p}");
        }
    }
    assert_eq!(r[0]["address"], "192.0.2.12:80", "{}", show(&r));
    // 4 probes refused (2 pods, TCP and UDP), each at least once (TCP retries its SYN).
    let denied = drops_for("lb_source_denied") - before;
    assert!(denied >= 4, "lb_source_denied counted {denied} times\n{}", switch_counters());
}

// ---- 8. UDP flows of a removed endpoint ----

/// Creates a UDP socket inside network namespace `ns` (it stays there when the thread ends).
fn udp_socket_in(ns: &str, port: u16) -> UdpSocket {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        UdpSocket::bind(("0.0.0.0", port)).expect("bind the client's fixed port")
    })
    .join()
    .expect("socket thread")
}

/// Sends one datagram to `dst` and returns the pod that answered within `within`.
fn ask(s: &UdpSocket, dst: &str, within: Duration) -> Option<String> {
    s.send_to(b"who\n", dst).expect("send");
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.recv_from(&mut buf) {
            Ok((n, _)) => return text(&buf[..n]).split_whitespace().next().map(str::to_string),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

#[test]
fn udp_flow_of_a_removed_endpoint_moves_to_another_backend_at_once() {
    let Some(lab) = Lab::new("udp_flow_of_a_removed_endpoint_moves_to_another_backend_at_once") else { return };
    lab.set_labels("x", "a", &["app: web"]);
    lab.set_labels("x", "b", &["app: web"]);
    lab.write(
        "svc.yaml",
        &service(
            "dns",
            "  clusterIP: 10.96.0.30\n  selector: {app: web}\n  ports:\n  - {name: udp, port: 81, protocol: UDP, targetPort: 81}\n",
        ),
    );
    lab.up();
    // One socket, one fixed 5-tuple: y/a:40053 -> 10.96.0.30:81.
    let s = udp_socket_in("psl_y_a", 40053);
    let dst = "10.96.0.30:81";
    let b1 = ask(&s, dst, Duration::from_secs(2)).expect("the ClusterIP answers");
    assert!(b1 == "x/a" || b1 == "x/b", "{b1}");
    for _ in 0..3 {
        assert_eq!(ask(&s, dst, Duration::from_secs(1)).as_deref(), Some(b1.as_str()), "the flow sticks to {b1}");
    }
    // B1 leaves the Service (its label changes; the pod and its server stay, so an entry left
    // behind would still be answered by it).
    let (ns, name) = b1.split_once('/').unwrap();
    lab.set_labels(ns, name, &["app: gone"]);
    // `lab probe` returns once the lab and the switch have applied the edit.
    let r = probe1("y/b", "svc/x/dns:81/udp", 1000);
    let other = if b1 == "x/a" { "x/b" } else { "x/a" };
    assert_eq!(r["answered_by"], other, "a new flow goes to the remaining backend: {r}");
    let started = Instant::now();
    let got = ask(&s, dst, Duration::from_secs(1));
    assert_eq!(
        got.as_deref(),
        Some(other),
        "the same 5-tuple must reach {other} within 1 s once {b1} left the Service (waited {:?})",
        started.elapsed()
    );
}

// ---- 9. Two flows that DNAT to one tuple ----

/// A TCP connection from the calling thread's namespace, bound to `port` with SO_REUSEADDR
/// (so several sockets share the source port, as Linux allows toward different destinations),
/// to `dst`; returns the answer line, or why there is none.
fn tcp_from_port(port: u16, dst: std::net::SocketAddrV4) -> anyhow::Result<(std::net::TcpStream, String)> {
    use anyhow::Context;
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::io::Read;
    let fd = socket::socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).context("socket")?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
    // connect() gives up after the send timeout: one SYN and no retransmission.
    let timeout = nix::sys::time::TimeVal::new(0, 900_000);
    socket::setsockopt(&fd, sockopt::SendTimeout, &timeout).context("SO_SNDTIMEO")?;
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::new(0, 0, 0, 0, port)).context("bind")?;
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(dst)).map_err(|e| match e {
        nix::errno::Errno::EINPROGRESS | nix::errno::Errno::EAGAIN => anyhow::anyhow!("connect: no SYN-ACK within 0.9 s"),
        e => anyhow::anyhow!("connect: {e}"),
    })?;
    let mut s = std::net::TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).context("read")?;
    let line = text(&buf[..n]).trim().to_string();
    Ok((s, line))
}

#[test]
fn flows_from_one_source_port_to_two_services_of_one_backend_stay_apart() {
    let Some(lab) = Lab::new("flows_from_one_source_port_to_two_services_of_one_backend_stay_apart") else { return };
    // Two Services whose only endpoint is x/a: a client using one source port for both has two
    // connections that DNAT to the same tuple (client:port -> x/a:port).
    let ports = "  selector: {pod: a}\n  ports:\n  - {name: tcp, port: 80, targetPort: 80}\n  \
                 - {name: udp, port: 81, protocol: UDP, targetPort: 81}\n";
    lab.write(
        "svc.yaml",
        &[
            service("one", &format!("  clusterIP: 10.96.0.31\n{ports}")),
            service("two", &format!("  clusterIP: 10.96.0.32\n{ports}")),
        ]
        .concat(),
    );
    lab.up();
    // UDP: one socket, one source port, a datagram to each Service: each answer must come
    // from the address it was sent to (a connected socket drops any other).
    let s = udp_socket_in("psl_y_a", 40111);
    let mut got = Vec::new();
    for dst in ["10.96.0.31:81", "10.96.0.32:81", "10.96.0.31:81", "10.96.0.32:81"] {
        s.send_to(b"who\n", dst).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 256];
        got.push(match s.recv_from(&mut buf) {
            Ok((n, from)) => (dst, from.to_string(), text(&buf[..n]).trim().to_string()),
            Err(e) => (dst, format!("no answer ({e})"), String::new()),
        });
    }
    let wrong: Vec<_> = got.iter().filter(|(dst, from, line)| from != dst || !line.starts_with("x/a ")).collect();
    // TCP: two sockets bound to one source port, one connection to each Service, both open.
    let results = std::thread::spawn(|| {
        let path = "/run/netns/psl_y_a";
        let fd = fs::File::open(path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        // The first connection stays open while the second is made.
        let first = tcp_from_port(40222, "10.96.0.31:80".parse().unwrap());
        let second = tcp_from_port(40222, "10.96.0.32:80".parse().unwrap());
        // The answer line, or the error as text (for the assertion's message).
        let line = |r: &anyhow::Result<(std::net::TcpStream, String)>| match r {
            Ok((_, l)) => l.clone(),
            Err(e) => format!("error: {e:#}"),
        };
        (line(&first), line(&second))
    })
    .join()
    .unwrap();
    let ok_line = |l: &String| l.starts_with("x/a ");
    let tcp_ok = ok_line(&results.0) && ok_line(&results.1);
    assert!(
        wrong.is_empty() && tcp_ok,
        "UDP from port 40111: answers must come from the address asked (sent to, answered from, line): wrong {wrong:?}, \
         all {got:?}\nTCP from port 40222 to 10.96.0.31:80 then 10.96.0.32:80, both must connect and be answered \
         by x/a: {results:?}\n{}",
        switch_counters()
    );
}

// ---- 10. Half-closed TCP ----

/// How long the test's connection stays half-closed and idle: more than the 120 s a FIN left a
/// connection's entry before (FIN_WAIT), as the issue asks ("still working after 3 minutes").
const HALF_CLOSED_FOR: Duration = Duration::from_secs(185);

#[test]
fn half_closed_tcp_through_a_service_still_works_after_three_minutes() {
    use std::io::{Read, Write};
    let test = "half_closed_tcp_through_a_service_still_works_after_three_minutes";
    let Some(lab) = Lab::new(test) else { return };
    lab.write(
        "svc.yaml",
        &service(
            "late",
            "  clusterIP: 10.96.0.34\n  selector: {pod: a}\n  ports:\n  - {name: tcp, port: 80, targetPort: 80}\n  \
             - {name: late, port: 9000, targetPort: 9000}\n",
        ),
    );
    lab.up();
    // The switch serves the Service once this answers.
    let r = probe1("y/a", "svc/x/late:80", 2000);
    assert_eq!(r["answered_by"], "x/a", "{r}");
    // Server in x/a: reads until the client's FIN, stays silent for HALF_CLOSED_FOR, then
    // answers on its still-open half and closes.
    let listener = labkit::in_netns("psl_x_a", || std::net::TcpListener::bind("0.0.0.0:9000").expect("bind 9000 in x/a"));
    let server = std::thread::spawn(move || -> Result<(), String> {
        let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let mut got = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.read_to_end(&mut got).map_err(|e| format!("server read until FIN: {e}"))?;
        if got != b"question\n" {
            return Err(format!("server got {:?}", text(&got)));
        }
        std::thread::sleep(HALF_CLOSED_FOR);
        s.write_all(b"late answer\n").map_err(|e| format!("server write after {HALF_CLOSED_FOR:?}: {e}"))?;
        Ok(())
    });
    // Client in y/a, through the ClusterIP: asks, half-closes, waits for the answer.
    let mut c = labkit::in_netns("psl_y_a", || std::net::TcpStream::connect("10.96.0.34:9000").expect("connect to the ClusterIP"));
    c.write_all(b"question\n").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    // Once the server's stack acknowledged the FIN, the switch holds the connection half-closed.
    std::thread::sleep(Duration::from_secs(1));
    let ct = ok(&["show", "conntrack", "--json"]);
    let ct: Value = serde_json::from_str(ct.trim()).unwrap();
    let entry = ct["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["original"].as_str().is_some_and(|o| o.contains("10.96.0.34:9000")))
        .cloned();
    let entry = entry.unwrap_or_else(|| panic!("no connection to 10.96.0.34:9000 in {ct}"));
    assert_eq!(entry["state"], "CLOSE_WAIT", "{entry}");
    c.set_read_timeout(Some(HALF_CLOSED_FOR + Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    let read = c.read_to_end(&mut answer);
    let served = server.join().unwrap();
    assert_eq!(served, Ok(()), "server side");
    assert!(read.is_ok(), "client read: {read:?} (got {:?})\n{}", text(&answer), switch_counters());
    assert_eq!(text(&answer), "late answer\n", "after {HALF_CLOSED_FOR:?} half-closed\n{}", switch_counters());
}

// ---- 11. Fragmented datagrams ----

/// The count of drop reason `reason` in `show stats --json`.
fn drops_of(reason: &str) -> u64 {
    let v: Value = serde_json::from_str(ok(&["show", "stats", "--json"]).trim()).unwrap();
    v["drops"].as_array().into_iter().flatten().filter(|d| d["reason"] == reason).filter_map(|d| d["count"].as_u64()).sum()
}

#[test]
fn a_3000_byte_udp_datagram_crosses_a_cluster_ip_both_ways_and_forged_fragments_do_not() {
    let test = "a_3000_byte_udp_datagram_crosses_a_cluster_ip_both_ways_and_forged_fragments_do_not";
    let Some(lab) = Lab::new(test) else { return };
    lab.write(
        "svc.yaml",
        &service(
            "big",
            "  clusterIP: 10.96.0.35\n  selector: {pod: a}\n  ports:\n  - {name: tcp, port: 80, targetPort: 80}\n  \
             - {name: big, port: 9001, protocol: UDP, targetPort: 9001}\n",
        ),
    );
    lab.up();
    let r = probe1("y/a", "svc/x/big:80", 2000);
    assert_eq!(r["answered_by"], "x/a", "{r}");
    // x/a echoes every datagram on 9001 (3,000 bytes: fragmented by its kernel at MTU 1,500).
    let server = labkit::in_netns("psl_x_a", || UdpSocket::bind("0.0.0.0:9001").expect("bind 9001 in x/a"));
    server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let echo = std::thread::spawn(move || -> Result<usize, String> {
        let mut buf = vec![0u8; 65536];
        let (n, from) = server.recv_from(&mut buf).map_err(|e| format!("server recv: {e}"))?;
        server.send_to(&buf[..n], from).map_err(|e| format!("server send: {e}"))?;
        Ok(n)
    });
    let client = udp_socket_in("psl_y_a", 40900);
    let datagram: Vec<u8> = (0..3000u32).map(|k| (k * 7 % 251) as u8).collect();
    client.send_to(&datagram, "10.96.0.35:9001").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = vec![0u8; 65536];
    let got = client.recv_from(&mut buf);
    let served = echo.join().unwrap();
    assert_eq!(served, Ok(3000), "the server got the whole datagram\n{}", switch_counters());
    let (n, from) = got.unwrap_or_else(|e| panic!("no echo: {e}\n{}", switch_counters()));
    assert_eq!(from.to_string(), "10.96.0.35:9001", "the answer comes from the Service address");
    assert_eq!(&buf[..n], &datagram[..], "the same 3,000 bytes back");
    // A later fragment of a datagram nobody sent, from y/a to x/b: dropped and counted.
    let before = drops_of("fragment_unknown");
    let ips = pod_ips();
    let (src, dst): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (ips["y/a"].parse().unwrap(), ips["x/b"].parse().unwrap());
    labkit::in_netns("psl_y_a", || {
        use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn};
        let fd = socket::socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Raw).expect("raw socket");
        let mut p = vec![0x45, 0, 0, 36, 0xbe, 0xef, 0x00, 0x04, 64, 17, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[0x5a; 16]);
        let to = SockaddrIn::from(std::net::SocketAddrV4::new(dst, 0));
        socket::sendto(std::os::fd::AsRawFd::as_raw_fd(&fd), &p, &to, MsgFlags::empty()).expect("send the forged fragment");
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    while drops_of("fragment_unknown") <= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(drops_of("fragment_unknown"), before + 1, "the forged fragment is dropped as fragment_unknown\n{}", switch_counters());
}

// ---- 12. NodePorts, LoadBalancer IPs and externalIPs from inside the node ----

#[test]
fn nodeport_loadbalancer_and_external_ips_from_pods_and_from_the_node_itself() {
    let test = "nodeport_loadbalancer_and_external_ips_from_pods_and_from_the_node_itself";
    let Some(lab) = Lab::new(test) else { return };
    lab.set_labels("x", "a", &["app: web"]);
    let ports = "  selector: {app: web}\n  ports:\n  - {name: tcp, port: 80, targetPort: 80}\n  \
                 - {name: udp, port: 81, protocol: UDP, targetPort: 81}\n";
    let svcs = [
        service("np", &format!("  type: NodePort\n  clusterIP: 10.96.0.41\n{ports}")),
        service("ext", &format!("  clusterIP: 10.96.0.42\n  externalIPs: [192.0.2.40]\n{ports}")),
        format!(
            "{}status:\n  loadBalancer:\n    ingress:\n    - ip: 192.0.2.41\n---\n",
            service("lb", &format!("  type: LoadBalancer\n  clusterIP: 10.96.0.43\n{ports}")).trim_end_matches("---\n")
        ),
    ]
    .concat();
    lab.write("svc.yaml", &svcs);
    lab.up();
    let targets = ["nodeport/x/np:80", "nodeport/x/np:81/udp", "192.0.2.40:80", "192.0.2.40:81/udp", "lb/x/lb:80", "lb/x/lb:81/udp"];
    // The node's routes and NodePort DNATs follow the tables on a thread of their own, a few
    // milliseconds after the tables are in force (kube-proxy: within its sync period): the
    // node's probes may be repeated for up to 3 s.
    let mut bad = Vec::new();
    for from in ["y/b", "node"] {
        let mut args = vec!["--from", from, "--timeout-ms", "1000", "--to"];
        args.extend(targets);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let wrong: Vec<String> = probe(&args)
                .into_iter()
                .filter(|p| !(p["result"] == "connected" && p["answered_by"] == "x/a"))
                .map(|p| format!("from {from}: {p}"))
                .collect();
            if wrong.is_empty() || from != "node" || Instant::now() > deadline {
                bad.extend(wrong);
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    assert!(bad.is_empty(), "not answered by the Service's pod:\n{}\n{}", bad.join("\n"), switch_counters());
}
