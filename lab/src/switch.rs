//! The lab's switches, one per node: starting each in its node's namespace, waiting until they
//! are in sync, stopping them (`podswitch lab switch stop|start`).
//!
//! Contract:
//! - A node's switch is `ip netns exec NODE-NETNS <podswitch> run --manifests
//!   /run/podswitch/lab/api --control-socket SOCKET --node-name NODE --cores C --cni-data-dir
//!   /run/podswitch/lab/cni/NODE/attachments [--busy-poll] --uplink psw-uplink --uplink-gateway-mac MAC-OF-EXTERNAL`, detached, output to the node's
//!   log (`logs/switch.log` for the first node, `logs/switch-NODE.log` for the others), recorded
//!   in the state. SOCKET is /run/podswitch/podswitch.sock for the first node (the default of
//!   `podswitch show`; /run/podswitch/lab-nodes/NODE.sock links to it) and
//!   `naming::lab_node_control_socket(NODE)` for the others. Every switch reads the same API
//!   view. `--cores C` is the lab's core list, so each switch runs one worker per core
//!   ([`worker_count`]): every port the lab makes has that many queues.
//! - A switch is ready when its control socket answers Status with `applied_digest` equal to
//!   `manifests::dir_digest` of the API view and an empty `pending_ports` ([`sync_status`]);
//!   the lab is ready when every node's switch is.
//! - `stop` sends SIGTERM to every switch and waits for the exits (SIGKILL after 10 s), then
//!   removes their control sockets; `start` starts those not running with the command line of
//!   `lab up` and waits until all are ready. `--node NAME` does either for one node only (a
//!   name the lab does not have is an error naming its nodes); `stop --kill` sends SIGKILL at
//!   once, as a crash would.
//! - `restart` (SIGTERM) and `kill` (SIGKILL) stop the switch and start a new one at once, as
//!   an upgrade and the kubelet after a crash do; with `lab up --keep-connections` (every
//!   switch gets `--state-file naming::conntrack_state_for(SOCKET)`) the new one adopts the old
//!   one's connection table; it always finds the node's links in place.
//!   Each prints how long the node had no switch in sync and what was adopted.
//! - `lab up --l2-announce` adds `--l2-announce --l2-lease-dir /run/podswitch/lab/leases` to
//!   every switch's command line (with an uplink: the underlay).
//! - Each node's own stack reaches the underlay on its uplink, where it has its InternalIP
//!   (see `netns.rs`); the switch takes only what its filter owns from that uplink, so
//!   starting and stopping a switch leaves the node's own traffic alone.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::procs::{spawn_detached, ProcRef};
use super::state::{self, NodeSwitch, State};
use podswitch_control::ctl::{client, Request};
use podswitch_control::{manifests, naming};

/// How long `lab up` and `lab switch start` wait for the switches.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    #[command(subcommand)]
    pub action: SwitchAction,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SwitchAction {
    /// Stop every node's switch (SIGTERM, wait for it to exit), or only --node's.
    Stop {
        /// Only this node's switch.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// Kill it (SIGKILL) instead: it leaves as a crashed switch or a lost node would,
        /// releasing nothing (its Leases, its XDP programs stay until they time out or it
        /// starts again).
        #[arg(long)]
        kill: bool,
    },
    /// Start every node's switch that is not running (or only --node's) and wait until all are in sync.
    Start {
        /// Only this node's switch.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
    /// Restart every node's switch (or only --node's) as an upgrade does: SIGTERM, then a new
    /// one at once, which adopts the connection table the old one left (its state file) and
    /// finds the node's links in place. Says how long each node was without a switch in sync
    /// and what the new one adopted.
    Restart {
        /// Only this node's switch.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
    /// Kill every node's switch (or only --node's) with SIGKILL, as a crash, and start a new
    /// one at once, as the kubelet restarts a crashed container; the new one adopts what the
    /// killed one left. Says the same as restart.
    Kill {
        /// Only this node's switch.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
}

/// The first node's switch log (`logs/switch.log`).
pub fn switch_log() -> PathBuf {
    state::logs_dir().join("switch.log")
}

/// The command line of node `node`'s switch after `ip`.
pub fn command_line(st: &State, node: &NodeSwitch, exe: &Path) -> Vec<String> {
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        node.netns.clone(),
        exe.display().to_string(),
        "run".into(),
        "--manifests".into(),
        state::api_dir().display().to_string(),
        "--control-socket".into(),
        node.control_socket.display().to_string(),
        "--node-name".into(),
        node.name.clone(),
        "--cores".into(),
        st.switch.cores.clone(),
        // The node's switch follows the records its node's CNI plugin writes (the lab's pods
        // and pods other runtimes attach on that node), not the machine's default directory.
        "--cni-data-dir".into(),
        super::cni_network::data_dir(&node.name).display().to_string(),
    ];
    if st.switch.busy_poll {
        args.push("--busy-poll".into());
    }
    if st.switch.keep_connections {
        args.extend(["--state-file".into(), naming::conntrack_state_for(&node.control_socket).display().to_string()]);
    }
    if let Some(e) = &st.external {
        args.extend(["--uplink".into(), e.uplink.clone(), "--uplink-gateway-mac".into(), e.mac.clone()]);
        args.extend(["--pod-network".into(), st.switch.pod_network.clone()]);
        if st.switch.l2_announce {
            args.extend(["--l2-announce".into(), "--l2-lease-dir".into(), state::leases_dir().display().to_string()]);
        }
    }
    args
}

/// How many workers each of the lab's switches runs: one per core of its `--cores` list, which
/// the lab passes through unchanged (see [`command_line`]).
pub fn worker_count(st: &State) -> u32 {
    st.switch.cores.split(',').count() as u32
}

/// Links `naming::lab_node_control_socket(FIRST)` to the first node's control socket, so that
/// `podswitch show --node FIRST` reaches it as `--node` reaches the others.
pub fn link_first_socket(st: &State) -> anyhow::Result<()> {
    let link = naming::lab_node_control_socket(&st.node.name);
    if let Some(dir) = link.parent() {
        fs::create_dir_all(dir)?;
    }
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&st.switch.control_socket, &link)
        .map_err(|e| anyhow::anyhow!("cannot link {} to {}: {e}", link.display(), st.switch.control_socket.display()))
}

/// Starts the switch of every node whose switch is not running (`podswitch` found next to this
/// binary, then on PATH); records them in `st` (the caller saves). Returns the processes
/// started.
pub fn start(st: &mut State) -> anyhow::Result<Vec<Child>> {
    start_only(st, None)
}

/// [`start`], for node `only` alone when given.
pub fn start_only(st: &mut State, only: Option<&str>) -> anyhow::Result<Vec<Child>> {
    let exe = podswitch_control::sibling::find("podswitch")?;
    let mut children = Vec::new();
    for (i, node) in st.node_switches().into_iter().enumerate() {
        if node.process.is_some_and(|p| p.alive()) || only.is_some_and(|n| n != node.name) {
            continue;
        }
        let _ = fs::remove_file(&node.control_socket);
        let args = command_line(st, &node, &exe);
        let mut f = fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        use std::io::Write;
        let _ = writeln!(f, "{} podswitch lab: starting ip {}", state::timestamp(), args.join(" "));
        let (child, proc_ref) = spawn_detached(Path::new("ip"), &args, &node.log)?;
        st.set_switch_process(i, Some(proc_ref));
        children.push(child);
    }
    Ok(children)
}

/// Stops every node's switch that runs (node `only`'s alone when given; with `kill`, SIGKILL
/// at once: no clean exit); returns (node, pid) of those that ran. The caller saves `st`.
pub fn stop_only(st: &mut State, only: Option<&str>, kill: bool) -> Vec<(String, ProcRef)> {
    let mut out = Vec::new();
    for (i, node) in st.node_switches().into_iter().enumerate() {
        if only.is_some_and(|n| n != node.name) {
            continue;
        }
        st.set_switch_process(i, None);
        let Some(p) = node.process else { continue };
        let was = if kill { p.kill() } else { p.terminate(Duration::from_secs(10)) };
        let _ = fs::remove_file(&node.control_socket);
        if was {
            out.push((node.name, p));
        }
    }
    out
}

/// Why the switch is not (yet) in sync with the API view; None when it is.
pub fn sync_status(st: &State, socket: &Path) -> Option<String> {
    let want = match manifests::dir_digest(&state::api_dir()) {
        Ok(d) => d,
        Err(e) => return Some(format!("the API view cannot be read: {e}")),
    };
    let v = match client::request(socket, &Request::Status) {
        Ok(v) => v,
        Err(e) => return Some(format!("its control socket does not answer ({e})")),
    };
    let applied = v.get("applied_digest").and_then(|d| d.as_str()).unwrap_or("");
    if applied != want {
        let last_error =
            v.get("last_error").filter(|e| !e.is_null()).map(|e| format!("; its last error: {e}")).unwrap_or_default();
        return Some(format!(
            "it has applied API view {} but the view is {want}{last_error}",
            if applied.is_empty() { "(none)" } else { applied }
        ));
    }
    let pending: Vec<String> = v
        .get("pending_ports")
        .and_then(|p| p.as_array())
        .map(|a| a.iter().map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string)).collect())
        .unwrap_or_default();
    if !pending.is_empty() {
        return Some(format!("ports not attached yet: {}", pending.join(", ")));
    }
    // Only the lab's own nodes count: `lab up --node-name` builds one node of several, and the
    // others (in the manifests, not built) are unreachable for good.
    let lab_nodes: Vec<String> = st.node_switches().into_iter().map(|n| n.name).collect();
    let unreachable: Vec<&str> = v
        .get("unreachable_nodes")
        .and_then(|p| p.as_array())
        .map(|a| a.iter().filter_map(|n| n.as_str()).filter(|n| lab_nodes.iter().any(|l| l == n)).collect())
        .unwrap_or_default();
    if !unreachable.is_empty() {
        return Some(format!("no route yet to the pods of node(s) {}", unreachable.join(", ")));
    }
    None
}

/// Waits until every node's switch is in sync (see [`sync_status`]); fails early if one exits.
/// `children` are the processes [`start`] returned (their exit is noticed at once).
pub fn wait_ready(st: &State, children: &mut [Child], timeout: Duration) -> anyhow::Result<()> {
    wait_ready_only(st, children, timeout, None)
}

/// [`wait_ready`], for node `only` alone when given.
pub fn wait_ready_only(st: &State, children: &mut [Child], timeout: Duration, only: Option<&str>) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for node in st.node_switches().into_iter().filter(|n| only.is_none_or(|o| o == n.name)) {
        while let Some(reason) = sync_status(st, &node.control_socket) {
            let child = children.iter_mut().find(|c| node.process.is_some_and(|p| p.pid == c.id() as i32));
            let exited = match child {
                Some(c) => c.try_wait().ok().flatten().map(|s| format!("exited ({s})")),
                None => node.process.filter(|p| !p.alive()).map(|_| "exited".to_string()),
            };
            let which = if st.more_nodes.is_empty() { String::new() } else { format!(" of node {}", node.name) };
            if let Some(status) = exited {
                bail!(
                    "the switch{which} {status} before it was ready ({}: {})",
                    node.log.display(),
                    state::log_tail(&node.log, 2)
                );
            }
            if Instant::now() >= deadline {
                bail!("the switch{which} is not ready after {} s: {reason} (see {})", timeout.as_secs(), node.log.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Starts the switches of `st` not running (or only node `only`'s), saves the state, lets go
/// of the lab's `lock` and waits until they are in sync; returns those nodes.
fn start_and_wait<L>(st: &mut State, lock: L, only: Option<&str>) -> anyhow::Result<Vec<NodeSwitch>> {
    let mut children = start_only(st, only)?;
    st.save()?;
    drop(lock);
    wait_ready_only(st, &mut children, READY_TIMEOUT, only)?;
    Ok(st.node_switches().into_iter().filter(|n| only.is_none_or(|o| o == n.name)).collect())
}

/// What the switch on `socket` says it adopted from its predecessor (`show status`).
fn adoption_line(socket: &Path) -> String {
    let status = client::request(socket, &Request::Status);
    let Ok(v) = status else { return "its status did not answer".into() };
    let cs = &v["conntrack_state"];
    if cs.is_null() {
        return "it keeps no state file".into();
    }
    match cs["fresh"].as_str() {
        None => format!("it adopted {} connection(s) (generation {})", cs["adopted"], cs["generation"]),
        Some(why) => format!("its connection table started empty ({why})"),
    }
}

pub fn run(a: SwitchArgs) -> anyhow::Result<i32> {
    super::require_root("switch")?;
    let lock = state::lock(Duration::from_secs(30))?;
    let mut st = State::load_required()?;
    let several = !st.more_nodes.is_empty();
    let of = |name: &str| if several { format!(" of node {name}") } else { String::new() };
    let known = |only: &Option<String>| -> anyhow::Result<()> {
        match only {
            Some(n) if !st.node_switches().iter().any(|s| s.name == *n) => {
                let names: Vec<String> = st.node_switches().into_iter().map(|s| s.name).collect();
                bail!("the lab has no node {n:?} (its nodes: {})", names.join(", "))
            }
            _ => Ok(()),
        }
    };
    let kill_restart = matches!(a.action, SwitchAction::Kill { .. });
    match a.action {
        SwitchAction::Stop { node, kill } => {
            known(&node)?;
            let stopped = stop_only(&mut st, node.as_deref(), kill);
            st.save()?;
            if stopped.is_empty() {
                println!("the switch{} is not running", node.as_deref().map(of).unwrap_or_default());
            }
            for (name, p) in stopped {
                println!("{} the switch{} (pid {})", if kill { "killed" } else { "stopped" }, of(&name), p.pid);
            }
        }
        SwitchAction::Restart { node } | SwitchAction::Kill { node } => {
            known(&node)?;
            let kill = kill_restart;
            let began = Instant::now();
            let stopped = stop_only(&mut st, node.as_deref(), kill);
            st.save()?;
            let started = start_and_wait(&mut st, lock, node.as_deref())?;
            let gap = began.elapsed();
            for n in started {
                let old = stopped.iter().find(|(name, _)| *name == n.name).map_or_else(|| "not running".into(), |(_, p)| format!("pid {}", p.pid));
                let adopted = adoption_line(&n.control_socket);
                println!(
                    "{} the switch{} ({old}) and started a new one (pid {}), in sync {} ms later; {adopted}",
                    if kill { "killed" } else { "stopped" },
                    of(&n.name),
                    n.process.map_or(0, |p| p.pid),
                    gap.as_millis()
                );
            }
        }
        SwitchAction::Start { node } => {
            known(&node)?;
            let wanted: Vec<NodeSwitch> = st.node_switches().into_iter().filter(|n| node.as_ref().is_none_or(|o| *o == n.name)).collect();
            let running: Vec<(String, ProcRef)> =
                wanted.iter().filter_map(|n| n.process.filter(ProcRef::alive).map(|p| (n.name.clone(), p))).collect();
            if running.len() == wanted.len() {
                for (name, p) in running {
                    println!("the switch{} is already running (pid {})", of(&name), p.pid);
                }
                return Ok(0);
            }
            for n in start_and_wait(&mut st, lock, node.as_deref())? {
                println!("started the switch{} (pid {}); it is in sync", of(&n.name), n.process.map_or(0, |p| p.pid));
            }
        }
    }
    Ok(0)
}
