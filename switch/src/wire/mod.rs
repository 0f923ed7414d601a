//! Zero-copy views of the packet headers the switch handles.
//!
//! Contract of this layer:
//! - One file per header. Each defines a view `Xxx<T: AsRef<[u8]>>` over a byte buffer, in the
//!   manner of smoltcp's `wire` module: `new_unchecked` for buffers the code built itself,
//!   `new_checked` for untrusted input, getters on `T: AsRef<[u8]>`, setters on
//!   `T: AsRef<[u8]> + AsMut<[u8]>`, and a private `field` table of byte ranges.
//! - Nothing here allocates, panics on a view that passed `new_checked`, or uses `unsafe`. Getters
//!   and setters of a view made with `new_unchecked` over a buffer that is too short *do* panic
//!   (slice indexing): that constructor is only for buffers the caller has sized itself.
//! - [`parse_frame`] is the one entry point for received frames: it validates Ethernet, ARP or
//!   IPv4 and the TCP/UDP/ICMP header, and returns a small `Copy` summary ([`ParsedFrame`]).
//! - [`offsets`] is the one table of fixed byte offsets (untagged Ethernet, option-less IPv4,
//!   TCP/UDP) for the code that reads frames without a view: the fast path and the warm-up.
//! - [`checksum`] holds the RFC 1071 internet checksum and the RFC 1624 incremental update that
//!   the router (TTL) and NAT (addresses, ports) use.
//!
//! Limits: IPv4 only (IPv6 frames are reported as [`FrameKind::Other`]); VLAN tags are not parsed
//! (ethertype 0x8100 is reported as it is); no `Repr` types yet: the pipeline works on views and
//! on [`ParsedFrame`].

/// Declares a view type over a byte buffer `T` (smoltcp style) with what every view has:
/// `new_unchecked`, `new_checked` (which runs the view's own `check` method and returns its
/// error) and `into_inner`. Each view's module adds its constants, checks and field accessors.
macro_rules! view {
    ($(#[$doc:meta])* $name:ident, unchecked: $unchecked:literal, checked: $checked:literal, check: $check:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            #[doc = $unchecked]
            #[inline]
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            #[doc = $checked]
            #[inline]
            pub fn new_checked(buffer: T) -> Result<Self, $crate::wire::WireError> {
                let view = Self::new_unchecked(buffer);
                view.$check()?;
                Ok(view)
            }

            #[inline]
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }
    };
}

/// Declares a view's fixed-offset fields: for each, a getter (with the given docs and
/// attributes) and a setter `set_...`, reading and writing the value at its offset in network
/// byte order through [`FieldValue`].
macro_rules! fields {
    ($view:ident { $( $(#[$attr:meta])* $get:ident / $set:ident: $ty:ty = $at:expr; )* }) => {
        impl<T: AsRef<[u8]>> $view<T> {
            $(
                $(#[$attr])*
                #[inline]
                pub fn $get(&self) -> $ty {
                    <$ty as $crate::wire::FieldValue>::read(self.buffer.as_ref(), $at)
                }
            )*
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $view<T> {
            $(
                #[inline]
                pub fn $set(&mut self, value: $ty) {
                    $crate::wire::FieldValue::write(value, self.buffer.as_mut(), $at);
                }
            )*
        }
    };
}

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod ipv4;
pub mod offsets;
pub mod parse;
pub mod sctp;
pub mod tcp;
pub mod udp;
pub mod vxlan;

use core::fmt;

pub use arp::ArpPacket;
pub use ethernet::{EthernetFrame, MacAddr};
pub use icmpv4::Icmpv4Packet;
pub use ipv4::Ipv4Packet;
pub use parse::{parse_frame, FrameKind, ParsedFrame};
pub use sctp::SctpPacket;
pub use tcp::flags as tcp_flags;
pub use tcp::TcpPacket;
pub use udp::UdpPacket;

/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethertype of IPv6 (not parsed by this layer).
pub const ETHERTYPE_IPV6: u16 = 0x86DD;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// Why a buffer is not a valid packet of the kind asked for.
///
/// `Copy` and allocation-free: the dataplane maps it to a drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer is shorter than a fixed header, than the header length a packet declares, or
    /// than the IPv4 total length.
    Truncated,
    /// The IPv4 version field is not 4.
    BadIpVersion,
    /// The IPv4 header length (IHL) is below 5 words.
    BadIhl,
    /// The IPv4 total length is smaller than the IPv4 header.
    BadTotalLength,
    /// ARP for something other than Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4).
    BadArp,
    /// The UDP length field is below 8 or beyond the IP payload.
    BadL4Length,
    /// The TCP data offset is below 5 words or points beyond the IP payload.
    BadTcpDataOffset,
}

impl WireError {
    /// Static description, the same text as `Display`.
    pub const fn as_str(self) -> &'static str {
        match self {
            WireError::Truncated => "truncated packet",
            WireError::BadIpVersion => "IP version is not 4",
            WireError::BadIhl => "IPv4 header length below 20 bytes",
            WireError::BadTotalLength => "IPv4 total length smaller than its header",
            WireError::BadArp => "ARP is not Ethernet/IPv4",
            WireError::BadL4Length => "UDP length below 8 or beyond the IP payload",
            WireError::BadTcpDataOffset => "TCP data offset below 5 or beyond the IP payload",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for WireError {}

/// Byte-range type used by the private `field` tables of the views.
type Field = core::ops::Range<usize>;

/// A value stored at a fixed offset of a header, in network byte order (see [`fields!`]).
trait FieldValue: Sized {
    fn read(buf: &[u8], at: usize) -> Self;
    fn write(self, buf: &mut [u8], at: usize);
}

impl FieldValue for u8 {
    #[inline]
    fn read(buf: &[u8], at: usize) -> Self {
        buf[at]
    }
    #[inline]
    fn write(self, buf: &mut [u8], at: usize) {
        buf[at] = self;
    }
}

impl FieldValue for u16 {
    #[inline]
    fn read(buf: &[u8], at: usize) -> Self {
        read_u16(buf, at)
    }
    #[inline]
    fn write(self, buf: &mut [u8], at: usize) {
        write_u16(buf, at, self);
    }
}

impl FieldValue for u32 {
    #[inline]
    fn read(buf: &[u8], at: usize) -> Self {
        read_u32(buf, at)
    }
    #[inline]
    fn write(self, buf: &mut [u8], at: usize) {
        write_u32(buf, at, self);
    }
}

impl FieldValue for MacAddr {
    #[inline]
    fn read(buf: &[u8], at: usize) -> Self {
        let mut a = [0u8; 6];
        a.copy_from_slice(&buf[at..at + 6]);
        MacAddr(a)
    }
    #[inline]
    fn write(self, buf: &mut [u8], at: usize) {
        buf[at..at + 6].copy_from_slice(&self.0);
    }
}

/// The length check of a view with a fixed-size header: `Truncated` below `min_len` bytes.
#[inline]
fn check_min_len(buf: &[u8], min_len: usize) -> Result<(), WireError> {
    if buf.len() < min_len {
        Err(WireError::Truncated)
    } else {
        Ok(())
    }
}

impl FieldValue for std::net::Ipv4Addr {
    #[inline]
    fn read(buf: &[u8], at: usize) -> Self {
        read_ipv4(buf, at)
    }
    #[inline]
    fn write(self, buf: &mut [u8], at: usize) {
        write_ipv4(buf, at, self);
    }
}

/// Reads a big-endian `u16` at `at`. Panics only if the slice is too short, which a checked
/// view rules out.
#[inline(always)]
fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

#[inline(always)]
fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline(always)]
fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[inline(always)]
fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

#[inline(always)]
fn read_ipv4(buf: &[u8], at: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3])
}

#[inline(always)]
fn write_ipv4(buf: &mut [u8], at: usize, addr: std::net::Ipv4Addr) {
    buf[at..at + 4].copy_from_slice(&addr.octets());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_error_display_is_static_text() {
        let all = [
            WireError::Truncated,
            WireError::BadIpVersion,
            WireError::BadIhl,
            WireError::BadTotalLength,
            WireError::BadArp,
            WireError::BadL4Length,
            WireError::BadTcpDataOffset,
        ];
        for e in all {
            assert_eq!(e.to_string(), e.as_str());
            assert!(!e.as_str().is_empty());
        }
        assert_eq!(WireError::Truncated.to_string(), "truncated packet");
    }
}
