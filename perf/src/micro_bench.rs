//! `podswitch-perf micro`: instructions per packet of each piece of the per-packet path, under
//! `valgrind --tool=callgrind`, which does not depend on machine noise.
//!
//! What it measures: the cases of `switch::bench_fixtures::micro` (the same code the criterion
//! benchmarks `cargo bench -p podswitch-switch --bench micro` time): frame parse + checksum,
//! LPM route, Service pick, conntrack hit and insert, NetworkPolicy judge, and the whole
//! pipeline for established pod-to-pod, established Service and new Service traffic, at the
//! scale of `bench pipeline` (10,000 Services x 10 endpoints, 1,000 pods, 1,000,000
//! connections).
//!
//! How: for each case this program runs itself under callgrind (`--instr-run CASE`), which
//! builds the case (setup), then runs `--bursts` bursts of 64 inputs, each prepared outside
//! and measured inside `measured_burst`. Callgrind collects only inside that function
//! (`--toggle-collect`), so setup and preparation are not counted; the total divided by the
//! packets is the figure. The run checks that every input came out as the case expects (a
//! hit, a forwarded frame, ...) and fails otherwise.
//!
//! Output: a table on stdout, progress on stderr; with `--json` the last line is one JSON
//! object `{"parse_verify_instr_per_pkt":…, …, "process_service_new_instr_per_pkt":…}` and
//! more keys after (`connections`, `packets_per_case`).
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use switch::bench_fixtures::micro::{measured_burst, new_case, BURST, CASES};
use switch::bench_fixtures::Scale;

#[derive(Debug, clap::Args)]
pub struct MicroArgs {
    /// Cases to measure, comma-separated (default: all). Known: parse_verify, lpm_route,
    /// service_pick, conntrack_hit, conntrack_insert, policy_judge, process_pod_to_pod,
    /// process_service_established, process_service_new, process_udp_one_way, gso_segment.
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// Bursts of 64 packets counted per case.
    #[arg(long, default_value_t = 200)]
    bursts: u64,
    /// Connections in the table of the conntrack and whole-pipeline cases (setup under
    /// callgrind takes about a minute per case at 1,000,000).
    #[arg(long, default_value_t = Scale::PIPELINE.connections)]
    connections: u32,
    /// Internal: run CASE (under callgrind), print the packets that came out as expected.
    #[arg(long, hide = true)]
    instr_run: Option<String>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

fn scale(a: &MicroArgs) -> Scale {
    Scale { connections: a.connections, ..Scale::PIPELINE }
}

/// The `--instr-run` side: setup, then the measured bursts.
fn instr_run(a: &MicroArgs, name: &str) -> anyhow::Result<i32> {
    let mut case = new_case(name, &scale(a)).with_context(|| format!("unknown case {name}"))?;
    let mut ok = 0u64;
    for _ in 0..a.bursts {
        case.prepare();
        ok += measured_burst(case.as_mut(), BURST) as u64;
    }
    println!("{ok}");
    Ok(0)
}

/// Instructions inside `measured_burst` for `case`, and the packets it processed as expected.
fn callgrind(a: &MicroArgs, case: &str) -> anyhow::Result<(u64, u64)> {
    let exe = std::env::current_exe()?;
    let out_file = std::env::temp_dir().join(format!("podswitch-micro-{}-{case}.callgrind", std::process::id()));
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--toggle-collect=*measured_burst*"])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&exe)
        .args(["micro", "--instr-run", case, "--bursts", &a.bursts.to_string(), "--connections", &a.connections.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running valgrind (install the valgrind package)")?;
    let text = std::fs::read_to_string(&out_file);
    let _ = std::fs::remove_file(&out_file);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        bail!("valgrind on case {case} failed ({}):\n{}", out.status, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    let text = text.context("reading callgrind's output")?;
    let total = crate::sys::callgrind_total(&text)?;
    let ok = String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().context("the measured run printed no packet count")?;
    Ok((total, ok))
}

pub fn main(a: MicroArgs) -> anyhow::Result<i32> {
    if let Some(case) = &a.instr_run {
        return instr_run(&a, case);
    }
    if a.bursts == 0 {
        bail!("--bursts must be at least 1");
    }
    let names: Vec<&str> = if a.cases.is_empty() { CASES.iter().map(|c| c.0).collect() } else { a.cases.iter().map(String::as_str).collect() };
    for n in &names {
        if !CASES.iter().any(|c| c.0 == *n) {
            bail!("unknown case {n} (known: {})", CASES.iter().map(|c| c.0).collect::<Vec<_>>().join(", "));
        }
    }
    let packets = a.bursts * BURST as u64;
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        eprintln!("micro: [{}/{}] {name} under callgrind ({packets} packets, {} connections where a table is needed)", i + 1, names.len(), a.connections);
        let t = Instant::now();
        let (instr, ok) = callgrind(&a, name)?;
        if ok != packets {
            bail!("case {name}: {ok} of {packets} packets came out as expected; the benchmark is wrong");
        }
        let per = instr as f64 / packets as f64;
        eprintln!("micro: {name}: {per:.1} instructions per packet ({:.0} s)", t.elapsed().as_secs_f64());
        rows.push((*name, per));
    }
    let mut report = serde_json::Map::new();
    for (name, per) in &rows {
        report.insert(format!("{name}_instr_per_pkt"), serde_json::json!((per * 10.0).round() / 10.0));
    }
    report.insert("connections".into(), a.connections.into());
    report.insert("services".into(), Scale::PIPELINE.services.into());
    report.insert("endpoints".into(), (Scale::PIPELINE.services * Scale::PIPELINE.endpoints).into());
    report.insert("packets_per_case".into(), packets.into());
    println!("micro: instructions per packet (callgrind, setup excluded), {packets} packets per case");
    println!("  {:<30} {:>12}  what one packet's work is", "case", "instr/pkt");
    for (name, per) in &rows {
        let what = CASES.iter().find(|c| c.0 == *name).map_or("", |c| c.1);
        println!("  {name:<30} {per:>12.1}  {what}");
    }
    if a.json {
        println!("{}", serde_json::Value::Object(report));
    }
    Ok(0)
}
