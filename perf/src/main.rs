//! `podswitch-perf`: the benchmark drivers behind `scripts/bench.sh`. One subcommand per
//! benchmark; each prints a readable report, or with `--json` one JSON object as the last line
//! of stdout, with progress on stderr. perf/README.md says how each one measures.
mod forward;
mod lab;
mod pipeline_bench;
mod stats;
mod sys;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "podswitch-perf", about = "podswitch benchmarks (run them through scripts/bench.sh)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// 64-byte UDP frames per second pod -> pod: podswitch vs Linux bridge vs dpdk-testpmd (AF_XDP).
    Forward(forward::ForwardArgs),
    /// Per-packet cost of the whole pipeline in memory: 10,000 Services, 100,000 endpoints, 1,000,000 connections.
    Pipeline(pipeline_bench::PipelineArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Forward(a) => forward::main(a),
        Cmd::Pipeline(a) => pipeline_bench::main(a),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("podswitch-perf: {e:#}");
            std::process::exit(1);
        }
    }
}
