//! Software GSO: cutting a TCP (IPv4 or IPv6) or UDP_L4 super-frame into the frames a
//! non-GSO egress can send, into buffers the caller provides.
//!
//! API (allocation-free): [`Segmenter::new`] parses and checks the super-frame once and says
//! how many segments it makes ([`Segmenter::count`]) and how long each is
//! ([`Segmenter::segment_len`]); the caller then takes one buffer per segment from its own
//! pool (a UMEM frame, a ring slot) and calls [`Segmenter::write`]`(i, buf)`, which writes
//! segment `i` and returns its length. Segments can be written in any order, or again; the
//! super-frame is only read. Nothing allocates, nothing panics: every malformed input is a
//! [`SegmentError`].
//!
//! What each segment is, mirroring the kernel (Linux 6.18: `inet_gso_segment` in
//! net/ipv4/af_inet.c, `tcp_gso_segment` in net/ipv4/tcp_offload.c, `__udp_gso_segment` in
//! net/ipv4/udp_offload.c, `ipv6_gso_segment` in net/ipv6/ip6_offload.c):
//! - the super-frame's Ethernet, IP and L4 headers (TCP options such as timestamps included)
//!   followed by at most `gso_size` payload bytes, in order; only the last may be shorter;
//! - IPv4: total length of the segment; identification `id + i` (wrapping), since a virtio
//!   header cannot ask for the fixed-id mode (`SKB_GSO_TCP_FIXEDID` comes only from the
//!   kernel's own GRO); header checksum recomputed. IPv6: payload length of the segment;
//! - TCP: sequence number advanced by the payload before it; FIN and PSH only on the last
//!   segment; CWR only on the first (the kernel keeps it on all only for AccECN, which a
//!   virtio header cannot ask for; the `ECN` bit of the header just says CWR is set); the
//!   rest of the header (ACK, window, urgent pointer, options) copied as it is;
//! - UDP_L4: each segment its own datagram with its own length;
//! - the L4 checksum computed in full for each segment (pseudo-header with the segment's
//!   length, header, payload). The kernel derives it from the super-frame's partial value
//!   instead; both agree when that value is right (the sender's pseudo-header sum), and this
//!   way a wrong one cannot reach the wire. A UDP checksum of 0 is sent as 0xffff.
//!
//! A super-frame whose payload fits in one segment gives one segment (the kernel refuses to
//! segment it and sends it as it is; here it comes out with its checksums completed, which is
//! what sending it to a non-GSO egress needs). Ethernet padding behind the IP packet is
//! dropped. Limits: untagged Ethernet; IPv6 without extension headers; no UFO (IP
//! fragmentation: [`SegmentError::UfoUnsupported`]).

use crate::wire::checksum::{data, fold, internet_checksum, pseudo_header_v4};
use crate::wire::ethernet::HEADER_LEN as ETH_HLEN;
use crate::wire::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_TCP, IPPROTO_UDP};

use super::checksum::pseudo_header_v6;
use super::vnet_hdr::{Gso, GsoKind};

/// TCP flag bits the segmenter changes.
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const CWR: u8 = 0x80;

/// Why a super-frame cannot be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("GSO with gso_size 0")]
    ZeroGsoSize,
    #[error("UFO (IP fragmentation of one UDP datagram) is not supported")]
    UfoUnsupported,
    #[error("frame of {len} bytes shorter than the {need} its headers need")]
    Truncated { need: usize, len: usize },
    #[error("GSO type {kind:?} on a frame with ethertype {ethertype:#06x}")]
    GsoProtoMismatch { kind: GsoKind, ethertype: u16 },
    #[error("bad IP header (version, header length or total length)")]
    BadIpHeader,
    #[error("the IPv4 packet is a fragment")]
    Fragment,
    #[error("GSO type {kind:?} on IP protocol {protocol} (or an IPv6 extension header)")]
    L4Mismatch { kind: GsoKind, protocol: u8 },
    #[error("TCP data offset {data_offset} below 5 or beyond the packet")]
    BadTcpHeader { data_offset: u8 },
    #[error("segment {index} of {count}")]
    NoSuchSegment { index: usize, count: usize },
    #[error("segment needs {need} bytes, the buffer has {have}")]
    BufferTooSmall { need: usize, have: usize },
}

/// A checked super-frame, ready to be written out segment by segment (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Segmenter<'a> {
    /// The super-frame up to the end of its IP packet.
    frame: &'a [u8],
    tcp: bool,
    ipv6: bool,
    /// Start of the L4 header.
    l4: usize,
    /// End of the L4 header: where the payload starts.
    hdr_end: usize,
    mss: usize,
    count: usize,
    /// Pseudo-header sum without the length (addresses and protocol).
    pseudo_base: u16,
}

impl<'a> Segmenter<'a> {
    /// Parses and checks `frame` (starting with its Ethernet header) against `gso`.
    pub fn new(frame: &'a [u8], gso: Gso) -> Result<Segmenter<'a>, SegmentError> {
        let kind = gso.kind;
        let tcp = match kind {
            GsoKind::Ufo => return Err(SegmentError::UfoUnsupported),
            GsoKind::TcpV4 | GsoKind::TcpV6 => true,
            GsoKind::UdpL4 => false,
        };
        if gso.size == 0 {
            return Err(SegmentError::ZeroGsoSize);
        }
        let len = frame.len();
        if len < ETH_HLEN {
            return Err(SegmentError::Truncated { need: ETH_HLEN, len });
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let ipv6 = match (ethertype, kind) {
            (ETHERTYPE_IPV4, GsoKind::TcpV4 | GsoKind::UdpL4) => false,
            (ETHERTYPE_IPV6, GsoKind::TcpV6 | GsoKind::UdpL4) => true,
            _ => return Err(SegmentError::GsoProtoMismatch { kind, ethertype }),
        };
        let l3 = ETH_HLEN;
        let (l4, end, protocol, pseudo_base) = if ipv6 {
            let need = l3 + 40;
            if len < need {
                return Err(SegmentError::Truncated { need, len });
            }
            if frame[l3] >> 4 != 6 {
                return Err(SegmentError::BadIpHeader);
            }
            let end = need + usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
            if end > len {
                return Err(SegmentError::Truncated { need: end, len });
            }
            let nh = frame[l3 + 6];
            let addr = |at: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&frame[at..at + 16]);
                std::net::Ipv6Addr::from(a)
            };
            (need, end, nh, pseudo_header_v6(addr(l3 + 8), addr(l3 + 24), nh, 0))
        } else {
            let need = l3 + 20;
            if len < need {
                return Err(SegmentError::Truncated { need, len });
            }
            let ihl = usize::from(frame[l3] & 0x0f) * 4;
            if frame[l3] >> 4 != 4 || ihl < 20 {
                return Err(SegmentError::BadIpHeader);
            }
            let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
            if total < ihl {
                return Err(SegmentError::BadIpHeader);
            }
            let end = l3 + total;
            if end > len {
                return Err(SegmentError::Truncated { need: end, len });
            }
            if u16::from_be_bytes([frame[l3 + 6], frame[l3 + 7]]) & 0x3fff != 0 {
                return Err(SegmentError::Fragment);
            }
            let p = frame[l3 + 9];
            let addr = |at: usize| std::net::Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
            (l3 + ihl, end, p, pseudo_header_v4(addr(l3 + 12), addr(l3 + 16), p, 0))
        };
        let want = if tcp { IPPROTO_TCP } else { IPPROTO_UDP };
        if protocol != want {
            return Err(SegmentError::L4Mismatch { kind, protocol });
        }
        let hdr_end = if tcp {
            if l4 + 20 > end {
                return Err(SegmentError::Truncated { need: l4 + 20, len: end });
            }
            let data_offset = frame[l4 + 12] >> 4;
            let thlen = usize::from(data_offset) * 4;
            if thlen < 20 || l4 + thlen > end {
                return Err(SegmentError::BadTcpHeader { data_offset });
            }
            l4 + thlen
        } else {
            if l4 + 8 > end {
                return Err(SegmentError::Truncated { need: l4 + 8, len: end });
            }
            l4 + 8
        };
        let mss = usize::from(gso.size);
        let payload = end - hdr_end;
        let count = payload.div_ceil(mss).max(1);
        Ok(Segmenter { frame: &frame[..end], tcp, ipv6, l4, hdr_end, mss, count, pseudo_base })
    }

    /// How many segments the super-frame makes (at least 1).
    #[inline]
    pub fn count(&self) -> usize {
        self.count
    }

    /// Length of the headers every segment starts with (Ethernet to the end of TCP/UDP).
    #[inline]
    pub fn header_len(&self) -> usize {
        self.hdr_end
    }

    /// Payload bytes of segment `i` (0 for an index beyond the last).
    #[inline]
    pub fn payload_len(&self, i: usize) -> usize {
        let payload = self.frame.len() - self.hdr_end;
        payload.saturating_sub(i.saturating_mul(self.mss)).min(self.mss)
    }

    /// Frame length of segment `i`: what its buffer must hold.
    #[inline]
    pub fn segment_len(&self, i: usize) -> usize {
        self.hdr_end + self.payload_len(i)
    }

    /// The IP packet length (IPv4 total length, IPv6 header plus payload) of the longest
    /// segment: what must fit the egress MTU.
    #[inline]
    pub fn max_segment_l3_len(&self) -> usize {
        self.segment_len(0) - ETH_HLEN
    }

    /// Writes segment `i` (`0..count()`) into the start of `out`; returns its length.
    pub fn write(&self, i: usize, out: &mut [u8]) -> Result<usize, SegmentError> {
        if i >= self.count {
            return Err(SegmentError::NoSuchSegment { index: i, count: self.count });
        }
        let n = self.segment_len(i);
        let Some(out) = out.get_mut(..n) else {
            return Err(SegmentError::BufferTooSmall { need: n, have: out.len() });
        };
        let (h, l3, l4) = (self.hdr_end, ETH_HLEN, self.l4);
        let from = h + i * self.mss;
        out[..h].copy_from_slice(&self.frame[..h]);
        out[h..].copy_from_slice(&self.frame[from..from + (n - h)]);
        if self.ipv6 {
            put16(out, l3 + 4, (n - l3 - 40) as u16);
        } else {
            put16(out, l3 + 2, (n - l3) as u16);
            let id = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]).wrapping_add(i as u16);
            put16(out, l3 + 4, id);
            put16(out, l3 + 10, 0);
            let c = internet_checksum(&out[l3..l4]);
            put16(out, l3 + 10, c);
        }
        let l4_len = n - l4;
        let csum_at = if self.tcp {
            let seq = u32::from_be_bytes([out[l4 + 4], out[l4 + 5], out[l4 + 6], out[l4 + 7]]);
            out[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add((i * self.mss) as u32).to_be_bytes());
            if i + 1 < self.count {
                out[l4 + 13] &= !(FIN | PSH);
            }
            if i > 0 {
                out[l4 + 13] &= !CWR;
            }
            l4 + 16
        } else {
            put16(out, l4 + 4, l4_len as u16);
            l4 + 6
        };
        put16(out, csum_at, 0);
        let sum = fold(u64::from(self.pseudo_base) + l4_len as u64 + u64::from(data(&out[l4..])));
        let c = match (!sum, self.tcp) {
            (0, false) => 0xffff,
            (c, _) => c,
        };
        put16(out, csum_at, c);
        Ok(n)
    }
}

#[inline]
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};

    use super::*;
    use crate::offload::checksum::complete_partial;

    const SEQ: u32 = 0xffff_f000; // wraps within a few segments
    const ID: u16 = 0xfffd; // wraps too

    #[derive(Clone, Copy)]
    struct Flags {
        fin: bool,
        psh: bool,
        cwr: bool,
    }

    const ACK_ONLY: Flags = Flags { fin: false, psh: false, cwr: false };

    fn payload(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n).map(|_| rng.u8(..)).collect()
    }

    /// A TCP super-frame as a pod's kernel hands it over: timestamps option, partial
    /// checksum (pseudo-header sum over the whole length), DF, IPv4 id [`ID`].
    fn tcp_super(ipv6: bool, n: usize, f: Flags) -> Vec<u8> {
        let body = payload(n, n as u64);
        let b = PacketBuilder::ethernet2([2; 6], [4; 6]);
        let b = if ipv6 {
            b.ipv6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, 3).octets(), Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 2, 9).octets(), 64)
        } else {
            b.ipv4([10, 244, 0, 3], [10, 244, 1, 9], 64)
        };
        let mut t = b.tcp(40000, 5201, SEQ, 502).ack(0x0102_0304);
        if f.fin {
            t = t.fin();
        }
        if f.psh {
            t = t.psh();
        }
        if f.cwr {
            t = t.cwr();
        }
        let t = t.options(&[TcpOptionElement::Noop, TcpOptionElement::Noop, TcpOptionElement::Timestamp(7, 9)]).unwrap();
        let mut v = Vec::new();
        t.write(&mut v, &body).unwrap();
        if !ipv6 {
            v[18..20].copy_from_slice(&ID.to_be_bytes());
            v[20] = 0x40; // DF
            fix_ipv4_header_checksum(&mut v);
        }
        let l4 = if ipv6 { 54 } else { 34 };
        make_partial(&mut v, ipv6, l4, l4 + 16);
        v
    }

    fn udp_super(ipv6: bool, n: usize) -> Vec<u8> {
        let body = payload(n, 77 + n as u64);
        let b = PacketBuilder::ethernet2([2; 6], [4; 6]);
        let b = if ipv6 {
            b.ipv6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, 3).octets(), Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 2, 9).octets(), 64)
        } else {
            b.ipv4([10, 244, 0, 3], [10, 244, 1, 9], 64)
        };
        let mut v = Vec::new();
        b.udp(5000, 53).write(&mut v, &body).unwrap();
        if !ipv6 {
            v[18..20].copy_from_slice(&ID.to_be_bytes());
            fix_ipv4_header_checksum(&mut v);
        }
        let l4 = if ipv6 { 54 } else { 34 };
        make_partial(&mut v, ipv6, l4, l4 + 6);
        v
    }

    fn fix_ipv4_header_checksum(v: &mut [u8]) {
        put16(v, 24, 0);
        let c = internet_checksum(&v[14..34]);
        put16(v, 24, c);
    }

    /// The pseudo-header sum a sender with checksum offload leaves in the field.
    fn make_partial(v: &mut [u8], ipv6: bool, l4: usize, at: usize) {
        let len = (v.len() - l4) as u32;
        let ph = if ipv6 {
            let a = |o: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&v[o..o + 16]).unwrap());
            pseudo_header_v6(a(22), a(38), v[20], len)
        } else {
            let a = |o: usize| Ipv4Addr::from(<[u8; 4]>::try_from(&v[o..o + 4]).unwrap());
            pseudo_header_v4(a(26), a(30), v[23], len)
        };
        put16(v, at, ph);
    }

    fn gso(kind: GsoKind, size: u16) -> Gso {
        Gso { kind, size, ecn: false }
    }

    /// Segments `frame`, checks every segment against etherparse and the rules of the module
    /// doc, and returns the reassembled payload.
    fn segment_and_check(frame: &[u8], g: Gso, flags: Flags) -> Vec<u8> {
        let s = Segmenter::new(frame, g).unwrap();
        let orig = SlicedPacket::from_ethernet(frame).unwrap();
        let mss = usize::from(g.size);
        let total_payload = match orig.transport.as_ref().unwrap() {
            TransportSlice::Tcp(t) => t.payload().len(),
            TransportSlice::Udp(u) => u.payload().len(),
            _ => unreachable!(),
        };
        assert_eq!(s.count(), total_payload.div_ceil(mss).max(1));
        let mut buf = vec![0u8; 70_000];
        let mut joined = Vec::new();
        for i in 0..s.count() {
            buf[..s.segment_len(i) + 64].fill(0xa5);
            let n = s.write(i, &mut buf).unwrap();
            assert_eq!(n, s.segment_len(i));
            let seg = &buf[..n];
            let p = SlicedPacket::from_ethernet(seg).unwrap();
            let last = i + 1 == s.count();
            let (src4, dst4, src6, dst6) = match p.net.as_ref().unwrap() {
                NetSlice::Ipv4(ip) => {
                    let h = ip.header();
                    assert_eq!(usize::from(h.total_len()), n - 14);
                    assert_eq!(h.identification(), ID.wrapping_add(i as u16), "fresh id per segment");
                    assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
                    (Some(h.source()), Some(h.destination()), None, None)
                }
                NetSlice::Ipv6(ip) => {
                    let h = ip.header();
                    assert_eq!(usize::from(h.payload_length()), n - 54);
                    (None, None, Some(h.source()), Some(h.destination()))
                }
            };
            match p.transport.unwrap() {
                TransportSlice::Tcp(t) => {
                    let TransportSlice::Tcp(ot) = orig.transport.as_ref().unwrap() else { unreachable!() };
                    assert!(t.payload().len() <= mss && !t.payload().is_empty() || total_payload == 0);
                    assert_eq!(t.sequence_number(), SEQ.wrapping_add((i * mss) as u32));
                    assert_eq!(t.acknowledgment_number(), ot.acknowledgment_number());
                    assert_eq!(t.options(), ot.options(), "options copied into each segment");
                    assert!(t.ack());
                    assert_eq!(t.fin(), flags.fin && last, "FIN only on the last");
                    assert_eq!(t.psh(), flags.psh && last, "PSH only on the last");
                    assert_eq!(t.cwr(), flags.cwr && i == 0, "CWR only on the first");
                    let want = match (src4, dst4, src6, dst6) {
                        (Some(s), Some(d), _, _) => t.calc_checksum_ipv4(s, d).unwrap(),
                        (_, _, Some(s), Some(d)) => t.calc_checksum_ipv6(s, d).unwrap(),
                        _ => unreachable!(),
                    };
                    assert_eq!(t.checksum(), want, "TCP checksum of segment {i}");
                    joined.extend_from_slice(t.payload());
                }
                TransportSlice::Udp(u) => {
                    assert!(u.payload().len() <= mss);
                    assert_eq!(usize::from(u.length()), n - s.l4);
                    let h = u.to_header();
                    let want = match (src4, dst4, src6, dst6) {
                        (Some(s), Some(d), _, _) => h.calc_checksum_ipv4_raw(s, d, u.payload()).unwrap(),
                        (_, _, Some(s), Some(d)) => h.calc_checksum_ipv6_raw(s, d, u.payload()).unwrap(),
                        _ => unreachable!(),
                    };
                    assert_eq!(u.checksum(), want, "UDP checksum of segment {i}");
                    joined.extend_from_slice(u.payload());
                }
                _ => panic!("not TCP/UDP"),
            }
            assert!(buf[n..].iter().take(64).all(|&b| b == 0xa5), "nothing written past the segment");
        }
        joined
    }

    fn original_payload(frame: &[u8]) -> Vec<u8> {
        match SlicedPacket::from_ethernet(frame).unwrap().transport.unwrap() {
            TransportSlice::Tcp(t) => t.payload().to_vec(),
            TransportSlice::Udp(u) => u.payload().to_vec(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn tcp_sizes_exact_remainder_one_byte_and_single() {
        let mss = 1448usize;
        for ipv6 in [false, true] {
            let kind = if ipv6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
            for n in [3 * mss, 3 * mss + 700, 5 * mss + 1, mss + 1, mss, 100, 1, 0, 65_000 - 100] {
                let f = tcp_super(ipv6, n, ACK_ONLY);
                let joined = segment_and_check(&f, gso(kind, mss as u16), ACK_ONLY);
                assert_eq!(joined, original_payload(&f), "ipv6 {ipv6} payload {n}");
            }
        }
    }

    #[test]
    fn tcp_fin_psh_on_the_last_cwr_on_the_first() {
        let all = Flags { fin: true, psh: true, cwr: true };
        for ipv6 in [false, true] {
            let kind = if ipv6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
            for n in [4000, 1448 * 2, 1000] {
                let f = tcp_super(ipv6, n, all);
                let g = Gso { kind, size: 1448, ecn: true };
                assert_eq!(segment_and_check(&f, g, all), original_payload(&f));
            }
        }
    }

    #[test]
    fn udp_l4_segments_are_datagrams() {
        for ipv6 in [false, true] {
            for n in [1472 * 3, 1472 * 3 + 5, 1, 0, 60_000] {
                let f = udp_super(ipv6, n);
                let g = gso(GsoKind::UdpL4, 1472);
                assert_eq!(segment_and_check(&f, g, ACK_ONLY), original_payload(&f));
            }
        }
    }

    #[test]
    fn randomized_sizes_and_mss() {
        let mut rng = fastrand::Rng::with_seed(0x6e50);
        for round in 0..60 {
            let ipv6 = rng.bool();
            let tcp = rng.bool();
            let n = rng.usize(..64_000);
            let mss = rng.u16(1..=9000).max(if n > 9000 { 64 } else { 1 }); // bounded work
            let (f, kind) = if tcp {
                (tcp_super(ipv6, n, ACK_ONLY), if ipv6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 })
            } else {
                (udp_super(ipv6, n), GsoKind::UdpL4)
            };
            let joined = segment_and_check(&f, gso(kind, mss), ACK_ONLY);
            assert_eq!(joined, original_payload(&f), "round {round}: ipv6 {ipv6} tcp {tcp} n {n} mss {mss}");
        }
    }

    #[test]
    fn one_segment_equals_completing_the_partial_checksum() {
        let f = tcp_super(false, 500, ACK_ONLY);
        let s = Segmenter::new(&f, gso(GsoKind::TcpV4, 1448)).unwrap();
        assert_eq!(s.count(), 1);
        let mut out = vec![0u8; f.len()];
        assert_eq!(s.write(0, &mut out), Ok(f.len()));
        let mut completed = f.clone();
        complete_partial(&mut completed, 34, 16).unwrap();
        assert_eq!(out, completed);
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut f = tcp_super(false, 3000, ACK_ONLY);
        let want = original_payload(&f);
        f.extend_from_slice(&[0u8; 6]);
        let s = Segmenter::new(&f, gso(GsoKind::TcpV4, 1448)).unwrap();
        let mut joined = Vec::new();
        let mut buf = [0u8; 2000];
        for i in 0..s.count() {
            let n = s.write(i, &mut buf).unwrap();
            joined.extend_from_slice(&buf[s.header_len()..n]);
        }
        assert_eq!(joined, want);
        assert_eq!(s.max_segment_l3_len(), 20 + 32 + 1448);
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        let f = tcp_super(false, 3000, ACK_ONLY);
        let g = gso(GsoKind::TcpV4, 1448);
        assert_eq!(Segmenter::new(&f, gso(GsoKind::TcpV4, 0)).unwrap_err(), SegmentError::ZeroGsoSize);
        assert_eq!(Segmenter::new(&f, gso(GsoKind::Ufo, 1448)).unwrap_err(), SegmentError::UfoUnsupported);
        assert_eq!(Segmenter::new(&f[..10], g).unwrap_err(), SegmentError::Truncated { need: 14, len: 10 });
        assert_eq!(Segmenter::new(&f[..30], g).unwrap_err(), SegmentError::Truncated { need: 34, len: 30 });
        // Header (IPv4 total length) longer than the frame.
        assert_eq!(Segmenter::new(&f[..1000], g).unwrap_err(), SegmentError::Truncated { need: f.len(), len: 1000 });
        assert_eq!(
            Segmenter::new(&f, gso(GsoKind::TcpV6, 1448)).unwrap_err(),
            SegmentError::GsoProtoMismatch { kind: GsoKind::TcpV6, ethertype: 0x0800 }
        );
        // UDP with a TCP GSO type, TCP with UDP_L4.
        let u = udp_super(false, 3000);
        assert_eq!(Segmenter::new(&u, g).unwrap_err(), SegmentError::L4Mismatch { kind: GsoKind::TcpV4, protocol: 17 });
        assert_eq!(
            Segmenter::new(&f, gso(GsoKind::UdpL4, 1448)).unwrap_err(),
            SegmentError::L4Mismatch { kind: GsoKind::UdpL4, protocol: 6 }
        );
        let mut bad = f.clone();
        bad[34 + 12] = 0x40; // data offset 4
        assert_eq!(Segmenter::new(&bad, g).unwrap_err(), SegmentError::BadTcpHeader { data_offset: 4 });
        bad[34 + 12] = 0xf0; // 60 bytes: fine in a 3,000-byte packet
        assert!(Segmenter::new(&bad, g).is_ok());
        let tiny = tcp_super(false, 0, ACK_ONLY);
        let mut bad = tiny.clone();
        bad[34 + 12] = 0xf0; // 60 bytes in a 32-byte TCP packet
        assert_eq!(Segmenter::new(&bad, g).unwrap_err(), SegmentError::BadTcpHeader { data_offset: 15 });
        let mut bad = f.clone();
        bad[14] = 0x44;
        assert_eq!(Segmenter::new(&bad, g).unwrap_err(), SegmentError::BadIpHeader);
        let mut bad = f.clone();
        bad[20] |= 0x20; // MF
        assert_eq!(Segmenter::new(&bad, g).unwrap_err(), SegmentError::Fragment);
        let s = Segmenter::new(&f, g).unwrap();
        assert_eq!(s.write(3, &mut [0u8; 2000]), Err(SegmentError::NoSuchSegment { index: 3, count: 3 }));
        assert_eq!(s.write(0, &mut [0u8; 100]), Err(SegmentError::BufferTooSmall { need: 66 + 1448, have: 100 }));
        for e in [SegmentError::ZeroGsoSize, SegmentError::Fragment, SegmentError::NoSuchSegment { index: 1, count: 1 }] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0xbad);
        let base = tcp_super(false, 400, ACK_ONLY);
        let base6 = udp_super(true, 400);
        let mut out = [0u8; 600];
        for _ in 0..20_000 {
            let mut f = if rng.bool() { base.clone() } else { base6.clone() };
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(..70.min(f.len()));
                f[at] = rng.u8(..);
            }
            f.truncate(rng.usize(..=f.len()));
            let kind = [GsoKind::TcpV4, GsoKind::TcpV6, GsoKind::UdpL4, GsoKind::Ufo][rng.usize(..4)];
            if let Ok(s) = Segmenter::new(&f, gso(kind, rng.u16(..300))) {
                for i in 0..s.count() {
                    let _ = s.write(i, &mut out);
                }
            }
        }
    }
}
