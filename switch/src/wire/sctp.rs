//! SCTP common header view (RFC 9260 §3.1): source and destination ports, verification tag,
//! and the CRC32c checksum over the whole SCTP packet.
//!
//! Contract: the buffer is the IPv4 payload. [`SctpPacket::new_checked`] requires the 12-byte
//! common header (`Truncated`); after it, no getter panics. The checksum is CRC32c (RFC 9260
//! appendix A) over the packet with the checksum field zeroed, stored as the CRC's
//! little-endian bytes (as Linux stores it: `cpu_to_le32` of the final CRC); [`SctpPacket::fill_checksum`] writes it after a translation changed
//! the ports (addresses are not covered: SCTP has no pseudo-header). Of the chunks only the
//! first one's type is read ([`SctpPacket::first_chunk_type`]): the connection tracker follows
//! an association's states by it; associations are tracked and translated by their ports, as
//! netfilter does.
use super::WireError;

/// Length of the SCTP common header.
pub const HEADER_LEN: usize = 12;

/// Chunk types (RFC 9260 §3.2) the connection tracker follows.
pub mod chunk {
    pub const DATA: u8 = 0;
    pub const INIT: u8 = 1;
    pub const INIT_ACK: u8 = 2;
    pub const ABORT: u8 = 6;
    pub const SHUTDOWN: u8 = 7;
    pub const SHUTDOWN_ACK: u8 = 8;
    pub const COOKIE_ECHO: u8 = 10;
    pub const COOKIE_ACK: u8 = 11;
    pub const SHUTDOWN_COMPLETE: u8 = 14;
}

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const VERIFICATION_TAG: usize = 4;
    pub const CHECKSUM: usize = 8;
}

view! {
    /// A view of an SCTP packet (common header and chunks).
    SctpPacket,
    unchecked: "Wraps a buffer without checks: only for buffers the caller built and sized.",
    checked: "Wraps an untrusted buffer: it must hold the 12-byte common header.",
    check: check
}

fields! {
    SctpPacket {
        src_port / set_src_port: u16 = field::SRC_PORT;
        dst_port / set_dst_port: u16 = field::DST_PORT;
        verification_tag / set_verification_tag: u32 = field::VERIFICATION_TAG;
    }
}

impl<T: AsRef<[u8]>> SctpPacket<T> {
    /// Length of the SCTP common header.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// The checks `new_checked` makes.
    #[inline]
    pub fn check(&self) -> Result<(), WireError> {
        super::check_min_len(self.buffer.as_ref(), HEADER_LEN)
    }

    /// The type of the first chunk, if the packet has one.
    #[inline]
    pub fn first_chunk_type(&self) -> Option<u8> {
        self.buffer.as_ref().get(HEADER_LEN).copied()
    }

    /// The checksum as stored (the CRC32c's little-endian bytes read as a number).
    pub fn checksum(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::CHECKSUM..field::CHECKSUM + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The CRC32c of the packet with its checksum field taken as zero.
    pub fn compute_checksum(&self) -> u32 {
        let b = self.buffer.as_ref();
        let head = crc32c::crc32c_append(crc32c::crc32c(&b[..field::CHECKSUM]), &[0; 4]);
        crc32c::crc32c_append(head, &b[field::CHECKSUM + 4..])
    }

    pub fn verify_checksum(&self) -> bool {
        self.checksum() == self.compute_checksum()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SctpPacket<T> {
    /// Writes the CRC32c of the whole buffer (the packet) into the checksum field.
    pub fn fill_checksum(&mut self) {
        let crc = self.compute_checksum();
        self.buffer.as_mut()[field::CHECKSUM..field::CHECKSUM + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An INIT chunk (checksum field zero).
    const INIT: [u8; 32] = [
        0x13, 0x88, 0x13, 0x89, 0x00, 0x00, 0x00, 0x00, // ports 5000 -> 5001, tag 0
        0x00, 0x00, 0x00, 0x00, // checksum, filled below
        0x01, 0x00, 0x00, 0x14, // INIT, length 20
        0x12, 0x34, 0x56, 0x78, // initiate tag
        0x00, 0x01, 0x00, 0x00, // a_rwnd
        0x00, 0x0a, 0x00, 0x0a, // outbound, inbound streams
        0x00, 0x00, 0x00, 0x01, // initial TSN
    ];

    #[test]
    fn header_fields_and_short_buffers() {
        let p = SctpPacket::new_checked(&INIT[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.verification_tag()), (5000, 5001, 0));
        assert_eq!(SctpPacket::new_checked(&INIT[..11]).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn the_checksum_is_crc32c_over_the_packet_with_its_field_zeroed() {
        let mut v = INIT;
        let mut p = SctpPacket::new_unchecked(&mut v[..]);
        p.fill_checksum();
        assert!(p.verify_checksum());
        // The same as a CRC32c over the bytes with the field zero, stored little-endian.
        let mut zeroed = INIT;
        zeroed[8..12].fill(0);
        assert_eq!(p.checksum(), crc32c::crc32c(&zeroed));
        // A changed port no longer verifies until filled again.
        p.set_dst_port(80);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
    }
}
