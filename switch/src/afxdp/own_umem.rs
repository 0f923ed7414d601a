//! A port socket on a small UMEM of its own, whose frames are copied to and from the worker's
//! UMEM at the port's door (`podswitch run --pod-umem-frames`, the default for pod ports).
//!
//! Why: a socket that shares its worker's UMEM on another interface makes the kernel build a
//! buffer pool over *all* of that UMEM's frames at `bind` (about 120 bytes of kernel memory per
//! frame, zeroed and initialised), so every pod port cost 5.8 ms at 16,384 frames and about
//! 23 ms at 65,536, and 4 MiB of kernel memory per pod at 32,768. A pod's CNI ADD waits for that
//! bind. On its own UMEM of a few thousand frames a socket binds in a fraction of a millisecond,
//! and an idle pod holds none of the worker's frames: its fill ring is its own.
//!
//! The cost is one copy of the packet's bytes in userspace at each door of such a port (in on
//! receive, out on transmit). On veth, where pods sit, AF_XDP runs in copy mode and the kernel
//! copies each frame anyway; the extra copy of 64 to 1,500 bytes is small beside it (measured
//! in `perf/results/`).
//!
//! Contract: the port's frames are split once: `rx_frames` live in the fill and RX rings (a
//! received frame is copied into a frame of the worker's pool and goes straight back to the fill
//! ring, so the fill ring never runs dry while the worker has frames), the other `tx_frames` are
//! free or in the TX/completion rings. [`OwnUmemRings::receive`] takes only as many frames as
//! the worker's pool can take copies of, leaving the rest on the RX ring (where the kernel
//! counts what no longer fits), so nothing is lost in userspace. [`OwnUmemRings::transmit`]
//! copies the worker's frames out and returns them to the worker's pool at once; the ledger of
//! the worker's UMEM never records this port. Nothing here allocates after `new`.
use std::os::fd::AsRawFd;

use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

use super::frames::{create_umem, UmemSpec};
use super::rings::WorkerUmem;
use super::socket::{bind, BoundQueue, CopyPolicy, RingSizes};
use super::AfXdpError;
use crate::port::{DeviceStats, FrameMemory};

/// How a pod port's own UMEM is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnUmemSpec {
    /// Frames kept in the fill ring for receive (a power of two).
    pub rx_frames: u32,
    /// Frames for transmit (at most this many in the TX ring at once).
    pub tx_frames: u32,
    pub frame_size: u32,
}

impl OwnUmemSpec {
    /// Bytes of memory (locked) one such port takes.
    pub fn bytes(&self) -> u64 {
        u64::from(self.rx_frames + self.tx_frames) * u64::from(self.frame_size)
    }
}

/// One socket and its own UMEM.
pub struct OwnUmemRings {
    rx: RxQueue,
    fill: FillQueue,
    tx: TxQueue,
    comp: CompQueue,
    /// Transmit frames neither in the TX ring nor the completion ring.
    free_tx: Vec<FrameDesc>,
    /// Received descriptors of the current burst, before they go back to the fill ring.
    scratch: Vec<FrameDesc>,
    outstanding: u32,
    zerocopy: bool,
    /// Last: dropped after the rings that refer to it.
    umem: Umem,
}

/// A bound socket on its own UMEM, as [`bind_own`] returns it.
pub struct OwnBound {
    pub rings: OwnUmemRings,
    pub fd: std::os::fd::RawFd,
    pub queue: u32,
    pub zerocopy: bool,
}

/// Makes a UMEM of `spec`'s frames and binds one socket on it to `ifname` queue `queue`; the
/// fill ring is given every receive frame before this returns.
pub fn bind_own(spec: OwnUmemSpec, ifname: &str, queue: u32, rings: RingSizes, policy: CopyPolicy, burst: usize) -> Result<OwnBound, AfXdpError> {
    let frames = spec.rx_frames + spec.tx_frames;
    let umem_spec = UmemSpec { frames, frame_size: spec.frame_size, fill_ring: spec.rx_frames, comp_ring: spec.tx_frames.next_power_of_two() };
    let (umem, descs) = create_umem(umem_spec)?;
    let BoundQueue { tx, rx, mut fill, comp, zerocopy, fd, queue, .. } = bind(&umem, ifname, queue, rings, policy)?;
    let (rx_descs, tx_descs) = descs.split_at(spec.rx_frames as usize);
    // SAFETY: these frames belong to this UMEM and nobody holds them yet; the fill ring has
    // `rx_frames` entries, so it takes them all.
    let given = unsafe { fill.produce(rx_descs) };
    if given != rx_descs.len() {
        return Err(AfXdpError::Umem(format!("the fill ring of {ifname} queue {queue} took {given} of {} frames", rx_descs.len())));
    }
    let mut free_tx = Vec::with_capacity(tx_descs.len());
    free_tx.extend_from_slice(tx_descs);
    let rings = OwnUmemRings {
        rx,
        fill,
        tx,
        comp,
        free_tx,
        scratch: vec![FrameDesc::default(); burst],
        outstanding: 0,
        zerocopy,
        umem,
    };
    Ok(OwnBound { rings, fd, queue, zerocopy })
}

impl OwnUmemRings {
    /// Takes up to `out.len()` received frames, each copied into a frame of `mem`'s pool (which
    /// the caller then holds); the port's own frames go straight back to its fill ring.
    #[inline]
    pub fn receive(&mut self, mem: &mut WorkerUmem, out: &mut [FrameDesc]) -> usize {
        let want = out.len().min(self.scratch.len()).min(mem.free_frames());
        if want == 0 {
            return 0;
        }
        // SAFETY: frames on the RX ring were given by this socket's fill ring, which is only
        // ever given frames of `self.umem`.
        let n = unsafe { self.rx.consume(&mut self.scratch[..want]) };
        let mut got = 0;
        for k in 0..n {
            // Never None: `want` is at most the pool's free frames.
            let Some(mut copy) = mem.ledger_mut().take() else { break };
            // SAFETY: the kernel handed this frame back on the RX ring and it goes back to the
            // fill ring only below, after the copy: nothing else reads or writes it meanwhile.
            let data = unsafe { self.umem.data(&self.scratch[k]) };
            let bytes = data.contents();
            mem.modify(&mut copy, |buf, _| {
                let len = bytes.len().min(buf.len());
                buf[..len].copy_from_slice(&bytes[..len]);
                ((), len)
            });
            out[got] = copy;
            got += 1;
        }
        if n > 0 {
            // SAFETY: the `n` frames came off the RX ring above and were only read; the fill
            // ring has room for every receive frame, of which these are some.
            let back = unsafe { self.fill.produce(&self.scratch[..n]) };
            debug_assert_eq!(back, n, "the fill ring holds every receive frame");
        }
        got
    }

    /// Copies `frames` (held by the caller, of `mem`) into this port's transmit frames and
    /// queues them; the copied ones go back to `mem`'s pool. Returns how many (a prefix).
    #[inline]
    pub fn transmit(&mut self, mem: &mut WorkerUmem, frames: &[FrameDesc]) -> usize {
        if self.free_tx.len() < frames.len() {
            // Completions not yet taken back may be all that stands between these and a drop.
            self.reclaim();
        }
        let room = self.tx.nb_free(frames.len() as u32) as usize;
        let n = room.min(frames.len()).min(self.free_tx.len()).min(self.scratch.len());
        if n == 0 {
            return 0;
        }
        let base = self.free_tx.len() - n;
        for (k, frame) in frames[..n].iter().enumerate() {
            let mut own = self.free_tx[base + k];
            // SAFETY: a free transmit frame: not in the TX or completion ring, so the kernel
            // does not read it, and nothing else here holds it.
            let mut data = unsafe { self.umem.data_mut(&mut own) };
            mem.read(frame, |bytes| {
                let mut cursor = data.cursor();
                let len = bytes.len().min(cursor.buf_len());
                cursor.set_pos(len);
                data.contents_mut()[..len].copy_from_slice(&bytes[..len]);
            });
            self.scratch[k] = own;
        }
        // SAFETY: the frames are this UMEM's free transmit frames, just written; the ring has
        // room for `n`, so all are produced.
        let sent = unsafe { self.tx.produce(&self.scratch[..n]) };
        debug_assert_eq!(sent, n);
        self.free_tx.truncate(base);
        self.outstanding += n as u32;
        mem.release_all(&frames[..n]);
        n
    }

    /// Takes completed transmissions back into the free transmit frames; returns how many.
    #[inline]
    pub fn reclaim(&mut self) -> usize {
        if self.outstanding == 0 {
            return 0;
        }
        let room = self.scratch.len().min(self.free_tx.capacity() - self.free_tx.len());
        // SAFETY: the scratch only receives descriptors; frames on this completion ring are
        // this UMEM's transmit frames and the kernel is done with them.
        let n = unsafe { self.comp.consume(&mut self.scratch[..room]) };
        self.free_tx.extend_from_slice(&self.scratch[..n]);
        self.outstanding -= n as u32;
        n
    }

    #[inline(always)]
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    #[inline(always)]
    pub fn needs_tx_wakeup(&self) -> bool {
        self.tx.needs_wakeup()
    }

    #[inline]
    pub fn tx_wakeup(&mut self) {
        let _ = self.tx.wakeup();
    }

    /// Wakes the driver to fill RX if the fill ring asks for it.
    #[inline]
    pub fn wake_rx(&mut self) {
        if self.fill.needs_wakeup() {
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
    }

    pub fn zerocopy(&self) -> bool {
        self.zerocopy
    }

    /// The kernel's counters of the socket.
    pub fn stats(&self) -> DeviceStats {
        super::stats::read(self.rx.fd().as_raw_fd()).unwrap_or_default()
    }
}
