//! The AF_XDP port layer: the one place in podswitch with `unsafe`.
//!
//! - [`iface`]: facts about a network interface read from sysfs (index, MAC, queue count).
//! - [`xdp`]: loads podswitch's XDP program (one instance serves many interfaces) and attaches
//!   it to interfaces (native mode, generic only where native is refused); registers sockets in
//!   its XSKMAP.
//! - [`slots`]: each interface's place in an instance's maps (socket entries, counter row).
//! - [`filter`]: the uplink's filter (what its program redirects to the switch; the rest stays
//!   the node's).
//! - [`socket`]: binds an AF_XDP socket for one (interface, queue) on a worker's UMEM, zero-copy
//!   where the driver supports it, and reports the mode the kernel actually gave.
//! - [`frames`]: creating a UMEM (geometry, descriptors of its frames).
//! - [`rings`]: the AF_XDP port device: a worker's UMEM as its frame memory and one socket's
//!   rings as a [`crate::port::PortDevice`].
//! - [`own_umem`]: a port socket on a small UMEM of its own, copying at its door (pod ports:
//!   a bind costs a fraction of a millisecond instead of time and kernel memory in proportion
//!   to the worker's frames).
//! - [`endpoint`]: one socket with its own UMEM for one-interface tools (pktgen), on the same
//!   TX and RX ring halves ([`rings::TxRings`], [`rings::RxRings`]) as the switch's ports.
//! - [`stats`]: the kernel's counters of a socket (frames it dropped before the switch saw them).
//! - [`prefetch`]: cache hints for the worker's hot memory (frames and the connection table).
//! - [`hugepages`]: 2 MiB pages for the connection table (fewer TLB misses per packet).
//! - [`table_memory`]: the connection table's memory, on the heap or in a state file mapped
//!   shared (kept for the next process across a restart or a crash).
//!
//! Contract: a UMEM belongs to one worker; every socket of that worker shares it (except a
//! port with its own UMEM, [`own_umem`], which copies at its door), so forwarding between two
//! ports that share it moves a descriptor from one port's RX ring to another's TX ring and
//! never copies packet bytes in userspace. Which frames are where is tracked by the
//! UMEM's ledger ([`crate::port::ledger`]) as the device moves them; the worker
//! ([`crate::worker`]) sees only the device interface.
pub mod filter;
pub mod frames;
pub mod hugepages;
pub mod iface;
pub mod own_umem;
pub mod prefetch;
pub mod rings;
pub mod slots;
pub mod socket;
pub mod endpoint;
pub mod stats;
pub mod table_memory;
pub mod xdp;

/// What failed while setting up AF_XDP, with the interface and the kernel's error.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    #[error("interface {ifname} not found ({detail})")]
    NoInterface { ifname: String, detail: String },
    #[error("loading the XDP program failed: {0}")]
    ProgramLoad(String),
    #[error("attaching XDP to {ifname} failed in native mode ({native}) and in generic mode ({generic})")]
    Attach { ifname: String, native: xdp::AttachError, generic: xdp::AttachError },
    #[error("attaching XDP to {ifname} in {mode} mode failed: {detail}")]
    AttachForced { ifname: String, mode: &'static str, detail: xdp::AttachError },
    #[error("the XDP program has no room left for {ifname} ({queues} rx queue(s)): every socket entry or counter row of its maps is in use")]
    ProgramFull { ifname: String, queues: u32 },
    #[error("registering the AF_XDP socket of {ifname} queue {queue} in the XSKMAP failed: {detail}")]
    MapUpdate { ifname: String, queue: u32, detail: String },
    #[error("creating the UMEM failed: {0}")]
    Umem(String),
    #[error("binding an AF_XDP socket to {ifname} queue {queue} failed: {detail}")]
    Bind { ifname: String, queue: u32, detail: String },
    #[error("{ifname} queue {queue} runs in copy mode (the driver offers no zero-copy AF_XDP) and --require-zerocopy was given")]
    ZeroCopyUnavailable { ifname: String, queue: u32 },
    #[error("{ifname} has {have} rx queue(s) but the switch runs {need} worker(s): every worker needs at least one queue of every port (with more queues than workers a worker serves several; create veths with `numrxqueues {need} numtxqueues {need}`, or run fewer workers)")]
    TooFewQueues { ifname: String, have: u32, need: u32 },
}
