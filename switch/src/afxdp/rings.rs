//! The AF_XDP port device: a worker's UMEM as its [`FrameMemory`] and the rings of one socket
//! as a [`PortDevice`]. Safe, allocation-free operations over xsk-rs's rings.
//!
//! Contract (the invariant that makes the `unsafe` below sound): every frame of a
//! [`WorkerUmem`] is in exactly one place at a time — the worker's hands (the pool or a burst
//! being processed) or one port's fill/TX ring (recorded in its [`FrameLedger`]). Descriptors
//! only move through these methods, all of which take `&mut` of the one [`WorkerUmem`] the
//! rings were bound on, so the kernel and the worker never touch a frame at the same time. The
//! only user is [`crate::worker`], which runs on a single thread.
use std::os::fd::RawFd;

use xsk_rs::{FrameDesc, Umem};

use super::frames::{create_umem, UmemSpec};
use super::socket::BoundQueue;
use super::AfXdpError;
use crate::port::ledger::FrameLedger;
use crate::port::{DeviceStats, Frame, FrameMemory, PortDevice, PortMode};
use crate::tables::PortId;

impl Frame for FrameDesc {
    #[inline(always)]
    fn offset(&self) -> usize {
        self.addr()
    }
    #[inline(always)]
    fn data_len(&self) -> usize {
        self.lengths().data()
    }
}

/// A worker's UMEM with its free frames and who holds each frame.
pub struct WorkerUmem {
    umem: Umem,
    ledger: FrameLedger<FrameDesc>,
}

impl WorkerUmem {
    pub fn new(spec: UmemSpec) -> Result<Self, AfXdpError> {
        let (umem, descs) = create_umem(spec)?;
        Ok(Self { umem, ledger: FrameLedger::new(descs, spec.frame_size as usize) })
    }

    /// The UMEM, for binding new sockets on it.
    pub fn umem(&self) -> &Umem {
        &self.umem
    }
}

impl FrameMemory for WorkerUmem {
    type Frame = FrameDesc;

    #[inline(always)]
    fn read<R>(&self, desc: &FrameDesc, f: impl FnOnce(&[u8]) -> R) -> R {
        debug_assert!(self.ledger.with_worker(desc));
        // SAFETY: the module invariant: the worker holds the frame (it came out of an RX or
        // completion ring of this UMEM, or the pool, and was not handed to any ring since), so
        // neither the kernel nor other code writes it now.
        let data = unsafe { self.umem.data(desc) };
        f(data.contents())
    }

    #[inline(always)]
    fn modify<R>(&mut self, desc: &mut FrameDesc, f: impl FnOnce(&mut [u8], usize) -> (R, usize)) -> R {
        debug_assert!(self.ledger.with_worker(desc));
        // SAFETY: the module invariant: `desc` came out of an RX or completion ring (or the
        // pool) of this UMEM and has not been handed back to any ring, so neither the kernel
        // nor other code accesses the frame now.
        let mut data = unsafe { self.umem.data_mut(desc) };
        let len = data.contents().len();
        let mut cursor = data.cursor();
        let cap = cursor.buf_len();
        cursor.set_pos(cap);
        let (r, new_len) = f(data.contents_mut(), len);
        data.cursor().set_pos(new_len);
        r
    }

    #[inline]
    fn release(&mut self, frame: FrameDesc) {
        self.ledger.put(frame);
    }

    #[inline]
    fn release_all(&mut self, frames: &[FrameDesc]) {
        self.ledger.put_all(frames);
    }

    #[inline]
    fn free_frames(&self) -> usize {
        self.ledger.free_len()
    }

    fn frame_count(&self) -> usize {
        self.ledger.frame_count()
    }

    fn reclaim_port(&mut self, id: PortId) -> usize {
        self.ledger.reclaim_port(id)
    }
}

/// The rings of one port on one worker.
pub struct PortRings {
    id: PortId,
    q: BoundQueue,
    in_fill: u32,
    tx_outstanding: u32,
    fill_target: u32,
}

impl PortRings {
    pub fn new(id: PortId, q: BoundQueue, fill_target: u32) -> Self {
        Self { id, q, in_fill: 0, tx_outstanding: 0, fill_target }
    }

    pub fn bound(&self) -> &BoundQueue {
        &self.q
    }
}

impl PortDevice for PortRings {
    type Memory = WorkerUmem;

    #[inline(always)]
    fn id(&self) -> PortId {
        self.id
    }

    #[inline]
    fn reclaim(&mut self, mem: &mut WorkerUmem, scratch: &mut [FrameDesc]) -> usize {
        if self.tx_outstanding == 0 {
            return 0;
        }
        // SAFETY: `scratch` only receives descriptors; frames on this completion ring belong
        // to `mem` (the socket was bound on it) and the kernel is done with them.
        let n = unsafe { self.q.comp.consume(scratch) };
        mem.ledger.to_worker(&scratch[..n]);
        mem.ledger.put_all(&scratch[..n]);
        self.tx_outstanding -= n as u32;
        n
    }

    /// Tops the fill ring up to `fill_target` from the pool, in batches of 16 or more.
    #[inline]
    fn refill(&mut self, mem: &mut WorkerUmem) -> usize {
        let want = self.fill_target.saturating_sub(self.in_fill) as usize;
        if want < 16 && self.in_fill > 0 {
            return 0; // refill in batches
        }
        let batch = mem.ledger.peek_top(want);
        if batch.is_empty() {
            return 0;
        }
        // SAFETY: the frames are in the pool (held by nobody) and belong to `mem`.
        // `produce` takes all of them or none, so the `n` taken are the pool's top `n`.
        let n = unsafe { self.q.fill.produce(batch) };
        mem.ledger.consumed_by(self.id, n);
        self.in_fill += n as u32;
        n
    }

    fn set_fill_target(&mut self, target: u32) {
        self.fill_target = target;
    }

    #[inline]
    fn receive(&mut self, mem: &mut WorkerUmem, out: &mut [FrameDesc]) -> usize {
        // SAFETY: frames on the RX ring were given by this port's fill ring (of `mem`).
        let n = unsafe { self.q.rx.consume(out) };
        mem.ledger.to_worker(&out[..n]);
        self.in_fill = self.in_fill.saturating_sub(n as u32);
        n
    }

    #[inline]
    fn transmit(&mut self, mem: &mut WorkerUmem, descs: &[FrameDesc]) -> usize {
        let room = self.q.tx.nb_free(descs.len() as u32) as usize;
        let n = room.min(descs.len());
        if n == 0 {
            return 0;
        }
        // SAFETY: the worker holds these frames (received or reclaimed) and they belong to
        // `mem`; the ring has room for `n`, so all `n` are produced.
        let sent = unsafe { self.q.tx.produce(&descs[..n]) };
        mem.ledger.to_port(self.id, &descs[..sent]);
        self.tx_outstanding += sent as u32;
        sent
    }

    /// Asks the kernel to transmit if the ring says it needs that; returns the system calls made.
    ///
    /// In copy mode the kernel transmits only inside `sendto()`, at most 32 frames a call
    /// (its TX batch), and completes them before returning. So this kicks until the ring is
    /// drained (bounded): otherwise the worker takes in more per round than one kick sends and
    /// pays the pipeline for frames that then die on a full TX ring. In zero-copy mode the
    /// driver transmits on its own: one kick when asked.
    #[inline]
    fn kick(&mut self, mem: &mut WorkerUmem, scratch: &mut [FrameDesc]) -> u32 {
        const MAX_COPY_MODE_KICKS: u32 = 8;
        let mut kicks = 0;
        while self.tx_outstanding > 0 && self.q.tx.needs_wakeup() {
            let _ = self.q.tx.wakeup();
            kicks += 1;
            if self.q.zerocopy || kicks == MAX_COPY_MODE_KICKS {
                break;
            }
            let before = self.tx_outstanding;
            self.reclaim(mem, scratch);
            if self.tx_outstanding == before {
                break; // the kernel took nothing more: the device is backed up
            }
        }
        kicks
    }

    /// Wakes the driver to fill RX if the fill ring asks for it.
    #[inline]
    fn wake_rx(&mut self) {
        if self.q.fill.needs_wakeup() {
            let _ = self.q.fill.wakeup(self.q.rx.fd_mut(), 0);
        }
    }

    fn tx_outstanding(&self) -> u32 {
        self.tx_outstanding
    }

    fn mode(&self) -> PortMode {
        PortMode { zerocopy: self.q.zerocopy, mechanism: "af_xdp" }
    }

    fn stats(&self) -> DeviceStats {
        super::stats::read(self.q.fd).unwrap_or_default()
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.q.fd)
    }
}

/// Sleeps until one of `fds` is readable or `timeout_ms` passes (idle back-off).
pub fn wait_readable(fds: &mut [libc::pollfd], timeout_ms: i32) {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd of the given length.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms);
    }
}
