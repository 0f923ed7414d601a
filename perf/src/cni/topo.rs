//! The namespaces of one setup's turn, all named `psbcni-…` and made by the benchmark:
//!
//! - `psbcni-node`: the node, where the runtime would run. The plugins run here (the calling
//!   thread enters it, see [`in_netns`]) and make the pods' host-side veths here; podswitch's
//!   switch runs here. `lo` up with the node's address 172.18.0.2/32 (as in cni/tests).
//! - `psbcni-peer`: the peer pod, attached by the setup's own plugin before the measured pods;
//!   it receives the pods' first packets.
//! - `psbcni-p0` … `psbcni-pN-1`: the measured pods' sandboxes, made before their ADDs (the
//!   runtime's part, not timed), `lo` up and nothing else.
//!
//! [`destroy`] removes every `psbcni-` namespace with every process inside: idempotent, for
//! the cleanup guard (end of a turn, errors, panics, SIGINT/SIGTERM).
use std::fs::File;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use nix::sched::CloneFlags;

use crate::sys::run;

/// The prefix of every namespace this benchmark makes.
pub const PREFIX: &str = "psbcni-";
pub const NS_NODE: &str = "psbcni-node";
pub const NS_PEER: &str = "psbcni-peer";
/// The node's own address (on its `lo`).
pub const NODE_IP: &str = "172.18.0.2";

/// The network namespace of measured pod `i`.
pub fn pod_ns(i: usize) -> String {
    format!("{PREFIX}p{i}")
}

/// The path a runtime passes as `CNI_NETNS` for namespace `ns`.
pub fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(ns)
}

fn add_ns(ns: &str) -> Result<()> {
    run(&["ip", "netns", "add", ns])?;
    run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Makes the node, the peer's sandbox and `pods` pod sandboxes (after removing any left over).
pub fn create(pods: usize) -> Result<()> {
    destroy();
    add_ns(NS_NODE)?;
    run(&["ip", "-n", NS_NODE, "addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"])?;
    add_ns(NS_PEER)?;
    for i in 0..pods {
        add_ns(&pod_ns(i))?;
        // Stops here when interrupted (a zero nap only looks at the flag).
        crate::sys::nap(std::time::Duration::ZERO)?;
    }
    Ok(())
}

/// Every namespace named `psbcni-…` now.
fn ours() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str().filter(|n| n.starts_with(PREFIX)).map(String::from)).collect())
        .unwrap_or_default()
}

/// Removes every `psbcni-` namespace, with every process inside (see the module contract).
pub fn destroy() {
    let names = ours();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    crate::lab::destroy_namespaces(&refs);
}

/// Runs `f` on a thread of its own that has entered network namespace `ns` first: sockets it
/// opens and processes it starts belong to `ns` (a child inherits its parent thread's
/// namespaces), while the rest of this program stays where it is.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = netns_path(ns);
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(&path)?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("the thread working in {ns} panicked"))?
    })
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &std::path::Path) -> Result<()> {
    let fd = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {}", path.display()))
}
