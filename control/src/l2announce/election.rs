//! One address's election over its Lease: client-go's leader election (`tryAcquireOrRenew`,
//! `release`), one attempt per call, with no thread or clock of its own.
//!
//! Contract:
//! - [`Election::attempt`] reads the Lease and then:
//!   - none: creates it with this node as holder;
//!   - held by another node whose record this election has seen unchanged for less than the
//!     record's `leaseDurationSeconds` (timed by this node's monotonic clock from when it first
//!     saw that version, as client-go does, so the nodes' wall clocks need not agree): leaves it;
//!   - otherwise (expired, released, or its own): writes itself as holder with the renew time
//!     now, keeping `acquireTime` and `leaseTransitions` when it already held it, else setting
//!     `acquireTime` to now and counting one transition.
//!
//!   A lost race (a conflict) or a valid other holder ends this node's hold at once.
//! - [`Election::holds`]: the last successful write as holder is younger than the renew
//!   deadline. A node whose renewals fail (the store away) therefore stops announcing after the
//!   renew deadline, before any other node may take over (they wait the full lease duration
//!   after the last change they saw): the margin is `duration - renew_deadline`.
//! - [`Election::release`] (this node held it): writes the Lease with no holder and a duration
//!   of 1 s, so another node takes it at its next attempt rather than after the duration.
use std::time::{Duration, Instant, SystemTime};

use super::lease_store::{LeaseRecord, LeaseStore, StoreError, Stored};

/// The election's timing (client-go's `LeaseDuration`, `RenewDeadline`; `RetryPeriod` is the
/// caller's pace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
}

/// The election of one Lease (see the module contract).
#[derive(Debug)]
pub struct Election {
    lease: String,
    /// The version last read or written, when this node first saw it, and its record.
    observed: Option<(String, Instant, LeaseRecord)>,
    /// When this node last wrote itself as holder.
    renewed_at: Option<Instant>,
}

impl Election {
    pub fn new(lease: &str) -> Self {
        Self { lease: lease.to_string(), observed: None, renewed_at: None }
    }

    pub fn lease(&self) -> &str {
        &self.lease
    }

    /// Whether this node holds the Lease at `now` (see the module contract).
    pub fn holds(&self, now: Instant, timing: &Timing) -> bool {
        self.renewed_at.is_some_and(|t| now.saturating_duration_since(t) < timing.renew_deadline)
    }

    /// The holder as last read or written (for `show`).
    pub fn holder(&self) -> Option<&str> {
        self.observed.as_ref().and_then(|(_, _, r)| r.holder())
    }

    fn observe(&mut self, s: &Stored, now: Instant) {
        if self.observed.as_ref().is_none_or(|(v, _, _)| *v != s.version) {
            self.observed = Some((s.version.clone(), now, s.record.clone()));
        }
    }

    /// One attempt to acquire or renew the Lease as `me`; whether this node holds it after.
    /// A store error leaves the hold to run out at its deadline.
    pub fn attempt(&mut self, store: &mut dyn LeaseStore, me: &str, timing: &Timing, now: Instant, wall: SystemTime) -> Result<bool, StoreError> {
        let mine = LeaseRecord {
            holder: Some(me.to_string()),
            duration_s: timing.lease_duration.as_secs().max(1) as u32,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            transitions: 0,
        };
        let Some(current) = store.get(&self.lease)? else {
            return self.written(store.create(&self.lease, &mine), now);
        };
        self.observe(&current, now);
        let (_, seen_at, _) = self.observed.as_ref().expect("observed above");
        let r = &current.record;
        let valid_for = Duration::from_secs(u64::from(r.duration_s));
        if r.holder().is_some_and(|h| h != me) && now.saturating_duration_since(*seen_at) < valid_for {
            self.renewed_at = None;
            return Ok(false);
        }
        let next = if r.holder() == Some(me) {
            LeaseRecord { acquire_time: r.acquire_time.or(Some(wall)), transitions: r.transitions, ..mine }
        } else {
            LeaseRecord { transitions: r.transitions.saturating_add(1), ..mine }
        };
        self.written(store.update(&self.lease, &next, &current.version), now)
    }

    fn written(&mut self, w: Result<Stored, StoreError>, now: Instant) -> Result<bool, StoreError> {
        match w {
            Ok(s) => {
                self.observe(&s, now);
                self.renewed_at = Some(now);
                Ok(true)
            }
            Err(StoreError::Conflict) => {
                self.renewed_at = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if this node holds it (see the module contract).
    pub fn release(&mut self, store: &mut dyn LeaseStore, me: &str, wall: SystemTime) -> Result<(), StoreError> {
        self.renewed_at = None;
        let Some(current) = store.get(&self.lease)? else { return Ok(()) };
        if current.record.holder() != Some(me) {
            return Ok(());
        }
        let released = LeaseRecord {
            holder: None,
            duration_s: 1,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            transitions: current.record.transitions,
        };
        match store.update(&self.lease, &released, &current.version) {
            Ok(_) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2announce::lease_store::FileLeases;

    const T: Timing = Timing { lease_duration: Duration::from_secs(5), renew_deadline: Duration::from_secs(3) };

    struct Clock(Instant, SystemTime);
    impl Clock {
        fn new() -> Self {
            Clock(Instant::now(), SystemTime::now())
        }
        fn at(&self, s: f64) -> (Instant, SystemTime) {
            let d = Duration::from_secs_f64(s);
            (self.0 + d, self.1 + d)
        }
    }

    fn attempt(e: &mut Election, s: &mut FileLeases, me: &str, c: &Clock, at: f64) -> bool {
        let (now, wall) = c.at(at);
        e.attempt(s, me, &T, now, wall).unwrap()
    }

    #[test]
    fn one_node_holds_and_another_takes_over_only_after_the_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s1, mut s2) = (FileLeases::open(dir.path(), "ns").unwrap(), FileLeases::open(dir.path(), "ns").unwrap());
        let (mut a, mut b) = (Election::new("l"), Election::new("l"));
        let c = Clock::new();
        assert!(attempt(&mut a, &mut s1, "node-a", &c, 0.0));
        assert!(!attempt(&mut b, &mut s2, "node-b", &c, 0.1));
        assert_eq!(b.holder(), Some("node-a"));
        // node-a renews every second: node-b never gets it.
        for t in 1..=10 {
            assert!(attempt(&mut a, &mut s1, "node-a", &c, t as f64));
            assert!(!attempt(&mut b, &mut s2, "node-b", &c, t as f64 + 0.5));
        }
        assert!(a.holds(c.at(10.5).0, &T));
        // node-a stops renewing (its switch is gone): it would stop announcing after the renew
        // deadline, and node-b takes over once it has seen the same version for the duration.
        assert!(!a.holds(c.at(13.1).0, &T));
        assert!(!attempt(&mut b, &mut s2, "node-b", &c, 14.0));
        assert!(!attempt(&mut b, &mut s2, "node-b", &c, 15.4));
        assert!(attempt(&mut b, &mut s2, "node-b", &c, 15.6));
        let rec = s2.get("l").unwrap().unwrap().record;
        assert_eq!((rec.holder(), rec.transitions), (Some("node-b"), 1));
        // node-a comes back: node-b's renewals keep it out.
        assert!(!attempt(&mut a, &mut s1, "node-a", &c, 16.0));
        assert!(!a.holds(c.at(16.0).0, &T));
    }

    #[test]
    fn a_released_lease_is_taken_at_the_next_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s1, mut s2) = (FileLeases::open(dir.path(), "ns").unwrap(), FileLeases::open(dir.path(), "ns").unwrap());
        let (mut a, mut b) = (Election::new("l"), Election::new("l"));
        let c = Clock::new();
        assert!(attempt(&mut a, &mut s1, "node-a", &c, 0.0));
        assert!(!attempt(&mut b, &mut s2, "node-b", &c, 0.5));
        a.release(&mut s1, "node-a", c.at(1.0).1).unwrap();
        assert!(!a.holds(c.at(1.0).0, &T));
        assert!(attempt(&mut b, &mut s2, "node-b", &c, 1.5));
        // A release by a node that no longer holds it leaves the holder alone.
        a.release(&mut s1, "node-a", c.at(2.0).1).unwrap();
        assert_eq!(s1.get("l").unwrap().unwrap().record.holder(), Some("node-b"));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileLeases::open(dir.path(), "ns").unwrap();
        let mut a = Election::new("l");
        let c = Clock::new();
        assert!(attempt(&mut a, &mut s, "node-a", &c, 0.0));
        let first = s.get("l").unwrap().unwrap().record;
        assert!(attempt(&mut a, &mut s, "node-a", &c, 1.0));
        let second = s.get("l").unwrap().unwrap().record;
        assert_eq!((second.acquire_time, second.transitions), (first.acquire_time, first.transitions));
        assert!(second.renew_time > first.renew_time);
    }

    /// A store whose every write loses the race: the election never claims the Lease.
    struct AlwaysRaced(FileLeases);
    impl LeaseStore for AlwaysRaced {
        fn get(&mut self, name: &str) -> Result<Option<Stored>, StoreError> {
            self.0.get(name)
        }
        fn create(&mut self, _: &str, _: &LeaseRecord) -> Result<Stored, StoreError> {
            Err(StoreError::Conflict)
        }
        fn update(&mut self, _: &str, _: &LeaseRecord, _: &str) -> Result<Stored, StoreError> {
            Err(StoreError::Conflict)
        }
        fn describe(&self) -> String {
            "raced".into()
        }
    }

    #[test]
    fn a_lost_race_is_no_hold_and_ends_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileLeases::open(dir.path(), "ns").unwrap();
        let mut a = Election::new("l");
        let c = Clock::new();
        assert!(attempt(&mut a, &mut s, "node-a", &c, 0.0));
        let mut raced = AlwaysRaced(FileLeases::open(dir.path(), "ns").unwrap());
        let (now, wall) = c.at(1.0);
        assert!(!a.attempt(&mut raced, "node-a", &T, now, wall).unwrap());
        assert!(!a.holds(now, &T));
    }
}
