//! The supervisor (`podswitch lab supervise`, hidden, started detached by `lab up`): applies
//! edits of the manifest directory live, as a watch on the Kubernetes API would deliver them.
//!
//! Contract:
//! - Watches the manifest directory with inotify (the `notify` crate) and polls it every second
//!   as a fallback; acts when `manifests::dir_digest` differs from the digest in `synced`.
//! - Applying = [`super::plan::plan`] then [`super::pods::reconcile`] under the lab lock: new
//!   pods get namespaces, veths and servers, deleted pods are removed, and any change of any
//!   object rewrites the API view. On success it writes the digest to `synced`.
//! - Content that does not load (bad YAML, duplicate IPs, ...) is reported in its log and in
//!   `sync-error` (with the digest), the view in force stays, and the same content is not
//!   retried; the next edit is.
//! - It reaps the servers it started, and exits when the lab's state file is gone.
use std::path::Path;
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};

use super::state::{self, State};
use podswitch_control::manifests;

#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {}

fn log(msg: &str) {
    eprintln!("{} {msg}", state::timestamp());
}

pub fn run(_a: SuperviseArgs) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("cannot find the podswitch-lab executable")?;
    let dir = State::load_required()?.manifests;
    // TODO(merge): use run's watch loop. This loop (inotify plus a 1 s poll, settle a burst,
    // digest, skip the digest in force or known bad) is the one `podswitch run` has for its
    // manifest directory in run/mod.rs; once helper C1's refactor makes that loop a public
    // function of podswitch-control, call it here with `apply` as the action.
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .context("cannot create a file watcher")?;
    match watcher.watch(&dir, RecursiveMode::NonRecursive) {
        Ok(()) => log(&format!("supervisor (pid {}): watching {}", std::process::id(), dir.display())),
        Err(e) => log(&format!("cannot watch {} ({e}); polling it every second", dir.display())),
    }
    let mut children: Vec<Child> = Vec::new();
    let mut failed: Option<String> = None;
    let mut unreadable = false;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(()) => {
                // Let a burst of events (an editor's save, a `cp` of several files) settle.
                std::thread::sleep(Duration::from_millis(100));
                while rx.try_recv().is_ok() {}
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_secs(1)),
        }
        children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        if !state::state_path().exists() {
            log("the lab's state file is gone: exiting");
            return Ok(0);
        }
        let digest = match manifests::dir_digest(&dir) {
            Ok(d) => {
                unreadable = false;
                d
            }
            Err(e) => {
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
    let plan = super::plan::plan(dir, Some(&st.node.name), &st.pods)?;
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
