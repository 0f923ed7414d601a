//! `podswitch-cni` run as a runtime runs it: the built binary, the `CNI_*` environment, the
//! configuration on standard in, inside a "node" network namespace, with a pod namespace made
//! by the test and the reference `host-local` IPAM plugin (Debian's
//! `containernetworking-plugins`, in /usr/lib/cni; scripts/test.sh installs it).
//!
//! The switch is either absent (`waitForSwitch: false`, or a socket nobody listens on) or a
//! stand-in on a Unix socket of the test that answers `ports` and `status` as `podswitch run`
//! does (only the fields the plugin reads). Namespaces are named `pscni<pid>-…` and removed on
//! drop, also when a test fails. Needs root (see test-support/needs_root.rs); without
//! host-local the root tests skip, or fail when CI is set.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use common::{needs_root, sh, skip_or_fail};

const BIN: &str = env!("CARGO_BIN_EXE_podswitch-cni");

/// The directory with host-local, or None (the test then skips; under CI it fails).
fn cni_bin_dir(test: &str) -> Option<PathBuf> {
    for d in ["/usr/lib/cni", "/opt/cni/bin"] {
        if Path::new(d).join("host-local").is_file() {
            return Some(PathBuf::from(d));
        }
    }
    skip_or_fail(test, "the reference host-local plugin is not installed (Debian package containernetworking-plugins)");
    None
}

/// A network namespace of the test, removed on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("pscni{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        Netns(name)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    fn delete(&self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// One test's node, directories and configuration.
struct Setup {
    node: Netns,
    dir: PathBuf,
    bin_dir: PathBuf,
}

impl Setup {
    fn new(tag: &str, bin_dir: PathBuf) -> Self {
        let dir = std::env::temp_dir().join(format!("pscni{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Setup { node: Netns::new(&format!("{tag}-node")), dir, bin_dir }
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    fn records(&self) -> PathBuf {
        self.dir.join("records")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("switch.sock")
    }

    /// The configuration: host-local over 10.98.0.0/24, MTU 1450, records and the switch's
    /// socket in the test's directory.
    fn conf(&self, wait_for_switch: bool) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "podswitch-test",
            "type": "podswitch-cni",
            "mtu": 1450,
            "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.98.0.0/24" }]], "dataDir": self.ipam_dir() },
            "dataDir": self.records(),
            "controlSocket": self.socket(),
            "waitForSwitch": wait_for_switch,
            "switchWaitSeconds": 0.5
        })
    }

    /// Runs the plugin in the node's namespace; (exit status, standard out as JSON or null).
    fn run(&self, command: &str, container: &str, pod_ns: Option<&Netns>, pod: &str, conf: &Value) -> (i32, Value) {
        let netns = pod_ns.map(Netns::path).unwrap_or_default();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node.0, BIN])
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.bin_dir)
            .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), v)
    }

    fn host_links(&self) -> String {
        sh(&["ip", "-n", &self.node.0, "-o", "link"])
    }

    fn leased(&self) -> Vec<String> {
        std::fs::read_dir(self.ipam_dir().join("podswitch-test"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("10.")).collect())
            .unwrap_or_default()
    }

    fn recorded(&self) -> usize {
        std::fs::read_dir(self.records()).map_or(0, Iterator::count)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

fn host_if(pod: &str) -> String {
    podswitch_control::naming::pod_interface("default", pod)
}

#[test]
fn add_check_del_and_del_again_with_host_local() {
    if !needs_root::root_or_skip("add_check_del_and_del_again_with_host_local") {
        return;
    }
    let Some(bin_dir) = cni_bin_dir("add_check_del_and_del_again_with_host_local") else { return };
    let s = Setup::new("acd", bin_dir);
    let pod = Netns::new("acd-pod");
    let conf = s.conf(false);

    let (rc, res) = s.run("ADD", "ctr-a", Some(&pod), "web-0", &conf);
    assert_eq!(rc, 0, "ADD: {res}");
    assert_eq!(res["cniVersion"], json!("1.1.0"));
    let ifs = res["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 2, "{res}");
    assert_eq!(ifs[0]["name"], json!(host_if("web-0")));
    assert!(ifs[0].get("sandbox").is_none(), "the host side is on the host");
    assert_eq!(ifs[1]["name"], json!("eth0"));
    assert_eq!(ifs[1]["sandbox"], json!(pod.path()));
    assert_eq!(ifs[1]["mtu"], json!(1450));
    let addr = res["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(addr.starts_with("10.98.0.") && addr.ends_with("/32"), "{addr}");
    assert_eq!(res["ips"][0]["gateway"], json!("169.254.1.1"));
    assert_eq!(res["ips"][0]["interface"], json!(1));
    assert_eq!(res["routes"], json!([{ "dst": "0.0.0.0/0", "gw": "169.254.1.1" }]));
    let ip: std::net::Ipv4Addr = addr.trim_end_matches("/32").parse().unwrap();
    let mac = podswitch_control::naming::mac_string(podswitch_control::naming::pod_mac(ip));
    assert_eq!(ifs[1]["mac"], json!(mac));
    assert_eq!(s.leased(), [ip.to_string()], "host-local leased the address");
    assert_eq!(s.recorded(), 1);

    // What the kernel has: the pod side as the lab makes it, the host side up in the node.
    let eth0 = sh(&["ip", "-n", &pod.0, "-o", "addr", "show", "dev", "eth0"]);
    assert!(eth0.contains(&format!("inet {addr}")), "{eth0}");
    let link = sh(&["ip", "-n", &pod.0, "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("mtu 1450") && link.contains(&mac) && link.contains(",UP"), "{link}");
    let routes = sh(&["ip", "-n", &pod.0, "route"]);
    assert!(routes.contains("default via 169.254.1.1 dev eth0") && routes.contains("169.254.1.1 dev eth0 scope link"), "{routes}");
    let features = sh(&["ip", "netns", "exec", &pod.0, "ethtool", "-k", "eth0"]);
    assert!(features.contains("tx-checksumming: off"), "{features}");
    let host = sh(&["ip", "-n", &s.node.0, "-o", "link", "show", "dev", &host_if("web-0")]);
    assert!(host.contains("mtu 1450") && host.contains(",UP"), "{host}");

    // CHECK with the ADD's result passes; without the default route it fails.
    let checked = with_prev(&conf, &res);
    let (rc, out) = s.run("CHECK", "ctr-a", Some(&pod), "web-0", &checked);
    assert_eq!(rc, 0, "CHECK: {out}");
    sh(&["ip", "-n", &pod.0, "route", "del", "default"]);
    let (rc, out) = s.run("CHECK", "ctr-a", Some(&pod), "web-0", &checked);
    assert_ne!(rc, 0);
    assert_eq!(out["code"], json!(102), "{out}");
    assert!(out["msg"].as_str().unwrap().contains("route"), "{out}");
    sh(&["ip", "-n", &pod.0, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"]);

    // ADD into the plugin's own namespace (the node's) is refused.
    let (rc, out) = s.run("ADD", "ctr-x", Some(&s.node), "web-x", &conf);
    assert_eq!((rc != 0, &out["code"]), (true, &json!(4)), "{out}");
    assert_eq!(s.leased().len(), 1);

    // A second ADD on the same interface is refused (the specification's MUST) and changes nothing.
    let (rc, out) = s.run("ADD", "ctr-a", Some(&pod), "web-0", &conf);
    assert_ne!(rc, 0, "{out}");
    assert_eq!(s.leased().len(), 1);

    // DEL removes the pair and releases the address; a second DEL succeeds.
    let (rc, out) = s.run("DEL", "ctr-a", Some(&pod), "web-0", &checked);
    assert_eq!(rc, 0, "DEL: {out}");
    assert_eq!(out, Value::Null, "DEL prints nothing");
    assert!(!s.host_links().contains(&host_if("web-0")));
    assert!(!sh(&["ip", "-n", &pod.0, "-o", "link"]).contains("eth0"));
    assert!(s.leased().is_empty(), "the address is released");
    assert_eq!(s.recorded(), 0);
    let (rc, out) = s.run("DEL", "ctr-a", Some(&pod), "web-0", &checked);
    assert_eq!(rc, 0, "DEL again: {out}");

    // DEL after the namespace is gone, and without a namespace, succeeds and releases.
    let (rc, out) = s.run("ADD", "ctr-b", Some(&pod), "web-1", &conf);
    assert_eq!(rc, 0, "{out}");
    pod.delete();
    let (rc, out) = s.run("DEL", "ctr-b", Some(&pod), "web-1", &conf);
    assert_eq!(rc, 0, "DEL after the namespace went: {out}");
    assert!(s.leased().is_empty());
    let (rc, out) = s.run("DEL", "ctr-b", None, "web-1", &conf);
    assert_eq!(rc, 0, "DEL without CNI_NETNS: {out}");
    assert!(!s.host_links().contains("ps"), "the kernel removed the pair with the namespace");
}

/// A stand-in for `podswitch run`'s control socket: answers `status`, and `ports` with the
/// ports and pending reasons the test sets.
/// Attached ports (interface, owner: the pod key once the tables route to it).
type FakePorts = Vec<(String, Option<String>)>;

#[derive(Clone, Default)]
struct FakeSwitch {
    /// The attached ports and the pending map.
    ports: Arc<Mutex<(FakePorts, Value)>>,
}

impl FakeSwitch {
    fn start(path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let me = FakeSwitch::default();
        *me.ports.lock().unwrap() = (Vec::new(), json!({}));
        let state = me.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let answer = match req["cmd"].as_str() {
                    Some("ports") => {
                        let (names, pending) = state.ports.lock().unwrap().clone();
                        // The real answer's rows carry much more (ctl::replies::PortRow).
                        let rows: Vec<Value> = names.iter().map(|(n, owner)| json!({ "name": n, "owner": owner, "id": 3, "xdp_mode": "native" })).collect();
                        json!({ "ok": true, "ports": rows, "pending": pending })
                    }
                    Some("status") => json!({ "ok": true, "node": "test" }),
                    _ => json!({ "ok": false, "error": "unknown" }),
                };
                let _ = writeln!(conn, "{answer}");
            }
        });
        me
    }

    fn set(&self, ports: &[(String, Option<String>)], pending: Value) {
        *self.ports.lock().unwrap() = (ports.to_vec(), pending);
    }
}

#[test]
fn add_waits_for_the_switch_and_leaves_nothing_behind_when_it_does_not_attach() {
    let test = "add_waits_for_the_switch_and_leaves_nothing_behind_when_it_does_not_attach";
    if !needs_root::root_or_skip(test) {
        return;
    }
    let Some(bin_dir) = cni_bin_dir(test) else { return };
    let s = Setup::new("wait", bin_dir);
    let pod = Netns::new("wait-pod");
    let conf = s.conf(true);
    let nothing_left = |what: &str| {
        assert!(!s.host_links().contains(&host_if("web-0")), "{what}: the host side is gone");
        assert!(!sh(&["ip", "-n", &pod.0, "-o", "link"]).contains("eth0"), "{what}: the pod side is gone");
        assert!(s.leased().is_empty(), "{what}: the address is released");
        assert_eq!(s.recorded(), 0, "{what}: nothing recorded");
    };

    // No switch at all: not available (50), after the bounded wait.
    let t = std::time::Instant::now();
    let (rc, out) = s.run("ADD", "ctr-w", Some(&pod), "web-0", &conf);
    assert_ne!(rc, 0);
    assert_eq!(out["code"], json!(50), "{out}");
    assert!(out["msg"].as_str().unwrap().contains("not running"), "{out}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "the wait is bounded: {:?}", t.elapsed());
    nothing_left("switch absent");
    let (rc, out) = s.run("STATUS", "", None, "", &conf);
    assert_eq!((rc != 0, &out["code"]), (true, &json!(50)), "STATUS without a switch: {out}");

    // A switch that answers without attaching: try again later (11), with its reason.
    let switch = FakeSwitch::start(&s.socket());
    switch.set(&[], json!({ "default/web-0": "no Pod object yet" }));
    let (rc, out) = s.run("ADD", "ctr-w", Some(&pod), "web-0", &conf);
    assert_ne!(rc, 0);
    assert_eq!(out["code"], json!(11), "{out}");
    assert!(out["details"].as_str().unwrap().contains("no Pod object yet"), "{out}");
    nothing_left("switch pending");

    // A switch that has bound the port's socket but not yet published the tables that route
    // to it (no owner): not attached yet, the pod's first packet would not get through.
    switch.set(&[(host_if("web-0"), None)], json!({}));
    let (rc, out) = s.run("ADD", "ctr-w", Some(&pod), "web-0", &conf);
    assert_eq!((rc != 0, &out["code"]), (true, &json!(11)), "a port without its tables: {out}");
    nothing_left("port not in the tables");

    // A switch that attaches: ADD, CHECK (the port is checked too), STATUS succeed.
    switch.set(&[(host_if("web-0"), Some("default/web-0".to_string()))], json!({}));
    let (rc, res) = s.run("ADD", "ctr-w", Some(&pod), "web-0", &conf);
    assert_eq!(rc, 0, "ADD: {res}");
    let (rc, out) = s.run("CHECK", "ctr-w", Some(&pod), "web-0", &with_prev(&conf, &res));
    assert_eq!(rc, 0, "CHECK: {out}");
    let (rc, out) = s.run("STATUS", "", None, "", &conf);
    assert_eq!(rc, 0, "STATUS: {out}");
    // The switch loses the port: CHECK says so.
    switch.set(&[], json!({ "default/web-0": "interface gone" }));
    let (rc, out) = s.run("CHECK", "ctr-w", Some(&pod), "web-0", &with_prev(&conf, &res));
    assert_eq!((rc != 0, &out["code"]), (true, &json!(102)), "CHECK with the port detached: {out}");
    let (rc, out) = s.run("DEL", "ctr-w", Some(&pod), "web-0", &with_prev(&conf, &res));
    assert_eq!(rc, 0, "DEL: {out}");
    nothing_left("after DEL");
}

#[test]
fn gc_removes_the_attachments_the_runtime_no_longer_lists() {
    let test = "gc_removes_the_attachments_the_runtime_no_longer_lists";
    if !needs_root::root_or_skip(test) {
        return;
    }
    let Some(bin_dir) = cni_bin_dir(test) else { return };
    let s = Setup::new("gc", bin_dir);
    let (pod_a, pod_b) = (Netns::new("gc-a"), Netns::new("gc-b"));
    let conf = s.conf(false);
    assert_eq!(s.run("ADD", "ctr-a", Some(&pod_a), "a", &conf).0, 0);
    let (rc, res_b) = s.run("ADD", "ctr-b", Some(&pod_b), "b", &conf);
    assert_eq!(rc, 0, "{res_b}");
    assert_eq!(s.leased().len(), 2);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": "ctr-a", "ifname": "eth0" }]);
    let (rc, out) = s.run("GC", "", None, "", &gc);
    assert_eq!(rc, 0, "GC: {out}");
    assert_eq!(s.leased().len(), 1, "b's address is released");
    assert_eq!(s.recorded(), 1);
    assert!(!sh(&["ip", "-n", &pod_b.0, "-o", "link"]).contains("eth0"), "b's interface is gone");
    assert!(sh(&["ip", "-n", &pod_a.0, "-o", "link"]).contains("eth0"), "a's is kept");
    assert!(s.host_links().contains(&host_if("a")) && !s.host_links().contains(&host_if("b")));

    // GC is not for configurations before 1.1.0.
    let mut old = gc.clone();
    old["cniVersion"] = json!("1.0.0");
    let (rc, out) = s.run("GC", "", None, "", &old);
    assert_eq!((rc != 0, &out["code"]), (true, &json!(1)), "{out}");

    assert_eq!(s.run("DEL", "ctr-a", Some(&pod_a), "a", &conf).0, 0);
    assert!(s.leased().is_empty());
}

#[test]
fn version_and_protocol_errors_are_the_specifications() {
    let run = |env: &[(&str, &str)], stdin: &str| {
        let mut c = Command::new(BIN);
        c.env_clear().stdin(Stdio::piped()).stdout(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        // A plugin that refuses its environment exits without reading standard in: the write
        // may then meet a closed pipe, which is not the test's concern.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        (out.status.code().unwrap_or(-1), serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null))
    };
    let (rc, v) = run(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(rc, 0);
    assert_eq!(v, json!({ "cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"] }));
    let (rc, v) = run(&[], "");
    assert_ne!(rc, 0);
    assert_eq!(v["code"], json!(4), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("CNI_COMMAND"), "{v}");
    let (rc, v) = run(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")], "{}");
    assert_eq!((rc != 0, &v["code"]), (true, &json!(4)), "{v}");
    let env = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")];
    let (rc, v) = run(&env, "{not json");
    assert_eq!((rc != 0, &v["code"]), (true, &json!(6)), "{v}");
    let (rc, v) = run(&env, r#"{"cniVersion":"0.3.1","name":"n"}"#);
    assert_eq!((rc != 0, &v["code"]), (true, &json!(1)), "{v}");
    assert_eq!(v["cniVersion"], json!("1.1.0"), "every error names a version");
}
