//! `podswitch show ...`: asks the running switch over its control socket and prints the
//! answer as a table for people (read into the [`crate::ctl::replies`] types and printed from
//! their fields) or, with `--json`, as the switch's JSON object.
//! The switch is the one at `--socket` (default [`naming::DEFAULT_CONTROL_SOCKET`]) or, with
//! `--node NAME`, the switch of `podswitch lab` node NAME ([`naming::lab_node_control_socket`]).
use std::path::PathBuf;

use crate::ctl::{client, replies, Request};
use crate::naming;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    /// Sync state: manifests applied, ports wanted/attached/pending, last error.
    Status,
    /// Every port: XDP mode, copy/zero-copy, queues and packet counters; for the uplink, its
    /// filter (what it redirects to the switch) and the XDP counters (redirected / passed).
    Ports,
    /// The routing table (longest prefix first).
    Routes,
    /// Drops by numbered reason, per-worker and per-port counters.
    Stats,
    /// Per worker: time busy, polling and asleep, packets per round, burst sizes, wake-ups
    /// (what OVS calls pmd-stats, VPP `show runtime`).
    Workers,
    /// Every Service frontend with its backends (and their conditions).
    Services,
    /// Tracked connections: original and translated tuples, state, age.
    Conntrack,
    /// NetworkPolicy verdicts (newest last) and connections allowed per policy.
    Flows,
    /// Every NetworkPolicy: the pods it selects, its rules with resolved peers and ports.
    Policies,
    /// The uplink's next hops (the default gateway, ...): IP, MAC, the kernel's state, age,
    /// what needs them.
    Neighbours,
}

/// Show the running switch's state.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[arg(value_enum)]
    pub what: What,
    /// Print the switch's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With `conntrack` and `flows`: show at most this many.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// With `flows`: keep printing new verdicts as they come (Ctrl-C stops; with --json one
    /// JSON object per line).
    #[arg(long)]
    pub follow: bool,
    /// The switch's control socket.
    #[arg(long, value_name = "PATH", default_value = naming::DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
    /// The switch of `podswitch lab` node NAME (its control socket
    /// /run/podswitch/lab-nodes/NAME.sock) instead of --socket.
    #[arg(long, value_name = "NAME", conflicts_with = "socket")]
    pub node: Option<String>,
}

impl ShowArgs {
    /// The control socket asked: the lab node's (`--node`), else `--socket`.
    pub fn control_socket(&self) -> PathBuf {
        self.node.as_deref().map_or_else(|| self.socket.clone(), naming::lab_node_control_socket)
    }
}

pub fn main(args: ShowArgs) -> anyhow::Result<i32> {
    if let What::Flows = args.what {
        return flows(&args);
    }
    let req = match args.what {
        What::Status => Request::Status,
        What::Ports => Request::Ports,
        What::Routes => Request::Routes,
        What::Stats => Request::Stats,
        What::Workers => Request::Workers,
        What::Services => Request::Services,
        What::Conntrack => Request::Conntrack { limit: Some(args.limit) },
        What::Flows => unreachable!("handled above"),
        What::Policies => Request::Policies,
        What::Neighbours => Request::Neighbours,
    };
    let v = client::request(&args.control_socket(), &req)?;
    if args.json {
        println!("{}", serde_json::to_string(&v)?);
        return Ok(0);
    }
    match args.what {
        What::Status => print_status(&client::read(&v)?),
        What::Ports => print_ports(&client::read(&v)?),
        What::Routes => print_routes(&client::read(&v)?),
        What::Stats => print_stats(&client::read(&v)?),
        What::Workers => print_workers(&client::read(&v)?),
        What::Services => print_services(&client::read(&v)?),
        What::Conntrack => print_conntrack(&client::read(&v)?),
        What::Neighbours => print_neighbours(&client::read(&v)?),
        What::Flows => unreachable!("handled above"),
        What::Policies => {
            let p: replies::Policies<serde_json::Value> = client::read(&v)?;
            println!("{}", serde_json::to_string_pretty(&p.policies)?);
        }
    }
    Ok(0)
}

/// An optional field as printed: `-` when absent.
fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), T::to_string)
}

/// A serialized name (a kind, a mode) as its JSON string.
fn name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "-".into(),
    }
}

fn print_status(v: &replies::Status) {
    let rows: [(&str, String); 12] = [
        ("node", v.node.clone()),
        ("pod_cidr", v.pod_cidr.clone()),
        ("pod_mtu", v.pod_mtu.map_or_else(|| "- (no uplink)".into(), |m| m.to_string())),
        ("internal_ip", v.internal_ip.clone()),
        ("manifests_dir", v.manifests_dir.clone()),
        ("applied_digest", v.applied_digest.clone()),
        ("tables_version", v.tables_version.to_string()),
        ("workers", v.workers.to_string()),
        ("ports_wanted", v.ports_wanted.to_string()),
        ("ports_attached", v.ports_attached.to_string()),
        ("uptime_s", v.uptime_s.to_string()),
        ("last_error", opt(&v.last_error)),
    ];
    for (key, value) in rows {
        println!("{key:<16} {value}");
    }
    if let Some(m) = &v.memory {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
        let tables: Vec<String> = m.by_table().iter().map(|(t, b)| format!("{t} {}", mib(*b))).collect();
        println!("{:<16} {}", "memory", tables.join(", "));
        println!("{:<16} {} (peak {})", "resident", m.resident_bytes.map_or_else(|| "-".into(), mib), m.peak_resident_bytes.map_or_else(|| "-".into(), mib));
    }
    match &v.conntrack_state {
        None => println!("{:<16} in process memory only (--state-file none): a restart starts empty", "conntrack_state"),
        Some(a) => {
            let what = match &a.fresh {
                None => format!(
                    "generation {}: adopted {} connection(s) and affinity record(s) (dropped: {} half-written, {} without a slot)",
                    a.generation, a.adopted, a.incomplete, a.no_slot
                ),
                Some(why) => format!("generation {}: started empty ({why})", a.generation),
            };
            let disk = if a.in_memory { "" } else { "; not on tmpfs: written back to disk" };
            println!("{:<16} {} {what}{disk}", "conntrack_state", a.path.display());
        }
    }
    if let Some(l2) = &v.l2_announcements {
        println!("{:<16} Leases in {}", "l2_announce", l2.leases);
        for a in &l2.addresses {
            let here = if a.announced_here { "announced here" } else { "not here" };
            println!("{:<16} {} {here} (Lease {}, holder {})", "", a.address, a.lease, a.holder.as_deref().unwrap_or("none"));
        }
        if let Some(e) = &l2.error {
            println!("{:<16} {e}", "");
        }
    }
    for (title, items) in [("pending", &v.pending_ports), ("unreachable node", &v.unreachable_nodes), ("problem", &v.problems), ("ignored", &v.ignored_objects)] {
        for item in items {
            println!("{title:<16} {item}");
        }
    }
}

fn print_ports(v: &replies::Ports) {
    println!(
        "{:<4} {:<15} {:<10} {:<6} {:<8} {:<5} {:>12} {:>12} {:>10} {:>10} {:>11}",
        "ID", "INTERFACE", "OWNER", "KIND", "XDP", "COPY", "RX_PACKETS", "TX_PACKETS", "RX_DROP", "TX_DROP", "KERNEL_LOST"
    );
    for p in &v.ports {
        let r = &p.report;
        println!(
            "{:<4} {:<15} {:<10} {:<6} {:<8} {:<5} {:>12} {:>12} {:>10} {:>10} {:>11}",
            r.id,
            r.name,
            opt(&p.owner),
            p.kind.as_ref().map_or_else(|| "-".into(), name),
            r.xdp_mode.as_str(),
            if r.zerocopy { "zc" } else { "copy" },
            r.totals.rx_packets,
            r.totals.tx_packets,
            r.totals.rx_dropped,
            r.totals.tx_dropped,
            r.kernel.lost(),
        );
    }
    for p in &v.ports {
        for why in &p.kernel_lost_reasons {
            println!("kernel lost at {} ({}): {why}", p.report.name, opt(&p.owner));
        }
    }
    for (k, e) in &v.pending {
        println!("pending {k}: {e}");
    }
    for p in &v.ports {
        if let Some(f) = &p.uplink_filter {
            print_uplink_filter(&p.report.name, f);
        }
    }
}

/// Entries of each list of the uplink filter printed (`--json` has them all).
const FILTER_LIST_MAX: usize = 32;

fn print_uplink_filter(ifname: &str, v: &replies::UplinkFilterView) {
    let c = &v.counters;
    println!();
    println!(
        "uplink {ifname}: XDP redirected {} to the switch, passed {} to the node's kernel (by rule: prefix {}, port {}, masquerade {}, vxlan {}, icmp error {}, arp {})",
        c.redirected, c.passed, c.owned_prefix, c.owned_port, c.masquerade_port, c.vxlan_port, c.icmp_error, c.arp_request
    );
    let Some(f) = &v.filter else {
        println!("  filter: unknown (its last write failed; see `podswitch show status`)");
        return;
    };
    let list = |title: &str, items: Vec<String>| {
        let more = items.len().saturating_sub(FILTER_LIST_MAX);
        let shown: Vec<&str> = items.iter().take(FILTER_LIST_MAX).map(String::as_str).collect();
        let tail = if more > 0 { format!(" ... and {more} more") } else { String::new() };
        println!("  {title:<18} {}{tail}", if shown.is_empty() { "-".to_string() } else { shown.join(" ") });
    };
    println!("  {:<18} {}", "node address", f.node_ip.map_or_else(|| "-".to_string(), |a| a.to_string()));
    println!("  {:<18} {}-{} (tcp/udp/sctp)", "masquerade ports", f.masquerade_ports.0, f.masquerade_ports.1);
    println!("  {:<18} {}", "vxlan port", f.vxlan_port.map_or_else(|| "-".to_string(), |p| format!("{p}/udp")));
    list("owned prefixes", f.prefixes.iter().map(|(n, l)| format!("{n}/{l}")).collect());
    let proto = |p: u8| match p {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        132 => "sctp".to_string(),
        n => n.to_string(),
    };
    list("owned ports", f.ports.iter().map(|p| format!("{}:{}/{}", p.ip, p.port, proto(p.proto))).collect());
    list("arp answered for", f.arp_targets.iter().map(ToString::to_string).collect());
}

fn print_routes(v: &replies::Routes) {
    println!("gateway {} (tables version {})", v.gateway, v.tables_version);
    println!("{:<20} {:<10} {:<6} NEXT-HOP MAC", "PREFIX", "PORT", "ID");
    for r in &v.routes {
        match &r.tunnel {
            Some(t) => println!(
                "{:<20} {:<10} {:<6} {} (VXLAN {} to {} via {}, UDP {})",
                r.prefix,
                opt(&r.port),
                r.port_id,
                r.dst_mac,
                t.vni,
                t.remote,
                t.next_hop_mac,
                t.udp_port
            ),
            None => println!("{:<20} {:<10} {:<6} {}", r.prefix, opt(&r.port), r.port_id, r.dst_mac),
        }
    }
}

fn print_stats(v: &replies::Stats) {
    println!("{:<4} {:<24} {:>12}  DESCRIPTION", "NO", "DROP REASON", "COUNT");
    for d in &v.drops {
        println!("{:<4} {:<24} {:>12}  {}", d.number, d.reason, d.count, d.description);
    }
    println!();
    println!("{:<7} {:<5} {:>14} {:>12} {:>12}", "WORKER", "CORE", "ROUNDS", "IDLE_SLEEPS", "FREE_FRAMES");
    for w in &v.workers {
        println!("{:<7} {:<5} {:>14} {:>12} {:>12}", w.worker, w.core, w.rounds, w.idle_sleeps, w.free_frames);
    }
}

fn print_workers(v: &replies::Workers) {
    println!(
        "{:<7} {:<5} {:<10} {:>6} {:>10} {:>10} {:>10} {:>12} {:>12} {:>9} {:>9} {:>10}  WAKEUPS DATA/DOORBELL/TIMEOUT",
        "WORKER", "CORE", "MODE", "BUSY%", "BUSY_S", "POLLING_S", "SLEEPING_S", "ROUNDS", "RX_PACKETS", "PKT/ROUND", "PKT/BURST", "SLEEPS"
    );
    for w in &v.workers {
        println!(
            "{:<7} {:<5} {:<10} {:>6.1} {:>10.3} {:>10.3} {:>10.3} {:>12} {:>12} {:>9.1} {:>9.1} {:>10}  {}/{}/{}",
            w.worker,
            w.core,
            w.mode,
            w.busy_percent,
            w.busy_seconds,
            w.polling_seconds,
            w.sleeping_seconds,
            w.rounds,
            w.rx_packets,
            w.packets_per_rx_round,
            w.packets_per_burst,
            w.sleeps,
            w.wakeups.data,
            w.wakeups.doorbell,
            w.wakeups.timeout
        );
    }
    println!();
    for w in &v.workers {
        let buckets: Vec<String> = w.burst_sizes.iter().map(|b| format!("<={}: {}", b.le, b.count)).collect();
        println!("worker {} bursts by size (frames): {}", w.worker, buckets.join("  "));
    }
}

fn print_services(v: &replies::Services<Vec<replies::ServiceRow>>) {
    for f in &v.services {
        println!(
            "{} {} {} -> target port {} (endpoints from {}; eTP {}, iTP {}{})",
            f.name,
            f.kind,
            f.frontend,
            f.target_port,
            f.endpoints_from,
            f.external_traffic_policy,
            f.internal_traffic_policy,
            f.affinity_timeout_s.map(|t| format!(", ClientIP affinity {t}s")).unwrap_or_default()
        );
        for (st, title) in [(&f.internal, "from pods/node"), (&f.external, "from outside")] {
            println!("    {title:<15} {} backend(s), empty: {}, masquerade: {}", st.backends, st.on_empty, st.masquerade);
        }
        for e in &f.endpoints {
            println!(
                "    endpoint {:<22} ready={} serving={} terminating={} node={} {}{}",
                e.address,
                e.ready,
                e.serving,
                e.terminating,
                opt(&e.node),
                if e.internal { "[internal]" } else { "" },
                if e.external { "[external]" } else { "" },
            );
        }
    }
}

fn print_neighbours(v: &replies::Neighbours) {
    let Some(interface) = &v.interface else {
        println!("no uplink (--uplink): no neighbours");
        return;
    };
    println!(
        "uplink {interface}: gateway {} {} (MAC from {}); stale entries unconfirmed for {} s are not used",
        opt(&v.gateway),
        v.gateway_mac.as_deref().unwrap_or("unresolved: no default route in the tables"),
        v.gateway_mac_from,
        v.expiry_s
    );
    println!("{:<16} {:<18} {:<11} {:<9} {:>6}  {:<6} NEEDED BY", "IP", "MAC", "STATE", "RESOLVED", "AGE", "OWNER");
    for n in &v.neighbours {
        println!(
            "{:<16} {:<18} {:<11} {:<9} {:>6}  {:<6} {}",
            n.ip,
            opt(&n.mac),
            n.state,
            if n.resolved { "yes" } else { "no" },
            n.age_s.map_or_else(|| "-".into(), |a| format!("{a}s")),
            if n.created_by_switch { "switch" } else { "kernel" },
            n.needed_by.join(",")
        );
    }
}

fn print_conntrack(v: &replies::Conntrack) {
    println!(
        "{} connection(s) (capacity {}, {:.0} bytes each); inserted {}, refused (full) {}, removed {}",
        v.entries, v.capacity, v.bytes_per_entry, v.inserted, v.insert_failed_full, v.removed
    );
    println!("{:<48} {:<48} {:<12} {:>6} {:>6}  SERVICE", "ORIGINAL", "REPLY (TRANSLATED)", "STATE", "AGE", "IDLE");
    for c in &v.connections {
        println!("{:<48} {:<48} {:<12} {:>6} {:>6}  {}", c.original, c.reply, c.state, c.age_s, c.idle_s, opt(&c.service));
    }
    if v.shown != v.entries {
        println!("(showing {} of {}; --limit N for more)", v.shown, v.entries);
    }
}

fn flows(args: &ShowArgs) -> anyhow::Result<i32> {
    let v = client::request(&args.control_socket(), &Request::Flows { since: None, limit: Some(args.limit) })?;
    if !args.follow {
        if args.json {
            println!("{}", serde_json::to_string(&v)?);
        } else {
            let f: replies::Flows = client::read(&v)?;
            print_flow_header(&f);
            print_flows(&f.flows);
        }
        return Ok(0);
    }
    let first: replies::Flows = client::read(&v)?;
    if !args.json {
        print_flow_header(&first);
    }
    let mut next = first.next;
    let mut pending = Some(first);
    loop {
        let f = match pending.take() {
            Some(f) => f,
            None => {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let v = client::request(&args.control_socket(), &Request::Flows { since: Some(next), limit: Some(100_000) })?;
                client::read::<replies::Flows>(&v)?
            }
        };
        if args.json {
            for r in &f.flows {
                println!("{}", serde_json::to_string(r)?);
            }
        } else {
            print_flows(&f.flows);
        }
        next = f.next;
    }
}

fn print_flow_header(v: &replies::Flows) {
    println!("policy epoch {}; verdicts lost (log full): {}", v.policy_epoch, v.lost);
    for p in &v.policies {
        println!("  {:<40} allowed {} connection(s)", p.policy, p.allowed_connections);
    }
    println!("{:<13} {:<8} {:<10} {:<10} {:<22} {:<22} {:<5} DECIDED BY", "TIME", "VERDICT", "FROM", "TO", "DESTINATION", "TRANSLATED", "PROTO");
}

fn print_flows(flows: &[replies::Flow]) {
    for f in flows {
        let ms = f.time_ms;
        let t = format!("{:02}:{:02}:{:02}.{:03}", (ms / 3_600_000) % 24, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000);
        println!(
            "{:<13} {:<8} {:<10} {:<10} {:<22} {:<22} {:<5} {}{}",
            t,
            f.verdict,
            opt(&f.from),
            opt(&f.to),
            f.destination,
            f.translated,
            f.protocol,
            f.decided_by,
            if f.rejudged { " (re-judged after a policy change)" } else { "" }
        );
    }
}
