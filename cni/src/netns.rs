//! Entering a network namespace for a moment.
//!
//! Contract: [`Entered::enter`] moves the calling thread into the namespace at a path and
//! dropping the guard moves it back. The plugin is single-threaded, so its whole process is
//! where the guard says. Netlink sockets opened while inside stay bound to that namespace
//! after the guard is gone ([`crate::rtnl::open_in`]).
use std::fs::File;
use std::io;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("the network namespace {0} does not exist")]
    Missing(String),
    #[error("cannot open the network namespace {path}")]
    Open { path: String, source: io::Error },
    #[error("cannot enter the network namespace {path}")]
    Enter { path: String, source: nix::Error },
}

/// While alive, the thread is in another network namespace.
pub struct Entered {
    home: File,
}

impl Entered {
    pub fn enter(path: &Path) -> Result<Self, NetnsError> {
        let shown = path.display().to_string();
        let home = File::open("/proc/thread-self/ns/net").map_err(|source| NetnsError::Open { path: "/proc/thread-self/ns/net".into(), source })?;
        let target = File::open(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => NetnsError::Missing(shown.clone()),
            _ => NetnsError::Open { path: shown.clone(), source },
        })?;
        setns(&target, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter { path: shown, source })?;
        Ok(Self { home })
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // Staying in the pod's namespace would make every later step act there: abort loudly.
        setns(&self.home, CloneFlags::CLONE_NEWNET).expect("returning to the plugin's own network namespace");
    }
}
