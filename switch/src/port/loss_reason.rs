//! Why the kernel lost frames at a port's door: the counters of [`DeviceStats`] named in the
//! words an operator acts on, with the sizing that bounds them (`podswitch show ports`).
//!
//! Contract: [`kernel_loss_reasons`] gives one sentence per kind of loss that is non-zero (none
//! when the port lost nothing); each names the counter, how many, why the kernel drops there
//! and what sizes it (the run flags). Plain formatting, off the hot path.
use super::DeviceStats;

/// The sizes that bound a port's door: RX ring entries, the most frames its fill ring may
/// hold (the dataplane's per-socket fill target) and the worker's UMEM frames; for a port on a
/// UMEM of its own, that UMEM's receive frames instead of the last two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoorSizes {
    pub rx_ring: u32,
    pub fill_target: u32,
    pub frames: u32,
    pub own_rx_frames: Option<u32>,
}

pub fn kernel_loss_reasons(s: &DeviceStats, sizes: DoorSizes) -> Vec<String> {
    let mut v = Vec::new();
    if s.rx_ring_full > 0 {
        v.push(format!(
            "{} with the RX ring full: the worker fell behind a burst longer than the ring ({} entries; --rx-ring), \
             or its core was taken by something else (show workers)",
            s.rx_ring_full, sizes.rx_ring
        ));
    }
    if let (true, Some(own)) = (s.rx_dropped > 0, sizes.own_rx_frames) {
        v.push(format!(
            "{} with no fill frame (or larger than a UMEM frame): more frames queued at the door than the port's own {own} receive frames \
             (--pod-umem-frames), e.g. a TCP window deeper than them while the worker was busy",
            s.rx_dropped
        ));
    } else if s.rx_dropped > 0 {
        v.push(format!(
            "{} with no fill frame (or larger than a UMEM frame): more frames queued at the door than the port's fill ring may hold \
             (up to {} of the worker's {} frames; --rx-ring, --frames), e.g. a TCP window deeper than the ring, or the pool was empty",
            s.rx_dropped, sizes.fill_target, sizes.frames
        ));
    }
    let invalid = s.rx_invalid_descs + s.tx_invalid_descs;
    if invalid > 0 {
        v.push(format!("{invalid} invalid descriptors (rx {}, tx {}): a descriptor the kernel refused, a bug in the switch", s.rx_invalid_descs, s.tx_invalid_descs));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: DoorSizes = DoorSizes { rx_ring: 4096, fill_target: 4096, frames: 16384, own_rx_frames: None };

    #[test]
    fn nothing_lost_names_nothing() {
        assert!(kernel_loss_reasons(&DeviceStats::default(), SIZES).is_empty());
        let only_empty_polls = DeviceStats { rx_fill_ring_empty: 7, tx_ring_empty: 3, ..DeviceStats::default() };
        assert!(kernel_loss_reasons(&only_empty_polls, SIZES).is_empty(), "empty-ring polls are not losses");
    }

    #[test]
    fn each_kind_of_loss_is_named_with_its_sizes() {
        let s = DeviceStats { rx_ring_full: 5, rx_dropped: 9, tx_invalid_descs: 1, ..DeviceStats::default() };
        let r = kernel_loss_reasons(&s, SIZES);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[0].starts_with("5 with the RX ring full") && r[0].contains("4096 entries; --rx-ring"), "{}", r[0]);
        assert!(r[1].starts_with("9 with no fill frame") && r[1].contains("up to 4096 of the worker's 16384 frames"), "{}", r[1]);
        assert!(r[2].starts_with("1 invalid descriptors"), "{}", r[2]);
    }

    #[test]
    fn a_port_on_its_own_umem_names_its_own_frames() {
        let s = DeviceStats { rx_dropped: 9, ..DeviceStats::default() };
        let r = kernel_loss_reasons(&s, DoorSizes { own_rx_frames: Some(2048), ..SIZES });
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].contains("the port's own 2048 receive frames (--pod-umem-frames)"), "{}", r[0]);
    }
}
