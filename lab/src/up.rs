//! `podswitch lab up`: build the lab from a manifest directory and return once traffic flows.
//!
//! Contract:
//! - Refuses (exit 1) when a lab is up: a state file, the `psl-node` namespace or the lab
//!   directory exists.
//! - Everything is validated before anything is created ([`super::plan`]); a bad directory is
//!   one line and exit 1 with nothing left behind. A failure while building removes everything
//!   built so far.
//! - Order: node namespaces (one per lab node, see [`super::plan`]), the `external` host and
//!   the uplinks (`psl-external`, each node's `psw-uplink`; with several nodes the underlay
//!   `psl-underlay` joining them), pods (namespaces, veths, servers ready), API view, synced
//!   digest, the switches (unless `PODSWITCH_LAB_NO_SWITCH=1`), supervisor; then it waits (30 s)
//!   until every switch has applied the view and attached every port, and prints a summary. If a
//!   switch does not get ready the lab stays up for inspection and the error says so.
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::state::{self, NodeState, State, SwitchState};
use super::{down, netns, procs, switch};
use podswitch_control::naming;

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Directory of Kubernetes manifests: Namespaces, Pods, optionally a Node (its name, pod CIDR
    /// and InternalIP; default node-1, 10.244.0.0/24), and any other kinds (passed on to the switch).
    #[arg(long, value_name = "DIR")]
    pub manifests: PathBuf,
    /// Cores the switch runs its workers on, e.g. `1` or `0,1` (`podswitch run --cores`). Every
    /// veth of the lab gets one queue per listed core.
    #[arg(long, default_value = "1", value_name = "LIST")]
    pub cores: String,
    /// Let the switch busy-poll its sockets (`podswitch run --busy-poll`).
    #[arg(long)]
    pub busy_poll: bool,
    /// Build only this Node of the manifests (a one-node lab). Without it, the lab builds one
    /// node per Node object (none: one node `node-1`).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// How the nodes' switches reach each other's pods (`podswitch run --pod-network`):
    /// `vxlan` (tunnels over the underlay; pods get MTU 1450) or `routed` (MTU 1500).
    #[arg(long, value_name = "MODE", default_value = "vxlan", value_parser = ["vxlan", "routed"])]
    pub pod_network: String,
    /// Let the switches announce the LoadBalancer ingress IPs and externalIPs on the underlay
    /// (`podswitch run --l2-announce`), one node per address, with their Leases in
    /// /run/podswitch/lab/leases. Give the Services addresses of the underlay's /24 (e.g.
    /// 172.18.0.200): `external` then reaches them by ARP, with no route.
    #[arg(long)]
    pub l2_announce: bool,
    /// Run the switches with state files (`podswitch run --state-file`, in /dev/shm/podswitch),
    /// so that `lab switch restart|kill` start new ones that adopt every connection.
    #[arg(long)]
    pub keep_connections: bool,
}

/// Why a lab counts as up, if it does.
pub fn lab_is_up() -> Option<String> {
    if state::state_path().exists() {
        return Some(format!("{} exists", state::state_path().display()));
    }
    if netns::exists(state::NODE_NETNS) {
        return Some(format!("network namespace {} exists", state::NODE_NETNS));
    }
    if Path::new(state::LAB_DIR).exists() {
        return Some(format!("{} exists", state::LAB_DIR));
    }
    None
}

fn already_up(why: &str) -> anyhow::Error {
    anyhow::anyhow!("a lab is already up ({why}); run `podswitch lab down` first")
}

pub fn run(a: UpArgs) -> anyhow::Result<i32> {
    super::require_root("up")?;
    if let Some(why) = lab_is_up() {
        return Err(already_up(&why));
    }
    let core_list: Vec<&str> = a.cores.split(',').map(str::trim).collect();
    if core_list.is_empty() || core_list.iter().any(|c| c.parse::<usize>().is_err()) {
        bail!("--cores {:?} is not a list of core numbers (e.g. 1 or 0,1)", a.cores);
    }
    let dir = fs::canonicalize(&a.manifests)
        .with_context(|| format!("cannot read manifest directory {}", a.manifests.display()))?;
    if !dir.is_dir() {
        bail!("{} is not a directory (--manifests wants a directory of manifests)", dir.display());
    }
    let plan = super::plan::plan(&dir, a.node_name.as_deref(), &BTreeMap::new(), &BTreeMap::new())?;
    let exe = std::env::current_exe().context("cannot find the podswitch-lab executable")?;
    let no_switch = std::env::var(state::NO_SWITCH_ENV).is_ok_and(|v| v == "1");

    fs::create_dir_all(state::RUN_DIR).with_context(|| format!("cannot create {}", state::RUN_DIR))?;
    // Creating the lab directory is the claim: a concurrent `lab up` fails here.
    match fs::create_dir(state::LAB_DIR) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(already_up(&format!("{} exists", state::LAB_DIR)))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", state::LAB_DIR)),
    }
    let mut st = State {
        manifests: dir.clone(),
        node: NodeState {
            name: plan.node.name.clone(),
            pod_cidr: plan.node.pod_cidr.to_string(),
            internal_ip: plan.node.internal_ip,
            netns: state::NODE_NETNS.into(),
            requested_name: a.node_name.clone(),
        },
        pods: BTreeMap::new(),
        switch: SwitchState {
            cores: a.cores,
            busy_poll: a.busy_poll,
            control_socket: PathBuf::from(naming::DEFAULT_CONTROL_SOCKET),
            process: None,
            started_by_up: !no_switch,
            pod_network: a.pod_network,
            l2_announce: a.l2_announce,
            keep_connections: a.keep_connections,
        },
        supervisor: None,
        created_unix: state::now_unix(),
        external: None,
        more_nodes: plan.nodes[1..]
            .iter()
            .map(|n| state::MoreNode {
                node: NodeState {
                    name: n.name.clone(),
                    pod_cidr: n.pod_cidr.to_string(),
                    internal_ip: n.internal_ip,
                    netns: state::node_netns(&n.name, false),
                    requested_name: None,
                },
                control_socket: naming::lab_node_control_socket(&n.name),
                process: None,
            })
            .collect(),
        underlay: (plan.nodes.len() > 1).then(|| state::UNDERLAY_NETNS.to_string()),
    };
    let built = build(&mut st, &plan, &exe, no_switch);
    let mut switch_children = match built {
        Ok(c) => c,
        Err(e) => {
            let _ = down::teardown();
            return Err(e);
        }
    };
    if !no_switch {
        switch::wait_ready(&st, &mut switch_children, switch::READY_TIMEOUT)
            .map_err(|e| {
                anyhow::anyhow!("{e:#}; the lab stays up for inspection: run `podswitch lab down` to remove it")
            })?;
    }
    print_summary(&st, no_switch);
    Ok(0)
}

/// Builds the lab; returns the switch processes started.
fn build(
    st: &mut State,
    plan: &super::plan::Plan,
    exe: &Path,
    no_switch: bool,
) -> anyhow::Result<Vec<std::process::Child>> {
    for d in [state::logs_dir(), state::api_dir(), state::ready_dir()] {
        fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    st.save()?;
    let _lock = state::lock(std::time::Duration::from_secs(10))?;
    let nodes = st.node_switches();
    for n in &nodes {
        netns::create_node(&n.netns)?;
    }
    switch::link_first_socket(st)?;
    let external = super::plan::external_state(plan);
    st.external = Some(external.clone());
    st.save()?;
    if st.underlay.is_some() {
        let netns: Vec<String> = nodes.iter().map(|n| n.netns.clone()).collect();
        netns::create_underlay(&external, &netns, netns::uplink_queues(switch::worker_count(st)))?;
    } else {
        netns::create_external(&external, &st.node.netns, netns::uplink_queues(switch::worker_count(st)))?;
    }
    // The uplink is the node's own NIC: its stack has the InternalIP there.
    for n in &nodes {
        netns::address_node_uplink(&n.netns, &external.uplink, n.internal_ip, external.prefix_len)?;
    }
    let log_path = state::logs_dir().join("up.log");
    let mut log_file = fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let mut log = |m: &str| {
        let _ = writeln!(log_file, "{} {m}", state::timestamp());
    };
    let mut children = Vec::new();
    let result = super::pods::reconcile(st, plan, exe, &mut children, &mut log);
    st.save()?;
    result?;
    state::write_synced(&plan.digest)?;
    let switch_children = if no_switch {
        log("PODSWITCH_LAB_NO_SWITCH=1: not starting the switch");
        Vec::new()
    } else {
        // A new lab's switches begin with empty connection tables, whatever an earlier lab on
        // these paths left.
        for n in st.node_switches() {
            podswitch_control::naming::remove_switch_files(&n.control_socket);
        }
        let c = switch::start(st);
        st.save()?;
        c?
    };
    let (_sup, sup_ref) = procs::spawn_detached(
        exe,
        &["supervise".to_string()],
        &state::logs_dir().join("supervisor.log"),
    )?;
    st.supervisor = Some(sup_ref);
    st.save()?;
    Ok(switch_children)
}

fn print_summary(st: &State, no_switch: bool) {
    println!(
        "lab up: node {} (pod CIDR {}, InternalIP {}, network namespace {})",
        st.node.name, st.node.pod_cidr, st.node.internal_ip, st.node.netns
    );
    for m in &st.more_nodes {
        println!(
            "        node {} (pod CIDR {}, InternalIP {}, network namespace {}, switch {})",
            m.node.name,
            m.node.pod_cidr,
            m.node.internal_ip,
            m.node.netns,
            m.process.map_or_else(|| "not running".to_string(), |p| format!("pid {}", p.pid))
        );
    }
    if let Some(u) = &st.underlay {
        println!("underlay: bridge {} in {u} joins the nodes' uplinks and external", state::UNDERLAY_BRIDGE);
    }
    match (st.switch.process, no_switch) {
        (_, true) => println!("switch: not started ({}=1)", state::NO_SWITCH_ENV),
        (Some(p), false) => println!(
            "switch: pid {}, {} core(s){}{}, in sync with {}",
            p.pid,
            st.switch.cores,
            if st.switch.busy_poll { ", busy-poll" } else { "" },
            if st.switch.l2_announce { ", L2 announcements (Leases in /run/podswitch/lab/leases)" } else { "" },
            state::api_dir().display()
        ),
        (None, false) => println!("switch: not running"),
    }
    if let Some(e) = &st.external {
        println!(
            "external: {}/{} on eth0 in {}, default via {} (the switch's uplink port {} in {})",
            e.ip, e.prefix_len, e.netns, e.gateway, e.uplink, st.node.netns
        );
    }
    let w = st.pods.keys().map(std::string::String::len).max().unwrap_or(3).max(3);
    if st.more_nodes.is_empty() {
        println!("{:w$}  {:15}  {:14}  NETNS", "POD", "IP", "INTERFACE");
        for (k, p) in &st.pods {
            println!("{k:w$}  {:15}  {:14}  {}", p.ip.to_string(), p.interface, p.netns);
        }
    } else {
        println!("{:w$}  {:15}  {:14}  {:24}  NODE", "POD", "IP", "INTERFACE", "NETNS");
        for (k, p) in &st.pods {
            println!("{k:w$}  {:15}  {:14}  {:24}  {}", p.ip.to_string(), p.interface, p.netns, p.node);
        }
    }
    println!("manifests: {} (edits are applied live); logs: {}", st.manifests.display(), state::logs_dir().display());
}
