//! Rate control: a token bucket in integer arithmetic, and the clock it reads.
//!
//! Contract:
//! - [`TokenBucket::take`] grants at most `rate x elapsed` frames over any interval, plus at
//!   most `burst` saved up while the sender could not keep up; granted frames over a run are
//!   within one frame of `rate x time` as long as the sender asks often enough (the unit tests
//!   drive it with a simulated clock: 1% at 1 Mpps is far inside that).
//! - Tokens are kept in frame-nanoseconds (one frame = 10^9), so nothing is rounded.
//! - [`Clock`] is CLOCK_MONOTONIC in ns (the clock of the payload stamps: comparable between
//!   processes of one machine); tests use a simulated one.
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// Nanoseconds on some monotonic clock.
pub trait Clock {
    fn now_ns(&self) -> u64;
}

/// CLOCK_MONOTONIC.
#[derive(Debug, Clone, Copy, Default)]
pub struct Monotonic;

impl Clock for Monotonic {
    #[inline]
    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
#[inline]
pub fn monotonic_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64).wrapping_mul(1_000_000_000).wrapping_add(t.tv_nsec() as u64),
        Err(_) => 0,
    }
}

const UNIT: u128 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    /// Most frames that can be saved up.
    burst: u64,
    /// Frame-nanoseconds.
    tokens: u128,
    last_ns: u64,
}

impl TokenBucket {
    /// A bucket of `rate` frames/s starting empty at `now_ns`. `burst` defaults sensibly with
    /// [`TokenBucket::default_burst`].
    pub fn new(rate: u64, burst: u64, now_ns: u64) -> TokenBucket {
        TokenBucket { rate: rate.max(1), burst: burst.max(1), tokens: 0, last_ns: now_ns }
    }

    /// One batch, or 10 ms of frames, whichever is more: a sender preempted for up to 10 ms
    /// (common on a busy machine) catches up; longer stalls lose their credit.
    pub fn default_burst(rate: u64, batch: u64) -> u64 {
        (rate / 100).max(batch).max(1)
    }

    #[inline]
    fn refill(&mut self, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let cap = u128::from(self.burst) * UNIT;
        self.tokens = (self.tokens + u128::from(elapsed) * u128::from(self.rate)).min(cap);
    }

    /// Up to `want` frames that may go now.
    #[cfg(test)]
    pub fn take(&mut self, now_ns: u64, want: u64) -> u64 {
        self.take_chunk(now_ns, 1, want)
    }

    /// Up to `want` frames that may go now, but none unless at least `min` may (so that a
    /// sender pays its per-call costs once per chunk, not per frame).
    #[inline]
    pub fn take_chunk(&mut self, now_ns: u64, min: u64, want: u64) -> u64 {
        self.refill(now_ns);
        let have = (self.tokens / UNIT) as u64;
        if have < min.min(want).min(self.burst) {
            return 0;
        }
        let n = have.min(want);
        self.tokens -= u128::from(n) * UNIT;
        n
    }

    /// Time from `now_ns` until one frame may go.
    #[cfg(test)]
    pub fn wait(&self, now_ns: u64) -> Duration {
        self.wait_for(now_ns, 1)
    }

    /// Time from `now_ns` until `n` frames may go.
    pub fn wait_for(&self, now_ns: u64, n: u64) -> Duration {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        let have = self.tokens + u128::from(elapsed) * u128::from(self.rate);
        let need = u128::from(n.clamp(1, self.burst)) * UNIT;
        if have >= need {
            return Duration::ZERO;
        }
        Duration::from_nanos(((need - have).div_ceil(u128::from(self.rate))) as u64)
    }

    /// Frames per chunk for `rate`: 50 µs of frames, at least 1, at most `batch`.
    pub fn chunk(rate: u64, batch: u64) -> u64 {
        (rate / 20_000).clamp(1, batch.max(1))
    }
}

/// Asks for precise sleeps on this thread (timer slack of 1 µs instead of 50 µs).
pub fn precise_sleeps() {
    let _ = nix::sys::prctl::set_timerslack(1_000);
}

/// Waits about `d`: sleeps for waits long enough (with [`precise_sleeps`], a sleep overshoots
/// by a few µs), spins for shorter ones. A sender that sleeps between frames also keeps its
/// standing with the scheduler on a busy machine, where a spinning one gets preempted.
pub fn pace_wait(d: Duration) {
    if d > Duration::from_micros(30) {
        std::thread::sleep(d - Duration::from_micros(10));
    } else {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender asking for batches of 64 at irregular times, with stalls, for 2 s of simulated
    /// time: what it gets is within 1% (in fact within a burst) of the rate.
    #[test]
    fn accurate_at_one_mpps() {
        for rate in [1_000_000u64, 1_234_567, 10_000, 50] {
            let mut rng = fastrand::Rng::with_seed(rate);
            let mut now = 1_000_000u64;
            let start = now;
            let mut tb = TokenBucket::new(rate, TokenBucket::default_burst(rate, 64), now);
            let mut sent = 0u64;
            while now - start < 2_000_000_000 {
                sent += tb.take(now, 64);
                // Between 0 and 20 µs per round, and a 300 µs stall now and then (shorter than
                // the 10 ms burst, so no credit is lost).
                now += rng.u64(..) % 20_000;
                if rng.u64(..).is_multiple_of(1000) {
                    now += 300_000;
                }
            }
            sent += tb.take(now, u64::MAX);
            let expect = rate as f64 * (now - start) as f64 / 1e9;
            let err = (sent as f64 - expect).abs() / expect;
            assert!(err < 0.01, "rate {rate}: sent {sent}, expected {expect:.0} ({:.3}%)", err * 100.0);
            assert!((sent as f64 - expect).abs() <= 1.0 + 64.0, "rate {rate}: off by more than a batch");
        }
    }

    #[test]
    fn chunks_keep_the_rate() {
        let rate = 300_000;
        let chunk = TokenBucket::chunk(rate, 64);
        assert_eq!(chunk, 15);
        let mut tb = TokenBucket::new(rate, TokenBucket::default_burst(rate, 64), 0);
        let (mut now, mut sent, mut calls) = (0u64, 0u64, 0u64);
        while now < 1_000_000_000 {
            let n = tb.take_chunk(now, chunk, 64);
            if n > 0 {
                assert!(n >= chunk);
                calls += 1;
            }
            sent += n;
            now += 1_000;
        }
        assert!((sent as i64 - 300_000).unsigned_abs() <= chunk, "{sent}");
        assert!(calls <= 300_000 / chunk + 1, "{calls} calls");
        tb.take(now, u64::MAX);
        assert_eq!(tb.wait_for(now, 15), Duration::from_micros(50));
    }

    #[test]
    fn burst_caps_saved_credit() {
        let mut tb = TokenBucket::new(1_000_000, 100, 0);
        // One idle second saves at most the burst.
        assert_eq!(tb.take(1_000_000_000, u64::MAX), 100);
        assert_eq!(tb.take(1_000_000_000, u64::MAX), 0);
        // 1 µs later one more frame.
        assert_eq!(tb.take(1_000_001_000, u64::MAX), 1);
    }

    #[test]
    fn wait_until_next_frame() {
        let mut tb = TokenBucket::new(1000, 1, 0);
        assert_eq!(tb.take(0, 1), 0);
        assert_eq!(tb.wait(0), Duration::from_millis(1));
        assert_eq!(tb.wait(400_000), Duration::from_micros(600));
        assert_eq!(tb.wait(1_000_000), Duration::ZERO);
        assert_eq!(tb.take(1_000_000, 5), 1);
    }

    #[test]
    fn clock_moves() {
        let a = monotonic_ns();
        std::thread::sleep(Duration::from_millis(2));
        assert!(monotonic_ns() >= a + 2_000_000);
    }
}
