//! `podswitch-perf pipeline`: the per-packet cost of the whole pipeline, in memory, without I/O.
//!
//! What it measures: `switch::pipeline::process` — the function the workers run on every
//! frame — over tables with 10,000 Services × 10 endpoints (100,000 endpoints) and 1,000,000
//! tracked connections, on one pinned core:
//! - new connections: 1,000,000 TCP SYNs from 1,000 local pods to random Services, each
//!   creating its connection (Maglev pick, table insert, DNAT, route);
//! - established flows: ACK segments of connections drawn uniformly at random from the million
//!   (lookup, state, DNAT, route, rewrite). Frames are built in batches of 8,192 outside the
//!   timed loop, each batch from fresh random connections, so no small set of flows stays warm
//!   in cache.
//! - instructions per established packet under `valgrind --tool=callgrind`, counting only the
//!   timed function (`--toggle-collect`), which does not depend on machine noise.
//!
//! Output: a readable report, or with `--json` one JSON object as the last line:
//! `{"established_mpps_per_core":…,"new_conn_mpps_per_core":…,"instructions_per_packet":…,
//! "conntrack_bytes_per_entry":…}` and more keys after.
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use switch::bench_fixtures::{self as fx, Conn, Frames, Rng, Scale, World};

#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// Services (ClusterIP, TCP/80), each with --endpoints endpoints.
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    #[arg(long, default_value_t = 10)]
    endpoints: u32,
    /// Tracked connections to set up before measuring established flows.
    #[arg(long, default_value_t = 1_000_000)]
    connections: u32,
    /// Established-flow packets to time.
    #[arg(long, default_value_t = 20_000_000)]
    packets: u64,
    /// Core to pin the measuring thread to.
    #[arg(long, default_value_t = 1)]
    core: usize,
    /// Skip the callgrind instruction count.
    #[arg(long)]
    no_callgrind: bool,
    /// Packets for the callgrind run.
    #[arg(long, default_value_t = 200_000)]
    callgrind_packets: u64,
    /// Internal: run under callgrind, print the packet count and exit.
    #[arg(long, hide = true)]
    instr_run: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

const BATCH: usize = 8192;
const PODS: u32 = 1000;

fn scale(a: &PipelineArgs) -> Scale {
    Scale { services: a.services, endpoints: a.endpoints, pods: PODS, connections: a.connections }
}

/// Processes a batch of new connections.
#[inline(never)]
fn timed_batch_new(w: &World, f: &mut Frames, n: usize) -> u64 {
    w.run_frames(f, n) as u64
}

/// Processes a batch of established-flow packets; the function callgrind counts.
#[inline(never)]
fn timed_batch_established(w: &World, f: &mut Frames, n: usize) -> u64 {
    w.run_frames(f, n) as u64
}

struct Figures {
    new_pps: f64,
    est_pps: f64,
    est_forwarded: u64,
    est_packets: u64,
    new_forwarded: u64,
    bytes_per_entry: f64,
    huge_pages: bool,
    live: usize,
    setup: Duration,
}

fn measure(a: &PipelineArgs, est_packets: u64, quiet: bool) -> Figures {
    let t0 = Instant::now();
    let scale = scale(a);
    let w = World::new(scale, a.connections + a.connections / 8);
    let mut frames = Frames::new(BATCH);
    let mut rng = Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let conns: Vec<Conn> = fx::service_conns(&scale, a.connections, &mut rng);
    let setup = t0.elapsed();
    if !quiet {
        eprintln!("pipeline: tables built ({} Services x {} endpoints) in {:.1} s; opening {} connections", a.services, a.endpoints, setup.as_secs_f64(), a.connections);
    }
    // New connections.
    let mut new_time = Duration::ZERO;
    let mut new_forwarded = 0;
    for chunk in conns.chunks(BATCH) {
        frames.fill(chunk, 0x02);
        let t = Instant::now();
        new_forwarded += timed_batch_new(&w, &mut frames, chunk.len());
        new_time += t.elapsed();
    }
    // Complete every handshake (untimed): the backend's SYN-ACK arrives from the uplink, the
    // client's ACK follows; the connections are then ESTABLISHED, as real ones are.
    for chunk in conns.chunks(BATCH) {
        w.write_answers(&mut frames, chunk);
        w.run_frames(&mut frames, chunk.len());
        frames.fill(chunk, 0x10);
        w.run_frames(&mut frames, chunk.len());
    }
    let live = w.ct.live();
    if !quiet {
        eprintln!("pipeline: {live} connections tracked; timing {est_packets} established packets");
    }
    // Established flows, uniformly at random.
    let mut est_time = Duration::ZERO;
    let mut est_forwarded = 0;
    let mut done = 0u64;
    let mut pick = vec![conns[0]; BATCH];
    while done < est_packets {
        let n = (est_packets - done).min(BATCH as u64) as usize;
        for p in pick.iter_mut().take(n) {
            *p = conns[(rng.u64(..) % conns.len() as u64) as usize];
        }
        frames.fill(&pick[..n], 0x10);
        let t = Instant::now();
        est_forwarded += timed_batch_established(&w, &mut frames, n);
        est_time += t.elapsed();
        done += n as u64;
    }
    Figures {
        new_pps: conns.len() as f64 / new_time.as_secs_f64(),
        est_pps: est_packets as f64 / est_time.as_secs_f64(),
        est_forwarded,
        est_packets,
        new_forwarded,
        bytes_per_entry: w.ct.bytes_per_entry(),
        huge_pages: w.ct.huge_pages(),
        live,
        setup,
    }
}

/// Instructions per established packet: this program under callgrind, counting only
/// `timed_batch_established`.
fn callgrind(a: &PipelineArgs) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let run = |packets: u64| -> anyhow::Result<u64> {
        let out_file = std::env::temp_dir().join(format!("podswitch-callgrind-{}-{packets}.out", std::process::id()));
        let status = Command::new("valgrind")
            .args(["--tool=callgrind", "--toggle-collect=*timed_batch_established*"])
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(&exe)
            .args(["pipeline", "--instr-run", "--packets", &packets.to_string()])
            .args(["--services", &a.services.to_string(), "--endpoints", &a.endpoints.to_string(), "--connections", &a.connections.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("running valgrind (install the valgrind package)")?;
        if !status.success() {
            bail!("valgrind failed ({status})");
        }
        let text = std::fs::read_to_string(&out_file)?;
        let _ = std::fs::remove_file(&out_file);
        let total = crate::sys::callgrind_total(&text)?;
        Ok(total)
    };
    eprintln!("pipeline: counting instructions under callgrind ({} packets; slow)", a.callgrind_packets);
    Ok(run(a.callgrind_packets)? as f64 / a.callgrind_packets as f64)
}

pub fn main(a: PipelineArgs) -> anyhow::Result<i32> {
    if a.instr_run {
        let f = measure(&a, a.packets, true);
        println!("{}", f.est_forwarded);
        return Ok(0);
    }
    if !core_affinity::set_for_current(core_affinity::CoreId { id: a.core }) {
        eprintln!("pipeline: could not pin to core {} (running unpinned)", a.core);
    }
    let f = measure(&a, a.packets, false);
    if f.est_forwarded != f.est_packets || f.new_forwarded != a.connections as u64 {
        bail!(
            "the benchmark is wrong: {} of {} established and {} of {} new packets were forwarded",
            f.est_forwarded,
            f.est_packets,
            f.new_forwarded,
            a.connections
        );
    }
    let ipp = if a.no_callgrind { None } else { Some(callgrind(&a)?) };
    let report = serde_json::json!({
        "established_mpps_per_core": (f.est_pps / 1e6 * 1000.0).round() / 1000.0,
        "new_conn_mpps_per_core": (f.new_pps / 1e6 * 1000.0).round() / 1000.0,
        "instructions_per_packet": ipp.map(f64::round),
        "conntrack_bytes_per_entry": (f.bytes_per_entry * 10.0).round() / 10.0,
        "conntrack_huge_pages": f.huge_pages,
        "established_ns_per_packet": (1e9 / f.est_pps * 10.0).round() / 10.0,
        "new_conn_ns_per_packet": (1e9 / f.new_pps * 10.0).round() / 10.0,
        "services": a.services,
        "endpoints": a.services * a.endpoints,
        "connections": f.live,
        "established_packets": f.est_packets,
        "core": a.core,
        "setup_s": f.setup.as_secs_f64(),
    });
    if a.json {
        println!("{report}");
    } else {
        println!("pipeline: {} Services, {} endpoints, {} tracked connections, one core", a.services, a.services * a.endpoints, f.live);
        println!("  established flows: {:.2} Mpps per core ({:.1} ns per packet)", f.est_pps / 1e6, 1e9 / f.est_pps);
        println!("  new connections:   {:.2} Mpps per core ({:.1} ns per packet)", f.new_pps / 1e6, 1e9 / f.new_pps);
        match ipp {
            Some(i) => println!("  instructions per established packet (callgrind): {i:.0}"),
            None => println!("  instructions per packet: not measured (--no-callgrind)"),
        }
        println!(
            "  connection table: {:.1} bytes per entry, {}",
            f.bytes_per_entry,
            if f.huge_pages { "on 2 MiB pages" } else { "on 4 KiB pages (transparent huge pages off)" }
        );
    }
    Ok(0)
}
