//! The two node setups of `bench apps`, on the benchmark topology of [`crate::lab`] (pods
//! `psb-a`, the client, and `psb-b`, the server, their host-side veths in `psb-node`):
//!
//! - `switch`: podswitch in `psb-node` with the manifests of [`manifests`] (Node `node-1`, the
//!   two Pods, Service `bench/apps` with ClusterIP [`SVC_IP`], ports 80 and 5201 to pod b).
//!   The pods' `eth0` runs with TX checksum offload off (`ethtool -K eth0 tx off`), as podswitch
//!   needs today (issue #13 part 1 is not done). Adaptive polling (podswitch's default) unless
//!   `--busy-poll`.
//! - `kernel`: what a kubelet-bridge (kubenet) node does: the pods' host-side veths in a Linux
//!   bridge `psa-br0` that holds the pods' gateway 169.254.1.1, the pod CIDR on-link in each pod
//!   (pod -> pod is bridged), br_netfilter on (`bridge-nf-call-iptables`, which kube-proxy
//!   requires for hairpin Service traffic on a bridge), forwarding on, and the Service as
//!   kube-proxy's nftables mode writes it ([`kube_proxy_rules`]). The pods keep their default
//!   offloads (`tx on`: checksum offload, TSO/GSO).
//!
//! Contract: [`start`] brings a setup up (and takes down what it made if that fails);
//! [`Running::stop`] takes it down and leaves the topology as [`crate::lab::Lab::create`] made
//! it (offloads off). Nothing outside the `psb-` namespaces is touched.
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::kube_proxy::{self, service_chain, ServicePort, T};
use crate::lab::{Lab, NS_NODE, POD_NAMESPACE};
use crate::sys::{self, run, run_quiet, Proc};

pub const NODE_NAME: &str = "node-1";
pub const POD_CIDR: &str = "10.244.0.0/24";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The Service's ClusterIP.
pub const SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// HTTP (nginx in pod b) and iperf3's port, both the Service's ports and pod b's.
pub const HTTP_PORT: u16 = 80;
pub const IPERF_PORT: u16 = 5201;
const BRIDGE: &str = "psa-br0";
const GATEWAY: &str = "169.254.1.1";
const SOCKET: &str = "/run/podswitch/psa-bench.sock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setup {
    Switch,
    Kernel,
}

impl crate::harness::rounds::Contender for Setup {
    fn name(self) -> &'static str {
        Setup::name(self)
    }
}

impl Setup {
    pub const ALL: [Setup; 2] = [Setup::Switch, Setup::Kernel];

    pub fn name(self) -> &'static str {
        match self {
            Setup::Switch => "switch",
            Setup::Kernel => "kernel",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Setup::Switch => "podswitch (pods' tx checksum offload off)",
            Setup::Kernel => "kernel: Linux bridge, default offloads, kube-proxy nftables rules",
        }
    }
}

/// Node, Pods, Service and EndpointSlice podswitch reads.
pub fn manifests(lab: &Lab) -> String {
    let mut y = String::new();
    let _ = write!(
        y,
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE_NAME}}}\nspec: {{podCIDR: {POD_CIDR}}}\n\
         status: {{addresses: [{{type: InternalIP, address: 172.18.0.2}}]}}\n---\n"
    );
    for p in [&lab.a, &lab.b] {
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {POD_NAMESPACE}, labels: {{app: {}}}}}\n\
             spec: {{nodeName: {NODE_NAME}, containers: [{{name: c, image: bench, ports: [{{name: http, containerPort: {HTTP_PORT}, protocol: TCP}}, {{name: iperf, containerPort: {IPERF_PORT}, protocol: TCP}}]}}]}}\n\
             status: {{phase: Running, podIP: {}}}\n---\n",
            p.name, p.name, p.ip
        );
    }
    let _ = write!(
        y,
        "apiVersion: v1\nkind: Service\nmetadata: {{name: apps, namespace: {POD_NAMESPACE}}}\n\
         spec: {{type: ClusterIP, clusterIP: {SVC_IP}, ports: [{{name: http, port: {HTTP_PORT}, targetPort: {HTTP_PORT}, protocol: TCP}}, {{name: iperf, port: {IPERF_PORT}, targetPort: {IPERF_PORT}, protocol: TCP}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: apps-abc, namespace: {POD_NAMESPACE}, labels: {{kubernetes.io/service-name: apps}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {HTTP_PORT}, protocol: TCP}}, {{name: iperf, port: {IPERF_PORT}, protocol: TCP}}]\n\
         endpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  nodeName: {NODE_NAME}\n",
        lab.b.ip
    );
    y
}

/// kube-proxy's nftables mode for the Service's two ports ([`crate::kube_proxy`], without
/// NodePorts): per port `bench/apps/tcp/PORTNAME` a service chain to the one endpoint.
pub fn kube_proxy_rules(endpoint: Ipv4Addr) -> String {
    let mut w = kube_proxy::base(SERVICE_CIDR, false);
    let _ = writeln!(w, "add element {T} cluster-ips {{ {SVC_IP} }}");
    for (name, port) in [("http", HTTP_PORT), ("iperf", IPERF_PORT)] {
        let spn = format!("bench/apps/tcp/{name}");
        let p = ServicePort { spn: &spn, proto: "tcp", cluster_ip: SVC_IP, port, endpoints: &[endpoint], target_port: port, pod_cidr: POD_CIDR };
        let chain = service_chain(&mut w, &p);
        let _ = writeln!(w, "add element {T} service-ips {{ {SVC_IP} . tcp . {port} : goto {chain} }}");
    }
    w
}

/// How the switch is run.
pub struct SwitchOpts<'a> {
    pub podswitch: &'a Path,
    pub manifests: &'a Path,
    pub workdir: &'a Path,
    pub core: usize,
    pub busy_poll: bool,
    /// Further `podswitch run` arguments (`--switch-arg`).
    pub extra: &'a [String],
}

/// A setup in force.
pub enum Running {
    Switch(Proc),
    Kernel,
}

fn pod_offloads(lab: &Lab, on: bool) -> Result<()> {
    for p in [&lab.a, &lab.b] {
        run(&["ip", "netns", "exec", p.netns, "ethtool", "-K", "eth0", "tx", if on { "on" } else { "off" }])?;
    }
    Ok(())
}

/// Brings `setup` up; on failure takes down what it made.
pub fn start(lab: &Lab, setup: Setup, sw: &SwitchOpts) -> Result<Running> {
    match setup {
        Setup::Switch => {
            pod_offloads(lab, false)?;
            start_switch(sw).map(Running::Switch)
        }
        Setup::Kernel => {
            let r = start_kernel(lab, sw.workdir);
            if r.is_err() {
                kernel_remove(lab);
            }
            r.map(|()| Running::Kernel)
        }
    }
}

fn start_switch(sw: &SwitchOpts) -> Result<Proc> {
    std::fs::create_dir_all("/run/podswitch")?;
    podswitch_control::naming::remove_switch_files(std::path::Path::new(SOCKET));
    let core = sw.core.to_string();
    let mut a: Vec<String> = [
        "ip", "netns", "exec", NS_NODE, "taskset", "-c", &core, sw.podswitch.to_str().ok_or_else(|| anyhow!("podswitch path is not UTF-8"))?, "run",
        "--manifests", sw.manifests.to_str().ok_or_else(|| anyhow!("work dir path is not UTF-8"))?, "--node-name", NODE_NAME, "--control-socket", SOCKET,
        "--cores", &core,
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();
    if sw.busy_poll {
        a.push("--busy-poll".into());
    }
    a.extend(sw.extra.iter().cloned());
    let mut p = Proc::spawn("podswitch", &a, sw.workdir.join("podswitch.log"))?;
    p.wait_for_log("podswitch running:", Duration::from_secs(60))?;
    Ok(p)
}

fn start_kernel(lab: &Lab, workdir: &Path) -> Result<()> {
    pod_offloads(lab, true)?;
    let n = ["ip", "-n", NS_NODE];
    run(&[&n[..], &["link", "add", BRIDGE, "type", "bridge"]].concat())?;
    run(&["ip", "netns", "exec", NS_NODE, "sysctl", "-qw", &format!("net.ipv6.conf.{BRIDGE}.disable_ipv6=1")])?;
    for p in [&lab.a, &lab.b] {
        run(&[&n[..], &["link", "set", &p.host_if, "master", BRIDGE]].concat())?;
        run(&["ip", "-n", p.netns, "route", "replace", POD_CIDR, "dev", "eth0", "scope", "link"])?;
    }
    run(&[&n[..], &["addr", "add", &format!("{GATEWAY}/32"), "dev", BRIDGE]].concat())?;
    run(&[&n[..], &["link", "set", BRIDGE, "up"]].concat())?;
    run(&[&n[..], &["route", "replace", POD_CIDR, "dev", BRIDGE]].concat())?;
    run(&["ip", "netns", "exec", NS_NODE, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    run(&["ip", "netns", "exec", NS_NODE, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])
        .context("br_netfilter (net.bridge.bridge-nf-call-iptables), which kube-proxy needs on a bridge")?;
    let f = workdir.join("kube-proxy.nft");
    std::fs::write(&f, kube_proxy_rules(lab.b.ip))?;
    run(&["ip", "netns", "exec", NS_NODE, "nft", "-f", f.to_str().context("path")?]).context("loading kube-proxy's nftables rules")?;
    sys::nap(Duration::from_millis(300))
}

/// Removes what the kernel setup adds; what is not there is skipped.
fn kernel_remove(lab: &Lab) {
    run_quiet(&["ip", "netns", "exec", NS_NODE, "nft", "delete", "table", "ip", "kube-proxy"]);
    run_quiet(&["ip", "-n", NS_NODE, "link", "del", BRIDGE]);
    for p in [&lab.a, &lab.b] {
        run_quiet(&["ip", "-n", p.netns, "route", "del", POD_CIDR, "dev", "eth0"]);
        run_quiet(&["ip", "-n", p.netns, "neigh", "flush", "dev", "eth0"]);
        run_quiet(&["ip", "netns", "exec", p.netns, "ethtool", "-K", "eth0", "tx", "off"]);
    }
}

/// `podswitch show WHAT --json`.
pub fn show(podswitch: &Path, what: &str) -> Result<Value> {
    let out = sys::run(&[podswitch.to_str().unwrap_or("podswitch"), "show", what, "--json", "--socket", SOCKET])?;
    serde_json::from_str(&out).with_context(|| format!("`podswitch show {what} --json` gave no JSON"))
}

/// The kernel's losses per port of the switch (`show ports`: frames the kernel dropped before
/// the switch saw them, receive ring full or no fill frame), by interface name.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PortLoss {
    pub port: String,
    pub rx_ring_full: u64,
    pub no_fill_frame: u64,
}

impl PortLoss {
    pub fn total(&self) -> u64 {
        self.rx_ring_full + self.no_fill_frame
    }
}

/// Every port's kernel losses so far.
pub fn port_losses(podswitch: &Path) -> Result<Vec<PortLoss>> {
    let v = show(podswitch, "ports")?;
    let u = |p: &Value, k: &str| p.pointer(k).and_then(Value::as_u64).unwrap_or(0);
    Ok(v.get("ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| PortLoss {
                    port: format!(
                        "{} ({})",
                        p.get("name").and_then(Value::as_str).unwrap_or("?"),
                        p.get("owner").and_then(Value::as_str).unwrap_or("?")
                    ),
                    rx_ring_full: u(p, "/kernel/rx_ring_full"),
                    no_fill_frame: u(p, "/kernel/rx_dropped"),
                })
                .collect()
        })
        .unwrap_or_default())
}

/// `after - before` per port (ports in `after`).
pub fn loss_delta(before: &[PortLoss], after: &[PortLoss]) -> Vec<PortLoss> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.port == a.port).cloned().unwrap_or_default();
            PortLoss {
                port: a.port.clone(),
                rx_ring_full: a.rx_ring_full.saturating_sub(b.rx_ring_full),
                no_fill_frame: a.no_fill_frame.saturating_sub(b.no_fill_frame),
            }
        })
        .collect()
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Running::Switch(p) => Some(p.pid()),
            Running::Kernel => None,
        }
    }

    pub fn exited(&mut self) -> Option<String> {
        match self {
            Running::Switch(p) => p.exited().map(|st| format!("podswitch exited ({st}):\n    {}", p.log_tail(10))),
            Running::Kernel => None,
        }
    }

    /// Takes the setup down; returns what went wrong on the way.
    pub fn stop(&mut self, lab: &Lab) -> Vec<String> {
        let mut notes = Vec::new();
        match self {
            Running::Switch(p) => {
                let (st, killed) = p.stop(sys::Signal::SIGTERM, false, Duration::from_secs(15));
                if killed {
                    notes.push("podswitch did not stop on SIGTERM and was killed".into());
                } else if let Some(st) = st.filter(|s| !s.success()) {
                    notes.push(format!("podswitch exited with {st}: {}", p.log_tail(5)));
                }
                run_quiet(&["ip", "-n", NS_NODE, "link", "del", podswitch_control::naming::HOST_STACK_IF]);
                podswitch_control::naming::remove_switch_files(std::path::Path::new(SOCKET));
            }
            Running::Kernel => kernel_remove(lab),
        }
        if lab.clear_xdp() {
            notes.push("an XDP program was left on a host-side veth (detached)".into());
        }
        notes
    }
}

/// The control socket (removed by the run's cleanup).
pub fn socket() -> PathBuf {
    PathBuf::from(SOCKET)
}

#[cfg(test)]
mod tests {
    use super::*;
    use podswitch_control::manifests::{add_documents, Manifests};

    #[test]
    fn manifests_hold_both_pods_and_the_service() {
        let (a, b) = Lab::pods();
        let y = manifests(&Lab { a, b });
        let mut m = Manifests::default();
        add_documents(&mut m, Path::new("apps.yaml"), &y).unwrap();
        assert_eq!(m.pods.len(), 2);
        assert_eq!(m.services.len(), 1);
    }

    #[test]
    fn rules_dnat_both_ports_to_the_endpoint() {
        let r = kube_proxy_rules(Ipv4Addr::new(10, 244, 0, 11));
        assert!(r.contains("meta l4proto tcp dnat to 10.244.0.11:80"));
        assert!(r.contains("meta l4proto tcp dnat to 10.244.0.11:5201"));
        assert!(r.contains(&format!("service-ips {{ {SVC_IP} . tcp . 5201 : goto service-")));
    }
}
