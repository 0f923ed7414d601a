//! Why the dataplane dropped a frame: one numbered enum shared by the workers' counters,
//! `podswitch show stats`, the metrics and (later) the flow log.
//!
//! Contract: numbers are assigned once and never reused or renumbered; a new reason takes the
//! next free number. A retired reason's number stays in [`RETIRED`]. `name()` is the stable machine name (snake case) used in JSON and metrics.
use serde::Serialize;

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $name:literal, $text:literal; )*) => {
        /// A numbered drop reason. See the module doc.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$doc])* $variant = $num, )*
        }

        impl DropReason {
            /// Every reason, in number order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// Stable machine name, e.g. `spoofed_source_ip`.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// One line for people.
            pub const fn description(self) -> &'static str {
                match self { $(DropReason::$variant => $text,)* }
            }
        }
    };
}

drop_reasons! {
    /// The frame ends inside a header it claims to have.
    Truncated = 1, "truncated", "frame shorter than its headers";
    BadIpVersion = 2, "bad_ip_version", "IPv4 ethertype but the version field is not 4";
    BadIhl = 3, "bad_ihl", "IPv4 header length below 20 bytes or beyond the frame";
    BadIpTotalLength = 4, "bad_ip_total_length", "IPv4 total length below the header length or beyond the frame";
    BadArp = 5, "bad_arp", "ARP that is not Ethernet/IPv4 or is truncated";
    BadL4Length = 6, "bad_l4_length", "UDP length field below 8 or beyond the packet";
    BadTcpDataOffset = 7, "bad_tcp_data_offset", "TCP data offset below 5 words or beyond the packet";
    UnsupportedEthertype = 8, "unsupported_ethertype", "ethertype the switch does not forward (IPv6 comes later, VLAN tags are not accepted)";
    SpoofedSourceMac = 9, "spoofed_source_mac", "source MAC is not the pod's own (anti-spoofing)";
    SpoofedSourceIp = 10, "spoofed_source_ip", "source IP (or ARP sender) is not the pod's own (anti-spoofing)";
    NoRoute = 11, "no_route", "no route to the destination address";
    TtlExceeded = 12, "ttl_exceeded", "TTL would reach 0; ICMP time exceeded sent to the source";
    ArpNotForGateway = 13, "arp_not_for_gateway", "ARP request for an address the switch does not answer";
    ArpNotRequest = 14, "arp_not_request", "ARP operation other than request";
    BadIpChecksum = 15, "bad_ip_checksum", "IPv4 header checksum does not verify";
    DstMacNotSwitch = 16, "dst_mac_not_switch", "unicast frame addressed to another MAC than the switch port's";
    DstNotUnicast = 17, "dst_not_unicast", "IPv4 destination is broadcast, multicast or unspecified";
    EgressPortNotReady = 18, "egress_port_not_ready", "route points at a port this worker has no socket on (yet)";
    TxRingFull = 19, "tx_ring_full", "egress TX ring full";
    IcmpErrorNotSent = 20, "icmp_error_not_sent", "an ICMP error was due but not sent (the frame could not hold it, or it would answer an ICMP error)";
    UnknownIngressPort = 21, "unknown_ingress_port", "frame arrived on a port the tables do not know (being added or removed)";
    LocalNotHandled = 22, "local_not_handled", "addressed to the switch's gateway address but not an echo request";
    // 23 was `multibuffer` ("frame spans several buffers"): retired, never to be reused. The
    // sockets are bound without XDP_USE_SG, so the kernel never hands a frame in several
    // buffers to the switch (it drops a frame larger than one buffer itself, in its own
    // socket statistics); no code could see one, and the counter stayed 0 forever.
    ConntrackFull = 24, "conntrack_full", "connection table full (or no slot in reach): new connection refused";
    NoLocalEndpoint = 25, "no_local_endpoint", "traffic policy Local and no endpoint of the Service on this node";
    ServiceRejected = 26, "service_rejected", "Service without usable endpoints, or a port it does not expose: answered with TCP RST or ICMP port unreachable";
    ServiceIpUnallocated = 27, "service_ip_unallocated", "address in the Service CIDR that no Service holds";
    LbSourceDenied = 28, "lb_source_denied", "client outside the LoadBalancer's loadBalancerSourceRanges";
    ServiceFragment = 29, "service_fragment", "SCTP fragment to a Service (its checksum covers the whole packet: it cannot be translated)";
    NoSnatAddress = 30, "no_snat_address", "masquerade needed but no node address is known";
    CtInvalid = 31, "ct_invalid", "TCP segment that cannot open a connection (a lone RST) to a Service";
    SnatPortsExhausted = 32, "snat_ports_exhausted", "no free masquerade port for this backend";
    PolicyDenied = 33, "policy_denied", "NetworkPolicy: the source's egress or the destination's ingress does not allow the connection";
    TunnelMalformed = 34, "tunnel_malformed", "VXLAN frame to this node with a bad outer header (fragment, length, checksum), no VNI flag, or an inner frame that is not IPv4";
    TunnelUnknownPeer = 35, "tunnel_unknown_peer", "VXLAN frame from an address that is not a node of the cluster";
    TunnelBadVni = 36, "tunnel_bad_vni", "VXLAN frame with another VNI than the pod network's";
    TunnelSpoofedSource = 37, "tunnel_spoofed_source", "VXLAN frame whose inner source is neither a pod of the sending node nor that node";
    FragmentationNeeded = 38, "fragmentation_needed", "packet longer than the tunnel's MTU: ICMP fragmentation-needed sent to its source (DF set) or dropped (DF clear)";
    IcmpErrorUnrelated = 39, "icmp_error_unrelated", "ICMP error that quotes no known connection (or too little of one to tell)";
    FragmentUnknown = 40, "fragment_unknown", "later fragment of a datagram whose first fragment was not seen, not allowed or dropped (or arrived more than 30 s before)";
}

/// Numbers of reasons that no longer exist (see the comment at each), never given again.
pub const RETIRED: &[u8] = &[23];

/// Number of counter slots an array indexed by `reason as usize` needs.
pub const DROP_REASON_SLOTS: usize = 41;

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn numbers_are_unique_dense_and_fit_the_slots() {
        let mut seen = [false; DROP_REASON_SLOTS];
        for r in DropReason::ALL {
            let n = *r as usize;
            assert!(n > 0 && n < DROP_REASON_SLOTS, "{r:?}");
            assert!(!seen[n], "{r:?} reuses {n}");
            assert!(!RETIRED.contains(&(n as u8)), "{r:?} reuses retired {n}");
            seen[n] = true;
            assert!(r.name().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
        assert_eq!(DropReason::ALL.len() + RETIRED.len(), DROP_REASON_SLOTS - 1);
    }
}
