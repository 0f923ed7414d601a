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
    Run(Box<podswitch_control::run::RunArgs>),
    Show(podswitch_control::show::ShowArgs),
    /// Install or remove the CNI plugin (podswitch-cni and its .conflist) for the node's
    /// container runtime.
    Cni(podswitch_control::cni_install::CniArgs),
    /// Build, drive and tear down a lab cluster of network namespaces on this machine.
    ///
    /// Runs `podswitch-lab ARGS` (a separate binary, so that the node agent does not contain the
    /// lab), found next to this executable, then on PATH. `podswitch lab --help` lists its commands.
    #[command(disable_help_flag = true)]
    Lab {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// `podswitch show stats | head` closes our stdout early; Rust ignores SIGPIPE, so println!
/// panics. Exit as a SIGPIPE-killed process would (status 141), without a panic message.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() {
    quiet_on_broken_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match cli.cmd {
        Cmd::Run(args) => podswitch_control::run::main(*args),
        Cmd::Show(args) => podswitch_control::show::main(args),
        Cmd::Cni(args) => podswitch_control::cni_install::main(args),
        Cmd::Lab { args } => Err(podswitch_control::sibling::exec("podswitch-lab", &args).into()),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("podswitch: {e:#}");
            std::process::exit(1);
        }
    }
}
