//! TCP segment view (RFC 9293).
//!
//! Contract: the buffer is the whole IPv4 payload (one segment). [`TcpPacket::new_checked`]
//! requires the 20-byte fixed header (`Truncated`) and a data offset of at least 5 words that
//! stays within the buffer (`BadTcpDataOffset`); after it, no getter panics. The payload is
//! everything after the header, so the segment length is the buffer length, which is also what
//! the checksum covers (IPv4 pseudo-header included). Options are exposed as bytes, not parsed.
//! Flags are the 8 bits of byte 13 ([`flags`]); the NS bit of byte 12 is not exposed.
//! A frame read from a veth may carry a partial (offloaded) checksum, which does not verify.

use std::net::Ipv4Addr;

use super::checksum;
use super::{WireError, IPPROTO_TCP};

/// Length of the fixed header (data offset 5).
pub const MIN_HEADER_LEN: usize = 20;

/// The TCP flag bits, as found in byte 13 of the header.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

view! {
    /// A view of a TCP segment.
    TcpPacket,
    unchecked: "Wraps a buffer without checks: only for buffers the caller built and sized.",
    checked: "Wraps an untrusted buffer; see the module doc for the checks.",
    check: check
}

fields! {
    TcpPacket {
        src_port / set_src_port: u16 = field::SRC_PORT;
        dst_port / set_dst_port: u16 = field::DST_PORT;
        seq_number / set_seq_number: u32 = field::SEQ;
        ack_number / set_ack_number: u32 = field::ACK;
        /// The flag byte; test it with the masks in [`flags`].
        flags / set_flags: u8 = field::FLAGS;
        window / set_window: u16 = field::WINDOW;
        checksum / set_checksum: u16 = field::CHECKSUM;
        urgent_ptr / set_urgent_ptr: u16 = field::URGENT;
    }
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Length of the fixed header.
    pub const MIN_HEADER_LEN: usize = MIN_HEADER_LEN;

    /// The checks `new_checked` makes.
    #[inline]
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN || header_len > len {
            return Err(WireError::BadTcpDataOffset);
        }
        Ok(())
    }

    /// Data offset in 32-bit words.
    #[inline]
    pub fn data_offset(&self) -> u8 {
        self.buffer.as_ref()[field::DATA_OFFSET] >> 4
    }

    /// Header length in bytes (`data_offset * 4`, options included).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.data_offset()) * 4
    }

    /// True if every bit of `mask` is set.
    #[inline]
    pub fn has_flags(&self, mask: u8) -> bool {
        self.flags() & mask == mask
    }

    /// Option bytes (empty when the data offset is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// True if the checksum over the pseudo-header and the whole segment is correct.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let seg = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v4(src, dst, IPPROTO_TCP, seg.len() as u32);
        checksum::combine(&[ph, checksum::data(seg)]) == 0xffff
    }

    /// Everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the data offset in 32-bit words (low 4 bits used; the reserved bits are kept).
    #[inline]
    pub fn set_data_offset(&mut self, words: u8) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFFSET];
        *b = (*b & 0x0f) | (words << 4);
    }

    /// Sets the header length in bytes (a multiple of 4, 20 to 60).
    #[inline]
    pub fn set_header_len(&mut self, bytes: u8) {
        self.set_data_offset(bytes / 4);
    }

    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..end]
    }

    /// Computes the checksum over the pseudo-header and the whole buffer and writes it.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let seg = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v4(src, dst, IPPROTO_TCP, seg.len() as u32);
        let c = !checksum::combine(&[ph, checksum::data(seg)]);
        self.set_checksum(c);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// A Linux-style SYN 10.0.0.1:40000 -> 10.0.0.2:80: seq 0x12345678, window 64240, options
    /// MSS 1460, SACK permitted, timestamps (0x0a0b0c0d, 0), NOP, window scale 7. Checksum 0x1db8.
    const SYN: [u8; 40] = [
        0x9c, 0x40, 0x00, 0x50, // ports
        0x12, 0x34, 0x56, 0x78, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0xa0, 0x02, 0xfa, 0xf0, // data offset 10, SYN, window
        0x1d, 0xb8, 0x00, 0x00, // checksum, urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0x04, 0x02, // SACK permitted
        0x08, 0x0a, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x00, 0x00, 0x00, // timestamps
        0x01, // NOP
        0x03, 0x03, 0x07, // window scale 7
    ];

    #[test]
    fn parse_golden() {
        let p = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 0x1234_5678);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.data_offset(), 10);
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), flags::SYN);
        assert!(p.has_flags(flags::SYN));
        assert!(!p.has_flags(flags::SYN | flags::ACK));
        assert_eq!(p.window(), 64240);
        assert_eq!(p.checksum(), 0x1db8);
        assert_eq!(p.urgent_ptr(), 0);
        assert_eq!(p.options(), &SYN[20..]);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(DST, Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn emit_golden() {
        let mut buf = [0u8; 40];
        let mut p = TcpPacket::new_unchecked(&mut buf[..]);
        p.set_src_port(40000);
        p.set_dst_port(80);
        p.set_seq_number(0x1234_5678);
        p.set_ack_number(0);
        p.set_header_len(40);
        p.set_flags(flags::SYN);
        p.set_window(64240);
        p.set_urgent_ptr(0);
        p.options_mut().copy_from_slice(&SYN[20..]);
        p.fill_checksum(SRC, DST);
        assert_eq!(buf, SYN);
    }

    #[test]
    fn flag_bits_are_distinct() {
        let all = [
            flags::FIN,
            flags::SYN,
            flags::RST,
            flags::PSH,
            flags::ACK,
            flags::URG,
            flags::ECE,
            flags::CWR,
        ];
        assert_eq!(all.iter().fold(0u8, |a, f| a | f), 0xff);
        assert_eq!(all.iter().map(|f| f.count_ones()).sum::<u32>(), 8);
    }

    #[test]
    fn segment_with_payload_odd_length() {
        // SYN-ACK-less data segment: fixed header, 3 payload bytes.
        let mut buf = [0u8; 23];
        let mut p = TcpPacket::new_unchecked(&mut buf[..]);
        p.set_src_port(80);
        p.set_dst_port(40000);
        p.set_seq_number(1);
        p.set_ack_number(0x1234_5679);
        p.set_data_offset(5);
        p.set_flags(flags::PSH | flags::ACK);
        p.set_window(502);
        p.payload_mut().copy_from_slice(b"abc");
        p.fill_checksum(DST, SRC);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), b"abc");
        assert!(p.verify_checksum(DST, SRC));
        // etherparse computes the same checksum.
        let s = etherparse::TcpSlice::from_slice(&buf).unwrap();
        let c = s
            .to_header()
            .calc_checksum_ipv4_raw(DST.octets(), SRC.octets(), s.payload());
        assert_eq!(c.unwrap(), p.checksum());
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..SYN.len() {
            let err = TcpPacket::new_checked(&SYN[..len]).unwrap_err();
            let expect = if len < MIN_HEADER_LEN {
                WireError::Truncated
            } else {
                WireError::BadTcpDataOffset
            };
            assert_eq!(err, expect, "len {len}");
        }
    }

    #[test]
    fn bad_data_offset() {
        for words in 0..5 {
            let mut buf = SYN;
            buf[12] = words << 4;
            assert_eq!(
                TcpPacket::new_checked(&buf[..]).unwrap_err(),
                WireError::BadTcpDataOffset
            );
        }
        let mut buf = SYN;
        buf[12] = 0xb0; // 44 bytes in a 40-byte segment
        assert_eq!(
            TcpPacket::new_checked(&buf[..]).unwrap_err(),
            WireError::BadTcpDataOffset
        );
    }

    #[test]
    fn cross_check_with_etherparse() {
        let s = etherparse::TcpSlice::from_slice(&SYN).unwrap();
        let p = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!(s.source_port(), p.src_port());
        assert_eq!(s.destination_port(), p.dst_port());
        assert_eq!(s.sequence_number(), p.seq_number());
        assert_eq!(s.data_offset(), p.data_offset());
        assert!(s.syn() && !s.ack() && !s.fin() && !s.rst());
        assert_eq!(s.window_size(), p.window());
        assert_eq!(s.options(), p.options());
        let c = s
            .to_header()
            .calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), s.payload());
        assert_eq!(c.unwrap(), 0x1db8);
    }
}
