//! The lab's pod network as a container runtime sees it: per node a CNI configuration
//! directory whose `.conflist` runs `podswitch-cni`, and ADD/DEL of a lab pod through it with
//! [`super::cni_runtime`], run inside the pod's node namespace (where its switch and veths
//! live) with `CNI_NETNS` the pod's namespace.
//!
//! Contract:
//! - Everything lives under `/run/podswitch/lab/cni` (so `lab down` removes it with the lab),
//!   installed by `podswitch cni install`'s own function ([`install`], `cni_install::install`):
//!   `bin/podswitch-cni` (copied from the one found next to the lab's executable, then on
//!   PATH); per node `NODE/net.d/10-podswitch.conflist` ([`conf_dir`]), the plugin's attachment
//!   records `NODE/attachments` (its `dataDir`, which the node's switch follows), host-local's
//!   leases `NODE/ipam` (its `ipam.dataDir`) and the runtime's result cache `NODE/cache`.
//! - The plugins are looked for in `bin/`, then in [`REFERENCE_PLUGINS`] (host-local, portmap,
//!   ...): [`cni_path`], which `lab exec NODE` exports as `CNI_PATH` with `NETCONFPATH` the
//!   node's [`conf_dir`] (cnitool's names).
//! - The conflist is what `podswitch cni install` writes by default (network `podswitch`, CNI
//!   1.0.0, which runtimes on libcni before 1.2 need), `podswitch-cni` alone with capability
//!   `ips` and host-local IPAM, given the node's pod CIDR, the pods' MTU, the node switch's
//!   `controlSocket`, the directories above and `waitForSwitch: false`: the lab builds pods
//!   before it starts their switch (and with the switch stopped), and waits for the switch's
//!   ports itself.
//! - A lab pod's container ID is its namespace's name (`psl_NS_NAME`), its interface `eth0`;
//!   ADD passes its planned address as `runtimeConfig.ips` (so the plan decides the IPs and
//!   host-local records them), then CHECK. An ADD or CHECK that fails is followed by DEL (as
//!   runtimes do) and is the pod's error.
//! - Each node's switch follows its node's records (`podswitch run --cni-data-dir`
//!   [`data_dir`]): it wires a pod as soon as its ADD recorded it.
//! - [`foreign_attachments`]: attachments recorded by the plugin for a Pod under another
//!   container ID than the lab's are another runtime's (a test's): the lab does not build
//!   those pods and reports their address in the API view, as kubelet reports the CNI result.
use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};

use super::cni_runtime::{Attachment, ConfList, Runtime};
use super::netns;
use super::state::{self, NodeSwitch, PodState, State};
use podswitch_control::cni_install::{self, InstallOptions};
use podswitch_control::cni_records;

/// The conflist's file name, as `podswitch cni install` writes it.
pub const CONFLIST_FILE: &str = cni_install::DEFAULT_CONF_FILE;
/// Where Debian's `containernetworking-plugins` puts the reference plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
/// The plugin's executable.
pub const PLUGIN: &str = cni_install::PLUGIN_TYPE;
/// The pod side's interface name.
pub const POD_IFNAME: &str = "eth0";

pub fn cni_dir() -> PathBuf {
    state::lab_dir().join("cni")
}
pub fn bin_dir() -> PathBuf {
    cni_dir().join("bin")
}
/// Everything of node `node`'s CNI network.
pub fn node_dir(node: &str) -> PathBuf {
    cni_dir().join(node)
}
/// Node `node`'s CNI configuration directory (`NETCONFPATH`).
pub fn conf_dir(node: &str) -> PathBuf {
    node_dir(node).join("net.d")
}
/// Node `node`'s conflist.
pub fn conflist_path(node: &str) -> PathBuf {
    conf_dir(node).join(CONFLIST_FILE)
}
/// The plugin's `dataDir` (its attachment records) on node `node`.
pub fn data_dir(node: &str) -> PathBuf {
    node_dir(node).join("attachments")
}
fn ipam_dir(node: &str) -> PathBuf {
    node_dir(node).join("ipam")
}
fn cache_dir(node: &str) -> PathBuf {
    node_dir(node).join("cache")
}

/// The directories plugins are looked for in (`CNI_PATH`).
pub fn cni_path() -> Vec<PathBuf> {
    vec![bin_dir(), PathBuf::from(REFERENCE_PLUGINS)]
}

/// `CNI_PATH` as a string (`:`-separated).
pub fn cni_path_var() -> String {
    cni_path().iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
}

/// What `podswitch cni install` would be given for node `n` whose pods have MTU `mtu`, with
/// the plugin binary `plugin` (see the module contract).
fn install_options(n: &NodeSwitch, mtu: u16, plugin: &Path) -> anyhow::Result<InstallOptions> {
    let pod_cidr = n.pod_cidr.parse().with_context(|| format!("node {}'s pod CIDR {:?}", n.name, n.pod_cidr))?;
    Ok(InstallOptions {
        bin_dir: bin_dir(),
        conf_dir: conf_dir(&n.name),
        mtu: Some(mtu.into()),
        pod_cidr: Some(pod_cidr),
        control_socket: Some(n.control_socket.clone()),
        data_dir: Some(data_dir(&n.name)),
        ipam_data_dir: Some(ipam_dir(&n.name)),
        wait_for_switch: false,
        ..InstallOptions::new(plugin)
    })
}

/// Installs the plugin and every node's conflist with `podswitch cni install`'s own function,
/// where either is missing or differs from what the lab's state asks for (so the supervisor's
/// rounds cost a comparison, not a copy of the plugin).
pub fn install(st: &State) -> anyhow::Result<()> {
    let plugin = podswitch_control::sibling::find(PLUGIN)?;
    for n in st.node_switches() {
        let o = install_options(&n, st.switch.pod_mtu(), &plugin)?;
        let current = fs::read(o.conflist_path()).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if current.as_ref() == Some(&cni_install::conflist(&o)) && o.binary_path().is_file() {
            continue;
        }
        cni_install::install(&o).with_context(|| format!("cannot install the CNI network of node {}", n.name))?;
    }
    Ok(())
}

/// The container ID the lab gives pod `p`.
pub fn container_id(p: &PodState) -> String {
    p.netns.clone()
}

/// The name of the node pod `p` runs on (`p.node`, or the first node for older states).
fn node_of<'a>(p: &'a PodState, st: &'a State) -> &'a str {
    if p.node.is_empty() {
        &st.node.name
    } else {
        &p.node
    }
}

fn attachment(p: &PodState) -> Attachment {
    Attachment::for_pod(&container_id(p), &netns::netns_path(&p.netns), POD_IFNAME, &p.namespace, &p.name)
}

fn runtime(node: &str) -> Runtime {
    Runtime { cni_path: cni_path(), cache_dir: cache_dir(node) }
}

/// ADD and CHECK of pod `p` (its namespace exists) with its planned address; on failure, DEL.
pub fn add_pod(p: &PodState, st: &State) -> anyhow::Result<()> {
    let node = node_of(p, st);
    // The prefix of the range host-local hands the address out of.
    let pod_cidr_len = st
        .node_switches()
        .into_iter()
        .find(|n| n.name == node)
        .and_then(|n| n.pod_cidr.parse::<ipnet::Ipv4Net>().ok())
        .map_or(32, |c| c.prefix_len());
    let list = ConfList::load(&conflist_path(node))?;
    let mut a = attachment(p);
    a.capability_args.insert("ips".into(), json!([format!("{}/{pod_cidr_len}", p.ip)]));
    let rt = runtime(node);
    // ADD, then CHECK: the attachment is as the plugin's result says.
    let added = netns::in_netns(&p.node_netns, || rt.add(&list, &a).and_then(|_| rt.check(&list, &a)))?;
    if let Err(e) = added {
        let undo = netns::in_netns(&p.node_netns, || rt.del(&list, &a)).and_then(|r| r.map_err(anyhow::Error::from));
        let undo = undo.err().map(|u| format!("; the DEL after it failed too: {u:#}")).unwrap_or_default();
        anyhow::bail!("CNI ADD of {} on node {node}: {e}{undo}", p.key());
    }
    Ok(())
}

/// DEL of pod `p`.
pub fn del_pod(p: &PodState, st: &State) -> anyhow::Result<()> {
    let node = node_of(p, st);
    let list = ConfList::load(&conflist_path(node))?;
    let rt = runtime(node);
    let ns = if netns::exists(&p.node_netns) { p.node_netns.as_str() } else { st.node.netns.as_str() };
    netns::in_netns(ns, || rt.del(&list, &attachment(p)))?.with_context(|| format!("CNI DEL of {} on node {node}", p.key()))
}

/// The pods attached by another runtime than the lab (see the module contract), keyed
/// `namespace/name`, with their address.
pub fn foreign_attachments(st: &State) -> BTreeMap<String, Ipv4Addr> {
    let mut out = BTreeMap::new();
    for n in st.node_switches() {
        for r in cni_records::list(&data_dir(&n.name)).unwrap_or_default() {
            let lab_id = r.pod.split_once('/').map(|(ns, name)| state::pod_netns(ns, name));
            if lab_id.as_deref() == Some(r.container_id.as_str()) {
                continue;
            }
            if let Some(ip) = r.address.split('/').next().and_then(|a| a.parse().ok()) {
                out.insert(r.pod, ip);
            }
        }
    }
    out
}

/// The `cni` object of `lab status --json` for node `node`.
pub fn status_json(node: &str) -> Value {
    json!({"bin_dir": bin_dir(), "conf_dir": conf_dir(node), "path": cni_path_var(), "conflist": conflist_path(node)})
}
