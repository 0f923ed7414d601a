//! The way back for connections the node's kernel forwards to a pod after a DNAT: the
//! `portmap` CNI plugin's hostPorts (chained after podswitch-cni).
//!
//! A client outside the node connects to NODEIP:HOSTPORT; the kernel DNATs that to the pod
//! and routes it over the host port to the switch. The pod's reply goes to the client's
//! address, which the switch would route straight out of the uplink, past the kernel that has
//! to undo the DNAT: the client would get an answer from the pod's address and drop it. So such
//! connections are masqueraded as they leave the kernel for the switch (one `iptables` rule in
//! the node's `nat` table, `POSTROUTING -o psw-host --ctstate DNAT`): the pod sees the node's
//! address, replies to it, the switch routes that to the host port, and the kernel undoes both
//! translations. This is what kube-proxy does for NodePorts with externalTrafficPolicy Cluster;
//! as there, the pod sees the node as the client, and NetworkPolicy, which lets the node reach
//! its pods, does not see the outside client.
//!
//! Contract: [`ensure`] adds the rule unless it is there (it is found again by its comment),
//! [`remove`] deletes it; both run `iptables` in the caller's network namespace. Without the
//! `iptables` command there is nothing to add (nothing can have made a DNAT with it either):
//! [`ensure`] says so and returns [`Ensured::NoIptables`].
use std::process::Command;

use crate::naming::HOST_STACK_IF;

/// The rule's comment, by which it is found again.
const COMMENT: &str = "podswitch: DNATed connections to pods return through the node";

#[derive(Debug, thiserror::Error)]
pub enum DnatReturnError {
    #[error("`iptables {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// What [`ensure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Added,
    AlreadyThere,
    NoIptables,
}

fn rule() -> [&'static str; 14] {
    ["POSTROUTING", "-o", HOST_STACK_IF, "-m", "conntrack", "--ctstate", "DNAT", "-m", "comment", "--comment", COMMENT, "-j", "MASQUERADE", "--random-fully"]
}

/// Runs `iptables -t nat OP rule`: Ok(true) when it succeeded, Ok(false) when it answered no
/// (`-C` of a missing rule), None when there is no `iptables`.
fn iptables(op: &str) -> Option<Result<bool, DnatReturnError>> {
    let mut args = vec!["-w", "5", "-t", "nat", op];
    args.extend(rule());
    let out = match Command::new("iptables").args(&args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(DnatReturnError::Failed { args: args.join(" "), stderr: e.to_string() })),
    };
    if out.status.success() {
        return Some(Ok(true));
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    // `-C` exits 1 for "no such rule" (a missing chain, table or match module is 2 or more).
    if op == "-C" && out.status.code() == Some(1) {
        return Some(Ok(false));
    }
    Some(Err(DnatReturnError::Failed { args: args.join(" "), stderr }))
}

/// Adds the rule unless it is there (see the module contract).
pub fn ensure() -> Result<Ensured, DnatReturnError> {
    match iptables("-C") {
        None => {
            tracing::warn!("no iptables command: connections a portmap hostPort DNATs to a pod would get no answer (nothing can make them without iptables either)");
            Ok(Ensured::NoIptables)
        }
        Some(Ok(true)) => Ok(Ensured::AlreadyThere),
        Some(Ok(false)) => iptables("-A").unwrap_or(Ok(false)).map(|_| Ensured::Added),
        Some(Err(e)) => Err(e),
    }
}

/// Deletes the rule (every copy of it), if there is one.
pub fn remove() {
    while matches!(iptables("-D"), Some(Ok(true))) {}
}
