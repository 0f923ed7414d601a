//! ClusterIP and NodePort allocation for Services that do not set them, as the API server's
//! allocators do but deterministically.
//!
//! Contract:
//! - Both ranges are split as Kubernetes splits them (KEP-3070 for Service IPs, KEP-3668 for
//!   NodePorts): a lower "static" band that users are expected to pick from by hand, and an
//!   upper "dynamic" band. Allocation takes the lowest free value of the upper band, then of
//!   the lower band when the upper one is full, so hand-picked values rarely collide.
//! - ClusterIPs: for a CIDR of `size` addresses the static band is the first
//!   `min(max(16, size/16), 256)` addresses (10.96.0.0-10.96.0.255 of a /16); the network and
//!   broadcast addresses are never used.
//! - NodePorts: for a range of `n` ports the static band is the first `min(max(16, n/32), 128)`
//!   ports (30000-30085 of 30000-32767).
//! - [`Allocator`] never hands out a value that is in use; what stays stable across recompiles
//!   is decided by the caller, which feeds the values it keeps as `used`.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;

/// Size of the static band of a Service CIDR of `size` addresses.
pub fn cluster_ip_static_band(size: u64) -> u64 {
    (size / 16).clamp(16, 256)
}

/// Size of the static band of a NodePort range of `n` ports.
pub fn node_port_static_band(n: u32) -> u32 {
    (n / 32).clamp(16, 128)
}

/// The usable offsets of a CIDR: all but the network and broadcast address (when it has them).
fn usable_offsets(cidr: &Ipv4Net) -> (u64, u64) {
    let size = 1u64 << (32 - cidr.prefix_len());
    if size > 2 {
        (1, size - 1)
    } else {
        (0, size)
    }
}

/// Whether `ip` may be a ClusterIP: inside one of `cidrs`, not its network or broadcast address.
pub fn valid_cluster_ip(cidrs: &[Ipv4Net], ip: Ipv4Addr) -> bool {
    cidrs.iter().any(|c| {
        let c = c.trunc();
        if !c.contains(&ip) {
            return false;
        }
        let off = (u32::from(ip) - u32::from(c.network())) as u64;
        let (lo, hi) = usable_offsets(&c);
        off >= lo && off < hi
    })
}

/// ClusterIPs in allocation order: for each CIDR, its upper band then its lower band.
pub fn cluster_ip_order(cidrs: &[Ipv4Net]) -> impl Iterator<Item = Ipv4Addr> + '_ {
    cidrs.iter().flat_map(|c| {
        let c = c.trunc();
        let base = u32::from(c.network()) as u64;
        let (lo, hi) = usable_offsets(&c);
        let band = cluster_ip_static_band(1u64 << (32 - c.prefix_len())).clamp(lo, hi);
        (band..hi).chain(lo..band).map(move |off| Ipv4Addr::from((base + off) as u32))
    })
}

/// NodePorts in allocation order: the upper band, then the lower band.
pub fn node_port_order(range: RangeInclusive<u16>) -> impl Iterator<Item = u16> {
    let (lo, hi) = (*range.start() as u32, *range.end() as u32);
    let n = (hi + 1).saturating_sub(lo);
    let split = (lo + node_port_static_band(n)).min(hi + 1);
    (split..=hi).chain(lo..split).map(|p| p as u16)
}

/// Hands out the lowest free value of an order, skipping what is in use.
pub struct Allocator<T: Ord + Copy, I: Iterator<Item = T>> {
    order: I,
    used: BTreeSet<T>,
}

impl<T: Ord + Copy, I: Iterator<Item = T>> Allocator<T, I> {
    pub fn new(order: I, used: BTreeSet<T>) -> Self {
        Self { order, used }
    }

    /// The next free value, or None when the range is exhausted. Values handed out become used.
    /// (The order is walked once: a value skipped as used is never offered again, which is
    /// right because nothing is freed while one compile allocates.)
    pub fn next_free(&mut self) -> Option<T> {
        let v = self.order.by_ref().find(|v| !self.used.contains(v))?;
        self.used.insert(v);
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn bands_follow_kubernetes() {
        assert_eq!(cluster_ip_static_band(1 << 16), 256);
        assert_eq!(cluster_ip_static_band(1 << 12), 256);
        assert_eq!(cluster_ip_static_band(1 << 8), 16);
        assert_eq!(node_port_static_band(2768), 86);
        assert_eq!(node_port_static_band(100), 16);
        assert_eq!(node_port_static_band(60000), 128);
    }

    #[test]
    fn cluster_ip_order_upper_band_first_never_network_or_broadcast() {
        let c = [cidr("10.96.0.0/16")];
        let v: Vec<Ipv4Addr> = cluster_ip_order(&c).collect();
        assert_eq!(v.len(), 65534);
        assert_eq!(v[0], Ipv4Addr::new(10, 96, 1, 0));
        assert_eq!(*v.iter().rev().nth(255).unwrap(), Ipv4Addr::new(10, 96, 255, 254));
        assert_eq!(v[65534 - 255], Ipv4Addr::new(10, 96, 0, 1));
        assert!(!v.contains(&Ipv4Addr::new(10, 96, 0, 0)));
        assert!(!v.contains(&Ipv4Addr::new(10, 96, 255, 255)));
        // A small CIDR is all static band: allocation starts at .1.
        let small: Vec<Ipv4Addr> = cluster_ip_order(&[cidr("10.96.0.0/28")]).collect();
        assert_eq!(small.first(), Some(&Ipv4Addr::new(10, 96, 0, 1)));
        assert_eq!(small.len(), 14);
    }

    #[test]
    fn valid_cluster_ips() {
        let c = [cidr("10.96.0.0/16")];
        assert!(valid_cluster_ip(&c, Ipv4Addr::new(10, 96, 0, 10)));
        assert!(valid_cluster_ip(&c, Ipv4Addr::new(10, 96, 0, 1)));
        assert!(!valid_cluster_ip(&c, Ipv4Addr::new(10, 96, 0, 0)));
        assert!(!valid_cluster_ip(&c, Ipv4Addr::new(10, 96, 255, 255)));
        assert!(!valid_cluster_ip(&c, Ipv4Addr::new(10, 97, 0, 1)));
    }

    #[test]
    fn node_port_order_upper_band_first() {
        let v: Vec<u16> = node_port_order(30000..=32767).collect();
        assert_eq!(v.len(), 2768);
        assert_eq!(v[0], 30086);
        assert_eq!(v[2768 - 86], 30000);
        assert_eq!(*v.last().unwrap(), 30085);
    }

    #[test]
    fn allocator_skips_used_values() {
        let used: BTreeSet<u16> = [30086, 30088].into_iter().collect();
        let mut a = Allocator::new(node_port_order(30000..=32767), used);
        assert_eq!(a.next_free(), Some(30087));
        assert_eq!(a.next_free(), Some(30089));
        let mut tiny = Allocator::new(node_port_order(30000..=30001), BTreeSet::new());
        assert_eq!((tiny.next_free(), tiny.next_free(), tiny.next_free()), (Some(30000), Some(30001), None));
    }
}
