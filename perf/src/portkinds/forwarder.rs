//! The minimal forwarder `bench portkinds` measures each mechanism with: one thread of this
//! process, pinned to a core, that moves every frame from pod a's port to pod b's and back,
//! whole: a GSO super-frame goes through as one buffer with its virtio-net header (the
//! mechanism's ceiling; no switching, no segmenting). With `finish_checksums` it also finishes
//! partial checksums first ([`super::vnet::finish_checksum`]).
//!
//! Contract: [`Forwarder::start`] returns once both ports exist (or with the error that kept
//! them from existing): for [`Mechanism::Packet`] AF_PACKET sockets on the host ends
//! [`super::topo::HOST_A`]/[`super::topo::HOST_B`] in the node namespace; for
//! [`Mechanism::Tap`] one tap device named `eth0` in each pod namespace. The thread sleeps in
//! `epoll_wait` when both ports are empty (unless `busy_poll`), so its CPU time is what the
//! forwarding cost. [`Forwarder::snapshot`] reads the per-direction counters and the
//! thread's CPU time at any moment; [`Forwarder::stop`] ends the thread, which closes the ports
//! (a tap device disappears with its descriptor).
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use nix::sched::CloneFlags;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use serde::Serialize;

use super::packet_port::PacketPort;
use super::tap_port::TapPort;
use super::topo;
use super::vnet::{self, Finish};

/// Frames taken from one port before looking at the other.
const BURST: usize = 64;
/// Receive slots of each AF_PACKET ring (128 KiB each).
const PACKET_SLOTS: usize = 256;
/// The largest frame without GSO on a 1,500-byte MTU (Ethernet header included).
pub const PLAIN_FRAME_MAX: u64 = 1514;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    Packet,
    Tap,
}

/// One direction's counters (frame sizes without the vnet header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirStats {
    pub frames: u64,
    pub bytes: u64,
    pub max_frame: u64,
    /// Frames longer than [`PLAIN_FRAME_MAX`]: GSO super-frames kept whole.
    pub over_1514: u64,
    /// Frames whose vnet header carried a GSO type.
    pub gso_frames: u64,
    /// Frames with a partial checksum (`NEEDS_CSUM`).
    pub partial_csum: u64,
    /// Checksums finished and written (finish mode, frames without GSO).
    pub csum_written: u64,
    /// Super-frames summed but left partial (finish mode).
    pub csum_summed_only: u64,
    /// Frames the egress port refused.
    pub tx_failed: u64,
}

const FIELDS: usize = 9;

impl DirStats {
    fn to_array(self) -> [u64; FIELDS] {
        [self.frames, self.bytes, self.max_frame, self.over_1514, self.gso_frames, self.partial_csum, self.csum_written, self.csum_summed_only, self.tx_failed]
    }

    fn from_array(a: [u64; FIELDS]) -> DirStats {
        DirStats {
            frames: a[0],
            bytes: a[1],
            max_frame: a[2],
            over_1514: a[3],
            gso_frames: a[4],
            partial_csum: a[5],
            csum_written: a[6],
            csum_summed_only: a[7],
            tx_failed: a[8],
        }
    }

    /// What happened between `earlier` and `self` (the largest frame is the later's: a maximum
    /// cannot be differenced).
    pub fn since(&self, earlier: &DirStats) -> DirStats {
        let (a, b) = (self.to_array(), earlier.to_array());
        let mut d = [0u64; FIELDS];
        for i in 0..FIELDS {
            d[i] = a[i].saturating_sub(b[i]);
        }
        d[2] = a[2];
        DirStats::from_array(d)
    }

    fn note(&mut self, buf: &[u8]) {
        let len = (buf.len() - vnet::LEN.min(buf.len())) as u64;
        self.frames += 1;
        self.bytes += len;
        self.max_frame = self.max_frame.max(len);
        if len > PLAIN_FRAME_MAX {
            self.over_1514 += 1;
        }
        if let Ok(h) = vnet::Header::parse(buf) {
            if h.gso_type != 0 {
                self.gso_frames += 1;
            }
            if h.needs_csum() {
                self.partial_csum += 1;
            }
        }
    }
}

struct Shared {
    stop: AtomicBool,
    ab: [AtomicU64; FIELDS],
    ba: [AtomicU64; FIELDS],
    ring_drops: AtomicU64,
}

fn publish(to: &[AtomicU64; FIELDS], s: &DirStats) {
    for (slot, v) in to.iter().zip(s.to_array()) {
        slot.store(v, Ordering::Relaxed);
    }
}

fn read(from: &[AtomicU64; FIELDS]) -> DirStats {
    DirStats::from_array(std::array::from_fn(|i| from[i].load(Ordering::Relaxed)))
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Pod a -> pod b (iperf3's data).
    pub ab: DirStats,
    /// Pod b -> pod a (its ACKs).
    pub ba: DirStats,
    /// The forwarder thread's CPU time so far, ns (schedstat).
    pub cpu_ns: u64,
}

pub struct Config {
    pub mechanism: Mechanism,
    pub finish_checksums: bool,
    pub core: usize,
    pub busy_poll: bool,
}

pub struct Forwarder {
    shared: Arc<Shared>,
    tid: i32,
    handle: Option<JoinHandle<()>>,
}

trait Port {
    fn fd(&self) -> BorrowedFd<'_>;
    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&mut [u8])) -> usize;
    fn tx(&self, buf: &[u8]) -> bool;
    fn ring_drops(&self) -> u64 {
        0
    }
}

impl Port for PacketPort {
    fn fd(&self) -> BorrowedFd<'_> {
        PacketPort::fd(self)
    }
    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&mut [u8])) -> usize {
        PacketPort::rx_burst(self, max, f)
    }
    fn tx(&self, buf: &[u8]) -> bool {
        PacketPort::tx(self, buf)
    }
    fn ring_drops(&self) -> u64 {
        PacketPort::ring_drops(self)
    }
}

impl Port for TapPort {
    fn fd(&self) -> BorrowedFd<'_> {
        TapPort::fd(self)
    }
    fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&mut [u8])) -> usize {
        TapPort::rx_burst(self, max, f)
    }
    fn tx(&self, buf: &[u8]) -> bool {
        TapPort::tx(self, buf)
    }
}

fn enter_netns(ns: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{ns}")).with_context(|| format!("opening network namespace {ns}"))?;
    nix::sched::setns(f, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering network namespace {ns}"))
}

impl Forwarder {
    /// See the module contract.
    pub fn start(cfg: Config) -> Result<Forwarder> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            ab: std::array::from_fn(|_| AtomicU64::new(0)),
            ba: std::array::from_fn(|_| AtomicU64::new(0)),
            ring_drops: AtomicU64::new(0),
        });
        let (ready_tx, ready_rx) = mpsc::channel::<Result<i32>>();
        let sh = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("pk-forwarder".into())
            .spawn(move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cfg.core }) {
                    let _ = ready_tx.send(Err(anyhow!("cannot pin the forwarder to core {}", cfg.core)));
                    return;
                }
                let tid = nix::unistd::gettid().as_raw();
                match cfg.mechanism {
                    Mechanism::Packet => {
                        let ports = enter_netns(topo::NS_NODE).and_then(|()| {
                            let a = PacketPort::open(topo::HOST_A, PACKET_SLOTS).with_context(|| format!("AF_PACKET port on {}", topo::HOST_A))?;
                            let b = PacketPort::open(topo::HOST_B, PACKET_SLOTS).with_context(|| format!("AF_PACKET port on {}", topo::HOST_B))?;
                            Ok((a, b))
                        });
                        match ports {
                            Ok((a, b)) => run(a, b, &cfg, &sh, &ready_tx, tid),
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                            }
                        }
                    }
                    Mechanism::Tap => {
                        let mk = |ns: &str| -> Result<TapPort> {
                            enter_netns(ns)?;
                            TapPort::create("eth0").with_context(|| format!("tap eth0 in {ns}"))
                        };
                        match mk(topo::NS_A).and_then(|a| Ok((a, mk(topo::NS_B)?))) {
                            Ok((a, b)) => run(a, b, &cfg, &sh, &ready_tx, tid),
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                            }
                        }
                    }
                }
            })
            .context("spawning the forwarder thread")?;
        let tid = match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(tid)) => tid,
            Ok(Err(e)) => {
                let _ = handle.join();
                return Err(e);
            }
            Err(_) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(anyhow!("the forwarder thread did not start"));
            }
        };
        Ok(Forwarder { shared, tid, handle: Some(handle) })
    }

    pub fn snapshot(&self) -> Snapshot {
        let cpu_ns = std::fs::read_to_string(format!("/proc/self/task/{}/schedstat", self.tid))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
            .unwrap_or(0);
        Snapshot { ab: read(&self.shared.ab), ba: read(&self.shared.ba), cpu_ns }
    }

    /// Ends the thread (which closes the ports); returns the AF_PACKET rings' drops over the
    /// thread's whole life.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.shared.ring_drops.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Moves one burst from `from` to `to`.
fn burst<P: Port>(from: &mut P, to: &P, finish: bool, d: &mut DirStats) -> usize {
    from.rx_burst(BURST, &mut |buf: &mut [u8]| {
        d.note(buf);
        if finish {
            match vnet::finish_checksum(buf) {
                Finish::Written => d.csum_written += 1,
                Finish::SummedOnly(s) => {
                    std::hint::black_box(s);
                    d.csum_summed_only += 1;
                }
                Finish::NotPartial | Finish::BadOffsets => {}
            }
        }
        if !to.tx(buf) {
            d.tx_failed += 1;
        }
    })
}

/// Says the forwarder is ready (or why not) through `ready`, then forwards until told to stop.
fn run<P: Port>(mut a: P, mut b: P, cfg: &Config, sh: &Shared, ready: &mpsc::Sender<Result<i32>>, tid: i32) {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).and_then(|e| {
        e.add(a.fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
        e.add(b.fd(), EpollEvent::new(EpollFlags::EPOLLIN, 1))?;
        Ok(e)
    });
    let epoll = match epoll {
        Ok(e) => {
            let _ = ready.send(Ok(tid));
            e
        }
        Err(e) => {
            let _ = ready.send(Err(anyhow!("epoll on the ports: {e}")));
            return;
        }
    };
    let (mut ab, mut ba) = (DirStats::default(), DirStats::default());
    let mut drops = 0u64;
    let mut events = [EpollEvent::empty(); 2];
    let mut idle_rounds = 0u32;
    while !sh.stop.load(Ordering::Relaxed) {
        let n = burst(&mut a, &b, cfg.finish_checksums, &mut ab) + burst(&mut b, &a, cfg.finish_checksums, &mut ba);
        if n > 0 {
            publish(&sh.ab, &ab);
            publish(&sh.ba, &ba);
            idle_rounds = 0;
            continue;
        }
        idle_rounds += 1;
        if idle_rounds % 1024 == 1 {
            drops += a.ring_drops() + b.ring_drops();
            sh.ring_drops.store(drops, Ordering::Relaxed);
        }
        if !cfg.busy_poll {
            let _ = epoll.wait(&mut events, 50u16);
        }
    }
    drops += a.ring_drops() + b.ring_drops();
    sh.ring_drops.store(drops, Ordering::Relaxed);
}
