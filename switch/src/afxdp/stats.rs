//! The kernel's own counters of an AF_XDP socket (`getsockopt(SOL_XDP, XDP_STATISTICS)`).
//!
//! Contract: these count frames the kernel dropped before the switch saw them (an empty fill
//! ring, a full RX ring) or descriptors it refused; the switch's drop reasons cannot count
//! them, so `show ports` and the metrics report them beside the switch's own. Reading works on
//! any thread from the socket's fd; a socket that is gone reads as `None`.
use std::os::fd::RawFd;

/// The kernel's counters of a socket are a port device's [`DeviceStats`].
pub use crate::port::DeviceStats as XskStats;
use crate::port::DeviceStats;

/// `struct xdp_statistics` of <linux/if_xdp.h> (kernel 5.9 and later).
#[repr(C)]
#[derive(Default)]
struct XdpStatistics {
    rx_dropped: u64,
    rx_invalid_descs: u64,
    tx_invalid_descs: u64,
    rx_ring_full: u64,
    rx_fill_ring_empty_descs: u64,
    tx_ring_empty_descs: u64,
}

/// Reads the counters of the AF_XDP socket `fd`; `None` if the kernel refuses (not a socket).
pub fn read(fd: RawFd) -> Option<DeviceStats> {
    const XDP_STATISTICS: libc::c_int = 7;
    let mut s = XdpStatistics::default();
    let mut len = std::mem::size_of::<XdpStatistics>() as libc::socklen_t;
    // SAFETY: `s` is a writable `struct xdp_statistics` of `len` bytes that outlives the call;
    // the kernel writes at most `len` bytes and reports how many in `len`.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_XDP, XDP_STATISTICS, (&raw mut s).cast(), &raw mut len) };
    (rc == 0).then_some(DeviceStats {
        rx_dropped: s.rx_dropped,
        rx_ring_full: s.rx_ring_full,
        rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
        rx_invalid_descs: s.rx_invalid_descs,
        tx_invalid_descs: s.tx_invalid_descs,
        tx_ring_empty: s.tx_ring_empty_descs,
    })
}
