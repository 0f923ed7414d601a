//! What `podswitch cni install` writes, used by a runtime: the plugin and the reference meta
//! plugins `bandwidth` and `tuning` (then also `portmap`) chained after it, installed into a temporary
//! bin and conf directory with `podswitch_control::cni_install::install` (what the command
//! and the lab call), then driven by libcni (the library containerd and CRI-O use) through
//! that very `.conflist` with a runtime's capability arguments: `ips` (the address the runtime
//! wants: host-local must give exactly that one), `bandwidth` (shaping on the host veth, an ifb
//! device for egress) and `portMappings` (hostPort DNAT rules). ADD, CHECK, DEL (twice);
//! then uninstall removes the two files.
//!
//! The `.conflist` says CNI 1.0.0 (Debian's libcni 1.1.2 and reference plugins speak up to
//! 1.0.0) and `waitForSwitch: false` (no switch runs here: with_switch.rs covers the wait).
//! The runtime's side (host interfaces, iptables, ifb) is a namespace of the test's own.
//!
//! Needs root, the reference plugins, iptables and `go` with libcni (scripts/test.sh installs
//! `containernetworking-plugins`, `iptables`, `golang-go`, `golang-github-appc-cni-dev`); without them it
//! skips, or fails when CI is set. Everything is removed on drop, also when an assertion fails.
mod common;
#[path = "libcni_driver/build.rs"]
mod driver;

use std::path::{Path, PathBuf};
use std::process::Command;

use podswitch_control::cni_install::{self, Chained, InstallOptions, Removed, UninstallOptions};
use podswitch_control::naming;
use serde_json::{json, Value};

use common::{needs_root, sh, skip_or_fail};

const BIN: &str = env!("CARGO_BIN_EXE_podswitch-cni");
const REFERENCE: &str = "/usr/lib/cni";
const CHAINED: [&str; 3] = ["portmap", "bandwidth", "tuning"];

struct Env {
    prefix: String,
    dir: PathBuf,
    /// The network's name, host-local's lease directory under /var/lib/cni/networks.
    name: String,
}

impl Env {
    fn ns(&self, tag: &str) -> String {
        format!("{}-{tag}", self.prefix)
    }

    fn leases(&self) -> PathBuf {
        Path::new("/var/lib/cni/networks").join(&self.name)
    }

    fn leased(&self) -> Vec<String> {
        let mut l: Vec<String> = std::fs::read_dir(self.leases())
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("10.")).collect())
            .unwrap_or_default();
        l.sort();
        l
    }

    fn cleanup(&self) {
        for tag in ["node", "p0", "p1"] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(tag)]).output();
        }
        let _ = std::fs::remove_dir_all(self.leases());
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cleanup();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn an_installed_conflist_chains_the_meta_plugins_and_honours_the_runtimes_capability_args() {
    let test = "an_installed_conflist_chains_the_meta_plugins_and_honours_the_runtimes_capability_args";
    if !needs_root::root_or_skip(test) {
        return;
    }
    if let Some(p) = CHAINED.iter().chain(&["host-local"]).find(|p| !Path::new(REFERENCE).join(p).is_file()) {
        return skip_or_fail(test, &format!("{REFERENCE}/{p} is not installed (Debian package containernetworking-plugins)"));
    }
    if Command::new("iptables-save").arg("--version").output().is_err() {
        return skip_or_fail(test, "iptables is not installed (Debian package iptables; portmap writes its rules with it)");
    }
    let driver = match driver::build_driver() {
        Ok(d) => d,
        Err(why) => return skip_or_fail(test, &why),
    };
    let pid = std::process::id();
    let env = Env { prefix: format!("pscni{pid}-in"), dir: std::env::temp_dir().join(format!("pscni{pid}-in")), name: format!("pscni{pid}-install") };
    env.cleanup();
    let _ = std::fs::remove_dir_all(&env.dir);
    // The node's CNI bin dir: the reference plugins are there before podswitch is installed.
    let bin_dir = env.dir.join("opt-cni-bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    for p in CHAINED.iter().chain(&["host-local"]) {
        std::os::unix::fs::symlink(Path::new(REFERENCE).join(p), bin_dir.join(p)).unwrap();
    }
    let options = InstallOptions {
        bin_dir: bin_dir.clone(),
        conf_dir: env.dir.join("etc-cni-net.d"),
        name: env.name.clone(),
        cni_version: "1.0.0".into(),
        chain: vec![Chained::Bandwidth, Chained::Tuning],
        pod_cidr: Some("10.98.0.0/24".parse().unwrap()),
        mtu: Some(1450),
        data_dir: Some(env.dir.join("records")),
        wait_for_switch: false,
        ..InstallOptions::new(BIN)
    };
    let installed = cni_install::install(&options).unwrap();
    assert!(installed.binary_written && installed.conflist_written);
    assert_eq!(std::fs::read(&installed.binary).unwrap(), std::fs::read(BIN).unwrap());

    let node = env.ns("node");
    sh(&["ip", "netns", "add", &node]);
    let cache = env.dir.join("libcni-cache");
    let run = |cmd: &str, i: usize, capability_args: &Value| {
        let out = Command::new("ip")
            .args(["netns", "exec", &node])
            .arg(&driver)
            .arg(cmd)
            .arg(&installed.conflist)
            .arg(format!("ctr{i}"))
            .arg(format!("/run/netns/{}", env.ns(&format!("p{i}"))))
            .arg("eth0")
            .arg(format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{i};K8S_POD_INFRA_CONTAINER_ID=ctr{i}"))
            .arg(bin_dir.as_os_str())
            .arg(&cache)
            .arg(capability_args.to_string())
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let in_node = |args: &[&str]| sh(&[&["ip", "netns", "exec", &node][..], args].concat());
    let host0 = naming::pod_interface("default", "pod-0");
    let host1 = naming::pod_interface("default", "pod-1");
    // What a runtime passes for a pod with a requested address and bandwidth annotations:
    // libcni gives each plugin the ones its capabilities declare.
    let caps0 = json!({
        "ips": ["10.98.0.42/24"],
        "bandwidth": { "ingressRate": 8_000_000, "ingressBurst": 8_000_000, "egressRate": 8_000_000, "egressBurst": 8_000_000 }
    });

    sh(&["ip", "netns", "add", &env.ns("p0")]);
    let (ok, out, err) = run("add", 0, &caps0);
    assert!(ok, "libcni ADD pod-0: {err}");
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("libcni's result {out}: {e}"));
    assert_eq!(r["ips"][0]["address"], json!("10.98.0.42/32"), "the address the runtime asked for: {r}");
    assert_eq!(env.leased(), ["10.98.0.42"], "host-local allocated exactly that address");
    let pod_addrs = sh(&["ip", "-n", &env.ns("p0"), "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(pod_addrs.contains("inet 10.98.0.42/32"), "{pod_addrs}");
    // bandwidth: ingress shaping is a tbf qdisc on the host veth, egress an ifb device fed from
    // the host veth's ingress.
    let qdiscs = in_node(&["tc", "qdisc", "show", "dev", &host0]);
    assert!(qdiscs.contains("qdisc tbf"), "no tbf on {host0}: {qdiscs}");
    assert!(qdiscs.contains("qdisc ingress"), "no ingress qdisc on {host0}: {qdiscs}");
    let ifbs = in_node(&["ip", "-o", "link", "show", "type", "ifb"]);
    assert_eq!(ifbs.lines().count(), 1, "one ifb device for pod-0's egress: {ifbs}");
    // tuning ran last, on podswitch-cni's result passed on through bandwidth.
    assert_eq!(r["interfaces"][1]["name"], json!("eth0"), "{r}");

    // A pod without capability args: some address of the range, no shaping.
    sh(&["ip", "netns", "add", &env.ns("p1")]);
    let (ok, out, err) = run("add", 1, &json!({}));
    assert!(ok, "libcni ADD pod-1: {err}");
    let r1: Value = serde_json::from_str(&out).unwrap();
    let a1 = r1["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(a1.starts_with("10.98.0.") && a1 != "10.98.0.42/32", "{r1}");
    assert!(!in_node(&["tc", "qdisc", "show", "dev", &host1]).contains("tbf"));

    // Only pod-0: Debian 12's bandwidth (1.1.1) crashes on CHECK of a pod without bandwidth
    // arguments (containernetworking/plugins#1221, fixed in 1.9.1).
    let (ok, _, err) = run("check", 0, &caps0);
    assert!(ok, "libcni CHECK pod-0: {err}");
    // CHECK goes down the chain: bandwidth's own CHECK sees a shaping other than asked.
    in_node(&["tc", "qdisc", "replace", "dev", &host0, "root", "tbf", "rate", "16mbit", "burst", "1mb", "latency", "25ms"]);
    let (ok, _, err) = run("check", 0, &caps0);
    assert!(!ok, "CHECK passed with pod-0's tbf rate changed");
    assert!(err.to_lowercase().contains("rate"), "{err}");

    for (i, caps) in [(0, &caps0), (1, &json!({}))] {
        let (ok, _, err) = run("del", i, caps);
        assert!(ok, "libcni DEL pod-{i}: {err}");
        let (ok, _, err) = run("del", i, caps);
        assert!(ok, "libcni DEL pod-{i} again: {err}");
    }
    assert!(env.leased().is_empty(), "every address released: {:?}", env.leased());
    let links = in_node(&["ip", "-o", "link"]);
    assert!(!links.contains(&host0) && !links.contains(&host1) && !links.contains("ifb"), "left on the node: {links}");

    // portmap first in the chain: installing again rewrites only the conflist. Not CHECKed:
    // Debian 12's portmap (1.1.1) fails CHECK without IPv6 rules, containernetworking/plugins#819.
    let with_portmap = cni_install::install(&InstallOptions { chain: vec![Chained::Portmap, Chained::Bandwidth, Chained::Tuning], ..options.clone() }).unwrap();
    assert!(!with_portmap.binary_written && with_portmap.conflist_written, "{with_portmap:?}");
    let caps2 = json!({ "ips": ["10.98.0.43/24"], "portMappings": [{ "hostPort": 18080, "containerPort": 80, "protocol": "tcp" }] });
    let (ok, out, err) = run("add", 0, &caps2);
    assert!(ok, "libcni ADD pod-0 with a hostPort: {err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["ips"][0]["address"], json!("10.98.0.43/32"), "{out}");
    let nat = in_node(&["iptables-save", "-t", "nat"]);
    assert!(nat.contains("--dport 18080") && nat.contains("10.98.0.43:80"), "no hostPort DNAT to the pod: {nat}");
    let (ok, _, err) = run("del", 0, &caps2);
    assert!(ok, "libcni DEL pod-0 with a hostPort: {err}");
    let nat = in_node(&["iptables-save", "-t", "nat"]);
    assert!(!nat.contains("18080"), "hostPort rules left: {nat}");
    assert!(env.leased().is_empty(), "every address released: {:?}", env.leased());

    let removed = cni_install::uninstall(&UninstallOptions { bin_dir: bin_dir.clone(), conf_dir: options.conf_dir.clone(), conf_file: options.conf_file.clone() }).unwrap();
    assert_eq!(removed, Removed { conflist: Some(installed.conflist.clone()), binary: Some(installed.binary.clone()) });
    assert!(!installed.conflist.exists() && !installed.binary.exists());
    assert!(CHAINED.iter().all(|p| bin_dir.join(p).exists()), "the reference plugins stay");
}
