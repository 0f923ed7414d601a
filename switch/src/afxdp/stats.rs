//! The kernel's own counters of an AF_XDP socket (`getsockopt(SOL_XDP, XDP_STATISTICS)`).
//!
//! Contract: these count frames the kernel dropped before the switch saw them (an empty fill
//! ring, a full RX ring) or descriptors it refused; the switch's drop reasons cannot count
//! them, so `show ports` and the metrics report them beside the switch's own. Reading works on
//! any thread from the socket's fd; a socket that is gone reads as `None`.
use std::os::fd::RawFd;

use serde::Serialize;

/// Socket counters kept by the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct XskStats {
    /// Frames dropped on receive: in copy mode mostly an empty fill ring.
    pub rx_dropped: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty (a frame may have been dropped each time).
    pub rx_fill_ring_empty: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Times the kernel found the TX ring empty when asked to send.
    pub tx_ring_empty: u64,
}

impl XskStats {
    /// Frames lost inside the kernel: dropped on receive or refused on transmit.
    pub fn lost(&self) -> u64 {
        self.rx_dropped + self.rx_ring_full + self.rx_invalid_descs + self.tx_invalid_descs
    }

    pub fn add(&mut self, o: &XskStats) {
        self.rx_dropped += o.rx_dropped;
        self.rx_ring_full += o.rx_ring_full;
        self.rx_fill_ring_empty += o.rx_fill_ring_empty;
        self.rx_invalid_descs += o.rx_invalid_descs;
        self.tx_invalid_descs += o.tx_invalid_descs;
        self.tx_ring_empty += o.tx_ring_empty;
    }
}

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
pub fn read(fd: RawFd) -> Option<XskStats> {
    const XDP_STATISTICS: libc::c_int = 7;
    let mut s = XdpStatistics::default();
    let mut len = std::mem::size_of::<XdpStatistics>() as libc::socklen_t;
    // SAFETY: `s` is a writable `struct xdp_statistics` of `len` bytes that outlives the call;
    // the kernel writes at most `len` bytes and reports how many in `len`.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_XDP, XDP_STATISTICS, (&mut s as *mut XdpStatistics).cast(), &mut len) };
    (rc == 0).then_some(XskStats {
        rx_dropped: s.rx_dropped,
        rx_ring_full: s.rx_ring_full,
        rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
        rx_invalid_descs: s.rx_invalid_descs,
        tx_invalid_descs: s.tx_invalid_descs,
        tx_ring_empty: s.tx_ring_empty_descs,
    })
}
