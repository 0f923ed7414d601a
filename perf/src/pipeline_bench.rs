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
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use switch::conntrack::{ConnTable, KeyHasher};
use switch::counters::DropCounters;
use switch::pipeline::{process_hinted, warm, Ctx, Verdict};
use switch::tables::maglev;
use switch::tables::services::{Backend, BackendSet, Frontend, FrontendKey, FrontendKind, OnEmpty, ServiceTables};
use switch::tables::{NextHop, PortConfig, PortKind, SourceGuard, Tables};
use switch::wire::checksum;

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
const SLOT: usize = 128;
const PODS: u32 = 1000;
const UPLINK: u16 = 1001;
const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

fn pod_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 2)) + i)
}
fn vip(s: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + s)
}
fn endpoint_ip(s: u32, k: u32, per: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + s * per + k)
}
fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}
fn port_mac(id: u16) -> [u8; 6] {
    [0xee, 0, 0, 0, (id >> 8) as u8, id as u8]
}

fn build_tables(a: &PipelineArgs) -> Tables {
    let mut t = Tables::new(GW);
    for i in 0..PODS {
        let id = i as u16 + 1;
        let ip = pod_ip(i);
        t.set_port(id, Some(PortConfig { name: format!("bench/p{i}"), kind: PortKind::Pod, mac: port_mac(id), source_guard: Some(SourceGuard { mac: mac_of(ip), ip }) }));
        t.routes.insert(u32::from(ip), 32, NextHop { port: id, dst_mac: mac_of(ip) });
    }
    // Endpoints live on other nodes, reached through the uplink.
    t.set_port(UPLINK, Some(PortConfig { name: "uplink".into(), kind: PortKind::Uplink, mac: port_mac(UPLINK), source_guard: None }));
    t.routes.insert(u32::from(Ipv4Addr::new(10, 128, 0, 0)), 9, NextHop { port: UPLINK, dst_mac: [2, 0, 0, 0, 0, 1] });
    let mut s = ServiceTables { service_cidrs: vec![(u32::from(Ipv4Addr::new(10, 96, 0, 0)), 12)], snat_ip: Some(Ipv4Addr::new(172, 18, 0, 2)), ..Default::default() };
    s.extend((0..a.services).map(|svc| {
        let backends: Vec<Backend> = (0..a.endpoints)
            .map(|k| Backend { ip: endpoint_ip(svc, k, a.endpoints), port: 8080, endpoint_id: svc * a.endpoints + k, local: false })
            .collect();
        let names: Vec<String> = backends.iter().map(|b| format!("{}:{}", b.ip, b.port)).collect();
        let set = BackendSet { maglev: maglev::build(&names).into(), backends: backends.into(), on_empty: OnEmpty::Reject, masquerade: false };
        Frontend {
            name: format!("bench/svc{svc}:80"),
            service_id: svc,
            kind: FrontendKind::ClusterIp,
            key: FrontendKey { ip: u32::from(vip(svc)), port: 80, proto: 6 },
            external: BackendSet { masquerade: true, ..set.clone() },
            internal: set,
            affinity_timeout_s: None,
            source_ranges: vec![],
        }
    }));
    t.services = s;
    t
}

/// A connection: client pod, source port, Service.
#[derive(Clone, Copy)]
struct Conn {
    pod: u32,
    sport: u16,
    svc: u32,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Writes a 60-byte TCP frame for `c` (client pod -> Service) into `slot`.
fn write_frame(slot: &mut [u8], c: Conn, flags: u8) -> usize {
    let src = pod_ip(c.pod);
    write_tcp(slot, (mac_of(src), port_mac(c.pod as u16 + 1)), (src, c.sport), (vip(c.svc), 80), flags)
}

/// Writes a 60-byte TCP frame into `slot`: Ethernet (src, dst MAC), IPv4 with its checksum,
/// TCP header (its checksum is not verified by the switch and left 0).
fn write_tcp(slot: &mut [u8], macs: ([u8; 6], [u8; 6]), from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), flags: u8) -> usize {
    let f = &mut slot[..60];
    f.fill(0);
    f[0..6].copy_from_slice(&macs.1);
    f[6..12].copy_from_slice(&macs.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&from.0.octets());
    f[30..34].copy_from_slice(&to.0.octets());
    let s = checksum::internet_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&s.to_be_bytes());
    f[34..36].copy_from_slice(&from.1.to_be_bytes());
    f[36..38].copy_from_slice(&to.1.to_be_bytes());
    f[38..42].copy_from_slice(&1u32.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = flags;
    f[48..50].copy_from_slice(&65535u16.to_be_bytes());
    60
}

struct Bench {
    tables: Tables,
    ct: ConnTable,
    drops: DropCounters,
    flows: switch::flowlog::FlowRing,
    policy: switch::counters::PolicyCounters,
    buf: Vec<u8>,
    lens: Vec<usize>,
    ingress: Vec<u16>,
}

/// Processes a batch of new connections.
#[inline(never)]
fn timed_batch_new(b: &mut Bench, n: usize) -> u64 {
    run_batch(b, n)
}

/// Processes a batch of established-flow packets; the function callgrind counts.
#[inline(never)]
fn timed_batch_established(b: &mut Bench, n: usize) -> u64 {
    run_batch(b, n)
}

#[inline(always)]
fn run_batch(b: &mut Bench, n: usize) -> u64 {
    let ctx = Ctx { tables: &b.tables, ct: &b.ct, now: b.ct.now_ms(), drops: &b.drops, flows: &b.flows, policy_counters: &b.policy };
    let mut forwarded = 0;
    // In bursts of 64, as a worker receives them: warm the table, then process.
    for start in (0..n).step_by(warm::MAX) {
        let end = (start + warm::MAX).min(n);
        let buf = &b.buf;
        let hints = warm::burst(&b.ct, end - start, |i| warm::quick_key(&buf[(start + i) * SLOT..(start + i + 1) * SLOT]));
        for i in start..end {
            let frame = &mut b.buf[i * SLOT..(i + 1) * SLOT];
            if let Verdict::Forward { .. } = process_hinted(frame, b.lens[i], b.ingress[i], &ctx, hints.get(i - start)) {
                forwarded += 1;
            }
        }
    }
    forwarded
}

fn fill(b: &mut Bench, conns: &[Conn], flags: u8) {
    for (i, c) in conns.iter().enumerate() {
        b.lens[i] = write_frame(&mut b.buf[i * SLOT..(i + 1) * SLOT], *c, flags);
        b.ingress[i] = c.pod as u16 + 1;
    }
}

struct Figures {
    new_pps: f64,
    est_pps: f64,
    est_forwarded: u64,
    est_packets: u64,
    new_forwarded: u64,
    bytes_per_entry: f64,
    live: usize,
    setup: Duration,
}

fn measure(a: &PipelineArgs, est_packets: u64, quiet: bool) -> anyhow::Result<Figures> {
    let t0 = Instant::now();
    let tables = build_tables(a);
    let ct = ConnTable::new(a.connections + a.connections / 8, KeyHasher::new(0x5eed));
    let mut b = Bench {
        tables,
        ct,
        drops: DropCounters::default(),
        flows: switch::flowlog::FlowRing::new(8192),
        policy: Default::default(),
        buf: vec![0; BATCH * SLOT], lens: vec![0; BATCH], ingress: vec![0; BATCH] };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let conns: Vec<Conn> = (0..a.connections)
        .map(|c| Conn { pod: c % PODS, sport: 1024 + ((c / PODS) % 64000) as u16, svc: (rng.next() % a.services as u64) as u32 })
        .collect();
    let setup = t0.elapsed();
    if !quiet {
        eprintln!("pipeline: tables built ({} Services x {} endpoints) in {:.1} s; opening {} connections", a.services, a.endpoints, setup.as_secs_f64(), a.connections);
    }
    // New connections.
    let mut new_time = Duration::ZERO;
    let mut new_forwarded = 0;
    for chunk in conns.chunks(BATCH) {
        fill(&mut b, chunk, 0x02);
        let t = Instant::now();
        new_forwarded += timed_batch_new(&mut b, chunk.len());
        new_time += t.elapsed();
    }
    // Complete every handshake (untimed): the backend's SYN-ACK arrives from the uplink, the
    // client's ACK follows; the connections are then ESTABLISHED, as real ones are.
    for chunk in conns.chunks(BATCH) {
        for (i, c) in chunk.iter().enumerate() {
            let orig = switch::conntrack::FlowKey::new(pod_ip(c.pod), vip(c.svc), c.sport, 80, 6);
            let hit = b.ct.lookup(&orig).expect("connection opened above");
            let r = hit.snap.reply;
            b.lens[i] = write_tcp(
                &mut b.buf[i * SLOT..(i + 1) * SLOT],
                ([2, 0, 0, 0, 0, 1], port_mac(UPLINK)),
                (r.src_ip(), r.sport),
                (r.dst_ip(), r.dport),
                0x12,
            );
            b.ingress[i] = UPLINK;
        }
        run_batch(&mut b, chunk.len());
        fill(&mut b, chunk, 0x10);
        run_batch(&mut b, chunk.len());
    }
    let live = b.ct.live();
    if !quiet {
        eprintln!("pipeline: {live} connections tracked; timing {est_packets} established packets");
    }
    // Established flows, uniformly at random.
    let mut est_time = Duration::ZERO;
    let mut est_forwarded = 0;
    let mut done = 0u64;
    let mut pick = vec![Conn { pod: 0, sport: 0, svc: 0 }; BATCH];
    while done < est_packets {
        let n = (est_packets - done).min(BATCH as u64) as usize;
        for p in pick.iter_mut().take(n) {
            *p = conns[(rng.next() % conns.len() as u64) as usize];
        }
        fill(&mut b, &pick[..n], 0x10);
        let t = Instant::now();
        est_forwarded += timed_batch_established(&mut b, n);
        est_time += t.elapsed();
        done += n as u64;
    }
    Ok(Figures {
        new_pps: conns.len() as f64 / new_time.as_secs_f64(),
        est_pps: est_packets as f64 / est_time.as_secs_f64(),
        est_forwarded,
        est_packets,
        new_forwarded,
        bytes_per_entry: b.ct.bytes_per_entry(),
        live,
        setup,
    })
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
        let total = text
            .lines()
            .find_map(|l| l.strip_prefix("totals: ").or_else(|| l.strip_prefix("summary: ")))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .context("no totals in the callgrind output")?;
        Ok(total)
    };
    eprintln!("pipeline: counting instructions under callgrind ({} packets; slow)", a.callgrind_packets);
    Ok(run(a.callgrind_packets)? as f64 / a.callgrind_packets as f64)
}

pub fn main(a: PipelineArgs) -> anyhow::Result<i32> {
    if a.instr_run {
        let f = measure(&a, a.packets, true)?;
        println!("{}", f.est_forwarded);
        return Ok(0);
    }
    if !core_affinity::set_for_current(core_affinity::CoreId { id: a.core }) {
        eprintln!("pipeline: could not pin to core {} (running unpinned)", a.core);
    }
    let f = measure(&a, a.packets, false)?;
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
        "instructions_per_packet": ipp.map(|v| v.round()),
        "conntrack_bytes_per_entry": (f.bytes_per_entry * 10.0).round() / 10.0,
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
        println!("  connection table: {:.1} bytes per entry", f.bytes_per_entry);
    }
    Ok(0)
}
