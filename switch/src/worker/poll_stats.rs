//! How a worker spends its time and how full its receive bursts are: what OVS reports as
//! `dpif-netdev/pmd-stats-show` and VPP as `show runtime`.
//!
//! Contract:
//! - [`PollStats`] is written only by its worker (single-writer [`Counter`]s on their own cache
//!   lines, no lock, no allocation) and read by the control side ([`PollStats::totals`]), which
//!   may see values a round old.
//! - Time: every moment of the worker's loop is in exactly one of three states: `busy` (a round
//!   that moved frames, received or completed), `polling` (an empty round: the worker spins,
//!   waiting for work) and `sleeping` (in poll(2) after [`IDLE_SPIN`](super) of empty rounds).
//!   [`PollClock`] attributes time at the start of every round from the one clock read the
//!   round makes anyway (the connection table's "now"), plus one read before each sleep: no
//!   clock read per packet, none beyond those. A long busy stretch is thus accounted round by
//!   round, never in one lump at its end.
//! - Bursts: every non-empty receive from one queue counts once in the histogram of its size
//!   ([`BURST_BUCKET_BOUNDS`]: at most 1, 2, 4, ... 64 frames), its frames in `rx_packets`.
//! - Wake-ups: each sleep ends for one reason, counted once: a socket had frames (`data`, also
//!   when the doorbell rang too), the control side rang the doorbell (`doorbell`), or the
//!   timeout passed (`timeout`, interrupted sleeps included).
use std::time::{Duration, Instant};

use crate::counters::Counter;

/// Upper bounds (frames) of the burst-size histogram's buckets; sizes above the last (none:
/// a burst is at most [`super::BURST`]) count in the last.
pub const BURST_BUCKET_BOUNDS: [u32; 7] = [1, 2, 4, 8, 16, 32, 64];

/// The bucket of a burst of `n` (>= 1) frames.
#[inline(always)]
fn bucket_of(n: usize) -> usize {
    let i = if n <= 1 { 0 } else { (usize::BITS - (n - 1).leading_zeros()) as usize };
    i.min(BURST_BUCKET_BOUNDS.len() - 1)
}

/// Why a sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Data,
    Doorbell,
    Timeout,
}

/// One worker's counters (single writer: the worker).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct PollStats {
    pub rounds: Counter,
    /// Rounds that received at least one frame.
    pub rx_rounds: Counter,
    /// Non-empty receives (one queue's burst).
    pub rx_bursts: Counter,
    pub rx_packets: Counter,
    pub busy_ns: Counter,
    pub polling_ns: Counter,
    pub sleeping_ns: Counter,
    pub sleeps: Counter,
    pub woke_data: Counter,
    pub woke_doorbell: Counter,
    pub woke_timeout: Counter,
    pub bursts: [Counter; BURST_BUCKET_BOUNDS.len()],
}

/// What [`PollStats`] held when read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PollTotals {
    pub rounds: u64,
    pub rx_rounds: u64,
    pub rx_bursts: u64,
    pub rx_packets: u64,
    pub busy_ns: u64,
    pub polling_ns: u64,
    pub sleeping_ns: u64,
    pub sleeps: u64,
    pub woke_data: u64,
    pub woke_doorbell: u64,
    pub woke_timeout: u64,
    /// Bursts by size: index i counts those of at most `BURST_BUCKET_BOUNDS[i]` frames (and
    /// more than the bound before).
    pub bursts: [u64; BURST_BUCKET_BOUNDS.len()],
}

impl PollTotals {
    /// Frames per round that received any (0 when none did).
    pub fn packets_per_rx_round(&self) -> f64 {
        if self.rx_rounds == 0 { 0.0 } else { self.rx_packets as f64 / self.rx_rounds as f64 }
    }
}

impl PollStats {
    /// Counts one non-empty receive of `n` frames.
    #[inline(always)]
    pub fn burst(&self, n: usize) {
        self.rx_bursts.add(1);
        self.rx_packets.add(n as u64);
        self.bursts[bucket_of(n)].add(1);
    }

    pub fn woke(&self, why: Wake) {
        match why {
            Wake::Data => self.woke_data.add(1),
            Wake::Doorbell => self.woke_doorbell.add(1),
            Wake::Timeout => self.woke_timeout.add(1),
        }
    }

    pub fn totals(&self) -> PollTotals {
        PollTotals {
            rounds: self.rounds.get(),
            rx_rounds: self.rx_rounds.get(),
            rx_bursts: self.rx_bursts.get(),
            rx_packets: self.rx_packets.get(),
            busy_ns: self.busy_ns.get(),
            polling_ns: self.polling_ns.get(),
            sleeping_ns: self.sleeping_ns.get(),
            sleeps: self.sleeps.get(),
            woke_data: self.woke_data.get(),
            woke_doorbell: self.woke_doorbell.get(),
            woke_timeout: self.woke_timeout.get(),
            bursts: std::array::from_fn(|i| self.bursts[i].get()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Busy,
    Polling,
    Sleeping,
}

/// The worker's side of the time accounting: when the current stretch began and what it is.
#[derive(Debug)]
pub struct PollClock {
    mark: Instant,
    phase: Phase,
    /// When the last round with work ended (the idle back-off counts from there).
    last_work: Instant,
}

impl PollClock {
    pub fn new(now: Instant) -> Self {
        Self { mark: now, phase: Phase::Polling, last_work: now }
    }

    fn close(&mut self, now: Instant, stats: &PollStats) {
        let ns = now.saturating_duration_since(self.mark).as_nanos() as u64;
        match self.phase {
            Phase::Busy => {
                stats.busy_ns.add(ns);
                self.last_work = now;
            }
            Phase::Polling => stats.polling_ns.add(ns),
            Phase::Sleeping => stats.sleeping_ns.add(ns),
        }
        self.mark = now;
    }

    /// A round begins at `now`: the stretch before it is accounted.
    #[inline(always)]
    pub fn round_begins(&mut self, now: Instant, stats: &PollStats) {
        self.close(now, stats);
    }

    /// The round that began at the last [`Self::round_begins`] moved frames or not.
    #[inline(always)]
    pub fn round_ends(&mut self, worked: bool) {
        self.phase = if worked { Phase::Busy } else { Phase::Polling };
    }

    /// How long the worker has found no work, as of the start of the current round.
    #[inline(always)]
    pub fn idle_for(&self) -> Duration {
        self.mark.saturating_duration_since(self.last_work)
    }

    /// The worker goes to sleep at `now`.
    pub fn sleep_begins(&mut self, now: Instant, stats: &PollStats) {
        self.close(now, stats);
        self.phase = Phase::Sleeping;
        stats.sleeps.add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_land_in_the_bucket_of_their_size() {
        let want = [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4), (16, 4), (17, 5), (32, 5), (33, 6), (64, 6), (65, 6)];
        for (n, b) in want {
            assert_eq!(bucket_of(n), b, "burst of {n}");
            assert!(n as u32 <= BURST_BUCKET_BOUNDS[b] || b == BURST_BUCKET_BOUNDS.len() - 1);
        }
        let s = PollStats::default();
        s.burst(1);
        s.burst(3);
        s.burst(64);
        let t = s.totals();
        assert_eq!((t.rx_bursts, t.rx_packets), (3, 68));
        assert_eq!(t.bursts, [1, 0, 1, 0, 0, 0, 1]);
    }

    #[test]
    fn every_stretch_is_accounted_to_the_state_it_was_in() {
        let s = PollStats::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = PollClock::new(t0);
        c.round_begins(t0, &s);
        c.round_ends(true); // busy 0..2
        c.round_begins(t0 + ms(2), &s);
        c.round_ends(false); // polling 2..3
        c.round_begins(t0 + ms(3), &s);
        c.round_ends(false); // polling 3..4, then asleep 4..10
        assert_eq!(c.idle_for(), ms(1), "idle since the last round with work ended");
        c.sleep_begins(t0 + ms(4), &s);
        c.round_begins(t0 + ms(10), &s);
        c.round_ends(true);
        c.round_begins(t0 + ms(11), &s);
        let t = s.totals();
        assert_eq!((t.busy_ns, t.polling_ns, t.sleeping_ns), (3_000_000, 2_000_000, 6_000_000));
        assert_eq!(t.sleeps, 1);
        assert_eq!(c.idle_for(), Duration::ZERO);
    }
}
