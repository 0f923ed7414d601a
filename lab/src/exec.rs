//! `podswitch lab exec TARGET -- CMD...`: run a command inside a lab namespace.
//!
//! Contract: TARGET is `NS/POD` (namespace `psl_NS_POD`), `node` (`psl-node`) or `external`
//! (`psl-external`, the client outside the cluster). The process is replaced by `ip netns exec NAME CMD...`, so the command's exit code
//! (and signals, and the terminal) are its own.
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::bail;

use super::netns;
use super::state;

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// NAMESPACE/POD, `node` or `external`.
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// The command and its arguments (after `--`).
    #[arg(value_name = "CMD", required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The namespace of a `lab exec` / `lab probe --from` target.
pub fn target_netns(target: &str) -> anyhow::Result<String> {
    match target {
        "node" => Ok(state::NODE_NETNS.to_string()),
        "external" => Ok(state::EXTERNAL_NETNS.to_string()),
        t => match t.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(state::pod_netns(ns, name))
            }
            _ => bail!("{t:?} is not a target: use NAMESPACE/POD, `node` or `external`"),
        },
    }
}

pub fn run(a: ExecArgs) -> anyhow::Result<i32> {
    super::require_root("exec")?;
    let ns = target_netns(&a.target)?;
    if !netns::exists(&ns) {
        bail!("no network namespace {ns} (is the lab up, and is {} one of its pods?)", a.target);
    }
    let err = Command::new("ip").args(["netns", "exec", &ns]).args(&a.command).exec();
    bail!("cannot run `ip netns exec {ns} {}`: {err}", a.command.join(" "))
}
