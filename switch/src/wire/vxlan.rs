//! VXLAN (RFC 7348) over IPv4: the 8-byte VXLAN header, and the 50 bytes of outer headers
//! (Ethernet, IPv4, UDP, VXLAN) a tunnel puts in front of an inner Ethernet frame.
//!
//! Contract:
//! - [`VxlanHeader`]: the flags byte (the I bit, 0x08, says the VNI is valid) and the 24-bit
//!   VNI. Reserved fields are written as zero and ignored on receipt (RFC 7348 §5).
//! - [`Tunnel::write_outer`] writes the outer headers into the first [`OVERHEAD`] bytes of a
//!   buffer whose rest is the inner frame: Ethernet to the next hop, IPv4 (no options, TTL 64,
//!   DF set, so that a path that cannot carry the frame answers with fragmentation-needed
//!   instead of fragmenting it; header checksum filled), UDP to the tunnel's port with
//!   checksum 0 (allowed over IPv4, RFC 7348 §5; the inner frame has its own checksums) and
//!   the VXLAN header. Lengths follow from the inner frame's.
//! - [`source_port`] is the outer UDP source port for an inner flow's hash: in 49152–65535
//!   (RFC 7348 §5), the same for every packet of a flow, so that a receiving NIC's RSS spreads
//!   tunnels over its queues without reordering a flow.
//! - [`inner`] reads a received tunnel packet, given the offset of its outer UDP payload (the
//!   caller has parsed and checked the outer headers and the UDP port): the VNI and the offset
//!   of the inner Ethernet frame, or a [`VxlanError`] for the caller to count and drop.
//!
//! These are plain functions over byte slices with no allocation; bounds are checked once per
//! call (a short buffer is an error, never a panic).
use std::net::Ipv4Addr;

use super::ethernet::{self, EthernetFrame, MacAddr};
use super::ipv4::{self, Ipv4Packet};
use super::udp::{self, UdpPacket};
use super::{ETHERTYPE_IPV4, IPPROTO_UDP};

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// Outer headers a VXLAN tunnel over IPv4 adds: Ethernet 14, IPv4 20, UDP 8, VXLAN 8.
pub const OVERHEAD: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + HEADER_LEN;
/// The UDP port flannel's VXLAN backend (and the Linux default) uses; IANA's is 4789.
pub const DEFAULT_PORT: u16 = 8472;
/// The I flag: the VNI field is valid.
pub const FLAG_VNI: u8 = 0x08;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

mod field {
    pub const FLAGS: usize = 0;
    /// VNI in bytes 4..7, byte 7 reserved.
    pub const VNI: usize = 4;
}

view! {
    /// A view of a VXLAN header (the buffer starts at it).
    VxlanHeader,
    unchecked: "Wraps a buffer without checks: only for buffers the caller sized.",
    checked: "Wraps an untrusted buffer: it must hold the 8-byte header.",
    check: check_len
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    /// The buffer holds the header.
    pub fn check_len(&self) -> Result<(), super::WireError> {
        super::check_min_len(self.buffer.as_ref(), HEADER_LEN)
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The 24-bit VNI (meaningful when the I flag is set).
    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[field::VNI], b[field::VNI + 1], b[field::VNI + 2]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanHeader<T> {
    /// Writes a whole header: the I flag, `vni` (its low 24 bits), reserved fields zero.
    pub fn write(&mut self, vni: u32) {
        let b = &mut self.buffer.as_mut()[..HEADER_LEN];
        let v = (vni & MAX_VNI).to_be_bytes();
        b.copy_from_slice(&[FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0]);
    }
}

/// Why a received tunnel packet is not a VXLAN frame this switch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VxlanError {
    /// Shorter than the VXLAN header plus an inner Ethernet header.
    #[error("VXLAN packet shorter than its header and an inner Ethernet header")]
    Truncated,
    /// The I flag is clear: no valid VNI.
    #[error("VXLAN header without a valid VNI (I flag clear)")]
    NoVni,
}

/// The VNI and the offset of the inner Ethernet frame of a tunnel packet whose outer UDP
/// payload starts at `udp_payload` in `frame`.
pub fn inner(frame: &[u8], udp_payload: usize) -> Result<(u32, usize), VxlanError> {
    let inner_at = udp_payload + HEADER_LEN;
    if frame.len() < inner_at + ethernet::HEADER_LEN {
        return Err(VxlanError::Truncated);
    }
    let h = VxlanHeader::new_unchecked(&frame[udp_payload..inner_at]);
    if h.flags() & FLAG_VNI == 0 {
        return Err(VxlanError::NoVni);
    }
    Ok((h.vni(), inner_at))
}

/// The outer UDP source port of an inner flow with this hash: 49152–65535.
pub fn source_port(flow_hash: u64) -> u16 {
    // The high bits: a hash's low bits often also pick the RSS queue or table slot.
    0xc000 | ((flow_hash >> 48) as u16 & 0x3fff)
}

/// One tunnel's outer headers, but for what varies per packet (lengths, source port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// This node's MAC on the underlay, and the next hop's (the remote node, or the gateway).
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    /// This node's underlay address, and the remote node's.
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
    pub vni: u32,
}

impl Tunnel {
    /// Writes the outer headers into `buf[..OVERHEAD]`; `buf[OVERHEAD..]` is the inner frame.
    /// `Err(Truncated)` when `buf` cannot hold them, or when the whole packet would be longer
    /// than an IPv4 packet can be.
    pub fn write_outer(&self, buf: &mut [u8], source_port: u16) -> Result<(), VxlanError> {
        if buf.len() < OVERHEAD {
            return Err(VxlanError::Truncated);
        }
        let ip_len = u16::try_from(buf.len() - ethernet::HEADER_LEN).map_err(|_| VxlanError::Truncated)?;
        let (eth_buf, rest) = buf.split_at_mut(ethernet::HEADER_LEN);
        let mut eth = EthernetFrame::new_unchecked(eth_buf);
        eth.set_dst_addr(self.dst_mac);
        eth.set_src_addr(self.src_mac);
        eth.set_ethertype(ETHERTYPE_IPV4);
        let (ip_buf, rest) = rest.split_at_mut(ipv4::MIN_HEADER_LEN);
        let mut ip = Ipv4Packet::new_unchecked(ip_buf);
        ip.set_version(4);
        ip.set_header_len(ipv4::MIN_HEADER_LEN as u8);
        ip.set_dscp_ecn(0);
        ip.set_total_len(ip_len);
        ip.set_ident(0);
        ip.set_flags_frag(0);
        ip.set_dont_frag(true);
        ip.set_ttl(64);
        ip.set_protocol(IPPROTO_UDP);
        ip.set_src_addr(self.src_ip);
        ip.set_dst_addr(self.dst_ip);
        ip.fill_checksum();
        let (udp_buf, rest) = rest.split_at_mut(udp::HEADER_LEN);
        let mut u = UdpPacket::new_unchecked(udp_buf);
        u.set_src_port(source_port);
        u.set_dst_port(self.dst_port);
        u.set_len(ip_len - ipv4::MIN_HEADER_LEN as u16);
        u.set_checksum(0);
        VxlanHeader::new_unchecked(rest).write(self.vni);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const TUNNEL: Tunnel = Tunnel {
        src_mac: MacAddr([0x02, 0, 0, 0, 0, 0x02]),
        dst_mac: MacAddr([0x02, 0, 0, 0, 0, 0x03]),
        src_ip: Ipv4Addr::new(172, 18, 0, 2),
        dst_ip: Ipv4Addr::new(172, 18, 0, 3),
        dst_port: DEFAULT_PORT,
        vni: 0x00ab_cdef,
    };

    fn inner_frame() -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([0x0a, 0x58, 10, 244, 0, 5], [0x0a, 0x58, 10, 244, 1, 7])
            .ipv4([10, 244, 0, 5], [10, 244, 1, 7], 63)
            .udp(5000, 80)
            .write(&mut v, b"hello")
            .unwrap();
        v
    }

    fn encapsulated(inner: &[u8], sport: u16) -> Vec<u8> {
        let mut buf = vec![0u8; OVERHEAD];
        buf.extend_from_slice(inner);
        TUNNEL.write_outer(&mut buf, sport).unwrap();
        buf
    }

    #[test]
    fn outer_headers_parse_as_ethernet_ipv4_udp_vxlan_around_the_inner_frame() {
        let inner = inner_frame();
        let buf = encapsulated(&inner, 50000);
        assert_eq!(OVERHEAD, 50);
        let p = SlicedPacket::from_ethernet(&buf).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else { panic!() };
        assert_eq!((eth.source(), eth.destination()), (TUNNEL.src_mac.0, TUNNEL.dst_mac.0));
        let Some(NetSlice::Ipv4(ip)) = p.net else { panic!() };
        let h = ip.header();
        assert_eq!((h.source(), h.destination(), h.ttl(), h.dont_fragment()), ([172, 18, 0, 2], [172, 18, 0, 3], 64, true));
        assert_eq!(usize::from(h.total_len()), buf.len() - 14);
        assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
        let Some(TransportSlice::Udp(u)) = p.transport else { panic!() };
        assert_eq!((u.source_port(), u.destination_port(), u.checksum()), (50000, 8472, 0));
        assert_eq!(usize::from(u.length()), 8 + 8 + inner.len());
        let payload = u.payload();
        assert_eq!(&payload[..8], &[0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        assert_eq!(&payload[8..], &inner[..]);
    }

    #[test]
    fn inner_frame_and_vni_come_back() {
        let inner = inner_frame();
        let buf = encapsulated(&inner, 50000);
        let (vni, at) = super::inner(&buf, 42).unwrap();
        assert_eq!((vni, at), (0x00ab_cdef, OVERHEAD));
        assert_eq!(&buf[at..], &inner[..]);
    }

    #[test]
    fn bad_tunnel_packets_are_errors_not_panics() {
        let buf = encapsulated(&inner_frame(), 50000);
        assert_eq!(super::inner(&buf[..OVERHEAD + 13], 42), Err(VxlanError::Truncated));
        assert_eq!(super::inner(&buf[..10], 42), Err(VxlanError::Truncated));
        let mut no_vni = buf.clone();
        no_vni[42] = 0;
        assert_eq!(super::inner(&no_vni, 42), Err(VxlanError::NoVni));
        // Reserved bits are ignored on receipt.
        let mut reserved = buf;
        reserved[42] = 0xff;
        reserved[49] = 0xff;
        assert_eq!(super::inner(&reserved, 42).map(|(v, _)| v), Ok(0x00ab_cdef));
        let mut short = vec![0u8; OVERHEAD - 1];
        assert_eq!(TUNNEL.write_outer(&mut short, 1), Err(VxlanError::Truncated));
        let mut huge = vec![0u8; 14 + 65_536]; // an IPv4 packet of 65,536 bytes
        assert_eq!(TUNNEL.write_outer(&mut huge, 1), Err(VxlanError::Truncated));
    }

    #[test]
    fn source_ports_stay_in_the_dynamic_range_and_follow_the_hash() {
        let mut seen = std::collections::BTreeSet::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..10_000 {
            let h = rng.u64(..);
            let p = source_port(h);
            assert!(p >= 49152, "{p}");
            assert_eq!(p, source_port(h));
            seen.insert(p);
        }
        assert!(seen.len() > 5_000, "{} distinct ports", seen.len());
    }
}
