//! `podswitch lab exec TARGET -- CMD...`: run a command inside a lab namespace.
//!
//! Contract: TARGET is `NS/POD` (namespace `psl_NS_POD`), `node` (the first node, `psl-node`),
//! the name of a lab node (its namespace: `psl-node` for the first, `psl-node-NAME` for the
//! others), `underlay` (`psl-underlay`, in a lab with several nodes) or `external`
//! (`psl-external`, the client outside the cluster). The process is replaced by `ip netns exec NAME CMD...`, so the command's exit code
//! (and signals, and the terminal) are its own. In a node's namespace the command gets that
//! node's CNI network in cnitool's variables: `CNI_PATH` (the lab's plugin directory, then the
//! reference plugins) and `NETCONFPATH` (the node's configuration directory).
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::bail;

use super::{cni_network, netns};
use super::state;

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// NAMESPACE/POD, `node` (the first node), NODENAME (a lab node), `underlay` or `external`.
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// The command and its arguments (after `--`).
    #[arg(value_name = "CMD", required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The namespace of a `lab exec` / `lab probe --from` target; node names are looked up in
/// `st` (the lab that is up, if any).
pub fn target_netns(target: &str, st: Option<&state::State>) -> anyhow::Result<String> {
    match target {
        "node" => Ok(state::NODE_NETNS.to_string()),
        "external" => Ok(state::EXTERNAL_NETNS.to_string()),
        "underlay" => Ok(state::UNDERLAY_NETNS.to_string()),
        t => match t.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(state::pod_netns(ns, name))
            }
            _ => match st.and_then(|st| st.node_netns_of(t)) {
                Some(ns) => Ok(ns),
                None => bail!("{t:?} is not a target: use NAMESPACE/POD, `node`, a node's name or `external`"),
            },
        },
    }
}

/// The name of the node `target` names (`node`: the first), if it names one.
fn node_name(target: &str, st: &state::State) -> Option<String> {
    if target == "node" {
        return Some(st.node.name.clone());
    }
    st.node_netns_of(target).map(|_| target.to_string())
}

/// Whether `target` names a node of `st` (`node` or a node's name).
pub fn is_node(target: &str, st: &state::State) -> bool {
    target == "node" || st.node_netns_of(target).is_some()
}

pub fn run(a: ExecArgs) -> anyhow::Result<i32> {
    super::require_root("exec")?;
    let st = state::State::load().ok().flatten();
    let ns = target_netns(&a.target, st.as_ref())?;
    if !netns::exists(&ns) {
        bail!("no network namespace {ns} (is the lab up, and is {} one of its pods?)", a.target);
    }
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns]).args(&a.command);
    // Inside a node, a runtime of the test's own finds the node's CNI network as cnitool would.
    if let Some(node) = st.as_ref().and_then(|st| node_name(&a.target, st)) {
        cmd.env("CNI_PATH", cni_network::cni_path_var()).env("NETCONFPATH", cni_network::conf_dir(&node));
    }
    let err = cmd.exec();
    bail!("cannot run `ip netns exec {ns} {}`: {err}", a.command.join(" "))
}
