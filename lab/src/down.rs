//! `podswitch lab down`: remove everything the lab made.
//!
//! Contract:
//! - Stops the supervisor first (so nothing is rebuilt), then every node's switch and the pod
//!   servers recorded in the state, then any other process inside a lab namespace (`ip netns
//!   pids`).
//! - Then runs the CNI DEL of every pod of the state ([`super::cni_network::del_pod`]); a DEL
//!   that fails is reported (`what pod NS/NAME left after its CNI DEL failed (WHY)`) and the rest
//!   goes on: deleting the namespaces and files removes what DEL left.
//! - Deletes every `psl-*` / `psl_*` namespace (which removes their veths): the pods' first, then
//!   the nodes', `psl-external` and `psl-underlay`; then removes `/run/podswitch/lab` (with the
//!   CNI conflists, host-local's leases, the plugin's records and the result cache), the
//!   switches' control sockets and `/run/podswitch/lab-nodes`.
//! - Works from whatever is left (no state file, a half-built lab); prints what it removed, or
//!   that nothing was up (exit 0 either way). Fails only if something could not be removed.
use std::fs;
use std::path::Path;
use std::time::Duration;

use super::state::{self, State};
use super::{netns, procs};

#[derive(Debug, clap::Args)]
pub struct DownArgs {}

pub fn run(_a: DownArgs) -> anyhow::Result<i32> {
    super::require_root("down")?;
    let removed = teardown()?;
    if removed.is_empty() {
        println!("no lab is up; nothing to remove");
    } else {
        println!("lab down: removed");
        for r in removed {
            println!("  {r}");
        }
    }
    Ok(0)
}

/// Removes the lab (see the module contract); returns what it removed, empty if nothing was up.
pub fn teardown() -> anyhow::Result<Vec<String>> {
    let st = State::load().ok().flatten();
    let namespaces = netns::lab_namespaces();
    let lab_dir = Path::new(state::LAB_DIR);
    if st.is_none() && namespaces.is_empty() && !lab_dir.exists() {
        return Ok(Vec::new());
    }
    // Wait for a supervisor or `lab up` in the middle of a change, but do not insist.
    let _lock = if lab_dir.exists() { state::lock(Duration::from_secs(15)).ok() } else { None };
    let st = State::load().ok().flatten().or(st);
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    if let Some(st) = &st {
        if let Some(p) = st.supervisor {
            if p.terminate(Duration::from_secs(5)) {
                removed.push(format!("supervisor (pid {})", p.pid));
            }
        }
        let several = !st.more_nodes.is_empty();
        for n in st.node_switches() {
            if n.process.is_some_and(|p| p.terminate(Duration::from_secs(10))) {
                let of = if several { format!(" of node {}", n.name) } else { String::new() };
                removed.push(format!("switch{of} (pid {})", n.process.map_or(0, |p| p.pid)));
            }
        }
        let servers = st.pods.values().filter_map(|p| p.server).filter(|s| s.terminate(Duration::from_secs(2))).count();
        if servers > 0 {
            removed.push(format!("{servers} pod server(s)"));
        }
    }
    let mut others = 0;
    for ns in &namespaces {
        others += procs::terminate_pids(&netns::pids(ns), Duration::from_secs(3));
    }
    if others > 0 {
        removed.push(format!("{others} other process(es) inside the lab's namespaces"));
    }
    // CNI DEL of every pod, as a runtime tears a sandbox down; what DEL leaves (or all of it,
    // when DEL fails) goes with the namespaces and the lab directory below.
    if let Some(st) = &st {
        let mut deleted = 0;
        for p in st.pods.values().filter(|p| netns::exists(&p.node_netns)) {
            match super::cni_network::del_pod(p, st) {
                Ok(()) => deleted += 1,
                // Said, and not an error: the namespaces and files below are what is left.
                Err(e) => removed.push(format!("what pod {} left after its CNI DEL failed ({e:#})", p.key())),
            }
        }
        if deleted > 0 {
            removed.push(format!("{deleted} pod(s) through CNI DEL"));
        }
    }
    // Pods' namespaces first (deleting one destroys its veth pair), then the node's.
    let (pods, node): (Vec<&String>, Vec<&String>) = namespaces.iter().partition(|n| n.starts_with("psl_"));
    let mut deleted = Vec::new();
    for ns in pods.into_iter().chain(node) {
        match netns::delete(ns) {
            Ok(()) => deleted.push(ns.clone()),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !deleted.is_empty() {
        removed.push(format!("{} network namespace(s): {}", deleted.len(), deleted.join(" ")));
    }
    if lab_dir.exists() {
        match fs::remove_dir_all(lab_dir) {
            Ok(()) => removed.push(state::LAB_DIR.to_string()),
            Err(e) => errors.push(format!("cannot remove {}: {e}", state::LAB_DIR)),
        }
    }
    let sockets: Vec<std::path::PathBuf> = st.as_ref().map_or_else(
        || vec![podswitch_control::naming::DEFAULT_CONTROL_SOCKET.into()],
        |s| s.node_switches().into_iter().map(|n| n.control_socket).collect(),
    );
    for socket in sockets {
        let state_file = podswitch_control::naming::conntrack_state_for(&socket);
        if fs::symlink_metadata(&state_file).is_ok() {
            match fs::remove_file(&state_file) {
                Ok(()) => removed.push(state_file.display().to_string()),
                Err(e) => errors.push(format!("cannot remove {}: {e}", state_file.display())),
            }
        }
        if fs::symlink_metadata(&socket).is_ok() {
            match fs::remove_file(&socket) {
                Ok(()) => removed.push(socket.display().to_string()),
                Err(e) => errors.push(format!("cannot remove {}: {e}", socket.display())),
            }
        }
    }
    let node_sockets = Path::new(podswitch_control::naming::LAB_NODE_SOCKET_DIR);
    if node_sockets.exists() {
        match fs::remove_dir_all(node_sockets) {
            Ok(()) => removed.push(node_sockets.display().to_string()),
            Err(e) => errors.push(format!("cannot remove {}: {e}", node_sockets.display())),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("lab down could not remove everything: {}", errors.join("; "));
    }
    Ok(removed)
}
