//! `podswitch-cni` against the real switch: `podswitch run` in a node namespace of the test
//! (manifest directory source), two pods added through the plugin with `waitForSwitch`, and
//! the first packet between them through the switch.
//!
//! As on a cluster, the switch learns the pods' addresses from the plugin (its attachment
//! records, `--cni-data-dir`), not from the Pod objects: pod `a`'s object is there without
//! `status.podIP` (kubelet writes it after ADD returns), pod `b`'s comes only after its ADD.
//! A restarted switch adopts both from the records.
//!
//! Needs root, host-local and the `podswitch` binary next to this test's (built by
//! `cargo build --workspace`, as scripts/test.sh does); without them it skips, or fails when
//! CI is set. Namespaces are `pscni<pid>-sw-…`, removed with the switch on drop.
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{needs_root, sh, skip_or_fail};

const BIN: &str = env!("CARGO_BIN_EXE_podswitch-cni");

/// `podswitch` next to this test binary (target/debug/deps/.. = target/debug).
fn podswitch_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("podswitch");
    p.is_file().then_some(p)
}

struct Lab {
    prefix: String,
    dir: PathBuf,
    switch: Option<Child>,
}

impl Lab {
    fn ns(&self, tag: &str) -> String {
        format!("{}-{tag}", self.prefix)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("switch.sock")
    }

    fn cleanup(&mut self) {
        self.cleanup_switch();
        for tag in ["a", "b", "c", "node"] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(tag)]).output();
        }
    }

    fn cleanup_switch(&mut self) {
        if let Some(mut c) = self.switch.take() {
            // `ip netns exec` execs the switch: the child's pid is the switch's.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Its state file is in /dev/shm (memory), not in this test's directory.
        podswitch_control::naming::remove_switch_files(&self.socket());
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cleanup();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_plugin(lab: &Lab, command: &str, pod: &str, conf: &Value) -> (i32, Value) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.ns("node"), BIN])
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", format!("ctr-{pod}"))
        .env("CNI_NETNS", format!("/run/netns/{}", lab.ns(pod)))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni:/opt/cni/bin")
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME={pod}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

/// Pod `x/name`'s object, with `status.podIP` when `ip` is given.
fn write_pod(dir: &Path, name: &str, ip: Option<&str>) {
    let status = ip.map(|ip| format!("status: {{podIP: {ip}}}\n")).unwrap_or_default();
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: x}}\n\
         spec: {{containers: [{{name: c, image: i}}]}}\n{status}"
    );
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, dir.join(format!("x-{name}.yaml"))).unwrap();
}

#[test]
fn pods_added_through_the_plugin_are_attached_and_reach_each_other() {
    let test = "pods_added_through_the_plugin_are_attached_and_reach_each_other";
    if !needs_root::root_or_skip(test) {
        return;
    }
    if !Path::new("/usr/lib/cni/host-local").is_file() && !Path::new("/opt/cni/bin/host-local").is_file() {
        return skip_or_fail(test, "host-local is not installed (Debian package containernetworking-plugins)");
    }
    let Some(podswitch) = podswitch_binary() else {
        return skip_or_fail(test, "the podswitch binary is not built (cargo build --workspace)");
    };
    let pid = std::process::id();
    let mut lab = Lab { prefix: format!("pscni{pid}-sw"), dir: std::env::temp_dir().join(format!("pscni{pid}-sw")), switch: None };
    lab.cleanup();
    let manifests = lab.dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let node = lab.ns("node");
    sh(&["ip", "netns", "add", &node]);
    sh(&["ip", "-n", &node, "link", "set", "lo", "up"]);
    sh(&["ip", "-n", &node, "addr", "add", "172.18.0.2/32", "dev", "lo"]);
    for p in ["a", "b", "c"] {
        sh(&["ip", "netns", "add", &lab.ns(p)]);
        sh(&["ip", "-n", &lab.ns(p), "link", "set", "lo", "up"]);
    }
    // Pod a's object without status.podIP; pod b's object comes after its ADD.
    write_pod(&manifests, "a", None);
    let start_switch = |lab: &mut Lab| {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(lab.dir.join("switch.log")).unwrap();
        lab.switch = Some(
            Command::new("ip")
                .args(["netns", "exec", &node])
                .arg(&podswitch)
                .args(["run", "--cores", "1", "--allow-missing-interfaces", "--manifests"])
                .arg(&manifests)
                .arg("--control-socket")
                .arg(lab.socket())
                .arg("--cni-data-dir")
                .arg(lab.dir.join("records"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    };
    start_switch(&mut lab);
    let log_path = lab.dir.join("switch.log");
    let switch_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let conf = json!({
        "cniVersion": "1.1.0",
        "name": "podswitch-e2e",
        "type": "podswitch-cni",
        "dataDir": lab.dir.join("records"),
        // The range (the node's pod CIDR) and the MTU come from the switch, as with the
        // configuration `podswitch cni install` writes.
        "ipam": { "type": "host-local", "dataDir": lab.dir.join("ipam") },
        "controlSocket": lab.socket(),
        "switchWaitSeconds": 15
    });
    // STATUS answers once the switch is up.
    let wait_for_switch = |lab: &mut Lab| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while run_plugin(lab, "STATUS", "a", &conf).0 != 0 {
            let exited = lab.switch.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none() && Instant::now() < deadline, "the switch did not come up ({exited:?}); log:\n{}", switch_log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for_switch(&mut lab);

    let mut results = Vec::new();
    for (p, ip) in [("a", "10.244.0.2/32"), ("b", "10.244.0.3/32")] {
        let t = Instant::now();
        let (rc, res) = run_plugin(&lab, "ADD", p, &conf);
        assert_eq!(rc, 0, "ADD {p}: {res}; switch log:\n{}", switch_log());
        assert_eq!(res["ips"][0]["address"], json!(ip), "host-local gives the first addresses in order");
        eprintln!("ADD {p} returned after {:?} (the port attached)", t.elapsed());
        results.push(res);
    }
    // The switch lists both ports; the first packet gets through (ARP for 169.254.1.1 answered
    // by the switch, then a -> b).
    let ports = sh(&[podswitch.to_str().unwrap(), "show", "ports", "--json", "--socket", lab.socket().to_str().unwrap()]);
    for p in ["a", "b"] {
        assert!(ports.contains(&podswitch_control::naming::pod_interface("x", p)), "{ports}");
    }
    let ping = |lab: &Lab, what: &str| {
        let ping = Command::new("ip").args(["netns", "exec", &lab.ns("a"), "ping", "-c", "1", "-W", "2", "10.244.0.3"]).output().unwrap();
        assert!(ping.status.success(), "{what}: a -> b: {}; switch log:\n{}", String::from_utf8_lossy(&ping.stdout), switch_log());
    };
    ping(&lab, "right after the ADDs");
    // b's object arrives (with the address kubelet got from the ADD): nothing changes.
    write_pod(&manifests, "b", Some("10.244.0.3"));
    std::thread::sleep(Duration::from_millis(300));
    ping(&lab, "with b's Pod object");
    // A switch that restarts adopts the ports the plugin made.
    lab.cleanup_switch();
    start_switch(&mut lab);
    wait_for_switch(&mut lab);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ports = sh(&[podswitch.to_str().unwrap(), "show", "ports", "--json", "--socket", lab.socket().to_str().unwrap()]);
        if ["a", "b"].iter().all(|p| ports.contains(&podswitch_control::naming::pod_interface("x", p))) {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted switch did not adopt both pods: {ports}\n{}", switch_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    ping(&lab, "after the switch restarted");

    for (p, res) in ["a", "b"].iter().zip(&results) {
        let mut c = conf.clone();
        c["prevResult"] = res.clone();
        let (rc, out) = run_plugin(&lab, "CHECK", p, &c);
        assert_eq!(rc, 0, "CHECK {p}: {out}");
        let (rc, out) = run_plugin(&lab, "DEL", p, &c);
        assert_eq!(rc, 0, "DEL {p}: {out}");
    }
    let links = sh(&["ip", "-n", &node, "-o", "link"]);
    for p in ["a", "b"] {
        assert!(!links.contains(&podswitch_control::naming::pod_interface("x", p)), "{p}'s host interface is gone: {links}");
    }

    // The switch stops: ADD fails with code 50 and leaves nothing; DEL still works (the
    // range from the switch's last answer).
    let t = Instant::now();
    lab.cleanup_switch();
    eprintln!("switch stopped in {:?}", t.elapsed());
    let mut quick = conf.clone();
    quick["switchWaitSeconds"] = json!(1);
    let t = Instant::now();
    let (rc, out) = run_plugin(&lab, "ADD", "c", &quick);
    eprintln!("ADD without a switch failed in {:?}", t.elapsed());
    assert_ne!(rc, 0, "ADD without a switch: {out}");
    assert_eq!(out["code"], 50, "{out}");
    assert!(out["msg"].as_str().unwrap_or_default().contains("not running"), "{out}");
    let links = sh(&["ip", "-n", &node, "-o", "link"]);
    assert!(!links.contains(&podswitch_control::naming::pod_interface("x", "c")), "nothing left of c: {links}");
    assert!(cni_records_of(&lab).is_empty(), "no records left");
    let (rc, out) = run_plugin(&lab, "DEL", "c", &quick);
    assert_eq!(rc, 0, "DEL without a switch: {out}");
    let mut with_range = quick.clone();
    with_range["ipam"]["ranges"] = json!([[{ "subnet": "10.244.0.0/24" }]]);
    // With the range configured the plugin makes the pod first and waits: then undoes it all.
    let (rc, out) = run_plugin(&lab, "ADD", "c", &with_range);
    assert_eq!((rc, out["code"].clone()), (1, json!(50)), "{out}");
    let links = sh(&["ip", "-n", &node, "-o", "link"]);
    assert!(!links.contains(&podswitch_control::naming::pod_interface("x", "c")), "the undo removed c's pair: {links}");
    assert!(cni_records_of(&lab).is_empty(), "the undo removed c's record");
    let allocated = std::fs::read_dir(lab.dir.join("ipam").join("podswitch-e2e")).unwrap().filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("10.")).count();
    assert_eq!(allocated, 0, "the undo released c's address");
}

fn cni_records_of(lab: &Lab) -> Vec<String> {
    std::fs::read_dir(lab.dir.join("records")).map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".json") && n != "node.json").collect()).unwrap_or_default()
}
