//! `pktgen rfc2544`: the highest rate with no loss, found by a binary search over trials as
//! RFC 2544 (section 26.1) throughput tests do.
//!
//! Contract of [`search`]:
//! - The first trial runs at the ceiling: the rate given with `--max-rate`, or as fast as the
//!   generator goes. If it passes, the answer is that rate and the result says the generator
//!   (not the device under test) was the limit.
//! - Then it halves the interval between the highest passing rate (0 at first) and the lowest
//!   failing one, a trial per step, until the interval is within `resolution` of the failing
//!   rate, `max_trials` trials ran, or the rate fell below `min_rate`.
//! - A trial passes when its loss ratio is at most `loss_tolerance` (0 by default: no loss at
//!   all), it received something, and the generator reached the rate asked for (within 1%):
//!   a rate the generator cannot offer is not claimed. The result is the highest passing rate with that trial's
//!   latency, or none.
//! - The trial itself (send for a while, wait for stragglers, count) is the caller's closure,
//!   so the search is tested with simulated devices.
use anyhow::Result;
use serde::Serialize;

use crate::spec::Rate;
use crate::stats::Latency;

#[derive(Debug, Clone, Copy)]
pub struct SearchConfig {
    /// Ceiling: None = as fast as the generator goes.
    pub max_rate: Option<u64>,
    pub min_rate: u64,
    /// Stop when (fail - pass) <= resolution * fail.
    pub resolution: f64,
    pub max_trials: u32,
    pub loss_tolerance: f64,
}

/// What one trial measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrialOutcome {
    /// The rate asked for (None: as fast as possible).
    pub offered_pps: Option<u64>,
    /// The rate the generator reached (frames sent / sending time).
    pub sent_pps: u64,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub latency: Latency,
}

impl TrialOutcome {
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        self.lost as f64 / self.sent as f64
    }

    /// The generator fell more than 1% short of the rate asked for: the trial says nothing
    /// about the device at that rate.
    pub fn generator_short(&self) -> bool {
        self.offered_pps.is_some_and(|o| (self.sent_pps as f64) < o as f64 * 0.99)
    }

    pub fn passed(&self, tolerance: f64) -> bool {
        self.received > 0 && self.loss_ratio() <= tolerance && !self.generator_short()
    }

    /// The rate this trial stands for: the one asked for, or the one reached at "max".
    pub fn rate(&self) -> u64 {
        self.offered_pps.unwrap_or(self.sent_pps)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub n: u32,
    pub passed: bool,
    pub outcome: TrialOutcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// Highest rate without loss (beyond the tolerance), frames/s.
    pub throughput_pps: Option<u64>,
    /// The passing trial at that rate (its latency is the one to report).
    pub at_throughput: Option<TrialOutcome>,
    /// The first trial, at the ceiling, passed: the generator was the limit.
    pub generator_limited: bool,
    pub trials: Vec<Trial>,
}

/// Runs the search; `trial(rate)` runs one trial.
pub fn search(cfg: &SearchConfig, mut trial: impl FnMut(Rate) -> Result<TrialOutcome>) -> Result<SearchResult> {
    let mut trials = Vec::new();
    let first_rate = cfg.max_rate.map_or(Rate::Max, Rate::Pps);
    let first = trial(first_rate)?;
    let ok = first.passed(cfg.loss_tolerance);
    trials.push(Trial { n: 1, passed: ok, outcome: first.clone() });
    if ok {
        return Ok(SearchResult {
            throughput_pps: Some(first.rate()),
            at_throughput: Some(first),
            generator_limited: true,
            trials,
        });
    }
    // The lowest failing rate: what was reached when the ceiling was "max".
    let mut hi = first.rate().max(1);
    let mut lo = 0u64;
    let mut best: Option<TrialOutcome> = None;
    while (trials.len() as u32) < cfg.max_trials {
        if (hi - lo) as f64 <= cfg.resolution * hi as f64 {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        if mid < cfg.min_rate.max(1) {
            break;
        }
        let o = trial(Rate::Pps(mid))?;
        let ok = o.passed(cfg.loss_tolerance);
        trials.push(Trial { n: trials.len() as u32 + 1, passed: ok, outcome: o.clone() });
        if ok {
            lo = mid;
            best = Some(o);
        } else {
            hi = mid;
        }
    }
    Ok(SearchResult { throughput_pps: best.as_ref().map(TrialOutcome::rate), at_throughput: best, generator_limited: false, trials })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that forwards up to `capacity` frames/s and drops the excess; the generator
    /// reaches at most `gen_max`.
    fn device(capacity: u64, gen_max: u64) -> impl FnMut(Rate) -> Result<TrialOutcome> {
        move |r: Rate| {
            let offered = r.pps();
            let rate = offered.unwrap_or(gen_max).min(gen_max);
            let sent = rate * 2; // a 2 s trial
            let received = sent.min(capacity * 2);
            Ok(TrialOutcome {
                offered_pps: offered,
                sent_pps: rate,
                sent,
                received,
                lost: sent - received,
                latency: Latency { p99_ns: 1000 + rate / 1000, ..Default::default() },
                ..Default::default()
            })
        }
    }

    fn cfg() -> SearchConfig {
        SearchConfig { max_rate: None, min_rate: 1000, resolution: 0.005, max_trials: 30, loss_tolerance: 0.0 }
    }

    #[test]
    fn finds_the_capacity_within_the_resolution() {
        let r = search(&cfg(), device(734_567, 1_200_000)).unwrap();
        let t = r.throughput_pps.unwrap();
        assert!(t <= 734_567, "{t} passes only at or below capacity");
        assert!(t as f64 >= 734_567.0 * (1.0 - 0.01), "{t} within ~resolution of the capacity");
        assert!(!r.generator_limited);
        assert!(r.trials.len() <= 12, "{} trials", r.trials.len());
        assert!(r.trials[0].outcome.offered_pps.is_none(), "first trial as fast as possible");
        let at = r.at_throughput.unwrap();
        assert_eq!(at.rate(), t);
        assert_eq!(at.lost, 0);
    }

    #[test]
    fn generator_limited() {
        let r = search(&cfg(), device(2_000_000, 1_000_000)).unwrap();
        assert_eq!(r.throughput_pps, Some(1_000_000));
        assert!(r.generator_limited);
        assert_eq!(r.trials.len(), 1);
    }

    #[test]
    fn with_a_ceiling() {
        let c = SearchConfig { max_rate: Some(500_000), ..cfg() };
        let r = search(&c, device(300_000, 1_000_000)).unwrap();
        let t = r.throughput_pps.unwrap();
        assert!((297_000..=300_000).contains(&t), "{t}");
        assert_eq!(r.trials[0].outcome.offered_pps, Some(500_000));
    }

    #[test]
    fn nothing_passes() {
        let r = search(&cfg(), device(0, 1_000_000)).unwrap();
        assert_eq!(r.throughput_pps, None);
        assert!(r.trials.iter().all(|t| !t.passed));
        assert!(r.trials.len() <= 30);
    }

    #[test]
    fn tolerance_and_trial_limit() {
        // 1% tolerance: a device dropping 0.5% at every rate passes at the ceiling.
        let lossy = |r: Rate| -> Result<TrialOutcome> {
            let rate = r.pps().unwrap_or(800_000);
            Ok(TrialOutcome { offered_pps: r.pps(), sent_pps: rate, sent: 1000, received: 995, lost: 5, ..Default::default() })
        };
        let c = SearchConfig { loss_tolerance: 0.01, ..cfg() };
        assert_eq!(search(&c, lossy).unwrap().throughput_pps, Some(800_000));
        let c = SearchConfig { max_trials: 3, ..cfg() };
        let r = search(&c, device(500_000, 1_000_000)).unwrap();
        assert_eq!(r.trials.len(), 3);
    }

    #[test]
    fn a_rate_the_generator_cannot_offer_is_not_claimed() {
        // The device keeps up with everything; the generator reaches 900k at "max" but only
        // 500k when paced.
        let weak = |r: Rate| -> Result<TrialOutcome> {
            let rate = match r.pps() {
                None => 900_000,
                Some(p) => p.min(500_000),
            };
            Ok(TrialOutcome { offered_pps: r.pps(), sent_pps: rate, sent: rate, received: rate, ..Default::default() })
        };
        let c = SearchConfig { max_rate: Some(800_000), ..cfg() };
        let r = search(&c, weak).unwrap();
        let t = r.throughput_pps.unwrap();
        assert!((490_000..=505_000).contains(&t), "{t}");
        assert!(r.trials[0].outcome.generator_short());
    }

    #[test]
    fn trial_errors_propagate() {
        let failing = |_: Rate| -> Result<TrialOutcome> { anyhow::bail!("interface gone") };
        assert!(search(&cfg(), failing).is_err());
    }
}
