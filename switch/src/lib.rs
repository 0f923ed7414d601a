//! podswitch's dataplane: packet views, the pipeline, its tables, the AF_XDP port layer and
//! the poll-mode workers. Nothing here knows Kubernetes; the control side compiles objects
//! into [`tables::Tables`] and publishes them through [`dataplane::Dataplane`].
//!
//! - [`wire`]: zero-copy views of Ethernet, ARP, IPv4, ICMP, UDP and TCP headers.
//! - [`pipeline`]: what happens to one frame (classify, anti-spoof, ARP, route, rewrite,
//!   ICMP errors); pure functions over bytes and tables, tested without a kernel.
//! - [`tables`]: the immutable snapshot the workers read.
//! - [`offload`]: virtio-net headers, partial checksums and software GSO for frames pods hand
//!   over with offloads on (pure functions into caller-provided buffers).
//! - [`drop_reason`]: the numbered reasons every drop is counted under.
//! - [`counters`]: single-writer counters the workers keep.
//! - [`port`]: the port device interface the workers drive (receive and transmit bursts,
//!   reclaim, refill, kick, mode, counters) and an in-memory device for tests.
//! - [`afxdp`]: the only `unsafe` code: the AF_XDP port device (XDP program, UMEM, sockets,
//!   rings), the one-socket endpoint pktgen uses, and the two CPU and kernel hints the hot
//!   tables need (prefetch, huge pages).
//! - [`worker`]: the pinned poll loop that moves frames between a device's rings through the
//!   pipeline, generic over the device.
//! - [`dataplane`]: starts workers, adds and removes ports while running, publishes tables.
//! - `bench_fixtures` (feature `bench-fixtures`): tables, frames and cases the benchmarks
//!   share; not part of the dataplane.
// `unsafe` lives in the AF_XDP layer only, every block with a `// SAFETY:` comment.

#[allow(unsafe_code)]
pub mod afxdp;
#[cfg(feature = "bench-fixtures")]
pub mod bench_fixtures;
pub mod conntrack;
pub mod counters;
pub mod dataplane;
pub mod drop_reason;
pub mod flowlog;
pub mod offload;
pub mod pipeline;
pub mod port;
pub mod tables;
pub mod wire;
pub mod worker;
