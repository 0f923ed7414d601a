//! What every benchmark driver (forward, pktgen, e2e, crossnode, apps, cni, portkinds) shares,
//! so that each of them holds only its own topology, measurement and figures:
//!
//! - [`progress`]: the `bench NAME: ...` lines on stderr.
//! - [`preflight`]: root, the cores and programs a run needs, the machine-wide lock it takes,
//!   and how a lab-sized run begins ([`preflight::begin`]: lock, cleanup guard, start).
//! - [`cleanup`]: the guard that removes what a run made however it ends (return, error, panic,
//!   SIGINT/SIGTERM through `sys::interrupted`).
//! - [`host`]: what a report records about the machine and the checkout ([`host::Host`]: kernel,
//!   CPU model, load average; `git describe`, start time).
//! - [`pktgen`]: one measurement with pktgen (rate, RFC 2544 no-drop search, latency), the
//!   generator of e2e and crossnode.
//! - [`trafgen`]: the 64-byte UDP frames netsniff-ng's trafgen sends and how it is started.
//! - [`report`]: writing a run's JSON and Markdown (and any other files) to the results dir,
//!   and the pieces of the reports (tables, heading, notes and errors).
//! - [`rounds`]: the interleaved rounds, with their progress lines: [`rounds::run`] (forward,
//!   pktgen), [`rounds::rotated`] (the benchmarks that set a whole setup up per turn), a failed
//!   measurement within a turn ([`rounds::failed`]).
//!
//! Processes, /proc readers and the interrupt flag are in [`crate::sys`].
pub mod cleanup;
pub mod host;
pub mod preflight;
pub mod pktgen;
pub mod progress;
pub mod report;
pub mod rounds;
pub mod trafgen;
