//! A poll-mode worker: one thread, pinned to one core, owning one frame memory (for AF_XDP a
//! UMEM) and one or more queues of every port, moving frames from RX rings through the pipeline
//! to TX rings.
//!
//! Contract:
//! - The worker is generic over the port device ([`PortDevice`]: AF_XDP in production, the
//!   in-memory device in tests), monomorphised, so a device costs no dynamic call per packet.
//! - Frames a burst sends to a port are staged per egress port and handed to its TX ring
//!   (flushed) at the end of that burst, in order; what the ring does not take is dropped as
//!   `TxRingFull` (and `tx_dropped`), frames for a port this worker does not have as
//!   `EgressPortNotReady`; every dropped frame goes back to the pool.
//! - The hot path (everything in [`Worker::poll_once`]) takes no lock, allocates nothing and
//!   enters the kernel only where a ring's need_wakeup flag asks (copy-mode TX always does)
//!   or to sleep when idle.
//! - Tables are read from an [`ArcSwap`] snapshot once per round, lock-free.
//! - Ports come and go through [`WorkerCmd`]s, checked once per round; adding or removing one
//!   port does not disturb the others. A port may have several devices here (one per queue the
//!   worker serves): every one is received from, and frames for the port are sent on the first
//!   one added. A removed port's sockets are all closed on this thread, then every frame their
//!   rings held returns to the pool.
//! - Idle back-off (adaptive polling): once it has found no work for [`IDLE_SPIN`] the worker
//!   sleeps in poll(2) on its RX fds and its [`doorbell`] (at most [`IDLE_SLEEP_MS`]), unless
//!   `busy_poll` is set. An AF_XDP socket's fd turns readable the moment the kernel puts a
//!   frame on its RX ring (and poll(2) looks at the ring before it sleeps, so a frame that came
//!   just before is not missed): a sleeping worker wakes on the first frame, not at the
//!   timeout. The control side rings the doorbell with every command, so a command waits for
//!   no sleep to end either.
//! - The threshold is a time, not a count of empty rounds: an empty round costs from tens of
//!   nanoseconds (one port) to microseconds (hundreds), so a count would mean a different wait
//!   on every node.
//! - How the worker spends its time (busy, polling, sleeping), its bursts and its wake-ups are
//!   counted in [`poll_stats::PollStats`] from the one clock read each round makes anyway (the
//!   connection table's "now") and one more per sleep.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel::{Receiver, Sender};

use crate::afxdp::rings::wait_readable;
use poll_stats::{PollClock, PollStats, Wake};
use crate::counters::{Counter, DropCounters, PortQueueCounters};
use crate::drop_reason::DropReason;
use crate::conntrack::ConnTable;
use crate::pipeline::{process_hinted, warm, Ctx, Verdict};
use crate::port::{Frame, FrameMemory, PortDevice};
use crate::tables::{PortId, Tables, MAX_PORTS};

/// Frames taken from one RX ring per round.
pub const BURST: usize = 64;
/// How long a worker without work keeps polling before it sleeps: long enough that the answer
/// to a request it just forwarded (a ping, an RPC on a warm connection: tens of microseconds
/// through a pod's kernel) usually finds it still polling, short enough that an idle worker
/// gives its core back within a fraction of a millisecond.
pub const IDLE_SPIN: Duration = Duration::from_micros(100);
/// The longest one idle sleep lasts (frames and commands end it sooner).
pub const IDLE_SLEEP_MS: i32 = 5;
const NO_SLOT: u16 = u16::MAX;

/// The frame descriptor of device `D`.
type FrameOf<D> = <<D as PortDevice>::Memory as FrameMemory>::Frame;

/// Orders from the control side.
pub enum WorkerCmd<D> {
    /// Takes the port's rings (one queue's; a port may be added once per queue the worker
    /// serves), fills its fill ring, then acknowledges: only then may the control side register
    /// the socket in the XSKMAP (frames redirected to a socket with an empty fill ring are
    /// dropped by the kernel, and a pod's first ARP would be lost).
    AddPort { device: Box<D>, counters: Arc<PortQueueCounters>, ready: Sender<()> },
    /// Closes every socket of the port and reclaims their frames, then acknowledges.
    RemovePort { id: PortId, done: Sender<()> },
    /// Rebalances the fill target of every port (ports were added or removed).
    SetFillTarget(u32),
    Stop,
}

/// What a worker exposes to the control side.
#[derive(Debug)]
pub struct WorkerShared {
    pub drops: DropCounters,
    pub flows: crate::flowlog::FlowRing,
    pub policy: crate::counters::PolicyCounters,
    /// The pipeline stages' counters (answers sent, connections made).
    pub stages: crate::pipeline::StageCounters,
    /// Time, rounds, bursts and wake-ups.
    pub poll: PollStats,
    pub free_frames: Counter,
    pub running: AtomicBool,
    /// Rung by the control side after each command (None: the worker wakes at the end of its
    /// idle sleep at the latest).
    pub doorbell: Option<doorbell::Doorbell>,
}

impl Default for WorkerShared {
    fn default() -> Self {
        Self {
            drops: DropCounters::default(),
            flows: crate::flowlog::FlowRing::new(FLOW_RING),
            policy: Default::default(),
            stages: Default::default(),
            poll: PollStats::default(),
            free_frames: Counter::default(),
            running: AtomicBool::new(false),
            doorbell: None,
        }
    }
}

/// Verdict records a worker keeps until the control side drains them.
pub const FLOW_RING: usize = 8192;

struct Port<D: PortDevice> {
    device: D,
    counters: Arc<PortQueueCounters>,
    /// Frames bound for this port in the current round.
    staged: Box<[FrameOf<D>; BURST * 2]>,
    staged_len: usize,
}

pub struct Worker<D: PortDevice> {
    pub index: usize,
    mem: D::Memory,
    ports: Vec<Port<D>>,
    /// Port id -> index in `ports` of the port's first device (the one it transmits on).
    slot_of: Box<[u16; MAX_PORTS]>,
    tables: Arc<ArcSwap<Tables>>,
    ct: Arc<ConnTable>,
    shared: Arc<WorkerShared>,
    cmds: Receiver<WorkerCmd<D>>,
    busy_poll: bool,
    rx: Box<[FrameOf<D>; BURST]>,
    scratch: Box<[FrameOf<D>; BURST * 4]>,
    pollfds: Vec<libc::pollfd>,
    /// Slots with staged frames this round.
    dirty: Vec<u16>,
}

/// Most threads [`close_all`] closes ports on at once.
const CLOSING_THREADS: usize = 32;

/// Drops `ports` (closing their sockets) on up to [`CLOSING_THREADS`] threads at once, and
/// returns when all are closed. Closing an AF_XDP socket waits for an RCU grace period
/// (`synchronize_net` in `xsk_release`, about 14 ms here); one after another, a stop or restart
/// with 11 ports spent 150 ms on them, while concurrent closes share their grace periods.
fn close_all<D: PortDevice + Send>(ports: Vec<D>) {
    if ports.len() <= 1 {
        return drop(ports);
    }
    let threads = ports.len().min(CLOSING_THREADS);
    let mut groups: Vec<Vec<D>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, p) in ports.into_iter().enumerate() {
        groups[i % threads].push(p);
    }
    std::thread::scope(|s| {
        for g in groups {
            s.spawn(move || drop(g));
        }
    });
}

impl<D: PortDevice> Worker<D> {
    pub fn new(
        index: usize,
        mem: D::Memory,
        tables: Arc<ArcSwap<Tables>>,
        ct: Arc<ConnTable>,
        shared: Arc<WorkerShared>,
        cmds: Receiver<WorkerCmd<D>>,
        busy_poll: bool,
    ) -> Self {
        let mut worker = Self {
            index,
            mem,
            ports: Vec::with_capacity(64),
            slot_of: Box::new([NO_SLOT; MAX_PORTS]),
            tables,
            ct,
            shared,
            cmds,
            busy_poll,
            rx: Box::new([FrameOf::<D>::default(); BURST]),
            scratch: Box::new([FrameOf::<D>::default(); BURST * 4]),
            pollfds: Vec::with_capacity(64),
            dirty: Vec::with_capacity(MAX_PORTS),
        };
        worker.rebuild_pollfds();
        worker
    }

    /// Runs until [`WorkerCmd::Stop`] or the command channel closes.
    pub fn run(mut self)
    where
        D: Send,
    {
        self.shared.running.store(true, Ordering::Release);
        let shared = Arc::clone(&self.shared);
        let stats = &shared.poll;
        let mut clock = PollClock::new(Instant::now());
        loop {
            if !self.cmds.is_empty() && !self.apply_commands() {
                break;
            }
            let now = Instant::now();
            clock.round_begins(now, stats);
            let work = self.poll_round(now);
            clock.round_ends(work > 0);
            if work == 0 && !self.busy_poll && clock.idle_for() >= IDLE_SPIN {
                clock.sleep_begins(Instant::now(), stats);
                let why = self.sleep();
                stats.woke(why);
            }
        }
        // Close every socket before the UMEM goes.
        close_all(std::mem::take(&mut self.ports).into_iter().map(|p| p.device).collect());
        self.shared.running.store(false, Ordering::Release);
    }

    /// Applies pending commands (the run loop does so between rounds); false on Stop.
    fn apply_commands(&mut self) -> bool {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                WorkerCmd::AddPort { device, counters, ready } => {
                    let id = device.id();
                    if self.slot_index(id).is_none() {
                        self.slot_of[id as usize] = self.ports.len() as u16;
                    }
                    let mut device = *device;
                    device.refill(&mut self.mem);
                    self.ports.push(Port {
                        device,
                        counters,
                        staged: Box::new([FrameOf::<D>::default(); BURST * 2]),
                        staged_len: 0,
                    });
                    self.rebuild_pollfds();
                    let _ = ready.send(());
                }
                WorkerCmd::RemovePort { id, done } => {
                    self.remove_port(id);
                    let _ = done.send(());
                }
                WorkerCmd::SetFillTarget(t) => {
                    for p in &mut self.ports {
                        p.device.set_fill_target(t);
                    }
                }
                WorkerCmd::Stop => return false,
            }
        }
        true
    }

    /// Sleeps until a socket has frames, the doorbell rings or [`IDLE_SLEEP_MS`] pass; says
    /// which (a frame wins over the doorbell when both).
    fn sleep(&mut self) -> Wake {
        let ready = wait_readable(&mut self.pollfds, IDLE_SLEEP_MS);
        if ready <= 0 {
            return Wake::Timeout; // or interrupted
        }
        // The doorbell, when there is one, is the first fd; the sockets follow.
        let bell = self.shared.doorbell.as_ref();
        let rang = bell.is_some() && self.pollfds[0].revents & libc::POLLIN != 0;
        if let (true, Some(bell)) = (rang, bell) {
            bell.quiet();
        }
        if self.pollfds[usize::from(bell.is_some())..].iter().any(|p| p.revents != 0) {
            Wake::Data
        } else if rang {
            Wake::Doorbell
        } else {
            Wake::Timeout
        }
    }

    fn slot_index(&self, id: PortId) -> Option<usize> {
        let s = *self.slot_of.get(id as usize)?;
        (s != NO_SLOT).then_some(s as usize)
    }

    /// Closes every device of port `id`, then takes back every frame their rings held.
    fn remove_port(&mut self, id: PortId) {
        let mut removed = false;
        while let Some(i) = self.ports.iter().position(|p| p.device.id() == id) {
            let port = self.ports.remove(i); // keeps the others' order: their first stays first
            // Staged frames were never handed to the kernel.
            self.mem.release_all(&port.staged[..port.staged_len]);
            drop(port); // closes the socket: the kernel lets go of its rings
            removed = true;
        }
        if !removed {
            return;
        }
        // Only once no device of the port is left: the frames are tagged by port, not queue.
        self.mem.reclaim_port(id);
        self.slot_of[id as usize] = NO_SLOT;
        // The first device of each remaining port, in the order they were added.
        let mut seen = [false; MAX_PORTS];
        for i in 0..self.ports.len() {
            let pid = self.ports[i].device.id() as usize;
            if !seen[pid] {
                seen[pid] = true;
                self.slot_of[pid] = i as u16;
            }
        }
        self.rebuild_pollfds();
    }

    fn rebuild_pollfds(&mut self) {
        self.pollfds.clear();
        if let Some(bell) = &self.shared.doorbell {
            self.pollfds.push(libc::pollfd { fd: bell.fd(), events: libc::POLLIN, revents: 0 });
        }
        for p in &self.ports {
            if let Some(fd) = p.device.wait_fd() {
                self.pollfds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
            }
        }
    }

    /// One round over every port; returns the number of frames moved (received and completed).
    pub fn poll_once(&mut self) -> usize {
        self.poll_round(Instant::now())
    }

    /// [`Self::poll_once`] with the clock read by the caller.
    #[inline]
    fn poll_round(&mut self, now: Instant) -> usize {
        let tables_guard = self.tables.load();
        let tables: &Tables = &tables_guard;
        let stats = &self.shared.poll;
        let ctx = Ctx {
            tables,
            ct: &self.ct,
            now: self.ct.ms_at(now),
            drops: &self.shared.drops,
            flows: &self.shared.flows,
            policy_counters: &self.shared.policy,
            stages: &self.shared.stages,
        };
        let mut work = 0;
        let mut received = 0;
        for i in 0..self.ports.len() {
            let port = &mut self.ports[i];
            work += port.device.reclaim(&mut self.mem, &mut self.scratch[..]);
            port.device.refill(&mut self.mem);
            let n = port.device.receive(&mut self.mem, &mut self.rx[..]);
            if n == 0 {
                port.device.wake_rx();
                continue;
            }
            work += n;
            received += n;
            stats.burst(n);
            let in_id = port.device.id();
            let mut bytes = 0u64;
            let mut dropped = 0u64;
            // Start every frame's connection-table misses before processing the first.
            let (mem, rx) = (&self.mem, &self.rx);
            let hints = warm::burst(&self.ct, n, |k| mem.read(&rx[k], warm::quick_key));
            for k in 0..n {
                let mut desc = self.rx[k];
                bytes += desc.data_len() as u64;
                let hint = hints.get(k);
                let verdict = self.mem.modify(&mut desc, |buf, len| {
                    let v = process_hinted(buf, len, in_id, &ctx, hint);
                    let new_len = match v {
                        Verdict::Forward { len, .. } => len,
                        Verdict::Drop(_) => len,
                    };
                    (v, new_len)
                });
                match verdict {
                    Verdict::Forward { port: out, .. } => match self.slot_index(out) {
                        Some(j) => {
                            let p = &mut self.ports[j];
                            if p.staged_len == p.staged.len() {
                                Self::flush(&mut self.mem, p, &self.shared.drops);
                            }
                            if p.staged_len == 0 {
                                self.dirty.push(j as u16);
                            }
                            p.staged[p.staged_len] = desc;
                            p.staged_len += 1;
                        }
                        None => {
                            self.shared.drops.count(DropReason::EgressPortNotReady);
                            dropped += 1;
                            self.mem.release(desc);
                        }
                    },
                    Verdict::Drop(reason) => {
                        self.shared.drops.count(reason);
                        dropped += 1;
                        self.mem.release(desc);
                    }
                }
            }
            let c = &self.ports[i].counters;
            c.rx_packets.add(n as u64);
            c.rx_bytes.add(bytes);
            c.rx_dropped.add(dropped);
            // Hand this burst to the TX rings before the next port's burst.
            for d in 0..self.dirty.len() {
                let j = self.dirty[d] as usize;
                Self::flush(&mut self.mem, &mut self.ports[j], &self.shared.drops);
            }
            self.dirty.clear();
        }
        for p in &mut self.ports {
            let kicks = p.device.kick(&mut self.mem, &mut self.scratch[..]);
            if kicks > 0 {
                p.counters.tx_kicks.add(kicks as u64);
            }
        }
        self.shared.free_frames.set(self.mem.free_frames() as u64);
        stats.rounds.add(1);
        if received > 0 {
            stats.rx_rounds.add(1);
        }
        work
    }

    /// Moves a port's staged frames to its TX ring; what does not fit is dropped and counted.
    #[inline]
    fn flush(mem: &mut D::Memory, p: &mut Port<D>, drops: &DropCounters) {
        if p.staged_len == 0 {
            return;
        }
        let staged = &p.staged[..p.staged_len];
        let sent = p.device.transmit(mem, staged);
        let bytes: u64 = staged[..sent].iter().map(|d| d.data_len() as u64).sum();
        p.counters.tx_packets.add(sent as u64);
        p.counters.tx_bytes.add(bytes);
        if sent < staged.len() {
            p.counters.tx_dropped.add((staged.len() - sent) as u64);
            for _ in sent..staged.len() {
                drops.count(DropReason::TxRingFull);
            }
            mem.release_all(&staged[sent..]);
        }
        p.staged_len = 0;
    }
}

pub mod doorbell;
pub mod poll_stats;
#[cfg(test)]
mod tests;
