//! Fixtures shared by the benchmarks: a node's tables at scale, frames, and connections opened
//! through the pipeline. Built only with the `bench-fixtures` feature; nothing in the dataplane
//! uses it.
//!
//! Contract:
//! - Addressing (the same in every benchmark): local pods `pod_ip(i)` = 10.244.0.2 + i on port
//!   `i + 1`, MAC `0a:58:` + the IP; Service `s` is the ClusterIP `vip(s)` = 10.96.0.1 + s,
//!   TCP/80, with [`Scale::endpoints`] endpoints `endpoint_ip(s, k)` in 10.128.0.0/9 on
//!   TCP/8080, on other nodes, reached through the uplink (port [`Scale::uplink`], after the
//!   pods' ports).
//! - [`build_tables`] gives the routes (one /32 per pod, the /9 of the endpoints through the
//!   uplink), ports and Services of a [`Scale`]; [`policy_tables`] adds a NetworkPolicy set
//!   that isolates every local pod (see there).
//! - Frames are 60-byte TCP/IPv4 frames (UDP for one-way flows) with a valid IPv4 header checksum, written into slots of
//!   [`SLOT`] bytes of a [`Frames`] buffer, each with its ingress port, as a worker receives them.
//! - [`World::open`] opens connections the way real ones open: SYN, the answer's SYN-ACK, ACK,
//!   all through [`crate::pipeline::process`]; afterwards they are ESTABLISHED, with the
//!   translation the pipeline chose. It fails loudly (panics) if the pipeline does not forward
//!   every packet: a benchmark on half-opened connections would measure something else.
//! - Randomness is `fastrand` with a fixed seed ([`Rng`]): runs are repeatable.
pub mod micro;

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::conntrack::{ConnTable, FlowKey, KeyHasher};
use crate::counters::{DropCounters, PolicyCounters};
use crate::flowlog::FlowRing;
use crate::pipeline::{process_hinted, warm, Ctx, StageCounters, Verdict};
use crate::tables::maglev;
use crate::tables::policy::{IdSet, Peer, PodPolicy, PolicyTables, PortRange, Rule};
use crate::tables::services::{affinity_id_of, Backend, BackendSet, Frontend, FrontendKey, FrontendKind, OnEmpty, ServiceTables};
use crate::tables::{NextHop, PortConfig, PortId, PortKind, SourceGuard, Tables};
use crate::wire::checksum;
use crate::wire::tcp_flags::{ACK, SYN};

/// Bytes per frame slot in a [`Frames`] buffer (frames are 60 bytes).
pub const SLOT: usize = 128;
/// The pods' gateway.
pub const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The node's address (masquerade source).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
/// MAC of the router behind the uplink.
pub const UPLINK_PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// Port of every Service frontend.
pub const SERVICE_PORT: u16 = 80;
/// Port the endpoints and the pods serve on.
pub const TARGET_PORT: u16 = 8080;
/// Number of application identities the local pods are spread over ([`policy_tables`]).
pub const APPS: u32 = 100;

/// The size of the node and cluster a benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// Services (ClusterIP, TCP/80).
    pub services: u32,
    /// Endpoints per Service.
    pub endpoints: u32,
    /// Local pods (one port each).
    pub pods: u32,
    /// Connections the benchmarks that need a full connection table open before measuring.
    pub connections: u32,
}

impl Scale {
    /// The scale of `scripts/bench.sh pipeline`: 10,000 Services x 10 endpoints, 1,000 local
    /// pods, 1,000,000 connections.
    pub const PIPELINE: Scale = Scale { services: 10_000, endpoints: 10, pods: 1000, connections: 1_000_000 };

    /// The uplink's port: the one after the pods'.
    pub fn uplink(&self) -> PortId {
        self.pods as PortId + 1
    }
}

pub fn pod_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 2)) + i)
}

/// The port of local pod `i`.
pub fn pod_port(i: u32) -> PortId {
    i as PortId + 1
}

pub fn vip(s: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + s)
}

/// Endpoint `k` of Service `s`, with `per` endpoints per Service.
pub fn endpoint_ip(s: u32, k: u32, per: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + s * per + k)
}

/// A pod's MAC: `0a:58:` + its IPv4 address, as Kubernetes CNIs write it.
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// The switch's own MAC on port `id`.
pub fn port_mac(id: PortId) -> [u8; 6] {
    [0xee, 0, 0, 0, (id >> 8) as u8, id as u8]
}

/// Ports, routes and Services of `scale` (no NetworkPolicy: nothing is isolated).
pub fn build_tables(scale: &Scale) -> Tables {
    assert!((scale.pods as usize) < crate::tables::MAX_PORTS, "one port per pod and the uplink");
    let mut t = Tables::new(GW);
    for i in 0..scale.pods {
        let (id, ip) = (pod_port(i), pod_ip(i));
        t.set_port(id, Some(PortConfig { name: format!("bench/p{i}"), kind: PortKind::Pod, mac: port_mac(id), source_guard: Some(SourceGuard { mac: mac_of(ip), ip }) }));
        t.routes.insert(u32::from(ip), 32, NextHop::direct(id, mac_of(ip)));
    }
    // Endpoints live on other nodes, reached through the uplink.
    let up = scale.uplink();
    t.set_port(up, Some(PortConfig { name: "uplink".into(), kind: PortKind::Uplink, mac: port_mac(up), source_guard: None }));
    t.routes.insert(u32::from(Ipv4Addr::new(10, 128, 0, 0)), 9, NextHop::direct(up, UPLINK_PEER_MAC));
    let mut s = ServiceTables { service_cidrs: vec![(u32::from(Ipv4Addr::new(10, 96, 0, 0)), 12)], snat_ip: Some(NODE_IP), ..Default::default() };
    let per = scale.endpoints;
    s.extend((0..scale.services).map(|svc| {
        let backends: Vec<Backend> = (0..per)
            .map(|k| Backend { ip: endpoint_ip(svc, k, per), port: TARGET_PORT, endpoint_id: svc * per + k, local: false })
            .collect();
        let names: Vec<String> = backends.iter().map(|b| format!("{}:{}", b.ip, b.port)).collect();
        let set = BackendSet { maglev: maglev::build_table(&names), backends: backends.into(), on_empty: OnEmpty::Reject, masquerade: false };
        let name = format!("bench/svc{svc}:{SERVICE_PORT}");
        Frontend {
            affinity_id: affinity_id_of(&name),
            name,
            service_id: svc,
            service_port: SERVICE_PORT,
            kind: FrontendKind::ClusterIp,
            key: FrontendKey { ip: u32::from(vip(svc)), port: SERVICE_PORT, proto: 6 },
            external: BackendSet { masquerade: true, ..set.clone() },
            internal: set,
            affinity_timeout_s: None,
            source_ranges: vec![],
        }
    }));
    t.services = s;
    t
}

/// The identity of local pod `i`: pods are spread over [`APPS`] applications.
pub fn pod_identity(i: u32) -> u32 {
    i % APPS
}

/// The identity of the endpoints of Service `s` (remote pods of [`APPS`] other applications).
pub fn endpoint_identity(s: u32) -> u32 {
    APPS + s % APPS
}

/// A NetworkPolicy set over `scale`, as a namespace with default-deny and allow rules compiles
/// to: every pod of the cluster (local pods and endpoints) has an identity; every local pod is
/// isolated for ingress and egress, with
/// - egress rule 0: UDP/53 to an ipBlock (DNS; never matches the benchmark's TCP connections,
///   so every judgement scans past it), rule 1: TCP/8080 to the identities of all
///   applications (local and remote);
/// - ingress rule 0: TCP/8080 from the identities of the local applications.
///
/// Every TCP/8080 connection between pods of the benchmark is allowed (by rule 1 of the
/// source's egress, and for a local destination by rule 0 of its ingress).
pub fn policy_tables(scale: &Scale) -> PolicyTables {
    let mut p = PolicyTables { epoch: 1, ..Default::default() };
    for i in 0..scale.pods {
        Arc::make_mut(&mut p.identities).insert(u32::from(pod_ip(i)), pod_identity(i));
    }
    for s in 0..scale.services {
        for k in 0..scale.endpoints {
            Arc::make_mut(&mut p.identities).insert(u32::from(endpoint_ip(s, k, scale.endpoints)), endpoint_identity(s));
        }
    }
    let tcp = PortRange { proto: 6, port: TARGET_PORT, end_port: TARGET_PORT };
    let dns: Arc<[Peer]> = Arc::from(vec![Peer::IpBlock { cidr: (u32::from(Ipv4Addr::new(10, 96, 0, 10)), 32), except: vec![] }]);
    let all_apps: Arc<[Peer]> = Arc::from(vec![Peer::Identities(IdSet::new((0..2 * APPS).collect()))]);
    let local_apps: Arc<[Peer]> = Arc::from(vec![Peer::Identities(IdSet::new((0..APPS).collect()))]);
    let pod = PodPolicy {
        ingress_isolated: true,
        egress_isolated: true,
        egress: vec![
            Rule { policy: 0, index: 0, peers: dns, ports: vec![PortRange { proto: 17, port: 53, end_port: 53 }] },
            Rule { policy: 0, index: 1, peers: all_apps, ports: vec![tcp] },
        ],
        ingress: vec![Rule { policy: 1, index: 0, peers: local_apps, ports: vec![tcp] }],
    };
    for i in 0..scale.pods {
        Arc::make_mut(&mut p.pods).insert(u32::from(pod_ip(i)), pod.clone());
    }
    Arc::make_mut(&mut p.policy_names).insert(0, "bench/default-deny-allow-apps-egress".into());
    Arc::make_mut(&mut p.policy_names).insert(1, "bench/allow-apps-ingress".into());
    p
}

/// Where a connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dst {
    /// Service `s` (its ClusterIP, TCP/80).
    Service(u32),
    /// Local pod `j` (TCP/8080).
    Pod(u32),
}

/// A TCP connection from local pod `pod`, source port `sport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub pod: u32,
    pub sport: u16,
    pub dst: Dst,
}

impl Conn {
    /// The destination as addressed (before any translation).
    pub fn dst_addr(&self) -> (Ipv4Addr, u16) {
        match self.dst {
            Dst::Service(s) => (vip(s), SERVICE_PORT),
            Dst::Pod(j) => (pod_ip(j), TARGET_PORT),
        }
    }

    /// The key of the connection's original direction.
    pub fn key(&self) -> FlowKey {
        let (ip, port) = self.dst_addr();
        FlowKey::new(pod_ip(self.pod), ip, self.sport, port, 6)
    }
}

/// `n` connections from the local pods to random Services: connection `c` comes from pod
/// `c % pods`, source port `1024 + c / pods`; the same list for the same `rng` state.
pub fn service_conns(scale: &Scale, n: u32, rng: &mut Rng) -> Vec<Conn> {
    (0..n)
        .map(|c| Conn { pod: c % scale.pods, sport: 1024 + ((c / scale.pods) % 64000) as u16, dst: Dst::Service((rng.u64(..) % scale.services as u64) as u32) })
        .collect()
}

/// `n` connections between local pods: connection `c` comes from pod `c % pods`, source port
/// `1024 + c / pods`, to another local pod (every pair in turn).
pub fn pod_conns(scale: &Scale, n: u32) -> Vec<Conn> {
    assert!(scale.pods >= 2, "pod-to-pod connections need two pods");
    (0..n)
        .map(|c| {
            let (pod, round) = (c % scale.pods, c / scale.pods);
            Conn { pod, sport: 1024 + (round % 64000) as u16, dst: Dst::Pod((pod + 1 + round % (scale.pods - 1)) % scale.pods) }
        })
        .collect()
}

/// The generator that scatters benchmark inputs; seeded with [`Rng::with_seed`], so repeatable.
pub use fastrand::Rng;

/// Writes a 60-byte TCP frame into `slot`: Ethernet (`macs` = source, destination), IPv4 with
/// its checksum, TCP header with `flags` (its checksum is not verified by the switch and left
/// 0). Returns the frame's length.
pub fn write_tcp(slot: &mut [u8], macs: ([u8; 6], [u8; 6]), from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), flags: u8) -> usize {
    let f = write_eth_ipv4(slot, macs, from, to, 6, 40);
    f[38..42].copy_from_slice(&1u32.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = flags;
    f[48..50].copy_from_slice(&65535u16.to_be_bytes());
    60
}

/// Writes a 60-byte UDP frame into `slot` (18 bytes of zero payload, as trafgen's 64-byte
/// frames without the FCS): Ethernet (`macs` = source, destination), IPv4 with its checksum,
/// UDP without a checksum (0). Returns the frame's length.
pub fn write_udp(slot: &mut [u8], macs: ([u8; 6], [u8; 6]), from: (Ipv4Addr, u16), to: (Ipv4Addr, u16)) -> usize {
    let f = write_eth_ipv4(slot, macs, from, to, 17, 46);
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    60
}

/// The first 60 bytes of `slot` zeroed, then Ethernet (`macs` = source, destination), an
/// option-less IPv4 header of `ip_len` bytes in all with its checksum, and the L4 ports.
fn write_eth_ipv4(slot: &mut [u8], macs: ([u8; 6], [u8; 6]), from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), proto: u8, ip_len: u16) -> &mut [u8] {
    let f = &mut slot[..60];
    f.fill(0);
    f[0..6].copy_from_slice(&macs.1);
    f[6..12].copy_from_slice(&macs.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = proto;
    f[26..30].copy_from_slice(&from.0.octets());
    f[30..34].copy_from_slice(&to.0.octets());
    let s = checksum::internet_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&s.to_be_bytes());
    f[34..36].copy_from_slice(&from.1.to_be_bytes());
    f[36..38].copy_from_slice(&to.1.to_be_bytes());
    f
}

/// Writes the frame of `c`'s original direction (client pod -> destination as addressed) into
/// `slot`; returns (length, ingress port).
pub fn write_conn_frame(slot: &mut [u8], c: Conn, flags: u8) -> (usize, PortId) {
    let src = pod_ip(c.pod);
    let len = write_tcp(slot, (mac_of(src), port_mac(pod_port(c.pod))), (src, c.sport), c.dst_addr(), flags);
    (len, pod_port(c.pod))
}

/// A buffer of frames in [`SLOT`]-byte slots, each with its length and ingress port.
#[derive(Debug, Clone)]
pub struct Frames {
    pub buf: Vec<u8>,
    pub lens: Vec<usize>,
    pub ingress: Vec<PortId>,
}

impl Frames {
    pub fn new(n: usize) -> Self {
        Self { buf: vec![0; n * SLOT], lens: vec![0; n], ingress: vec![0; n] }
    }

    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    pub fn slot(&self, i: usize) -> &[u8] {
        &self.buf[i * SLOT..(i + 1) * SLOT]
    }

    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * SLOT..(i + 1) * SLOT]
    }

    /// Frame `i`, received bytes only.
    pub fn frame(&self, i: usize) -> &[u8] {
        &self.buf[i * SLOT..i * SLOT + self.lens[i]]
    }

    /// Writes UDP frames from the client pod to the destination of each of `conns` (the
    /// connection's addresses and ports, as UDP) into slots 0...
    pub fn fill_udp(&mut self, conns: &[Conn]) {
        for (i, c) in conns.iter().enumerate() {
            let src = pod_ip(c.pod);
            let port = pod_port(c.pod);
            self.lens[i] = write_udp(self.slot_mut(i), (mac_of(src), port_mac(port)), (src, c.sport), c.dst_addr());
            self.ingress[i] = port;
        }
    }

    /// Writes the original-direction frames of `conns` (with TCP `flags`) into slots 0...
    pub fn fill(&mut self, conns: &[Conn], flags: u8) {
        for (i, c) in conns.iter().enumerate() {
            let (len, port) = write_conn_frame(self.slot_mut(i), *c, flags);
            self.lens[i] = len;
            self.ingress[i] = port;
        }
    }
}

/// Tables, a connection table and the counters a worker keeps: what [`Ctx`] borrows.
pub struct World {
    pub scale: Scale,
    pub tables: Tables,
    pub ct: ConnTable,
    pub drops: DropCounters,
    pub flows: FlowRing,
    pub policy_counters: PolicyCounters,
    pub stages: StageCounters,
}

impl World {
    /// The tables of `scale` (see [`build_tables`]) and an empty connection table with room for
    /// `capacity` connections.
    pub fn new(scale: Scale, capacity: u32) -> Self {
        Self::with_tables(scale, build_tables(&scale), capacity)
    }

    pub fn with_tables(scale: Scale, tables: Tables, capacity: u32) -> Self {
        Self {
            scale,
            tables,
            ct: ConnTable::new(capacity, KeyHasher::new(0x5eed)),
            drops: DropCounters::default(),
            flows: FlowRing::new(8192),
            policy_counters: PolicyCounters::default(),
            stages: StageCounters::default(),
        }
    }

    /// What the pipeline reads, with the table's clock read now (a worker reads it once per
    /// burst).
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            tables: &self.tables,
            ct: &self.ct,
            now: self.ct.now_ms(),
            drops: &self.drops,
            flows: &self.flows,
            policy_counters: &self.policy_counters,
            stages: &self.stages,
        }
    }

    /// Runs `frames[0..n]` through the pipeline as a worker does (warm the connection table for
    /// each burst of [`warm::MAX`], then [`crate::pipeline::process_hinted`] each frame); returns how many were
    /// forwarded.
    pub fn run_frames(&self, frames: &mut Frames, n: usize) -> usize {
        let ctx = self.ctx();
        run_bursts(&ctx, frames, n)
    }

    /// Writes the SYN-ACK that answers each of `conns` (opened by a SYN already) into slots
    /// 0..: from the backend the pipeline chose (remote: through the uplink) or the pod.
    pub fn write_answers(&self, frames: &mut Frames, conns: &[Conn]) {
        for (i, c) in conns.iter().enumerate() {
            let hit = self.ct.lookup(&c.key()).expect("the SYN opened the connection");
            let r = hit.snap.reply;
            let (macs, port) = match c.dst {
                Dst::Service(_) => ((UPLINK_PEER_MAC, port_mac(self.scale.uplink())), self.scale.uplink()),
                Dst::Pod(j) => ((mac_of(pod_ip(j)), port_mac(pod_port(j))), pod_port(j)),
            };
            frames.lens[i] = write_tcp(frames.slot_mut(i), macs, (r.src_ip(), r.sport), (r.dst_ip(), r.dport), SYN | ACK);
            frames.ingress[i] = port;
        }
    }

    /// Opens `conns` through the pipeline (see the module contract), in batches of `batch`
    /// frames. Panics if the pipeline does not forward every packet of every handshake.
    pub fn open(&self, conns: &[Conn], frames: &mut Frames) {
        let batch = frames.capacity();
        for chunk in conns.chunks(batch) {
            frames.fill(chunk, SYN);
            let fwd = self.run_frames(frames, chunk.len());
            assert_eq!(fwd, chunk.len(), "SYNs forwarded (connection table full or tables wrong?)");
            self.write_answers(frames, chunk);
            let fwd = self.run_frames(frames, chunk.len());
            assert_eq!(fwd, chunk.len(), "SYN-ACKs forwarded");
            frames.fill(chunk, ACK);
            let fwd = self.run_frames(frames, chunk.len());
            assert_eq!(fwd, chunk.len(), "ACKs forwarded");
        }
    }
}

/// The worker's per-burst loop over `frames[0..n]`: warm, then process; returns how many
/// frames were forwarded.
#[inline(always)]
pub fn run_bursts(ctx: &Ctx, frames: &mut Frames, n: usize) -> usize {
    let mut forwarded = 0;
    for start in (0..n).step_by(warm::MAX) {
        let end = (start + warm::MAX).min(n);
        let buf = &frames.buf;
        let hints = warm::burst(ctx.ct, end - start, |i| warm::quick_key(&buf[(start + i) * SLOT..(start + i + 1) * SLOT]));
        for i in start..end {
            let frame = &mut frames.buf[i * SLOT..(i + 1) * SLOT];
            if let Verdict::Forward { .. } = process_hinted(frame, frames.lens[i], frames.ingress[i], ctx, hints.get(i - start)) {
                forwarded += 1;
            }
        }
    }
    forwarded
}
