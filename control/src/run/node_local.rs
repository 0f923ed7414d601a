//! The node's own stack reaching its Services' external addresses (NodePorts on its own
//! addresses, LoadBalancer IPs, externalIPs) through the switch, as kube-proxy's output chain
//! lets it.
//!
//! Why: pods reach them through the switch already; the node's own traffic does not cross the
//! switch unless routed there. A LoadBalancer IP or externalIP would follow the node's default
//! route out of the node, and a NodePort on the node's own address is delivered locally by the
//! kernel (nothing listens there).
//!
//! Contract of [`NodeLocalAccess::follow`], called with every set of Service tables put in force:
//! - LoadBalancer IPs and externalIPs get a /32 route over the host port to the switch (the
//!   switch then translates them as it does for pods: the internal backend set); routes of
//!   addresses no longer served go.
//! - NodePorts on the node's own addresses: the chain `PODSWITCH-NODEPORTS` of the `nat` table,
//!   entered from `OUTPUT` for locally-addressed packets, DNATs each (address, protocol,
//!   NodePort) to its Service port's ClusterIP and port, which the host port routes to the
//!   switch. The chain is rewritten as a whole (`iptables-restore --noflush`) when the NodePorts
//!   change.
//! - Work only when the frontends changed (or the last attempt failed): the tables' frontend
//!   index is shared between versions while no frontend comes or goes, so an unchanged index
//!   costs one comparison ([`NodeLocalSync::offer`]); the routes and rules in place are compared
//!   with those wanted, and only a difference runs a command.
//! - Failures (no `iptables`, a command refused) are returned as a sentence for the switch's
//!   problems; the tables in force stay. [`remove`] undoes both at stop.
//! - [`NodeLocalSync`] runs it on a thread of its own: the apply loop hands each new set of
//!   tables over and goes on (commands for thousands of NodePorts take a while); the thread
//!   takes the latest it was handed, skipping older ones, and its last failure is read back as
//!   a problem. Dropping it waits for the thread and removes the chain.
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam::channel::{unbounded, Sender};
use switch::tables::services::{FrontendIndex, FrontendKind, ServiceTables};

use super::host_port;
use crate::model::NodeInfo;
use crate::services::CompiledServices;

/// The `nat` chain of the NodePort DNATs.
const CHAIN: &str = "PODSWITCH-NODEPORTS";
/// The comment of the jump from `OUTPUT`, by which it is found again.
const JUMP_COMMENT: &str = "podswitch: the node's own connections to its NodePorts";

/// One NodePort DNAT: (node address, protocol name, NodePort) -> (ClusterIP, port).
type NodePortRule = (Ipv4Addr, &'static str, u16, Ipv4Addr, u16);

#[derive(Default)]
pub struct NodeLocalAccess {
    routed: BTreeSet<Ipv4Addr>,
    rules: Vec<NodePortRule>,
}

fn proto_name(p: u8) -> Option<&'static str> {
    match p {
        6 => Some("tcp"),
        17 => Some("udp"),
        132 => Some("sctp"),
        _ => None,
    }
}

/// What `tables` asks for: the addresses to route, the NodePort DNATs (sorted).
fn wanted(tables: &ServiceTables) -> (BTreeSet<Ipv4Addr>, Vec<NodePortRule>) {
    let mut routed = BTreeSet::new();
    let mut rules = Vec::new();
    // The ClusterIP frontend of each Service port: (service id, Service port, protocol).
    let cluster_ips: HashMap<(u32, u16, u8), (u32, u16)> = tables
        .frontends
        .iter()
        .filter(|f| f.kind == FrontendKind::ClusterIp)
        .map(|f| ((f.service_id, f.service_port, f.key.proto), (f.key.ip, f.key.port)))
        .collect();
    for f in tables.frontends.iter() {
        match f.kind {
            FrontendKind::LoadBalancer | FrontendKind::ExternalIp => {
                routed.insert(Ipv4Addr::from(f.key.ip));
            }
            FrontendKind::NodePort => {
                let cluster_ip = cluster_ips.get(&(f.service_id, f.service_port, f.key.proto));
                if let (Some(&(cip, cport)), Some(p)) = (cluster_ip, proto_name(f.key.proto)) {
                    rules.push((Ipv4Addr::from(f.key.ip), p, f.key.port, Ipv4Addr::from(cip), cport));
                }
            }
            FrontendKind::ClusterIp => {}
        }
    }
    rules.sort_unstable();
    (routed, rules)
}

impl NodeLocalAccess {
    /// Brings routes and NodePort DNATs in step with `tables` (see the module contract).
    pub fn follow(&mut self, node: &NodeInfo, tables: &ServiceTables) -> Result<(), String> {
        let (routed, rules) = wanted(tables);
        let mut problems = Vec::new();
        if routed != self.routed {
            let net = |a: &Ipv4Addr| ipnet::Ipv4Net::new(*a, 32).expect("a /32");
            let gone: Vec<_> = self.routed.difference(&routed).map(net).collect();
            let new: Vec<_> = routed.difference(&self.routed).map(net).collect();
            match host_port::reroute(node, &gone, &new) {
                Ok(()) => self.routed = routed,
                Err(e) => problems.push(format!("routing LoadBalancer IPs and externalIPs to the switch for the node itself: {e}")),
            }
        }
        if rules != self.rules {
            match write_chain(&rules) {
                Ok(()) => self.rules = rules,
                Err(e) => problems.push(format!("NodePorts for the node itself (iptables chain {CHAIN}): {e}")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// [`NodeLocalAccess`] on its own thread (see the module contract).
pub struct NodeLocalSync {
    tx: Option<Sender<Arc<CompiledServices>>>,
    thread: Option<JoinHandle<()>>,
    problem: Arc<Mutex<Option<String>>>,
    /// The frontend index last handed over.
    offered: Option<Arc<FrontendIndex>>,
}

impl NodeLocalSync {
    pub fn start(node: NodeInfo) -> Self {
        let (tx, rx) = unbounded::<Arc<CompiledServices>>();
        let problem = Arc::new(Mutex::new(None));
        let last_problem = Arc::clone(&problem);
        let thread = std::thread::Builder::new()
            .name("podswitch-nodelocal".into())
            .spawn(move || {
                let mut access = NodeLocalAccess::default();
                while let Ok(mut latest) = rx.recv() {
                    while let Ok(newer) = rx.try_recv() {
                        latest = newer;
                    }
                    let result = access.follow(&node, &latest.tables).err();
                    if let Some(p) = &result {
                        tracing::warn!("{p}");
                    }
                    *last_problem.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = result;
                }
            })
            .ok();
        if thread.is_none() {
            *problem.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some("the node's own access to NodePorts, LoadBalancer IPs and externalIPs: could not start its thread".into());
        }
        Self { tx: Some(tx), thread, problem, offered: None }
    }

    /// Hands `services` over when its frontends differ from the last handed over, or when the
    /// last attempt failed (it is tried again with the next tables).
    pub fn offer(&mut self, services: &Arc<CompiledServices>) {
        if self.offered.as_ref().is_some_and(|o| Arc::ptr_eq(o, &services.tables.by_key)) && self.problem().is_none() {
            return;
        }
        self.offered = Some(Arc::clone(&services.tables.by_key));
        if let Some(tx) = &self.tx {
            let _ = tx.send(Arc::clone(services));
        }
    }

    /// The last attempt's failure, if it failed.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Drop for NodeLocalSync {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            remove();
        }
    }
}

fn iptables(args: &[&str]) -> Result<std::process::Output, String> {
    Command::new("iptables").args(["-w", "5"]).args(args).output().map_err(|e| format!("iptables: {e}"))
}

/// The jump from `OUTPUT` into the chain, for locally-addressed packets.
fn jump_rule() -> [&'static str; 11] {
    ["OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", JUMP_COMMENT, "-j", CHAIN]
}

/// Writes the chain with `rules` and makes sure `OUTPUT` enters it.
fn write_chain(rules: &[NodePortRule]) -> Result<(), String> {
    let mut text = format!("*nat\n:{CHAIN} - [0:0]\n-F {CHAIN}\n");
    for (addr, proto, port, cip, cport) in rules {
        text.push_str(&format!("-A {CHAIN} -d {addr}/32 -p {proto} -m {proto} --dport {port} -j DNAT --to-destination {cip}:{cport}\n"));
    }
    text.push_str("COMMIT\n");
    let mut child = Command::new("iptables-restore")
        .args(["-w", "5", "--noflush"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    child.stdin.take().expect("piped").write_all(text.as_bytes()).map_err(|e| format!("iptables-restore: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("iptables-restore: {e}"))?;
    if !out.status.success() {
        return Err(format!("iptables-restore: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let jump = jump_rule();
    let check = iptables(&[&["-t", "nat", "-C"][..], &jump[..]].concat())?;
    if !check.status.success() {
        let add = iptables(&[&["-t", "nat", "-I"][..], &jump[..]].concat())?;
        if !add.status.success() {
            return Err(format!("iptables -t nat -I OUTPUT ...: {}", String::from_utf8_lossy(&add.stderr).trim()));
        }
    }
    Ok(())
}

/// Removes the jump and the chain (the routes go with the host port).
pub fn remove() {
    let jump = jump_rule();
    while iptables(&[&["-t", "nat", "-D"][..], &jump[..]].concat()).is_ok_and(|o| o.status.success()) {}
    let _ = iptables(&["-t", "nat", "-F", CHAIN]);
    let _ = iptables(&["-t", "nat", "-X", CHAIN]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::tables::services::{BackendSet, Frontend, FrontendKey, OnEmpty};

    fn fe(kind: FrontendKind, ip: &str, port: u16, proto: u8, service_id: u32, service_port: u16) -> Frontend {
        let empty = BackendSet { backends: Arc::from([]), maglev: switch::tables::maglev::MaglevTable::default(), on_empty: OnEmpty::Reject, masquerade: false };
        Frontend {
            name: "x/s".into(),
            affinity_id: switch::tables::services::affinity_id_of("x/s"),
            service_id,
            service_port,
            kind,
            key: FrontendKey { ip: u32::from(ip.parse::<Ipv4Addr>().unwrap()), port, proto },
            internal: empty.clone(),
            external: empty,
            affinity_timeout_s: None,
            source_ranges: Vec::new(),
        }
    }

    #[test]
    fn external_addresses_are_routed_and_node_ports_dnat_to_their_service_ports_cluster_ip() {
        let mut t = ServiceTables::default();
        t.push(fe(FrontendKind::ClusterIp, "10.96.0.10", 80, 6, 1, 80));
        t.push(fe(FrontendKind::ClusterIp, "10.96.0.10", 81, 17, 1, 81));
        t.push(fe(FrontendKind::NodePort, "172.18.0.2", 30080, 6, 1, 80));
        t.push(fe(FrontendKind::NodePort, "172.18.0.2", 30081, 17, 1, 81));
        t.push(fe(FrontendKind::LoadBalancer, "192.0.2.10", 80, 6, 1, 80));
        t.push(fe(FrontendKind::ExternalIp, "192.0.2.20", 80, 6, 1, 80));
        // Another Service's NodePort with the same Service port number: its own ClusterIP.
        t.push(fe(FrontendKind::ClusterIp, "10.96.0.11", 80, 6, 2, 80));
        t.push(fe(FrontendKind::NodePort, "172.18.0.2", 30090, 6, 2, 80));
        let (routed, rules) = wanted(&t);
        assert_eq!(routed.into_iter().collect::<Vec<_>>(), ["192.0.2.10".parse::<Ipv4Addr>().unwrap(), "192.0.2.20".parse().unwrap()]);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            rules,
            [
                (ip("172.18.0.2"), "tcp", 30080, ip("10.96.0.10"), 80),
                (ip("172.18.0.2"), "tcp", 30090, ip("10.96.0.11"), 80),
                (ip("172.18.0.2"), "udp", 30081, ip("10.96.0.10"), 81),
            ]
        );
    }
}
