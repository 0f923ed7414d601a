//! Test support: small topologies of network namespaces built by hand (no lab), a switch
//! process started on them, and sockets run inside a namespace from a thread.
//!
//! Every namespace a test makes carries the test's own prefix and is deleted when the
//! [`Topo`] drops, also when the test fails (Drop runs during unwinding).
#![allow(dead_code)]
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_podswitch");

#[path = "../../../test-support/needs_root.rs"]
mod needs_root;
pub use needs_root::root_or_skip;

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh_ok(args: &[&str]) -> bool {
    Command::new(args[0]).args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

pub fn pod_interface(ns: &str, name: &str) -> String {
    podswitch_control::naming::pod_interface(ns, name)
}

pub fn pod_mac(ip: Ipv4Addr) -> String {
    podswitch_control::naming::mac_string(podswitch_control::naming::pod_mac(ip))
}

/// A node namespace and pod namespaces, wired as the lab and a CNI would wire them.
pub struct Topo {
    pub prefix: String,
    pub dir: PathBuf,
    pods: Vec<(String, String, Ipv4Addr)>,
}

impl Topo {
    /// Namespaces `{prefix}-node` and `{prefix}-{ns}-{name}`; a fresh manifest directory.
    pub fn new(prefix: &str) -> Self {
        let t = Topo { prefix: prefix.into(), dir: std::env::temp_dir().join(format!("{prefix}-manifests")), pods: vec![] };
        t.cleanup();
        std::fs::create_dir_all(&t.dir).unwrap();
        sh(&["ip", "netns", "add", &t.node()]);
        sh(&["ip", "-n", &t.node(), "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &t.node(), "addr", "add", "172.18.0.2/32", "dev", "lo"]);
        t
    }

    pub fn node(&self) -> String {
        format!("{}-node", self.prefix)
    }

    pub fn pod_ns(&self, ns: &str, name: &str) -> String {
        format!("{}-{ns}-{name}", self.prefix)
    }

    pub fn socket(&self) -> PathBuf {
        std::env::temp_dir().join(format!("{}.sock", self.prefix))
    }

    /// Creates the pod's namespace and veth (unless `veth` is false) and writes its manifest.
    pub fn add_pod(&mut self, ns: &str, name: &str, ip: &str, veth: bool) {
        self.add_pod_queues(ns, name, ip, veth, 1);
    }

    /// [`Self::add_pod`] with a veth of `queues` rx and tx queues.
    pub fn add_pod_queues(&mut self, ns: &str, name: &str, ip: &str, veth: bool, queues: u32) {
        let ip: Ipv4Addr = ip.parse().unwrap();
        let q = queues.to_string();
        if veth {
            let pns = self.pod_ns(ns, name);
            let hif = pod_interface(ns, name);
            sh(&["ip", "netns", "add", &pns]);
            sh(&["ip", "-n", &pns, "link", "set", "lo", "up"]);
            sh(&[
                "ip", "-n", &self.node(), "link", "add", &hif, "numrxqueues", &q, "numtxqueues", &q, "type", "veth", "peer",
                "name", "eth0", "netns", &pns, "numrxqueues", &q, "numtxqueues", &q,
            ]);
            sh(&["ip", "-n", &pns, "link", "set", "eth0", "address", &pod_mac(ip)]);
            sh(&["ip", "-n", &pns, "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
            sh(&["ip", "-n", &pns, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", &pns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"]);
            sh(&["ip", "-n", &pns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"]);
            sh(&["ip", "netns", "exec", &pns, "ethtool", "-K", "eth0", "tx", "off"]);
            sh(&["ip", "netns", "exec", &pns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            sh(&["ip", "netns", "exec", &self.node(), "sysctl", "-qw", &format!("net.ipv6.conf.{hif}.disable_ipv6=1")]);
            sh(&["ip", "-n", &self.node(), "link", "set", &hif, "up"]);
        }
        self.pods.push((ns.into(), name.into(), ip));
        self.write_manifest(ns, name, ip);
    }

    pub fn write_manifest(&self, ns: &str, name: &str, ip: Ipv4Addr) {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec: {{containers: [{{name: c, image: i, ports: [{{containerPort: 80}}]}}]}}\n\
             status: {{podIP: {ip}}}\n"
        );
        write_atomic(&self.dir.join(format!("{ns}-{name}.yaml")), &yaml);
    }

    /// Removes the pod's manifest, then its namespace (and with it the veth).
    pub fn remove_pod(&mut self, ns: &str, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{ns}-{name}.yaml")));
        let _ = Command::new("ip").args(["netns", "del", &self.pod_ns(ns, name)]).output();
        self.pods.retain(|(n, m, _)| !(n == ns && m == name));
    }

    /// Starts `podswitch run` in the node namespace with extra `args`.
    pub fn start_switch(&self, args: &[&str]) -> Child {
        let log = std::fs::File::create(std::env::temp_dir().join(format!("{}-switch.log", self.prefix))).unwrap();
        Command::new("ip")
            .args(["netns", "exec", &self.node(), BIN, "run", "--manifests"])
            .arg(&self.dir)
            .arg("--control-socket")
            .arg(self.socket())
            .args(if args.contains(&"--cores") { &[][..] } else { &["--cores", "1"][..] })
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn switch_log(&self) -> String {
        std::fs::read_to_string(std::env::temp_dir().join(format!("{}-switch.log", self.prefix))).unwrap_or_default()
    }

    /// Waits until the switch has applied the manifest directory and has no pending port.
    pub fn wait_ready(&self) {
        let want = podswitch_control::manifests::dir_digest(&self.dir).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = self.show("status") {
                if v["applied_digest"] == want.as_str() && v["pending_ports"].as_array().is_some_and(std::vec::Vec::is_empty) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "switch not ready; log:\n{}", self.switch_log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `podswitch show WHAT --json` against this topology's switch.
    pub fn show(&self, what: &str) -> anyhow::Result<serde_json::Value> {
        let out = Command::new(BIN).args(["show", what, "--json", "--socket"]).arg(self.socket()).output()?;
        if !out.status.success() {
            anyhow::bail!("podswitch show {what}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    pub fn drop_count(&self, reason: &str) -> u64 {
        let v = self.show("stats").unwrap();
        v["drops"].as_array().unwrap().iter().find(|d| d["reason"] == reason).unwrap()["count"].as_u64().unwrap()
    }

    fn cleanup(&self) {
        podswitch_control::naming::remove_switch_files(&self.socket());
        let list = Command::new("ip").args(["netns", "list"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(&format!("{}-", self.prefix)) {
                if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
                    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                        let _ = Command::new("kill").arg(pid).status();
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(&format!("{}-", self.prefix)) {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        self.cleanup();
    }
}

pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap().to_string_lossy()));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Stops a switch with SIGTERM and waits for it.
pub fn stop(mut child: Child) -> std::process::ExitStatus {
    // `ip netns exec` execs the switch, so the child's pid is the switch's.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `f` on a thread inside network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}
