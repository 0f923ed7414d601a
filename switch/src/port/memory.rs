//! An in-memory port device: rings are plain queues, frames live in a `Vec<u8>`, and the "wire"
//! is the test that drives it. Lets worker behaviour (staging, flush, a full TX ring, a port
//! removed while it holds frames) be tested exactly, without a kernel.
//!
//! Contract: the same as an AF_XDP port, without the kernel. A [`MemoryPort`] has a fill queue
//! topped up from the pool by [`PortDevice::refill`], an RX queue that [`MemoryPort::arrive`]
//! moves a fill frame into (the bytes copied in, as a copy-mode NIC would), a TX queue of at
//! most `tx_capacity` frames ([`PortDevice::transmit`] takes what fits, a prefix) and a
//! completion queue that [`MemoryPort::depart`] moves transmitted frames to (handing their
//! bytes to the test); [`PortDevice::reclaim`] returns completions to the pool. Every move is
//! recorded in the pool's [`FrameLedger`], so a port dropped with frames in its queues gives
//! them all back through [`FrameMemory::reclaim_port`]. Kicks do nothing and count 0 (the test
//! decides when frames leave). Queues are allocated at creation with room for every frame, so
//! the worker-facing methods never allocate.
use std::collections::VecDeque;
use std::os::fd::RawFd;

use super::ledger::FrameLedger;
use super::{DeviceStats, Frame, FrameMemory, PortDevice, PortMode};
use crate::tables::PortId;

/// A frame of a [`MemoryPool`]: its slot's offset and its length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemFrame {
    offset: u32,
    len: u32,
}

impl Frame for MemFrame {
    #[inline(always)]
    fn offset(&self) -> usize {
        self.offset as usize
    }
    #[inline(always)]
    fn data_len(&self) -> usize {
        self.len as usize
    }
}

/// A worker's frames in ordinary memory.
#[derive(Debug)]
pub struct MemoryPool {
    bytes: Vec<u8>,
    frame_size: usize,
    ledger: FrameLedger<MemFrame>,
}

impl MemoryPool {
    /// `frames` frames of `frame_size` bytes, all in the pool.
    pub fn new(frames: u32, frame_size: u32) -> Self {
        let all = (0..frames).map(|i| MemFrame { offset: i * frame_size, len: 0 }).collect();
        Self {
            bytes: vec![0; frames as usize * frame_size as usize],
            frame_size: frame_size as usize,
            ledger: FrameLedger::new(all, frame_size as usize),
        }
    }

    /// Takes a free frame out of the pool into the caller's hands (tests that stage frames
    /// themselves); give it back with [`FrameMemory::release`].
    pub fn take(&mut self) -> Option<MemFrame> {
        self.ledger.take()
    }

    fn slot(&self, frame: &MemFrame) -> &[u8] {
        let at = frame.offset();
        &self.bytes[at..at + self.frame_size]
    }

    fn slot_mut(&mut self, frame: &MemFrame) -> &mut [u8] {
        let at = frame.offset();
        &mut self.bytes[at..at + self.frame_size]
    }
}

impl FrameMemory for MemoryPool {
    type Frame = MemFrame;

    #[inline(always)]
    fn ledger(&self) -> &FrameLedger<MemFrame> {
        &self.ledger
    }

    #[inline(always)]
    fn ledger_mut(&mut self) -> &mut FrameLedger<MemFrame> {
        &mut self.ledger
    }

    fn read<R>(&self, frame: &MemFrame, f: impl FnOnce(&[u8]) -> R) -> R {
        debug_assert!(self.ledger.with_worker(frame));
        f(&self.slot(frame)[..frame.data_len()])
    }

    fn modify<R>(&mut self, frame: &mut MemFrame, f: impl FnOnce(&mut [u8], usize) -> (R, usize)) -> R {
        debug_assert!(self.ledger.with_worker(frame));
        let len = frame.data_len();
        let slot = self.slot_mut(frame);
        let cap = slot.len();
        let (r, new_len) = f(slot, len);
        frame.len = new_len.min(cap) as u32;
        r
    }
}

/// One port whose wire is the test.
#[derive(Debug)]
pub struct MemoryPort {
    id: PortId,
    fill: VecDeque<MemFrame>,
    rx: VecDeque<MemFrame>,
    tx: VecDeque<MemFrame>,
    comp: VecDeque<MemFrame>,
    fill_target: u32,
    tx_capacity: usize,
    stats: DeviceStats,
}

impl MemoryPort {
    /// Port `id` on `mem`, whose TX queue takes at most `tx_capacity` frames and whose fill
    /// queue is topped up to `fill_target`.
    pub fn new(id: PortId, mem: &MemoryPool, tx_capacity: usize, fill_target: u32) -> Self {
        let n = mem.frame_count();
        Self {
            id,
            fill: VecDeque::with_capacity(n),
            rx: VecDeque::with_capacity(n),
            tx: VecDeque::with_capacity(n),
            comp: VecDeque::with_capacity(n),
            fill_target,
            tx_capacity,
            stats: DeviceStats::default(),
        }
    }

    /// A frame arrives from the wire: it goes into the next fill frame and onto the RX queue.
    /// False (and counted as `rx_dropped` and `rx_fill_ring_empty`) when the fill queue is
    /// empty, as the kernel does; frames longer than a slot are truncated.
    pub fn arrive(&mut self, mem: &mut MemoryPool, bytes: &[u8]) -> bool {
        let Some(mut frame) = self.fill.pop_front() else {
            self.stats.rx_dropped += 1;
            self.stats.rx_fill_ring_empty += 1;
            return false;
        };
        let slot = mem.slot_mut(&frame);
        let n = bytes.len().min(slot.len());
        slot[..n].copy_from_slice(&bytes[..n]);
        frame.len = n as u32;
        self.rx.push_back(frame);
        true
    }

    /// Everything queued for transmission leaves on the wire, in order: returns the frames'
    /// bytes; the frames wait on the completion queue for [`PortDevice::reclaim`].
    pub fn depart(&mut self, mem: &MemoryPool) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(self.tx.len());
        while let Some(frame) = self.tx.pop_front() {
            out.push(mem.slot(&frame)[..frame.data_len()].to_vec());
            self.comp.push_back(frame);
        }
        out
    }

    /// Frames on the TX queue (transmitted by the worker, not yet departed).
    pub fn queued_tx(&self) -> usize {
        self.tx.len()
    }

    /// Frames on the fill queue (ready to receive into).
    pub fn in_fill(&self) -> usize {
        self.fill.len()
    }

    /// Frames in all four queues.
    pub fn held(&self) -> usize {
        self.fill.len() + self.rx.len() + self.tx.len() + self.comp.len()
    }
}

impl PortDevice for MemoryPort {
    type Memory = MemoryPool;

    fn id(&self) -> PortId {
        self.id
    }

    fn receive(&mut self, mem: &mut MemoryPool, out: &mut [MemFrame]) -> usize {
        let n = out.len().min(self.rx.len());
        for (slot, frame) in out.iter_mut().zip(self.rx.drain(..n)) {
            *slot = frame;
        }
        mem.ledger.to_worker(&out[..n]);
        n
    }

    fn transmit(&mut self, mem: &mut MemoryPool, frames: &[MemFrame]) -> usize {
        let n = frames.len().min(self.tx_capacity - self.tx.len());
        self.tx.extend(&frames[..n]);
        mem.ledger.to_port(self.id, &frames[..n]);
        n
    }

    fn reclaim(&mut self, mem: &mut MemoryPool, scratch: &mut [MemFrame]) -> usize {
        let n = scratch.len().min(self.comp.len());
        for (slot, frame) in scratch.iter_mut().zip(self.comp.drain(..n)) {
            *slot = frame;
        }
        mem.ledger.to_worker(&scratch[..n]);
        mem.ledger.put_all(&scratch[..n]);
        n
    }

    fn refill(&mut self, mem: &mut MemoryPool) -> usize {
        let want = (self.fill_target as usize).saturating_sub(self.fill.len());
        let batch = mem.ledger.peek_top(want);
        let n = batch.len();
        self.fill.extend(batch);
        mem.ledger.consumed_by(self.id, n);
        n
    }

    fn set_fill_target(&mut self, target: u32) {
        self.fill_target = target;
    }

    fn kick(&mut self, _mem: &mut MemoryPool, _scratch: &mut [MemFrame]) -> u32 {
        0
    }

    fn wake_rx(&mut self) {}

    fn tx_outstanding(&self) -> u32 {
        (self.tx.len() + self.comp.len()) as u32
    }

    fn mode(&self) -> PortMode {
        PortMode { zerocopy: true, mechanism: "memory" }
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }

    fn wait_fd(&self) -> Option<RawFd> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_goes_round_from_pool_to_wire_and_back() {
        let mut mem = MemoryPool::new(8, 256);
        let mut port = MemoryPort::new(3, &mem, 2, 4);
        assert_eq!(port.refill(&mut mem), 4);
        assert_eq!(mem.free_frames(), 4);
        assert!(port.arrive(&mut mem, b"hello"));
        let mut rx = [MemFrame::default(); 4];
        assert_eq!(port.receive(&mut mem, &mut rx), 1);
        assert_eq!(mem.read(&rx[0], <[u8]>::to_vec), b"hello");
        mem.modify(&mut rx[0], |b, len| {
            b[len] = b'!';
            ((), len + 1)
        });
        // A TX queue of 2 takes a prefix of 3.
        let extra = [rx[0], mem.take().unwrap(), mem.take().unwrap()];
        assert_eq!(port.transmit(&mut mem, &extra), 2);
        mem.release(extra[2]);
        assert_eq!(port.depart(&mem)[0], b"hello!");
        let mut scratch = [MemFrame::default(); 8];
        assert_eq!(port.reclaim(&mut mem, &mut scratch), 2);
        // Three frames are still in the fill queue; dropping the port and reclaiming returns them.
        assert_eq!(port.held(), 3);
        drop(port);
        assert_eq!(mem.reclaim_port(3), 3);
        assert_eq!(mem.free_frames(), 8);
    }

    #[test]
    fn a_frame_arriving_on_an_empty_fill_queue_is_dropped_and_counted() {
        let mut mem = MemoryPool::new(4, 256);
        let mut port = MemoryPort::new(0, &mem, 4, 0);
        assert!(!port.arrive(&mut mem, b"x"));
        assert_eq!(port.stats().rx_dropped, 1);
    }
}
