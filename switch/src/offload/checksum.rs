//! Partial checksums (the kernel's `CHECKSUM_PARTIAL`): completing one, and keeping one right
//! through NAT.
//!
//! A sender with checksum offload leaves in the L4 checksum field the one's-complement sum of
//! the pseudo-header, NOT inverted (`th->check = ~tcp_v4_check(len, saddr, daddr, 0)` in
//! `__tcp_v4_send_check`), and says in its virtio-net header where the sum starts
//! (`csum_start`, the L4 header) and where it goes (`csum_offset`). Whoever finally sends the
//! frame sums from `csum_start` to the end, field included, and stores the inverted result.
//!
//! Contract:
//! - [`complete_partial`] is `skb_checksum_help` (net/core/dev.c): sum from `csum_start` to
//!   the end of the slice given, fold, invert, and store at `csum_start + csum_offset`; a
//!   result of 0 is stored as `0xffff` (`CSUM_MANGLED_0`, the same value in one's complement,
//!   and the one UDP needs since 0 means "no checksum"). The slice must end where the L4
//!   payload ends (cut Ethernet padding off first).
//! - [`proto_csum_replace4`], [`proto_csum_replace2`] and [`proto_csum_replace16`] mirror
//!   `inet_proto_csum_replace4/2/16` (net/core/utils.c, include/net/checksum.h, Linux 6.18)
//!   for the L4 checksum field when one field of the packet changes. For a full checksum
//!   ([`CsumState::Full`]) the field is updated as RFC 1624 says, whatever changed. For a
//!   partial one, only a change of a pseudo-header field (an address: `pseudohdr` true) is
//!   added to the stored sum, un-inverted; a port change (`pseudohdr` false) leaves it, since
//!   the ports are summed later with the rest of the L4 header.
//!   UDP keeps one rule of its own, as the kernel's NAT does (`udp_manip_pkt`): a full
//!   checksum of 0 means "none" and is left alone, and an update that yields 0 is stored as
//!   `0xffff`; the caller applies it (a partial sum is never 0 for a real pseudo-header).
//! - [`pseudo_header_v6`] is the IPv6 pseudo-header's partial sum (RFC 8200 section 8.1); the
//!   IPv4 one is [`crate::wire::checksum::pseudo_header_v4`].
//! - No allocation, no panic: offsets outside the slice are a [`ChecksumError`].

use std::net::Ipv6Addr;

use crate::wire::checksum::{data, fold, update_u16, update_u32};

/// Where a field is written to the checksum of its packet: the kernel's `skb->ip_summed` as far
/// as NAT cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsumState {
    /// The field holds the finished (inverted) checksum, or the frame's checksum was verified.
    Full,
    /// The field holds the pseudo-header sum, to be completed by [`complete_partial`] or by
    /// whoever receives the frame with `NEEDS_CSUM`.
    Partial,
}

/// Why a checksum could not be completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    #[error("checksum start {start} + offset {offset} (+2) beyond the {len} bytes given")]
    OutOfRange { start: usize, offset: usize, len: usize },
}

/// Completes the partial checksum of `frame` (see the module contract); returns the value
/// stored.
#[inline]
pub fn complete_partial(frame: &mut [u8], csum_start: usize, csum_offset: usize) -> Result<u16, ChecksumError> {
    let len = frame.len();
    let at = csum_start + csum_offset;
    // skb_checksum_help: the start inside the frame, the field's two bytes too.
    if csum_start >= len || at + 2 > len {
        return Err(ChecksumError::OutOfRange { start: csum_start, offset: csum_offset, len });
    }
    let sum = data(&frame[csum_start..]);
    let value = match !sum {
        0 => 0xffff,
        v => v,
    };
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
    Ok(value)
}

/// The partial-checksum update itself: `~csum_fold(csum_add(csum_sub(csum_unfold(*sum),
/// from), to))`, i.e. the stored (non-inverted) sum minus the old field (`removed`, its
/// complement) plus the new one (`added`).
#[inline]
fn add_to_partial(field: u16, removed: u64, added: u64) -> u16 {
    fold(u64::from(field) + removed + added)
}

/// `inet_proto_csum_replace4`: the L4 checksum field after a 32-bit field of the packet
/// changed from `from` to `to` (an IPv4 address when `pseudohdr`, else an L4 header field).
#[inline]
pub fn proto_csum_replace4(field: u16, state: CsumState, from: u32, to: u32, pseudohdr: bool) -> u16 {
    match state {
        CsumState::Full => update_u32(field, from, to),
        CsumState::Partial if pseudohdr => add_to_partial(field, u64::from(!from), u64::from(to)),
        CsumState::Partial => field,
    }
}

/// `inet_proto_csum_replace2`: as [`proto_csum_replace4`] for a 16-bit field (a port, with
/// `pseudohdr` false: a partial checksum is left as it is).
#[inline]
pub fn proto_csum_replace2(field: u16, state: CsumState, from: u16, to: u16, pseudohdr: bool) -> u16 {
    match state {
        CsumState::Full => update_u16(field, from, to),
        CsumState::Partial if pseudohdr => add_to_partial(field, u64::from(!from), u64::from(to)),
        CsumState::Partial => field,
    }
}

/// `inet_proto_csum_replace16`: as [`proto_csum_replace4`] for an IPv6 address.
#[inline]
pub fn proto_csum_replace16(field: u16, state: CsumState, from: Ipv6Addr, to: Ipv6Addr, pseudohdr: bool) -> u16 {
    let removed: u64 = words32(from).iter().map(|w| u64::from(!w)).sum();
    let added: u64 = words32(to).iter().map(|&w| u64::from(w)).sum();
    match state {
        CsumState::Full => !fold(u64::from(!field) + removed + added),
        CsumState::Partial if pseudohdr => add_to_partial(field, removed, added),
        CsumState::Partial => field,
    }
}

/// Partial sum (not inverted) of the IPv6 pseudo-header: source, destination, upper-layer
/// length (32 bits), three zero bytes and the next header.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u16 {
    let addrs: u64 = words32(src).iter().chain(words32(dst).iter()).map(|&w| u64::from(w)).sum();
    fold(addrs + u64::from(length) + u64::from(next_header))
}

/// An IPv6 address as four 32-bit words. Summing 32-bit words is summing their 16-bit halves
/// modulo 2^16 - 1 (2^16 == 1), as [`crate::wire::checksum::Delta::u32`] explains.
#[inline]
fn words32(a: Ipv6Addr) -> [u32; 4] {
    let v = u128::from(a);
    [(v >> 96) as u32, (v >> 64) as u32, (v >> 32) as u32, v as u32]
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    use super::*;
    use crate::wire::checksum::pseudo_header_v4;

    const ETH: usize = 14;

    fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src.octets(), dst.octets(), 64)
            .tcp(sport, dport, 1000, 500)
            .ack(7)
            .options(&[etherparse::TcpOptionElement::Timestamp(0x1122_3344, 0x5566_7788)])
            .unwrap()
            .write(&mut v, payload)
            .unwrap();
        v
    }

    fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6(src.octets(), dst.octets(), 64)
            .udp(sport, dport)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    /// The checksum etherparse computes from scratch for the frame as it is now.
    fn oracle(frame: &[u8]) -> u16 {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let ip = p.net.unwrap();
        let (src6, dst6, src4, dst4) = match &ip {
            etherparse::NetSlice::Ipv4(v4) => (None, None, Some(v4.header().source()), Some(v4.header().destination())),
            etherparse::NetSlice::Ipv6(v6) => (Some(v6.header().source()), Some(v6.header().destination()), None, None),
        };
        match p.transport.unwrap() {
            TransportSlice::Tcp(t) => match (src4, dst4, src6, dst6) {
                (Some(s), Some(d), _, _) => t.calc_checksum_ipv4(s, d).unwrap(),
                (_, _, Some(s), Some(d)) => t.calc_checksum_ipv6(s, d).unwrap(),
                _ => unreachable!(),
            },
            TransportSlice::Udp(u) => {
                let h = u.to_header();
                match (src4, dst4, src6, dst6) {
                    (Some(s), Some(d), _, _) => h.calc_checksum_ipv4_raw(s, d, u.payload()).unwrap(),
                    (_, _, Some(s), Some(d)) => h.calc_checksum_ipv6_raw(s, d, u.payload()).unwrap(),
                    _ => unreachable!(),
                }
            }
            _ => panic!("not TCP/UDP"),
        }
    }

    fn be16(f: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([f[at], f[at + 1]])
    }

    fn put16(f: &mut [u8], at: usize, v: u16) {
        f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Turns a full TCP/IPv4 checksum into the partial one `__tcp_v4_send_check` leaves.
    fn make_partial_v4(f: &mut [u8], l4: usize, csum_at: usize) {
        let src = Ipv4Addr::from(<[u8; 4]>::try_from(&f[ETH + 12..ETH + 16]).unwrap());
        let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&f[ETH + 16..ETH + 20]).unwrap());
        let len = (f.len() - l4) as u32;
        put16(f, csum_at, pseudo_header_v4(src, dst, f[ETH + 9], len));
    }

    #[test]
    fn completing_a_partial_tcp_checksum_gives_the_full_one() {
        for n in [0usize, 1, 2, 3, 100, 1447, 1448, 9000] {
            let payload: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let mut f = tcp4(Ipv4Addr::new(10, 244, 0, 3), Ipv4Addr::new(10, 244, 1, 9), 40000, 80, &payload);
            let l4 = ETH + 20;
            let at = l4 + 16;
            let full = be16(&f, at);
            assert_eq!(full, oracle(&f));
            make_partial_v4(&mut f, l4, at);
            assert_ne!(be16(&f, at), full);
            assert_eq!(complete_partial(&mut f, l4, 16), Ok(full), "payload {n}");
            assert_eq!(be16(&f, at), full);
        }
    }

    #[test]
    fn completion_out_of_range_is_an_error() {
        let mut f = [0u8; 60];
        assert_eq!(complete_partial(&mut f, 60, 0), Err(ChecksumError::OutOfRange { start: 60, offset: 0, len: 60 }));
        assert_eq!(complete_partial(&mut f, 50, 9), Err(ChecksumError::OutOfRange { start: 50, offset: 9, len: 60 }));
        assert!(complete_partial(&mut f, 50, 8).is_ok());
    }

    #[test]
    fn a_zero_result_is_stored_as_ffff() {
        // The words sum to 0xffff: the inverted checksum is 0, sent as 0xffff (CSUM_MANGLED_0).
        let mut f = [0x12, 0x34, 0x00, 0x00, 0xed, 0xcb];
        assert_eq!(complete_partial(&mut f, 0, 2), Ok(0xffff));
        assert_eq!(f[2..4], [0xff, 0xff]);
    }

    /// NAT on a partial frame with the kernel's rule, then completion: the result is the
    /// checksum of the rewritten frame computed from scratch.
    #[test]
    fn dnat_and_snat_of_a_partial_tcp4_frame_then_completion_equals_recomputation() {
        let mut rng = fastrand::Rng::with_seed(0x13);
        for round in 0..500 {
            let n = rng.usize(..3000);
            let payload: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            let (src, dst) = (Ipv4Addr::from(rng.u32(..)), Ipv4Addr::from(rng.u32(..)));
            let mut f = tcp4(src, dst, rng.u16(..), rng.u16(..), &payload);
            let l4 = ETH + 20;
            let at = l4 + 16;
            make_partial_v4(&mut f, l4, at);
            let partial_before = be16(&f, at);
            // DNAT: destination address and port; SNAT on odd rounds: source address and port.
            let (addr_at, port_at) = if round % 2 == 0 { (ETH + 16, l4 + 2) } else { (ETH + 12, l4) };
            let old_addr = u32::from_be_bytes(f[addr_at..addr_at + 4].try_into().unwrap());
            let new_addr = rng.u32(..);
            let old_port = be16(&f, port_at);
            let new_port = rng.u16(..);
            f[addr_at..addr_at + 4].copy_from_slice(&new_addr.to_be_bytes());
            put16(&mut f, port_at, new_port);
            let mut c = proto_csum_replace4(be16(&f, at), CsumState::Partial, old_addr, new_addr, true);
            let after_addr = c;
            c = proto_csum_replace2(c, CsumState::Partial, old_port, new_port, false);
            assert_eq!(c, after_addr, "a port change leaves a partial checksum as it is");
            put16(&mut f, at, c);
            // The IPv4 header checksum is a full one: patched the ordinary way.
            let ip_c = update_u32(be16(&f, ETH + 10), old_addr, new_addr);
            put16(&mut f, ETH + 10, ip_c);
            // The partial value is still the pseudo-header sum, now of the new addresses.
            let (s, d) = (Ipv4Addr::from(<[u8; 4]>::try_from(&f[ETH + 12..ETH + 16]).unwrap()), Ipv4Addr::from(<[u8; 4]>::try_from(&f[ETH + 16..ETH + 20]).unwrap()));
            assert_eq!(c, pseudo_header_v4(s, d, 6, (f.len() - l4) as u32), "round {round} (before {partial_before:#x})");
            complete_partial(&mut f, l4, 16).unwrap();
            assert_eq!(be16(&f, at), oracle(&f), "round {round}");
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
            assert_eq!(ip.header().header_checksum(), ip.header().to_header().calc_header_checksum());
        }
    }

    #[test]
    fn full_checksum_nat_rule_is_rfc1624_for_addresses_and_ports() {
        let mut f = tcp4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 96, 0, 10), 1234, 80, b"hello");
        let l4 = ETH + 20;
        let at = l4 + 16;
        let old = u32::from_be_bytes(f[ETH + 16..ETH + 20].try_into().unwrap());
        let new = u32::from(Ipv4Addr::new(10, 244, 2, 7));
        f[ETH + 16..ETH + 20].copy_from_slice(&new.to_be_bytes());
        put16(&mut f, l4 + 2, 8080);
        let c = proto_csum_replace4(be16(&f, at), CsumState::Full, old, new, true);
        let c = proto_csum_replace2(c, CsumState::Full, 80, 8080, false);
        put16(&mut f, at, c);
        assert_eq!(c, oracle(&f));
    }

    #[test]
    fn partial_rule_matches_the_kernels_formula_on_edge_words() {
        // ~csum_fold(csum_add(csum_sub(csum_unfold(sum), from), to)) with 32-bit end-around
        // carries, as the kernel computes it.
        fn kernel(sum: u16, from: u32, to: u32) -> u16 {
            let add = |a: u32, b: u32| {
                let (s, c) = a.overflowing_add(b);
                s.wrapping_add(u32::from(c))
            };
            let s = add(add(u32::from(sum), !from), to);
            let s = (s & 0xffff) + (s >> 16);
            let s = (s & 0xffff) + (s >> 16);
            s as u16 // ~csum_fold(x) is the folded, non-inverted sum
        }
        let edges = [0u32, 1, 0xffff, 0x1_0000, 0xffff_0000, 0xffff_ffff, 0x8000_0001, 0x0a00_0001];
        let sums = [0u16, 1, 0x7fff, 0xfffe, 0xffff];
        for &s in &sums {
            for &a in &edges {
                for &b in &edges {
                    assert_eq!(proto_csum_replace4(s, CsumState::Partial, a, b, true), kernel(s, a, b), "{s:#x} {a:#x}->{b:#x}");
                    assert_eq!(proto_csum_replace4(s, CsumState::Partial, a, b, false), s);
                }
            }
        }
        let mut rng = fastrand::Rng::with_seed(99);
        for _ in 0..100_000 {
            let (s, a, b) = (rng.u16(..), rng.u32(..), rng.u32(..));
            assert_eq!(proto_csum_replace4(s, CsumState::Partial, a, b, true), kernel(s, a, b));
        }
    }

    #[test]
    fn ipv6_pseudo_header_and_partial_nat_of_udp() {
        let mut rng = fastrand::Rng::with_seed(0x66);
        for _ in 0..300 {
            let n = rng.usize(..2000);
            let payload: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            let (src, dst) = (Ipv6Addr::from(rng.u128(..)), Ipv6Addr::from(rng.u128(..)));
            let mut f = udp6(src, dst, rng.u16(..), rng.u16(..), &payload);
            let l4 = ETH + 40;
            let at = l4 + 6;
            let len = (f.len() - l4) as u32;
            // The pseudo-header sum equals the sum of its bytes laid out by RFC 8200.
            let mut ph = [0u8; 40];
            ph[..16].copy_from_slice(&src.octets());
            ph[16..32].copy_from_slice(&dst.octets());
            ph[32..36].copy_from_slice(&len.to_be_bytes());
            ph[39] = 17;
            assert_eq!(pseudo_header_v6(src, dst, 17, len), data(&ph));
            // Partial, DNAT with the kernel's rule, complete: equals recomputation.
            put16(&mut f, at, pseudo_header_v6(src, dst, 17, len));
            let new_dst = Ipv6Addr::from(rng.u128(..));
            f[ETH + 24..ETH + 40].copy_from_slice(&new_dst.octets());
            let c = proto_csum_replace16(be16(&f, at), CsumState::Partial, dst, new_dst, true);
            put16(&mut f, at, c);
            complete_partial(&mut f, l4, 6).unwrap();
            assert_eq!(be16(&f, at), oracle(&f));
            // And the full-checksum rule on the completed frame.
            let newer = Ipv6Addr::from(rng.u128(..));
            f[ETH + 8..ETH + 24].copy_from_slice(&newer.octets());
            let c = proto_csum_replace16(be16(&f, at), CsumState::Full, src, newer, true);
            put16(&mut f, at, c);
            let want = oracle(&f);
            // One's complement has two zeros; UDP sends 0xffff for 0 (etherparse does).
            assert!(c == want || (c == 0 && want == 0xffff), "{c:#x} vs {want:#x}");
        }
    }
}
