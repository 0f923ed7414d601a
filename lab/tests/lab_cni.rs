//! The lab's CNI network used by a runtime of the test's own: on a running lab node, a pod the
//! test makes itself (its namespace, a CNI ADD through libcni run inside the node with `lab exec
//! NODE`, the Pod object written to the manifest directory without `status.podIP`) reaches a lab
//! pod and is reached by it through the switch; its DEL removes its interfaces, its address
//! lease and the plugin's record. The lab's own pods: removing one runs its DEL (lease and
//! record released), and `lab down` removes everything even when the plugin's DEL fails.
//!
//! Contract:
//! - As the other lab tests: root (else SKIPPED), one lab per machine ([`labkit::Hold`]).
//! - The runtime's ADD waits for the switch (`waitForSwitch` on in its copy of the lab's conflist),
//!   so the port is attached before the Pod object exists (the switch follows the records).
//! - The runtime is libcni (the Go library containerd and CRI-O use), the driver of
//!   `cni/tests/libcni_driver`, built here offline with Debian's Go (its libcni 1.1.2 speaks up
//!   to CNI 1.0.0, the version the lab's conflist has); without Go or libcni the test is
//!   SKIPPED (under CI it fails).
//! - The test's pod is `x/own` in the namespace `psl_x_own` (the lab's naming, so that `lab
//!   down` removes it if the test fails half-way), container ID `own-1`.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

mod labkit;
#[path = "../../cni/tests/libcni_driver/build.rs"]
mod driver;
use labkit::{describe, ok, probe, sh, text, Hold};

const NETNS: &str = "psl_x_own";
const CONTAINER_ID: &str = "own-1";


/// The test's pod server (the lab's own `serve`), inside its namespace; killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test runtime's directory (conflist, result cache), removed on drop.
struct RuntimeDir(PathBuf);

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `podswitch lab exec node -- DRIVER CMD CONFLIST ...` with the node's `CNI_PATH` as `lab
/// exec` exports it.
fn libcni(driver: &Path, cmd: &str, conflist: &Path, cache: &Path) -> std::process::Output {
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=own;K8S_POD_INFRA_CONTAINER_ID=own-1";
    let script = r#"exec "$0" "$1" "$2" "$3" "$4" eth0 "$5" "$CNI_PATH" "$6""#;
    labkit::podswitch(&[
        "lab",
        "exec",
        "node",
        "--",
        "sh",
        "-c",
        script,
        driver.to_str().unwrap(),
        cmd,
        conflist.to_str().unwrap(),
        CONTAINER_ID,
        &format!("/run/netns/{NETNS}"),
        args,
        cache.to_str().unwrap(),
    ])
}

/// The first line a TCP server at `ip:port` sends to a client in the test's pod.
fn connect_from_own_pod(ip: &str, port: u16) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", NETNS, "timeout", "5", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{ip}/{port}; head -1 <&3"))
        .output()
        .unwrap();
    text(&o.stdout).trim().to_string()
}

#[test]
fn a_pod_added_by_a_runtime_of_the_tests_own_reaches_lab_pods_and_back() {
    let test = "a_pod_added_by_a_runtime_of_the_tests_own_reaches_lab_pods_and_back";
    let Some(hold) = Hold::new("cni", test, "lab-2pods") else { return };
    let driver = match driver::build_driver() {
        Ok(d) => d,
        Err(why) if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => panic!("{test}: {why}"),
        Err(why) => return eprintln!("SKIPPED: {test}: {why}"),
    };
    ok(&["lab", "up", "--manifests", hold.dir()]);

    // Where the lab's CNI network is, and what `lab exec NODE` exports.
    let status: Value = serde_json::from_str(&ok(&["lab", "status", "--json"])).unwrap();
    let conf_dir = status["cni"]["conf_dir"].as_str().unwrap_or_else(|| panic!("no cni.conf_dir: {status}")).to_string();
    let bin_dir = status["cni"]["bin_dir"].as_str().unwrap().to_string();
    assert_eq!(status["nodes"][0]["cni"], status["cni"], "{status}");
    assert!(Path::new(&bin_dir).join("podswitch-cni").is_file(), "{bin_dir}");
    let env = ok(&["lab", "exec", "node", "--", "sh", "-c", "echo \"$NETCONFPATH|$CNI_PATH\""]);
    assert_eq!(env.trim(), format!("{conf_dir}|{bin_dir}:/usr/lib/cni"));
    let mut list: Value =
        serde_json::from_slice(&fs::read(Path::new(&conf_dir).join("10-podswitch.conflist")).unwrap()).unwrap();
    assert_eq!(list["plugins"][0]["type"], "podswitch-cni", "{list}");
    // The lab's own ADDs do not wait for the switch (it builds pods before it starts the
    // switches); this runtime's does: ADD returns once the node's switch attached the port,
    // from the plugin's record alone.
    assert_eq!(list["cniVersion"], "1.0.0", "what cni install writes, and Debian's libcni speaks: {list}");
    assert_eq!(list["plugins"][0]["waitForSwitch"], false, "{list}");
    list["plugins"][0]["waitForSwitch"] = true.into();
    // The runtime's files, outside the manifest directory.
    let rt_dir = RuntimeDir(hold.dir.with_extension("runtime"));
    fs::create_dir_all(&rt_dir.0).unwrap();
    let conflist = rt_dir.0.join("own.conflist");
    let cache = rt_dir.0.join("libcni-cache");
    fs::write(&conflist, list.to_string()).unwrap();

    // The runtime's sandbox, then its ADD inside the node.
    sh("ip", &["netns", "add", NETNS]);
    sh("ip", &["-n", NETNS, "link", "set", "lo", "up"]);
    let o = libcni(&driver, "add", &conflist, &cache);
    assert!(o.status.success(), "libcni ADD: {}", describe(&o));
    let result: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&o)));
    let address = result["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("{result}"));
    let ip = address.split('/').next().unwrap().to_string();
    assert!(ip.starts_with("10.244.0.") && ip != "10.244.0.2" && ip != "10.244.0.3", "host-local leaves the lab's pods their addresses: {result}");
    let host_if = podswitch_control::naming::pod_interface("x", "own");
    assert!(sh("ip", &["-n", "psl-node", "-o", "link"]).contains(&host_if), "the host side is in the node");
    let record = Path::new(&conf_dir).join("../attachments").join(format!("{CONTAINER_ID}:eth0.json"));
    assert!(record.is_file(), "{}", record.display());
    let ports = ok(&["show", "ports", "--json"]);
    assert!(ports.contains(&host_if), "the switch attached the port before there is a Pod object: {ports}");

    // The pod's server, then its Pod object (no status.podIP: the lab reports the attachment's).
    let ready = rt_dir.0.join("own.ready");
    let server = Server(
        Command::new("ip")
            .args(["netns", "exec", NETNS, labkit::LAB_BIN, "serve", "--pod", "x/own", "--tcp", "80", "--ready-file"])
            .arg(&ready)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the test pod's server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    hold.write(
        "pod-x-own.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: own, namespace: x, labels: {pod: own}}\n\
         spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}\n",
    );
    // `probe` waits until the lab and the switch have applied the new content.
    let r = probe(&["--from", "x/a", "--to", &format!("{ip}:80")]);
    assert_eq!(r[0]["result"], "connected", "lab pod -> the test's pod: {r:?}");
    assert_eq!(r[0]["answered_by"], "x/own", "{r:?}");
    let view = podswitch_control::manifests::load_dir(Path::new("/run/podswitch/lab/api")).unwrap();
    let own = podswitch_control::model::pod_info(&view.pods["x/own"]).unwrap();
    assert_eq!(own.ip.map(|i| i.to_string()), Some(ip.clone()), "the API view has the attachment's address");
    let st: Value = serde_json::from_str(&ok(&["lab", "status", "--json"])).unwrap();
    assert!(st["pods"].as_array().unwrap().iter().all(|p| p["pod"] != "x/own"), "not the lab's pod: {st}");
    let answer = connect_from_own_pod("10.244.0.3", 80);
    assert!(answer.starts_with(&format!("x/b {ip}:")), "the test's pod -> lab pod: {answer:?}");

    // As kubelet tears a pod down: the Pod object goes, then the runtime's DEL. Both ends, the
    // lease and the record go; the lab's pods stay.
    fs::remove_file(hold.dir.join("pod-x-own.yaml")).unwrap();
    let r = probe(&["--from", "x/a", "--to", "pod/x/b:80"]);
    assert_eq!(r[0]["result"], "connected", "{r:?}");
    drop(server);
    let o = libcni(&driver, "del", &conflist, &cache);
    assert!(o.status.success(), "libcni DEL: {}", describe(&o));
    assert!(!sh("ip", &["-n", "psl-node", "-o", "link"]).contains(&host_if));
    assert!(!sh("ip", &["-n", NETNS, "-o", "link"]).contains("eth0"));
    assert!(!record.exists());
    assert!(!Path::new(&conf_dir).join("../ipam/podswitch").join(&ip).exists(), "host-local released {ip}");
    // A second DEL (the runtime retrying) succeeds.
    let o = libcni(&driver, "del", &conflist, &cache);
    assert!(o.status.success(), "libcni DEL again: {}", describe(&o));
    sh("ip", &["netns", "del", NETNS]);
}

#[test]
fn removed_pods_go_through_del_and_lab_down_cleans_up_when_del_fails() {
    let test = "removed_pods_go_through_del_and_lab_down_cleans_up_when_del_fails";
    let Some(hold) = Hold::new("cni", test, "lab-2pods") else { return };
    labkit::ok_env(&["lab", "up", "--manifests", hold.dir()], true);
    let status: Value = serde_json::from_str(&ok(&["lab", "status", "--json"])).unwrap();
    let node_dir = Path::new(status["cni"]["conf_dir"].as_str().unwrap()).parent().unwrap().to_path_buf();
    let lease = |ip: &str| node_dir.join("ipam/podswitch").join(ip).exists();
    let record = |pod: &str| node_dir.join(format!("attachments/psl_x_{pod}:eth0.json")).exists();
    assert!(lease("10.244.0.2") && lease("10.244.0.3"), "host-local leased the planned addresses");
    assert!(record("a") && record("b"));

    // The supervisor removes x/b: its DEL releases the lease and the plugin's record.
    let yaml = fs::read_to_string(hold.dir.join("cluster.yaml")).unwrap();
    let start = yaml.find("apiVersion: v1\nkind: Pod\nmetadata:\n  name: b").unwrap_or_else(|| panic!("{yaml}"));
    hold.write("cluster.yaml", yaml[..start].trim_end_matches("---\n"));
    probe(&["--from", "x/a", "--to", "pod/x/a:80"]);
    assert!(!lease("10.244.0.3") && !record("b"), "x/b's DEL ran");
    assert!(lease("10.244.0.2") && record("a"));

    // A plugin whose DEL fails: lab down says so and removes everything all the same.
    let plugin = Path::new(status["cni"]["bin_dir"].as_str().unwrap()).join("podswitch-cni");
    fs::remove_file(&plugin).unwrap();
    fs::write(&plugin, "#!/bin/sh\necho '{\"cniVersion\":\"1.1.0\",\"code\":11,\"msg\":\"try again later\",\"details\":\"broken on purpose\"}'\nexit 1\n").unwrap();
    sh("chmod", &["755", plugin.to_str().unwrap()]);
    let out = ok(&["lab", "down"]);
    assert!(
        out.contains("what pod x/a left after its CNI DEL failed") && out.contains("code 11: try again later (broken on purpose)"),
        "{out}"
    );
    assert!(labkit::lab_namespaces().is_empty(), "{:?}", labkit::lab_namespaces());
    assert!(!Path::new("/run/podswitch/lab").exists());
}
