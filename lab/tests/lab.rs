//! Integration tests of `podswitch lab`, run against the built binaries (`podswitch`, which execs
//! `podswitch-lab`).
//!
//! Contract:
//! - They need root (they create network namespaces); otherwise each prints
//!   `SKIPPED: <test> needs root` to stderr and passes, or fails when `CI` is set
//!   ([`labkit::root_or_skip`]).
//! - One lab per machine: every test holds a [`labkit::Hold`] (this binary's mutex and the
//!   machine's flock), starts with `lab down` (a lab left over is removed) and tears its lab
//!   down when the hold drops, also when it fails.
//! - Tests marked "through the switch" run the lab's switch. The others bring
//!   the lab up with `PODSWITCH_LAB_NO_SWITCH=1`, where a pod reaches only itself (its own IP
//!   goes over its loopback), which is enough to test servers, probe, exec and live edits.
//! - Manifest directories are copies of `examples/` in a temporary directory, so tests can edit
//!   them.
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

mod labkit;
use labkit::{describe, lab_namespaces, ok_env as ok, pod_ips, podswitch_env as podswitch, probe, sh, state, text, Hold, Lab};

impl Lab {
    /// None (after printing SKIPPED) unless root; `example` is copied into a fresh directory.
    fn new(test: &str, example: &str) -> Option<Lab> {
        Hold::new("lab", test, example).map(Lab)
    }

    /// Like [`Lab::new`], for tests that need traffic through the switch.
    fn with_switch(test: &str, example: &str) -> Option<Lab> {
        Lab::new(test, example)
    }

    fn up(&self, no_switch: bool) -> String {
        ok(&["lab", "up", "--manifests", self.dir()], no_switch)
    }
}

fn host(addr: &str) -> &str {
    addr.rsplit_once(':').unwrap().0
}

/// A Pod manifest like those of the examples.
fn pod_yaml(ns: &str, name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n  containers:\n  \
         - name: c\n    image: registry.k8s.io/e2e-test-images/agnhost:2.45\n    ports:\n    \
         - {{name: serve-80-tcp, containerPort: 80, protocol: TCP}}\n    - {{name: serve-81-udp, containerPort: 81, protocol: UDP}}\n"
    )
}

/// Writes `pod-y-c.yaml` into the lab's directory: namespace y and its pod c with `labels`.
fn write_pod_y_c(lab: &Lab, labels: &str) {
    let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: y, labels: {{ns: y}}}}\n---\n{}", pod_yaml("y", "c", labels));
    fs::write(lab.dir.join("pod-y-c.yaml"), yaml).unwrap();
}

// ---- Tests that need no switch ----

#[test]
fn up_down_lifecycle_builds_and_removes_namespaces() {
    let Some(lab) = Lab::new("up_down_lifecycle_builds_and_removes_namespaces", "lab-2pods") else { return };
    let out = lab.up(true);
    assert!(out.contains("node node-1") && out.contains("x/a") && out.contains("10.244.0.2"), "{out}");
    assert_eq!(lab_namespaces(), vec!["psl-external", "psl-node", "psl_x_a", "psl_x_b"]);
    for (pod, ip, mac) in [("a", "10.244.0.2", "0a:58:0a:f4:00:02"), ("b", "10.244.0.3", "0a:58:0a:f4:00:03")] {
        let ns = format!("psl_x_{pod}");
        let addr = sh("ip", &["-n", &ns, "addr", "show", "dev", "eth0"]);
        assert!(addr.contains(&format!("inet {ip}/32 ")), "{addr}");
        assert!(addr.contains(mac), "{addr}");
        assert!(addr.contains("state UP"), "{addr}");
        assert!(!addr.contains("inet6"), "IPv6 must be off in the pod: {addr}");
        let routes = sh("ip", &["-n", &ns, "route"]);
        assert!(routes.contains("default via 169.254.1.1 dev eth0"), "{routes}");
        assert!(routes.contains("169.254.1.1 dev eth0 scope link"), "{routes}");
        let lo = sh("ip", &["-n", &ns, "link", "show", "lo"]);
        assert!(lo.contains("UP"), "{lo}");
        let k = sh("ip", &["netns", "exec", &ns, "ethtool", "-k", "eth0"]);
        assert!(k.contains("tx-checksumming: off"), "{k}");
        let v6 = sh("ip", &["netns", "exec", &ns, "cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"]);
        assert_eq!(v6.trim(), "1");
        // The host side, named by naming::pod_interface, is up in the node namespace.
        let host_if = podswitch_control::naming::pod_interface("x", pod);
        let link = sh("ip", &["-n", "psl-node", "addr", "show", "dev", &host_if]);
        assert!(link.contains("state UP") && !link.contains("inet"), "{link}");
        let v6 =
            sh("ip", &["netns", "exec", "psl-node", "cat", &format!("/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6")]);
        assert_eq!(v6.trim(), "1");
    }
    // The node's stack holds its InternalIP, on its uplink with the underlay's prefix.
    assert!(sh("ip", &["-n", "psl-node", "-4", "addr", "show", "dev", "psw-uplink"]).contains("172.18.0.2/24"));
    // The API view: loadable, with pod IPs and the node filled in.
    let view = podswitch_control::manifests::load_dir(Path::new("/run/podswitch/lab/api")).unwrap();
    let a = podswitch_control::model::pod_info(&view.pods["x/a"]).unwrap();
    assert_eq!(a.ip, Some("10.244.0.2".parse().unwrap()));
    assert_eq!(a.node_name.as_deref(), Some("node-1"));
    assert_eq!(view.namespaces.len(), 1);
    let yaml = fs::read_to_string("/run/podswitch/lab/api/cluster.yaml").unwrap();
    assert!(yaml.contains("podIPs:"), "{yaml}");
    let st = state();
    assert_eq!(st["node"]["name"], "node-1");
    assert_eq!(st["pods"]["x/b"]["ip"], "10.244.0.3");
    assert_eq!(st["pods"]["x/b"]["interface"], podswitch_control::naming::pod_interface("x", "b").as_str());
    let status: Value = serde_json::from_str(&ok(&["lab", "status", "--json"], true)).unwrap();
    assert_eq!(status["up"], true);
    assert_eq!(status["sync"], "applied");
    assert_eq!(status["supervisor"]["running"], true);
    assert_eq!(status["pods"].as_array().unwrap().len(), 2);

    let down = ok(&["lab", "down"], true);
    assert!(down.contains("psl_x_a") && down.contains("psl-node") && down.contains("/run/podswitch/lab"), "{down}");
    assert!(lab_namespaces().is_empty(), "{:?}", lab_namespaces());
    assert!(!Path::new("/run/podswitch/lab").exists());
    let again = ok(&["lab", "down"], true);
    assert!(again.contains("no lab is up"), "{again}");
    let status: Value = serde_json::from_str(&ok(&["lab", "status", "--json"], true)).unwrap();
    assert_eq!(status["up"], false);
}

#[test]
fn up_twice_refuses() {
    let Some(lab) = Lab::new("up_twice_refuses", "lab-2pods") else { return };
    lab.up(true);
    let o = podswitch(&["lab", "up", "--manifests", lab.dir()], true);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = text(&o.stderr);
    assert!(err.contains("a lab is already up") && err.contains("run `podswitch lab down` first"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The first lab is untouched.
    assert_eq!(lab_namespaces(), vec!["psl-external", "psl-node", "psl_x_a", "psl_x_b"]);
    assert_eq!(probe(&["--from", "x/a", "--to", "pod/x/a:80"])[0]["result"], "connected");
}

#[test]
fn pod_servers_answer_in_their_own_namespace() {
    let Some(lab) = Lab::new("pod_servers_answer_in_their_own_namespace", "lab-2pods") else { return };
    lab.up(true);
    let ips = pod_ips();
    for pod in ["x/a", "x/b"] {
        let mut args: Vec<String> = vec!["--from".into(), pod.into(), "--to".into()];
        for p in ["80/tcp", "80/udp", "81/tcp", "81/udp", "82/tcp", "82/udp"] {
            args.push(format!("pod/{pod}:{p}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let results = probe(&args);
        assert_eq!(results.len(), 6);
        for r in &results[..4] {
            assert_eq!(r["from"], pod);
            assert_eq!(r["result"], "connected", "{r}");
            assert_eq!(r["answered_by"], pod, "{r}");
            assert_eq!(r["seen_client"], r["source"], "{r}");
            assert_eq!(host(r["source"].as_str().unwrap()), ips[pod], "{r}");
        }
        for r in &results[4..] {
            assert_eq!(r["result"], "refused", "a closed port: {r}");
            assert!(r["answered_by"].is_null() && r["seen_client"].is_null(), "{r}");
        }
    }
    // By IP too, and the text matrix.
    let out = ok(&["lab", "probe", "--from", "x/b", "--to", &format!("{}:81/udp", ips["x/b"])], true);
    assert!(out.lines().nth(1).is_some_and(|l| l.starts_with("x/b") && l.trim_end().ends_with("ok")), "{out}");
    // Without a switch a pod does not reach another.
    let r = probe(&["--from", "x/a", "--to", "pod/x/b:80", "--timeout-ms", "300"]);
    assert_eq!(r[0]["result"], "timeout", "{:?}", r);
    assert!(r[0]["answered_by"].is_null());
}

#[test]
fn probe_rejects_bad_targets_and_sources() {
    let Some(lab) = Lab::new("probe_rejects_bad_targets_and_sources", "lab-2pods") else { return };
    lab.up(true);
    for args in [
        vec!["lab", "probe", "--to", "x/a:80"],
        vec!["lab", "probe", "--to", "pod/x/a:http"],
        vec!["lab", "probe", "--to", "pod/x/zz:80"],
        vec!["lab", "probe", "--from", "x/zz", "--to", "pod/x/a:80"],
        vec!["lab", "probe", "--to", "svc/x/web:80"],
    ] {
        let o = podswitch(&args, true);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", describe(&o));
        assert_eq!(text(&o.stderr).trim().lines().count(), 1, "{args:?}: {}", describe(&o));
        assert!(o.stdout.is_empty(), "{args:?}: {}", describe(&o));
    }
    let o = podswitch(&["lab", "probe", "--to", "svc/x/web:80"], true);
    assert!(text(&o.stderr).contains("Service x/web has no clusterIP in the manifests"), "{}", describe(&o));
}

#[test]
fn bad_manifests_fail_in_one_line_and_leave_nothing() {
    let Some(lab) = Lab::new("bad_manifests_fail_in_one_line_and_leave_nothing", "lab-2pods") else { return };
    let check = |what: &str, expect: &str| {
        let o = podswitch(&["lab", "up", "--manifests", lab.dir()], true);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", describe(&o));
        let err = text(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(err.contains(expect), "{what}: {err}");
        assert!(lab_namespaces().is_empty(), "{what}: {:?}", lab_namespaces());
        assert!(!Path::new("/run/podswitch/lab").exists(), "{what}");
    };
    fs::write(lab.dir.join("zz-bad.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: q\n").unwrap();
    check("bad YAML", "zz-bad.yaml, line 3: invalid YAML: unclosed bracket");
    fs::write(lab.dir.join("zz-bad.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: Q_q}\n").unwrap();
    check("bad name", "not a valid Kubernetes name");
    let dup = |name: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: x}}\nspec: {{containers: []}}\nstatus: {{podIP: 10.244.0.50}}\n")
    };
    fs::write(lab.dir.join("zz-bad.yaml"), format!("{}---\n{}", dup("p"), dup("q"))).unwrap();
    check("duplicate IP", "Pods x/p and x/q both have IP 10.244.0.50");
    fs::remove_file(lab.dir.join("zz-bad.yaml")).unwrap();
    let o = podswitch(&["lab", "up", "--manifests", "/nonexistent-psl-dir"], true);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("cannot read manifest directory /nonexistent-psl-dir"), "{}", describe(&o));
    assert!(lab_namespaces().is_empty());
    // And the directory, fixed, comes up.
    lab.up(true);
}

#[test]
fn exec_runs_inside_the_namespace() {
    let Some(lab) = Lab::new("exec_runs_inside_the_namespace", "lab-2pods") else { return };
    lab.up(true);
    let out = ok(&["lab", "exec", "x/b", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"], true);
    assert!(out.contains("10.244.0.3/32"), "{out}");
    let o = podswitch(&["lab", "exec", "x/a", "--", "sh", "-c", "exit 7"], true);
    assert_eq!(o.status.code(), Some(7));
    let out = ok(&["lab", "exec", "node", "--", "ip", "-o", "link"], true);
    assert!(out.contains(&podswitch_control::naming::pod_interface("x", "a")), "{out}");
    let o = podswitch(&["lab", "exec", "x/zz", "--", "true"], true);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("no network namespace psl_x_zz"), "{}", describe(&o));
}

#[test]
fn edits_are_applied_live_without_switch() {
    let Some(lab) = Lab::new("edits_are_applied_live_without_switch", "lab-2pods") else { return };
    lab.up(true);
    let before = pod_ips();
    // A new pod: namespace, veth, server; existing pods keep their IPs.
    fs::write(lab.dir.join("pod-x-c.yaml"), pod_yaml("x", "c", "pod: c")).unwrap();
    let r = probe(&["--from", "x/c", "--to", "pod/x/c:80", "pod/x/c:81/udp"]);
    assert!(r.iter().all(|r| r["result"] == "connected" && r["answered_by"] == "x/c"), "{r:?}");
    let after = pod_ips();
    assert_eq!(after["x/a"], before["x/a"]);
    assert_eq!(after["x/b"], before["x/b"]);
    assert_eq!(after["x/c"], "10.244.0.4");
    assert!(lab_namespaces().contains(&"psl_x_c".to_string()));
    // A label edit rewrites the API view.
    fs::write(lab.dir.join("pod-x-c.yaml"), pod_yaml("x", "c", "pod: c, role: db")).unwrap();
    probe(&["--from", "x/a", "--to", "pod/x/a:80"]);
    let view = podswitch_control::manifests::load_dir(Path::new("/run/podswitch/lab/api")).unwrap();
    let c = podswitch_control::model::pod_info(&view.pods["x/c"]).unwrap();
    assert_eq!(c.labels.get("role").map(String::as_str), Some("db"));
    assert_eq!(c.ip, Some("10.244.0.4".parse().unwrap()));
    // Other kinds go to the view unchanged.
    fs::write(
        lab.dir.join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: x}\nspec: {clusterIP: 10.96.0.10, selector: {pod: a}, ports: [{port: 80}]}\n",
    )
    .unwrap();
    let r = probe(&["--from", "x/a", "--to", "svc/x/web:80", "--timeout-ms", "300"]);
    assert_eq!(r[0]["to"], "svc/x/web:80", "{r:?}");
    assert!(fs::read_to_string("/run/podswitch/lab/api/cluster.yaml").unwrap().contains("clusterIP: \"10.96.0.10\""));
    // A bad file: probe says so at once, and the view in force stays.
    let view_before = fs::read_to_string("/run/podswitch/lab/api/cluster.yaml").unwrap();
    fs::write(lab.dir.join("zz-bad.yaml"), ": : :\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let o = podswitch(&["lab", "probe", "--to", "pod/x/a:80"], true);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        text(&o.stderr).contains("cannot apply the current manifests") && text(&o.stderr).contains("zz-bad.yaml"),
        "{}",
        describe(&o)
    );
    assert_eq!(fs::read_to_string("/run/podswitch/lab/api/cluster.yaml").unwrap(), view_before);
    assert!(fs::read_to_string("/run/podswitch/lab/logs/supervisor.log").unwrap().contains("zz-bad.yaml"));
    fs::remove_file(lab.dir.join("zz-bad.yaml")).unwrap();
    // Deleting a pod removes its namespace.
    fs::remove_file(lab.dir.join("pod-x-c.yaml")).unwrap();
    probe(&["--from", "x/a", "--to", "pod/x/a:80"]);
    assert!(!lab_namespaces().contains(&"psl_x_c".to_string()), "{:?}", lab_namespaces());
    assert!(!pod_ips().contains_key("x/c"));
    let host_if = podswitch_control::naming::pod_interface("x", "c");
    assert!(!sh("ip", &["-n", "psl-node", "-o", "link"]).contains(&host_if));
}

#[test]
fn node_object_gives_name_cidr_and_internal_ip() {
    let Some(lab) = Lab::new("node_object_gives_name_cidr_and_internal_ip", "lab-2pods") else { return };
    fs::write(
        lab.dir.join("node.yaml"),
        "apiVersion: v1\nkind: Node\nmetadata: {name: worker-7}\nspec: {podCIDR: 10.50.3.0/24}\n\
         status: {addresses: [{type: InternalIP, address: 172.18.0.9}]}\n",
    )
    .unwrap();
    let mut fixed = pod_yaml("x", "f", "pod: f");
    fixed.push_str("status: {podIP: 10.50.3.77}\n");
    fs::write(lab.dir.join("pod-x-f.yaml"), fixed).unwrap();
    let out = lab.up(true);
    assert!(out.contains("node worker-7 (pod CIDR 10.50.3.0/24, InternalIP 172.18.0.9"), "{out}");
    let ips = pod_ips();
    assert_eq!(ips["x/a"], "10.50.3.2");
    assert_eq!(ips["x/b"], "10.50.3.3");
    assert_eq!(ips["x/f"], "10.50.3.77");
    assert!(sh("ip", &["-n", "psl-node", "-4", "addr", "show", "dev", "psw-uplink"]).contains("172.18.0.9/24"));
    let view = podswitch_control::manifests::load_dir(Path::new("/run/podswitch/lab/api")).unwrap();
    let f = podswitch_control::model::pod_info(&view.pods["x/f"]).unwrap();
    assert_eq!(f.node_name.as_deref(), Some("worker-7"));
    let r = probe(&["--from", "x/f", "--to", "pod/x/f:81/udp"]);
    assert_eq!(r[0]["seen_client"].as_str().map(host), Some("10.50.3.77"), "{r:?}");
}

// ---- Tests through the switch (need `podswitch run`) ----

#[test]
fn nine_pod_matrix_through_the_switch() {
    let Some(lab) = Lab::with_switch("nine_pod_matrix_through_the_switch", "lab-9pods") else { return };
    let out = lab.up(false);
    assert!(out.contains("switch: pid"), "{out}");
    let ips = pod_ips();
    assert_eq!(ips.len(), 9);
    let before = port_counters();
    let mut args = vec!["--to".to_string()];
    for pod in ips.keys() {
        args.push(format!("pod/{pod}:80/tcp"));
        args.push(format!("pod/{pod}:81/udp"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let results = probe(&args);
    assert_eq!(results.len(), 9 * 18);
    let mut bad = Vec::new();
    for r in &results {
        let from = r["from"].as_str().unwrap();
        let to = r["to"].as_str().unwrap();
        let target_pod = to.trim_start_matches("pod/").split(':').next().unwrap();
        let good = r["result"] == "connected"
            && r["answered_by"] == target_pod
            && r["seen_client"] == r["source"]
            && host(r["source"].as_str().unwrap()) == ips[from];
        if !good {
            bad.push(r.to_string());
        }
    }
    assert!(bad.is_empty(), "{} of {} probes wrong:\n{}", bad.len(), results.len(), bad.join("\n"));
    // Each pod sent 16 probes and answered 16 (TCP: at least 3 frames each way; UDP: 1): its
    // port's counters rose by at least that. Some of those frames (a client's last ACK and
    // FIN) leave after the probe has its answer, so read the counters once they settle.
    let after = settled_port_counters();
    for pod in ips.keys() {
        let (rx0, tx0) = before[pod.as_str()];
        let (rx1, tx1) = after[pod.as_str()];
        assert!(rx1 - rx0 >= 8 * 4 * 2, "{pod}: rx_packets rose by {} only", rx1 - rx0);
        assert!(tx1 - tx0 >= 8 * 4 * 2, "{pod}: tx_packets rose by {} only", tx1 - tx0);
    }
    // The node's own stack reaches the pods too.
    let r = probe(&["--from", "node", "--to", "pod/x/a:80", "pod/z/c:81/udp"]);
    assert!(r.iter().all(|r| r["result"] == "connected"), "{r:?}");
    assert!(r.iter().all(|r| host(r["seen_client"].as_str().unwrap()) == "172.18.0.2"), "{r:?}");
}

/// `owner` -> (rx_packets, tx_packets) from `podswitch show ports --json`.
/// [`port_counters`] once two reads 300 ms apart agree (at most ~5 s): frames still in flight
/// when a probe returns (TCP's closing exchange) are counted too.
fn settled_port_counters() -> BTreeMap<String, (u64, u64)> {
    let mut last = port_counters();
    for _ in 0..16 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = port_counters();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

fn port_counters() -> BTreeMap<String, (u64, u64)> {
    let v: Value = serde_json::from_str(&ok(&["show", "ports", "--json"], true)).unwrap();
    v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let owner = p["owner"].as_str().unwrap_or("?").to_string();
            (owner, (p["rx_packets"].as_u64().unwrap(), p["tx_packets"].as_u64().unwrap()))
        })
        .collect()
}

/// Every port's `kernel` counters (frames the kernel lost before the switch saw them).
fn kernel_counters() -> Vec<Value> {
    let v: Value = serde_json::from_str(&ok(&["show", "ports", "--json"], true)).unwrap();
    v["ports"].as_array().unwrap().iter().map(|p| json_obj(&[("owner", p["owner"].clone()), ("kernel", p["kernel"].clone())])).collect()
}

fn json_obj(kv: &[(&str, Value)]) -> Value {
    Value::Object(kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

fn drop_count(reason: &str) -> u64 {
    let v: Value = serde_json::from_str(&ok(&["show", "stats", "--json"], true)).unwrap();
    v["drops"].as_array().unwrap().iter().find(|d| d["reason"] == reason).unwrap()["count"].as_u64().unwrap()
}

#[test]
fn spoofed_source_ip_reaches_nobody() {
    let Some(lab) = Lab::with_switch("spoofed_source_ip_reaches_nobody", "lab-9pods") else { return };
    lab.up(false);
    let ips = pod_ips();
    let (a, b) = (ips["x/a"].clone(), ips["x/b"].clone());
    // x/a resolves its gateway honestly first, so that what follows are IPv4 frames, not ARP
    // (an ARP request with x/b's address as sender is refused as well, but counts per frame).
    ok(&["lab", "exec", "x/a", "--", "ping", "-c", "1", "-W", "1", "169.254.1.1"], true);
    // x/a takes x/b's address as a second address and pings every other pod from it.
    ok(&["lab", "exec", "x/a", "--", "ip", "addr", "add", &format!("{b}/32"), "dev", "eth0"], true);
    let before_ports = port_counters();
    let before = drop_count("spoofed_source_ip");
    let mut sent = 0;
    for (pod, ip) in &ips {
        if pod == "x/a" || pod == "x/b" {
            continue;
        }
        let o = podswitch(&["lab", "exec", "x/a", "--", "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", &b, ip], true);
        assert!(!o.status.success(), "spoofed ping to {pod} was answered: {}", describe(&o));
        sent += 2;
    }
    let after_ports = port_counters();
    for pod in ips.keys().filter(|p| *p != "x/a") {
        assert_eq!(after_ports[pod.as_str()].1, before_ports[pod.as_str()].1, "{pod}'s port transmitted something during the spoofing");
    }
    let spoofed = drop_count("spoofed_source_ip") - before;
    assert!(spoofed >= sent, "anti-spoof counter rose by {spoofed}, {sent} spoofed pings were sent");
    // Its own address still works.
    let o = podswitch(&["lab", "exec", "x/a", "--", "ping", "-c", "1", "-W", "1", "-I", &a, &ips["z/c"]], true);
    assert!(o.status.success(), "{}", describe(&o));
}

#[test]
fn switch_stopped_isolates_pods() {
    let Some(lab) = Lab::with_switch("switch_stopped_isolates_pods", "lab-9pods") else { return };
    lab.up(false);
    let ips = pod_ips();
    let targets: Vec<String> =
        ips.keys().flat_map(|p| [format!("pod/{p}:80/tcp"), format!("pod/{p}:81/udp")]).collect();
    let mut args = vec!["--timeout-ms", "500", "--to"];
    args.extend(targets.iter().map(String::as_str));
    let out = ok(&["lab", "switch", "stop"], true);
    assert!(out.contains("stopped the switch"), "{out}");
    for r in probe(&args) {
        let target_pod = r["to"].as_str().unwrap().trim_start_matches("pod/").split(':').next().unwrap().to_string();
        if r["from"] == target_pod.as_str() {
            continue; // a pod reaches itself over its loopback
        }
        assert_eq!(r["result"], "timeout", "{r}");
    }
    ok(&["lab", "switch", "start"], true);
    let r = probe(&["--from", "x/a", "--to", "pod/z/c:80", "pod/y/b:81/udp"]);
    assert!(r.iter().all(|r| r["result"] == "connected"), "{r:?}");
}

#[test]
fn up_twice_refuses_and_down_cleans_with_switch() {
    let Some(lab) = Lab::with_switch("up_twice_refuses_and_down_cleans_with_switch", "lab-2pods") else { return };
    lab.up(false);
    let o = podswitch(&["lab", "up", "--manifests", lab.dir()], false);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(text(&o.stderr).contains("a lab is already up"), "{}", describe(&o));
    let status: Value = serde_json::from_str(&ok(&["lab", "status", "--json"], true)).unwrap();
    assert_eq!(status["switch"]["running"], true, "{status}");
    assert_eq!(status["switch"]["in_sync"], true, "{status}");
    let down = ok(&["lab", "down"], true);
    assert!(down.contains("switch (pid"), "{down}");
    assert!(lab_namespaces().is_empty(), "{:?}", lab_namespaces());
    assert!(!Path::new(podswitch_control::naming::DEFAULT_CONTROL_SOCKET).exists());
}

#[test]
fn live_edit_through_the_switch() {
    let Some(lab) = Lab::with_switch("live_edit_through_the_switch", "lab-2pods") else { return };
    lab.up(false);
    write_pod_y_c(&lab, "pod: c");
    let r = probe(&["--from", "x/a", "y/c", "--to", "pod/y/c:80", "pod/x/a:81/udp", "pod/x/b:80"]);
    assert_eq!(r.len(), 6);
    assert!(
        r.iter().all(|r| r["result"] == "connected" && r["seen_client"] == r["source"]),
        "{}",
        r.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("\n")
    );
    // The new pod's first frames (its ARP for the gateway) reach a socket with a filled fill
    // ring: the kernel lost nothing on any port.
    for p in kernel_counters() {
        let k = &p["kernel"];
        assert!(k.is_object(), "{p}");
        for f in ["rx_dropped", "rx_ring_full", "rx_invalid_descs", "tx_invalid_descs"] {
            assert_eq!(k[f], 0, "{p}");
        }
    }
    // A label edit on an existing pod is applied too (the switch re-reads the view).
    write_pod_y_c(&lab, "pod: c, tier: db");
    let r = probe(&["--from", "y/c", "--to", "pod/x/a:80"]);
    assert_eq!(r[0]["result"], "connected", "{r:?}");
}
