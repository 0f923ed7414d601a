//! ICMP the switch originates: echo replies from the gateway address, and time exceeded
//! (RFC 792) for packets whose TTL runs out. Both are written in place into the frame that
//! caused them and sent back out the port it came in on.
//!
//! Contract: no ICMP error answers an ICMP error or a non-first fragment (RFC 1122 3.2.2);
//! the error quotes the original IP header and the first 8 bytes of its payload.
use std::net::Ipv4Addr;

use crate::drop_reason::DropReason;
use crate::tables::{PortConfig, PortId, Tables};
use crate::wire::{checksum, ParsedFrame, IPPROTO_ICMP};

use super::Verdict;

const IP: usize = 14;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP types that are errors (never answered with an error).
const ICMP_ERROR_TYPES: [u8; 5] = [3, 4, 5, 11, 12];
const REPLY_TTL: u8 = 64;

/// Answers an echo request addressed to the gateway; anything else to it is dropped.
pub fn answer_echo(buf: &mut [u8], len: usize, parsed: &ParsedFrame, in_port: PortId, port: &PortConfig) -> Verdict {
    if parsed.ip_protocol != IPPROTO_ICMP || parsed.is_fragment || parsed.icmp_type != ICMP_ECHO_REQUEST || parsed.icmp_code != 0 {
        return Verdict::Drop(DropReason::LocalNotHandled);
    }
    let ihl = ((buf[IP] & 0x0f) as usize) * 4;
    let icmp = IP + ihl;
    // Ethernet: back to the sender, from this port.
    let (dst, src) = buf[0..12].split_at_mut(6);
    dst.copy_from_slice(src);
    buf[6..12].copy_from_slice(&port.mac);
    // IPv4: swap addresses, fresh TTL, recompute the header checksum.
    for i in 0..4 {
        buf.swap(IP + 12 + i, IP + 16 + i);
    }
    buf[IP + 8] = REPLY_TTL;
    buf[IP + 10..IP + 12].fill(0);
    let sum = checksum::internet_checksum(&buf[IP..IP + ihl]);
    buf[IP + 10..IP + 12].copy_from_slice(&sum.to_be_bytes());
    // ICMP: type 8 -> 0; only the type word changes, so update the checksum incrementally.
    let old_word = u16::from_be_bytes([buf[icmp], buf[icmp + 1]]);
    buf[icmp] = ICMP_ECHO_REPLY;
    let new_word = u16::from_be_bytes([buf[icmp], buf[icmp + 1]]);
    let old_sum = u16::from_be_bytes([buf[icmp + 2], buf[icmp + 3]]);
    buf[icmp + 2..icmp + 4].copy_from_slice(&checksum::update_u16(old_sum, old_word, new_word).to_be_bytes());
    Verdict::Forward { port: in_port, len }
}

/// Rewrites the frame into an ICMP time exceeded for its sender (see the module contract).
pub fn time_exceeded(
    buf: &mut [u8],
    len: usize,
    parsed: &ParsedFrame,
    in_port: PortId,
    port: &PortConfig,
    tables: &Tables,
) -> Verdict {
    match error(buf, len, parsed, port, tables.gateway_ip, ICMP_TIME_EXCEEDED, 0) {
        Ok(new_len) => Verdict::Forward { port: in_port, len: new_len },
        Err(r) => Verdict::Drop(r),
    }
}

/// ICMP destination unreachable, code port unreachable.
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const CODE_PORT_UNREACHABLE: u8 = 3;

/// Rewrites the frame, in place, into the ICMP error (`icmp_type`, `code`) answering it, sent
/// from `from` to the frame's source and addressed (Ethernet) back to its sender through
/// `port`. Returns the new length, or `Err(TtlExceeded)` where no error may be sent (an ICMP
/// error or a non-first fragment) and `Err(IcmpErrorNotSent)` where the frame cannot hold it.
pub fn error(
    buf: &mut [u8],
    len: usize,
    parsed: &ParsedFrame,
    port: &PortConfig,
    from: Ipv4Addr,
    icmp_type: u8,
    code: u8,
) -> Result<usize, DropReason> {
    let is_icmp_error = parsed.ip_protocol == IPPROTO_ICMP && ICMP_ERROR_TYPES.contains(&parsed.icmp_type);
    if parsed.is_fragment && parsed.fragment_offset != 0 || is_icmp_error {
        return Err(if icmp_type == ICMP_TIME_EXCEEDED { DropReason::TtlExceeded } else { DropReason::IcmpErrorNotSent });
    }
    let ihl = ((buf[IP] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([buf[IP + 2], buf[IP + 3]]) as usize;
    let quote = (ihl + 8).min(total).min(len - IP);
    const QUOTE_AT: usize = IP + 20 + 8;
    let new_len = QUOTE_AT + quote;
    if new_len > buf.len() {
        return Err(DropReason::IcmpErrorNotSent);
    }
    let src_mac: [u8; 6] = buf[6..12].try_into().expect("frame has an Ethernet header");
    let orig_src: [u8; 4] = buf[IP + 12..IP + 16].try_into().expect("frame has an IPv4 header");
    buf.copy_within(IP..IP + quote, QUOTE_AT);
    // Ethernet
    buf[0..6].copy_from_slice(&src_mac);
    buf[6..12].copy_from_slice(&port.mac);
    buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    // IPv4
    write_ipv4_header(&mut buf[IP..IP + 20], (20 + 8 + quote) as u16, IPPROTO_ICMP, from, Ipv4Addr::from(orig_src));
    // ICMP
    let icmp = IP + 20;
    buf[icmp] = icmp_type;
    buf[icmp + 1] = code;
    buf[icmp + 2..icmp + 8].fill(0);
    let sum = checksum::internet_checksum(&buf[icmp..new_len]);
    buf[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
    Ok(new_len)
}

/// Writes a 20-byte IPv4 header (TTL 64, no options, DF clear) with its checksum.
pub fn write_ipv4_header(hdr: &mut [u8], total_len: u16, proto: u8, src: Ipv4Addr, dst: Ipv4Addr) {
    hdr[0] = 0x45;
    hdr[1] = if proto == IPPROTO_ICMP { 0xc0 } else { 0 }; // routers send ICMP errors as "internetwork control"
    hdr[2..4].copy_from_slice(&total_len.to_be_bytes());
    hdr[4..8].fill(0);
    hdr[8] = REPLY_TTL;
    hdr[9] = proto;
    hdr[10..12].fill(0);
    hdr[12..16].copy_from_slice(&src.octets());
    hdr[16..20].copy_from_slice(&dst.octets());
    let sum = checksum::internet_checksum(&hdr[..20]);
    hdr[10..12].copy_from_slice(&sum.to_be_bytes());
}
