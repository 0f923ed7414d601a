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
}

/// Show the running switch's state.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[arg(value_enum)]
    pub what: What,
    /// Print the switch's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The switch's control socket.
    #[arg(long, value_name = "PATH", default_value = naming::DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
}

pub fn main(args: ShowArgs) -> anyhow::Result<i32> {
    let req = match args.what {
        What::Status => Request::Status,
        What::Ports => Request::Ports,
        What::Routes => Request::Routes,
        What::Stats => Request::Stats,
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
        "{:<4} {:<15} {:<10} {:<6} {:<8} {:<5} {:>12} {:>12} {:>10} {:>10}",
        "ID", "INTERFACE", "OWNER", "KIND", "XDP", "COPY", "RX_PACKETS", "TX_PACKETS", "RX_DROP", "TX_DROP"
    );
    for p in v["ports"].as_array().into_iter().flatten() {
        println!(
            "{:<4} {:<15} {:<10} {:<6} {:<8} {:<5} {:>12} {:>12} {:>10} {:>10}",
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
        );
    }
    if let Some(pending) = v["pending"].as_object() {
        for (k, e) in pending {
            println!("pending {k}: {}", s(e));
        }
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
