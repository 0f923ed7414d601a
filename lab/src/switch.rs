//! The lab's switch: starting it in the node namespace, waiting until it is in sync, stopping it
//! (`podswitch lab switch stop|start`).
//!
//! Contract:
//! - The switch is `ip netns exec psl-node <podswitch> run --manifests /run/podswitch/lab/api
//!   --control-socket /run/podswitch/podswitch.sock --node-name NODE --cores C [--busy-poll]
//!   --uplink psw-uplink --uplink-gateway-mac MAC-OF-EXTERNAL`, detached, output to
//!   `logs/switch.log`, recorded in the state. `--cores C` is the lab's core list, so the switch
//!   runs one worker ([`worker_count`]): every port the lab makes has that many queues.
//! - It is ready when its control socket answers Status with `applied_digest` equal to
//!   `manifests::dir_digest` of the API view and an empty `pending_ports` ([`sync_status`]).
//! - `stop` sends SIGTERM and waits for the exit (SIGKILL after 10 s), then removes the control
//!   socket; `start` starts it with the same command line as `lab up` and waits until ready.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::procs::{spawn_detached, ProcRef};
use super::state::{self, State};
use podswitch_control::ctl::{client, Request};
use podswitch_control::manifests;

/// How long `lab up` and `lab switch start` wait for the switch.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    #[command(subcommand)]
    pub action: SwitchAction,
}

#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum SwitchAction {
    /// Stop the switch (SIGTERM, wait for it to exit).
    Stop,
    /// Start the switch again and wait until it is in sync.
    Start,
}

pub fn switch_log() -> PathBuf {
    state::logs_dir().join("switch.log")
}

/// The switch's command line after `ip netns exec psl-node`.
pub fn command_line(st: &State, exe: &Path) -> Vec<String> {
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        state::NODE_NETNS.into(),
        exe.display().to_string(),
        "run".into(),
        "--manifests".into(),
        state::api_dir().display().to_string(),
        "--control-socket".into(),
        st.switch.control_socket.display().to_string(),
        "--node-name".into(),
        st.node.name.clone(),
        "--cores".into(),
        st.switch.cores.clone(),
    ];
    if st.switch.busy_poll {
        args.push("--busy-poll".into());
    }
    if let Some(e) = &st.external {
        args.extend(["--uplink".into(), e.uplink.clone(), "--uplink-gateway-mac".into(), e.mac.clone()]);
    }
    args
}

/// How many workers the lab's switch runs: one per core of its `--cores` list, which the lab
/// passes through unchanged (see [`command_line`]).
pub fn worker_count(st: &State) -> u32 {
    st.switch.cores.split(',').count() as u32
}

/// Starts the switch (`podswitch` found next to this binary, then on PATH); records it in `st`
/// (the caller saves).
pub fn start(st: &mut State) -> anyhow::Result<Child> {
    let exe = podswitch_control::sibling::find("podswitch")?;
    let _ = fs::remove_file(&st.switch.control_socket);
    let log = switch_log();
    let args = command_line(st, &exe);
    let mut f = fs::OpenOptions::new().create(true).append(true).open(&log)?;
    use std::io::Write;
    let _ = writeln!(f, "{} podswitch lab: starting ip {}", state::timestamp(), args.join(" "));
    let (child, proc_ref) = spawn_detached(Path::new("ip"), &args, &log)?;
    st.switch.process = Some(proc_ref);
    Ok(child)
}

/// Stops the switch of `st` if it runs; returns the pid it had. The caller saves `st`.
pub fn stop(st: &mut State) -> Option<ProcRef> {
    let p = st.switch.process.take()?;
    let was = p.terminate(Duration::from_secs(10));
    let _ = fs::remove_file(&st.switch.control_socket);
    was.then_some(p)
}

/// Why the switch is not (yet) in sync with the API view; None when it is.
pub fn sync_status(socket: &Path) -> Option<String> {
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
    None
}

/// Waits until the switch is in sync (see [`sync_status`]); fails early if it exits.
pub fn wait_ready(st: &State, mut child: Option<&mut Child>, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let log = switch_log();
    loop {
        let Some(reason) = sync_status(&st.switch.control_socket) else { return Ok(()) };
        let exited = match child.as_deref_mut() {
            Some(c) => c.try_wait().ok().flatten().map(|s| format!("exited ({s})")),
            None => st.switch.process.filter(|p| !p.alive()).map(|_| "exited".to_string()),
        };
        if let Some(status) = exited {
            bail!("the switch {status} before it was ready ({}: {})", log.display(), state::log_tail(&log, 2));
        }
        if Instant::now() >= deadline {
            bail!("the switch is not ready after {} s: {reason} (see {})", timeout.as_secs(), log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run(a: SwitchArgs) -> anyhow::Result<i32> {
    super::require_root("switch")?;
    let lock = state::lock(Duration::from_secs(30))?;
    let mut st = State::load_required()?;
    match a.action {
        SwitchAction::Stop => {
            let stopped = stop(&mut st);
            st.save()?;
            match stopped {
                Some(p) => println!("stopped the switch (pid {})", p.pid),
                None => println!("the switch is not running"),
            }
        }
        SwitchAction::Start => {
            if let Some(p) = st.switch.process.filter(super::procs::ProcRef::alive) {
                println!("the switch is already running (pid {})", p.pid);
                return Ok(0);
            }
            let mut child = start(&mut st)?;
            st.save()?;
            drop(lock);
            wait_ready(&st, Some(&mut child), READY_TIMEOUT)?;
            println!("started the switch (pid {}); it is in sync", st.switch.process.map_or(0, |p| p.pid));
        }
    }
    Ok(0)
}
