//! `podswitch run`: the switch process.
//!
//! Contract:
//! - Start-up (`startup.rs`) reads the manifests, creates the node's host port, starts the
//!   pinned workers, attaches the host port first and then every local pod's host-side veth,
//!   publishes the tables and prints the XDP and copy mode of every port and which worker
//!   serves which of its queues. With an uplink it first checks that the kernel's ephemeral
//!   ports stay clear of the masquerade ports (`port_ranges.rs`); the uplink's XDP program
//!   redirects only what the switch owns ([`crate::uplink_filter`], written with every publish),
//!   so the node's own traffic on it goes on while the switch starts, runs and stops. Any failure there
//!   prints one line and exits non-zero, leaving nothing behind (`teardown.rs`).
//! - Then it follows the manifest directory (inotify, and a 1 s re-check) or the Kubernetes
//!   API ([`watch`]): a changed directory is re-read whole; a bad file is reported (log and
//!   `show status`) while the tables in force stay in force. Pod ports whose interface is
//!   missing are retried every second and listed as pending.
//! - Every view is applied incrementally (`apply.rs`): its cost follows what changed.
//! - The CNI plugin's attachment records (`--cni-data-dir`, [`crate::cni_records`]) are
//!   followed by inotify (`cni_watch.rs`): a pod the plugin wired has its port as soon as the
//!   record is written, with or without a Pod object; the records found at start are adopted.
//! - Readers (`show` over the control socket, [`show_handler`]; `/metrics`, [`metrics_view`];
//!   the verdict log collector, [`flows`]) read what the apply side publishes (`shared.rs`).
//! - With `--uplink`, the uplink's next hops (the default gateway unless
//!   `--uplink-gateway-mac` is given) are resolved by the kernel and followed
//!   ([`crate::neighbours`]); a change of the gateway's MAC republishes the tables.
//! - Connections the node's kernel DNATs to a pod (portmap's hostPorts) leave it for the switch
//!   masqueraded, so that the pod's replies return through the kernel (`dnat_return.rs`).
//! - kube-proxy's health checks ([`crate::health`]): `/healthz` and `/livez` on
//!   `--healthz-bind-address`, and a server on every `healthCheckNodePort` of a LoadBalancer
//!   Service with `externalTrafficPolicy: Local`, in step with the tables published.
//! - With `--l2-announce`, the LoadBalancer and external IPs this node can serve are announced
//!   (ARP on the uplink) by one node each, chosen through Leases ([`crate::l2announce`]).
//! - SIGTERM/SIGINT detach every port, stop the workers, delete the host port and the
//!   neighbour entries the switch made.
pub mod affinity;
mod apply;
mod cni_watch;
pub mod conntrack_timeouts;
pub mod nodeport_addresses;
mod dnat_return;
pub mod node_local;
pub mod flows;
pub mod host_port;
pub mod metrics_view;
mod port_ranges;
mod shared;
pub mod show_handler;
mod startup;
mod teardown;
pub mod watch;

use std::path::PathBuf;

use crate::kube_source::KubeArgs;
use crate::metrics::MetricsArgs;
use crate::naming;
use startup::Source;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum XdpModeArg {
    Native,
    Generic,
}

/// Run the switch on this node.
#[derive(Debug, clap::Args)]
#[command(long_about = "Run the switch: attach AF_XDP sockets to the node's host port and to the \
host-side veth of every local pod, and route pod traffic in userspace.\n\n\
Pods, Namespaces and the Node come from a directory of Kubernetes YAML (--manifests), re-read \
whenever it changes. `podswitch show ...` talks to the running switch over --control-socket.")]
pub struct RunArgs {
    /// Directory of Kubernetes manifests (Namespace, Pod, Node; several documents per file allowed).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub health: crate::health::HealthArgs,
    #[command(flatten)]
    pub l2: crate::l2announce::L2AnnounceArgs,
    /// Which Node of the manifests this is (needed when they hold several).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Unix socket for `podswitch show` (mode 0600: root only).
    #[arg(long, value_name = "PATH", default_value = naming::DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
    /// Keep the connection table in this file, so that the next `podswitch run` given the
    /// same file (a restart, an upgrade, a crash) takes over every connection with its
    /// translation. Must outlive the process (in a container: a hostPath such as
    /// /run/podswitch) and be on tmpfs or hugetlbfs (on a disk filesystem page writeback stalls
    /// the workers; the log warns). [default: none, the table in this process's memory only,
    /// with 2 MiB pages where the kernel offers them: a shared file mapping gets 4 KiB pages
    /// unless shmem huge pages are on, and one TCP stream then lost a few frames at a pod's
    /// door here (lab_door)]
    #[arg(long, value_name = "PATH|none")]
    pub state_file: Option<String>,
    /// On stop, also remove what is otherwise kept for the next `podswitch run`: the host port
    /// pair with its routes, the DNAT return and node-local rules, and the state file (the
    /// next start begins with an empty connection table).
    #[arg(long)]
    pub cleanup: bool,
    /// Cores to run one pinned poll-mode worker each on, e.g. `2,3`. Every port needs one queue per worker.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "0")]
    pub cores: Vec<usize>,
    /// Keep every worker polling even when there is no traffic: 100% of each worker core,
    /// always, for the lowest latency (for dedicated, pinned cores). By default a worker polls
    /// only under load: after 100 us without work it sleeps in poll(2) on its sockets and wakes
    /// on the next frame. `podswitch show workers` shows how each spends its time.
    #[arg(long)]
    pub busy_poll: bool,
    /// Fail instead of running a port in AF_XDP copy mode.
    #[arg(long)]
    pub require_zerocopy: bool,
    /// Force an XDP mode; by default native, and generic only where native is refused.
    #[arg(long, value_enum, value_name = "MODE")]
    pub xdp_mode: Option<XdpModeArg>,
    /// UMEM frames per worker (2 KiB each): the uplink's fill ring and every frame in flight
    /// between ports. Ports bound on it (the uplink; pod ports with --pod-umem-frames 0) hold
    /// 256 of them in their fill ring until busy (then up to --rx-ring) and never give an idle
    /// port's back: so shared, the default serves about 85 idle pod ports per worker.
    #[arg(long, default_value_t = 16384)]
    pub frames: u32,
    /// Receive frames of each pod port's own UMEM (a power of two, 64 to 16384; 2 KiB each,
    /// plus a quarter as many for transmit, at least 256). A pod's packets are copied from and
    /// to the worker's frames at its door, and its socket binds in well under a millisecond
    /// (a pod's CNI ADD waits for it). 0: pod ports share their worker's UMEM instead (no copy,
    /// but every bind costs time and kernel memory in proportion to --frames: 5.8 ms at 16,384
    /// frames, 23 ms at 65,536). A TCP window deeper than this, arriving while the worker is
    /// busy, is dropped at the door (`show ports` KERNEL_LOST says so).
    #[arg(long, value_name = "FRAMES", default_value_t = 2048, value_parser = pod_umem_frames)]
    pub pod_umem_frames: u32,
    /// RX ring and fill ring entries per socket (a power of two, 64 to 16384): how many frames
    /// a busy port can take in one burst before the kernel drops at the door (`show ports`
    /// KERNEL_LOST). A port's fill ring grows to it while the port is busy, within --frames.
    #[arg(long, value_name = "ENTRIES", default_value_t = 4096, value_parser = ring_entries)]
    pub rx_ring: u32,
    /// Connections the connection table holds (fixed at start; about 101 bytes each). When
    /// full, new connections are refused (drop reason conntrack_full) and established ones go on.
    #[arg(long, default_value_t = 262_144)]
    pub conntrack_size: u32,
    #[command(flatten)]
    pub conntrack_timeouts: conntrack_timeouts::ConntrackTimeoutArgs,
    /// Which node addresses serve NodePorts (kube-proxy's flag): comma-separated IPv4 CIDRs
    /// (every address of the node's interfaces inside one, read at start) and/or `primary`
    /// (the node's InternalIP).
    #[arg(long, value_name = "CIDR,...|primary", value_delimiter = ',', default_value = "primary")]
    pub nodeport_addresses: Vec<nodeport_addresses::NodePortAddress>,
    /// The node's uplink interface: traffic from clients outside the cluster (NodePorts,
    /// LoadBalancer and external IPs) arrives here, and whatever has no more specific route
    /// leaves here, to the gateway of the kernel's default route through it. It stays the
    /// node's: its XDP program takes only what the switch owns (pod CIDR, Service addresses,
    /// NodePorts, masquerade and VXLAN ports) and the node's kernel keeps the rest, ARP for the
    /// InternalIP included.
    #[arg(long, value_name = "IF")]
    pub uplink: Option<String>,
    /// MAC of the next hop behind --uplink (the router; in the lab, the `external` host). By
    /// default the gateway of the kernel's default route through --uplink, its MAC from the
    /// kernel's neighbour table (`podswitch show neighbours`); until it is known there is no
    /// default route.
    #[arg(long, value_name = "MAC", requires = "uplink")]
    pub uplink_gateway_mac: Option<String>,
    /// How pods reach the pods of other nodes through --uplink: `vxlan` (each node's pod CIDRs
    /// through a VXLAN tunnel to its InternalIP; pods' MTU must leave 50 bytes for it) or
    /// `routed` (unencapsulated: the underlay routes pod CIDRs, or the nodes share a subnet).
    #[arg(long, value_enum, value_name = "MODE", default_value = "vxlan")]
    pub pod_network: PodNetworkArg,
    /// UDP port of the VXLAN tunnels (8472: flannel's and Linux's default; IANA's is 4789).
    #[arg(long, value_name = "PORT", default_value_t = switch::wire::vxlan::DEFAULT_PORT)]
    pub vxlan_port: u16,
    /// VXLAN network identifier of the pod network (24 bits); the same on every node.
    #[arg(long, value_name = "VNI", default_value_t = 1)]
    pub vxlan_vni: u32,
    /// Pods' connections to addresses outside the cluster's pod CIDRs leave --uplink
    /// masqueraded to the node's InternalIP (as ip-masq-agent does); repeat this to let pods
    /// reach more ranges with their own address (e.g. a peered network that routes pod CIDRs).
    #[arg(long = "non-masquerade-cidr", value_name = "CIDR")]
    pub non_masquerade_cidrs: Vec<ipnet::Ipv4Net>,
    /// How long a next hop's MAC the kernel has not confirmed stays in the tables.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::neighbours::DEFAULT_EXPIRY.as_secs())]
    pub neighbour_expiry: u64,
    /// Where the CNI plugin (`podswitch-cni`) records the pods it wired, in this directory or
    /// one level down (its `dataDir`, by default this directory and the network's name). The
    /// switch wires a pod from its record as soon as ADD writes it, before the Pod object has
    /// status.podIP (kubelet writes that after ADD), and adopts the recorded pods at start.
    #[arg(long, value_name = "DIR", default_value = crate::cni_records::DEFAULT_DATA_DIR)]
    pub cni_data_dir: PathBuf,
    /// Start even if some pods' interfaces do not exist yet (they are retried every second).
    #[arg(long)]
    pub allow_missing_interfaces: bool,
    /// The cluster's Service address range (the API server's --service-cluster-ip-range,
    /// IPv4 part); repeat for several. ClusterIPs are allocated from it for manifests without
    /// one, and the host port routes it to the switch. A Service whose clusterIP lies outside
    /// is still proxied.
    #[arg(long = "service-cidr", value_name = "CIDR", default_value = crate::services::DEFAULT_SERVICE_CIDR)]
    pub service_cidrs: Vec<ipnet::Ipv4Net>,
}

/// `--pod-network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PodNetworkArg {
    Vxlan,
    Routed,
}

impl RunArgs {
    /// The connection table's state file (None: `--state-file none`).
    pub fn conntrack_state(&self) -> Option<PathBuf> {
        match self.state_file.as_deref() {
            None | Some("none") => None,
            Some(p) => Some(PathBuf::from(p)),
        }
    }

    /// The pod network `--pod-network`, `--vxlan-port` and `--vxlan-vni` describe.
    pub fn pod_network(&self) -> Result<crate::pod_network::PodNetwork, crate::pod_network::PodNetworkError> {
        use crate::pod_network::PodNetwork;
        match self.pod_network {
            PodNetworkArg::Vxlan => PodNetwork::Vxlan { udp_port: self.vxlan_port, vni: self.vxlan_vni }.validate(),
            PodNetworkArg::Routed => Ok(PodNetwork::Routed),
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PODSWITCH_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Starts the switch, follows its object source until SIGTERM or SIGINT, then tears down.
pub fn main(args: RunArgs) -> anyhow::Result<i32> {
    init_logging();
    let mut running = startup::start(&args)?;
    let stop = std::sync::Arc::clone(&running.stop);
    match &mut running.source {
        Source::Directory(w) => watch::follow_directory(&mut running.switch, w, &mut running.cni, &stop),
        Source::Api(src) => watch::follow_api(&mut running.switch, src, &mut running.cni, &stop),
    }
    drop(running);
    Ok(0)
}

/// `--pod-umem-frames`: 0, or a power of two from 64 to 16,384.
fn pod_umem_frames(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Ok(0),
        _ => ring_entries(s).map_err(|e| format!("{e} (or 0: pod ports share their worker's UMEM)")),
    }
}

/// The own UMEM of each pod port for `--pod-umem-frames` (None for 0).
pub fn pod_umem_spec(rx_frames: u32) -> Option<switch::afxdp::own_umem::OwnUmemSpec> {
    (rx_frames > 0).then(|| switch::afxdp::own_umem::OwnUmemSpec { rx_frames, tx_frames: (rx_frames / 4).max(256), frame_size: switch::afxdp::frames::UmemSpec::default().frame_size })
}

/// A ring size: a power of two from 64 to 16,384.
fn ring_entries(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if n.is_power_of_two() && (64..=16384).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not a power of two from 64 to 16384"))
    }
}

#[cfg(test)]
mod ring_entries_tests {
    use super::{pod_umem_frames, pod_umem_spec, ring_entries};

    #[test]
    fn pod_umem_frames_is_zero_or_a_ring_size() {
        assert_eq!(pod_umem_frames("0"), Ok(0));
        assert_eq!(pod_umem_frames("2048"), Ok(2048));
        let e = pod_umem_frames("1000").unwrap_err();
        assert!(e.contains("not a power of two") && e.contains("or 0"), "{e}");
        assert!(pod_umem_spec(0).is_none());
        let s = pod_umem_spec(2048).unwrap();
        assert_eq!((s.rx_frames, s.tx_frames), (2048, 512));
        assert_eq!(pod_umem_spec(64).unwrap().tx_frames, 256, "at least 256 for transmit");
    }

    #[test]
    fn powers_of_two_from_64_to_16384_only() {
        assert_eq!(ring_entries("4096"), Ok(4096));
        assert_eq!(ring_entries("64"), Ok(64));
        assert_eq!(ring_entries("16384"), Ok(16384));
        for bad in ["3000", "32", "32768", "0", "x"] {
            assert!(ring_entries(bad).is_err(), "{bad}");
        }
    }
}
