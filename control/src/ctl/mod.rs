//! The control socket: how `podswitch show` (and the lab) talk to a running switch.
//!
//! Contract: a Unix stream socket (mode 0600, so only root opens it). The client writes one JSON
//! [`Request`] and a newline; the server answers one JSON object and a newline, then closes,
//! except for streaming requests, which send one JSON object per line until the client goes.
//! Every answer has `"ok": true|false`; a failed one has `"error": "..."`; a successful one is
//! one of the [`replies`] types.
pub mod client;
pub mod replies;
pub mod server;

use serde::{Deserialize, Serialize};

/// The longest a [`Request::WaitPort`] is held.
pub const WAIT_PORT_MAX_MS: u64 = 600_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Sync state: applied manifest digest, ports wanted and attached, last errors.
    Status,
    Ports,
    /// One port's state ([`replies::PortState`]), answered once interface `interface` is
    /// attached and the tables in force route to it as port `key`, or after `timeout_ms`
    /// (at most [`WAIT_PORT_MAX_MS`]) with what is known then. What the CNI plugin's ADD waits
    /// on: cheap for the switch (no counters read) and answered the moment the tables are.
    WaitPort { interface: String, key: String, timeout_ms: u64 },
    Routes,
    Stats,
    /// Per worker: time busy, polling and asleep, bursts, wake-ups ([`replies::Workers`]).
    Workers,
    /// Every Service frontend with its backends and their conditions.
    Services,
    /// Tracked connections (at most `limit`, default 1000), with their tuples, state and age.
    Conntrack {
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Every NetworkPolicy with the pods it selects and its rules' resolved peers and ports.
    Policies,
    /// The uplink's next hops: IP, MAC, the kernel's state, age, what needs them.
    Neighbours,
    /// NetworkPolicy verdicts with sequence number >= `since` (the newest `limit`).
    Flows {
        #[serde(default)]
        since: Option<u64>,
        #[serde(default)]
        limit: Option<usize>,
    },
}
