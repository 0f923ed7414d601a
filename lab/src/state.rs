//! The lab's files under `/run/podswitch/lab` and the state record.
//!
//! Contract:
//! - `state.json`: the [`State`] (manifest directory, node, pods with their IPs and interfaces,
//!   the `external` host, every process the lab started). Written atomically (temporary file +
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
pub const NODE_NETNS: &str = "psl-node";
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
}

impl State {
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
