//! The lab's files under `/run/podswitch/lab` and the state record.
//!
//! Contract:
//! - `state.json`: the [`State`] (manifest directory, the nodes, pods with their IPs, nodes and
//!   interfaces, the `external` host, the underlay, every process the lab started). The first
//!   node is `node` with its switch in `switch` (the one-node lab's fields, unchanged); further
//!   nodes of a lab with several are in `more_nodes`, each with its own switch process. Written atomically (temporary file +
//!   rename), so readers never need the lock; writers (up, supervise, switch start/stop, down)
//!   hold [`lock`] around read-modify-write.
//! - `synced`: the `manifests::dir_digest` of the manifest directory that the lab has applied
//!   (pods built, API view written). `sync-error`: `DIGEST\nMESSAGE` of the last content that
//!   could not be applied; absent when the last attempt succeeded.
//! - `api/cluster.yaml`: the API view the switch reads ([`super::apiview`]).
//! - `logs/`: one log per process (`switch.log`, `supervisor.log`, `pod-NS_NAME.log`).
//! - `ready/`: a pod server writes `ready/psl_NS_NAME` holding its pid once its sockets are bound.
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::procs::ProcRef;
use podswitch_control::model::L4Proto;

pub const RUN_DIR: &str = "/run/podswitch";
pub const LAB_DIR: &str = "/run/podswitch/lab";
/// The namespace of the lab's first node (of its only one, usually).
pub const NODE_NETNS: &str = "psl-node";
/// The namespace of the underlay (the data-centre network: a bridge joining the nodes' uplinks
/// and `external`) of a lab with several nodes.
pub const UNDERLAY_NETNS: &str = "psl-underlay";
/// The bridge in [`UNDERLAY_NETNS`].
pub const UNDERLAY_BRIDGE: &str = "br0";
/// The namespace of the `external` client: a host outside the cluster, behind the uplink.
pub const EXTERNAL_NETNS: &str = "psl-external";
/// The switch's uplink port, in the node namespace; its peer is `eth0` in [`EXTERNAL_NETNS`].
pub const UPLINK_IF: &str = "psw-uplink";
/// Name prefixes of every namespace the lab creates (the node's, the pods').
pub const NETNS_PREFIXES: [&str; 2] = ["psl-", "psl_"];
/// Set to `1` to bring a lab up without starting the switch (a testing aid).
pub const NO_SWITCH_ENV: &str = "PODSWITCH_LAB_NO_SWITCH";

pub fn lab_dir() -> PathBuf {
    PathBuf::from(LAB_DIR)
}
pub fn state_path() -> PathBuf {
    lab_dir().join("state.json")
}
pub fn logs_dir() -> PathBuf {
    lab_dir().join("logs")
}
pub fn api_dir() -> PathBuf {
    lab_dir().join("api")
}
/// The Leases of the switches' L2 announcements (`lab up --l2-announce`), shared by every node.
pub fn leases_dir() -> PathBuf {
    lab_dir().join("leases")
}
pub fn ready_dir() -> PathBuf {
    lab_dir().join("ready")
}
pub fn synced_path() -> PathBuf {
    lab_dir().join("synced")
}
pub fn sync_error_path() -> PathBuf {
    lab_dir().join("sync-error")
}
fn lock_path() -> PathBuf {
    lab_dir().join(".lock")
}

/// The network namespace of pod `namespace/name`.
pub fn pod_netns(namespace: &str, name: &str) -> String {
    format!("psl_{namespace}_{name}")
}

/// The namespace of lab node `name`: [`NODE_NETNS`] for the first node, `psl-node-NAME` for the
/// others.
pub fn node_netns(name: &str, first: bool) -> String {
    if first {
        NODE_NETNS.to_string()
    } else {
        format!("{NODE_NETNS}-{name}")
    }
}

/// The switch log of lab node `name`: `switch.log` for the first node, `switch-NAME.log` for the
/// others.
pub fn switch_log(name: &str, first: bool) -> PathBuf {
    if first {
        logs_dir().join("switch.log")
    } else {
        logs_dir().join(format!("switch-{name}.log"))
    }
}

/// The log file of the server of the pod whose namespace is `netns`.
pub fn pod_log(netns: &str) -> PathBuf {
    logs_dir().join(format!("pod-{}.log", netns.trim_start_matches("psl_")))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Absolute path of the manifest directory the lab follows.
    pub manifests: PathBuf,
    pub node: NodeState,
    /// Pods keyed `namespace/name`.
    pub pods: BTreeMap<String, PodState>,
    pub switch: SwitchState,
    pub supervisor: Option<ProcRef>,
    /// Seconds since the epoch when `lab up` ran.
    pub created_unix: u64,
    /// The `external` client and the uplink it hangs on (absent in state files of older labs).
    #[serde(default)]
    pub external: Option<ExternalState>,
    /// The nodes after the first (sorted by name), each with its own switch; empty in a
    /// one-node lab.
    #[serde(default)]
    pub more_nodes: Vec<MoreNode>,
    /// The underlay namespace ([`UNDERLAY_NETNS`]) when the lab has several nodes.
    #[serde(default)]
    pub underlay: Option<String>,
}

/// A node after the first: its record and its switch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoreNode {
    pub node: NodeState,
    /// Where its switch listens (`naming::lab_node_control_socket`).
    pub control_socket: PathBuf,
    /// Its running switch, if any.
    pub process: Option<ProcRef>,
}

/// One node's switch as the lab runs it (a view over [`State`]).
#[derive(Debug, Clone)]
pub struct NodeSwitch {
    pub name: String,
    pub netns: String,
    pub internal_ip: Ipv4Addr,
    pub pod_cidr: String,
    pub control_socket: PathBuf,
    pub process: Option<ProcRef>,
    pub log: PathBuf,
}

/// The `external` host: `eth0` in [`EXTERNAL_NETNS`], peer of the switch's uplink port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalState {
    pub netns: String,
    /// Its address on the node's /24 (`IP/24` on `eth0`); its default route is the node.
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    /// `naming::pod_mac(ip)`, given to the switch as `--uplink-gateway-mac`.
    pub mac: String,
    /// The uplink port in the node namespace (`--uplink`).
    pub uplink: String,
    /// The node address it routes everything through.
    pub gateway: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub pod_cidr: String,
    pub internal_ip: Ipv4Addr,
    pub netns: String,
    /// `--node-name` as given to `lab up` (None: taken from the manifests).
    pub requested_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub port: u16,
    pub protocol: L4Proto,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub netns: String,
    /// Host-side veth in the node namespace.
    pub interface: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// True when the lab allocated the IP (no status.podIP in the manifests).
    pub allocated: bool,
    pub ports: Vec<PortSpec>,
    pub server: Option<ProcRef>,
    /// The name of the node the pod runs on (empty in state files of older labs: the first).
    #[serde(default)]
    pub node: String,
    /// The namespace of that node, where the host-side veth is.
    #[serde(default = "first_node_netns")]
    pub node_netns: String,
}

fn first_node_netns() -> String {
    NODE_NETNS.to_string()
}

impl PodState {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchState {
    /// The `--cores` list of the switch, e.g. "1" or "0,1".
    pub cores: String,
    pub busy_poll: bool,
    pub control_socket: PathBuf,
    /// The running switch, if any (None: stopped, or never started).
    pub process: Option<ProcRef>,
    /// False when the lab came up with PODSWITCH_LAB_NO_SWITCH=1.
    pub started_by_up: bool,
    /// `lab up --pod-network`: how the switches reach the other nodes' pods (`vxlan`, the
    /// default, or `routed`); absent in state files of older labs.
    #[serde(default = "default_pod_network")]
    pub pod_network: String,
    /// `lab up --l2-announce`: the switches announce LoadBalancer and external IPs on the
    /// underlay (absent in state files of older labs: off).
    #[serde(default)]
    pub l2_announce: bool,
    /// `lab up --keep-connections`: the switches keep their connection tables in state files
    /// (absent in state files of older labs: off).
    #[serde(default)]
    pub keep_connections: bool,
}

fn default_pod_network() -> String {
    "vxlan".into()
}

impl SwitchState {
    /// The pods' MTU: the underlay's 1500 less what the pod network adds (VXLAN: 50 bytes).
    pub fn pod_mtu(&self) -> u16 {
        if self.pod_network == "vxlan" {
            1450
        } else {
            1500
        }
    }
}

impl State {
    /// Every node's switch, the first node's first.
    pub fn node_switches(&self) -> Vec<NodeSwitch> {
        let mut out = vec![NodeSwitch {
            name: self.node.name.clone(),
            netns: self.node.netns.clone(),
            internal_ip: self.node.internal_ip,
            pod_cidr: self.node.pod_cidr.clone(),
            control_socket: self.switch.control_socket.clone(),
            process: self.switch.process,
            log: switch_log(&self.node.name, true),
        }];
        out.extend(self.more_nodes.iter().map(|m| NodeSwitch {
            name: m.node.name.clone(),
            netns: m.node.netns.clone(),
            internal_ip: m.node.internal_ip,
            pod_cidr: m.node.pod_cidr.clone(),
            control_socket: m.control_socket.clone(),
            process: m.process,
            log: switch_log(&m.node.name, false),
        }));
        out
    }

    /// Records the switch process of node number `index` (0: the first node).
    pub fn set_switch_process(&mut self, index: usize, process: Option<ProcRef>) {
        match index {
            0 => self.switch.process = process,
            i => self.more_nodes[i - 1].process = process,
        }
    }

    /// The namespace of the lab node named `name`, if the lab has one.
    pub fn node_netns_of(&self, name: &str) -> Option<String> {
        if self.node.name == name {
            return Some(self.node.netns.clone());
        }
        self.more_nodes.iter().find(|m| m.node.name == name).map(|m| m.node.netns.clone())
    }

    /// The state of the lab that is up, if any.
    pub fn load() -> anyhow::Result<Option<State>> {
        let path = state_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let s = serde_json::from_str(&text).with_context(|| format!("{} is not a lab state file", path.display()))?;
        Ok(Some(s))
    }

    /// The state of the lab that is up, or an error saying no lab is up.
    pub fn load_required() -> anyhow::Result<State> {
        State::load()?.ok_or_else(|| {
            anyhow::anyhow!(
                "no lab is up (no {}); start one with `podswitch lab up --manifests DIR`",
                state_path().display()
            )
        })
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        write_atomic(&state_path(), text.as_bytes())
    }
}

/// Writes `path` through a hidden temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().expect("absolute path");
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.sync_all().ok();
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// The digest the lab has applied, if any.
pub fn read_synced() -> Option<String> {
    fs::read_to_string(synced_path()).ok().map(|s| s.trim().to_string())
}

pub fn write_synced(digest: &str) -> anyhow::Result<()> {
    write_atomic(&synced_path(), format!("{digest}\n").as_bytes())?;
    let _ = fs::remove_file(sync_error_path());
    Ok(())
}

/// The last failed sync: (digest of the content, message).
pub fn read_sync_error() -> Option<(String, String)> {
    let text = fs::read_to_string(sync_error_path()).ok()?;
    let (digest, msg) = text.split_once('\n')?;
    Some((digest.to_string(), msg.trim().to_string()))
}

pub fn write_sync_error(digest: &str, message: &str) -> anyhow::Result<()> {
    write_atomic(&sync_error_path(), format!("{digest}\n{message}\n").as_bytes())
}

/// An exclusive lock on the lab's state, released on drop.
pub struct LabLock {
    _lock: Flock<File>,
}

/// Takes the lab lock, waiting up to `timeout`.
pub fn lock(timeout: Duration) -> anyhow::Result<LabLock> {
    let path = lock_path();
    let deadline = Instant::now() + timeout;
    loop {
        // std opens with O_CLOEXEC: processes started while the lock is held do not inherit it.
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(LabLock { _lock: l }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, e)) => {
                anyhow::bail!("cannot lock {} (another `podswitch lab` command is busy?): {e}", path.display())
            }
        }
    }
}

/// The last `n` lines of a log file, indented, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join(" | ")
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `HH:MM:SS.mmm` (UTC), for log lines.
pub fn timestamp() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let s = d.as_secs() % 86400;
    format!("{:02}:{:02}:{:02}.{:03}Z", s / 3600, s / 60 % 60, s % 60, d.subsec_millis())
}
