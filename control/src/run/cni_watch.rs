//! Following the CNI plugin's attachment records (`--cni-data-dir`, [`crate::cni_records`]).
//!
//! Contract: [`CniWatch::new`] creates the directory if it is missing (so that the first ADD on
//! a node is seen at once) and watches it and its subdirectories by inotify; [`CniWatch::wake`]
//! is a channel the event loops wait on together with their object source, so an ADD is taken
//! in within milliseconds. [`CniWatch::changed`] drains that channel and reads the records
//! again only when an event came (or, without inotify, at most every second); it returns what
//! they say when that differs from what it returned last. A directory it cannot read keeps the
//! pods it read last, with the error as a problem.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use notify::Watcher;

use crate::cni_records::{self, PodAddresses};

/// How often the records are read again when inotify is refused.
const POLL_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct CniWatch {
    dir: PathBuf,
    rx: Receiver<()>,
    /// Keeps the channel open without inotify.
    _tx: Option<Sender<()>>,
    watcher: Option<notify::RecommendedWatcher>,
    last: Option<PodAddresses>,
    read_at: Option<Instant>,
}

impl CniWatch {
    pub fn new(dir: &Path) -> Self {
        let (tx, rx) = crossbeam::channel::unbounded();
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!("cannot create the CNI plugin's data directory {}: {e}", dir.display());
        }
        let wake = tx.clone();
        let watcher = notify::recommended_watcher(move |_res| {
            let _ = wake.send(());
        })
        .and_then(|mut w| w.watch(dir, notify::RecursiveMode::Recursive).map(|()| w));
        match watcher {
            Ok(w) => Self { dir: dir.to_path_buf(), rx, _tx: None, watcher: Some(w), last: None, read_at: None },
            Err(e) => {
                tracing::warn!("cannot watch the CNI plugin's records in {} ({e}); reading them every {POLL_EVERY:?}", dir.display());
                Self { dir: dir.to_path_buf(), rx, _tx: Some(tx), watcher: None, last: None, read_at: None }
            }
        }
    }

    /// Fires when the records may have changed.
    pub fn wake(&self) -> &Receiver<()> {
        &self.rx
    }

    /// What the records say, when it changed since the last call (see the module contract).
    pub fn changed(&mut self) -> Option<PodAddresses> {
        let mut event = false;
        while self.rx.try_recv().is_ok() {
            event = true;
        }
        let due = match (&self.watcher, self.read_at) {
            (_, None) => true,
            (Some(_), Some(_)) => event,
            (None, Some(at)) => at.elapsed() >= POLL_EVERY,
        };
        if !due {
            return None;
        }
        self.read_at = Some(Instant::now());
        let now = match cni_records::pod_addresses(&self.dir) {
            Ok(a) => a,
            Err(e) => PodAddresses {
                pods: self.last.as_ref().map(|l| l.pods.clone()).unwrap_or_default(),
                problems: vec![match std::error::Error::source(&e) {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                }],
            },
        };
        if self.last.as_ref() == Some(&now) {
            return None;
        }
        self.last = Some(now.clone());
        Some(now)
    }
}
