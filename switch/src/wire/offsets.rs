//! The fast path's fixed offsets: where each field sits in an untagged Ethernet frame that
//! carries an option-less IPv4 header (IHL 5) and a TCP or UDP header.
//!
//! Contract: these are the only raw offsets the pipeline uses. They are valid only after the
//! reader has checked the ethertype ([`ETHERTYPE`] holds 0x0800) and the first IPv4 byte
//! ([`IPV4_VER_IHL`] holds [`VER_IHL_NO_OPTIONS`]); the fast path ([`crate::pipeline::fast`])
//! and the connection-table warm-up ([`crate::pipeline::warm`]) do, and read them from one
//! fixed-size array so that every access is checked at compile time. Everything else reads
//! frames through the views of this module's siblings, whose own field tables say the same
//! thing per header; a test below holds the two in agreement.

/// Destination MAC (6 bytes).
pub const ETH_DST: usize = 0;
/// Source MAC (6 bytes).
pub const ETH_SRC: usize = 6;
/// Ethertype (2 bytes).
pub const ETHERTYPE: usize = 12;
/// Start of the IPv4 header: the Ethernet header's length.
pub const IPV4: usize = super::ethernet::HEADER_LEN;
/// Version and header length (1 byte).
pub const IPV4_VER_IHL: usize = IPV4;
/// [`IPV4_VER_IHL`] of an option-less IPv4 header: version 4, 5 words.
pub const VER_IHL_NO_OPTIONS: u8 = 0x45;
/// Total length (2 bytes).
pub const IPV4_TOTAL_LEN: usize = IPV4 + 2;
/// Flags and fragment offset (2 bytes).
pub const IPV4_FLAGS_FRAG: usize = IPV4 + 6;
/// The bits of [`IPV4_FLAGS_FRAG`] that make a fragment (MF and the offset; DF is not one).
pub const FRAGMENT_BITS: u16 = 0x3fff;
/// Time to live (1 byte), followed by the protocol: one 16-bit word for checksum updates.
pub const IPV4_TTL: usize = IPV4 + 8;
/// Protocol (1 byte).
pub const IPV4_PROTOCOL: usize = IPV4 + 9;
/// Header checksum (2 bytes).
pub const IPV4_CHECKSUM: usize = IPV4 + 10;
/// Source address (4 bytes).
pub const IPV4_SRC: usize = IPV4 + 12;
/// Destination address (4 bytes).
pub const IPV4_DST: usize = IPV4 + 16;
/// Start of the L4 header behind an option-less IPv4 header.
pub const L4: usize = IPV4 + super::ipv4::MIN_HEADER_LEN;
/// TCP/UDP/SCTP source port (2 bytes), followed by the destination port.
pub const L4_SRC_PORT: usize = L4;
/// TCP/UDP/SCTP destination port (2 bytes).
pub const L4_DST_PORT: usize = L4 + 2;
/// UDP length (2 bytes).
pub const UDP_LEN: usize = L4 + 4;
/// UDP checksum (2 bytes).
pub const UDP_CHECKSUM: usize = L4 + 6;
/// TCP data offset (high nibble, 1 byte).
pub const TCP_DATA_OFFSET: usize = L4 + 12;
/// TCP flags (1 byte).
pub const TCP_FLAGS: usize = L4 + 13;
/// TCP checksum (2 bytes).
pub const TCP_CHECKSUM: usize = L4 + 16;
/// The end of a minimal TCP header: the bytes a fixed-offset reader needs.
pub const TCP_END: usize = L4 + super::tcp::MIN_HEADER_LEN;
/// The shortest Ethernet + option-less IPv4 + UDP frame.
pub const UDP_END: usize = L4 + super::udp::HEADER_LEN;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{EthernetFrame, Ipv4Packet, TcpPacket, UdpPacket};

    /// The offsets above and the views agree, field by field, on one frame.
    #[test]
    fn offsets_agree_with_the_views() {
        let mut f = [0u8; TCP_END];
        for (i, b) in f.iter_mut().enumerate() {
            *b = i as u8;
        }
        f[IPV4_VER_IHL] = VER_IHL_NO_OPTIONS;
        let be16 = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
        let eth = EthernetFrame::new_unchecked(&f[..]);
        assert_eq!(eth.dst_addr().0, f[ETH_DST..ETH_DST + 6]);
        assert_eq!(eth.src_addr().0, f[ETH_SRC..ETH_SRC + 6]);
        assert_eq!(eth.ethertype(), be16(ETHERTYPE));
        let ip = Ipv4Packet::new_unchecked(&f[IPV4..]);
        assert_eq!(ip.header_len(), L4 - IPV4);
        assert_eq!(ip.total_len(), be16(IPV4_TOTAL_LEN));
        assert_eq!(ip.flags_frag(), be16(IPV4_FLAGS_FRAG));
        assert_eq!(ip.ttl(), f[IPV4_TTL]);
        assert_eq!(ip.protocol(), f[IPV4_PROTOCOL]);
        assert_eq!(ip.checksum(), be16(IPV4_CHECKSUM));
        assert_eq!(ip.src_addr().octets(), f[IPV4_SRC..IPV4_SRC + 4]);
        assert_eq!(ip.dst_addr().octets(), f[IPV4_DST..IPV4_DST + 4]);
        let tcp = TcpPacket::new_unchecked(&f[L4..]);
        assert_eq!((tcp.src_port(), tcp.dst_port()), (be16(L4_SRC_PORT), be16(L4_DST_PORT)));
        assert_eq!(tcp.data_offset(), f[TCP_DATA_OFFSET] >> 4);
        assert_eq!(tcp.flags(), f[TCP_FLAGS]);
        assert_eq!(tcp.checksum(), be16(TCP_CHECKSUM));
        let udp = UdpPacket::new_unchecked(&f[L4..]);
        assert_eq!(udp.len(), be16(UDP_LEN));
        assert_eq!(udp.checksum(), be16(UDP_CHECKSUM));
    }
}
