//! UDP datagram view (RFC 768).
//!
//! Contract: the buffer is the IPv4 payload. [`UdpPacket::new_checked`] requires the 8-byte
//! header (`Truncated`) and a length field of at least 8 and at most the buffer
//! (`BadL4Length`); after it, no getter panics. [`UdpPacket::payload`] stops at the length field.
//! The checksum is verified and filled with the IPv4 pseudo-header over `length` bytes; a
//! checksum of 0 means "not computed" and verifies, and a computed 0 is written as `0xffff`.
//! A frame read from a veth may carry a partial (offloaded) checksum, which does not verify.
//!
//! The first fragment of a fragmented datagram holds only part of it, so its length field
//! exceeds the buffer: such a buffer fails `new_checked`; [`parse_frame`](super::parse_frame)
//! reads the ports of first fragments with [`UdpPacket::check_header_len`] only.

use std::net::Ipv4Addr;

use super::checksum;
use super::{WireError, IPPROTO_UDP};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const PAYLOAD: usize = 8;
}

view! {
    /// A view of a UDP datagram.
    UdpPacket,
    unchecked: "Wraps a buffer without checks: only for buffers the caller built and sized.",
    checked: "Wraps an untrusted buffer; see the module doc for the checks.",
    check: check
}

fields! {
    UdpPacket {
        src_port / set_src_port: u16 = field::SRC_PORT;
        dst_port / set_dst_port: u16 = field::DST_PORT;
        /// The length field: header plus payload.
        #[allow(clippy::len_without_is_empty)]
        len / set_len: u16 = field::LENGTH;
        checksum / set_checksum: u16 = field::CHECKSUM;
    }
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Length of the UDP header.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Only the header length check: enough for the port, length and checksum getters, not for
    /// `payload` or the checksum methods.
    #[inline]
    pub fn check_header_len(&self) -> Result<(), WireError> {
        super::check_min_len(self.buffer.as_ref(), HEADER_LEN)
    }

    /// The checks `new_checked` makes.
    #[inline]
    pub fn check(&self) -> Result<(), WireError> {
        self.check_header_len()?;
        let len = usize::from(self.len());
        if len < HEADER_LEN || len > self.buffer.as_ref().len() {
            return Err(WireError::BadL4Length);
        }
        Ok(())
    }

    /// The datagram as the length field bounds it.
    #[inline]
    fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.len())]
    }

    /// True if the checksum is 0 (not computed) or correct for these addresses.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let ph = checksum::pseudo_header_v4(src, dst, IPPROTO_UDP, u32::from(self.len()));
        checksum::combine(&[ph, checksum::data(self.datagram())]) == 0xffff
    }

    /// The payload, up to the length field (anything after it in the buffer is ignored).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Computes the checksum over the pseudo-header and `len()` bytes and writes it (0 becomes
    /// `0xffff`). Set the length field first.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let ph = checksum::pseudo_header_v4(src, dst, IPPROTO_UDP, u32::from(self.len()));
        let c = !checksum::combine(&[ph, checksum::data(self.datagram())]);
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// 10.0.0.1:12345 -> 10.0.0.2:53, "hello"; checksum 0x7791.
    const DATAGRAM: [u8; 13] = [
        0x30, 0x39, 0x00, 0x35, // ports
        0x00, 0x0d, 0x77, 0x91, // length 13, checksum
        0x68, 0x65, 0x6c, 0x6c, 0x6f, // "hello"
    ];

    #[test]
    fn parse_golden() {
        let p = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(p.src_port(), 12345);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 13);
        assert_eq!(p.checksum(), 0x7791);
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(p.payload(), b"hello");
    }

    #[test]
    fn emit_golden() {
        let mut buf = [0u8; 13];
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        p.set_src_port(12345);
        p.set_dst_port(53);
        p.set_len(13);
        p.payload_mut().copy_from_slice(b"hello");
        p.fill_checksum(SRC, DST);
        assert_eq!(buf, DATAGRAM);
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut buf = DATAGRAM;
        buf[6] = 0;
        buf[7] = 0;
        assert!(UdpPacket::new_checked(&buf[..])
            .unwrap()
            .verify_checksum(SRC, DST));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Find a source port whose checksum computes to 0, then check it is written as 0xffff
        // and still verifies.
        let mut buf = DATAGRAM;
        let mut found = false;
        for port in 0..=u16::MAX {
            let mut p = UdpPacket::new_unchecked(&mut buf[..]);
            p.set_src_port(port);
            p.set_checksum(0);
            let ph = checksum::pseudo_header_v4(SRC, DST, IPPROTO_UDP, 13);
            if !checksum::combine(&[ph, checksum::data(&buf)]) == 0 {
                let mut p = UdpPacket::new_unchecked(&mut buf[..]);
                p.fill_checksum(SRC, DST);
                assert_eq!(p.checksum(), 0xffff);
                assert!(p.verify_checksum(SRC, DST));
                found = true;
                break;
            }
        }
        assert!(found);
    }

    #[test]
    fn trailing_bytes_beyond_length_are_ignored() {
        let mut buf = [0u8; 20];
        buf[..13].copy_from_slice(&DATAGRAM);
        buf[13..].fill(0xee);
        let p = UdpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload(), b"hello");
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..DATAGRAM.len() {
            let err = UdpPacket::new_checked(&DATAGRAM[..len]).unwrap_err();
            let expect = if len < HEADER_LEN {
                WireError::Truncated
            } else {
                WireError::BadL4Length
            };
            assert_eq!(err, expect, "len {len}");
        }
    }

    #[test]
    fn bad_length_field() {
        for bad in [0u16, 7, 14, 0xffff] {
            let mut buf = DATAGRAM;
            buf[4..6].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(
                UdpPacket::new_checked(&buf[..]).unwrap_err(),
                WireError::BadL4Length
            );
        }
        // Header only: fine, empty payload.
        let mut buf = DATAGRAM;
        buf[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert!(UdpPacket::new_checked(&buf[..])
            .unwrap()
            .payload()
            .is_empty());
        // A first fragment passes the header check alone.
        let mut buf = DATAGRAM;
        buf[4..6].copy_from_slice(&1000u16.to_be_bytes());
        let p = UdpPacket::new_unchecked(&buf[..]);
        assert!(p.check_header_len().is_ok());
        assert_eq!(p.dst_port(), 53);
    }

    #[test]
    fn cross_check_with_etherparse() {
        let s = etherparse::UdpSlice::from_slice(&DATAGRAM).unwrap();
        let h = s.to_header();
        assert_eq!(
            (h.source_port, h.destination_port, h.length),
            (12345, 53, 13)
        );
        let c = h
            .calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), s.payload())
            .unwrap();
        assert_eq!(c, 0x7791);
    }
}
