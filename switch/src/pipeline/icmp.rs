//! ICMP the switch originates: echo replies from the gateway address, and ICMP errors (time
//! exceeded for packets whose TTL runs out, RFC 792; port unreachable for [`super::reject`]).
//! Each is written in place into the frame that caused it and sent back out the port it came
//! in on.
//!
//! Contract: only echo requests (code 0, unfragmented) to the gateway are answered; anything
//! else to it is dropped. No ICMP error answers an ICMP error or a non-first fragment (RFC 1122
//! 3.2.2); the error quotes the original IP header and the first 8 bytes of its payload.
//! Counting: every answer sent is counted in [`Counters`]; a frame whose TTL ran out is
//! counted once under [`DropReason::TtlExceeded`], whether the time exceeded was sent (then
//! by this stage, the frame becoming the answer) or may not be sent (then as the frame's drop
//! reason, by the worker); a time exceeded that did not fit the buffer is a drop under
//! [`DropReason::IcmpErrorNotSent`] instead.
use std::net::Ipv4Addr;

use crate::counters::Counter;
use crate::drop_reason::DropReason;
use crate::tables::{PortConfig, PortId};
use crate::wire::checksum;
use crate::wire::icmpv4::{self, Icmpv4Packet};
use crate::wire::{ethernet, offsets, EthernetFrame, Ipv4Packet, MacAddr, ParsedFrame, ETHERTYPE_IPV4, IPPROTO_ICMP};

use super::{Ctx, Verdict};

/// TTL of the packets the switch originates.
const REPLY_TTL: u8 = 64;
/// Where an ICMP error this switch writes quotes the original datagram: behind a 20-byte IPv4
/// header and the 8-byte ICMP header.
const QUOTE_AT: usize = offsets::L4 + icmpv4::HEADER_LEN;

/// What this stage did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Echo replies sent from the gateway address (answers).
    pub echo_replies: Counter,
    /// Time exceeded errors sent (answers).
    pub time_exceeded: Counter,
    /// Fragmentation-needed errors sent (answers) for packets too long for a tunnel.
    pub fragmentation_needed: Counter,
}

/// Answers an echo request addressed to the gateway; anything else to it is dropped.
pub fn answer_echo(buf: &mut [u8], len: usize, parsed: &ParsedFrame, in_port: PortId, port: &PortConfig, ctx: &Ctx) -> Result<Verdict, DropReason> {
    if parsed.ip_protocol != IPPROTO_ICMP
        || parsed.is_fragment
        || parsed.icmp_type != icmpv4::TYPE_ECHO_REQUEST
        || parsed.icmp_code != 0
    {
        return Err(DropReason::LocalNotHandled);
    }
    // Ethernet: back to the sender, from this port.
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..len]);
    eth.set_dst_addr(parsed.src_mac);
    eth.set_src_addr(MacAddr(port.mac));
    // IPv4: swap addresses, fresh TTL, recompute the header checksum.
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[offsets::IPV4..len]);
    ip.set_src_addr(parsed.dst_ip);
    ip.set_dst_addr(parsed.src_ip);
    ip.set_ttl(REPLY_TTL);
    ip.fill_checksum();
    // ICMP: type 8 -> 0; only the type word changes, so update the checksum incrementally.
    let mut icmp = Icmpv4Packet::new_unchecked(&mut buf[parsed.l4_offset as usize..len]);
    let old_word = u16::from_be_bytes([icmp.msg_type(), icmp.msg_code()]);
    icmp.set_msg_type(icmpv4::TYPE_ECHO_REPLY);
    let new_word = u16::from_be_bytes([icmp.msg_type(), icmp.msg_code()]);
    icmp.set_checksum(checksum::update_u16(icmp.checksum(), old_word, new_word));
    ctx.stages.icmp.echo_replies.add(1);
    Ok(Verdict::Forward { port: in_port, len })
}

/// Rewrites the frame into an ICMP time exceeded for its sender (see the module contract).
pub fn time_exceeded(buf: &mut [u8], len: usize, parsed: &ParsedFrame, in_port: PortId, port: &PortConfig, ctx: &Ctx) -> Result<Verdict, DropReason> {
    let written = error(buf, len, parsed, port, ctx.tables.gateway_ip, icmpv4::TYPE_TIME_EXCEEDED, icmpv4::CODE_TTL_EXCEEDED);
    answered(written, DropReason::TtlExceeded, &ctx.stages.icmp.time_exceeded, in_port, ctx)
}

/// The verdict on a frame an ICMP error was due for (`due`: its drop reason, counted once
/// either way): the error out the ingress port (counted in `sent`), or the drop.
fn answered(written: Result<usize, ErrorNotSent>, due: DropReason, sent: &Counter, in_port: PortId, ctx: &Ctx) -> Result<Verdict, DropReason> {
    match written {
        Ok(new_len) => {
            ctx.drops.count(due);
            sent.add(1);
            Ok(Verdict::Forward { port: in_port, len: new_len })
        }
        Err(ErrorNotSent::Forbidden) => Err(due),
        Err(ErrorNotSent::NoRoom) => Err(DropReason::IcmpErrorNotSent),
    }
}

/// Rewrites the frame into an ICMP destination unreachable, fragmentation needed (RFC 792,
/// with the next-hop MTU of RFC 1191) for its sender: the packet is longer than `mtu` and has
/// DF set. Counted like a time exceeded: once under [`DropReason::FragmentationNeeded`] whether
/// the error was sent or not.
pub fn fragmentation_needed(buf: &mut [u8], len: usize, parsed: &ParsedFrame, in_port: PortId, port: &PortConfig, mtu: u16, ctx: &Ctx) -> Result<Verdict, DropReason> {
    let m = mtu.to_be_bytes();
    let written = error_with(buf, len, parsed, port, ctx.tables.gateway_ip, icmpv4::TYPE_DEST_UNREACHABLE, icmpv4::CODE_FRAG_NEEDED, [0, 0, m[0], m[1]]);
    answered(written, DropReason::FragmentationNeeded, &ctx.stages.icmp.fragmentation_needed, in_port, ctx)
}

/// Why [`error`] wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorNotSent {
    /// The frame is an ICMP error or a non-first fragment: no error may answer it.
    Forbidden,
    /// The buffer cannot hold the error.
    NoRoom,
}

/// Rewrites the frame, in place, into the ICMP error (`icmp_type`, `code`) answering it, sent
/// from `from` to the frame's source and addressed (Ethernet) back to its sender through
/// `port`. Returns the new length.
pub fn error(buf: &mut [u8], len: usize, parsed: &ParsedFrame, port: &PortConfig, from: Ipv4Addr, icmp_type: u8, code: u8) -> Result<usize, ErrorNotSent> {
    error_with(buf, len, parsed, port, from, icmp_type, code, [0; 4])
}

/// [`error`] with the second word of the ICMP header (`rest`: unused, or the next-hop MTU).
#[allow(clippy::too_many_arguments)]
fn error_with(buf: &mut [u8], len: usize, parsed: &ParsedFrame, port: &PortConfig, from: Ipv4Addr, icmp_type: u8, code: u8, rest: [u8; 4]) -> Result<usize, ErrorNotSent> {
    let is_icmp_error = parsed.ip_protocol == IPPROTO_ICMP && icmpv4::is_error_type(parsed.icmp_type);
    if parsed.is_fragment && parsed.fragment_offset != 0 || is_icmp_error {
        return Err(ErrorNotSent::Forbidden);
    }
    // The frame as it is now (after any translation): its sender gets the error.
    let orig = Ipv4Packet::new_unchecked(&buf[offsets::IPV4..len]);
    let quote = (orig.header_len() + 8).min(usize::from(orig.total_len())).min(len - offsets::IPV4);
    let to = orig.src_addr();
    let new_len = QUOTE_AT + quote;
    if new_len > buf.len() {
        return Err(ErrorNotSent::NoRoom);
    }
    let sender = EthernetFrame::new_unchecked(&buf[..len]).src_addr();
    buf.copy_within(offsets::IPV4..offsets::IPV4 + quote, QUOTE_AT);
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..new_len]);
    eth.set_dst_addr(sender);
    eth.set_src_addr(MacAddr(port.mac));
    eth.set_ethertype(ETHERTYPE_IPV4);
    write_ipv4_header(&mut buf[offsets::IPV4..new_len], (ipv4_len() + icmpv4::HEADER_LEN + quote) as u16, IPPROTO_ICMP, from, to);
    let mut icmp = Icmpv4Packet::new_unchecked(&mut buf[offsets::L4..new_len]);
    icmp.set_msg_type(icmp_type);
    icmp.set_msg_code(code);
    icmp.set_rest_of_header(rest);
    icmp.fill_checksum();
    Ok(new_len)
}

#[inline(always)]
const fn ipv4_len() -> usize {
    offsets::L4 - ethernet::HEADER_LEN
}

/// Writes a 20-byte IPv4 header (TTL 64, no options, DF clear) with its checksum at the start
/// of `ip` (which holds the whole packet).
pub fn write_ipv4_header(ip: &mut [u8], total_len: u16, proto: u8, src: Ipv4Addr, dst: Ipv4Addr) {
    let mut h = Ipv4Packet::new_unchecked(ip);
    h.set_version(4);
    h.set_ihl(5);
    // Routers send ICMP errors as "internetwork control".
    h.set_dscp_ecn(if proto == IPPROTO_ICMP { 0xc0 } else { 0 });
    h.set_total_len(total_len);
    h.set_ident(0);
    h.set_flags_frag(0);
    h.set_ttl(REPLY_TTL);
    h.set_protocol(proto);
    h.set_src_addr(src);
    h.set_dst_addr(dst);
    h.set_checksum(0);
    let sum = checksum::internet_checksum(&h.header()[..20]);
    h.set_checksum(sum);
}
