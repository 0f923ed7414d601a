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
