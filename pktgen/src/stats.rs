//! What the receiver keeps: per-flow sequence tracking (received, lost, reordered,
//! duplicated) and latency histograms.
//!
//! Contract:
//! - [`FlowTable::record`] classifies one sequence number of one flow in O(1) without
//!   allocating: new and in order, new but late (reordered: below the highest seen), or a
//!   duplicate. Duplicates are recognised within the last [`WINDOW`] sequence numbers of a
//!   flow; older ones count as reordered ("late") since they cannot be told apart.
//! - Loss is `sent - received` when the sender's counts are known ([`FlowTable::lost_given`]),
//!   else inferred per flow as `highest + 1 - received` ([`FlowTable::lost_inferred`]), which
//!   cannot see frames lost after a flow's last received one.
//! - Latencies are recorded in ns in [`hdrhistogram`] (3 significant digits, up to 100 s);
//!   an interval histogram gives the live p99 and is folded into the total.
use hdrhistogram::Histogram;

/// Sequence numbers remembered per flow for duplicate detection.
pub const WINDOW: u32 = 512;
const WORDS: usize = (WINDOW / 64) as usize;
/// Highest latency recorded (larger values are clamped): 100 s.
pub const MAX_LATENCY_NS: u64 = 100_000_000_000;

/// How one frame was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    InOrder,
    Reordered,
    Duplicate,
}

#[derive(Debug, Clone, Default)]
pub struct FlowState {
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Highest sequence number seen + 1 (0: none yet).
    pub next: u64,
    /// Bit i of the window: sequence `next - 1 - i` was seen.
    window: [u64; WORDS],
}

impl FlowState {
    #[inline]
    fn bit(&self, back: u64) -> bool {
        let (w, b) = ((back / 64) as usize, back % 64);
        self.window[w] & (1 << b) != 0
    }

    #[inline]
    fn set(&mut self, back: u64) {
        let (w, b) = ((back / 64) as usize, back % 64);
        self.window[w] |= 1 << b;
    }

    /// Shifts the window up by `by` positions (newer sequence numbers at bit 0).
    #[inline]
    fn shift(&mut self, by: u64) {
        if by >= u64::from(WINDOW) {
            self.window = [0; WORDS];
            return;
        }
        let words = (by / 64) as usize;
        let bits = by % 64;
        for i in (0..WORDS).rev() {
            let src = i as isize - words as isize;
            let hi = if src >= 0 { self.window[src as usize] << bits } else { 0 };
            let lo = if bits > 0 && src >= 1 { self.window[src as usize - 1] >> (64 - bits) } else { 0 };
            self.window[i] = hi | lo;
        }
    }

    #[inline]
    pub fn record(&mut self, seq: u32) -> Seen {
        let seq = u64::from(seq);
        if seq >= self.next {
            self.shift(seq + 1 - self.next);
            self.next = seq + 1;
            self.set(0);
            self.received += 1;
            return Seen::InOrder;
        }
        let back = self.next - 1 - seq;
        if back < u64::from(WINDOW) {
            if self.bit(back) {
                self.duplicates += 1;
                return Seen::Duplicate;
            }
            self.set(back);
        }
        self.received += 1;
        self.reordered += 1;
        Seen::Reordered
    }
}

/// Per-flow state of every flow id (preallocated).
#[derive(Debug, Clone)]
pub struct FlowTable {
    flows: Vec<FlowState>,
    /// Flow ids beyond the table.
    pub unknown_flow: u64,
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Sum over flows of `next` (highest + 1): what the sender must have sent at least.
    pub expected_at_least: u64,
}

impl FlowTable {
    pub fn new(flows: usize) -> FlowTable {
        FlowTable {
            flows: vec![FlowState::default(); flows],
            unknown_flow: 0,
            received: 0,
            duplicates: 0,
            reordered: 0,
            expected_at_least: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn flow(&self, i: usize) -> Option<&FlowState> {
        self.flows.get(i)
    }

    #[inline]
    pub fn record(&mut self, flow: u16, seq: u32) -> Option<Seen> {
        let Some(f) = self.flows.get_mut(usize::from(flow)) else {
            self.unknown_flow += 1;
            return None;
        };
        let before = f.next;
        let seen = f.record(seq);
        self.expected_at_least += f.next - before;
        match seen {
            Seen::InOrder => self.received += 1,
            Seen::Reordered => {
                self.received += 1;
                self.reordered += 1;
            }
            Seen::Duplicate => self.duplicates += 1,
        }
        Some(seen)
    }

    /// Frames missing given what was sent on each flow (`sent[i]` for flow i).
    pub fn lost_given(&self, sent: &[u64]) -> u64 {
        sent.iter().enumerate().map(|(i, &s)| s.saturating_sub(self.flows.get(i).map_or(0, |f| f.received))).sum()
    }

    /// Frames missing below each flow's highest received sequence number.
    pub fn lost_inferred(&self) -> u64 {
        self.expected_at_least.saturating_sub(self.received)
    }
}

/// A latency histogram in ns.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("static bounds are valid")
}

/// Latency summary in ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    pub samples: u64,
    pub min_ns: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            samples: h.len(),
            min_ns: h.min(),
            mean_ns: h.mean().round() as u64,
            p50_ns: h.value_at_quantile(0.50),
            p90_ns: h.value_at_quantile(0.90),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    }
}

/// Records `ns` (clamped to the histogram's range).
#[inline]
pub fn record_latency(h: &mut Histogram<u64>, ns: u64) {
    let _ = h.record(ns.clamp(1, MAX_LATENCY_NS));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_no_loss() {
        let mut t = FlowTable::new(4);
        for seq in 0..1000 {
            for f in 0..4 {
                assert_eq!(t.record(f, seq), Some(Seen::InOrder));
            }
        }
        assert_eq!((t.received, t.duplicates, t.reordered, t.lost_inferred()), (4000, 0, 0, 0));
        assert_eq!(t.lost_given(&[1000; 4]), 0);
        assert_eq!(t.lost_given(&[1001, 1000, 1000, 1002]), 3, "the tail a receiver cannot infer");
    }

    #[test]
    fn loss_is_counted() {
        let mut t = FlowTable::new(1);
        for seq in (0..100).filter(|s| s % 10 != 3) {
            t.record(0, seq);
        }
        assert_eq!(t.received, 90);
        assert_eq!(t.lost_inferred(), 10);
        assert_eq!(t.lost_given(&[100]), 10);
        assert_eq!(t.reordered, 0);
    }

    #[test]
    fn reordering_and_duplicates() {
        let mut t = FlowTable::new(2);
        let order = [0u32, 1, 3, 2, 4, 4, 2, 7, 5, 6, 0];
        let got: Vec<Seen> = order.iter().map(|&s| t.record(1, s).unwrap()).collect();
        use Seen::*;
        assert_eq!(got, vec![InOrder, InOrder, InOrder, Reordered, InOrder, Duplicate, Duplicate, InOrder, Reordered, Reordered, Duplicate]);
        assert_eq!((t.received, t.reordered, t.duplicates, t.lost_inferred()), (8, 3, 3, 0));
        // Flow 0 untouched.
        assert_eq!(t.flow(0).unwrap().received, 0);
        assert_eq!(t.record(2, 0), None, "flow id beyond the table");
        assert_eq!(t.unknown_flow, 1);
    }

    #[test]
    fn window_edges() {
        let mut f = FlowState::default();
        f.record(0);
        // A jump by more than the window forgets everything below.
        f.record(WINDOW + 100);
        assert_eq!(f.record(0), Seen::Reordered, "too old to tell: late, not duplicate");
        // Within the window duplicates are found across word boundaries.
        for s in (WINDOW + 101)..(WINDOW + 400) {
            assert_eq!(f.record(s), Seen::InOrder);
        }
        for back in [1u32, 63, 64, 65, 128, 299] {
            assert_eq!(f.record(WINDOW + 400 - 1 - back), Seen::Duplicate, "back {back}");
        }
        // Shifts by odd amounts keep bits right.
        let mut g = FlowState::default();
        for s in [0u32, 1, 70, 200, 201, 333] {
            g.record(s);
        }
        for s in [0u32, 1, 70, 200, 201, 333] {
            assert_eq!(g.record(s), Seen::Duplicate, "seq {s}");
        }
        for s in [2u32, 69, 71, 199, 332] {
            assert_eq!(g.record(s), Seen::Reordered, "seq {s}");
        }
    }

    #[test]
    fn random_permutation_against_a_set() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut f = FlowState::default();
        let mut seen = std::collections::HashSet::new();
        let mut max: Option<u32> = None;
        for _ in 0..50_000 {
            let base = max.unwrap_or(0);
            let s = (base + (rng.u64(..) % 64) as u32).saturating_sub((rng.u64(..) % 300) as u32);
            let r = f.record(s);
            let expect = if !seen.insert(s) {
                Seen::Duplicate
            } else if max.is_some_and(|m| s < m) {
                Seen::Reordered
            } else {
                Seen::InOrder
            };
            assert_eq!(r, expect, "seq {s} max {max:?}");
            max = Some(max.map_or(s, |m| m.max(s)));
        }
    }

    #[test]
    fn latency_summary() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            record_latency(&mut h, v * 1000);
        }
        let l = Latency::of(&h);
        assert_eq!(l.samples, 1000);
        assert!((499_000..=501_000).contains(&l.p50_ns), "{l:?}");
        assert!((989_000..=991_000).contains(&l.p99_ns), "{l:?}");
        assert!(l.max_ns >= 999_000);
        record_latency(&mut h, u64::MAX);
        assert!(Latency::of(&h).max_ns >= MAX_LATENCY_NS / 2);
        assert_eq!(Latency::of(&new_histogram()), Latency::default());
    }
}
