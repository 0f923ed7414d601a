//! The verdict log: every NetworkPolicy decision a worker makes (at connection setup, and when
//! a policy change makes it judge an established connection again), in a bounded ring per
//! worker that the control side drains.
//!
//! Contract: [`FlowRing::record`] never blocks and never allocates: when the ring is full the
//! oldest record is overwritten and counted in `overwritten`, so a slow reader loses history,
//! never packets. Records carry the connection's tuple as the client sent it and the
//! translated destination (the backend pod and port), and what decided.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam::queue::ArrayQueue;

use crate::tables::policy::{Decision, PolicyId};

/// What decided a verdict, in a form that fits a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decider {
    NotIsolated,
    /// A pod reaching itself (through its own Service): Kubernetes never lets policy block it.
    SelfAccess,
    /// Rule `index` of `policy` allowed it: an ingress rule of the destination (`ingress`),
    /// else an egress rule of the source. When both sides are isolated, both allowed, and the
    /// destination's ingress rule is the one recorded.
    Rule { policy: PolicyId, index: u16, ingress: bool },
    DefaultDenyEgress,
    DefaultDenyIngress,
}

impl From<Decision> for Decider {
    fn from(d: Decision) -> Self {
        match d {
            Decision::NotIsolated => Decider::NotIsolated,
            Decision::Allowed { policy, index, ingress } => Decider::Rule { policy, index, ingress },
            Decision::DeniedEgress => Decider::DefaultDenyEgress,
            Decision::DeniedIngress => Decider::DefaultDenyIngress,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub src: u32,
    pub sport: u16,
    /// The destination the client addressed (a Service address, or the pod itself).
    pub orig_dst: u32,
    pub orig_dport: u16,
    /// The destination after translation (the backend pod).
    pub dst: u32,
    pub dport: u16,
    pub proto: u8,
    pub allowed: bool,
    /// True when an established connection was judged again after a policy change.
    pub rejudged: bool,
    pub decider: Decider,
}

#[derive(Debug)]
pub struct FlowRing {
    ring: ArrayQueue<FlowRecord>,
    pub overwritten: AtomicU64,
}

impl FlowRing {
    pub fn new(capacity: usize) -> Self {
        Self { ring: ArrayQueue::new(capacity.max(1)), overwritten: AtomicU64::new(0) }
    }

    #[inline]
    pub fn record(&self, r: FlowRecord) {
        if self.ring.force_push(r).is_some() {
            self.overwritten.fetch_add(1, Relaxed);
        }
    }

    /// Takes every record now in the ring, oldest first.
    pub fn drain(&self, out: &mut Vec<FlowRecord>) {
        while let Some(r) = self.ring.pop() {
            out.push(r);
        }
    }
}

/// Milliseconds since the Unix epoch (a vDSO call; made once per new connection).
#[inline]
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
