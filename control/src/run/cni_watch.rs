//! Following the CNI plugin's attachment records (`--cni-data-dir`, [`crate::cni_records`]).
//!
//! Contract: [`CniWatch::new`] creates the directory if it is missing (so that the first ADD on
//! a node is seen at once) and watches it and its subdirectories by inotify; [`CniWatch::wake`]
//! is a channel the event loops wait on together with their object source, so an ADD is taken
//! in within milliseconds. [`CniWatch::changed`] drains that channel and reads again only the
//! files the events named (all of them the first time, when inotify's queue overflowed, or,
//! without inotify, at most every second): one ADD costs one file read whatever the number of
//! pods. It returns what the records say when that differs from what it returned last. A
//! directory it cannot read keeps the pods it read last, with the error as a problem.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use notify::Watcher;

use crate::cni_records::{PodAddresses, RecordFiles};

/// How often the records are read again when inotify is refused.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// What the events named since [`CniWatch::changed`] last looked.
#[derive(Debug, Default)]
struct Dirty {
    paths: BTreeSet<PathBuf>,
    /// An event without paths (inotify's queue overflowed, or an error): read everything.
    everything: bool,
}

pub(crate) struct CniWatch {
    dir: PathBuf,
    rx: Receiver<()>,
    dirty: Arc<Mutex<Dirty>>,
    /// The records as last read.
    files: Option<RecordFiles>,
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
        let dirty = Arc::new(Mutex::new(Dirty::default()));
        let noted = Arc::clone(&dirty);
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // A record opened or read is no change (the switch reads them itself).
            if res.as_ref().is_ok_and(|e| e.kind.is_access()) {
                return;
            }
            {
                let mut d = noted.lock().unwrap_or_else(PoisonError::into_inner);
                match res {
                    Ok(e) if !e.need_rescan() && !e.paths.is_empty() => d.paths.extend(e.paths),
                    _ => d.everything = true,
                }
            }
            let _ = wake.send(());
        })
        .and_then(|mut w| w.watch(dir, notify::RecursiveMode::Recursive).map(|()| w));
        match watcher {
            Ok(w) => Self { dir: dir.to_path_buf(), rx, dirty, files: None, _tx: None, watcher: Some(w), last: None, read_at: None },
            Err(e) => {
                tracing::warn!("cannot watch the CNI plugin's records in {} ({e}); reading them every {POLL_EVERY:?}", dir.display());
                Self { dir: dir.to_path_buf(), rx, dirty, files: None, _tx: Some(tx), watcher: None, last: None, read_at: None }
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
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner));
        let read = match &mut self.files {
            Some(files) if self.watcher.is_some() && !dirty.everything => files.refresh(dirty.paths.iter().map(PathBuf::as_path)),
            _ => RecordFiles::read(&self.dir).map(|f| self.files = Some(f)),
        };
        let now = match (read, &self.files) {
            (Ok(()), Some(files)) => files.addresses(),
            (Ok(()), None) => PodAddresses::default(),
            (Err(e), _) => {
                // Read everything again next time: what is kept may be partly stale.
                self.files = None;
                PodAddresses {
                    pods: self.last.as_ref().map(|l| l.pods.clone()).unwrap_or_default(),
                    problems: vec![match std::error::Error::source(&e) {
                        Some(cause) => format!("{e}: {cause}"),
                        None => e.to_string(),
                    }],
                }
            }
        };
        if self.last.as_ref() == Some(&now) {
            return None;
        }
        self.last = Some(now.clone());
        Some(now)
    }
}
