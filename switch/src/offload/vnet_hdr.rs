//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes) that AF_PACKET sockets with
//! `PACKET_VNET_HDR` and tap devices with `IFF_VNET_HDR` put in front of every frame, and its
//! validation against the frame it describes.
//!
//! Layout (include/uapi/linux/virtio_net.h):
//!
//! | offset | field         | size | meaning                                              |
//! | -----: | ------------- | ---: | ---------------------------------------------------- |
//! |      0 | `flags`       |    1 | [`flags::NEEDS_CSUM`], [`flags::DATA_VALID`]         |
//! |      1 | `gso_type`    |    1 | [`gso`]`::NONE/TCPV4/UDP/TCPV6/UDP_L4`, `\| ECN`     |
//! |      2 | `hdr_len`     |    2 | length of the headers (a hint: see below)            |
//! |      4 | `gso_size`    |    2 | payload bytes per segment (the MSS for TCP)          |
//! |      6 | `csum_start`  |    2 | where checksumming starts, from the frame's start    |
//! |      8 | `csum_offset` |    2 | where the checksum goes, from `csum_start`           |
//! |     10 | `num_buffers` |    2 | only in the 12-byte `virtio_net_hdr_mrg_rxbuf`       |
//!
//! Byte order: the 16-bit fields are little-endian. Virtio 1.0 defines them so; the kernel's
//! tap and packet sockets use "legacy" virtio byte order, which is the host's unless tap is
//! switched with `TUNSETVNETLE`/`TUNSETVNETBE`, and the host is little-endian on every
//! machine this project runs on (x86-64, arm64). [`VnetHdr::parse`] and [`VnetHdr::write`]
//! always use little-endian; a big-endian host would need `TUNSETVNETLE` on its taps.
//!
//! Contract:
//! - [`VnetHdr::parse`]/[`VnetHdr::write`] only move bytes; nothing is judged there.
//! - [`VnetHdr::validate`] mirrors `__virtio_net_hdr_to_skb` (include/linux/virtio_net.h,
//!   Linux 6.18) for frames that start with an untagged Ethernet header: a known GSO type
//!   with a non-zero `gso_size` (not `GSO_BY_FRAGS`), `csum_start`/`csum_offset` inside the
//!   frame and past the IP header, the checksum offset of TCP (16) or UDP (6) for GSO
//!   frames, UDP_L4 only with `NEEDS_CSUM` and at most [`UDP_MAX_SEGMENTS`] segments, and
//!   (what tun and packet sockets check before) `hdr_len` within the frame. It is stricter in
//!   two places, said where they are: the ethertype must match the GSO type, and
//!   `csum_start` must lie past the Ethernet header too. Like the kernel, a "GSO" frame whose
//!   payload fits in one segment is not GSO ([`Offload::gso`] is `None`).
//! - Bits beyond those of [`gso`] are refused as [`VnetHdrError::UnknownGsoType`]: the UDP
//!   tunnel bits (this switch asks no port for them) and the AccECN bit (proposed for Linux,
//!   its value not yet settled); with AccECN the kernel would keep CWR on every segment.
//! - `hdr_len` is never trusted for parsing: the kernel sends `skb_headlen()` there, which may
//!   cover payload; the segmenter parses the headers itself.
//! - Errors are `Copy`: the caller maps them to a drop reason and counts them.

use crate::wire::ethernet::HEADER_LEN as ETH_HLEN;
use crate::wire::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};

/// Length of `struct virtio_net_hdr`.
pub const LEN: usize = 10;
/// Length of `struct virtio_net_hdr_mrg_rxbuf` (the header plus `num_buffers`).
pub const MRG_RXBUF_LEN: usize = 12;
/// The kernel's `UDP_MAX_SEGMENTS` (include/linux/udp.h, Linux 6.18): most segments of one
/// UDP_L4 super-frame.
pub const UDP_MAX_SEGMENTS: usize = 128;
/// The kernel's `GSO_BY_FRAGS`: a `gso_size` the kernel reserves for itself (refused).
pub const GSO_BY_FRAGS: u16 = 0xffff;
/// Offset of the checksum in a TCP header (`offsetof(struct tcphdr, check)`).
pub const TCP_CSUM_OFFSET: u16 = 16;
/// Offset of the checksum in a UDP header (`offsetof(struct udphdr, check)`).
pub const UDP_CSUM_OFFSET: u16 = 6;
/// Length of an IPv4 header without options.
const IPV4_MIN: usize = 20;
/// Length of the IPv6 fixed header.
const IPV6_LEN: usize = 40;
/// Length of a TCP header without options (`sizeof(struct tcphdr)`).
const TCP_MIN: usize = 20;
/// Length of a UDP header.
const UDP_LEN: usize = 8;

/// `flags` bits (`VIRTIO_NET_HDR_F_*`).
pub mod flags {
    /// The checksum from `csum_start` to the end is to be computed and stored at
    /// `csum_start + csum_offset` (the kernel's `CHECKSUM_PARTIAL`).
    pub const NEEDS_CSUM: u8 = 1;
    /// The checksum was verified (`CHECKSUM_UNNECESSARY`); only on frames towards the reader.
    pub const DATA_VALID: u8 = 2;
}

/// `gso_type` values (`VIRTIO_NET_HDR_GSO_*`).
pub mod gso {
    /// Not a GSO frame.
    pub const NONE: u8 = 0;
    /// TCP over IPv4 (TSO).
    pub const TCPV4: u8 = 1;
    /// UDP fragmentation offload (UFO): one datagram, IP-fragmented.
    pub const UDP: u8 = 3;
    /// TCP over IPv6.
    pub const TCPV6: u8 = 4;
    /// UDP segmentation (USO): each segment its own datagram.
    pub const UDP_L4: u8 = 5;
    /// The TCP super-frame has CWR set (or'ed into the type).
    pub const ECN: u8 = 0x80;
}

/// What a GSO frame is to be cut into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GsoKind {
    /// TCP over IPv4, segments of `gso_size` payload bytes.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
    /// UFO: a UDP datagram to be IP-fragmented (not segmented here).
    Ufo,
    /// USO: UDP datagrams of `gso_size` payload bytes each (IPv4 or IPv6).
    UdpL4,
}

impl GsoKind {
    /// The kind of a `gso_type` without its ECN bit; `None` for `NONE` and unknown values.
    pub const fn from_type(gso_type: u8) -> Option<GsoKind> {
        match gso_type & !gso::ECN {
            gso::TCPV4 => Some(GsoKind::TcpV4),
            gso::TCPV6 => Some(GsoKind::TcpV6),
            gso::UDP => Some(GsoKind::Ufo),
            gso::UDP_L4 => Some(GsoKind::UdpL4),
            _ => None,
        }
    }

    /// The `gso_type` value of this kind (without the ECN bit).
    pub const fn to_type(self) -> u8 {
        match self {
            GsoKind::TcpV4 => gso::TCPV4,
            GsoKind::TcpV6 => gso::TCPV6,
            GsoKind::Ufo => gso::UDP,
            GsoKind::UdpL4 => gso::UDP_L4,
        }
    }

    /// Whether the segments are TCP.
    pub const fn is_tcp(self) -> bool {
        matches!(self, GsoKind::TcpV4 | GsoKind::TcpV6)
    }

    /// The minimal transport header (`thlen` in the kernel).
    const fn min_l4_len(self) -> usize {
        if self.is_tcp() {
            TCP_MIN
        } else {
            UDP_LEN
        }
    }
}

/// A raw virtio-net header, fields in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// Where a partial checksum is to be completed (both offsets checked against the frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialCsum {
    /// From the frame's first byte to where the sum starts (the L4 header).
    pub start: u16,
    /// From `start` to the 16-bit checksum field.
    pub offset: u16,
}

/// A checked GSO request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    pub kind: GsoKind,
    /// Payload bytes per segment, > 0.
    pub size: u16,
    /// The `ECN` bit: the TCP super-frame carries CWR (only the first segment keeps it).
    pub ecn: bool,
}

/// What a validated header asks of the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offload {
    /// `NEEDS_CSUM`: the L4 checksum is partial (holds the pseudo-header sum).
    pub csum: Option<PartialCsum>,
    /// A GSO super-frame of more than one segment.
    pub gso: Option<Gso>,
    /// `DATA_VALID` (without `NEEDS_CSUM`): the checksum was verified by the sender's side.
    pub data_valid: bool,
}

/// Why a virtio-net header was refused (the kernel answers `-EINVAL` for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VnetHdrError {
    #[error("virtio-net header truncated: {len} bytes, {need} needed")]
    Truncated { len: usize, need: usize },
    #[error("unknown GSO type {0:#04x}")]
    UnknownGsoType(u8),
    #[error("GSO frame with gso_size 0")]
    ZeroGsoSize,
    #[error("gso_size 0xffff (GSO_BY_FRAGS) is the kernel's own")]
    GsoSizeByFrags,
    #[error("hdr_len {hdr_len} beyond the frame's {frame_len} bytes")]
    HdrLenBeyondFrame { hdr_len: u16, frame_len: usize },
    #[error("checksum at csum_start {start} + csum_offset {offset} beyond the frame's {frame_len} bytes")]
    CsumOutsideFrame { start: u16, offset: u16, frame_len: usize },
    #[error("csum_start {start} inside the Ethernet and IP headers (at least {min})")]
    CsumStartInHeaders { start: u16, min: usize },
    #[error("csum_offset {offset} is not the checksum field of a {kind:?} header")]
    CsumOffsetMismatch { kind: GsoKind, offset: u16 },
    #[error("frame of {frame_len} bytes shorter than the {need} bytes of headers its GSO type needs")]
    FrameTooShort { need: usize, frame_len: usize },
    #[error("GSO type {kind:?} on a frame with ethertype {ethertype:#06x}")]
    GsoProtoMismatch { kind: GsoKind, ethertype: u16 },
    #[error("UDP_L4 GSO without NEEDS_CSUM")]
    UdpL4WithoutCsum,
    #[error("UDP_L4 payload of {payload} bytes is more than {} segments of {gso_size}", UDP_MAX_SEGMENTS)]
    TooManySegments { payload: usize, gso_size: u16 },
}

#[inline]
fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl VnetHdr {
    /// The header of a frame that asks for nothing (all zero).
    pub const NONE: VnetHdr =
        VnetHdr { flags: 0, gso_type: gso::NONE, hdr_len: 0, gso_size: 0, csum_start: 0, csum_offset: 0 };

    /// Reads the first [`LEN`] bytes of `bytes` (little-endian fields).
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<VnetHdr, VnetHdrError> {
        if bytes.len() < LEN {
            return Err(VnetHdrError::Truncated { len: bytes.len(), need: LEN });
        }
        Ok(VnetHdr {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: le16(bytes, 2),
            gso_size: le16(bytes, 4),
            csum_start: le16(bytes, 6),
            csum_offset: le16(bytes, 8),
        })
    }

    /// The header's [`LEN`] bytes.
    #[inline]
    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Writes the header into the first [`LEN`] bytes of `out`.
    #[inline]
    pub fn write(&self, out: &mut [u8]) -> Result<(), VnetHdrError> {
        let Some(dst) = out.get_mut(..LEN) else {
            return Err(VnetHdrError::Truncated { len: out.len(), need: LEN });
        };
        dst.copy_from_slice(&self.to_bytes());
        Ok(())
    }

    /// The header that asks for `offload` (the inverse of [`Self::validate`] for the fields
    /// it covers), with `hdr_len` the length of the frame's headers up to the end of the L4
    /// header (what `__virtio_net_set_hdrlen` sends; 0 when not GSO).
    pub fn from_offload(offload: &Offload, hdr_len: u16) -> VnetHdr {
        let mut h = VnetHdr::NONE;
        if let Some(c) = offload.csum {
            h.flags |= flags::NEEDS_CSUM;
            h.csum_start = c.start;
            h.csum_offset = c.offset;
        } else if offload.data_valid {
            h.flags |= flags::DATA_VALID;
        }
        if let Some(g) = offload.gso {
            h.gso_type = g.kind.to_type() | if g.ecn { gso::ECN } else { 0 };
            h.gso_size = g.size;
            h.hdr_len = hdr_len;
        }
        h
    }

    /// Whether `NEEDS_CSUM` is set.
    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags & flags::NEEDS_CSUM != 0
    }

    /// Whether the `ECN` bit of `gso_type` is set.
    #[inline]
    pub fn ecn(&self) -> bool {
        self.gso_type & gso::ECN != 0
    }

    /// Checks this header against `frame` (the bytes behind it, starting with the Ethernet
    /// header) and returns what it asks for. See the module contract for the rules.
    pub fn validate(&self, frame: &[u8]) -> Result<Offload, VnetHdrError> {
        let frame_len = frame.len();
        let kind = if self.gso_type == gso::NONE {
            None
        } else {
            let Some(kind) = GsoKind::from_type(self.gso_type) else {
                return Err(VnetHdrError::UnknownGsoType(self.gso_type));
            };
            if self.gso_size == 0 {
                return Err(VnetHdrError::ZeroGsoSize);
            }
            Some(kind)
        };
        // tun_get_user and packet_snd refuse an hdr_len beyond the frame before the rest.
        if usize::from(self.hdr_len) > frame_len {
            return Err(VnetHdrError::HdrLenBeyondFrame { hdr_len: self.hdr_len, frame_len });
        }
        let thlen = kind.map_or(0, GsoKind::min_l4_len);
        let nh_min = if kind == Some(GsoKind::TcpV6) { IPV6_LEN } else { IPV4_MIN };
        // Stricter than the kernel: it checks the ethertype only for GSO frames without
        // NEEDS_CSUM (virtio_net_hdr_match_proto); a mismatch is malformed either way.
        if let Some(kind) = kind {
            if frame_len < ETH_HLEN {
                return Err(VnetHdrError::FrameTooShort { need: ETH_HLEN, frame_len });
            }
            let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
            let ok = match kind {
                GsoKind::TcpV4 => ethertype == ETHERTYPE_IPV4,
                GsoKind::TcpV6 => ethertype == ETHERTYPE_IPV6,
                GsoKind::Ufo | GsoKind::UdpL4 => ethertype == ETHERTYPE_IPV4 || ethertype == ETHERTYPE_IPV6,
            };
            if !ok {
                return Err(VnetHdrError::GsoProtoMismatch { kind, ethertype });
            }
        }
        let csum = if self.needs_csum() {
            let start = usize::from(self.csum_start);
            let off = usize::from(self.csum_offset);
            let needed = start + thlen.max(off + 2);
            if needed > frame_len {
                return Err(VnetHdrError::CsumOutsideFrame {
                    start: self.csum_start,
                    offset: self.csum_offset,
                    frame_len,
                });
            }
            // The kernel's skb_transport_offset is counted from the MAC header and compared
            // with the IP header's minimum only; the Ethernet header is added here.
            if start < ETH_HLEN + nh_min {
                return Err(VnetHdrError::CsumStartInHeaders { start: self.csum_start, min: ETH_HLEN + nh_min });
            }
            Some(PartialCsum { start: self.csum_start, offset: self.csum_offset })
        } else {
            None
        };
        let Some(kind) = kind else {
            let data_valid = csum.is_none() && self.flags & flags::DATA_VALID != 0;
            return Ok(Offload { csum, gso: None, data_valid });
        };
        // Where the payload starts at the earliest (`p_off`).
        let p_off = match csum {
            Some(c) => usize::from(c.start) + thlen,
            None => {
                let need = ETH_HLEN + nh_min + thlen;
                if need > frame_len {
                    return Err(VnetHdrError::FrameTooShort { need, frame_len });
                }
                need
            }
        };
        let mut nh_off = p_off;
        match kind {
            // UFO may not include the transport header in gso_size.
            GsoKind::Ufo => nh_off -= thlen,
            GsoKind::UdpL4 => {
                let Some(c) = csum else { return Err(VnetHdrError::UdpL4WithoutCsum) };
                if c.offset != UDP_CSUM_OFFSET {
                    return Err(VnetHdrError::CsumOffsetMismatch { kind, offset: c.offset });
                }
                let payload = frame_len - p_off;
                if payload > usize::from(self.gso_size) * UDP_MAX_SEGMENTS {
                    return Err(VnetHdrError::TooManySegments { payload, gso_size: self.gso_size });
                }
            }
            GsoKind::TcpV4 | GsoKind::TcpV6 => {
                if let Some(c) = csum {
                    if c.offset != TCP_CSUM_OFFSET {
                        return Err(VnetHdrError::CsumOffsetMismatch { kind, offset: c.offset });
                    }
                }
            }
        }
        if self.gso_size == GSO_BY_FRAGS {
            return Err(VnetHdrError::GsoSizeByFrags);
        }
        // "Too small packets are not really GSO ones."
        let gso = (frame_len - nh_off > usize::from(self.gso_size))
            .then_some(Gso { kind, size: self.gso_size, ecn: self.ecn() });
        Ok(Offload { csum, gso, data_valid: false })
    }
}

/// `num_buffers` of a 12-byte `virtio_net_hdr_mrg_rxbuf` (bytes 10..12, little-endian).
#[inline]
pub fn num_buffers(bytes: &[u8]) -> Result<u16, VnetHdrError> {
    if bytes.len() < MRG_RXBUF_LEN {
        return Err(VnetHdrError::Truncated { len: bytes.len(), need: MRG_RXBUF_LEN });
    }
    Ok(le16(bytes, LEN))
}

/// Writes `num_buffers` into bytes 10..12 of a 12-byte header.
#[inline]
pub fn write_num_buffers(out: &mut [u8], n: u16) -> Result<(), VnetHdrError> {
    let Some(dst) = out.get_mut(LEN..MRG_RXBUF_LEN) else {
        return Err(VnetHdrError::Truncated { len: out.len(), need: MRG_RXBUF_LEN });
    };
    dst.copy_from_slice(&n.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCPv4 frame: Ethernet (14) + IPv4 (20) + TCP (20) + `payload` bytes.
    fn tcp4_frame(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 54 + payload];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f
    }

    fn tso4(gso_size: u16) -> VnetHdr {
        VnetHdr {
            flags: flags::NEEDS_CSUM,
            gso_type: gso::TCPV4,
            hdr_len: 54,
            gso_size,
            csum_start: 34,
            csum_offset: TCP_CSUM_OFFSET,
        }
    }

    #[test]
    fn golden_bytes_parse_and_write() {
        // What the kernel writes for a 3-segment TSO frame with CWR: NEEDS_CSUM, TCPV4|ECN,
        // hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16, all little-endian.
        let bytes = [0x01, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0];
        let h = VnetHdr::parse(&bytes).unwrap();
        assert_eq!(
            h,
            VnetHdr { flags: 1, gso_type: 0x81, hdr_len: 66, gso_size: 1448, csum_start: 34, csum_offset: 16 }
        );
        assert!(h.needs_csum() && h.ecn());
        assert_eq!(GsoKind::from_type(h.gso_type), Some(GsoKind::TcpV4));
        assert_eq!(h.to_bytes(), bytes);
        let mut out = [0xeeu8; 12];
        h.write(&mut out).unwrap();
        assert_eq!(out[..10], bytes);
        assert_eq!(out[10..], [0xee, 0xee], "write touches the 10 header bytes only");
        write_num_buffers(&mut out, 0x0102).unwrap();
        assert_eq!(out[10..], [0x02, 0x01]);
        assert_eq!(num_buffers(&out), Ok(0x0102));
        assert_eq!(num_buffers(&out[..10]), Err(VnetHdrError::Truncated { len: 10, need: 12 }));
        assert_eq!(VnetHdr::parse(&bytes[..9]), Err(VnetHdrError::Truncated { len: 9, need: 10 }));
        assert_eq!(h.write(&mut [0u8; 4]), Err(VnetHdrError::Truncated { len: 4, need: 10 }));
    }

    #[test]
    fn valid_tso_frame_is_gso_and_partial() {
        let f = tcp4_frame(3000);
        let o = tso4(1448).validate(&f).unwrap();
        assert_eq!(o.csum, Some(PartialCsum { start: 34, offset: 16 }));
        assert_eq!(o.gso, Some(Gso { kind: GsoKind::TcpV4, size: 1448, ecn: false }));
        assert!(!o.data_valid);
        // The header written for it reads back as the same request.
        let back = VnetHdr::from_offload(&o, 54);
        assert_eq!(back, tso4(1448));
        assert_eq!(back.validate(&f), Ok(o));
    }

    #[test]
    fn payload_within_one_segment_is_not_gso() {
        // p_off = csum_start + 20; 1448 bytes behind it fit one segment.
        let f = tcp4_frame(1448);
        let o = tso4(1448).validate(&f).unwrap();
        assert_eq!(o.gso, None);
        assert!(o.csum.is_some());
        assert!(tso4(1447).validate(&f).unwrap().gso.is_some());
    }

    #[test]
    fn plain_partial_and_data_valid() {
        let f = tcp4_frame(10);
        let h = VnetHdr { flags: flags::NEEDS_CSUM, csum_start: 34, csum_offset: 16, ..VnetHdr::NONE };
        assert_eq!(h.validate(&f).unwrap(), Offload { csum: Some(PartialCsum { start: 34, offset: 16 }), gso: None, data_valid: false });
        let dv = VnetHdr { flags: flags::DATA_VALID, ..VnetHdr::NONE };
        assert_eq!(dv.validate(&f).unwrap(), Offload { csum: None, gso: None, data_valid: true });
        assert_eq!(VnetHdr::NONE.validate(&f).unwrap(), Offload::default());
        // Without GSO a checksum anywhere past the IP header is fine (UDP's at 6).
        let udp = VnetHdr { flags: flags::NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..VnetHdr::NONE };
        assert!(udp.validate(&f).is_ok());
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let f = tcp4_frame(3000);
        let len = f.len();
        let cases: &[(VnetHdr, VnetHdrError)] = &[
            (VnetHdr { gso_size: 0, ..tso4(0) }, VnetHdrError::ZeroGsoSize),
            (VnetHdr { gso_type: 2, ..tso4(1448) }, VnetHdrError::UnknownGsoType(2)),
            (VnetHdr { gso_type: gso::ECN, ..tso4(1448) }, VnetHdrError::UnknownGsoType(0x80)),
            (VnetHdr { gso_type: 0x21, ..tso4(1448) }, VnetHdrError::UnknownGsoType(0x21)),
            (VnetHdr { hdr_len: len as u16 + 1, ..tso4(1448) }, VnetHdrError::HdrLenBeyondFrame { hdr_len: len as u16 + 1, frame_len: len }),
            (
                VnetHdr { csum_start: len as u16 - 10, ..tso4(1448) },
                VnetHdrError::CsumOutsideFrame { start: len as u16 - 10, offset: 16, frame_len: len },
            ),
            (
                VnetHdr { flags: flags::NEEDS_CSUM, csum_start: 34, csum_offset: len as u16, ..VnetHdr::NONE },
                VnetHdrError::CsumOutsideFrame { start: 34, offset: len as u16, frame_len: len },
            ),
            (VnetHdr { csum_start: 20, ..tso4(1448) }, VnetHdrError::CsumStartInHeaders { start: 20, min: 34 }),
            (VnetHdr { csum_offset: 6, ..tso4(1448) }, VnetHdrError::CsumOffsetMismatch { kind: GsoKind::TcpV4, offset: 6 }),
            (VnetHdr { gso_type: gso::TCPV6, ..tso4(1448) }, VnetHdrError::GsoProtoMismatch { kind: GsoKind::TcpV6, ethertype: 0x0800 }),
            (VnetHdr { gso_size: GSO_BY_FRAGS, ..tso4(1448) }, VnetHdrError::GsoSizeByFrags),
            (VnetHdr { gso_type: gso::UDP_L4, flags: 0, ..tso4(1448) }, VnetHdrError::UdpL4WithoutCsum),
            (VnetHdr { gso_type: gso::UDP_L4, ..tso4(1448) }, VnetHdrError::CsumOffsetMismatch { kind: GsoKind::UdpL4, offset: 16 }),
            (
                VnetHdr { gso_type: gso::UDP_L4, csum_offset: 6, gso_size: 8, ..tso4(8) },
                VnetHdrError::TooManySegments { payload: len - 42, gso_size: 8 },
            ),
        ];
        for (h, e) in cases {
            assert_eq!(h.validate(&f), Err(*e), "{h:?}");
            assert!(!e.to_string().is_empty());
        }
        // GSO without NEEDS_CSUM: headers must at least be there.
        let short = tcp4_frame(0);
        let h = VnetHdr { flags: 0, hdr_len: 0, ..tso4(1448) };
        assert_eq!(h.validate(&short[..40]), Err(VnetHdrError::FrameTooShort { need: 54, frame_len: 40 }));
        assert_eq!(h.validate(&short[..10]), Err(VnetHdrError::FrameTooShort { need: 14, frame_len: 10 }));
    }

    #[test]
    fn no_header_value_panics_on_any_frame() {
        // Every header over a spread of frame lengths: a verdict, never a panic.
        let mut rng = fastrand::Rng::with_seed(13);
        let f = tcp4_frame(200);
        for _ in 0..200_000 {
            let mut b = [0u8; LEN];
            rng.fill(&mut b);
            b[0] &= 3;
            if rng.bool() {
                b[1] = [0, 1, 3, 4, 5, 0x81][rng.usize(..6)];
            }
            let h = VnetHdr::parse(&b).unwrap();
            let n = rng.usize(..=f.len());
            let _ = h.validate(&f[..n]);
        }
    }
}
