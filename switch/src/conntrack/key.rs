//! The key of a tracked flow direction and its hash.
//!
//! Contract: a [`FlowKey`] is the 5-tuple of one direction as it appears on the wire (ICMP echo:
//! the identifier in `sport`, 0 in `dport`). [`FlowKey::reverse`] is the key the other
//! direction carries when no NAT applies. [`KeyHasher`] is keyed with a per-process random
//! seed, so a remote sender cannot aim many flows at one bucket.
use std::net::Ipv4Addr;

use crate::wire::{IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl FlowKey {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> Self {
        Self { src: u32::from(src), dst: u32::from(dst), sport, dport, proto }
    }

    /// This key with the port its packets are addressed to set to `port`: `dport`, or for ICMP
    /// echo the identifier, which an echo key holds in `sport` both ways ([`Self::reverse`]).
    /// What masquerade chooses for a reply key.
    #[inline]
    pub fn with_destination_port(self, port: u16) -> FlowKey {
        match self.proto {
            IPPROTO_ICMP => FlowKey { sport: port, ..self },
            _ => FlowKey { dport: port, ..self },
        }
    }

    /// The key of the other direction when nothing is translated.
    #[inline]
    pub fn reverse(&self) -> FlowKey {
        if self.proto == IPPROTO_ICMP {
            // Echo request and reply carry the same identifier in the same field.
            FlowKey { src: self.dst, dst: self.src, sport: self.sport, dport: self.dport, proto: self.proto }
        } else {
            FlowKey { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, proto: self.proto }
        }
    }

    #[inline]
    pub fn src_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src)
    }

    #[inline]
    pub fn dst_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst)
    }

    #[inline]
    pub(crate) fn ports_word(&self) -> u32 {
        ((self.sport as u32) << 16) | self.dport as u32
    }

    /// Whether the protocol has ports the tracker and NAT understand.
    #[inline]
    pub fn has_ports(proto: u8) -> bool {
        matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
    }
}

impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.proto {
            IPPROTO_TCP => "tcp",
            IPPROTO_UDP => "udp",
            IPPROTO_SCTP => "sctp",
            IPPROTO_ICMP => "icmp",
            _ => "ip",
        };
        write!(f, "{}:{} -> {}:{}/{}", self.src_ip(), self.sport, self.dst_ip(), self.dport, p)
    }
}

/// Keyed hash of flow keys (one 128-bit multiply per half, wyhash-style folding).
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher {
    s0: u64,
    s1: u64,
}

#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

impl KeyHasher {
    pub fn new(seed: u64) -> Self {
        Self { s0: seed ^ 0xa076_1d64_78bd_642f, s1: seed.rotate_left(29) ^ 0xe703_7ed1_a0b4_28db }
    }

    /// A hasher seeded from the OS's randomness ([`Self::random_seed`]).
    pub fn random() -> Self {
        Self::new(Self::random_seed())
    }

    /// A seed from the OS's randomness (falls back to the clock).
    pub fn random_seed() -> u64 {
        let mut seed = [0u8; 8];
        let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed)).is_ok();
        if ok {
            u64::from_ne_bytes(seed)
        } else {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        }
    }

    #[inline(always)]
    pub fn hash(&self, k: &FlowKey) -> u64 {
        let a = ((k.src as u64) << 32) | k.dst as u64;
        let b = ((k.ports_word() as u64) << 8) | k.proto as u64;
        fold_mul(a ^ self.s0, b ^ self.s1) ^ fold_mul(a ^ self.s1, 0x9e37_79b9_7f4a_7c15)
    }
}
