//! Counters the workers write and the control thread reads.
//!
//! Contract: every counter has exactly one writer (the worker that owns it), which updates it
//! with a plain relaxed load and store (no locked instruction on the hot path); readers sum
//! relaxed loads and may see a value a few packets old. Each block sits on its own cache line.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::drop_reason::{DropReason, DROP_REASON_SLOTS};

/// A single-writer counter.
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    /// Overwrites the value. Only the owning worker may call this.
    #[inline(always)]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Drop counters of one worker, by reason.
#[derive(Debug)]
#[repr(align(64))]
pub struct DropCounters {
    by_reason: [Counter; DROP_REASON_SLOTS],
}

impl Default for DropCounters {
    fn default() -> Self {
        Self { by_reason: std::array::from_fn(|_| Counter::default()) }
    }
}

impl DropCounters {
    #[inline(always)]
    pub fn count(&self, reason: DropReason) {
        self.by_reason[reason as usize].add(1);
    }
    pub fn get(&self, reason: DropReason) -> u64 {
        self.by_reason[reason as usize].get()
    }
}

/// Counters of one (port, queue) as seen by the worker that owns it.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct PortQueueCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    /// Frames received here that the pipeline dropped (any reason).
    pub rx_dropped: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    /// Frames meant for this port that did not fit its TX ring.
    pub tx_dropped: Counter,
    /// TX wakeups (sendto) issued, which is what copy mode costs in system calls.
    pub tx_kicks: Counter,
}

/// Totals of one port over its queues.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct PortTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
    pub tx_kicks: u64,
}

impl PortTotals {
    pub fn add(&mut self, c: &PortQueueCounters) {
        self.rx_packets += c.rx_packets.get();
        self.rx_bytes += c.rx_bytes.get();
        self.rx_dropped += c.rx_dropped.get();
        self.tx_packets += c.tx_packets.get();
        self.tx_bytes += c.tx_bytes.get();
        self.tx_dropped += c.tx_dropped.get();
        self.tx_kicks += c.tx_kicks.get();
    }
}

/// Connections allowed per NetworkPolicy (by policy id), counted by one worker. Policy ids at
/// or beyond [`POLICY_SLOTS`] are counted in the last slot.
pub const POLICY_SLOTS: usize = 16384;

#[derive(Debug)]
pub struct PolicyCounters {
    allowed: Box<[Counter]>,
}

impl Default for PolicyCounters {
    fn default() -> Self {
        Self { allowed: (0..POLICY_SLOTS).map(|_| Counter::default()).collect() }
    }
}

impl PolicyCounters {
    #[inline]
    pub fn allowed_by(&self, policy: u32) {
        self.allowed[(policy as usize).min(POLICY_SLOTS - 1)].add(1);
    }
    pub fn get(&self, policy: u32) -> u64 {
        self.allowed[(policy as usize).min(POLICY_SLOTS - 1)].get()
    }
}
