//! `podswitch show ...`: asks the running switch over its control socket and prints the
//! answer as a table for people or, with `--json`, as the switch's JSON object.
use std::path::PathBuf;

use serde_json::Value;

use crate::ctl::{client, Request};
use crate::naming;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    /// Sync state: manifests applied, ports wanted/attached/pending, last error.
    Status,
    /// Every port: XDP mode, copy/zero-copy, queues and packet counters.
    Ports,
    /// The routing table (longest prefix first).
    Routes,
    /// Drops by numbered reason, per-worker and per-port counters.
    Stats,
    /// Every Service frontend with its backends (and their conditions).
    Services,
    /// Tracked connections: original and translated tuples, state, age.
    Conntrack,
    /// NetworkPolicy verdicts (newest last) and connections allowed per policy.
    Flows,
    /// Every NetworkPolicy: the pods it selects, its rules with resolved peers and ports.
    Policies,
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
        What::Services => Request::Services,
        What::Conntrack => Request::Conntrack { limit: Some(args.limit) },
        What::Flows => unreachable!("handled above"),
        What::Policies => Request::Policies,
    };
    let v = client::request(&args.socket, &req)?;
    if args.json {
        println!("{}", serde_json::to_string(&v)?);
        return Ok(0);
    }
    match args.what {
        What::Status => print_status(&v),
        What::Ports => print_ports(&v),
        What::Routes => print_routes(&v),
        What::Stats => print_stats(&v),
        What::Services => print_services(&v),
        What::Conntrack => print_conntrack(&v),
        What::Flows => unreachable!("handled above"),
        What::Policies => println!("{}", serde_json::to_string_pretty(&v["policies"])?),
    }
    Ok(0)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_status(v: &Value) {
    for key in ["node", "pod_cidr", "internal_ip", "manifests_dir", "applied_digest", "tables_version", "workers", "ports_wanted", "ports_attached", "uptime_s", "last_error"] {
        println!("{key:<16} {}", s(&v[key]));
    }
    for (title, key) in [("pending", "pending_ports"), ("problem", "problems"), ("ignored", "ignored_objects")] {
        for item in v[key].as_array().into_iter().flatten() {
            println!("{title:<16} {}", s(item));
        }
    }
}

fn print_ports(v: &Value) {
    println!(
        "{:<4} {:<15} {:<10} {:<6} {:<8} {:<5} {:>12} {:>12} {:>10} {:>10} {:>11}",
        "ID", "INTERFACE", "OWNER", "KIND", "XDP", "COPY", "RX_PACKETS", "TX_PACKETS", "RX_DROP", "TX_DROP", "KERNEL_LOST"
    );
    for p in v["ports"].as_array().into_iter().flatten() {
        println!(
            "{:<4} {:<15} {:<10} {:<6} {:<8} {:<5} {:>12} {:>12} {:>10} {:>10} {:>11}",
            s(&p["id"]),
            s(&p["name"]),
            s(&p["owner"]),
            s(&p["kind"]),
            s(&p["xdp_mode"]),
            if p["zerocopy"].as_bool() == Some(true) { "zc" } else { "copy" },
            s(&p["rx_packets"]),
            s(&p["tx_packets"]),
            s(&p["rx_dropped"]),
            s(&p["tx_dropped"]),
            kernel_lost(&p["kernel"]),
        );
    }
    if let Some(pending) = v["pending"].as_object() {
        for (k, e) in pending {
            println!("pending {k}: {}", s(e));
        }
    }
}

/// Frames the kernel lost on a port's sockets (see `switch::afxdp::stats`).
fn kernel_lost(k: &Value) -> String {
    let n = |f: &str| k[f].as_u64().unwrap_or(0);
    match k.as_object() {
        Some(_) => (n("rx_dropped") + n("rx_ring_full") + n("rx_invalid_descs") + n("tx_invalid_descs")).to_string(),
        None => "-".into(),
    }
}

fn print_routes(v: &Value) {
    println!("gateway {} (tables version {})", s(&v["gateway"]), s(&v["tables_version"]));
    println!("{:<20} {:<10} {:<6} NEXT-HOP MAC", "PREFIX", "PORT", "ID");
    for r in v["routes"].as_array().into_iter().flatten() {
        println!("{:<20} {:<10} {:<6} {}", s(&r["prefix"]), s(&r["port"]), s(&r["port_id"]), s(&r["dst_mac"]));
    }
}

fn print_stats(v: &Value) {
    println!("{:<4} {:<24} {:>12}  DESCRIPTION", "NO", "DROP REASON", "COUNT");
    for d in v["drops"].as_array().into_iter().flatten() {
        println!("{:<4} {:<24} {:>12}  {}", s(&d["number"]), s(&d["reason"]), s(&d["count"]), s(&d["description"]));
    }
    println!();
    println!("{:<7} {:<5} {:>14} {:>12} {:>12}", "WORKER", "CORE", "ROUNDS", "IDLE_SLEEPS", "FREE_FRAMES");
    for w in v["workers"].as_array().into_iter().flatten() {
        println!("{:<7} {:<5} {:>14} {:>12} {:>12}", s(&w["worker"]), s(&w["core"]), s(&w["rounds"]), s(&w["idle_sleeps"]), s(&w["free_frames"]));
    }
}

fn print_services(v: &Value) {
    for f in v["services"].as_array().into_iter().flatten() {
        println!(
            "{} {} {} -> target port {} (endpoints from {}; eTP {}, iTP {}{})",
            s(&f["name"]),
            s(&f["kind"]),
            s(&f["frontend"]),
            s(&f["target_port"]),
            s(&f["endpoints_from"]),
            s(&f["external_traffic_policy"]),
            s(&f["internal_traffic_policy"]),
            f["affinity_timeout_s"].as_u64().map(|t| format!(", ClientIP affinity {t}s")).unwrap_or_default()
        );
        for (set, title) in [("internal", "from pods/node"), ("external", "from outside")] {
            let st = &f[set];
            println!(
                "    {title:<15} {} backend(s), empty: {}, masquerade: {}",
                st["backends"].as_u64().unwrap_or(0),
                s(&st["on_empty"]),
                s(&st["masquerade"])
            );
        }
        for e in f["endpoints"].as_array().into_iter().flatten() {
            println!(
                "    endpoint {:<22} ready={} serving={} terminating={} node={} {}{}",
                s(&e["address"]),
                s(&e["ready"]),
                s(&e["serving"]),
                s(&e["terminating"]),
                s(&e["node"]),
                if e["internal"].as_bool() == Some(true) { "[internal]" } else { "" },
                if e["external"].as_bool() == Some(true) { "[external]" } else { "" },
            );
        }
    }
}

fn print_conntrack(v: &Value) {
    println!(
        "{} connection(s) (capacity {}, {:.0} bytes each); inserted {}, refused (full) {}, removed {}",
        s(&v["entries"]),
        s(&v["capacity"]),
        v["bytes_per_entry"].as_f64().unwrap_or(0.0),
        s(&v["inserted"]),
        s(&v["insert_failed_full"]),
        s(&v["removed"])
    );
    println!("{:<48} {:<48} {:<12} {:>6} {:>6}  SERVICE", "ORIGINAL", "REPLY (TRANSLATED)", "STATE", "AGE", "IDLE");
    for c in v["connections"].as_array().into_iter().flatten() {
        println!(
            "{:<48} {:<48} {:<12} {:>6} {:>6}  {}",
            s(&c["original"]),
            s(&c["reply"]),
            s(&c["state"]),
            s(&c["age_s"]),
            s(&c["idle_s"]),
            s(&c["service"])
        );
    }
    if v["shown"] != v["entries"] {
        println!("(showing {} of {}; --limit N for more)", s(&v["shown"]), s(&v["entries"]));
    }
}

fn flows(args: &ShowArgs) -> anyhow::Result<i32> {
    let v = client::request(&args.socket, &Request::Flows { since: None, limit: Some(args.limit) })?;
    if !args.follow {
        if args.json {
            println!("{}", serde_json::to_string(&v)?);
        } else {
            print_flow_header(&v);
            print_flows(&v);
        }
        return Ok(0);
    }
    if !args.json {
        print_flow_header(&v);
    }
    let mut next = v["next"].as_u64().unwrap_or(0);
    let mut first = Some(v);
    loop {
        let v = match first.take() {
            Some(v) => v,
            None => {
                std::thread::sleep(std::time::Duration::from_millis(250));
                client::request(&args.socket, &Request::Flows { since: Some(next), limit: Some(100_000) })?
            }
        };
        if args.json {
            for f in v["flows"].as_array().into_iter().flatten() {
                println!("{}", serde_json::to_string(f)?);
            }
        } else {
            print_flows(&v);
        }
        next = v["next"].as_u64().unwrap_or(next);
    }
}

fn print_flow_header(v: &Value) {
    println!("policy epoch {}; verdicts lost (log full): {}", s(&v["policy_epoch"]), s(&v["lost"]));
    for p in v["policies"].as_array().into_iter().flatten() {
        println!("  {:<40} allowed {} connection(s)", s(&p["policy"]), s(&p["allowed_connections"]));
    }
    println!("{:<13} {:<8} {:<10} {:<10} {:<22} {:<22} {:<5} DECIDED BY", "TIME", "VERDICT", "FROM", "TO", "DESTINATION", "TRANSLATED", "PROTO");
}

fn print_flows(v: &Value) {
    for f in v["flows"].as_array().into_iter().flatten() {
        let ms = f["time_ms"].as_u64().unwrap_or(0);
        let t = format!("{:02}:{:02}:{:02}.{:03}", (ms / 3_600_000) % 24, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000);
        println!(
            "{:<13} {:<8} {:<10} {:<10} {:<22} {:<22} {:<5} {}{}",
            t,
            s(&f["verdict"]),
            s(&f["from"]),
            s(&f["to"]),
            s(&f["destination"]),
            s(&f["translated"]),
            s(&f["protocol"]),
            s(&f["decided_by"]),
            if f["rejudged"].as_bool() == Some(true) { " (re-judged after a policy change)" } else { "" }
        );
    }
}
