//! podswitch's dataplane: packet views, the pipeline, its tables, the AF_XDP port layer and
//! the poll-mode workers. Nothing here knows Kubernetes; the control side compiles objects
//! into [`tables::Tables`] and publishes them through [`dataplane::Dataplane`].
//!
//! - [`wire`]: zero-copy views of Ethernet, ARP, IPv4, ICMP, UDP and TCP headers.
//! - [`pipeline`]: what happens to one frame (classify, anti-spoof, ARP, route, rewrite,
//!   ICMP errors); pure functions over bytes and tables, tested without a kernel.
//! - [`tables`]: the immutable snapshot the workers read.
//! - [`drop_reason`]: the numbered reasons every drop is counted under.
//! - [`counters`]: single-writer counters the workers keep.
//! - [`afxdp`]: the only `unsafe` code: XDP program, UMEM, sockets, rings, and the two CPU and
//!   kernel hints the hot tables need (prefetch, huge pages).
//! - [`worker`]: the pinned poll loop that moves frames between rings through the pipeline.
//! - [`dataplane`]: starts workers, adds and removes ports while running, publishes tables.
//! - `bench_fixtures` (feature `bench-fixtures`): tables, frames and cases the benchmarks
//!   share; not part of the dataplane.
pub mod afxdp;
#[cfg(feature = "bench-fixtures")]
pub mod bench_fixtures;
pub mod conntrack;
pub mod counters;
pub mod dataplane;
pub mod drop_reason;
pub mod flowlog;
pub mod pipeline;
pub mod tables;
pub mod wire;
pub mod worker;
