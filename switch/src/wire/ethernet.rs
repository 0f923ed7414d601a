//! Ethernet II frame view and the MAC address type.
//!
//! Contract: [`EthernetFrame::new_checked`] accepts any buffer of at least [`HEADER_LEN`] (14)
//! bytes; after it, no getter panics. The ethertype is reported as it is: VLAN tags (0x8100,
//! 0x88a8) are not parsed, and values below 0x0600 (802.3 length fields) are not interpreted.
//! The payload is everything after the header, Ethernet padding and all: the L3 view decides
//! how much of it counts. No FCS is expected (AF_XDP frames carry none).

use core::fmt;

use super::{Field, WireError};

/// Length of the Ethernet II header (destination, source, ethertype).
pub const HEADER_LEN: usize = 14;

mod field {
    use super::Field;
    pub const DST: Field = 0..6;
    pub const SRC: Field = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

/// A 48-bit MAC address. Displays as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The address from the first 6 bytes of `bytes`, or `None` if it is shorter.
    #[inline]
    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        let b: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(MacAddr(b))
    }

    /// The six bytes, in wire order.
    #[inline]
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Group bit set (broadcast included).
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Neither multicast nor broadcast.
    #[inline]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Locally administered bit set.
    #[inline]
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

view! {
    /// A view of an Ethernet II frame.
    EthernetFrame,
    unchecked: "Wraps a buffer without checks: only for buffers of at least 14 bytes the caller built.",
    checked: "Wraps an untrusted buffer: `Err(Truncated)` if it is shorter than the header.",
    check: check_len
}

fields! {
    EthernetFrame {
        dst_addr / set_dst_addr: MacAddr = field::DST.start;
        src_addr / set_src_addr: MacAddr = field::SRC.start;
        ethertype / set_ethertype: u16 = field::ETHERTYPE;
    }
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Header length, also the offset of the payload.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// The check `new_checked` makes.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        super::check_min_len(self.buffer.as_ref(), HEADER_LEN)
    }

    /// Everything after the 14-byte header (including any Ethernet padding).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header of a broadcast ARP request from 02:00:00:00:00:01, two payload bytes.
    const FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x08, 0x06, // ARP
        0xaa, 0xbb, // payload
    ];

    #[test]
    fn parse_golden() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(f.src_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), 0x0806);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
        assert_eq!(f.into_inner(), &FRAME[..]);
    }

    #[test]
    fn emit_golden() {
        let mut buf = [0u8; 16];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        f.set_dst_addr(MacAddr::BROADCAST);
        f.set_src_addr(MacAddr([2, 0, 0, 0, 0, 1]));
        f.set_ethertype(0x0806);
        f.payload_mut().copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn header_only_has_empty_payload() {
        let f = EthernetFrame::new_checked(&FRAME[..14]).unwrap();
        assert!(f.payload().is_empty());
    }

    #[test]
    fn vlan_tag_is_reported_not_parsed() {
        let mut buf = FRAME;
        buf[12] = 0x81;
        buf[13] = 0x00;
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.ethertype(), 0x8100);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..FRAME.len() {
            let r = EthernetFrame::new_checked(&FRAME[..len]);
            if len < HEADER_LEN {
                assert_eq!(r.unwrap_err(), WireError::Truncated, "len {len}");
            } else {
                let f = r.unwrap();
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload());
            }
        }
    }

    #[test]
    fn mac_display_and_classes() {
        let m = MacAddr([0x0a, 0x1b, 0xc2, 0xd3, 0xe4, 0xff]);
        assert_eq!(m.to_string(), "0a:1b:c2:d3:e4:ff");
        assert_eq!(MacAddr::BROADCAST.to_string(), "ff:ff:ff:ff:ff:ff");
        assert!(MacAddr::BROADCAST.is_broadcast() && MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddr([2, 0, 0, 0, 0, 1]).is_unicast() && MacAddr([2, 0, 0, 0, 0, 1]).is_local());
        assert_eq!(
            MacAddr::from_slice(&FRAME[6..]),
            Some(MacAddr([2, 0, 0, 0, 0, 1]))
        );
        assert_eq!(MacAddr::from_slice(&FRAME[..5]), None);
    }
}
