//! Offloads of frames that pods hand over with a virtio-net header: partial checksums and
//! GSO super-frames (issue #13 part 1). Pure functions over bytes, independent of the port
//! mechanism (AF_PACKET with `PACKET_VNET_HDR` or tap with `IFF_VNET_HDR` both put the same
//! 10-byte header in front of each frame).
//!
//! - [`vnet_hdr`]: the `struct virtio_net_hdr` (and the `_mrg_rxbuf` variant's `num_buffers`):
//!   parse, write, and validate against the frame it describes, the way the kernel's
//!   `virtio_net_hdr_to_skb` does, into a checked [`vnet_hdr::Offload`].
//! - [`checksum`]: completing a partial checksum (the kernel's `skb_checksum_help`), the
//!   IPv6 pseudo-header, and the NAT rule for partial checksums (the kernel's
//!   `inet_proto_csum_replace4/2/16`): addresses change the stored value, ports do not.
//! - [`segment`]: software GSO of a TCP (IPv4/IPv6) or UDP_L4 super-frame into
//!   caller-provided buffers, with the kernel's rules for IP ids, sequence numbers, flags and
//!   checksums.
//! - [`mtu`]: whether a (super-)frame goes to an egress as it is, in segments, or not at all
//!   (ICMP "fragmentation needed").
//!
//! Contract shared by the files: no I/O, no `unsafe`, no allocation and no panic in the
//! per-packet functions (they read the caller's frame and write into the caller's buffers);
//! every malformed input is a typed, `Copy` error the caller counts and drops.
//!
//! Limits: untagged Ethernet frames; IPv6 without extension headers before TCP/UDP; no UFO
//! (`VIRTIO_NET_HDR_GSO_UDP`, IP fragmentation of one datagram: parsed and validated, refused
//! by [`segment`]) and no tunnel GSO bits.

pub mod checksum;
pub mod mtu;
pub mod segment;
pub mod vnet_hdr;

pub use mtu::{fit, EgressOffloads, Fit, FrameShape};
pub use segment::{SegmentError, Segmenter};
pub use vnet_hdr::{GsoKind, Offload, VnetHdr, VnetHdrError};

#[cfg(test)]
mod tests {
    //! The pieces together, as the worker is to use them: a pod's TSO frame behind its
    //! virtio-net header, towards an egress without GSO.
    use super::*;

    #[test]
    fn header_validation_feeds_segmentation_and_the_mtu_decision() {
        // Ethernet + IPv4 (DF) + TCP (20 bytes) + 4,000 bytes; the checksum field is left as
        // it is (the segmenter computes every segment's in full).
        let payload = 4000usize;
        let mut frame = vec![0u8; 54 + payload];
        frame[12..14].copy_from_slice(&crate::wire::ETHERTYPE_IPV4.to_be_bytes());
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        frame[20] = 0x40;
        frame[22] = 64;
        frame[23] = crate::wire::IPPROTO_TCP;
        frame[46] = 5 << 4;
        frame[47] = crate::wire::tcp_flags::ACK | crate::wire::tcp_flags::PSH;
        let hdr = [vnet_hdr::flags::NEEDS_CSUM, vnet_hdr::gso::TCPV4, 54, 0, 0xa8, 0x05, 34, 0, 16, 0];
        let offload = VnetHdr::parse(&hdr).unwrap().validate(&frame).unwrap();
        let gso = offload.gso.expect("4,000 bytes are more than one 1,448-byte segment");
        let seg = Segmenter::new(&frame, gso).unwrap();
        assert_eq!(seg.count(), 3);
        let shape = FrameShape { l3_len: frame.len() - 14, gso: Some((gso, seg.max_segment_l3_len())), ipv6: false, df: true };
        assert_eq!(fit(&shape, 1500, EgressOffloads::NONE), Fit::Segment);
        assert_eq!(fit(&shape, 1500, EgressOffloads::ALL), Fit::Pass);
        assert_eq!(fit(&shape, 1450, EgressOffloads::NONE), Fit::FragNeeded { mtu: 1450 });
        let mut out = [0u8; 1600];
        let lens: Vec<usize> = (0..seg.count()).map(|i| seg.write(i, &mut out).unwrap()).collect();
        assert_eq!(lens, [54 + 1448, 54 + 1448, 54 + 4000 - 2 * 1448]);
        // The last segment written is in `out`: it verifies (sum over the TCP segment and the
        // pseudo-header is 0xffff) and carries PSH.
        let n = lens[2];
        let ph = crate::wire::checksum::pseudo_header_v4([0; 4].into(), [0; 4].into(), 6, (n - 34) as u32);
        assert_eq!(crate::wire::checksum::combine(&[ph, crate::wire::checksum::data(&out[34..n])]), 0xffff);
        assert_eq!(out[47] & crate::wire::tcp_flags::PSH, crate::wire::tcp_flags::PSH);
    }
}
