//! An AF_XDP socket on one (interface, queue), bound on a worker's UMEM.
//!
//! Contract: [`bind`] asks for zero-copy where the policy allows, falls back to copy mode only
//! under [`CopyPolicy::PreferZeroCopy`], and reports the mode the kernel actually gave (read
//! back with `XDP_OPTIONS`, since a socket that shares a UMEM inherits the UMEM's mode whatever
//! it asked for). The socket is registered in nothing; the caller puts its fd in the XSKMAP.
use std::os::fd::{AsRawFd, RawFd};

use xsk_rs::config::{BindFlags, LibxdpFlags, QueueSize, SocketConfig};
use xsk_rs::{CompQueue, FillQueue, RxQueue, Socket, TxQueue, Umem};

use super::AfXdpError;

/// How to choose between zero-copy and copy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPolicy {
    /// Zero-copy where the driver offers it, copy mode elsewhere (the mode is reported).
    PreferZeroCopy,
    /// Zero-copy or fail (`--require-zerocopy`).
    RequireZeroCopy,
}

/// The four rings of one bound socket.
pub struct BoundQueue {
    pub ifname: String,
    pub queue: u32,
    pub tx: TxQueue,
    pub rx: RxQueue,
    pub fill: FillQueue,
    pub comp: CompQueue,
    pub zerocopy: bool,
    pub fd: RawFd,
}

impl std::fmt::Debug for BoundQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundQueue").field("ifname", &self.ifname).field("queue", &self.queue).field("zerocopy", &self.zerocopy).finish()
    }
}

/// Entries of a socket's RX and TX rings (powers of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSizes {
    pub rx: u32,
    pub tx: u32,
}

impl RingSizes {
    /// The same size for both.
    pub fn both(n: u32) -> Self {
        Self { rx: n, tx: n }
    }
}

fn create(umem: &Umem, ifname: &str, queue: u32, rings: RingSizes, bind: BindFlags) -> Result<BoundQueue, (Option<i32>, String)> {
    let rx = QueueSize::new(rings.rx).map_err(|e| (None, format!("RX ring of {}: {e}", rings.rx)))?;
    let tx = QueueSize::new(rings.tx).map_err(|e| (None, format!("TX ring of {}: {e}", rings.tx)))?;
    let config = SocketConfig::builder()
        .rx_queue_size(rx)
        .tx_queue_size(tx)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(bind)
        .build();
    let name = ifname.parse().map_err(|_| (None, format!("bad interface name {ifname:?}")))?;
    // SAFETY: xsk-rs requires INHIBIT_PROG_LOAD when a UMEM is shared on an already bound
    // (interface, queue) pair; it is always set here (podswitch loads its own XDP program),
    // and a worker never binds the same pair twice.
    let (tx, rx, rings) = unsafe { Socket::new(config, umem, &name, queue) }.map_err(|e| {
        let os = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error);
        let detail = match std::error::Error::source(&e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        };
        (os, detail)
    })?;
    let Some((fill, comp)) = rings else {
        return Err((None, "the UMEM already has fill and completion rings for this pair".into()));
    };
    let fd = rx.fd().as_raw_fd();
    let zerocopy = socket_is_zerocopy(fd);
    Ok(BoundQueue { ifname: ifname.into(), queue, tx, rx, fill, comp, zerocopy, fd })
}

/// How long a bind waits for a queue that a dead process's socket still holds: the kernel
/// frees an AF_XDP socket's hold on its (interface, queue) in deferred work after the process
/// is gone, so a switch restarted at once after a crash finds the queue busy (EBUSY) for a
/// moment.
const BUSY_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// [`create`], retried while the queue is busy, up to [`BUSY_QUEUE_WAIT`].
fn create_waiting(umem: &Umem, ifname: &str, queue: u32, ring: RingSizes, flags: BindFlags) -> Result<BoundQueue, (Option<i32>, String)> {
    let deadline = std::time::Instant::now() + BUSY_QUEUE_WAIT;
    loop {
        match create(umem, ifname, queue, ring, flags) {
            Err((Some(code), _)) if code == libc::EBUSY && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// Binds a socket to `ifname` queue `queue` on `umem`, RX and TX rings of `ring` entries. A
/// queue busy because a previous process's socket is still being released is waited for (at
/// most [`BUSY_QUEUE_WAIT`]); still busy after that is an error.
pub fn bind(umem: &Umem, ifname: &str, queue: u32, ring: RingSizes, policy: CopyPolicy) -> Result<BoundQueue, AfXdpError> {
    let err = |detail: String| AfXdpError::Bind { ifname: ifname.into(), queue, detail };
    let zc = BindFlags::XDP_ZEROCOPY | BindFlags::XDP_USE_NEED_WAKEUP;
    let bound = match create_waiting(umem, ifname, queue, ring, zc) {
        Ok(b) => b,
        // EOPNOTSUPP: the driver has no zero-copy (veth, most virtual devices).
        Err((Some(code), detail)) if code == libc::EOPNOTSUPP => {
            if policy == CopyPolicy::RequireZeroCopy {
                let _ = detail;
                return Err(AfXdpError::ZeroCopyUnavailable { ifname: ifname.into(), queue });
            }
            create_waiting(umem, ifname, queue, ring, BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
                .map_err(|(_, d)| err(d))?
        }
        Err((_, detail)) => return Err(err(detail)),
    };
    if policy == CopyPolicy::RequireZeroCopy && !bound.zerocopy {
        return Err(AfXdpError::ZeroCopyUnavailable { ifname: ifname.into(), queue });
    }
    Ok(bound)
}

/// Whether the kernel runs socket `fd` in zero-copy mode.
fn socket_is_zerocopy(fd: RawFd) -> bool {
    let mut opts: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `fd` is an open AF_XDP socket owned by the caller's queues; `opts` and `len`
    // are valid for writes of the sizes given, as getsockopt(XDP_OPTIONS) requires.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_XDP, libc::XDP_OPTIONS, (&raw mut opts).cast(), &raw mut len)
    };
    rc == 0 && opts & libc::XDP_OPTIONS_ZEROCOPY != 0
}
