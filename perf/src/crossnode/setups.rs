//! The four setups crossnode compares, each brought up on the topology of [`super::topo`] and
//! taken down again before the next (nothing of one stays for another):
//!
//! - `switch-vxlan` / `switch-routed`: one `podswitch run --pod-network vxlan|routed` per node,
//!   inside the node's namespace under `taskset -c FWD_CORE` (`--cores FWD_CORE`), with the
//!   manifests of [`manifests`] (both Nodes, both Pods); ready when both print `podswitch
//!   running:` and each routes the other node's pod CIDR (`podswitch show routes`). Stopped with
//!   SIGTERM; the `psw-host` pair each made is removed.
//! - `kernel-vxlan`: on each node, what flannel's vxlan backend sets up: a `vxlan` device
//!   `flannel.1` (VNI 1, UDP port 8472, local = the node's InternalIP, on the uplink,
//!   `nolearning`, a fixed MAC) holding the pod CIDR's first address /32; the other node's pod
//!   CIDR routed `via` its first address `dev flannel.1 onlink`, with a permanent neighbour entry
//!   (that address -> the other `flannel.1`'s MAC) and a permanent FDB entry (that MAC -> the
//!   other node's InternalIP).
//! - `kernel-routed`: on each node, the other node's pod CIDR `via` its InternalIP on the uplink.
//!
//! Both kernel setups also route the node's own pod (/32 over its host-side veth, with a
//! permanent neighbour entry: pod b's receiver is an AF_XDP socket that answers no ARP). Pods'
//! MTU: 1450 under VXLAN (the 50-byte header inside the uplink's 1500), 1500 routed.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::topo::{Node, Topo, POD_NAMESPACE, UPLINK};
use crate::sys::{self, run, run_quiet, Proc};

/// VXLAN as flannel sets it up (and podswitch's defaults).
const VXLAN_DEV: &str = "flannel.1";
const VXLAN_VNI: &str = "1";
const VXLAN_PORT: &str = "8472";
/// The pods' MTU under VXLAN: the uplink's 1500 less the 50-byte header.
pub const VXLAN_POD_MTU: u16 = 1450;
pub const ROUTED_POD_MTU: u16 = 1500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setup {
    SwitchVxlan,
    KernelVxlan,
    SwitchRouted,
    KernelRouted,
}

impl crate::harness::rounds::Contender for Setup {
    fn name(self) -> &'static str {
        Setup::name(self)
    }
}

impl Setup {
    pub const ALL: [Setup; 4] = [Setup::SwitchVxlan, Setup::KernelVxlan, Setup::SwitchRouted, Setup::KernelRouted];

    pub fn name(self) -> &'static str {
        match self {
            Setup::SwitchVxlan => "switch-vxlan",
            Setup::KernelVxlan => "kernel-vxlan",
            Setup::SwitchRouted => "switch-routed",
            Setup::KernelRouted => "kernel-routed",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Setup::SwitchVxlan => "podswitch --pod-network vxlan",
            Setup::KernelVxlan => "kernel VXLAN (flannel.1)",
            Setup::SwitchRouted => "podswitch --pod-network routed",
            Setup::KernelRouted => "kernel routing",
        }
    }

    pub fn is_switch(self) -> bool {
        matches!(self, Setup::SwitchVxlan | Setup::SwitchRouted)
    }

    pub fn is_vxlan(self) -> bool {
        matches!(self, Setup::SwitchVxlan | Setup::KernelVxlan)
    }

    pub fn pod_mtu(self) -> u16 {
        if self.is_vxlan() {
            VXLAN_POD_MTU
        } else {
            ROUTED_POD_MTU
        }
    }
}

/// The Nodes and Pods both switches read (YAML, several documents).
pub fn manifests(t: &Topo) -> String {
    let mut y = String::new();
    for n in &t.nodes {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nspec: {{podCIDR: {}, podCIDRs: [{}]}}\n\
             status: {{addresses: [{{type: InternalIP, address: {}}}, {{type: Hostname, address: {}}}]}}\n",
            n.name, n.pod_cidr, n.pod_cidr, n.internal_ip, n.name
        );
    }
    for (p, n) in t.pods() {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {POD_NAMESPACE}}}\n\
             spec: {{nodeName: {}, containers: [{{name: c, image: bench, ports: [{{containerPort: 9, protocol: UDP}}, {{containerPort: {}, protocol: TCP}}]}}]}}\n\
             status: {{phase: Running, podIP: {}}}\n",
            p.name,
            n.name,
            super::tcp::PORT,
            p.ip
        );
    }
    y
}

/// How the switches are run.
pub struct SwitchOpts<'a> {
    pub podswitch: &'a Path,
    pub manifests: &'a Path,
    pub workdir: &'a Path,
    pub core: usize,
    pub busy_poll: bool,
}

/// The control socket of node `n`'s switch.
pub fn socket(n: &Node) -> PathBuf {
    PathBuf::from(format!("/run/podswitch/psx-{}.sock", n.name))
}

/// A setup in force (taken down by [`Running::stop`]).
pub enum Running {
    /// The switches of node 1 and node 2, and the seconds until both routed.
    Switch { procs: Vec<Proc>, ready_s: f64 },
    Kernel,
}

/// Brings `setup` up; on failure takes down what it made.
pub fn start(t: &Topo, setup: Setup, sw: &SwitchOpts) -> Result<Running> {
    t.set_pod_mtu(setup.pod_mtu())?;
    let res = match setup {
        Setup::KernelVxlan => kernel_local(t).and_then(|()| kernel_vxlan(t)).map(|()| Running::Kernel),
        Setup::KernelRouted => kernel_local(t).and_then(|()| kernel_routed(t)).map(|()| Running::Kernel),
        Setup::SwitchVxlan => start_switches(t, "vxlan", sw),
        Setup::SwitchRouted => start_switches(t, "routed", sw),
    };
    if res.is_err() && !setup.is_switch() {
        kernel_remove(t);
    }
    res
}

/// The node's own pod: /32 over its host-side veth, permanent neighbour entry.
fn kernel_local(t: &Topo) -> Result<()> {
    for (p, n) in t.pods() {
        run(&["ip", "-n", n.netns, "route", "replace", &format!("{}/32", p.ip), "dev", &p.host_if, "src", &n.internal_ip.to_string()])?;
        run(&["ip", "-n", n.netns, "neigh", "replace", &p.ip.to_string(), "lladdr", &p.mac, "dev", &p.host_if, "nud", "permanent"])?;
    }
    Ok(())
}

/// flannel's vxlan backend on both nodes (see the module contract).
fn kernel_vxlan(t: &Topo) -> Result<()> {
    for (n, other) in [(&t.nodes[0], &t.nodes[1]), (&t.nodes[1], &t.nodes[0])] {
        let ns = n.netns;
        run(&[
            "ip", "-n", ns, "link", "add", VXLAN_DEV, "address", n.vtep_mac, "type", "vxlan", "id", VXLAN_VNI, "dstport", VXLAN_PORT, "local",
            &n.internal_ip.to_string(), "dev", UPLINK, "nolearning",
        ])?;
        run(&["ip", "-n", ns, "addr", "add", &format!("{}/32", n.pod_net), "dev", VXLAN_DEV])?;
        run(&["ip", "-n", ns, "link", "set", VXLAN_DEV, "up"])?;
        let via = other.pod_net.to_string();
        run(&["ip", "-n", ns, "route", "replace", other.pod_cidr, "via", &via, "dev", VXLAN_DEV, "onlink"])?;
        run(&["ip", "-n", ns, "neigh", "replace", &via, "lladdr", other.vtep_mac, "dev", VXLAN_DEV, "nud", "permanent"])?;
        run(&["bridge", "-n", ns, "fdb", "replace", other.vtep_mac, "dev", VXLAN_DEV, "dst", &other.internal_ip.to_string(), "self", "permanent"])?;
    }
    Ok(())
}

/// Plain routing on both nodes: the other pod CIDR via the other InternalIP.
fn kernel_routed(t: &Topo) -> Result<()> {
    for (n, other) in [(&t.nodes[0], &t.nodes[1]), (&t.nodes[1], &t.nodes[0])] {
        run(&["ip", "-n", n.netns, "route", "replace", other.pod_cidr, "via", &other.internal_ip.to_string(), "dev", UPLINK])?;
    }
    Ok(())
}

/// Removes what the kernel setups add (whichever it was); what is not there is skipped.
fn kernel_remove(t: &Topo) {
    for (n, other) in [(&t.nodes[0], &t.nodes[1]), (&t.nodes[1], &t.nodes[0])] {
        run_quiet(&["ip", "-n", n.netns, "link", "del", VXLAN_DEV]);
        run_quiet(&["ip", "-n", n.netns, "route", "del", other.pod_cidr]);
    }
    for (p, n) in t.pods() {
        run_quiet(&["ip", "-n", n.netns, "route", "del", &format!("{}/32", p.ip)]);
        run_quiet(&["ip", "-n", n.netns, "neigh", "del", &p.ip.to_string(), "dev", &p.host_if]);
    }
}

fn start_switches(t: &Topo, mode: &str, sw: &SwitchOpts) -> Result<Running> {
    std::fs::create_dir_all("/run/podswitch")?;
    let t0 = Instant::now();
    let mut procs = Vec::new();
    let core = sw.core.to_string();
    let exe = sw.podswitch.to_str().ok_or_else(|| anyhow!("podswitch path is not UTF-8"))?;
    let dir = sw.manifests.to_str().ok_or_else(|| anyhow!("work dir path is not UTF-8"))?;
    for (n, other) in [(&t.nodes[0], &t.nodes[1]), (&t.nodes[1], &t.nodes[0])] {
        let sock = socket(n);
        podswitch_control::naming::remove_switch_files(&sock);
        let sock = sock.to_str().ok_or_else(|| anyhow!("socket path is not UTF-8"))?.to_string();
        let mut a: Vec<String> = [
            "ip", "netns", "exec", n.netns, "taskset", "-c", &core, exe, "run", "--manifests", dir, "--node-name", n.name, "--control-socket", &sock,
            "--cores", &core, "--uplink", UPLINK, "--uplink-gateway-mac", other.uplink_mac, "--pod-network", mode,
        ]
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
        if sw.busy_poll {
            a.push("--busy-poll".into());
        }
        let log = sw.workdir.join(format!("podswitch-{}-{mode}.log", n.name));
        procs.push(Proc::spawn(&format!("podswitch on {}", n.name), &a, log)?);
    }
    let mut running = Running::Switch { procs, ready_s: 0.0 };
    let ready = (|| -> Result<f64> {
        let Running::Switch { procs, .. } = &mut running else { unreachable!("just built") };
        for p in procs.iter_mut() {
            p.wait_for_log("podswitch running:", Duration::from_secs(60))?;
        }
        for (i, (n, other)) in [(&t.nodes[0], &t.nodes[1]), (&t.nodes[1], &t.nodes[0])].into_iter().enumerate() {
            wait_route(sw.podswitch, n, other.pod_cidr, &mut procs[i], Duration::from_secs(15))?;
        }
        Ok(t0.elapsed().as_secs_f64())
    })();
    match ready {
        Ok(s) => {
            if let Running::Switch { ready_s, .. } = &mut running {
                *ready_s = crate::stats::round_to(s, 2);
            }
            Ok(running)
        }
        Err(e) => {
            running.stop(t);
            Err(e)
        }
    }
}

/// `podswitch show WHAT --json` of node `n`'s switch.
pub fn show(podswitch: &Path, n: &Node, what: &str) -> Result<Value> {
    let sock = socket(n);
    let out = sys::run(&[podswitch.to_str().unwrap_or("podswitch"), "show", what, "--json", "--socket", sock.to_str().unwrap_or_default()])?;
    serde_json::from_str(&out).with_context(|| format!("`podswitch show {what} --json` of {} gave no JSON", n.name))
}

/// Waits until node `n`'s switch routes `cidr` (the other node's pods).
fn wait_route(podswitch: &Path, n: &Node, cidr: &str, p: &mut Proc, timeout: Duration) -> Result<()> {
    let end = Instant::now() + timeout;
    loop {
        let routes = show(podswitch, n, "routes").ok();
        let has = routes.as_ref().and_then(|v| v.get("routes")).and_then(Value::as_array).is_some_and(|a| {
            a.iter().any(|r| r.get("prefix").and_then(Value::as_str) == Some(cidr))
        });
        if has {
            return Ok(());
        }
        if let Some(st) = p.exited() {
            bail!("{} exited ({st}):\n    {}", p.name, p.log_tail(12));
        }
        if Instant::now() >= end {
            let status = sys::run(&[podswitch.to_str().unwrap_or("podswitch"), "show", "status", "--socket", socket(n).to_str().unwrap_or_default()])
                .unwrap_or_default();
            bail!(
                "{} did not route {cidr} (the other node's pods) within {timeout:?}: does it resolve the other node's MAC \
                 (neighbour table) on the uplink?\n    {}\n  show status:\n{status}",
                p.name,
                p.log_tail(12)
            );
        }
        sys::nap(Duration::from_millis(100))?;
    }
}

/// Drops by reason (non-zero) of node `n`'s switch.
pub fn switch_drops(podswitch: &Path, n: &Node) -> Vec<(String, u64)> {
    show(podswitch, n, "stats")
        .ok()
        .and_then(|v| {
            v.get("drops").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(|d| Some((d.get("reason")?.as_str()?.to_string(), d.get("count")?.as_u64()?)))
                    .filter(|(_, c)| *c > 0)
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Per port of node `n`'s switch, where frames were lost before the switch saw them (the
/// kernel's counters of its sockets: receive ring full, fill ring empty), with what the port
/// received and sent: says which switch, on which side, could not keep up.
pub fn switch_port_losses(podswitch: &Path, n: &Node) -> Vec<String> {
    let Ok(v) = show(podswitch, n, "ports") else { return Vec::new() };
    let u = |p: &Value, k: &str| p.pointer(k).and_then(Value::as_u64).unwrap_or(0);
    v.get("ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|p| u(p, "/kernel/rx_ring_full") + u(p, "/kernel/rx_dropped") > 0)
                .map(|p| {
                    format!(
                        "{} ({}): received {}, sent {}, lost in the kernel {} (rx ring full {}, no fill frame {})",
                        p.get("name").and_then(Value::as_str).unwrap_or("?"),
                        p.get("owner").and_then(Value::as_str).unwrap_or("?"),
                        u(p, "/rx_packets"),
                        u(p, "/tx_packets"),
                        u(p, "/kernel/rx_ring_full") + u(p, "/kernel/rx_dropped"),
                        u(p, "/kernel/rx_ring_full"),
                        u(p, "/kernel/rx_dropped")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Running {
    /// A switch that has exited, with its log's tail.
    pub fn exited(&mut self) -> Option<String> {
        match self {
            Running::Switch { procs, .. } => procs.iter_mut().find_map(|p| p.exited().map(|st| format!("{} exited ({st}):\n    {}", p.name, p.log_tail(10)))),
            Running::Kernel => None,
        }
    }

    /// Takes the setup down; returns what went wrong on the way (notes).
    pub fn stop(&mut self, t: &Topo) -> Vec<String> {
        let mut notes = Vec::new();
        match self {
            Running::Switch { procs, .. } => {
                for p in procs.iter_mut() {
                    let (st, killed) = p.stop(sys::Signal::SIGTERM, false, Duration::from_secs(15));
                    if killed {
                        notes.push(format!("{} did not stop on SIGTERM and was killed", p.name));
                    } else if let Some(st) = st.filter(|s| !s.success()) {
                        notes.push(format!("{} exited with {st}: {}", p.name, p.log_tail(5)));
                    }
                }
                procs.clear();
                for n in &t.nodes {
                    run_quiet(&["ip", "-n", n.netns, "link", "del", podswitch_control::naming::HOST_STACK_IF]);
                    let _ = std::fs::remove_file(socket(n));
                }
            }
            Running::Kernel => kernel_remove(t),
        }
        if t.clear_xdp() {
            notes.push("an XDP program was left on a node-side interface (detached)".into());
        }
        notes
    }
}
