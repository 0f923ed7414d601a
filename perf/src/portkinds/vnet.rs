//! The forwarder's use of the virtio-net header that both candidate pod-port mechanisms put in
//! front of every frame (the header and checksum arithmetic are the dataplane's own,
//! `switch::offload`), and its optional checksum finishing.
//!
//! Contract: [`finish_checksum`] turns a frame's partial checksum (`NEEDS_CSUM`: the field at
//! `csum_start + csum_offset` holds the pseudo-header sum) into the full one, as the kernel's
//! `skb_checksum_help` does. A frame without `NEEDS_CSUM` is left alone. A GSO super-frame
//! keeps its partial checksum (the receiving kernel takes a super-frame only as
//! `CHECKSUM_PARTIAL`): its payload is summed (the per-byte cost a segmenter or a
//! non-offloading egress pays) and the sum is returned, not written.
pub use switch::offload::vnet_hdr::{VnetHdr as Header, LEN};
use switch::offload::checksum::complete_partial;
use switch::offload::vnet_hdr::flags::NEEDS_CSUM;
use switch::wire::checksum;

/// What [`finish_checksum`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// No `NEEDS_CSUM`: nothing to do.
    NotPartial,
    /// The full checksum was written and `NEEDS_CSUM` cleared.
    Written,
    /// A super-frame: summed, left partial; the checksum it would get (big-endian value).
    SummedOnly(u16),
    /// The header's offsets point outside the frame: left alone.
    BadOffsets,
}

/// See the module contract. `buf` is the vnet header followed by the frame.
pub fn finish_checksum(buf: &mut [u8]) -> Finish {
    let Ok(h) = Header::parse(buf) else { return Finish::BadOffsets };
    if !h.needs_csum() {
        return Finish::NotPartial;
    }
    let frame = &mut buf[LEN..];
    let (start, offset) = (usize::from(h.csum_start), usize::from(h.csum_offset));
    if h.gso_type != 0 {
        if start + offset + 2 > frame.len() {
            return Finish::BadOffsets;
        }
        return Finish::SummedOnly(!checksum::data(&frame[start..]));
    }
    match complete_partial(frame, start, offset) {
        Ok(_) => {
            buf[0] &= !NEEDS_CSUM;
            Finish::Written
        }
        Err(_) => Finish::BadOffsets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + UDP frame (RFC 768 example shape) with its checksum field holding
    /// the pseudo-header sum, as a sender with checksum offload leaves it.
    fn partial_udp(gso: bool) -> (Vec<u8>, u16) {
        let mut f = vec![0u8; 14 + 20 + 8 + 5];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&33u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 77, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 77, 0, 2]);
        let udp = &mut f[34..];
        udp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        udp[2..4].copy_from_slice(&9u16.to_be_bytes());
        udp[4..6].copy_from_slice(&13u16.to_be_bytes());
        udp[8..13].copy_from_slice(b"hello");
        // The full checksum, computed the textbook way (big-endian words).
        let mut s: u32 = 0;
        for w in [0x0a4d, 0x0001, 0x0a4d, 0x0002, 17, 13] {
            s += w;
        }
        let seg = f[34..].to_vec();
        for c in seg.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let full = !(s as u16);
        // The partial: the pseudo-header sum alone, not complemented, in network order.
        let mut p: u32 = [0x0a4d, 0x0001, 0x0a4d, 0x0002, 17, 13].iter().sum();
        while p > 0xffff {
            p = (p & 0xffff) + (p >> 16);
        }
        f[40..42].copy_from_slice(&(p as u16).to_be_bytes());
        let mut buf = vec![0u8; LEN];
        buf[0] = NEEDS_CSUM;
        if gso {
            buf[1] = 3; // VIRTIO_NET_HDR_GSO_UDP
        }
        buf[6..8].copy_from_slice(&34u16.to_ne_bytes());
        buf[8..10].copy_from_slice(&6u16.to_ne_bytes());
        buf.extend_from_slice(&f);
        (buf, full)
    }

    #[test]
    fn a_partial_checksum_is_finished_to_the_textbook_value() {
        let (mut buf, full) = partial_udp(false);
        assert_eq!(finish_checksum(&mut buf), Finish::Written);
        assert_eq!(u16::from_be_bytes([buf[LEN + 40], buf[LEN + 41]]), full);
        assert_eq!(buf[0] & NEEDS_CSUM, 0);
        // Finished once, nothing more to do.
        assert_eq!(finish_checksum(&mut buf), Finish::NotPartial);
    }

    #[test]
    fn a_super_frame_is_summed_and_left_partial() {
        let (mut buf, full) = partial_udp(true);
        let before = buf.clone();
        assert_eq!(finish_checksum(&mut buf), Finish::SummedOnly(full));
        assert_eq!(buf, before);
    }

    #[test]
    fn offsets_outside_the_frame_are_refused() {
        let (mut buf, _) = partial_udp(false);
        buf[8..10].copy_from_slice(&100u16.to_ne_bytes());
        assert_eq!(finish_checksum(&mut buf), Finish::BadOffsets);
        assert_eq!(finish_checksum(&mut [1u8, 0, 0]), Finish::BadOffsets);
    }

    #[test]
    fn header_fields_are_read_in_host_order() {
        let mut b = [0u8; LEN];
        b[0] = 1;
        b[1] = 4;
        b[4..6].copy_from_slice(&1448u16.to_ne_bytes());
        let h = Header::parse(&b).unwrap();
        assert_eq!((h.gso_type, h.gso_size), (4, 1448));
        assert!(Header::parse(&b[..9]).is_err());
    }
}
