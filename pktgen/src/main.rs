//! `pktgen`: an AF_XDP packet generator and receiver for podswitch labs and nodes.
//!
//! Sends from one interface over AF_XDP (frames built once in the UMEM, only the changing
//! fields rewritten), receives on another (or replies on the same one) and matches what came
//! back per flow: loss, reordering, duplicates, one-way or round-trip latency from a stamp in
//! the payload; `rfc2544` searches the highest rate without loss. See `pktgen --help` and the
//! README's pktgen section.
//!
//! Modules, each with its contract:
//! - [`cli`]: the command line.            - [`spec`]: traffic values and the traffic file.
//! - [`template`]: frame templates, stamp.   - [`rate`]: token bucket and clock.
//! - [`tx`]: the transmit loop.              - [`rx`]: receive loop and matching.
//! - [`stats`]: per-flow tracking, histograms. - [`report`]: progress, summary, JSON, SVG.
//! - [`rfc2544`]: the throughput search.     - [`kernel`]: the `--fallback kernel` socket.
//! - [`port`]: AF_XDP / kernel ports behind one interface.
//! - [`netns`]: namespaces, interface addresses, next-hop MAC.
//! - [`session`]: threads, trials and the report of each command.
//!
//! No `unsafe` here: the AF_XDP system calls are in `switch::afxdp::endpoint` (the switch's own
//! ring layer), the raw socket's go through `nix`.
#![forbid(unsafe_code)]

mod cli;
mod kernel;
mod netns;
mod port;
mod rate;
mod report;
mod rfc2544;
mod rx;
mod session;
mod spec;
mod stats;
mod template;
mod tx;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let res = match cli.cmd {
        cli::Cmd::Send(a) => session::send(a),
        cli::Cmd::Recv(a) => session::recv(a),
        cli::Cmd::Run(a) => session::run(a),
        cli::Cmd::Rfc2544(a) => session::rfc2544(a),
    };
    match res {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pktgen: {e:#}");
            std::process::exit(1);
        }
    }
}
