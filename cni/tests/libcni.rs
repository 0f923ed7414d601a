//! `podswitch-cni` driven by libcni, the Go library containerd and CRI-O run plugins with
//! (Debian's golang-github-appc-cni-dev 1.1.2, which speaks up to CNI 1.0.0: the `.conflist`
//! says 1.0.0). The driver (tests/libcni_driver/main.go) is built by the test with Debian's
//! Go, offline. The list chains the reference `tuning` plugin after podswitch-cni, so libcni
//! hands podswitch-cni's result on as `prevResult`, as a runtime does.
//!
//! Cases: ADD of three pods, CHECK, DEL twice, DEL after the namespace is gone; every address
//! released at the end. The switch wait is off (no switch runs here). Needs root, host-local,
//! tuning and `go` with libcni (scripts/test.sh installs `containernetworking-plugins`,
//! `golang-go`, `golang-github-appc-cni-dev`); without them it skips, or fails under CI.
mod common;
#[path = "libcni_driver/build.rs"]
mod driver;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use common::{needs_root, sh, skip_or_fail};

const BIN: &str = env!("CARGO_BIN_EXE_podswitch-cni");

struct Env {
    prefix: String,
    dir: PathBuf,
}

impl Env {
    fn ns(&self, tag: &str) -> String {
        format!("{}-{tag}", self.prefix)
    }

    fn cleanup(&self) {
        for tag in ["node", "p0", "p1", "p2"] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(tag)]).output();
        }
    }

    fn leased(&self) -> usize {
        std::fs::read_dir(self.dir.join("ipam/podswitch-libcni"))
            .map_or(0, |d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("10.")).count())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cleanup();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_runtime_using_libcni_adds_checks_and_deletes_pods() {
    let test = "a_runtime_using_libcni_adds_checks_and_deletes_pods";
    if !needs_root::root_or_skip(test) {
        return;
    }
    let Some(ref_dir) = ["/usr/lib/cni", "/opt/cni/bin"].into_iter().find(|d| Path::new(d).join("host-local").is_file() && Path::new(d).join("tuning").is_file()) else {
        return skip_or_fail(test, "host-local and tuning are not installed (Debian package containernetworking-plugins)");
    };
    let driver = match driver::build_driver() {
        Ok(d) => d,
        Err(why) => return skip_or_fail(test, &why),
    };
    let pid = std::process::id();
    let env = Env { prefix: format!("pscni{pid}-lc"), dir: std::env::temp_dir().join(format!("pscni{pid}-lc")) };
    env.cleanup();
    let _ = std::fs::remove_dir_all(&env.dir);
    let bin_dir = env.dir.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.join("podswitch-cni")).unwrap();
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "podswitch-libcni",
        "plugins": [
            {
                "type": "podswitch-cni",
                "mtu": 1450,
                "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.97.0.0/24" }]], "dataDir": env.dir.join("ipam") },
                "dataDir": env.dir.join("records"),
                "waitForSwitch": false
            },
            { "type": "tuning", "sysctl": { "net.ipv4.conf.eth0.rp_filter": "0" } }
        ]
    });
    let list_path = env.dir.join("10-podswitch.conflist");
    std::fs::write(&list_path, conflist.to_string()).unwrap();
    let cni_path = format!("{}:{ref_dir}", bin_dir.display());
    let cache = env.dir.join("cache");
    let node = env.ns("node");
    sh(&["ip", "netns", "add", &node]);
    let run = |cmd: &str, i: usize| {
        let netns = format!("/run/netns/{}", env.ns(&format!("p{i}")));
        let out = Command::new("ip")
            .args(["netns", "exec", &node])
            .arg(&driver)
            .arg(cmd)
            .arg(&list_path)
            .arg(format!("ctr{i}"))
            .arg(&netns)
            .arg("eth0")
            .arg(format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{i};K8S_POD_INFRA_CONTAINER_ID=ctr{i}"))
            .arg(&cni_path)
            .arg(&cache)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    for i in 0..3 {
        sh(&["ip", "netns", "add", &env.ns(&format!("p{i}"))]);
        let (ok, out, err) = run("add", i);
        assert!(ok, "libcni ADD pod-{i}: {err}");
        let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("libcni's result {out}: {e}"));
        assert_eq!(r["cniVersion"], json!("1.0.0"));
        assert_eq!(r["interfaces"][1]["name"], json!("eth0"), "{r}");
        assert_eq!(r["interfaces"][0]["name"], json!(podswitch_control::naming::pod_interface("default", &format!("pod-{i}"))), "{r}");
        assert_eq!(r["ips"][0]["interface"], json!(1), "{r}");
        assert_eq!(r["ips"][0]["gateway"], json!("169.254.1.1"), "{r}");
        // tuning, chained after podswitch-cni, found the interface in podswitch-cni's result.
        let rp = sh(&["ip", "netns", "exec", &env.ns(&format!("p{i}")), "sysctl", "-n", "net.ipv4.conf.eth0.rp_filter"]);
        assert_eq!(rp.trim(), "0");
    }
    assert_eq!(env.leased(), 3);
    for i in 0..3 {
        let (ok, _, err) = run("check", i);
        assert!(ok, "libcni CHECK pod-{i}: {err}");
    }
    // A broken pod fails libcni's CHECK.
    sh(&["ip", "-n", &env.ns("p1"), "link", "set", "eth0", "down"]);
    let (ok, _, err) = run("check", 1);
    assert!(!ok && err.contains("down"), "CHECK of a pod whose interface is down: {err}");

    let (ok, _, err) = run("del", 0);
    assert!(ok, "libcni DEL pod-0: {err}");
    let (ok, _, err) = run("del", 0);
    assert!(ok, "libcni DEL pod-0 again: {err}");
    sh(&["ip", "netns", "del", &env.ns("p1")]);
    let (ok, _, err) = run("del", 1);
    assert!(ok, "libcni DEL pod-1 after its namespace went: {err}");
    let (ok, _, err) = run("del", 2);
    assert!(ok, "libcni DEL pod-2: {err}");
    assert_eq!(env.leased(), 0, "every address released");
    assert!(!sh(&["ip", "-n", &node, "-o", "link"]).contains("ps"), "no host interface left");
}
