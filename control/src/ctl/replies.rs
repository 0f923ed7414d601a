//! The control socket's answers as types: the switch fills them (`run::show_handler`),
//! `podswitch show` reads them back (`crate::show`).
//!
//! Contract: each answer serializes as one JSON object whose keys are the field names below, in
//! this order, with `"ok": true` first ([`Answer`]); the names are stable (README, "podswitch
//! show"): users and tests read `podswitch show ... --json`. Answers that carry what another
//! module compiled (Services, NetworkPolicies) are generic over the list: the switch sends the
//! compiled views, `show` reads the fields it prints ([`ServiceRow`]; a test checks that the
//! views deserialize into them, so a renamed field fails there and not silently in `show`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switch::afxdp::filter::{RuleCounters, UplinkFilter};
use switch::dataplane::PortReport;
use switch::tables::{PortId, PortKind};

/// A successful answer: `{"ok": true, ...the reply's fields}`.
#[derive(Debug, Serialize)]
pub struct Answer<'a, T> {
    pub ok: bool,
    #[serde(flatten)]
    pub reply: &'a T,
}

impl<'a, T> Answer<'a, T> {
    pub fn new(reply: &'a T) -> Self {
        Self { ok: true, reply }
    }
}

/// `show status`: the sync state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub pod_cidr: String,
    /// The MTU the node's pods must have (the uplink's, less the VXLAN header in vxlan mode);
    /// none without an uplink. What the CNI plugin gives pods unless configured otherwise.
    #[serde(default)]
    pub pod_mtu: Option<u16>,
    pub internal_ip: String,
    pub manifests_dir: String,
    pub applied_digest: String,
    pub tables_version: u64,
    pub ports_wanted: usize,
    pub ports_attached: usize,
    /// `key: why`, per port waiting for its interface.
    pub pending_ports: Vec<String>,
    /// Other nodes the pod network has no route to yet (their next hop on the uplink is not
    /// resolved, or the kernel routes them elsewhere).
    #[serde(default)]
    pub unreachable_nodes: Vec<String>,
    pub problems: Vec<String>,
    pub ignored_objects: Vec<String>,
    pub last_error: Option<String>,
    pub uptime_s: u64,
    pub workers: usize,
    /// The API source's own status (`kube_source::KubeStatus`), passed through as it serializes.
    pub kubernetes_api: Option<serde_json::Value>,
    /// The agent's memory by table ([`crate::memory`]).
    #[serde(default)]
    pub memory: Option<crate::memory::MemoryByTable>,
    /// `--l2-announce`: the addresses offered, their holders, the Lease store's last error.
    #[serde(default)]
    pub l2_announcements: Option<crate::l2announce::L2Status>,
    /// The connection table's state file: this process's generation, and what it adopted from
    /// the previous one (or why nothing); none with `--state-file none`.
    #[serde(default)]
    pub conntrack_state: Option<switch::conntrack::state_file::Adoption>,
}

/// `show ports`: every attached port, and the ports waiting for their interface.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ports {
    pub ports: Vec<PortRow>,
    /// Port key → why it is not attached.
    pub pending: BTreeMap<String, String>,
}

/// `wait_port`: one port's state, without its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortState {
    /// The interface has a port (its sockets are bound).
    pub attached: bool,
    /// The key the tables in force give that port (`namespace/name` for a pod), if any.
    pub owner: Option<String>,
    /// Why the asked key has no port yet, when the switch knows.
    pub pending: Option<String>,
}

/// One attached port: the dataplane's report and what the tables say of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortRow {
    #[serde(flatten)]
    pub report: PortReport,
    /// The port's key: `node`, `uplink` or `namespace/name`.
    pub owner: Option<String>,
    pub kind: Option<PortKind>,
    /// The switch side's MAC.
    pub mac: Option<String>,
    pub pod_ip: Option<String>,
    pub interface_present: bool,
    /// Why the kernel lost frames at this port's door (`KERNEL_LOST`), one sentence per kind;
    /// empty when it lost none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_lost_reasons: Vec<String>,
    /// The uplink's filter and its program's counters (the uplink only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_filter: Option<UplinkFilterView>,
}

/// What the uplink's program redirects to the switch, and what it did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UplinkFilterView {
    /// The filter in the program's maps; None while unknown (a write failed: see `show status`).
    pub filter: Option<UplinkFilter>,
    pub counters: RuleCounters,
}

/// `show routes`: the route table in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routes {
    pub tables_version: u64,
    pub gateway: String,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// `a.b.c.d/len`.
    pub prefix: String,
    pub port_id: PortId,
    /// The port's key.
    pub port: Option<String>,
    pub dst_mac: String,
    /// For routes into a VXLAN tunnel: the remote node's underlay address, and the MAC of
    /// the next hop towards it on the uplink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<RouteTunnel>,
}

/// The tunnel a route goes through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTunnel {
    pub remote: String,
    pub next_hop_mac: String,
    pub vni: u32,
    pub udp_port: u16,
}

/// `show stats`: drops by reason, per-worker and per-port counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub drops: Vec<DropCount>,
    pub workers: Vec<WorkerStats>,
    pub ports: Vec<PortCounts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropCount {
    /// The reason's number (`switch::drop_reason`; numbers never change).
    pub number: u8,
    pub reason: String,
    pub count: u64,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub worker: usize,
    pub core: usize,
    pub rounds: u64,
    pub idle_sleeps: u64,
    pub free_frames: u64,
}

/// `show workers`: how each worker spends its time, how full its bursts are and what wakes it
/// (what OVS reports as `dpif-netdev/pmd-stats-show`, VPP as `show runtime`). Counts since the
/// switch started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workers {
    pub workers: Vec<WorkerPollRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerPollRow {
    pub worker: usize,
    pub core: usize,
    /// `adaptive` (polls under load, sleeps when idle) or `busy_poll` (`run --busy-poll`).
    pub mode: String,
    /// In rounds that moved frames (received, or transmissions completed).
    pub busy_seconds: f64,
    /// In empty rounds: polling for work that did not come.
    pub polling_seconds: f64,
    /// Asleep in poll(2), the core given back.
    pub sleeping_seconds: f64,
    /// busy / (busy + polling + sleeping), in percent.
    pub busy_percent: f64,
    pub rounds: u64,
    /// Rounds that received at least one frame.
    pub rx_rounds: u64,
    /// Non-empty receives from one queue.
    pub rx_bursts: u64,
    pub rx_packets: u64,
    pub packets_per_rx_round: f64,
    pub packets_per_burst: f64,
    pub sleeps: u64,
    /// What ended the sleeps.
    pub wakeups: Wakeups,
    /// Receives by size: each bucket counts bursts of at most `le` frames (and more than the
    /// bucket before's).
    pub burst_sizes: Vec<BurstBucket>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wakeups {
    /// A socket had frames.
    pub data: u64,
    /// The control side had a command.
    pub doorbell: u64,
    /// The longest sleep passed (or it was interrupted).
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BurstBucket {
    pub le: u32,
    pub count: u64,
}

impl From<&switch::dataplane::WorkerPoll> for WorkerPollRow {
    fn from(w: &switch::dataplane::WorkerPoll) -> Self {
        let t = &w.totals;
        let secs = |ns: u64| ns as f64 / 1e9;
        let all = t.busy_ns + t.polling_ns + t.sleeping_ns;
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        WorkerPollRow {
            worker: w.worker,
            core: w.core,
            mode: if w.busy_poll { "busy_poll" } else { "adaptive" }.to_string(),
            busy_seconds: secs(t.busy_ns),
            polling_seconds: secs(t.polling_ns),
            sleeping_seconds: secs(t.sleeping_ns),
            busy_percent: 100.0 * ratio(t.busy_ns, all),
            rounds: t.rounds,
            rx_rounds: t.rx_rounds,
            rx_bursts: t.rx_bursts,
            rx_packets: t.rx_packets,
            packets_per_rx_round: t.packets_per_rx_round(),
            packets_per_burst: ratio(t.rx_packets, t.rx_bursts),
            sleeps: t.sleeps,
            wakeups: Wakeups { data: t.woke_data, doorbell: t.woke_doorbell, timeout: t.woke_timeout },
            burst_sizes: switch::worker::poll_stats::BURST_BUCKET_BOUNDS
                .iter()
                .zip(t.bursts)
                .map(|(&le, count)| BurstBucket { le, count })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortCounts {
    /// The interface.
    pub name: String,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// `show services`: one entry per Service frontend. The switch sends
/// `crate::services::ServiceView`s; `show` reads [`ServiceRow`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Services<L> {
    pub services: L,
}

/// What `show services` prints of a `ServiceView`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServiceRow {
    pub name: String,
    pub kind: String,
    pub frontend: String,
    pub target_port: String,
    pub endpoints_from: String,
    pub external_traffic_policy: String,
    pub internal_traffic_policy: String,
    pub affinity_timeout_s: Option<u32>,
    pub internal: SetRow,
    pub external: SetRow,
    pub endpoints: Vec<EndpointRow>,
}

/// What `show services` prints of a `SetView`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SetRow {
    pub backends: u64,
    pub on_empty: String,
    pub masquerade: bool,
}

/// What `show services` prints of an `EndpointView`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EndpointRow {
    pub address: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<String>,
    pub internal: bool,
    pub external: bool,
}

/// `show policies`: the policy epoch and every NetworkPolicy as compiled (the switch sends
/// `crate::policy::PolicyView`s; `show` prints them as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policies<L> {
    pub epoch: u32,
    pub policies: L,
}

/// `show conntrack`: the connection table's counters and (some of) its connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conntrack {
    pub entries: usize,
    pub capacity: usize,
    pub bytes_per_entry: f64,
    pub inserted: u64,
    pub insert_failed_full: u64,
    pub insert_failed_no_slot: u64,
    pub removed: u64,
    /// How many of `entries` are in `connections`.
    pub shown: usize,
    pub connections: Vec<Connection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub original: String,
    pub reply: String,
    pub state: String,
    pub age_s: u32,
    pub idle_s: u32,
    pub dnat: bool,
    pub snat: bool,
    pub seen_reply: bool,
    pub from_uplink: bool,
    /// The Service frontend's name, for a translated connection.
    pub service: Option<String>,
    pub endpoint_id: Option<u32>,
}

/// `show flows`: NetworkPolicy verdicts after a sequence number, and connections allowed per
/// policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flows {
    /// The sequence number to ask for next (`--follow`).
    pub next: u64,
    /// Verdicts lost before anyone read them.
    pub lost: u64,
    pub policy_epoch: u32,
    pub policies: Vec<PolicyCount>,
    pub flows: Vec<Flow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyCount {
    /// `namespace/name`.
    pub policy: String,
    pub id: u32,
    pub allowed_connections: u64,
}

/// One verdict of the verdict log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub seq: u64,
    pub time_ms: u64,
    /// Pod names of the two ends, where they are pods.
    pub from: Option<String>,
    pub to: Option<String>,
    /// `ip:port` as sent, as addressed (a Service's), and as translated (the endpoint).
    pub source: String,
    pub destination: String,
    pub translated: String,
    pub protocol: String,
    /// `allowed` or `denied`.
    pub verdict: String,
    pub rejudged: bool,
    pub policy: Option<String>,
    pub decided_by: String,
}

/// `show neighbours`: the uplink's next hops as the kernel resolves them
/// (`crate::neighbours`), and where the default route's gateway MAC comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neighbours {
    /// The uplink (none: no uplink, and no neighbours).
    pub interface: Option<String>,
    /// The default route's gateway (the kernel's, unless `--uplink-gateway-mac` was given).
    pub gateway: Option<String>,
    /// The MAC the default route uses (none: no default route in the tables).
    pub gateway_mac: Option<String>,
    /// `--uplink-gateway-mac` or `neighbour table`.
    pub gateway_mac_from: String,
    /// How long an entry the kernel has not confirmed stays usable.
    pub expiry_s: u64,
    pub neighbours: Vec<NeighbourRow>,
}

/// One next hop the switch needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighbourRow {
    pub ip: String,
    /// The kernel's MAC for it (also when unusable; see `resolved`).
    pub mac: Option<String>,
    /// The kernel's state (`reachable`, `stale`, `delay`, `probe`, `failed`, `incomplete`,
    /// `permanent`, `noarp`, `none`), or `missing` when the kernel has no entry.
    pub state: String,
    /// The MAC is in the tables: valid state, confirmed within the expiry.
    pub resolved: bool,
    /// Seconds since the kernel last confirmed it.
    pub age_s: Option<u64>,
    /// What needs it: `gateway`, node names.
    pub needed_by: Vec<String>,
    /// The kernel's entry is the switch's own (a managed entry it created).
    pub created_by_switch: bool,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;
    use switch::afxdp::stats::XskStats;
    use switch::afxdp::xdp::XdpMode;
    use switch::counters::PortTotals;
    use switch::dataplane::QueueInfo;

    use super::*;
    use crate::ctl::client;
    use crate::manifests::{add_documents, Manifests};
    use crate::model::NodeInfo;
    use crate::services::{all_pods, compile_services, ServiceInputs, ServiceState};

    /// `reply` as the switch sends it, and read back as `show` reads it.
    fn sent_and_read<T: Serialize, R: serde::de::DeserializeOwned>(reply: &T) -> (Value, R) {
        let v = serde_json::to_value(Answer::new(reply)).unwrap();
        let back = client::read(&v).unwrap_or_else(|e| panic!("{e}: {v}"));
        (v, back)
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn status_keeps_its_keys_and_reads_back() {
        let s = Status {
            node: "n".into(),
            pod_cidr: "10.244.0.0/24".into(),
            pod_mtu: Some(1450),
            internal_ip: "172.18.0.2".into(),
            manifests_dir: "/m".into(),
            applied_digest: "d".into(),
            tables_version: 3,
            ports_wanted: 2,
            ports_attached: 1,
            pending_ports: vec!["x/a: interface missing".into()],
            unreachable_nodes: vec!["node-2".into()],
            problems: vec![],
            ignored_objects: vec!["ConfigMap".into()],
            last_error: None,
            uptime_s: 5,
            workers: 1,
            kubernetes_api: None,
            memory: Some(crate::memory::MemoryByTable { objects_bytes: 7, maglev_bytes: 9, resident_bytes: Some(4096), ..Default::default() }),
            l2_announcements: Some(crate::l2announce::L2Status {
                leases: "directory /l".into(),
                addresses: vec![crate::l2announce::L2Address {
                    address: "192.0.2.1".parse().unwrap(),
                    lease: "podswitch-l2-192-0-2-1".into(),
                    holder: Some("n".into()),
                    announced_here: true,
                }],
                error: None,
            }),
            conntrack_state: Some(switch::conntrack::state_file::Adoption {
                path: "/run/podswitch/podswitch.conntrack".into(),
                generation: 2,
                adopted: 30,
                incomplete: 1,
                no_slot: 0,
                fresh: None,
                in_memory: true,
            }),
        };
        let (v, back): (Value, Status) = sent_and_read(&s);
        assert_eq!(back, s);
        // What `show status --json` users read: the keys and their order.
        assert_eq!(
            keys(&v),
            [
                "ok", "node", "pod_cidr", "pod_mtu", "internal_ip", "manifests_dir", "applied_digest", "tables_version", "ports_wanted",
                "ports_attached", "pending_ports", "unreachable_nodes", "problems", "ignored_objects", "last_error", "uptime_s", "workers",
                "kubernetes_api", "memory", "l2_announcements", "conntrack_state"
            ]
        );
        assert_eq!(v["ok"], true);
        assert!(v["last_error"].is_null());
    }

    #[test]
    fn a_port_row_is_the_dataplane_report_with_the_tables_fields_after_it() {
        let row = PortRow {
            report: PortReport {
                id: 1,
                name: "psw-x-a".into(),
                xdp_mode: XdpMode::Native,
                native_refused: None,
                zerocopy: false,
                own_umem: Some(switch::dataplane::OwnUmemFrames { rx_frames: 2048, tx_frames: 512 }),
                queues: vec![QueueInfo { queue: 0, worker: 0, core: 1, zerocopy: false }],
                totals: PortTotals { rx_packets: 7, tx_packets: 9, ..PortTotals::default() },
                xdp_redirected: 7,
                xdp_passed: 2,
                kernel: XskStats { rx_ring_full: 4, ..XskStats::default() },
            },
            owner: Some("x/a".into()),
            kind: Some(PortKind::Pod),
            mac: Some("02:00:00:00:00:01".into()),
            pod_ip: Some("10.244.0.10".into()),
            interface_present: true,
            kernel_lost_reasons: vec!["4 with the RX ring full: ...".into()],
            uplink_filter: None,
        };
        let ports = Ports { ports: vec![row], pending: BTreeMap::from([("x/b".to_string(), "no interface".to_string())]) };
        let (v, back): (Value, Ports) = sent_and_read(&ports);
        let p = &v["ports"][0];
        // The report's counters sit at the top level of a port (tests and users read them there).
        assert_eq!((p["rx_packets"].as_u64(), p["tx_packets"].as_u64()), (Some(7), Some(9)));
        assert_eq!((p["owner"].as_str(), p["kind"].as_str(), p["xdp_mode"].as_str()), (Some("x/a"), Some("pod"), Some("native")));
        assert_eq!(p["kernel"]["rx_ring_full"], 4);
        assert_eq!((p["own_umem"]["rx_frames"].as_u64(), p["own_umem"]["tx_frames"].as_u64()), (Some(2048), Some(512)));
        let r = &back.ports[0];
        assert_eq!((r.report.id, r.report.totals.tx_packets, r.report.kernel.lost()), (1, 9, 4));
        assert_eq!((r.kind, r.owner.as_deref()), (Some(PortKind::Pod), Some("x/a")));
        assert_eq!(back.pending["x/b"], "no interface");
        assert!(p.get("uplink_filter").is_none(), "only the uplink has a filter");
        assert_eq!(back.ports[0].kernel_lost_reasons, ["4 with the RX ring full: ..."], "the reasons go through");
    }

    #[test]
    fn workers_carry_time_bursts_and_wakeups_under_their_documented_names() {
        use switch::dataplane::WorkerPoll;
        use switch::worker::poll_stats::PollTotals;
        let poll = WorkerPoll {
            worker: 1,
            core: 3,
            busy_poll: false,
            totals: PollTotals {
                rounds: 1000,
                rx_rounds: 10,
                rx_bursts: 12,
                rx_packets: 96,
                busy_ns: 1_000_000_000,
                polling_ns: 500_000_000,
                sleeping_ns: 2_500_000_000,
                sleeps: 40,
                woke_data: 30,
                woke_doorbell: 2,
                woke_timeout: 8,
                bursts: [2, 0, 0, 10, 0, 0, 0],
            },
        };
        let workers = Workers { workers: vec![WorkerPollRow::from(&poll)] };
        let (v, back): (Value, Workers) = sent_and_read(&workers);
        assert_eq!(back, workers);
        let w = &v["workers"][0];
        assert_eq!(
            keys(w),
            [
                "worker", "core", "mode", "busy_seconds", "polling_seconds", "sleeping_seconds", "busy_percent", "rounds", "rx_rounds",
                "rx_bursts", "rx_packets", "packets_per_rx_round", "packets_per_burst", "sleeps", "wakeups", "burst_sizes"
            ]
        );
        assert_eq!((w["mode"].as_str(), w["busy_percent"].as_f64(), w["sleeping_seconds"].as_f64()), (Some("adaptive"), Some(25.0), Some(2.5)));
        assert_eq!((w["packets_per_rx_round"].as_f64(), w["packets_per_burst"].as_f64()), (Some(9.6), Some(8.0)));
        assert_eq!(w["wakeups"], serde_json::json!({"data": 30, "doorbell": 2, "timeout": 8}));
        assert_eq!(w["burst_sizes"][3], serde_json::json!({"le": 8, "count": 10}));
        assert_eq!(w["burst_sizes"].as_array().unwrap().len(), 7);
        let busy = WorkerPollRow::from(&WorkerPoll { busy_poll: true, totals: PollTotals::default(), ..poll });
        assert_eq!((busy.mode.as_str(), busy.busy_percent, busy.packets_per_burst), ("busy_poll", 0.0, 0.0), "no division by zero");
    }

    #[test]
    fn routes_stats_conntrack_and_flows_read_back_as_sent() {
        let routes = Routes {
            tables_version: 4,
            gateway: "169.254.1.1".into(),
            routes: vec![Route { prefix: "10.244.0.10/32".into(), port_id: 1, port: Some("x/a".into()), dst_mac: "0a:58:0a:f4:00:0a".into(), tunnel: None }],
        };
        assert_eq!(sent_and_read::<_, Routes>(&routes).1, routes);
        let stats = Stats {
            drops: vec![DropCount { number: 3, reason: "no_route".into(), count: 2, description: "no route".into() }],
            workers: vec![WorkerStats { worker: 0, core: 1, rounds: 10, idle_sleeps: 4, free_frames: 100 }],
            ports: vec![PortCounts { name: "psw-host-sw".into(), rx_packets: 1, tx_packets: 2, rx_dropped: 0, tx_dropped: 0 }],
        };
        assert_eq!(sent_and_read::<_, Stats>(&stats).1, stats);
        let ct = Conntrack {
            entries: 1,
            capacity: 1024,
            bytes_per_entry: 101.5,
            inserted: 1,
            insert_failed_full: 0,
            insert_failed_no_slot: 0,
            removed: 0,
            shown: 1,
            connections: vec![Connection {
                original: "10.244.0.10:1000 -> 10.96.0.1:80/tcp".into(),
                reply: "10.244.0.11:8080 -> 10.244.0.10:1000/tcp".into(),
                state: "established".into(),
                age_s: 3,
                idle_s: 1,
                dnat: true,
                snat: false,
                seen_reply: true,
                from_uplink: false,
                service: Some("x/s:http".into()),
                endpoint_id: Some(7),
            }],
        };
        assert_eq!(sent_and_read::<_, Conntrack>(&ct).1, ct);
        let flows = Flows {
            next: 2,
            lost: 0,
            policy_epoch: 5,
            policies: vec![PolicyCount { policy: "x/p".into(), id: 1, allowed_connections: 3 }],
            flows: vec![Flow {
                seq: 1,
                time_ms: 1000,
                from: Some("x/a".into()),
                to: None,
                source: "10.244.0.10:1000".into(),
                destination: "10.244.0.11:80".into(),
                translated: "10.244.0.11:80".into(),
                protocol: "tcp".into(),
                verdict: "allowed".into(),
                rejudged: false,
                policy: Some("x/p".into()),
                decided_by: "x/p rule 0".into(),
            }],
        };
        let (v, back) = sent_and_read::<_, Flows>(&flows);
        assert_eq!(back, flows);
        assert_eq!(keys(&v), ["ok", "next", "lost", "policy_epoch", "policies", "flows"]);
        let n = Neighbours {
            interface: Some("eth0".into()),
            gateway: Some("192.0.2.1".into()),
            gateway_mac: None,
            gateway_mac_from: "neighbour table".into(),
            expiry_s: 60,
            neighbours: vec![NeighbourRow {
                ip: "192.0.2.1".into(),
                mac: None,
                state: "incomplete".into(),
                resolved: false,
                age_s: None,
                needed_by: vec!["gateway".into()],
                created_by_switch: true,
            }],
        };
        let (v, back) = sent_and_read::<_, Neighbours>(&n);
        assert_eq!(back, n);
        assert_eq!(keys(&v), ["ok", "interface", "gateway", "gateway_mac", "gateway_mac_from", "expiry_s", "neighbours"]);
        assert_eq!(keys(&v["neighbours"][0]), ["ip", "mac", "state", "resolved", "age_s", "needed_by", "created_by_switch"]);
    }

    #[test]
    fn compiled_service_views_read_back_as_the_rows_show_prints() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: web}}\n\
            spec: {nodeName: node-1, containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}]}]}\n\
            status: {podIP: 10.244.0.10, conditions: [{type: Ready, status: 'True'}]}\n---\n\
            apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\n\
            spec: {clusterIP: 10.96.0.50, selector: {app: web}, sessionAffinity: ClientIP, \
            sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}, ports: [{name: http, port: 80, targetPort: http}]}\n";
        let mut m = Manifests::default();
        add_documents(&mut m, Path::new("test.yaml"), yaml).unwrap();
        let (pods, problems) = all_pods(&m);
        assert!(problems.is_empty(), "{problems:?}");
        let node = NodeInfo { name: "node-1".into(), pod_cidr: "10.244.0.0/24".parse().unwrap(), internal_ip: "172.18.0.2".parse().unwrap() };
        let c = compile_services(&ServiceInputs { manifests: &m, node: &node, all_pods: &pods }, &mut ServiceState::default());
        assert!(!c.views.is_empty(), "{:?}", c.problems);
        let (_, back): (Value, Services<Vec<ServiceRow>>) = sent_and_read(&Services { services: c.views.clone() });
        let row = &back.services[0];
        assert_eq!((row.name.as_str(), row.frontend.as_str(), row.target_port.as_str()), ("x/s:http", "10.96.0.50:80/tcp", "http"));
        assert_eq!(row.affinity_timeout_s, Some(60));
        assert_eq!(row.endpoints.len(), 1, "{row:?}");
        assert_eq!(row.endpoints[0].address, "10.244.0.10:8080");
        assert_eq!(row.endpoints[0].node.as_deref(), Some("node-1"));
        assert!(row.endpoints[0].internal && row.internal.backends == 1, "{row:?}");
    }
}
