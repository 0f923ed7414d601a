//! The two setups the benchmark compares, each a CNI network a runtime would call, on the same
//! namespaces ([`super::topo`]) and with the same IPAM (`host-local`, one fresh data directory
//! per turn, range [`POD_RANGE`]), MTU 1500 and CNI version [`CNI_VERSION`]:
//!
//! - `podswitch`: `podswitch-cni` (waiting for the switch, as it does by default) with a
//!   `podswitch run` in the node namespace under `taskset -c CORE` (`--cores CORE`,
//!   `--allow-missing-interfaces`, `--node-name node-1`, `--cni-data-dir` = the plugin's
//!   `dataDir`, `--frames N` when asked for), its manifest directory holding only the Node
//!   (pod CIDR = [`POD_RANGE`], InternalIP [`topo::NODE_IP`]): the switch wires each pod from
//!   the plugin's attachment record alone, no Pod object. Ready when it prints `podswitch
//!   running:`. Stopped with SIGTERM.
//! - `ptp`: the reference `ptp` plugin (`ipMasq` off) from [`REFERENCE_PLUGINS`]: a veth pair
//!   per pod routed by the node's kernel (the host side holds the range's gateway).
//!
//! A plugin runs as a runtime runs it: the binary itself (no shell, no `ip netns exec`), from
//! a thread inside the node namespace, with `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME=eth0`, `CNI_PATH` and `CNI_ARGS` (`IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;
//! K8S_POD_NAME=…`) added to this program's environment and the network configuration on
//! standard in; DEL gets the ADD's result as `prevResult`, as libcni sends it.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use super::topo::{self, NS_NODE};
use crate::sys::{self, Proc};

/// Where Debian's `containernetworking-plugins` puts the reference plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
/// The version of both configurations: the highest Debian 12's reference plugins speak.
pub const CNI_VERSION: &str = "1.0.0";
/// The range host-local gives addresses from (the peer gets the first, .2).
pub const POD_RANGE: &str = "10.244.0.0/16";
/// The Kubernetes namespace of the benchmark's pods.
pub const POD_NAMESPACE: &str = "bench";
pub const MTU: u32 = 1500;
/// How long podswitch-cni waits for the switch to attach a port.
const SWITCH_WAIT_S: u32 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setup {
    Podswitch,
    Ptp,
}

impl crate::harness::rounds::Contender for Setup {
    fn name(self) -> &'static str {
        Setup::name(self)
    }
}

impl Setup {
    pub const ALL: [Setup; 2] = [Setup::Podswitch, Setup::Ptp];

    pub fn name(self) -> &'static str {
        match self {
            Setup::Podswitch => "podswitch",
            Setup::Ptp => "ptp",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Setup::Podswitch => "podswitch-cni + podswitch run (host-local)",
            Setup::Ptp => "ptp + host-local (reference plugins)",
        }
    }
}

/// The programs a turn runs.
pub struct Programs {
    pub podswitch: PathBuf,
    pub podswitch_cni: PathBuf,
    /// The core of the switch's worker.
    pub core: usize,
    /// The switch's `--frames` (UMEM frames per worker), None: its default.
    pub switch_frames: Option<u32>,
}

/// The node's name and the manifest the switch reads (the Node alone).
const NODE_NAME: &str = "node-1";

fn node_manifest() -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE_NAME}}}\nspec: {{podCIDR: {POD_RANGE}, podCIDRs: [{POD_RANGE}]}}\n\
         status: {{addresses: [{{type: InternalIP, address: {}}}, {{type: Hostname, address: {NODE_NAME}}}]}}\n",
        topo::NODE_IP
    )
}

/// A pod as the runtime names it.
#[derive(Debug, Clone)]
pub struct PodId {
    pub container_id: String,
    pub name: String,
    pub netns: String,
}

/// What an ADD gave.
pub struct Added {
    /// Just before the plugin was started.
    pub started: Instant,
    /// When it had exited.
    pub returned: Instant,
    /// Its result.
    pub result: Value,
}

/// One setup in force for one turn.
pub struct Turn {
    pub setup: Setup,
    plugin: PathBuf,
    conf: Value,
    switch: Option<Proc>,
    /// The `podswitch` binary and the switch's control socket (podswitch setup).
    podswitch: PathBuf,
    socket: PathBuf,
}

impl Turn {
    /// Prepares `setup` in the node namespace (for podswitch: starts the switch and waits until
    /// it runs). `dir` is the turn's own directory (IPAM and attachment data, the switch's
    /// manifests, socket and log).
    pub fn start(setup: Setup, prog: &Programs, dir: &Path) -> Result<Turn> {
        std::fs::create_dir_all(dir)?;
        let ipam = json!({ "type": "host-local", "ranges": [[{ "subnet": POD_RANGE }]], "dataDir": dir.join("ipam") });
        match setup {
            Setup::Ptp => Ok(Turn {
                setup,
                plugin: Path::new(REFERENCE_PLUGINS).join("ptp"),
                conf: json!({ "cniVersion": CNI_VERSION, "name": "bench-ptp", "type": "ptp", "ipMasq": false, "mtu": MTU, "ipam": ipam }),
                switch: None,
                podswitch: prog.podswitch.clone(),
                socket: PathBuf::new(),
            }),
            Setup::Podswitch => {
                let records = dir.join("records");
                let manifests = dir.join("manifests");
                std::fs::create_dir_all(&records)?;
                std::fs::create_dir_all(&manifests)?;
                std::fs::write(manifests.join("node.yaml"), node_manifest())?;
                let socket = dir.join("switch.sock");
                let core = prog.core.to_string();
                let s = |p: &Path| p.to_str().map(String::from).ok_or_else(|| anyhow!("{} is not UTF-8", p.display()));
                let mut args = vec![
                    "ip".to_string(), "netns".into(), "exec".into(), NS_NODE.into(),
                    s(&prog.podswitch)?, "run".into(), "--manifests".into(), s(&manifests)?, "--node-name".into(), NODE_NAME.into(),
                    "--control-socket".into(), s(&socket)?, "--cores".into(), core, "--allow-missing-interfaces".into(),
                    "--cni-data-dir".into(), s(&records)?,
                    // An ADD's latency does not depend on it, and each run's directory is new:
                    // a state file per run would only pile up in /dev/shm.
                    "--state-file".into(), "none".into(),
                ];
                if let Some(f) = prog.switch_frames {
                    args.extend(["--frames".into(), f.to_string()]);
                }
                let mut switch = Proc::spawn("podswitch run", &args, dir.join("podswitch.log"))?;
                switch.wait_for_log("podswitch running:", Duration::from_secs(60))?;
                let conf = json!({
                    "cniVersion": CNI_VERSION, "name": "bench-podswitch", "type": "podswitch-cni", "mtu": MTU, "ipam": ipam,
                    "dataDir": records, "controlSocket": socket, "switchWaitSeconds": SWITCH_WAIT_S,
                });
                Ok(Turn { setup, plugin: prog.podswitch_cni.clone(), conf, switch: Some(switch), podswitch: prog.podswitch.clone(), socket })
            }
        }
    }

    /// ADD of `pod`; fails with the plugin's error object when it fails.
    pub fn add(&self, pod: &PodId) -> Result<Added> {
        let (started, returned, out) = self.invoke("ADD", pod, &self.conf)?;
        let result: Value = serde_json::from_str(&out).with_context(|| format!("ADD of {} printed no JSON result: {out:?}", pod.name))?;
        Ok(Added { started, returned, result })
    }

    /// DEL of `pod` with `prev` (its ADD's result) as `prevResult`.
    pub fn del(&self, pod: &PodId, prev: Option<&Value>) -> Result<()> {
        let mut conf = self.conf.clone();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        self.invoke("DEL", pod, &conf).map(drop)
    }

    /// Runs the plugin from inside the node namespace; when it started, when it ended and its
    /// standard out, or an error with its error object and standard error.
    fn invoke(&self, command: &str, pod: &PodId, conf: &Value) -> Result<(Instant, Instant, String)> {
        let stdin = conf.to_string();
        let plugin = &self.plugin;
        let netns = topo::netns_path(&pod.netns);
        let (started, returned, out) = topo::in_netns(NS_NODE, || {
            let started = Instant::now();
            let mut child = Command::new(plugin)
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", &pod.container_id)
                .env("CNI_NETNS", &netns)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", REFERENCE_PLUGINS)
                .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NAMESPACE};K8S_POD_NAME={}", pod.name))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("cannot start {}", plugin.display()))?;
            child.stdin.take().expect("piped").write_all(stdin.as_bytes())?;
            let out = child.wait_with_output()?;
            Ok((started, Instant::now(), out))
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let e: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
            bail!(
                "{} {command} of {} failed ({}): {} ({}; code {}){}",
                self.setup.name(),
                pod.name,
                out.status,
                e.get("msg").and_then(Value::as_str).unwrap_or(stdout.trim()),
                e.get("details").and_then(Value::as_str).unwrap_or(""),
                e.get("code").map_or_else(|| "?".into(), Value::to_string),
                match String::from_utf8_lossy(&out.stderr).trim() {
                    "" => String::new(),
                    err => format!("; stderr: {err}"),
                }
            );
        }
        Ok((started, returned, stdout))
    }

    /// The switch, if it has exited, with its log's tail.
    pub fn exited(&mut self) -> Option<String> {
        let p = self.switch.as_mut()?;
        p.exited().map(|st| format!("{} exited ({st}):\n    {}", p.name, p.log_tail(10)))
    }

    /// `podswitch show WHAT --json` of the turn's switch (Null without one or an answer).
    fn show(&self, what: &str) -> Value {
        let (Some(exe), Some(sock)) = (self.podswitch.to_str(), self.socket.to_str()) else { return Value::Null };
        if self.switch.is_none() {
            return Value::Null;
        }
        sys::run(&[exe, "show", what, "--json", "--socket", sock]).ok().and_then(|o| serde_json::from_str(&o).ok()).unwrap_or(Value::Null)
    }

    /// What the switch (podswitch setup) says of its frames, one line each: every worker's
    /// free UMEM frames and every port on which the kernel lost frames before the switch saw
    /// them (no free fill frame, RX ring full).
    pub fn switch_state(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .show("stats")
            .get("workers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|w| format!("switch worker {}: {} free UMEM frames", w.get("worker").unwrap_or(&Value::Null), w.get("free_frames").unwrap_or(&Value::Null)))
                    .collect()
            })
            .unwrap_or_default();
        let v = self.show("ports");
        let u = |p: &Value, k: &str| p.pointer(k).and_then(Value::as_u64).unwrap_or(0);
        let lossy: Vec<&Value> = v
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter(|p| u(p, "/kernel/rx_ring_full") + u(p, "/kernel/rx_dropped") > 0).collect())
            .unwrap_or_default();
        let lossy = lossy.into_iter().map(|p| {
                format!(
                    "switch port {} ({}): received {}, lost in the kernel {} (fill ring empty {}, rx ring full {})",
                    p.get("name").and_then(Value::as_str).unwrap_or("?"),
                    p.get("owner").and_then(Value::as_str).unwrap_or("?"),
                    u(p, "/rx_packets"),
                    u(p, "/kernel/rx_ring_full") + u(p, "/kernel/rx_dropped"),
                    u(p, "/kernel/rx_fill_ring_empty"),
                    u(p, "/kernel/rx_ring_full")
                )
            });
        lines.extend(lossy);
        lines
    }

    /// Stops the switch (if any); what went wrong on the way (notes).
    pub fn stop(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(mut p) = self.switch.take() {
            let (st, killed) = p.stop(sys::Signal::SIGTERM, false, Duration::from_secs(15));
            if killed {
                notes.push(format!("{} did not stop on SIGTERM and was killed", p.name));
            } else if let Some(st) = st.filter(|s| !s.success()) {
                notes.push(format!("{} exited with {st}: {}", p.name, p.log_tail(5)));
            }
        }
        notes
    }
}

/// The pod's address in an ADD result (its first `ips` entry, without the prefix length).
pub fn address(result: &Value) -> Result<std::net::Ipv4Addr> {
    let a = result.pointer("/ips/0/address").and_then(Value::as_str).ok_or_else(|| anyhow!("the ADD result has no address: {result}"))?;
    a.split('/').next().unwrap_or(a).parse().with_context(|| format!("the ADD result's address {a:?} is not IPv4"))
}
