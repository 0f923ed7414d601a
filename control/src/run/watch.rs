//! Following the object source: the manifest directory or the Kubernetes API.
//!
//! Contract:
//! - [`DirWatch`] (public: the lab's supervisor follows its directory with it too) waits for
//!   inotify events on a directory (a file opened or read is no event: the switch reads the
//!   directory itself) or, in polling mode, for the timeout, lets a burst of
//!   events settle, and says whether the content may have changed: it digests the directory
//!   only when the files' stat signature changed, or every [`FULL_DIGEST_EVERY`] as a check.
//! - `follow_directory` and `follow_api` are the switch's event loops: each view that
//!   differs from the one in force and from the last one refused is applied; a refused view is
//!   reported once (log) and recorded (`show status`) while the tables in force stay; between
//!   views, ports that wait for their interface are retried (every 500 ms at most), and a
//!   change of the uplink's resolved gateway, or of the addresses this node announces, is
//!   taken in (`Switch::follow_neighbours_and_announcements`, at least every 500 ms). They also wait on the CNI plugin's records ([`CniWatch`]): a change
//!   there is taken in at once and the view in force applied again (the directory read again,
//!   the API source's view held). Both return when `stop` is set (SIGTERM, SIGINT).
//! - For the health check ([`crate::health::ProxyHealth`]): a directory that digests other than
//!   the view in force is a change waiting (until applied, or undone); the API source tells of
//!   its changes itself; every applied view brings the tables up to date.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use notify::Watcher;

use super::apply::Switch;
use super::cni_watch::CniWatch;
use crate::kube_source::KubeSource;
use crate::manifests::{self, DirSignature, ManifestError, Manifests};

/// How often [`DirWatch`] digests a directory whose stat signature has not changed.
pub const FULL_DIGEST_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {}: {source}", dir.display())]
pub struct WatchError {
    pub dir: PathBuf,
    pub source: notify::Error,
}

/// What [`DirWatch::next`] found.
#[derive(Debug)]
pub enum DirPoll {
    /// The directory's files have the stat signature they had when last digested.
    Unchanged,
    /// The directory was digested (its content may or may not differ from before).
    Digest(String),
    Unreadable(ManifestError),
}

/// A manifest directory followed by inotify (see the module contract).
pub struct DirWatch {
    dir: PathBuf,
    rx: Receiver<()>,
    /// Keeps the channel open in polling mode.
    _tx: Option<Sender<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
    settle: Duration,
    /// The stat signature when the directory was last digested, and when.
    digested: Option<(DirSignature, Instant)>,
}

impl DirWatch {
    /// Follows `dir` by inotify events; lets bursts settle for 20 ms.
    pub fn new(dir: &Path) -> Result<Self, WatchError> {
        let (tx, rx) = crossbeam::channel::unbounded();
        let err = |source| WatchError { dir: dir.to_path_buf(), source };
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // A file opened or read is no change (the switch reads the directory itself).
            if !res.as_ref().is_ok_and(|e| e.kind.is_access()) {
                let _ = tx.send(());
            }
        })
        .map_err(err)?;
        watcher.watch(dir, notify::RecursiveMode::NonRecursive).map_err(err)?;
        Ok(Self { dir: dir.to_path_buf(), rx, _tx: None, _watcher: Some(watcher), settle: Duration::from_millis(20), digested: None })
    }

    /// Follows `dir` by looking at it at every [`DirWatch::next`] (when inotify is refused).
    pub fn polling(dir: &Path) -> Self {
        let (tx, rx) = crossbeam::channel::unbounded();
        Self { dir: dir.to_path_buf(), rx, _tx: Some(tx), _watcher: None, settle: Duration::ZERO, digested: None }
    }

    /// How long a burst of events (an editor's save, a `cp` of several files) may last.
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits for an event or `timeout`, lets a burst settle, then digests the directory unless
    /// its stat signature is the one last digested (and that was less than
    /// [`FULL_DIGEST_EVERY`] ago).
    pub fn next(&mut self, timeout: Duration) -> DirPoll {
        self.next_or(timeout, &crossbeam::channel::never())
    }

    /// As [`Self::next`], but returns [`DirPoll::Unchanged`] at once when `wake` fires first
    /// (what `wake` carries is left for its owner to take).
    pub fn next_or(&mut self, timeout: Duration, wake: &Receiver<()>) -> DirPoll {
        let mut sel = crossbeam::channel::Select::new();
        let events = sel.recv(&self.rx);
        sel.recv(wake);
        match sel.ready_timeout(timeout) {
            Ok(i) if i == events => {
                std::thread::sleep(self.settle);
                while self.rx.try_recv().is_ok() {}
            }
            Ok(_) => return DirPoll::Unchanged,
            Err(_) => {}
        }
        let signature = manifests::dir_signature(&self.dir).ok();
        if let (Some(sig), Some((last, at))) = (&signature, &self.digested) {
            if sig == last && at.elapsed() < FULL_DIGEST_EVERY {
                return DirPoll::Unchanged;
            }
        }
        self.digested = signature.map(|sig| (sig, Instant::now()));
        match manifests::dir_digest(&self.dir) {
            Ok(d) => DirPoll::Digest(d),
            Err(e) => DirPoll::Unreadable(e),
        }
    }
}

/// The last view refused, so that it is reported once and not applied again.
#[derive(Debug, Default)]
struct Refused {
    digest: String,
}

impl Refused {
    fn record(&mut self, sw: &mut Switch, digest: &str, e: String) {
        if self.digest != digest {
            tracing::error!("manifests not applied, the tables in force stay: {e}");
        }
        digest.clone_into(&mut self.digest);
        sw.refused(e);
    }

    /// Applies the view in force `m` again after the CNI plugin's records changed the pods.
    fn apply_for_cni(&mut self, sw: &mut Switch, m: &Manifests, since: std::time::Instant) {
        match sw.apply(m) {
            Ok(()) => tracing::info!(
                ports = sw.attached.len(),
                pending = sw.pending.len(),
                ms = since.elapsed().as_secs_f64() * 1e3,
                "CNI attachments applied"
            ),
            Err(e) => self.record(sw, &m.digest, e.to_string()),
        }
    }

    fn clear(&mut self) {
        self.digest.clear();
    }
}

/// The event loop over a manifest directory (see the module contract).
pub(crate) fn follow_directory(sw: &mut Switch, watch: &mut DirWatch, cni: &mut CniWatch, stop: &AtomicBool) {
    let mut refused = Refused::default();
    while !stop.load(Ordering::Relaxed) {
        sw.follow_neighbours_and_announcements();
        let since = std::time::Instant::now();
        if cni.changed().is_some_and(|a| sw.set_cni_pods(a)) {
            match manifests::load_dir(watch.dir()) {
                Ok(m) => refused.apply_for_cni(sw, &m, since),
                Err(e) => refused.record(sw, "unreadable", e.to_string()),
            }
        }
        let digest = match watch.next_or(Duration::from_millis(500), cni.wake()) {
            DirPoll::Unchanged => {
                sw.retry_pending();
                continue;
            }
            DirPoll::Digest(d) => d,
            DirPoll::Unreadable(e) => {
                refused.record(sw, "unreadable", e.to_string());
                continue;
            }
        };
        if digest == sw.applied_digest && !refused.digest.is_empty() {
            // A bad edit was undone: what is in force is what the directory says again.
            sw.clear_error();
            sw.source_in_force();
            refused.clear();
        }
        if digest == sw.applied_digest || digest == refused.digest {
            // Nothing new; retry pending ports.
            sw.retry_pending();
            continue;
        }
        // The directory differs from the tables in force: stale until it is applied.
        sw.source_changed();
        let m = match manifests::load_dir(watch.dir()) {
            Ok(m) => m,
            Err(e) => {
                refused.record(sw, &digest, e.to_string());
                continue;
            }
        };
        match sw.apply(&m) {
            Ok(()) => {
                refused.clear();
                tracing::info!(digest = %sw.applied_digest, ports = sw.attached.len(), pending = sw.pending.len(), "manifests applied");
            }
            Err(e) => refused.record(sw, &digest, e.to_string()),
        }
    }
}

/// The event loop over the Kubernetes API source (see the module contract).
pub(crate) fn follow_api(sw: &mut Switch, src: &mut KubeSource, cni: &mut CniWatch, stop: &AtomicBool) {
    let mut refused = Refused::default();
    while !stop.load(Ordering::Relaxed) {
        sw.follow_neighbours_and_announcements();
        let since = std::time::Instant::now();
        if cni.changed().is_some_and(|a| sw.set_cni_pods(a)) {
            refused.apply_for_cni(sw, src.view(), since);
        }
        match src.recv_timeout_or(Duration::from_millis(500), cni.wake()) {
            Ok(m) => match sw.apply(m) {
                Ok(()) => {
                    refused.clear();
                    tracing::info!(digest = %sw.applied_digest, ports = sw.attached.len(), pending = sw.pending.len(), "Kubernetes API view applied");
                }
                Err(e) => refused.record(sw, &m.digest, e.to_string()),
            },
            // No new view; retry pending ports.
            Err(_) => sw.retry_pending(),
        }
    }
}

/// Waits for the API source's first complete view, saying every 5 s what it waits for; a copy
/// of it (the source keeps its own, which later updates change).
pub(crate) fn first_api_view(src: &mut KubeSource) -> Manifests {
    println!("podswitch: watching the Kubernetes API at {}", src.status().server);
    loop {
        if let Ok(m) = src.recv_timeout(Duration::from_secs(5)) {
            return m.clone();
        }
        let st = src.status();
        let waiting: Vec<&str> = st.kinds.iter().filter(|(_, k)| !k.listed || k.listing || !k.connected).map(|(n, _)| n.as_str()).collect();
        tracing::warn!(
            connected = st.connected,
            last_error = st.last_error.as_deref().unwrap_or("-"),
            "waiting for a complete list of {}",
            waiting.join(", ")
        );
    }
}

/// Takes views from `next` (each call waits up to its argument for one) until the Node named
/// `node` can be served ([`crate::model::own_node_incomplete`]), starting from `first`; says
/// why it waits through `waiting`, once and then every 30 s.
pub(crate) fn until_own_node_complete(
    first: Manifests,
    node: &str,
    mut next: impl FnMut(Duration) -> Option<Manifests>,
    mut waiting: impl FnMut(&str),
) -> Manifests {
    let mut m = first;
    let mut said: Option<(String, Instant)> = None;
    while let Some(why) = crate::model::own_node_incomplete(&m, node) {
        let due = said.as_ref().is_none_or(|(last, at)| *last != why || at.elapsed() >= Duration::from_secs(30));
        if due {
            waiting(&why);
            said = Some((why, Instant::now()));
        }
        if let Some(v) = next(Duration::from_secs(5)) {
            m = v;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_yaml(cidr: Option<&str>, ip: Option<&str>) -> Manifests {
        let mut m = Manifests::default();
        let mut v = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {}, "status": {}});
        if let Some(c) = cidr {
            v["spec"]["podCIDR"] = c.into();
        }
        if let Some(ip) = ip {
            v["status"]["addresses"] = serde_json::json!([{"type": "InternalIP", "address": ip}]);
        }
        m.nodes.insert("n1".into(), serde_json::from_value(v).unwrap());
        m
    }

    #[test]
    fn the_start_waits_for_its_own_node_with_a_pod_cidr_and_an_internal_ip() {
        let mut views = vec![node_yaml(Some("10.244.7.0/24"), Some("192.0.2.7")), node_yaml(Some("10.244.7.0/24"), None), node_yaml(None, Some("192.0.2.7"))];
        let mut said = Vec::new();
        let m = until_own_node_complete(Manifests::default(), "n1", |_| views.pop(), |w| said.push(w.to_string()));
        let node = crate::model::node_info(&m, Some("n1")).unwrap();
        assert_eq!((node.pod_cidr.to_string(), node.internal_ip.to_string()), ("10.244.7.0/24".to_string(), "192.0.2.7".to_string()));
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(said[0].contains("no Node object named \"n1\""), "{}", said[0]);
        assert!(said[1].contains("no IPv4 spec.podCIDR"), "{}", said[1]);
        assert!(said[2].contains("no IPv4 InternalIP"), "{}", said[2]);
        // A complete Node at once: no wait, nothing said.
        let mut said = Vec::new();
        until_own_node_complete(node_yaml(Some("10.244.7.0/24"), Some("192.0.2.7")), "n1", |_| panic!("no wait"), |w| said.push(w.to_string()));
        assert!(said.is_empty());
    }

    fn poll_digest(w: &mut DirWatch) -> Option<String> {
        match w.next(Duration::ZERO) {
            DirPoll::Digest(d) => Some(d),
            DirPoll::Unchanged => None,
            DirPoll::Unreadable(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_directory_is_digested_first_and_again_only_when_its_files_change() {
        let dir = std::env::temp_dir().join(format!("podswitch-dirwatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), "kind: Namespace\n").unwrap();
        for mut w in [DirWatch::new(&dir).unwrap(), DirWatch::polling(&dir)] {
            let first = poll_digest(&mut w).expect("the first look digests");
            assert_eq!(poll_digest(&mut w), None, "same files: no digest");
            std::fs::write(dir.join("b.yaml"), "kind: Namespace\n").unwrap();
            let second = poll_digest(&mut w).expect("a new file: digest again");
            assert_ne!(first, second);
            std::fs::remove_file(dir.join("b.yaml")).unwrap();
            assert_eq!(poll_digest(&mut w), Some(first), "the same content digests the same");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        let mut gone = DirWatch::polling(&dir);
        assert!(matches!(gone.next(Duration::ZERO), DirPoll::Unreadable(_)));
    }
}
