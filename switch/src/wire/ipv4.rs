//! IPv4 packet view (RFC 791).
//!
//! Contract: [`Ipv4Packet::new_checked`] accepts a buffer that holds a whole IPv4 packet:
//! at least 20 bytes (`Truncated`), version 4 (`BadIpVersion`), IHL of at least 5 words
//! (`BadIhl`), a header that fits in the buffer (`Truncated`), a total length of at least the
//! header (`BadTotalLength`) and at most the buffer (`Truncated`). A buffer longer than the total
//! length is fine (Ethernet pads short frames to 60 bytes): [`Ipv4Packet::payload`] stops at the
//! total length. After `new_checked`, no getter panics. The header checksum is not checked
//! there: call [`Ipv4Packet::verify_checksum`] where it matters. Options are exposed as bytes,
//! not parsed.

use std::net::Ipv4Addr;

use super::checksum;
use super::{read_u16, write_u16, WireError};

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const OPTIONS: usize = 20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

view! {
    /// A view of an IPv4 packet.
    Ipv4Packet,
    unchecked: "Wraps a buffer without checks: only for buffers the caller built and sized.",
    checked: "Wraps an untrusted buffer; see the module doc for the checks.",
    check: check
}

fields! {
    Ipv4Packet {
        /// The DSCP and ECN byte (formerly TOS).
        dscp_ecn / set_dscp_ecn: u8 = field::DSCP_ECN;
        /// Total length of the packet, header included.
        total_len / set_total_len: u16 = field::TOTAL_LEN;
        ident / set_ident: u16 = field::IDENT;
        ttl / set_ttl: u8 = field::TTL;
        protocol / set_protocol: u8 = field::PROTOCOL;
        checksum / set_checksum: u16 = field::CHECKSUM;
        src_addr / set_src_addr: Ipv4Addr = field::SRC;
        dst_addr / set_dst_addr: Ipv4Addr = field::DST;
    }
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = MIN_HEADER_LEN;

    /// The checks `new_checked` makes, in that order.
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::BadIpVersion);
        }
        if self.ihl() < 5 {
            return Err(WireError::BadIhl);
        }
        let header_len = self.header_len();
        if header_len > len {
            return Err(WireError::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(WireError::BadTotalLength);
        }
        if total_len > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in 32-bit words.
    #[inline]
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] & 0x0f
    }

    /// Header length in bytes (`ihl * 4`, options included).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    #[inline]
    pub fn dscp(&self) -> u8 {
        self.dscp_ecn() >> 2
    }

    #[inline]
    pub fn ecn(&self) -> u8 {
        self.dscp_ecn() & 0x03
    }

    /// The raw 16-bit flags and fragment offset word.
    #[inline]
    pub fn flags_frag(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & FRAG_OFFSET_MASK) << 3
    }

    /// Any fragment: more fragments follow, or this one is not the first.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// A fragment other than the first: it carries no L4 header.
    #[inline]
    pub fn is_non_first_fragment(&self) -> bool {
        self.flags_frag() & FRAG_OFFSET_MASK != 0
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Option bytes (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// True if the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.header()) == 0xffff
    }

    /// The payload: from the end of the header to the total length (padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the IHL in 32-bit words (low 4 bits used).
    #[inline]
    pub fn set_ihl(&mut self, words: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | (words & 0x0f);
    }

    /// Sets the header length in bytes (a multiple of 4, 20 to 60).
    #[inline]
    pub fn set_header_len(&mut self, bytes: u8) {
        self.set_ihl(bytes / 4);
    }

    /// Sets the raw flags and fragment offset word.
    #[inline]
    pub fn set_flags_frag(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::FLAGS_FRAG, value);
    }

    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        let w = self.flags_frag();
        self.set_flags_frag(if value { w | FLAG_DF } else { w & !FLAG_DF });
    }

    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        let w = self.flags_frag();
        self.set_flags_frag(if value { w | FLAG_MF } else { w & !FLAG_MF });
    }

    /// Sets the fragment offset in bytes (a multiple of 8).
    #[inline]
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let w = self.flags_frag();
        self.set_flags_frag((w & !FRAG_OFFSET_MASK) | ((bytes >> 3) & FRAG_OFFSET_MASK));
    }

    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..end]
    }

    /// Computes the header checksum (over `header_len` bytes) and writes it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::internet_checksum(self.header());
        self.set_checksum(c);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.0.1 -> 10.0.0.2, UDP, DF, TTL 64, ident 0x1c46, 13-byte payload; checksum 0x0a84.
    const PACKET: [u8; 33] = [
        0x45, 0x00, 0x00, 0x21, // v4 ihl 5, tos 0, total 33
        0x1c, 0x46, 0x40, 0x00, // ident, DF
        0x40, 0x11, 0x0a, 0x84, // ttl 64, UDP, checksum
        0x0a, 0x00, 0x00, 0x01, // src
        0x0a, 0x00, 0x00, 0x02, // dst
        0x30, 0x39, 0x00, 0x35, 0x00, 0x0d, 0x77, 0x91, // UDP header
        0x68, 0x65, 0x6c, 0x6c, 0x6f, // "hello"
    ];

    /// A header with 4 bytes of options (NOP NOP NOP EOL), 4-byte payload, valid checksum
    /// filled in by the test.
    fn with_options() -> [u8; 28] {
        let mut buf = [
            0x46, 0xb8, 0x00, 0x1c, 0x00, 0x07, 0x20, 0x03, 0x01, 0x06, 0x00, 0x00, 0xc0, 0xa8,
            0x01, 0x01, 0xc0, 0xa8, 0x01, 0x02, 0x01, 0x01, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef,
        ];
        Ipv4Packet::new_unchecked(&mut buf[..]).fill_checksum();
        buf
    }

    #[test]
    fn parse_golden() {
        let p = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.ihl(), 5);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp_ecn(), 0);
        assert_eq!(p.total_len(), 33);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert!(!p.is_non_first_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.checksum(), 0x0a84);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &PACKET[20..]);
    }

    #[test]
    fn emit_golden() {
        let mut buf = [0u8; 33];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_dscp_ecn(0);
        p.set_total_len(33);
        p.set_ident(0x1c46);
        p.set_dont_frag(true);
        p.set_more_frags(false);
        p.set_frag_offset(0);
        p.set_ttl(64);
        p.set_protocol(17);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.fill_checksum();
        assert_eq!(p.checksum(), 0x0a84);
        p.payload_mut().copy_from_slice(&PACKET[20..]);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn options_dscp_and_fragment_fields() {
        let buf = with_options();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.ihl(), 6);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.dscp(), 46); // EF
        assert_eq!(p.ecn(), 0);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert!(!p.dont_frag());
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 24);
        assert!(p.is_fragment());
        assert!(p.is_non_first_fragment());
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 1, 1));

        let mut buf = buf;
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_frag_offset(0);
        p.set_more_frags(false);
        p.set_dont_frag(true);
        p.options_mut().fill(0);
        assert_eq!(p.flags_frag(), 0x4000);
        assert!(!p.is_fragment());
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
    }

    #[test]
    fn first_fragment_is_not_non_first() {
        let mut buf = PACKET;
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_more_frags(true);
        assert!(p.is_fragment());
        assert!(!p.is_non_first_fragment());
    }

    #[test]
    fn corrupted_checksum_fails_verification() {
        let mut buf = PACKET;
        buf[15] ^= 0x01; // src address
        assert!(!Ipv4Packet::new_checked(&buf[..]).unwrap().verify_checksum());
    }

    #[test]
    fn ethernet_padding_is_excluded_from_payload() {
        let mut buf = [0u8; 46];
        buf[..33].copy_from_slice(&PACKET);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload(), &PACKET[20..]);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..PACKET.len() {
            let err = Ipv4Packet::new_checked(&PACKET[..len]).unwrap_err();
            assert_eq!(err, WireError::Truncated, "len {len}");
        }
        let buf = with_options();
        for len in 0..buf.len() {
            assert_eq!(
                Ipv4Packet::new_checked(&buf[..len]).unwrap_err(),
                WireError::Truncated,
                "len {len}"
            );
        }
    }

    #[test]
    fn malformed_headers() {
        let mut buf = PACKET;
        buf[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::BadIpVersion
        );

        for ihl in 0..5 {
            let mut buf = PACKET;
            buf[0] = 0x40 | ihl;
            assert_eq!(
                Ipv4Packet::new_checked(&buf[..]).unwrap_err(),
                WireError::BadIhl
            );
        }

        // IHL 15 (60 bytes) in a 33-byte buffer.
        let mut buf = PACKET;
        buf[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::Truncated
        );

        // Total length below the header.
        for total in [0u16, 1, 19] {
            let mut buf = PACKET;
            buf[2..4].copy_from_slice(&total.to_be_bytes());
            assert_eq!(
                Ipv4Packet::new_checked(&buf[..]).unwrap_err(),
                WireError::BadTotalLength
            );
        }
        // Total length beyond the buffer.
        let mut buf = PACKET;
        buf[2..4].copy_from_slice(&34u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::Truncated
        );

        // Total length exactly the header: empty payload, fine.
        let mut buf = PACKET;
        buf[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert!(Ipv4Packet::new_checked(&buf[..])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn cross_check_with_etherparse() {
        let (h, rest) = etherparse::Ipv4Header::from_slice(&PACKET).unwrap();
        let p = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(h.header_checksum, p.checksum());
        assert_eq!(h.calc_header_checksum(), p.checksum());
        assert_eq!(h.time_to_live, p.ttl());
        assert_eq!(Ipv4Addr::from(h.source), p.src_addr());
        assert_eq!(Ipv4Addr::from(h.destination), p.dst_addr());
        assert_eq!(h.identification, p.ident());
        assert_eq!(h.dont_fragment, p.dont_frag());
        assert_eq!(rest, p.payload());
    }
}
