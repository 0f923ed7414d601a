//! `podswitch-lab` (what `podswitch lab ...` runs): a Kubernetes node built out of network
//! namespaces on this machine. It is its own binary so that the node agent the DaemonSet runs
//! does not contain it; `podswitch lab ARGS` execs `podswitch-lab ARGS` found next to `podswitch`
//! (then on PATH), and the lab runs the switch as `podswitch run` found the same way
//! ([`podswitch_control::sibling`]).
//!
//! Contract (the interface other code and tests rely on):
//! - Nothing is touched in the machine's own network namespace. The lab builds one node per
//!   Node object of the manifest directory, in the order of their names (none: one node
//!   `node-1`; `lab up --node-name NAME`: only that one). The first node is the namespace
//!   `psl-node`, the others `psl-node-NAME`; each has its own stack (its InternalIP on its
//!   uplink `psw-uplink` with the underlay's prefix, as on a real NIC: the node reaches
//!   `external` and the other nodes itself, switch or no switch) and runs its own `podswitch run --node-name NAME` on the one API view, with its own control
//!   socket (`/run/podswitch/podswitch.sock` for the first node; the others at
//!   `naming::lab_node_control_socket(NAME)`, which for the first node links to the default).
//! - Each pod NS/NAME of a node gets the namespace `psl_NS_NAME` with `eth0` (IP/32, MAC
//!   `naming::pod_mac`, default route via `naming::GATEWAY_IP`), whose veth peer
//!   `naming::pod_interface(NS, NAME)` sits in its node's namespace, where that node's switch
//!   runs. A pod goes to the node of its `spec.nodeName`, without one to the first node. The
//!   lab makes the namespace and gets the interface from `podswitch-cni` through a CNI ADD with
//!   its node's conflist, as a container runtime does ([`cni_network`], [`cni_runtime`]);
//!   pods other runtimes attached through that conflist are theirs, not built by the lab.
//! - A client outside the cluster, `external`, is the namespace `psl-external`: `eth0` (MAC
//!   `naming::pod_mac(IP)`, IP = `.100` of the first node InternalIP's /24, default route via
//!   that InternalIP). In a one-node lab its veth peer is `psw-uplink` in `psl-node`, the
//!   switch's uplink port. With several nodes every node has its uplink `psw-uplink`, and the
//!   underlay `psl-underlay` (the data-centre network) joins them and external's `eth0` on the
//!   bridge `br0` (ports `upN` and `ext`). Every switch gets `--uplink psw-uplink
//!   --uplink-gateway-mac <external's MAC>`. Each uplink has twice as many queues as the
//!   switch has workers, and link-local IPv6 (as external's `eth0`).
//! - The lab plays kubelet and API server: it assigns pod IPs and writes an API view of the
//!   manifest directory to `/run/podswitch/lab/api/cluster.yaml`, which the switch reads; a
//!   supervisor applies edits of the manifest directory live.
//! - State, logs and the API view live under `/run/podswitch/lab` ([`state`]).
//! - Errors are one line on stderr and exit code 1 (main prints the `anyhow` chain).
//!
//! One concern per module: [`mod@state`] (files and locking), [`procs`] (processes the lab starts),
//! [`netns`] (namespaces, veths, commands), [`cni_runtime`] (the runtime side of CNI),
//! [`cni_network`] (the lab's conflists and its pods' ADD and DEL), [`plan`] (desired pods and IPs from the manifests),
//! [`apiview`] (the API view file), [`pods`] (building and removing pods, reconciling),
//! [`switch`] (the switch process), and one module per subcommand.
mod apiview;
mod cni_network;
mod cni_runtime;
mod down;
mod exec;
mod netns;
mod plan;
mod pods;
mod probe;
mod procs;
mod serve;
mod state;
mod status;
mod supervise;
mod switch;
mod up;

/// Build, drive and tear down a lab cluster of network namespaces on this machine.
#[derive(Debug, clap::Parser)]
#[command(name = "podswitch-lab", bin_name = "podswitch lab", version)]
struct LabArgs {
    #[command(subcommand)]
    cmd: LabCmd,
}

#[derive(Debug, clap::Subcommand)]
enum LabCmd {
    /// Create the lab from a manifest directory, start the switches, wait until traffic flows.
    ///
    /// Creates one node per Node object of DIR, in the order of their names (none: one node
    /// node-1 with pod CIDR 10.244.0.0/24 and InternalIP 172.18.0.2; --node-name NAME: only that
    /// Node). The first node is the network namespace psl-node, the others psl-node-NAME; each
    /// holds its pods' host-side veths and runs its own switch. A pod goes to the node named in
    /// its spec.nodeName (none: the first node). With several nodes, their uplinks and external
    /// share the underlay psl-underlay (a bridge), on which the InternalIPs live; each switch
    /// has its own control socket (`podswitch show --node NAME`).
    ///
    /// For every pod it creates a namespace psl_NS_NAME whose eth0 has the
    /// pod's IP/32 (status.podIP, else allocated from its node's pod CIDR), MAC 0a:58 + the IP, a
    /// default route via 169.254.1.1, and a server answering on every containerPort (TCP and UDP)
    /// with the line `NS/NAME CLIENTIP:CLIENTPORT`. As a container runtime would, it makes the
    /// namespace and gets eth0 and its host-side veth from the CNI plugin podswitch-cni (found
    /// next to podswitch-lab; host-local from /usr/lib/cni): a CNI ADD with the node's conflist
    /// (/run/podswitch/lab/cni/NODE/net.d) and the pod's IP as runtimeConfig.ips; DEL when the
    /// pod goes. Nothing changes in the machine's own network namespace.
    ///
    /// Also creates `external`, a client outside the cluster: the namespace psl-external whose
    /// eth0 has the .100 address of the first node InternalIP's /24 (172.18.0.100 by default;
    /// MAC 0a:58 + the IP) and a default route via that InternalIP, so NodePorts, LoadBalancer
    /// and external IPs and ClusterIPs are sent to the first node. In a one-node lab its veth
    /// peer psw-uplink in psl-node is the switch's uplink port (`run --uplink psw-uplink
    /// --uplink-gateway-mac MAC`); with several nodes it sits on the underlay with every node's
    /// uplink psw-uplink.
    ///
    /// Writes the API view /run/podswitch/lab/api/cluster.yaml (the manifests with pod IPs and
    /// nodeName filled in), starts `podswitch run` in every node's namespace on that view, and starts a
    /// supervisor that applies later edits of DIR live (new, changed and deleted objects, pods
    /// of every node; not added or removed Nodes). Waits up to 30 s until every switch has
    /// applied the view and attached every pod port, then prints
    /// the node, the pods and where the logs are (/run/podswitch/lab/logs). Refuses when a lab is
    /// already up; a bad manifest directory is one line of error and leaves nothing behind.
    ///
    /// Testing aid: with the environment variable PODSWITCH_LAB_NO_SWITCH=1 the switch is neither
    /// started nor waited for (pods then reach only themselves; `podswitch lab switch start`
    /// starts it later).
    Up(up::UpArgs),
    /// Remove the lab: every process it started, its namespaces, its files.
    ///
    /// Stops the supervisor, every node's switch, the pod servers and any other process inside
    /// the lab's namespaces; deletes every psl-* and psl_* network namespace, the nodes',
    /// psl-external and psl-underlay included (and with them their veths); removes
    /// /run/podswitch/lab, the control sockets and /run/podswitch/lab-nodes. Prints what it removed; exits 0 also
    /// when nothing was up.
    Down(down::DownArgs),
    /// Show what is up: nodes, pods, processes, sync state.
    ///
    /// Prints the nodes (name, pod CIDR, InternalIP, namespace, control socket, switch), the manifest directory and whether its current content is applied (or
    /// why not), the switch (running, in sync with the API view or why not), the supervisor, the
    /// `external` host (address, MAC, gateway, uplink port), where the lab's CNI plugins and
    /// conflists are (`--json`: `cni.bin_dir`, `cni.conf_dir`, `cni.path`, also per node), and
    /// every pod with its IP, interface, namespace and server. Exits 0 also when no lab is up.
    Status(status::StatusArgs),
    /// Stop or restart the lab's switches (every node's).
    ///
    /// `stop` sends SIGTERM and waits until each switch has exited (pods then reach nobody but
    /// themselves); `start` starts those not running with the command line `lab up` used and
    /// waits (30 s) until all have applied the API view and attached every pod port.
    Switch(switch::SwitchArgs),
    /// Probe TCP/UDP connectivity from pods (or the node, or `external`) with real sockets.
    ///
    /// TARGET is pod/NS/NAME:PORT, svc/NS/NAME:PORT (the Service's ClusterIP),
    /// nodeport/NS/NAME:PORT (the node's InternalIP and the NodePort of Service port PORT),
    /// lb/NS/NAME:PORT (the Service's first LoadBalancer ingress IP) or IP:PORT, each optionally
    /// followed by /tcp or /udp (default tcp); see --to for how Services are resolved. Sources
    /// are pods (NS/POD), `node` (the first node's own stack in psl-node), a node's name (that
    /// node's own stack) or `external` (the client outside the cluster in psl-external); by
    /// default every pod of the lab.
    /// Before probing it waits until the lab has applied the current content of its manifest
    /// directory and the switch (when running) has applied it too. Every (source, target) pair is
    /// probed at once, each from a thread inside the source's namespace.
    ///
    /// Each pair gives `connected` (the server answered with its pod name and the client address
    /// it saw), `refused` (TCP reset or ICMP unreachable) or `timeout`. The text output is a
    /// matrix with sources as rows and targets as columns; `ok(x/b)` marks an answer from another
    /// pod than the target. --json prints one object
    /// {"results":[{"from","to","address","result","answered_by","source","seen_client"}]}
    /// (`address`: the IP:PORT the target resolved to). Exits 0 when the probes ran, whatever
    /// their results; 1 on usage or lab errors.
    Probe(probe::ProbeArgs),
    /// Run a command inside a pod's (or the node's, or `external`'s) network namespace.
    ///
    /// TARGET is NAMESPACE/POD, `node` (the first node), a node's name, `underlay` or `external`.
    /// Runs `ip netns exec NAMESPACE CMD...` in place of this process, so the exit code is the
    /// command's. Inside a node, CMD gets that node's CNI network as cnitool names it:
    /// CNI_PATH (the lab's plugin directory, then /usr/lib/cni) and NETCONFPATH (the node's
    /// configuration directory), so a runtime of one's own can attach pods there. Example: `podswitch lab exec x/a -- ping -c1
    /// 10.244.0.3`.
    Exec(exec::ExecArgs),
    /// (internal) The server that runs inside a pod's namespace.
    #[command(hide = true)]
    Serve(serve::ServeArgs),
    /// (internal) The watcher that applies edits of the manifest directory.
    #[command(hide = true)]
    Supervise(supervise::SuperviseArgs),
}

fn main() {
    let args = match <LabArgs as clap::Parser>::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    match run(args) {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            // The prefix `podswitch lab` users typed has always printed.
            eprintln!("podswitch: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Runs a `podswitch lab` subcommand; returns the process exit code.
fn run(args: LabArgs) -> anyhow::Result<i32> {
    match args.cmd {
        LabCmd::Up(a) => up::run(a),
        LabCmd::Down(a) => down::run(a),
        LabCmd::Status(a) => status::run(a),
        LabCmd::Switch(a) => switch::run(a),
        LabCmd::Probe(a) => probe::run(a),
        LabCmd::Exec(a) => exec::run(a),
        LabCmd::Serve(a) => serve::run(a),
        LabCmd::Supervise(a) => supervise::run(a),
    }
}

/// Fails with a clear sentence unless running as root (namespaces need CAP_SYS_ADMIN).
fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("`podswitch lab {what}` needs root (it creates and enters network namespaces)");
    }
    Ok(())
}

