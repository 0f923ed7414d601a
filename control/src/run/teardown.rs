//! Undoing what start-up did, once, whichever way `podswitch run` ends.
//!
//! Contract: start-up records each thing it makes in a [`Teardown`] as soon as it exists; when
//! the guard drops (a normal stop, a failed start-up step; a panic only in builds that unwind:
//! release builds abort), it undoes them in the reverse order: the dataplane stops (every port detached, workers stopped), the
//! host port pair is deleted (its routes go with it), the DNAT return rule is deleted, the
//! control socket file is removed, and with `--cleanup` the connection table's state file
//! (else it stays for the next process to adopt).
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
        if self.host_port {
            host_port::remove();
        }
        if self.dnat_return {
            dnat_return::remove();
            super::node_local::remove();
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
