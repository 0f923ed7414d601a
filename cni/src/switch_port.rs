//! Asking the switch (its control socket, `control/src/ctl`) whether a pod's port is attached.
//!
//! Contract:
//! - [`wait_attached`] asks `ports` every [`POLL_EVERY`] until the switch lists an attached
//!   port whose interface is the pod's host-side veth and whose owner is the pod (the owner
//!   comes from the tables in force: a port is listed as soon as its socket is bound, and
//!   owned once the tables that route to it are published, so only then can the pod's first
//!   packet get through), or until the deadline. It reports
//!   [`PortWait::Unreachable`] when the switch never answered, [`PortWait::Pending`] (with the
//!   switch's reason for the pod's key, when it gave one) when it answered without the port.
//! - [`answers`] is STATUS's probe: the switch answers a `status` request.
//! - Of the `ports` answer only what this needs is read (each attached port's `name` and
//!   `owner`, the
//!   `pending` map from port key to reason; see `ctl::replies::Ports`), so that the plugin
//!   keeps working with a switch whose port rows grew other fields.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use podswitch_control::ctl::{client, Request};
use serde::Deserialize;

/// What the plugin reads of `ctl::replies::Ports`.
#[derive(Debug, Deserialize)]
struct PortsView {
    ports: Vec<PortName>,
    #[serde(default)]
    pending: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct PortName {
    name: String,
    #[serde(default)]
    owner: Option<String>,
}

/// How often [`wait_attached`] asks.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortWait {
    Attached,
    /// The switch answered but had not attached the port; its reason, if it gave one.
    Pending(Option<String>),
    /// The switch never answered; the last error.
    Unreachable(String),
}

/// Whether the switch lists `interface` as attached; the pending reason of `key` otherwise.
pub fn port_attached(socket: &Path, interface: &str, key: &str) -> Result<Result<(), Option<String>>, client::ClientError> {
    let answer = client::request(socket, &Request::Ports)?;
    let ports: PortsView = client::read(&answer)?;
    if ports.ports.iter().any(|p| p.name == interface && p.owner.as_deref() == Some(key)) {
        return Ok(Ok(()));
    }
    Ok(Err(ports.pending.get(key).cloned()))
}

/// Waits up to `timeout` for the switch to attach `interface` (the port of pod `key`).
pub fn wait_attached(socket: &Path, interface: &str, key: &str, timeout: Duration) -> PortWait {
    let deadline = Instant::now() + timeout;
    let mut last = PortWait::Unreachable(format!("no answer from {} yet", socket.display()));
    loop {
        match port_attached(socket, interface, key) {
            Ok(Ok(())) => return PortWait::Attached,
            Ok(Err(why)) => last = PortWait::Pending(why),
            Err(e) => {
                if !matches!(last, PortWait::Pending(_)) {
                    last = PortWait::Unreachable(crate::error::chain(&e));
                }
            }
        }
        if Instant::now() >= deadline {
            return last;
        }
        std::thread::sleep(POLL_EVERY.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Whether the switch answers on `socket`.
pub fn answers(socket: &Path) -> Result<(), client::ClientError> {
    client::request(socket, &Request::Status).map(drop)
}
