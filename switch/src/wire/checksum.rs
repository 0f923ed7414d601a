//! The internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Contract:
//! - [`data`] returns the folded one's-complement sum of a byte slice, NOT inverted, so that
//!   partial sums (a pseudo-header, a header, a payload) can be [`combine`]d before the final
//!   inversion. A packet's checksum field is `!combine(&[...])`; a packet verifies when the sum
//!   over it, checksum field included, is `0xffff`.
//! - Slices of any length are accepted (an odd trailing byte is padded with zero, as RFC 1071
//!   says). Nothing here panics or overflows: 64-bit words are added with end-around carry, which
//!   is exact because 2^64 - 1 is a multiple of 2^16 - 1.
//! - [`update_u16`], [`update_u32`] and [`update_addr`] patch a checksum after one field changed,
//!   by RFC 1624 equation 3 (`HC' = ~(~HC + ~m + m')`), without reading the rest of the packet.
//!   The result equals a full recomputation except for the degenerate all-zero packet (one's
//!   complement has two zeros). UDP callers must keep two UDP rules themselves: a checksum of 0
//!   means "none" and is not updated, and a computed 0 is sent as `0xffff`.
//!
//! Decrementing the IPv4 TTL: TTL and protocol share the 16-bit word at offset 8, so
//! `update_u16(csum, u16::from_be_bytes([ttl, proto]), u16::from_be_bytes([ttl - 1, proto]))`.

use std::net::Ipv4Addr;

/// Folds a 64-bit one's-complement accumulator to 16 bits (with end-around carries).
#[inline]
pub const fn fold(sum: u64) -> u16 {
    let mut s = (sum & 0xffff_ffff) + (sum >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Adds `b` to `a` in one's-complement arithmetic modulo 2^64 - 1.
#[inline]
fn add_carry(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// One's-complement sum of `bytes` as big-endian 16-bit words, folded to 16 bits, not inverted.
///
/// An odd trailing byte counts as the high byte of a word whose low byte is zero.
#[inline]
pub fn data(bytes: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        // A big-endian u64 is four big-endian u16 words weighted by powers of 2^16, and
        // 2^16 == 1 modulo 2^16 - 1: the folded sum is the same.
        let v = u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        acc = add_carry(acc, v);
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc = add_carry(acc, u64::from(u16::from_be_bytes([p[0], p[1]])));
    }
    if let [last] = pairs.remainder() {
        acc = add_carry(acc, u64::from(*last) << 8);
    }
    fold(acc)
}

/// [`internet_checksum`] of an option-less 20-byte IPv4 header (checksum field included, so
/// a valid header gives 0): five 32-bit words, one fold. The router verifies every header.
#[inline(always)]
pub fn ipv4_header_checksum(h: &[u8; 20]) -> u16 {
    let w = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    !fold(w(0) + w(4) + w(8) + w(12) + w(16))
}

/// An RFC 1624 update for several fields at once: starts from `old_csum`, then
/// [`Delta::word`]/[`Delta::u32`] note each changed field, and [`Delta::finish`] folds once.
#[derive(Debug, Clone, Copy)]
pub struct Delta(u64);

impl Delta {
    /// No change yet: a partial delta to [`Self::plus`] to several checksums (e.g. the
    /// addresses' change, which both the IPv4 header and the TCP/UDP pseudo-header cover).
    pub const ZERO: Delta = Delta(0);

    #[inline(always)]
    pub fn new(old_csum: u16) -> Self {
        Delta(u64::from(!old_csum))
    }
    /// This delta plus another's changes.
    #[inline(always)]
    pub fn plus(self, other: Delta) -> Self {
        Delta(self.0 + other.0)
    }
    #[inline(always)]
    pub fn word(self, old: u16, new: u16) -> Self {
        Delta(self.0 + u64::from(!old) + u64::from(new))
    }
    /// A changed 32-bit field (two 16-bit words). Added whole: a 32-bit value is congruent to
    /// the sum of its two halves modulo 2^16 - 1 (2^16 == 1), and `!old` as 32 bits is the two
    /// halves' complements, so the folded result is the same as word by word, in 3 operations.
    #[inline(always)]
    pub fn u32(self, old: u32, new: u32) -> Self {
        Delta(self.0 + u64::from(!old) + u64::from(new))
    }
    #[inline(always)]
    pub fn finish(self) -> u16 {
        !fold(self.0)
    }
}

/// One's-complement sum of several partial sums.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    let acc: u64 = sums.iter().map(|&s| u64::from(s)).sum();
    fold(acc)
}

/// Partial sum of the IPv4 pseudo-header used by TCP and UDP: source, destination, zero and
/// protocol, and the L4 length (header plus payload, in bytes).
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u32) -> u16 {
    let s = u32::from(src);
    let d = u32::from(dst);
    let acc = u64::from(s >> 16)
        + u64::from(s & 0xffff)
        + u64::from(d >> 16)
        + u64::from(d & 0xffff)
        + u64::from(protocol)
        + u64::from(length >> 16)
        + u64::from(length & 0xffff);
    fold(acc)
}

/// The checksum field value for `bytes` alone (e.g. an IPv4 header with its checksum field
/// zeroed): `!data(bytes)`.
#[inline]
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    !data(bytes)
}

/// RFC 1624 eq. 3: the new checksum after one 16-bit word changed from `old_word` to
/// `new_word`.
#[inline]
pub fn update_u16(old_csum: u16, old_word: u16, new_word: u16) -> u16 {
    let acc = u64::from(!old_csum) + u64::from(!old_word) + u64::from(new_word);
    !fold(acc)
}

/// RFC 1624 eq. 3 for a 32-bit field (two adjacent 16-bit words, e.g. an address or a TCP
/// sequence number) that changed from `old` to `new`.
#[inline]
pub fn update_u32(old_csum: u16, old: u32, new: u32) -> u16 {
    let acc = u64::from(!old_csum)
        + u64::from(!((old >> 16) as u16))
        + u64::from(!(old as u16))
        + u64::from(new >> 16)
        + u64::from(new & 0xffff);
    !fold(acc)
}

/// [`update_u32`] for an IPv4 address: the IPv4 header checksum after a source or destination
/// rewrite, or a TCP/UDP checksum (whose pseudo-header holds the address).
#[inline]
pub fn update_addr(old_csum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_u32(old_csum, u32::from(old), u32::from(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_u32_whole_equals_the_word_by_word_update() {
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.u64(..);
        let edges = [0u32, 1, 0xffff, 0x1_0000, 0xffff_0000, 0xffff_ffff, 0x8000_0001];
        for i in 0..200_000 {
            let (c, old, new) = if i < edges.len() * edges.len() {
                (0x1234, edges[i / edges.len()], edges[i % edges.len()])
            } else {
                (next() as u16, next() as u32, next() as u32)
            };
            assert_eq!(Delta::new(c).u32(old, new).finish(), update_u32(c, old, new), "{c:#x} {old:#x} -> {new:#x}");
            let two = Delta::new(c).u32(old, new).u32(new, old).finish();
            let two_words = update_u32(update_u32(c, old, new), new, old);
            assert_eq!(two, two_words);
        }
    }

    #[test]
    fn fast_header_checksum_and_batched_delta_agree_with_the_general_forms() {
        let mut h = [0x45u8, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 244, 0, 3, 10, 96, 0, 10];
        let c = internet_checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(ipv4_header_checksum(&h), 0);
        h[8] = 63;
        assert_ne!(ipv4_header_checksum(&h), 0);
        let mut rng = fastrand::Rng::with_seed(0x1234_5678_9abc_def1);
        for _ in 0..10_000 {
            let x = rng.u64(..);
            let (c, a, b, p, q) = (x as u16, (x >> 16) as u32, (x >> 24) as u32, (x >> 40) as u16, (x >> 48) as u16);
            let one = Delta::new(c).u32(a, b).word(p, q).finish();
            let two = update_u16(update_u32(c, a, b), p, q);
            assert_eq!(one, two);
        }
    }

    /// Plain RFC 1071 reference: 16-bit words into a u32, carries folded at the end.
    fn reference_sum(bytes: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        let mut i = 0;
        while i + 1 < bytes.len() {
            acc += u64::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
            i += 2;
        }
        if i < bytes.len() {
            acc += u64::from(bytes[i]) << 8;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    fn read(buf: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([buf[at], buf[at + 1]])
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(internet_checksum(&bytes), !0xddf2);
    }

    #[test]
    fn empty_and_odd_lengths() {
        assert_eq!(data(&[]), 0);
        assert_eq!(data(&[0xab]), 0xab00);
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(data(&[0xff; 9]), reference_sum(&[0xff; 9]));
    }

    #[test]
    fn fast_sum_matches_reference_for_all_lengths() {
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let mut buf = [0u8; 300];
        for len in 0..buf.len() {
            rng.fill(&mut buf[..len]);
            assert_eq!(data(&buf[..len]), reference_sum(&buf[..len]), "len {len}");
        }
        // Worst case for carries: all ones.
        let ones = [0xffu8; 4096];
        for len in [0, 1, 2, 7, 8, 9, 4095, 4096] {
            assert_eq!(data(&ones[..len]), reference_sum(&ones[..len]), "len {len}");
        }
    }

    #[test]
    fn known_ipv4_header() {
        // Header of the golden UDP packet in udp.rs (checksum 0x0a84).
        let mut hdr = [
            0x45, 0x00, 0x00, 0x21, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x0a, 0x84, 0x0a, 0x00,
            0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
        ];
        assert_eq!(data(&hdr), 0xffff);
        hdr[10] = 0;
        hdr[11] = 0;
        assert_eq!(internet_checksum(&hdr), 0x0a84);
    }

    #[test]
    fn combine_equals_sum_of_concatenation() {
        let mut rng = fastrand::Rng::with_seed(12345);
        let mut buf = [0u8; 64];
        for split in (0..=64).step_by(2) {
            rng.fill(&mut buf);
            let (a, b) = buf.split_at(split);
            assert_eq!(combine(&[data(a), data(b)]), data(&buf));
        }
    }

    #[test]
    fn pseudo_header_matches_bytes() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(192, 168, 200, 254);
        let mut ph = [0u8; 12];
        ph[0..4].copy_from_slice(&src.octets());
        ph[4..8].copy_from_slice(&dst.octets());
        ph[9] = 17;
        ph[10..12].copy_from_slice(&1480u16.to_be_bytes());
        assert_eq!(pseudo_header_v4(src, dst, 17, 1480), data(&ph));
    }

    /// Sets the checksum at `at` to the full recomputation over `buf`.
    fn recompute(buf: &mut [u8], at: usize) -> u16 {
        buf[at] = 0;
        buf[at + 1] = 0;
        let c = internet_checksum(buf);
        buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
        c
    }

    #[test]
    fn incremental_u16_equals_recomputation() {
        let mut rng = fastrand::Rng::with_seed(0xdead_beef_cafe_f00d);
        let mut buf = [0u8; 20];
        for _ in 0..20_000 {
            rng.fill(&mut buf);
            buf[0] = 0x45; // never the all-zero packet
            let old_csum = recompute(&mut buf, 10);
            // A random word other than the checksum.
            let mut at = (rng.u64(..) % 10) as usize * 2;
            if at == 10 {
                at = 8;
            }
            let old = read(&buf, at);
            let new = rng.u64(..) as u16;
            buf[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let incremental = update_u16(old_csum, old, new);
            assert_eq!(
                incremental,
                recompute(&mut buf, 10),
                "word {at} {old:#x}->{new:#x}"
            );
            assert_eq!(data(&buf), 0xffff);
        }
    }

    #[test]
    fn incremental_edge_words() {
        // Words at the extremes of the range: 0x0000, 0xffff.
        let mut buf = [
            0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        for (old, new) in [
            (0u16, 0xffffu16),
            (0xffff, 0),
            (0, 0),
            (0xffff, 0xffff),
            (1, 0xfffe),
        ] {
            buf[12..14].copy_from_slice(&old.to_be_bytes());
            let c = recompute(&mut buf, 10);
            buf[12..14].copy_from_slice(&new.to_be_bytes());
            assert_eq!(update_u16(c, old, new), recompute(&mut buf, 10));
        }
    }

    #[test]
    fn incremental_u32_and_addr_equal_recomputation() {
        let mut rng = fastrand::Rng::with_seed(0x0123_4567_89ab_cdef);
        let mut buf = [0u8; 20];
        for _ in 0..20_000 {
            rng.fill(&mut buf);
            buf[0] = 0x45;
            let old_csum = recompute(&mut buf, 10);
            let at = if rng.u64(..) & 1 == 0 { 12 } else { 16 };
            let old = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            let new = rng.u64(..) as u32;
            buf[at..at + 4].copy_from_slice(&new.to_be_bytes());
            assert_eq!(update_u32(old_csum, old, new), recompute(&mut buf, 10));
            assert_eq!(
                update_addr(old_csum, Ipv4Addr::from(old), Ipv4Addr::from(new)),
                recompute(&mut buf, 10)
            );
        }
    }

    #[test]
    fn ttl_decrement() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x21, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x0a, 0x84, 0x0a, 0x00,
            0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
        ];
        for _ in 0..64 {
            let old = read(&hdr, 8);
            hdr[8] -= 1;
            let new = read(&hdr, 8);
            let c = update_u16(read(&hdr, 10), old, new);
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
            assert_eq!(data(&hdr), 0xffff, "ttl {}", hdr[8]);
        }
    }

    #[test]
    fn incremental_tcp_checksum_after_port_and_addr_rewrite() {
        // NAT-style: rewrite a destination address and port, patch the L4 checksum through the
        // pseudo-header and the port word, compare with recomputation.
        let mut rng = fastrand::Rng::with_seed(77);
        let mut seg = [0u8; 37];
        for _ in 0..2_000 {
            rng.fill(&mut seg);
            let src = Ipv4Addr::from(rng.u64(..) as u32);
            let dst = Ipv4Addr::from(rng.u64(..) as u32);
            let full = |seg: &mut [u8], dst: Ipv4Addr| {
                seg[16] = 0;
                seg[17] = 0;
                let ph = pseudo_header_v4(src, dst, 6, seg.len() as u32);
                let c = !combine(&[ph, data(seg)]);
                seg[16..18].copy_from_slice(&c.to_be_bytes());
                c
            };
            let c0 = full(&mut seg, dst);
            let new_dst = Ipv4Addr::from(rng.u64(..) as u32);
            let old_port = read(&seg, 2);
            let new_port = rng.u64(..) as u16;
            seg[2..4].copy_from_slice(&new_port.to_be_bytes());
            let c1 = update_u16(update_addr(c0, dst, new_dst), old_port, new_port);
            assert_eq!(c1, full(&mut seg, new_dst));
        }
    }
}
