//! ARP packet view, Ethernet/IPv4 ARP only (RFC 826).
//!
//! Contract: [`ArpPacket::new_checked`] accepts a buffer of at least [`PACKET_LEN`] (28) bytes
//! whose hardware type is 1 (Ethernet), protocol type 0x0800 (IPv4), hardware length 6 and
//! protocol length 4; anything else is `BadArp` (too short is `Truncated`). After it, no getter
//! panics. The operation is not checked: callers act on [`OP_REQUEST`] and [`OP_REPLY`] and
//! ignore the rest. Bytes after the 28 (Ethernet padding) are ignored; ARP has no payload.

use std::net::Ipv4Addr;

use super::ethernet::MacAddr;
use super::{Field, WireError};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Hardware type of Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Protocol type of IPv4.
pub const PTYPE_IPV4: u16 = 0x0800;
/// ARP request.
pub const OP_REQUEST: u16 = 1;
/// ARP reply.
pub const OP_REPLY: u16 = 2;

mod field {
    use super::Field;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Field = 8..14;
    pub const SPA: usize = 14;
    pub const THA: Field = 18..24;
    pub const TPA: usize = 24;
}

view! {
    /// A view of an Ethernet/IPv4 ARP packet.
    ArpPacket,
    unchecked: "Wraps a buffer without checks: only for buffers of at least 28 bytes the caller built.",
    checked: "Wraps an untrusted buffer, checking its length and that it is Ethernet/IPv4 ARP.",
    check: check
}

fields! {
    ArpPacket {
        hardware_type / set_hardware_type: u16 = field::HTYPE;
        protocol_type / set_protocol_type: u16 = field::PTYPE;
        hardware_len / set_hardware_len: u8 = field::HLEN;
        protocol_len / set_protocol_len: u8 = field::PLEN;
        /// [`OP_REQUEST`], [`OP_REPLY`] or another value.
        operation / set_operation: u16 = field::OPER;
        sender_hw_addr / set_sender_hw_addr: MacAddr = field::SHA.start;
        sender_proto_addr / set_sender_proto_addr: Ipv4Addr = field::SPA;
        target_hw_addr / set_target_hw_addr: MacAddr = field::THA.start;
        target_proto_addr / set_target_proto_addr: Ipv4Addr = field::TPA;
    }
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Length of the packet (there is no variable part).
    pub const PACKET_LEN: usize = PACKET_LEN;

    /// The checks `new_checked` makes.
    pub fn check(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if self.hardware_type() != HTYPE_ETHERNET
            || self.protocol_type() != PTYPE_IPV4
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(WireError::BadArp);
        }
        Ok(())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes the four fixed fields of Ethernet/IPv4 ARP (htype 1, ptype 0x0800, 6, 4).
    #[inline]
    pub fn set_ethernet_ipv4(&mut self) {
        self.set_hardware_type(HTYPE_ETHERNET);
        self.set_protocol_type(PTYPE_IPV4);
        self.set_hardware_len(6);
        self.set_protocol_len(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "who-has 10.0.0.2 tell 10.0.0.1" from 02:00:00:00:00:01, as `arping` sends it.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, // htype Ethernet
        0x08, 0x00, // ptype IPv4
        0x06, 0x04, // hlen, plen
        0x00, 0x01, // request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // sender MAC
        0x0a, 0x00, 0x00, 0x01, // sender IP
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC (unknown)
        0x0a, 0x00, 0x00, 0x02, // target IP
    ];

    #[test]
    fn parse_golden() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), 0x0800);
        assert_eq!(p.hardware_len(), 6);
        assert_eq!(p.protocol_len(), 4);
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.sender_hw_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.sender_proto_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(p.target_proto_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn emit_golden() {
        let mut buf = [0u8; 28];
        let mut p = ArpPacket::new_unchecked(&mut buf[..]);
        p.set_ethernet_ipv4();
        p.set_operation(OP_REQUEST);
        p.set_sender_hw_addr(MacAddr([2, 0, 0, 0, 0, 1]));
        p.set_sender_proto_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_target_hw_addr(MacAddr::ZERO);
        p.set_target_proto_addr(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn reply_in_place() {
        // Turn the request into the reply an ARP responder sends, in place.
        let mut buf = REQUEST;
        let mut p = ArpPacket::new_checked(&mut buf[..]).unwrap();
        let (sha, spa, tpa) = (
            p.sender_hw_addr(),
            p.sender_proto_addr(),
            p.target_proto_addr(),
        );
        p.set_operation(OP_REPLY);
        p.set_target_hw_addr(sha);
        p.set_target_proto_addr(spa);
        p.set_sender_hw_addr(MacAddr([2, 0, 0, 0, 0, 2]));
        p.set_sender_proto_addr(tpa);
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.operation(), OP_REPLY);
        assert_eq!(p.target_hw_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.sender_proto_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn padding_is_ignored() {
        let mut buf = [0u8; 46];
        buf[..28].copy_from_slice(&REQUEST);
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.target_proto_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..PACKET_LEN {
            assert_eq!(
                ArpPacket::new_checked(&REQUEST[..len]).unwrap_err(),
                WireError::Truncated,
                "len {len}"
            );
        }
    }

    #[test]
    fn non_ethernet_ipv4_is_bad_arp() {
        for (at, value) in [(1, 6u8), (2, 0x86), (3, 0xdd), (4, 8), (5, 16)] {
            let mut buf = REQUEST;
            buf[at] = value;
            assert_eq!(
                ArpPacket::new_checked(&buf[..]).unwrap_err(),
                WireError::BadArp
            );
        }
    }
}
