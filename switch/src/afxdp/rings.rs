//! Safe, allocation-free operations on a worker's UMEM and on the rings of its ports.
//!
//! Contract (the invariant that makes the `unsafe` below sound): every frame of a
//! [`WorkerUmem`] is in exactly one place at a time — the worker's hands (the pool or a burst
//! being processed) or one port's fill/TX ring (recorded in `owner`). Descriptors only move
//! through these methods, all of which take `&mut` of the one [`WorkerUmem`] the rings were
//! bound on, so the kernel and the worker never touch a frame at the same time. The only user
//! is [`crate::worker`], which runs on a single thread.
use xsk_rs::{FrameDesc, Umem};

use super::frames::{create_umem, FramePool, UmemSpec};
use super::socket::BoundQueue;
use super::AfXdpError;
use crate::tables::PortId;

const WITH_WORKER: u16 = 0;

/// A worker's UMEM with its free frames and who holds each frame.
pub struct WorkerUmem {
    umem: Umem,
    pub(crate) pool: FramePool,
    /// Descriptor of every frame, by frame index, to re-create lost ones on port removal.
    all: Vec<FrameDesc>,
    /// `WITH_WORKER`, or 1 + the id of the port whose fill or TX ring holds the frame.
    owner: Vec<u16>,
    frame_size: usize,
}

impl WorkerUmem {
    pub fn new(spec: UmemSpec) -> Result<Self, AfXdpError> {
        let (umem, descs) = create_umem(spec)?;
        let owner = vec![WITH_WORKER; descs.len()];
        let mut pool_descs = Vec::with_capacity(descs.len());
        pool_descs.extend_from_slice(&descs);
        Ok(Self { umem, pool: FramePool::new(pool_descs), all: descs, owner, frame_size: spec.frame_size as usize })
    }

    /// The UMEM, for binding new sockets on it.
    pub fn umem(&self) -> &Umem {
        &self.umem
    }

    pub fn frame_count(&self) -> usize {
        self.all.len()
    }

    #[inline(always)]
    fn index(&self, desc: &FrameDesc) -> usize {
        desc.addr() / self.frame_size
    }

    /// Runs `f` on the bytes of a frame the worker holds: the frame's whole data area and its
    /// current length; `f` returns its result and the new length (clamped to the area).
    #[inline(always)]
    pub(crate) fn with_frame<R>(&self, desc: &mut FrameDesc, f: impl FnOnce(&mut [u8], usize) -> (R, usize)) -> R {
        debug_assert_eq!(self.owner[self.index(desc)], WITH_WORKER);
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

    /// Runs `f` on the received bytes of a frame the worker holds (read only).
    #[inline(always)]
    pub(crate) fn read_frame<R>(&self, desc: &FrameDesc, f: impl FnOnce(&[u8]) -> R) -> R {
        debug_assert_eq!(self.owner[self.index(desc)], WITH_WORKER);
        // SAFETY: as in `with_frame`: the worker holds the frame, so neither the kernel nor
        // other code writes it now.
        let data = unsafe { self.umem.data(desc) };
        f(data.contents())
    }

    /// Puts back into the pool every frame that port `id`'s rings held. Call only after the
    /// port's socket is closed (the kernel has let go of its rings).
    pub(crate) fn reclaim_port(&mut self, id: PortId) -> usize {
        let tag = id + 1;
        let mut n = 0;
        for i in 0..self.owner.len() {
            if self.owner[i] == tag {
                self.owner[i] = WITH_WORKER;
                self.pool.put(self.all[i]);
                n += 1;
            }
        }
        n
    }
}

/// The rings of one port on one worker.
pub struct PortRings {
    pub(crate) id: PortId,
    q: BoundQueue,
    in_fill: u32,
    tx_outstanding: u32,
    pub(crate) fill_target: u32,
}

impl PortRings {
    pub fn new(id: PortId, q: BoundQueue, fill_target: u32) -> Self {
        Self { id, q, in_fill: 0, tx_outstanding: 0, fill_target }
    }

    pub fn bound(&self) -> &BoundQueue {
        &self.q
    }

    pub fn tx_outstanding(&self) -> u32 {
        self.tx_outstanding
    }

    /// Moves completed TX frames back to the pool; returns how many.
    #[inline]
    pub(crate) fn reclaim(&mut self, mem: &mut WorkerUmem, scratch: &mut [FrameDesc]) -> usize {
        if self.tx_outstanding == 0 {
            return 0;
        }
        // SAFETY: `scratch` only receives descriptors; frames on this completion ring belong
        // to `mem` (the socket was bound on it) and the kernel is done with them.
        let n = unsafe { self.q.comp.consume(scratch) };
        for d in &scratch[..n] {
            let i = mem.index(d);
            mem.owner[i] = WITH_WORKER;
        }
        mem.pool.put_all(&scratch[..n]);
        self.tx_outstanding -= n as u32;
        n
    }

    /// Tops the fill ring up to `fill_target` from the pool; returns how many were added.
    #[inline]
    pub(crate) fn refill(&mut self, mem: &mut WorkerUmem) -> usize {
        let want = self.fill_target.saturating_sub(self.in_fill) as usize;
        if want < 16 && self.in_fill > 0 {
            return 0; // refill in batches
        }
        let batch = mem.pool.peek_top(want);
        if batch.is_empty() {
            return 0;
        }
        // SAFETY: the frames are in the pool (held by nobody) and belong to `mem`.
        let n = unsafe { self.q.fill.produce(batch) };
        let tag = self.id + 1;
        for d in &batch[..n] {
            let i = d.addr() / mem.frame_size;
            mem.owner[i] = tag;
        }
        mem.pool.consumed(n);
        self.in_fill += n as u32;
        n
    }

    /// Takes up to `out.len()` received frames; they are the worker's until it passes them on.
    #[inline]
    pub(crate) fn receive(&mut self, mem: &mut WorkerUmem, out: &mut [FrameDesc]) -> usize {
        // SAFETY: frames on the RX ring were given by this port's fill ring (of `mem`).
        let n = unsafe { self.q.rx.consume(out) };
        for d in &out[..n] {
            let i = mem.index(d);
            mem.owner[i] = WITH_WORKER;
        }
        self.in_fill = self.in_fill.saturating_sub(n as u32);
        n
    }

    /// Queues `descs` for transmission; returns how many the TX ring took (a prefix). The
    /// caller keeps the rest.
    #[inline]
    pub(crate) fn transmit(&mut self, mem: &mut WorkerUmem, descs: &[FrameDesc]) -> usize {
        let room = self.q.tx.nb_free(descs.len() as u32) as usize;
        let n = room.min(descs.len());
        if n == 0 {
            return 0;
        }
        // SAFETY: the worker holds these frames (received or reclaimed) and they belong to
        // `mem`; the ring has room for `n`, so all `n` are produced.
        let sent = unsafe { self.q.tx.produce(&descs[..n]) };
        let tag = self.id + 1;
        for d in &descs[..sent] {
            let i = mem.index(d);
            mem.owner[i] = tag;
        }
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
    pub(crate) fn kick_tx(&mut self, mem: &mut WorkerUmem, scratch: &mut [FrameDesc]) -> u32 {
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
    pub(crate) fn wake_fill(&mut self) {
        if self.q.fill.needs_wakeup() {
            let _ = self.q.fill.wakeup(self.q.rx.fd_mut(), 0);
        }
    }

    /// The fd to wait on for received frames.
    pub fn fd(&self) -> i32 {
        self.q.fd
    }
}

/// Sleeps until one of `fds` is readable or `timeout_ms` passes (idle back-off).
pub fn wait_readable(fds: &mut [libc::pollfd], timeout_ms: i32) {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd of the given length.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms);
    }
}
