//! Asking the switch (its control socket, `control/src/ctl`) whether a pod's port is attached.
//!
//! Contract:
//! - [`wait_attached`] asks the switch `wait_port` (the switch answers the moment the pod's
//!   host-side veth is attached and owned by the pod, or at the deadline: the owner comes from
//!   the tables in force, so once it is the pod, the pod's first packet gets through), and
//!   asks again while the switch cannot be reached (every [`POLL_EVERY`]) until the deadline.
//!   A switch from before `wait_port` refuses the request; the plugin then asks it `ports`
//!   every [`POLL_EVERY`] for the same facts (an attached port whose interface is the veth and
//!   whose owner is the pod). It reports
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

use podswitch_control::ctl::replies::PortState;
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

/// Asks the switch to answer once `interface` is attached as pod `key`'s port, or within `left`.
fn wait_port(socket: &Path, interface: &str, key: &str, left: Duration) -> Result<Result<(), Option<String>>, client::ClientError> {
    let req = Request::WaitPort { interface: interface.into(), key: key.into(), timeout_ms: left.as_millis() as u64 };
    // The switch answers at the deadline at the latest; the margin is for its answer to travel.
    let answer = client::request_within(socket, &req, left + Duration::from_secs(2))?;
    let state: PortState = client::read(&answer)?;
    if state.owner.as_deref() == Some(key) {
        return Ok(Ok(()));
    }
    Ok(Err(state.pending))
}

/// Waits up to `timeout` for the switch to attach `interface` (the port of pod `key`).
pub fn wait_attached(socket: &Path, interface: &str, key: &str, timeout: Duration) -> PortWait {
    let deadline = Instant::now() + timeout;
    let mut last = PortWait::Unreachable(format!("no answer from {} yet", socket.display()));
    let mut switch_waits = true;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let asked = if switch_waits { wait_port(socket, interface, key, left) } else { port_attached(socket, interface, key) };
        match asked {
            Ok(Ok(())) => return PortWait::Attached,
            Ok(Err(why)) => last = PortWait::Pending(why),
            Err(client::ClientError::Refused(_)) if switch_waits => {
                // A switch from before `wait_port`.
                switch_waits = false;
                continue;
            }
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
