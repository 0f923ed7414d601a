//! Building and removing pods, and reconciling the lab with a [`Plan`].
//!
//! Contract of [`reconcile`], shared by `lab up` (from an empty lab) and the supervisor:
//! 0. nodes: in a lab with an underlay (several nodes), Nodes after the first may be added
//!    (namespace, uplink on the underlay, InternalIP) and removed; the first node stays, and a
//!    one-node lab cannot grow (both need `lab down` and `lab up`); a node's InternalIP moves
//!    live; every node's CNI network is installed where it is missing or out of date
//!    ([`cni_network::install`]);
//! 1. pods whose IP or node changed are removed first (their interface name is reused);
//! 2. new pods get their namespace ([`netns::create_pod`]), then their interface through the
//!    lab's CNI network ([`cni_network::add_pod`]: CNI ADD, as a container runtime does it),
//!    and a pod server; pods whose ports changed, or whose server is gone, get a new server;
//!    pods another runtime attached ([`super::plan::PlannedPod::attached_elsewhere`]) are left
//!    alone;
//! 3. it waits until every started server has bound its sockets (its ready file);
//! 4. the API view is written (so the switch learns of new pods once their interfaces exist);
//! 5. pods no longer wanted are removed (after the switch was told): CNI DEL, then what is left;
//! 6. added nodes' switches start (if the lab's switches run); removed nodes' switches stop and
//!    their namespaces go.
//!
//! The state is updated in memory as each step happens, so that on an error the caller can save
//! what exists (and `lab down` finds it); the caller saves it and records the synced digest.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::apiview;
use super::cni_network;
use super::netns;
use super::plan::{Plan, PlannedPod};
use super::procs::{self, spawn_detached};
use super::state::{self, MoreNode, NodeState, PodState, State};
use podswitch_control::model::L4Proto;
use podswitch_control::naming;

/// How long a pod server may take to bind its sockets.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a reconcile changed, for logs.
#[derive(Debug, Default)]
pub struct Changes {
    pub nodes_added: Vec<String>,
    pub nodes_removed: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub readdressed: Vec<String>,
    pub servers_restarted: Vec<String>,
    pub view_changed: bool,
}

impl Changes {
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (what, v) in [
            ("added node", &self.nodes_added),
            ("removed node", &self.nodes_removed),
            ("added", &self.added),
            ("removed", &self.removed),
            ("re-addressed", &self.readdressed),
            ("restarted the server of", &self.servers_restarted),
        ] {
            if !v.is_empty() {
                parts.push(format!("{what} {}", v.join(", ")));
            }
        }
        if self.view_changed {
            parts.push("rewrote the API view".into());
        }
        if parts.is_empty() {
            "no change".into()
        } else {
            parts.join("; ")
        }
    }
}

/// The state record of a planned pod (no server yet) on the node whose namespace is
/// `node_netns`.
pub fn pod_state(key: &str, p: &PlannedPod, node_netns: &str) -> PodState {
    let (namespace, name) = key.split_once('/').expect("pod keys are namespace/name");
    PodState {
        namespace: namespace.to_string(),
        name: name.to_string(),
        netns: state::pod_netns(namespace, name),
        interface: naming::pod_interface(namespace, name),
        ip: p.ip,
        mac: naming::mac_string(naming::pod_mac(p.ip)),
        allocated: p.allocated,
        ports: p.ports(),
        server: None,
        node: p.node.clone(),
        node_netns: node_netns.to_string(),
    }
}

/// The state records of the nodes of `plan` (the first, then the others), keeping the
/// `requested_name` of `st` and the switches of the nodes that stay.
fn node_states(st: &State, plan: &Plan) -> (NodeState, Vec<MoreNode>) {
    let record = |n: &podswitch_control::model::NodeInfo, first: bool| NodeState {
        name: n.name.clone(),
        pod_cidr: n.pod_cidr.to_string(),
        internal_ip: n.internal_ip,
        netns: state::node_netns(&n.name, first),
        requested_name: if first { st.node.requested_name.clone() } else { None },
    };
    let first = record(&plan.nodes[0], true);
    let more = plan.nodes[1..]
        .iter()
        .map(|n| {
            let old = st.more_nodes.iter().find(|m| m.node.name == n.name);
            MoreNode {
                node: record(n, false),
                control_socket: naming::lab_node_control_socket(&n.name),
                process: old.and_then(|m| m.process),
            }
        })
        .collect();
    (first, more)
}

/// Brings the lab in line with `plan` (see the module contract). `children` collects the
/// processes started, so a long-lived caller can reap them.
pub fn reconcile(
    st: &mut State,
    plan: &Plan,
    exe: &Path,
    children: &mut Vec<Child>,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Changes> {
    let mut ch = Changes::default();
    let (first, more) = node_states(st, plan);
    // 0. The nodes. A lab being built has no pods and no other nodes yet. A lab with an
    //    underlay takes Nodes added and removed (all but the first); a one-node lab cannot grow.
    let built = !st.pods.is_empty() || !st.more_nodes.is_empty();
    let names = |v: &[String]| v.join(", ");
    let have: Vec<String> = st.node_switches().into_iter().map(|n| n.name).collect();
    let want: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
    if built && st.underlay.is_none() && have != want {
        bail!(
            "the lab's node is {} but the manifests now have {}: a one-node lab has no underlay for other nodes; \
             adding Nodes needs `podswitch lab down` and `lab up`",
            names(&have),
            names(&want)
        );
    }
    if built && have.first() != want.first() {
        bail!(
            "the lab's first node is {} but the manifests now start with {}: the first node (psl-node) cannot change \
             while the lab runs; that needs `podswitch lab down` and `lab up`",
            names(&have[..1]),
            names(&want[..want.len().min(1)])
        );
    }
    let added: Vec<MoreNode> = if built { more.iter().filter(|m| !have.contains(&m.node.name)).cloned().collect() } else { Vec::new() };
    let removed: Vec<MoreNode> = st.more_nodes.iter().filter(|m| !want.contains(&m.node.name)).cloned().collect();
    if let Some(e) = st.external.clone() {
        let queues = netns::uplink_queues(super::switch::worker_count(st));
        for m in &added {
            netns::create_node(&m.node.netns)?;
            netns::add_to_underlay(&e, &m.node.netns, queues)?;
            netns::address_node_uplink(&m.node.netns, &e.uplink, m.node.internal_ip, e.prefix_len)?;
            log(&format!("node {}: added ({}, InternalIP {})", m.node.name, m.node.netns, m.node.internal_ip));
        }
    }
    let old_nodes: Vec<(String, String, std::net::Ipv4Addr)> = std::iter::once(&st.node)
        .chain(st.more_nodes.iter().map(|m| &m.node))
        .map(|n| (n.name.clone(), n.netns.clone(), n.internal_ip))
        .collect();
    let new_nodes: Vec<&NodeState> = std::iter::once(&first).chain(more.iter().map(|m| &m.node)).collect();
    let want_external = super::plan::external_state(plan);
    for (name, netns_name, old_ip) in &old_nodes {
        let Some(n) = new_nodes.iter().find(|n| &n.name == name) else { continue };
        if *old_ip != n.internal_ip && netns::exists(netns_name) {
            netns::set_node_ip(netns_name, &want_external.uplink, *old_ip, n.internal_ip, want_external.prefix_len)?;
            log(&format!("node {}: InternalIP {old_ip} -> {}", n.name, n.internal_ip));
        }
    }
    if let Some(old) = st.external.clone() {
        let want = super::plan::external_state(plan);
        if old != want && netns::exists(&old.netns) {
            netns::readdress_external(&old, &want)?;
            log(&format!(
                "external: {} -> {} (restart the switch for its new uplink gateway MAC {})",
                old.ip, want.ip, want.mac
            ));
        }
        st.external = Some(want);
    }
    st.node = first;
    st.more_nodes = more;
    cni_network::install(st)?;
    let netns_of = |name: &str, st: &State| st.node_netns_of(name).unwrap_or_else(|| state::NODE_NETNS.to_string());
    // 1. Pods whose IP or node changed go first.
    let readdressed: Vec<String> = st
        .pods
        .iter()
        .filter(|(k, p)| plan.pods.get(*k).is_some_and(|pp| pp.ip != p.ip || st.node_netns_of(&pp.node).is_some_and(|ns| ns != p.node_netns)))
        .map(|(k, _)| k.clone())
        .collect();
    for key in &readdressed {
        if let Some(p) = st.pods.remove(key) {
            log(&format!("pod {key}: IP changes from {}, rebuilding it", p.ip));
            remove_pod(&p, st, log);
        }
    }
    // 2. New pods, and servers to (re)start.
    let mut started = Vec::new();
    for (key, pp) in &plan.pods {
        if st.pods.contains_key(key) || pp.attached_elsewhere {
            continue;
        }
        let mut p = pod_state(key, pp, &netns_of(&pp.node, st));
        st.pods.insert(key.clone(), p.clone());
        let built = netns::create_pod(&p)
            .and_then(|()| cni_network::add_pod(&p, st))
            .and_then(|()| start_server(&mut p, exe, children));
        if let Err(e) = built {
            remove_pod(&p, st, log);
            st.pods.remove(key);
            return Err(e.context(format!("cannot build Pod {key}")));
        }
        log(&format!("pod {key}: built {} ({}, {} in {})", p.netns, p.ip, p.interface, p.node_netns));
        st.pods.insert(key.clone(), p);
        started.push(key.clone());
        if readdressed.contains(key) {
            ch.readdressed.push(key.clone());
        } else {
            ch.added.push(key.clone());
        }
    }
    for (key, pp) in &plan.pods {
        let Some(p) = st.pods.get_mut(key) else {
            continue; // attached by another runtime: not the lab's to serve
        };
        if started.contains(key) {
            continue;
        }
        p.allocated = pp.allocated;
        let ports = pp.ports();
        let dead = !p.server.is_some_and(|s| s.alive());
        if p.ports != ports || dead {
            if let Some(s) = p.server.take() {
                s.terminate(Duration::from_secs(2));
            }
            p.ports = ports;
            start_server(p, exe, children).with_context(|| format!("cannot restart the server of Pod {key}"))?;
            log(&format!("pod {key}: (re)started its server ({})", if dead { "it was gone" } else { "ports changed" }));
            started.push(key.clone());
            ch.servers_restarted.push(key.clone());
        }
    }
    // 3. Servers ready.
    let waiting: Vec<&PodState> = started.iter().map(|k| &st.pods[k]).collect();
    wait_servers_ready(&waiting)?;
    // 4. The view.
    ch.view_changed = apiview::write(&apiview::render(plan, &st.manifests))?;
    // 5. Pods no longer wanted.
    let gone: Vec<String> = st.pods.keys().filter(|k| !plan.pods.contains_key(*k)).cloned().collect();
    for key in gone {
        if let Some(p) = st.pods.remove(&key) {
            remove_pod(&p, st, log);
            log(&format!("pod {key}: removed {}", p.netns));
            ch.removed.push(key);
        }
    }
    // 6. Nodes added get their switch (when the lab's switches run); nodes removed lose theirs
    //    and their namespace (their pods went in step 5).
    if !added.is_empty() && st.switch.process.is_some_and(|p| p.alive()) {
        children.extend(super::switch::start(st)?);
        for m in &added {
            log(&format!("node {}: started its switch", m.node.name));
        }
    }
    for m in &removed {
        if let Some(p) = m.process {
            p.terminate(Duration::from_secs(10));
        }
        let _ = fs::remove_file(&m.control_socket);
        procs::terminate_pids(&netns::pids(&m.node.netns), Duration::from_secs(2));
        if let Err(e) = netns::delete(&m.node.netns) {
            log(&format!("node {}: {e:#}", m.node.name));
        }
        let _ = fs::remove_dir_all(cni_network::node_dir(&m.node.name));
        log(&format!("node {}: removed", m.node.name));
    }
    ch.nodes_added = added.iter().map(|m| m.node.name.clone()).collect();
    ch.nodes_removed = removed.iter().map(|m| m.node.name.clone()).collect();
    Ok(ch)
}

/// The path of pod `p`'s ready file.
fn ready_file(p: &PodState) -> PathBuf {
    state::ready_dir().join(&p.netns)
}

/// Starts pod `p`'s server inside its namespace; records it in `p.server`.
pub fn start_server(p: &mut PodState, exe: &Path, children: &mut Vec<Child>) -> anyhow::Result<()> {
    let ready = ready_file(p);
    let _ = fs::remove_file(&ready);
    fs::create_dir_all(state::ready_dir()).context("cannot create the ready directory")?;
    let mut args: Vec<String> = vec![
        "netns".into(),
        "exec".into(),
        p.netns.clone(),
        exe.display().to_string(),
        "serve".into(),
        "--pod".into(),
        p.key(),
        "--ready-file".into(),
        ready.display().to_string(),
    ];
    for port in &p.ports {
        let flag = match port.protocol {
            L4Proto::Tcp => "--tcp",
            L4Proto::Udp => "--udp",
            L4Proto::Sctp => "--sctp",
        };
        args.push(flag.into());
        args.push(port.port.to_string());
    }
    let (child, proc_ref) = spawn_detached(Path::new("ip"), &args, &state::pod_log(&p.netns))?;
    children.push(child);
    p.server = Some(proc_ref);
    Ok(())
}

/// Waits until every pod of `pods` has a server that bound its sockets.
pub fn wait_servers_ready(pods: &[&PodState]) -> anyhow::Result<()> {
    let deadline = Instant::now() + SERVER_READY_TIMEOUT;
    loop {
        let mut pending = Vec::new();
        for p in pods {
            let Some(server) = p.server else { continue };
            let ready = fs::read_to_string(ready_file(p)).ok().and_then(|s| s.trim().parse::<i32>().ok());
            if ready == Some(server.pid) {
                continue;
            }
            if !server.alive() {
                let log = state::pod_log(&p.netns);
                bail!(
                    "the server of Pod {} exited before it was ready ({}: {})",
                    p.key(),
                    log.display(),
                    state::log_tail(&log, 3)
                );
            }
            pending.push(p.key());
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the servers of {} did not bind their ports within {:?}", pending.join(", "), SERVER_READY_TIMEOUT);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes pod `p` of the lab `st`: stops its server and anything else in its namespace, runs
/// the CNI DEL, then deletes what is left (veth pair, namespace). Problems are logged, not
/// returned (removal goes as far as it can).
pub fn remove_pod(p: &PodState, st: &State, log: &mut dyn FnMut(&str)) {
    if let Some(s) = p.server {
        s.terminate(Duration::from_secs(2));
    }
    if netns::exists(&p.netns) {
        procs::terminate_pids(&netns::pids(&p.netns), Duration::from_secs(2));
    }
    if let Err(e) = cni_network::del_pod(p, st) {
        log(&format!("pod {}: {e:#}; removing what is left", p.key()));
    }
    if let Err(e) = netns::delete_pod(p) {
        log(&format!("pod {}: {e:#}", p.key()));
    }
    let _ = fs::remove_file(ready_file(p));
}
