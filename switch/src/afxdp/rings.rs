//! The AF_XDP port device: a worker's UMEM as its [`FrameMemory`] and the rings of one socket
//! as a [`PortDevice`]. Safe, allocation-free operations over xsk-rs's rings.
//!
//! Contract (the invariant that makes the `unsafe` below sound): every frame of a
//! [`WorkerUmem`] is in exactly one place at a time — the worker's hands (the pool or a burst
//! being processed) or one port's fill/TX ring (recorded in its [`FrameLedger`]). Descriptors
//! only move through these methods, all of which take `&mut` of the one [`WorkerUmem`] the
//! rings were bound on, so the kernel and the worker never touch a frame at the same time. The
//! only user is [`crate::worker`], which runs on a single thread.
use std::os::fd::{AsRawFd, RawFd};

use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

use super::frames::{create_umem, UmemSpec};
use super::own_umem::{OwnBound, OwnUmemRings};
use super::socket::BoundQueue;
use super::AfXdpError;
use crate::port::fill_allowance::{self, FillAllowance};
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

    /// A view of `umem` owning only frames `mine` of `descs` (all of the UMEM's descriptors):
    /// those start in the pool; the others belong to another part and are never touched. Lets
    /// the two halves of one socket's UMEM ([`super::endpoint`]) run on two threads.
    pub fn part(umem: Umem, descs: Vec<FrameDesc>, frame_size: u32, mine: std::ops::Range<usize>) -> Self {
        Self { umem, ledger: FrameLedger::part(descs, frame_size as usize, mine) }
    }

    /// The descriptor of frame `index`, if it is this memory's and in the caller's hands (not
    /// with the kernel, not another part's).
    #[inline]
    pub fn held(&self, index: usize) -> Option<FrameDesc> {
        self.ledger.frame(index).filter(|d| self.ledger.with_worker(d))
    }

    /// The UMEM, for binding new sockets on it.
    pub fn umem(&self) -> &Umem {
        &self.umem
    }
}

impl FrameMemory for WorkerUmem {
    type Frame = FrameDesc;

    #[inline(always)]
    fn ledger(&self) -> &FrameLedger<FrameDesc> {
        &self.ledger
    }

    #[inline(always)]
    fn ledger_mut(&mut self) -> &mut FrameLedger<FrameDesc> {
        &mut self.ledger
    }

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
}

/// The transmit half of a socket: its TX and completion rings. Used by [`PortRings`] and by
/// the one-socket endpoint ([`super::endpoint`]), each with its own kick policy.
pub struct TxRings {
    tx: TxQueue,
    comp: CompQueue,
    outstanding: u32,
    zerocopy: bool,
}

impl TxRings {
    pub fn new(tx: TxQueue, comp: CompQueue, zerocopy: bool) -> Self {
        Self { tx, comp, outstanding: 0, zerocopy }
    }

    /// Frames handed to the kernel and not yet completed.
    #[inline(always)]
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    pub fn zerocopy(&self) -> bool {
        self.zerocopy
    }

    /// Free TX ring entries, up to `want`.
    #[inline]
    pub fn room(&mut self, want: u32) -> u32 {
        self.tx.nb_free(want).min(want)
    }

    /// Queues `descs` (frames `mem` holds for the caller) as port `id`'s; returns how many the
    /// ring took (a prefix). The caller keeps the rest.
    #[inline]
    pub fn transmit(&mut self, mem: &mut WorkerUmem, id: PortId, descs: &[FrameDesc]) -> usize {
        let room = self.tx.nb_free(descs.len() as u32) as usize;
        let n = room.min(descs.len());
        if n == 0 {
            return 0;
        }
        // SAFETY: the caller holds these frames (`mem`'s ledger says so: received, reclaimed
        // or never handed out) and they belong to `mem`; the ring has room for `n`, so all `n`
        // are produced.
        let sent = unsafe { self.tx.produce(&descs[..n]) };
        mem.ledger.to_port(id, &descs[..sent]);
        self.outstanding += sent as u32;
        sent
    }

    /// Takes completed frames off the completion ring into `scratch`, back in the caller's
    /// hands (not the pool); returns how many.
    #[inline]
    pub fn complete(&mut self, mem: &mut WorkerUmem, scratch: &mut [FrameDesc]) -> usize {
        if self.outstanding == 0 {
            return 0;
        }
        // SAFETY: `scratch` only receives descriptors; frames on this completion ring belong
        // to `mem` (the socket was bound on it) and the kernel is done with them.
        let n = unsafe { self.comp.consume(scratch) };
        mem.ledger.to_worker(&scratch[..n]);
        self.outstanding -= n as u32;
        n
    }

    /// Whether the ring asks for a `sendto()` (always, in copy mode, while frames wait).
    #[inline(always)]
    pub fn needs_wakeup(&self) -> bool {
        self.tx.needs_wakeup()
    }

    /// One `sendto()`: in copy mode the kernel sends up to its TX budget (32 frames by
    /// default) and completes them before returning.
    #[inline]
    pub fn wakeup(&mut self) -> std::io::Result<()> {
        self.tx.wakeup()
    }

    /// The kernel's counters of the socket.
    pub fn stats(&self) -> DeviceStats {
        super::stats::read(self.tx.fd().as_raw_fd()).unwrap_or_default()
    }
}

/// The receive half of a socket: its RX and fill rings.
pub struct RxRings {
    rx: RxQueue,
    fill: FillQueue,
    in_fill: u32,
    fill_target: u32,
    /// Entries of the fill ring.
    fill_size: u32,
    /// How much of `fill_target` this socket may hold now (grows while it is busy).
    allowance: FillAllowance,
    /// The pool is shared with other sockets: growth keeps half of it for them
    /// ([`crate::port::fill_allowance::growth_cap`]).
    shares_pool: bool,
}

impl RxRings {
    pub fn new(rx: RxQueue, mut fill: FillQueue, fill_target: u32) -> Self {
        // Nothing is on the ring yet: every slot is free.
        let fill_size = fill.nb_free_exact();
        Self { rx, fill, in_fill: 0, fill_target, fill_size, allowance: FillAllowance::default(), shares_pool: true }
    }

    /// As [`Self::new`], for a socket that owns its frames alone: its fill ring holds the
    /// whole target from the start.
    pub fn owning_its_frames(rx: RxQueue, fill: FillQueue, fill_target: u32) -> Self {
        Self { allowance: FillAllowance::whole(fill_target), shares_pool: false, ..Self::new(rx, fill, fill_target) }
    }

    /// Takes up to `out.len()` received frames into the caller's hands.
    #[inline]
    pub fn receive(&mut self, mem: &mut WorkerUmem, out: &mut [FrameDesc]) -> usize {
        // SAFETY: frames on the RX ring were given by this fill ring, only ever given frames
        // of `mem`.
        let n = unsafe { self.rx.consume(out) };
        mem.ledger.to_worker(&out[..n]);
        if n > 0 && self.allowance.can_grow(self.fill_target) {
            // What the kernel has not used yet of what the fill ring was given.
            let left = self.fill_size.saturating_sub(self.fill.nb_free_exact());
            let cap = match self.shares_pool {
                true => fill_allowance::growth_cap(self.fill_target, self.in_fill, mem.ledger.free_len() as u32, mem.ledger.pool_size() as u32),
                false => self.fill_target,
            };
            self.allowance.received(n as u32, left, cap);
        }
        self.in_fill = self.in_fill.saturating_sub(n as u32);
        n
    }

    /// Tops the fill ring up to the fill target (as far as the socket's allowance goes:
    /// [`FillAllowance`]) from `mem`'s pool as port `id`'s, in batches of 16 or more; returns
    /// how many were added.
    #[inline]
    pub fn refill(&mut self, mem: &mut WorkerUmem, id: PortId) -> usize {
        let limit = self.allowance.limit(self.fill_target);
        let want = limit.saturating_sub(self.in_fill) as usize;
        if want < 16 && self.in_fill > 0 {
            return 0; // refill in batches
        }
        let batch = mem.ledger.peek_top(want);
        if batch.is_empty() {
            return 0;
        }
        // SAFETY: the frames are in the pool (held by nobody) and belong to `mem`.
        // `produce` takes all of them or none, so the `n` taken are the pool's top `n`.
        let n = unsafe { self.fill.produce(batch) };
        mem.ledger.consumed_by(id, n);
        self.in_fill += n as u32;
        n
    }

    pub fn set_fill_target(&mut self, target: u32) {
        self.fill_target = target;
    }

    /// Wakes the driver to fill RX if the fill ring asks for it.
    #[inline]
    pub fn wake(&mut self) {
        if self.fill.needs_wakeup() {
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
    }

    /// Waits up to `timeout_ms` for a frame to read; true if there is one.
    pub fn wait(&mut self, timeout_ms: i32) -> bool {
        self.rx.poll(timeout_ms).unwrap_or(false)
    }

    /// The kernel's counters of the socket.
    pub fn stats(&self) -> DeviceStats {
        super::stats::read(self.rx.fd().as_raw_fd()).unwrap_or_default()
    }
}

/// The rings of one port on one worker: the port device the dataplane's workers drive. Its
/// socket is bound either on the worker's UMEM (frames move between ports without a copy) or
/// on a UMEM of its own ([`OwnUmemRings`]: copies at the door, a cheap bind).
pub struct PortRings {
    id: PortId,
    frames: PortFrames,
    fd: RawFd,
}

/// Where a port's frames live.
enum PortFrames {
    /// On the worker's UMEM.
    Shared { tx: TxRings, rx: RxRings },
    /// On the port's own UMEM.
    Own(OwnUmemRings),
}

impl PortRings {
    /// A socket bound on the worker's UMEM.
    pub fn new(id: PortId, q: BoundQueue, fill_target: u32) -> Self {
        let BoundQueue { tx, rx, fill, comp, zerocopy, fd, .. } = q;
        Self { id, frames: PortFrames::Shared { tx: TxRings::new(tx, comp, zerocopy), rx: RxRings::new(rx, fill, fill_target) }, fd }
    }

    /// A socket bound on a UMEM of its own.
    pub fn own(id: PortId, b: OwnBound) -> Self {
        Self { id, fd: b.fd, frames: PortFrames::Own(b.rings) }
    }

    #[inline]
    fn outstanding(&self) -> u32 {
        match &self.frames {
            PortFrames::Shared { tx, .. } => tx.outstanding(),
            PortFrames::Own(o) => o.outstanding(),
        }
    }

    #[inline]
    fn needs_tx_wakeup(&self) -> bool {
        match &self.frames {
            PortFrames::Shared { tx, .. } => tx.needs_wakeup(),
            PortFrames::Own(o) => o.needs_tx_wakeup(),
        }
    }

    #[inline]
    fn tx_wakeup(&mut self) {
        match &mut self.frames {
            PortFrames::Shared { tx, .. } => {
                let _ = tx.wakeup();
            }
            PortFrames::Own(o) => o.tx_wakeup(),
        }
    }

    fn zerocopy(&self) -> bool {
        match &self.frames {
            PortFrames::Shared { tx, .. } => tx.zerocopy(),
            PortFrames::Own(o) => o.zerocopy(),
        }
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
        match &mut self.frames {
            PortFrames::Shared { tx, .. } => {
                let n = tx.complete(mem, scratch);
                mem.ledger.put_all(&scratch[..n]);
                n
            }
            PortFrames::Own(o) => o.reclaim(),
        }
    }

    #[inline]
    fn refill(&mut self, mem: &mut WorkerUmem) -> usize {
        match &mut self.frames {
            PortFrames::Shared { rx, .. } => rx.refill(mem, self.id),
            // Its receive frames go back to its fill ring as they are copied out.
            PortFrames::Own(_) => 0,
        }
    }

    fn set_fill_target(&mut self, target: u32) {
        if let PortFrames::Shared { rx, .. } = &mut self.frames {
            rx.set_fill_target(target);
        }
    }

    #[inline]
    fn receive(&mut self, mem: &mut WorkerUmem, out: &mut [FrameDesc]) -> usize {
        match &mut self.frames {
            PortFrames::Shared { rx, .. } => rx.receive(mem, out),
            PortFrames::Own(o) => o.receive(mem, out),
        }
    }

    #[inline]
    fn transmit(&mut self, mem: &mut WorkerUmem, descs: &[FrameDesc]) -> usize {
        match &mut self.frames {
            PortFrames::Shared { tx, .. } => tx.transmit(mem, self.id, descs),
            PortFrames::Own(o) => o.transmit(mem, descs),
        }
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
        while self.outstanding() > 0 && self.needs_tx_wakeup() {
            self.tx_wakeup();
            kicks += 1;
            if self.zerocopy() || kicks == MAX_COPY_MODE_KICKS {
                break;
            }
            let before = self.outstanding();
            self.reclaim(mem, scratch);
            if self.outstanding() == before {
                break; // the kernel took nothing more: the device is backed up
            }
        }
        kicks
    }

    #[inline]
    fn wake_rx(&mut self) {
        match &mut self.frames {
            PortFrames::Shared { rx, .. } => rx.wake(),
            PortFrames::Own(o) => o.wake_rx(),
        }
    }

    fn tx_outstanding(&self) -> u32 {
        self.outstanding()
    }

    fn mode(&self) -> PortMode {
        PortMode { zerocopy: self.zerocopy(), mechanism: "af_xdp" }
    }

    fn stats(&self) -> DeviceStats {
        super::stats::read(self.fd).unwrap_or_default()
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.fd)
    }
}

/// Sleeps until one of `fds` is readable or `timeout_ms` passes (idle back-off); returns
/// poll(2)'s answer: how many fds have events (their `revents` say which), 0 on timeout, -1
/// when interrupted or failed.
pub fn wait_readable(fds: &mut [libc::pollfd], timeout_ms: i32) -> i32 {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd of the given length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) }
}
