//! ICMPv4 message view (RFC 792).
//!
//! Contract: the buffer is one whole ICMP message (an IPv4 payload). [`Icmpv4Packet::new_checked`]
//! only requires the 8-byte header (`Truncated` otherwise); after it, no getter panics. The
//! checksum covers the whole buffer ([`Icmpv4Packet::verify_checksum`],
//! [`Icmpv4Packet::fill_checksum`]), so pass exactly the IPv4 payload, not padding. The echo
//! identifier and sequence number read bytes 4..8, which other message types use for other
//! things (see [`Icmpv4Packet::rest_of_header`]); check [`Icmpv4Packet::is_echo`] first.

use super::checksum;
use super::{Field, WireError};

/// Length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// Echo reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// Destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
/// Source quench (deprecated, RFC 6633, but still an error).
pub const TYPE_SOURCE_QUENCH: u8 = 4;
/// Redirect.
pub const TYPE_REDIRECT: u8 = 5;
/// Echo request.
pub const TYPE_ECHO_REQUEST: u8 = 8;
/// Time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Parameter problem.
pub const TYPE_PARAMETER_PROBLEM: u8 = 12;

/// Destination unreachable, code: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 3;
/// Time exceeded, code: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;
/// Destination unreachable code: fragmentation needed and DF set (RFC 792; the next-hop MTU
/// in the second header word, RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;

/// Whether `msg_type` is an ICMP error message (one that quotes the datagram it is about, and
/// that is never answered with an error itself, RFC 1122 3.2.2).
#[inline]
pub const fn is_error_type(msg_type: u8) -> bool {
    matches!(
        msg_type,
        TYPE_DEST_UNREACHABLE | TYPE_SOURCE_QUENCH | TYPE_REDIRECT | TYPE_TIME_EXCEEDED | TYPE_PARAMETER_PROBLEM
    )
}

mod field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: Field = 4..8;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    pub const PAYLOAD: usize = 8;
}

view! {
    /// A view of an ICMPv4 message.
    Icmpv4Packet,
    unchecked: "Wraps a buffer without checks: only for buffers of at least 8 bytes the caller built.",
    checked: "Wraps an untrusted buffer: `Err(Truncated)` if it is shorter than 8 bytes.",
    check: check_len
}

fields! {
    Icmpv4Packet {
        msg_type / set_msg_type: u8 = field::TYPE;
        msg_code / set_msg_code: u8 = field::CODE;
        checksum / set_checksum: u16 = field::CHECKSUM;
        /// Echo identifier (meaningful for echo request/reply only).
        echo_ident / set_echo_ident: u16 = field::ECHO_IDENT;
        /// Echo sequence number (meaningful for echo request/reply only).
        echo_seq_no / set_echo_seq_no: u16 = field::ECHO_SEQ;
    }
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Length of the ICMP header.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// The check `new_checked` makes.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        super::check_min_len(self.buffer.as_ref(), HEADER_LEN)
    }

    /// Bytes 4..8, whose meaning depends on the type (echo id/seq, unused, next-hop MTU, ...).
    #[inline]
    pub fn rest_of_header(&self) -> [u8; 4] {
        let r = &self.buffer.as_ref()[field::REST];
        [r[0], r[1], r[2], r[3]]
    }

    /// Echo request or echo reply.
    #[inline]
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), TYPE_ECHO_REQUEST | TYPE_ECHO_REPLY)
    }

    /// True if the checksum over the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xffff
    }

    /// Everything after the 8-byte header (echo data, or the offending datagram of an error).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    #[inline]
    pub fn set_rest_of_header(&mut self, value: [u8; 4]) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&value);
    }

    /// Computes the checksum over the whole message and writes it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::internet_checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echo request id 0x1234 seq 1 with 16 data bytes 0x10..0x1f; checksum 0x2d0a.
    const ECHO: [u8; 24] = [
        0x08, 0x00, 0x2d, 0x0a, // type 8, code 0, checksum
        0x12, 0x34, 0x00, 0x01, // ident, seq
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, // data
        0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
    ];

    #[test]
    fn parse_golden() {
        let p = Icmpv4Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(p.msg_type(), TYPE_ECHO_REQUEST);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.checksum(), 0x2d0a);
        assert!(p.verify_checksum());
        assert!(p.is_echo());
        assert_eq!(p.rest_of_header(), [0x12, 0x34, 0x00, 0x01]);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 1);
        assert_eq!(p.payload(), &ECHO[8..]);
    }

    #[test]
    fn emit_golden() {
        let mut buf = [0u8; 24];
        let mut p = Icmpv4Packet::new_unchecked(&mut buf[..]);
        p.set_msg_type(TYPE_ECHO_REQUEST);
        p.set_msg_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq_no(1);
        p.payload_mut().copy_from_slice(&ECHO[8..]);
        p.fill_checksum();
        assert_eq!(buf, ECHO);
    }

    #[test]
    fn echo_reply_in_place() {
        let mut buf = ECHO;
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_msg_type(TYPE_ECHO_REPLY);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert!(p.is_echo());
        // The incremental update gives the same checksum as the full computation.
        let expect = checksum::update_u16(0x2d0a, 0x0800, 0x0000);
        assert_eq!(p.checksum(), expect);
    }

    #[test]
    fn error_message_rest_of_header() {
        // Destination unreachable, fragmentation needed, next-hop MTU 1400.
        let mut buf = [0u8; 8];
        let mut p = Icmpv4Packet::new_unchecked(&mut buf[..]);
        p.set_msg_type(TYPE_DEST_UNREACHABLE);
        p.set_msg_code(4);
        p.set_rest_of_header([0, 0, 0x05, 0x78]);
        p.fill_checksum();
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert!(!p.is_echo());
        assert!(p.verify_checksum());
        assert!(p.payload().is_empty());
        assert_eq!(buf, [3, 4, 0xf7, 0x83, 0, 0, 0x05, 0x78]);
    }

    #[test]
    fn odd_length_checksum() {
        let mut buf = [0u8; 9];
        buf[..8].copy_from_slice(&ECHO[..8]);
        buf[8] = 0xab;
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum());
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..ECHO.len() {
            let r = Icmpv4Packet::new_checked(&ECHO[..len]);
            if len < HEADER_LEN {
                assert_eq!(r.unwrap_err(), WireError::Truncated, "len {len}");
            } else {
                let p = r.unwrap();
                let _ = (
                    p.msg_type(),
                    p.echo_ident(),
                    p.payload(),
                    p.verify_checksum(),
                );
            }
        }
    }

    #[test]
    fn cross_check_with_etherparse() {
        let s = etherparse::Icmpv4Slice::from_slice(&ECHO).unwrap();
        assert_eq!(s.checksum(), 0x2d0a);
        match s.header().icmp_type {
            etherparse::Icmpv4Type::EchoRequest(e) => {
                assert_eq!((e.id, e.seq), (0x1234, 1));
            }
            other => panic!("unexpected {other:?}"),
        }
        let recomputed = s.header().icmp_type.calc_checksum(s.payload());
        assert_eq!(recomputed, 0x2d0a);
    }
}
