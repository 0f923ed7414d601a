//! The port device interface: what a worker needs from a kind of port, and nothing more.
//!
//! A port kind (AF_XDP today, in [`crate::afxdp`]; AF_PACKET, tap or memif later) provides two
//! things, in the manner of DPDK's `rte_eth_rx_burst`/`rte_eth_tx_burst` or OVS's `netdev`:
//! - a [`FrameMemory`]: the frames one worker owns (for AF_XDP its UMEM) with the pool of free
//!   ones. The worker reads and rewrites a frame's bytes and returns frames to the pool only
//!   through it, so it never names a kind's own descriptor or memory types.
//! - a [`PortDevice`] per port and worker: receive a burst, transmit a burst (a prefix is taken,
//!   the caller keeps the rest), reclaim completed transmissions, refill the receive side, kick
//!   the transmit side, its mode and counters, and the fd to sleep on.
//!
//! Contract: every frame of a [`FrameMemory`] is in exactly one place at a time: the pool, the
//! worker's hands (a burst being processed, frames staged for a port) or one port's rings. A
//! device takes frames from the pool (refill) and from the worker (transmit) and gives them back
//! (receive, reclaim); [`FrameMemory::reclaim_port`] returns every frame a removed port held.
//! The worker is generic over the device (monomorphised: no dynamic dispatch per packet); every
//! method a worker calls per round is allocation-free and lock-free.
//!
//! - [`ledger`]: who holds each frame, and the pool; shared by every kind's memory.
//! - [`memory`]: an in-memory device with plain queues, for tests (no kernel, no `unsafe`).
use std::os::fd::RawFd;

use serde::Serialize;

use crate::tables::PortId;
use ledger::FrameLedger;

pub mod fill_allowance;
pub mod ledger;
pub mod loss_reason;
pub mod memory;

/// A descriptor of one frame: where it is in its [`FrameMemory`] and how many bytes it holds.
/// Small and `Copy`: bursts are arrays of these.
pub trait Frame: Copy + Default {
    /// Byte offset of the frame's slot in its memory (frame index × frame size).
    fn offset(&self) -> usize;
    /// Bytes of packet data in the frame.
    fn data_len(&self) -> usize;
}

/// The frames of one worker and their pool. Every kind keeps its books in a [`FrameLedger`],
/// through which the pool operations below are provided.
pub trait FrameMemory {
    type Frame: Frame;

    /// Who holds each frame, and the pool.
    fn ledger(&self) -> &FrameLedger<Self::Frame>;

    /// The same, for devices recording moves. Records must match what the rings hold: a frame
    /// released while a ring still has it would be handed out twice.
    fn ledger_mut(&mut self) -> &mut FrameLedger<Self::Frame>;

    /// Runs `f` on the received bytes of a frame the worker holds (read only).
    fn read<R>(&self, frame: &Self::Frame, f: impl FnOnce(&[u8]) -> R) -> R;

    /// Runs `f` on a frame the worker holds: its whole data area and its current length; `f`
    /// returns its result and the frame's new length (clamped to the area).
    fn modify<R>(&mut self, frame: &mut Self::Frame, f: impl FnOnce(&mut [u8], usize) -> (R, usize)) -> R;

    /// Returns a frame the worker holds to the pool.
    #[inline(always)]
    fn release(&mut self, frame: Self::Frame) {
        self.ledger_mut().put(frame);
    }

    /// Returns frames the worker holds to the pool.
    #[inline(always)]
    fn release_all(&mut self, frames: &[Self::Frame]) {
        self.ledger_mut().put_all(frames);
    }

    /// Frames in the pool now.
    #[inline(always)]
    fn free_frames(&self) -> usize {
        self.ledger().free_len()
    }

    /// Frames this memory has in all.
    fn frame_count(&self) -> usize {
        self.ledger().frame_count()
    }

    /// Puts back into the pool every frame that port `id`'s rings held; returns how many. Call
    /// only after the port's device is dropped (for AF_XDP: its socket closed).
    fn reclaim_port(&mut self, id: PortId) -> usize {
        self.ledger_mut().reclaim_port(id)
    }
}

/// How a port moves frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortMode {
    /// Frames move between device and worker without a copy of their bytes.
    pub zerocopy: bool,
    /// The kind of port, e.g. "af_xdp", "memory".
    pub mechanism: &'static str,
}

/// Frames a device lost or refused before the worker saw them (for AF_XDP the kernel's socket
/// counters): no drop reason of the switch can count these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DeviceStats {
    /// Frames dropped on receive: for AF_XDP in copy mode mostly an empty fill ring.
    pub rx_dropped: u64,
    /// Frames dropped because the receive ring was full.
    pub rx_ring_full: u64,
    /// Times the device found no frame to receive into (a frame may have been dropped each time).
    pub rx_fill_ring_empty: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Times the device found the TX ring empty when asked to send.
    pub tx_ring_empty: u64,
}

impl DeviceStats {
    /// Frames lost inside the device: dropped on receive or refused on transmit.
    pub fn lost(&self) -> u64 {
        self.rx_dropped + self.rx_ring_full + self.rx_invalid_descs + self.tx_invalid_descs
    }

    pub fn add(&mut self, o: &DeviceStats) {
        self.rx_dropped += o.rx_dropped;
        self.rx_ring_full += o.rx_ring_full;
        self.rx_fill_ring_empty += o.rx_fill_ring_empty;
        self.rx_invalid_descs += o.rx_invalid_descs;
        self.tx_invalid_descs += o.tx_invalid_descs;
        self.tx_ring_empty += o.tx_ring_empty;
    }
}

/// One queue of one port, as one worker drives it. `scratch` arguments are the worker's
/// buffers for descriptors coming back (completions); devices keep no burst-sized state of
/// their own beyond their rings.
pub trait PortDevice {
    type Memory: FrameMemory;

    /// The port this device is (the tables' port id).
    fn id(&self) -> PortId;

    /// Takes up to `out.len()` received frames; they are the worker's until it passes them on.
    fn receive(&mut self, mem: &mut Self::Memory, out: &mut [<Self::Memory as FrameMemory>::Frame]) -> usize;

    /// Queues `frames` for transmission; returns how many the device took (a prefix). The
    /// caller keeps the rest.
    fn transmit(&mut self, mem: &mut Self::Memory, frames: &[<Self::Memory as FrameMemory>::Frame]) -> usize;

    /// Moves completed transmissions back to the pool; returns how many.
    fn reclaim(&mut self, mem: &mut Self::Memory, scratch: &mut [<Self::Memory as FrameMemory>::Frame]) -> usize;

    /// Gives the receive side frames from the pool up to its fill target; returns how many.
    fn refill(&mut self, mem: &mut Self::Memory) -> usize;

    /// Sets how many frames the receive side should hold (ports were added or removed).
    fn set_fill_target(&mut self, target: u32);

    /// Asks the device to transmit what is queued, if it needs asking; returns the system calls
    /// (or equivalent) made.
    fn kick(&mut self, mem: &mut Self::Memory, scratch: &mut [<Self::Memory as FrameMemory>::Frame]) -> u32;

    /// Wakes the receive side after an empty receive, if it asks for that.
    fn wake_rx(&mut self);

    /// Frames handed to the device for transmission and not yet reclaimed.
    fn tx_outstanding(&self) -> u32;

    fn mode(&self) -> PortMode;

    /// The device's own counters of frames lost before the worker saw them.
    fn stats(&self) -> DeviceStats;

    /// The fd that becomes readable when frames arrive (idle back-off sleeps on it); `None` for
    /// devices without one.
    fn wait_fd(&self) -> Option<RawFd>;
}
