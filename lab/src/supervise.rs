//! The supervisor (`podswitch lab supervise`, hidden, started detached by `lab up`): applies
//! edits of the manifest directory live, as a watch on the Kubernetes API would deliver them.
//!
//! Contract:
//! - Follows the manifest directory with `podswitch run`'s own [`DirWatch`] (inotify, polled
//!   every second as a fallback); acts when the digest differs from the one in `synced`.
//! - Applying = [`super::plan::plan`] then [`super::pods::reconcile`] under the lab lock: new
//!   pods get namespaces, veths and servers on their node (every node of the lab), deleted pods
//!   are removed, and any change of any object rewrites the API view, which every node's switch
//!   reads. Adding, removing or renaming Nodes of a lab with several is refused (reported like
//!   content that does not load): it needs `lab down` and `lab up`. On success it writes the digest to `synced`.
//! - Content that does not load (bad YAML, duplicate IPs, ...) is reported in its log and in
//!   `sync-error` (with the digest), the view in force stays, and the same content is not
//!   retried; the next edit is.
//! - It reaps the servers it started, and exits when the lab's state file is gone.
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use anyhow::Context;

use super::state::{self, State};
use podswitch_control::run::watch::{DirPoll, DirWatch};

#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {}

fn log(msg: &str) {
    eprintln!("{} {msg}", state::timestamp());
}

pub fn run(_a: SuperviseArgs) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("cannot find the podswitch-lab executable")?;
    let dir = State::load_required()?.manifests;
    // The directory is followed as `podswitch run` follows its own (inotify, settle, digest
    // only when the stat signature changed): the same `DirWatch`.
    let mut watch = match DirWatch::new(&dir) {
        Ok(w) => {
            log(&format!("supervisor (pid {}): watching {}", std::process::id(), dir.display()));
            w
        }
        Err(e) => {
            log(&format!("{e}; polling it every second"));
            DirWatch::polling(&dir)
        }
    }
    // Let a burst of events (an editor's save, a `cp` of several files) settle.
    .with_settle(Duration::from_millis(100));
    let mut children: Vec<Child> = Vec::new();
    let mut failed: Option<String> = None;
    let mut unreadable = false;
    loop {
        let poll = watch.next(Duration::from_secs(1));
        children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        if !state::state_path().exists() {
            log("the lab's state file is gone: exiting");
            return Ok(0);
        }
        let digest = match poll {
            DirPoll::Unchanged => continue,
            DirPoll::Digest(d) => {
                unreadable = false;
                d
            }
            DirPoll::Unreadable(e) => {
                if !unreadable {
                    log(&format!("{e}; keeping the view in force"));
                    unreadable = true;
                }
                continue;
            }
        };
        if state::read_synced().as_deref() == Some(digest.as_str()) || failed.as_deref() == Some(digest.as_str()) {
            continue;
        }
        match apply(&dir, &digest, &exe, &mut children) {
            Ok(()) => failed = None,
            Err(e) => {
                let msg = format!("{e:#}");
                log(&format!("cannot apply the manifests (digest {digest}): {msg}; the view in force stays"));
                let _ = state::write_sync_error(&digest, &msg);
                failed = Some(digest);
            }
        }
    }
}

/// Applies the current content of `dir` (whose digest was `digest` when looked at).
fn apply(dir: &Path, digest: &str, exe: &Path, children: &mut Vec<Child>) -> anyhow::Result<()> {
    let _lock = state::lock(Duration::from_secs(60))?;
    let mut st = State::load_required()?;
    // A one-node lab stays the node it plays; a lab of several follows every Node.
    let node_name = if st.more_nodes.is_empty() { Some(st.node.name.as_str()) } else { st.node.requested_name.as_deref() };
    let foreign = super::cni_network::foreign_attachments(&st);
    let plan = super::plan::plan(dir, node_name, &st.pods, &foreign)?;
    log(&format!("applying {} (digest {})", dir.display(), plan.digest));
    let mut logf = |m: &str| log(m);
    let result = super::pods::reconcile(&mut st, &plan, exe, children, &mut logf);
    st.save()?;
    let changes = result?;
    state::write_synced(&plan.digest)?;
    log(&format!("applied digest {}: {}", plan.digest, changes.describe()));
    if plan.digest != digest {
        log("the directory changed again meanwhile; the next round picks it up");
    }
    Ok(())
}
