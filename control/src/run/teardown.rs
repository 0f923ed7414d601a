//! Undoing what start-up did, once, whichever way `podswitch run` ends.
//!
//! Contract: start-up records each thing it makes in a [`Teardown`] as soon as it exists; when
//! the guard drops (a normal stop, a failed start-up step; a panic only in builds that unwind:
//! release builds abort), it undoes them in the reverse order: the dataplane stops (every port
//! detached, workers stopped), the host port pair is deleted (its routes go with it), the DNAT
//! return rule and the node-local rules are deleted, the control socket file is removed, and
//! with `--cleanup` the connection table's state file (else it stays for the next process to
//! adopt).
//!
//! Once start-up has finished ([`Teardown::started`]), a stop without `--cleanup` keeps what the
//! node's own traffic needs (the host port pair and its routes, the DNAT return and node-local
//! rules) for the next `podswitch run`, as kube-proxy's rules outlive kube-proxy: the node's
//! connections to its pods and Services are not torn down by a restart or an upgrade. A failed
//! start-up still removes everything it made.
use std::path::PathBuf;
use std::sync::Arc;

use super::{dnat_return, host_port};
use super::shared::Shared;

#[derive(Default)]
pub(crate) struct Teardown {
    control_socket: Option<PathBuf>,
    host_port: bool,
    dnat_return: bool,
    dataplane: Option<Arc<Shared>>,
    state_file: Option<PathBuf>,
    /// Keep the node's links and rules at the end (start-up finished, no `--cleanup`).
    keep_for_successor: bool,
}

impl Teardown {
    /// The control socket file exists at `path`.
    pub fn control_socket(&mut self, path: PathBuf) {
        self.control_socket = Some(path);
    }

    /// The host port pair exists.
    pub fn host_port(&mut self) {
        self.host_port = true;
    }

    /// The DNAT return rule was added.
    pub fn dnat_return(&mut self) {
        self.dnat_return = true;
    }

    /// The connection table's state file is to be removed at the end (`--cleanup`).
    pub fn state_file(&mut self, path: PathBuf) {
        self.state_file = Some(path);
    }

    /// Start-up finished: from now on a stop keeps the node's links and rules for the next
    /// process, unless `cleanup`.
    pub fn started(&mut self, cleanup: bool) {
        self.keep_for_successor = !cleanup;
    }

    /// The dataplane runs.
    pub fn dataplane(&mut self, shared: Arc<Shared>) {
        self.dataplane = Some(shared);
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Some(shared) = self.dataplane.take() {
            tracing::info!("stopping");
            shared.dp().stop();
        }
        if self.keep_for_successor {
            if self.host_port || self.dnat_return {
                tracing::info!("the host port, its routes and the node's rules stay for the next podswitch run (--cleanup removes them)");
            }
        } else {
            if self.host_port {
                host_port::remove();
            }
            if self.dnat_return {
                dnat_return::remove();
                super::node_local::remove();
            }
        }
        if let Some(path) = self.control_socket.take() {
            let _ = std::fs::remove_file(path);
        }
        if let Some(path) = self.state_file.take() {
            if let Err(e) = switch::conntrack::state_file::remove(&path) {
                tracing::warn!(path = %path.display(), "cannot remove the state file: {e}");
            }
        }
    }
}
