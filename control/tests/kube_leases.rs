//! The announcement Leases of `--l2-announce` in the Kubernetes API ([`KubeLeases`]), against
//! the fake API server: elections of two nodes over the same Lease, and the API's conflicts.
mod support_fakeapi;

use std::time::{Duration, Instant, SystemTime};

use podswitch_control::l2announce::election::{Election, Timing};
use podswitch_control::l2announce::kube_leases::KubeLeases;
use podswitch_control::l2announce::lease_store::{LeaseRecord, LeaseStore, StoreError};
use support_fakeapi::FakeApi;

const T: Timing = Timing { lease_duration: Duration::from_secs(5), renew_deadline: Duration::from_secs(3) };

#[test]
fn two_nodes_elect_one_holder_through_the_api_and_stale_writes_conflict() {
    let api = FakeApi::start_new();
    let mut a = KubeLeases::new(api.config(), "kube-system", Duration::from_secs(1)).unwrap();
    let mut b = KubeLeases::new(api.config(), "kube-system", Duration::from_secs(1)).unwrap();
    let (mut ea, mut eb) = (Election::new("podswitch-l2-192-0-2-1"), Election::new("podswitch-l2-192-0-2-1"));
    let (t0, w0) = (Instant::now(), SystemTime::now());
    let at = |s: u64| (t0 + Duration::from_secs(s), w0 + Duration::from_secs(s));

    let (now, wall) = at(0);
    assert!(ea.attempt(&mut a, "node-a", &T, now, wall).unwrap());
    assert!(!eb.attempt(&mut b, "node-b", &T, now, wall).unwrap());
    let lease = api.lease("kube-system", "podswitch-l2-192-0-2-1").expect("the Lease was created");
    assert_eq!(lease["spec"]["holderIdentity"], "node-a", "{lease}");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 5, "{lease}");
    assert!(lease["spec"]["renewTime"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('.')), "{lease}");

    // A write of a version no longer current is refused, as is a second create.
    let seen = a.get("podswitch-l2-192-0-2-1").unwrap().unwrap();
    let (now, wall) = at(1);
    assert!(ea.attempt(&mut a, "node-a", &T, now, wall).unwrap());
    let mine = LeaseRecord { holder: Some("node-b".into()), duration_s: 5, ..Default::default() };
    assert!(matches!(b.update("podswitch-l2-192-0-2-1", &mine, &seen.version), Err(StoreError::Conflict)));
    assert!(matches!(b.create("podswitch-l2-192-0-2-1", &mine), Err(StoreError::Conflict)));

    // node-a stops renewing: node-b takes over once it has seen the Lease unchanged for 5 s.
    let (now, wall) = at(2);
    assert!(!eb.attempt(&mut b, "node-b", &T, now, wall).unwrap());
    let (now, wall) = at(6);
    assert!(!eb.attempt(&mut b, "node-b", &T, now, wall).unwrap());
    let (now, wall) = at(8);
    assert!(eb.attempt(&mut b, "node-b", &T, now, wall).unwrap());
    let lease = api.lease("kube-system", "podswitch-l2-192-0-2-1").unwrap();
    assert_eq!((lease["spec"]["holderIdentity"].as_str(), lease["spec"]["leaseTransitions"].as_i64()), (Some("node-b"), Some(1)), "{lease}");
    // node-a comes back: it sees node-b's fresh renewal and stays out.
    let (now, wall) = at(9);
    assert!(!ea.attempt(&mut a, "node-a", &T, now, wall).unwrap());
    // node-b releases: no holder, duration 1 s; node-a takes it at its next attempt.
    eb.release(&mut b, "node-b", wall).unwrap();
    let lease = api.lease("kube-system", "podswitch-l2-192-0-2-1").unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null() || lease["spec"]["holderIdentity"] == "", "{lease}");
    let (now, wall) = at(10);
    assert!(ea.attempt(&mut a, "node-a", &T, now, wall).unwrap());
}

#[test]
fn an_api_that_does_not_answer_is_an_error_and_the_hold_runs_out() {
    let mut api = FakeApi::start_new();
    let mut a = KubeLeases::new(api.config(), "kube-system", Duration::from_secs(1)).unwrap();
    let mut e = Election::new("podswitch-l2-192-0-2-2");
    let now = Instant::now();
    assert!(e.attempt(&mut a, "node-a", &T, now, SystemTime::now()).unwrap());
    api.stop();
    let err = e.attempt(&mut a, "node-a", &T, now + Duration::from_secs(1), SystemTime::now()).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(e.holds(now + Duration::from_secs(2), &T), "within the renew deadline");
    assert!(!e.holds(now + Duration::from_secs(3), &T), "past the renew deadline");
}
