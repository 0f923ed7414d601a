//! The `podswitch` command.
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "podswitch", version, about = "A userspace AF_XDP switch for Kubernetes nodes")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    Run(podswitch_control::run::RunArgs),
    Show(podswitch_control::show::ShowArgs),
    /// Build, drive and tear down a lab cluster of network namespaces on this machine.
    Lab(podswitch_control::lab::LabArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run(args) => podswitch_control::run::main(args),
        Cmd::Show(args) => podswitch_control::show::main(args),
        Cmd::Lab(args) => podswitch_control::lab::main(args),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("podswitch: {e:#}");
            std::process::exit(1);
        }
    }
}
