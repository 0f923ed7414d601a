//! The worker on the in-memory device: staging and flush, a full TX ring, a port removed while
//! it holds frames, and frame accounting, with every counter and every frame checked.
use std::net::Ipv4Addr;

use crossbeam::channel::{bounded, Sender};
use etherparse::PacketBuilder;

use super::*;
use crate::conntrack::KeyHasher;
use crate::port::memory::{MemoryPool, MemoryPort};
use crate::tables::{NextHop, PortConfig, PortKind, SourceGuard};

const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 10);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
const A_MAC: [u8; 6] = [0x0a, 0x58, 10, 244, 0, 10];
const B_MAC: [u8; 6] = [0x0a, 0x58, 10, 244, 0, 11];
const PORT_A_MAC: [u8; 6] = [0xee, 0, 0, 0, 0, 1];
const PORT_B_MAC: [u8; 6] = [0xee, 0, 0, 0, 0, 2];
const A: PortId = 1;
const B: PortId = 2;
const FRAMES: u32 = 512;
const FILL: u32 = 64;

fn tables() -> Tables {
    let mut t = Tables::new(GW);
    let pod = |name: &str, mac, guard_mac, ip| {
        Some(PortConfig { name: name.into(), kind: PortKind::Pod, mac, source_guard: Some(SourceGuard { mac: guard_mac, ip }) })
    };
    t.set_port(A, pod("x/a", PORT_A_MAC, A_MAC, A_IP));
    t.set_port(B, pod("x/b", PORT_B_MAC, B_MAC, B_IP));
    t.routes.insert(u32::from(A_IP), 32, NextHop::direct(A, A_MAC));
    t.routes.insert(u32::from(B_IP), 32, NextHop::direct(B, B_MAC));
    t
}

/// A UDP frame from pod a to pod b whose payload is `seq`.
fn a_to_b(seq: u32) -> Vec<u8> {
    udp(A_MAC, PORT_A_MAC, A_IP, B_IP, seq)
}

fn udp(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, seq: u32) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src.octets(), dst.octets(), 64).udp(40000, 81);
    let mut v = Vec::new();
    b.write(&mut v, &seq.to_be_bytes()).unwrap();
    v
}

/// The payload (`seq`) of a UDP frame built by [`udp`].
fn seq_of(frame: &[u8]) -> u32 {
    u32::from_be_bytes(frame[frame.len() - 4..].try_into().unwrap())
}

struct Rig {
    w: Worker<MemoryPort>,
    cmds: Sender<WorkerCmd<MemoryPort>>,
    shared: Arc<WorkerShared>,
    counters: [Arc<PortQueueCounters>; 3],
}

impl Rig {
    /// A worker with ports a and b, b's TX queue taking `b_tx_capacity` frames.
    fn new(b_tx_capacity: usize) -> Rig {
        let tables = Arc::new(ArcSwap::from_pointee(tables()));
        let ct = Arc::new(ConnTable::new(1024, KeyHasher::new(1)));
        let shared = Arc::new(WorkerShared::default());
        let (cmds, rx) = bounded(16);
        let mem = MemoryPool::new(FRAMES, 2048);
        let ports = [MemoryPort::new(A, &mem, 4096, FILL), MemoryPort::new(B, &mem, b_tx_capacity, FILL)];
        let w = Worker::new(0, mem, tables, ct, Arc::clone(&shared), rx, true);
        let mut rig = Rig { w, cmds, shared, counters: Default::default() };
        for p in ports {
            rig.add(p);
        }
        rig
    }

    fn add(&mut self, device: MemoryPort) {
        let (ready, done) = bounded(1);
        let counters = Arc::new(PortQueueCounters::default());
        self.counters[device.id() as usize] = Arc::clone(&counters);
        self.cmds.send(WorkerCmd::AddPort { device: Box::new(device), counters, ready }).unwrap();
        assert!(self.w.apply_commands());
        done.try_recv().expect("acknowledged");
    }

    fn remove(&mut self, id: PortId) {
        let (done_tx, done) = bounded(1);
        self.cmds.send(WorkerCmd::RemovePort { id, done: done_tx }).unwrap();
        assert!(self.w.apply_commands());
        done.try_recv().expect("acknowledged");
    }

    fn port(&mut self, id: PortId) -> (&mut MemoryPort, &mut MemoryPool) {
        let i = self.w.slot_index(id).expect("port attached");
        (&mut self.w.ports[i].device, &mut self.w.mem)
    }

    fn arrive(&mut self, id: PortId, frames: &[Vec<u8>]) {
        let (port, mem) = self.port(id);
        for f in frames {
            assert!(port.arrive(mem, f), "fill queue had room");
        }
    }

    fn depart(&mut self, id: PortId) -> Vec<Vec<u8>> {
        let (port, mem) = self.port(id);
        port.depart(mem)
    }

    /// Every frame is in the pool or in an attached port's queues (between rounds the worker
    /// holds none): none lost, none counted twice.
    fn assert_every_frame_accounted(&self) {
        let held: usize = self.w.ports.iter().map(|p| p.device.held()).sum();
        assert_eq!(self.w.mem.free_frames() + held, FRAMES as usize, "pool {} + ports {held}", self.w.mem.free_frames());
    }

    /// Drops by reason that are not zero.
    fn drops(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|r| (*r, self.shared.drops.get(*r))).filter(|(_, n)| *n > 0).collect()
    }
}

fn totals(c: &PortQueueCounters) -> [u64; 6] {
    [c.rx_packets.get(), c.rx_bytes.get(), c.rx_dropped.get(), c.tx_packets.get(), c.tx_bytes.get(), c.tx_dropped.get()]
}

#[test]
fn a_burst_is_staged_per_egress_port_and_flushed_in_order() {
    let mut rig = Rig::new(4096);
    rig.assert_every_frame_accounted();
    let sent: Vec<Vec<u8>> = (0..40).map(a_to_b).collect();
    let bytes: u64 = sent.iter().map(|f| f.len() as u64).sum();
    rig.arrive(A, &sent);
    assert_eq!(rig.w.poll_once(), 40);
    rig.assert_every_frame_accounted();
    let (b, _) = rig.port(B);
    assert_eq!(b.queued_tx(), 40, "the whole burst was flushed to b's TX ring in the round");
    let out = rig.depart(B);
    assert_eq!(out.iter().map(|f| seq_of(f)).collect::<Vec<_>>(), (0..40).collect::<Vec<_>>(), "in order");
    assert!(out.iter().all(|f| f[..6] == B_MAC && f[6..12] == PORT_B_MAC), "rewritten for b");
    assert_eq!(totals(&rig.counters[A as usize]), [40, bytes, 0, 0, 0, 0]);
    assert_eq!(totals(&rig.counters[B as usize]), [0, 0, 0, 40, bytes, 0]);
    assert_eq!(rig.drops(), vec![]);
    // The next round reclaims the completions.
    let free_before = rig.w.mem.free_frames();
    assert_eq!(rig.w.poll_once(), 40, "40 completions reclaimed");
    assert_eq!(rig.w.mem.free_frames(), free_before + 40);
    assert_eq!(rig.shared.free_frames.get(), rig.w.mem.free_frames() as u64);
    rig.assert_every_frame_accounted();
}

#[test]
fn what_a_full_tx_ring_does_not_take_is_counted_and_returned_to_the_pool() {
    let mut rig = Rig::new(8);
    let sent: Vec<Vec<u8>> = (0..30).map(a_to_b).collect();
    let len = sent[0].len() as u64;
    rig.arrive(A, &sent);
    rig.w.poll_once();
    rig.assert_every_frame_accounted();
    assert_eq!(rig.drops(), vec![(DropReason::TxRingFull, 22)]);
    assert_eq!(totals(&rig.counters[B as usize]), [0, 0, 0, 8, 8 * len, 22]);
    assert_eq!(totals(&rig.counters[A as usize]), [30, 30 * len, 0, 0, 0, 0], "tx drops are not rx drops");
    let out = rig.depart(B);
    assert_eq!(out.iter().map(|f| seq_of(f)).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>(), "the ring took a prefix");
    // Once the ring has room again, frames flow.
    rig.w.poll_once();
    rig.arrive(A, &[a_to_b(100)]);
    rig.w.poll_once();
    assert_eq!(rig.depart(B).iter().map(|f| seq_of(f)).collect::<Vec<_>>(), vec![100]);
    assert_eq!(rig.counters[B as usize].tx_packets.get(), 9);
    assert_eq!(rig.drops(), vec![(DropReason::TxRingFull, 22)]);
    rig.assert_every_frame_accounted();
}

#[test]
fn a_removed_port_gives_back_every_frame_it_held_and_later_frames_for_it_are_not_ready() {
    let mut rig = Rig::new(4096);
    rig.arrive(A, &(0..5).map(a_to_b).collect::<Vec<_>>());
    rig.w.poll_once();
    // b holds its fill frames and 5 transmitted, not yet completed, frames.
    let (b, _) = rig.port(B);
    assert_eq!((b.queued_tx(), b.in_fill()), (5, FILL as usize));
    rig.remove(B);
    rig.assert_every_frame_accounted();
    let (a, _) = rig.port(A);
    let a_held = a.held();
    assert_eq!(rig.w.mem.free_frames(), FRAMES as usize - a_held, "b's fill and TX frames are back");

    let len = a_to_b(0).len() as u64;
    rig.arrive(A, &(5..8).map(a_to_b).collect::<Vec<_>>());
    rig.w.poll_once();
    assert_eq!(rig.drops(), vec![(DropReason::EgressPortNotReady, 3)]);
    assert_eq!(totals(&rig.counters[A as usize]), [8, 8 * len, 3, 0, 0, 0]);
    assert_eq!(totals(&rig.counters[B as usize]), [0, 0, 0, 5, 5 * len, 0], "b's counts stay final");
    rig.assert_every_frame_accounted();
}

#[test]
fn frames_staged_for_a_port_when_it_is_removed_return_to_the_pool() {
    // Staged frames never outlive a burst in `poll_once` (commands apply between rounds); the
    // removal path still returns any it finds rather than losing them.
    let mut rig = Rig::new(4096);
    let free = rig.w.mem.free_frames();
    let i = rig.w.slot_index(B).unwrap();
    for k in 0..3 {
        let f = rig.w.mem.take().unwrap();
        rig.w.ports[i].staged[k] = f;
    }
    rig.w.ports[i].staged_len = 3;
    assert_eq!(rig.w.mem.free_frames(), free - 3);
    rig.remove(B);
    assert_eq!(rig.w.mem.free_frames(), free + FILL as usize, "3 staged and b's fill frames");
    rig.assert_every_frame_accounted();
}

#[test]
fn the_pool_keeps_every_frame_through_mixed_traffic_and_drops() {
    let mut rig = Rig::new(16);
    let spoofed = udp(A_MAC, PORT_A_MAC, Ipv4Addr::new(10, 244, 0, 99), B_IP, 0);
    let (mut to_b, mut to_a) = (0u32, 0u32);
    for round in 0..50u32 {
        let burst: Vec<Vec<u8>> = (0..20).map(|k| if k % 5 == 4 { spoofed.clone() } else { a_to_b(round * 20 + k) }).collect();
        rig.arrive(A, &burst);
        rig.arrive(B, &(0..7).map(|k| udp(B_MAC, PORT_B_MAC, B_IP, A_IP, k)).collect::<Vec<_>>());
        rig.w.poll_once();
        rig.assert_every_frame_accounted();
        if round % 3 == 0 {
            to_b += rig.depart(B).len() as u32;
            to_a += rig.depart(A).len() as u32;
        }
    }
    to_b += rig.depart(B).len() as u32;
    to_a += rig.depart(A).len() as u32;
    rig.w.poll_once();
    rig.w.poll_once();
    let ring_full = rig.shared.drops.get(DropReason::TxRingFull);
    assert_eq!(rig.shared.drops.get(DropReason::SpoofedSourceIp), 200);
    assert_eq!(u64::from(to_b) + rig.counters[B as usize].tx_dropped.get(), 800, "every frame for b sent or dropped once");
    assert_eq!(u64::from(to_a) + rig.counters[A as usize].tx_dropped.get(), 350, "every frame for a sent or dropped once");
    assert_eq!(rig.counters[A as usize].tx_dropped.get() + rig.counters[B as usize].tx_dropped.get(), ring_full);
    assert!(ring_full > 0, "b's ring of 16 overflowed in rounds it was not drained");
    // Everything has left and completed: only the fill queues hold frames.
    assert_eq!(rig.w.mem.free_frames(), FRAMES as usize - 2 * FILL as usize);
    rig.assert_every_frame_accounted();
}

#[test]
fn a_port_with_two_queues_on_one_worker_receives_on_both_sends_on_its_first_and_gives_back_all_frames() {
    let mut rig = Rig::new(4096);
    // A second device (queue) of port b on the same worker.
    let second = MemoryPort::new(B, &rig.w.mem, 4096, FILL);
    let (ready, done) = bounded(1);
    let second_counters = Arc::new(PortQueueCounters::default());
    rig.cmds.send(WorkerCmd::AddPort { device: Box::new(second), counters: Arc::clone(&second_counters), ready }).unwrap();
    assert!(rig.w.apply_commands());
    done.try_recv().expect("acknowledged");
    assert_eq!(rig.w.ports.len(), 3);
    rig.assert_every_frame_accounted();
    let first_b = rig.w.slot_index(B).unwrap();
    let second_b = rig.w.ports.iter().rposition(|p| p.device.id() == B).unwrap();
    assert_ne!(first_b, second_b);
    // Frames arriving on b's second queue are received (b -> a).
    let b_to_a = |seq| udp(B_MAC, PORT_B_MAC, B_IP, A_IP, seq);
    {
        let Worker { ports, mem, .. } = &mut rig.w;
        for seq in 0..3 {
            assert!(ports[second_b].device.arrive(mem, &b_to_a(seq)));
        }
    }
    // And a -> b leaves on b's first queue.
    rig.arrive(A, &(10..14).map(a_to_b).collect::<Vec<_>>());
    rig.w.poll_once();
    assert_eq!(rig.depart(A).iter().map(|f| seq_of(f)).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(rig.depart(B).iter().map(|f| seq_of(f)).collect::<Vec<_>>(), vec![10, 11, 12, 13]);
    assert_eq!(second_counters.rx_packets.get(), 3);
    assert_eq!(second_counters.tx_packets.get(), 0, "b transmits on its first queue");
    assert_eq!(rig.counters[B as usize].tx_packets.get(), 4);
    rig.w.poll_once();
    rig.assert_every_frame_accounted();
    // Removing b closes both of its devices and brings back every frame they held.
    rig.remove(B);
    assert_eq!(rig.w.ports.len(), 1);
    assert_eq!(rig.w.slot_index(B), None);
    assert_eq!(rig.w.slot_index(A), Some(0));
    rig.assert_every_frame_accounted();
    assert_eq!(rig.drops(), vec![]);
}

#[test]
fn a_round_counts_itself_its_bursts_and_their_frames() {
    let mut rig = Rig::new(4096);
    rig.w.poll_once();
    let t = rig.shared.poll.totals();
    assert_eq!((t.rounds, t.rx_rounds, t.rx_bursts, t.rx_packets), (1, 0, 0, 0), "an empty round");
    rig.arrive(A, &(0..40).map(a_to_b).collect::<Vec<_>>());
    rig.arrive(B, &(0..3).map(|k| udp(B_MAC, PORT_B_MAC, B_IP, A_IP, k)).collect::<Vec<_>>());
    rig.w.poll_once();
    let t = rig.shared.poll.totals();
    assert_eq!((t.rounds, t.rx_rounds, t.rx_bursts, t.rx_packets), (2, 1, 2, 43), "one round, a burst from each port");
    assert_eq!(t.bursts, [0, 0, 1, 0, 0, 0, 1], "3 frames: at most 4; 40: at most 64");
    assert_eq!(t.packets_per_rx_round(), 43.0);
    // The completions of the round before are work, not received frames.
    assert_eq!((rig.depart(A).len(), rig.depart(B).len()), (3, 40));
    assert_eq!(rig.w.poll_once(), 43);
    let t = rig.shared.poll.totals();
    assert_eq!((t.rounds, t.rx_rounds, t.rx_packets), (3, 1, 43));
    // poll_once alone never sleeps nor accounts time: that is the run loop's.
    assert_eq!((t.sleeps, t.busy_ns, t.sleeping_ns), (0, 0, 0));
}

/// A worker with ports a and b running on its own thread, as the dataplane runs it (with a
/// doorbell); stopped and joined by [`Running::stop`].
struct Running {
    cmds: Sender<WorkerCmd<MemoryPort>>,
    shared: Arc<WorkerShared>,
    join: std::thread::JoinHandle<()>,
}

impl Running {
    fn start(busy_poll: bool) -> Running {
        let tables = Arc::new(ArcSwap::from_pointee(tables()));
        let ct = Arc::new(ConnTable::new(1024, KeyHasher::new(1)));
        let shared = Arc::new(WorkerShared { doorbell: Some(doorbell::Doorbell::new().unwrap()), ..WorkerShared::default() });
        let (cmds, rx) = bounded(16);
        let mem = MemoryPool::new(FRAMES, 2048);
        for p in [MemoryPort::new(A, &mem, 4096, FILL), MemoryPort::new(B, &mem, 4096, FILL)] {
            let (ready, _) = bounded(1);
            let counters = Arc::new(PortQueueCounters::default());
            cmds.send(WorkerCmd::AddPort { device: Box::new(p), counters, ready }).unwrap();
        }
        let w = Worker::new(0, mem, tables, ct, Arc::clone(&shared), rx, busy_poll);
        let join = std::thread::spawn(move || w.run());
        Running { cmds, shared, join }
    }

    fn stop(self) {
        self.cmds.send(WorkerCmd::Stop).unwrap();
        self.shared.doorbell.as_ref().unwrap().ring();
        self.join.join().unwrap();
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !done() {
        assert!(t.elapsed() < Duration::from_secs(10), "waited 10 s for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn an_idle_worker_sleeps_and_is_woken_by_its_doorbell_or_the_timeout() {
    let r = Running::start(false);
    wait_for("a sleep ended by the timeout", || r.shared.poll.totals().woke_timeout >= 2);
    let before = r.shared.poll.totals();
    std::thread::sleep(Duration::from_millis(60));
    let after = r.shared.poll.totals();
    let slept = after.sleeping_ns - before.sleeping_ns;
    let awake = after.busy_ns + after.polling_ns - before.busy_ns - before.polling_ns;
    assert!(slept > 40_000_000, "slept {slept} ns of 60 ms");
    assert!(awake < slept / 4, "awake {awake} ns, asleep {slept} ns");
    // A sleep lasts at most IDLE_SLEEP_MS: 60 ms took about 12 of them (not thousands).
    let sleeps = after.sleeps - before.sleeps;
    assert!((6..=40).contains(&sleeps), "{sleeps} sleeps in 60 ms");
    assert_eq!(after.woke_data, 0, "the in-memory device has no fd to wake it");
    assert_eq!(after.busy_ns, 0, "no frame came, so no round had work");
    // The doorbell ends a sleep at once, counted as such.
    r.shared.doorbell.as_ref().unwrap().ring();
    wait_for("a sleep ended by the doorbell", || r.shared.poll.totals().woke_doorbell == 1);
    let t = r.shared.poll.totals();
    let ended = t.woke_data + t.woke_doorbell + t.woke_timeout;
    assert!(t.sleeps == ended || t.sleeps == ended + 1, "every ended sleep has one reason ({} sleeps, {ended} ended)", t.sleeps);
    r.stop();
}

#[test]
fn a_busy_polling_worker_never_sleeps() {
    let r = Running::start(true);
    std::thread::sleep(Duration::from_millis(50));
    let t = r.shared.poll.totals();
    r.stop();
    assert_eq!((t.sleeps, t.sleeping_ns, t.woke_timeout, t.woke_doorbell), (0, 0, 0, 0));
    assert!(t.rounds > 1000, "{} rounds in 50 ms", t.rounds);
    assert!(t.polling_ns > 20_000_000, "polled {} ns of 50 ms", t.polling_ns);
}
