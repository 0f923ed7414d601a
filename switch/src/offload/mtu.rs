//! Whether a frame, GSO super-frame or not, goes to an egress as it is, cut into segments,
//! or not at all.
//!
//! Contract: [`fit`] is a pure decision over the frame's shape ([`FrameShape`]), the egress
//! MTU (an IP MTU: the largest IP packet, Ethernet header not counted) and the GSO types the
//! egress takes ([`EgressOffloads`]). It mirrors the kernel's forwarding path (Linux 6.18):
//! - `ip_exceeds_mtu`/`ip6_pkt_too_big` (net/ipv4/ip_forward.c, net/ipv6/ip6_output.c): a
//!   GSO super-frame fits when each of its segments does (`skb_gso_validate_network_len`),
//!   any other frame when its IP length does;
//! - `netif_needs_gso`/`net_gso_ok` (include/linux/netdevice.h): a super-frame that fits is
//!   passed whole only to an egress that takes its GSO type, with the ECN bit only to one
//!   that takes TCP ECN too (`NETIF_F_TSO_ECN`); otherwise it is segmented in software
//!   ([`super::segment`]);
//! - too big with DF set, or IPv6: [`Fit::FragNeeded`], the caller drops the frame and
//!   answers ICMP "fragmentation needed" (IPv4) or "packet too big" (IPv6) with the MTU;
//!   too big without DF: the kernel would fragment; the switch does not, so
//!   [`Fit::NeedsFragmentation`] (dropped and counted by the caller).

use super::vnet_hdr::{Gso, GsoKind};

/// The GSO types an egress takes whole (what its virtio-net header or device offers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EgressOffloads {
    /// TCP over IPv4 super-frames (`NETIF_F_TSO`, tap `TUN_F_TSO4`).
    pub tcpv4: bool,
    /// TCP over IPv6 super-frames (`NETIF_F_TSO6`, tap `TUN_F_TSO6`).
    pub tcpv6: bool,
    /// TCP super-frames with the ECN bit (`NETIF_F_TSO_ECN`, tap `TUN_F_TSO_ECN`).
    pub tcp_ecn: bool,
    /// UDP_L4 super-frames (`NETIF_F_GSO_UDP_L4`, tap `TUN_F_USO4|TUN_F_USO6`).
    pub udp_l4: bool,
    /// UFO super-frames (tap `TUN_F_UFO`).
    pub ufo: bool,
}

impl EgressOffloads {
    /// An egress that takes no super-frame (an AF_XDP NIC queue, an uplink, a tunnel).
    pub const NONE: EgressOffloads = EgressOffloads { tcpv4: false, tcpv6: false, tcp_ecn: false, udp_l4: false, ufo: false };
    /// An egress that takes every GSO type (another pod's port with a virtio-net header).
    pub const ALL: EgressOffloads = EgressOffloads { tcpv4: true, tcpv6: true, tcp_ecn: true, udp_l4: true, ufo: true };

    /// Whether a super-frame asking for `gso` can be handed over whole.
    pub fn takes(&self, gso: Gso) -> bool {
        let kind = match gso.kind {
            GsoKind::TcpV4 => self.tcpv4,
            GsoKind::TcpV6 => self.tcpv6,
            GsoKind::UdpL4 => self.udp_l4,
            GsoKind::Ufo => self.ufo,
        };
        kind && (!gso.ecn || self.tcp_ecn)
    }
}

/// What [`fit`] needs to know of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameShape {
    /// IP packet length of the frame as it is (a super-frame's whole length).
    pub l3_len: usize,
    /// For a GSO super-frame: its request and the IP length of its longest segment
    /// ([`super::Segmenter::max_segment_l3_len`]).
    pub gso: Option<(Gso, usize)>,
    /// IPv6 (never fragmented on the way).
    pub ipv6: bool,
    /// IPv4 "don't fragment" (ignored for IPv6).
    pub df: bool,
}

/// The verdict of [`fit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Send the frame as it is (a super-frame whole, with its virtio-net header).
    Pass,
    /// Cut the super-frame into segments ([`super::Segmenter`]); each fits the MTU.
    Segment,
    /// Too big and must not be fragmented: drop, answer ICMP with this MTU.
    FragNeeded { mtu: u16 },
    /// Too big, IPv4 without DF: needs IP fragmentation, which the switch does not do.
    NeedsFragmentation,
}

/// Decides how a frame of `shape` goes to an egress with IP MTU `mtu` taking `offloads`.
pub fn fit(shape: &FrameShape, mtu: u16, offloads: EgressOffloads) -> Fit {
    let limit = usize::from(mtu);
    let (fits, gso) = match shape.gso {
        Some((gso, seg_l3_len)) => (seg_l3_len <= limit, Some(gso)),
        None => (shape.l3_len <= limit, None),
    };
    if !fits {
        return if shape.ipv6 || shape.df { Fit::FragNeeded { mtu } } else { Fit::NeedsFragmentation };
    }
    match gso {
        Some(g) if !offloads.takes(g) => Fit::Segment,
        _ => Fit::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tso(kind: GsoKind, ecn: bool) -> Gso {
        Gso { kind, size: 1448, ecn }
    }

    /// A 64 KB TCP/IPv4 super-frame whose segments are 1,500-byte IP packets.
    fn super_v4(ecn: bool, df: bool) -> FrameShape {
        FrameShape { l3_len: 65_000, gso: Some((tso(GsoKind::TcpV4, ecn), 1500)), ipv6: false, df }
    }

    #[test]
    fn super_frame_passes_to_a_gso_egress_and_is_segmented_for_others() {
        let s = super_v4(false, true);
        assert_eq!(fit(&s, 1500, EgressOffloads::ALL), Fit::Pass);
        assert_eq!(fit(&s, 1500, EgressOffloads::NONE), Fit::Segment);
        let v6_only = EgressOffloads { tcpv6: true, ..EgressOffloads::NONE };
        assert_eq!(fit(&s, 1500, v6_only), Fit::Segment, "TSO6 is not TSO4");
        let v4 = EgressOffloads { tcpv4: true, ..EgressOffloads::NONE };
        assert_eq!(fit(&s, 1500, v4), Fit::Pass);
        // The whole super-frame is far above the MTU; only its segments count.
        assert_eq!(fit(&s, 9000, EgressOffloads::NONE), Fit::Segment);
    }

    #[test]
    fn ecn_needs_tso_ecn() {
        let s = super_v4(true, true);
        let v4 = EgressOffloads { tcpv4: true, ..EgressOffloads::NONE };
        assert_eq!(fit(&s, 1500, v4), Fit::Segment);
        assert_eq!(fit(&s, 1500, EgressOffloads { tcp_ecn: true, ..v4 }), Fit::Pass);
    }

    #[test]
    fn segments_above_the_mtu_are_too_big() {
        // 1,500-byte segments towards a 1,400-byte MTU (a tunnel): DF -> ICMP with 1400.
        let s = super_v4(false, true);
        assert_eq!(fit(&s, 1400, EgressOffloads::ALL), Fit::FragNeeded { mtu: 1400 });
        assert_eq!(fit(&s, 1400, EgressOffloads::NONE), Fit::FragNeeded { mtu: 1400 });
        assert_eq!(fit(&super_v4(false, false), 1400, EgressOffloads::NONE), Fit::NeedsFragmentation);
        let v6 = FrameShape { l3_len: 65_000, gso: Some((tso(GsoKind::TcpV6, false), 1500)), ipv6: true, df: false };
        assert_eq!(fit(&v6, 1400, EgressOffloads::NONE), Fit::FragNeeded { mtu: 1400 }, "IPv6 is never fragmented on the way");
        assert_eq!(fit(&v6, 1500, EgressOffloads::NONE), Fit::Segment);
    }

    #[test]
    fn plain_frames_by_their_length() {
        let f = |l3_len, ipv6, df| FrameShape { l3_len, gso: None, ipv6, df };
        assert_eq!(fit(&f(1500, false, true), 1500, EgressOffloads::NONE), Fit::Pass);
        assert_eq!(fit(&f(1501, false, true), 1500, EgressOffloads::NONE), Fit::FragNeeded { mtu: 1500 });
        assert_eq!(fit(&f(1501, false, false), 1500, EgressOffloads::ALL), Fit::NeedsFragmentation);
        assert_eq!(fit(&f(9000, true, false), 9000, EgressOffloads::NONE), Fit::Pass);
        assert_eq!(fit(&f(9001, true, false), 9000, EgressOffloads::ALL), Fit::FragNeeded { mtu: 9000 });
    }

    #[test]
    fn udp_gso_kinds() {
        let uso = FrameShape { l3_len: 30_000, gso: Some((Gso { kind: GsoKind::UdpL4, size: 1472, ecn: false }, 1500)), ipv6: false, df: false };
        assert_eq!(fit(&uso, 1500, EgressOffloads { udp_l4: true, ..EgressOffloads::NONE }), Fit::Pass);
        assert_eq!(fit(&uso, 1500, EgressOffloads { tcpv4: true, tcpv6: true, ..EgressOffloads::NONE }), Fit::Segment);
        let ufo = FrameShape { gso: Some((Gso { kind: GsoKind::Ufo, size: 1480, ecn: false }, 1500)), ..uso };
        assert_eq!(fit(&ufo, 1500, EgressOffloads::ALL), Fit::Pass);
        assert_eq!(fit(&ufo, 1500, EgressOffloads { udp_l4: true, ..EgressOffloads::NONE }), Fit::Segment);
    }
}
