//! `podswitch-perf policy`: the cost of NetworkPolicy at scale.
//!
//! What it measures, on one pinned core:
//! - compile: 1,000 NetworkPolicies over 10,000 pods in 100 namespaces (1,000 of the pods on
//!   this node), from parsed objects to the tables the dataplane reads: wall time, the heap
//!   allocated while compiling (peak above the starting point) and what the result keeps;
//! - new connections per second through `switch::pipeline::process` (the workers' code) with
//!   that policy set in force: TCP SYNs from random local pods to random pods of the cluster,
//!   each judged (egress of the source, ingress of the destination) and tracked.
//!
//! Output: a report, or with `--json` one JSON object as the last line:
//! `{"compile_ms":…,"compile_mib":…,"new_conn_mpps_per_core":…}` and more keys after.
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use podswitch_control::manifests::{add_documents, Manifests};
use podswitch_control::model::NodeInfo;
use podswitch_control::policy::{compile_policy, PolicyInputs, PolicyState};
use switch::conntrack::{ConnTable, KeyHasher};
use switch::counters::{DropCounters, PolicyCounters};
use switch::flowlog::FlowRing;
use switch::pipeline::{process, warm, Ctx, Verdict};
use switch::tables::{NextHop, PortConfig, PortKind, SourceGuard, Tables};
use switch::wire::checksum;

/// Counts heap bytes in use once [`count_allocations`] was called (by this benchmark only), so
/// it can say what compiling cost; until then it is the system allocator plus one load, so that
/// the other benchmarks time allocations as `podswitch` makes them (the counting's atomic
/// read-modify-writes were ~8% of the sync benchmark's full sync).
pub struct CountingAlloc;
static COUNTING: AtomicBool = AtomicBool::new(false);
/// Bytes allocated minus bytes freed since counting started (frees of blocks allocated before
/// can take it below zero).
static IN_USE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn count_allocations() {
    COUNTING.store(true, Relaxed);
}

// The one `unsafe` outside the AF_XDP layer: `GlobalAlloc` is an unsafe trait, so a counting
// allocator cannot be written without it (crates that offer one, e.g. `cap`, count always,
// which costs the other benchmarks; none keeps a resettable peak). Benchmark code only.
// SAFETY: both methods forward the caller's pointer and layout to `System` unchanged, which
// upholds GlobalAlloc's contract; the counting touches only atomics.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            let now = IN_USE.fetch_add(l.size() as isize, Relaxed) + l.size() as isize;
            PEAK.fetch_max(now, Relaxed);
        }
        // SAFETY: forwarding the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if COUNTING.load(Relaxed) {
            IN_USE.fetch_sub(l.size() as isize, Relaxed);
        }
        // SAFETY: `p` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[arg(long, default_value_t = 1000)]
    policies: u32,
    #[arg(long, default_value_t = 10_000)]
    pods: u32,
    /// Of the pods, how many run on this node.
    #[arg(long, default_value_t = 1000)]
    local_pods: u32,
    #[arg(long, default_value_t = 100)]
    namespaces: u32,
    /// New connections to time.
    #[arg(long, default_value_t = 2_000_000)]
    connections: u32,
    #[arg(long, default_value_t = 1)]
    core: usize,
    #[arg(long)]
    json: bool,
}

const TIERS: [&str; 3] = ["web", "api", "db"];

fn pod_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 2)) + i)
}

fn objects(a: &PolicyArgs) -> String {
    let mut y = String::new();
    for n in 0..a.namespaces {
        y += &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: {{team: t{}, env: {}}}}}\n---\n", n % 10, if n % 2 == 0 { "prod" } else { "dev" });
    }
    for i in 0..a.pods {
        let node = if i < a.local_pods { "node-1".to_string() } else { format!("node-{}", 2 + i % 9) };
        y += &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: ns{}, labels: {{app: app{}, tier: {}, shard: s{}}}}}\n\
             spec: {{nodeName: {node}, containers: [{{name: c, image: i, ports: [{{name: http, containerPort: {}}}, {{name: metrics, containerPort: 9100}}]}}]}}\n\
             status: {{podIP: {}}}\n---\n",
            i % a.namespaces,
            i % 50,
            TIERS[(i % 3) as usize],
            i % 7,
            8080 + i % 3,
            pod_ip(i)
        );
    }
    for p in 0..a.policies {
        let ns = p % a.namespaces;
        let kind = p % 5;
        let spec = match kind {
            0 => format!("podSelector: {{matchLabels: {{tier: {}}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: t{}}}}}\n      podSelector: {{matchLabels: {{tier: web}}}}\n    ports: [{{port: http}}]\n", TIERS[(p % 3) as usize], p % 10),
            1 => format!("podSelector: {{matchExpressions: [{{key: app, operator: In, values: [app{}, app{}]}}]}}\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{shard: s{}}}}}\n    ports: [{{protocol: TCP, port: 8080, endPort: 8082}}]\n", p % 50, (p + 1) % 50, p % 7),
            2 => "podSelector: {matchLabels: {tier: db}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {tier: api}}\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.244.0.0/16, except: [10.244.200.0/24]}\n".to_string(),
            3 => format!("podSelector: {{matchExpressions: [{{key: shard, operator: NotIn, values: [s{}]}}]}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchExpressions: [{{key: env, operator: Exists}}]}}\n    ports: [{{port: metrics}}, {{port: 8081}}]\n", p % 7),
            _ => format!("podSelector: {{matchLabels: {{app: app{}}}}}\n  ingress:\n  - {{}}\n", p % 50),
        };
        y += &format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: pol{p}, namespace: ns{ns}}}\nspec:\n  {spec}---\n");
    }
    y
}

fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    podswitch_control::naming::pod_mac(ip)
}

fn port_mac(id: u16) -> [u8; 6] {
    [0xee, 0, 0, 0, (id >> 8) as u8, id as u8]
}

fn syn(slot: &mut [u8], src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, in_port: u16) -> usize {
    let f = &mut slot[..60];
    f.fill(0);
    f[0..6].copy_from_slice(&port_mac(in_port));
    f[6..12].copy_from_slice(&mac_of(src));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    let s = checksum::internet_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&s.to_be_bytes());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x02;
    60
}

#[inline(never)]
fn timed_new(tables: &Tables, ct: &ConnTable, frames: &mut [u8], lens: &[usize], ports: &[u16], counters: (&DropCounters, &FlowRing, &PolicyCounters)) -> (u64, u64) {
    let stages = switch::pipeline::StageCounters::default();
    let ctx = Ctx { tables, ct, now: ct.now_ms(), drops: counters.0, flows: counters.1, policy_counters: counters.2, stages: &stages };
    let (mut fwd, mut denied) = (0, 0);
    let n = lens.len();
    for start in (0..n).step_by(warm::MAX) {
        let end = (start + warm::MAX).min(n);
        for i in start..end {
            match process(&mut frames[i * 128..(i + 1) * 128], lens[i], ports[i], &ctx) {
                Verdict::Forward { .. } => fwd += 1,
                Verdict::Drop(switch::drop_reason::DropReason::PolicyDenied) => denied += 1,
                Verdict::Drop(_) => {}
            }
        }
    }
    (fwd, denied)
}

pub fn main(a: PolicyArgs) -> anyhow::Result<i32> {
    count_allocations();
    if !core_affinity::set_for_current(core_affinity::CoreId { id: a.core }) {
        eprintln!("policy: could not pin to core {} (running unpinned)", a.core);
    }
    eprintln!("policy: generating {} namespaces, {} pods, {} policies", a.namespaces, a.pods, a.policies);
    let text = objects(&a);
    let mut m = Manifests::default();
    add_documents(&mut m, Path::new("bench.yaml"), &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (all_pods, _) = podswitch_control::services::all_pods(&m);
    let node = NodeInfo { name: "node-1".into(), pod_cidr: "10.244.0.0/16".parse()?, internal_ip: Ipv4Addr::new(172, 18, 0, 2) };
    // Compile (three times; the median is reported, the first also warms the allocator).
    let mut times = Vec::new();
    let (mut peak_mib, mut kept_mib) = (0.0, 0.0);
    let mut compiled = None;
    for _ in 0..3 {
        drop(compiled.take());
        let base = IN_USE.load(Relaxed);
        PEAK.store(base, Relaxed);
        let t = Instant::now();
        let mut state = PolicyState::default();
        let c = compile_policy(&PolicyInputs { manifests: &m, node: &node, all_pods: &all_pods }, &mut state);
        times.push(t.elapsed());
        peak_mib = (PEAK.load(Relaxed) - base) as f64 / (1 << 20) as f64;
        kept_mib = (IN_USE.load(Relaxed) - base).max(0) as f64 / (1 << 20) as f64;
        if !c.problems.is_empty() {
            anyhow::bail!("the generated policies do not compile cleanly: {:?}", &c.problems[..c.problems.len().min(3)]);
        }
        compiled = Some((c, state));
    }
    times.sort();
    let compile = times[1];
    let (c, _) = compiled.expect("compiled three times");
    let isolated = c.tables.pods.values().filter(|p| p.ingress_isolated || p.egress_isolated).count();
    eprintln!("policy: compiled in {:.1} ms; {} local pods with policy ({} isolated); timing {} new connections", compile.as_secs_f64() * 1e3, c.tables.pods.len(), isolated, a.connections);
    // Tables: local pods on ports, the rest of the cluster behind the uplink.
    let mut t = Tables::new(Ipv4Addr::new(169, 254, 1, 1));
    for i in 0..a.local_pods {
        let id = i as u16 + 1;
        let ip = pod_ip(i);
        t.set_port(id, Some(PortConfig { name: format!("p{i}"), kind: PortKind::Pod, mac: port_mac(id), source_guard: Some(SourceGuard { mac: mac_of(ip), ip }) }));
        t.routes.insert(u32::from(ip), 32, NextHop::direct(id, mac_of(ip)));
    }
    let uplink = a.local_pods as u16 + 1;
    t.set_port(uplink, Some(PortConfig { name: "uplink".into(), kind: PortKind::Uplink, mac: port_mac(uplink), source_guard: None }));
    t.routes.insert(0, 0, NextHop::direct(uplink, [2, 0, 0, 0, 0, 1]));
    t.policy = c.tables;
    let ct = ConnTable::new(a.connections + a.connections / 8, KeyHasher::new(7));
    let (drops, flows, pc) = (DropCounters::default(), FlowRing::new(8192), PolicyCounters::default());
    let mut rng = fastrand::Rng::with_seed(0x1234_5678_9abc_def1);
    let mut next = move || rng.u64(..);
    const BATCH: usize = 8192;
    let mut frames = vec![0u8; BATCH * 128];
    let (mut lens, mut ports) = (vec![0usize; BATCH], vec![0u16; BATCH]);
    let (mut elapsed, mut fwd, mut denied, mut done) = (Duration::ZERO, 0u64, 0u64, 0u32);
    while done < a.connections {
        let n = ((a.connections - done) as usize).min(BATCH);
        for i in 0..n {
            let src = (next() % a.local_pods as u64) as u32;
            let dst = (next() % a.pods as u64) as u32;
            let dport = [8080u16, 8081, 8082, 9100, 5432][(next() % 5) as usize];
            let sport = 1024 + ((done as usize + i) / a.local_pods as usize % 60000) as u16;
            lens[i] = syn(&mut frames[i * 128..(i + 1) * 128], pod_ip(src), sport, pod_ip(dst), dport, src as u16 + 1);
            ports[i] = src as u16 + 1;
        }
        let t0 = Instant::now();
        let (f, d) = timed_new(&t, &ct, &mut frames, &lens[..n], &ports[..n], (&drops, &flows, &pc));
        elapsed += t0.elapsed();
        fwd += f;
        denied += d;
        done += n as u32;
        let mut sink = Vec::new();
        flows.drain(&mut sink);
    }
    let judged = fwd + denied;
    if judged < a.connections as u64 * 9 / 10 {
        anyhow::bail!("the benchmark is wrong: only {judged} of {} SYNs were judged (forwarded {fwd}, denied {denied})", a.connections);
    }
    let mpps = a.connections as f64 / elapsed.as_secs_f64() / 1e6;
    let report = serde_json::json!({
        "compile_ms": (compile.as_secs_f64() * 1e4).round() / 10.0,
        "compile_mib": (peak_mib * 10.0).round() / 10.0,
        "new_conn_mpps_per_core": (mpps * 1000.0).round() / 1000.0,
        "tables_mib": (kept_mib * 10.0).round() / 10.0,
        "policies": a.policies,
        "pods": a.pods,
        "local_pods": a.local_pods,
        "namespaces": a.namespaces,
        "local_pods_with_policy": t.policy.pods.len(),
        "new_connections": a.connections,
        "allowed": fwd,
        "denied": denied,
        "core": a.core,
    });
    if a.json {
        println!("{report}");
    } else {
        println!("policy: {} policies over {} pods ({} on this node) in {} namespaces", a.policies, a.pods, a.local_pods, a.namespaces);
        println!("  compile: {:.1} ms (median of 3), {:.1} MiB allocated at peak, {:.1} MiB kept", compile.as_secs_f64() * 1e3, peak_mib, kept_mib);
        println!("  new connections with the policy set: {mpps:.2} Mpps per core ({fwd} allowed, {denied} denied)");
    }
    Ok(0)
}
