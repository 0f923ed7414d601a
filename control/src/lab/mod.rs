//! `podswitch lab`: a cluster of network namespaces on one machine (placeholder).
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub cmd: LabCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum LabCmd {
    /// Placeholder.
    Up,
}

/// Runs a `podswitch lab` subcommand; returns the process exit code.
pub fn main(_args: LabArgs) -> anyhow::Result<i32> {
    anyhow::bail!("lab: not built yet")
}
