//! `podswitch lab status [--json]`: what is up.
//!
//! Contract: reads the state (no lock, no changes) and checks liveness: node, manifest
//! directory and whether its current content is applied (or why not), switch (pid, running,
//! in sync or why not), supervisor, the `external` host (address, MAC, gateway, uplink port,
//! whether its namespace exists), and each pod (IP, interface, namespace, node, server running).
//! With `--json`, one object; `{"up": false}` when no lab is up. Exit 0 either way.
//! The JSON's `node` and `switch` are the first node's (as in a one-node lab); `nodes` lists
//! every node, the first first: `{"name","internal_ip","pod_cidr","netns","control_socket",
//! "switch_pid","switch_running","in_sync","not_in_sync_because","present","cni"}`; `underlay` is the
//! underlay's namespace (null in a one-node lab). `cni` (top level: the first node's; and each
//! node's) is `{"bin_dir","conf_dir","path","conflist"}`: where the lab's CNI plugin is, the
//! node's configuration directory and conflist, and the `CNI_PATH` to run them with.
use serde_json::json;

use super::state::{self, State};
use super::{cni_network, netns, switch};
use podswitch_control::manifests;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: StatusArgs) -> anyhow::Result<i32> {
    let Some(st) = State::load()? else {
        let leftovers = netns::lab_namespaces();
        if a.json {
            println!("{}", json!({"up": false, "namespaces": leftovers}));
        } else if leftovers.is_empty() {
            println!("no lab is up");
        } else {
            println!(
                "no lab is up, but namespaces are left over: {} (`podswitch lab down` removes them)",
                leftovers.join(" ")
            );
        }
        return Ok(0);
    };
    let current = manifests::dir_digest(&st.manifests).map_err(|e| e.to_string());
    let synced = state::read_synced();
    let sync = match (&current, &synced) {
        (Ok(c), Some(s)) if c == s => "applied".to_string(),
        (Ok(c), _) => match state::read_sync_error() {
            Some((d, msg)) if &d == c => format!("cannot apply: {msg}"),
            _ => "not applied yet".to_string(),
        },
        (Err(e), _) => format!("unreadable: {e}"),
    };
    let switch_running = st.switch.process.is_some_and(|p| p.alive());
    let switch_sync = if switch_running { switch::sync_status(&st, &st.switch.control_socket) } else { None };
    let supervisor_running = st.supervisor.is_some_and(|p| p.alive());
    if a.json {
        let pods: Vec<_> = st
            .pods
            .values()
            .map(|p| {
                json!({"pod": p.key(), "ip": p.ip, "mac": p.mac, "interface": p.interface, "netns": p.netns,
                       "node": if p.node.is_empty() { &st.node.name } else { &p.node }, "node_netns": p.node_netns,
                       "allocated": p.allocated, "ports": p.ports, "server_pid": p.server.map(|s| s.pid),
                       "server_running": p.server.is_some_and(|s| s.alive())})
            })
            .collect();
        let nodes: Vec<_> = st
            .node_switches()
            .into_iter()
            .map(|n| {
                let running = n.process.is_some_and(|p| p.alive());
                let why = if running { switch::sync_status(&st, &n.control_socket) } else { None };
                json!({"name": n.name, "internal_ip": n.internal_ip, "pod_cidr": n.pod_cidr, "netns": n.netns,
                       "control_socket": n.control_socket, "switch_pid": n.process.map(|p| p.pid),
                       "switch_running": running, "in_sync": running && why.is_none(),
                       "not_in_sync_because": why, "present": netns::exists(&n.netns),
                       "cni": cni_network::status_json(&n.name)})
            })
            .collect();
        let v = json!({
            "up": true,
            "node": st.node,
            "nodes": nodes,
            "cni": cni_network::status_json(&st.node.name),
            "underlay": st.underlay,
            "manifests": st.manifests,
            "manifests_digest": current.as_ref().ok(),
            "synced_digest": synced,
            "sync": sync,
            "switch": {"pid": st.switch.process.map(|p| p.pid), "running": switch_running,
                       "in_sync": switch_running && switch_sync.is_none(), "not_in_sync_because": switch_sync,
                       "cores": st.switch.cores, "busy_poll": st.switch.busy_poll, "l2_announce": st.switch.l2_announce,
                       "control_socket": st.switch.control_socket},
            "supervisor": {"pid": st.supervisor.map(|p| p.pid), "running": supervisor_running},
            "external": st.external.as_ref().map(|e| json!({
                "netns": e.netns, "ip": e.ip, "prefix_len": e.prefix_len, "mac": e.mac, "gateway": e.gateway,
                "uplink": e.uplink, "present": netns::exists(&e.netns),
            })),
            "pods": pods,
            "logs": state::logs_dir(),
        });
        println!("{v}");
        return Ok(0);
    }
    println!(
        "node {} (pod CIDR {}, InternalIP {}, network namespace {})",
        st.node.name, st.node.pod_cidr, st.node.internal_ip, st.node.netns
    );
    for n in st.node_switches().iter().skip(1) {
        let sw = match n.process {
            Some(p) if p.alive() => match switch::sync_status(&st, &n.control_socket) {
                None => format!("running (pid {}), in sync", p.pid),
                Some(why) => format!("running (pid {}), not in sync: {why}", p.pid),
            },
            Some(p) => format!("exited (pid {}; see {})", p.pid, n.log.display()),
            None => "not running".into(),
        };
        println!(
            "node {} (pod CIDR {}, InternalIP {}, network namespace {}, control socket {}): switch {sw}",
            n.name,
            n.pod_cidr,
            n.internal_ip,
            n.netns,
            n.control_socket.display()
        );
    }
    if let Some(u) = &st.underlay {
        println!("underlay: bridge {} in {u}", state::UNDERLAY_BRIDGE);
    }
    println!(
        "cni: plugins in {} ({}), each node's conflist in {}",
        cni_network::bin_dir().display(),
        cni_network::cni_path_var(),
        cni_network::conf_dir("NODE").display()
    );
    println!("manifests {}: {sync}", st.manifests.display());
    let sw = match (st.switch.process, switch_running) {
        (Some(p), true) => match &switch_sync {
            None => format!("running (pid {}), in sync", p.pid),
            Some(why) => format!("running (pid {}), not in sync: {why}", p.pid),
        },
        (Some(p), false) => format!("exited (pid {}; see {})", p.pid, switch::switch_log().display()),
        (None, _) if !st.switch.started_by_up => format!("not started ({}=1 at `lab up`)", state::NO_SWITCH_ENV),
        (None, _) => "stopped".to_string(),
    };
    println!("switch: {sw}");
    println!(
        "supervisor: {}",
        match st.supervisor {
            Some(p) if supervisor_running => format!("running (pid {})", p.pid),
            Some(p) => format!("exited (pid {}); edits are no longer applied", p.pid),
            None => "not started".into(),
        }
    );
    match &st.external {
        Some(e) => println!(
            "external: {}/{} (MAC {}) on eth0 in {}, default via {}, uplink port {} in {}{}",
            e.ip,
            e.prefix_len,
            e.mac,
            e.netns,
            e.gateway,
            e.uplink,
            st.node.netns,
            if netns::exists(&e.netns) { "" } else { " (its namespace is missing)" }
        ),
        None => println!("external: none (a lab from before `external` existed)"),
    }
    let w = st.pods.keys().map(std::string::String::len).max().unwrap_or(3).max(3);
    // The NODE column only in a lab with several nodes (a one-node lab prints as it always did).
    let several = !st.more_nodes.is_empty();
    let node_col = |n: &str| if several { format!("{n:10}  ") } else { String::new() };
    println!("{:w$}  {:15}  {:14}  {:24}  {}SERVER", "POD", "IP", "INTERFACE", "NETNS", node_col("NODE"));
    for (k, p) in &st.pods {
        let server = match p.server {
            Some(s) if s.alive() => format!("pid {}", s.pid),
            _ => "not running".into(),
        };
        let node = node_col(if p.node.is_empty() { &st.node.name } else { &p.node });
        println!("{k:w$}  {:15}  {:14}  {:24}  {node}{server}", p.ip.to_string(), p.interface, p.netns);
    }
    println!("logs: {}", state::logs_dir().display());
    Ok(0)
}
