//! The proxy's own health, as kube-proxy's `ProxyHealthServer` keeps it
//! (pkg/proxy/healthcheck/proxy_health.go): whether the tables in force keep up with the
//! object source, and whether this node is eligible for load balancers' traffic.
//!
//! Contract:
//! - [`ProxyHealth::queued_update`] is called when the source has a change the tables do not
//!   have yet (an API watch event, a manifest directory that digests differently); it keeps the
//!   time of the oldest such change. [`ProxyHealth::updated`] is called when a view has been
//!   applied (the tables in force are the source's): it clears that time and records the
//!   update. The proxy is unhealthy while a change has been waiting for longer than the
//!   timeout (kube-proxy's `healthTimeout`, twice its `--sync-period`: 60 s by default). It is
//!   healthy while starting up (nothing updated yet) and whenever nothing waits.
//! - The node is eligible unless its Node object has a `deletionTimestamp` or the taint
//!   `ToBeDeletedByClusterAutoscaler` ([`node_eligible`]); no Node object (a manifest directory
//!   without one) leaves it eligible.
//! - [`ProxyHealth::healthz`] and [`ProxyHealth::livez`] are kube-proxy's answers, status and
//!   body: `/healthz` is 200 only when healthy and eligible, `/livez` ignores eligibility. The
//!   body is kube-proxy's `ProxyHealth` as Go's `encoding/json` writes it (fields in its
//!   order, times in RFC 3339 with the fraction trimmed, UTC), with one proxier, `IPv4`
//!   (podswitch serves IPv4 only). As in kube-proxy, a healthy answer gives `lastUpdated` as the
//!   current time (its older releases' meaning).
//! - Every method takes the lock for a moment and never blocks otherwise; callers on any
//!   thread (the apply loop, the API source's runtime, the HTTP server).
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// The taint the Cluster Autoscaler puts on a node it is about to delete (kube-proxy's
/// `ToBeDeletedTaint`).
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
/// kube-proxy's health timeout with its defaults: twice `--sync-period` (30 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The one proxier's IP family, as kube-proxy names it in `status`.
const FAMILY: &str = "IPv4";

/// A moment on both clocks: the wall clock for what is shown, the monotonic one for ages.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub wall: SystemTime,
    pub mono: Instant,
}

impl Moment {
    pub fn now() -> Self {
        Moment { wall: SystemTime::now(), mono: Instant::now() }
    }

    /// `d` later on both clocks (tests).
    pub fn after(self, d: Duration) -> Self {
        Moment { wall: self.wall + d, mono: self.mono + d }
    }
}

/// Whether a node may get load balancers' traffic: not being deleted, not tainted
/// `ToBeDeletedByClusterAutoscaler` (kube-proxy's `NodeEligible`).
pub fn node_eligible(node: &Node) -> bool {
    if node.metadata.deletion_timestamp.is_some() {
        return false;
    }
    !node.spec.iter().flat_map(|s| s.taints.iter().flatten()).any(|t| t.key == TO_BE_DELETED_TAINT)
}

#[derive(Debug)]
struct State {
    /// When the tables last became the source's (`Updated`).
    last_updated: Option<SystemTime>,
    /// The oldest change the tables do not have yet (`QueuedUpdate`).
    oldest_pending: Option<Instant>,
    node_eligible: bool,
}

/// See the module contract.
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    state: Mutex<State>,
}

/// One answer of the health endpoints: status, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Answer {
    /// A JSON answer with the headers kube-proxy sets on every health answer.
    pub(crate) fn json(status: u16, body: String) -> Self {
        Answer {
            status,
            headers: vec![("Content-Type", "application/json".into()), ("X-Content-Type-Options", "nosniff".into())],
            body,
        }
    }
}

/// kube-proxy's `ProxierHealth`.
#[derive(Serialize)]
struct ProxierBody {
    #[serde(rename = "lastUpdated")]
    last_updated: String,
    healthy: bool,
}

/// kube-proxy's `ProxyHealth`, fields in its order.
#[derive(Serialize)]
struct ProxyBody {
    #[serde(rename = "lastUpdated")]
    last_updated: String,
    #[serde(rename = "currentTime")]
    current_time: String,
    #[serde(rename = "nodeEligible", skip_serializing_if = "Option::is_none")]
    node_eligible: Option<bool>,
    healthy: bool,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    status: std::collections::BTreeMap<&'static str, ProxierBody>,
}

/// A time as Go's `encoding/json` writes a `time.Time` (RFC 3339, fraction trimmed); `None`
/// is Go's zero time.
pub fn go_time(t: Option<SystemTime>) -> String {
    match t.and_then(|t| Timestamp::try_from(t).ok()) {
        Some(ts) => ts.to_string(),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

impl ProxyHealth {
    pub fn new(timeout: Duration) -> Self {
        ProxyHealth { timeout, state: Mutex::new(State { last_updated: None, oldest_pending: None, node_eligible: true }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The health timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The source has a change the tables do not have yet.
    pub fn queued_update(&self) {
        self.queued_update_at(Moment::now());
    }

    pub fn queued_update_at(&self, now: Moment) {
        let mut st = self.lock();
        if st.oldest_pending.is_none() {
            st.oldest_pending = Some(now.mono);
        }
    }

    /// The tables in force are the source's.
    pub fn updated(&self) {
        self.updated_at(Moment::now());
    }

    pub fn updated_at(&self, now: Moment) {
        let mut st = self.lock();
        st.oldest_pending = None;
        st.last_updated = Some(now.wall);
    }

    /// Records whether the node is eligible ([`node_eligible`]); true when it changed.
    pub fn set_node_eligible(&self, eligible: bool) -> bool {
        let mut st = self.lock();
        std::mem::replace(&mut st.node_eligible, eligible) != eligible
    }

    pub fn node_eligible(&self) -> bool {
        self.lock().node_eligible
    }

    /// Whether the tables keep up with the source (kube-proxy's `Health().Healthy`).
    pub fn is_healthy(&self) -> bool {
        self.is_healthy_at(Moment::now())
    }

    pub fn is_healthy_at(&self, now: Moment) -> bool {
        let st = self.lock();
        healthy(&st, self.timeout, now)
    }

    /// The answer of `/healthz` at `now`.
    pub fn healthz(&self, now: Moment) -> Answer {
        self.answer(now, true)
    }

    /// The answer of `/livez` at `now`.
    pub fn livez(&self, now: Moment) -> Answer {
        self.answer(now, false)
    }

    fn answer(&self, now: Moment, with_node: bool) -> Answer {
        let st = self.lock();
        let proxier_healthy = healthy(&st, self.timeout, now);
        let mut status = std::collections::BTreeMap::new();
        if let Some(t) = st.last_updated {
            status.insert(FAMILY, ProxierBody { last_updated: go_time(Some(t)), healthy: proxier_healthy });
        }
        let ok = proxier_healthy && (!with_node || st.node_eligible);
        let body = ProxyBody {
            // Healthy: the current time, as kube-proxy says it for older clients.
            last_updated: go_time(if ok { Some(now.wall) } else { st.last_updated }),
            current_time: go_time(Some(now.wall)),
            node_eligible: with_node.then_some(st.node_eligible),
            healthy: proxier_healthy,
            status,
        };
        drop(st);
        let body = serde_json::to_string(&body).expect("plain fields serialize");
        Answer::json(if ok { 200 } else { 503 }, body)
    }
}

fn healthy(st: &State, timeout: Duration, now: Moment) -> bool {
    // As kube-proxy: healthy while starting up (never updated) or with nothing waiting long.
    match (st.last_updated, st.oldest_pending) {
        (Some(_), Some(since)) => now.mono.saturating_duration_since(since) < timeout,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};
    use serde_json::Value;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn body(a: &Answer) -> Value {
        serde_json::from_str(&a.body).unwrap()
    }

    #[test]
    fn times_are_written_as_go_writes_them() {
        assert_eq!(go_time(None), "0001-01-01T00:00:00Z");
        assert_eq!(go_time(Some(at(1_700_000_000))), "2023-11-14T22:13:20Z");
        assert_eq!(go_time(Some(at(1_700_000_000) + Duration::from_millis(120))), "2023-11-14T22:13:20.12Z");
        assert_eq!(go_time(Some(at(1_700_000_000) + Duration::from_nanos(1))), "2023-11-14T22:13:20.000000001Z");
    }

    #[test]
    fn healthz_and_livez_follow_kube_proxy() {
        let h = ProxyHealth::new(Duration::from_secs(10));
        let t0 = Moment { wall: at(1_700_000_000), mono: Instant::now() };
        // Starting up: healthy, no status yet, zero lastUpdated replaced by the current time.
        let a = h.healthz(t0);
        assert_eq!(a.status, 200);
        assert_eq!(
            a.body,
            r#"{"lastUpdated":"2023-11-14T22:13:20Z","currentTime":"2023-11-14T22:13:20Z","nodeEligible":true,"healthy":true}"#
        );
        assert_eq!(
            a.headers,
            vec![("Content-Type", "application/json".to_string()), ("X-Content-Type-Options", "nosniff".to_string())]
        );
        let a = h.livez(t0);
        assert_eq!((a.status, body(&a).get("nodeEligible")), (200, None), "{}", a.body);

        h.updated_at(t0);
        // Nothing waits: healthy however long ago the last update was.
        let t1 = t0.after(Duration::from_secs(25));
        let a = h.healthz(t1);
        assert_eq!(a.status, 200);
        assert_eq!(
            a.body,
            r#"{"lastUpdated":"2023-11-14T22:13:45Z","currentTime":"2023-11-14T22:13:45Z","nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"2023-11-14T22:13:20Z","healthy":true}}}"#
        );
        // A change waits, not yet for the timeout: healthy; past it: 503 on both.
        h.queued_update_at(t1);
        assert_eq!(h.healthz(t1.after(Duration::from_secs(9))).status, 200);
        let t2 = t1.after(Duration::from_secs(10));
        let a = h.healthz(t2);
        assert_eq!(a.status, 503);
        assert_eq!(
            a.body,
            r#"{"lastUpdated":"2023-11-14T22:13:20Z","currentTime":"2023-11-14T22:13:55Z","nodeEligible":true,"healthy":false,"status":{"IPv4":{"lastUpdated":"2023-11-14T22:13:20Z","healthy":false}}}"#
        );
        assert_eq!(h.livez(t2).status, 503);
        assert!(!h.is_healthy_at(t2));
        // A second change does not move the oldest one's time.
        h.queued_update_at(t2);
        assert_eq!(h.livez(t2).status, 503);
        // Applied: healthy again.
        h.updated_at(t2);
        assert_eq!(h.healthz(t2).status, 200);
        // Not eligible: /healthz 503 with healthy true, /livez 200.
        assert!(h.set_node_eligible(false));
        let a = h.healthz(t2);
        assert_eq!(a.status, 503);
        let v = body(&a);
        assert_eq!((v["healthy"].as_bool(), v["nodeEligible"].as_bool()), (Some(true), Some(false)), "{v}");
        assert_eq!(v["lastUpdated"], "2023-11-14T22:13:55Z", "{v}");
        assert_eq!(h.livez(t2).status, 200);
        assert!(!h.set_node_eligible(false));
        assert!(h.set_node_eligible(true));
        assert_eq!(h.healthz(t2).status, 200);
    }

    #[test]
    fn nodes_being_deleted_or_tainted_for_deletion_are_not_eligible() {
        let mut n = Node::default();
        assert!(node_eligible(&n));
        n.spec = Some(NodeSpec { taints: Some(vec![Taint { key: "other".into(), effect: "NoSchedule".into(), ..Taint::default() }]), ..NodeSpec::default() });
        assert!(node_eligible(&n));
        n.spec.as_mut().unwrap().taints.as_mut().unwrap().push(Taint { key: TO_BE_DELETED_TAINT.into(), effect: "NoSchedule".into(), ..Taint::default() });
        assert!(!node_eligible(&n));
        let mut d = Node::default();
        d.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH));
        assert!(!node_eligible(&d));
    }
}
