//! The micro-benchmark cases: each piece of the per-packet path, on a burst of prepared inputs.
//! Shared by the criterion benchmarks (`switch/benches/micro.rs`, wall time) and
//! `podswitch-perf micro` (instructions under callgrind), so both measure the same code.
//!
//! Contract of a [`MicroCase`]:
//! - [`new_case`] builds the case's world (tables, connection table, inputs); that is setup,
//!   never measured.
//! - [`MicroCase::prepare`] readies the next burst of [`BURST`] inputs (fresh random inputs,
//!   frames rewritten by the previous burst restored, connections it created removed); never
//!   measured either.
//! - [`MicroCase::run`] does the measured work on the first `n <= BURST` prepared inputs and
//!   returns how many came out as the case expects (a hit, a pick, an allowed verdict, a
//!   forwarded frame). The drivers check that it is `n`: a case whose inputs miss measures
//!   another path, and the drivers stop with an error instead of reporting it.
//! - [`measured_burst`] is the one function both drivers call to run a burst: callgrind counts
//!   instructions inside it only (`--toggle-collect`), criterion times around it.
use std::hint::black_box;

use crate::conntrack::{flags, CtState, EntryInit, FlowKey};
use crate::pipeline::{policy, Ctx};
use crate::tables::Tables;
use crate::wire::checksum;
use crate::wire::tcp_flags::{ACK, SYN};
use crate::wire::{parse_frame, FrameKind};

use super::{build_tables, endpoint_ip, pod_conns, pod_ip, policy_tables, service_conns, vip, Conn, Dst, Frames, Rng, Scale, World, SERVICE_PORT, TARGET_PORT};

/// Inputs per burst: a worker's burst ([`crate::pipeline::warm::MAX`]).
pub const BURST: usize = crate::pipeline::warm::MAX;

/// One micro-benchmark (see the module contract).
pub trait MicroCase {
    /// Readies the next burst (not measured).
    fn prepare(&mut self);
    /// The measured work on the first `n <= BURST` inputs; how many came out as expected.
    fn run(&mut self, n: usize) -> usize;
}

/// The cases: (name, what one packet's measured work is).
pub const CASES: &[(&str, &str)] = &[
    ("parse_verify", "parse_frame of a 60-byte TCP/IPv4 frame + IPv4 header checksum verification"),
    ("lpm_route", "route lookup (LPM: 1,000 pod /32 routes + the endpoints' /9), half pods, half endpoints"),
    ("service_pick", "Service frontend lookup (10,000 frontends) + Maglev backend pick, flow hash given"),
    ("conntrack_hit", "connection table lookup that hits, random keys over the whole table"),
    ("conntrack_insert", "connection table insert of a new Service connection into the populated table"),
    ("policy_judge", "NetworkPolicy verdict of a new connection (identity lookups, rule scan, flow-log record)"),
    ("process_pod_to_pod", "whole pipeline (warm + process), established pod-to-pod TCP, random connections"),
    ("process_service_established", "whole pipeline (warm + process), established Service TCP flow (DNAT), random connections"),
    ("process_service_new", "whole pipeline (warm + process), TCP SYN to a Service: Maglev pick, insert, DNAT, route (no policy)"),
    ("process_udp_one_way", "whole pipeline (warm + process), pod-to-pod UDP never answered (the forward benchmark's traffic): the fast path, every packet"),
    ("gso_segment", "software GSO, per segment written: a 46 KB TCP/IPv4 super-frame (timestamps) cut into 32 segments of 1,448 bytes, each copied with its headers and its TCP checksum computed in full"),
];

/// Runs one burst of `case`: the function callgrind counts (see the module contract).
#[inline(never)]
pub fn measured_burst(case: &mut dyn MicroCase, n: usize) -> usize {
    case.run(n)
}

/// The case named `name` at `scale` (setup included; large scales take seconds), or None for
/// an unknown name.
pub fn new_case(name: &str, scale: &Scale) -> Option<Box<dyn MicroCase>> {
    let s = *scale;
    Some(match name {
        "parse_verify" => Box::new(ParseVerify::new(s)),
        "lpm_route" => Box::new(LpmRoute::new(s)),
        "service_pick" => Box::new(ServicePick::new(s)),
        "conntrack_hit" => Box::new(ConntrackHit::new(s)),
        "conntrack_insert" => Box::new(ConntrackInsert::new(s)),
        "policy_judge" => Box::new(PolicyJudge::new(s)),
        "process_pod_to_pod" => Box::new(ProcessEstablished::new(s, false)),
        "process_service_established" => Box::new(ProcessEstablished::new(s, true)),
        "process_service_new" => Box::new(ProcessServiceNew::new(s)),
        "process_udp_one_way" => Box::new(ProcessUdpOneWay::new(s)),
        "gso_segment" => Box::new(GsoSegment::new()),
        _ => return None,
    })
}

/// Connection table capacity for `connections` live ones (the pipeline benchmark's headroom).
fn capacity_for(connections: u32) -> u32 {
    connections + connections / 8 + 2 * BURST as u32
}

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// A world with `scale.connections` established connections of `conns`, opened through the
/// pipeline.
fn world_with(scale: Scale, conns: &[Conn]) -> World {
    let w = World::new(scale, capacity_for(conns.len() as u32));
    w.open(conns, &mut Frames::new(8192));
    w
}

struct ParseVerify {
    frames: Frames,
}

impl ParseVerify {
    fn new(scale: Scale) -> Self {
        let mut rng = Rng::with_seed(SEED);
        let conns = service_conns(&scale, BURST as u32, &mut rng);
        let mut frames = Frames::new(BURST);
        frames.fill(&conns, ACK);
        Self { frames }
    }
}

impl MicroCase for ParseVerify {
    fn prepare(&mut self) {} // parsing does not change the frames

    fn run(&mut self, n: usize) -> usize {
        let mut ok = 0;
        for i in 0..n {
            let f = self.frames.frame(i);
            if let Ok(p) = parse_frame(black_box(f)) {
                // The pipeline's verification (forward.rs) of an option-less header.
                let h: &[u8; 20] = f[14..34].try_into().expect("parsed IPv4 frames hold 20 bytes of header");
                ok += (p.kind == FrameKind::Ipv4 && checksum::ipv4_header_checksum(h) == 0) as usize;
            }
        }
        ok
    }
}

struct LpmRoute {
    tables: Tables,
    rng: Rng,
    scale: Scale,
    dsts: [std::net::Ipv4Addr; BURST],
}

impl LpmRoute {
    fn new(scale: Scale) -> Self {
        Self { tables: build_tables(&scale), rng: Rng::with_seed(SEED), scale, dsts: [std::net::Ipv4Addr::UNSPECIFIED; BURST] }
    }
}

impl MicroCase for LpmRoute {
    fn prepare(&mut self) {
        let s = self.scale;
        for (i, d) in self.dsts.iter_mut().enumerate() {
            *d = if i % 2 == 0 {
                pod_ip(self.rng.u64(..s.pods as u64) as u32)
            } else {
                endpoint_ip(self.rng.u64(..s.services as u64) as u32, self.rng.u64(..s.endpoints as u64) as u32, s.endpoints)
            };
        }
    }

    fn run(&mut self, n: usize) -> usize {
        let mut hits = 0;
        for d in &self.dsts[..n] {
            if let Some(hop) = self.tables.route(black_box(*d)) {
                hits += 1;
                black_box(hop.port);
            }
        }
        hits
    }
}

struct ServicePick {
    world: World,
    rng: Rng,
    /// (ClusterIP, flow hash) per input.
    inputs: [(std::net::Ipv4Addr, u64); BURST],
}

impl ServicePick {
    fn new(scale: Scale) -> Self {
        Self { world: World::new(scale, 1), rng: Rng::with_seed(SEED), inputs: [(std::net::Ipv4Addr::UNSPECIFIED, 0); BURST] }
    }
}

impl MicroCase for ServicePick {
    fn prepare(&mut self) {
        let s = self.world.scale;
        for inp in &mut self.inputs {
            let c = Conn { pod: self.rng.u64(..s.pods as u64) as u32, sport: 1024 + self.rng.u64(..60000) as u16, dst: Dst::Service(self.rng.u64(..s.services as u64) as u32) };
            // The pipeline hashes the key once for the connection table and reuses the hash.
            *inp = (c.dst_addr().0, self.world.ct.hash(&c.key()));
        }
    }

    fn run(&mut self, n: usize) -> usize {
        let svc = &self.world.tables.services;
        let mut picked = 0;
        for &(ip, h) in &self.inputs[..n] {
            if let Some((_, f)) = svc.lookup(black_box(ip), SERVICE_PORT, 6) {
                if let Some(b) = f.internal.pick(h) {
                    picked += 1;
                    black_box(b.endpoint_id);
                }
            }
        }
        picked
    }
}

struct ConntrackHit {
    world: World,
    conns: Vec<Conn>,
    rng: Rng,
    keys: [FlowKey; BURST],
}

impl ConntrackHit {
    fn new(scale: Scale) -> Self {
        let mut rng = Rng::with_seed(SEED);
        let conns = service_conns(&scale, scale.connections, &mut rng);
        let world = world_with(scale, &conns);
        let k0 = conns[0].key();
        Self { world, conns, rng, keys: [k0; BURST] }
    }
}

impl MicroCase for ConntrackHit {
    fn prepare(&mut self) {
        for k in &mut self.keys {
            *k = self.conns[self.rng.u64(..self.conns.len() as u64) as usize].key();
        }
    }

    fn run(&mut self, n: usize) -> usize {
        let ct = &self.world.ct;
        let mut hits = 0;
        for k in &self.keys[..n] {
            if let Some(hit) = ct.lookup(black_box(k)) {
                hits += 1;
                black_box(hit.idx);
            }
        }
        hits
    }
}

struct ConntrackInsert {
    world: World,
    rng: Rng,
    inits: [EntryInit; BURST],
    /// Entries the last burst inserted (removed by the next prepare).
    inserted: [Option<u32>; BURST],
}

impl ConntrackInsert {
    fn new(scale: Scale) -> Self {
        let mut rng = Rng::with_seed(SEED);
        let conns = service_conns(&scale, scale.connections, &mut rng);
        let world = world_with(scale, &conns);
        let k = conns[0].key();
        let init = EntryInit { orig: k, reply: k.reverse(), state: CtState::TcpSynSent, flags: 0, frontend: 0, endpoint: u32::MAX, policy_epoch: 0, policy_rule: 0, verdict: 0, timeout_ms: 0 };
        Self { world, rng, inits: [init; BURST], inserted: [None; BURST] }
    }
}

impl MicroCase for ConntrackInsert {
    fn prepare(&mut self) {
        for slot in &mut self.inserted {
            if let Some(idx) = slot.take() {
                self.world.ct.remove(idx);
            }
        }
        let s = self.world.scale;
        for init in &mut self.inits {
            // A new connection to a Service, as the pipeline records it: DNAT to a backend.
            // Source ports from 30000 up never clash with the table's connections (1024 +).
            let svc = self.rng.u64(..s.services as u64) as u32;
            let c = Conn { pod: self.rng.u64(..s.pods as u64) as u32, sport: 30000 + self.rng.u64(..30000) as u16, dst: Dst::Service(svc) };
            let orig = c.key();
            let k = self.rng.u64(..s.endpoints as u64) as u32;
            let reply = FlowKey::new(endpoint_ip(svc, k, s.endpoints), pod_ip(c.pod), TARGET_PORT, c.sport, 6);
            *init = EntryInit { orig, reply, state: CtState::TcpSynSent, flags: flags::DNAT, frontend: svc + 1, endpoint: svc * s.endpoints + k, policy_epoch: 0, policy_rule: u32::MAX, verdict: policy::VERDICT_ALLOW, timeout_ms: 0 };
        }
    }

    fn run(&mut self, n: usize) -> usize {
        let ct = &self.world.ct;
        let now = ct.now_ms();
        let mut ok = 0;
        for (init, slot) in self.inits[..n].iter().zip(self.inserted.iter_mut()) {
            if let Ok(idx) = ct.insert(black_box(init), now) {
                *slot = Some(idx);
                ok += 1;
            }
        }
        ok
    }
}

struct PolicyJudge {
    world: World,
    rng: Rng,
    /// Flow-log records taken out between bursts, as the control side does.
    drained: Vec<crate::flowlog::FlowRecord>,
    /// (source pod, source port, original destination and port, translated destination).
    inputs: [(std::net::Ipv4Addr, u16, u32, u16, u32); BURST],
}

impl PolicyJudge {
    fn new(scale: Scale) -> Self {
        let mut tables = build_tables(&scale);
        tables.policy = policy_tables(&scale);
        let world = World::with_tables(scale, tables, 1);
        Self { world, rng: Rng::with_seed(SEED), drained: Vec::with_capacity(8192), inputs: [(std::net::Ipv4Addr::UNSPECIFIED, 0, 0, 0, 0); BURST] }
    }
}

impl MicroCase for PolicyJudge {
    fn prepare(&mut self) {
        // The flow log is drained by the control side; a full ring would cost each record an
        // eviction, and the figure would depend on how many bursts ran.
        self.drained.clear();
        self.world.flows.drain(&mut self.drained);
        let s = self.world.scale;
        for (i, inp) in self.inputs.iter_mut().enumerate() {
            let pod = self.rng.u64(..s.pods as u64) as u32;
            let sport = 30000 + self.rng.u64(..30000) as u16;
            // Half to a Service (judged on its backend: the source's egress), half to another
            // local pod (the source's egress and the destination's ingress).
            *inp = if i % 2 == 0 {
                let svc = self.rng.u64(..s.services as u64) as u32;
                let backend = endpoint_ip(svc, self.rng.u64(..s.endpoints as u64) as u32, s.endpoints);
                (pod_ip(pod), sport, u32::from(vip(svc)), SERVICE_PORT, u32::from(backend))
            } else {
                let other = (pod + 1 + self.rng.u64(..s.pods as u64 - 1) as u32) % s.pods;
                let dst = u32::from(pod_ip(other));
                (pod_ip(pod), sport, dst, TARGET_PORT, dst)
            };
        }
    }

    fn run(&mut self, n: usize) -> usize {
        let ctx: Ctx = self.world.ctx();
        let mut allowed = 0;
        for &(src, sport, orig, orig_port, dst) in &self.inputs[..n] {
            let d = policy::judge_new(&ctx, black_box(src), sport, orig, orig_port, dst, TARGET_PORT, 6);
            allowed += d.allowed() as usize;
        }
        allowed
    }
}

/// Established flows through the whole pipeline: Service flows (DNAT) or pod-to-pod.
struct ProcessEstablished {
    world: World,
    conns: Vec<Conn>,
    rng: Rng,
    pick: Vec<Conn>,
    frames: Frames,
}

impl ProcessEstablished {
    fn new(scale: Scale, services: bool) -> Self {
        let mut rng = Rng::with_seed(SEED);
        let conns = if services { service_conns(&scale, scale.connections, &mut rng) } else { pod_conns(&scale, scale.connections) };
        let world = world_with(scale, &conns);
        Self { world, pick: vec![conns[0]; BURST], conns, rng, frames: Frames::new(BURST) }
    }
}

impl MicroCase for ProcessEstablished {
    fn prepare(&mut self) {
        // Fresh random connections each burst (no small set stays warm), frames rewritten.
        for p in &mut self.pick {
            *p = self.conns[self.rng.u64(..self.conns.len() as u64) as usize];
        }
        self.frames.fill(&self.pick, ACK);
    }

    fn run(&mut self, n: usize) -> usize {
        self.world.run_frames(&mut self.frames, n)
    }
}

/// New Service connections through the whole pipeline (no NetworkPolicy in force, as in the
/// pipeline benchmark); each burst's connections are removed again before the next.
struct ProcessServiceNew {
    world: World,
    rng: Rng,
    fresh: Vec<Conn>,
    frames: Frames,
}

impl ProcessServiceNew {
    fn new(scale: Scale) -> Self {
        let mut rng = Rng::with_seed(SEED);
        let conns = service_conns(&scale, scale.connections, &mut rng);
        let world = world_with(scale, &conns);
        Self { world, fresh: Vec::with_capacity(BURST), rng, frames: Frames::new(BURST) }
    }
}

impl MicroCase for ProcessServiceNew {
    fn prepare(&mut self) {
        for c in self.fresh.drain(..) {
            if let Some(hit) = self.world.ct.lookup(&c.key()) {
                self.world.ct.remove(hit.idx);
            }
        }
        let s = self.world.scale;
        for _ in 0..BURST {
            // Source ports from 30000 up never clash with the table's connections (1024 +).
            let c = Conn { pod: self.rng.u64(..s.pods as u64) as u32, sport: 30000 + self.rng.u64(..30000) as u16, dst: Dst::Service(self.rng.u64(..s.services as u64) as u32) };
            if !self.fresh.contains(&c) {
                self.fresh.push(c);
            }
        }
        // A duplicate (rare) is replaced by repeating the first: only BURST distinct ones count.
        while self.fresh.len() < BURST {
            let c = Conn { sport: 29999 - self.fresh.len() as u16, ..self.fresh[0] };
            self.fresh.push(c);
        }
        self.frames.fill(&self.fresh, SYN);
    }

    fn run(&mut self, n: usize) -> usize {
        self.world.run_frames(&mut self.frames, n)
    }
}

/// One-way pod-to-pod UDP flows (what `podswitch-perf forward` sends): each connection's
/// first packet recorded it, nothing ever answered, so it stays unreplied and every packet
/// takes the full path (the fast path takes only answered UDP).
struct ProcessUdpOneWay {
    world: World,
    conns: Vec<Conn>,
    rng: Rng,
    pick: Vec<Conn>,
    frames: Frames,
}

impl ProcessUdpOneWay {
    fn new(scale: Scale) -> Self {
        let conns = pod_conns(&scale, scale.connections);
        let world = World::new(scale, capacity_for(conns.len() as u32));
        let mut frames = Frames::new(8192);
        for chunk in conns.chunks(frames.capacity()) {
            frames.fill_udp(chunk);
            let fwd = world.run_frames(&mut frames, chunk.len());
            assert_eq!(fwd, chunk.len(), "first UDP packets forwarded (connection table full or tables wrong?)");
        }
        Self { world, pick: vec![conns[0]; BURST], conns, rng: Rng::with_seed(SEED), frames: Frames::new(BURST) }
    }
}

impl MicroCase for ProcessUdpOneWay {
    fn prepare(&mut self) {
        for p in &mut self.pick {
            *p = self.conns[self.rng.u64(..self.conns.len() as u64) as usize];
        }
        self.frames.fill_udp(&self.pick);
    }

    fn run(&mut self, n: usize) -> usize {
        self.world.run_frames(&mut self.frames, n)
    }
}

/// Software GSO ([`crate::offload::Segmenter`]): one input is one segment written, so a burst
/// of [`BURST`] cuts two super-frames of [`GsoSegment::SEGMENTS`] segments each.
struct GsoSegment {
    frame: Vec<u8>,
    out: Vec<[u8; 2048]>,
}

impl GsoSegment {
    const MSS: usize = 1448;
    const SEGMENTS: usize = 32;
    /// Ethernet, IPv4, TCP with the timestamps option (what a Linux sender puts in each).
    const HEADERS: usize = 14 + 20 + 32;

    fn new() -> Self {
        let payload = Self::MSS * Self::SEGMENTS;
        let mut f = vec![0u8; Self::HEADERS + payload];
        f[12..14].copy_from_slice(&crate::wire::ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((Self::HEADERS - 14 + payload) as u16).to_be_bytes());
        f[20] = 0x40; // DF
        f[22] = 64;
        f[23] = crate::wire::IPPROTO_TCP;
        f[26..30].copy_from_slice(&[10, 244, 0, 3]);
        f[30..34].copy_from_slice(&[10, 244, 1, 9]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&5201u16.to_be_bytes());
        f[46] = 8 << 4; // data offset: 32 bytes
        f[47] = crate::wire::tcp_flags::ACK | crate::wire::tcp_flags::PSH;
        f[54..66].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
        Rng::with_seed(SEED).fill(&mut f[Self::HEADERS..]);
        Self { frame: f, out: vec![[0u8; 2048]; BURST] }
    }
}

impl MicroCase for GsoSegment {
    fn prepare(&mut self) {} // the super-frame is only read

    fn run(&mut self, n: usize) -> usize {
        let gso = crate::offload::vnet_hdr::Gso { kind: crate::offload::GsoKind::TcpV4, size: Self::MSS as u16, ecn: false };
        let mut ok = 0;
        for (first, outs) in (0..n).step_by(Self::SEGMENTS).zip(self.out.chunks_mut(Self::SEGMENTS)) {
            let Ok(seg) = crate::offload::Segmenter::new(black_box(&self.frame), gso) else { continue };
            for (i, out) in outs.iter_mut().take(n - first).enumerate() {
                ok += (seg.write(i, out) == Ok(Self::HEADERS + Self::MSS)) as usize;
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case, at a small scale, does what it says on several bursts (the drivers rely on
    /// `run` returning `n`).
    #[test]
    fn every_case_runs_as_expected_at_small_scale() {
        let scale = Scale { services: 50, endpoints: 4, pods: 20, connections: 2000 };
        for (name, _) in CASES {
            let mut case = new_case(name, &scale).expect("listed cases exist");
            for round in 0..4 {
                case.prepare();
                let n = if round == 3 { BURST / 2 } else { BURST };
                assert_eq!(measured_burst(case.as_mut(), n), n, "case {name}, round {round}");
            }
        }
        assert!(new_case("no_such_case", &scale).is_none());
    }

    /// The one-way UDP case measures the fast path: every packet is a known connection's in its
    /// original direction (unreplied UDP, which the fast path takes), none opens a new one and
    /// none goes the full way (which would count it `conntrack.known`).
    #[test]
    fn one_way_udp_takes_the_fast_path_for_every_packet() {
        let scale = Scale { services: 50, endpoints: 4, pods: 20, connections: 2000 };
        let mut case = ProcessUdpOneWay::new(scale);
        let created = case.world.stages.conntrack.created.get();
        assert_eq!(created, 2000);
        case.prepare();
        assert_eq!(measured_burst(&mut case, BURST), BURST);
        assert_eq!(case.world.stages.conntrack.known.get(), 0);
        assert_eq!(case.world.stages.conntrack.created.get(), created);
    }

    #[test]
    fn new_service_connections_are_removed_between_bursts() {
        let scale = Scale { services: 50, endpoints: 4, pods: 20, connections: 2000 };
        let mut case = ProcessServiceNew::new(scale);
        let live = case.world.ct.live();
        for _ in 0..3 {
            case.prepare();
            assert_eq!(case.world.ct.live(), live, "the previous burst's connections are gone");
            assert_eq!(case.run(BURST), BURST);
            assert_eq!(case.world.ct.live(), live + BURST);
        }
    }
}
